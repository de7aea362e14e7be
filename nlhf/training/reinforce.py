"""The REINFORCE estimator every REINFORCE method uses, and the parameter average of Nash-EMA-PG (the paper's §7,
App. F).

The estimator (model-based, the paper's §7) with the per-token KL in reward-to-go form is

    ĝ = Σ_n ∇_θ log π_θ(y_n | x, y_<n) · [ s(x, y) − τ Σ_{m ≥ n} log(π_θ(y_m | x, y_<m) / μ(y_m | x, y_<m)) ],

whose expectation is ∇_θ [ E_{y~π_θ, y'~π'} s − τ KL(π_θ ‖ μ) ] with π' fixed (tested by enumeration in
tests/test_policy_gradient.py). The Nash signal is s = P(y ≻ y′) − ½, where ½ = P(y ≻ y) is a baseline (it lowers
variance, adds no bias); RLHF's is r(x, y) minus a baseline (:mod:`nlhf.training.methods`).

Nash-EMA's averaged parameters θ̄_t = β θ̄_{t−1} + (1−β) θ_t use β_T = 1 − (1−β)·10,000/T for a run of T steps
(:func:`effective_ema_beta`): the paper quotes β for 10,000 steps, and this keeps the averaging horizon the same
fraction of training (``pg.ema_reference_steps``; set it equal to ``steps`` to use β as given).
"""

from __future__ import annotations

import torch


def effective_ema_beta(beta: float, steps: int, reference_steps: int) -> float:
    """β_T = 1 − (1−β)·reference_steps/T, clipped to [0, 1]: the same averaging horizon as a fraction of the run."""
    return float(min(1.0, max(0.0, 1.0 - (1.0 - beta) * reference_steps / steps)))


@torch.no_grad()
def ema_update(ema_model: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """θ̄ ← β θ̄ + (1 − β) θ for every parameter (and floating buffer)."""
    for e, p in zip(ema_model.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - beta)


def kl_to_go(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_{m ≥ n} (log π − log μ)(y_m), per token n, on response positions (detached)."""
    kl_tok = (logp.detach() - ref_logp) * mask
    return kl_tok.flip(-1).cumsum(-1).flip(-1) * mask


def pg_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, signal: torch.Tensor,
            tau: float) -> torch.Tensor:
    """Surrogate whose gradient is −ĝ (module docstring), averaged over the batch.

    logp: [B, T] log π_θ of the sampled response tokens (with grad); ref_logp: [B, T] log μ (no grad);
    mask: [B, T] 1 on response tokens; signal: [B] s(x, y) (no grad).
    """
    adv = signal.detach()[:, None] * mask - tau * kl_to_go(logp, ref_logp, mask)
    return -(logp * adv * mask).sum(-1).mean()
