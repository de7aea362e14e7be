"""The synthetic task's recipe: sizes, document grammar, rater population and label noise, validated.

Every field is a parameter of ``params.yaml`` ``task.synthetic``; ``__post_init__`` checks each one and fills the
population's default rater shares (:data:`nlhf.tasks.synthetic_raters.POPULATION_WEIGHTS`) and sharpness
(s_k = 3.0 in P(y≻y'|x) = Σ_k w_k σ(s_k (u_k(x,y) − u_k(x,y'))), §3.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from nlhf.config import check
from nlhf.tasks.synthetic_documents import FACT_WORDS, STYLES
from nlhf.tasks.synthetic_raters import POPULATION_WEIGHTS, POPULATIONS

@dataclass
class SyntheticTaskConfig:
    """Synthetic summarization task (params.yaml ``task.synthetic`` states the recipe's values)."""

    seed: int = 0  # everything (documents, references, pairs, labels) derives from this seed
    n_sft: int = 20_000  # SFT (prompt, completion) rows, split "train"
    n_sft_eval: int = 1_000  # SFT rows, split "eval" (held-out loss)
    n_pref_train: int = 20_000  # preference pairs for PM / RM training
    n_pref_test: int = 2_000  # held-out preference pairs (PM / RM accuracy)
    # fresh pairs of split "judge", read only by the TL;DR-schema export (its held-out judge learns from them); null:
    # as many as n_pref_test
    n_pref_judge: int | None = None
    n_prompts_train: int = 5_000  # RL prompts
    n_prompts_eval: int = 2_000  # evaluation prompts (pairwise tables)
    facts_min: int = 3  # fewest facts in a document
    facts_max: int = 6  # most facts in a document
    n_fact_words: int = 60  # size of the fact vocabulary (first n of FACT_WORDS)
    importance_probs: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.3])  # P(key), P(main), P(minor)
    max_summary_words: int = 12  # longer summaries are malformed
    population: str = "condorcet"  # rater population, a key of POPULATIONS (condorcet: the null control)
    rater_weights: list[float] | None = None  # share of each rater of the population (None: POPULATION_WEIGHTS)
    rater_sharpness: list[float] | None = None  # s_k of each BT rater (None: 3.0 each)
    style_probs: list[float] = field(  # reference style mix, in the order of STYLES
        default_factory=lambda: [0.16, 0.16, 0.12, 0.12, 0.1, 0.1, 0.12, 0.12]
    )
    perturb_prob: float = 0.3  # preference pairs: chance each summary gets one random edit
    labels_per_pair: int = 1  # raters drawn per pair; label = fraction preferring y (1: one binary label)

    def __post_init__(self) -> None:
        for f in ("n_sft", "n_sft_eval", "n_pref_train", "n_pref_test", "n_prompts_train", "n_prompts_eval"):
            check(getattr(self, f) >= 1, f, f"must be >= 1, got {getattr(self, f)}")
        check(self.n_pref_judge is None or self.n_pref_judge >= 1, "n_pref_judge",
              f"must be null or >= 1, got {self.n_pref_judge}")
        check(self.facts_min >= 2, "facts_min", f"must be >= 2, got {self.facts_min}")
        check(self.facts_max >= self.facts_min, "facts_max", f"must be >= facts_min ({self.facts_min})")
        check(
            1 <= self.n_fact_words <= len(FACT_WORDS),
            "n_fact_words",
            f"must be in [1, {len(FACT_WORDS)}], got {self.n_fact_words}",
        )
        check(
            self.facts_max + 2 <= self.n_fact_words,
            "facts_max",
            f"must leave >= 2 fact words to invent (facts_max + 2 <= n_fact_words = {self.n_fact_words})",
        )
        check(
            self.max_summary_words >= self.facts_max + 1,
            "max_summary_words",
            f"must be >= facts_max + 1 = {self.facts_max + 1} (complete + one invented must fit)",
        )
        _check_probs(self.importance_probs, 3, "importance_probs")
        check(self.population in POPULATIONS, "population",
              f"unknown population {self.population!r}; expected one of {sorted(POPULATIONS)}")
        k = len(POPULATIONS[self.population])
        if self.rater_weights is None:
            self.rater_weights = list(POPULATION_WEIGHTS[self.population])
        if self.rater_sharpness is None:
            self.rater_sharpness = [3.0] * k
        _check_probs(self.rater_weights, k, "rater_weights")
        _check_probs(self.style_probs, len(STYLES), "style_probs")
        check(len(self.rater_sharpness) == k, "rater_sharpness", f"needs {k} values (population {self.population!r})")
        check(all(s > 0 for s in self.rater_sharpness), "rater_sharpness", "values must be > 0")
        check(0.0 <= self.perturb_prob <= 1.0, "perturb_prob", f"must be in [0, 1], got {self.perturb_prob}")
        check(self.labels_per_pair >= 1, "labels_per_pair", f"must be >= 1, got {self.labels_per_pair}")


def _check_probs(v: Sequence[float], n: int, name: str) -> None:
    check(len(v) == n, name, f"needs {n} values, got {len(v)}")
    check(all(x >= 0 for x in v), name, "values must be >= 0")
    check(abs(sum(v) - 1.0) < 1e-6, name, f"values must sum to 1, got {sum(v):.6g}")
