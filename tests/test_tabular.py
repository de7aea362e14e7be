"""Tabular Nash-MD (the paper's §6, Theorem 1), the comparison algorithms, metrics and the experiment config."""

import numpy as np
import pytest
from scipy.special import softmax

from nlhf.games import known_games, nash
from nlhf.tabular import algorithms, metrics
from nlhf.config import ConfigError, from_dict
from nlhf.tabular.experiment import TabularConfig, log_spaced


def _game(n, seed=0, scale=4.0):
    rng = np.random.default_rng([seed, n])
    return known_games.random_game(n, rng, scale), rng.dirichlet(np.ones(n))


def test_nash_md_first_steps_match_the_paper_formulas():
    P, mu = _game(6)
    tau = 0.1
    run = algorithms.nash_md(P, mu, tau, 3)
    assert run.shape == (4, 6) and np.asarray(run).shape == (4, 6)
    np.testing.assert_allclose(run[0], mu)
    # η_0 τ = 1: the first opponent is π_0^μ = μ, so π_1 = BR_τ(μ) ∝ μ exp(Pμ/τ)
    np.testing.assert_allclose(run[1], softmax(np.log(mu) + P @ mu / tau), atol=1e-13)
    # general step, written with probabilities rather than logs
    pi, eta = run[1], 2 / (tau * 3)
    mix = pi ** (1 - eta * tau) * mu ** (eta * tau)
    mix /= mix.sum()
    nxt = mix * np.exp(eta * P @ mix)
    np.testing.assert_allclose(run[2], nxt / nxt.sum(), atol=1e-13)
    np.testing.assert_allclose(run.last, run[-1])
    np.testing.assert_allclose(run.average, np.asarray(run).mean(0), atol=1e-14)


@pytest.mark.parametrize("n", [10, 100])
@pytest.mark.parametrize("tau", [0.1, 0.02])
def test_theorem1_bound_holds_at_every_t(n, tau):
    P, mu = _game(n)
    star = nash.regularized_nash(P, mu, tau)
    T = 2000
    run = algorithms.nash_md(P, mu, tau, T, target=star, record_every=None)
    t = np.arange(T + 1)
    assert np.all(run.kl <= metrics.theorem1_bound(tau, t))  # KL(π*_τ‖π_t) ≤ 8/(τ²(t+1)) for all t ≤ T
    assert run.kl[-1] < 1e-3 * run.kl[0]  # and the last iterate really converges
    assert run.kl[-1] == pytest.approx(metrics.kl(star, run.last), abs=1e-12)
    assert run.iterates.shape == (2, n) and list(run.t) == [0, T]


def test_theorem1_recursion_step_by_step():
    # KL_{t+1} ≤ (1 − η_t τ) KL_t + 2 η_t² (Theorem 1), for a constant step too
    P, mu = _game(20, seed=3)
    tau = 0.05
    star = nash.regularized_nash(P, mu, tau)
    for eta in (None, 2.0):
        run = algorithms.nash_md(P, mu, tau, 500, eta=eta, target=star)
        t = np.arange(500)
        e = metrics.default_eta(tau, t) if eta is None else np.full(500, eta)
        assert np.all(run.kl[1:] <= (1 - e * tau) * run.kl[:-1] + 2 * e**2 + 1e-15)


def test_nash_md_converges_on_dice_while_best_response_dynamics_cycle():
    # Verified behaviour: with η τ = 1, OMD is best-response dynamics π_{t+1} = BR_τ(π_t), which cycles on
    # the intransitive dice for small τ; Nash-MD with the Theorem-1 schedule converges in last iterate.
    P, mu, tau = known_games.intransitive_dice(), np.array([0.6, 0.3, 0.1]), 0.02
    star = nash.regularized_nash(P, mu, tau)
    md = algorithms.nash_md(P, mu, tau, 3000, target=star)
    assert md.kl[-1] < 1e-6
    assert np.abs(np.asarray(md)[-300:] - star).max() < 1e-3
    br = algorithms.omd(P, mu, tau, 3000, eta=1 / tau, target=star)
    tail = np.asarray(br)[-300:]
    assert np.ptp(tail, axis=0).max() > 0.5  # still swinging between vertices
    assert br.kl[-300:].min() > 0.1
    # With the decreasing schedule OMD's last iterate converges here too (the regularized game is strongly
    # monotone); the paper's claim that OMD only converges on average is for the unregularized game.
    assert algorithms.omd(P, mu, tau, 3000, target=star).kl[-1] < 1e-6


