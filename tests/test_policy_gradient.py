"""The policy-gradient estimator, the EMA update and the method config (the paper's §7, App. F)."""

import itertools

import pytest
import torch

from nlhf.config import ConfigError, from_dict
from nlhf.training.methods import RLHF, Judged, Method, NashEMA, NashMD, OnlineIPO, Rollout
from nlhf.training.reinforce import (
    effective_ema_beta,
    ema_update,
    kl_to_go,
    pg_loss,
)


def _seq_logprobs(theta0, theta1, seqs):
    """Two-token autoregressive tabular policy: log π(y0) and log π(y1 | y0) for every sequence."""
    lp0 = torch.log_softmax(theta0, -1)[seqs[:, 0]]
    lp1 = torch.log_softmax(theta1, -1)[seqs[:, 0], seqs[:, 1]]
    return torch.stack([lp0, lp1], dim=1)


def _setup(seed, V):
    """Every 2-token sequence over V tokens, a policy θ (with grad), μ's log-probs and an antisymmetric P."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=2)))
    theta0 = torch.randn(V, generator=g, dtype=torch.float64, requires_grad=True)
    theta1 = torch.randn(V, V, generator=g, dtype=torch.float64, requires_grad=True)
    mu_lp = _seq_logprobs(torch.randn(V, generator=g, dtype=torch.float64),
                          torch.randn(V, V, generator=g, dtype=torch.float64), seqs)
    A = torch.randn(len(seqs), len(seqs), generator=g, dtype=torch.float64)
    return g, seqs, theta0, theta1, mu_lp, torch.sigmoid(A - A.T)



@pytest.mark.parametrize("tau", [0.0 + 1e-9, 0.1, 1.0])
def test_nash_md_pg_estimator_expectation_is_exact_gradient(tau):
    """E_{y~π_θ, y'~π'}[ĝ] = ∇_θ P_τ(π_θ ≻ π') with π' fixed, by enumerating all (y, y') of a 2-token policy."""
    g, seqs, theta0, theta1, mu_lp, P = _setup(0, 3)  # all 9 sequences
    n = len(seqs)
    opp = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)  # π' fixed

    # exact objective: P(π_θ ≻ π') − τ KL(π_θ ‖ μ)
    lp = _seq_logprobs(theta0, theta1, seqs)
    pi = lp.sum(1).exp()
    J = pi @ P @ opp - tau * (pi * (lp.sum(1) - mu_lp.sum(1))).sum()
    exact = torch.autograd.grad(J, [theta0, theta1], retain_graph=True)

    # expectation of the estimator: Σ_{y,y'} π(y) π'(y') ĝ(y, y'), weights held fixed
    w = (pi.detach()[:, None] * opp[None, :])
    surrogate = 0.0
    mask = torch.ones(1, 2, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            signal = (P[i, j] - 0.5).reshape(1)
            surrogate = surrogate + w[i, j] * pg_loss(lp[i: i + 1], mu_lp[i: i + 1], mask, signal, tau)
    est = torch.autograd.grad(-surrogate, [theta0, theta1])
    for e, x in zip(est, exact):
        torch.testing.assert_close(e, x, atol=1e-10, rtol=1e-8)


def test_kl_to_go_is_reverse_cumsum_on_mask():
    logp = torch.tensor([[-1.0, -2.0, -3.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # per-token kl: 0.5, -1, -1 → to-go: -1.5, -2, -1, 0
    torch.testing.assert_close(kl_to_go(logp, ref, mask), torch.tensor([[-1.5, -2.0, -1.0, 0.0]]))


def test_ema_update_matches_formula():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in a.parameters()]
    ema_update(a, b, beta=0.9)
    for e0, e1, p in zip(before, a.parameters(), b.parameters()):
        torch.testing.assert_close(e1, 0.9 * e0 + 0.1 * p)
    # β = 1 keeps the average frozen; β = 0 copies
    ema_update(a, b, beta=0.0)
    for e, p in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(e, p)


def test_effective_ema_beta_keeps_horizon_fraction():
    # paper: 0.999 over 10k steps (horizon 1000 = 10%); over 400 steps the horizon should be 40 steps
    b = effective_ema_beta(0.999, steps=400, reference_steps=10_000)
    assert b == pytest.approx(0.975)
    assert effective_ema_beta(0.999, steps=10_000, reference_steps=10_000) == pytest.approx(0.999)
    assert effective_ema_beta(0.5, steps=10, reference_steps=10_000) == 0.0


@pytest.mark.parametrize("bad, match", [
    ({"kind": "dpo", "tau": 0.1}, r"methods\.X\.kind: unknown method kind 'dpo'"),
    ({"kind": "nash_md", "tau": 0.1, "beta": 1.5}, r"methods\.X\.beta: must be in \[0, 1\]"),
    ({"kind": "nash_md", "tau": 0.0, "beta": 0.1}, r"methods\.X\.tau: must be > 0"),
    ({"kind": "nash_md", "tau": 0.1}, r"methods\.X\.beta: required key missing"),
    ({"tau": 0.1}, r"methods\.X\.kind: required key missing; one of rlhf, nash_md"),
    ({"kind": "rlhf", "tau": 0.1, "beta": 0.5}, r"methods\.X\.beta: unknown key"),
    ({"kind": "nash_ema", "tau": 0.1, "beta": 0.9}, r"methods\.X\.beta: unknown key"),
    ({"kind": "rlhf", "tau": "high"}, r"methods\.X\.tau: expected float"),
])
def test_bad_method_config_names_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Method, bad, "methods.X")


def test_method_config_picks_the_class_of_its_kind():
    m = from_dict(Method, {"kind": "nash_ema", "tau": 0.01, "ema_beta": 0.999}, "methods.X")
    assert isinstance(m, NashEMA) and m.ema_beta == 0.999 and m.has_average
    assert isinstance(from_dict(Method, {"kind": "online_ipo", "tau": 0.01}, "m"), OnlineIPO)
    assert from_dict(Method, {"kind": "nash_md", "tau": 0.01, "beta": 0.25}, "m") == NashMD(kind="nash_md", tau=0.01,
                                                                                           beta=0.25)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_online_ipo_expected_gradient_is_a_multiple_of_the_self_play_gradient(tau):
    """E_{y,y′~π_θ}[∇ (h_θ(y,y′) − (P(y≻y′) − ½)/τ)²] = −(4/τ) ∇_θ[P(π_θ ≻ π′) − τ KL(π_θ‖μ)] at π′ = π_θ, by
    enumerating every pair of a 2-token policy, through :meth:`OnlineIPO.loss` (so its fixed point is π*_τ, SP's)."""
    _, seqs, theta0, theta1, mu_lp, P = _setup(1, 3)
    n = len(seqs)

    lp = _seq_logprobs(theta0, theta1, seqs)
    pi = lp.sum(1).exp()
    opp = pi.detach()  # π′ = π_θ, held fixed
    J = pi @ P @ opp - tau * (pi * (lp.sum(1) - mu_lp.sum(1))).sum()
    self_play = torch.autograd.grad(J, [theta0, theta1], retain_graph=True)

    method = OnlineIPO(kind="online_ipo", tau=tau)
    w = pi.detach()[:, None] * pi.detach()[None, :]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    rows = torch.cat([i, j])  # the loss's 2B rows: y then y′
    per_pair = []
    for k in range(len(i)):
        r = torch.stack([rows[k], rows[len(i) + k]])
        judged = Judged(signal=(P[i[k], j[k]] - 0.5).reshape(1), logged_signal=0.0)
        per_pair.append(method.loss(lp[r], mu_lp[r], torch.ones(2, 2, dtype=torch.float64), judged))
    expected = (w.reshape(-1) * torch.stack(per_pair)).sum()
    ipo = torch.autograd.grad(expected, [theta0, theta1])
    for a, b in zip(ipo, self_play):
        torch.testing.assert_close(a, -(4 / tau) * b, atol=1e-9, rtol=1e-7)


class _TableJudge:
    """A judge on 2-token responses given as tables over the enumerated sequences: P[i, j] and r[i]."""

    def __init__(self, V, P=None, r=None):
        self.V, self.P, self.r = V, P, r

    def _index(self, y):
        return y[:, 0] * self.V + y[:, 1]

    def logits_from_ids(self, ids, prompt_mask, y, y_mask, yp, yp_mask):
        return torch.logit(self.P[self._index(y), self._index(yp)])

    def rewards_from_ids(self, ids, prompt_mask, y, y_mask):
        return self.r[self._index(y)]


def _expected_group_surrogate(method, judge, seqs, lp, mu_lp, pi_y, pi_opp, k, tau):
    """Σ over every group (y_1..y_k ~ π, y′_1..y′_k ~ π′) of its probability times the method's loss on the group,
    with the signal computed by ``method.judge`` on the group's rows."""
    n = len(seqs)
    total = 0.0
    ids = torch.zeros(k, 1, dtype=torch.long)
    for combo in itertools.product(range(n), repeat=2 * k):
        ys, yps = list(combo[:k]), list(combo[k:])
        w = torch.prod(pi_y[ys]) * torch.prod(pi_opp[yps])
        roll = Rollout(seqs[ys], ids, torch.ones(k, 2), seqs[ys], torch.ones(k, 2), seqs[yps], torch.ones(k, 2))
        judged = method.judge(judge, ids, ids, roll, k)
        total = total + w * method.loss(lp[ys], mu_lp[ys], torch.ones(k, 2, dtype=torch.float64), judged)
    return total


def test_nash_signal_against_every_opponent_of_the_group_is_unbiased():
    """k = 2 responses per prompt, each compared with both opponents: E[ĝ] = ∇_θ[P(π_θ ≻ π′) − τ KL(π_θ‖μ)]."""
    tau, k, V = 0.1, 2, 2
    g, seqs, theta0, theta1, mu_lp, P = _setup(2, V)
    opp = torch.softmax(torch.randn(len(seqs), generator=g, dtype=torch.float64), 0)
    lp = _seq_logprobs(theta0, theta1, seqs)
    pi = lp.sum(1).exp()
    J = pi @ P @ opp - tau * (pi * (lp.sum(1) - mu_lp.sum(1))).sum()
    exact = torch.autograd.grad(J, [theta0, theta1], retain_graph=True)
    method = NashMD(kind="nash_md", tau=tau, beta=0.5)
    surrogate = _expected_group_surrogate(method, _TableJudge(V, P=P), seqs, lp, mu_lp, pi.detach(), opp, k, tau)
    est = torch.autograd.grad(-surrogate, [theta0, theta1])
    for e, x in zip(est, exact):
        torch.testing.assert_close(e, x, atol=1e-7, rtol=1e-6)  # the judge's output is float32


def test_rlhf_leave_one_out_baseline_is_unbiased():
    """k = 3 responses per prompt, baseline = mean reward of the other two: E[ĝ] = ∇_θ[E_π r − τ KL(π_θ‖μ)]."""
    tau, k, V = 0.1, 3, 2
    g, seqs, theta0, theta1, mu_lp, _ = _setup(3, V)
    r = torch.randn(len(seqs), generator=g, dtype=torch.float64)
    lp = _seq_logprobs(theta0, theta1, seqs)
    pi = lp.sum(1).exp()
    J = pi @ r - tau * (pi * (lp.sum(1) - mu_lp.sum(1))).sum()
    exact = torch.autograd.grad(J, [theta0, theta1], retain_graph=True)
    method = RLHF(kind="rlhf", tau=tau)
    # RLHF draws no opponents: sum over the opponents' half of the combos with weight 1/n^k each (uniform, unused)
    uniform = torch.full((len(seqs),), 1.0 / len(seqs), dtype=torch.float64)
    surrogate = _expected_group_surrogate(method, _TableJudge(V, r=r), seqs, lp, mu_lp, pi.detach(), uniform, k, tau)
    est = torch.autograd.grad(-surrogate, [theta0, theta1])
    for e, x in zip(est, exact):
        torch.testing.assert_close(e, x, atol=1e-7, rtol=1e-6)  # the judge's output is float32
    # the leave-one-out signals of a group sum to zero (the baseline removes the prompt's reward level)
    roll = Rollout(seqs[:k], None, None, seqs[:k], torch.ones(k, 2))
    assert abs(method.judge(_TableJudge(V, r=r), None, None, roll, k).signal.sum().item()) < 1e-6
