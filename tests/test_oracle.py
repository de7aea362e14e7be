"""The oracle's targets satisfy their defining equations; the token-level mixture; pools of the synthetic task."""

import numpy as np
import pytest
from scipy.special import softmax

from nlhf import oracle
from nlhf.games import bradley_terry, known_games, nash
from nlhf.tasks.synthetic import SyntheticTask
from nlhf.tasks.synthetic_config import SyntheticTaskConfig
from nlhf.tasks.synthetic_documents import Document, parse_prompt
from nlhf.tasks.synthetic_raters import preference_from_utilities, summary_features
from nlhf.training.methods import RLHF, NashEMA, NashMD, OnlineIPO

TAU = 0.05


def _game(n=12, seed=0):
    rng = np.random.default_rng(seed)
    P = known_games.random_game(n, rng, scale=2.0)
    mu = rng.dirichlet(np.ones(n))
    return P, mu


def _synthetic_pool(population="completist", seed=1):
    task = SyntheticTask(SyntheticTaskConfig(population=population))
    x = task.prompts("eval")[3]
    ys = task.candidates(x)
    u = task.utilities([x] * len(ys), ys)
    P = preference_from_utilities(u[:, None, :], u[None, :, :], task.cfg.rater_weights, task.cfg.rater_sharpness)
    mu = np.random.default_rng(seed).dirichlet(np.ones(len(ys)))
    return P, mu


@pytest.mark.parametrize("make", [_game, _synthetic_pool])
def test_regularized_nash_on_a_pool_is_a_fixed_point(make):
    P, mu = make()
    pi = nash.regularized_nash(P, mu, 0.008)
    assert nash.fixed_point_residual(P, mu, 0.008, pi) < 1e-8


@pytest.mark.parametrize("beta", [0.125, 0.5, 0.75])
@pytest.mark.parametrize("make", [_game, _synthetic_pool])
def test_mixture_target_solves_its_fixed_point_equation(make, beta):
    """π_β = BR_τ(normalize(π_β^{1−β} μ^β)): the defining equation of the Nash-MD-PG fixed point."""
    P, mu = make()
    pi = oracle.regularized_mixture_target(P, mu, TAU, beta)
    opponent = oracle.sequence_level_mixture(pi, mu, beta)
    assert np.abs(pi - nash.best_response_tau(P, opponent, mu, TAU)).max() < 1e-8


def test_mixture_target_ends_are_self_play_and_best_response_to_mu():
    P, mu = _game()
    np.testing.assert_allclose(oracle.regularized_mixture_target(P, mu, TAU, 0.0), nash.regularized_nash(P, mu, TAU),
                               atol=1e-10)
    np.testing.assert_allclose(oracle.regularized_mixture_target(P, mu, TAU, 1.0),
                               nash.best_response_tau(P, mu, mu, TAU), atol=1e-12)


def test_rlhf_target_maximises_regularised_reward():
    """π ∝ μ exp(r/τ) beats every perturbation on E_π r − τ KL(π‖μ)."""
    rng = np.random.default_rng(0)
    mu, r = rng.dirichlet(np.ones(6)), rng.normal(size=6)
    pi = oracle.rlhf_target(np.log(mu), r, TAU)

    def objective(p):
        return p @ r - TAU * np.sum(p * np.log(p / mu))

    for _ in range(20):
        q = softmax(np.log(pi) + 0.1 * rng.normal(size=6))
        assert objective(pi) >= objective(q) - 1e-12


