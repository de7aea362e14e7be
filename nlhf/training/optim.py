"""What every training loop here does to its optimiser: the learning-rate schedule and one guarded step."""

from __future__ import annotations

import math
from typing import Callable

import torch


def warmup_cosine(steps: int, warmup_steps: int = 0, final: float = 0.1) -> Callable[[int], float]:
    """Learning-rate factor at a step: linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``final`` at
    the last step (``final`` = 1: constant after the warm-up)."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = (step - warmup_steps) / max(1, steps - warmup_steps)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def take_step(loss: torch.Tensor, model: torch.nn.Module, opt, sched, accelerator, grad_clip: float, desc: str,
              step: int) -> None:
    """Backpropagate ``loss``, clip the global gradient norm to ``grad_clip``, step the optimiser and the schedule.
    A NaN/inf loss stops the run with FloatingPointError naming ``desc`` and the step, before any weight changes."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"[{desc}] non-finite loss {loss.item()} at step {step}")
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
