"""Each method's target at the KL its trained policy reached: how much of *that* margin over SFT the policy got.

The oracle's targets are fixed points at the method's τ; some lie far from μ (``target_distance.py``). Along the
same family with another strength τ′ (RLHF: μ̂ exp(r/τ′); BR: softmax(log μ̂ + Pμ̂/τ′); SP: π*_τ′), this finds the
τ′ whose mean KL(π_τ′ ‖ μ̂) over the oracle's pools equals the exact-judge policy's KL at its last probe, and prints
P*(π_τ′ ≻ SFT) next to the policy's P*(π ≻ SFT) on the same prompts (the probe's) and the resulting normalised
margin. A policy can at most match the best response of its family at its own KL; this separates "moved too
little" from "moved in the wrong direction".

    python benchmarks/pg_recipe/kl_matched_targets.py      # the committed default run's artifacts and metrics
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.special import softmax

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nlhf import oracle  # noqa: E402
from nlhf.games import nash  # noqa: E402
from nlhf.pipeline.params import load_config  # noqa: E402
from nlhf.tasks import make_task  # noqa: E402


def kl(p: np.ndarray, log_mu: np.ndarray) -> float:
    m = p > 0
    return float((p[m] * (np.log(p[m]) - log_mu[m])).sum())


def family(kind: str, P: np.ndarray, log_mu: np.ndarray, bt: np.ndarray):
    """τ′ → the method's fixed point at strength τ′ on one pool."""
    mu = np.exp(log_mu)
    if kind == "rlhf":
        return lambda t: softmax(log_mu + bt / t)
    if kind == "br":
        return lambda t: softmax(log_mu + P @ mu / t)
    return lambda t: nash.regularized_nash(P, mu, t)


def matched(policies, log_mus, target_kl: float) -> float:
    """τ′ (bisection on log τ′) with mean KL(π_τ′ ‖ μ̂) = target_kl; KL falls as τ′ grows."""
    lo, hi = np.log(1e-4), np.log(10.0)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        mean_kl = np.mean([kl(f(np.exp(mid)), lm) for f, lm in zip(policies, log_mus)])
        lo, hi = (mid, hi) if mean_kl > target_kl else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def main() -> None:
    cfg = load_config(ROOT / "params.yaml")
    layout = cfg.layout
    task = make_task(cfg.task)
    raw = json.loads((ROOT / layout.oracle_pools).read_text())
    pools = [SimpleNamespace(prompt=x, candidates=c) for x, c in zip(raw["prompts"], raw["candidates"])]
    log_mus = [np.asarray(lm) for lm in raw["log_mu"]]
    Ps = oracle.pool_matrices(task, pools)
    bts = [oracle.PoolGame(P, lm).bt_reward for P, lm in zip(Ps, log_mus)]
    rows = []
    for name, kind in (("RLHF", "rlhf"), ("BR", "br"), ("SP", "sp")):
        probe = json.loads((ROOT / layout.metrics(layout.policy_key(name, "exact"))).read_text())["probe"]
        fams = [family(kind, P, lm, bt) for P, lm, bt in zip(Ps, log_mus, bts)]
        tau = matched(fams, log_mus, probe["kl"])
        targets = [f(tau) for f in fams]
        p_target = float(np.mean([t @ P @ np.exp(lm) for t, P, lm in zip(targets, Ps, log_mus)]))
        own = float(np.mean([t @ P @ np.exp(lm) for t, P, lm in
                             zip([f(cfg.methods[name].tau) for f in fams], Ps, log_mus)]))
        rows.append({"method": name, "tau": cfg.methods[name].tau, "P*(target ≻ SFT)": round(own, 3),
                     "policy KL": round(probe["kl"], 2), "KL-matched tau'": round(tau, 4),
                     "P*(KL-matched target ≻ SFT)": round(p_target, 3), "P*(policy ≻ SFT)": round(probe["p_vs_sft"], 3),
                     "margin vs target": round((probe["p_vs_sft"] - 0.5) / (own - 0.5), 2),
                     "margin vs KL-matched": round((probe["p_vs_sft"] - 0.5) / (p_target - 0.5), 2)})
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
