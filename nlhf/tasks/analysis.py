"""How non-transitive is a preference P on a set of samples? (why it matters: the paper's §3 and App. A–C)

All functions take per-prompt preference matrices ``P[i, j] = P(y_i ≻ y_j | x)`` over *distinct* samples of one
prompt (antisymmetric, diagonal 1/2); ``preference_matrices`` builds them from any ``judge(x, y, y')``.

* ``cycle_fraction``   among triples of distinct samples, the fraction whose majority relation (P > 1/2) is a
                       3-cycle i ≻ j ≻ k ≻ i. A transitive P (e.g. Bradley–Terry) has none.
* ``bt_fit_agreement`` the best Bradley–Terry fit σ(r_i − r_j) to P (maximum likelihood with soft labels P):
                       the fraction of pairs whose direction it gets right (P itself: 100% by definition),
                       and its log-loss vs the entropy of P (the gap is the KL no scalar score can remove).
* ``nash_support``     the maximin (Nash) mixture over the samples (LP) and whether a Condorcet winner exists:
                       a mixed equilibrium is what makes Nash-MD differ from RLHF.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import linprog

from nlhf.games.bradley_terry import fit_bradley_terry

Judge = Callable[[Sequence[str], Sequence[str], Sequence[str]], np.ndarray]

# How ``bt_fit_agreement`` fits Bradley–Terry scores to a matrix of soft labels
# (:func:`nlhf.games.bradley_terry.fit_bradley_terry`): every ordered pair equally, ridge 1e-6 (finite scores where P
# has 0/1 entries), the "pairs" Newton step, stopping when a step lowers the loss by less than 1e-10. P is taken as
# the judge gives it (no range check).
BT_FIT = dict(l2=1e-6, max_iter=100, newton="pairs", ridge_per_weight=False, stop="loss", min_step=1e-8, check=False)


def preference_matrices(judge: Judge, prompts: Sequence[str], samples: Sequence[Sequence[str]],
                        dedupe: bool = True) -> list[np.ndarray]:
    """P matrix over each prompt's samples (duplicates removed first when ``dedupe``), one judge call overall."""
    groups = [list(dict.fromkeys(s)) if dedupe else list(s) for s in samples]
    xs, ys, yps, idx = [], [], [], []
    for g, (x, s) in enumerate(zip(prompts, groups)):
        for i, j in itertools.combinations(range(len(s)), 2):
            xs.append(x), ys.append(s[i]), yps.append(s[j]), idx.append((g, i, j))
    p = np.asarray(judge(xs, ys, yps), dtype=np.float64) if xs else np.zeros(0)
    mats = [np.full((len(s), len(s)), 0.5) for s in groups]
    for (g, i, j), v in zip(idx, p):
        mats[g][i, j], mats[g][j, i] = v, 1.0 - v
    return mats


def is_cycle(P: np.ndarray, i: int, j: int, k: int) -> bool:
    """Whether the strict majority relation on {i, j, k} is a 3-cycle (either direction)."""
    a, b, c = P[i, j] > 0.5, P[j, k] > 0.5, P[k, i] > 0.5
    a2, b2, c2 = P[j, i] > 0.5, P[k, j] > 0.5, P[i, k] > 0.5
    return (a and b and c) or (a2 and b2 and c2)


def cycle_fraction(matrices: Sequence[np.ndarray] | np.ndarray, max_triples: int | None = None,
                   rng: np.random.Generator | None = None) -> dict:
    """Fraction of triples (of distinct samples of the same prompt) whose majority relation is a cycle.

    ``matrices``: one (m, m) matrix per prompt, or an array (n, 3, 3) of triples. ``max_triples`` caps the
    triples drawn per prompt (uniformly, with ``rng``). Returns ``{"cycle_fraction", "n_triples", "n_cycles",
    "prompts_with_cycle"}`` (the last is a fraction of prompts with ≥ 3 samples).
    """
    rng = rng or np.random.default_rng(0)
    n_tri = n_cyc = n_prompts = prompts_cyc = 0
    for P in matrices:
        P = np.asarray(P)
        m = P.shape[0]
        if m < 3:
            continue
        triples = list(itertools.combinations(range(m), 3))
        if max_triples is not None and len(triples) > max_triples:
            pick = rng.choice(len(triples), size=max_triples, replace=False)
            triples = [triples[t] for t in pick]
        c = int(sum(is_cycle(P, *t) for t in triples))
        n_tri += len(triples)
        n_cyc += c
        n_prompts += 1
        prompts_cyc += c > 0
    return {"cycle_fraction": n_cyc / n_tri if n_tri else float("nan"), "n_triples": n_tri,
            "n_cycles": n_cyc, "prompts_with_cycle": prompts_cyc / n_prompts if n_prompts else float("nan")}


