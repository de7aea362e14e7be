"""Stages ``policy@<METHOD>``, ``policy_exact@<METHOD>``, ``policy_seed@<METHOD>``: one method trained from μ
(:mod:`nlhf.training.methods`) by the library's trainer (:class:`nlhf.training.policy_gradient.PolicyGradientTrainer`)."""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import pandas as pd

from nlhf.judges import exact_pairwise_judge
from nlhf.models import PreferenceModel, RewardModel, check_same_tokenizer, save_policy
from nlhf.pipeline.artifacts import ensure_dir, require, stage_fingerprint, write_metrics
from nlhf.pipeline.params import PipelineConfig
from nlhf.pipeline.runtime import accelerator_for, heldout_judge, load_sft, policy_generation, sampling_kwargs
from nlhf.sampling.texts import sample_texts
from nlhf.seeds import seed_for
from nlhf.tasks import make_task
from nlhf.tasks.tldr_export import ExportedJudge
from nlhf.training.checkpoint import seed_everything
from nlhf.training.policy_gradient import PolicyGradientConfig, PolicyGradientTrainer
from nlhf.training.probe import ConvergenceProbe, JudgeProbe, converged


def trainer_config(cfg: PipelineConfig, name: str, variant: str) -> PolicyGradientConfig:
    """The trainer's config of stage ``policy[_variant]@<name>``, resolved in one place: params ``pg`` with the
    method's entry; ``seed`` trains at pg.seed + 1; ``exact`` for ``ablation.steps`` steps (where set). The
    learning rate: ``ablation.lr`` for ``exact`` where set, else the method's ``lr``, else ``pg.lr``."""
    method = cfg.method(name)
    loop = replace(cfg.pg, seed=cfg.pg.seed + 1) if variant == "seed" else cfg.pg
    lr = method.lr or loop.lr
    if variant == "exact":
        loop = replace(loop, steps=cfg.ablation.steps or loop.steps)
        lr = cfg.ablation.lr or lr
    return PolicyGradientConfig.for_method(method, loop, max_new_tokens=cfg.sampling.max_new_tokens,
                                           temperature=cfg.sampling.temperature, lr=lr)


def exact_judge(cfg: PipelineConfig, task, ref, tok, method, prompts: list[str]):
    """The exact counterpart of the method's judge (:mod:`nlhf.training.exact_judges`): P* for the Nash methods,
    the Bradley–Terry fit of P* on candidate pools of the training prompts for RLHF."""
    from nlhf import oracle
    from nlhf.training.exact_judges import ExactBTReward

    if not task.has_exact_judge:
        raise ValueError(f"the exact-judge ablation needs a task with an exact judge, got {cfg.task.name!r}")
    if method.JUDGE != "reward":
        return exact_pairwise_judge(task, tok)
    k = cfg.ablation.pool_sft_samples
    flat = sample_texts(ref, tok, [x for x in prompts for _ in range(k)],
                        seed=seed_for(cfg.seed, "policy.exact_bt_pool_samples"), **sampling_kwargs(cfg))
    pools = oracle.build_pools(task, ref, tok, prompts, [flat[i * k: (i + 1) * k] for i in range(len(prompts))])
    return ExactBTReward(task, tok, pools)


def trained_judge(cfg: PipelineConfig, method, tok):
    """The pipeline's trained model that plays the method's judge (the PM, or the RM for RLHF)."""
    stage = method.judge_model
    judge = {"rm": RewardModel, "pm": PreferenceModel}[stage].from_pretrained(
        require(cfg.layout.model(stage), cfg.layout.dvc_stage(stage)))
    check_same_tokenizer(judge.tokenizer, tok, f"{method.JUDGE} model ({judge.kind})", "policy (SFT)")
    return judge


