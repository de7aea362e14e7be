"""Supervised stages learn, and every training loop resumes after an interruption bitwise (CPU)."""

import copy

import pytest
import torch

from nlhf.models import ModelConfig, PreferenceModel, build_policy, build_preference_model, build_reward_model
from nlhf.tasks import SyntheticTask, SyntheticTaskConfig
from nlhf.tokenization import build_word_tokenizer
from nlhf.training.policy_gradient import MethodConfig, PGConfig, train_policy
from nlhf.training.preference import pair_loss
from nlhf.training.sft import sft_batch, sft_loss, tokenize_sft
from nlhf.training.supervised import SupervisedConfig, fit

SMALL = ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64)


@pytest.fixture(scope="module")
def task():
    return SyntheticTask(SyntheticTaskConfig.tiny(n_sft=400, n_pref_train=3000, n_pref_test=300, n_prompts_train=64))


@pytest.fixture(scope="module")
def tok(task, tmp_path_factory):
    return build_word_tokenizer(task.vocabulary(), tmp_path_factory.mktemp("tok"))


def _sft_setup(task, tok):
    ds = task.sft_dataset("train")
    ex = tokenize_sft(tok, list(ds["prompt"]), list(ds["completion"]))

    def loss_fn(model, idx):
        return sft_loss(model, sft_batch([ex[i] for i in idx], tok.pad_token_id))

    return ex, loss_fn


def _mean_loss(model, loss_fn, n):
    with torch.no_grad():
        return loss_fn(model, list(range(n))).item()


def test_sft_learns(task, tok, tmp_path):
    ex, loss_fn = _sft_setup(task, tok)
    model = build_policy(SMALL, tok, seed=0)
    before = _mean_loss(model, loss_fn, len(ex))
    fit(model, loss_fn, len(ex), SupervisedConfig(steps=300, batch_size=32, lr=1e-2, warmup_steps=10),
        tmp_path / "s.pt")
    after = _mean_loss(model, loss_fn, len(ex))
    assert after < before - 1.0, (before, after)  # cross-entropy falls by more than 1 nat/token


@pytest.mark.parametrize("build", [build_preference_model, build_reward_model])
def test_pair_models_learn(task, tok, tmp_path, build):
    tr = task.preference_dataset("train")
    X, Y, YP, Z = list(tr["prompt"]), list(tr["y"]), list(tr["y_prime"]), torch.tensor(list(tr["label"]))
    model = build(SMALL, tok, seed=0)
    probe = list(range(512))  # fixed pairs the loss is measured on

    def loss():
        with torch.no_grad():
            return pair_loss(model, [X[i] for i in probe], [Y[i] for i in probe], [YP[i] for i in probe],
                             Z[probe]).item()

    start = loss()
    fit(model, lambda m, idx: pair_loss(m, [X[i] for i in idx], [Y[i] for i in idx], [YP[i] for i in idx], Z[idx]),
        len(X), SupervisedConfig(steps=300, batch_size=64, lr=3e-3, warmup_steps=10), tmp_path / "p.pt")
    end = loss()
    assert end < start - 0.02, (start, end)  # label cross-entropy falls by > 0.02 nats


