"""Policy-gradient recipe sweep: learning rate and step count, measured with the convergence probe.

Runs ``nlhf.stages.run_policy`` for every (method, variant, lr) given, on the artifacts of the current default run
(``dvc repro oracle`` first), with ``--steps`` steps and the probe every 5%, each in its own results folder under
``--out`` (models are written to a scratch artifacts copy, never over the pipeline's). Writes ``sweep.csv`` (one row
per probe point) and ``summary.md`` (the last point, the convergence verdict and samples per second).

    python benchmarks/pg_recipe/sweep.py --methods MD1 RLHF --variants paper exact --lrs 1e-4 3e-4 --steps 800

Runs are independent: ``--jobs 2`` runs two at a time with one torch thread each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import dataclasses, json, sys, time, torch
torch.set_num_threads({threads})
from nlhf.params import load_config
from nlhf import stages
cfg = load_config("params.yaml")
cfg.pg = dataclasses.replace(cfg.pg, lr={lr}, steps={steps}, checkpoint_every=10**6)
cfg.paths.results = {results!r}
cfg.paths.artifacts = {artifacts!r}
t = time.time()
m = stages.run_policy(cfg, {method!r}, {variant!r})
print("RESULT", json.dumps({{"seconds": time.time() - t, **m}}))
"""


def run_one(method: str, variant: str, lr: float, steps: int, out: Path, threads: int) -> subprocess.Popen:
    tag = f"{method}_{variant}_lr{lr:g}_{steps}"
    results, artifacts = out / tag / "results", out / tag / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    for part in ("data", "models", "oracle"):  # read-only inputs, linked; policies are written here
        link = artifacts / part
        if not link.exists():
            link.symlink_to(ROOT / "artifacts" / part)
    code = RUN.format(threads=threads, lr=lr, steps=steps, results=str(results), artifacts=str(artifacts),
                      method=method, variant=variant)
    log = open(out / f"{tag}.log", "w")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), tag


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["MD1", "RLHF"])
    ap.add_argument("--variants", nargs="+", default=["paper"], choices=["paper", "exact"])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-4])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "pg_recipe" / "runs")
    ap.add_argument("--summarize", action="store_true", help="only tabulate the finished runs found in --out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [] if args.summarize else list(itertools.product(args.methods, args.variants, args.lrs))
    running, done = [], []
    while todo or running:
        while todo and len(running) < args.jobs:
            m, v, lr = todo.pop(0)
            running.append(run_one(m, v, lr, args.steps, args.out, threads=max(1, 2 // args.jobs)))
        time.sleep(2)
        for p, tag in list(running):
            if p.poll() is not None:
                running.remove((p, tag))
                done.append(tag)
    from nlhf.params import load_config

    batch = load_config(ROOT / "params.yaml").pg.batch_size
    if args.summarize:
        done = sorted(p.stem for p in args.out.glob("*.log"))
    rows, summary = [], []
    for tag in done:
        line = [x for x in (args.out / f"{tag}.log").read_text().splitlines() if x.startswith("RESULT ")]
        if not line:
            print(f"{tag}: not finished, see {args.out / f'{tag}.log'}")
            continue
        m = json.loads(line[0][len("RESULT "):])
        method, variant, lr, steps = tag.split("_")
        suffix = "" if variant == "paper" else f"_{variant}"
        probe = pd.read_csv(args.out / tag / "results" / f"convergence{suffix}" / f"{method}.csv")
        rows.append(probe.assign(method=method, variant=variant, lr=float(lr[2:])))
        last = m["probe"]
        summary.append({"method": method, "variant": variant, "lr": float(lr[2:]), "steps": int(steps),
                        "p_vs_sft": round(last["p_vs_sft"], 3), "ci": round(last["p_vs_sft_ci"], 3),
                        "p_vs_target": round(last["p_vs_target"], 3), "kl": round(last["kl"], 2),
                        "words": round(last["words"], 2), "converged": last["converged"],
                        "samples_per_s": round(int(steps) * batch / m["seconds"], 1),  # end to end: probes included
                        "seconds": round(m["seconds"])})
    pd.concat(rows).to_csv(args.out / "sweep.csv", index=False)
    table = pd.DataFrame(summary).sort_values(["variant", "method", "lr"])
    (args.out / "summary.md").write_text(table.to_markdown(index=False) + "\n")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
