"""Offline synthetic summarization task with a population of (individually consistent) rater types.

Why: offline there are no humans, so "human feedback" comes from an explicit population of raters whose aggregate
preference is measurably *non-transitive* (the paper's §3 "three rater types" and App. C) and whose exact
P(y≻y'|x) is known — it plays the role of the paper's PaLM 2 judge P* (§8 "Evaluation"). The population is a
parameter (``population``, see :data:`nlhf.tasks.synthetic_raters.POPULATIONS`): ``completist`` (the default) is
built so that the Bradley–Terry optimum lies outside the Nash support, so theory separates Nash from RLHF (the
paper's §3.2 mechanism: the Bradley–Terry fit picks a Borda-style winner, the Nash equilibrium a Condorcet-style
one); ``condorcet`` is the null control, where theory predicts that they tie. :mod:`nlhf.oracle`
measures both.

``SyntheticTask`` draws documents (:mod:`nlhf.tasks.synthetic_documents`), reference summaries in one of ``STYLES``
(what SFT imitates), preference pairs labelled by raters drawn from the population, and judges with the exact
P(y≻y'|x) of :mod:`nlhf.tasks.synthetic_raters`. Every split has its own random stream derived from ``seed``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nlhf.tasks.base import PREF_SPLITS, PROMPT_SPLITS, SFT_SPLITS, Task, check_split
from nlhf.tasks.synthetic_config import SyntheticTaskConfig
from nlhf.tasks.synthetic_documents import FACT_WORDS, IMPORTANCE, STRUCTURE_WORDS, STYLES, Document, parse_prompt
from nlhf.tasks.synthetic_raters import (FEATURES, FORMS, MALFORMED_UTILITY, preference_from_utilities,
                                         rater_coefficients, summary_features)


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
            out = list(facts) + [pool[int(rng.integers(len(pool)))]]  # the embellished form (``summary_form``)
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

    def _size(self, kind: str, split: str) -> int:
        """Rows of a dataset split (params ``task.synthetic.n_*``)."""
        return {("sft", "train"): self.cfg.n_sft, ("sft", "eval"): self.cfg.n_sft_eval,
                ("pref", "train"): self.cfg.n_pref_train, ("pref", "test"): self.cfg.n_pref_test,
                ("pref", "judge"): self.cfg.n_pref_judge or self.cfg.n_pref_test}[(kind, split)]

    def _rows(self, kind: str, split: str, build) -> dict[str, list]:
        """The columns of a dataset split, built once per task object (``build()``) and then reused."""
        if (kind, split) not in self._cache:
            self._cache[(kind, split)] = build()
        return self._cache[(kind, split)]

    def sft_rows(self, split: str) -> dict[str, list]:
        """SFT columns plus the style of each row (``style``)."""
        check_split(split, SFT_SPLITS, "sft_dataset")

        def build():
            n = self._size("sft", split)
            docs = self._documents("sft/" + split, n)
            rng = self._rng("sft-summaries/" + split)
            styles = self.sample_styles(rng, n)
            comps = [self.reference_summary(d, STYLES[s], rng) for d, s in zip(docs, styles)]
            return {"prompt": [d.prompt for d in docs], "completion": comps, "style": [STYLES[s] for s in styles]}

        return self._rows("sft", split, build)

    def sft_dataset(self, split: str):
        import datasets

        rows = self.sft_rows(split)
        return datasets.Dataset.from_dict({"prompt": rows["prompt"], "completion": rows["completion"]})

    def preference_rows(self, split: str) -> dict[str, list]:
        # "judge": fresh pairs (n_pref_judge of them), for a judge trained apart from PM and RM (the TL;DR-schema
        # export's held-out judge, nlhf.tasks.tldr_export); the synthetic path itself judges with P*
        check_split(split, PREF_SPLITS, "preference_dataset")

        def build():
            docs = self._documents("prefs/" + split, self._size("pref", split))
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
            return {"prompt": prompts, "y": ys, "y_prime": yps, "label": label.tolist(), "p": p.tolist()}

        return self._rows("pref", split, build)

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

    def forms(self, prompts: Sequence[str], ys: Sequence[str]) -> list[str]:
        """The form of each summary (:func:`nlhf.tasks.synthetic_raters.summary_form`: complete, embellished, ...),
        or ``malformed``: what the completist raters judge."""
        out = []
        for x, y in zip(prompts, ys):
            f = summary_features(parse_prompt(x), y, self.cfg.max_summary_words)
            out.append("malformed" if f is None else next(k for k in FORMS if f[f"form_{k}"]))
        return out

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
        facts (the reordered styles); each of complete, key_only, lead and top_fact with one invented word
        inserted at every position, or one word repeated; and the complete summary followed by each word that is
        not in the document (every one-word embellished summary, so that the pool holds that form's whole mass, not
        one variant of it). The other invented words are drawn with a generator seeded by the prompt, so the pool of
        a prompt never changes.
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
        if len(facts) < self.cfg.max_summary_words:
            out.update(" ".join(facts + [w]) for w in pool)
        return sorted(out)

    def condorcet_example(self, doc: Document | None = None) -> tuple[str, str, str, str]:
        """(prompt, A, B, C) of :mod:`nlhf.tasks.synthetic_raters`, on a fixed 5-fact document with 2 key facts."""
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