def run_policy(cfg: PipelineConfig, name: str, variant: str = "paper") -> dict:
    """Stage ``policy@<name>``: method ``name`` trained from μ; saves its policy (and its averaged policy, if the
    method has one: Nash-EMA-PG's EMA*, which the evaluation stage judges with the rest).

    ``variant``: ``paper`` trains against the trained PM (Nash) or RM (RLHF); ``exact`` against the task's exact
    judges (:mod:`nlhf.training.exact_judges`) on the ablation's training prompts, for ``ablation.steps`` at
    ``ablation.lr`` where set; ``seed`` like ``paper`` with the training seed pg.seed + 1."""
    layout = cfg.layout
    if variant not in layout.POLICY_VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(layout.POLICY_VARIANTS)}, got {variant!r}")
    method, config = cfg.method(name), trainer_config(cfg, name, variant)
    t0 = time.time()
    seed_everything(config.seed)
    accelerator = accelerator_for(cfg)
    policy, tok = load_sft(cfg)
    ref, _ = load_sft(cfg)
    task = make_task(cfg.task)
    prompts = task.prompts("train")
    if variant == "exact":
        prompts = prompts[: cfg.ablation.train_prompts]
        judge = exact_judge(cfg, task, ref, tok, method, prompts)
    else:
        judge = trained_judge(cfg, method, tok)
    probe_kw = dict(samples=config.probe_samples, max_new_tokens=cfg.sampling.max_new_tokens,
                    seed=seed_for(cfg.seed, "policy.probe"), confidence=cfg.eval.confidence)
    if task.has_exact_judge:
        probe = ConvergenceProbe.from_oracle(require(layout.oracle_pools, "oracle"),
                                             require(layout.oracle_target(name), "oracle"), task, tok,
                                             ref.to(accelerator.device), **probe_kw)
    else:  # the held-out judge against SFT on the oracle stage's prompts (and the exported P*, where set)
        reference = None if cfg.eval.synthetic_export is None else ExportedJudge(cfg.eval.synthetic_export)
        probe = JudgeProbe.from_prompts_file(require(layout.oracle_pools, "oracle"),
                                             heldout_judge(cfg, tok, accelerator.device), tok,
                                             ref.to(accelerator.device), reference=reference, **probe_kw)
    state = layout.resume(layout.policy_key(name, variant))
    trained = PolicyGradientTrainer(policy, ref, judge, tok, prompts, config, accelerator=accelerator,
                                    state_path=state, fingerprint=stage_fingerprint(cfg, layout.policy_stage(name, variant)),
                                    desc=layout.policy_stage(name, variant), probe=probe).train()
    policy = accelerator.unwrap_model(policy).eval()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:  # data-parallel training (`accelerate launch`): one process writes
        return {}
    out_dir = layout.policy(name, variant)
    save_policy(policy, tok, out_dir / "policy", policy_generation(cfg, tok))
    if trained.average is not None:
        save_policy(trained.average, tok, out_dir / "average", policy_generation(cfg, tok))
    state.unlink(missing_ok=True)
    metrics = {"method": name, "variant": variant, **asdict(method), "seed": config.seed,
               "ema_beta_effective": trained.log.get("ema_beta_effective"), "final": trained.log["train"][-1]}
    metrics["runtime_s"] = round(time.time() - t0, 2)
    return write_policy_results(cfg, name, variant, trained.log, config.steps, metrics)


def write_policy_results(cfg: PipelineConfig, name: str, variant: str, log: dict, steps: int, metrics: dict) -> dict:
    """The training curve, the convergence probes and the stage's metrics (with the convergence verdict)."""
    layout = cfg.layout
    out = ensure_dir(layout.policy_results(name, variant))
    pd.DataFrame(log["train"]).to_csv(out / "curve.csv", index=False)
    if log.get("probe"):
        convergence = layout.convergence(name, variant)
        ensure_dir(convergence.parent)
        pd.DataFrame(log["probe"]).to_csv(convergence, index=False)
        metrics["probe"] = {**log["probe"][-1], **converged(log["probe"], steps)}
    write_metrics(cfg, layout.policy_key(name, variant), metrics)
    return metrics
