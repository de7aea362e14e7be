"""Policy-gradient recipe sweep: learning rate, step count, batch and group size, measured with the convergence probe.

Runs ``nlhf.pipeline.stages.run_policy`` for every (method, variant, lr) given, on the artifacts of the current
default run (``dvc repro oracle`` first), with ``--steps`` steps and the probe every 5%, each in its own scratch folder
under ``--out`` (``benchmarks/_stage_runs.py``). Writes ``sweep.csv`` (one row per probe point) and ``summary.md`` (the
last point, the convergence verdict and samples per second).

    python benchmarks/pg_recipe/sweep.py --methods MD1 RLHF --variants paper exact --lrs 1e-4 3e-4 --steps 800
    python benchmarks/pg_recipe/sweep.py --methods RLHF SP --variants exact --batch-sizes 32 8 --group-sizes 1 4
    python benchmarks/pg_recipe/sweep.py --methods SP BR --variants exact --lrs 2e-4 3e-4 --final-lr-fractions 0.1

``--group-sizes``: responses per prompt per step (``pg.group_size``: leave-one-out baseline for RLHF, every
opponent of the prompt for the Nash methods); a step then has batch × group rows.

Runs are independent: ``--jobs 2`` runs two at a time with one torch thread each.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stage_runs import ROOT, StageRun, finished_tags, result, run_all  # noqa: E402

INPUTS = ("data", "models", "oracle")  # run_policy reads these and writes policies*/ beside them


def stage_run(method: str, variant: str, lr: float, steps: int, batch: int, group: int, final: float) -> StageRun:
    return StageRun(
        tag=f"{method}_{variant}_lr{lr:g}_{steps}_b{batch}_k{group}_f{final:g}",
        setup=(f"cfg.pg = dataclasses.replace(cfg.pg, lr={lr}, steps={steps}, batch_size={batch}, group_size={group}, "
               f"final_lr_fraction={final}, checkpoint_every=10**6); "
               f"cfg.ablation = dataclasses.replace(cfg.ablation, lr=None, steps=None)"),  # pg.lr, pg.steps for both
        call=f"stages.run_policy(cfg, {method!r}, {variant!r})",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["MD1", "RLHF"])
    ap.add_argument("--variants", nargs="+", default=["paper"], choices=["paper", "exact"])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-4])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[32], help="prompts per step")
    ap.add_argument("--group-sizes", nargs="+", type=int, default=[1], help="responses per prompt per step")
    ap.add_argument("--final-lr-fractions", nargs="+", type=float, default=[1.0],
                    help="cosine decay of the learning rate to lr × this at the last step (1: constant)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "pg_recipe" / "runs")
    ap.add_argument("--summarize", action="store_true", help="only tabulate the finished runs found in --out")
    args = ap.parse_args()
    if args.summarize:
        tags = finished_tags(args.out)
    else:
        runs = [stage_run(m, v, lr, args.steps, b, k, f) for m, v, lr, b, k, f in
                itertools.product(args.methods, args.variants, args.lrs, args.batch_sizes, args.group_sizes,
                                  args.final_lr_fractions)]
        run_all(runs, args.out, INPUTS, args.jobs)
        tags = [r.tag for r in runs]

    rows, summary = [], []
    for tag in tags:
        m = result(args.out, tag)
        if m is None:
            continue
        method, variant, lr, steps, batch, group, *final = tag.split("_")
        batch, group, final = int(batch[1:]), int(group[1:]), float(final[0][1:]) if final else 1.0
        suffix = "" if variant == "paper" else f"_{variant}"
        probe = pd.read_csv(args.out / tag / "results" / f"convergence{suffix}" / f"{method}.csv")
        rows.append(probe.assign(method=method, variant=variant, lr=float(lr[2:]), batch=batch, group=group,
                                 final_lr_fraction=final))
        last = m["probe"]
        summary.append({"method": method, "variant": variant, "lr": float(lr[2:]), "steps": int(steps),
                        "batch": batch, "group": group, "final_lr_fraction": final,
                        "p_vs_sft": round(last["p_vs_sft"], 3), "ci": round(last["p_vs_sft_ci"], 3),
                        "p_vs_target": round(last["p_vs_target"], 3), "kl": round(last["kl"], 2),
                        "words": round(last["words"], 2), "converged": last["converged"],
                        "samples_per_s": round(int(steps) * batch * group / m["seconds"], 1),  # probes included
                        "seconds": round(m["seconds"])})
    pd.concat(rows).to_csv(args.out / "sweep.csv", index=False)
    table = pd.DataFrame(summary).sort_values(["variant", "method", "lr", "batch", "group", "final_lr_fraction"])
    (args.out / "summary.md").write_text(table.to_markdown(index=False) + "\n")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
