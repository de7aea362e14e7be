"""Exact Nash equilibria of preference games (the paper's §1, §3–4; Prop. 1).

* ``nash_equilibrium(P)``: a maximin strategy of the symmetric zero-sum game ``P − 1/2`` (linear program).
* ``regularized_nash(P, mu, tau)``: the unique NE π*_τ of the τ-regularized game
  max_π min_π' P(π ≻ π') − τ KL(π, μ) + τ KL(π', μ) (Prop. 1), the fixed point

      π*_τ = BR_τ(π*_τ),   BR_τ(q) ∝ μ·exp(Pq/τ).

* ``exploitability(P, pi)``: max_y P(y ≻ π) − 1/2, zero exactly at a NE.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.special import softmax

from nlhf.games.preferences import broadcast_mu, check_preference, check_rho, check_tau


def nash_equilibrium(P) -> np.ndarray:
    """A maximin strategy of the symmetric zero-sum game P − 1/2 (§1): argmax_π min_y' P(π ≻ y').

    Linear program (HiGHS): max v s.t. (Pᵀπ)_j ≥ v ∀j, Σπ = 1, π ≥ 0. The value is 1/2. The NE need not be
    unique; this returns the vertex HiGHS finds. Contexts (X, n, n) are solved one by one.
    """
    P = check_preference(P)
    if P.ndim == 3:
        return np.stack([nash_equilibrium(Px) for Px in P])
    n = P.shape[0]
    c = np.zeros(n + 1)
    c[-1] = -1.0  # minimise −v
    A_ub = np.hstack([-P.T, np.ones((n, 1))])  # v − (Pᵀπ)_j ≤ 0
    A_eq = np.append(np.ones(n), 0.0)[None, :]
    bounds = [(0, None)] * n + [(None, None)]
    res = linprog(c, A_ub=A_ub, b_ub=np.zeros(n), A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"nash_equilibrium: LP failed: {res.message}")
    pi = np.clip(res.x[:n], 0.0, None)
    return pi / pi.sum()


def best_response_tau(P, q, mu, tau) -> np.ndarray:
    """Regularized best response BR_τ(q) = argmax_π P(π≻q) − τ KL(π, μ) ∝ μ·exp(Pq/τ) (§1)."""
    return softmax(np.log(mu) + np.einsum("...ij,...j->...i", P, q) / tau, axis=-1)


def fixed_point_residual(P, mu, tau, pi) -> float:
    """max |π − normalize(μ·exp(Pπ/τ))|: zero exactly at π*_τ."""
    P, pi, mu = np.asarray(P, float), np.asarray(pi, float), np.asarray(mu, float)
    return float(np.max(np.abs(pi - best_response_tau(P, pi, mu, tau))))


def _log_normalize(z: np.ndarray) -> np.ndarray:
    """z − logsumexp(z) for a vector (plain numpy: scipy's logsumexp has a large per-call overhead for this inner
    loop's small vectors)."""
    m = z.max()
    return z - (m + np.log(np.exp(z - m).sum()))


def _mirror_prox(P, log_mu, tau, log_pi, iters: int, eta: float = 1.0, tol: float = 0.0) -> np.ndarray:
    """Implicit (composite) mirror-prox on the strongly monotone VI of the τ-game, in log space.

    log π' = (log π + ητ log μ + η P π_lead) / (1 + ητ) (+const); leading step with P π, then the
    extragradient step with P π_half. Fixed point: π ∝ μ exp(Pπ/τ). Converges linearly (rate ≈ 1/(1+ητ)).
    """
    c = 1.0 / (1.0 + eta * tau)
    for _ in range(iters):
        pi = np.exp(log_pi)
        half = _log_normalize((log_pi + eta * tau * log_mu + eta * (P @ pi)) * c)
        new = _log_normalize((log_pi + eta * tau * log_mu + eta * (P @ np.exp(half))) * c)
        step = np.max(np.abs(np.exp(new) - pi))
        log_pi = new
        if step < tol:
            break
    return log_pi


def regularized_nash(P, mu=None, tau: float = 0.1, tol: float = 1e-12, max_newton: int = 100) -> np.ndarray:
    """The unique NE π*_τ of the τ-regularized game (Prop. 1): the fixed point π = normalize(μ·exp(Pπ/τ)).

    π*_τ solves a strongly monotone VI. We (1) warm-start with implicit mirror-prox to moderate accuracy,
    (2) run damped Newton on g(π) = π − softmax(log μ + Pπ/τ) = 0. The Jacobian is I − (diag(p) − ppᵀ)(P−½)/τ,
    whose eigenvalues are 1 + (purely imaginary), so it is never singular and the Newton direction always
    decreases ‖g‖²: a backtracking line search makes it globally convergent. Returns π with
    ``fixed_point_residual ≤ 1e-10`` (checked; raises if not reached). Contexts are solved one by one.
    """
    P = check_preference(P)
    tau = check_tau(tau)
    mu = broadcast_mu(P, mu)
    if P.ndim == 3:
        return np.stack([regularized_nash(Px, mx, tau, tol, max_newton) for Px, mx in zip(P, mu)])
    n = P.shape[0]
    log_mu = np.log(mu)
    A = P - 0.5  # (P − ½)π = Pπ − ½: same softmax, better conditioned Jacobian
    warm = int(min(2000, max(50, 10.0 / tau)))
    log_pi = _mirror_prox(A, log_mu, tau, log_mu.copy(), iters=warm, eta=1.0, tol=1e-4)
    pi = np.exp(log_pi)

    def residual(x):
        p = softmax(log_mu + (A @ x) / tau)
        return x - p, p

    g, p = residual(pi)
    eye = np.eye(n)
    for _ in range(max_newton):
        gnorm = np.linalg.norm(g)
        if np.max(np.abs(g)) <= tol:
            break
        J = eye - (p[:, None] * A - np.outer(p, p @ A)) / tau
        d = np.linalg.solve(J, -g)
        step = 1.0
        while step > 1e-12:
            x = pi + step * d
            g_new, p_new = residual(x)
            if np.linalg.norm(g_new) <= (1 - 1e-4 * step) * gnorm:
                break
            step *= 0.5
        pi, g, p = x, g_new, p_new
    # return the softmax image: strictly positive, on the simplex; one more fixed-point map keeps the residual
    out = p / p.sum()
    res = fixed_point_residual(P, mu, tau, out)
    if res > 1e-10:
        raise RuntimeError(f"regularized_nash did not converge: residual {res:.3g} (tau={tau}, n={n})")
    return out


def exploitability(P, pi, rho=None) -> float:
    """max_y P(y ≻ π) − 1/2 ≥ 0 (zero iff π is a NE); with contexts, Σ_x ρ(x) max_y P(y≻π|x) − 1/2."""
    P = check_preference(P)
    pi = np.asarray(pi, float)
    best = np.einsum("...ij,...j->...i", P, pi).max(-1) - 0.5
    if P.ndim == 2:
        return float(best)
    return float(check_rho(rho, P.shape[0]) @ best)
