"""Games and exact solvers: the paper's known answers (three raters §3.2, dice App. C.1, App. A, App. C.2), Prop. 1."""

from fractions import Fraction

import numpy as np
import pytest
from scipy.optimize import root
from scipy.special import expit, softmax

from nlhf.games import bradley_terry, known_games, nash, preferences


def antisymmetric(P):
    return np.max(np.abs(P + np.swapaxes(P, -1, -2) - 1))


@pytest.mark.parametrize("eps", [-1 / 3, -0.2, -0.05, 0.0, 0.1, 0.25, 1 / 3])
def test_three_raters_matrix_and_nash(eps):
    P = known_games.three_raters(eps)
    assert antisymmetric(P) < 1e-15 and np.allclose(np.diag(P), 0.5)
    assert np.isclose(P[1, 0], 2 / 3 - eps / 2) and np.isclose(P[2, 1], 2 / 3 + eps / 4)
    assert np.isclose(P[2, 0], 1 / 3 - eps / 4)
    ne = nash.nash_equilibrium(P)
    np.testing.assert_allclose(ne, [1 / 3 + eps / 2, 1 / 3 + eps / 2, 1 / 3 - eps], atol=1e-9)
    assert nash.exploitability(P, ne) < 1e-9  # P(y ≻ π*) ≤ 1/2 for every y


def test_three_raters_rater_shares_must_be_nonnegative():
    with pytest.raises(ValueError, match="eps must be in"):
        known_games.three_raters(0.5)


@pytest.mark.parametrize("eps", [0.3, 0.1, 0.01, 1e-4])
def test_bt_optimum_jumps_at_zero(eps):
    # RLHF (BT argmax) picks y1 for ε > 0 and y2 for ε < 0; the NE moves by O(ε) only.
    np.testing.assert_array_equal(bradley_terry.rlhf_optimum(known_games.three_raters(eps)), [1, 0, 0])
    np.testing.assert_array_equal(bradley_terry.rlhf_optimum(known_games.three_raters(-eps)), [0, 1, 0])
    gap = nash.nash_equilibrium(known_games.three_raters(eps)) - nash.nash_equilibrium(known_games.three_raters(-eps))
    assert np.abs(gap).max() <= 2 * eps + 1e-9


def test_bt_fit_recovers_elo_of_a_bt_game():
    R = np.array([0.0, 1.3, -0.4, 2.0])
    r = bradley_terry.fit_bradley_terry(bradley_terry.bradley_terry_game(R))
    np.testing.assert_allclose(r, R - R.mean(), atol=1e-6)


# Copies of the two Bradley–Terry fitters that ``bradley_terry.fit_bradley_terry`` replaced: the games one (its defaults)
# and nlhf.tasks.analysis.fit_bt_scores (its options are ``analysis.BT_FIT``).
def _fit_bradley_terry_before(P, weights=None, l2=1e-8, tol=1e-10, max_iter=200):
    P = preferences.check_preference(P)
    n = P.shape[0]
    W = np.ones((n, n)) - np.eye(n) if weights is None else np.asarray(weights, float)
    A = W * P
    lam = l2 * W.sum()

    def loss(r):
        d = r[:, None] - r[None, :]
        return float(-np.sum(A * np.log(expit(d)).clip(-1e300)) + lam * r @ r)

    r = np.zeros(n)
    f = loss(r)
    for _ in range(max_iter):
        d = r[:, None] - r[None, :]
        G = A * expit(-d)
        g = -(G.sum(1) - G.sum(0)) + 2 * lam * r
        if np.abs(g).max() <= tol * max(1.0, W.sum()):
            break
        S = A * expit(d) * expit(-d)
        B = S + S.T
        H = np.diag(B.sum(1)) - B + 2 * lam * np.eye(n)
        step = np.linalg.solve(H, g)
        t = 1.0
        while t > 1e-12:
            f_new = loss(r - t * step)
            if f_new <= f - 1e-4 * t * (g @ step):
                break
            t *= 0.5
        r, f = r - t * step, f_new
    return r - r.mean()


def _fit_bt_scores_before(P, l2=1e-6, iters=100, tol=1e-10):
    P = np.asarray(P, dtype=np.float64)
    m = P.shape[0]
    off = ~np.eye(m, dtype=bool)

    def loss(r):
        d = r[:, None] - r[None, :]
        return float(-(P * -np.logaddexp(0.0, -d))[off].sum() + l2 * (r @ r))

    r = np.zeros(m)
    f = loss(r)
    for _ in range(iters):
        d = r[:, None] - r[None, :]
        sig = 1.0 / (1.0 + np.exp(-d))
        g = (sig - P) * off
        grad = g.sum(1) - g.sum(0) + 2 * l2 * r
        w = 2 * sig * (1 - sig) * off
        hess = np.diag(w.sum(1)) - w + 2 * l2 * np.eye(m)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-8:
            f_new = loss(r - t * step)
            if f_new <= f - 1e-4 * t * (grad @ step):
                break
            t *= 0.5
        r, f_old, f = r - t * step, f, f_new
        if f_old - f < tol:
            break
    return r - r.mean()


