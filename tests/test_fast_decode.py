"""nlhf.sampling.fast_decode: the static-KV GPT-2 decoder behind ``generate`` draws the same tokens as the generic paths
(transformers cached loop and full recomputation) for a given seed, and falls back when it cannot."""

import pytest
import torch

from nlhf.sampling import fast_decode
from nlhf.sampling.decode import generate, generate_uncached
from tests import test_sampling

TEXTS, _prompts = test_sampling.TEXTS, test_sampling.prompts
models_ = test_sampling.models_  # the same tiny GPT-2 policy and reference (a module fixture)


@pytest.fixture(scope="module")
def tok():
    return test_sampling.tiny_tokenizer()


def _generic(monkeypatch, fn, *a, **kw):
    """``fn`` with the fast path switched off (the transformers loop / full recomputation)."""
    with monkeypatch.context() as m:
        m.setenv("NLHF_FAST_DECODE", "0")
        return fn(*a, **kw)


def _same(a, b):
    assert torch.equal(a.sequences, b.sequences)
    assert torch.equal(a.response, b.response)
    assert torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.attention_mask, b.attention_mask)
    assert a.prompt_len == b.prompt_len
    assert torch.allclose(a.policy_logprobs, b.policy_logprobs, atol=1e-5)
    assert torch.allclose(a.sample_logprobs, b.sample_logprobs, atol=1e-5)
    assert (a.ref_logprobs is None) == (b.ref_logprobs is None)
    if a.ref_logprobs is not None:
        assert torch.allclose(a.ref_logprobs, b.ref_logprobs, atol=1e-5)