def test_method_targets_ema_and_ipo_equal_self_play_and_tables_are_antisymmetric():
    P, mu = _game()
    methods = {"RLHF": RLHF(kind="rlhf", tau=0.05), "SP": NashMD(kind="nash_md", tau=TAU, beta=0.0),
               "MD1": NashMD(kind="nash_md", tau=TAU, beta=0.125), "BR": NashMD(kind="nash_md", tau=TAU, beta=1.0),
               "EMA1": NashEMA(kind="nash_ema", tau=TAU, ema_beta=0.999), "IPO": OnlineIPO(kind="online_ipo", tau=TAU)}
    t = oracle.method_targets(P, np.log(mu), methods, rm_scores=np.zeros(len(mu)))
    assert list(t) == ["SFT", "NE", "RLHF", "RLHF (RM)", "SP", "MD1", "BR", "EMA1", "IPO"]
    np.testing.assert_allclose(t["EMA1"], t["SP"], atol=1e-12)
    np.testing.assert_allclose(t["IPO"], nash.regularized_nash(P, mu, TAU), atol=1e-12)
    np.testing.assert_allclose(t["MD1"], oracle.regularized_mixture_target(P, mu, TAU, 0.125), atol=1e-12)
    np.testing.assert_allclose(t["RLHF"], oracle.rlhf_target(np.log(mu), bradley_terry.fit_bradley_terry(P, np.outer(mu, mu)),
                                                             0.05), atol=1e-12)
    np.testing.assert_allclose(t["RLHF (RM)"], mu, atol=1e-12)  # a constant reward leaves μ unchanged
    order = list(t)
    long = oracle.table_long([t, t], [P, P], order)
    m = long.pivot(index="row", columns="column", values="p")
    np.testing.assert_allclose(m.values + m.values.T, 1.0, atol=1e-12)
    # the NE is never beaten: P(NE ≻ π) ≥ 1/2 for every π
    assert (m.loc[order, "NE"] >= 0.5 - 1e-9).all()
    expl = oracle.exploitability_per_policy([t], [P], ["NE", "SFT"])
    assert abs(expl["NE"]) < 1e-7 and expl["SFT"] > 0


def test_token_level_mixture_equals_sequence_level_on_one_step_and_at_the_ends():
    rng = np.random.default_rng(0)
    pi, mu = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    flat = [(t, 99) for t in range(5)]  # one token then EOS: a single normaliser, so the two agree
    np.testing.assert_allclose(oracle.token_level_mixture(flat, pi, mu, 0.3),
                               oracle.sequence_level_mixture(pi, mu, 0.3), atol=1e-12)
    tree = [(0, 99), (0, 1, 99), (0, 2, 99), (1, 99), (1, 1, 99)]
    for beta, ref in ((0.0, pi), (1.0, mu)):
        np.testing.assert_allclose(oracle.token_level_mixture(tree, pi, mu, beta), ref, atol=1e-12)
    gap = oracle.token_level_mixture(tree, pi, mu, 0.5) - oracle.sequence_level_mixture(pi, mu, 0.5)
    assert np.abs(gap).sum() > 1e-3  # path-dependent normalisers: not the same distribution in general


def test_candidate_pool_holds_every_style_and_is_stable():
    task = SyntheticTask(SyntheticTaskConfig())
    x = task.prompts("eval")[0]
    pool = task.candidates(x)
    assert pool == task.candidates(x) == sorted(set(pool))
    rng = np.random.default_rng(0)
    for style in ("complete", "key_only", "top_fact", "lead", "key_reordered", "complete_invented"):
        assert task.reference_summary(parse_prompt(x), style, rng) in pool
    assert all(task.is_well_formed(x, y) for y in pool)
    # the embellished form with its whole mass: the complete summary followed by every word not in the document
    doc = parse_prompt(x)
    invented = [w for w in task.fact_words if w not in doc.facts]
    embellished = [y for y in pool if summary_features(doc, y, task.cfg.max_summary_words)["form_embellished"]]
    assert sorted(embellished) == sorted(" ".join(list(doc.facts) + [w]) for w in invented)


