"""The synthetic task's rater population and its exact preference P*(y≻y'|x) (the paper's §3.2, §8, App. A, C).

Offline there are no humans, so "human feedback" comes from an explicit population of raters whose aggregate
preference is measurably *non-transitive* and whose exact P(y≻y'|x) is known: it plays the role of the paper's PaLM 2
judge P* (§8 "Evaluation"). ``completist`` is built so that the Bradley–Terry optimum lies outside the Nash support
(the mechanism of §3.2: a Bradley–Terry fit of a non-transitive population picks a Borda-style winner, the response
that beats the common ones by the widest margins, where the Nash equilibrium picks the Condorcet-style one, the
response a majority prefers to every other); ``condorcet`` is the null control, where theory predicts that they tie.

Features of a summary y for document x (``summary_features``):
  cov  importance-weighted coverage ∈ [0, 1];  n  number of words;  inv  words not in the document;
  dup  repeated words;  dis  fraction of adjacent (in-document) pairs out of document order ∈ [0, 1];
  miss key facts missing;  nkey number of key facts in x;  ndev = |n − nkey|;
  skip document facts passed over before the last one the summary uses (cherry-picking; 0 for a prefix);
  form_*  one-hot of the summary's form (``summary_form``: complete, key_facts, top_fact, lead, keys_reordered,
          embellished, other);  len_*  one-hot of its length class (short: 1 word, medium: 2–3, long: ≥ 4);
  shape_* one-hot of the summary's shape (``summary_shape``), a second reading of it that only the pentagon
          population uses: complete, key_facts, lead (the first fact alone, key or not), tail (every fact but the
          lead), non_key (the facts that are not key), all in document order, or none.

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

import numpy as np

from nlhf.tasks.synthetic_documents import FACT_SET, Document

# Summary forms, in the order ``summary_form`` tests them; the first that matches is the summary's form.
FORMS: tuple[str, ...] = ("complete", "key_facts", "top_fact", "lead", "keys_reordered", "embellished", "other")
LENGTH_CLASSES: tuple[str, ...] = ("short", "medium", "long")  # 1 word, 2–3 words, 4 or more (``length_class``)
# Shapes, in the order ``summary_shape`` tests them (where two coincide on a document, the first names it).
SHAPES: tuple[str, ...] = ("complete", "key_facts", "lead", "tail", "non_key", "none")
FEATURES: tuple[str, ...] = (("cov", "n", "ndev", "miss", "inv", "dup", "dis", "skip")
                             + tuple(f"form_{f}" for f in FORMS) + tuple(f"len_{c}" for c in LENGTH_CLASSES)
                             + tuple(f"shape_{s}" for s in SHAPES))

# Rater populations: each rater's utility is u_k = Σ_f coef[f] · feature_f (features: see ``summary_features``).
#
# condorcet (the null control). The fact-checker's skip and length terms put its favourite (the lead fact) apart
# from the skimmer's (key facts) and the thorough rater's (everything), so that the *style* summaries cycle:
# complete ≻ key_only ≻ lead ≻ complete. A Nash equilibrium ties every response in its support, and the
# Bradley–Terry optimum lies inside that support on most prompts, so theory predicts Nash ≈ RLHF here.
#
# completist (§3.2: the Bradley–Terry fit picks a Borda-style winner, the Nash equilibrium the Condorcet winner). The two large groups judge a summary by its *form* (``summary_form``):
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
#
# cyclic (a game where the mixture weight β matters). Three raters rank three faithful forms in a Condorcet cycle,
# complete ≻ key facts ≻ one fact ≻ complete (thorough: complete ≻ key ≻ one; concise: key ≻ one ≻ complete;
# headline: one ≻ complete ≻ key; "one fact" is the top key fact or the lead fact alone), and every other form far
# below them. The Nash equilibrium mixes the three wherever they are three different summaries, and SFT, which writes
# one fact far more often than the other two, sits off it, so the τ-regularised equilibria of different strengths
# (hence the Nash-MD-PG targets of different β) and the best response to SFT put different weights on the three.
_CYCLE = {"thorough": (2.0, 1.0, 0.0), "concise": (0.0, 2.0, 1.0), "headline": (1.0, 0.0, 2.0)}  # complete, key, one
POPULATIONS["cyclic"] = {
    rater: {"form_complete": c, "form_key_facts": k, "form_top_fact": one, "form_lead": one,
            "form_embellished": -3.0, "form_keys_reordered": -3.0, "form_other": -3.0}
    for rater, (c, k, one) in _CYCLE.items()}
#
# pentagon (a game where β changes the answer). Five raters rank five shapes (``summary_shape``) in rotation, each
# putting one first and the next ones after it (4, 3, 2, 1, 0) and every other summary far below (−3):
#   tail ≻ complete ≻ key facts ≻ lead ≻ non-key facts ≻ tail
# (tail: every fact but the lead; non-key facts: the facts that are not key; both in document order). Four of the five
# raters prefer each shape to the next one, so where the five are different summaries (on most documents; where two
# coincide, the first of SHAPES names it) the majority relation is a 5-cycle with margins of 4/5, against 2/3 at most
# for three transitive raters, and the Nash equilibrium mixes the five. SFT rarely writes the tail or the non-key
# facts (no reference style does but the random subsets of ``partial``), so their log-probability under μ lies some
# 10–16 nats below SFT's usual answer on many prompts, and the τ-regularised targets of self-play, of Nash-MD-PG at
# each β and of the best response to SFT weigh them differently: with a weak regularisation (τ = 0.008) a payoff
# margin of 0.1 is worth 12.5 nats of log-probability under μ (benchmarks/population_design.py measures the targets
# before anything is trained).
_PENTAGON_CYCLE = ("tail", "complete", "key_facts", "lead", "non_key")


def _rotation(cycle: tuple[str, ...], start: int, floor: float = -3.0) -> dict[str, float]:
    """Coefficients of the rater who ranks the shape ``cycle[start]`` first, then the next shapes of the cycle in
    turn (utility len − 1 down to 0), and every summary of no shape in the cycle at ``floor``."""
    unknown = set(cycle) - set(SHAPES)
    if unknown:
        raise ValueError(f"unknown shapes {sorted(unknown)}; expected some of {SHAPES}")
    coef = {f"shape_{x}": floor for x in SHAPES if x not in cycle}
    for j in range(len(cycle)):
        coef[f"shape_{cycle[(start + j) % len(cycle)]}"] = float(len(cycle) - 1 - j)
    return coef


POPULATIONS["pentagon"] = {
    rater: _rotation(_PENTAGON_CYCLE, i)
    for i, rater in enumerate(("background_reader", "thorough", "concise", "headline", "side_story_reader"))}
# Default rater shares and sharpness of each population (params may override them).
POPULATION_WEIGHTS: dict[str, list[float]] = {"condorcet": [0.36, 0.33, 0.31],
                                              "completist": [0.60, 0.16, 0.08, 0.08, 0.08],
                                              "cyclic": [0.34, 0.33, 0.33],
                                              "pentagon": [0.2, 0.2, 0.2, 0.2, 0.2]}
RATERS = POPULATIONS["condorcet"]
MALFORMED_UTILITY = -100.0


def summary_features(doc: Document, summary: str, max_words: int) -> dict[str, float] | None:
    """Features of ``summary`` for ``doc`` (see module docstring); None if the summary is malformed."""
    words = summary.split()
    if not words or len(words) > max_words or any(w not in FACT_SET for w in words):
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
    shape = summary_shape(doc, words)
    return {"cov": cov, "n": len(words), "ndev": abs(len(words) - nkey), "miss": miss, "inv": inv,
            "dup": dup, "dis": dis, "skip": skip, "nkey": nkey, "all_key": float(miss == 0),
            **{f"form_{f}": float(f == form) for f in FORMS},
            **{f"len_{c}": float(c == length_class(len(words))) for c in LENGTH_CLASSES},
            **{f"shape_{s}": float(s == shape) for s in SHAPES}}


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


def summary_shape(doc: Document, words: list[str]) -> str:
    """The first of SHAPES that ``words`` (a well-formed summary of ``doc``) is: complete (every fact), key_facts,
    lead (the first fact alone), tail (every fact but the first), non_key (the facts that are not key), each in
    document order; else none."""
    keys = [f for f, i in zip(doc.facts, doc.importance) if i == 3]
    for shape, target in (("complete", list(doc.facts)), ("key_facts", keys), ("lead", list(doc.facts[:1])),
                          ("tail", list(doc.facts[1:])),
                          ("non_key", [f for f, i in zip(doc.facts, doc.importance) if i != 3])):
        if target and words == target:
            return shape
    return "none"


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
