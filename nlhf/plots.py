"""Figures shared by the notebooks: loss curves, policy training curves, the pairwise-preference heatmap."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def loss_curves(train: dict[str, pd.DataFrame], evals: dict[str, pd.DataFrame], y: str, y_eval: str, title: str):
    """Train curves (lines) and held-out evaluations (markers) against the step."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, df in train.items():
        ax.plot(df["step"], df[y], label=name)
    for name, df in evals.items():
        if len(df) and y_eval in df:
            ax.plot(df["step"], df[y_eval], "o--", label=name)
    ax.set(xlabel="step", ylabel=y, title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def training_curve(curve: pd.DataFrame, title: str):
    """Policy-gradient diagnostics per logged step: signal / P vs opponent, KL to μ, entropy, length."""
    cols = [c for c in ("p_vs_opponent", "signal", "kl_to_ref", "entropy", "length") if c in curve and
            curve[c].notna().any()]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.0))
    for ax, c in zip(np.atleast_1d(axes), cols):
        ax.plot(curve["step"], curve[c])
        ax.set(title=c, xlabel="step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def preference_heatmap(long: pd.DataFrame, order: Sequence[str], title: str):
    """Heatmap of P(column ≻ row) with ``p ± ci`` written in each cell (the paper's Table 1 layout)."""
    p = long.pivot(index="row", columns="column", values="p").loc[list(order), list(order)]
    ci = long.pivot(index="row", columns="column", values="ci").loc[list(order), list(order)]
    annot = np.array([[f"{p.iloc[i, j]:.2f}\n±{ci.iloc[i, j]:.2f}" if i != j else "—"
                       for j in range(len(order))] for i in range(len(order))])
    n = len(order)
    fig, ax = plt.subplots(figsize=(0.85 * n + 2, 0.65 * n + 1.5))
    sns.heatmap(p, annot=annot, fmt="", cmap="RdBu", vmin=0, vmax=1, center=0.5, cbar_kws={"label": "P(col ≻ row)"},
                annot_kws={"fontsize": 7}, ax=ax, linewidths=0.4, linecolor="white")
    ax.set(xlabel="column policy (wins with the shown probability)", ylabel="row policy (opponent)", title=title)
    fig.tight_layout()
    return fig


CONVERGENCE_PANELS = (("p_vs_sft", "P*(π_t ≻ SFT)", 0.5), ("p_vs_target", "P*(π_t ≻ oracle target)", 0.5),
                      ("kl", "KL(π_t ‖ μ)  [nats]", None), ("words", "mean length  [words]", None))


def convergence(curves: dict[str, pd.DataFrame], title: str):
    """Convergence-probe curves (``nlhf.training.probe``) of one or several methods against the training step: the
    exact judge's win rate against SFT (with its 95% CI band) and against the method's oracle target, the KL to μ
    and the length. The dotted line at ½ is a tie."""
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
