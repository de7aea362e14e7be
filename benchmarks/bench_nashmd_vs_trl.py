"""Step time of OUR Nash-MD-PG step (the library's ``nlhf.PolicyGradientTrainer``) vs TRL's ``NashMDTrainer``
(trl 1.13.0, ``trl.experimental.nash_md``) on the same tiny configuration, in ONE process.

Configuration (both sides): random GPT-2 policy, 2 layers, width 128, 4 heads, vocab 512 (a byte-level BPE trained
here on a synthetic corpus; specials <|endoftext|> = BOS = EOS, <pad>, <sep>), batch 8 prompts of 16 tokens,
``max_new_tokens`` in {32, 128}, fp32, no gradient checkpointing, mixture coefficient β = 0.5, temperature 1,
Adam lr 5e-5, KL coefficient 0.1. The judge is a random GPT-2 of the same size: TRL takes a REWARD model
(``reward_funcs``, a ``GPT2ForSequenceClassification`` scoring y and y' separately), we take our pairwise PREFERENCE
model (``nlhf.models.PreferenceModel``: one row x <sep> y <sep> y' <sep> per pair, each response block blind to
the other, f = g([h(x,y); h(x,y')]), B rows).

Our step = exactly what the pipeline runs: the trainer runs warm-up + measured + 1 steps; step boundaries are taken
by a trainer callback at the start of each step, so a step is sampling (y ~ π_θ and y' ~ mixture in one call, 2B
rows) + μ's log-probs + preference model + policy forward/backward + clip + Adam. The last step (it writes a checkpoint) is dropped.
TRL's step is timed with a ``TrainerCallback`` (on_step_begin → on_step_end).
The timed runs and the shared setup live in ``benchmarks/_common.py`` (``bench_gpu.py`` uses them too).

Ours and TRL's runs alternate (``--rounds`` blocks of each, per length), so machine load affects both; the
reported medians pool the post-warm-up steps of all rounds. Run it with the bench venv (TRL lives there):

    .venv-bench/bin/python benchmarks/bench_nashmd_vs_trl.py            # lengths 32 128, 1 torch thread

Each side's FLOPs per step are counted in a separate short run (``torch.utils.flop_counter.FlopCounterMode``: matrix
products and attention, forward and backward); over the best fp32 matrix-product rate this process reaches at the
models' shapes they give each side's FLOP floor, the time of a step whose every FLOP ran at that rate, and the
report says how many times its floor each side takes.

Writes benchmarks/results/nashmd_vs_trl_<date>_<host>.json. Speed claims live here, never in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402  (sets the offline / quiet environment variables before torch is imported)
import torch  # noqa: E402
from _common import JUDGE, KL_COEF, LR, MIXTURE_COEF, SEED, Shape  # noqa: E402

SHAPE = Shape()  # its defaults are this benchmark's CPU configuration (module docstring)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 128], help="max_new_tokens values")
    ap.add_argument("--steps", type=int, default=8, help="measured steps per block (after warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded steps at the start of each block")
    ap.add_argument("--rounds", type=int, default=2, help="alternating blocks ours/TRL per length")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both sides)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    import trl

    tok, prompts = _common.build_tokenizer_and_prompts(a.prompts, vocab=SHAPE.vocab, prompt_tokens=SHAPE.prompt_tokens,
                                                       seed=SEED)
    activation = _common.gpt2_config(tok, SHAPE).activation_function
    our_plen = statistics.mean(len(tok(tok.bos_token + p, add_special_tokens=False)["input_ids"]) for p in prompts)
    load0 = os.getloadavg()
    peak = _common.matmul_peak_gflops(SHAPE.n_embd, SHAPE.vocab)  # the FLOP floor's rate (one thread, fp32)
    print(f"matmul peak at the models' shapes: {peak:.1f} GFLOP/s", flush=True)
    results = []
    for T in a.lengths:
        ours, theirs, our_len, their_len, trl_plen = [], [], [], [], []
        for r in range(a.rounds):
            o = _common.run_ours(tok, prompts, T, a.steps, a.warmup, SEED + r, SHAPE)
            t = _common.run_trl(tok, prompts, T, a.steps, a.warmup, SEED + r, SHAPE, use_cpu=True, bf16=False)
            ours += o["step_s"]
            theirs += t["step_s"]
            our_len.append(o["mean_len"])
            their_len.append(t["mean_len"])
            trl_plen.append(t["prompt_tokens"])
            print(f"  T={T} round {r}: ours median {statistics.median(o['step_s']):.4f} s  "
                  f"TRL median {statistics.median(t['step_s']):.4f} s", flush=True)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        # each side's FLOPs per step, counted in a separate short run (counting slows the step it counts)
        of = statistics.mean(_common.run_ours(tok, prompts, T, 2, 1, SEED, SHAPE, flops=True)["flops"])
        tf = statistics.mean(_common.run_trl(tok, prompts, T, 2, 1, SEED, SHAPE, flops=True)["flops"])
        row = {
            "max_new_tokens": T, "ours_median_s": round(mo, 5), "trl_median_s": round(mt, 5),
            "ratio_ours_over_trl": round(mo / mt, 4),
            "ours_step_s": [round(x, 4) for x in ours], "trl_step_s": [round(x, 4) for x in theirs],
            "ours_mean_response_len": round(statistics.mean(our_len), 2),
            "trl_mean_response_len": round(statistics.mean(their_len), 2),
            "ours_prompt_tokens": round(our_plen, 2), "trl_prompt_tokens": round(statistics.mean(trl_plen), 2),
            "ours_gflop_per_step": round(of / 1e9, 3), "trl_gflop_per_step": round(tf / 1e9, 3),
            "ours_floor_s": round(of / 1e9 / peak, 5), "trl_floor_s": round(tf / 1e9 / peak, 5),
            "ours_over_floor": round(mo / (of / 1e9 / peak), 2), "trl_over_floor": round(mt / (tf / 1e9 / peak), 2),
        }
        results.append(row)
        print(f"max_new_tokens={T}: ours {mo:.4f} s/step | TRL {mt:.4f} s/step | ratio {mo / mt:.3f} | "
              f"mean response length ours {row['ours_mean_response_len']} TRL {row['trl_mean_response_len']} | "
              f"torch threads {torch.get_num_threads()} | both sides GPT-2 activation {activation}", flush=True)
        print(f"  FLOPs per step: ours {row['ours_gflop_per_step']} G, TRL {row['trl_gflop_per_step']} G; at the "
              f"{peak:.1f} GFLOP/s matmul peak: ours {row['ours_over_floor']}x its floor, TRL "
              f"{row['trl_over_floor']}x", flush=True)

    header, stem = _common.provenance(load0, {"processor": platform.processor()}, {"trl": trl.__version__})
    summary = {
        **header,
        "torch_threads": torch.get_num_threads(),
        "fast_decode": _common.fast_decode_used(tok),
        "config": {"n_layer": SHAPE.n_layer, "n_embd": SHAPE.n_embd, "n_head": SHAPE.n_head, "vocab": len(tok),
                   "batch": SHAPE.batch, "activation_function": activation, "prompt_tokens": SHAPE.prompt_tokens,
                   "mixture_coef": MIXTURE_COEF, "kl_coef": KL_COEF, "lr": LR, "fp32": True,
                   "gradient_checkpointing": False, "temperature": 1.0, "steps_per_block": a.steps,
                   "warmup_per_block": a.warmup, "rounds": a.rounds},
        "judge": JUDGE,
        "targets": {"32": 0.40, "128": 0.40},
        "matmul_peak_gflops": round(peak, 2),
        "results": results,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"nashmd_vs_trl_{stem}.json"
    path.write_text(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
