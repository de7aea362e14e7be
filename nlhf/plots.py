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
