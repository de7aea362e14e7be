"""The three networks of NLHF (the paper's §7–8): the policy, the pairwise preference model, the BT reward model.

* Policy π_θ(y|x): a causal LM (``AutoModelForCausalLM``). Offline/CPU: a tiny GPT-2 built from config; GPU
  profile: any Hub or local checkpoint loaded with ``from_pretrained``.
* Preference model P_θ(y≻y'|x) (§4, the paper's T5X "rater" that reads x and both summaries): a decoder
  backbone encodes one row ``x <sep> y <sep> y' <sep>`` in which each response block sees x and itself only, giving
  per-response features h(x,y), h(x,y'); an MLP g reads both and

      P_θ(y≻y'|x) = σ(f(x,y,y') − f(x,y',y)),   f(x,y,y') = g([h(x,y) ; h(x,y')]),

  so swapping y and y' swaps the two features and negates the logit: P_θ(y≻y'|x) + P_θ(y'≻y|x) = 1 and
  P_θ(y≻y|x) = 1/2 whatever the weights (exactly in the features; a block encoded at the other offset of the row
  differs only by float rounding, ~1e-7, tested to 1e-6). No Bradley–Terry
  assumption: g sees both responses, so P may be intransitive. Encoding x once and each response once (instead of
  the two full rows x,y,y' and x,y',y) is ~1.8x faster to train and score on CPU at the same quality.
* Reward model r(x,y) = MLP(h(x,y)) on the same encoder; Bradley–Terry P(y≻y'|x) = σ(r(x,y) − r(x,y')).

Both scorers own their tokenizer and round-trip through ``save_pretrained(dir)`` / ``from_pretrained(dir)``
(transformers ``AutoModel`` backbone + tokenizer + head weights + a small ``nlhf_scorer.json``). Texts are
tokenized piece by piece (prompt, each response, with ``add_special_tokens=False``) and joined with
``sep_token_id``, so the string API and the token-id API (used by training, on sampler outputs) build identical
inputs. The scorers pad RIGHT themselves and pass positions explicitly; the backbone must be a decoder-only model
that accepts a 4-D attention mask (GPT-2, GPT-NeoX/Pythia, Llama, ... in transformers 5.x).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from nlhf.config import check

__all__ = [
    "ModelConfig",
    "build_policy",
    "load_policy",
    "save_policy",
    "PreferenceModel",
    "RewardModel",
    "build_preference_model",
    "build_reward_model",
    "check_same_tokenizer",
]

_SCORER_FILE = "nlhf_scorer.json"
_HEAD_FILE = "nlhf_head.safetensors"
_LAYOUT = "one_row_blocks_v2"  # x <sep> y_1 <sep> y_2 <sep>, blocks blind to each other; features mean+sep+sum
_SUM_SCALE = 4.0  # the sum-pooled feature is divided by this (~ a typical block length, so it starts at mean scale)


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


# ----------------------------------------------------------------------------------------------------------------
# Helpers.


def _looks_local(name: str) -> bool:
    """A path rather than a Hub id: exists, or starts like a path, or has more than one '/'."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 \
        or os.sep != "/" and os.sep in name


def _require_folder(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {p}")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what}: no config.json in folder {p} (not a save_pretrained checkpoint)")
    return p


class ModelLoadError(RuntimeError):
    """A model folder exists but cannot be loaded (a file cut short or damaged); the message names the folder."""


def _load_error(what: str, path: Path, e: Exception) -> ModelLoadError:
    msg = " ".join(str(e).split())[:300]
    return ModelLoadError(f"{what}: cannot load {path} ({type(e).__name__}: {msg}). The folder is damaged or "
                          f"incomplete: restore it with `dvc checkout {path}` or rerun the stage that writes it "
                          f"(`dvc status` names it)")


def _resolve(name_or_path: str, what: str) -> str:
    if _looks_local(name_or_path):
        return str(_require_folder(name_or_path, what))
    return name_or_path  # a Hub id; from_pretrained reports its own errors


