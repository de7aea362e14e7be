"""Hugging Face plumbing shared by the policy and the scorers.

:class:`ModelConfig` (the params.yaml ``model`` sections), the tiny GPT-2 config the from-config models are built
with (:func:`gpt2_config`), seeded initialisation, resolving a ``name_or_path`` to a checked local folder or a Hub
id, the error raised for a damaged model folder, wiring a tokenizer's special ids into a model, and comparing two
tokenizers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nlhf.config import check


@dataclass
class ModelConfig:
    """Network size / source for the policy and the scorers (params.yaml ``model`` sections)."""

    name_or_path: str | None = None
    """None: a tiny GPT-2 built from the fields below; otherwise a local folder or Hub name for ``from_pretrained``
    (then the size fields are ignored)."""
    n_layer: int = 2
    """Transformer blocks (from-config models only)."""
    n_embd: int = 128
    """Width; must be divisible by ``n_head``."""
    n_head: int = 4
    """Attention heads."""
    n_positions: int = 128
    """Context length: prompt + response (policy) or prompt + both responses + 2 separators (preference model)."""
    dropout: float = 0.0
    """Residual, embedding and attention dropout (from-config models only)."""
    head_hidden: int = 256
    """Scorers only: hidden width of the MLP head (PM: g on [h(x,y); h(x,y')], RM: r on h(x,y))."""
    qk_identity_init: float = 0.0
    """Scorers built from config only: W_Q = W_K = this·I in block 0 at init (0 = off; see qk_identity_init)."""

    def __post_init__(self):
        check(self.name_or_path is None or bool(str(self.name_or_path).strip()), "name_or_path",
              "must be null or a non-empty path / Hub name")
        check(self.n_layer >= 1, "n_layer", f"must be >= 1, got {self.n_layer}")
        check(self.n_head >= 1, "n_head", f"must be >= 1, got {self.n_head}")
        check(self.n_embd >= 1 and self.n_embd % self.n_head == 0, "n_embd",
              f"must be a positive multiple of n_head={self.n_head}, got {self.n_embd}")
        check(self.n_positions >= 4, "n_positions", f"must be >= 4, got {self.n_positions}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.head_hidden >= 1, "head_hidden", f"must be >= 1, got {self.head_hidden}")
        check(self.qk_identity_init >= 0, "qk_identity_init", f"must be >= 0, got {self.qk_identity_init}")


def gpt2_config(cfg: ModelConfig, tokenizer, **extra):
    """The ``GPT2Config`` of a model built from ``cfg``: its size and dropout, ``vocab_size = len(tokenizer)`` and
    the tokenizer's special ids (BOS falls back to EOS); ``extra`` adds or overrides config fields.

    ``activation_function="gelu_pytorch_tanh"`` is the same tanh approximation as GPT-2's default ``gelu_new``
    (equal up to float rounding), computed by torch's fused ``F.gelu(approximate="tanh")`` instead of
    ``gelu_new``'s chain of elementwise ops, which makes small models markedly faster on CPU (benchmarks/README.md).
    Checkpoints keep the activation their config names."""
    from transformers import GPT2Config

    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    extra.setdefault("activation_function", "gelu_pytorch_tanh")
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, **extra,
    )


class seeded:
    """Context: if ``seed`` is given, fork the global RNG and seed it (weight init repeatable, caller unaffected)."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self._fork = None

    def __enter__(self):
        if self.seed is not None:
            self._fork = torch.random.fork_rng(devices=[])
            self._fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        if self._fork is not None:
            self._fork.__exit__(*exc)


# ----------------------------------------------------------------------------------------------------------------
# Model folders.


def looks_local(name: str) -> bool:
    """A path rather than a Hub id: exists, or starts like a path, or has more than one '/'."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 \
        or os.sep != "/" and os.sep in name


def require_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a ``save_pretrained`` folder (has config.json); else FileNotFoundError naming
    ``what`` and the folder."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {p}")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what}: no config.json in folder {p} (not a save_pretrained checkpoint)")
    return p


def resolve(name_or_path: str, what: str) -> str:
    """What to pass to ``from_pretrained``: a checked local folder, or a Hub id as it is."""
    if looks_local(name_or_path):
        return str(require_folder(name_or_path, what))
    return name_or_path  # a Hub id; from_pretrained reports its own errors


class ModelLoadError(RuntimeError):
    """A model folder exists but cannot be loaded (a file cut short or damaged); the message names the folder."""


def load_error(what: str, path: Path, e: Exception) -> ModelLoadError:
    """The :class:`ModelLoadError` for an exception raised while loading ``path``: says how to get it back."""
    msg = " ".join(str(e).split())[:300]
    return ModelLoadError(f"{what}: cannot load {path} ({type(e).__name__}: {msg}). The folder is damaged or "
                          f"incomplete: restore it with `dvc checkout {path}` or rerun the stage that writes it "
                          f"(`dvc status` names it)")


def check_hashes(path: Path, what: str) -> None:
    """A saved model folder's files must be the bytes its save recorded (:func:`nlhf.training.checkpoint.
    hash_mismatch`): a file overwritten in place, even with its size and header intact, stops the load naming it."""
    from nlhf.training.checkpoint import hash_mismatch

    bad = hash_mismatch(path)
    if bad is not None:
        raise ModelLoadError(f"{what}: {bad[0]}: {bad[1]}. Restore the folder with `dvc checkout {path}` or rerun "
                             f"the stage that writes it (`dvc status` names it)")


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers.


def wire_tokenizer(model, tokenizer) -> None:
    """Grow the embedding if the tokenizer has extra tokens (e.g. an added <pad>/<sep>), set special ids."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        model.config.eos_token_id = tokenizer.eos_token_id
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            gc.eos_token_id = tokenizer.eos_token_id


def check_same_tokenizer(tok_a, tok_b, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` naming both models if their tokenizers differ (vocabulary or special-token ids).

    A preference/reward model must read token ids exactly as the policy writes them; e.g. check
    ``check_same_tokenizer(pm.tokenizer, policy_tokenizer, "preference model (artifacts/pm)", "policy (...)")``.
    """
    problems = []
    if len(tok_a) != len(tok_b):
        problems.append(f"vocabulary size {len(tok_a)} vs {len(tok_b)}")
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id", "sep_token_id", "unk_token_id"):
        a, b = getattr(tok_a, attr, None), getattr(tok_b, attr, None)
        if a != b:
            problems.append(f"{attr} {a} vs {b}")
    if not problems:
        va, vb = tok_a.get_vocab(), tok_b.get_vocab()
        if va != vb:
            diff = sorted(set(va.items()) ^ set(vb.items()))[:3]
            problems.append(f"vocabularies differ (e.g. {diff})")
    if problems:
        raise ValueError(f"tokenizer mismatch between {name_a} and {name_b}: {'; '.join(problems)}. "
                         f"Both must use the same tokenizer (retrain or rebuild one of them).")
