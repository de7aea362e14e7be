"""The recipe sweep of 2026-11-27 on one H200 GPU (4 calls, 94 fits, 14-15 in parallel, 1 CPU thread each).

    python sweep.py ROUND [DEADLINE_S]     (in the folder prepare_data.py wrote, with harness.py beside it)

Appends each fit's FINAL json to $OUT/results.jsonl (logs in $OUT/logs/). results_h200_20261127.csv is the four
rounds' results in one table. Round 1: architecture options at the old recipe (batch 64, lr 1e-3) + long runs;
round 2: batch size / learning rate at equal samples; round 3: the sum feature at the better recipes; round 4:
batch 128 x 800 steps (the CPU-time equivalent of 64 x 1,000) around lr 5e-4, PM and RM, 3 seeds.
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

OUT = os.environ.get("OUT", "out")
os.makedirs(f"{OUT}/logs", exist_ok=True)
ROUND = int(sys.argv[1])
DEADLINE = time.time() + float(sys.argv[2]) if len(sys.argv) > 2 else 1e18
WORKERS = int(os.environ.get("WORKERS", "14"))


def round_runs(r):
    if r == 1:
        B = ""; SY = "shift=1 pool=ymean+last+ysum"; SYM = SY + " head=mix K=4"
        runs = []
        # long runs first
        for n, o in [("L_base", B), ("L_sym", SYM), ("L_rm", "kind=rm"), ("L_rm_sy", "kind=rm " + SY)]:
            runs.append((n, o + " steps=6000 eval_every=1200"))
        for s in (0, 1, 2):
            runs += [(f"base_s{s}", f"seed={s}"), (f"shift_s{s}", f"shift=1 seed={s}"), (f"sym_s{s}", f"{SYM} seed={s}"),
                     (f"rm_s{s}", f"kind=rm seed={s}"), (f"rm_sy_s{s}", f"kind=rm {SY} seed={s}")]
        for s in (0, 1):
            runs += [(f"ysum_s{s}", f"pool=ymean+last+ysum seed={s}"), (f"mix_s{s}", f"head=mix K=4 seed={s}"),
                     (f"sy_s{s}", f"{SY} seed={s}"), (f"rm_shift_s{s}", f"kind=rm shift=1 seed={s}")]
        runs += [("mixx_s0", f"{SYM} mixx=1"), ("sym8_s0", f"{SY} head=mix K=8"), ("base_lr2", "lr=0.002"),
                 ("sym_lr2", f"{SYM} lr=0.002"), ("base_soft", "soft=1"), ("base_bs256", "bs=256"),
                 ("sym_bs256", f"{SYM} bs=256"), ("sym_3L", f"{SYM} layers=3")]
        return runs
    if r == 2:
        runs = []
        def R(n, o): runs.append((n, o))
        for s in (0, 1):
            R(f"b256_300_s{s}", f"bs=256 steps=300 warm=25 eval_every=100 seed={s}")
            R(f"b128_600_s{s}", f"bs=128 steps=600 warm=50 eval_every=200 seed={s}")
            R(f"b64_lr3_s{s}", f"lr=0.0003 seed={s}")
            R(f"b256_400_s{s}", f"bs=256 steps=400 warm=33 eval_every=100 seed={s}")
            R(f"ysum256_300_s{s}", f"pool=ymean+last+ysum bs=256 steps=300 warm=25 eval_every=100 seed={s}")
            R(f"rm256_300_s{s}", f"kind=rm bs=256 steps=300 warm=25 eval_every=100 seed={s}")
            R(f"rm64_lr3_s{s}", f"kind=rm lr=0.0003 seed={s}")
        R("b256_1200_s1", "bs=256 seed=1")
        R("rm256_1200_s0", "kind=rm bs=256")
        R("b256_300_lr2", "bs=256 steps=300 warm=25 eval_every=100 lr=0.002")
        R("b64_lr1", "lr=0.0001")
        R("b128_600_lr5", "bs=128 steps=600 warm=50 eval_every=200 lr=0.0005")
        R("b512_150_lr2", "bs=512 steps=150 warm=12 eval_every=50 lr=0.002")
        R("b64_noclip", "clip=100")
        R("sym256_300", "shift=1 pool=ymean+last+ysum head=mix K=4 bs=256 steps=300 warm=25 eval_every=100")
        R("b256_300_s2", "bs=256 steps=300 warm=25 eval_every=100 seed=2")
        R("rm256_300_s2", "kind=rm bs=256 steps=300 warm=25 eval_every=100 seed=2")
        return runs
    if r == 3:
        runs = []
        def R(n, o): runs.append((n, o))
        Y = "pool=ymean+last+ysum"
        for s in (0, 1, 2):
            R(f"y64_lr3_s{s}", f"{Y} lr=0.0003 seed={s}")
            R(f"y128_lr5_s{s}", f"{Y} bs=128 steps=600 warm=50 eval_every=200 lr=0.0005 seed={s}")
            R(f"rmy64_lr3_s{s}", f"kind=rm {Y} lr=0.0003 seed={s}")
        for s in (0, 1):
            R(f"y64_lr5_s{s}", f"{Y} lr=0.0005 seed={s}")
            R(f"rmy128_lr5_s{s}", f"kind=rm {Y} bs=128 steps=600 warm=50 eval_every=200 lr=0.0005 seed={s}")
            R(f"ys64_lr3_s{s}", f"{Y} shift=1 lr=0.0003 seed={s}")
        R("y64_lr2", f"{Y} lr=0.0002")
        R("y64_lr3_1600", f"{Y} lr=0.0003 steps=1600")
        R("y64_lr3_min0", f"{Y} lr=0.0003 minlr=0.0")
        R("ylast64_lr3", "pool=ysum+last lr=0.0003")
        R("rm64_lr3_s2", "kind=rm lr=0.0003 seed=2")
        R("b64_lr3_s2", "lr=0.0003 seed=2")
        return runs
    if r == 4:
        runs = []
        def R(n, o): runs.append((n, o))
        Y = "pool=ymean+last+ysum bs=128 steps=800 warm=67 eval_every=400"
        for s in (0, 1, 2):
            R(f"y128_800_lr5_s{s}", f"{Y} lr=0.0005 seed={s}")
            R(f"rmy128_800_lr5_s{s}", f"kind=rm {Y} lr=0.0005 seed={s}")
        for s in (0, 1):
            R(f"y128_800_lr4_s{s}", f"{Y} lr=0.0004 seed={s}")
        R("y128_800_lr3", f"{Y} lr=0.0003")
        R("y128_800_lr7", f"{Y} lr=0.0007")
        R("rmy128_800_lr4", f"kind=rm {Y} lr=0.0004")
        R("rmy128_800_lr3", f"kind=rm {Y} lr=0.0003")
        R("y64_1600_lr3_s1", "pool=ymean+last+ysum lr=0.0003 steps=1600 seed=1")
        R("y64_1600_lr3_s2", "pool=ymean+last+ysum lr=0.0003 steps=1600 seed=2")
        return runs
    raise SystemExit(f"ROUND must be 1-4, got {r}")


def go(run):
    name, opts = run
    if time.time() > DEADLINE - 30:
        return name, "skipped"
    t = time.time()
    with open(f"{OUT}/logs/{name}.log", "w") as f:
        try:
            rc = subprocess.run([sys.executable, "harness.py", name] + opts.split(), stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(5, DEADLINE - time.time())).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    final = [line for line in open(f"{OUT}/logs/{name}.log") if line.startswith("FINAL ")]
    if final:
        with open(f"{OUT}/results.jsonl", "a") as f:
            f.write(final[-1][6:])
    res = json.loads(final[-1][6:]) if final else None
    print(name, rc, round(time.time() - t), res and (res["held"], res["test"]["ex"]), flush=True)
    return name, rc


if __name__ == "__main__":
    runs = round_runs(ROUND)
    print(len(runs), "runs", flush=True)
    with ThreadPoolExecutor(WORKERS) as ex:
        list(ex.map(go, runs))
