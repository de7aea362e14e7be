"""The scorers' shared encoder (:class:`Scorer`): one row per example, each response a block that sees x and itself.

Layout (x encoded once):  ``x <sep> y_1 <sep> y_2 <sep> …``. Each response block (its tokens + closing ``<sep>``)
attends to x and to itself only, and its positions restart right after x's ``<sep>``, so its hidden states are
exactly those of a row ``x <sep> y_i <sep>`` of its own (4-D attention mask; tested). Features per response:
h(x, y_i) = [mean of the block's states ; state at its closing sep ; sum of the block's states / 4]. The sum
carries counts that a mean averages away (facts covered, words, repeats: what the raters' utilities add up).

Texts are tokenized piece by piece (prompt, each response, with ``add_special_tokens=False``) and joined with
``sep_token_id``, so strings, the id lists of :meth:`Scorer.token_ids` (used by training) and padded id tensors
from the sampler build identical inputs. The scorer pads RIGHT itself and passes positions explicitly; the backbone
must be a decoder-only model that accepts a 4-D attention mask (GPT-2, GPT-NeoX/Pythia, Llama, ... in
transformers 5.x). A scorer round-trips through ``save_pretrained(dir)`` / ``from_pretrained(dir)``: the
``AutoModel`` backbone, the tokenizer, the head weights and a small ``nlhf_scorer.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from nlhf.models.hf import (ModelConfig, load_error, require_folder, resolve, seeded, wire_tokenizer,
                            check_hashes, gpt2_config)
from nlhf.training.checkpoint import atomic_save_dir, record_hashes

Pieces = Sequence[str] | Sequence[Sequence[int]] | Tensor
"""Prompts or responses: strings, token-id lists, or a padded id tensor (read with its mask)."""

_SCORER_FILE = "nlhf_scorer.json"
_HEAD_FILE = "nlhf_head.safetensors"
_LAYOUT = "one_row_blocks_v2"  # x <sep> y_1 <sep> y_2 <sep>, blocks blind to each other; features mean+sep+sum
_SUM_SCALE = 4.0  # the sum-pooled feature is divided by this (~ a typical block length, so it starts at mean scale)


def qk_identity_init(backbone, scale: float, layer: int = 0) -> None:
    """Set W_Q = W_K = scale·I in block ``layer`` of a GPT-2 built from config (``c_attn`` is a Conv1D,
    out = h @ W with W [d, 3d]: columns [0, d) are W_Q, [d, 2d) W_K).

    Why: the raters' utilities hinge on matching words of a summary to words of the document (covered, invented,
    skipped facts). With q·k = scale²·|ln(h)|² for equal tokens, a response token attends to its copies in x from
    step 0, instead of having to discover W_Qᵀ W_K ≈ I from noisy pairwise labels. Pure initialisation: the model
    still reads only tokens and every weight is trained."""
    if getattr(backbone.config, "model_type", None) != "gpt2":
        raise ValueError(f"qk_identity_init needs a GPT-2 backbone, got model_type={backbone.config.model_type!r}")
    d = backbone.config.n_embd
    with torch.no_grad():
        w = backbone.h[layer].attn.c_attn.weight
        w[:, :d] = torch.eye(d) * scale
        w[:, d:2 * d] = torch.eye(d) * scale


class Scorer(nn.Module):
    """A decoder-only backbone (``AutoModel``) + a small MLP head + the tokenizer, shared by both scorers.

    Subclasses set ``kind`` (saved, checked on load), ``n_responses`` (how many response features the head reads)
    and ``forward``. Inputs: :meth:`token_ids` (tokenize once), :meth:`collate` (one row per example, any number of
    responses), :meth:`pair_batch` (the pair row both scorers are trained on); :meth:`features` gives h(x, y_k).
    """

    kind = "scorer"
    n_responses = 1

    def __init__(self, backbone, tokenizer, head_hidden: int = 256, max_length: int | None = None):
        super().__init__()
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{self.kind}: the tokenizer has no pad token")
        if tokenizer.sep_token_id is None:
            raise ValueError(f"{self.kind}: the tokenizer has no sep token (needed to join x <sep> y <sep> y')")
        if tokenizer.sep_token_id == tokenizer.pad_token_id:
            raise ValueError(f"{self.kind}: sep and pad tokens must differ")
        impl = getattr(backbone.config, "_attn_implementation", None)
        if impl not in (None, "sdpa"):
            # eager attention ADDS a boolean mask to the scores (no masking) and flash attention ignores 4-D masks:
            # the block structure would silently leak y into y'
            raise ValueError(f"{self.kind}: the backbone uses attn_implementation={impl!r}; the one-row block "
                             f"layout needs 'sdpa' (load it with attn_implementation='sdpa')")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.backbone.config.pad_token_id = tokenizer.pad_token_id
        self.head_hidden = int(head_hidden)
        d = 3 * backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(self.n_responses * d, self.head_hidden), nn.GELU(),
                                  nn.Linear(self.head_hidden, 1))
        if max_length is None:
            max_length = getattr(backbone.config, "max_position_embeddings", None) or \
                getattr(backbone.config, "n_positions", None) or 512
        self.max_length = int(max_length)

    # -- construction / persistence --------------------------------------------------------------------------

    @classmethod
    def build(cls, cfg: ModelConfig, tokenizer, *, seed: int | None = None, max_length: int | None = None):
        """From config (tiny GPT-2, with the Q/K identity init of :func:`qk_identity_init` when
        ``cfg.qk_identity_init`` > 0) or from a checkpoint (``name_or_path``: e.g. the SFT policy folder gives a
        backbone initialised from the SFT weights); the head is always fresh."""
        from transformers import AutoModel

        with seeded(seed):
            if cfg.name_or_path is None:
                backbone = AutoModel.from_config(gpt2_config(cfg, tokenizer))
                if cfg.qk_identity_init > 0:
                    qk_identity_init(backbone, cfg.qk_identity_init)
            else:
                if cfg.qk_identity_init > 0:
                    raise ValueError(f"{cls.kind}: qk_identity_init applies to models built from config; set it to "
                                     f"0 with name_or_path={cfg.name_or_path!r}")
                backbone = AutoModel.from_pretrained(resolve(cfg.name_or_path, cls.kind))
            model = cls(backbone, tokenizer, head_hidden=cfg.head_hidden, max_length=max_length)
        wire_tokenizer(backbone, tokenizer)
        return model

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Atomically (:func:`~nlhf.training.checkpoint.atomic_save_dir`) write backbone (``save_pretrained``),
        tokenizer, head weights, ``nlhf_scorer.json`` and the SHA-256 of each (checked by :meth:`from_pretrained`)."""
        from safetensors.torch import save_file

        def write(tmp):
            self.backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                      str(Path(tmp) / _HEAD_FILE))
            (Path(tmp) / _SCORER_FILE).write_text(json.dumps(
                {"kind": self.kind, "max_length": self.max_length, "head_hidden": self.head_hidden,
                 "layout": _LAYOUT}))
            record_hashes(tmp)
        return atomic_save_dir(directory, write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **backbone_kwargs):
        """Load what :meth:`save_pretrained` wrote. FileNotFoundError (naming the folder) if it is missing or has
        no config.json / head; ValueError if it holds the other kind of scorer or another layout."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        p = require_folder(directory, cls.kind)
        meta_path = p / _SCORER_FILE
        if not meta_path.is_file() or not (p / _HEAD_FILE).is_file():
            raise FileNotFoundError(f"{cls.kind}: {p} lacks {_SCORER_FILE} or {_HEAD_FILE} (not a scorer written "
                                    f"by save_pretrained of this version; retrain it)")
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, OSError) as e:
            raise load_error(cls.kind, p, e) from e
        if meta.get("kind") != cls.kind:
            raise ValueError(f"{p} holds a {meta.get('kind')}, not a {cls.kind}")
        if meta.get("layout") != _LAYOUT:
            raise ValueError(f"{cls.kind}: {p} was written with layout {meta.get('layout')!r}, this code reads "
                             f"{_LAYOUT!r}; retrain it")
        try:
            backbone = AutoModel.from_pretrained(p, **backbone_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(p)
            head = load_file(str(p / _HEAD_FILE))
        except Exception as e:  # OSError, SafetensorError, json / tokenizer parse errors from damaged files
            raise load_error(cls.kind, p, e) from e
        check_hashes(p, cls.kind)  # what loads may still not be what was saved
        model = cls(backbone, tokenizer, head_hidden=meta["head_hidden"], max_length=meta["max_length"])
        model.head.load_state_dict(head)
        return model.to(backbone.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- input building ----------------------------------------------------------------------------------------

    def token_ids(self, texts: Pieces, response: bool = False) -> list[list[int]]:
        """The id lists this scorer builds its rows from (prompt pieces, or ``response=True`` for responses:
        EOS / special ids dropped). Passing them instead of the strings gives identical inputs; training
        tokenizes its pairs once this way instead of at every step."""
        return self._response_ids(texts) if response else self._ids(texts)

    def collate(self, prompts: Pieces, *responses: Pieces, prompt_mask: Tensor | None = None,
                response_masks: Sequence[Tensor | None] | None = None) -> dict[str, Tensor]:
        """One right-padded row ``x <sep> y_1 <sep> … y_K <sep>`` per example, a block per response (K ≥ 1), for
        :meth:`features` (any K) or ``forward`` (a preference model reads K = 2, a reward model any K).

        Pieces are strings, id lists (:meth:`token_ids`) or padded id tensors read with their masks
        (``prompt_mask``; ``response_masks``, one per response). From id tensors, responses lose every special id
        (EOS, BOS, pad, sep, ...), so sampler output and its decoded text give the same row and a sampled
        ``<sep>`` can never fake the block structure. Returns {"input_ids" [B, L], "attention_mask" [B, L, L] bool
        (block structure), "position_ids", "block_ids" (0: x and its sep, k: response k and its closing sep,
        −1: pad)}."""
        if not responses:
            raise ValueError(f"{self.kind}: collate needs at least one response")
        masks = [None] * len(responses) if response_masks is None else list(response_masks)
        if len(masks) != len(responses):
            raise ValueError(f"{self.kind}: {len(responses)} responses but {len(masks)} response masks")
        return self._collate(self._ids(prompts, prompt_mask),
                             [self._response_ids(r, m) for r, m in zip(responses, masks)])

    def pair_batch(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> dict[str, Tensor]:
        """One row x <sep> y <sep> y' <sep> per pair, for ``forward`` (PM: the logit [B]; RM: rewards [B, 2])."""
        return self.collate(prompts, ys, y_primes)

    def _ids(self, items: Pieces, mask: Tensor | None = None) -> list[list[int]]:
        """Token-id lists from strings, id lists, or a padded id tensor (+ mask); pad ids are dropped."""
        if isinstance(items, Tensor):
            if mask is None:
                mask = torch.ones_like(items)
            rows = [r[m.bool()].tolist() for r, m in zip(items.cpu(), mask.cpu())]
        elif len(items) and isinstance(items[0], str):
            enc = self.tokenizer(list(items), add_special_tokens=False)["input_ids"]
            rows = [list(r) for r in enc]
        else:
            rows = [list(map(int, r)) for r in items]
        drop = {self.tokenizer.pad_token_id}
        return [[t for t in r if t not in drop] for r in rows]

    def _response_ids(self, items: Pieces, mask: Tensor | None = None) -> list[list[int]]:
        """Response pieces: text is tokenized and EOS dropped; token ids (sampler output) lose EVERY special id,
        exactly what decoding them with ``skip_special_tokens=True`` would drop."""
        if not isinstance(items, Tensor) and len(items) and isinstance(items[0], str):
            eos = self.tokenizer.eos_token_id
            return [[t for t in r if t != eos] for r in self._ids(items)]
        special = set(self.tokenizer.all_special_ids)
        return [[t for t in r if t not in special] for r in self._ids(items, mask)]

    def _fit(self, x: list[int], resps: list[list[int]]) -> tuple[list[int], list[list[int]]]:
        """Fit positions into ``max_length``: a block's last position is len(x) + 1 + len(y_i), so we need
        len(x) + len(y_i) ≤ max_length − 2 =: budget. The prompt keeps its last ⌊budget/2⌋ tokens at most (cut
        from the LEFT), then each response is capped at what is left. Both cuts depend on x alone, so a response
        is encoded identically whatever it is paired with (the reward model's r(x, y) is the same in a pair row
        and in a row of its own) and the rule is symmetric in y and y'."""
        budget = self.max_length - 2
        if budget < 2:
            raise ValueError(f"{self.kind}: max_length={self.max_length} is too small")
        keep_x = min(len(x), budget // 2)
        return x[len(x) - keep_x:], [r[:budget - keep_x] for r in resps]

    def _collate(self, x: list[list[int]], resps: list[list[list[int]]]) -> dict[str, Tensor]:
        """:meth:`collate` on id lists (``resps[k][i]``: response k of example i), fitted by :meth:`_fit`."""
        sizes = {len(x), *map(len, resps)}
        if len(sizes) != 1:
            raise ValueError(f"{self.kind}: batch sizes differ: {[len(x)] + [len(r) for r in resps]}")
        sep, pad = self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        rows, pos, blk = [], [], []
        for i, xi in enumerate(x):
            xi, ri = self._fit(xi, [r[i] for r in resps])
            if not xi and not any(ri):
                raise ValueError(f"{self.kind}: empty input (row {i})")
            nx = len(xi) + 1
            row, p, b = xi + [sep], list(range(nx)), [0] * nx
            for k, r in enumerate(ri, start=1):
                row += r + [sep]
                p += list(range(nx, nx + len(r) + 1))
                b += [k] * (len(r) + 1)
            rows.append(row); pos.append(p); blk.append(b)
        n = max(map(len, rows))
        ids = torch.full((len(rows), n), pad, dtype=torch.long)
        positions = torch.zeros((len(rows), n), dtype=torch.long)
        blocks = torch.full((len(rows), n), -1, dtype=torch.long)
        for i, (r, p, b) in enumerate(zip(rows, pos, blk)):
            ids[i, :len(r)] = torch.tensor(r)
            positions[i, :len(r)] = torch.tensor(p)
            blocks[i, :len(r)] = torch.tensor(b)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        key, query = blocks[:, None, :], blocks[:, :, None]
        allow = causal & (key >= 0) & ((key == 0) | (key == query))
        allow |= torch.eye(n, dtype=torch.bool)  # pad rows see themselves only (no all-masked softmax)
        return {"input_ids": ids, "attention_mask": allow, "position_ids": positions, "block_ids": blocks}

    # -- features ------------------------------------------------------------------------------------------------

    def features(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                 block_ids: Tensor) -> Tensor:
        """h(x, y_k) for every response block k of a :meth:`collate` batch: [B, K, 3·hidden] (differentiable)."""
        dev = self.device
        block_ids = block_ids.to(dev)
        hs = self.backbone(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev)[:, None],
                           position_ids=position_ids.to(dev), use_cache=False).last_hidden_state.float()
        hs = hs.to(dev)  # a sharded backbone may return its last state elsewhere; the head lives with the first shard
        B, L = block_ids.shape
        rows, where = torch.arange(B, device=dev), torch.arange(L, device=dev)
        out = []
        for k in range(1, int(block_ids.max()) + 1):
            m = (block_ids == k).float()
            total = (hs * m[..., None]).sum(1)
            last = (m * where).argmax(1)  # the block's closing sep
            out.append(torch.cat([total / m.sum(1, keepdim=True), hs[rows, last], total / _SUM_SCALE], -1))
        return torch.stack(out, 1)
