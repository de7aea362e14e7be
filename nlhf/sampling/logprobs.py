"""Scoring a sampled response: log π(y_n | x, y_<n) per token in one forward (the paper's §7).

Summed over the response, log π(y|x) = Σ_n log π(y_n | x, y_<n) is what the policy gradient differentiates (under
grad) and what the KL to the reference μ needs (under ``no_grad``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlhf.sampling.transformers_compat import accepts, position_ids_from_mask

def _response_logits(model, sequences: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
    """Logits predicting each response token: [B, T, V] (position P−1+n predicts token P+n)."""
    T = sequences.shape[1] - prompt_len
    if T < 1 or prompt_len < 1:
        raise ValueError(f"need prompt_len >= 1 and a non-empty response; got prompt_len={prompt_len}, "
                         f"sequence length {sequences.shape[1]}")
    kw = dict(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
              use_cache=False)
    if accepts(model, "logits_to_keep"):
        kw["logits_to_keep"] = T + 1  # the last T+1 positions: P−1 ... P+T−1
        return model(**kw).logits[:, :T, :]
    return model(**kw).logits[:, prompt_len - 1:-1, :]


def response_logprobs(model, sequences: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
    """log π(y_n | x, y_<n) for each response token, [B, T], in ONE forward; 0 where ``attention_mask`` is 0.

    ``sequences``/``attention_mask`` are [B, P+T] with the prompt left-padded in the first ``prompt_len`` columns
    (e.g. ``Generation.sequences`` / ``Generation.attention_mask``). Sum over T for log π(y|x). Differentiable:
    call it under grad for the policy-gradient term, under ``no_grad`` for the reference μ.
    """
    logits = _response_logits(model, sequences, attention_mask, prompt_len).float()
    targets = sequences[:, prompt_len:]
    lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    return lp * attention_mask[:, prompt_len:].to(lp.dtype)
