"""A sweep's report (:mod:`nlhf.sweep`): the oracle's predictions, the trained results beside them, seed-level
intervals, the over-optimisation curves and the false-positive rate of the pipeline where theory says "tie".

Written to ``results/sweeps/<name>/``:

* ``predictions.csv`` / ``.md``: per run, the oracle's P*(target_A ≻ target_B) for the compared cells
  (:data:`CELLS`) and each method's target against SFT. They exist once the predict phase ran.
* ``cells.csv``: per run and cell, the prediction, the exact-judge result and the paper-setting result with their
  evaluation CIs (one sample per evaluation prompt).
* ``summary.csv`` / ``.md``: per point and cell, the prediction (mean over seeds), each trained setting's mean over
  seeds, its seed-level interval (Student t over the seeds' values, so it holds the SFT, PM, RM and policy draws
  as well as the evaluation sample) and the mean evaluation CI; the verdict of each cell from the seed-level
  interval, Holm-corrected across the cells of a point.
* ``overoptimisation.csv``: per run and trained policy, the convergence probe's peak of P*(π ≻ SFT) and its final
  value with the KL to μ at each, and the convergence rule's verdict (settled, and not fallen from its peak).
* ``forms.csv``: the headline cell broken down by the form of the two summaries (complete, embellished, ...): how
  much of the margin each pair of forms contributes.
* ``frontier.png``: P*(π_t ≻ SFT) against KL(π_t‖μ) along training, per method (the over-optimisation curves).
* ``trained_vs_predicted.png``: the headline cell, each seed a point, against the y = x line; ``fit.json``: the
  least-squares slope per setting and the null point's value with its interval.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from nlhf.sweep import SweepSpec, runs

CELLS: tuple[tuple[str, str], ...] = (("MD1", "RLHF"), ("SP", "RLHF"), ("BR", "RLHF"), ("MD1", "SP"), ("MD1", "BR"),
                                      ("RLHF", "SFT"), ("SP", "SFT"), ("MD1", "SFT"), ("BR", "SFT"))
"""The compared cells (A, B): P*(A ≻ B); the first is the headline."""
HEADLINE = CELLS[0]
TIE = 0.01  # theory says "tie" when the oracle's prediction is within this of ½
SETTINGS = {"exact": "", "paper": " (PM/RM)"}  # a trained policy's name in a run's table, by setting


def _root(spec: SweepSpec) -> Path:
    from nlhf.layout import Layout

    return Layout().sweep_report(spec.name)


def _cell(long: pd.DataFrame, a: str, b: str) -> tuple[float, float]:
    """P(a ≻ b) and its CI from a long table (row = opponent, column = the policy whose win rate is shown)."""
    r = long[(long["row"] == b) & (long["column"] == a)]
    if r.empty:
        return np.nan, np.nan
    return float(r["p"].iloc[0]), float(r["ci"].iloc[0])


def predictions(spec: SweepSpec) -> pd.DataFrame:
    """The oracle's P*(target_A ≻ target_B) for every run whose predict phase ran."""
    rows = []
    for run in runs(spec):
        d = run.layout.results("oracle")
        files = sorted(d.glob("*/table_long.csv")) if d.is_dir() else []
        if not files:
            continue
        long = pd.read_csv(files[0])
        row = {"point": run.point, "seed": run.seed}
        for a, b in CELLS:
            row[f"{a} vs {b}"] = _cell(long, a, b)[0]
        row["NE vs RLHF"] = _cell(long, "NE", "RLHF")[0]
        rows.append(row)
    return pd.DataFrame(rows)