def _random_preferences(rng, n):
    """A random game of one of three kinds: smooth (σ of a random antisymmetric matrix), Bradley–Terry, or with
    0/1 entries."""
    kind = rng.integers(3)
    if kind == 0:
        return known_games.random_game(n, rng, scale=float(rng.uniform(0.1, 6.0)))
    if kind == 1:
        return bradley_terry.bradley_terry_game(rng.normal(0, 2, n))
    P = np.triu(rng.choice([0.0, 0.5, 1.0, 0.3], (n, n)), 1)
    return P + np.tril(1 - P.T, -1) + np.diag(np.full(n, 0.5))


def test_merged_bt_fitter_equals_both_fitters_it_replaced():
    from nlhf.tasks.analysis import BT_FIT

    rng = np.random.default_rng(12345)
    for _ in range(300):
        n = int(rng.integers(2, 13))
        P = _random_preferences(rng, n)
        assert np.array_equal(bradley_terry.fit_bradley_terry(P), _fit_bradley_terry_before(P))
        mu = rng.dirichlet(np.ones(n))
        assert np.array_equal(bradley_terry.fit_bradley_terry(P, np.outer(mu, mu)),
                              _fit_bradley_terry_before(P, np.outer(mu, mu)))
        assert np.array_equal(bradley_terry.fit_bradley_terry(P, **BT_FIT), _fit_bt_scores_before(P))


def test_bt_fitter_rejects_unknown_options():
    P = known_games.three_raters(0.1)
    for bad in (dict(newton="lbfgs"), dict(stop="never"), dict(newton="pairs", weights=np.ones((3, 3)))):
        with pytest.raises(ValueError):
            bradley_terry.fit_bradley_terry(P, **bad)


def test_intransitive_dice():
    P = known_games.intransitive_dice()
    assert antisymmetric(P) < 1e-15
    for i in range(3):  # each die beats the next with probability 5/9
        assert P[i, (i + 1) % 3] == pytest.approx(5 / 9, abs=1e-15)
    np.testing.assert_allclose(nash.nash_equilibrium(P), np.full(3, 1 / 3), atol=1e-9)
    assert known_games.find_cycle(P) is not None


def test_app_a_example_50_over_99():
    ex = known_games.app_a_example()
    assert ex.pref_P_over_R_exact() == Fraction(50, 99)
    assert preferences.policy_preference(ex.P, ex.pi_P, ex.pi_R) == pytest.approx(50 / 99, abs=1e-12)
    for i in range(3):
        for j in range(3):
            assert float(ex.P_exact[i][j]) == pytest.approx(ex.P[i, j], abs=1e-15)
    # On S = {π(y1) = 2π(y2)}: π_R maximises expected Elo and π_P is never beaten (P(π_P ≻ π) = 1/2 + a/66).
    a = np.linspace(0, 1 / 3, 101)
    S = np.stack([2 * a, a, 1 - 3 * a], axis=1)
    elo = S @ ex.R
    np.testing.assert_allclose(S[np.argmax(elo)], ex.pi_R, atol=1e-12)
    pref = S @ ex.P.T @ ex.pi_P  # P(π_P ≻ π) for π ∈ S
    np.testing.assert_allclose(pref, 0.5 + a / 66, atol=1e-12)


def test_condorcet_voters_make_a_cycle():
    P = known_games.majority_vote_game(known_games.condorcet_rankings())
    assert P[0, 1] == pytest.approx(2 / 3) and P[1, 2] == pytest.approx(2 / 3) and P[2, 0] == pytest.approx(2 / 3)
    assert known_games.find_cycle(P) is not None
    np.testing.assert_allclose(nash.nash_equilibrium(P), np.full(3, 1 / 3), atol=1e-9)


def test_majority_vote_counts_fractions_and_ties():
    ranks = np.array([[0, 1, 2], [0, 0, 1], [2, 1, 0], [1, 0, 2]])  # voter 2 ties y1 and y2
    P = known_games.majority_vote_game(ranks)
    assert P[0, 1] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert P[0, 2] == pytest.approx(3 / 4)
    assert antisymmetric(P) < 1e-15
    P = known_games.majority_vote_game(known_games.random_rankings(500, 12, np.random.default_rng(1)))
    assert antisymmetric(P) < 1e-12 and P.min() >= 0 and P.max() <= 1


def test_transitive_bt_game_has_no_cycle():
    P = bradley_terry.bradley_terry_game(np.arange(6.0))
    assert known_games.find_cycle(P) is None
    np.testing.assert_allclose(nash.nash_equilibrium(P), np.eye(6)[5], atol=1e-9)  # the Condorcet winner


