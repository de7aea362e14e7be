"""The one interface every task implements (synthetic raters offline, TL;DR online).

A task is where prompts, reference summaries and *human* preferences come from (the paper's §8, "Data"):

* ``prompts(split)``            prompts x ~ ρ for RL ("train") and evaluation ("eval");
* ``sft_dataset(split)``        (prompt, completion) pairs for supervised fine-tuning of μ;
* ``preference_dataset(split)`` (prompt, y, y_prime, label, p) rows for the preference / reward models,
                                ``label = 1`` iff y was preferred, ``p`` the exact P(y≻y'|x) when known else NaN;
* ``judge(x, y, y')``           the exact P(y≻y'|x) ∈ [0, 1] — the role PaLM 2 plays in the paper (§8 "Evaluation");
                                antisymmetric: P(y≻y'|x) = 1 − P(y'≻y|x), P(y≻y|x) = 1/2 (the paper's §3);
* ``references(prompts)``       one reference summary per prompt (for ROUGE);
* ``is_well_formed(x, y)``      whether a completion is a syntactically valid summary.

Completions are stored *without* an end-of-sequence marker; the training code appends ``tokenizer.eos_token``.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np

PROMPT_SPLITS = ("train", "eval")
SFT_SPLITS = ("train", "eval")
PREF_SPLITS = ("train", "test", "judge")  # judge: a task without an exact judge only (its held-out judge)


def check_split(split: str, allowed: Sequence[str], what: str) -> None:
    if split not in allowed:
        raise ValueError(f"{what}: unknown split {split!r}; expected one of {tuple(allowed)}")


class Task(abc.ABC):
    """Abstract task. Subclasses set ``name`` and implement the methods below."""

    name: str = "task"

    @abc.abstractmethod
    def prompts(self, split: str) -> list[str]:
        """Prompts for split "train" (RL) or "eval" (pairwise evaluation)."""

    @abc.abstractmethod
    def sft_dataset(self, split: str):
        """``datasets.Dataset`` with columns ``prompt``, ``completion`` (split "train" | "eval")."""

    @abc.abstractmethod
    def preference_dataset(self, split: str):
        """``datasets.Dataset`` with columns ``prompt, y, y_prime, label, p`` (split "train" | "test")."""

    def judge(self, prompts: Sequence[str], ys: Sequence[str], y_primes: Sequence[str]) -> np.ndarray:
        """Exact P(y≻y'|x) for each triple, float64 array of shape (n,)."""
        raise NotImplementedError(
            f"task {self.name!r} has no exact judge (its preferences come from human labels); "
            "judge policies with a held-out preference model instead (nlhf.models / nlhf.evaluate)"
        )

    @property
    def has_exact_judge(self) -> bool:
        return type(self).judge is not Task.judge

    @abc.abstractmethod
    def references(self, prompts: Sequence[str]) -> list[str]:
        """One reference summary per prompt (for ROUGE)."""

    @abc.abstractmethod
    def is_well_formed(self, prompt: str, y: str) -> bool:
        """Whether ``y`` is a valid summary for ``prompt``."""

    def vocabulary(self) -> list[str] | None:
        """The closed word list of a word-level task (for ``build_word_tokenizer``); None for open-text tasks."""
        return None