def test_populations_keep_raters_consistent_and_condorcet_unchanged():
    """Each rater is a utility maximiser (a BT rater); the condorcet population's judge is the original one."""
    task = SyntheticTask(SyntheticTaskConfig())
    x, a, b, c = task.condorcet_example()
    p = task.judge([x] * 3, [a, b, c], [b, c, a])
    assert (p > 0.5).all()  # the documented cycle A ≻ B ≻ C ≻ A
    comp = SyntheticTask(SyntheticTaskConfig(population="completist"))
    doc = parse_prompt(x)
    complete = " ".join(doc.facts)
    invented = next(w for w in comp.fact_words if w not in doc.facts)
    embellished = " ".join(list(doc.facts) + [invented])
    assert comp.judge([x], [embellished], [embellished])[0] == 0.5
    # the completist majority prefers the faithful summary to the embellished one: the Condorcet winner
    assert comp.judge([x], [complete], [embellished])[0] > 0.56
    # ... which beats everything else the grammar makes, by a larger margin than the faithful summary does
    others = [y for y in comp.candidates(x)
              if summary_features(doc, y, 12)["form_embellished"] == 0 and y != complete]
    assert (comp.judge([x] * len(others), [embellished] * len(others), others) > 0.5).all()
    assert (comp.judge([x] * len(others), [embellished] * len(others), others).mean()
            > comp.judge([x] * len(others), [complete] * len(others), others).mean())
    # three SFT-like outputs of the three lengths cycle (the minor readers decide where the large groups tie)
    short, medium, long = doc.facts[-1], " ".join(doc.facts[-2:][::-1]), " ".join(doc.facts[::-1])
    p = comp.judge([x] * 3, [short, medium, long], [medium, long, short])
    assert (p > 0.5).all() or (p < 0.5).all()
    with pytest.raises(ValueError, match="population"):
        SyntheticTaskConfig(population="nope")
    with pytest.raises(ValueError, match="rater_weights"):
        SyntheticTaskConfig(population="completist", rater_weights=[0.5, 0.5, 0.0])


def test_pentagon_population_cycles_five_forms_and_beta_moves_its_targets():
    """The five pentagon raters rank five shapes in rotation, their majority cycles over them with margins of
    about 4/5, also where the lead is a key fact; where the reference writes two of them far less often, the
    Nash-MD-PG targets of different β part (with a flat reference they tie here, because the game is symmetric:
    every regularised equilibrium of a rotation-invariant P and a uniform μ is uniform)."""
    from nlhf.tasks.synthetic_raters import POPULATIONS

    assert not [k for pop in ("condorcet", "completist", "cyclic") for r in POPULATIONS[pop].values() for k in r
                if k.startswith("shape_")]  # the shapes leave the other populations' utilities as they were
    task = SyntheticTask(SyntheticTaskConfig(population="pentagon"))
    for doc in (Document(("storm", "bridge", "mayor", "river", "school"), (2, 3, 1, 3, 1)),
                Document(("storm", "bridge", "mayor", "river"), (3, 2, 1, 3))):  # the lead is key in the second
        x = doc.prompt
        keys = [f for f, i in zip(doc.facts, doc.importance) if i == 3]
        cycle = {"tail": doc.facts[1:], "complete": doc.facts, "key_facts": keys, "lead": doc.facts[:1],
                 "non_key": [f for f in doc.facts if f not in keys]}
        ys = [" ".join(cycle[f]) for f in cycle]
        for f, y in zip(cycle, ys):  # each summary has the shape the raters score it by
            assert summary_features(doc, y, 12)[f"shape_{f}"] == 1.0, (doc, f)
        p_next = task.judge([x] * 5, ys, ys[1:] + ys[:1])
        assert (p_next > 0.75).all()  # four raters of five prefer each shape to the next: a 5-cycle
        u = task.utilities([x] * 5, ys)  # each rater ranks the five in rotation, one first
        assert sorted(np.argmax(u, axis=0)) == list(range(5)) and (np.sort(u, axis=0) == np.arange(5.0)[:, None]).all()
        others = [y for y in task.candidates(x) if y not in ys]
        for y in ys:  # every other summary loses to each of the five
            assert (task.judge([x] * len(others), [y] * len(others), others) > 0.5).all()
    P = preference_from_utilities(u[:, None, :], u[None, :, :], task.cfg.rater_weights, task.cfg.rater_sharpness)
    assert (nash.nash_equilibrium(P) > 0.05).all()  # the equilibrium mixes all five
    deep = np.log(np.array([1e-7, 0.3, 0.3, 0.4, 1e-5]))  # SFT writes the tail and the non-key facts rarely
    deep = np.exp(deep - np.log(np.exp(deep).sum()))
    sp, md3 = (oracle.regularized_mixture_target(P, deep, 0.008, b) for b in (0.0, 0.375))
    assert 0.5 * np.abs(sp - md3).sum() > 0.1
    flat = np.full(5, 0.2)
    sp, md3 = (oracle.regularized_mixture_target(P, flat, 0.008, b) for b in (0.0, 0.375))
    np.testing.assert_allclose(sp, md3, atol=1e-6)
