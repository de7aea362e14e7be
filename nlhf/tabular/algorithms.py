"""Tabular Nash-MD and the comparison algorithms, with exact metrics (the paper's §6).

Every algorithm here is one log-space update with a different opponent o_t and prox weight a_t:

    log π_{t+1} = (1 − a_t) log π_t + a_t log μ + η_t (P o_t)_y + const,

* Nash-MD:          a_t = η_t τ, o_t = π_t^μ ∝ π_t^{1−η_tτ} μ^{η_tτ}  (geometric mixture; Theorem 1)
* OMD / self-play:  a_t = η_t τ, o_t = π_t                             (same prox, opponent = current policy)
* Nash-EMA:         a_t = η_t τ, o_t = q_t = β q_{t−1} + (1−β) π_t     (EMA of past policies; β = 0 is OMD)
* fictitious play:  a_t = 1, η_t = 1/τ, o_t = (1/(t+1)) Σ_{s≤t} π_s  (τ-regularized BR_τ(q) ∝ μ exp(Pq/τ))
* BR to μ:          a_t = 1, η_t = 1/τ, o_t = μ                        (BR_τ(μ), constant after one step)

Default η_t = 2/(τ(t+2)) (so η_0 τ = 1 and π_1 = BR_τ(μ) for Nash-MD); π_0 = μ. With η_t = 2/(τ(t+2)),
Theorem 1 gives KL(π*_τ ‖ π_T) ≤ 8/(τ²(T+1)) for Nash-MD's last iterate, and the same for contexts with KL_ρ.

Contexts: P of shape (X, n, n), μ of shape (n,) or (X, n), ρ over contexts (default uniform); policies (X, n).
Several methods/τ's can run together (``run_methods``): one matrix–matrix product with P per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import xlogy

from nlhf.games.nash import regularized_nash
from nlhf.games.preferences import broadcast_mu, check_policy, check_positive, check_preference, check_rho, check_tau
from nlhf.progress import Progress

METHODS = ("nash_md", "omd", "nash_ema", "fictitious_play", "best_response_to_mu")
_OPPONENT = {"nash_md": "mixture", "omd": "current", "nash_ema": "ema", "fictitious_play": "average",
             "best_response_to_mu": "mu"}

__all__ = ["METHODS", "Run", "nash_md", "omd", "nash_ema", "fictitious_play", "best_response_to_mu",
           "run_methods"]


# ----------------------------------------------------------------------------------------------------------------
# Result type


@dataclass
class Run:
    """Iterates of one algorithm. Indexing / ``np.asarray`` act on ``iterates`` (so ``run[-1]`` is the last)."""

    method: str
    tau: float
    t: np.ndarray  # the recorded step indices (0 … T)
    iterates: np.ndarray  # π_t at the recorded steps: (len(t), n) or (len(t), X, n)
    last: np.ndarray  # π_T
    average: np.ndarray  # (1/(T+1)) Σ_{t≤T} π_t
    kl: np.ndarray | None = None  # KL_ρ(target ‖ π_t) at EVERY t = 0 … T (when a target was given)
    kl_average: np.ndarray | None = None  # KL_ρ(target ‖ average of π_0..π_t) at every t
    extra: dict = field(default_factory=dict)

    def __getitem__(self, i):
        return self.iterates[i]

    def __len__(self) -> int:
        return len(self.iterates)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.iterates, dtype=dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.iterates.shape


# ----------------------------------------------------------------------------------------------------------------
# The engine


@dataclass(frozen=True)
class _Spec:
    method: str
    tau: float
    eta: float | None  # None: η_t = 2/(τ(t+2))
    beta: float = 0.0  # Nash-EMA coefficient


def _normalize_log(z: np.ndarray) -> np.ndarray:
    """z − logsumexp(z) over the last axis (in place; faster than scipy's for small batches)."""
    m = z.max(-1, keepdims=True)
    z -= m + np.log(np.exp(z - m).sum(-1, keepdims=True))
    return z


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be an integer >= 0: got {steps!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0: got {steps}")
    return int(steps)


def _check_eta(eta, tau: float) -> float | None:
    if eta is None:
        return None
    e = check_positive(eta, "eta")
    if e * tau > 1 + 1e-12:
        raise ValueError(f"eta * tau must be <= 1 (mixture weight): got {e * tau:.6g}, above by {e * tau - 1:.3g}")
    return e


def _simulate(P, mu, specs: list[_Spec], steps: int, rho=None, targets=None, record_every: int | None = 1,
              callback: Callable | None = None, progress: bool = False) -> list[Run]:
    """Run all ``specs`` side by side on one game; one (X,B,n)@(X,n,n) product per step."""
    P = check_preference(P)
    steps = _check_steps(steps)
    if record_every is not None and (isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer))
                                     or record_every < 1):
        raise ValueError(f"record_every must be None or an integer >= 1: got {record_every!r}")
    ctx = P.ndim == 3
    P3 = P if ctx else P[None]
    X, n = P3.shape[0], P3.shape[-1]
    mu3 = broadcast_mu(P, mu).reshape(X, n)
    rho = check_rho(rho, X)
    B = len(specs)
    PT = np.ascontiguousarray(np.swapaxes(P3, 1, 2))  # (o @ Pᵀ)_y = (P o)_y
    log_mu = np.log(mu3)[:, None, :]  # (X, 1, n)
    tau = np.array([s.tau for s in specs])
    beta = np.array([s.beta for s in specs])[None, :, None]
    kinds = np.array([_OPPONENT[s.method] for s in specs])
    is_br = np.isin(kinds, ["average", "mu"])
    groups = {k: np.flatnonzero(kinds == k) for k in set(kinds)}
    const_eta = np.array([np.nan if s.eta is None else s.eta for s in specs])

    log_pi = np.broadcast_to(log_mu, (X, B, n)).copy()
    pi = np.exp(log_pi)
    avg = pi.copy()  # uniform average of π_0..π_t
    ema = pi.copy()

    if targets is not None:
        T3 = np.stack([np.asarray(tg, float).reshape(X, n) for tg in targets], axis=1)  # (X, B, n)
        neg_ent = (rho @ xlogy(T3, T3).sum(-1))  # Σ_x ρ Σ_y π* log π*, (B,)
        kl_last = np.empty((steps + 1, B))
        kl_avg = np.empty((steps + 1, B))

        def record_kl(t):
            # clip the ~1e-16 rounding below zero so that log-scale plots stay defined
            kl_last[t] = np.maximum(neg_ent - rho @ np.einsum("xby,xby->xb", T3, log_pi), 0.0)
            kl_avg[t] = np.maximum(neg_ent - rho @ np.einsum("xby,xby->xb", T3, np.log(avg)), 0.0)

        record_kl(0)
    rec_t, rec = [0], [pi.copy()]

    def view(z):  # what a callback sees: (n,) / (X, n) for a single run, else (X, B, n)
        return z if B > 1 else (z[:, 0] if ctx else z[0, 0])

    if callback is not None:
        callback(0, view(pi))

    prog = Progress("tabular", steps, enabled=progress)
    for t in range(steps):
        eta = np.where(np.isnan(const_eta), 2.0 / (tau * (t + 2.0)), const_eta)
        a = np.where(is_br, 1.0, eta * tau)
        eta = np.where(is_br, 1.0 / tau, eta)
        a3, eta3 = a[None, :, None], eta[None, :, None]
        opp = np.empty_like(pi)
        for kind, idx in groups.items():
            if kind == "mixture":
                lm = (1 - a3[:, idx]) * log_pi[:, idx] + a3[:, idx] * log_mu
                opp[:, idx] = np.exp(_normalize_log(lm))
            elif kind == "current":
                opp[:, idx] = pi[:, idx]
            elif kind == "ema":
                opp[:, idx] = ema[:, idx]
            elif kind == "average":
                opp[:, idx] = avg[:, idx]
            else:  # "mu"
                opp[:, idx] = np.exp(log_mu)
        payoff = np.matmul(opp, PT)  # (X, B, n): P(y ≻ o_t)
        log_pi = (1 - a3) * log_pi + a3 * log_mu + eta3 * payoff
        _normalize_log(log_pi)
        pi = np.exp(log_pi)
        avg += (pi - avg) / (t + 2)
        ema = beta * ema + (1 - beta) * pi
        if targets is not None:
            record_kl(t + 1)
        if record_every is not None and ((t + 1) % record_every == 0 or t + 1 == steps):
            rec_t.append(t + 1)
            rec.append(pi.copy())
        if callback is not None:
            callback(t + 1, view(pi))
        prog.update(t + 1)
    if rec_t[-1] != steps:
        rec_t.append(steps)
        rec.append(pi.copy())

    out = []
    its = np.stack(rec)  # (R, X, B, n)
    for b, s in enumerate(specs):
        shape = (lambda z: z) if ctx else (lambda z: z[..., 0, :])
        out.append(Run(
            method=s.method, tau=s.tau, t=np.array(rec_t),
            iterates=shape(its[:, :, b]), last=shape(pi[:, b]), average=shape(avg[:, b]),
            kl=None if targets is None else kl_last[:, b].copy(),
            kl_average=None if targets is None else kl_avg[:, b].copy(),
            extra={"beta": s.beta} if s.method == "nash_ema" else {},
        ))
    return out


