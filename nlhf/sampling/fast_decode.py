"""A lean incremental decoder for GPT-2-family policies: the fast path behind :func:`nlhf.sampling.decode.generate`.

At the sizes this project trains on CPU (2 layers, width 128), one ``transformers`` forward per token costs far more
in Python and per-call set-up (mask building, cache objects, output dataclasses, kwarg plumbing) than in arithmetic.
This module runs the SAME weights with plain torch ops:

* static KV tensors, preallocated once per call (per layer and model: K as [N, H, D, P + T_max], transposed so the
  decode step's QKᵀ is a plain batched GEMM; V as [N, H, P + T_max, D]), written in place;
* the key-padding mask is a preallocated boolean row per sequence, updated with one column write per token;
* it is only a backend (``prefill`` / ``step``, :class:`GPT2Backend`): the loop, the mixture, sampling and EOS
  bookkeeping are :func:`nlhf.sampling.decode.generate`'s, the same code for every backend, so for a given seed the
  tokens are the ones :func:`nlhf.sampling.decode.generate_uncached` draws (tested in tests/test_fast_decode.py).

Supported: ``transformers`` ``GPT2LMHeadModel`` (no cross-attention, no ``reorder_and_upcast_attn``), with no
forward hooks registered on any of its modules (hooks would be skipped here, so such models take the generic
path). For anything else :func:`can_decode` is False and ``generate`` runs the ``transformers`` backend. Set
``NLHF_FAST_DECODE=0`` to force it.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from nlhf.sampling.transformers_compat import unwrap

__all__ = ["supports", "can_decode", "GPT2Backend", "GPT2Decoder"]

_TANH_GELU = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
_EXACT_GELU = {"gelu"}


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
    m = unwrap(model)
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
    """The weights of one GPT-2 LM (views, no copies) + its static KV cache for one
    :func:`nlhf.sampling.decode.generate` call."""

    def __init__(self, model, n_rows: int, max_len: int):
        m = unwrap(model)
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


def can_decode(models, device, max_len: int) -> bool:
    """True if every model is a supported GPT-2 (:func:`supports`) on ``device`` with room for ``max_len``
    positions, and ``NLHF_FAST_DECODE`` is not ``0``: then :func:`nlhf.sampling.decode.generate` decodes on
    :class:`GPT2Backend` s, otherwise on the ``transformers`` loop."""
    if os.environ.get("NLHF_FAST_DECODE", "1") == "0":
        return False
    for m in models:
        if not supports(m):
            return False
        m_ = unwrap(m)
        if m_.transformer.wte.weight.device != device or max_len > m_.config.n_positions:
            return False
    return True


class GPT2Backend:
    """One model's side of the decode loop of :func:`nlhf.sampling.decode.generate` on a :class:`GPT2Decoder`, for the
    rows ``rows`` of the batch (the reference runs only on the rows that mix it in).

    ``prefill()`` encodes the left-padded prompts and returns the last position's logits; ``step(tok, alive, t)``
    feeds the tokens sampled at step t − 1 (all rows of the batch; this backend takes its own) and returns the
    next logits. The key-padding mask is a preallocated row per sequence, one column written per token.

    Rows that repeat a prompt (Nash-MD's y and y′ of one prompt, several samples per prompt) are prefilled once:
    the prompt is encoded on the distinct rows and its keys, values and logits copied to the repeats. A row's
    encoding does not depend on the other rows of the batch, so the copies are bitwise what encoding every row
    gives (tests/test_fast_decode.py), at a fraction of the prefill's cost (half of it for y and y′, three
    quarters for four samples per prompt)."""

    def __init__(self, model, prompt_ids: Tensor, prompt_mask: Tensor, rows, max_new_tokens: int):
        ids, mask = prompt_ids[rows], prompt_mask[rows].long()
        n, prompt_len = ids.shape
        device = ids.device
        self.model, self.rows, self.ids, self.mask, self.prompt_len = model, rows, ids, mask, prompt_len
        self.decoder = GPT2Decoder(model, n, prompt_len + max_new_tokens - 1)  # the last token is never fed back
        # the key mask in additive form for the decode steps: 0 = attend, −inf = pad / finished row's slot
        self.key_bias = torch.full((n, prompt_len + max_new_tokens - 1), float("-inf"), dtype=self.decoder.wte.dtype,
                                   device=device)
        self.key_bias[:, :prompt_len].masked_fill_(mask.bool(), 0.0)
        self.n_real = mask.sum(-1)  # real tokens so far = position of the next fed token

    @staticmethod
    def _prefill_inputs(mask: Tensor) -> tuple[Tensor, Tensor]:
        """Positions and the prefill's boolean attention mask [n, 1, P, P] of left-padded prompts: causal AND key
        is real; each position may always see itself (pad queries would otherwise have no key at all -> NaN K/V
        downstream; their outputs are never used and their keys stay masked)."""
        prompt_len = mask.shape[1]
        causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=mask.device).tril()
        eye = torch.eye(prompt_len, dtype=torch.bool, device=mask.device)
        return (mask.cumsum(-1) - 1).clamp(min=0), ((causal & mask.bool()[:, None, :]) | eye)[:, None]

    def prefill(self) -> Tensor:
        distinct, inverse = torch.unique(torch.cat([self.ids, self.mask], 1), dim=0, return_inverse=True)
        if len(distinct) == len(self.ids):  # no repeated prompt: encode the rows as they are
            positions, attn_mask = self._prefill_inputs(self.mask)
            return self.decoder.forward(self.ids, positions, 0, attn_mask).float()
        P = self.prompt_len
        positions, attn_mask = self._prefill_inputs(distinct[:, P:])
        once = GPT2Decoder(self.model, len(distinct), P)
        logits = once.forward(distinct[:, :P], positions, 0, attn_mask)
        for kc, vc, k1, v1 in zip(self.decoder.k, self.decoder.v, once.k, once.v):
            kc[:, :, :, :P].copy_(k1[inverse])
            vc[:, :, :P].copy_(v1[inverse])
        return logits[inverse].float()

    def step(self, tok: Tensor, alive: Tensor, t: int) -> Tensor:
        tok, alive = tok[self.rows], alive[self.rows]
        col = self.prompt_len + t - 1
        pos = self.n_real.unsqueeze(1)
        self.key_bias[:, col].masked_fill_(alive, 0.0)
        self.n_real = self.n_real + alive.long()
        return self.decoder.forward(tok.unsqueeze(1), pos, col, self.key_bias[:, None, None, :col + 1]).float()