def cells(spec: SweepSpec) -> pd.DataFrame:
    """Per run and cell: the prediction and each trained setting's P* with its evaluation CI."""
    rows = []
    for run in runs(spec):
        d = run.layout.results("oracle")
        o = sorted(d.glob("*/table_long.csv")) if d.is_dir() else []
        t = run.layout.results("sweep") / "table_long.csv"
        if not o or not t.is_file():
            continue
        oracle, trained = pd.read_csv(o[0]), pd.read_csv(t)
        for a, b in CELLS:
            row = {"point": run.point, "seed": run.seed, "cell": f"{a} vs {b}",
                   "predicted": _cell(oracle, a, b)[0]}
            for setting, suffix in SETTINGS.items():
                name = lambda n: n if n == "SFT" else n + suffix  # noqa: E731
                row[setting], row[f"{setting}_ci"] = _cell(trained, name(a), name(b))
            if not (np.isnan(row["exact"]) and np.isnan(row["paper"])):  # a cell of methods the sweep trains
                rows.append(row)
    return pd.DataFrame(rows)


def _holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[i]))
        adj[i] = running
    return adj.tolist()


def summary(spec: SweepSpec, per_run: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per point and cell: prediction, each setting's mean over seeds, its seed-level interval and verdict."""
    rows = []
    for (point, cell), g in per_run.groupby(["point", "cell"], sort=False):
        row = {"point": point, "cell": cell, "seeds": len(g), "predicted": g["predicted"].mean()}
        for setting in SETTINGS:
            v = g[setting].dropna().to_numpy()
            row[setting] = v.mean() if len(v) else np.nan
            if len(v) >= 2:
                sd = v.std(ddof=1)
                row[f"{setting}_seed_ci"] = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * sd / np.sqrt(len(v))
                row[f"{setting}_p"] = (float(stats.ttest_1samp(v, 0.5).pvalue) if sd > 0 else
                                       float(v.mean() != 0.5))
            else:
                row[f"{setting}_seed_ci"] = row[f"{setting}_p"] = np.nan
            row[f"{setting}_seed_min"] = v.min() if len(v) else np.nan
            row[f"{setting}_seed_max"] = v.max() if len(v) else np.nan
            row[f"{setting}_eval_ci"] = g[f"{setting}_ci"].mean()
        rows.append(row)
    out = pd.DataFrame(rows)
    alpha = 1 - confidence
    for setting in SETTINGS:
        out[f"{setting}_verdict"] = "—"
        for point, g in out.groupby("point", sort=False):
            ok = g[f"{setting}_p"].notna()
            if not ok.any():
                continue
            adj = _holm(g.loc[ok, f"{setting}_p"].tolist())
            for idx, padj in zip(g.index[ok], adj):
                mean = out.at[idx, setting]
                out.at[idx, f"{setting}_verdict"] = ("tie" if padj >= alpha else
                                                     "A ahead" if mean > 0.5 else "B ahead")
    out["theory"] = np.where(out["predicted"].isna(), "—",
                             np.where((out["predicted"] - 0.5).abs() < TIE, "tie",
                                      np.where(out["predicted"] > 0.5, "A ahead", "B ahead")))
    return out


def overoptimisation(spec: SweepSpec) -> pd.DataFrame:
    """Per run and trained policy: the probe's peak and final P*(π ≻ SFT) with the KL to μ at each, and the
    convergence rule's verdict (:func:`nlhf.training.probe.converged`: settled, and not fallen from its peak)."""
    from nlhf.training.probe import converged
    from nlhf.sweep import run_config

    rows = []
    for run in runs(spec):
        cfg = run_config(spec, run)
        for setting, steps in (("exact", cfg.ablation.steps or cfg.pg.steps), ("paper", cfg.pg.steps)):
            folder = run.layout.convergence("*", setting).parent
            for f in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
                c = pd.read_csv(f)
                peak = c["p_vs_sft"].idxmax()
                last = c.iloc[-1]
                rule = converged(c.to_dict("records"), steps)
                rows.append({"point": run.point, "seed": run.seed, "setting": setting, "policy": f.stem,
                             "peak": c.at[peak, "p_vs_sft"], "peak_step": int(c.at[peak, "step"]),
                             "kl_at_peak": c.at[peak, "kl"], "final": last["p_vs_sft"],
                             "final_ci": last["p_vs_sft_ci"], "kl_final": last["kl"],
                             "drop_from_peak": rule["drop_from_peak"], "drop_ci95": rule["drop_ci95"],
                             "converged": rule["converged"]})
    return pd.DataFrame(rows)


def forms(spec: SweepSpec, cell: tuple[str, str] = HEADLINE) -> pd.DataFrame:
    """The cell P*(A ≻ B) by the forms of the two summaries: share of prompts, mean P*, and the contribution
    Σ (P* − ½)/N of each pair of forms to the margin P*(A ≻ B) − ½ (the contributions add up to the margin)."""
    from nlhf.sweep import run_config
    from nlhf.tasks import make_task

    a, b = cell
    rows = []
    for run in runs(spec):
        f = run.layout.results("sweep") / "samples.csv"
        if not f.is_file():
            continue
        s = pd.read_csv(f, keep_default_na=False)
        task = make_task(run_config(spec, run).task)
        for setting, suffix in SETTINGS.items():
            na, nb = (a if a == "SFT" else a + suffix), (b if b == "SFT" else b + suffix)
            if na not in s or nb not in s:
                continue
            p = np.asarray(task.judge(list(s["prompt"]), list(s[na]), list(s[nb])))
            df = pd.DataFrame({"form_a": s[f"form: {na}"], "form_b": s[f"form: {nb}"], "p": p})
            n = len(df)
            for (fa, fb), g in df.groupby(["form_a", "form_b"]):
                rows.append({"point": run.point, "seed": run.seed, "setting": setting, "cell": f"{a} vs {b}",
                             "form_a": fa, "form_b": fb, "share": len(g) / n, "mean_p": g["p"].mean(),
                             "contribution": float((g["p"] - 0.5).sum() / n)})
    return pd.DataFrame(rows)


def forms_markdown(by_form: pd.DataFrame, at_least: float = 0.005) -> str:
    """The headline cell's margin by pairs of forms, mean over seeds: the pairs that move it by ``at_least``."""
    if by_form.empty:
        return "No trained runs yet.\n"
    cell = by_form["cell"].iloc[0]
    seeds = by_form.groupby(["point", "setting"])["seed"].nunique().rename("seeds").reset_index()
    g = by_form.groupby(["point", "setting", "form_a", "form_b"], sort=False)[["share", "contribution"]].sum()
    g = g.reset_index().merge(seeds, on=["point", "setting"])
    g[["share", "contribution"]] = g[["share", "contribution"]].div(g["seeds"], axis=0)
    a, b = cell.split(" vs ")
    lines = [f"# The cell P*({a} ≻ {b}) by the forms of the two summaries", "",
             f"Share of prompts where {a} wrote form_a and {b} form_b, and that pair's contribution Σ(P* − ½)/N to the "
             f"margin P*({a} ≻ {b}) − ½ (mean over seeds; the contributions of all pairs add up to the margin). "
             f"Pairs contributing at least {at_least} in absolute value.", ""]
    for (point, setting), h in g.groupby(["point", "setting"], sort=False):
        margin = h["contribution"].sum()
        lines += [f"## {point}, {setting} judges: margin {margin:+.3f}", "",
                  f"| form of {a} | form of {b} | share | contribution |", "|---|---|---|---|"]
        for _, r in h[h["contribution"].abs() >= at_least].sort_values("contribution").iterrows():
            lines.append(f"| {r['form_a']} | {r['form_b']} | {r['share']:.3f} | {r['contribution']:+.3f} |")
        lines.append("")
    return "\n".join(lines)


def fit(per_run: pd.DataFrame, cell: str, null_point: str | None, confidence: float = 0.95) -> dict:
    """Least-squares line of trained against predicted over every (point, seed) of ``cell``, per setting, and the
    null point's mean with its seed-level interval."""
    out: dict = {"cell": cell}
    g = per_run[per_run["cell"] == cell]
    for setting in SETTINGS:
        h = g.dropna(subset=[setting])
        entry: dict = {"runs": len(h)}
        if h["predicted"].nunique() >= 2:
            res = stats.linregress(h["predicted"], h[setting])
            entry.update({"slope": res.slope, "slope_stderr": res.stderr, "intercept": res.intercept,
                          "r": res.rvalue})
        if null_point is not None:
            v = h[h["point"] == null_point][setting].to_numpy()
            if len(v) >= 2:
                half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
                entry["null"] = {"point": null_point, "mean": float(v.mean()), "seed_ci": float(half),
                                 "covers_half": bool(abs(v.mean() - 0.5) <= half)}
        out[setting] = entry
    return out


def figure(per_run: pd.DataFrame, cell: str, path: Path) -> None:
    """Trained against predicted for ``cell``: each seed a point, one colour per setting, the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = per_run[per_run["cell"] == cell]
    if g.empty:
        return
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    lo = min(0.4, np.nanmin(g[["predicted", *SETTINGS]].to_numpy()) - 0.02)
    hi = max(0.7, np.nanmax(g[["predicted", *SETTINGS]].to_numpy()) + 0.02)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="y = x (trained = predicted)")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.axvline(0.5, color="grey", lw=0.5)
    for setting, colour, label in (("exact", "tab:blue", "exact judges (the game alone)"),
                                   ("paper", "tab:red", "paper setting (PM / RM)")):
        h = g.dropna(subset=[setting])
        if h.empty:
            continue
        ax.errorbar(h["predicted"], h[setting], yerr=h[f"{setting}_ci"], fmt="o", color=colour, ms=4, alpha=0.8,
                    elinewidth=0.8, label=label)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"oracle prediction P*({cell.replace(' vs ', ' target ≻ ')} target)")
    ax.set_ylabel(f"trained P*({cell.replace(' vs ', ' ≻ ')})")
    ax.set_title("Trained against predicted (each seed a point, ±95% eval CI)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def frontier_figure(spec: SweepSpec, path: Path) -> None:
    """The KL–win-rate frontier: P*(π_t ≻ SFT) against KL(π_t‖μ) along training, one panel per trained point and
    setting, one colour per method, one line per seed. A curve that bends down while the KL keeps growing is a
    policy over-optimising its judge; at matched KL the methods compare without τ (a preference in [0, 1] and an
    unbounded reward make their τ incomparable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for point in spec.points:
        for setting in SETTINGS:
            curves = []
            for run in runs(spec, [point]):
                folder = run.layout.convergence("*", setting).parent
                curves += [(f.stem, run.seed, pd.read_csv(f)) for f in sorted(folder.glob("*.csv"))
                           ] if folder.is_dir() else []
            if curves:
                panels.append((point, setting, curves))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    colours = dict(zip(dict.fromkeys(n for _, _, cs in panels for n, _, _ in cs), plt.cm.tab10.colors))
    for ax, (point, setting, curves) in zip(axes[0], panels):
        seen = set()
        for name, seed, c in curves:
            ax.plot(c["kl"], c["p_vs_sft"], color=colours[name], lw=1, alpha=0.8,
                    label=None if name in seen else name)
            seen.add(name)
        ax.set_title(f"{point}, {'exact judges' if setting == 'exact' else 'paper setting (PM / RM)'}", fontsize=9)
        ax.set_xlabel("KL(π_t ‖ μ), nats")
        ax.axhline(0.5, color="grey", lw=0.5)
    axes[0][0].set_ylabel("P*(π_t ≻ SFT)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, digits=3) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def summary_markdown(spec: SweepSpec, summ: pd.DataFrame) -> str:
    lines = [f"# Sweep `{spec.name}`: `{spec.key}`", "", *([spec.description, ""] if spec.description else []),
             "P*(A ≻ B) per point: the oracle's prediction (mean over seeds), each trained setting's mean over seeds "
             "± its seed-level 95% interval (Student t), the mean evaluation CI, and the verdict from the seed-level "
             "interval (Holm across the cells of a point). Seeds re-draw data, SFT, PM, RM and policy.", "",
             "| point | cell | seeds | predicted | theory | exact judges | eval CI | verdict | paper setting | eval CI "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in summ.iterrows():
        def val(s):
            return (f"{_fmt(r[s])} ± {_fmt(r[f'{s}_seed_ci'])}" if not np.isnan(r[s]) else "—")
        lines.append(f"| {r['point']} | {r['cell']} | {r['seeds']} | {_fmt(r['predicted'])} | {r['theory']} | "
                     f"{val('exact')} | {_fmt(r['exact_eval_ci'])} | {r['exact_verdict']} | {val('paper')} | "
                     f"{_fmt(r['paper_eval_ci'])} | {r['paper_verdict']} |")
    return "\n".join(lines) + "\n"


def write_report(spec: SweepSpec, params="params.yaml") -> dict:
    """Every file of the module docstring that the runs so far allow."""
    root = _root(spec)
    root.mkdir(parents=True, exist_ok=True)
    pred = predictions(spec)
    if pred.empty:
        raise FileNotFoundError(f"sweep {spec.name}: no predictions yet under {root} (run the predict phase)")
    pred = pred.dropna(axis=1, how="all")  # cells of methods the sweep does not train
    pred.to_csv(root / "predictions.csv", index=False)
    mean = pred.groupby("point", sort=False).mean(numeric_only=True).drop(columns="seed")
    spread = pred.groupby("point", sort=False).agg(lambda v: v.max() - v.min()).drop(columns="seed")
    md = [f"# Sweep `{spec.name}`: the oracle's predictions", "",
          "P*(target A ≻ target B) on each run's evaluation prompts; mean over the seeds (max − min across seeds).",
          "", "| point | " + " | ".join(mean.columns) + " |", "|---|" + "---|" * len(mean.columns)]
    for point, r in mean.iterrows():
        md.append(f"| {point} | " + " | ".join(f"{r[c]:.3f} ({spread.loc[point, c]:.3f})" for c in mean.columns)
                  + " |")
    (root / "predictions.md").write_text("\n".join(md) + "\n")
    report: dict = {"predicted_runs": len(pred)}
    per_run = cells(spec)
    if per_run.empty:
        (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    per_run.to_csv(root / "cells.csv", index=False)
    summ = summary(spec, per_run)
    summ.to_csv(root / "summary.csv", index=False)
    (root / "summary.md").write_text(summary_markdown(spec, summ))
    opt = overoptimisation(spec)
    opt.to_csv(root / "overoptimisation.csv", index=False)
    by_form = forms(spec)
    by_form.to_csv(root / "forms.csv", index=False)
    (root / "forms.md").write_text(forms_markdown(by_form))
    headline = f"{HEADLINE[0]} vs {HEADLINE[1]}"
    trained_points = [p for p in spec.points if p in set(per_run["point"])]
    pmean = per_run[per_run["cell"] == headline].groupby("point")["predicted"].mean().dropna()
    null_point = (pmean - 0.5).abs().idxmin() if len(pmean) else None  # the point closest to the null
    report["trained_runs"] = int(per_run[["point", "seed"]].drop_duplicates().shape[0])
    report["fit"] = fit(per_run, headline, null_point)
    tie = summ[summ["theory"] == "tie"]
    report["false_positives"] = {s: {"tie_cells": int(tie[f"{s}_verdict"].ne("—").sum()),
                                     "significant": int(tie[f"{s}_verdict"].isin(["A ahead", "B ahead"]).sum())}
                                 for s in SETTINGS}
    report["points_trained"] = trained_points
    (root / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    figure(per_run, headline, root / "trained_vs_predicted.png")
    frontier_figure(spec, root / "frontier.png")
    return report