def test_constant_step_nash_md_is_biased():
    P, mu, tau = known_games.intransitive_dice(), np.array([0.6, 0.3, 0.1]), 0.1
    star = nash.regularized_nash(P, mu, tau)
    last = algorithms.nash_md(P, mu, tau, 4000, eta=5.0).last
    mix = softmax((1 - 0.5) * np.log(last) + 0.5 * np.log(mu))
    np.testing.assert_allclose(last, softmax(np.log(mu) + P @ mix / tau), atol=1e-10)  # its fixed point
    assert metrics.kl(star, last) > 1e-5


@pytest.mark.parametrize("method", ["nash_md", "omd", "nash_ema", "fictitious_play"])
def test_all_methods_reach_the_regularized_nash(method):
    P, mu = _game(30, seed=1)
    tau = 0.1
    star = nash.regularized_nash(P, mu, tau)
    run = getattr(algorithms, method)(P, mu, tau, 3000, target=star, record_every=100)
    assert min(run.kl[-1], run.kl_average[-1]) < 1e-5
    assert list(run.t[:3]) == [0, 100, 200] and run.t[-1] == 3000
    assert run.kl_average[-1] == pytest.approx(metrics.kl(star, run.average), abs=1e-12)


def test_best_response_to_mu_and_fictitious_play_definitions():
    P, mu = _game(8, seed=2)
    tau = 0.2
    br = algorithms.best_response_to_mu(P, mu, tau, 5)
    for t in range(1, 6):
        np.testing.assert_allclose(br[t], softmax(np.log(mu) + P @ mu / tau), atol=1e-13)
    fp = algorithms.fictitious_play(P, mu, tau, 4)
    its = np.asarray(fp)
    for t in range(4):
        np.testing.assert_allclose(its[t + 1], softmax(np.log(mu) + P @ its[: t + 1].mean(0) / tau), atol=1e-13)


def test_nash_ema_with_beta_zero_is_omd_and_ema_recursion():
    P, mu = _game(8, seed=2)
    np.testing.assert_allclose(np.asarray(algorithms.nash_ema(P, mu, 0.1, 50, beta=0.0)), np.asarray(algorithms.omd(P, mu, 0.1, 50)),
                               atol=1e-13)
    tau, beta = 0.1, 0.8
    its = np.asarray(algorithms.nash_ema(P, mu, tau, 3, beta=beta))
    q = its[0]
    for t in range(3):
        q = beta * q + (1 - beta) * its[t] if t else its[0]
        eta = 2 / (tau * (t + 2))
        ref = softmax((1 - eta * tau) * np.log(its[t]) + eta * tau * np.log(mu) + eta * P @ q)
        np.testing.assert_allclose(its[t + 1], ref, atol=1e-13)


def test_contexts_equal_per_context_runs():
    rng = np.random.default_rng(5)
    X, n, tau = 3, 7, 0.05
    P = np.stack([known_games.random_game(n, rng, 3.0) for _ in range(X)])
    mu = rng.dirichlet(np.ones(n), size=X)
    rho = np.array([0.5, 0.3, 0.2])
    star = nash.regularized_nash(P, mu, tau)
    for x in range(X):
        np.testing.assert_allclose(star[x], nash.regularized_nash(P[x], mu[x], tau), atol=1e-12)
    for method in ("nash_md", "omd", "fictitious_play"):
        joint = getattr(algorithms, method)(P, mu, tau, 200, rho=rho, target=star)
        assert joint.shape == (201, X, n)
        per = [getattr(algorithms, method)(P[x], mu[x], tau, 200, target=star[x]) for x in range(X)]
        for x in range(X):
            np.testing.assert_allclose(joint.iterates[:, x], per[x].iterates, atol=1e-12)
        np.testing.assert_allclose(joint.kl, sum(r * p.kl for r, p in zip(rho, per)), atol=1e-12)
        assert metrics.kl(star, joint.last, rho) == pytest.approx(joint.kl[-1], abs=1e-12)
    # Theorem 1 in KL_ρ
    run = algorithms.nash_md(P, mu, tau, 1000, rho=rho, target=star, record_every=None)
    assert np.all(run.kl <= metrics.theorem1_bound(tau, np.arange(1001)))
    # a single μ is shared by all contexts
    shared = algorithms.nash_md(P, mu[0], tau, 10)
    np.testing.assert_allclose(shared.iterates[:, 1], algorithms.nash_md(P[1], mu[0], tau, 10).iterates, atol=1e-12)


