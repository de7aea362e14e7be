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

    .venv/bin/python benchmarks/beta_profile_random_games.py
    # writes benchmarks/results/beta_profile_random_games.{csv,png} and _summary.csv (τ = 0.008 and 0.05 beside
    # the paper's Table 1)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--taus", type=float, nargs="+", default=[0.002, 0.008, 0.02, 0.05, 0.1])
    ap.add_argument("--games", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-ci", type=float, default=0.014, help="drawn for scale: an evaluation CI half-width")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "beta_profile_random_games"))
    a = ap.parse_args()
    df = measure(a.taus, a.games, a.seed)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    summary(df, [t for t in (0.008, 0.05) if t in a.taus]).to_csv(f"{out}_summary.csv", index=False)
    plot(df, out.with_suffix(".png"), a.eval_ci)
    print(f"wrote {out.with_suffix('.csv')} and .png")


if __name__ == "__main__":
    main()
