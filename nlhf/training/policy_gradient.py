"""The policy-gradient trainer shared by every method (the paper's §7, App. F): the library's public trainer.

:class:`PolicyGradientTrainer` trains any causal LM against a judge (:mod:`nlhf.judges`) with one of the
policy-gradient family, picked by :attr:`PolicyGradientConfig.method`: RLHF (``rlhf``, a reward judge), Nash-MD-PG
at any β (``nash_md``; β = 0 is self-play, β = 1 the best response to μ), Nash-EMA-PG (``nash_ema``) or online IPO
(``online_ipo``). What differs between methods (the judge, the opponent y′, the loss, an averaged policy) lives in
:mod:`nlhf.training.methods`, the REINFORCE estimator and the parameter average in :mod:`nlhf.training.reinforce`;
the trainer keeps the prompts, the sampler, the optimiser, the resume and the logging. One step:

1. draw ``batch_size`` prompts (each repeated ``group_size`` times) and sample the method's rollout from π_θ (and
   the opponent y′ from the method's opponent policy) with the KV-cached sampler (:mod:`nlhf.sampling.decode`);
2. score it with the judge: P(y ≻ y′ | x) or r(x, y);
3. log π_θ and log μ of the responses, the method's loss (REINFORCE with the per-token KL penalty toward μ, or
   IPO's square loss), one clipped Adam step on a cosine schedule; update the averaged policy (Nash-EMA).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from nlhf.config import ConfigError, check
from nlhf.judges import check_judge
from nlhf.models.lora import LoraSpec, add_lora, merge_lora
from nlhf.progress import Progress
from nlhf.sampling.decode import generate
from nlhf.sampling.logprobs import response_logprobs
from nlhf.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from nlhf.training.methods import METHODS, Method
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
    lora: LoraSpec = field(default_factory=LoraSpec)  # low-rank adapters instead of every weight (r: 0 = off);
    # merged into the policy when training ends (nlhf.models.lora)

    def __post_init__(self):
        check(self.probe_every >= 0, "probe_every", f"must be >= 0 (got {self.probe_every})")
        for f in ("steps", "batch_size", "log_every", "checkpoint_every", "ema_reference_steps", "probe_samples",
                  "group_size"):
            check(getattr(self, f) >= 1, f, f"must be >= 1 (got {getattr(self, f)})")
        check(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        check(0 < self.final_lr_fraction <= 1, "final_lr_fraction",
              f"must be in (0, 1] (got {self.final_lr_fraction})")
        check(self.grad_clip > 0, "grad_clip", f"must be > 0 (got {self.grad_clip})")


@dataclass
class PolicyGradientConfig(PGConfig):
    """The trainer's config: the loop's fields (:class:`PGConfig`), the method and how responses are sampled.

    ``method`` picks the algorithm; the fields after it are read by the methods that have them (``beta`` by
    ``nash_md``, ``ema_beta`` by ``nash_ema``). The paper's settings (§8): ``tau`` 0.008 for the Nash methods and
    0.05 for RLHF, β ∈ {0.125, 0.25, 0.375, 0.5, 0.625, 0.75} for MD1–MD6, ``ema_beta`` 0.999 or 0.9995."""

    method: str = "nash_md"  # rlhf | nash_md | nash_ema | online_ipo
    tau: float = 0.008  # KL-regularisation strength toward μ
    beta: float = 0.125  # nash_md: weight of μ in the opponent's token-level mixture (0: self-play, 1: BR to μ)
    ema_beta: float = 0.999  # nash_ema: EMA coefficient at the scale of ema_reference_steps
    max_new_tokens: int = 64  # response length limit
    temperature: float = 1.0  # sampling temperature (the gradient needs 1.0)

    def __post_init__(self):
        super().__post_init__()
        check(self.method in METHODS, "method", f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")
        # the gradient uses the policy's temperature-1 log-probabilities: samples drawn at another temperature
        # would make it biased
        check(self.temperature == 1.0, "temperature", f"policy-gradient training needs 1.0 (got {self.temperature})")
        self.build_method()  # the method's own checks (tau > 0, beta in [0, 1], ...)

    def build_method(self) -> Method:
        """The :class:`~nlhf.training.methods.Method` this config describes."""
        cls = METHODS[self.method]
        own = {f.name for f in fields(cls)} & {"beta", "ema_beta"}
        return cls(kind=self.method, tau=self.tau, **{k: getattr(self, k) for k in own})

    @classmethod
    def for_method(cls, method: Method, loop: PGConfig, *, max_new_tokens: int, temperature: float,
                   lr: float) -> "PolicyGradientConfig":
        """The config of a params.yaml method entry trained with the loop ``loop`` at learning rate ``lr``."""
        extra = {k: getattr(method, k) for k in ("beta", "ema_beta") if hasattr(method, k)}
        return cls(**{**{f.name: getattr(loop, f.name) for f in fields(PGConfig)}, "lr": lr}, method=method.kind, tau=method.tau, max_new_tokens=max_new_tokens,
                   temperature=temperature, **extra)


class TrainerCallback:
    """Hooks the trainer calls (override any). The step hooks run on every process (each draws its own prompts
    and samples); ``on_log`` runs on the main process with each logged row (step, loss, signal, p_vs_opponent,
    kl_to_ref, entropy, length, lr). ``on_rollout`` gets the step's :class:`~nlhf.training.methods.Rollout`;
    ``on_update_begin`` comes after sampling and judging, before the policy's forward and backward."""

    def on_step_begin(self, step: int) -> None: ...

    def on_rollout(self, step: int, rollout) -> None: ...

    def on_update_begin(self, step: int) -> None: ...

    def on_step_end(self, step: int) -> None: ...

    def on_log(self, row: dict) -> None: ...


