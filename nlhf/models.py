"""The three networks of NLHF (PAPER.md §3–4): the policy, the pairwise preference model, the BT reward model.

* Policy π_θ(y|x): a causal LM (``AutoModelForCausalLM``). Offline/CPU: a tiny GPT-2 built from config; GPU
  profile: any Hub or local checkpoint loaded with ``from_pretrained``.
* Preference model P_θ(y≻y'|x) (§4, the paper's T5X "rater" that reads x and both summaries): a sequence-classifier
  backbone f scores the text ``x <sep> y <sep> y'`` and

      P_θ(y≻y'|x) = σ(f(x,y,y') − f(x,y',y)),

  so P_θ(y≻y'|x) + P_θ(y'≻y|x) = 1 and P_θ(y≻y|x) = 1/2 EXACTLY, whatever the weights (both orders are scored in
  one batched forward). No Bradley–Terry assumption: f sees both responses, so P may be intransitive.
* Reward model r(x,y): the same backbone on ``x <sep> y``; Bradley–Terry P(y≻y'|x) = σ(r(x,y) − r(x,y')).

Both scorers own their tokenizer and round-trip through ``save_pretrained(dir)`` / ``from_pretrained(dir)``
(transformers backbone + tokenizer + a small ``nlhf_scorer.json``). Texts are tokenized piece by piece (prompt,
each response, with ``add_special_tokens=False``) and joined with ``sep_token_id``, so the string API and the
token-id API (used by training, on sampler outputs) build identical inputs.

Padding: the scorers pad RIGHT themselves (whatever the tokenizer's ``padding_side``) and never put a pad id
inside the content (pad ids are stripped from every piece), so the sequence-classification head, which pools the
last non-pad token (transformers 5.x: "the rightmost token that is not pad", correct for either side; older 4.x:
"first pad − 1", correct only for right padding), always reads the last real token. Positions are also passed
explicitly (``cumsum(mask) − 1``). The backbone must be a decoder-only model whose classification head pools the
last token (GPT-2, GPT-NeoX/Pythia, Llama, ...), not a CLS-pooling encoder.
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

    def __post_init__(self):
        check(self.name_or_path is None or bool(str(self.name_or_path).strip()), "name_or_path",
              "must be null or a non-empty path / Hub name")
        check(self.n_layer >= 1, "n_layer", f"must be >= 1, got {self.n_layer}")
        check(self.n_head >= 1, "n_head", f"must be >= 1, got {self.n_head}")
        check(self.n_embd >= 1 and self.n_embd % self.n_head == 0, "n_embd",
              f"must be a positive multiple of n_head={self.n_head}, got {self.n_embd}")
        check(self.n_positions >= 4, "n_positions", f"must be >= 4, got {self.n_positions}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


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


def save_policy(model, tokenizer, directory: str | os.PathLike) -> Path:
    """Atomically ``save_pretrained`` the policy and its tokenizer into ``directory``."""
    def write(tmp):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return _atomic_save(directory, write)


def load_policy(directory: str | os.PathLike):
    """(model, tokenizer) from a folder written by :func:`save_policy`; FileNotFoundError names the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = _require_folder(directory, "policy")
    return AutoModelForCausalLM.from_pretrained(p), AutoTokenizer.from_pretrained(p)


# ----------------------------------------------------------------------------------------------------------------
# Scorers: shared machinery.

Pieces = Sequence[str] | Sequence[Sequence[int]] | Tensor


