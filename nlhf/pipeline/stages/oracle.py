"""Stage ``oracle``: every method's target on candidate pools of the evaluation prompts, under the exact judge of
each rater population (:mod:`nlhf.oracle`)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nlhf.models import RewardModel
from nlhf.pipeline.artifacts import ensure_dir, require, write_metrics
from nlhf.pipeline.params import PipelineConfig
from nlhf.pipeline.runtime import accelerator_for, load_sft, sampling_kwargs
from nlhf.sampling.texts import sample_texts
from nlhf.seeds import seed_for
from nlhf.tasks import make_task
from nlhf.training.methods import RLHF, NashMD


def run_oracle(cfg: PipelineConfig, with_rm: bool = True, pool_cache=None) -> dict:
    """Stage ``oracle``: each method's target on candidate pools of the evaluation prompts, under the exact judge of
    every configured rater population (:mod:`nlhf.oracle`); the oracle table, exploitability and support facts.

    ``with_rm=False`` leaves out the targets computed with the trained reward model (``RLHF (RM)``), so that the
    predictions exist before any judge is trained (:mod:`nlhf.pipeline.sweep`); the DVC stage uses the default.
    ``pool_cache``: a file holding the pools and SFT samples (:func:`nlhf.oracle.save_pool_set`), read when it
    exists, written otherwise. Only the SFT policy, the prompts and the oracle's sizes and seed make them, not the
    raters, so runs that differ only in their raters share one (:mod:`nlhf.pipeline.sweep`)."""

    from nlhf import oracle
    from nlhf.evaluate import to_markdown, to_matrix
    from nlhf.pipeline.plots import preference_heatmap
    from nlhf.tasks import SyntheticTask

    t0 = time.time()
    task = make_task(cfg.task)
    if not isinstance(task, SyntheticTask):
        raise ValueError(f"task.name: the oracle needs an enumerable task with an exact judge (synthetic), got "
                         f"{cfg.task.name!r}")
    ocfg = cfg.oracle
    accelerator = accelerator_for(cfg)
    policy, tok = load_sft(cfg, accelerator.device)
    prompts = task.prompts("eval")[: ocfg.n_prompts]
    sampling = sampling_kwargs(cfg)

    def sft_samples(k: int, seed: int) -> list[list[str]]:
        flat = sample_texts(policy, tok, [x for x in prompts for _ in range(k)], seed=seed, **sampling)
        return [flat[i * k: (i + 1) * k] for i in range(len(prompts))]

    if pool_cache is not None and Path(pool_cache).is_file():
        pools, in_pool_samples, fresh = oracle.load_pool_set(pool_cache)
        if [p.prompt for p in pools] != prompts:
            raise ValueError(f"{pool_cache}: its pools are for other prompts than this run's")
    else:
        in_pool_samples = sft_samples(ocfg.sft_samples, seed_for(ocfg.seed, "oracle.pool_samples"))
        pools = oracle.build_pools(task, policy, tok, prompts, in_pool_samples, cfg.sampling.temperature)
        fresh = sft_samples(ocfg.coverage_samples, seed_for(ocfg.seed, "oracle.coverage_samples"))
        if pool_cache is not None:
            oracle.save_pool_set(pool_cache, pools, in_pool_samples, fresh)
    coverage = float(np.mean([y in set(p.candidates) for p, ys in zip(pools, fresh) for y in ys]))
    layout = cfg.layout
    rm_scores: list = [None] * len(pools)
    if with_rm:
        rm = RewardModel.from_pretrained(require(layout.model("rm"), "rm")).to(accelerator.device).eval()
        with torch.no_grad():
            rm_scores = [rm.rewards([p.prompt] * len(p.candidates), p.candidates).double().cpu().numpy()
                         for p in pools]

    methods = cfg.methods
    nash = [n for n, m in methods.items() if isinstance(m, NashMD) and m.beta == 0.0]
    rlhf = [n for n, m in methods.items() if isinstance(m, RLHF)]
    populations = ocfg.populations or [task.cfg.population]
    metrics: dict = {"n_prompts": len(pools), "pool_size_mean": float(np.mean([len(p.candidates) for p in pools])),
                     "sft_mass_on_pool": float(np.mean([p.sft_mass for p in pools])),
                     "sft_samples_in_pool": coverage, "populations": {}}
    for population in populations:
        pop_task = task if population == task.cfg.population else SyntheticTask(
            replace(task.cfg, population=population, rater_weights=None, rater_sharpness=None))
        Ps = oracle.pool_matrices(pop_task, pools)
        own = population == task.cfg.population
        per_prompt = [oracle.method_targets(P, p.log_mu, methods, s if own else None)
                      for P, p, s in zip(Ps, pools, rm_scores)]
        names = list(per_prompt[0])
        long = oracle.table_long(per_prompt, Ps, names, cfg.eval.confidence)
        out = ensure_dir(layout.results("oracle", population))
        long.to_csv(out / "table_long.csv", index=False)
        to_matrix(long, names).to_csv(out / "table.csv")
        (out / "table.md").write_text(to_markdown(long, names))
        fig = preference_heatmap(long, names, f"Oracle policies, exact judge ({population} raters)")
        fig.savefig(out / "table.png", dpi=120)
        expl = oracle.exploitability_per_policy(per_prompt, Ps, names)
        m = to_matrix(long, names)
        pd.DataFrame({"policy": names, "p_vs_sft": [float(m.loc["SFT", n]) for n in names],
                      "exploitability": [expl[n] for n in names]}).to_csv(out / "per_policy.csv", index=False)
        gap = oracle.mixture_gap(per_prompt, pools, methods)
        gap.to_csv(out / "token_vs_sequence_mixture.csv", index=False)
        pm: dict = {**oracle.support_stats(per_prompt, Ps, [p.log_mu for p in pools]),
                    "sft_sample_nontransitivity": oracle.sample_cycles(
                        Ps, pools, [ys[: cfg.eval.nontransitivity_samples] for ys in in_pool_samples])}
        if nash and rlhf:
            ci = to_matrix(long, names, "ci")
            pm["p_sp_vs_rlhf"] = {"p": round(float(m.loc[rlhf[0], nash[0]]), 4),
                                  "ci95": round(float(ci.loc[rlhf[0], nash[0]]), 4)}
        pm["token_vs_sequence_tv_max"] = float(gap["tv_mean"].max()) if len(gap) else None
        metrics["populations"][population] = pm
        if own:  # the targets the policy stages measure their convergence against
            oracle.write_targets(layout.oracle_pools, layout.oracle_target, pools, per_prompt, fresh)
    metrics["runtime_s"] = round(time.time() - t0, 2)
    write_metrics(cfg, "oracle", metrics)
    return metrics
