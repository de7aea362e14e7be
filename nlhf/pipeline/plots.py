"""Figures shared by the notebooks: loss curves, policy training curves, the pairwise-preference heatmap, the
convergence probe, the β sweep and the judges' calibration."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def loss_curves(train: dict[str, pd.DataFrame], evals: dict[str, pd.DataFrame], y: str, y_eval: str, title: str,
                ylabel: str | None = None, floor: float | None = None, floor_label: str = "Bayes limit"):
    """Train curves (lines) and held-out evaluations (markers) against the step; ``floor`` draws the lowest loss
    any model can reach on the held-out data (the exact P's log-loss on the same labels) as a dashed line."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, df in train.items():
        ax.plot(df["step"], df[y], label=name)
    for name, df in evals.items():
        if len(df) and y_eval in df:
            ax.plot(df["step"], df[y_eval], "o--", label=name)
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label=f"{floor_label} ({floor:.3f})")
    ax.set(xlabel="training step", ylabel=ylabel or y, title=title)
    ax.legend()
    fig.tight_layout()
    return fig


TRAINING_PANELS = {"p_vs_opponent": r"$P(y \succ y')$ (judge)", "signal": "signal (mean)",
                   "kl_to_ref": r"KL$(\pi\,\|\,\mu)$ per sequence [nats]", "entropy": "entropy per sequence [nats]",
                   "length": "response length [tokens]"}


