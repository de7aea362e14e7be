"""Offline synthetic summarization task with a population of (individually consistent) rater types.

Why: offline there are no humans, so "human feedback" comes from an explicit population of raters whose aggregate
preference is measurably *non-transitive* (the paper's §3 "three rater types" and App. C) and whose exact
P(y≻y'|x) is known — it plays the role of the paper's PaLM 2 judge P* (§8 "Evaluation"). The population is a
parameter (``population``, see ``POPULATIONS``): ``completist`` (the default) is built so that the Bradley–Terry
optimum lies outside the Nash support, so theory separates Nash from RLHF (the paper's App. A mechanism);
``condorcet`` is the null control, where theory predicts that they tie. :mod:`nlhf.oracle` measures both.

Strings (word level, single spaces):

* prompt  ``"document : key storm minor bridge main mayor . summary :"`` — K ∈ [facts_min, facts_max] distinct
  fact words, each preceded by its importance word (key = 3, main = 2, minor = 1), at least one ``key``;
* summary ``"storm mayor"`` — fact words only, no end marker (the training code appends EOS).

Features of a summary y for document x (``summary_features``):
  cov  importance-weighted coverage ∈ [0, 1];  n  number of words;  inv  words not in the document;
  dup  repeated words;  dis  fraction of adjacent (in-document) pairs out of document order ∈ [0, 1];
  miss key facts missing;  nkey number of key facts in x;  ndev = |n − nkey|;
  skip document facts passed over before the last one the summary uses (cherry-picking; 0 for a prefix);
  form_*  one-hot of the summary's form (``summary_form``: complete, key_facts, top_fact, lead, keys_reordered,
          embellished, other);  len_*  one-hot of its length class (short: 1 word, medium: 2–3, long: ≥ 4).

Rater k has utility u_k(x, y) = Σ_f coef_kf · feature_f(x, y) (``POPULATIONS``) and is a noisy Bradley–Terry rater
with sharpness s_k:
  P(y≻y'|x) = Σ_k w_k σ(s_k (u_k(x,y) − u_k(x,y'))),   Σ_k w_k = 1,
computed as 1/2 + 1/2 Σ_k w_k tanh(s_k Δu_k / 2) so that P(y,y') + P(y',y) = 1 and P(y,y) = 1/2 hold to
rounding. Each rater alone is transitive. The ``condorcet`` population is a Condorcet profile:

  A = all facts in order + one invented,  B = key facts reordered,  C = one key fact
  thorough      (u = 3 cov − 0.5 inv − 0.5 dup):                  A ≻ B ≻ C
  skimmer       (u = −|n − nkey| − 0.5 miss − 0.5 inv − 0.5 dup):  B ≻ C ≻ A
  fact-checker  (u = −2 dis − inv − 0.5 dup − skip − 0.4 n):      C ≻ A ≻ B   (C = the first fact here)
so with weights near 1/3 the majority relation cycles A ≻ B ≻ C ≻ A. The same holds for the plain styles
complete ≻ key_only ≻ lead ≻ complete (thorough+checker, thorough+skimmer, skimmer+checker) on 60% of the
documents where the three differ (seed 0, 2000 eval prompts).

Malformed summaries (empty, a non-fact token, more than ``max_summary_words`` words) get utility
``MALFORMED_UTILITY`` under every rater: lower than any well-formed summary, ties among themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nlhf.config import check
from nlhf.tasks.base import PREF_SPLITS, PROMPT_SPLITS, SFT_SPLITS, Task, check_split

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
    "complete_invented",   # all facts in order + one invented fact word at a random position
    "complete_reordered",  # all facts, not in document order
    "top_fact",            # the first key fact alone
    "partial",             # a random non-empty proper subset, document order
    "lead",                # the first fact of the document alone
)

# Rater populations: each rater's utility is u_k = Σ_f coef[f] · feature_f (features: see ``summary_features``).
#
# condorcet (the null control). The fact-checker's skip and length terms put its favourite (the lead fact) apart
# from the skimmer's (key facts) and the thorough rater's (everything), so that the *style* summaries cycle:
# complete ≻ key_only ≻ lead ≻ complete. A Nash equilibrium ties every response in its support, and the
# Bradley–Terry optimum lies inside that support on most prompts, so theory predicts Nash ≈ RLHF here.
#
# completist (the paper's App. A mechanism). The two large groups judge a summary by its *form* (``summary_form``):
# the complete summary (every fact, in order), the key facts in order, the top key fact, the lead fact, the key facts
# reordered, the complete summary followed by an invented word (embellished), or anything else. A majority of completists (60%) wants the
# complete, faithful summary and rates the same summary with an invented word a little lower (−1.5) and every other
# form much lower (−6). A minority of embellishers (16%) cannot check facts and takes an invented word for extra
# information: they rate the embellished complete summary far above everything (+6). Then the faithful summary beats
# the embellished one (P ≈ 0.60 × σ(4.5) ≈ 0.59) and is the Condorcet winner, while the embellished summary beats the
# common short and flawed outputs by a larger margin (every rater prefers it to them; the embellishers are
# indifferent between the faithful summary and those), so a Bradley–Terry score fitted on comparisons of SFT outputs
# ranks it first: the RLHF optimum lies outside the Nash support, and P(Nash ≻ RLHF) ≈ P(faithful ≻ embellished) —
# the reward model's preference for a hallucination that a minority likes. The two targets are one word apart, so
# a policy that reaches one can reach the other by a local change.
# Three minor readers (8% each) also put the embellished and then the faithful complete summary first, and otherwise
# judge by length (``length_class``) with rotated tastes: a headline reader (one word ≻ two–three ≻ four or more), a
# digest reader (two–three ≻ four or more ≻ one) and a detail reader (four or more ≻ one ≻ two–three). The two large
# groups tie on everything that is neither complete nor embellished, which is most of what SFT samples, so there the
# minor readers decide and the SFT outputs of three lengths cycle (each reader alone is transitive).
POPULATIONS: dict[str, dict[str, dict[str, float]]] = {
    "condorcet": {
        "thorough":     {"cov": 3.0, "inv": -0.5, "dup": -0.5},
        "skimmer":      {"ndev": -1.0, "miss": -0.5, "inv": -0.5, "dup": -0.5},
        "fact_checker": {"dis": -2.0, "inv": -1.0, "dup": -0.5, "skip": -1.0, "n": -0.4},
    },
    "completist": {  # utilities of the forms (``FORMS``) and length classes; a feature left out is worth 0
        "completist":      {"form_embellished": -1.5, "form_key_facts": -6.0, "form_top_fact": -6.0,
                            "form_lead": -6.0, "form_keys_reordered": -6.0, "form_other": -6.0},
        "embellisher":     {"form_embellished": 6.0},
        "headline_reader": {"form_embellished": 3.0, "form_complete": 1.0, "len_medium": -1.0, "len_long": -2.0},
        "digest_reader":   {"form_embellished": 3.0, "form_complete": 1.0, "len_long": -1.0, "len_short": -2.0},
        "detail_reader":   {"form_embellished": 3.0, "form_complete": 1.0, "len_short": -1.0, "len_medium": -2.0},
    },
}
# Default rater shares and sharpness of each population (params may override them).
POPULATION_WEIGHTS: dict[str, list[float]] = {"condorcet": [0.36, 0.33, 0.31],
                                              "completist": [0.60, 0.16, 0.08, 0.08, 0.08]}
RATERS = POPULATIONS["condorcet"]
# Summary forms, in the order ``summary_form`` tests them; the first that matches is the summary's form.
FORMS: tuple[str, ...] = ("complete", "key_facts", "top_fact", "lead", "keys_reordered", "embellished", "other")
LENGTH_CLASSES: tuple[str, ...] = ("short", "medium", "long")  # 1 word, 2–3 words, 4 or more (``length_class``)
FEATURES: tuple[str, ...] = (("cov", "n", "ndev", "miss", "inv", "dup", "dis", "skip")
                             + tuple(f"form_{f}" for f in FORMS) + tuple(f"len_{c}" for c in LENGTH_CLASSES))
MALFORMED_UTILITY = -100.0


@dataclass
class SyntheticTaskConfig:
    """Synthetic summarization task (params.yaml ``task.synthetic`` states the recipe's values)."""

    seed: int = 0  # everything (documents, references, pairs, labels) derives from this seed
    n_sft: int = 20_000  # SFT (prompt, completion) rows, split "train"
    n_sft_eval: int = 1_000  # SFT rows, split "eval" (held-out loss)
    n_pref_train: int = 20_000  # preference pairs for PM / RM training
    n_pref_test: int = 2_000  # held-out preference pairs (PM / RM accuracy)
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


# ----------------------------------------------------------------------------------------------- documents
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
    if any(i not in IMPORTANCE for i in imps) or any(f not in _FACT_SET for f in facts) or not facts:
        raise ValueError(f"not a synthetic-task prompt: {prompt!r}")
    return Document(tuple(facts), tuple(IMPORTANCE[i] for i in imps))


_FACT_SET = frozenset(FACT_WORDS)


def summary_features(doc: Document, summary: str, max_words: int) -> dict[str, float] | None:
    """Features of ``summary`` for ``doc`` (see module docstring); None if the summary is malformed."""
    words = summary.split()
    if not words or len(words) > max_words or any(w not in _FACT_SET for w in words):
        return None
    pos = {f: i for i, f in enumerate(doc.facts)}
    seen: set[str] = set()
    dup = inv = 0
    order: list[int] = []
    for w in words:
        if w in seen:
            dup += 1
            continue
        seen.add(w)
        if w in pos:
            order.append(pos[w])
        else:
            inv += 1
    total = sum(doc.importance)
    cov = sum(i for f, i in zip(doc.facts, doc.importance) if f in seen) / total
    nkey = sum(1 for i in doc.importance if i == 3)
    miss = sum(1 for f, i in zip(doc.facts, doc.importance) if i == 3 and f not in seen)
    dis = sum(a > b for a, b in zip(order, order[1:])) / max(1, len(order) - 1)
    skip = (max(order) + 1 - len(order)) if order else 0  # document facts passed over before the last one used
    form = summary_form(doc, words, cov, inv, dup, dis)
    return {"cov": cov, "n": len(words), "ndev": abs(len(words) - nkey), "miss": miss, "inv": inv,
            "dup": dup, "dis": dis, "skip": skip, "nkey": nkey, "all_key": float(miss == 0),
            **{f"form_{f}": float(f == form) for f in FORMS},
            **{f"len_{c}": float(c == length_class(len(words))) for c in LENGTH_CLASSES}}


def length_class(n_words: int) -> str:
    """short (one word), medium (two or three words) or long (four or more)."""
    return "short" if n_words == 1 else "medium" if n_words <= 3 else "long"


def summary_form(doc: Document, words: list[str], cov: float, inv: int, dup: int, dis: float) -> str:
    """The first of FORMS that ``words`` (a well-formed summary of ``doc``) matches: complete (every fact, in order,
    nothing else), key_facts (the key facts in order, nothing else), top_fact (the first key fact alone), lead (the
    first fact alone), keys_reordered (the key facts alone, out of order), embellished (the complete summary followed
    by words that are not in the document, no repeats), or other."""
    keys = list(doc.key_facts)
    if words == list(doc.facts):
        return "complete"
    if words == keys:
        return "key_facts"
    if words == keys[:1]:
        return "top_fact"
    if words == list(doc.facts[:1]):
        return "lead"
    if sorted(words) == sorted(keys) and dis > 0 and not dup:
        return "keys_reordered"
    n = len(doc.facts)
    if words[:n] == list(doc.facts) and len(words) > n and inv == len(words) - n and not dup:
        return "embellished"
    return "other"


def rater_coefficients(population: str = "condorcet") -> np.ndarray:
    """The (raters, features) coefficient matrix of a population (columns in FEATURES order)."""
    raters = POPULATIONS[population]
    return np.array([[raters[r].get(f, 0.0) for f in FEATURES] for r in raters])


def utilities(doc: Document, summary: str, max_words: int, population: str = "condorcet") -> np.ndarray:
    """u_k(x, y) for every rater k of the population, shape (raters,)."""
    coef = rater_coefficients(population)
    feats = summary_features(doc, summary, max_words)
    if feats is None:
        return np.full(len(coef), MALFORMED_UTILITY)
    return coef @ np.array([feats[f] for f in FEATURES], dtype=np.float64)


def preference_from_utilities(u: np.ndarray, u_prime: np.ndarray, weights, sharpness) -> np.ndarray:
    """P = Σ_k w_k σ(s_k (u_k − u'_k)) for utilities of shape (n, raters); exactly 1/2 on ties."""
    w = np.asarray(weights, dtype=np.float64)
    s = np.asarray(sharpness, dtype=np.float64)
    half = 0.5 * np.tanh(0.5 * s * (u - u_prime)) @ (w / w.sum())
    return 0.5 + half


# ------------------------------------------------------------------------------------------------- the task
class SyntheticTask(Task):
    """Synthetic summarization with a cyclic rater population; the exact judge is known."""

    name = "synthetic"

    def __init__(self, cfg: SyntheticTaskConfig | None = None):
        self.cfg = cfg or SyntheticTaskConfig()
        self.fact_words = FACT_WORDS[: self.cfg.n_fact_words]
        self._cache: dict[tuple[str, str], object] = {}
        self._util_cache: dict[tuple[str, str], np.ndarray] = {}
        self._coef = rater_coefficients(self.cfg.population)

    # -- generation ----------------------------------------------------------------------------------
    def _rng(self, stream: str) -> np.random.Generator:
        # one independent stream per (seed, purpose): adding rows to one split never changes another
        key = [self.cfg.seed] + [ord(c) for c in stream]
        return np.random.default_rng(key)

    def sample_document(self, rng: np.random.Generator) -> Document:
        c = self.cfg
        k = int(rng.integers(c.facts_min, c.facts_max + 1))
        idx = rng.choice(len(self.fact_words), size=k, replace=False)
        imp = rng.choice([3, 2, 1], size=k, p=c.importance_probs)
        if not (imp == 3).any():
            imp[rng.integers(k)] = 3
        return Document(tuple(self.fact_words[i] for i in idx), tuple(int(i) for i in imp))

    def _documents(self, stream: str, n: int) -> list[Document]:
        rng = self._rng("docs/" + stream)
        return [self.sample_document(rng) for _ in range(n)]

    def reference_summary(self, doc: Document, style: str, rng: np.random.Generator) -> str:
        """A summary of ``doc`` in one of STYLES (random parts drawn from ``rng``)."""
        facts = list(doc.facts)
        keys = [f for f, i in zip(doc.facts, doc.importance) if i == 3]
        if style == "complete":
            out = facts
        elif style == "key_only":
            out = keys
        elif style == "key_reordered":
            out = list(keys)
            if len(out) < 2:  # add the most important other fact so that there is an order to break
                rest = sorted((-i, p) for p, (f, i) in enumerate(zip(doc.facts, doc.importance)) if i != 3)
                out = out + [facts[rest[0][1]]]
                out = [f for f in facts if f in out]
            out = _derange(out, rng)
        elif style == "complete_invented":
            pool = [w for w in self.fact_words if w not in doc.facts]
            out = list(facts)
            out.insert(int(rng.integers(len(out) + 1)), pool[int(rng.integers(len(pool)))])
        elif style == "complete_reordered":
            out = _derange(facts, rng)
        elif style == "top_fact":
            out = keys[:1]
        elif style == "lead":
            out = facts[:1]
        elif style == "partial":
            m = int(rng.integers(1, len(facts)))
            keep = set(rng.choice(len(facts), size=m, replace=False).tolist())
            out = [f for p, f in enumerate(facts) if p in keep]
        else:
            raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
        return " ".join(out)

    def perturb(self, doc: Document, summary: str, rng: np.random.Generator) -> str:
        """One random edit: drop a word, add a document fact, swap two adjacent words, or invent a word."""
        words = summary.split()
        op = int(rng.integers(4))
        if op == 0 and len(words) > 1:
            del words[int(rng.integers(len(words)))]
        elif op == 1:
            missing = [f for f in doc.facts if f not in words]
            if missing and len(words) < self.cfg.max_summary_words:
                words.insert(int(rng.integers(len(words) + 1)), missing[int(rng.integers(len(missing)))])
        elif op == 2 and len(words) > 1:
            i = int(rng.integers(len(words) - 1))
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == 3 and len(words) < self.cfg.max_summary_words:
            pool = [w for w in self.fact_words if w not in doc.facts]
            words.insert(int(rng.integers(len(words) + 1)), pool[int(rng.integers(len(pool)))])
        return " ".join(words)

    def sample_styles(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(len(STYLES), size=n, p=self.cfg.style_probs)

    # -- Task interface ------------------------------------------------------------------------------
    def prompts(self, split: str) -> list[str]:
        check_split(split, PROMPT_SPLITS, "prompts")
        n = self.cfg.n_prompts_train if split == "train" else self.cfg.n_prompts_eval
        return [d.prompt for d in self._documents("prompts/" + split, n)]

    def sft_rows(self, split: str) -> dict[str, list]:
        """SFT columns plus the style of each row (``style``)."""
        check_split(split, SFT_SPLITS, "sft_dataset")
        key = ("sft", split)
        if key not in self._cache:
            n = self.cfg.n_sft if split == "train" else self.cfg.n_sft_eval
            docs = self._documents("sft/" + split, n)
            rng = self._rng("sft-summaries/" + split)
            styles = self.sample_styles(rng, n)
            comps = [self.reference_summary(d, STYLES[s], rng) for d, s in zip(docs, styles)]
            self._cache[key] = {"prompt": [d.prompt for d in docs], "completion": comps,
                                "style": [STYLES[s] for s in styles]}
        return self._cache[key]

    def sft_dataset(self, split: str):
        import datasets

        rows = self.sft_rows(split)
        return datasets.Dataset.from_dict({"prompt": rows["prompt"], "completion": rows["completion"]})

    def preference_rows(self, split: str) -> dict[str, list]:
        check_split(split, PREF_SPLITS, "preference_dataset")
        key = ("pref", split)
        if key not in self._cache:
            n = self.cfg.n_pref_train if split == "train" else self.cfg.n_pref_test
            docs = self._documents("prefs/" + split, n)
            rng = self._rng("prefs-summaries/" + split)
            ys, yps = [], []
            for d in docs:
                pair = []
                for _ in range(8):  # resample until the two summaries differ
                    pair = [self._pref_summary(d, rng) for _ in range(2)]
                    if pair[0] != pair[1]:
                        break
                ys.append(pair[0])
                yps.append(pair[1])
            prompts = [d.prompt for d in docs]
            p = self.judge(prompts, ys, yps)
            label = self.draw_labels(p, self._rng("prefs-labels/" + split))
            self._cache[key] = {"prompt": prompts, "y": ys, "y_prime": yps, "label": label.tolist(),
                                "p": p.tolist()}
        return self._cache[key]

    def draw_labels(self, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Human labels: ``labels_per_pair`` raters drawn from the population each say whether y ≻ y'
        (Bernoulli(P)); the label is the fraction preferring y (0/1 with a single rater)."""
        k = self.cfg.labels_per_pair
        votes = rng.random((len(p), k)) < np.asarray(p)[:, None]
        return votes.mean(1) if k > 1 else votes[:, 0].astype(np.int64)

    def _pref_summary(self, doc: Document, rng: np.random.Generator) -> str:
        s = self.reference_summary(doc, STYLES[int(self.sample_styles(rng, 1)[0])], rng)
        if rng.random() < self.cfg.perturb_prob:
            s = self.perturb(doc, s, rng)
        return s

    def preference_dataset(self, split: str):
        import datasets

        return datasets.Dataset.from_dict(self.preference_rows(split))

    def utilities(self, prompts: Sequence[str], ys: Sequence[str]) -> np.ndarray:
        """u_k(x, y) for every row and rater, shape (n, raters); memoised per (x, y)."""
        out = np.empty((len(ys), len(self._coef)))
        cache = self._util_cache
        docs: dict[str, Document] = {}
        for i, (x, y) in enumerate(zip(prompts, ys)):
            u = cache.get((x, y))
            if u is None:
                doc = docs.get(x) or docs.setdefault(x, parse_prompt(x))
                feats = summary_features(doc, y, self.cfg.max_summary_words)
                u = (np.full(len(self._coef), MALFORMED_UTILITY) if feats is None
                     else self._coef @ np.array([feats[f] for f in FEATURES], dtype=np.float64))
                if len(cache) < 2_000_000:
                    cache[(x, y)] = u
            out[i] = u
        return out

    def judge(self, prompts: Sequence[str], ys: Sequence[str], y_primes: Sequence[str]) -> np.ndarray:
        """Exact P(y≻y'|x) = Σ_k w_k σ(s_k (u_k(x,y) − u_k(x,y'))) for each row; shape (n,)."""
        if not (len(prompts) == len(ys) == len(y_primes)):
            raise ValueError(f"judge: lengths differ ({len(prompts)}, {len(ys)}, {len(y_primes)})")
        if len(ys) == 0:
            return np.zeros(0)
        u = self.utilities(prompts, ys)
        up = self.utilities(prompts, y_primes)
        return preference_from_utilities(u, up, self.cfg.rater_weights, self.cfg.rater_sharpness)

    def references(self, prompts: Sequence[str]) -> list[str]:
        """The complete summary in document order (the "gold" extractive summary) for each prompt."""
        return [" ".join(parse_prompt(x).facts) for x in prompts]

    def is_well_formed(self, prompt: str, y: str) -> bool:
        return summary_features(parse_prompt(prompt), y, self.cfg.max_summary_words) is not None

    def vocabulary(self) -> list[str]:
        """Every word a prompt or summary can contain (special tokens excluded)."""
        return list(STRUCTURE_WORDS) + list(IMPORTANCE) + list(self.fact_words)

    def style_samples(self, prompts: Sequence[str], k: int = 8, stream: str = "style-samples") -> list[list[str]]:
        """k summaries per prompt drawn from the reference style distribution (what SFT imitates)."""
        rng = self._rng(stream)
        out = []
        for x in prompts:
            doc = parse_prompt(x)
            out.append([self.reference_summary(doc, STYLES[s], rng) for s in self.sample_styles(rng, k)])
        return out

    def candidates(self, prompt: str, max_orders: int = 24) -> list[str]:
        """The summaries this task's grammar makes likely for ``prompt`` (the oracle's candidate pool), sorted.

        Every non-empty subset of the document's facts in document order (this holds complete, key_only,
        top_fact, lead and every partial summary); up to ``max_orders`` other orders of the key facts and of all
        facts (the reordered styles); and each of complete, key_only, lead and top_fact with one invented word
        inserted at every position, or one word repeated. The invented words are drawn with a generator seeded by
        the prompt, so the pool of a prompt never changes.
        """
        import itertools

        doc = parse_prompt(prompt)
        facts, keys = list(doc.facts), list(doc.key_facts)
        rng = np.random.default_rng([self.cfg.seed] + [ord(c) for c in "candidates/" + prompt])
        out: set[str] = set()
        for m in range(1, len(facts) + 1):
            for sub in itertools.combinations(facts, m):
                out.add(" ".join(sub))
        for words in (keys, facts):
            for perm in itertools.islice(itertools.permutations(words), max_orders):
                out.add(" ".join(perm))
        pool = [w for w in self.fact_words if w not in doc.facts]
        for base in (facts, keys, facts[:1], keys[:1]):
            for j in range(len(base) + 1):
                if len(base) < self.cfg.max_summary_words:
                    out.add(" ".join(base[:j] + [pool[int(rng.integers(len(pool)))]] + base[j:]))
            for j in range(len(base)):
                if len(base) < self.cfg.max_summary_words:
                    out.add(" ".join(base[: j + 1] + [base[j]] + base[j + 1:]))
        return sorted(out)

    def condorcet_example(self, doc: Document | None = None) -> tuple[str, str, str, str]:
        """(prompt, A, B, C) of the module docstring, on a fixed 5-fact document with 2 key facts."""
        doc = doc or Document(("storm", "bridge", "mayor", "river", "school"), (3, 1, 2, 3, 1))
        keys = doc.key_facts
        a = list(doc.facts)
        a.insert(2, next(w for w in self.fact_words if w not in doc.facts))
        return doc.prompt, " ".join(a), " ".join(reversed(keys)), keys[0]


def _derange(words: list[str], rng: np.random.Generator) -> list[str]:
    """A random permutation different from ``words`` (when ``len(words) >= 2``)."""
    if len(words) < 2:
        return list(words)
    for _ in range(20):
        perm = rng.permutation(len(words))
        if (perm != np.arange(len(words))).any():
            return [words[i] for i in perm]
    return list(reversed(words))