def _one(method, P, mu, tau, steps, eta=None, beta=0.0, rho=None, target=None, record_every=1, callback=None,
         progress=False) -> Run:
    P = check_preference(P)
    tau = check_tau(tau)
    _check_steps(steps)
    eta = _check_eta(eta, tau)
    if target is not None:
        target = np.asarray(target, float)
        check_policy(target, P.shape[-1], "target", None if P.ndim == 2 else P.shape[0], full_support=False)
    spec = _Spec(method, tau, eta, beta)
    return _simulate(P, mu, [spec], steps, rho=rho, targets=None if target is None else [target],
                     record_every=record_every, callback=callback, progress=progress)[0]


# ----------------------------------------------------------------------------------------------------------------
# Public algorithms


def nash_md(P, mu, tau, steps, eta=None, *, rho=None, target=None, record_every=1, callback=None,
            progress=False) -> Run:
    """Nash-MD (the paper's §6): π_t^μ ∝ π_t^{1−η_tτ} μ^{η_tτ};  π_{t+1} ∝ π_t^μ · exp(η_t P(y ≻ π_t^μ)).

    ``eta``: None for η_t = 2/(τ(t+2)) (Theorem 1: KL(π*_τ‖π_T) ≤ 8/(τ²(T+1))) or a constant with ητ ≤ 1
    (a constant step converges to a biased point π ∝ μ exp(Pπ^μ/τ), not to π*_τ).
    ``target``: a policy (e.g. π*_τ) whose KL_ρ(target‖π_t) is returned for every t in ``Run.kl``.
    ``record_every``: keep every k-th iterate (None: only π_0 and π_T). ``callback(t, π_t)`` sees every iterate.
    Returns a ``Run``: ``iterates`` (len(t), n) or (len(t), X, n), ``last``, ``average``.
    """
    return _one("nash_md", P, mu, tau, steps, eta, rho=rho, target=target, record_every=record_every,
                callback=callback, progress=progress)


