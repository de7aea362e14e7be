"""The text world of the synthetic summarization task: documents of facts, their prompts, and their parsing.

Strings (word level, single spaces):

* prompt  ``"document : key storm minor bridge main mayor . summary :"`` — K ∈ [facts_min, facts_max] distinct
  fact words, each preceded by its importance word (key = 3, main = 2, minor = 1), at least one ``key``;
* summary ``"storm mayor"`` — fact words only, no end marker (the training code appends EOS).

Reference summaries come in one of ``STYLES`` (what SFT imitates). :func:`parse_prompt` inverts ``Document.prompt``,
so every judge and feature of :mod:`nlhf.tasks.synthetic_raters` works from the prompt text alone.
"""

from __future__ import annotations

from dataclasses import dataclass

# fmt: off
FACT_WORDS: tuple[str, ...] = (
    "storm", "bridge", "mayor", "river", "school", "fire", "market", "train", "doctor", "court",
    "festival", "factory", "museum", "harbor", "election", "bakery", "library", "hospital", "farm", "airport",
    "concert", "strike", "flood", "budget", "garden", "tower", "police", "teacher", "island", "mine",
    "village", "castle", "forest", "bank", "church", "stadium", "road", "ship", "council", "park",
    "hotel", "prison", "theater", "bus", "lake", "mountain", "winter", "drought", "vaccine", "robot",
    "satellite", "treaty", "protest", "engine", "tunnel", "crop", "virus", "border", "coin", "comet",
)
# fmt: on
IMPORTANCE: dict[str, int] = {"key": 3, "main": 2, "minor": 1}
PROMPT_HEAD, PROMPT_TAIL = "document :", ". summary :"
STRUCTURE_WORDS: tuple[str, ...] = ("document", ":", ".", "summary")

STYLES: tuple[str, ...] = (
    "complete",            # all facts, document order
    "key_only",            # key facts, document order
    "key_reordered",       # key facts (+ the best other fact if only one key), not in document order
    "complete_invented",   # all facts in order followed by one invented fact word (the embellished form)
    "complete_reordered",  # all facts, not in document order
    "top_fact",            # the first key fact alone
    "partial",             # a random non-empty proper subset, document order
    "lead",                # the first fact of the document alone
)


@dataclass(frozen=True)
class Document:
    facts: tuple[str, ...]  # fact words in document order
    importance: tuple[int, ...]  # 3 / 2 / 1 per fact

    @property
    def prompt(self) -> str:
        inv = {v: k for k, v in IMPORTANCE.items()}
        body = " ".join(f"{inv[i]} {f}" for f, i in zip(self.facts, self.importance))
        return f"{PROMPT_HEAD} {body} {PROMPT_TAIL}"

    @property
    def key_facts(self) -> tuple[str, ...]:
        return tuple(f for f, i in zip(self.facts, self.importance) if i == 3)


def parse_prompt(prompt: str) -> Document:
    """Inverse of ``Document.prompt``; raises ValueError on anything else."""
    words = prompt.split()
    if words[:2] != PROMPT_HEAD.split() or words[-3:] != PROMPT_TAIL.split() or (len(words) - 5) % 2:
        raise ValueError(f"not a synthetic-task prompt: {prompt!r}")
    body = words[2:-3]
    imps, facts = body[0::2], body[1::2]
    if any(i not in IMPORTANCE for i in imps) or any(f not in FACT_SET for f in facts) or not facts:
        raise ValueError(f"not a synthetic-task prompt: {prompt!r}")
    return Document(tuple(facts), tuple(IMPORTANCE[i] for i in imps))


FACT_SET = frozenset(FACT_WORDS)  # the fact words, for membership tests