def test_run_methods_matches_single_runs():
    P, mu = _game(12, seed=4)
    taus = [0.1, 0.03]
    runs = algorithms.run_methods(P, mu, taus, 300, ema_beta=0.7)
    for tau in taus:
        star = nash.regularized_nash(P, mu, tau)
        np.testing.assert_allclose(runs[("nash_md", tau)].kl, algorithms.nash_md(P, mu, tau, 300, target=star).kl,
                                   atol=1e-12)
        np.testing.assert_allclose(runs[("nash_ema", tau)].last, algorithms.nash_ema(P, mu, tau, 300, beta=0.7).last,
                                   atol=1e-12)
    assert set(runs) == {(m, t) for m in algorithms.METHODS for t in taus}


def test_callback_sees_every_iterate():
    P, mu = _game(5)
    seen = []
    run = algorithms.nash_md(P, mu, 0.1, 20, record_every=None, callback=lambda t, pi: seen.append((t, pi.copy())))
    assert [t for t, _ in seen] == list(range(21))
    np.testing.assert_allclose(seen[-1][1], run.last)


# --- metrics ----------------------------------------------------------------------------------------------------


def test_metrics():
    P, mu = known_games.three_raters(0.2), np.array([0.2, 0.3, 0.5])
    ne = known_games.three_raters_nash(0.2)
    assert nash.exploitability(P, ne) == pytest.approx(0, abs=1e-12)
    assert nash.exploitability(P, np.array([1.0, 0, 0])) == pytest.approx(P[1, 0] - 0.5)
    assert metrics.kl(mu, mu) == 0 and metrics.kl(np.array([1.0, 0, 0]), mu) == pytest.approx(np.log(1 / 0.2))
    assert metrics.kl(np.array([0.5, 0.5, 0]), np.array([1.0, 0, 0])) == np.inf
    tau = 0.05
    star = nash.regularized_nash(P, mu, tau)
    assert metrics.regularized_gap(P, mu, tau, star) == pytest.approx(0, abs=1e-10)
    rng = np.random.default_rng(0)
    for _ in range(20):  # gap = max_π' P_τ(π' ≻ π) − 1/2 ≥ 0, attained at BR_τ(π)
        pi = rng.dirichlet(np.ones(3))
        br = softmax(np.log(mu) + P @ pi / tau)
        direct = br @ P @ pi - tau * metrics.kl(br, mu) + tau * metrics.kl(pi, mu) - 0.5
        assert metrics.regularized_gap(P, mu, tau, pi) == pytest.approx(direct, abs=1e-12) and direct > 0
        other = rng.dirichlet(np.ones(3))
        assert other @ P @ pi - tau * metrics.kl(other, mu) + tau * metrics.kl(pi, mu) - 0.5 <= direct + 1e-12


def test_theorem1_bound_indexing():
    assert metrics.theorem1_bound(0.1, 0) == pytest.approx(800.0)
    assert metrics.theorem1_bound(0.5, 9) == pytest.approx(8 / (0.25 * 10))
    assert metrics.default_eta(0.1, 0) * 0.1 == pytest.approx(1.0)


# --- validation -------------------------------------------------------------------------------------------------


