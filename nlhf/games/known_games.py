"""Preference games with known answers, and generators of random ones (the paper's §3.2, App. A, C).

* ``three_raters`` (§3.2): three rater types whose majority cycles; closed-form NE ``three_raters_nash``.
* ``intransitive_dice`` (App. C.1): each die beats the next with probability 5/9; the NE is uniform.
* ``majority_vote_game`` / ``condorcet_rankings`` (App. C.2): P(y ≻ y') = weighted fraction of voters ranking y
  above y'; three Condorcet voters give a cycle with 2/3 per edge.
* ``app_a_example`` (App. A): a Bradley–Terry game where RLHF and preference optimisation disagree on a
  restricted policy set.
* ``random_game``: P = σ(A), A antisymmetric Gaussian; ``find_cycle`` certifies non-transitivity.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.special import expit

from nlhf.games.bradley_terry import bradley_terry_game
from nlhf.games.preferences import check_preference


def three_raters(eps: float) -> np.ndarray:
    """Three rater types (§3.2). Type 1 (share 1/3−ε) prefers y2≻y1, type 2 (1/3+ε/2) y1≻y3, type 3 (1/3+ε/2)
    y3≻y2; all other comparisons are ties. P(y2≻y1) = 2/3−ε/2, P(y3≻y2) = 2/3+ε/4, P(y3≻y1) = 1/3−ε/4.
    Shares are non-negative for −2/3 ≤ ε ≤ 1/3. The NE is (1/3+ε/2, 1/3+ε/2, 1/3−ε) for |ε| ≤ 1/3."""
    eps = float(eps)
    if not -2 / 3 <= eps <= 1 / 3:
        raise ValueError(f"eps must be in [-2/3, 1/3] so that rater shares are >= 0: got {eps}")
    P = np.full((3, 3), 0.5)
    P[1, 0] = 2 / 3 - eps / 2
    P[2, 1] = 2 / 3 + eps / 4
    P[2, 0] = 1 / 3 - eps / 4
    for i, j in [(1, 0), (2, 1), (2, 0)]:
        P[j, i] = 1 - P[i, j]
    return P


def three_raters_nash(eps: float) -> np.ndarray:
    """Closed-form NE of ``three_raters(eps)`` for |ε| ≤ 1/3: (1/3+ε/2, 1/3+ε/2, 1/3−ε)."""
    return np.array([1 / 3 + eps / 2, 1 / 3 + eps / 2, 1 / 3 - eps])


def dice_game(faces) -> np.ndarray:
    """P(die i ≻ die j) = Pr(a roll of i beats a roll of j), ties counted 1/2 (App. C.1)."""
    F = [np.asarray(f, float) for f in faces]
    n = len(F)
    P = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            d = F[i][:, None] - F[j][None, :]
            P[i, j] = np.mean((d > 0) + 0.5 * (d == 0))
    return P


def intransitive_dice() -> np.ndarray:
    """Dice {2,4,9}, {1,6,8}, {3,5,7} (App. C.1): each beats the next with prob 5/9; the NE is uniform."""
    return dice_game([(2, 4, 9), (1, 6, 8), (3, 5, 7)])


def majority_vote_game(ranks, weights=None) -> np.ndarray:
    """Population preference from voters (App. C.2): P(y≻y') = weighted fraction of voters that rank y above y'
    (ties count 1/2). ``ranks[v, y]`` is voter v's rank of y (smaller = better); equal ranks are ties."""
    R = np.asarray(ranks, float)
    if R.ndim != 2:
        raise ValueError(f"ranks must be (voters, n): got shape {R.shape}")
    w = np.full(len(R), 1.0 / len(R)) if weights is None else np.asarray(weights, float) / np.sum(weights)
    d = R[:, :, None] - R[:, None, :]  # < 0 ⇔ y ranked above y'
    return np.einsum("v,vij->ij", w, (d < 0) + 0.5 * (d == 0))


def random_rankings(voters: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``voters`` uniformly random strict rankings of n items, as ranks (voters, n)."""
    return np.argsort(rng.random((voters, n)), axis=1).argsort(axis=1)


def condorcet_rankings() -> np.ndarray:
    """Three transitive voters a>b>c, b>c>a, c>a>b whose majority is a cycle with 2/3 per edge (App. C.2)."""
    return np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0]])


def random_game(n: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A random non-transitive game: P = σ(A), A antisymmetric with A_ij ~ N(0, scale²) for i < j."""
    if n < 1:
        raise ValueError(f"n must be >= 1: got {n}")
    G = rng.normal(0.0, scale, (n, n))
    A = np.triu(G, 1)
    return expit(A - A.T)


def find_cycle(P) -> tuple[int, int, int] | None:
    """A 3-cycle i≻j≻k≻i of the strict majority relation (P > 1/2), or None. A tournament without
    3-cycles is transitive, so a hit proves P is non-transitive (no scalar score fits it)."""
    P = check_preference(P)
    W = (P > 0.5).astype(float)
    W2 = W @ W  # W2[i,k] > 0: i≻j≻k for some j
    hits = np.argwhere((W2 > 0) & (W.T > 0))  # and k≻i
    if len(hits) == 0:
        return None
    i, k = (int(v) for v in hits[0])
    j = int(np.flatnonzero(W[i] * W[:, k])[0])
    return i, j, k


@dataclass(frozen=True)
class AppAExample:
    """App. A: Elo R = (0, log 9, log 2); BT game; restricted set S = {π: π(y1) = 2π(y2)}."""

    R: np.ndarray  # Elo scores
    P: np.ndarray  # BT preferences, float
    P_exact: list  # same with Fractions: strengths e^R = (1, 9, 2), P_ij = s_i / (s_i + s_j)
    pi_R: np.ndarray  # argmax of expected Elo on S: (2/3, 1/3, 0)
    pi_P: np.ndarray  # preference-optimal policy on S: (0, 0, 1)

    def pref_P_over_R_exact(self) -> Fraction:
        """P(π_P ≻ π_R) as an exact Fraction (= 50/99)."""
        pP = [Fraction(0), Fraction(0), Fraction(1)]
        pR = [Fraction(2, 3), Fraction(1, 3), Fraction(0)]
        return sum(pP[i] * self.P_exact[i][j] * pR[j] for i in range(3) for j in range(3))


def app_a_example() -> AppAExample:
    """The App. A example where a perfect BT model still separates RLHF from preference optimisation."""
    s = [Fraction(1), Fraction(9), Fraction(2)]
    P_exact = [[s[i] / (s[i] + s[j]) for j in range(3)] for i in range(3)]
    R = np.array([0.0, np.log(9), np.log(2)])
    return AppAExample(R=R, P=bradley_terry_game(R), P_exact=P_exact,
                       pi_R=np.array([2 / 3, 1 / 3, 0.0]), pi_P=np.array([0.0, 0.0, 1.0]))
