"""A sweep's report (:mod:`nlhf.pipeline.sweep`): the oracle's predictions, the trained results beside them, seed-level
intervals, the over-optimisation curves and the false-positive rate of the pipeline where theory says "tie".

Written to ``results/sweeps/<name>/``:

* ``predictions.csv`` / ``.md``: per run, the oracle's P*(target_A ≻ target_B) for the compared cells
  (:data:`CELLS`) and each method's target against SFT. They exist once the predict phase ran.
* ``cells.csv``: per run and cell, the prediction, the exact-judge result and the paper-setting result with their
  evaluation CIs (one sample per evaluation prompt). A point enters the files below only when every seed of it
  is trained (``report.json``: ``points_complete``, ``points_incomplete``).
* ``predictions_summary.csv``: per point, the mean over seeds of each predicted cell.
* ``summary.csv`` / ``.md``: per point and cell (``row``: "<point> <cell>"), the prediction (mean over seeds), each trained setting's mean over
  seeds, its seed-level interval (Student t over the seeds' values, so it holds the SFT, PM, RM and policy draws
  as well as the evaluation sample) and the mean evaluation CI; the verdict of each cell from the seed-level
  interval, Holm-corrected across the cells of a point.
* ``overoptimisation.csv``: per run and trained policy, the convergence probe's peak of P*(π ≻ SFT) and its final
  value with the KL to μ at each, the convergence rule's verdict (settled, and not fallen from its peak), and the
  judge's own score early and late in training (what the policy optimised, beside what P* says of it);
  ``overoptimisation_summary.csv``: per point, setting and method (``row``: "<point> <setting> <method>"), the means
  over seeds of the final P*(π ≻ SFT) and KL to μ and of the peak, and how many seeds converged.
* ``forms.csv``: the headline cell broken down by the form of the two summaries (complete, embellished, ...): how
  much of the margin each pair of forms contributes.
* ``dose_response.png``: the headline cell along the points, predicted (each seed and the mean) and trained.
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

from nlhf.evaluate import holm, table_cell
from nlhf.pipeline.sweep import Run, SweepSpec, run_config, runs

TIE = 0.01  # theory says "tie" when the oracle's prediction is within this of ½
SETTINGS = {"exact": "", "paper": " (PM/RM)"}  # a trained policy's name in a run's table, by setting


def _cells(spec: SweepSpec) -> list[tuple[str, str]]:
    """The sweep's compared cells (A, B), P*(A ≻ B); the first is the headline."""
    return [tuple(c.split(" vs ")) for c in spec.cells]


def _oracle_long(spec: SweepSpec, run: Run, params) -> pd.DataFrame | None:
    """The run's oracle table under its own population, or None before its predict phase."""
    f = run.layout.results("oracle", run_config(spec, run, params).task.synthetic.population) / "table_long.csv"
    return pd.read_csv(f) if f.is_file() else None


def _root(spec: SweepSpec) -> Path:
    from nlhf.pipeline.layout import Layout

    return Layout().sweep_report(spec.name)


def _target(name: str) -> str:
    """The oracle policy a trained policy is predicted by: Nash-EMA's averaged policy has its method's target."""
    return name.rstrip("*")


def predictions(spec: SweepSpec, params="params.yaml") -> pd.DataFrame:
    """The oracle's P*(target_A ≻ target_B) for every run whose predict phase ran (on the oracle's prompts; against
    SFT, μ̂ renormalised on the candidate pools, which hold most but not all of SFT's mass: ``sft_mass_on_pool``)."""
    rows = []
    for run in runs(spec):
        long = _oracle_long(spec, run, params)
        if long is None:
            continue
        row = {"point": run.point, "seed": run.seed}
        for a, b in _cells(spec):
            row[f"{a} vs {b}"] = table_cell(long, _target(a), _target(b))[0]
        row["NE vs RLHF"] = table_cell(long, "NE", "RLHF")[0]
        rows.append(row)
    return pd.DataFrame(rows)