class _Scorer(nn.Module):
    """A ``AutoModelForSequenceClassification`` (num_labels=1) backbone + its tokenizer."""

    kind = "scorer"
    n_responses = 1

    def __init__(self, backbone, tokenizer, max_length: int | None = None):
        super().__init__()
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{self.kind}: the tokenizer has no pad token")
        if self.n_responses > 1 and tokenizer.sep_token_id is None:
            raise ValueError(f"{self.kind}: the tokenizer has no sep token (needed to join x <sep> y <sep> y')")
        if tokenizer.sep_token_id is not None and tokenizer.sep_token_id == tokenizer.pad_token_id:
            raise ValueError(f"{self.kind}: sep and pad tokens must differ")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.backbone.config.pad_token_id = tokenizer.pad_token_id
        if max_length is None:
            max_length = getattr(backbone.config, "max_position_embeddings", None) or \
                getattr(backbone.config, "n_positions", None) or 512
        self.max_length = int(max_length)

    # -- construction / persistence --------------------------------------------------------------------------

    @classmethod
    def build(cls, cfg: ModelConfig, tokenizer, *, seed: int | None = None, max_length: int | None = None):
        """From config (tiny GPT-2 + linear head) or from a checkpoint: e.g. ``name_or_path`` = the SFT policy
        folder gives a backbone initialised from the SFT weights with a fresh scalar head."""
        from transformers import AutoModelForSequenceClassification

        with _seeded(seed):
            if cfg.name_or_path is None:
                backbone = AutoModelForSequenceClassification.from_config(_gpt2_config(cfg, tokenizer, num_labels=1))
            else:
                backbone = AutoModelForSequenceClassification.from_pretrained(
                    _resolve(cfg.name_or_path, cls.kind), num_labels=1)
        _wire_tokenizer(backbone, tokenizer)
        return cls(backbone, tokenizer, max_length=max_length)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Atomically write backbone (``save_pretrained``), tokenizer and ``nlhf_scorer.json`` into ``directory``."""
        def write(tmp):
            self.backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (Path(tmp) / _SCORER_FILE).write_text(json.dumps({"kind": self.kind, "max_length": self.max_length}))
        return _atomic_save(directory, write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **backbone_kwargs):
        """Load what :meth:`save_pretrained` wrote. FileNotFoundError (naming the folder) if it is missing or has
        no config.json; ValueError if it holds the other kind of scorer."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        p = _require_folder(directory, cls.kind)
        meta_path = p / _SCORER_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("kind", cls.kind) != cls.kind:
            raise ValueError(f"{p} holds a {meta['kind']}, not a {cls.kind}")
        backbone = AutoModelForSequenceClassification.from_pretrained(p, **backbone_kwargs)
        return cls(backbone, AutoTokenizer.from_pretrained(p), max_length=meta.get("max_length"))

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
        sampled ``<sep>`` can never fake the x <sep> y <sep> y' structure."""
        if not isinstance(items, Tensor) and len(items) and isinstance(items[0], str):
            return self._strip_eos(self._ids(items))
        special = set(self.tokenizer.all_special_ids)
        return [[t for t in r if t not in special] for r in self._ids(items, mask)]

    def _strip_eos(self, rows: list[list[int]]) -> list[list[int]]:
        """Responses from the sampler end with EOS; the text form (decoded) has none, so drop it."""
        eos = self.tokenizer.eos_token_id
        return [[t for t in r if t != eos] for r in rows] if eos is not None else rows

    def _fit(self, x: list[int], resps: list[list[int]]) -> tuple[list[int], list[list[int]]]:
        """Truncate to ``max_length``: cut the prompt from the LEFT first; if the responses alone are too long,
        give the prompt an equal share and cap every response at the same length. The rule depends on the
        responses only through their lengths' sum and a common cap, so it is symmetric in y and y'."""
        n_sep = len(resps)
        budget = self.max_length - n_sep
        if budget < len(resps) + 1:
            raise ValueError(f"{self.kind}: max_length={self.max_length} is too small")
        total = len(x) + sum(map(len, resps))
        if total <= budget:
            return x, resps
        share = budget // (len(resps) + 1)
        if budget - sum(map(len, resps)) < min(len(x), share):
            keep_x = min(len(x), share)
            cap = (budget - keep_x) // len(resps)
            resps = [r[:cap] for r in resps]
        keep_x = budget - sum(map(len, resps))
        return (x[-keep_x:] if keep_x > 0 else []), resps

    def _join(self, x: list[int], resps: list[list[int]]) -> list[int]:
        x, resps = self._fit(x, resps)
        out = list(x)
        sep = self.tokenizer.sep_token_id
        for r in resps:
            if sep is not None:
                out.append(sep)
            out.extend(r)
        return out

    def _pad(self, rows: list[list[int]]) -> dict[str, Tensor]:
        """Right-pad to a batch: {"input_ids", "attention_mask"} (see module docstring for why right)."""
        n = max(1, max(map(len, rows)))
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), n), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            if not r:
                raise ValueError(f"{self.kind}: empty input (row {i})")
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def score(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The backbone's scalar head at the last real token, [N] (differentiable)."""
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False)
        return out.logits.squeeze(-1).float()


