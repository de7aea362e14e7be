"""GPU mode of the benchmark: OUR Nash-MD-PG step (the library's ``nlhf.PolicyGradientTrainer``) split into
generation / scoring / update, the update's model FLOPs utilisation, peak GPU memory, and TRL 1.13.0's
``NashMDTrainer`` on the same configuration in the same process, with the ratio ours / TRL.

Anchor configuration (the defaults): random GPT-2 12 layers x 768 (12 heads), vocab 512 (the byte-level BPE of
``_common.build_tokenizer_and_prompts``), batch 64 prompts of 16 tokens, 32 and 128 new tokens, bf16 autocast (fp32
master weights, both sides: our loop through ``Accelerator(mixed_precision="bf16")``, TRL through ``bf16=True``),
no gradient checkpointing, mixture coefficient 0.5, KL coefficient 0.1, Adam lr 5e-5. The judge is a random GPT-2
of the same size (ours: the pairwise preference model, one row x <sep> y <sep> y' <sep> per pair; TRL: a reward model
``GPT2ForSequenceClassification`` on y and y' separately), as in ``bench_nashmd_vs_trl.py`` (benchmarks/README.md).

What is measured, per response length (``_common.run_ours`` / ``_common.run_trl``; ``torch.cuda.synchronize()`` at
every mark, so asynchronous kernels are charged to the phase that launched them):

* generation: the sampler call (y ~ π_θ and y' ~ mixture on 2B rows, KV-cached, ``nlhf.sampling.fast_decode``);
  tokens/s = sampled tokens of y and y' (EOS included, up to ``max_new_tokens`` per row) / time;
* scoring: μ's log-probs of y + the preference model;
* update: policy forward + loss + backward + clip + Adam; tokens/s = B·(P+T) positions of the forward / time;
* MFU of the update = model FLOPs / update time / peak, with (backward = 2 x forward)

      model FLOPs = 3 · [ 2·N_blocks·B·L + 2·V·d·B·(T+1) + 4·n_layer·B·L²·d ],   L = P + T

  (N_blocks: parameters of the transformer blocks; the LM head (tied to the embedding, V x d) runs on the last
  T+1 positions only (``logits_to_keep``); the last term is attention's QKᵀ and AV over the full L x L, causal
  masking not discounted). The common approximation 6·N·B·L (N = N_blocks + V·d) is reported too. Adam and
  clipping are in the time but not in the FLOPs. Peak: bf16 dense tensor-core FLOP/s from the device name (H100
  SXM / H200: 989 TFLOP/s; printed), or ``--peak-tflops``; with ``--measure-peak`` (default on CUDA) also against
  a measured 8192³ bf16 matmul;
* peak memory: ``torch.cuda.max_memory_allocated`` over each side's run (reset before it);
* TRL: median s/step (``TrainerCallback``), and ours / TRL on the median step time.

Smoke test on a CPU box (tiny sizes, fp32, a few steps, MFU n/a) before spending GPU minutes:

    .venv-bench/bin/python benchmarks/bench_gpu.py --device cpu --tiny --out /tmp/bench_gpu_smoke
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --tiny --skip-trl --out /tmp/bench_gpu_smoke  # no TRL

On the GPU (scripts/gpu_run.sh runs this):

    python3 benchmarks/bench_gpu.py --out $OUT          # anchor config, lengths 32 128

Writes ``<out>/bench_gpu_<date>_<host>.json`` (every step time) and a markdown table next to it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402  (sets the offline / quiet environment variables before torch is imported)
import torch  # noqa: E402
from _common import JUDGE, KL_COEF, LR, MIXTURE_COEF, SEED, Shape  # noqa: E402

# bf16 dense (no sparsity) tensor-core peak, FLOP/s, by device-name substring; the first match wins
PEAK_BF16_DENSE = [
    ("H100 PCIe", 756e12, "NVIDIA H100 PCIe spec sheet"),
    ("H100 NVL", 835e12, "NVIDIA H100 NVL spec sheet"),
    ("GH200", 989e12, "NVIDIA GH200 spec sheet"),
    ("H200", 989e12, "NVIDIA H200 SXM spec sheet"),
    ("H100", 989e12, "NVIDIA H100 SXM spec sheet (HBM3 80GB parts are SXM)"),
    ("A100", 312e12, "NVIDIA A100 spec sheet"),
    ("L40S", 362e12, "NVIDIA L40S spec sheet"),
]
TARGETS = {"ratio_ours_over_trl_at_128": 0.25, "update_mfu_bf16": 0.40}
ANCHOR = dict(n_layer=12, n_embd=768, n_head=12, vocab=512, batch=64, prompt_tokens=16, lengths=[32, 128], steps=6,
              warmup=2, prompts=512)
TINY = dict(n_layer=2, n_embd=64, n_head=2, vocab=512, batch=4, prompt_tokens=16, lengths=[8, 16], steps=2, warmup=1,
            prompts=64)


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops}"
    if device.type != "cuda":
        return None, "CPU: no tensor-core peak (MFU n/a)"
    name = torch.cuda.get_device_name(device)
    for key, flops, src in PEAK_BF16_DENSE:
        if key in name:
            return flops, f"{flops / 1e12:.0f} TFLOP/s bf16 dense for {name!r} ({src})"
    return None, f"unknown device {name!r}: pass --peak-tflops (MFU n/a)"


def measured_matmul_flops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """bf16 n x n x n matmul FLOP/s on random data (mean of ``reps`` after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / reps
    del a, b
    torch.cuda.empty_cache()
    return 2 * n ** 3 / dt


def update_flops(shape: tuple[int, int, int], n_blocks: int, vocab: int, d: int, n_layer: int) -> dict:
    """Model FLOPs of one update on a [B, L] batch whose first P columns are the prompt (module docstring)."""
    B, L, P = shape
    T = L - P
    fwd = 2 * n_blocks * B * L + 2 * vocab * d * B * (T + 1) + 4 * n_layer * B * L * L * d
    return {"model": 3 * fwd, "six_n_d": 6 * (n_blocks + vocab * d) * B * L}


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mem(device: torch.device) -> int | None:
    """Peak GPU memory allocated since the last reset; on a CPU the process's peak resident set size (not
    resettable: the largest of everything the process ran so far)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _fmt(x, spec=".3f", none="n/a"):
    return none if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and few steps (smoke test)")
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--n-embd", type=int)
    ap.add_argument("--n-head", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--prompt-tokens", type=int)
    ap.add_argument("--lengths", type=int, nargs="+", help="max_new_tokens values")
    ap.add_argument("--steps", type=int, help="measured steps per block (after warm-up)")
    ap.add_argument("--warmup", type=int, help="discarded steps at the start of each block")
    ap.add_argument("--rounds", type=int, default=1, help="alternating blocks ours/TRL per length")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--peak-tflops", type=float, help="peak FLOP/s for MFU (default: from the device name)")
    ap.add_argument("--measure-peak", action=argparse.BooleanOptionalAction, default=None,
                    help="also time an 8192^3 bf16 matmul (default: on for cuda)")
    ap.add_argument("--skip-trl", action="store_true", help="ours only (no TRL installed)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    base = TINY if a.tiny else ANCHOR
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")
    if device.type == "cpu":
        torch.set_num_threads(a.threads)
    bf16 = (a.dtype or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    if a.measure_peak is None:
        a.measure_peak = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else _common.no_sync
    shape = Shape(n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, vocab=a.vocab, batch=a.batch,
                  prompt_tokens=a.prompt_tokens)
    if not a.skip_trl:
        try:
            import trl  # noqa: F401
        except ImportError as e:
            sys.exit(f"TRL is not importable ({e}); install trl==1.13.0 or pass --skip-trl")

    import accelerate
    from accelerate import Accelerator

    peak, peak_src = peak_flops(device, a.peak_tflops)
    if not bf16 and not a.peak_tflops:
        peak, peak_src = None, "fp32 run: the bf16 peak does not apply (MFU n/a; pass --peak-tflops)"
    measured = measured_matmul_flops(device) if (a.measure_peak and device.type == "cuda") else None
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {dev_name} | {'bf16 autocast' if bf16 else 'fp32'} | peak: {peak_src}"
          + (f" | measured 8192^3 bf16 matmul {measured / 1e12:.0f} TFLOP/s" if measured else ""), flush=True)
    print(f"config: GPT-2 {shape.n_layer}x{shape.n_embd} ({shape.n_head} heads), vocab {shape.vocab}, batch "
          f"{shape.batch}, prompt {shape.prompt_tokens}, lengths {a.lengths}, {a.warmup}+{a.steps} steps x "
          f"{a.rounds} round(s) per side", flush=True)

    tok, prompts = _common.build_tokenizer_and_prompts(a.prompts, vocab=shape.vocab,
                                                       prompt_tokens=shape.prompt_tokens, seed=SEED)
    counts = {}

    def on_models(policy, ref, judge):
        counts.update(
            total=sum(p.numel() for p in policy.parameters()),
            blocks=sum(p.numel() for p in policy.transformer.h.parameters()),
            vocab=policy.config.vocab_size, d=policy.config.n_embd, n_layer=policy.config.n_layer,
            judge_total=sum(p.numel() for p in judge.parameters()),
        )

    load0 = os.getloadavg()
    results = []
    for T in a.lengths:
        ours, theirs = [], []
        mem_ours, mem_trl, trl_len, trl_plen = [], [], [], []
        for r in range(a.rounds):
            _free(device)
            acc = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if bf16 else "no")
            o = _common.run_ours(tok, prompts, T, a.steps, a.warmup, SEED + r, shape, accelerator=acc, sync=sync,
                                 phases=True, on_models=on_models)
            mem_ours.append(_peak_mem(device))
            ours.append(o)
            del acc
            if not a.skip_trl:
                _free(device)
                t = _common.run_trl(tok, prompts, T, a.steps, a.warmup, SEED + r, shape,
                                    use_cpu=device.type == "cpu", bf16=bf16, sync=sync)
                mem_trl.append(_peak_mem(device))
                theirs.append(t)
                trl_len.append(t["mean_len"])
                trl_plen.append(t["prompt_tokens"])
            print(f"  T={T} round {r}: ours median {statistics.median(o['step_s']):.4f} s"
                  + (f"  TRL median {statistics.median(theirs[-1]['step_s']):.4f} s" if theirs else ""), flush=True)

        def pool(key):
            return [x for o in ours for x in o[key]]

        step_s, gen_s, score_s, upd_s = pool("step_s"), pool("gen_s"), pool("score_s"), pool("update_s")
        gen_tok, gen_pos, upd_shape = pool("gen_tokens"), pool("gen_positions"), pool("update_shape")
        fl = [update_flops(s, counts["blocks"], counts["vocab"], counts["d"], counts["n_layer"]) for s in upd_shape]
        upd_tokens = [s[0] * s[1] for s in upd_shape]
        mfu = sum(f["model"] for f in fl) / sum(upd_s) / peak if peak else None
        mfu_6nd = sum(f["six_n_d"] for f in fl) / sum(upd_s) / peak if peak else None
        mfu_meas = sum(f["model"] for f in fl) / sum(upd_s) / measured if measured else None
        mo = statistics.median(step_s)
        mt = statistics.median([x for t in theirs for x in t["step_s"]]) if theirs else None
        row = {
            "max_new_tokens": T,
            "ours_median_s": round(mo, 5),
            "ours_gen_median_s": round(statistics.median(gen_s), 5),
            "ours_score_median_s": round(statistics.median(score_s), 5),
            "ours_update_median_s": round(statistics.median(upd_s), 5),
            "ours_samples_per_s": round(2 * shape.batch / mo, 3),  # y and y' per prompt
            "gen_tokens_per_s": round(sum(gen_tok) / sum(gen_s), 1),
            "gen_positions_per_s": round(sum(gen_pos) / sum(gen_s), 1),
            "update_tokens_per_s": round(sum(upd_tokens) / sum(upd_s), 1),
            "step_generated_tokens_per_s": round(sum(gen_tok) / sum(step_s), 1),
            "update_model_gflop_per_step": round(statistics.mean(f["model"] for f in fl) / 1e9, 3),
            "update_achieved_tflops": round(sum(f["model"] for f in fl) / sum(upd_s) / 1e12, 4),
            "update_mfu": None if mfu is None else round(mfu, 4),
            "update_mfu_6nd": None if mfu_6nd is None else round(mfu_6nd, 4),
            "update_mfu_vs_measured_matmul": None if mfu_meas is None else round(mfu_meas, 4),
            "ours_peak_mem_bytes": max(mem_ours) if mem_ours and mem_ours[0] is not None else None,
            "trl_median_s": None if mt is None else round(mt, 5),
            "ratio_ours_over_trl": None if mt is None else round(mo / mt, 4),
            "trl_peak_mem_bytes": max(mem_trl) if mem_trl and mem_trl[0] is not None else None,
            "ours_mean_response_len": round(statistics.mean(o["mean_len"] for o in ours), 2),
            "trl_mean_response_len": round(statistics.mean(trl_len), 2) if trl_len else None,
            "trl_prompt_tokens": round(statistics.mean(trl_plen), 2) if trl_plen else None,
            "update_shape_b_l_p": list(upd_shape[0]),
            "ours_step_s": [round(x, 5) for x in step_s], "ours_gen_s": [round(x, 5) for x in gen_s],
            "ours_score_s": [round(x, 5) for x in score_s], "ours_update_s": [round(x, 5) for x in upd_s],
            "ours_gen_tokens": gen_tok,
            "trl_step_s": [round(x, 5) for t in theirs for x in t["step_s"]],
        }
        results.append(row)
        gib = 2 ** 30
        print(f"max_new_tokens={T}: ours {mo:.4f} s/step (gen {row['ours_gen_median_s']:.4f} | score "
              f"{row['ours_score_median_s']:.4f} | update {row['ours_update_median_s']:.4f}) | gen "
              f"{row['gen_tokens_per_s']:.0f} tok/s | update {row['update_tokens_per_s']:.0f} tok/s, "
              f"{row['update_achieved_tflops']:.3g} TFLOP/s, MFU {_fmt(mfu, '.1%')} (6ND {_fmt(mfu_6nd, '.1%')}) | "
              f"peak mem ours {_fmt(row['ours_peak_mem_bytes'] and row['ours_peak_mem_bytes'] / gib, '.2f')} GiB"
              f" TRL {_fmt(row['trl_peak_mem_bytes'] and row['trl_peak_mem_bytes'] / gib, '.2f')} GiB | TRL "
              f"{_fmt(mt, '.4f')} s/step | ratio {_fmt(row['ratio_ours_over_trl'], '.3f')}", flush=True)

    r128 = next((r for r in results if r["max_new_tokens"] == 128), None)
    mfus = [r["update_mfu"] for r in results if r["update_mfu"] is not None]
    header, stem = _common.provenance(
        load0, {"device": dev_name, "cuda": torch.version.cuda if device.type == "cuda" else None},
        {"accelerate": accelerate.__version__, "trl": None if a.skip_trl else __import__("trl").__version__})
    summary = {
        **header,
        "precision": "bf16 autocast (fp32 weights)" if bf16 else "fp32",
        "peak_flops": peak, "peak_source": peak_src, "measured_matmul_flops": measured,
        "fast_decode": _common.fast_decode_used(tok),
        "config": {**shape.as_dict(), "lengths": a.lengths, "mixture_coef": MIXTURE_COEF, "kl_coef": KL_COEF,
                   "lr": LR, "gradient_checkpointing": False, "temperature": 1.0, "steps_per_block": a.steps,
                   "warmup_per_block": a.warmup, "rounds": a.rounds, "tiny": a.tiny, "device": a.device},
        "params": counts,
        "flops_formula": "update = 3 * (2*N_blocks*B*L + 2*V*d*B*(T+1) + 4*n_layer*B*L^2*d), L = P+T; "
                         "6ND variant = 6*(N_blocks + V*d)*B*L; MFU = sum(flops) / sum(update time) / peak",
        "judge": JUDGE,
        "targets": TARGETS,
        "targets_met": {
            "ratio_ours_over_trl_at_128": None if not r128 or r128["ratio_ours_over_trl"] is None
            else r128["ratio_ours_over_trl"] <= TARGETS["ratio_ours_over_trl_at_128"],
            "update_mfu_bf16": None if not mfus or not bf16 else min(mfus) >= TARGETS["update_mfu_bf16"],
        },
        "results": results,
    }
    table = markdown_table(summary)
    print(table, flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_gpu_{stem}"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    (out / f"{stem}.md").write_text(table)
    print(f"wrote {out / stem}.json and .md")


def markdown_table(s: dict) -> str:
    gib = 2 ** 30
    c = s["config"]
    lines = [
        f"GPU benchmark {s['date_utc']} on {s['machine']['device']} ({s['precision']}; torch "
        f"{s['versions']['torch']}, transformers {s['versions']['transformers']}, trl {s['versions']['trl']})",
        f"GPT-2 {c['n_layer']}x{c['n_embd']}, vocab {c['vocab']}, batch {c['batch']}, prompt {c['prompt_tokens']}; "
        f"peak {s['peak_source']}" + (f"; measured matmul {s['measured_matmul_flops'] / 1e12:.0f} TFLOP/s"
                                     if s["measured_matmul_flops"] else ""),
        "",
        "| new tokens | ours s/step | gen s | score s | update s | gen tok/s | update tok/s | update TFLOP/s | "
        "MFU (6ND) | peak mem ours / TRL GiB | TRL s/step | ours / TRL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["results"]:
        mem = (f"{_fmt(r['ours_peak_mem_bytes'] and r['ours_peak_mem_bytes'] / gib, '.2f')} / "
               f"{_fmt(r['trl_peak_mem_bytes'] and r['trl_peak_mem_bytes'] / gib, '.2f')}")
        lines.append(
            f"| {r['max_new_tokens']} | {r['ours_median_s']:.4f} | {r['ours_gen_median_s']:.4f} | "
            f"{r['ours_score_median_s']:.4f} | {r['ours_update_median_s']:.4f} | {r['gen_tokens_per_s']:.0f} | "
            f"{r['update_tokens_per_s']:.0f} | {r['update_achieved_tflops']:.3g} | {_fmt(r['update_mfu'], '.1%')} "
            f"({_fmt(r['update_mfu_6nd'], '.1%')}) | {mem} | {_fmt(r['trl_median_s'], '.4f')} | "
            f"**{_fmt(r['ratio_ours_over_trl'], '.3f')}** |")
    t = s["targets_met"]
    lines += ["", f"Targets: ours / TRL <= {s['targets']['ratio_ours_over_trl_at_128']} at 128 new tokens: "
              f"{_fmt(t['ratio_ours_over_trl_at_128'], '')}; update MFU >= {s['targets']['update_mfu_bf16']:.0%} "
              f"(bf16): {_fmt(t['update_mfu_bf16'], '')}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
