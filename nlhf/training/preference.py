"""Fitting the pairwise preference model and the Bradley–Terry reward model on labelled pairs (the paper's §3, §8).

Both produce a logit ℓ(x, y, y') for "y is preferred":
* preference model: ℓ = f(x, y, y') − f(x, y', y)   (antisymmetric by construction, no BT assumption);
* reward model:     ℓ = r(x, y) − r(x, y')          (Bradley–Terry).
Both are trained with the same cross-entropy  −[z log σ(ℓ) + (1−z) log σ(−ℓ)]  on human labels z ∈ {0, 1}.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pair_logit(model, prompts: list[str], ys: list[str], y_primes: list[str]) -> torch.Tensor:
    """ℓ(x, y, y') for either model type. The batch (one row x <sep> y <sep> y' <sep> per pair) is built by the
    scorer itself; the call goes through ``model(...)`` so that a wrapper from ``accelerator.prepare`` (DDP in a
    multi-process run) sees the forward. A preference model returns ℓ [B]; a reward model r(x, y), r(x, y') [B, 2]."""
    core = getattr(model, "module", model)
    out = model(**core.pair_batch(prompts, ys, y_primes))
    return out if out.dim() == 1 else out[:, 0] - out[:, 1]


def pair_loss(model, prompts, ys, y_primes, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of σ(ℓ) against the labels."""
    logit = pair_logit(model, prompts, ys, y_primes).float()
    return F.binary_cross_entropy_with_logits(logit, labels.to(logit.device, torch.float32))


@torch.no_grad()
def predict_proba(model, prompts, ys, y_primes, batch_size: int = 512) -> np.ndarray:
    """σ(ℓ) on a list of pairs, in batches."""
    out = []
    for i in range(0, len(ys), batch_size):
        sl = slice(i, i + batch_size)
        out.append(torch.sigmoid(pair_logit(model, prompts[sl], ys[sl], y_primes[sl]).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def pair_metrics(prob: np.ndarray, labels: np.ndarray, p_true: np.ndarray | None = None) -> dict:
    """Label log-loss and accuracy of ``prob``; with the exact P also the Bayes limit (log-loss of P itself on the
    same labels), the excess log-loss, and agreement of the predicted direction with P's direction."""
    eps = 1e-7
    q = np.clip(prob, eps, 1 - eps)
    z = labels.astype(float)
    out = {"log_loss": float(-np.mean(z * np.log(q) + (1 - z) * np.log(1 - q))),
           "accuracy": float(np.mean((q > 0.5) == (z > 0.5)))}
    if p_true is not None and not np.isnan(p_true).any():
        p = np.clip(p_true, eps, 1 - eps)
        bayes = float(-np.mean(z * np.log(p) + (1 - z) * np.log(1 - p)))
        decided = np.abs(p_true - 0.5) > 1e-9
        out.update({
            "bayes_log_loss": bayes,
            "excess_log_loss": out["log_loss"] - bayes,
            # expected excess (label noise averaged out): E KL(Bern(P) ‖ Bern(q))
            "kl_to_true": float(np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))),
            "direction_agreement": float(np.mean((q[decided] > 0.5) == (p_true[decided] > 0.5))),
        })
    return out
