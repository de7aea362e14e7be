"""A causal LM built from config with its own tokenizer, saved as a local model folder: a stand-in for a pretrained
checkpoint where none can be downloaded, so that the ``name_or_path`` path of every stage (tokenizer from the
folder, weights loaded with ``from_pretrained``) runs offline on small models.

``python -m nlhf local-model OUT --texts FILE.jsonl`` builds one from the text columns of a JSON-lines file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from nlhf.models.encoder import qk_identity_init
from nlhf.models.hf import ModelConfig
from nlhf.models.policy import build_policy, save_policy
from nlhf.tokenization import build_bpe_tokenizer


def read_texts(files: Sequence[str | os.PathLike], columns: Sequence[str]) -> list[str]:
    """The non-empty strings of ``columns`` in every row of JSON-lines ``files``; a file that is missing or not
    JSON lines stops with its name and line."""
    texts = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (--texts)")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {i} is not JSON ({e.msg})") from None
            texts += [row[c] for c in columns if isinstance(row, dict) and isinstance(row.get(c), str) and row[c]]
    if not texts:
        raise ValueError(f"{', '.join(map(str, files))}: no text in columns {list(columns)}")
    return texts


def build_local_lm(texts: Sequence[str], out_dir: str | os.PathLike, cfg: ModelConfig, vocab_size: int,
                   seed: int = 0, qk_identity: float = 0.0) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``texts`` (:func:`nlhf.tokenization.build_bpe_tokenizer`),
    build a GPT-2 of ``cfg``'s size on it (random weights, seeded) and save both to ``out_dir``: a folder that
    ``policy_model.name_or_path`` (and the scorers' ``name_or_path``) can name.

    ``qk_identity`` > 0 writes block 0 with W_Q = W_K = qk_identity·I (:func:`nlhf.models.encoder.qk_identity_init`),
    every other weight and the tokenizer as without it (same texts and seed): a scorer body that carries, as a
    pretrained body would carry what it learned, the init the synthetic path gives the scorers it builds from config
    (``qk_identity_init``, which does not apply to a loaded body)."""
    if cfg.name_or_path is not None:
        raise ValueError("build_local_lm: cfg.name_or_path must be None (the model is built from its size fields)")
    if qk_identity < 0:
        raise ValueError(f"build_local_lm: qk_identity must be >= 0, got {qk_identity}")
    tok = build_bpe_tokenizer(texts, vocab_size, model_max_length=cfg.n_positions)
    model = build_policy(cfg, tok, seed=seed)
    if qk_identity > 0:
        qk_identity_init(model.transformer, qk_identity)
    return save_policy(model, tok, out_dir)


# The size of a stand-in in the field names most causal-LM configs share (Llama, Qwen2, GPT-NeoX, ...)
STANDIN_SIZE = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                    intermediate_size=64)


