"""The policy π_θ(y|x): a causal LM (``AutoModelForCausalLM``), built, saved with its tokenizer and sampling
settings, and loaded back.

Offline/CPU: a tiny GPT-2 built from :class:`~nlhf.models.hf.ModelConfig`; GPU profile: any Hub or local checkpoint
loaded with ``from_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path

from nlhf.models.hf import (ModelConfig, load_error, require_folder, resolve, seeded, wire_tokenizer,
                            check_hashes, gpt2_config)
from nlhf.training.checkpoint import atomic_save_dir, record_hashes


def build_policy(cfg: ModelConfig, tokenizer, *, seed: int | None = None):
    """The policy π_θ: ``AutoModelForCausalLM`` from config (tiny GPT-2, vocab = len(tokenizer)) or
    ``from_pretrained(cfg.name_or_path)``; eos/pad/bos ids are wired from ``tokenizer``. ``seed`` makes the
    random init repeatable without touching the caller's RNG."""
    from transformers import AutoModelForCausalLM

    with seeded(seed):
        if cfg.name_or_path is None:
            model = AutoModelForCausalLM.from_config(gpt2_config(cfg, tokenizer))
        else:
            model = AutoModelForCausalLM.from_pretrained(resolve(cfg.name_or_path, "policy"))
    wire_tokenizer(model, tokenizer)
    return model


def generation_config(tokenizer, max_new_tokens: int, temperature: float = 1.0):
    """How the pipeline samples a policy, as a ``GenerationConfig`` saved beside it: pure ancestral sampling (no
    top-k/top-p truncation) at ``temperature``, at most ``max_new_tokens`` tokens, stopping at EOS. With it a
    reloaded policy's ``generate(**inputs)`` draws from the distribution it was evaluated with."""
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                            max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)


def save_policy(model, tokenizer, directory: str | os.PathLike, generation=None) -> Path:
    """Atomically (:func:`~nlhf.training.checkpoint.atomic_save_dir`) ``save_pretrained`` the policy, its tokenizer
    and (when given) its sampling ``GenerationConfig`` (:func:`generation_config`) into ``directory``, with the
    SHA-256 of every file (:func:`~nlhf.training.checkpoint.record_hashes`), checked by :func:`load_policy`."""
    def write(tmp):
        if generation is not None:
            model.generation_config = generation
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record_hashes(tmp)
    return atomic_save_dir(directory, write)


def load_policy(directory: str | os.PathLike):
    """(model, tokenizer) from a folder written by :func:`save_policy`; FileNotFoundError names the folder, and
    :class:`~nlhf.models.hf.ModelLoadError` a file whose bytes are not the ones saved (:func:`~nlhf.models.hf.
    check_hashes`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = require_folder(directory, "policy")
    try:
        loaded = AutoModelForCausalLM.from_pretrained(p), AutoTokenizer.from_pretrained(p)
    except Exception as e:  # OSError, SafetensorError, json / tokenizer parse errors from damaged files
        raise load_error("policy", p, e) from e
    check_hashes(p, "policy")  # what loads may still not be what was saved
    return loaded
