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


def _unwrap(model):
    """The module whose ``forward`` signature tells what it accepts (DDP / accelerate wrappers hide it)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


@functools.lru_cache(maxsize=None)
def _forward_params(cls: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _accepts(model, name: str) -> bool:
    return name in _forward_params(type(_unwrap(model)))


def _cache_kwarg(model) -> str:
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def _returned_cache(out, fallback):
    for name in ("cache", "past_key_values"):
        if name in out and out[name] is not None:
            return out[name]
    return fallback


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions 0, 1, ... counted over real tokens only (left padding does not shift a sequence)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
