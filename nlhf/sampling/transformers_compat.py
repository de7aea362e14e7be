"""Calling a ``transformers`` causal LM across library versions, and positions from an attention mask.

Prompts are LEFT-padded, so positions come from the mask (``position_ids = cumsum(mask) − 1``): left padding never
shifts a prompt.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

# ----------------------------------------------------------------------------------------------------------------
# transformers-version shims. transformers 5.24 renamed the forward kwarg ``past_key_values`` -> ``cache`` (the
# old name is deprecated until 5.40) and the output field likewise; 5.17 may only know ``past_key_values``.
# We look at the model's forward signature once per class and pass our own DynamicCache object, which the model
# updates in place, so we never depend on the output field's name either.


def unwrap(model):
    """The model inside DDP / accelerate wrappers (each holds the next as ``.module``): the module whose weights and
    ``forward`` signature are the model's own."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


@functools.lru_cache(maxsize=None)
def _forward_params(cls: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def accepts(model, name: str) -> bool:
    """Whether the (unwrapped) model's ``forward`` takes a keyword ``name``."""
    return name in _forward_params(type(unwrap(model)))


def cache_kwarg(model) -> str:
    """The name of the model's KV-cache keyword: ``cache`` where its ``forward`` takes it, else ``past_key_values``."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def new_cache():
    """An empty ``transformers`` ``DynamicCache``, which the model updates in place."""
    from transformers import DynamicCache

    return DynamicCache()


def returned_cache(out, fallback):
    """The cache a forward returned (under either field name), or ``fallback`` where it returned none."""
    for name in ("cache", "past_key_values"):
        if name in out and out[name] is not None:
            return out[name]
    return fallback


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions 0, 1, ... counted over real tokens only (left padding does not shift a sequence)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
