"""Preference matrices and policies: validation, and the policy-level preference (the paper's §1).

A *preference matrix* ``P`` has ``P[i, j] = P(y_i ≻ y_j)`` in [0, 1] with ``P + Pᵀ = 1`` (so ``P[i, i] = 1/2``);
a batch of contexts is ``(X, n, n)``, a policy ``(n,)`` or ``(X, n)``, ρ a distribution over contexts. The checks
raise ``ValueError`` naming the failed condition; every solver of :mod:`nlhf.games` and :mod:`nlhf.tabular` uses
them.

    P(p ≻ q) = pᵀ P q,   with contexts Σ_x ρ(x) p_xᵀ P_x q_x
"""

from __future__ import annotations

import numpy as np

TOL_ANTISYM = 1e-9  # |P + Pᵀ − 1| allowed
TOL_SIMPLEX = 1e-9  # |Σμ − 1| allowed


def _idx(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape))


def check_preference(P) -> np.ndarray:
    """Return ``P`` as float array (n, n) or (X, n, n); raise ``ValueError`` naming the failed condition."""
    P = np.asarray(P, dtype=float)
    if P.ndim not in (2, 3) or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"P must be square, shape (n, n) or (X, n, n): got shape {P.shape}")
    if P.shape[-1] == 0:
        raise ValueError(f"P must have at least one action: got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        k = int(np.flatnonzero(~np.isfinite(P))[0])
        raise ValueError(f"P must be finite: non-finite entry at {_idx(k, P.shape)}")
    lo, hi = P.min(), P.max()
    if lo < 0 or hi > 1:
        k = int(np.argmin(P)) if lo < 0 else int(np.argmax(P))
        bad = lo if lo < 0 else hi
        dev = -lo if lo < 0 else hi - 1
        raise ValueError(f"P must lie in [0, 1]: entry {bad:.6g} at {_idx(k, P.shape)} (outside by {dev:.3g})")
    dev = np.abs(P + np.swapaxes(P, -1, -2) - 1.0)
    if dev.max() > TOL_ANTISYM:
        k = int(np.argmax(dev))
        raise ValueError(f"P + P^T must equal 1: max deviation {dev.max():.3g} at {_idx(k, P.shape)}")
    return P


def check_policy(p, n: int, name: str = "mu", contexts: int | None = None, full_support: bool = True) -> np.ndarray:
    """Return policy ``p`` ((n,) or (X, n)) as float array; check shape, positivity and Σ = 1 within 1e-9."""
    p = np.asarray(p, dtype=float)
    if p.ndim not in (1, 2) or p.shape[-1] != n:
        raise ValueError(f"{name} must have {n} actions to match P: got shape {p.shape}")
    if p.ndim == 2 and contexts is not None and p.shape[0] != contexts:
        raise ValueError(f"{name} must have {contexts} contexts to match P: got shape {p.shape}")
    if p.ndim == 2 and contexts is None:
        raise ValueError(f"{name} has a context axis (shape {p.shape}) but P has none")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} must be finite: got non-finite entries")
    if full_support and p.min() <= 0:
        k = int(np.argmin(p))
        raise ValueError(f"{name} must have full support (all > 0): min entry {p.min():.3g} at {_idx(k, p.shape)}")
    if not full_support and p.min() < 0:
        k = int(np.argmin(p))
        raise ValueError(f"{name} must be non-negative: min entry {p.min():.3g} at {_idx(k, p.shape)}")
    dev = np.abs(p.sum(-1) - 1.0)
    if dev.max() > TOL_SIMPLEX:
        s = np.atleast_1d(p.sum(-1))[int(np.argmax(np.atleast_1d(dev)))]
        raise ValueError(f"{name} must sum to 1: sums to {s:.12g} (deviation {dev.max():.3g})")
    return p


def check_positive(value, name: str) -> float:
    """``value`` as a float, which must be a finite number > 0 (ValueError naming ``name`` otherwise)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0: got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be > 0: got {value!r}")
    return v


def check_tau(tau) -> float:
    """τ must be a finite number > 0."""
    return check_positive(tau, "tau")


def uniform(n: int, contexts: int | None = None) -> np.ndarray:
    """The uniform policy, shape (n,) or (X, n)."""
    shape = (n,) if contexts is None else (contexts, n)
    return np.full(shape, 1.0 / n)


def broadcast_mu(P: np.ndarray, mu) -> np.ndarray:
    """Validate μ against P; ``None`` means uniform; a single (n,) μ is shared by all contexts."""
    n = P.shape[-1]
    X = None if P.ndim == 2 else P.shape[0]
    if mu is None:
        return uniform(n, X)
    if X is not None and np.ndim(mu) == 1:
        return np.broadcast_to(check_policy(mu, n, "mu"), (X, n)).copy()
    return check_policy(mu, n, "mu", X)


def check_rho(rho, contexts: int) -> np.ndarray:
    """ρ over contexts: default uniform; non-negative, sums to 1 within 1e-9, one entry per context."""
    if rho is None:
        return np.full(contexts, 1.0 / contexts)
    rho = np.asarray(rho, float)
    if rho.ndim != 1:
        raise ValueError(f"rho must have {contexts} contexts to match P: got shape {rho.shape}")
    return check_policy(rho, contexts, "rho", full_support=False)


def policy_preference(P, p, q, rho=None) -> float:
    """P(p ≻ q) = pᵀ P q (§1); with contexts, Σ_x ρ(x) p_xᵀ P_x q_x (ρ uniform by default)."""
    P = check_preference(P)
    p, q = np.asarray(p, float), np.asarray(q, float)
    if P.ndim == 2:
        return float(p @ P @ q)
    return float(check_rho(rho, P.shape[0]) @ np.einsum("xi,xij,xj->x", p, P, q))