def training_curve(curve: pd.DataFrame, title: str):
    """Policy-gradient diagnostics per logged step: the judge's P(y ≻ y′) (½ is a tie with the opponent) or the
    reward signal, KL to μ, entropy, length."""
    cols = [c for c in TRAINING_PANELS if c in curve and curve[c].notna().any()]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.0))
    for ax, c in zip(np.atleast_1d(axes), cols):
        ax.plot(curve["step"], curve[c])
        if c == "p_vs_opponent":
            ax.axhline(0.5, color="0.4", ls=":", lw=1)
        ax.set(title=TRAINING_PANELS[c], xlabel="training step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def preference_heatmap(long: pd.DataFrame, order: Sequence[str], title: str):
    """Heatmap of P(column ≻ row) with ``p ± ci`` written in each cell (the paper's Table 1 layout).

    Diverging colours centred at ½ (a tie is white). The colour range is ½ ± d with d the 75th percentile of
    |p − ½| over the off-diagonal cells (at least 0.02): the few cells against SFT would otherwise take the whole
    scale and leave the policy-vs-policy cells, the paper's question, the same white. Cells beyond saturate; their
    values are written in them."""
    import seaborn as sns  # on first use: importing seaborn costs ~1.5 s in every notebook

    p = long.pivot(index="row", columns="column", values="p").loc[list(order), list(order)]
    ci = long.pivot(index="row", columns="column", values="ci").loc[list(order), list(order)]
    n = len(order)
    annot = np.array([[f"{p.iloc[i, j]:.2f}\n±{ci.iloc[i, j]:.2f}" if i != j else "—"
                       for j in range(n)] for i in range(n)])
    off = ~np.eye(n, dtype=bool)
    dev = np.abs(p.to_numpy()[off] - 0.5)
    d = max(0.02, float(np.nanquantile(dev, 0.75))) if dev.size else 0.5
    fig, ax = plt.subplots(figsize=(0.85 * n + 2, 0.65 * n + 1.5))
    sns.heatmap(p, annot=annot, fmt="", cmap="RdBu", vmin=0.5 - d, vmax=0.5 + d, center=0.5,
                cbar_kws={"label": f"P(column ≻ row)  (colour saturates beyond ½ ± {d:.2f})"},
                annot_kws={"fontsize": 7}, ax=ax, linewidths=0.4, linecolor="white")
    ax.set(xlabel="column policy (wins with the shown probability)", ylabel="row policy (opponent)", title=title)
    fig.tight_layout()
    return fig


def beta_sweep(sweep: pd.DataFrame, title: str):
    """The paper's β sweep (§9): P(MDβ ≻ SFT) and P(MDβ ≻ RLHF) against β with 95% CIs (error bars), beside the
    oracle targets' values (dashed). Columns as written by :func:`nlhf.pipeline.reports.beta_sweep_table`."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, (col, opp) in zip(axes, (("p_vs_sft", "SFT"), ("p_vs_rlhf", "RLHF"))):
        if col not in sweep:
            ax.set_visible(False)
            continue
        ax.errorbar(sweep["beta"], sweep[col], yerr=sweep[f"{col}_ci"], fmt="o-", capsize=3,
                    label="trained (learned judges), scored by $P^*$")
        target = col.replace("p_", "oracle_target_")
        if target in sweep:
            ax.plot(sweep["beta"], sweep[target], "s--", color="C2", label="oracle target")
        for _, r in sweep.iterrows():
            ax.annotate(r["policy"], (r["beta"], r[col]), textcoords="offset points", xytext=(0, 7), fontsize=7,
                        ha="center")
        ax.axhline(0.5, color="0.4", ls=":", lw=1)
        ax.set(xlabel=r"$\beta$ (weight of $\mu$ in the opponent mixture)", ylabel=rf"$P^*(\pi_\beta \succ$ {opp}$)$",
               title=f"against {opp}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


CONVERGENCE_PANELS = (("p_vs_sft", r"$P^*(\pi_t \succ$ SFT$)$", 0.5),
                      ("p_vs_target", r"$P^*(\pi_t \succ$ oracle target$)$", 0.5),
                      ("kl", r"KL$(\pi_t\,\|\,\mu)$ [nats]", None), ("words", "mean length [words]", None))


def convergence(curves: dict[str, pd.DataFrame], title: str):
    """Convergence-probe curves (``nlhf.training.probe``) of one or several methods against the training step: the
    exact judge's win rate against SFT (with its 95% CI band) and against the method's oracle target, the KL to μ
    and the length. The dotted line at ½ is a tie."""
    import seaborn as sns  # on first use: importing seaborn costs ~1.5 s in every notebook

    fig, axes = plt.subplots(1, len(CONVERGENCE_PANELS), figsize=(4.0 * len(CONVERGENCE_PANELS), 3.4))
    palette = sns.color_palette("viridis" if len(curves) > 6 else "deep", len(curves))
    for (name, df), color in zip(curves.items(), palette):
        for ax, (col, label, tie) in zip(axes, CONVERGENCE_PANELS):
            ax.plot(df["step"], df[col], color=color, label=name, lw=1.4)
            if f"{col}_ci" in df:
                ax.fill_between(df["step"], df[col] - df[f"{col}_ci"], df[col] + df[f"{col}_ci"], color=color,
                                alpha=0.15, lw=0)
    for ax, (col, label, tie) in zip(axes, CONVERGENCE_PANELS):
        if tie is not None:
            ax.axhline(tie, color="0.4", ls=":", lw=1)
        ax.set(title=label, xlabel="training step")
    axes[-1].legend(fontsize=7, ncol=1 if len(curves) < 8 else 2)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def calibration(bins: pd.DataFrame, title: str):
    """Reliability diagram of the evaluation's judges (:func:`nlhf.evaluate.judge_agreement`): in each bin of a
    judge's P(y ≻ y′ | x), the fraction of human raters who preferred y; a calibrated judge lies on the diagonal."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="0.5", ls=":", lw=1, label="calibrated")
    sns.lineplot(data=bins, x="mean_p", y="mean_label", hue="judge", marker="o", ax=ax)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="judge's P(y ≻ y′ | x), bin mean", ylabel="share of raters preferring y",
           title=title)
    fig.tight_layout()
    return fig


def judge_against_reference(curves: dict[str, pd.DataFrame], title: str):
    """Along training, each policy's win rate against SFT under the probe's judge (solid) and under the reference
    judge of the same draws (dashed, :class:`nlhf.training.probe.JudgeProbe` with ``reference``), against the KL to
    μ: where the two part, the judge stops measuring what the reference measures. One panel per policy."""
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.4), squeeze=False, sharey=True)
    for ax, (name, df) in zip(axes[0], curves.items()):
        for col, label, ls in (("p_vs_sft", "probe's judge", "-"), ("p_vs_sft_reference", "reference", "--")):
            ax.plot(df["kl"], df[col], ls=ls, color="C0" if ls == "-" else "C3", label=label, lw=1.4)
            ax.fill_between(df["kl"], df[col] - df[f"{col}_ci"], df[col] + df[f"{col}_ci"],
                            color="C0" if ls == "-" else "C3", alpha=0.15, lw=0)
        ax.axhline(0.5, color="0.4", ls=":", lw=1)
        ax.set(title=name, xlabel=r"KL$(\pi_t\,\|\,\mu)$ [nats]")
    axes[0][0].set_ylabel("P(π_t ≻ SFT)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
