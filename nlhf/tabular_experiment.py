"""DVC stage ``tabular``: Nash-MD vs. the comparison algorithms on exact games (the paper's §3–4, §6).

``run_tabular(cfg, out_dir)`` computes everything and writes to ``out_dir`` (results/tabular/):

* ``kl_curves.csv``     long format: game, n, tau, method, iterate (last/average), t, kl — log-spaced t
* ``kl_after_T.csv/.md`` KL(π*_τ ‖ π_T) per method/size/τ, with the Theorem-1 bound 8/(τ²(T+1))
* ``theorem1_check.csv`` per (game, n, τ): max_t KL_t / bound_t over every t ≤ T, and whether KL_t ≤ bound_t ∀t
* ``eps_sweep.csv``     three-rater game (§3.2): NE (LP and closed form), RLHF/BT optimum, π*_τ vs ε
* ``tau_sweep.csv``     exploitability of π*_τ as τ → 0
* ``kl_curves.png``, ``eps_sweep.png``, ``tau_sweep.png``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from nlhf import games
from nlhf import tabular as tb
from nlhf.config import check


@dataclass
class TabularConfig:
    """Parameters of the tabular stage (params.yaml section ``tabular``)."""

    sizes: list[int] = field(default_factory=lambda: [10, 100, 1000])  # numbers of actions n of the random games
    taus: list[float] = field(default_factory=lambda: [0.1, 0.02])  # regularization strengths τ
    steps: int = 10_000  # T: Nash-MD iterations per run
    seed: int = 0  # seeds the random games and μ
    game_scale: float = 4.0  # random game P = σ(A), A antisymmetric with A_ij ~ N(0, scale²)
    mu_alpha: float | None = 1.0  # reference μ ~ Dirichlet(α·1); None: uniform μ
    ema_beta: float = 0.9  # Nash-EMA opponent q_t = β q_{t−1} + (1−β) π_t
    curve_points: int = 200  # log-spaced t values stored per curve in kl_curves.csv
    contexts: int = 8  # contextual-bandit check of Theorem 1 (KL_ρ): number of contexts X …
    context_size: int = 50  # … and actions per context
    eps_points: int = 41  # ε grid on [−1/3, 1/3] for the three-rater sweep
    eps_tau: float = 0.02  # τ of the regularized Nash / KL-regularized RLHF curves in the ε sweep
    tau_grid: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002,
                                                            0.001])  # τ values of the τ → 0 sweep
    tau_sweep_size: int = 100  # n of the random game in the τ sweep

    def __post_init__(self):
        check(len(self.sizes) > 0 and all(n >= 2 for n in self.sizes), "sizes", f"need sizes >= 2, got {self.sizes}")
        check(len(self.taus) > 0 and all(0 < t for t in self.taus), "taus", f"need taus > 0, got {self.taus}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.game_scale > 0, "game_scale", f"must be > 0, got {self.game_scale}")
        check(self.mu_alpha is None or self.mu_alpha > 0, "mu_alpha", f"must be > 0 or null, got {self.mu_alpha}")
        check(0 <= self.ema_beta < 1, "ema_beta", f"must be in [0, 1), got {self.ema_beta}")
        check(self.curve_points >= 2, "curve_points", f"must be >= 2, got {self.curve_points}")
        check(self.contexts >= 1, "contexts", f"must be >= 1, got {self.contexts}")
        check(self.context_size >= 2, "context_size", f"must be >= 2, got {self.context_size}")
        check(self.eps_points >= 3, "eps_points", f"must be >= 3, got {self.eps_points}")
        check(self.eps_tau > 0, "eps_tau", f"must be > 0, got {self.eps_tau}")
        check(len(self.tau_grid) > 0 and all(t > 0 for t in self.tau_grid), "tau_grid",
              f"need values > 0, got {self.tau_grid}")
        check(self.tau_sweep_size >= 2, "tau_sweep_size", f"must be >= 2, got {self.tau_sweep_size}")


LABELS = {  # (method, iterate) -> legend label; the curves drawn in kl_curves.png
    ("nash_md", "last"): "Nash-MD (last)",
    ("omd", "last"): "OMD (last)",
    ("omd", "average"): "OMD (avg)",
    ("fictitious_play", "last"): "fictitious play (last)",
    ("fictitious_play", "average"): "fictitious play (avg)",
    ("nash_ema", "last"): "Nash-EMA (last)",
    ("best_response_to_mu", "last"): "BR to μ",
}


def make_game(n: int, cfg: TabularConfig) -> tuple[np.ndarray, np.ndarray]:
    """The random game of size n and its reference μ (seeded by (seed, n), independent of other sizes)."""
    rng = np.random.default_rng([cfg.seed, n])
    P = games.random_game(n, rng, cfg.game_scale)
    mu = games.uniform(n) if cfg.mu_alpha is None else rng.dirichlet(np.full(n, cfg.mu_alpha))
    mu = np.maximum(mu, 1e-300)
    return P, mu / mu.sum()


def log_spaced(T: int, points: int) -> np.ndarray:
    """About ``points`` distinct integer t in [0, T], log-spaced, including 0, 1 and T."""
    return np.unique(np.concatenate([[0], np.round(np.geomspace(1, T, points)).astype(int)]))


def _curve_rows(game, n, tau, runs, ts):
    rows = []
    for (method, _), run in runs.items():
        for iterate, series in (("last", run.kl), ("average", run.kl_average)):
            rows += [dict(game=game, n=n, tau=tau, method=method, iterate=iterate, t=int(t), kl=float(series[t]))
                     for t in ts]
    return rows


def _theorem1_row(game, n, tau, kl_series):
    t = np.arange(len(kl_series))
    bound = tb.theorem1_bound(tau, t)
    ratio = kl_series / bound
    k = int(np.argmax(ratio))
    return dict(game=game, n=n, tau=tau, T=len(kl_series) - 1, max_ratio_to_bound=float(ratio[k]), argmax_t=k,
                holds_all_t=bool(np.all(kl_series <= bound)), kl_T=float(kl_series[-1]), bound_T=float(bound[-1]))


def run_random_games(cfg: TabularConfig, progress: bool = True):
    """All methods × τ on each random game; returns (curve rows, KL-after-T rows, Theorem-1 rows, info)."""
    curves, after, thm, info = [], [], [], {}
    ts = log_spaced(cfg.steps, cfg.curve_points)
    for n in cfg.sizes:
        P, mu = make_game(n, cfg)
        targets = {tau: games.regularized_nash(P, mu, tau) for tau in cfg.taus}
        info[n] = {tau: dict(residual=games.fixed_point_residual(P, mu, tau, targets[tau]),
                             cycle=games.find_cycle(P) is not None) for tau in cfg.taus}
        runs = tb.run_methods(P, mu, cfg.taus, cfg.steps, ema_beta=cfg.ema_beta, targets=targets,
                              progress=progress)
        for tau in cfg.taus:
            sub = {k: r for k, r in runs.items() if k[1] == tau}
            curves += _curve_rows("random", n, tau, sub, ts)
            thm.append(_theorem1_row("random", n, tau, runs[("nash_md", tau)].kl))
            for (method, _), r in sub.items():
                for iterate, series in (("last", r.kl), ("average", r.kl_average)):
                    after.append(dict(n=n, tau=tau, method=method, iterate=iterate, T=cfg.steps,
                                      kl_T=float(series[-1]), bound_T=float(tb.theorem1_bound(tau, cfg.steps))))
    return curves, after, thm, info


def run_contextual(cfg: TabularConfig):
    """Theorem 1 for contextual bandits: X random games, non-uniform ρ, KL_ρ(π*_τ ‖ π_t) ≤ 8/(τ²(t+1))."""
    rng = np.random.default_rng([cfg.seed, 7919])
    X, n = cfg.contexts, cfg.context_size
    P = np.stack([games.random_game(n, rng, cfg.game_scale) for _ in range(X)])
    mu = rng.dirichlet(np.ones(n), size=X)
    rho = rng.dirichlet(np.ones(X))
    rows = []
    for tau in cfg.taus:
        star = games.regularized_nash(P, mu, tau)
        run = tb.nash_md(P, mu, tau, cfg.steps, rho=rho, target=star, record_every=None)
        rows.append(_theorem1_row(f"contextual (X={X})", n, tau, run.kl))
    return rows


def run_eps_sweep(cfg: TabularConfig) -> tuple[pd.DataFrame, dict]:
    """Three rater types (§3.2) over ε ∈ [−1/3, 1/3]: NE by LP vs closed form, the RLHF (BT argmax) optimum,
    the KL-regularized RLHF policy ∝ μ exp(r_BT/τ), and π*_τ (uniform μ, τ = eps_tau)."""
    rows, lp_err, jumps = [], 0.0, []
    mu = games.uniform(3)
    for eps in np.linspace(-1 / 3, 1 / 3, cfg.eps_points):
        P = games.three_raters(eps)
        r = games.fit_bradley_terry(P)
        policies = {
            "Nash (LP)": games.nash_equilibrium(P),
            "Nash (closed form)": games.three_raters_nash(eps),
            "RLHF / BT optimum": games.rlhf_optimum(P),
            f"KL-regularized RLHF (τ={cfg.eps_tau:g})": softmax(np.log(mu) + r / cfg.eps_tau),
            f"regularized Nash π*_τ (τ={cfg.eps_tau:g})": games.regularized_nash(P, mu, cfg.eps_tau),
        }
        lp_err = max(lp_err, float(np.max(np.abs(policies["Nash (LP)"] - policies["Nash (closed form)"]))))
        if abs(eps) > 1e-12:
            jumps.append((eps, int(np.argmax(r))))
        for name, pi in policies.items():
            for a in range(3):
                rows.append(dict(eps=float(eps), policy=name, action=f"y{a + 1}", prob=float(pi[a])))
    bt_jump_ok = all((a == 0) if e > 0 else (a == 1) for e, a in jumps)
    return pd.DataFrame(rows), dict(three_raters_lp_max_error=lp_err, three_raters_bt_jump_ok=bt_jump_ok)


def tau_sweep_games(cfg: TabularConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Games for the τ → 0 sweep, each with a non-uniform μ (so π*_τ moves from μ to a NE)."""
    rng = np.random.default_rng([cfg.seed, 31337])
    n = cfg.tau_sweep_size
    return {
        f"random (n={n})": (games.random_game(n, rng, cfg.game_scale), rng.dirichlet(np.ones(n))),
        "intransitive dice": (games.intransitive_dice(), np.array([0.6, 0.3, 0.1])),
        "three raters (ε=0.2)": (games.three_raters(0.2), np.array([0.2, 0.2, 0.6])),
        "Condorcet voters": (games.majority_vote_game(games.condorcet_rankings()), np.array([0.7, 0.2, 0.1])),
    }