def test_validation_errors():
    P, mu = known_games.intransitive_dice(), np.full(3, 1 / 3)
    bad = P.copy()
    bad[0, 2] += 0.3
    with pytest.raises(ValueError, match=r"P \+ P\^T must equal 1: max deviation 0.3 at \(0, 2\)"):
        algorithms.nash_md(bad, mu, 0.1, 10)
    with pytest.raises(ValueError, match=r"P must be square"):
        algorithms.omd(np.full((3, 2), 0.5), mu, 0.1, 10)
    with pytest.raises(ValueError, match=r"P must lie in \[0, 1\]"):
        algorithms.fictitious_play(np.array([[0.5, 1.1], [-0.1, 0.5]]), [0.5, 0.5], 0.1, 10)
    with pytest.raises(ValueError, match=r"mu must have full support \(all > 0\): min entry -0.1 at \(1,\)"):
        algorithms.nash_md(P, [0.6, -0.1, 0.5], 0.1, 10)
    with pytest.raises(ValueError, match=r"mu must sum to 1: sums to 0.9 \(deviation 0.1\)"):
        algorithms.nash_ema(P, [0.3, 0.3, 0.3], 0.1, 10)
    with pytest.raises(ValueError, match=r"mu must have 3 actions to match P: got shape \(2,\)"):
        algorithms.best_response_to_mu(P, [0.5, 0.5], 0.1, 10)
    with pytest.raises(ValueError, match=r"tau must be > 0: got 0"):
        algorithms.nash_md(P, mu, 0, 10)
    with pytest.raises(ValueError, match=r"steps must be >= 0: got -1"):
        algorithms.nash_md(P, mu, 0.1, -1)
    with pytest.raises(ValueError, match=r"steps must be an integer"):
        algorithms.nash_md(P, mu, 0.1, 2.5)
    with pytest.raises(ValueError, match=r"eta \* tau must be <= 1"):
        algorithms.nash_md(P, mu, 0.1, 10, eta=20.0)
    with pytest.raises(ValueError, match=r"eta must be > 0"):
        algorithms.omd(P, mu, 0.1, 10, eta=-1.0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        algorithms.nash_ema(P, mu, 0.1, 10, beta=1.0)
    with pytest.raises(ValueError, match=r"rho must sum to 1"):
        algorithms.nash_md(np.stack([P, P]), mu, 0.1, 10, rho=[0.5, 0.6])
    with pytest.raises(ValueError, match=r"mu must have 2 contexts to match P"):
        algorithms.nash_md(np.stack([P, P]), np.full((3, 3), 1 / 3), 0.1, 10)
    with pytest.raises(ValueError, match=r"record_every must be None or an integer >= 1"):
        algorithms.nash_md(P, mu, 0.1, 10, record_every=0)
    with pytest.raises(ValueError, match=r"unknown method"):
        algorithms.run_methods(P, mu, [0.1], 10, methods=["sgd"])
    assert algorithms.nash_md(P, mu, 0.1, 0).shape == (1, 3)  # steps = 0 is allowed: just π_0 = μ


def test_config_loads_and_rejects_bad_values():
    cfg = from_dict(TabularConfig, {"sizes": [10, 20], "taus": [0.1], "steps": 50}, "tabular")
    assert cfg.sizes == [10, 20] and cfg.steps == 50 and cfg.seed == 0
    assert TabularConfig().sizes == [10, 100, 1000] and TabularConfig().taus == [0.1, 0.02]
    with pytest.raises(ConfigError, match=r"tabular.taus: need taus > 0"):
        from_dict(TabularConfig, {"taus": [0.1, -1.0]}, "tabular")
    with pytest.raises(ConfigError, match=r"tabular.stepz: unknown key"):
        from_dict(TabularConfig, {"stepz": 3}, "tabular")
    with pytest.raises(ConfigError, match=r"tabular.ema_beta: must be in \[0, 1\)"):
        from_dict(TabularConfig, {"ema_beta": 1.0}, "tabular")
    ts = log_spaced(10_000, 200)
    assert ts[0] == 0 and ts[1] == 1 and ts[-1] == 10_000 and np.all(np.diff(ts) > 0)


def test_run_tabular_small(tmp_path):
    from nlhf.tabular.experiment import run_tabular

    cfg = TabularConfig(sizes=[5, 12], taus=[0.2], steps=200, eps_points=5, tau_grid=[0.5, 0.05], contexts=2,
                        context_size=4, tau_sweep_size=6, curve_points=20)
    m = run_tabular(cfg, tmp_path, progress=False)
    assert m["theorem1_holds"] and m["max_ratio_to_bound"] < 1
    assert m["app_a_pref_pi_P_over_pi_R"] == "50/99" and m["three_raters_bt_jump_ok"]
    for f in ["kl_curves.csv", "kl_after_T.csv", "kl_after_T.md", "theorem1_check.csv", "eps_sweep.csv",
              "tau_sweep.csv", "kl_curves.png", "eps_sweep.png", "tau_sweep.png"]:
        assert (tmp_path / f).stat().st_size > 0, f
    assert m["steps"] == 200
