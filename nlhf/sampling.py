"""Batched sampling from a policy and from the token-level geometric mixture (the paper's §7, App. F.1).

Nash-MD-PG needs two samples per prompt: y ~ π_θ(·|x) and y' ~ π_θ^β(·|x), where the opponent is the geometric
mixture log π_θ^β = (1−β) log π_θ + β log μ + c(x). The sequence-level normaliser c(x) is intractable, so, as in
the paper (App. F.1) and TRL's ``GeometricMixtureWrapper``, each token is drawn from the per-prefix mixture

    y_n ~ softmax((1−β)·logits_θ(x, y_<n) + β·logits_μ(x, y_<n))

(the product of these per-token factors is NOT the sequence-level mixture; the bias is not analysed in the paper).
β = 0 is self-play (sample from π_θ), β = 1 is the reference μ alone (best response to SFT).

``generate`` runs both models with their own KV cache, advanced together one token at a time, and takes β per
row, so a single call draws y ~ π_θ (rows with β=0) and y' ~ π_θ^β (rows with β>0) for the same prompts:

    gen = generate(policy, torch.cat([ids, ids]), torch.cat([mask, mask]), ref=sft,
                   beta=torch.cat([torch.zeros(B), torch.full((B,), beta)]), ...)

Conventions: prompts are LEFT-padded (``prompt_mask[:, -1]`` must be all ones); positions come from the attention
mask (``position_ids = cumsum(mask) − 1``), so left padding never shifts a prompt; responses are RIGHT-padded with
``pad_token_id`` after the first EOS.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from nlhf import fast_decode

__all__ = [
    "Generation",
    "mixture_logits",
    "mixture_logprobs",
    "generate",
    "generate_uncached",
    "sample_texts",
    "response_logprobs",
    "position_ids_from_mask",
]


# ----------------------------------------------------------------------------------------------------------------
# transformers-version shims. transformers 5.24 renamed the forward kwarg ``past_key_values`` -> ``cache`` (the
# old name is deprecated until 5.40) and the output field likewise; 5.17 may only know ``past_key_values``.
# We look at the model's forward signature once per class and pass our own DynamicCache object, which the model
# updates in place, so we never depend on the output field's name either.


def _unwrap(model):
    """The module whose ``forward`` signature tells what it accepts (DDP / accelerate wrappers hide it)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