def cells(spec: SweepSpec, params="params.yaml") -> pd.DataFrame:
    """Per run and cell: the prediction and each trained setting's P* with its evaluation CI."""
    rows = []
    for run in runs(spec):
        oracle = _oracle_long(spec, run, params)
        t = run.layout.results("sweep") / "table_long.csv"
        if oracle is None or not t.is_file():
            continue
        trained = pd.read_csv(t)
        for a, b in _cells(spec):
            row = {"point": run.point, "seed": run.seed, "cell": f"{a} vs {b}",
                   "predicted": table_cell(oracle, _target(a), _target(b))[0]}
            for setting, suffix in SETTINGS.items():
                name = lambda n: n if n == "SFT" else n + suffix  # noqa: E731
                row[setting], row[f"{setting}_ci"] = table_cell(trained, name(a), name(b))
            if not (np.isnan(row["exact"]) and np.isnan(row["paper"])):  # a cell of methods the sweep trains
                rows.append(row)
    return pd.DataFrame(rows)


def _t_test(v: np.ndarray, null: float, confidence: float) -> tuple[float, float, float]:
    """Mean of ``v``, its Student-t half-width and the two-sided p-value of mean = ``null`` (NaN for < 2 values;
    values that do not vary: p = 0 unless their mean is the null)."""
    if len(v) < 2:
        return (float(v.mean()) if len(v) else np.nan), np.nan, np.nan
    sd = v.std(ddof=1)
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * sd / np.sqrt(len(v))
    p = float(stats.ttest_1samp(v, null).pvalue) if sd > 0 else float(np.isclose(v.mean(), null))
    return float(v.mean()), float(half), p


def _holm_verdicts(out: pd.DataFrame, pcol: str, words, alpha: float) -> list[str]:
    """Holm across the cells of each point: ``words[0]`` when the adjusted p-value is ≥ ``alpha``, else
    ``words[1]`` / ``words[2]`` by the sign of the tested difference (``pcol`` + ``_sign``)."""
    verdict = pd.Series("—", index=out.index, dtype=object)
    out[pcol + "_holm"] = np.nan
    for _, g in out.groupby("point", sort=False):
        ok = g[pcol].notna()
        if not ok.any():
            continue
        for idx, padj in zip(g.index[ok], holm(g.loc[ok, pcol].tolist())):
            out.at[idx, pcol + "_holm"] = padj
            verdict[idx] = words[0] if padj >= alpha else words[1] if out.at[idx, pcol + "_sign"] > 0 else words[2]
    return verdict.tolist()


