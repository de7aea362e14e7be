"""An estimate, not a measurement: the wall time of the paper's deep run on one H100, from FLOP and byte counts.

The paper (§8) trains every method for 10,000 steps; a Nash-MD-PG step on B prompts of P tokens with responses of
T tokens does, with a policy of N_π parameters (μ the same size) and a preference model of N_P:

* generation: y ~ π and y′ from the token-level mixture of π and μ: three model streams of B rows, each a prefill
  of P tokens (2·N_π·B·P FLOPs) and T decode steps. A decode step is bound by reading the weights (2 bytes per
  parameter in bf16) at the memory bandwidth, not by its 2·N_π·B FLOPs, at these batch sizes; the KV cache read is
  added (2·n_layer·d·(P+T)·B·2 bytes per step at most);
* scoring: the preference model on (x, y, y′), 2·N_P·B·(P + 2T); μ's log-probabilities of y, 2·N_π·B·(P+T);
* update: forward and backward of π on (x, y), 6·N_π·B·(P+T).

Assumptions (each a knob): H100 SXM bf16 dense peak 989 TFLOP/s and HBM3 3.35 TB/s (spec sheet); 40% of the peak
on the prefill, scoring and update matmuls; 60% of the bandwidth on decode, plus a fixed per-token overhead of
the Python sampling loop (``--token-overhead-ms``, 2 ms: the CPU-side cost of one step of our sampler); PM and RM
training at 3 × forward FLOPs on their 92,820 comparisons for ``--scorer-epochs`` epochs. Nothing here was run on a
GPU: `bench_gpu.py` measures the real step when one is available, and its MFU replaces the 40%.

    python benchmarks/paper_scale_estimate.py              # the paper's scale and profile tldr's
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

PEAK = 989e12  # H100 SXM bf16 dense FLOP/s
BANDWIDTH = 3.35e12  # H100 SXM HBM3 bytes/s


@dataclass
class Scale:
    name: str
    policy: float  # parameters
    scorer: float  # parameters of the preference model (and the RM)
    policy_layers: int
    policy_width: int
    batch: int = 32  # prompts per step (the sibling work's 32)
    prompt: int = 512  # tokens: TL;DR posts truncated to 512
    response: int = 53  # tokens: TL;DR summaries
    steps: int = 10_000  # per method (§8)
    methods: int = 10  # RLHF, SP, MD1-MD6, BR, EMA
    comparisons: int = 92_820  # PM / RM training pairs (§8)


SCALES = [
    Scale("paper (T5X-L policy ~770M, T5X-XL PM ~3B)", 770e6, 3e9, 24, 1024),
    Scale("profile tldr (pythia-410m policy, pythia-160m scorers)", 405e6, 162e6, 24, 1024),
]


def step_seconds(s: Scale, mfu: float, bw_frac: float, token_overhead: float) -> dict:
    B, P, T = s.batch, s.prompt, s.response
    flops = {"prefill": 3 * 2 * s.policy * B * P,
             "scoring": 2 * s.scorer * B * (P + 2 * T) + 2 * s.policy * B * (P + T),
             "update": 6 * s.policy * B * (P + T)}
    kv = 2 * s.policy_layers * s.policy_width * (P + T) * B * 2  # bytes of one stream's KV cache at its longest
    decode_step = max(2 * s.policy * B / (PEAK * mfu), (2 * s.policy + kv) / (BANDWIDTH * bw_frac))
    out = {k: v / (PEAK * mfu) for k, v in flops.items()}
    out["decode"] = T * (3 * decode_step + token_overhead)
    out["total"] = sum(out.values())
    out["flops"] = sum(flops.values()) + 3 * T * 2 * s.policy * B
    return out


def run_hours(s: Scale, mfu: float, bw_frac: float, token_overhead: float, scorer_epochs: float) -> dict:
    step = step_seconds(s, mfu, bw_frac, token_overhead)
    scorer_train = 2 * scorer_epochs * 3 * 2 * s.scorer * s.comparisons * (s.prompt + 2 * s.response) / (PEAK * mfu)
    policies = s.methods * s.steps * step["total"]
    return {"step_s": step, "policies_h": policies / 3600, "scorers_h": scorer_train / 3600,
            "total_h": (policies + scorer_train) / 3600}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mfu", type=float, default=0.40, help="fraction of the bf16 peak on the matmul phases")
    ap.add_argument("--bandwidth-fraction", type=float, default=0.60, help="fraction of HBM bandwidth on decode")
    ap.add_argument("--token-overhead-ms", type=float, default=2.0, help="CPU-side cost per sampled token step")
    ap.add_argument("--scorer-epochs", type=float, default=1.0, help="epochs of PM and RM training each")
    a = ap.parse_args(argv)
    print(f"ESTIMATE (no GPU run): H100 SXM, {a.mfu:.0%} of {PEAK / 1e12:.0f} TFLOP/s on matmuls, "
          f"{a.bandwidth_fraction:.0%} of {BANDWIDTH / 1e12:.2f} TB/s on decode, {a.token_overhead_ms} ms per token "
          f"step of the sampling loop")
    print("| scale | s/step: prefill | scoring | update | decode | total | TFLOP/step | policies (h) | PM+RM (h) | "
          "whole run (h) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in SCALES:
        r = run_hours(s, a.mfu, a.bandwidth_fraction, a.token_overhead_ms / 1000, a.scorer_epochs)
        st = r["step_s"]
        print(f"| {s.name} | {st['prefill']:.3f} | {st['scoring']:.3f} | {st['update']:.3f} | {st['decode']:.3f} | "
              f"{st['total']:.3f} | {st['flops'] / 1e12:.0f} | {r['policies_h']:.1f} | {r['scorers_h']:.1f} | "
              f"{r['total_h']:.1f} |")
    print(f"(B = {SCALES[0].batch} prompts of {SCALES[0].prompt} tokens, {SCALES[0].response}-token responses, "
          f"{SCALES[0].steps} steps x {SCALES[0].methods} methods; PM and RM on {SCALES[0].comparisons} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