@functools.lru_cache(maxsize=None)
def _forward_params(cls: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _accepts(model, name: str) -> bool:
    return name in _forward_params(type(_unwrap(model)))


def _cache_kwarg(model) -> str:
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def _returned_cache(out, fallback):
    for name in ("cache", "past_key_values"):
        if name in out and out[name] is not None:
            return out[name]
    return fallback


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions 0, 1, ... counted over real tokens only (left padding does not shift a sequence)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# ----------------------------------------------------------------------------------------------------------------
# The mixture.


def _row_beta(beta: float | Tensor, like: Tensor) -> Tensor:
    """β as a tensor broadcastable to ``like`` ([B, ..., V]): a scalar, or one value per row ([B])."""
    b = torch.as_tensor(beta, dtype=torch.float32, device=like.device)
    if b.dim() > 0:
        if b.shape[0] != like.shape[0] and b.numel() != 1:
            raise ValueError(f"beta: expected a scalar or shape [{like.shape[0]}], got {tuple(b.shape)}")
        b = b.reshape(b.shape + (1,) * (like.dim() - b.dim()))
    if bool(((b < 0) | (b > 1)).any()):
        raise ValueError(f"beta: must lie in [0, 1], got {beta}")
    return b


def mixture_logits(policy_logits: Tensor, ref_logits: Tensor | None, beta: float | Tensor) -> Tensor:
    """Unnormalised mixed logits (1−β)·policy_logits + β·ref_logits, in float32.

    Rows with β == 0 return the policy logits and rows with β == 1 the reference logits EXACTLY (no 0·(−inf)
    NaNs, no rounding), so those rows sample from π_θ or μ alone. ``ref_logits`` may be None only if all β == 0.
    """
    lp = policy_logits.float()
    b = _row_beta(beta, lp)
    if ref_logits is None:
        if bool((b != 0).any()):
            raise ValueError("beta > 0 needs the reference model's logits (ref=None given)")
        return lp
    lr = ref_logits.float()
    if lr.shape != lp.shape:
        raise ValueError(f"policy and reference logits differ in shape: {tuple(lp.shape)} vs {tuple(lr.shape)} "
                         "(do the two models share a vocabulary?)")
    mixed = (1.0 - b) * lp + b * lr
    mixed = torch.where(b == 0, lp, mixed)
    return torch.where(b == 1, lr, mixed)


def mixture_logprobs(policy_logits: Tensor, ref_logits: Tensor | None, beta: float | Tensor) -> Tensor:
    """log softmax((1−β)·logits_θ + β·logits_μ): the per-token geometric mixture π_θ^{1−β} μ^β / Z (App. F.1).

    ``beta`` is the weight on the REFERENCE: a float or a per-row tensor of shape [B] (broadcast over the other
    dims). β = 0 gives log_softmax(policy_logits), β = 1 gives log_softmax(ref_logits), exactly.
    """
    return torch.log_softmax(mixture_logits(policy_logits, ref_logits, beta), dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Generation.


@dataclass
class Generation:
    """The output of :func:`generate`. T ≤ max_new_tokens (the loop stops once every row has emitted EOS).

    sequences       [B, P+T]  prompt (left-padded, as given) + response
    attention_mask  [B, P+T]  prompt_mask + response_mask (feed it to ``response_logprobs``)
    response        [B, T]    sampled tokens; ``pad_token_id`` after the first EOS
    response_mask   [B, T]    1 up to and including the first EOS, then 0
    prompt_len      P
    policy_logprobs [B, T]    log π_θ(y_n | x, y_<n) at temperature 1 (0 where masked)
    sample_logprobs [B, T]    log-prob under the distribution actually sampled (mixture / temperature)
    ref_logprobs    [B, T] | None   log μ(y_n | x, y_<n) on rows with β > 0; None when every β = 0 (the reference
                    is not run). Rows with β = 0 hold 0: the reference is run only on the rows that mix it in
                    (score y ~ π_θ under μ with ``response_logprobs(ref, ...)``, one forward, as training does).
    """

    sequences: Tensor
    attention_mask: Tensor
    response: Tensor
    response_mask: Tensor
    prompt_len: int
    policy_logprobs: Tensor
    sample_logprobs: Tensor
    ref_logprobs: Tensor | None = None


def sample_categorical(logp: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from Categorical(exp(logp)), [N, V] -> [N], by inverse CDF: the first index whose
    cumulative probability exceeds u·total, u ~ U[0, 1) (one uniform per row; zero-probability tokens are never
    drawn). ``torch.multinomial`` draws one exponential per vocabulary entry instead: ~0.41 ms vs ~0.05 ms per
    call at 16 x 512 on one CPU thread (measured), which mattered once per sampled token."""
    cdf = logp.float().exp().cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


@contextlib.contextmanager
def _eval_mode(*models):
    """Sample with dropout off; restore each model's train/eval flag afterwards."""
    models = [m for m in models if m is not None]
    flags = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, f in zip(models, flags):
            m.train(f)


def _last_logits(model, input_ids, attention_mask, position_ids, cache) -> tuple[Tensor, object]:
    """Logits of the last position, [B, V]; with ``cache`` (a DynamicCache) it is advanced in place."""
    kw = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    if _accepts(model, "logits_to_keep"):
        kw["logits_to_keep"] = 1  # skip the LM head on the prompt positions
    if cache is None:
        out = model(**kw, use_cache=False)
    else:
        out = model(**kw, use_cache=True, **{_cache_kwarg(model): cache})
        cache = _returned_cache(out, cache)
    return out.logits[:, -1, :], cache


def _check_inputs(prompt_ids, prompt_mask, max_new_tokens, temperature):
    if prompt_ids.dim() != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(f"prompt_ids and prompt_mask must both be [B, P]; got {tuple(prompt_ids.shape)} and "
                         f"{tuple(prompt_mask.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0 (0 = greedy), got {temperature}")
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError("prompts must be LEFT-padded: prompt_mask[:, -1] has zeros (set tokenizer.padding_side "
                         "= 'left')")


class TransformersBackend:
    """One model's side of the decode loop on any ``transformers`` causal LM, for the rows ``rows`` of the batch:
    with a KV cache (``DynamicCache``: one forward per new token) or, ``cached=False``, re-encoding the whole prefix
    at every step (the reference implementation). Same interface as :class:`nlhf.fast_decode.GPT2Backend`."""

    def __init__(self, model, prompt_ids: Tensor, prompt_mask: Tensor, rows, cached: bool):
        self.model, self.rows, self.cached = model, rows, cached
        self.seq, self.mask = prompt_ids[rows], prompt_mask[rows].long()
        self.cache = _new_cache() if cached else None

    def prefill(self) -> Tensor:
        logits, self.cache = _last_logits(self.model, self.seq, self.mask, position_ids_from_mask(self.mask),
                                          self.cache)
        return logits.float()

    def step(self, tok: Tensor, alive: Tensor, t: int) -> Tensor:
        tok, alive = tok[self.rows], alive[self.rows]
        new_pos = self.mask.sum(-1, keepdim=True)  # = number of real tokens so far = position of the new token
        self.seq = torch.cat([self.seq, tok.unsqueeze(1)], 1)
        self.mask = torch.cat([self.mask, alive.long().unsqueeze(1)], 1)  # 0 once finished: pads never attended
        if self.cached:
            ids, pos = tok.unsqueeze(1), new_pos
        else:
            ids, pos = self.seq, position_ids_from_mask(self.mask)
        logits, self.cache = _last_logits(self.model, ids, self.mask, pos, self.cache)
        return logits.float()


def _mixing_rows(beta_row: Tensor):
    """The rows whose opponent mixes μ in (β > 0), as a slice when they are contiguous (Nash-MD's rows B..2B−1:
    views, no copies), else an index tensor; ``slice(None)`` when every row does."""
    sel = (beta_row > 0).nonzero().view(-1)
    n = int(sel.numel())
    if n == beta_row.numel():
        return slice(None)
    s0 = int(sel[0])
    return slice(s0, s0 + n) if int(sel[-1]) == s0 + n - 1 else sel


def _generate(policy, prompt_ids, prompt_mask, *, ref, beta, max_new_tokens, temperature, eos_token_id,
              pad_token_id, generator, cached: bool) -> Generation:
    """The decode loop, the same for every backend: mix the two models' next-token logits row by row, sample,
    record the log-probabilities, stop each row at its EOS and the loop once every row has stopped."""
    _check_inputs(prompt_ids, prompt_mask, max_new_tokens, temperature)
    device = prompt_ids.device
    B, P = prompt_ids.shape
    beta_row = torch.as_tensor(beta, dtype=torch.float32, device=device)
    beta_row = _row_beta(beta_row.expand(B) if beta_row.dim() == 0 else beta_row, prompt_ids).reshape(B)
    use_ref = bool((beta_row > 0).any())  # self-play (all β = 0): never run the reference
    if use_ref and ref is None:
        raise ValueError("beta > 0 needs a reference model (ref=None given)")
    # the reference runs only on the rows that mix it in: rows with β = 0 sample from π_θ alone
    ref_rows = _mixing_rows(beta_row) if use_ref else None
    models = [policy] + ([ref] if use_ref else [])
    if cached and fast_decode.can_decode(models, device, P + max_new_tokens - 1):
        backends = [fast_decode.GPT2Backend(m, prompt_ids, prompt_mask, rows, max_new_tokens)
                    for m, rows in zip(models, (slice(None), ref_rows))]
    else:
        backends = [TransformersBackend(m, prompt_ids, prompt_mask, rows, cached)
                    for m, rows in zip(models, (slice(None), ref_rows))]
    b_ref = beta_row.view(B, 1)[ref_rows] if use_ref else None
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    zero = torch.zeros((), device=device)
    pad = torch.full((B,), pad_token_id, dtype=torch.long, device=device)
    toks, resp_mask, pol_lp, smp_lp, ref_lp = [], [], [], [], []
    tok = alive = None
    for t in range(max_new_tokens):
        logits = [b.prefill() if t == 0 else b.step(tok, alive, t) for b in backends]
        lp = logits[0]
        mixed = lp
        if use_ref:
            # (1−β)·l_θ + β·l_μ, exactly l_μ where β = 1 (:func:`mixture_logits` on the mixing rows)
            lr = logits[1]
            mixed_ref = torch.where(b_ref == 1, lr, (1.0 - b_ref) * lp[ref_rows] + b_ref * lr)
            if isinstance(ref_rows, slice) and ref_rows == slice(None):
                mixed = mixed_ref
            else:
                mixed = lp.clone()
                mixed[ref_rows] = mixed_ref
        if temperature == 0:
            logp = torch.log_softmax(mixed, -1)
            tok = mixed.argmax(-1)
        else:
            logp = torch.log_softmax(mixed / temperature if temperature != 1.0 else mixed, -1)
            tok = sample_categorical(logp, generator)

        alive = ~finished
        tok = torch.where(alive, tok, pad)
        idx = tok.unsqueeze(1)
        policy_logp = logp if (not use_ref and temperature == 1.0) else torch.log_softmax(lp, -1)
        pol_lp.append(torch.where(alive, policy_logp.gather(1, idx).squeeze(1), zero))
        smp_lp.append(torch.where(alive, logp.gather(1, idx).squeeze(1), zero))
        if use_ref:
            ref_lp.append(torch.where(alive[ref_rows], torch.log_softmax(lr, -1).gather(1, idx[ref_rows]).squeeze(1),
                                      zero))
        toks.append(tok)
        resp_mask.append(alive)
        finished = finished | (alive & (tok == eos_token_id))
        if t == max_new_tokens - 1 or bool(finished.all()):  # the one host sync per token
            break

    response = torch.stack(toks, 1)
    response_mask = torch.stack(resp_mask, 1).long()
    ref_logprobs = None
    if use_ref:  # rows with β = 0: μ was not run there, 0
        ref_logprobs = torch.zeros(B, response.shape[1], dtype=torch.float32, device=device)
        ref_logprobs[ref_rows] = torch.stack(ref_lp, 1)
    return Generation(
        sequences=torch.cat([prompt_ids, response], 1),
        attention_mask=torch.cat([prompt_mask.long(), response_mask], 1),
        response=response,
        response_mask=response_mask,
        prompt_len=P,
        policy_logprobs=torch.stack(pol_lp, 1),
        sample_logprobs=torch.stack(smp_lp, 1),
        ref_logprobs=ref_logprobs,
    )


@torch.no_grad()
def generate(policy, prompt_ids: Tensor, prompt_mask: Tensor, *, ref=None, beta: float | Tensor = 0.0,
             max_new_tokens: int, temperature: float = 1.0, eos_token_id: int, pad_token_id: int,
             generator: torch.Generator | None = None) -> Generation:
    """Sample responses from π_θ, or per row from the mixture softmax((1−β)·logits_θ + β·logits_μ).

    Args:
        policy: causal LM (π_θ). ref: causal LM (μ) with the same vocabulary; needed only if some β > 0.
        prompt_ids, prompt_mask: [B, P], LEFT-padded; positions are taken from the mask.
        beta: weight on the reference, a float or a tensor of shape [B] (one β per row). Rows with β=0 sample from
            π_θ alone, rows with β=1 from μ alone (exactly). When every β is 0 the reference is never run.
        max_new_tokens: response length cap T_max; the loop stops earlier once every row has emitted EOS.
        temperature: divides the MIXED logits, i.e. y_n ~ softmax(((1−β)·l_θ + β·l_μ)/temperature); 0 = greedy.
            ``policy_logprobs`` are always at temperature 1 (what the policy gradient needs).
        generator: the ``torch.Generator`` of :func:`sample_categorical` (on the models' device); with it a
            call is repeatable, and ``generate_uncached`` with the same seed draws the same tokens.

    Both models keep a KV cache (transformers' ``DynamicCache``): one prefill forward on the prompt, then one
    forward per new token per model, the two caches advanced together; the prefix is never re-encoded.
    GPT-2 models (without forward hooks) take :mod:`nlhf.fast_decode` instead: the same weights and the same
    sampling code on preallocated KV tensors with plain torch ops, drawing the same tokens for the same generator
    (tests/test_fast_decode.py); ``NLHF_FAST_DECODE=0`` forces the transformers loop. Its speed: benchmarks/.
    Models are put in eval mode (no dropout) for the call and restored afterwards. Runs under ``no_grad``.

    Speed (measured once, not asserted): CPU, 2-layer width-128 GPT-2 (vocab 23), batch 16, prompt 24, 32 new
    tokens, no early stop, 1 torch thread on a shared 2-core box: ~0.09-0.16 s per call cached vs ~0.55 s
    uncached with β=0 (policy only); ~0.18 s vs ~1.0 s with β=0.5 (policy + reference). At this size the
    per-step Python/dispatch overhead dominates; the gap grows with length (uncached is quadratic).
    H200 (torch 2.11, transformers 5.17): the same tiny model ~70 ms cached vs ~72 ms uncached (launch-bound);
    a GPT-2-small-sized model (12x768, vocab 50257, bf16), batch 64, prompt 256, 128 new tokens: 0.75 s vs 2.0 s
    (β=0) and 1.4 s vs 3.9 s (β=0.5).
    """
    with _eval_mode(policy, ref):
        return _generate(policy, prompt_ids, prompt_mask, ref=ref, beta=beta, max_new_tokens=max_new_tokens,
                         temperature=temperature, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         generator=generator, cached=True)


@torch.no_grad()
def generate_uncached(policy, prompt_ids: Tensor, prompt_mask: Tensor, *, ref=None, beta: float | Tensor = 0.0,
                      max_new_tokens: int, temperature: float = 1.0, eos_token_id: int, pad_token_id: int,
                      generator: torch.Generator | None = None) -> Generation:
    """Reference implementation of :func:`generate`: same API and same draws, but every step re-runs the full
    forward on the whole prefix (no KV cache). Quadratic in length; for tests and debugging only."""
    with _eval_mode(policy, ref):
        return _generate(policy, prompt_ids, prompt_mask, ref=ref, beta=beta, max_new_tokens=max_new_tokens,
                         temperature=temperature, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         generator=generator, cached=False)


# ----------------------------------------------------------------------------------------------------------------
# Text in, text out: summaries for evaluation and analysis.


@torch.no_grad()
def sample_texts(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 1.0,
                 seed: int = 0, batch_size: int = 256, ref=None, beta: float = 0.0,
                 return_finished: bool = False):
    """One response per prompt (repeat a prompt to get several), decoded without EOS/padding; repeatable by seed.

    With ``return_finished`` also a list of bools: whether each response ended with EOS within
    ``max_new_tokens`` (a truncated response is malformed whatever its text)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[str] = []
    finished: list[bool] = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i: i + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        g = generate(model, enc["input_ids"], enc["attention_mask"], ref=ref, beta=beta,
                     max_new_tokens=max_new_tokens, temperature=temperature, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, generator=gen)
        for row, m in zip(g.response.tolist(), g.response_mask.tolist()):
            toks = [t for t, k in zip(row, m) if k and t != tokenizer.eos_token_id]
            out.append(tokenizer.decode(toks, skip_special_tokens=True))
            finished.append(any(k and t == tokenizer.eos_token_id for t, k in zip(row, m)))
    return (out, finished) if return_finished else out


# ----------------------------------------------------------------------------------------------------------------
# Scoring a sampled response (with gradient when called under grad).


def _response_logits(model, sequences: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
    """Logits predicting each response token: [B, T, V] (position P−1+n predicts token P+n)."""
    T = sequences.shape[1] - prompt_len
    if T < 1 or prompt_len < 1:
        raise ValueError(f"need prompt_len >= 1 and a non-empty response; got prompt_len={prompt_len}, "
                         f"sequence length {sequences.shape[1]}")
    kw = dict(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
              use_cache=False)
    if _accepts(model, "logits_to_keep"):
        kw["logits_to_keep"] = T + 1  # the last T+1 positions: P−1 ... P+T−1
        return model(**kw).logits[:, :T, :]
    return model(**kw).logits[:, prompt_len - 1:-1, :]


def response_logprobs(model, sequences: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
    """log π(y_n | x, y_<n) for each response token, [B, T], in ONE forward; 0 where ``attention_mask`` is 0.

    ``sequences``/``attention_mask`` are [B, P+T] with the prompt left-padded in the first ``prompt_len`` columns
    (e.g. ``Generation.sequences`` / ``Generation.attention_mask``). Sum over T for log π(y|x). Differentiable:
    call it under grad for the policy-gradient term, under ``no_grad`` for the reference μ.
    """
    logits = _response_logits(model, sequences, attention_mask, prompt_len).float()
    targets = sequences[:, prompt_len:]
    lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    return lp * attention_mask[:, prompt_len:].to(lp.dtype)