def omd(P, mu, tau, steps, eta=None, *, rho=None, target=None, record_every=1, callback=None,
        progress=False) -> Run:
    """The paper's OMD / self-play variant (§6): π_{t+1} = argmax_π [η_t P(π ≻ π_t) − KL(π, π_t^μ)],
    i.e. π_{t+1} ∝ π_t^μ · exp(η_t P(y ≻ π_t)): Nash-MD with the opponent π_t instead of π_t^μ.
    With ητ = 1 it is best-response dynamics π_{t+1} = BR_τ(π_t), which cycles on intransitive games."""
    return _one("omd", P, mu, tau, steps, eta, rho=rho, target=target, record_every=record_every,
                callback=callback, progress=progress)


def nash_ema(P, mu, tau, steps, beta=0.9, eta=None, *, rho=None, target=None, record_every=1, callback=None,
             progress=False) -> Run:
    """Nash-EMA, tabular analogue of Nash-EMA-PG (§7): opponent q_t = β q_{t−1} + (1−β) π_t (q_0 = μ, an
    exponential average of past policies), π_{t+1} ∝ π_t^μ · exp(η_t P(y ≻ q_t)). β = 0 is OMD."""
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ValueError(f"beta must be in [0, 1): got {beta!r}")
    return _one("nash_ema", P, mu, tau, steps, eta, beta=float(beta), rho=rho, target=target,
                record_every=record_every, callback=callback, progress=progress)


def fictitious_play(P, mu, tau, steps, *, rho=None, target=None, record_every=1, callback=None,
                    progress=False) -> Run:
    """τ-regularized fictitious play (§6): π_{t+1} = BR_τ(π̄_t) ∝ μ · exp(P π̄_t / τ),
    π̄_t = (1/(t+1)) Σ_{s≤t} π_s. The paper's claim is for the average ``Run.average``; ``last`` is BR_τ(π̄)."""
    return _one("fictitious_play", P, mu, tau, steps, rho=rho, target=target, record_every=record_every,
                callback=callback, progress=progress)


def best_response_to_mu(P, mu, tau, steps=1, *, rho=None, target=None, record_every=1, callback=None,
                        progress=False) -> Run:
    """BR to the reference (§7's BR, β = 1): π_t = BR_τ(μ) ∝ μ · exp(Pμ/τ) for every t ≥ 1 (π_0 = μ)."""
    return _one("best_response_to_mu", P, mu, tau, steps, rho=rho, target=target, record_every=record_every,
                callback=callback, progress=progress)


def run_methods(P, mu, taus, steps, methods=METHODS, *, ema_beta=0.9, rho=None, targets=None,
                record_every=None, progress=False) -> dict[tuple[str, float], Run]:
    """All ``methods`` × ``taus`` side by side on one game (one matrix product with P per step).

    ``targets``: {τ: π*_τ} (default: ``regularized_nash`` for each τ). Returns {(method, τ): Run}."""
    P = check_preference(P)
    taus = [check_tau(t) for t in taus]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    mu = broadcast_mu(P, mu)
    if targets is None:
        targets = {t: regularized_nash(P, mu, t) for t in taus}
    specs = [_Spec(m, t, None, ema_beta if m == "nash_ema" else 0.0) for t in taus for m in methods]
    runs = _simulate(P, mu, specs, steps, rho=rho, targets=[targets[s.tau] for s in specs],
                     record_every=record_every, progress=progress)
    return {(s.method, s.tau): r for s, r in zip(specs, runs)}