class _DDPLike(torch.nn.Module):
    """Stands in for the wrapper ``accelerator.prepare`` returns in a multi-process run (DDP): only ``forward`` and
    ``.module`` are reachable, not the scorer's own methods."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *a, **kw):
        return self.module(*a, **kw)


@pytest.mark.parametrize("build", [build_preference_model, build_reward_model])
def test_pair_loss_goes_through_forward(task, tok, build):
    tr = task.preference_dataset("train")
    X, Y, YP = list(tr["prompt"])[:16], list(tr["y"])[:16], list(tr["y_prime"])[:16]
    Z = torch.tensor(list(tr["label"])[:16])
    model = build(SMALL, tok, seed=0)
    wrapped = _DDPLike(model)
    assert not hasattr(wrapped, "logits")
    loss = pair_loss(wrapped, X, Y, YP, Z)
    assert torch.allclose(loss, pair_loss(model, X, Y, YP, Z))
    assert torch.allclose(loss, torch.nn.functional.binary_cross_entropy_with_logits(
        model.logits(X, Y, YP), Z.float()), atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())


class Interrupt(Exception):
    pass


def _killing(loss_fn, at):
    calls = {"n": 0}

    def f(model, idx):
        calls["n"] += 1
        if calls["n"] == at:
            raise Interrupt
        return loss_fn(model, idx)

    return f


def test_supervised_resume_is_bitwise(task, tok, tmp_path):
    ex, loss_fn = _sft_setup(task, tok)
    cfg = SupervisedConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=3, checkpoint_every=7, log_every=5)
    a = build_policy(SMALL, tok, seed=0)
    fit(a, loss_fn, len(ex), cfg, tmp_path / "a.pt", fingerprint="x")
    b = build_policy(SMALL, tok, seed=0)
    with pytest.raises(Interrupt):
        fit(b, _killing(loss_fn, 17), len(ex), cfg, tmp_path / "b.pt", fingerprint="x")
    b = build_policy(SMALL, tok, seed=0)  # a fresh process: weights come back from the checkpoint
    log = fit(b, loss_fn, len(ex), cfg, tmp_path / "b.pt", fingerprint="x")
    assert log["train"][-1]["step"] == 30
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    # a checkpoint written for other params is ignored, not resumed
    c = build_policy(SMALL, tok, seed=0)
    fit(c, loss_fn, len(ex), SupervisedConfig(steps=2, batch_size=16, checkpoint_every=1), tmp_path / "b.pt",
        fingerprint="other")


class _KillingPM(torch.nn.Module):
    def __init__(self, pm, at):
        super().__init__()
        self.pm, self.at, self.n = pm, at, 0
        self.kind = pm.kind
        self.tokenizer = pm.tokenizer

    def logits_from_ids(self, *a):
        self.n += 1
        if self.n == self.at:
            raise Interrupt
        return self.pm.logits_from_ids(*a)


@pytest.mark.parametrize("method", [MethodConfig(kind="nash_md", tau=0.05, beta=0.5),
                                    MethodConfig(kind="nash_ema", tau=0.05, beta=0.999)])
def test_policy_gradient_resume_is_bitwise(task, tok, tmp_path, method):
    pm = build_preference_model(SMALL, tok, seed=1).eval()
    ref = build_policy(SMALL, tok, seed=2).eval()
    prompts = task.prompts("train")
    cfg = PGConfig(steps=8, batch_size=4, lr=1e-3, checkpoint_every=3, log_every=1, ema_reference_steps=20)
    kw = dict(max_new_tokens=6, temperature=1.0, fingerprint="x")
    a = copy.deepcopy(ref).train()
    _, ema_a = train_policy(a, ref, pm, tok, prompts, method, cfg, state_path=tmp_path / "a.pt", **kw)
    b = copy.deepcopy(ref).train()
    with pytest.raises(Interrupt):
        train_policy(b, ref, _KillingPM(pm, 6), tok, prompts, method, cfg, state_path=tmp_path / "b.pt", **kw)
    b = copy.deepcopy(ref).train()
    log, ema_b = train_policy(b, ref, pm, tok, prompts, method, cfg, state_path=tmp_path / "b.pt", **kw)
    assert log["train"][-1]["step"] == 8
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    if ema_a is not None:
        for pa, pb in zip(ema_a.state_dict().values(), ema_b.state_dict().values()):
            assert torch.equal(pa, pb)
        # the averaged policy is strictly between SFT and the last iterate
        assert not torch.equal(next(ema_a.parameters()), next(a.parameters()))


def test_policy_gradient_raises_on_nan_with_step(task, tok, tmp_path):
    pm = build_preference_model(SMALL, tok, seed=1).eval()
    ref = build_policy(SMALL, tok, seed=2).eval()
    pol = copy.deepcopy(ref)
    with torch.no_grad():
        next(pol.parameters()).fill_(float("nan"))
    with pytest.raises((FloatingPointError, RuntimeError), match="step 0|probability tensor"):
        train_policy(pol, ref, pm, tok, task.prompts("train"), MethodConfig(kind="nash_md", tau=0.1, beta=0.0),
                     PGConfig(steps=2, batch_size=2), max_new_tokens=4, temperature=1.0, state_path=tmp_path / "n.pt")
