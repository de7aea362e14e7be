"""Design a rater population with the oracle before anything is trained: each method's target on the evaluation
prompts' candidate pools, for one or more candidate populations, from one SFT model.

The candidate pools and μ̂ are built once (cached as JSON next to the SFT model's run; ``--pools`` reads a run's
``oracle/pools.json`` instead), then each population is solved in seconds: the table of P*(target ≻ target), the
Nash support size, how far apart the Nash-MD targets of different β are, and each target's exploitability.
Nothing here trains a policy.

    python benchmarks/population_design.py --sft artifacts/sweeps/embellisher_share/e0.26/seed0 \\
        --populations cyclic completist
    python benchmarks/population_design.py --pools artifacts/sweeps/cyclic/equal/seed1/oracle/pools.json \\
        --populations pentagon --sharpness 3
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlhf import oracle  # noqa: E402
from nlhf.pipeline.params import load_config  # noqa: E402
from nlhf.tasks import SyntheticTask, make_task  # noqa: E402
from nlhf.tasks.synthetic_raters import POPULATION_WEIGHTS  # noqa: E402

ORDER = ["SFT", "NE", "RLHF", "SP", "MD1", "MD3", "MD4", "MD6", "BR", "EMA1"]


def pools_for(cfg, artifacts: Path, cache: Path) -> list[oracle.Pool]:
    """The oracle's pools on the SFT model under ``artifacts`` (cached in ``cache``)."""
    if cache.is_file():
        d = json.loads(cache.read_text())
        return [oracle.Pool(x, c, [], np.array(lm), 1.0) for x, c, lm in zip(d["prompts"], d["candidates"],
                                                                          d["log_mu"])]
    from nlhf.pipeline.runtime import load_sft, sampling_kwargs
    from nlhf.sampling.texts import sample_texts
    from nlhf.seeds import seed_for

    cfg.paths.artifacts = str(artifacts)
    task = make_task(cfg.task)
    policy, tok = load_sft(cfg)
    prompts = task.prompts("eval")[: cfg.oracle.n_prompts]
    k = cfg.oracle.sft_samples
    flat = sample_texts(policy, tok, [x for x in prompts for _ in range(k)],
                        seed=seed_for(cfg.oracle.seed, "oracle.pool_samples"), **sampling_kwargs(cfg))
    pools = oracle.build_pools(task, policy, tok, prompts, [flat[i * k: (i + 1) * k] for i in range(len(prompts))])
    cache.write_text(json.dumps({"prompts": [p.prompt for p in pools], "candidates": [p.candidates for p in pools],
                                 "log_mu": [p.log_mu.tolist() for p in pools]}))
    return pools


def solve(cfg, pools, population: str, weights=None, sharpness=None) -> dict:
    task = SyntheticTask(replace(cfg.task.synthetic, population=population, rater_weights=weights,
                                 rater_sharpness=sharpness))
    Ps = oracle.pool_matrices(task, pools)
    methods = {n: m for n, m in cfg.methods.items() if n in ORDER}
    per_prompt = [oracle.method_targets(P, p.log_mu, methods) for P, p in zip(Ps, pools)]
    names = [n for n in ORDER if n in per_prompt[0]]
    long = oracle.table_long(per_prompt, Ps, names)
    matrix = long.pivot(index="row", columns="column", values="p").loc[names, names]
    support = np.mean([(t["NE"] > 1e-6).sum() for t in per_prompt])
    mixed = np.mean([(t["NE"] > 1e-6).sum() >= 2 for t in per_prompt])
    expl = oracle.exploitability_per_policy(per_prompt, Ps, names)
    tv = {f"TV(SP, {n})": float(np.mean([0.5 * np.abs(t["SP"] - t[n]).sum() for t in per_prompt]))
          for n in ("MD1", "MD3", "MD6", "BR", "RLHF") if n in names}
    return {"matrix": matrix, "support": support, "mixed": mixed, "exploitability": expl, "tv": tv}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--sft", help="a run's artifacts folder holding models/sft (pools sampled and cached there)")
    src.add_argument("--pools", type=Path, help="a pools file: a run's artifacts oracle/pools.json")
    ap.add_argument("--populations", nargs="+", default=["cyclic"])
    ap.add_argument("--weights", nargs="*", type=float, help="rater shares (one population only)")
    ap.add_argument("--sharpness", type=float, help="every rater's sharpness s_k (default 3.0)")
    args = ap.parse_args()
    cfg = load_config(ROOT / "params.yaml")
    if args.pools is not None:
        if not args.pools.is_file():
            ap.error(f"--pools: no such file: {args.pools}")
        pools = pools_for(cfg, args.pools.parent, args.pools)
    else:
        pools = pools_for(cfg, Path(args.sft), Path(args.sft) / "design_pools.json")
    pd.set_option("display.width", 200)
    for population in args.populations:
        weights = args.weights or POPULATION_WEIGHTS.get(population)
        sharpness = None if args.sharpness is None else [args.sharpness] * len(weights)
        r = solve(cfg, pools, population, weights, sharpness)
        print(f"\n== {population} {weights} sharpness {args.sharpness or 3.0}: NE support {r['support']:.2f}, "
              f"mixed on {r['mixed']:.0%} of prompts")
        print(r["matrix"].round(3).to_string())
        print("exploitability:", {k: round(v, 3) for k, v in r["exploitability"].items()})
        print({k: round(v, 3) for k, v in r["tv"].items()})


if __name__ == "__main__":
    main()
