"""One resumable minibatch loop for the supervised stages (SFT, preference model, reward model).

Batches are drawn by index with a seeded ``torch.Generator`` whose state is checkpointed, so a run killed at any
point and restarted gives bitwise the same model as an uninterrupted run (on CPU). ``accelerate`` handles the
device, mixed precision and (under ``accelerate launch``) data-parallel gradient averaging.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator

from nlhf.config import check
from nlhf.progress import Progress
from nlhf.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from nlhf.training.optim import take_step, warmup_cosine


@dataclass
class SupervisedConfig:
    """Hyper-parameters of a supervised fit (one section each for sft, pm, rm in params.yaml)."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # examples per step
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 10% of lr
    grad_clip: float = 1.0  # max global gradient norm
    log_every: int = 25  # steps between logged (train loss) points
    eval_every: int = 250  # steps between held-out evaluations
    checkpoint_every: int = 200  # steps between resumable checkpoints
    seed: int = 0  # seed for init, batch order and sampling

    def __post_init__(self):
        check(self.steps >= 1, "steps", f"must be >= 1 (got {self.steps})")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1 (got {self.batch_size})")
        check(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0 (got {self.weight_decay})")
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0 (got {self.warmup_steps})")
        check(self.grad_clip > 0, "grad_clip", f"must be > 0 (got {self.grad_clip})")
        for f in ("log_every", "eval_every", "checkpoint_every"):
            check(getattr(self, f) >= 1, f, f"must be >= 1 (got {getattr(self, f)})")


def lr_lambda(cfg: SupervisedConfig) -> Callable[[int], float]:
    """The supervised fits' schedule: linear warm-up, then cosine decay to 0.1 of the peak at the last step."""
    return warmup_cosine(cfg.steps, cfg.warmup_steps, 0.1)


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, list[int]], torch.Tensor],
    n_examples: int,
    cfg: SupervisedConfig,
    state_path: str | Path,
    accelerator: Accelerator | None = None,
    eval_fn: Callable[[torch.nn.Module], dict] | None = None,
    desc: str = "train",
    fingerprint: str = "",
) -> dict:
    """Minimise ``loss_fn(model, batch_indices)`` for ``cfg.steps`` AdamW steps, resuming from ``state_path``.

    Returns ``{"train": [{"step", "loss"}...], "eval": [{"step", **eval_fn(model)}...]}``.
    Stops with ``FloatingPointError`` naming the step if the loss becomes NaN/inf. A saved state is only resumed
    when its ``fingerprint`` (the caller's hash of the params and of the content of every upstream input) matches,
    so a changed param or a retrained upstream model never resumes a stale run; an unreadable state is ignored.
    The last state is kept (so a kill before the caller saves the model loses nothing); the caller deletes it with
    ``Path(state_path).unlink()`` once the final model is written.
    """
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    model, opt = accelerator.prepare(model, opt)
    world, rank = accelerator.num_processes, accelerator.process_index
    check(cfg.batch_size % world == 0, "batch_size",
          f"must be a multiple of the number of processes ({world}), got {cfg.batch_size}")
    log, start = _resume(state_path, fingerprint, model, opt, sched, gen, accelerator, desc)
    model.train()
    running, n_running, last_loss = 0.0, 0, float("nan")
    progress = Progress(desc, cfg.steps, start, enabled=accelerator.is_local_main_process)
    for step in range(start, cfg.steps):
        idx = torch.randint(n_examples, (cfg.batch_size,), generator=gen).tolist()
        # data parallel: every rank draws the same batch (same generator) and takes its own 1/world share, so N
        # processes step on the examples one process would (DDP averages the per-rank mean gradients)
        idx = idx[rank::world]
        with accelerator.autocast():
            loss = loss_fn(model, idx)
        take_step(loss, model, opt, sched, accelerator, cfg.grad_clip, desc, step)
        running += loss.item()
        n_running += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            log["train"].append({"step": done, "loss": running / n_running})
            last_loss = running / n_running
            running, n_running = 0.0, 0
        if eval_fn is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            log["eval"].append({"step": done, **_evaluate(eval_fn, model, accelerator)})
        if (done % cfg.checkpoint_every == 0 or done == cfg.steps) and accelerator.is_main_process:
            save_state(state_path, {
                "model": accelerator.unwrap_model(model).state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "generator": gen.get_state(), "rng": rng_state(),
                "log": log, "step": done, "fingerprint": fingerprint,
            })
        progress.update(done, loss=last_loss)
    model.eval()
    return log


def _evaluate(eval_fn: Callable[[torch.nn.Module], dict], model, accelerator: Accelerator) -> dict:
    """``eval_fn`` of the unwrapped model in eval mode without gradients; the model is back in train mode after."""
    model.eval()
    with torch.no_grad():
        out = eval_fn(accelerator.unwrap_model(model))
    model.train()
    return out


def _resume(state_path, fingerprint: str, model, opt, sched, gen: torch.Generator, accelerator: Accelerator,
            desc: str) -> tuple[dict, int]:
    """``(log, first step)`` of the run: restored into the model, optimiser, schedule, batch generator and global
    RNGs from the state at ``state_path`` when one with this ``fingerprint`` is there, else a fresh start."""
    state = load_state(state_path, log=lambda msg: accelerator.print(f"[{desc}] {msg}"), fingerprint=fingerprint)
    if state is None:
        return {"train": [], "eval": []}, 0
    accelerator.unwrap_model(model).load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    set_rng_state(state["rng"])
    accelerator.print(f"[{desc}] resumed from {state_path} at step {state['step']}")
    return state["log"], state["step"]
