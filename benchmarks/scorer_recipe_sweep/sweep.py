"""PM/RM recipe sweep on the package's scorers: re-fits the rows of ``results_h200_20261127.csv`` that the package
can express with ``nlhf.pipeline.stages.run_preference`` (the ``pm`` / ``rm`` stage itself) and writes the recorded
and the new numbers side by side.

``results_h200_20261127.csv``: 94 fits, one H200 GPU, one CPU thread per fit, on the data of the default run of
2026-11-27 (task pairs + 20,000 SFT-sample comparisons; held-out: 2,000 SFT-sample comparisons), in four rounds:
1, architecture options at batch 64 / lr 1e-3, plus long runs; 2, batch size and learning rate at equal samples;
3, the sum feature at the better recipes; 4, batch 128 x 800 steps around lr 5e-4, PM and RM, 3 seeds. Columns:

* kind, batch, steps, lr, warmup, seed, clip, layers: the ``pm`` / ``rm`` and ``preference_model`` /
  ``reward_model`` sections of params.yaml (steps, batch_size, lr, warmup_steps, seed, grad_clip, n_layer);
* pool, shift, head, K, mix_x, min_lr, soft_labels: options the package does not implement (features other than
  mean + sep + sum/4, a previous-token input embedding, a mixture-of-Bradley–Terry head, a cosine floor other than
  10% of lr, the exact P as soft labels); rows that use any of them are skipped here;
* results, on the held-out SFT-sample comparisons and the task's test pairs: excess log-loss over the Bayes limit,
  expected KL to the exact P, direction agreement with P; wall_s, the fit's seconds.

    dvc repro sft     # the inputs: artifacts/data and artifacts/sft_pairs
    python benchmarks/scorer_recipe_sweep/sweep.py --rounds 4 --jobs 2 --out /tmp/scorer_sweep

On CPU the stage takes ~200 s for 1,800 steps at batch 128 on 2 cores. New numbers match the recorded ones only on
the same task data and SFT model (the table's: the default run of 2026-11-27); on other data, compare recipes with
each other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _stage_runs import StageRun, finished_tags, result, run_all  # noqa: E402

RECORDED = HERE / "results_h200_20261127.csv"
INPUTS = ("data", "sft_pairs")  # run_preference reads these and writes models/ and .resume/ beside them
# the settings the package's scorers have (nlhf.models.encoder.Scorer, nlhf.training.supervised.lr_lambda)
PACKAGE = {"pool": "ymean+last+ysum", "shift": 0, "head": "mlp", "min_lr": 0.1, "soft_labels": 0}
SETTINGS = ["round", "name", "kind", "batch", "steps", "lr", "warmup", "seed", "clip", "layers"]
MEASURED = ["heldout_sft_excess", "heldout_sft_kl", "heldout_sft_direction", "test_excess", "test_direction",
            "wall_s"]


def expressible(recorded: pd.DataFrame) -> pd.DataFrame:
    """The recorded fits whose settings the package's scorers have."""
    keep = pd.Series(True, index=recorded.index)
    for col, value in PACKAGE.items():
        keep &= recorded[col] == value
    return recorded[keep]


def stage_run(row) -> StageRun:
    section, model = ("pm", "preference_model") if row.kind == "pm" else ("rm", "reward_model")
    setup = (f"cfg.{section} = dataclasses.replace(cfg.{section}, steps={int(row.steps)}, "
             f"batch_size={int(row.batch)}, lr={float(row.lr)!r}, warmup_steps={int(row.warmup)}, "
             f"grad_clip={float(row.clip)!r}, seed={int(row.seed)}, eval_every={int(row.steps)}, "
             f"checkpoint_every=10**6)\n"
             f"cfg.{model} = dataclasses.replace(cfg.{model}, n_layer={int(row.layers)})")
    return StageRun(tag=str(row.name), setup=setup, call=f"stages.run_preference(cfg, {section!r})")


def measured(m: dict) -> dict:
    """The stage's metrics under the recorded table's column names."""
    held, test = m.get("heldout_sft_pairs", {}), m.get("test", {})
    return {"heldout_sft_excess": held.get("excess_log_loss"), "heldout_sft_kl": held.get("kl_to_true"),
            "heldout_sft_direction": held.get("direction_agreement"), "test_excess": test.get("excess_log_loss"),
            "test_direction": test.get("direction_agreement"), "wall_s": m["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--names", nargs="+", help="only these fits (the table's name column)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "runs")
    ap.add_argument("--summarize", action="store_true", help="only tabulate the finished runs found in --out")
    args = ap.parse_args()

    rows = expressible(pd.read_csv(RECORDED))
    rows = rows[rows["round"].isin(args.rounds)]
    if args.names:
        rows = rows[rows["name"].isin(args.names)]
    if args.summarize:
        rows = rows[rows["name"].isin(finished_tags(args.out))]
    else:
        print(f"{len(rows)} fits", flush=True)
        run_all([stage_run(r) for r in rows.itertuples(index=False)], args.out, INPUTS, args.jobs)

    table = []
    for row in rows.to_dict("records"):
        m = result(args.out, row["name"])
        if m is None:
            continue
        new = measured(m)
        table.append({**{k: row[k] for k in SETTINGS},
                      **{c: v for k in MEASURED for c, v in ((f"recorded_{k}", row[k]), (k, new[k]))}})
    table = pd.DataFrame(table).round(4)
    table.to_csv(args.out / "results.csv", index=False)
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
