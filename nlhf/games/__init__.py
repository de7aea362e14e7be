"""Preference games P(y≻y') and their exact solutions (the paper's §3–4, App. A, C; Prop. 1).

A *preference matrix* ``P`` has ``P[i, j] = P(y_i ≻ y_j)`` in [0, 1] and is antisymmetric in the sense
``P + Pᵀ = 1`` (so ``P[i, i] = 1/2``). A batch of contexts is an array ``(X, n, n)``; a policy is then ``(X, n)``.

* :mod:`nlhf.games.preferences`: validation of P, μ, ρ, τ, and the policy-level preference P(p ≻ q) = pᵀ P q.
* :mod:`nlhf.games.nash`: ``nash_equilibrium(P)``, a maximin strategy of the symmetric zero-sum game ``P − 1/2``
  (linear program); ``regularized_nash(P, mu, tau)``, the unique NE π*_τ of the τ-regularized game (Prop. 1),
  the fixed point ``π ∝ μ·exp(Pπ/τ)``; exploitability.
* :mod:`nlhf.games.bradley_terry`: the Bradley–Terry game σ(R_i − R_j), its maximum-likelihood fit, and the
  RLHF optimum.
* :mod:`nlhf.games.known_games`: games with known answers, ``three_raters`` (§3.2), ``intransitive_dice``
  (App. C.1), ``condorcet_rankings`` (App. C.2), ``app_a_example`` (App. A), and generators ``random_game``,
  ``majority_vote_game``.
"""
