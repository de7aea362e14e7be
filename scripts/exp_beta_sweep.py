"""Collect a DVC experiment sweep of one Nash-MD-PG method's β into a table (the README's β sweep).

    dvc exp run --queue -S 'methods.MD3.beta=range(0.3,0.5,0.15)'   # queue one experiment per β
    dvc queue start --jobs 1 && dvc queue status                     # run them (each: check, oracle, policy@MD3, eval)
    python scripts/exp_beta_sweep.py MD3 > results/experiments/md3_beta_sweep.csv

For every experiment of the current commit and the commit itself, reads its params (the method's β) and its
``results/eval/beta_sweep.csv`` row (the evaluation stage's output, committed in the experiment's ref): the trained
policy's P*(π ≻ SFT) and P*(π ≻ RLHF) with 95% CIs, and its oracle target's values.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd


def _git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout


def main(method: str) -> pd.DataFrame:
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True,
                                      check=True).stdout)
    rows = []
    for base in shown:
        for run in [base, *[e for exp in (base.get("experiments") or []) for e in exp.get("revs", [])]]:
            data = run.get("data") or {}
            beta = (data.get("params", {}).get("params.yaml", {}).get("data", {}).get("methods", {})
                    .get(method, {}).get("beta"))
            if beta is None or run["rev"] == "workspace":
                continue
            sweep = pd.read_csv(io.StringIO(_git_show(run["rev"], "results/eval/beta_sweep.csv")))
            row = sweep[sweep["policy"] == method].iloc[0].to_dict()
            rows.append({"beta": beta, "experiment": run.get("name") or run["rev"][:7],
                         **{k: round(float(v), 4) for k, v in row.items() if k not in ("policy", "beta")}})
    return pd.DataFrame(rows).sort_values("beta").drop_duplicates("beta")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "MD3").to_csv(sys.stdout, index=False)
