"""The policy-gradient loop shared by every method (the paper's §7, App. F).

What differs between methods (the judge, the opponent y′, the loss, an averaged policy) lives in
:mod:`nlhf.training.methods`, the REINFORCE estimator and the parameter average in :mod:`nlhf.training.reinforce`;
:func:`train_policy` runs any method with the same prompts, sampler, optimiser, resume and logging.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from nlhf.config import check
from nlhf.progress import Progress
from nlhf.sampling.decode import generate
from nlhf.sampling.logprobs import response_logprobs
from nlhf.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from nlhf.training.methods import Method
from nlhf.training.optim import take_step, warmup_cosine


@dataclass
class PGConfig:
    """Shared hyper-parameters of the policy-gradient loop (params.yaml ``pg``)."""

    steps: int = 300  # optimizer steps (paper: 10,000)
    batch_size: int = 32  # prompts per step (paper's sibling work: 32)
    lr: float = 1e-4  # Adam learning rate unless the method sets its own
    final_lr_fraction: float = 1.0  # cosine decay of the learning rate from lr to lr × this at the last step
    # (1: constant); a decayed rate lets the last quarter settle, which the convergence rule reads
    grad_clip: float = 1.0  # max global gradient norm
    log_every: int = 10  # steps between logged points
    checkpoint_every: int = 50  # steps between resumable checkpoints
    seed: int = 0  # prompt order and sampling seed
    ema_reference_steps: int = 10_000  # run length the EMA β values are quoted for (nlhf.training.reinforce)
    probe_every: int = 0  # steps between convergence probes (nlhf.training.probe); 0: every 5% of the run
    probe_samples: int = 4  # responses per probe prompt
    group_size: int = 1  # responses per prompt per step, k (a step has batch_size·k rows): with k > 1 RLHF's baseline
    # is the other k−1 responses' mean reward (leave-one-out) and a Nash method compares each response with the k
    # opponents drawn for its prompt (nlhf.training.methods); both stay unbiased and lower the variance

    def __post_init__(self):
        check(self.probe_every >= 0, "probe_every", f"must be >= 0 (got {self.probe_every})")
        for f in ("steps", "batch_size", "log_every", "checkpoint_every", "ema_reference_steps", "probe_samples",
                  "group_size"):
            check(getattr(self, f) >= 1, f, f"must be >= 1 (got {getattr(self, f)})")
        check(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        check(0 < self.final_lr_fraction <= 1, "final_lr_fraction",
              f"must be in (0, 1] (got {self.final_lr_fraction})")
        check(self.grad_clip > 0, "grad_clip", f"must be > 0 (got {self.grad_clip})")


def train_policy(
    policy: torch.nn.Module,
    ref: torch.nn.Module,
    judge_model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    method: Method,
    cfg: PGConfig,
    max_new_tokens: int,
    temperature: float,
    state_path: str | Path,
    accelerator: Accelerator | None = None,
    fingerprint: str = "",
    desc: str = "policy",
    probe=None,
) -> tuple[dict, torch.nn.Module | None]:
    """Train ``policy`` in place (initialised at μ = ``ref``) with ``method`` (:mod:`nlhf.training.methods`).

    ``judge_model`` is what ``method.JUDGE`` names: a preference model (``logits_from_ids``) or a reward model
    (``rewards_from_ids``), trained or exact. Returns the log
    ``{"train": [per-step dicts], "probe": [...]}`` and the method's averaged-parameter policy (Nash-EMA's π_θ̄), or None.
    ``probe(model, step) -> dict`` (:class:`nlhf.training.probe.ConvergenceProbe`), if given, runs before the first
    step and every ``cfg.probe_every`` steps (0: every 5% of the run) on the main process; it must not touch the
    training's random streams.
    Resumes from ``state_path`` when its fingerprint (the caller's hash of the params and of the content of the
    policy's, reference's and judge's upstream artifacts) matches, otherwise starts fresh; raises FloatingPointError
    naming a NaN/inf step.
    """
    if temperature != 1.0:
        raise ValueError(f"sampling.temperature: policy-gradient training needs 1.0 (got {temperature}): the gradient "
                         f"uses the policy's temperature-1 log-probabilities, so samples drawn at another temperature "
                         f"would make it biased")
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    lr = method.lr or cfg.lr
    policy.requires_grad_(True)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps, 0, cfg.final_lr_fraction))
    average, decay = method.start_average(policy, cfg.steps, cfg.ema_reference_steps)
    policy, opt = accelerator.prepare(policy, opt)
    ref = ref.to(device).eval().requires_grad_(False)
    judge_model = judge_model.to(device).eval().requires_grad_(False)
    if average is not None:
        average = average.to(device)
    seed = cfg.seed + 1000 * accelerator.process_index
    prompt_gen = torch.Generator().manual_seed(seed)
    sample_gen = torch.Generator(device=device).manual_seed(seed + 1)
    log: dict = {"train": [], "probe": [], "method": asdict(method), "ema_beta_effective": decay}
    probe_every = cfg.probe_every or max(1, cfg.steps // 20)
    start = 0
    state = load_state(state_path, log=lambda msg: accelerator.print(f"[{desc}] {msg}"), fingerprint=fingerprint)
    if state is not None:
        accelerator.unwrap_model(policy).load_state_dict(state["policy"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if average is not None:
            average.load_state_dict(state["ema"])
        # each rank draws its own prompts and samples: it resumes its own generator states (a checkpoint written
        # by fewer processes gives a rank without an entry its fresh seed)
        ranks = state["rank_states"]
        if accelerator.process_index < len(ranks):
            p_state, s_state, rng = ranks[accelerator.process_index]
            prompt_gen.set_state(p_state)
            sample_gen.set_state(s_state.to(sample_gen.get_state().device))
            set_rng_state(rng)
        log, start = state["log"], state["step"]
        accelerator.print(f"[{desc}] resumed from {state_path} at step {start}")

    def run_probe(step: int) -> None:
        if probe is not None and accelerator.is_main_process:
            log.setdefault("probe", []).append(probe(accelerator.unwrap_model(policy), step))

    def sample(model, ids, prompt_mask, **mixture):
        return generate(model, ids, prompt_mask, max_new_tokens=max_new_tokens, temperature=temperature,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        generator=sample_gen, **mixture)

    if start == 0:
        run_probe(0)
    B = cfg.batch_size
    progress = Progress(desc, cfg.steps, start, enabled=accelerator.is_local_main_process)
    for step in range(start, cfg.steps):
        idx = torch.randint(len(prompts), (B,), generator=prompt_gen).tolist()
        batch_prompts = [prompts[i] for i in idx for _ in range(cfg.group_size)]
        enc = tokenizer(batch_prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        ids, pmask = enc["input_ids"], enc["attention_mask"]
        plen = ids.shape[1]
        model = accelerator.unwrap_model(policy)
        model.eval()
        with torch.no_grad(), accelerator.autocast():
            roll = method.rollout(sample, model, ref, average, ids, pmask)
        model.train()
        seq, rmask = roll.sequences, roll.response_mask
        attn = torch.cat([roll.prompt_mask, rmask.to(roll.prompt_mask.dtype)], dim=1)
        with torch.no_grad(), accelerator.autocast():
            ref_logp = response_logprobs(ref, seq, attn, plen).float()
            # the judge reads the sampler's token ids directly (special ids dropped): the same input as decoding to
            # text and re-tokenizing (tested), without the round trip
            judged = method.judge(judge_model, ids, pmask, roll, cfg.group_size)
        with accelerator.autocast():
            logp = response_logprobs(policy, seq, attn, plen).float()
            m = rmask.to(logp.dtype)
            loss = method.loss(logp, ref_logp, m, judged)
        take_step(loss, policy, opt, sched, accelerator, cfg.grad_clip, desc, step)
        if average is not None:
            method.update_average(average, accelerator.unwrap_model(policy), decay)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps or done == 1:
            with torch.no_grad():
                kl_seq = ((logp.detach() - ref_logp) * m).sum(-1)
                row = {
                    "step": done,
                    "loss": loss.item(),
                    "signal": judged.logged_signal,
                    "p_vs_opponent": judged.p_vs_opponent,
                    "kl_to_ref": kl_seq.mean().item(),
                    "entropy": (-(logp.detach() * m).sum(-1)).mean().item(),
                    "length": m.sum(-1).mean().item(),
                    "lr": sched.get_last_lr()[0],
                }
            log["train"].append(row)
        if done % probe_every == 0 or done == cfg.steps:
            run_probe(done)
        last = log.get("probe", [{}])[-1] if probe is not None else {}
        progress.update(done, kl=log["train"][-1]["kl_to_ref"], **{
            k: last[k] for k in ("p_vs_sft", "p_vs_target") if k in last})
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            # every rank's generator states (a collective: all ranks call it), saved by the main process
            rank_states = gather_object([(prompt_gen.get_state(), sample_gen.get_state(), rng_state())])
            if accelerator.is_main_process:
                save_state(state_path, {
                    "policy": accelerator.unwrap_model(policy).state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "ema": None if average is None else average.state_dict(),
                    "prompt_gen": prompt_gen.get_state(),
                    "sample_gen": sample_gen.get_state(), "rng": rng_state(), "rank_states": rank_states,
                    "log": log, "step": done, "fingerprint": fingerprint,
                })
    accelerator.unwrap_model(policy).eval()
    return log, average

