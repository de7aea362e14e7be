"""nlhf.sampling: the token-level geometric mixture (the paper's App. F.1), KV-cached batched sampling, EOS
handling, and response log-probs."""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nlhf.models import ModelConfig, build_policy
from nlhf.sampling.decode import generate, generate_uncached, sample_categorical
from nlhf.sampling.logprobs import response_logprobs
from nlhf.sampling.mixture import mixture_logprobs

WORDS = "the cat dog sat on a mat ran far and then slept ate fish summary text is short long".split()


def tiny_tokenizer():
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", "<sep>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   sep_token="<sep>", padding_side="left")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def models_(tok):
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=4, n_positions=64)
    return build_policy(cfg, tok, seed=0), build_policy(cfg, tok, seed=1)


def prompts(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


TEXTS = ["the cat sat on a mat", "dog ran", "a fish", "the dog ate fish and then slept on the mat"]


# ---------------------------------------------------------------------------------------------------------------
# mixture_logprobs identities


def test_mixture_endpoints_and_normalisation():
    g = torch.Generator().manual_seed(0)
    lp, lr = torch.randn(5, 3, 11, generator=g), torch.randn(5, 3, 11, generator=g)
    assert torch.equal(mixture_logprobs(lp, lr, 0.0), torch.log_softmax(lp, -1))
    assert torch.equal(mixture_logprobs(lp, lr, 1.0), torch.log_softmax(lr, -1))
    for b in (0.25, 0.5, 0.9):
        m = mixture_logprobs(lp, lr, b)
        assert torch.allclose(m.exp().sum(-1), torch.ones(5, 3), atol=1e-6)
        # geometric mixture: π^(1−β) μ^β / Z, whatever the logits' per-row offsets
        lp_s, lr_s = lp + 3.0, lr - 7.0
        assert torch.allclose(mixture_logprobs(lp_s, lr_s, b), m, atol=1e-5)
        geo = (1 - b) * torch.log_softmax(lp, -1) + b * torch.log_softmax(lr, -1)
        assert torch.allclose(m, torch.log_softmax(geo, -1), atol=1e-5)


def test_mixture_per_row_beta():
    g = torch.Generator().manual_seed(1)
    lp, lr = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    lr[:, 0] = -math.inf  # a token the reference forbids: β=0 rows must still be exact, no NaN
    beta = torch.tensor([0.0, 0.3, 1.0, 0.7])
    m = mixture_logprobs(lp, lr, beta)
    assert not torch.isnan(m).any()
    assert torch.equal(m[0], torch.log_softmax(lp[0], -1))
    assert torch.equal(m[2], torch.log_softmax(lr[2], -1))
    for i in (1, 3):
        assert torch.allclose(m[i], mixture_logprobs(lp[i], lr[i], float(beta[i])), atol=1e-6)
    # [B, T, V] logits with a [B] β broadcast over T
    lp3, lr3 = torch.randn(4, 5, 7, generator=g), torch.randn(4, 5, 7, generator=g)
    m3 = mixture_logprobs(lp3, lr3, beta)
    assert torch.allclose(m3[1], mixture_logprobs(lp3[1], lr3[1], 0.3), atol=1e-6)
    with pytest.raises(ValueError):
        mixture_logprobs(lp, lr, 1.5)


# ---------------------------------------------------------------------------------------------------------------
# the sampler's first-token distribution is the mixture


def test_sample_categorical_inverse_cdf():
    """One uniform per row: frequencies match the distribution, zero-probability tokens are never drawn (also not
    at the ends of the vocabulary), a point mass always gives its token, and the generator fixes the draws."""
    p = torch.tensor([0.0, 0.1, 0.0, 0.6, 0.3, 0.0])
    n = 50_000
    logp = p.log().expand(n, -1)
    draws = sample_categorical(logp, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=len(p)).double() / n
    sigma = (p.double() * (1 - p.double()) / n).sqrt()
    assert (freq[p == 0] == 0).all()
    assert ((freq - p.double()).abs() <= 5 * sigma + 1e-9).all(), freq
    point = torch.full((3, 6), -math.inf)
    point[torch.arange(3), torch.tensor([0, 5, 2])] = 0.0
    assert sample_categorical(point, torch.Generator().manual_seed(1)).tolist() == [0, 5, 2]
    a = sample_categorical(logp[:100], torch.Generator().manual_seed(7))
    b = sample_categorical(logp[:100], torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_first_token_frequencies_match_mixture(tok, models_, beta):
    policy, ref = models_
    ids, mask = prompts(tok, ["the cat sat on"])
    # random-init models are near uniform; add distinct fixed biases to their logits (forward hooks) so the
    # policy, reference and mixture distributions are far apart and a wrong mixture would be detected
    g = torch.Generator().manual_seed(10)
    b_pol, b_ref = 2 * torch.randn(len(tok), generator=g), 2 * torch.randn(len(tok), generator=g)
    hooks = [policy.lm_head.register_forward_hook(lambda m, i, o: o + b_pol),
             ref.lm_head.register_forward_hook(lambda m, i, o: o + b_ref)]
    try:
        with torch.no_grad():
            lp = policy(input_ids=ids, attention_mask=mask).logits[0, -1]
            lr = ref(input_ids=ids, attention_mask=mask).logits[0, -1]
        n = 20_000
        gen = generate(policy, ids.expand(n, -1), mask.expand(n, -1), ref=ref, beta=beta, max_new_tokens=1,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       generator=torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    p = torch.softmax((1 - beta) * lp.double() + beta * lr.double(), -1)
    freq = torch.bincount(gen.response[:, 0], minlength=len(tok)).double() / n
    sigma = (p * (1 - p) / n).sqrt()
    # every token's frequency within 5 binomial std of softmax((1−β)l_θ + βl_μ) (+1e-4 for ~zero-prob tokens)
    assert ((freq - p).abs() <= 5 * sigma + 1e-4).all(), ((freq - p).abs() / sigma).max()
    # power: the other candidate distributions are rejected by the same test
    for other in {0.0, 0.5, 1.0} - {beta}:
        q = torch.softmax((1 - other) * lp.double() + other * lr.double(), -1)
        assert ((freq - q).abs() > 5 * sigma + 1e-4).any()


# ---------------------------------------------------------------------------------------------------------------
# KV cache == full recomputation; EOS handling; log-probs


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, "rows"])
def test_cached_equals_uncached(tok, models_, beta):
    policy, ref = models_
    ids, mask = prompts(tok, TEXTS)
    if beta == "rows":
        beta = torch.tensor([0.0, 0.25, 1.0, 0.75])
    kw = dict(ref=ref, beta=beta, max_new_tokens=12, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
              logprobs=True)
    a = generate(policy, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    b = generate_uncached(policy, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert torch.equal(a.response_mask, b.response_mask)
    assert torch.allclose(a.policy_logprobs, b.policy_logprobs, atol=1e-5)
    assert torch.allclose(a.sample_logprobs, b.sample_logprobs, atol=1e-5)
    if isinstance(beta, float) and beta == 0.0:
        assert a.ref_logprobs is None  # self-play: the reference never runs
    else:
        assert torch.allclose(a.ref_logprobs, b.ref_logprobs, atol=1e-5)


def test_per_row_beta_rows_sample_from_their_own_distribution(tok, models_):
    """One batched call with β=[0,..,0, 1,..,1] draws y ~ π_θ and y' ~ μ for the same prompts: the distribution
    each row sampled from is the policy's (β=0 rows) or the reference's (β=1 rows), exactly."""
    policy, ref = models_
    ids, mask = prompts(tok, TEXTS)
    beta = torch.tensor([0.0] * 4 + [1.0] * 4)
    g = generate(policy, torch.cat([ids, ids]), torch.cat([mask, mask]), ref=ref, beta=beta, max_new_tokens=10,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                 generator=torch.Generator().manual_seed(0), logprobs=True)
    m = g.response_mask.bool()
    assert torch.allclose(g.sample_logprobs[:4][m[:4]], g.policy_logprobs[:4][m[:4]], atol=1e-6)
    assert torch.allclose(g.sample_logprobs[4:][m[4:]], g.ref_logprobs[4:][m[4:]], atol=1e-6)


def test_eos_handling(tok, models_):
    policy, _ = models_
    eos = tok.eos_token_id
    # add a bias to the EOS logit (a forward hook, removed afterwards) so that rows end at different steps
    bias = torch.zeros(len(tok))
    bias[eos] = 2.5
    handle = policy.lm_head.register_forward_hook(lambda m, i, o: o + bias.to(o.dtype))
    ids, mask = prompts(tok, TEXTS * 4)
    try:
        g = generate(policy, ids, mask, max_new_tokens=20, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                     generator=torch.Generator().manual_seed(0), logprobs=True)
    finally:
        handle.remove()
    has_eos = (g.response == eos).any(1)
    assert has_eos.any() and g.response.shape[1] <= 20
    for row, m in zip(g.response, g.response_mask):
        hits = (row == eos).nonzero()
        if len(hits):
            k = int(hits[0])
            assert m[: k + 1].all() and not m[k + 1:].any()  # mask ends AT the EOS
            assert (row[k + 1:] == tok.pad_token_id).all()  # only pad after EOS
        else:
            assert m.all()
    assert torch.equal(g.attention_mask[:, g.prompt_len:], g.response_mask)
    assert (g.policy_logprobs[~g.response_mask.bool()] == 0).all()
    # early stop: if every row ended, T is the last EOS position + 1
    if has_eos.all():
        assert g.response.shape[1] == int(g.response_mask.sum(1).max())


def test_response_logprobs_match_sampling(tok, models_):
    policy, ref = models_
    ids, mask = prompts(tok, TEXTS)
    g = generate_uncached(policy, ids, mask, ref=ref, beta=torch.tensor([0.0, 0.5, 1.0, 0.0]), max_new_tokens=10,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                          generator=torch.Generator().manual_seed(5), logprobs=True)
    lp = response_logprobs(policy, g.sequences, g.attention_mask, g.prompt_len)
    assert lp.shape == g.response.shape
    assert torch.allclose(lp, g.policy_logprobs, atol=1e-5)
    assert torch.allclose(lp.sum(1), g.policy_logprobs.sum(1), atol=1e-4)
    mixes = torch.tensor([False, True, True, False])  # ref_logprobs are reported on β > 0 rows only (0 elsewhere)
    assert torch.allclose(response_logprobs(ref, g.sequences, g.attention_mask, g.prompt_len)[mixes],
                          g.ref_logprobs[mixes], atol=1e-5)
    assert (g.ref_logprobs[~mixes] == 0).all()
    # the same response scored in a batch with different left padding gives the same log-probs
    lp_alone = response_logprobs(policy, g.sequences[1:2, -g.response.shape[1] - 2:],
                                 g.attention_mask[1:2, -g.response.shape[1] - 2:], 2)
    assert torch.allclose(lp_alone, lp[1:2], atol=1e-5)
    # differentiable
    policy.zero_grad()
    response_logprobs(policy, g.sequences, g.attention_mask, g.prompt_len).sum().backward()
    assert policy.transformer.wte.weight.grad is not None


def test_input_checks(tok, models_):
    policy, ref = models_
    ids, mask = prompts(tok, TEXTS)
    kw = dict(max_new_tokens=3, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with pytest.raises(ValueError, match="reference"):
        generate(policy, ids, mask, beta=0.5, **kw)
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate(policy, ids.flip(1), mask.flip(1), **kw)
    with pytest.raises(ValueError, match="beta"):
        generate(policy, ids, mask, ref=ref, beta=torch.tensor([0.1, 0.2]), **kw)


def test_generate_restores_train_mode_and_is_repeatable(tok, models_):
    policy, _ = models_
    ids, mask = prompts(tok, TEXTS)
    policy.train()
    kw = dict(max_new_tokens=8, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    a = generate(policy, ids, mask, generator=torch.Generator().manual_seed(9), **kw)
    b = generate(policy, ids, mask, generator=torch.Generator().manual_seed(9), **kw)
    assert policy.training
    policy.eval()
    assert torch.equal(a.sequences, b.sequences)
    g = generate(policy, ids, mask, temperature=0.0, **kw)  # greedy
    assert torch.equal(g.sequences, generate_uncached(policy, ids, mask, temperature=0.0, **kw).sequences)


def test_logprobs_are_bookkeeping_only(tok, models_):
    """Without ``logprobs`` the sampler skips the log-probability bookkeeping (the trainer scores its samples
    itself) and draws exactly the same tokens."""
    policy, ref = models_
    ids, mask = prompts(tok, TEXTS)
    kw = dict(ref=ref, beta=torch.tensor([0.0, 0.5, 1.0, 0.25]), max_new_tokens=10, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id)
    lean = generate(policy, ids, mask, generator=torch.Generator().manual_seed(4), **kw)
    full = generate(policy, ids, mask, generator=torch.Generator().manual_seed(4), logprobs=True, **kw)
    assert torch.equal(lean.sequences, full.sequences) and torch.equal(lean.response_mask, full.response_mask)
    assert lean.policy_logprobs is None and lean.sample_logprobs is None and lean.ref_logprobs is None
    assert full.policy_logprobs is not None and full.ref_logprobs is not None