# ----------------------------------------------------------------------------------------------------------------
# Preference model.


class PreferenceModel(_Scorer):
    """P_θ(y≻y'|x) = σ(f(x,y,y') − f(x,y',y)), antisymmetric by construction (PAPER.md §1, §4).

    String API: ``logits(prompts, ys, y_primes)`` (the antisymmetric logit), ``prob(...)``.
    Token API (training): ``collate(prompts, ys, y_primes)`` -> batch of 2B rows (first B: x,y,y'; next B:
    x,y',y), ``forward(input_ids, attention_mask)`` -> [B] logits; ``logits_from_ids(...)`` on sampler tensors.
    """

    kind = "preference_model"
    n_responses = 2

    def collate(self, prompts: Pieces, ys: Pieces, y_primes: Pieces, *, prompt_mask: Tensor | None = None,
                y_mask: Tensor | None = None, y_prime_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Tokenize (strings) or unpad (id tensors + masks) and pad both orders into one [2B, L] batch.
        EOS is dropped from responses, so ids from the sampler and their decoded text give the same input."""
        x = self._ids(prompts, prompt_mask)
        y = self._response_ids(ys, y_mask)
        yp = self._response_ids(y_primes, y_prime_mask)
        if not len(x) == len(y) == len(yp):
            raise ValueError(f"{self.kind}: batch sizes differ: {len(x)}, {len(y)}, {len(yp)}")
        rows = [self._join(a, [b, c]) for a, b, c in zip(x, y, yp)]
        rows += [self._join(a, [c, b]) for a, b, c in zip(x, y, yp)]
        return self._pad(rows)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Antisymmetric logits f(x,y,y') − f(x,y',y), [B], from a :meth:`collate` batch of 2B rows."""
        f = self.score(input_ids, attention_mask)
        B = f.shape[0] // 2
        return f[:B] - f[B:]

    def logits(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """logit P_θ(y≻y'|x) for lists of strings (or id lists), [B]."""
        return self(**self.collate(prompts, ys, y_primes))

    def prob(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """P_θ(y≻y'|x), [B]; P(y≻y') + P(y'≻y) = 1 exactly."""
        return torch.sigmoid(self.logits(prompts, ys, y_primes))

    def logits_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor,
                        y_prime_ids: Tensor, y_prime_mask: Tensor) -> Tensor:
        """Same as :meth:`logits` on padded tensors (e.g. the sampler's prompt / response / response_mask)."""
        return self(**self.collate(prompt_ids, y_ids, y_prime_ids, prompt_mask=prompt_mask, y_mask=y_mask,
                                   y_prime_mask=y_prime_mask))


class RewardModel(_Scorer):
    """Bradley–Terry reward r(x,y): the backbone on ``x <sep> y``; P(y≻y'|x) = σ(r(x,y) − r(x,y')) (PAPER.md §3).

    String API: ``rewards(prompts, ys)``, ``prob(prompts, ys, y_primes)``. Token API: ``collate(prompts, ys)``,
    ``forward(input_ids, attention_mask)`` -> [B], ``rewards_from_ids(...)``.
    """

    kind = "reward_model"
    n_responses = 1

    def collate(self, prompts: Pieces, ys: Pieces, *, prompt_mask: Tensor | None = None,
                y_mask: Tensor | None = None) -> dict[str, Tensor]:
        x = self._ids(prompts, prompt_mask)
        y = self._response_ids(ys, y_mask)
        if len(x) != len(y):
            raise ValueError(f"{self.kind}: batch sizes differ: {len(x)}, {len(y)}")
        return self._pad([self._join(a, [b]) for a, b in zip(x, y)])

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """r(x,y), [B]."""
        return self.score(input_ids, attention_mask)

    def rewards(self, prompts: Pieces, ys: Pieces) -> Tensor:
        return self(**self.collate(prompts, ys))

    def rewards_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor) -> Tensor:
        return self(**self.collate(prompt_ids, y_ids, prompt_mask=prompt_mask, y_mask=y_mask))

    def logits(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """r(x,y) − r(x,y'), [B], for lists of strings or id lists (one forward on 2B rows)."""
        r = self.rewards(list(prompts) * 2, list(ys) + list(y_primes))
        B = r.shape[0] // 2
        return r[:B] - r[B:]

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
