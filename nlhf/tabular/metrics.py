"""Exact metrics of tabular policies (the paper's §1, §6; Theorem 1).

    KL_ρ(p‖q) = Σ_x ρ(x) Σ_y p(y|x) log(p(y|x)/q(y|x))
    gap_τ(π)  = max_π' P_τ(π' ≻ π) − 1/2 = τ log Σ_y μ(y) exp((Pπ)_y/τ) + τ KL(π, μ) − 1/2
    Theorem 1: with η_t = 2/(τ(t+2)), KL(π*_τ ‖ π_t) ≤ 8/(τ²(t+1)) for Nash-MD's t-th iterate.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, rel_entr

from nlhf.games.preferences import broadcast_mu, check_preference, check_rho, check_tau

def kl(p, q, rho=None) -> float:
    """KL(p‖q) = Σ_y p(y) log(p(y)/q(y)); for (X, n) policies KL_ρ = Σ_x ρ(x) KL(p(·|x)‖q(·|x)) (§1)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    per = rel_entr(p, q).sum(-1)
    if per.ndim == 0:
        return float(per)
    return float(check_rho(rho, per.shape[0]) @ per)


def kl_to(target, pi, rho=None) -> float:
    """KL_ρ(π*‖π): the distance of Theorem 1 (alias of ``kl``)."""
    return kl(target, pi, rho)


def regularized_gap(P, mu, tau, pi, rho=None) -> float:
    """Duality gap of the τ-game (§1): max_π' P_τ(π' ≻ π) − 1/2
    = τ log Σ_y μ(y) exp((Pπ)_y/τ) + τ KL(π, μ) − 1/2  (per context, then ρ-averaged).

    Non-negative, convex in π, and zero exactly at π*_τ (max over π' is attained at BR_τ(π) ∝ μ exp(Pπ/τ))."""
    P = check_preference(P)
    tau = check_tau(tau)
    mu = broadcast_mu(P, mu)
    pi = np.asarray(pi, float)
    Ppi = np.einsum("...ij,...j->...i", P, pi)
    gap = tau * logsumexp(np.log(mu) + Ppi / tau, axis=-1) + tau * rel_entr(pi, mu).sum(-1) - 0.5
    if P.ndim == 2:
        return float(gap)
    return float(check_rho(rho, P.shape[0]) @ gap)


def theorem1_bound(tau: float, t) -> np.ndarray:
    """Theorem 1 with η_t = 2/(τ(t+2)): KL(π*_τ ‖ π_t) ≤ 8/(τ²(t+1)) for the t-th iterate (π_0 = μ)."""
    return 8.0 / (tau**2 * (np.asarray(t, float) + 1.0))


def default_eta(tau: float, t) -> np.ndarray:
    """The step size of Theorem 1: η_t = 2/(τ(t+2))."""
    return 2.0 / (tau * (np.asarray(t, float) + 2.0))
