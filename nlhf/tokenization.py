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
