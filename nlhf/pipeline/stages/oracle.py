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
from nlhf.training.checkpoint import write_json
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
    from nlhf.tasks import SyntheticTask

    t0 = time.time()
    task = make_task(cfg.task)
    if not isinstance(task, SyntheticTask):
        return run_probe_prompts(cfg, task, t0)
    accelerator = accelerator_for(cfg)
    pools, in_pool_samples, fresh = pool_set(cfg, task, accelerator.device, pool_cache)
    coverage = float(np.mean([y in set(p.candidates) for p, ys in zip(pools, fresh) for y in ys]))
    layout = cfg.layout
    rm_scores: list = [None] * len(pools)
    if with_rm:
        rm = RewardModel.from_pretrained(require(layout.model("rm"), "rm")).to(accelerator.device).eval()
        with torch.no_grad():
            rm_scores = [rm.rewards([p.prompt] * len(p.candidates), p.candidates).double().cpu().numpy()
                         for p in pools]
    metrics: dict = {"n_prompts": len(pools), "pool_size_mean": float(np.mean([len(p.candidates) for p in pools])),
                     "sft_mass_on_pool": float(np.mean([p.sft_mass for p in pools])),
                     "sft_samples_in_pool": coverage, "populations": {}}
    for population in cfg.oracle.populations or [task.cfg.population]:
        own = population == task.cfg.population
        pop_task = task if own else SyntheticTask(
            replace(task.cfg, population=population, rater_weights=None, rater_sharpness=None))
        Ps = oracle.pool_matrices(pop_task, pools)
        per_prompt = [oracle.method_targets(P, p.log_mu, cfg.methods, s if own else None)
                      for P, p, s in zip(Ps, pools, rm_scores)]
        metrics["populations"][population] = write_population(cfg, population, Ps, pools, per_prompt,
                                                              in_pool_samples)
        if own:  # the targets the policy stages measure their convergence against
            oracle.write_targets(layout.oracle_pools, layout.oracle_target, pools, per_prompt, fresh)
    write_json(layout.eval_judge / "judge.json", {"judge": "exact", "what": EXACT_JUDGE})
    metrics["runtime_s"] = round(time.time() - t0, 2)
    write_metrics(cfg, "oracle", metrics)
    return metrics


def pool_set(cfg: PipelineConfig, task, device, pool_cache=None):
    """``(pools, in_pool_samples, fresh)``: the candidate pools of the oracle's evaluation prompts, the SFT samples
    they were built from, and fresh SFT samples (their coverage); read from ``pool_cache`` when it exists, else
    sampled from the SFT policy and written there (when given)."""
    from nlhf import oracle

    ocfg = cfg.oracle
    prompts = task.prompts("eval")[: ocfg.n_prompts]
    if pool_cache is not None and Path(pool_cache).is_file():
        pools, in_pool_samples, fresh = oracle.load_pool_set(pool_cache)
        if [p.prompt for p in pools] != prompts:
            raise ValueError(f"{pool_cache}: its pools are for other prompts than this run's")
        return pools, in_pool_samples, fresh
    policy, tok = load_sft(cfg, device)

    def sft_samples(k: int, seed: int) -> list[list[str]]:
        flat = sample_texts(policy, tok, [x for x in prompts for _ in range(k)], seed=seed, **sampling_kwargs(cfg))
        return [flat[i * k: (i + 1) * k] for i in range(len(prompts))]

    in_pool_samples = sft_samples(ocfg.sft_samples, seed_for(ocfg.seed, "oracle.pool_samples"))
    pools = oracle.build_pools(task, policy, tok, prompts, in_pool_samples, cfg.sampling.temperature)
    fresh = sft_samples(ocfg.coverage_samples, seed_for(ocfg.seed, "oracle.coverage_samples"))
    if pool_cache is not None:
        oracle.save_pool_set(pool_cache, pools, in_pool_samples, fresh)
    return pools, in_pool_samples, fresh


