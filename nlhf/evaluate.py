"""The paper's pairwise preference table (Table 1: P(column ≻ row)), its confidence intervals, ROUGE-L,
an exploitability estimate, and the replication scorecard (PAPER.md §4–5).

Estimation. Every policy draws ONE response per evaluation prompt (seeded). Cell (row r, column c) is

    P̂(c ≻ r) = (1/N) Σ_x J(x, y_c(x), y_r(x)),

with J the judge: the task's exact preference P* (the paper's PaLM 2) or the trained preference model (the paper's
App. Table 2). Because both directions use the *same* samples and J is antisymmetric (exactly, for both judges),
the table satisfies P̂(c ≻ r) + P̂(r ≻ c) = 1 and P̂(c ≻ c) = 1/2 to rounding. The 95% CI is the normal interval
mean ± z·sd/√N of the per-prompt values (the paper used Clopper–Pearson on binary judgements; our judge returns
probabilities, whose variance is at most that of Bernoulli draws, so the paper's ±0.023 at N=2000 is an upper
bound for our half-width at the same N).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from nlhf.config import check

# The 14 policies of Table 1 in the paper's order; EMA1*/EMA2* are the averaged-parameter policies.
TABLE_POLICIES = ("SFT", "RLHF", "SP", "MD1", "MD2", "MD3", "MD4", "MD5", "MD6", "BR", "EMA1", "EMA2", "EMA1*",
                  "EMA2*")

# Table 1 as recovered (PAPER.md §5): P*(column ≻ row). Keys: (column, row).
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


@dataclass
class EvalConfig:
    """Evaluation sizes (params.yaml ``eval``)."""

    n_prompts: int = 1000  # fresh evaluation prompts per table cell (paper: 2000)
    confidence: float = 0.95  # CI level
    nontransitivity_prompts: int = 200  # prompts for the cycle-fraction check on SFT samples
    nontransitivity_samples: int = 6  # SFT samples per prompt for that check
    n_heldout_pairs: int = 2000  # held-out pairs of SFT samples for PM vs RM
    seed: int = 0  # sampling seed of the evaluation
    policies: list[str] = field(default_factory=lambda: list(TABLE_POLICIES))  # rows/columns of the table

    def __post_init__(self):
        for f in ("n_prompts", "nontransitivity_prompts", "n_heldout_pairs"):
            check(getattr(self, f) >= 1, f, f"must be >= 1 (got {getattr(self, f)})")
        check(self.nontransitivity_samples >= 3, "nontransitivity_samples",
              f"must be >= 3 (triples), got {self.nontransitivity_samples}")
        check(0 < self.confidence < 1, "confidence", f"must be in (0, 1) (got {self.confidence})")
        unknown = [p for p in self.policies if p not in TABLE_POLICIES]
        check(not unknown, "policies", f"unknown policy names {unknown}; expected a subset of {TABLE_POLICIES}")


Judge = Callable[[Sequence[str], Sequence[str], Sequence[str]], np.ndarray]


def pairwise_table(judge: Judge, prompts: Sequence[str], samples: dict[str, list[str]],
                   confidence: float = 0.95) -> pd.DataFrame:
    """Long table of every (row, column) cell: mean P(column ≻ row), CI half-width, N.

    Only the upper triangle is judged; the lower one is 1 − mirror (exact for an antisymmetric judge on the same
    samples), the diagonal is 1/2.
    """
    names = list(samples)
    z = norm.ppf(0.5 + confidence / 2)
    n = len(prompts)
    rows = []
    for i, r in enumerate(names):
        for j, c in enumerate(names):
            if j <= i:
                continue
            vals = np.asarray(judge(prompts, samples[c], samples[r]), dtype=np.float64)
            mean, half = float(vals.mean()), float(z * vals.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            rows.append({"row": r, "column": c, "p": mean, "ci": half, "n": n})
            rows.append({"row": c, "column": r, "p": 1.0 - mean, "ci": half, "n": n})
        rows.append({"row": r, "column": r, "p": 0.5, "ci": 0.0, "n": n})
    return pd.DataFrame(rows)


def to_matrix(long: pd.DataFrame, order: Sequence[str], value: str = "p") -> pd.DataFrame:
    """Rows × columns matrix in ``order`` (rows = opponents, columns = the policy whose win rate is shown)."""
    return long.pivot(index="row", columns="column", values=value).loc[list(order), list(order)]


def to_markdown(long: pd.DataFrame, order: Sequence[str]) -> str:
    """Markdown of the table with ``p ± ci`` cells (the layout of the paper's Table 1)."""
    p, ci = to_matrix(long, order, "p"), to_matrix(long, order, "ci")
    head = "| row \\ column | " + " | ".join(order) + " |\n|---|" + "---|" * len(order) + "\n"
    lines = [f"| {r} | " + " | ".join(f"{p.loc[r, c]:.3f} ± {ci.loc[r, c]:.3f}" if r != c else "0.500"
                                     for c in order) + " |" for r in order]
    return head + "\n".join(lines) + "\n"


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (``rouge-score`` directly; ``evaluate.load`` would fetch from the Hub)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(np.mean([scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]))


def exploitability_estimate(judge: Judge, prompts: Sequence[str], samples: dict[str, list[str]]) -> dict[str, float]:
    """max over a fixed pool of responses of the win rate against each policy, minus 1/2.

    Pool at prompt x = every policy's sample at x. For policy π: (1/N) Σ_x max_{y ∈ pool(x)} P(y ≻ y_π(x) | x) − 1/2.
    With one sample of π per prompt this is an optimistic (upward-biased) estimate of max_y P(y ≻ π) − 1/2; it
    ranks policies by how exploitable their typical response is against the best available alternative.
    """
    names = list(samples)
    n = len(prompts)
    best = {name: np.full(n, 0.5) for name in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p = np.asarray(judge(prompts, samples[a], samples[b]))  # P(y_a ≻ y_b)
            best[b] = np.maximum(best[b], p)
            best[a] = np.maximum(best[a], 1 - p)
    return {name: float(best[name].mean() - 0.5) for name in names}


def _cell(long: pd.DataFrame, column: str, row: str) -> tuple[float, float]:
    hit = long[(long["column"] == column) & (long["row"] == row)]
    if hit.empty:
        return float("nan"), float("nan")
    return float(hit["p"].iloc[0]), float(hit["ci"].iloc[0])


def scorecard(long: pd.DataFrame) -> pd.DataFrame:
    """Each conclusion of the paper (PAPER.md §5) checked on our table.

    A claim "A beats B" holds when our P̂(A ≻ B) > 1/2; it is *significant* when the CI excludes 1/2. Claims
    over several cells hold when every cell does. Rows whose policies are missing from the table are skipped.
    """
    present = set(long["row"])
    claims: list[tuple[str, list[tuple[str, str]]]] = [
        ("RLHF beats SFT (paper: 0.990, the best against SFT)", [("RLHF", "SFT")]),
        ("Every policy beats SFT", [(p, "SFT") for p in TABLE_POLICIES if p != "SFT"]),
        ("MD1 (β=0.125) beats RLHF", [("MD1", "RLHF")]),
        ("Nash-MD with β ∈ {0.125, 0.25, 0.375} beats RLHF", [("MD1", "RLHF"), ("MD2", "RLHF"), ("MD3", "RLHF")]),
        ("MD1 beats SP (β=0)", [("MD1", "SP")]),
        ("MD1 beats BR (β=1)", [("MD1", "BR")]),
        ("RLHF beats BR (BR 'preference-hacks' its fixed SFT opponent)", [("RLHF", "BR")]),
        ("RLHF beats SP (SP loses to RLHF under P*)", [("RLHF", "SP")]),
        ("MD1 beats every EMA variant (last iterate and average)",
         [("MD1", e) for e in ("EMA1", "EMA2", "EMA1*", "EMA2*")]),
        ("Intermediate β (MD1) beats both ends (SP and BR)", [("MD1", "SP"), ("MD1", "BR")]),
        ("MD1 is the best model: it beats every other policy",
         [("MD1", p) for p in TABLE_POLICIES if p != "MD1"]),
    ]
    out = []
    for claim, cells in claims:
        cells = [(a, b) for a, b in cells if a in present and b in present]
        if not cells:
            continue
        ours = [_cell(long, a, b) for a, b in cells]
        paper = [PAPER_TABLE1.get((a, b), 1 - PAPER_TABLE1[(b, a)] if (b, a) in PAPER_TABLE1 else None)
                 for a, b in cells]
        worst = int(np.argmin([p for p, _ in ours]))
        a, b = cells[worst]
        p, ci = ours[worst]
        pp = paper[worst]
        out.append({
            "claim": claim,
            "cell": f"P({a} ≻ {b})" + (f" (weakest of {len(cells)})" if len(cells) > 1 else ""),
            "paper": None if pp is None else round(pp, 3),
            "ours": round(p, 3),
            "ci95": round(ci, 3),
            "holds": bool(all(q > 0.5 for q, _ in ours)),
            "significant": bool(all(q - c > 0.5 for q, c in ours)),
        })
    return pd.DataFrame(out)
