"""Low-rank adapters for the policy (Hu et al. 2022) through ``peft``: train W + (α/r)·B·A in the chosen layers
(A: r × d_in, B: d_out × r, B = 0 at the start, so the adapted policy starts as μ) and keep every other weight
frozen. After training the update is merged into W and the adapters removed, so the saved policy is a plain
causal LM that anything loading the pipeline's policies reads.

The adapters are injected into the model in place (``peft.inject_adapter_in_model``): the model keeps its class, so
the sampler, the trainer and ``accelerate`` see the same object as without LoRA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nlhf.config import check


@dataclass
class LoraSpec:
    """LoRA of the policy (params.yaml ``pg.lora``; absent or ``r: 0``: every weight is trained)."""

    r: int = 0  # rank of the update; 0 = no adapters
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapters' input
    target_modules: list[str] | None = None  # module names to adapt (None: peft's default for the architecture,
    # GPT-2's attention projection c_attn)

    def __post_init__(self):
        check(self.r >= 0, "r", f"must be >= 0 (got {self.r})")
        check(self.alpha > 0, "alpha", f"must be > 0 (got {self.alpha})")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1) (got {self.dropout})")


def add_lora(model: nn.Module, spec: LoraSpec, seed: int = 0) -> nn.Module:
    """Inject ``spec``'s adapters into ``model`` in place and freeze everything else; returns ``model``. A is drawn
    as peft draws it (Kaiming-uniform, a = √5) from a generator seeded with ``seed``, not from the global random
    state, so that a run and its resumed rerun start from the same adapters; B = 0."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # an optional dependency: pip install nlhf[lora]
        raise ImportError(f"pg.lora.r = {spec.r} needs peft (pip install 'peft>=0.17'): {e}") from None
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=spec.target_modules)
    if spec.target_modules is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        check(model_type in DEFAULTS, "target_modules",
              f"peft has no default modules for model type {model_type!r}: name them")
        config.target_modules = set(DEFAULTS[model_type])
    # GPT-2's projections are transformers' Conv1D, whose weight is stored (d_in, d_out): peft must know, or the
    # merged update is the transpose of the trained one
    from transformers.pytorch_utils import Conv1D

    config.fan_in_fan_out = any(isinstance(m, Conv1D) for n, m in model.named_modules()
                                if n.rpartition(".")[2] in config.target_modules)
    inject_adapter_in_model(config, model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                w = torch.empty(p.shape, dtype=p.dtype)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
                p.copy_(w)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every adapter of ``model`` into its base weight and put the base layer back in its place, in place;
    returns ``model`` (a model without adapters is returned unchanged)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    return model