def test_supports(models_):
    policy, _ = models_
    assert fast_decode.supports(policy)
    assert not fast_decode.supports(None)
    h = policy.lm_head.register_forward_hook(lambda m, i, o: o)
    try:
        assert not fast_decode.supports(policy)  # hooks would be skipped: generic path
    finally:
        h.remove()
    assert fast_decode.supports(policy)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, "rows"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_same_tokens_as_generic_paths(tok, models_, monkeypatch, beta, temperature):
    policy, ref = models_
    ids, mask = _prompts(tok, TEXTS)  # left padding of 0..7 tokens
    assert not mask.all()
    if beta == "rows":
        ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
        beta = torch.tensor([0.0, 0.25, 1.0, 0.75, 0.5, 0.0, 1.0, 0.1])
    kw = dict(ref=ref, beta=beta, max_new_tokens=16, temperature=temperature, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, logprobs=True)
    fast = generate(policy, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    cached = _generic(monkeypatch, generate, policy, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    full = generate_uncached(policy, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    _same(fast, cached)
    _same(fast, full)


def test_fast_path_is_taken(tok, models_, monkeypatch):
    policy, ref = models_
    ids, mask = _prompts(tok, TEXTS)
    calls = []
    orig = fast_decode.GPT2Decoder.forward
    monkeypatch.setattr(fast_decode.GPT2Decoder, "forward", lambda self, *a: calls.append(1) or orig(self, *a))
    generate(policy, ids, mask, ref=ref, beta=0.5, max_new_tokens=4, eos_token_id=tok.eos_token_id,
             pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2 * 4  # policy + reference, one prefill + 3 decode steps each


def test_eos_early_stop_and_generator_state(tok, models_, monkeypatch):
    """Rows ending at different steps (EOS made likely by a bias on its embedding row's logit: we scale the tied
    lm_head/wte row, no hook, so the fast path runs): identical outputs, the same early stop, and the generator is
    left in the same state (so a training loop's later draws are unchanged)."""
    policy, ref = models_
    eos = tok.eos_token_id
    ids, mask = _prompts(tok, TEXTS * 3)
    with torch.no_grad():
        saved = policy.lm_head.weight[eos].clone()
        policy.lm_head.weight[eos] *= 25.0
    try:
        kw = dict(ref=ref, beta=torch.tensor([0.0, 0.5, 1.0] * 4), max_new_tokens=30, eos_token_id=eos,
                  pad_token_id=tok.pad_token_id, logprobs=True)
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        fast = generate(policy, ids, mask, generator=g1, **kw)
        slow = _generic(monkeypatch, generate, policy, ids, mask, generator=g2, **kw)
    finally:
        with torch.no_grad():
            policy.lm_head.weight[eos] = saved
    _same(fast, slow)
    assert (fast.response == eos).any()
    assert torch.equal(g1.get_state(), g2.get_state())


def test_greedy_and_self_play(tok, models_, monkeypatch):
    policy, ref = models_
    ids, mask = _prompts(tok, TEXTS)
    kw = dict(max_new_tokens=10, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, logprobs=True)
    _same(generate(policy, ids, mask, temperature=0.0, **kw), generate_uncached(policy, ids, mask, temperature=0.0, **kw))
    a = generate(policy, ids, mask, generator=torch.Generator().manual_seed(1), **kw)
    assert a.ref_logprobs is None  # β = 0: the reference never runs
    _same(a, generate_uncached(policy, ids, mask, generator=torch.Generator().manual_seed(1), **kw))


def test_falls_back_for_unsupported_models(tok, monkeypatch):
    """A non-GPT-2 architecture (here GPT-Neo) takes the generic path and still works."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
                       attention_types=[[["global"], 2]], intermediate_size=64)
    neo = GPTNeoForCausalLM(cfg).eval()
    assert not fast_decode.supports(neo)
    ids, mask = _prompts(tok, TEXTS)
    kw = dict(max_new_tokens=6, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, logprobs=True)
    a = generate(neo, ids, mask, generator=torch.Generator().manual_seed(2), **kw)
    b = generate_uncached(neo, ids, mask, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a.sequences, b.sequences)


def test_too_long_for_positions_falls_back(tok, models_):
    """P + T beyond n_positions: the fast path declines (the generic path reports the error its own way)."""
    policy, _ = models_
    ids, mask = _prompts(tok, TEXTS)
    assert fast_decode.can_decode([policy], ids.device, ids.shape[1] + 10 - 1)
    assert not fast_decode.can_decode([policy], ids.device, ids.shape[1] + 200 - 1)


@pytest.mark.parametrize("repeats", [2, 4])
def test_repeated_prompts_are_prefilled_once_with_the_same_bits(tok, models_, repeats):
    """Rows repeating a prompt (y and y′ of Nash-MD, several samples per prompt) are encoded once and copied: the
    logits and the keys and values are bitwise those of encoding the distinct prompts, and the model runs on the
    distinct rows only."""
    policy, _ = models_
    ids, mask = _prompts(tok, TEXTS)  # 4 distinct prompts, left padding of 0..7 tokens
    rep_ids, rep_mask = ids.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0)
    with torch.no_grad():
        once = fast_decode.GPT2Backend(policy.eval(), ids, mask, slice(None), 4)
        each = fast_decode.GPT2Backend(policy, rep_ids, rep_mask, slice(None), 4)
        rows = []
        orig = fast_decode.GPT2Decoder.forward
        with pytest.MonkeyPatch.context() as m:
            m.setattr(fast_decode.GPT2Decoder, "forward", lambda self, i, *a: rows.append(len(i)) or orig(self, i, *a))
            expected, got = once.prefill(), each.prefill()
    assert rows == [len(ids), len(ids)]  # the repeated batch too ran on the distinct prompts only
    assert torch.equal(got, expected.repeat_interleave(repeats, 0))
    P = ids.shape[1]
    for k1, v1, kr, vr in zip(once.decoder.k, once.decoder.v, each.decoder.k, each.decoder.v):
        assert torch.equal(kr[..., :P], k1[..., :P].repeat_interleave(repeats, 0))
        assert torch.equal(vr[:, :, :P], v1[:, :, :P].repeat_interleave(repeats, 0))
