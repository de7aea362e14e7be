"""The token-level geometric mixture of the policy and the reference (the paper's §7, App. F.1).

The opponent of Nash-MD-PG is the geometric mixture log π_θ^β = (1−β) log π_θ + β log μ + c(x). The
sequence-level normaliser c(x) is intractable, so, as in the paper (App. F.1) and TRL's
``GeometricMixtureWrapper``, each token is drawn from the per-prefix mixture

    y_n ~ softmax((1−β)·logits_θ(x, y_<n) + β·logits_μ(x, y_<n))

(the product of these per-token factors is NOT the sequence-level mixture; the bias is not analysed in the paper).
β = 0 is self-play (sample from π_θ), β = 1 is the reference μ alone (best response to SFT).
"""

from __future__ import annotations

import torch
from torch import Tensor

def row_beta(beta: float | Tensor, like: Tensor) -> Tensor:
    """β as a tensor broadcastable to ``like`` ([B, ..., V]): a scalar, or one value per row ([B])."""
    b = torch.as_tensor(beta, dtype=torch.float32, device=like.device)
    if b.dim() > 0:
        if b.shape[0] != like.shape[0] and b.numel() != 1:
            raise ValueError(f"beta: expected a scalar or shape [{like.shape[0]}], got {tuple(b.shape)}")
        b = b.reshape(b.shape + (1,) * (like.dim() - b.dim()))
    if bool(((b < 0) | (b > 1)).any()):
        raise ValueError(f"beta: must lie in [0, 1], got {beta}")
    return b


def mix(policy_logits: Tensor, ref_logits: Tensor, beta: Tensor) -> Tensor:
    """The mixture operator, (1−β)·policy_logits + β·ref_logits with exactly ref_logits where β == 1, on rows that
    mix (β > 0; ``beta`` already shaped to broadcast, e.g. [B, 1]). The decode loop calls it once per token, so it
    checks nothing: :func:`mixture_logits` is the checked entry point."""
    return torch.where(beta == 1, ref_logits, (1.0 - beta) * policy_logits + beta * ref_logits)


def mixture_logits(policy_logits: Tensor, ref_logits: Tensor | None, beta: float | Tensor) -> Tensor:
    """Unnormalised mixed logits (1−β)·policy_logits + β·ref_logits, in float32 (:func:`mix`, with its inputs
    checked).

    Rows with β == 0 return the policy logits and rows with β == 1 the reference logits EXACTLY (no 0·(−inf)
    NaNs, no rounding), so those rows sample from π_θ or μ alone. ``ref_logits`` may be None only if all β == 0.
    """
    lp = policy_logits.float()
    b = row_beta(beta, lp)
    if ref_logits is None:
        if bool((b != 0).any()):
            raise ValueError("beta > 0 needs the reference model's logits (ref=None given)")
        return lp
    lr = ref_logits.float()
    if lr.shape != lp.shape:
        raise ValueError(f"policy and reference logits differ in shape: {tuple(lp.shape)} vs {tuple(lr.shape)} "
                         "(do the two models share a vocabulary?)")
    return torch.where(b == 0, lp, mix(lp, lr, b))


def mixture_logprobs(policy_logits: Tensor, ref_logits: Tensor | None, beta: float | Tensor) -> Tensor:
    """log softmax((1−β)·logits_θ + β·logits_μ): the per-token geometric mixture π_θ^{1−β} μ^β / Z (App. F.1).

    ``beta`` is the weight on the REFERENCE: a float or a per-row tensor of shape [B] (broadcast over the other
    dims). β = 0 gives log_softmax(policy_logits), β = 1 gives log_softmax(ref_logits), exactly.
    """
    return torch.log_softmax(mixture_logits(policy_logits, ref_logits, beta), dim=-1)
