"""Word-level tokenizer for the synthetic task: one token per word, saved as a standard HF tokenizer.

``build_word_tokenizer(words, out_dir)`` -> ``PreTrainedTokenizerFast`` (``tokenizers.models.WordLevel`` with a
whitespace-split pre-tokenizer). Special tokens, in id order: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3,
``<sep>`` 4; then ``words`` in the given order. Padding side is "left" (generation pads prompts on the left).
Later stages reload it with ``AutoTokenizer.from_pretrained(out_dir)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>",
                  "sep_token": "<sep>"}


def build_word_tokenizer(words: Sequence[str], out_dir: str | Path | None = None, model_max_length: int = 64):
    """Word-level fast tokenizer over ``words`` (+ specials); saved to ``out_dir`` with ``save_pretrained``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    vocab: dict[str, int] = {}
    for w in [*specials, *words]:
        if not w or any(c.isspace() for c in w):
            raise ValueError(f"build_word_tokenizer: word {w!r} is empty or contains whitespace")
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins word tokens with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", model_max_length=model_max_length,
                                   **SPECIAL_TOKENS)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(str(out_dir))
    return fast


BPE_SPECIALS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "<pad>", "sep_token": "<sep>"}


def build_bpe_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: str | Path | None = None,
                        model_max_length: int = 1024, pipeline_tokens: bool = True):
    """A byte-level BPE (GPT-2's scheme) of ``vocab_size`` tokens trained on ``texts``, for open-text tasks whose
    models are built from config: GPT-2's ``<|endoftext|>`` as BOS, EOS and UNK, plus ``<pad>`` and ``<sep>`` (the
    scorers join x <sep> y <sep> y'). Padding side "left"; saved to ``out_dir`` with ``save_pretrained``.

    ``pipeline_tokens=False`` leaves out pad and sep and pads on the right, as a downloaded pretrained tokenizer
    usually is (``python -m nlhf prepare-model`` adds them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("build_bpe_tokenizer: no texts to train on")
    named = dict(BPE_SPECIALS)
    if not pipeline_tokens:
        del named["pad_token"], named["sep_token"]
    specials = list(dict.fromkeys(named.values()))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, padding_side="left" if pipeline_tokens else "right",
                                   model_max_length=model_max_length, **named)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(str(out_dir))
    return fast