def summary(spec: SweepSpec, per_run: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per point and cell: the prediction, each setting's mean over seeds with its seed-level interval, and two
    verdicts, Holm-corrected across the cells of a point: against ½ (``A ahead``, ``B ahead`` or ``n.s.``: not
    significant, which with three seeds is weak evidence of a tie) and against the prediction (the per-seed
    differences trained − predicted: ``agrees``, ``above`` or ``below``)."""
    rows = []
    for (point, cell), g in per_run.groupby(["point", "cell"], sort=False):
        row = {"point": point, "cell": cell, "predicted": g["predicted"].mean()}
        for s in SETTINGS:
            h = g.dropna(subset=[s])
            v = h[s].to_numpy()
            row[f"{s}_seeds"] = len(v)
            row[s], row[f"{s}_seed_ci"], row[f"{s}_p"] = _t_test(v, 0.5, confidence)
            row[f"{s}_p_sign"] = row[s] - 0.5
            d = (h[s] - h["predicted"]).to_numpy()
            row[f"{s}_minus_predicted"], row[f"{s}_minus_predicted_ci"], row[f"{s}_vs_pred_p"] = _t_test(
                d, 0.0, confidence)
            row[f"{s}_vs_pred_p_sign"] = row[f"{s}_minus_predicted"]
            row[f"{s}_seed_min"] = v.min() if len(v) else np.nan
            row[f"{s}_seed_max"] = v.max() if len(v) else np.nan
            row[f"{s}_eval_ci"] = h[f"{s}_ci"].mean() if len(v) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    alpha = 1 - confidence
    for s in SETTINGS:
        out[f"{s}_verdict"] = _holm_verdicts(out, f"{s}_p", ("n.s.", "A ahead", "B ahead"), alpha)
        out[f"{s}_vs_prediction"] = _holm_verdicts(out, f"{s}_vs_pred_p", ("agrees", "above", "below"), alpha)
    out["theory"] = np.where(out["predicted"].isna(), "—",
                             np.where((out["predicted"] - 0.5).abs() < TIE, "tie",
                                      np.where(out["predicted"] > 0.5, "A ahead", "B ahead")))
    return out


def overoptimisation(spec: SweepSpec, params="params.yaml") -> pd.DataFrame:
    """Per run and trained policy: the convergence probe's peak window (the best mean of as many points as the
    last quarter holds) and its end value, P*(π ≻ SFT), with the KL to μ at each, and the convergence rule's
    verdict (:func:`nlhf.training.probe.converged`: settled, and not fallen from its peak)."""
    from nlhf.pipeline.stages.policy import trainer_config
    from nlhf.training.probe import converged

    rows = []
    for run in runs(spec):
        cfg = run_config(spec, run, params)
        for setting, methods in (("exact", spec.exact_methods), ("paper", spec.paper_methods)):
            for m in methods:
                f = run.layout.convergence(m, setting)
                if not f.is_file():
                    continue
                c = pd.read_csv(f)
                rule = converged(c.to_dict("records"), trainer_config(cfg, m, setting).steps)
                last = c.iloc[-1]
                at_peak = (c.iloc[(c["step"] - rule["peak_step"]).abs().idxmin()] if rule["peak_step"] is not None
                           else {"kl": np.nan})  # too few probe points for the rule
                # the judge's own score of the policy's samples, first and last tenth of training: RLHF's mean
                # reward, a Nash method's P(y ≻ y′) − ½ against its opponent (for BR: the judge's P(π ≻ SFT) − ½)
                log = pd.read_csv(run.layout.policy_results(m, setting) / "curve.csv")["signal"].dropna()
                tenth = max(1, len(log) // 10)
                rows.append({"point": run.point, "seed": run.seed, "setting": setting, "policy": m,
                             "peak_mean": rule["peak_mean"], "peak_step": rule["peak_step"],
                             "kl_at_peak": at_peak["kl"], "final": last["p_vs_sft"],
                             "final_ci": last["p_vs_sft_ci"], "kl_final": last["kl"],
                             "drop_from_peak": rule["drop_from_peak"], "drop_ci95": rule["drop_ci95"],
                             "converged": rule["converged"], "judge_score_first": log.iloc[:tenth].mean(),
                             "judge_score_last": log.iloc[-tenth:].mean()})
    return pd.DataFrame(rows)


def overoptimisation_summary(opt: pd.DataFrame) -> pd.DataFrame:
    """:func:`overoptimisation` per point, setting and method (``row``: "<point> <setting> <method>"): the number of
    seeds, the means over them of the final P*(π ≻ SFT), of the KL to μ at the end and of the peak, and how many
    seeds the convergence rule calls converged."""
    columns = ["row", "point", "setting", "policy", "seeds", "final", "kl_final", "peak_mean", "converged"]
    if opt.empty:
        return pd.DataFrame(columns=columns)
    out = opt.groupby(["point", "setting", "policy"], sort=False).agg(
        seeds=("seed", "size"), final=("final", "mean"), kl_final=("kl_final", "mean"),
        peak_mean=("peak_mean", "mean"), converged=("converged", "sum")).reset_index()
    out["row"] = out["point"] + " " + out["setting"] + " " + out["policy"]
    return out[columns].round({"final": 4, "kl_final": 3, "peak_mean": 4})


def forms(spec: SweepSpec, params="params.yaml") -> pd.DataFrame:
    """The headline cell P*(A ≻ B) by the forms of the two summaries: share of prompts, mean P*, and the
    contribution Σ (P* − ½)/N of each pair of forms to the margin P*(A ≻ B) − ½ (they add up to the margin)."""
    from nlhf.tasks import make_task

    a, b = _cells(spec)[0]
    rows = []
    for run in runs(spec):
        f = run.layout.results("sweep") / "samples.csv"
        if not f.is_file():
            continue
        s = pd.read_csv(f, keep_default_na=False)
        task = make_task(run_config(spec, run, params).task)
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
    null point's mean with its seed-level interval. The line needs points whose mean predictions span more than
    :data:`TIE` (a sweep whose targets' contest does not move has no slope: ``no_slope`` says why)."""
    out: dict = {"cell": cell}
    g = per_run[per_run["cell"] == cell]
    span = float(np.ptp(g.groupby("point")["predicted"].mean())) if len(g) else 0.0
    for setting in SETTINGS:
        h = g.dropna(subset=[setting])
        entry: dict = {"runs": len(h)}
        if h["point"].nunique() >= 2 and span <= TIE:
            entry["no_slope"] = f"the points' predictions span {span:.4f}, within {TIE}: nothing to regress on"
        elif h["point"].nunique() >= 2:  # a slope across points, not across the seeds of one
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


