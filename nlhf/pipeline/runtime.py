"""How a stage runs and which models it loads: the accelerator, the sampling settings, the SFT policy and the
policies of the evaluation table."""

from __future__ import annotations

import torch
from accelerate import Accelerator

from nlhf.models import generation_config, load_policy
from nlhf.pipeline.artifacts import require
from nlhf.pipeline.params import PipelineConfig
from nlhf.training.methods import table_policies


def accelerator_for(cfg: PipelineConfig) -> Accelerator:
    """The stage's ``Accelerator`` on the device and at the precision of ``cfg.runtime.resolved()``."""
    if cfg.runtime.torch_threads:
        torch.set_num_threads(cfg.runtime.torch_threads)
    run = cfg.runtime.resolved()
    return Accelerator(cpu=run["device"] == "cpu", mixed_precision=run["mixed_precision"])


def sampling_kwargs(cfg: PipelineConfig) -> dict:
    """Keyword arguments of :func:`nlhf.sampling.texts.sample_texts` from the ``sampling`` section."""
    return dict(max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature,
                batch_size=cfg.sampling.batch_size)


def policy_generation(cfg: PipelineConfig, tok):
    """The sampling settings saved with every policy (:func:`nlhf.models.generation_config`)."""
    return generation_config(tok, cfg.sampling.max_new_tokens, cfg.sampling.temperature)


def load_sft(cfg: PipelineConfig, device=None):
    model, tok = load_policy(require(cfg.layout.model("sft"), "sft"))
    tok.padding_side = "left"
    return model.to(device or "cpu").eval(), tok


def load_table_policies(cfg: PipelineConfig, names, variant: str = "paper") -> dict:
    """name → policy model for the table: SFT, a method's last iterate, or its averaged policy
    (:func:`nlhf.training.methods.table_policies`)."""
    known = table_policies(cfg.methods)
    models = {}
    for name in names:
        method, which = known[name]
        if method is None:
            path, stage = cfg.layout.model("sft"), "sft"
        else:
            path, stage = cfg.layout.policy(method, variant) / which, cfg.layout.policy_stage(method, variant)
        model, _ = load_policy(require(path, stage))
        models[name] = model.eval()
    return models


def text_judge(model_dir, what: str, stage: str, tok, device=None):
    """The pairwise preference model in ``model_dir`` (written by ``stage``) as ``judge(prompts, ys, y_primes) ->
    P(y ≻ y′ | x)`` on texts; its tokenizer must be the policies' (``what`` names it in the error)."""
    from nlhf.models import PreferenceModel, check_same_tokenizer
    from nlhf.training.preference import predict_proba

    pm = PreferenceModel.from_pretrained(require(model_dir, stage)).to(device or "cpu").eval()
    check_same_tokenizer(pm.tokenizer, tok, what, "policies")
    return lambda xs, ys, yps: predict_proba(pm, list(xs), list(ys), list(yps))


def heldout_judge(cfg: PipelineConfig, tok, device=None):
    """The held-out judge of a task without an exact judge (:meth:`nlhf.pipeline.layout.Layout.eval_judge`, trained
    by the oracle stage) as a judge on texts (:func:`text_judge`)."""
    return text_judge(cfg.layout.eval_judge, "held-out judge", "oracle", tok, device)
