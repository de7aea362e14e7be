"""Preference games P(y≻y') and their exact solutions (the paper's §3–4, App. A, C; Prop. 1).

A *preference matrix* ``P`` has ``P[i, j] = P(y_i ≻ y_j)`` in [0, 1] and is antisymmetric in the sense
``P + Pᵀ = 1`` (so ``P[i, i] = 1/2``). A batch of contexts is an array ``(X, n, n)``; a policy is then ``(X, n)``.

* ``nash_equilibrium(P)``: a maximin strategy of the symmetric zero-sum game ``P − 1/2`` (linear program).
* ``regularized_nash(P, mu, tau)``: the unique NE π*_τ of the τ-regularized game (Prop. 1),
  the fixed point ``π ∝ μ·exp(Pπ/τ)``.
* Games with known answers: ``three_raters`` (§3.2), ``intransitive_dice`` (App. C.1), ``condorcet_rankings``
  (App. C.2), ``app_a_example`` (App. A), and generators ``random_game``, ``majority_vote_game``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.optimize import linprog
from scipy.special import expit, softmax

TOL_ANTISYM = 1e-9  # |P + Pᵀ − 1| allowed
TOL_SIMPLEX = 1e-9  # |Σμ − 1| allowed


# ----------------------------------------------------------------------------------------------------------------
# Validation (shared with nlhf.tabular)


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


def check_tau(tau) -> float:
    """τ must be a finite number > 0."""
    try:
        t = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a number > 0: got {tau!r}") from None
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"tau must be > 0: got {tau!r}")
    return t


def uniform(n: int, contexts: int | None = None) -> np.ndarray:
    """The uniform policy, shape (n,) or (X, n)."""
    shape = (n,) if contexts is None else (contexts, n)
    return np.full(shape, 1.0 / n)


def _broadcast_mu(P: np.ndarray, mu) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------------------------
# Policy-level quantities


def policy_preference(P, p, q, rho=None) -> float:
    """P(p ≻ q) = pᵀ P q (§1); with contexts, Σ_x ρ(x) p_xᵀ P_x q_x (ρ uniform by default)."""
    P = check_preference(P)
    p, q = np.asarray(p, float), np.asarray(q, float)
    if P.ndim == 2:
        return float(p @ P @ q)
    return float(check_rho(rho, P.shape[0]) @ np.einsum("xi,xij,xj->x", p, P, q))


# ----------------------------------------------------------------------------------------------------------------
# Exact solvers


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
    mu = _broadcast_mu(P, mu)
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


# ----------------------------------------------------------------------------------------------------------------
# Bradley–Terry


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


# ----------------------------------------------------------------------------------------------------------------
# Games with known answers


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