def bt_fit_agreement(matrices: Sequence[np.ndarray]) -> dict:
    """Fit BT per matrix; report direction agreement with P and log-loss vs P's entropy (means over pairs).

    Pairs with P = 1/2 exactly are left out of the agreement counts. Returns
    ``{"bt_agreement", "p_agreement" (= 1.0), "bt_logloss", "p_entropy", "bt_excess_logloss", "n_pairs"}``.
    """
    agree = total = 0
    ll = ent = 0.0
    n_ll = 0
    for P in matrices:
        P = np.asarray(P, dtype=np.float64)
        m = P.shape[0]
        if m < 2:
            continue
        r = fit_bradley_terry(P, **BT_FIT)
        iu = np.triu_indices(m, 1)
        p = np.clip(P[iu], 1e-12, 1 - 1e-12)
        d = (r[:, None] - r[None, :])[iu]
        q = np.clip(1.0 / (1.0 + np.exp(-d)), 1e-12, 1 - 1e-12)
        decided = P[iu] != 0.5
        agree += int(((d > 0) == (P[iu] > 0.5))[decided].sum())
        total += int(decided.sum())
        ll += float(-(p * np.log(q) + (1 - p) * np.log(1 - q)).sum())
        ent += float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum())
        n_ll += len(p)
    n = max(n_ll, 1)
    return {"bt_agreement": agree / total if total else float("nan"), "p_agreement": 1.0,
            "bt_logloss": ll / n, "p_entropy": ent / n, "bt_excess_logloss": (ll - ent) / n, "n_pairs": n_ll}


def condorcet_winner(P: np.ndarray) -> int | None:
    """Index that beats (P > 1/2) every other sample, or None."""
    P = np.asarray(P)
    m = P.shape[0]
    for i in range(m):
        if all(P[i, j] > 0.5 for j in range(m) if j != i):
            return i
    return None


def maximin_mixture(P: np.ndarray) -> np.ndarray:
    """A Nash equilibrium π of the symmetric game P: max_π min_j Σ_i π_i P_ij (value 1/2), by LP."""
    P = np.asarray(P, dtype=np.float64)
    m = P.shape[0]
    # variables (π_1..π_m, v): maximise v s.t. v − Σ_i π_i P_ij ≤ 0, Σπ = 1, π ≥ 0
    c = np.zeros(m + 1)
    c[-1] = -1.0
    a_ub = np.hstack([-P.T, np.ones((m, 1))])
    a_eq = np.hstack([np.ones((1, m)), np.zeros((1, 1))])
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(m), A_eq=a_eq, b_eq=[1.0],
                  bounds=[(0, None)] * m + [(None, None)], method="highs")
    pi = np.clip(res.x[:m], 0, None)
    return pi / pi.sum()


def nash_support(matrices: Sequence[np.ndarray], tol: float = 1e-6) -> dict:
    """Over prompts: fraction with a Condorcet winner, mean Nash support size and entropy (nats)."""
    cw, sup, ent, n = 0, 0.0, 0.0, 0
    for P in matrices:
        if np.asarray(P).shape[0] < 2:
            continue
        n += 1
        cw += condorcet_winner(P) is not None
        pi = maximin_mixture(P)
        sup += int((pi > tol).sum())
        nz = pi[pi > tol]
        ent += float(-(nz * np.log(nz)).sum())
    return {"condorcet_winner_fraction": cw / n if n else float("nan"),
            "nash_support_mean": sup / n if n else float("nan"),
            "nash_entropy_mean": ent / n if n else float("nan"), "n_prompts": n}
