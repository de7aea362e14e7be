"""The convergence probe measures a policy with the exact judge without touching training's random streams, resumes
bitwise inside a training run, and the convergence rule separates a settled curve from a moving one."""

import copy

import numpy as np
import pytest
import torch

from nlhf.models import ModelConfig, build_policy, build_preference_model
from nlhf.training.policy_gradient import PGConfig, PolicyGradientConfig
from nlhf.training.probe import ConvergenceProbe, JudgeProbe, converged

SMALL = ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64)


@pytest.fixture
def task(completist_task):
    return completist_task


@pytest.fixture
def tok(completist_tok):
    return completist_tok


def _probe(task, tok, ref, samples=4, n=6, target=None):
    prompts = task.prompts("eval")[:n]
    cands = [task.candidates(x) for x in prompts]
    refs = [c[:5] for c in cands]
    tgt = target or [np.full(len(c), 1.0 / len(c)) for c in cands]
    return ConvergenceProbe(task, tok, ref, prompts, refs, cands, tgt, samples=samples, max_new_tokens=6, seed=3)


def test_probe_of_the_reference_itself_has_zero_kl_and_keeps_global_rng(task, tok):
    ref = build_policy(SMALL, tok, seed=2).eval()
    probe = _probe(task, tok, ref)
    state = torch.random.get_rng_state()
    a = probe(copy.deepcopy(ref), step=5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert abs(a["kl"]) < 1e-4
    assert a == probe(copy.deepcopy(ref), step=5)  # seeded per step
    assert a != probe(copy.deepcopy(ref), step=6)
    assert 0.0 <= a["p_vs_sft"] <= 1.0 and 0.0 <= a["in_pool"] <= 1.0 and a["p_vs_sft_ci"] > 0


def test_probe_against_a_point_target_equals_the_judge(task, tok):
    """With a point-mass target on candidate c, P*(π ≻ target) is the exact judge's mean P*(y ≻ c) over the same
    samples (seeded); against references identical to that candidate, p_vs_sft equals it too."""
    ref = build_policy(SMALL, tok, seed=2).eval()
    prompts = task.prompts("eval")[:4]
    cands = [task.candidates(x) for x in prompts]
    point = [np.eye(len(c))[0] for c in cands]
    probe = ConvergenceProbe(task, tok, ref, prompts, [[c[0]] * 3 for c in cands], cands, point, samples=8,
                             max_new_tokens=6, seed=1)
    out = probe(copy.deepcopy(ref), step=0)
    assert out["p_vs_target"] == pytest.approx(out["p_vs_sft"], abs=1e-12)
    assert 0.0 < out["p_vs_target"] < 1.0


def test_judge_probe_scores_the_same_pairs_with_its_reference(task, tok):
    """A judge probe with a reference judge: both score the same draws against the same SFT samples, so a reference
    identical to the judge reports the judge's numbers, a constant ½ as the reference reports ½ with a zero
    interval and leaves the judge's numbers as they are, and without a reference the row has no reference keys."""
    ref = build_policy(SMALL, tok, seed=2).eval()
    prompts = task.prompts("eval")[:5]
    refs = [task.candidates(x)[:3] for x in prompts]
    half = lambda xs, ys, y2: np.full(len(xs), 0.5)  # noqa: E731
    kw = dict(samples=4, max_new_tokens=6, seed=3)
    plain = JudgeProbe(task.judge, tok, ref, prompts, refs, **kw)(copy.deepcopy(ref), step=2)
    assert "p_vs_sft_reference" not in plain
    same = JudgeProbe(task.judge, tok, ref, prompts, refs, reference=task.judge, **kw)(copy.deepcopy(ref), step=2)
    assert same["p_vs_sft_reference"] == same["p_vs_sft"] == plain["p_vs_sft"]
    assert same["p_vs_sft_reference_ci"] == same["p_vs_sft_ci"] > 0
    flat = JudgeProbe(task.judge, tok, ref, prompts, refs, reference=half, **kw)(copy.deepcopy(ref), step=2)
    assert flat["p_vs_sft_reference"] == 0.5 and flat["p_vs_sft_reference_ci"] == 0.0
    assert flat["p_vs_sft"] == plain["p_vs_sft"] != 0.5


def test_probe_runs_every_5_percent_and_resumes_bitwise(task, tok, tmp_path):
    from tests.faulty_judges import FaultyJudge, Interrupt
    from tests.test_training import _train

    pm = build_preference_model(SMALL, tok, seed=1).eval()
    ref = build_policy(SMALL, tok, seed=2).eval()
    prompts = task.prompts("train")
    cfg = PolicyGradientConfig(method="nash_md", tau=0.05, beta=0.5, steps=8, batch_size=4, lr=1e-3,
                               checkpoint_every=3, log_every=1, probe_every=2, max_new_tokens=6)
    a = copy.deepcopy(ref).train()
    log_a, _ = _train(a, ref, pm, tok, prompts, cfg, state_path=tmp_path / "a.pt", probe=_probe(task, tok, ref),
                      fingerprint="x")
    assert [r["step"] for r in log_a["probe"]] == [0, 2, 4, 6, 8]
    b = copy.deepcopy(ref).train()
    with pytest.raises(Interrupt):
        _train(b, ref, FaultyJudge(pm, 7), tok, prompts, cfg, state_path=tmp_path / "b.pt",
               probe=_probe(task, tok, ref), fingerprint="x")
    b = copy.deepcopy(ref).train()
    log_b, _ = _train(b, ref, pm, tok, prompts, cfg, state_path=tmp_path / "b.pt", probe=_probe(task, tok, ref),
                      fingerprint="x")
    assert log_a["probe"] == log_b["probe"]
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    # the default cadence: every 5% of the run, plus the start
    assert PGConfig(steps=100).probe_every == 0


def test_training_at_another_temperature_is_rejected():
    with pytest.raises(ValueError, match=r"^temperature: policy-gradient training needs 1\.0"):
        PolicyGradientConfig(method="nash_md", tau=0.1, beta=0.0, temperature=0.7)


def _curve(values, ci=0.02, steps=100):
    return [{"step": s, "p_vs_sft": v, "p_vs_sft_ci": ci} for s, v in zip(np.linspace(0, steps, len(values)), values)]


def test_convergence_rule():
    rng = np.random.default_rng(0)
    flat = 0.7 + rng.normal(0, 0.005, 21)
    assert converged(_curve(flat), 100)["converged"] is True
    rising = np.linspace(0.5, 0.8, 21)  # +0.075 over the last quarter, CI 0.02
    out = converged(_curve(rising), 100)
    assert out["converged"] is False and out["change_last_quarter"] == pytest.approx(0.075, abs=1e-9)
    assert converged(_curve([0.5, 0.6]), 100)["converged"] is None


def test_convergence_rule_refuses_a_curve_that_fell_from_its_peak():
    """Over-optimisation: P* against SFT peaks early, falls and flattens; flat at the end, yet not converged."""
    fell = [0.5] + [0.66] * 6 + [0.58] * 14  # peak 0.66, then flat at 0.58 (drop 0.08, its CI 0.012)
    out = converged(_curve(fell), 100)
    assert abs(out["change_last_quarter"]) < 1e-9 and out["converged"] is False
    assert out["drop_from_peak"] == pytest.approx(0.08)
    dipped = [0.5] + [0.66] * 6 + [0.65] * 14  # within the CI of the peak
    assert converged(_curve(dipped), 100)["converged"] is True
    # flat noisy curves (sd = CI / 1.96): rarely called fallen; a fall of three CIs nearly always is
    rng = np.random.default_rng(1)
    flat = [converged(_curve(0.7 + rng.normal(0, 0.02 / 1.96, 21)), 100) for _ in range(300)]
    assert np.mean([o["drop_from_peak"] <= o["drop_ci95"] for o in flat]) > 0.85
    falls = [converged(_curve(np.r_[0.5, [0.76] * 6, [0.7] * 14] + rng.normal(0, 0.02 / 1.96, 21)), 100)["converged"]
             for _ in range(300)]
    assert np.mean(falls) < 0.05