def write_population(cfg: PipelineConfig, population: str, Ps, pools, per_prompt, in_pool_samples) -> dict:
    """One rater population's oracle results under ``results/oracle/<population>/``: the table of the targets
    (long, matrix, markdown, heatmap), each target's win rate against SFT and exploitability, the gap between the
    token-level and the sequence-level mixture; returns its support and non-transitivity facts (its metrics)."""
    from nlhf import oracle
    from nlhf.evaluate import to_markdown, to_matrix
    from nlhf.pipeline.plots import preference_heatmap

    methods = cfg.methods
    nash = [n for n, m in methods.items() if isinstance(m, NashMD) and m.beta == 0.0]
    rlhf = [n for n, m in methods.items() if isinstance(m, RLHF)]
    names = list(per_prompt[0])
    long = oracle.table_long(per_prompt, Ps, names, cfg.eval.confidence)
    out = ensure_dir(cfg.layout.results("oracle", population))
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
    return pm


EXACT_JUDGE = "the task's exact P(y > y' | x), which judges the evaluation and the policies' convergence probe"

NOT_APPLICABLE = ("task {task} has no exact judge, so no method's target can be solved: the oracle's tables, the "
                  "exact-judge ablation and the P* probes are not applicable. In place of P*, the held-out judge "
                  "(a preference model trained on comparisons disjoint from the training PM's) judges the evaluation "
                  "and the policies' convergence probe, on these prompts against SFT.")


def run_probe_prompts(cfg: PipelineConfig, task, t0: float) -> dict:
    """Stage ``oracle`` on a task without an exact judge (TL;DR): it states that the oracle does not apply
    (``results/oracle/not_applicable.md``, ``applicable: false`` in its metrics), trains the held-out judge
    (``heldout_judge``: a pairwise preference model on the task's ``judge`` comparisons, saved in the oracle's folder,
    :meth:`Layout.eval_judge`) and writes what the policy stages' convergence probe needs: the first
    ``oracle.n_prompts`` evaluation prompts with ``oracle.coverage_samples`` SFT samples each (``pools.json``, no
    candidates), and for each method a target file saying it has none (:func:`nlhf.oracle.write_probe_prompts`)."""
    from nlhf import oracle
    from nlhf.models import build_preference_model
    from nlhf.pipeline.artifacts import load_dataset_dir, stage_fingerprint
    from nlhf.pipeline.stages.supervised import fit_scorer

    ocfg, layout = cfg.oracle, cfg.layout
    judge_model = None
    if cfg.heldout_judge.model.name_or_path is not None:  # checked before anything is trained
        from nlhf.models.local import check_model_folder

        judge_model = check_model_folder(cfg.heldout_judge.model.name_or_path, "heldout_judge.model.name_or_path")
    rows = load_dataset_dir(cfg, "prefs", "judge")
    pairs = {k: list(rows[k]) for k in ("prompt", "y", "y_prime", "label")}
    state = layout.resume("oracle_judge")
    judge, log = fit_scorer(cfg, "heldout judge", build_preference_model, cfg.heldout_judge.model,
                            cfg.heldout_judge.fit, pairs, state, stage_fingerprint(cfg, "oracle"))
    judge.save_pretrained(layout.eval_judge)
    state.unlink(missing_ok=True)
    out = ensure_dir(layout.results("oracle"))
    pd.DataFrame(log["train"]).to_csv(out / "judge_loss.csv", index=False)
    pd.DataFrame(log["eval"]).to_csv(out / "judge_eval.csv", index=False)
    accelerator = accelerator_for(cfg)
    policy, tok = load_sft(cfg, accelerator.device)
    prompts = task.prompts("eval")[: ocfg.n_prompts]
    k = ocfg.coverage_samples
    flat = sample_texts(policy, tok, [x for x in prompts for _ in range(k)],
                        seed=seed_for(ocfg.seed, "oracle.coverage_samples"), **sampling_kwargs(cfg))
    references = [flat[i * k: (i + 1) * k] for i in range(len(prompts))]
    reason = NOT_APPLICABLE.format(task=cfg.task.name)
    oracle.write_probe_prompts(layout.oracle_pools, layout.oracle_target, prompts, references, list(cfg.methods),
                               reason)
    (out / "not_applicable.md").write_text(f"# Oracle: not applicable\n\n{reason}\n")
    metrics = {"applicable": False, "reason": reason, "n_prompts": len(prompts), "sft_references_per_prompt": k,
               "heldout_judge": {"n_train_pairs": len(pairs["prompt"]), "test": log["eval"][-1],
                                 **({"model": judge_model} if judge_model else {})},
               "runtime_s": round(time.time() - t0, 2)}
    write_metrics(cfg, "oracle", metrics)
    return metrics