def _gpt2_config(cfg: ModelConfig, tokenizer, **extra):
    """GPT-2 config of the from-config models. ``activation_function="gelu_pytorch_tanh"``: the same tanh
    approximation as GPT-2's default ``gelu_new`` (equal up to float rounding), computed by torch's fused
    ``F.gelu(approximate="tanh")`` instead of ``gelu_new``'s chain of elementwise ops (on CPU, width 128: ~3 ms vs
    ~13 ms per preference-model call at 32 new tokens; see benchmarks/README.md). Checkpoints keep the activation
    their config names."""
    from transformers import GPT2Config

    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    extra.setdefault("activation_function", "gelu_pytorch_tanh")
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, **extra,
    )


def _wire_tokenizer(model, tokenizer) -> None:
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


class _seeded:
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


def _atomic_save(directory: str | os.PathLike, write) -> Path:
    """Write a folder via ``write(tmp_dir)`` then swap it in, so a killed save never leaves a half checkpoint."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


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


# ----------------------------------------------------------------------------------------------------------------
# Policy.


def build_policy(cfg: ModelConfig, tokenizer, *, seed: int | None = None):
    """The policy π_θ: ``AutoModelForCausalLM`` from config (tiny GPT-2, vocab = len(tokenizer)) or
    ``from_pretrained(cfg.name_or_path)``; eos/pad/bos ids are wired from ``tokenizer``. ``seed`` makes the
    random init repeatable without touching the caller's RNG."""
    from transformers import AutoModelForCausalLM

    with _seeded(seed):
        if cfg.name_or_path is None:
            model = AutoModelForCausalLM.from_config(_gpt2_config(cfg, tokenizer))
        else:
            model = AutoModelForCausalLM.from_pretrained(_resolve(cfg.name_or_path, "policy"))
    _wire_tokenizer(model, tokenizer)
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
    """Atomically ``save_pretrained`` the policy, its tokenizer and (when given) its sampling
    ``GenerationConfig`` (:func:`generation_config`) into ``directory``."""
    def write(tmp):
        if generation is not None:
            model.generation_config = generation
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return _atomic_save(directory, write)


