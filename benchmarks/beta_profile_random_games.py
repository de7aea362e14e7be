"""How far apart can the targets of Nash-MD-PG at different β be, head to head? Random games, exact solutions.

Nash-MD-PG with mixture weight β and KL coefficient τ converges to π_β = BR_τ(π*_{τ/(1−β)}) (the τ-regularised best
response to the regularised Nash equilibrium at τ/(1−β); :mod:`nlhf.oracle`). Its opponent's regularisation
τ/(1−β) runs from τ (self-play, β = 0) to ∞ (β = 1: the best response to μ). So whether β changes the *answer* —
the paper's profile MD1 ≻ SP, MD1 ≻ MD4, BR the weakest — depends on how τ/(1−β) compares with the game's
preference margins: when it is small against them, every π*_{τ/(1−β)} with β < 1 is close to the unregularised
equilibrium and the targets nearly tie head to head.

This script measures that on random non-transitive games (:func:`nlhf.games.known_games.random_game`: P = σ(A),
A antisymmetric Gaussian of scale s ∈ {0.5, 1, 2, 4}; n ∈ 3..7 responses; μ ~ Dirichlet(α), α ∈ {0.3, 1}), at
several τ: for each pair of methods, the distribution over games of P(π_a ≻ π_b) − ½ (median of its absolute value,
95th percentile, maximum). No training; seconds per τ.

The other scale that τ is measured against is the reference's log-probabilities: the regularised solutions weigh
log μ(y) against P/τ. Dirichlet draws clipped at 10⁻⁴ spread log μ over at most ~9 nats, while a language model's
log-probabilities of whole summaries spread over tens of nats. The second experiment (``--spreads``) fixes τ and
draws log μ(y) = −L·U(0, 1) (then normalised) for a spread L of 0 to 80 nats, on games of scale 1 to 4, and
reports per L the same quantiles and the share of games whose targets show the paper's profile: MD1 ≻ SP,
MD1 ≻ MD4 and MD1 ≻ BR, each by more than an evaluation CI. ``--pools`` reads oracle folders of trained runs
(``<artifacts>/oracle``: the candidate pools with SFT's log μ̂, and the Nash equilibrium per prompt) and reports
how far below SFT's most likely candidate the Nash support lies: the L a task's game actually has.

    .venv/bin/python benchmarks/beta_profile_random_games.py
    # writes benchmarks/results/beta_profile_random_games.{csv,png} and _summary.csv (τ = 0.008 and 0.05 beside
    # the paper's Table 1), and beta_profile_random_games_spread.{csv,png} (τ = 0.008)
    .venv/bin/python benchmarks/beta_profile_random_games.py --pools artifacts/oracle   # a run's Nash support depth
    # (the committed table: --pools <four oracle folders> --depth-csv
    #  benchmarks/results/beta_profile_random_games_support_depth.csv)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlhf.games import known_games  # noqa: E402
from nlhf.oracle import PoolGame  # noqa: E402
from nlhf.paper import PAPER_TABLE1  # noqa: E402

BETAS = {"SP": 0.0, "MD1": 0.125, "MD3": 0.375, "MD4": 0.5, "MD6": 0.75, "BR": 1.0}  # params.yaml's methods
PAIRS = [("MD1", "SP"), ("MD1", "MD4"), ("MD1", "MD6"), ("SP", "MD6"), ("SP", "BR"), ("MD1", "BR"), ("MD6", "BR")]


def targets(P: np.ndarray, mu: np.ndarray, tau: float) -> dict[str, np.ndarray]:
    game = PoolGame(P, np.log(mu))
    return {m: game.self_play(tau) if b == 0.0 else game.mixture_fixed_point(tau, b) for m, b in BETAS.items()}


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    n = int(rng.integers(3, 8))
    scale = float(rng.choice([0.5, 1.0, 2.0, 4.0]))
    P = known_games.random_game(n, rng, scale=scale)
    mu = np.clip(rng.dirichlet(np.full(n, float(rng.choice([0.3, 1.0])))), 1e-4, None)
    return P, mu / mu.sum(), scale


def measure(taus, n_games: int, seed: int) -> pd.DataFrame:
    """One row per (τ, pair): quantiles over ``n_games`` random games (the same games at every τ) of
    P(π_a ≻ π_b) − ½."""
    rng = np.random.default_rng(seed)
    cases = [random_case(rng) for _ in range(n_games)]
    rows = []
    for tau in taus:
        gaps = {pair: [] for pair in PAIRS}
        for P, mu, _ in cases:
            t = targets(P, mu, tau)
            for a, b in PAIRS:
                gaps[(a, b)].append(float(t[a] @ P @ t[b]) - 0.5)
        for (a, b), g in gaps.items():
            g = np.abs(np.array(g))
            rows.append({"tau": tau, "cell": f"{a} vs {b}", "games": n_games,
                         "median_abs": round(float(np.median(g)), 4), "p95_abs": round(float(np.quantile(g, 0.95)), 4),
                         "max_abs": round(float(g.max()), 4)})
        print(f"tau {tau}: " + ", ".join(f"{r['cell']} p95 {r['p95_abs']}" for r in rows if r["tau"] == tau),
              flush=True)
    return pd.DataFrame(rows)


def spread_case(rng: np.random.Generator, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """A random game of scale 1 to 4 on 3 to 7 responses, and a reference with log μ(y) = −spread·U(0, 1),
    normalised."""
    n = int(rng.integers(3, 8))
    P = known_games.random_game(n, rng, scale=float(rng.choice([1.0, 2.0, 4.0])))
    log_mu = -spread * rng.random(n)
    return P, np.exp(log_mu - np.logaddexp.reduce(log_mu))


def measure_spread(spreads, tau: float, n_games: int, seed: int, margin: float) -> pd.DataFrame:
    """One row per (spread L, pair): quantiles over ``n_games`` games of |P(π_a ≻ π_b) − ½| at ``tau``, and
    ``profile_share``: the share of games where MD1's target beats SP's, MD4's and BR's each by more than
    ``margin`` (the paper's β profile, in the targets)."""
    rows = []
    for spread in spreads:
        rng = np.random.default_rng(seed)
        gaps = {pair: [] for pair in PAIRS}
        profile = 0
        for _ in range(n_games):
            P, mu = spread_case(rng, spread)
            t = targets(P, mu, tau)
            wins = {pair: float(t[pair[0]] @ P @ t[pair[1]]) - 0.5 for pair in gaps}
            for pair, g in wins.items():
                gaps[pair].append(g)
            profile += all(wins[("MD1", b)] > margin for b in ("SP", "MD4", "BR"))
        for (a, b), g in gaps.items():
            g = np.abs(np.array(g))
            rows.append({"tau": tau, "spread_nats": spread, "cell": f"{a} vs {b}", "games": n_games,
                         "median_abs": round(float(np.median(g)), 4), "p95_abs": round(float(np.quantile(g, 0.95)), 4),
                         "max_abs": round(float(g.max()), 4), "profile_share": round(profile / n_games, 4)})
        print(f"spread {spread:g} nats: MD1 vs SP p95 {rows[-len(PAIRS)]['p95_abs']}, paper-like profile in "
              f"{profile}/{n_games} games", flush=True)
    return pd.DataFrame(rows)


def spread_summary(df: pd.DataFrame, cells=("MD1 vs SP", "MD1 vs MD4", "MD1 vs BR")) -> pd.DataFrame:
    """One row per spread (named like ``20 nats``): the 95th percentile of |P(a ≻ b) − ½| for ``cells`` and the
    share of games with the paper's profile in the targets."""
    out = df.pivot(index="spread_nats", columns="cell", values="p95_abs")[list(cells)]
    out.columns = [f"{c} p95" for c in cells]
    out["profile_share"] = df.groupby("spread_nats")["profile_share"].first()
    out.index = [f"{s:g} nats" for s in out.index]
    return out.rename_axis("reference spread").reset_index()


def support_depth(oracle_dir: str | Path) -> pd.Series:
    """Per prompt of a run's oracle folder: how many nats below SFT's most likely pool candidate the least likely
    member of the Nash equilibrium's support lies (log μ̂ of the mode minus the smallest log μ̂ on the support)."""
    import json

    oracle_dir = Path(oracle_dir)
    pools = json.loads((oracle_dir / "pools.json").read_text())
    ne = json.loads((oracle_dir / "targets" / "NE.json").read_text())
    if not isinstance(ne, list) or not pools.get("log_mu") or len(ne) != len(pools["log_mu"]):
        raise ValueError(f"{oracle_dir}: not the oracle folder of a run with an exact judge (pools.json needs "
                         f"log_mu and targets/NE.json one equilibrium per pool)")
    depth = []
    for log_mu, pi in zip(pools["log_mu"], ne):
        log_mu, pi = np.asarray(log_mu), np.asarray(pi)
        depth.append(float(log_mu.max() - log_mu[pi > 1e-6].min()))
    return pd.Series(depth, name=str(oracle_dir))


def summary(df: pd.DataFrame, taus=(0.008, 0.05)) -> pd.DataFrame:
    """One row per cell: the 95th percentile and the maximum of |P(a ≻ b) − ½| at ``taus``, beside the paper's
    trained P(a ≻ b) − ½ (Table 1, where recovered)."""
    out = pd.DataFrame({"cell": [f"{a} vs {b}" for a, b in PAIRS]})
    for tau in taus:
        at = df[df["tau"] == tau].set_index("cell")
        out[f"p95_abs_tau{tau:g}"] = out["cell"].map(at["p95_abs"])
        out[f"max_abs_tau{tau:g}"] = out["cell"].map(at["max_abs"])
    out["paper_minus_half"] = [round(PAPER_TABLE1[(a, b)] - 0.5, 3) if (a, b) in PAPER_TABLE1 else None
                               for a, b in PAIRS]
    return out


def plot(df: pd.DataFrame, out: Path, eval_ci: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(9, 4.2))
    sns.lineplot(data=df, x="tau", y="p95_abs", hue="cell", marker="o", ax=ax)
    ax.axhline(eval_ci, color="grey", ls="--", lw=1)
    ax.text(df["tau"].min(), eval_ci * 1.08, f"evaluation 95% CI on 1,000 prompts (±{eval_ci})", color="grey",
            fontsize=8)
    ax.axvline(0.008, color="black", ls=":", lw=1)
    ax.text(0.0085, 0.03, "τ = 0.008 (this project, the paper)", fontsize=8, transform=ax.get_xaxis_transform())
    ax.set(xscale="log", yscale="log", xlabel="τ (KL coefficient)",
           ylabel="95th percentile over games of |P(a ≻ b) − ½|",
           title="Targets of Nash-MD-PG at different β, head to head (random games)")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left", title="cell")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_spread(df: pd.DataFrame, out: Path, eval_ci: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    sns.lineplot(data=df, x="spread_nats", y="p95_abs", hue="cell", marker="o", ax=ax)
    ax.axhline(eval_ci, color="grey", ls="--", lw=1)
    ax.text(0, eval_ci * 1.15, f"evaluation 95% CI (±{eval_ci})", color="grey", fontsize=8)
    ax.set(yscale="log", xlabel="spread L of the reference's log-probabilities [nats]",
           ylabel="95th percentile over games of |P(a ≻ b) − ½|",
           title=f"Targets head to head at τ = {df['tau'].iloc[0]:g}, against the reference's spread")
    ax.legend(fontsize=8, title="cell")
    share = df.drop_duplicates("spread_nats")
    ax2.bar(share["spread_nats"].astype(int).astype(str), share["profile_share"], color="C0")
    ax2.set(xlabel="spread L [nats]", ylabel="share of games",
            title="MD1's target beats SP's, MD4's and BR's\n(each by more than the evaluation CI)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--taus", type=float, nargs="+", default=[0.002, 0.008, 0.02, 0.05, 0.1])
    ap.add_argument("--games", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-ci", type=float, default=0.014, help="drawn for scale: an evaluation CI half-width")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "beta_profile_random_games"))
    ap.add_argument("--spreads", type=float, nargs="+", default=[0, 5, 10, 20, 40, 80],
                    help="spreads L [nats] of the reference's log-probabilities, at τ = 0.008")
    ap.add_argument("--pools", nargs="+", help="instead: oracle folders of runs; print their Nash support depth")
    ap.add_argument("--depth-csv", help="with --pools: also write the depths, one row per folder, to this CSV")
    a = ap.parse_args()
    if a.pools:
        rows = []
        for folder in a.pools:
            d = support_depth(folder)
            rows.append({"oracle": folder, "prompts": len(d), "median_nats": round(d.median(), 1),
                         "p90_nats": round(d.quantile(0.9), 1), "max_nats": round(d.max(), 1)})
            print(f"{folder}: Nash support lies {d.median():.1f} nats (median over {len(d)} prompts; 90th "
                  f"percentile {d.quantile(0.9):.1f}, max {d.max():.1f}) below SFT's most likely candidate")
        if a.depth_csv:
            pd.DataFrame(rows).to_csv(a.depth_csv, index=False)
            print(f"wrote {a.depth_csv}")
        return
    df = measure(a.taus, a.games, a.seed)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    summary(df, [t for t in (0.008, 0.05) if t in a.taus]).to_csv(f"{out}_summary.csv", index=False)
    plot(df, out.with_suffix(".png"), a.eval_ci)
    spread = measure_spread(a.spreads, 0.008, a.games, a.seed, a.eval_ci)
    spread.to_csv(f"{out}_spread.csv", index=False)
    spread_summary(spread).to_csv(f"{out}_spread_summary.csv", index=False)
    plot_spread(spread, Path(f"{out}_spread.png"), a.eval_ci)
    print(f"wrote {out.with_suffix('.csv')}, {out}_spread.csv and their figures")


if __name__ == "__main__":
    main()
