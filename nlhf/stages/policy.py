"""Stages ``policy@<METHOD>``, ``policy_exact@<METHOD>``, ``policy_seed@<METHOD>``: one method trained from μ
(:mod:`nlhf.training.methods`, the loop of :mod:`nlhf.training.policy_gradient`)."""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import numpy as np
import pandas as pd

from nlhf.artifacts import ensure_dir, require, stage_fingerprint, write_metrics
from nlhf.models import PreferenceModel, RewardModel, check_same_tokenizer, save_policy
from nlhf.params import PipelineConfig
from nlhf.sampling.texts import sample_texts
from nlhf.runtime import accelerator_for, load_sft, policy_generation, sampling_kwargs
from nlhf.seeds import seed_for
from nlhf.tasks import make_task
from nlhf.training.checkpoint import seed_everything
from nlhf.training.policy_gradient import train_policy
from nlhf.training.probe import ConvergenceProbe, converged


def run_policy(cfg: PipelineConfig, name: str, variant: str = "paper") -> dict:
    """Stage ``policy@<name>``: method ``name`` trained from μ; saves its policy (and its averaged policy, if the
    method has one: Nash-EMA-PG's EMA*).

    ``variant``: ``paper`` trains against the trained PM (Nash) or RM (RLHF); ``exact`` against the task's exact
    judges (:mod:`nlhf.training.exact_judges`) on the ablation's training prompts, for ``ablation.steps`` at
    ``ablation.lr`` where set;
    ``seed`` like ``paper`` with the training seed pg.seed + 1."""
    layout = cfg.layout
    if variant not in layout.POLICY_VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(layout.POLICY_VARIANTS)}, got {variant!r}")
    method = cfg.method(name)
    pg_cfg = replace(cfg.pg, seed=cfg.pg.seed + 1) if variant == "seed" else cfg.pg
    if variant == "exact":
        pg_cfg = replace(pg_cfg, lr=cfg.ablation.lr or pg_cfg.lr, steps=cfg.ablation.steps or pg_cfg.steps)
    t0 = time.time()
    seed_everything(pg_cfg.seed)
    accelerator = accelerator_for(cfg)
    policy, tok = load_sft(cfg)
    ref, _ = load_sft(cfg)
    task = make_task(cfg.task)
    prompts = task.prompts("train")
    judge = "rm" if method.JUDGE == "reward" else "pm"
    judge_file = layout.model(judge)
    if variant == "exact":
        from nlhf import oracle
        from nlhf.training.exact_judges import ExactBTReward, ExactPreference

        if not task.has_exact_judge:
            raise ValueError(f"the exact-judge ablation needs a task with an exact judge, got {cfg.task.name!r}")
        prompts = prompts[: cfg.ablation.train_prompts]
        judge_file = layout.model("sft")
        if method.JUDGE == "reward":
            k = cfg.ablation.pool_sft_samples
            flat = sample_texts(ref, tok, [x for x in prompts for _ in range(k)],
                                seed=seed_for(cfg.seed, "policy.exact_bt_pool_samples"),
                                **sampling_kwargs(cfg))
            pools = oracle.build_pools(task, ref, tok, prompts, [flat[i * k: (i + 1) * k] for i in range(len(prompts))])
            judge_model = ExactBTReward(task, tok, pools)
        else:
            judge_model = ExactPreference(task, tok)
    else:
        judge_model = {"rm": RewardModel, "pm": PreferenceModel}[judge].from_pretrained(
            require(judge_file, layout.dvc_stage(judge)))
        check_same_tokenizer(judge_model.tokenizer, tok, f"{method.JUDGE} model ({judge_model.kind})", "policy (SFT)")
    probe = None
    if task.has_exact_judge:
        probe = ConvergenceProbe.from_oracle(require(layout.oracle_pools, "oracle"),
                                             require(layout.oracle_target(name), "oracle"), task, tok,
                                             ref.to(accelerator.device), samples=pg_cfg.probe_samples,
                                             max_new_tokens=cfg.sampling.max_new_tokens,
                                             seed=seed_for(cfg.seed, "policy.probe"),
                                             confidence=cfg.eval.confidence)
    state = layout.resume(layout.policy_key(name, variant))
    log, ema = train_policy(policy, ref, judge_model, tok, prompts, method, pg_cfg,
                            max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature,
                            state_path=state, accelerator=accelerator,
                            fingerprint=stage_fingerprint(cfg, layout.policy_stage(name, variant)),
                            desc=layout.policy_stage(name, variant), probe=probe)
    policy = accelerator.unwrap_model(policy).eval()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:  # data-parallel training (`accelerate launch`): one process writes
        return {}
    out_dir = layout.policy(name, variant)
    save_policy(policy, tok, out_dir / "policy", policy_generation(cfg, tok))
    if ema is not None:
        save_policy(ema, tok, out_dir / "average", policy_generation(cfg, tok))
    state.unlink(missing_ok=True)

    metrics = {"method": name, "variant": variant, **asdict(method), "seed": pg_cfg.seed,
               "ema_beta_effective": log.get("ema_beta_effective"), "final": log["train"][-1]}
    if ema is not None and task.has_exact_judge:
        # the averaged policy against SFT (the last iterate's numbers are the probe's)
        prompts_e = task.prompts("eval")[: cfg.eval.n_prompts]
        sampling = sampling_kwargs(cfg)
        y_avg = sample_texts(ema, tok, prompts_e, seed=seed_for(cfg.seed, "policy.average_samples"), **sampling)
        y_ref = sample_texts(ref.to(accelerator.device), tok, prompts_e,
                             seed=seed_for(cfg.seed, "policy.average_reference_samples"), **sampling)
        metrics["p_average_vs_sft_exact"] = float(np.mean(task.judge(prompts_e, y_avg, y_ref)))
    metrics["runtime_s"] = round(time.time() - t0, 2)
    out = ensure_dir(layout.policy_results(name, variant))
    pd.DataFrame(log["train"]).to_csv(out / "curve.csv", index=False)
    if log.get("probe"):
        convergence = layout.convergence(name, variant)
        ensure_dir(convergence.parent)
        pd.DataFrame(log["probe"]).to_csv(convergence, index=False)
        metrics["probe"] = {**log["probe"][-1], **converged(log["probe"], pg_cfg.steps)}
    write_metrics(cfg, layout.policy_key(name, variant), metrics)
    return metrics
