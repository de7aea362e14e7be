"""Supervised stages learn, and every training loop resumes after an interruption bitwise (CPU), but only from a
state written for the same params and upstream inputs, and never from a file that cannot be read safely."""

import copy
import math
import pickle

import re
from pathlib import Path

import pytest
import torch

from nlhf.models import ModelConfig, build_policy, build_preference_model, build_reward_model
from nlhf.models.lora import LoraSpec
from nlhf.tasks import SyntheticTask
from nlhf.tokenization import build_word_tokenizer
from nlhf.training.policy_gradient import PolicyGradientConfig, PolicyGradientTrainer
from nlhf.training.preference import pair_loss
from nlhf.training.sft import sft_batch, sft_loss, tokenize_sft
from nlhf.training.supervised import SupervisedConfig, fit
from tests.faulty_judges import FaultyJudge, Interrupt

SMALL = ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: a second intra-op thread gains nothing, and on a machine whose cores are busy with
    other work its spinning OpenMP workers made a preference-model step up to 70x slower (0.8 s vs 0.012 s)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def task(tiny_config):
    return SyntheticTask(tiny_config(n_sft=400, n_pref_train=3000, n_pref_test=300, n_prompts_train=64))


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
    model = build(SMALL, tok, seed=0)
    # token ids once, as the pm / rm stages do (the scorer builds the same rows from ids as from strings)
    prompt_ids, y_ids = model.token_ids(list(tr["prompt"])), model.token_ids(list(tr["y"]), response=True)
    yp_ids, labels = model.token_ids(list(tr["y_prime"]), response=True), torch.tensor(list(tr["label"]))

    def batch_loss(m, idx):
        return pair_loss(m, [prompt_ids[i] for i in idx], [y_ids[i] for i in idx], [yp_ids[i] for i in idx],
                         labels[idx])

    probe = list(range(512))  # fixed pairs the loss is measured on

    def loss():
        with torch.no_grad():
            return batch_loss(model, probe).item()

    start = loss()
    fit(model, batch_loss, len(prompt_ids), SupervisedConfig(steps=300, batch_size=64, lr=3e-3, warmup_steps=10),
        tmp_path / "p.pt")
    end = loss()
    # an untrained scorer stays at log 2 = 0.693 nats; 300 steps take both scorers more than 0.02 nats below it
    assert end < start - 0.02, (start, end)


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
    prompts, ys, y_primes = list(tr["prompt"])[:16], list(tr["y"])[:16], list(tr["y_prime"])[:16]
    labels = torch.tensor(list(tr["label"])[:16])
    model = build(SMALL, tok, seed=0)
    wrapped = _DDPLike(model)
    assert not hasattr(wrapped, "logits")
    loss = pair_loss(wrapped, prompts, ys, y_primes, labels)
    assert torch.allclose(loss, pair_loss(model, prompts, ys, y_primes, labels))
    assert torch.allclose(loss, torch.nn.functional.binary_cross_entropy_with_logits(
        model.logits(prompts, ys, y_primes), labels.float()), atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())


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



def test_supervised_checkpoint_for_other_inputs_is_not_resumed(task, tok, tmp_path, capsys):
    """A state written by a run with another fingerprint (other params or upstream inputs) is ignored with one
    printed line, and the run equals a clean one: resuming it would have returned its step-30 weights untrained."""
    ex, loss_fn = _sft_setup(task, tok)
    long = SupervisedConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=3, checkpoint_every=10)
    fit(build_policy(SMALL, tok, seed=0), loss_fn, len(ex), long, tmp_path / "s.pt", fingerprint="old-pm")
    short = SupervisedConfig(steps=4, batch_size=16, lr=3e-3, warmup_steps=1, checkpoint_every=2)
    clean = build_policy(SMALL, tok, seed=0)
    fit(clean, loss_fn, len(ex), short, tmp_path / "clean.pt", fingerprint="new-pm")
    capsys.readouterr()
    c = build_policy(SMALL, tok, seed=0)
    log = fit(c, loss_fn, len(ex), short, tmp_path / "s.pt", fingerprint="new-pm")
    out = capsys.readouterr().out
    assert out.count("ignoring checkpoint") == 1 and "starting fresh" in out, out
    assert [r["step"] for r in log["train"]] == [4]
    for pa, pb in zip(clean.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb)