class DVCLiveCallback(TrainerCallback):
    """Logs each row to a DVCLive ``Live`` (``live.log_metric`` per value, then ``live.next_step()``)."""

    def __init__(self, live, prefix: str = "train/"):
        self.live, self.prefix = live, prefix

    def on_log(self, row: dict) -> None:
        for k, v in row.items():
            if k != "step" and v is not None:
                self.live.log_metric(self.prefix + k, v)
        self.live.next_step()


class _ListLog(TrainerCallback):
    def __init__(self, rows: list):
        self.rows = rows

    def on_log(self, row: dict) -> None:
        self.rows.append(dict(row))


@dataclass
class TrainOutput:
    """What :meth:`PolicyGradientTrainer.train` returns: the log ``{"train": [rows], "probe": [...], ...}`` and the
    method's averaged-parameter policy (Nash-EMA's π_θ̄), or None."""

    log: dict
    average: torch.nn.Module | None


class PolicyGradientTrainer:
    """Train ``policy`` in place (initialised at μ = ``ref_policy``) against ``judge`` with ``config.method``.

    * ``policy``, ``ref_policy``: any ``transformers`` causal LM (and its ``tokenizer``, with a pad token; prompts
      are left-padded). ``ref_policy`` is μ, frozen.
    * ``judge``: a pairwise judge for the Nash methods, a reward judge for RLHF (:mod:`nlhf.judges`).
    * ``prompts``: the training prompts, as text; each step draws ``batch_size`` of them with replacement.
    * ``accelerator``: an ``accelerate.Accelerator`` (built for CPU/GPU if None); under ``accelerate launch`` each
      process draws its own prompts and samples and the gradients are averaged.
    * ``state_path``: if given, the whole state (weights, optimiser, schedule, average, generators, log) is saved
      there every ``checkpoint_every`` steps and a rerun resumes from it bitwise when ``fingerprint`` matches (the
      caller's hash of whatever the run depends on); None: no checkpoints.
    * ``callbacks``: :class:`TrainerCallback` objects, or plain lists that receive every logged row.
    * ``probe(model, step) -> dict``: if given, runs before the first step and every ``probe_every`` steps (0: every
      5% of the run) on the main process, logged under ``"probe"``; it must not touch the training's random streams.

    Raises FloatingPointError naming a NaN/inf step.
    """

    def __init__(self, policy: torch.nn.Module, ref_policy: torch.nn.Module, judge, tokenizer, prompts: Sequence[str],
                 config: PolicyGradientConfig, *, accelerator: Accelerator | None = None,
                 callbacks: Sequence[Any] = (), state_path: str | Path | None = None, fingerprint: str = "",
                 probe=None, desc: str = "policy"):
        if not isinstance(config, PolicyGradientConfig):
            raise TypeError(f"config: expected a PolicyGradientConfig, got {type(config).__name__}")
        self.method = config.build_method()
        check_judge(judge, self.method.JUDGE, f"judge (method {config.method!r})")
        if not prompts:
            raise ConfigError("prompts: the trainer needs at least one training prompt")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer: it has no pad token (set tokenizer.pad_token) to pad the batch's prompts")
        self.policy, self.ref, self.judge, self.tokenizer = policy, ref_policy, judge, tokenizer
        self.prompts, self.cfg, self.probe, self.desc = list(prompts), config, probe, desc
        self._check_length()
        self.callbacks = [_ListLog(c) if isinstance(c, list) else c for c in callbacks]
        self.state_path = None if state_path is None else Path(state_path)
        self.fingerprint = fingerprint
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())

    def _check_length(self) -> None:
        """The longest prompt plus ``max_new_tokens`` must fit the policy's positions (a clear error here instead of
        an index error deep inside the model's embedding)."""
        limit = getattr(getattr(self.policy, "config", None), "max_position_embeddings", None)
        if not isinstance(limit, int):
            return
        longest = max(len(ids) for ids in self.tokenizer(self.prompts, add_special_tokens=False)["input_ids"])
        if longest + self.cfg.max_new_tokens > limit:
            raise ValueError(f"max_new_tokens: {self.cfg.max_new_tokens} new tokens after the longest prompt "
                             f"({longest} tokens) exceed the policy's {limit} positions; shorten the prompts or "
                             f"lower max_new_tokens")

    # -- setup and resume --------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        acc, cfg, device = self.accelerator, self.cfg, self.accelerator.device
        if cfg.lora.r:
            add_lora(self.policy, cfg.lora, seed=cfg.seed)  # in place; every other weight frozen
        else:
            self.policy.requires_grad_(True)
        opt = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps, 0, cfg.final_lr_fraction))
        self.average, self.decay = self.method.start_average(self.policy, cfg.steps, cfg.ema_reference_steps)
        self.policy, self.opt = acc.prepare(self.policy, opt)
        self.ref = self.ref.to(device).eval().requires_grad_(False)
        self.judge = self.judge.to(device).eval().requires_grad_(False)
        if self.average is not None:
            self.average = self.average.to(device)
        seed = cfg.seed + 1000 * acc.process_index
        self.prompt_gen = torch.Generator().manual_seed(seed)
        self.sample_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.log = {"train": [], "probe": [], "method": asdict(self.method), "ema_beta_effective": self.decay}

    def _resume(self) -> int:
        """Load a matching checkpoint; the step to start from."""
        if self.state_path is None:
            return 0
        acc = self.accelerator
        state = load_state(self.state_path, log=lambda msg: acc.print(f"[{self.desc}] {msg}"),
                           fingerprint=self.fingerprint)
        if state is None:
            return 0
        acc.unwrap_model(self.policy).load_state_dict(state["policy"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.average is not None:
            self.average.load_state_dict(state["ema"])
        # each rank draws its own prompts and samples: it resumes its own generator states (a checkpoint written by
        # fewer processes gives a rank without an entry its fresh seed)
        ranks = state["rank_states"]
        if acc.process_index < len(ranks):
            p_state, s_state, rng = ranks[acc.process_index]
            self.prompt_gen.set_state(p_state)
            self.sample_gen.set_state(s_state.to(self.sample_gen.get_state().device))
            set_rng_state(rng)
        self.log = state["log"]
        acc.print(f"[{self.desc}] resumed from {self.state_path} at step {state['step']}")
        return state["step"]

    def _checkpoint(self, done: int) -> None:
        # every rank's generator states (a collective: all ranks call it), saved by the main process
        rank_states = gather_object([(self.prompt_gen.get_state(), self.sample_gen.get_state(), rng_state())])
        if self.accelerator.is_main_process:
            save_state(self.state_path, {
                "policy": self.accelerator.unwrap_model(self.policy).state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "ema": None if self.average is None else self.average.state_dict(),
                "rank_states": rank_states, "log": self.log, "step": done, "fingerprint": self.fingerprint,
            })

    # -- one step ----------------------------------------------------------------------------------------------------
    def _call(self, hook: str, *args) -> None:
        if hook != "on_log" or self.accelerator.is_main_process:
            for cb in self.callbacks:
                getattr(cb, hook, lambda *a: None)(*args)

    def _sample(self, model, ids, prompt_mask, **mixture):
        return generate(model, ids, prompt_mask, max_new_tokens=self.cfg.max_new_tokens,
                        temperature=self.cfg.temperature, eos_token_id=self.tokenizer.eos_token_id,
                        pad_token_id=self.tokenizer.pad_token_id, generator=self.sample_gen, **mixture)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` prompts drawn with replacement, each repeated ``group_size`` times, left-padded."""
        idx = torch.randint(len(self.prompts), (self.cfg.batch_size,), generator=self.prompt_gen).tolist()
        batch = [self.prompts[i] for i in idx for _ in range(self.cfg.group_size)]
        enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.accelerator.device)
        return enc["input_ids"], enc["attention_mask"]

    def _step(self, step: int) -> None:
        acc, method = self.accelerator, self.method
        self._call("on_step_begin", step)
        ids, pmask = self._batch()
        plen = ids.shape[1]
        model = acc.unwrap_model(self.policy)
        model.eval()
        with torch.no_grad(), acc.autocast():
            roll = method.rollout(self._sample, model, self.ref, self.average, ids, pmask)
        model.train()
        self._call("on_rollout", step, roll)
        seq, rmask = roll.sequences, roll.response_mask
        attn = torch.cat([roll.prompt_mask, rmask.to(roll.prompt_mask.dtype)], dim=1)
        with torch.no_grad(), acc.autocast():
            ref_logp = response_logprobs(self.ref, seq, attn, plen).float()
            # the judge reads the sampler's token ids directly (special ids dropped): the same input as decoding to
            # text and re-tokenizing (tested), without the round trip
            judged = method.judge(self.judge, ids, pmask, roll, self.cfg.group_size)
        self._call("on_update_begin", step)
        with acc.autocast():
            logp = response_logprobs(self.policy, seq, attn, plen).float()
            m = rmask.to(logp.dtype)
            loss = method.loss(logp, ref_logp, m, judged)
        take_step(loss, self.policy, self.opt, self.sched, acc, self.cfg.grad_clip, self.desc, step)
        if self.average is not None:
            method.update_average(self.average, acc.unwrap_model(self.policy), self.decay)
        done = step + 1
        if done % self.cfg.log_every == 0 or done == self.cfg.steps or done == 1:
            self._log_row(done, loss, judged, logp.detach(), ref_logp, m)

    def _log_row(self, done: int, loss, judged, logp, ref_logp, m) -> None:
        with torch.no_grad():
            row = {
                "step": done,
                "loss": loss.item(),
                "signal": float(judged.logged_signal),
                "p_vs_opponent": None if judged.p_vs_opponent is None else float(judged.p_vs_opponent),
                "kl_to_ref": ((logp - ref_logp) * m).sum(-1).mean().item(),
                "entropy": (-(logp * m).sum(-1)).mean().item(),
                "length": m.sum(-1).mean().item(),
                "lr": self.sched.get_last_lr()[0],
            }
        self.log["train"].append(row)
        self._call("on_log", row)

    def _run_probe(self, step: int) -> None:
        if self.probe is not None and self.accelerator.is_main_process:
            self.log.setdefault("probe", []).append(self.probe(self.accelerator.unwrap_model(self.policy), step))

    # -- the loop ----------------------------------------------------------------------------------------------------
    def train(self) -> TrainOutput:
        """Run the remaining steps; returns the log and the averaged policy (Nash-EMA), else None."""
        cfg, acc = self.cfg, self.accelerator
        self._setup()
        start = self._resume()
        if start == 0:
            self._run_probe(0)
        probe_every = cfg.probe_every or max(1, cfg.steps // 20)
        progress = Progress(self.desc, cfg.steps, start, enabled=acc.is_local_main_process)
        for step in range(start, cfg.steps):
            self._step(step)
            done = step + 1
            if done % probe_every == 0 or done == cfg.steps:
                self._run_probe(done)
            last = self.log.get("probe", [{}])[-1] if self.probe is not None else {}
            progress.update(done, kl=self.log["train"][-1]["kl_to_ref"],
                            **{k: last[k] for k in ("p_vs_sft", "p_vs_target") if k in last})
            if self.state_path is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                self._checkpoint(done)
            self._call("on_step_end", step)
        policy = acc.unwrap_model(self.policy).eval()
        if cfg.lora.r:  # the caller's policy (and the average) become plain models again, with the update merged
            merge_lora(policy)
            if self.average is not None:
                merge_lora(self.average)
        return TrainOutput(self.log, self.average)