def load_policy(directory: str | os.PathLike):
    """(model, tokenizer) from a folder written by :func:`save_policy`; FileNotFoundError names the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = _require_folder(directory, "policy")
    try:
        return AutoModelForCausalLM.from_pretrained(p), AutoTokenizer.from_pretrained(p)
    except Exception as e:  # OSError, SafetensorError, json / tokenizer parse errors from damaged files
        raise _load_error("policy", p, e) from e


# ----------------------------------------------------------------------------------------------------------------
# Scorers: shared machinery.

Pieces = Sequence[str] | Sequence[Sequence[int]] | Tensor


def qk_identity_init(backbone, scale: float, layer: int = 0) -> None:
    """Set W_Q = W_K = scale·I in block ``layer`` of a GPT-2 built from config (``c_attn`` is a Conv1D,
    out = h @ W with W [d, 3d]: columns [0, d) are W_Q, [d, 2d) W_K).

    Why: the raters' utilities hinge on matching words of a summary to words of the document (covered, invented,
    skipped facts). With q·k = scale²·|ln(h)|² for equal tokens, a response token attends to its copies in x from
    step 0, instead of having to discover W_Qᵀ W_K ≈ I from noisy pairwise labels. Measured on the default task
    (held-out R² of the rater features read from the encoder after 800 steps): invented 0.16 → 0.81, skipped
    0.27 → 0.85. Pure initialisation: the model still reads only tokens and every weight is trained."""
    if getattr(backbone.config, "model_type", None) != "gpt2":
        raise ValueError(f"qk_identity_init needs a GPT-2 backbone, got model_type={backbone.config.model_type!r}")
    d = backbone.config.n_embd
    with torch.no_grad():
        w = backbone.h[layer].attn.c_attn.weight
        w[:, :d] = torch.eye(d) * scale
        w[:, d:2 * d] = torch.eye(d) * scale


class _Scorer(nn.Module):
    """A decoder-only backbone (``AutoModel``) + a small MLP head + the tokenizer, shared by both scorers.

    Layout (one row per example, x encoded once):  ``x <sep> y_1 <sep> y_2 <sep> …``. Each response block (its
    tokens + closing ``<sep>``) attends to x and to itself only, and its positions restart right after x's
    ``<sep>``, so its hidden states are exactly those of a row ``x <sep> y_i <sep>`` of its own (4-D attention
    mask; tested). Features per response: h(x, y_i) = [mean of the block's states ; state at its closing sep ;
    sum of the block's states / 4]. The sum carries counts that a mean averages away (facts covered, words, repeats:
    what the raters' utilities add up); measured on the default task, 3 seeds, held-out SFT pairs, PM excess
    log-loss 0.029 with it against 0.035 without (1,200 steps, lr 3e-4).
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

        with _seeded(seed):
            if cfg.name_or_path is None:
                backbone = AutoModel.from_config(_gpt2_config(cfg, tokenizer))
                if cfg.qk_identity_init > 0:
                    qk_identity_init(backbone, cfg.qk_identity_init)
            else:
                if cfg.qk_identity_init > 0:
                    raise ValueError(f"{cls.kind}: qk_identity_init applies to models built from config; set it to "
                                     f"0 with name_or_path={cfg.name_or_path!r}")
                backbone = AutoModel.from_pretrained(_resolve(cfg.name_or_path, cls.kind))
            model = cls(backbone, tokenizer, head_hidden=cfg.head_hidden, max_length=max_length)
        _wire_tokenizer(backbone, tokenizer)
        return model

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Atomically write backbone (``save_pretrained``), tokenizer, head weights and ``nlhf_scorer.json``."""
        from safetensors.torch import save_file

        def write(tmp):
            self.backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                      str(Path(tmp) / _HEAD_FILE))
            (Path(tmp) / _SCORER_FILE).write_text(json.dumps(
                {"kind": self.kind, "max_length": self.max_length, "head_hidden": self.head_hidden,
                 "layout": _LAYOUT}))
        return _atomic_save(directory, write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **backbone_kwargs):
        """Load what :meth:`save_pretrained` wrote. FileNotFoundError (naming the folder) if it is missing or has
        no config.json / head; ValueError if it holds the other kind of scorer or an older layout."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        p = _require_folder(directory, cls.kind)
        meta_path = p / _SCORER_FILE
        if not meta_path.is_file() or not (p / _HEAD_FILE).is_file():
            raise FileNotFoundError(f"{cls.kind}: {p} lacks {_SCORER_FILE} or {_HEAD_FILE} (not a scorer written "
                                    f"by save_pretrained of this version; retrain it)")
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, OSError) as e:
            raise _load_error(cls.kind, p, e) from e
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
            raise _load_error(cls.kind, p, e) from e
        model = cls(backbone, tokenizer, head_hidden=meta["head_hidden"], max_length=meta["max_length"])
        model.head.load_state_dict(head)
        return model.to(backbone.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- input building ----------------------------------------------------------------------------------------

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
        """Response pieces: text is tokenized and EOS dropped; token ids (sampler output) lose EVERY special id
        (EOS, BOS, pad, sep, ...), exactly what decoding them with ``skip_special_tokens=True`` would drop, so a
        sampled ``<sep>`` can never fake the block structure."""
        if not isinstance(items, Tensor) and len(items) and isinstance(items[0], str):
            eos = self.tokenizer.eos_token_id
            return [[t for t in r if t != eos] for r in self._ids(items)]
        special = set(self.tokenizer.all_special_ids)
        return [[t for t in r if t not in special] for r in self._ids(items, mask)]

    def token_ids(self, texts: Pieces, response: bool = False) -> list[list[int]]:
        """The id lists this scorer builds its rows from (prompt pieces, or ``response=True`` for responses:
        EOS / special ids dropped). Passing them instead of the strings gives identical inputs; training
        tokenizes its pairs once this way instead of at every step."""
        return self._response_ids(texts) if response else self._ids(texts)

    def _fit(self, x: list[int], resps: list[list[int]]) -> tuple[list[int], list[list[int]]]:
        """Fit positions into ``max_length``: a block's last position is len(x) + 1 + len(y_i), so we need
        len(x) + len(y_i) ≤ max_length − 2 =: budget. The prompt keeps its last ⌊budget/2⌋ tokens at most (cut
        from the LEFT), then each response is capped at what is left. Both cuts depend on x alone, so a response
        is encoded identically whatever it is paired with (the reward model's r(x, y) is the same in a pair row
        and in a row of its own) and the rule is symmetric in y and y'. (Default task: prompts have ≤ 17 tokens,
        never cut.)"""
        budget = self.max_length - 2
        if budget < 2:
            raise ValueError(f"{self.kind}: max_length={self.max_length} is too small")
        keep_x = min(len(x), budget // 2)
        return x[len(x) - keep_x:], [r[:budget - keep_x] for r in resps]

    def _collate(self, x: list[list[int]], resps: list[list[list[int]]]) -> dict[str, Tensor]:
        """One right-padded row per example from x and the responses (``resps[k][i]``: response k of example i):
        {"input_ids" [B, L], "attention_mask" [B, L, L] bool (block structure), "position_ids", "block_ids"
        (0: x and its sep, k: response k and its closing sep, −1: pad)}."""
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

    def pair_batch(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> dict[str, Tensor]:
        """One row x <sep> y <sep> y' <sep> per pair, for ``forward`` (PM: the logit [B]; RM: rewards [B, 2])."""
        return self._collate(self._ids(prompts), [self._response_ids(ys), self._response_ids(y_primes)])

    def features(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                 block_ids: Tensor) -> Tensor:
        """h(x, y_k) for every response block k of a :meth:`_collate` batch: [B, K, 3·hidden] (differentiable)."""
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


# ----------------------------------------------------------------------------------------------------------------
# Preference model.


class PreferenceModel(_Scorer):
    """P_θ(y≻y'|x) = σ(f(x,y,y') − f(x,y',y)) with f(x,y,y') = g([h(x,y) ; h(x,y')]) (the paper's §3, §8), so
    P_θ(y≻y'|x) + P_θ(y'≻y|x) = 1 and P_θ(y≻y|x) = 1/2 whatever the weights (exactly in the features h; up to
    float rounding of the block encodings across the two orders). g is an MLP on BOTH
    responses' features, so no Bradley–Terry structure is imposed: P may be intransitive.

    String API: ``logits(prompts, ys, y_primes)`` (the antisymmetric logit), ``prob(...)``.
    Token API (training): ``collate(prompts, ys, y_primes)`` -> one row ``x <sep> y <sep> y' <sep>`` per pair,
    ``forward(**batch)`` -> [B] logits; ``logits_from_ids(...)`` on sampler tensors.
    """

    kind = "preference_model"
    n_responses = 2

    def collate(self, prompts: Pieces, ys: Pieces, y_primes: Pieces, *, prompt_mask: Tensor | None = None,
                y_mask: Tensor | None = None, y_prime_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Tokenize (strings) or unpad (id tensors + masks) into a one-row-per-pair batch. EOS is dropped from
        responses, so ids from the sampler and their decoded text give the same input."""
        return self._collate(self._ids(prompts, prompt_mask),
                             [self._response_ids(ys, y_mask), self._response_ids(y_primes, y_prime_mask)])

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                block_ids: Tensor) -> Tensor:
        """Antisymmetric logits f(x,y,y') − f(x,y',y), [B], from a :meth:`collate` batch."""
        h = self.features(input_ids, attention_mask, position_ids, block_ids)
        a, b = h[:, 0], h[:, 1]
        return (self.head(torch.cat([a, b], -1)) - self.head(torch.cat([b, a], -1))).squeeze(-1)

    def logits(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """logit P_θ(y≻y'|x) for lists of strings (or id lists), [B]."""
        return self(**self.collate(prompts, ys, y_primes))

    def prob(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """P_θ(y≻y'|x), [B]; P(y≻y') + P(y'≻y) = 1 (up to float rounding across the two calls)."""
        return torch.sigmoid(self.logits(prompts, ys, y_primes))

    def logits_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor,
                        y_prime_ids: Tensor, y_prime_mask: Tensor) -> Tensor:
        """Same as :meth:`logits` on padded tensors (e.g. the sampler's prompt / response / response_mask)."""
        return self(**self.collate(prompt_ids, y_ids, y_prime_ids, prompt_mask=prompt_mask, y_mask=y_mask,
                                   y_prime_mask=y_prime_mask))


class RewardModel(_Scorer):
    """Bradley–Terry reward r(x,y) = MLP(h(x,y)) on the same encoder and features as the preference model;
    P(y≻y'|x) = σ(r(x,y) − r(x,y')) (the paper's §2).

    String API: ``rewards(prompts, ys)``, ``logits``/``prob(prompts, ys, y_primes)`` (one row x <sep> y <sep> y'
    <sep>, x encoded once). Token API: ``collate(prompts, ys)``, ``forward(**batch)`` -> r [B] (or [B, K] for K
    responses per row), ``rewards_from_ids(...)``.
    """

    kind = "reward_model"
    n_responses = 1

    def collate(self, prompts: Pieces, ys: Pieces, *, prompt_mask: Tensor | None = None,
                y_mask: Tensor | None = None) -> dict[str, Tensor]:
        return self._collate(self._ids(prompts, prompt_mask), [self._response_ids(ys, y_mask)])

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                block_ids: Tensor) -> Tensor:
        """r(x, y_k) for every response block: [B] for one response per row, else [B, K]."""
        r = self.head(self.features(input_ids, attention_mask, position_ids, block_ids)).squeeze(-1)
        return r[:, 0] if r.shape[1] == 1 else r

    def rewards(self, prompts: Pieces, ys: Pieces) -> Tensor:
        return self(**self.collate(prompts, ys))

    def rewards_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor) -> Tensor:
        return self(**self.collate(prompt_ids, y_ids, prompt_mask=prompt_mask, y_mask=y_mask))

    def logits(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """r(x,y) − r(x,y'), [B], for lists of strings or id lists (one row per pair)."""
        r = self(**self.pair_batch(prompts, ys, y_primes))
        return r[:, 0] - r[:, 1]

    def prob(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """Bradley–Terry P(y≻y'|x) = σ(r(x,y) − r(x,y')), [B]."""
        return torch.sigmoid(self.logits(prompts, ys, y_primes))


def build_preference_model(cfg: ModelConfig, tokenizer, *, seed: int | None = None,
                           max_length: int | None = None) -> PreferenceModel:
    """A fresh :class:`PreferenceModel` (tiny GPT-2 from config, or a backbone from ``cfg.name_or_path``)."""
    return PreferenceModel.build(cfg, tokenizer, seed=seed, max_length=max_length)


def build_reward_model(cfg: ModelConfig, tokenizer, *, seed: int | None = None,
                       max_length: int | None = None) -> RewardModel:
    """A fresh :class:`RewardModel` (tiny GPT-2 from config, or a backbone from ``cfg.name_or_path``)."""
    return RewardModel.build(cfg, tokenizer, seed=seed, max_length=max_length)
