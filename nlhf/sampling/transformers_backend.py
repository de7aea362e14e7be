"""The decode loop's backend for any ``transformers`` causal LM (used by :func:`nlhf.sampling.decode.generate`).

A backend holds one model's side of the loop: ``prefill()`` returns the next-token logits of the prompts,
``step(tok, alive, t)`` appends the sampled tokens and returns the next logits. This one keeps transformers'
``DynamicCache`` (one forward per new token) or re-encodes the whole prefix at every step; the GPT-2 fast path
with the same interface is :class:`nlhf.sampling.fast_decode.GPT2Backend`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlhf.sampling.transformers_compat import (accepts, cache_kwarg, new_cache, returned_cache,
                                               position_ids_from_mask)

def _last_logits(model, input_ids, attention_mask, position_ids, cache) -> tuple[Tensor, object]:
    """Logits of the last position, [B, V]; with ``cache`` (a DynamicCache) it is advanced in place."""
    kw = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    if accepts(model, "logits_to_keep"):
        kw["logits_to_keep"] = 1  # skip the LM head on the prompt positions
    if cache is None:
        out = model(**kw, use_cache=False)
    else:
        out = model(**kw, use_cache=True, **{cache_kwarg(model): cache})
        cache = returned_cache(out, cache)
    return out.logits[:, -1, :], cache


class TransformersBackend:
    """One model's side of the decode loop on any ``transformers`` causal LM, for the rows ``rows`` of the batch:
    with a KV cache (``DynamicCache``: one forward per new token) or, ``cached=False``, re-encoding the whole prefix
    at every step (the reference implementation). Same interface as :class:`nlhf.sampling.fast_decode.GPT2Backend`."""

    def __init__(self, model, prompt_ids: Tensor, prompt_mask: Tensor, rows, cached: bool):
        self.model, self.rows, self.cached = model, rows, cached
        self.seq, self.mask = prompt_ids[rows], prompt_mask[rows].long()
        self.cache = new_cache() if cached else None

    def prefill(self) -> Tensor:
        logits, self.cache = _last_logits(self.model, self.seq, self.mask, position_ids_from_mask(self.mask),
                                          self.cache)
        return logits.float()

    def step(self, tok: Tensor, alive: Tensor, t: int) -> Tensor:
        tok, alive = tok[self.rows], alive[self.rows]
        new_pos = self.mask.sum(-1, keepdim=True)  # = number of real tokens so far = position of the new token
        self.seq = torch.cat([self.seq, tok.unsqueeze(1)], 1)
        self.mask = torch.cat([self.mask, alive.long().unsqueeze(1)], 1)  # 0 once finished: pads never attended
        if self.cached:
            ids, pos = tok.unsqueeze(1), new_pos
        else:
            ids, pos = self.seq, position_ids_from_mask(self.mask)
        logits, self.cache = _last_logits(self.model, ids, self.mask, pos, self.cache)
        return logits.float()
