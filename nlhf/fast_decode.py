"""A lean incremental decoder for GPT-2-family policies: the fast path behind :func:`nlhf.sampling.generate`.

At the sizes this project trains on CPU (2 layers, width 128), one ``transformers`` forward per token costs far more
in Python and per-call set-up (mask building, cache objects, output dataclasses, kwarg plumbing) than in arithmetic.
This module runs the SAME weights with plain torch ops:

* static KV tensors, preallocated once per call (per layer and model: K as [N, H, D, P + T_max], transposed so the
  decode step's QKᵀ is a plain batched GEMM; V as [N, H, P + T_max, D]), written in place;
* the key-padding mask is a preallocated boolean row per sequence, updated with one column write per token;
* policy and reference advance in one loop; the mixture, sampling and EOS bookkeeping are the generic sampler's
  (same formulas, same :func:`nlhf.sampling.sample_categorical` call on the same generator), so for a given seed the tokens are the
  ones :func:`nlhf.sampling.generate_uncached` draws (tested in tests/test_fast_decode.py);
* the only host sync per token is the "every row finished?" check, which keeps early stopping (and therefore how
  many random numbers a call consumes) exactly as in the generic loop.

Supported: ``transformers`` ``GPT2LMHeadModel`` (no cross-attention, no ``reorder_and_upcast_attn``), with no
forward hooks registered on any of its modules (hooks would be skipped here, so such models take the generic
path). Anything else returns None from :func:`fast_generate` and the caller falls back to the generic
``transformers`` loop. Set ``NLHF_FAST_DECODE=0`` to force the generic path.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["supports", "fast_generate", "GPT2Decoder"]

_TANH_GELU = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
_EXACT_GELU = {"gelu"}


def _unwrap(model):
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def _has_hooks(model: torch.nn.Module) -> bool:
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def supports(model) -> bool:
    """True if ``model`` is a plain GPT-2 LM this decoder reproduces (otherwise use the generic path)."""
    if model is None:
        return False
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:  # pragma: no cover
        return False
    m = _unwrap(model)
    if type(m) is not GPT2LMHeadModel:
        return False
    c = m.config
    if getattr(c, "add_cross_attention", False) or getattr(c, "reorder_and_upcast_attn", False):
        return False
    act = getattr(c, "activation_function", "gelu_new")
    if act not in _TANH_GELU | _EXACT_GELU:
        return False
    if getattr(m.lm_head, "bias", None) is not None:
        return False
    return not _has_hooks(m)


class GPT2Decoder:
    """The weights of one GPT-2 LM (views, no copies) + its static KV cache for one :func:`fast_generate` call."""

    def __init__(self, model, n_rows: int, max_len: int):
        m = _unwrap(model)
        c = m.config
        tr = m.transformer
        self.wte, self.wpe = tr.wte.weight, tr.wpe.weight
        self.C = c.n_embd
        self.H = c.n_head
        self.D = self.C // self.H
        self.eps = c.layer_norm_epsilon
        act = getattr(c, "activation_function", "gelu_new")
        self.gelu_approx = "tanh" if act in _TANH_GELU else "none"
        self.layers = []
        for i, blk in enumerate(tr.h):
            at = blk.attn
            scale = getattr(at, "scaling", None)
            if scale is None:  # older transformers: compute it as GPT2Attention does
                scale = (self.D ** -0.5) if c.scale_attn_weights else 1.0
                if c.scale_attn_by_inverse_layer_idx:
                    scale /= float(i + 1)
            self.layers.append((
                blk.ln_1.weight, blk.ln_1.bias, at.c_attn.weight, at.c_attn.bias, at.c_proj.weight, at.c_proj.bias,
                blk.ln_2.weight, blk.ln_2.bias, blk.mlp.c_fc.weight, blk.mlp.c_fc.bias, blk.mlp.c_proj.weight,
                blk.mlp.c_proj.bias, float(scale),
            ))
        self.lnf_w, self.lnf_b = tr.ln_f.weight, tr.ln_f.bias
        self.lm_head = m.lm_head.weight  # [V, C] (tied to wte in GPT-2)
        dt, dev = self.wte.dtype, self.wte.device
        self.k = [torch.empty((n_rows, self.H, self.D, max_len), dtype=dt, device=dev) for _ in self.layers]
        self.v = [torch.empty((n_rows, self.H, max_len, self.D), dtype=dt, device=dev) for _ in self.layers]

    def forward(self, ids: Tensor, pos: Tensor, start: int, attn_mask: Tensor) -> Tensor:
        """Logits of the LAST position, [N, V]. ``ids``/``pos``: [N, S] written at cache columns start..start+S−1;
        ``attn_mask``: bool [N, 1, S, start+S], True = attend, when S > 1 (prefill); for S = 1 (decode) an
        additive float mask [N, 1, 1, start+1], 0 = attend, −inf = masked."""
        N, S = ids.shape
        C, H, D = self.C, self.H, self.D
        end = start + S
        h = F.embedding(ids, self.wte) + F.embedding(pos, self.wpe)  # [N, S, C]
        for li, (w1, b1, wa, ba, wp, bp, w2, b2, wf, bf, wo, bo, scale) in enumerate(self.layers):
            x = F.layer_norm(h, (C,), w1, b1, self.eps)
            qkv = torch.addmm(ba, x.view(N * S, C), wa).view(N, S, 3, H, D)
            q, k, v = qkv.unbind(2)
            kc, vc = self.k[li], self.v[li]  # K stored transposed, [N, H, D, L]; V as [N, H, L, D]
            kc[:, :, :, start:end].copy_(k.permute(0, 2, 3, 1))
            vc[:, :, start:end].copy_(v.transpose(1, 2))
            if S == 1:
                # one query per row (every decode step): two batched GEMMs on the cache as stored (K already
                # transposed, so both read contiguous rows) + softmax. Measured at [16 rows, 4 heads, 144 keys],
                # 1 thread: ~100 us vs ~230 us for torch's CPU SDPA kernel or matmul on transposed views.
                # ``attn_mask`` is then ADDITIVE (0 / −inf), [N, 1, 1, end].
                w = torch.bmm(q.reshape(N * H, 1, D), kc.view(N * H, D, -1)[:, :, :end]).view(N, H, 1, end)
                w = torch.softmax(w.mul_(scale).add_(attn_mask), -1)
                a = torch.bmm(w.view(N * H, 1, end), vc.view(N * H, -1, D)[:, :end]).view(N, C)
            else:
                a = F.scaled_dot_product_attention(q.transpose(1, 2), kc[:, :, :, :end].transpose(-1, -2),
                                                   vc[:, :, :end], attn_mask=attn_mask, scale=scale)
                a = a.transpose(1, 2).reshape(N * S, C)
            h = h + torch.addmm(bp, a, wp).view(N, S, C)
            x = F.layer_norm(h, (C,), w2, b2, self.eps)
            x = F.gelu(torch.addmm(bf, x.view(N * S, C), wf), approximate=self.gelu_approx)
            h = h + torch.addmm(bo, x, wo).view(N, S, C)
        x = F.layer_norm(h[:, -1], (C,), self.lnf_w, self.lnf_b, self.eps)
        return F.linear(x, self.lm_head)


def fast_generate(policy, prompt_ids: Tensor, prompt_mask: Tensor, *, ref, beta_row: Tensor, use_ref: bool,
                  max_new_tokens: int, temperature: float, eos_token_id: int, pad_token_id: int,
                  generator: torch.Generator | None):
    """The loop of ``nlhf.sampling._generate`` on :class:`GPT2Decoder` s, or None if a model is not supported.

    Inputs are already checked by the caller (left padding, β per row in [0, 1], ref present if ``use_ref``); the
    models are already in eval mode and grad is off. Returns a ``nlhf.sampling.Generation``.
    """
    if os.environ.get("NLHF_FAST_DECODE", "1") == "0":
        return None
    if not supports(policy) or (use_ref and not supports(ref)):
        return None
    from nlhf.sampling import Generation, sample_categorical  # late import: sampling imports this module lazily

    device = prompt_ids.device
    N, P = prompt_ids.shape
    L = P + max_new_tokens - 1  # the last sampled token is never fed back
    models = [policy] + ([ref] if use_ref else [])
    for m in models:
        m_ = _unwrap(m)
        if m_.transformer.wte.weight.device != device or L > m_.config.n_positions:
            return None

    b = beta_row.to(device=device, dtype=torch.float32).reshape(N, 1)
    # The reference runs only on the rows that mix it in (β > 0): rows with β = 0 sample from π_θ alone, so their
    # μ logits are never needed (their ref_logprobs are reported as 0). ``rs`` selects those rows: a slice when
    # they are contiguous (Nash-MD: rows B..2B-1, views and no copies), else an index tensor.
    rs = slice(None)
    R = N
    if use_ref:
        sel = (b.view(N) > 0).nonzero().view(-1)
        R = int(sel.numel())
        if R < N:
            s0 = int(sel[0])
            rs = slice(s0, s0 + R) if int(sel[-1]) == s0 + R - 1 else sel
    pol_dec = GPT2Decoder(policy, N, L)
    ref_dec = GPT2Decoder(ref, R, L) if use_ref else None

    mask = prompt_mask.long()
    kvalid = torch.zeros(N, L, dtype=torch.bool, device=device)
    kvalid[:, :P] = mask.bool()
    # the same key mask in additive form for the decode steps: 0 = attend, −inf = pad / finished row's slot
    kbias = torch.full((N, L), float("-inf"), dtype=pol_dec.wte.dtype, device=device)
    kbias[:, :P].masked_fill_(mask.bool(), 0.0)
    # prefill: causal AND key is real; each position may always see itself (pad queries would otherwise have no
    # key at all -> NaN K/V downstream; their outputs are never used and their keys stay masked)
    causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()
    eye = torch.eye(P, dtype=torch.bool, device=device)
    pre_mask = ((causal & kvalid[:, None, :P]) | eye)[:, None]  # [N, 1, P, P]
    pos0 = (mask.cumsum(-1) - 1).clamp(min=0)
    cnt = mask.sum(-1)  # real tokens so far = position of the next fed token

    b_r = b[rs]
    omb_r, b_is1_r = 1.0 - b_r, b_r == 1
    all_rows = R == N
    pure_policy = not use_ref
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    zero = torch.zeros((), device=device)
    pad_t = torch.full((N,), pad_token_id, dtype=torch.long, device=device)
    toks, resp_mask, pol_lp, smp_lp, ref_lp = [], [], [], [], []

    for t in range(max_new_tokens):
        if t == 0:
            lp = pol_dec.forward(prompt_ids, pos0, 0, pre_mask).float()
            if use_ref:
                lr = ref_dec.forward(prompt_ids[rs], pos0[rs], 0, pre_mask[rs]).float()
        else:
            col = P + t - 1
            am = kbias[:, None, None, :col + 1]
            lp = pol_dec.forward(step_ids, step_pos, col, am).float()
            if use_ref:
                lr = ref_dec.forward(step_ids[rs], step_pos[rs], col, am[rs]).float()
        if pure_policy:
            mixed = lp
        else:
            # the generic formula ((1−β)·l_θ + β·l_μ, exactly l_μ where β = 1, exactly l_θ where β = 0), row-wise
            lp_r = lp[rs]
            mixed_r = torch.where(b_is1_r, lr, omb_r * lp_r + b_r * lr)
            if all_rows:
                mixed = mixed_r
            else:
                mixed = lp.clone()
                mixed[rs] = mixed_r
        if temperature == 0:
            logp = torch.log_softmax(mixed, -1)
            tok = mixed.argmax(-1)
        else:
            logp = torch.log_softmax(mixed / temperature if temperature != 1.0 else mixed, -1)
            tok = sample_categorical(logp, generator)

        alive = ~finished
        tok = torch.where(alive, tok, pad_t)
        idx = tok.unsqueeze(1)
        plog = logp if (pure_policy and temperature == 1.0) else torch.log_softmax(lp, -1)
        pol_lp.append(torch.where(alive, plog.gather(1, idx).squeeze(1), zero))
        smp_lp.append(torch.where(alive, logp.gather(1, idx).squeeze(1), zero))
        if use_ref:
            ref_lp.append(torch.where(alive[rs], torch.log_softmax(lr, -1).gather(1, idx[rs]).squeeze(1), zero))
        toks.append(tok)
        resp_mask.append(alive)
        finished = finished | (alive & (tok == eos_token_id))

        if t == max_new_tokens - 1 or bool(finished.all()):
            break
        step_ids, step_pos = idx, cnt.unsqueeze(1)
        kbias[:, P + t].masked_fill_(alive, 0.0)
        cnt = cnt + alive.long()

    response = torch.stack(toks, 1)
    response_mask = torch.stack(resp_mask, 1).long()
    ref_logprobs = None
    if use_ref:
        ref_logprobs = torch.stack(ref_lp, 1)
        if not all_rows:  # β = 0 rows: μ was not run, report 0 (as the generic path does)
            full = torch.zeros(N, ref_logprobs.shape[1], dtype=ref_logprobs.dtype, device=device)
            full[rs] = ref_logprobs
            ref_logprobs = full
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