def run_tau_sweep(cfg: TabularConfig) -> pd.DataFrame:
    """Exploitability max_y P(y≻π*_τ) − 1/2 and KL(π*_τ‖μ) as τ → 0; the NE (LP) has exploitability 0."""
    rows = []
    for name, (P, mu) in tau_sweep_games(cfg).items():
        ne_expl = games.exploitability(P, games.nash_equilibrium(P))
        for tau in cfg.tau_grid:
            star = games.regularized_nash(P, mu, tau)
            rows.append(dict(game=name, tau=tau, exploitability=games.exploitability(P, star),
                             kl_to_mu=tb.kl(star, mu), regularized_gap=tb.regularized_gap(P, mu, tau, star),
                             residual=games.fixed_point_residual(P, mu, tau, star), ne_exploitability=ne_expl))
    return pd.DataFrame(rows)


def known_answers() -> dict:
    """The closed-form checks of §3.2 / App. A / App. C, as numbers for metrics.json."""
    ex = games.app_a_example()
    dice_ne = games.nash_equilibrium(games.intransitive_dice())
    cond = games.majority_vote_game(games.condorcet_rankings())
    return dict(
        dice_p_beats_next=float(games.intransitive_dice()[0, 1]),
        dice_ne_max_dev_from_uniform=float(np.max(np.abs(dice_ne - 1 / 3))),
        app_a_pref_pi_P_over_pi_R=str(ex.pref_P_over_R_exact()),
        app_a_float_error=abs(games.policy_preference(ex.P, ex.pi_P, ex.pi_R) - 50 / 99),
        condorcet_edge=float(cond[0, 1]),
    )