def build_pretrained_standin(tokenizer, out_dir: str | os.PathLike, model_type: str, seed: int = 0) -> Path:
    """A tiny causal LM of ``model_type`` (``"gpt_neox"`` for the pythia family, ``"qwen2"`` for Qwen2.5, any type
    whose config takes :data:`STANDIN_SIZE`'s fields) on ``tokenizer`` (positions: its ``model_max_length``), random
    weights (seeded), saved with the tokenizer to ``out_dir`` as a download leaves it. A stand-in for a pretrained
    checkpoint in a CPU rehearsal of the real setting: the architectures and tokenizers that run, not their
    quality. A tokenizer as downloaded has EOS but neither pad nor sep
    (:func:`nlhf.tokenization.build_bpe_tokenizer` with ``pipeline_tokens=False``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from nlhf.models.hf import seeded

    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer),
                                  max_position_embeddings=tokenizer.model_max_length,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  **STANDIN_SIZE)
    with seeded(seed):
        model = AutoModelForCausalLM.from_config(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# the files one of which a saved tokenizer writes (fast, BPE, SentencePiece or WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                   "vocab.txt")


def check_model_folder(name_or_path: str, key: str, causal_lm: bool = False) -> dict:
    """A local model folder a stage loads (a scorer's body, or with ``causal_lm`` a model that must generate: the
    policy, the LLM judge), checked before anything is trained or judged: it exists, holds a transformers config
    (and, with ``causal_lm``, one AutoModelForCausalLM can load) and a tokenizer. Each failure is a ValueError
    (FileNotFoundError for a missing folder) naming ``key``. Returns what identifies the model, for the run's
    metrics: the folder, its type, the SHA-256 of its files (:func:`nlhf.training.checkpoint.content_hash`) and,
    for a folder downloaded from the Hub, the commit it was downloaded at."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, AutoTokenizer

    from nlhf.models.hf import require_folder
    from nlhf.training.checkpoint import content_hash

    folder = require_folder(name_or_path, key)
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise ValueError(f"{key}: cannot read the model config in {folder}: {' '.join(str(e).split())[:200]}") from e
    if causal_lm and type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ValueError(f"{key}: {folder} holds a {config.model_type!r} model, which AutoModelForCausalLM cannot "
                         f"load: it must be a causal language model that can generate")
    # from_pretrained on a folder without tokenizer files builds an empty tokenizer without a word of warning
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(f"{key}: no usable tokenizer in {folder}: none of {', '.join(TOKENIZER_FILES)} (save the "
                         f"model's tokenizer into the folder with tokenizer.save_pretrained)")
    try:
        AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # a damaged tokenizer.json raises the tokenizers library's plain Exception
        raise ValueError(f"{key}: no usable tokenizer in {folder}: {' '.join(str(e).split())[:200]}") from e
    # the download bookkeeping (.cache/, with timestamps) is not the model: two downloads of one commit hash alike
    info = {"name_or_path": str(name_or_path), "model_type": config.model_type,
            "content_sha256": content_hash(*sorted(p for p in folder.iterdir() if p.name != ".cache"))}
    # a folder that `hf download --local-dir` (or scripts/fetch_real.py) filled records, per file it fetched, the Hub
    # commit it came from (the first line of .cache/huggingface/download/<file>.metadata)
    commits = sorted({m.read_text().split("\n", 1)[0].strip()
                      for m in (folder / ".cache" / "huggingface" / "download").rglob("*.metadata")})
    if commits:
        info["hub_commit"] = commits[0] if len(commits) == 1 else commits  # files of several commits: all of them
    return info


def check_policy_folder(name_or_path: str, key: str) -> dict:
    """A local folder a pipeline takes its policy (and its tokenizer) from (:func:`check_model_folder` with
    ``causal_lm``), whose tokenizer also has the EOS, pad and sep tokens the stages need (EOS ends a summary, pad
    batches them, sep joins x <sep> y <sep> y′ for the scorers). Each failure names ``key``."""
    from transformers import AutoTokenizer

    info = check_model_folder(name_or_path, key, causal_lm=True)
    folder = Path(name_or_path).expanduser()
    tok = AutoTokenizer.from_pretrained(folder)
    missing = [t for t in ("eos_token", "pad_token", "sep_token") if getattr(tok, t) is None]
    if missing:
        raise ValueError(f"{key}: the tokenizer in {folder} has no {', '.join(missing)}; add them (e.g. "
                         f"tokenizer.add_special_tokens({{'pad_token': '<pad>', 'sep_token': '<sep>'}}), then "
                         f"save_pretrained into the folder; the models' embeddings are resized to it)")
    if len({tok.pad_token_id, tok.sep_token_id}) < 2:
        raise ValueError(f"{key}: the tokenizer in {folder} uses one token as pad and sep; they must differ")
    return info


def add_pipeline_tokens(folder: str | os.PathLike, pad: str = "<pad>", sep: str = "<sep>") -> list[str]:
    """Give a downloaded causal LM's folder what :func:`check_policy_folder` asks for: a pad and a sep token (most
    pretrained tokenizers have neither), added as new special tokens, the input and output embeddings resized to the
    tokenizer (the new rows drawn by ``transformers``' ``resize_token_embeddings``: the mean and covariance of the
    old ones), and left padding (the samplers pad prompts on the left). Saved back into ``folder``; returns the
    tokens added (none when the folder had them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.eos_token is None:
        raise ValueError(f"{folder}: the tokenizer has no EOS token, which ends a summary; this model cannot be used")
    added = {k: v for k, v in (("pad_token", pad), ("sep_token", sep)) if getattr(tok, k) is None}
    if not added and tok.padding_side == "left":
        return []
    tok.add_special_tokens(added)
    tok.padding_side = "left"
    if added:
        model = AutoModelForCausalLM.from_pretrained(folder)
        model.resize_token_embeddings(len(tok))
        model.config.pad_token_id = tok.pad_token_id
        model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return list(added.values())
