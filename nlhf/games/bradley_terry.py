"""Bradley–Terry preferences and their maximum-likelihood fit (the paper's §3.2, App. A).

A Bradley–Terry (Elo) model explains preferences by one scalar score per response,

    P(y_i ≻ y_j) = σ(R_i − R_j),

so it cannot represent a non-transitive P; fitting it anyway gives the reward model of RLHF, whose unregularized
optimum is the one-hot policy on the best-scored response (``rlhf_optimum``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from nlhf.games.preferences import check_preference


def bradley_terry_game(R) -> np.ndarray:
    """P(y_i ≻ y_j) = σ(R_i − R_j) for Elo scores R (App. A)."""
    R = np.asarray(R, float)
    return expit(R[:, None] - R[None, :])


def fit_bradley_terry(P, weights=None, l2: float = 1e-8, tol: float = 1e-10, max_iter: int = 200, *,
                      newton: str = "weighted", ridge_per_weight: bool = True, stop: str = "gradient",
                      min_step: float = 1e-12, check: bool = True) -> np.ndarray:
    """Maximum-likelihood BT scores r (Σr = 0) for pairwise preferences P, pairs weighted by ``weights``
    (default: every ordered pair i≠j equally): min −Σ w_ij P_ij log σ(r_i − r_j) + λ‖r‖², with the ridge
    λ = l2·(Σ w) (``ridge_per_weight``) or λ = l2.

    The small ridge keeps r finite where the likelihood alone would not (a response that wins every comparison, or
    one that is almost never compared: it stays near the mean score). Convex; solved by Newton's method from r = 0
    with a backtracking (Armijo) line search that halves the step down to ``min_step``.

    ``newton`` selects how the loss and the Newton step are computed:

    * ``"weighted"``: the loss with log σ clipped at −1e300; gradient and Hessian (a weighted graph Laplacian plus
      the ridge) of that loss; the step by ``np.linalg.solve``.
    * ``"pairs"`` (``weights`` must be None): the loss over the off-diagonal pairs with log σ = −log(1 + e^(−d));
      gradient and Hessian as row-minus-column sums of (σ(d) − P) and 2σ(d)(1 − σ(d)), which (for P + Pᵀ = 1)
      are twice the data term's while the ridge's are not doubled; the step by least squares. The Newton iteration then converges to
      the minimiser with ridge λ/2, and the line search checks decrease on the loss with ridge λ.

    ``stop``: ``"gradient"`` ends when max |∇| ≤ tol·max(1, Σ w) (checked before each step), ``"loss"`` when a
    step lowers the loss by less than ``tol``; either way after at most ``max_iter`` steps. ``check``: validate P
    with :func:`check_preference` (False: take it as given, e.g. a judge's matrix that may leave [0, 1] by a
    rounding error).
    """
    if newton not in ("weighted", "pairs"):
        raise ValueError(f"newton must be 'weighted' or 'pairs': got {newton!r}")
    if stop not in ("gradient", "loss"):
        raise ValueError(f"stop must be 'gradient' or 'loss': got {stop!r}")
    if newton == "pairs" and weights is not None:
        raise ValueError("newton='pairs' fits every ordered pair equally: weights must be None")
    P = check_preference(P) if check else np.asarray(P, dtype=float)
    n = P.shape[0]
    W = np.ones((n, n)) - np.eye(n) if weights is None else np.asarray(weights, float)
    lam = l2 * W.sum() if ridge_per_weight else l2
    off = ~np.eye(n, dtype=bool)
    A = W * P

    def differences(r):
        return r[:, None] - r[None, :]

    if newton == "weighted":
        def loss(r):
            return float(-np.sum(A * np.log(expit(differences(r))).clip(-1e300)) + lam * r @ r)

        def gradient(r):
            G = A * expit(-differences(r))
            return -(G.sum(1) - G.sum(0)) + 2 * lam * r

        def newton_step(r, g):
            d = differences(r)
            S = A * expit(d) * expit(-d)
            B = S + S.T
            return np.linalg.solve(np.diag(B.sum(1)) - B + 2 * lam * np.eye(n), g)
    else:
        def loss(r):
            return float(-(P * -np.logaddexp(0.0, -differences(r)))[off].sum() + lam * (r @ r))

        def gradient(r):
            excess = (1.0 / (1.0 + np.exp(-differences(r))) - P) * off
            return excess.sum(1) - excess.sum(0) + 2 * lam * r

        def newton_step(r, g):
            sig = 1.0 / (1.0 + np.exp(-differences(r)))
            curvature = 2 * sig * (1 - sig) * off
            return np.linalg.lstsq(np.diag(curvature.sum(1)) - curvature + 2 * lam * np.eye(n), g, rcond=None)[0]

    r = np.zeros(n)
    f = loss(r)
    for _ in range(max_iter):
        g = gradient(r)
        if stop == "gradient" and np.abs(g).max() <= tol * max(1.0, W.sum()):
            break
        step = newton_step(r, g)
        t = 1.0
        while t > min_step:
            f_new = loss(r - t * step)
            if f_new <= f - 1e-4 * t * (g @ step):
                break
            t *= 0.5
        r, f_old, f = r - t * step, f, f_new
        if stop == "loss" and f_old - f < tol:
            break
    return r - r.mean()


def rlhf_optimum(P) -> np.ndarray:
    """The RLHF optimum without regularization: one-hot on argmax of the fitted BT reward (§3.2)."""
    r = fit_bradley_terry(P)
    out = np.zeros(len(r))
    out[int(np.argmax(r))] = 1.0
    return out