@pytest.mark.parametrize("n", [8, 30, 200])
def test_random_game_is_a_nontransitive_preference(n):
    P = known_games.random_game(n, np.random.default_rng(n))
    assert antisymmetric(P) < 1e-14 and P.min() > 0 and P.max() < 1
    i, j, k = known_games.find_cycle(P)
    assert P[i, j] > 0.5 and P[j, k] > 0.5 and P[k, i] > 0.5
    ne = nash.nash_equilibrium(P)
    assert nash.exploitability(P, ne) < 1e-8 and ne.min() >= 0 and ne.sum() == pytest.approx(1)


def test_nash_equilibrium_contexts():
    P = np.stack([known_games.intransitive_dice(), known_games.three_raters(0.2)])
    ne = nash.nash_equilibrium(P)
    np.testing.assert_allclose(ne, [np.full(3, 1 / 3), known_games.three_raters_nash(0.2)], atol=1e-9)


# --- the regularized equilibrium π*_τ (Prop. 1) -------------------------------------------------------------


def _payoff_root(P, mu, tau):
    """Independent solver: unknown v = Pπ (payoffs), v = P softmax(log μ + v/τ), MINPACK hybr (no Newton of ours)."""
    log_mu = np.log(mu)
    res = root(lambda v: v - P @ softmax(log_mu + v / tau), P @ mu, method="hybr", tol=1e-14)
    assert res.success, res.message
    return softmax(log_mu + res.x / tau)


@pytest.mark.parametrize("n,tau", [(3, 0.05), (20, 0.5), (20, 0.1), (40, 0.05)])
def test_regularized_nash_agrees_with_independent_solver(n, tau):
    rng = np.random.default_rng(n)
    P = known_games.intransitive_dice() if n == 3 else known_games.random_game(n, rng, 2.0)
    mu = rng.dirichlet(np.ones(n))
    star = nash.regularized_nash(P, mu, tau)
    assert nash.fixed_point_residual(P, mu, tau, star) <= 1e-10
    np.testing.assert_allclose(star, _payoff_root(P, mu, tau), atol=1e-8, rtol=0)


def test_regularized_nash_large_and_small_tau():
    rng = np.random.default_rng(0)
    n = 2000
    P = known_games.random_game(n, rng, 4.0)
    mu = rng.dirichlet(np.ones(n))
    for tau in (0.1, 0.01):
        star = nash.regularized_nash(P, mu, tau)
        assert nash.fixed_point_residual(P, mu, tau, star) <= 1e-10
        assert star.min() > 0 and star.sum() == pytest.approx(1, abs=1e-12)


def test_regularized_nash_limits():
    P = known_games.three_raters(0.2)
    mu = np.array([0.2, 0.2, 0.6])
    # τ → ∞: π*_τ → μ; τ → 0: π*_τ → the (here unique) NE
    assert np.abs(nash.regularized_nash(P, mu, 1e4) - mu).max() < 1e-4
    np.testing.assert_allclose(nash.regularized_nash(P, mu, 1e-4), known_games.three_raters_nash(0.2), atol=2e-3)
    # uniform μ and a game whose NE is uniform: π*_τ = μ for every τ
    np.testing.assert_allclose(nash.regularized_nash(known_games.intransitive_dice(), np.full(3, 1 / 3), 0.01),
                               np.full(3, 1 / 3), atol=1e-12)


# --- validation -----------------------------------------------------------------------------------------------


def test_validation_messages():
    P = known_games.intransitive_dice()
    mu = np.full(3, 1 / 3)
    with pytest.raises(ValueError, match=r"P must be square"):
        nash.nash_equilibrium(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"P must lie in \[0, 1\]: entry -0.2 at \(1, 0\) \(outside by 0.2\)"):
        nash.nash_equilibrium(np.array([[0.5, 1.2], [-0.2, 0.5]]))
    with pytest.raises(ValueError, match=r"P must lie in \[0, 1\]: entry 1.5 at \(0, 0, 0\)"):
        nash.nash_equilibrium(np.full((2, 3, 3), 1.5))
    bad = P.copy()
    bad[0, 2] += 0.3
    with pytest.raises(ValueError, match=r"P \+ P\^T must equal 1: max deviation 0.3 at \(0, 2\)"):
        nash.nash_equilibrium(bad)
    with pytest.raises(ValueError, match=r"mu must have 3 actions to match P"):
        nash.regularized_nash(P, np.full(4, 0.25), 0.1)
    with pytest.raises(ValueError, match=r"mu must have full support \(all > 0\): min entry 0"):
        nash.regularized_nash(P, np.array([0.5, 0.5, 0.0]), 0.1)
    with pytest.raises(ValueError, match=r"mu must sum to 1: sums to 1.2 \(deviation 0.2\)"):
        nash.regularized_nash(P, np.array([0.4, 0.4, 0.4]), 0.1)
    for tau in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"tau must be > 0"):
            nash.regularized_nash(P, mu, tau)
