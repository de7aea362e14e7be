"""Tables and figures of the DVC stage ``tabular`` (the paper's §3.2, §6; Theorem 1).

* ``kl_after_T_markdown``: KL(π*_τ ‖ π_T) per method, size and τ, with the Theorem-1 bound 8/(τ²(T+1));
* ``plot_kl_curves``: log–log KL(π*_τ ‖ π_t) vs t with that bound; ``plot_eps_sweep``: the three-rater game's
  policies vs ε; ``plot_tau_sweep``: exploitability of π*_τ as τ → 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nlhf.tabular import metrics


LABELS = {  # (method, iterate) -> legend label; the curves drawn in kl_curves.png
    ("nash_md", "last"): "Nash-MD (last)",
    ("omd", "last"): "OMD (last)",
    ("omd", "average"): "OMD (avg)",
    ("fictitious_play", "last"): "fictitious play (last)",
    ("fictitious_play", "average"): "fictitious play (avg)",
    ("nash_ema", "last"): "Nash-EMA (last)",
    ("best_response_to_mu", "last"): "BR to μ",
}


def kl_after_T_markdown(after: pd.DataFrame) -> str:
    """Markdown table: rows (n, τ), columns method (last iterate / average), plus the Theorem-1 bound."""
    after = after.assign(col=[LABELS.get((m, i), f"{m} ({'last' if i == 'last' else 'avg'})")
                              for m, i in zip(after.method, after.iterate)])
    cols = [v for v in LABELS.values()] + ["Nash-MD (avg)"]
    after.loc[(after.method == "nash_md") & (after.iterate == "average"), "col"] = "Nash-MD (avg)"
    wide = after[after.col.isin(cols)].pivot_table(index=["n", "tau"], columns="col", values="kl_T")[cols]
    bound = after.groupby(["n", "tau"]).bound_T.first()
    T = int(after["T"].iloc[0])
    head = ["n", "τ"] + cols + ["bound 8/(τ²(T+1))"]
    lines = [f"KL(π*_τ ‖ π_T) after T = {T} steps (random games; last iterate unless marked avg).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (n, tau), row in wide.iterrows():
        vals = [f"{row[c]:.2e}" for c in cols] + [f"{bound[(n, tau)]:.2e}"]
        lines.append(f"| {n} | {tau:g} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display), with the seaborn theme of the stage's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_kl_curves(curves: pd.DataFrame, path: Path) -> None:
    """Log–log KL(π*_τ‖π_t) vs t; panels rows τ × columns n; the Theorem-1 bound dashed."""
    import seaborn as sns

    plt = _pyplot()
    df = curves[(curves.game == "random") & (curves.t >= 1)]
    sizes, taus = sorted(df.n.unique()), sorted(df.tau.unique(), reverse=True)
    palette = dict(zip(LABELS.values(), sns.color_palette("tab10", len(LABELS))))
    fig, axes = plt.subplots(len(taus), len(sizes), figsize=(4.2 * len(sizes), 3.4 * len(taus)), squeeze=False,
                             sharex=True)
    floor = 1e-16
    for i, tau in enumerate(taus):
        for j, n in enumerate(sizes):
            ax = axes[i, j]
            sub = df[(df.n == n) & (df.tau == tau)]
            for (method, iterate), label in LABELS.items():
                s = sub[(sub.method == method) & (sub.iterate == iterate)]
                ax.plot(s.t, np.maximum(s.kl, floor), label=label, color=palette[label],
                        lw=2.2 if method == "nash_md" else 1.3, ls="--" if iterate == "average" else "-")
            t = np.sort(sub.t.unique())
            ax.plot(t, metrics.theorem1_bound(tau, t), color="black", ls=":", lw=1.5, label="Thm 1: 8/(τ²(t+1))")
            ax.set(xscale="log", yscale="log", ylim=(1e-14, None), title=f"n = {n}, τ = {tau:g}")
            if j == 0:
                ax.set_ylabel("KL(π*_τ ‖ π_t)")
            if i == len(taus) - 1:
                ax.set_xlabel("iteration t")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Random non-transitive games: distance to the regularized Nash equilibrium", y=1.0)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _save(fig, path)


def plot_eps_sweep(eps: pd.DataFrame, path: Path) -> None:
    """Three-rater game: probability of each action vs ε for NE, RLHF (BT) and the τ-regularized variants."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    styles = {p: s for p, s in zip(eps.policy.unique(), ["-", "", "-", "--", "-."])}
    colors = dict(zip(eps.policy.unique(), ["C0", "C0", "C3", "C1", "C2"]))
    for ax, a in zip(axes, ["y1", "y2", "y3"]):
        for policy in eps.policy.unique():
            s = eps[(eps.policy == policy) & (eps.action == a)]
            if policy == "Nash (closed form)":
                ax.plot(s.eps, s.prob, "o", ms=3, color=colors[policy], label=policy)
            elif policy.startswith("RLHF"):
                ax.step(s.eps, s.prob, where="mid", color=colors[policy], lw=2, label=policy)
            else:
                ax.plot(s.eps, s.prob, styles[policy], color=colors[policy], lw=1.6, label=policy)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(title=f"π({a})", xlabel="ε (rater-share shift)")
    axes[0].set_ylabel("probability")
    h, l = axes[0].get_legend_handles_labels()
    fig.legend(h, l, loc="lower center", ncol=5, frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("Three rater types (§3.2): the Nash policy is continuous in ε, the RLHF optimum jumps at ε = 0")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, path)


def plot_tau_sweep(tau_df: pd.DataFrame, path: Path) -> None:
    """Exploitability of π*_τ vs τ (log–log), one line per game, with the reference line y = τ."""
    import seaborn as sns

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.lineplot(tau_df, x="tau", y="exploitability", hue="game", marker="o", ax=axes[0])
    t = np.sort(tau_df.tau.unique())
    axes[0].plot(t, t, color="black", ls=":", label="y = τ")
    axes[0].set(xscale="log", yscale="log", xlabel="τ", ylabel="max_y P(y ≻ π*_τ) − 1/2",
                title="Exploitability of the regularized NE")
    axes[0].legend(fontsize=7)
    sns.lineplot(tau_df, x="tau", y="kl_to_mu", hue="game", marker="o", ax=axes[1], legend=False)
    axes[1].set(xscale="log", xlabel="τ", ylabel="KL(π*_τ ‖ μ)", title="Distance from the reference μ")
    fig.tight_layout()
    _save(fig, path)