def dose_response_figure(spec: SweepSpec, pred: pd.DataFrame, summ: pd.DataFrame | None, path: Path) -> None:
    """The headline cell along the sweep's points: the oracle's prediction (each seed a dot, their mean a line) and,
    at the points whose seeds are all trained, each setting's mean with its seed-level interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = spec.cells[0]
    order = [p for p in spec.points if p in set(pred["point"])]
    x = {p: i for i, p in enumerate(order)}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.scatter([x[p] for p in pred["point"]], pred[cell], s=12, color="black", alpha=0.5, label="oracle, each seed")
    means = pred.groupby("point")[cell].mean()
    ax.plot(range(len(order)), [means[p] for p in order], color="black", lw=1.2, label="oracle prediction (mean)")
    if summ is not None and not summ.empty:
        h = summ[summ["cell"] == cell]
        for s, colour, label, dx in (("exact", "tab:blue", "trained, exact judges", -0.08),
                                     ("paper", "tab:red", "trained, paper setting (PM / RM)", 0.08)):
            g = h[h[f"{s}_seeds"] > 0]
            if len(g):
                ax.errorbar([x[p] + dx for p in g["point"]], g[s], yerr=g[f"{s}_seed_ci"], fmt="o", color=colour,
                            capsize=3, label=f"{label}: mean, seed-level 95% interval")
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(f"point ({spec.key})")
    a, b = cell.split(" vs ")
    ax.set_ylabel(f"P*({a} ≻ {b})")
    ax.set_title(f"Sweep {spec.name}: {cell} along the points", fontsize=10)
    ax.legend(fontsize=7)
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
    # a row per setting, a column per point: the same point's two settings one above the other
    points = list(dict.fromkeys(p for p, _, _ in panels))
    settings = [s for s in SETTINGS if any(ps == s for _, ps, _ in panels)]
    fig, axes = plt.subplots(len(settings), len(points), figsize=(3.6 * len(points), 3.3 * len(settings)),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    colours = dict(zip(dict.fromkeys(n for _, _, cs in panels for n, _, _ in cs), plt.cm.tab10.colors))
    for point, setting, curves in panels:
        ax = axes[settings.index(setting)][points.index(point)]
        ax.set_visible(True)
        seen = set()
        for name, seed, c in curves:
            ax.plot(c["kl"], c["p_vs_sft"], color=colours[name], lw=1, alpha=0.8,
                    label=None if name in seen else name)
            seen.add(name)
        ax.set_title(f"{point}, {'exact judges' if setting == 'exact' else 'paper setting (PM / RM)'}", fontsize=9)
        ax.set_xlabel("KL(π_t ‖ μ), nats")
        ax.set_ylabel("P*(π_t ≻ SFT)")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, digits=3) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def summary_markdown(spec: SweepSpec, summ: pd.DataFrame, confidence: float = 0.95) -> str:
    pct = f"{confidence:.0%}"
    lines = [f"# Sweep `{spec.name}`: `{spec.key}`", "", *([spec.description, ""] if spec.description else []),
             f"P*(A ≻ B) per point: the oracle's prediction (mean over seeds; theory says tie within {TIE} of ½), each "
             f"trained setting's mean over seeds ± its seed-level {pct} interval (Student t; seeds re-draw data, SFT, "
             f"PM, RM and policy), the mean evaluation CI (one sample per prompt), and two verdicts, Holm-corrected "
             f"across the cells of a point: against ½ (n.s.: not significant, weak evidence of a tie with few seeds) "
             f"and against the prediction (trained − predicted per seed). The predictions are on the oracle's "
             f"prompts and the trained results on other evaluation prompts; against SFT the prediction uses μ̂ on the "
             f"candidate pools.", "",
             "| point | cell | predicted | theory | exact judges (seeds) | eval CI | vs ½ | vs prediction | "
             "paper setting (seeds) | eval CI | vs ½ | vs prediction |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in summ.iterrows():
        def val(s):
            return (f"{_fmt(r[s])} ± {_fmt(r[f'{s}_seed_ci'])} ({r[f'{s}_seeds']})" if r[f"{s}_seeds"] else "—")
        lines.append(f"| {r['point']} | {r['cell']} | {_fmt(r['predicted'])} | {r['theory']} | "
                     + " | ".join(f"{val(s)} | {_fmt(r[f'{s}_eval_ci'])} | {r[f'{s}_verdict']} | "
                                  f"{r[f'{s}_vs_prediction']}" for s in SETTINGS) + " |")
    return "\n".join(lines) + "\n"


def write_report(spec: SweepSpec, params="params.yaml") -> dict:
    """Every file of the module docstring that the runs so far allow."""
    root = _root(spec)
    root.mkdir(parents=True, exist_ok=True)
    pred = predictions(spec, params)
    if pred.empty:
        raise FileNotFoundError(f"sweep {spec.name}: no predictions yet under {root} (run the predict phase)")
    pred = pred.dropna(axis=1, how="all")  # cells of methods the sweep does not train
    pred.to_csv(root / "predictions.csv", index=False)
    mean = pred.groupby("point", sort=False).mean(numeric_only=True).drop(columns="seed")
    spread = pred.groupby("point", sort=False).agg(lambda v: v.max() - v.min()).drop(columns="seed")
    md = [f"# Sweep `{spec.name}`: the oracle's predictions", "",
          "P*(target A ≻ target B) on the oracle's prompts of each run (against SFT: μ̂ on the candidate pools); mean "
          "over the seeds (max − min across seeds).",
          "", "| point | " + " | ".join(mean.columns) + " |", "|---|" + "---|" * len(mean.columns)]
    for point, r in mean.iterrows():
        md.append(f"| {point} | " + " | ".join(f"{r[c]:.3f} ({spread.loc[point, c]:.3f})" for c in mean.columns)
                  + " |")
    (root / "predictions.md").write_text("\n".join(md) + "\n")
    mean.round(4).to_csv(root / "predictions_summary.csv")  # per point: the mean over seeds of each cell
    expected = {(r.point, r.seed) for r in runs(spec)}
    dose_response_figure(spec, pred, None, root / "dose_response.png")
    report: dict = {"predicted_runs": len(pred),
                    "runs_without_prediction": sorted(f"{p}/seed{s}" for p, s in expected
                                                      - set(zip(pred["point"], pred["seed"])))}
    per_run = cells(spec, params)
    if per_run.empty:
        (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    seeds_done = per_run.groupby("point")["seed"].nunique()
    trained = set(zip(per_run["point"], per_run["seed"]))  # every trained run, of complete points or not
    complete = [p for p in spec.points if seeds_done.get(p, 0) == len(spec.seeds)]
    per_run["point_complete"] = per_run["point"].isin(complete)
    per_run.to_csv(root / "cells.csv", index=False)
    report["points_complete"] = complete  # every seed trained: only these enter the summary, verdicts and fit
    report["points_incomplete"] = {p: f"{int(seeds_done[p])} of {len(spec.seeds)} seeds trained"
                                   for p in spec.points if p in seeds_done and p not in complete}
    per_run = per_run[per_run["point_complete"]]
    if per_run.empty:
        (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    summ = summary(spec, per_run)
    summ.insert(0, "row", summ["point"] + " " + summ["cell"])  # one key per row: "<point> <cell>"
    summ.to_csv(root / "summary.csv", index=False)
    (root / "summary.md").write_text(summary_markdown(spec, summ))
    opt = overoptimisation(spec, params)
    opt.to_csv(root / "overoptimisation.csv", index=False)
    overoptimisation_summary(opt).to_csv(root / "overoptimisation_summary.csv", index=False)
    by_form = forms(spec, params)
    by_form.to_csv(root / "forms.csv", index=False)
    (root / "forms.md").write_text(forms_markdown(by_form))
    headline = spec.cells[0]
    trained_points = [p for p in spec.points if p in set(per_run["point"])]
    pmean = per_run[per_run["cell"] == headline].groupby("point")["predicted"].mean().dropna()
    # the null: the point whose prediction is closest to ½, if theory calls it a tie there
    null_point = (pmean - 0.5).abs().idxmin() if len(pmean) and (pmean - 0.5).abs().min() < TIE else None
    report["trained_runs"] = len(trained)
    report["runs_not_trained"] = sorted(f"{p}/seed{s}" for p, s in expected - trained)
    report["fit"] = fit(per_run, headline, null_point)
    tie = summ[summ["theory"] == "tie"]
    report["false_positives"] = {s: {"tie_cells": int(tie[f"{s}_verdict"].ne("—").sum()),
                                     "significant": int(tie[f"{s}_verdict"].isin(["A ahead", "B ahead"]).sum())}
                                 for s in SETTINGS}
    report["points_trained"] = trained_points
    (root / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    figure(per_run, headline, root / "trained_vs_predicted.png")
    dose_response_figure(spec, pred, summ, root / "dose_response.png")
    frontier_figure(spec, root / "frontier.png")
    return report
