"""How far each method's oracle target lies from μ, next to how far its trained policies moved.

For every method with an oracle target (``artifacts/oracle/targets/<METHOD>.json``, on the oracle's candidate pools
with μ̂ = SFT renormalised on the pool) this prints KL(target ‖ μ̂) averaged over the pools and the mass of the
target's most likely summary (its mode), how likely SFT is to write that mode (median log μ̂ over the pools, and the
share of prompts whose stored SFT samples contain it), and, where the policy stages ran, the trained policies' KL(π ‖ μ) and
P*(π ≻ SFT) at their last convergence probe (``results/metrics/policy[_exact]_<METHOD>.json``). A policy-gradient run
moves π away from μ a limited distance in its step budget: a target many nats further away than the policy got is
one it could not reach in that budget, whatever its convergence curve says. A mode SFT almost never writes is one
on-policy sampling almost never tries, so a policy gradient has little signal toward it at any budget.

    python benchmarks/pg_recipe/target_distance.py            # the committed default run's artifacts
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nlhf.pipeline.params import load_config  # noqa: E402


def kl_to_mu(target: list[list[float]], log_mu: list[list[float]]) -> tuple[float, float, float]:
    """Mean over pools of KL(target ‖ μ̂) and of the target's largest probability; median log μ̂ of that mode."""
    kls, top, mode_log_mu = [], [], []
    for t, lm in zip(target, log_mu):
        t, lm = np.asarray(t), np.asarray(lm)
        m = t > 0
        kls.append(float((t[m] * (np.log(t[m]) - lm[m])).sum()))
        top.append(float(t.max()))
        mode_log_mu.append(float(lm[t.argmax()]))
    return float(np.mean(kls)), float(np.mean(top)), float(np.median(mode_log_mu))


def mode_in_sft_samples(target: list[list[float]], pools: dict) -> float:
    """Share of pools whose stored SFT samples include the target's mode."""
    return float(np.mean([c[int(np.argmax(t))] in refs
                          for t, c, refs in zip(target, pools["candidates"], pools["sft_references"])]))


def main() -> None:
    cfg = load_config(ROOT / "params.yaml")
    layout = cfg.layout
    pools = json.loads((ROOT / layout.oracle_pools).read_text())
    rows = []
    for name in cfg.methods:
        target = json.loads((ROOT / layout.oracle_target(name)).read_text())
        kl, top, mode_log_mu = kl_to_mu(target, pools["log_mu"])
        row = {"method": name, "target KL to mu": round(kl, 2), "target top mass": round(top, 2),
               "mode: median log mu": round(mode_log_mu, 2),
               "mode among SFT samples": round(mode_in_sft_samples(target, pools), 3)}
        for variant in ("paper", "exact"):
            path = ROOT / layout.metrics(layout.policy_key(name, variant))
            if path.is_file():
                probe = json.loads(path.read_text())["probe"]
                row[f"{variant}: policy KL"] = round(probe["kl"], 2)
                row[f"{variant}: P*(pi > SFT)"] = round(probe["p_vs_sft"], 3)
        rows.append(row)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
