"""The tabular half: Nash-MD and the comparison algorithms on exact games (the paper's §3–4, §6).

* :mod:`nlhf.tabular.algorithms`: Nash-MD, OMD, Nash-EMA, fictitious play and BR to μ, as one log-space update
  log π_{t+1} = (1 − a_t) log π_t + a_t log μ + η_t (P o_t)_y + const with a different opponent o_t each.
* :mod:`nlhf.tabular.metrics`: KL_ρ, the τ-game's duality gap, and Theorem 1's bound 8/(τ²(t+1)).
* :mod:`nlhf.tabular.experiment`: the DVC stage ``tabular`` (random games, contexts, the ε and τ sweeps).
* :mod:`nlhf.tabular.figures`: that stage's markdown table and figures.
"""
