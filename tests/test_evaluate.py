"""Evaluation: exploitability against the policy's distribution, the scorecard's three outcomes, Holm, bootstrap."""

import numpy as np
import pandas as pd
import pytest

from nlhf.evaluate import claim_outcomes, exploitability_on_pool, holm, paired_bootstrap_ci, scorecard
from nlhf.paper import CLAIMS

RPS = {("rock", "scissors"): 1.0, ("scissors", "paper"): 1.0, ("paper", "rock"): 1.0}


def rps_judge(xs, ys, yps):
    """Rock-paper-scissors as a preference: P(y ≻ y') ∈ {0, ½, 1}."""
    return np.array([0.5 if y == yp else RPS.get((y, yp), 0.0) for y, yp in zip(ys, yps)])


def test_exploitability_of_the_mixed_equilibrium_is_zero_and_of_a_pure_strategy_is_half():
    rng = np.random.default_rng(0)
    pool = ["rock", "paper", "scissors"]
    prompts = [f"x{i}" for i in range(300)]
    uniform = [list(rng.choice(pool, size=48)) for _ in prompts]
    pure = [["rock"] * 16 for _ in prompts]
    assert exploitability_on_pool(rps_judge, prompts, [pool] * 300, pure) == pytest.approx(0.5)
    # the best reply to 48 uniform draws gains only their sampling noise (≈ 0.08 at k = 48, → 0 as k grows)
    e48 = exploitability_on_pool(rps_judge, prompts, [pool] * 300, uniform)
    exact = [["rock", "paper", "scissors"] * 16 for _ in prompts]
    assert exploitability_on_pool(rps_judge, prompts, [pool] * 300, exact) == pytest.approx(0.0)
    assert 0.0 < e48 < 0.12


def _long(cells: dict[tuple[str, str], tuple[float, float]]) -> pd.DataFrame:
    rows = []
    names = sorted({n for c in cells for n in c})
    for (a, b), (p, ci) in cells.items():
        rows += [{"row": b, "column": a, "p": p, "ci": ci, "n": 1000},
                 {"row": a, "column": b, "p": 1 - p, "ci": ci, "n": 1000}]
    rows += [{"row": n, "column": n, "p": 0.5, "ci": 0.0, "n": 1000} for n in names]
    return pd.DataFrame(rows)


def test_scorecard_gives_all_three_outcomes_on_a_constructed_table():
    long = _long({("RLHF", "SFT"): (0.80, 0.02),    # clearly above ½: agrees
                  ("MD1", "RLHF"): (0.51, 0.03),    # inside the CI: inconclusive
                  ("RLHF", "BR"): (0.40, 0.02),     # clearly below: disagrees
                  ("MD1", "SFT"): (0.7, 0.02), ("BR", "SFT"): (0.7, 0.02), ("MD1", "BR"): (0.6, 0.02)})
    oracle = _long({("RLHF", "SFT"): (0.9, 0.01), ("MD1", "RLHF"): (0.6, 0.01), ("RLHF", "BR"): (0.5, 0.0),
                    ("MD1", "SFT"): (0.9, 0.01), ("BR", "SFT"): (0.9, 0.01), ("MD1", "BR"): (0.6, 0.01)})
    card = scorecard(long, oracle).set_index("claim")
    assert card.loc["RLHF beats SFT", "outcome"] == "agrees"
    assert card.loc["MD1 (β=0.125) beats RLHF", "outcome"] == "inconclusive"
    assert card.loc["MD1 (β=0.125) beats RLHF", "oracle_outcome"] == "agrees"
    brc = next(c for c in card.index if c.startswith("RLHF beats BR"))
    assert card.loc[brc, "outcome"] == "disagrees" and card.loc[brc, "oracle_outcome"] == "inconclusive"
    assert card.loc["RLHF beats SFT", "consistent_with_paper"] in (True, False)
    # a claim over several cells agrees only if every cell does
    assert card.loc["Every other policy beats SFT", "outcome"] == "agrees"


def test_no_cell_is_counted_in_two_claims():
    cells = [c for _, cs in CLAIMS for c in cs]
    assert len(cells) == len(set(cells))


def test_holm_and_outcome_thresholds():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # a borderline claim that is significant alone becomes inconclusive among many significant-looking ones
    alone = claim_outcomes([[(0.52, 0.019)]])["outcome"][0]
    crowd = claim_outcomes([[(0.52, 0.019)]] * 10)["outcome"][0]
    assert alone == "agrees" and crowd == "inconclusive"


def test_paired_bootstrap_ci_covers_the_paired_difference():
    rng = np.random.default_rng(0)
    base = rng.random(500)
    d, lo, hi = paired_bootstrap_ci(base + 0.02, base)  # identical noise: the difference is exactly 0.02
    assert d == pytest.approx(0.02) and lo == pytest.approx(0.02) and hi == pytest.approx(0.02)
    d, lo, hi = paired_bootstrap_ci(rng.random(500), rng.random(500))
    assert lo < d < hi and lo < 0 < hi


def test_judge_agreement_scores_a_judge_against_the_labels():
    """A judge that knows P draws labels from: its calibration bins lie on the diagonal (within sampling noise) and
    its log-loss is the labels' cross-entropy under P; a judge that flips P scores below chance; ties (label ½)
    count in the log-loss, not in the accuracy."""
    from nlhf.evaluate import judge_agreement

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20_000)
    labels = (rng.random(p.size) < p).astype(float)
    stats, bins = judge_agreement(p, labels)
    assert stats["n"] == p.size
    assert stats["log_loss"] == pytest.approx(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)), rel=1e-6)
    assert np.allclose(bins["mean_label"], bins["mean_p"], atol=0.03) and bins["n"].sum() == p.size
    flipped, _ = judge_agreement(1 - p, labels)
    assert flipped["accuracy"] < 0.5 < stats["accuracy"] and flipped["log_loss"] > stats["log_loss"]
    half, _ = judge_agreement(np.array([0.9, 0.9]), np.array([1.0, 0.5]))
    assert half["accuracy"] == 1.0 and half["log_loss"] > -np.log(0.9)


def test_judge_gap_is_the_paired_difference_of_two_tables():
    """Against itself a judge has no gap; a judge that always says ½ is ½ − P_reference on every cell, with a
    paired interval as narrow as the reference's spread allows."""
    from nlhf.evaluate import judge_gap

    rng = np.random.default_rng(0)
    prompts = [f"x{i}" for i in range(200)]
    samples = {n: [f"{n}{k}" for k in rng.integers(0, 5, size=200)] for n in ("A", "B", "C")}
    value = {f"{n}{k}": v for n in "ABC" for k, v in enumerate(rng.normal(size=5))}

    def reference(xs, ys, yps):
        return 1 / (1 + np.exp(-(np.array([value[y] for y in ys]) - np.array([value[y] for y in yps]))))

    same = judge_gap(reference, reference, prompts, samples)
    assert len(same) == 3 and (same["gap"] == 0).all() and (same["gap_lo"] == 0).all()
    half = judge_gap(lambda xs, ys, yps: np.full(len(ys), 0.5), reference, prompts, samples)
    np.testing.assert_allclose(half["gap"], 0.5 - half["p_reference"])
    assert ((half["gap_lo"] <= half["gap"]) & (half["gap"] <= half["gap_hi"])).all()
    assert list(zip(half["row"], half["column"])) == [("A", "B"), ("A", "C"), ("B", "C")]
