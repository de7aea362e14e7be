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

from nlhf.config import check
from nlhf.games import bradley_terry, known_games, nash, preferences
from nlhf.tabular import algorithms
from nlhf.tabular.metrics import kl, regularized_gap, theorem1_bound
from nlhf.tabular.figures import kl_after_T_markdown, plot_eps_sweep, plot_kl_curves, plot_tau_sweep


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


def make_game(n: int, cfg: TabularConfig) -> tuple[np.ndarray, np.ndarray]:
    """The random game of size n and its reference μ (seeded by (seed, n), independent of other sizes)."""
    rng = np.random.default_rng([cfg.seed, n])
    P = known_games.random_game(n, rng, cfg.game_scale)
    mu = preferences.uniform(n) if cfg.mu_alpha is None else rng.dirichlet(np.full(n, cfg.mu_alpha))
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
    bound = theorem1_bound(tau, t)
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
        targets = {tau: nash.regularized_nash(P, mu, tau) for tau in cfg.taus}
        info[n] = {tau: dict(residual=nash.fixed_point_residual(P, mu, tau, targets[tau]),
                             cycle=known_games.find_cycle(P) is not None) for tau in cfg.taus}
        runs = algorithms.run_methods(P, mu, cfg.taus, cfg.steps, ema_beta=cfg.ema_beta, targets=targets,
                              progress=progress)
        for tau in cfg.taus:
            sub = {k: r for k, r in runs.items() if k[1] == tau}
            curves += _curve_rows("random", n, tau, sub, ts)
            thm.append(_theorem1_row("random", n, tau, runs[("nash_md", tau)].kl))
            for (method, _), r in sub.items():
                for iterate, series in (("last", r.kl), ("average", r.kl_average)):
                    after.append(dict(n=n, tau=tau, method=method, iterate=iterate, T=cfg.steps,
                                      kl_T=float(series[-1]), bound_T=float(theorem1_bound(tau, cfg.steps))))
    return curves, after, thm, info


def run_contextual(cfg: TabularConfig):
    """Theorem 1 for contextual bandits: X random games, non-uniform ρ, KL_ρ(π*_τ ‖ π_t) ≤ 8/(τ²(t+1))."""
    rng = np.random.default_rng([cfg.seed, 7919])
    X, n = cfg.contexts, cfg.context_size
    P = np.stack([known_games.random_game(n, rng, cfg.game_scale) for _ in range(X)])
    mu = rng.dirichlet(np.ones(n), size=X)
    rho = rng.dirichlet(np.ones(X))
    rows = []
    for tau in cfg.taus:
        star = nash.regularized_nash(P, mu, tau)
        run = algorithms.nash_md(P, mu, tau, cfg.steps, rho=rho, target=star, record_every=None)
        rows.append(_theorem1_row(f"contextual (X={X})", n, tau, run.kl))
    return rows


def run_eps_sweep(cfg: TabularConfig) -> tuple[pd.DataFrame, dict]:
    """Three rater types (§3.2) over ε ∈ [−1/3, 1/3]: NE by LP vs closed form, the RLHF (BT argmax) optimum,
    the KL-regularized RLHF policy ∝ μ exp(r_BT/τ), and π*_τ (uniform μ, τ = eps_tau)."""
    rows, lp_err, jumps = [], 0.0, []
    mu = preferences.uniform(3)
    for eps in np.linspace(-1 / 3, 1 / 3, cfg.eps_points):
        P = known_games.three_raters(eps)
        r = bradley_terry.fit_bradley_terry(P)
        policies = {
            "Nash (LP)": nash.nash_equilibrium(P),
            "Nash (closed form)": known_games.three_raters_nash(eps),
            "RLHF / BT optimum": bradley_terry.rlhf_optimum(P),
            f"KL-regularized RLHF (τ={cfg.eps_tau:g})": softmax(np.log(mu) + r / cfg.eps_tau),
            f"regularized Nash π*_τ (τ={cfg.eps_tau:g})": nash.regularized_nash(P, mu, cfg.eps_tau),
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
        f"random (n={n})": (known_games.random_game(n, rng, cfg.game_scale), rng.dirichlet(np.ones(n))),
        "intransitive dice": (known_games.intransitive_dice(), np.array([0.6, 0.3, 0.1])),
        "three raters (ε=0.2)": (known_games.three_raters(0.2), np.array([0.2, 0.2, 0.6])),
        "Condorcet voters": (known_games.majority_vote_game(known_games.condorcet_rankings()),
                             np.array([0.7, 0.2, 0.1])),
    }


def run_tau_sweep(cfg: TabularConfig) -> pd.DataFrame:
    """Exploitability max_y P(y≻π*_τ) − 1/2 and KL(π*_τ‖μ) as τ → 0; the NE (LP) has exploitability 0."""
    rows = []
    for name, (P, mu) in tau_sweep_games(cfg).items():
        ne_expl = nash.exploitability(P, nash.nash_equilibrium(P))
        for tau in cfg.tau_grid:
            star = nash.regularized_nash(P, mu, tau)
            rows.append(dict(game=name, tau=tau, exploitability=nash.exploitability(P, star),
                             kl_to_mu=kl(star, mu), regularized_gap=regularized_gap(P, mu, tau, star),
                             residual=nash.fixed_point_residual(P, mu, tau, star), ne_exploitability=ne_expl))
    return pd.DataFrame(rows)


def known_answers() -> dict:
    """The closed-form checks of §3.2 / App. A / App. C, as numbers for metrics.json."""
    ex = known_games.app_a_example()
    dice_ne = nash.nash_equilibrium(known_games.intransitive_dice())
    cond = known_games.majority_vote_game(known_games.condorcet_rankings())
    return dict(
        dice_p_beats_next=float(known_games.intransitive_dice()[0, 1]),
        dice_ne_max_dev_from_uniform=float(np.max(np.abs(dice_ne - 1 / 3))),
        app_a_pref_pi_P_over_pi_R=str(ex.pref_P_over_R_exact()),
        app_a_float_error=abs(preferences.policy_preference(ex.P, ex.pi_P, ex.pi_R) - 50 / 99),
        condorcet_edge=float(cond[0, 1]),
    )


# ----------------------------------------------------------------------------------------------------------------
# The stage


def run_tabular(cfg: TabularConfig, out_dir: Path, progress: bool = True) -> dict:
    """Run the whole tabular stage, write its tables and figures to ``out_dir`` and return its metrics (the stage
    writes them with the others: :func:`nlhf.pipeline.stages.run_tabular`)."""
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
