"""What the paper reports (Munos et al., 2024, §8): the names of its policies, its Table 1 and its claims.

The pipeline's methods come from params.yaml (:mod:`nlhf.training.methods`); this module holds only the paper's side
of the comparison, which the scorecard (:func:`nlhf.evaluate.scorecard`) checks our tables against. docs/paper.md
describes the setting these numbers come from.
"""

from __future__ import annotations

# The 14 policies of Table 1 in its order; EMA1*/EMA2* are the averaged-parameter policies.
PAPER_POLICIES = ("SFT", "RLHF", "SP", "MD1", "MD2", "MD3", "MD4", "MD5", "MD6", "BR", "EMA1", "EMA2", "EMA1*",
                  "EMA2*")

# The paper's Table 1 (§8): P*(column ≻ row). Keys: (column, row).
PAPER_TABLE1 = {
    ("RLHF", "SFT"): 0.990, ("SP", "SFT"): 0.983, ("MD1", "SFT"): 0.982, ("MD2", "SFT"): 0.989,
    ("MD3", "SFT"): 0.987, ("MD4", "SFT"): 0.985, ("MD5", "SFT"): 0.982, ("MD6", "SFT"): 0.965,
    ("BR", "SFT"): 0.943, ("EMA1", "SFT"): 0.970, ("EMA2", "SFT"): 0.961, ("EMA1*", "SFT"): 0.977,
    ("EMA2*", "SFT"): 0.980,
    ("SP", "RLHF"): 0.489, ("MD1", "RLHF"): 0.598, ("MD2", "RLHF"): 0.519, ("MD3", "RLHF"): 0.561,
    ("MD4", "RLHF"): 0.501, ("MD5", "RLHF"): 0.436, ("MD6", "RLHF"): 0.284, ("BR", "RLHF"): 0.148,
    ("EMA1", "RLHF"): 0.468, ("EMA2", "RLHF"): 0.320, ("EMA1*", "RLHF"): 0.477, ("EMA2*", "RLHF"): 0.510,
    ("MD1", "SP"): 0.592, ("MD1", "MD2"): 0.575, ("MD1", "MD3"): 0.530, ("MD1", "MD4"): 0.631,
    ("MD1", "BR"): 0.837, ("MD1", "EMA2*"): 0.553,
}


# Each claim of the paper (§8) as the cells (A, B) whose P(A ≻ B) > ½ it asserts; no cell appears in two claims.
CLAIMS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("RLHF beats SFT", (("RLHF", "SFT"),)),
    ("Every other policy beats SFT", tuple((p, "SFT") for p in PAPER_POLICIES if p not in ("SFT", "RLHF"))),
    ("MD1 (β=0.125) beats RLHF", (("MD1", "RLHF"),)),
    ("MD2 and MD3 (β=0.25, 0.375) beat RLHF", (("MD2", "RLHF"), ("MD3", "RLHF"))),
    ("Intermediate β (MD1) beats both ends, SP (β=0) and BR (β=1)", (("MD1", "SP"), ("MD1", "BR"))),
    ("RLHF beats BR (BR 'preference-hacks' its fixed SFT opponent)", (("RLHF", "BR"),)),
    ("RLHF beats SP", (("RLHF", "SP"),)),
    ("MD1 beats every EMA variant (last iterate and average)", tuple(("MD1", e) for e in ("EMA1", "EMA2", "EMA1*",
                                                                                           "EMA2*"))),
    ("MD1 beats the other Nash-MD policies (MD2-MD6)", tuple(("MD1", m) for m in ("MD2", "MD3", "MD4", "MD5",
                                                                                   "MD6"))),
)
PAPER_CI = 0.023  # the paper's largest 95% half-width in Table 1 (2000 judgements per cell)