def test_unreadable_resume_state_starts_fresh(task, tok, tmp_path, capsys):
    """A resume state cut short (a kill during a write outside save_state, a full disk) is ignored with one line
    naming it, instead of failing every rerun with a deserialisation error."""
    ex, loss_fn = _sft_setup(task, tok)
    cfg = SupervisedConfig(steps=4, batch_size=16, lr=3e-3, warmup_steps=1, checkpoint_every=2)
    clean = build_policy(SMALL, tok, seed=0)
    fit(clean, loss_fn, len(ex), cfg, tmp_path / "clean.pt", fingerprint="x")
    state = tmp_path / "clean.pt"
    (tmp_path / "cut.pt").write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    capsys.readouterr()
    b = build_policy(SMALL, tok, seed=0)
    log = fit(b, loss_fn, len(ex), cfg, tmp_path / "cut.pt", fingerprint="x")
    out = capsys.readouterr().out
    assert re.search(r"ignoring unreadable checkpoint .*cut\.pt .*starting fresh", out), out
    assert log["train"][-1]["step"] == 4
    for pa, pb in zip(clean.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


class _Planted:
    """A pickle that runs code when unpickled without ``weights_only``."""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_planted_resume_state_runs_no_code(tmp_path, capsys):
    from nlhf.training.checkpoint import load_state

    marker = tmp_path / "code_ran"
    planted = _Planted()
    planted.marker = str(marker)
    with open(tmp_path / "state.pt", "wb") as f:
        pickle.dump({"step": 1, "fingerprint": "x", "log": planted}, f)
    torch.save({"step": 1, "fingerprint": "x", "log": planted}, tmp_path / "state2.pt")
    for name in ("state.pt", "state2.pt"):
        assert load_state(tmp_path / name) is None
        assert not marker.exists()
        assert f"ignoring unreadable checkpoint {tmp_path / name}" in capsys.readouterr().out


def test_resume_state_round_trips_with_weights_only(tmp_path):
    """Everything a loop saves (RNG states, numpy numbers in logs) loads with ``weights_only=True``."""
    import numpy as np

    from nlhf.training.checkpoint import load_state, rng_state, save_state, set_rng_state

    np.random.seed(3)
    save_state(tmp_path / "s.pt", {"step": 2, "fingerprint": "x", "log": {"eval": [{"accuracy": np.float64(0.5)}]},
                                   "rng": rng_state()})
    want = np.random.rand(3)
    np.random.seed(99)
    state = load_state(tmp_path / "s.pt")
    assert state["log"]["eval"][0]["accuracy"] == 0.5 and type(state["log"]["eval"][0]["accuracy"]) is float
    set_rng_state(state["rng"])
    assert np.array_equal(np.random.rand(3), want)


def test_fingerprint_covers_upstream_content(tmp_path):
    """The resume fingerprint of a stage changes when an upstream artifact's bytes change (a retrained PM), not
    only when params change."""
    from nlhf.pipeline.artifacts import fingerprint
    from nlhf.training.policy_gradient import PGConfig as PG

    pm = tmp_path / "models" / "pm"
    pm.mkdir(parents=True)
    (pm / "head.safetensors").write_bytes(b"weights v1")
    a = fingerprint(PG(), inputs=[pm])
    assert fingerprint(PG(), inputs=[pm]) == a
    (pm / "head.safetensors").write_bytes(b"weights v2")
    assert fingerprint(PG(), inputs=[pm]) != a
    (pm / "extra.json").write_text("{}")
    b = fingerprint(PG(), inputs=[pm])
    assert b != a and fingerprint(PG(lr=1e-3), inputs=[pm]) != b


def _train(policy, ref, judge, tok, prompts, config, **kw):
    out = PolicyGradientTrainer(policy, ref, judge, tok, prompts, config, **kw).train()
    return out.log, out.average


@pytest.mark.parametrize("method", [dict(method="nash_md", tau=0.05, beta=0.5),
                                    dict(method="nash_ema", tau=0.05, ema_beta=0.999),
                                    dict(method="nash_md", tau=0.05, beta=0.5, lora=LoraSpec(r=2))])
def test_policy_gradient_resume_is_bitwise(task, tok, tmp_path, method):
    pm = build_preference_model(SMALL, tok, seed=1).eval()
    ref = build_policy(SMALL, tok, seed=2).eval()
    prompts = task.prompts("train")
    # a decaying learning rate: the resumed run must restore the schedule's position too
    cfg = PolicyGradientConfig(steps=8, batch_size=4, lr=1e-3, final_lr_fraction=0.1, checkpoint_every=3,
                               log_every=1, ema_reference_steps=20, max_new_tokens=6, **method)
    a = copy.deepcopy(ref).train()
    _, ema_a = _train(a, ref, pm, tok, prompts, cfg, state_path=tmp_path / "a.pt", fingerprint="x")
    b = copy.deepcopy(ref).train()
    with pytest.raises(Interrupt):
        _train(b, ref, FaultyJudge(pm, 6), tok, prompts, cfg, state_path=tmp_path / "b.pt", fingerprint="x")
    b = copy.deepcopy(ref).train()
    log, ema_b = _train(b, ref, pm, tok, prompts, cfg, state_path=tmp_path / "b.pt", fingerprint="x")
    assert log["train"][-1]["step"] == 8
    # cosine from 1e-3 (step 0) to 1e-4 after the last step; the resumed half continues the same curve
    lrs = [row["lr"] for row in log["train"]]
    assert lrs == pytest.approx([1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(1, 9)])
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    if ema_a is not None:
        for pa, pb in zip(ema_a.state_dict().values(), ema_b.state_dict().values()):
            assert torch.equal(pa, pb)
        # the averaged policy is strictly between SFT and the last iterate
        assert not torch.equal(next(ema_a.parameters()), next(a.parameters()))


def test_lora_trains_the_adapted_layers_only_and_merges_them(task, tok):
    """With ``lora.r`` > 0 only the adapted projections move; after training the policy and Nash-EMA's average
    are plain models again (no adapter left), and the merged update changed them."""
    pm = build_preference_model(SMALL, tok, seed=1).eval()
    ref = build_policy(SMALL, tok, seed=2).eval()
    cfg = PolicyGradientConfig(steps=4, batch_size=4, lr=1e-2, log_every=1, max_new_tokens=6, method="nash_ema",
                               tau=0.05, ema_beta=0.9, ema_reference_steps=4, lora=LoraSpec(r=2, alpha=4.0))
    policy = copy.deepcopy(ref).train()
    _, average = _train(policy, ref, pm, tok, task.prompts("train"), cfg)
    for model in (policy, average):
        assert not [n for n, _ in model.named_modules() if "lora" in n]
        assert set(model.state_dict()) == set(ref.state_dict())
        moved = {n for n, p in model.state_dict().items() if not torch.equal(p, ref.state_dict()[n])}
        assert moved and all(n.endswith("attn.c_attn.weight") for n in moved), moved  # peft's GPT-2 default
    assert all(p.requires_grad for p in policy.parameters())


def test_policy_gradient_raises_on_nan_with_step(task, tok, tmp_path):
    """The loop's own check names the step (not torch's sampling error: the policy's weights stay finite)."""
    pm = build_preference_model(SMALL, tok, seed=1).eval()
    ref = build_policy(SMALL, tok, seed=2).eval()
    with pytest.raises(FloatingPointError, match=r"\[nan-test\] non-finite loss nan at step 2"):
        _train(copy.deepcopy(ref), ref, FaultyJudge(pm, 3, fault="nan"), tok, task.prompts("train"),
               PolicyGradientConfig(method="nash_md", tau=0.1, beta=0.0, steps=5, batch_size=2, max_new_tokens=4),
               state_path=tmp_path / "n.pt", desc="nan-test")


def test_supervised_raises_on_nan_with_step(task, tok, tmp_path):
    ex, loss_fn = _sft_setup(task, tok)
    calls = {"n": 0}

    def nan_from_third(model, idx):
        calls["n"] += 1
        loss = loss_fn(model, idx)
        return loss * float("nan") if calls["n"] >= 3 else loss

    with pytest.raises(FloatingPointError, match=r"\[sft\] non-finite loss nan at step 2"):
        fit(build_policy(SMALL, tok, seed=0), nan_from_third, len(ex), SupervisedConfig(steps=5, batch_size=4),
            tmp_path / "n.pt", desc="sft")


def test_policy_gradient_checkpoint_for_another_judge_is_not_resumed(task, tok, tmp_path, capsys):
    """A Nash-MD state trained against one preference model is not resumed against another (its fingerprint
    includes the judge's content hash): the run equals a clean run against the new judge."""
    ref = build_policy(SMALL, tok, seed=2).eval()
    old_pm, new_pm = build_preference_model(SMALL, tok, seed=1).eval(), build_preference_model(SMALL, tok, seed=5)
    prompts = task.prompts("train")
    cfg = PolicyGradientConfig(method="nash_md", tau=0.05, beta=0.5, steps=4, batch_size=4, lr=1e-3,
                               checkpoint_every=2, log_every=1, max_new_tokens=6)
    with pytest.raises(Interrupt):  # killed after its step-2 checkpoint, trained against the old PM
        _train(copy.deepcopy(ref).train(), ref, FaultyJudge(old_pm, 4), tok, prompts, cfg,
               state_path=tmp_path / "s.pt", fingerprint="old-pm")
    clean = copy.deepcopy(ref).train()
    _train(clean, ref, new_pm.eval(), tok, prompts, cfg, state_path=tmp_path / "clean.pt", fingerprint="new-pm")
    capsys.readouterr()
    b = copy.deepcopy(ref).train()
    log, _ = _train(b, ref, new_pm.eval(), tok, prompts, cfg, state_path=tmp_path / "s.pt", fingerprint="new-pm")
    assert "ignoring checkpoint" in capsys.readouterr().out
    assert [r["step"] for r in log["train"]] == [1, 2, 3, 4]
    for pa, pb in zip(clean.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