# ----------------------------------------------------------------------------------------------------------------
# Tables and figures


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
            ax.plot(t, tb.theorem1_bound(tau, t), color="black", ls=":", lw=1.5, label="Thm 1: 8/(τ²(t+1))")
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


# ----------------------------------------------------------------------------------------------------------------
# The stage


def run_tabular(cfg: TabularConfig, out_dir: Path, progress: bool = True) -> dict:
    """Run the whole tabular stage, write its tables and figures to ``out_dir`` and return its metrics (the stage
    writes them with the others: :func:`nlhf.stages.run_tabular`)."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    curves, after, thm, info = run_random_games(cfg, progress=progress)
    thm += run_contextual(cfg)
    curves, after, thm = pd.DataFrame(curves), pd.DataFrame(after), pd.DataFrame(thm)
    eps_df, eps_checks = run_eps_sweep(cfg)
    tau_df = run_tau_sweep(cfg)

    curves.to_csv(out_dir / "kl_curves.csv", index=False)
    after.to_csv(out_dir / "kl_after_T.csv", index=False)
    (out_dir / "kl_after_T.md").write_text(kl_after_T_markdown(after))
    thm.to_csv(out_dir / "theorem1_check.csv", index=False)
    eps_df.to_csv(out_dir / "eps_sweep.csv", index=False)
    tau_df.to_csv(out_dir / "tau_sweep.csv", index=False)
    plot_kl_curves(curves, out_dir / "kl_curves.png")
    plot_eps_sweep(eps_df, out_dir / "eps_sweep.png")
    plot_tau_sweep(tau_df, out_dir / "tau_sweep.png")

    last = after[after.iterate == "last"]
    metrics = {
        "theorem1_holds": bool(thm.holds_all_t.all()),
        "max_ratio_to_bound": float(thm.max_ratio_to_bound.max()),
        "kl_nash_md_T": {f"n{r.n}_tau{r.tau:g}": r.kl_T for r in last[last.method == "nash_md"].itertuples()},
        "kl_omd_T": {f"n{r.n}_tau{r.tau:g}": r.kl_T for r in last[last.method == "omd"].itertuples()},
        "kl_fp_avg_T": {f"n{r.n}_tau{r.tau:g}": r.kl_T for r in after[(after.method == "fictitious_play")
                                                                     & (after.iterate == "average")].itertuples()},
        "regularized_nash_max_residual": float(max(v["residual"] for d in info.values() for v in d.values())),
        "random_games_non_transitive": bool(all(v["cycle"] for d in info.values() for v in d.values())),
        "tau_sweep_max_residual": float(tau_df.residual.max()),
        **eps_checks,
        **known_answers(),
        "steps": cfg.steps,
    }
    metrics["runtime_s"] = round(time.perf_counter() - start, 2)
    return metrics
