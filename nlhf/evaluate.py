"""The paper's pairwise preference table (Table 1: P(column ≻ row)), its confidence intervals, ROUGE-L,
an exploitability estimate, and the replication scorecard (the paper's §8).

Estimation. Every policy draws ONE response per evaluation prompt (seeded). Cell (row r, column c) is

    P̂(c ≻ r) = (1/N) Σ_x J(x, y_c(x), y_r(x)),

with J the judge: the task's exact preference P* (the paper's PaLM 2) or the trained preference model (the paper's
App. Table 2). Because both directions use the *same* samples and J is antisymmetric (exactly, for both judges),
the table satisfies P̂(c ≻ r) + P̂(r ≻ c) = 1 and P̂(c ≻ c) = 1/2 to rounding. The 95% CI is the normal interval
mean ± z·sd/√N of the per-prompt values (the paper used Clopper–Pearson on binary judgements; our judge returns
probabilities, whose variance is at most that of Bernoulli draws, so the paper's ±0.023 at N=2000 is an upper
bound for our half-width at the same N).

The win rate ± CI and ROUGE-L are the package's Hugging Face ``evaluate`` modules (``nlhf/metrics/pairwise_win_rate``,
``nlhf/metrics/rouge_l``), read from the package folder by :func:`load_metric` with no network access.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from nlhf.config import check
from nlhf.paper import CLAIMS, PAPER_CI, PAPER_TABLE1

@dataclass
class EvalConfig:
    """Evaluation sizes (params.yaml ``eval``)."""

    n_prompts: int = 1000  # fresh evaluation prompts per table cell (paper: 2000)
    confidence: float = 0.95  # CI level
    nontransitivity_prompts: int = 200  # prompts for the cycle-fraction check on SFT samples
    nontransitivity_samples: int = 6  # SFT samples per prompt for that check
    n_heldout_pairs: int = 2000  # held-out pairs of SFT samples for PM vs RM
    seed: int = 0  # sampling seed of the evaluation
    exploitability_prompts: int = 200  # prompts on which each policy's exploitability is measured
    exploitability_samples: int = 16  # samples of each policy per such prompt (the adversary plays against them)
    policies: list[str] | None = None  # rows/columns of the table (None: every policy of the configured methods)
    llm_judge: str | None = None  # a local causal-LM folder that also judges the table (nlhf.judges.LLMJudge)
    llm_judge_prompt: str | None = None  # its question, with {prompt}, {a}, {b} (None: DEFAULT_LLM_JUDGE_PROMPT)
    llm_judge_answers: list[str] = field(default_factory=lambda: [" A", " B"])  # the answers it is scored on
    synthetic_export: str | None = None  # a TL;DR-schema export of the synthetic task (nlhf.tasks.tldr_export) that
    # the run trains on: its P* judges the table too, and each judge's gap to it is reported (judge_gap.csv)

    def __post_init__(self):
        for f in ("n_prompts", "nontransitivity_prompts", "n_heldout_pairs", "exploitability_prompts",
                  "exploitability_samples"):
            check(getattr(self, f) >= 1, f, f"must be >= 1 (got {getattr(self, f)})")
        check(self.nontransitivity_samples >= 3, "nontransitivity_samples",
              f"must be >= 3 (triples), got {self.nontransitivity_samples}")
        check(0 < self.confidence < 1, "confidence", f"must be in (0, 1) (got {self.confidence})")
        check(len(self.llm_judge_answers) == 2, "llm_judge_answers",
              f"must be two answers, for the first and the second response (got {self.llm_judge_answers})")


Judge = Callable[[Sequence[str], Sequence[str], Sequence[str]], np.ndarray]

METRICS_DIR = Path(__file__).parent / "metrics"  # the package's Hugging Face ``evaluate`` modules


@functools.cache
def load_metric(name: str):
    """The ``evaluate`` module ``nlhf/metrics/<name>/<name>.py`` (``rouge_l``, ``pairwise_win_rate``), loaded once.

    A local folder never reaches the Hub: ``evaluate.load`` copies the script into ``HF_MODULES_CACHE`` and imports
    it, with no offline switch needed (the tests load both modules with every outbound connection blocked).
    ``keep_in_memory``: the inputs of a ``compute`` go to an in-memory Arrow buffer instead of a cache file under
    ``~/.cache/huggingface/metrics`` behind a file lock, which parallel processes (DVC stages, tests) would contend for.
    """
    import evaluate

    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


def win_rate_ci(preferences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean preference p̄ and its CI half-width z·sd(ddof=1)/√N (NaN when N = 1), z = Φ⁻¹(½ + confidence/2), by the
    ``pairwise_win_rate`` module."""
    # The module's Arrow round trip costs more than the bare formula, but little next to judging a table's cells,
    # so the table uses the module directly (one implementation of the interval).
    out = load_metric("pairwise_win_rate").compute(preferences=np.asarray(preferences, dtype=np.float64),
                                                   confidence=confidence)
    return out["win_rate"], out["ci_half_width"]


def pairwise_table(judge: Judge, prompts: Sequence[str], samples: dict[str, list[str]],
                   confidence: float = 0.95) -> pd.DataFrame:
    """Long table of every (row, column) cell: mean P(column ≻ row), CI half-width (:func:`win_rate_ci`), N.

    Only the upper triangle is judged; the lower one is 1 − mirror (exact for an antisymmetric judge on the same
    samples), the diagonal is 1/2.
    """
    names = list(samples)
    n = len(prompts)
    rows = []
    for i, r in enumerate(names):
        for j, c in enumerate(names):
            if j <= i:
                continue
            mean, half = win_rate_ci(np.asarray(judge(prompts, samples[c], samples[r]), dtype=np.float64), confidence)
            rows.append({"row": r, "column": c, "p": mean, "ci": half, "n": n})
            rows.append({"row": c, "column": r, "p": 1.0 - mean, "ci": half, "n": n})
        rows.append({"row": r, "column": r, "p": 0.5, "ci": 0.0, "n": n})
    return pd.DataFrame(rows)


def judge_agreement(prob: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[dict, pd.DataFrame]:
    """How far a judge can be trusted, from its P(y ≻ y′ | x) on comparisons with human labels (the fraction of
    raters who preferred y): log-loss against the labels, accuracy on the labels that pick a side, and its
    calibration, the mean label in each of ``bins`` equal-width bins of P (a calibrated judge lies on the diagonal)."""
    q, z = np.asarray(prob, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    eps = 1e-7
    qc = np.clip(q, eps, 1 - eps)
    decided = z != 0.5
    out = {"n": int(len(q)), "log_loss": float(-np.mean(z * np.log(qc) + (1 - z) * np.log(1 - qc))),
           "accuracy": float(np.mean((q[decided] > 0.5) == (z[decided] > 0.5))) if decided.any() else float("nan")}
    which = np.minimum((q * bins).astype(int), bins - 1)
    calibration = pd.DataFrame([{"bin_low": b / bins, "bin_high": (b + 1) / bins, "n": int((which == b).sum()),
                                 "mean_p": float(q[which == b].mean()), "mean_label": float(z[which == b].mean())}
                                for b in range(bins) if (which == b).any()])
    return out, calibration


def judge_gap(judge: Judge, reference: Judge, prompts: Sequence[str], samples: dict[str, list[str]],
              confidence: float = 0.95) -> pd.DataFrame:
    """Per cell of the table (each pair of policies once, P(column ≻ row)): the judge's win rate, the reference
    judge's on the same samples, and the gap (judge − reference) with its paired bootstrap interval over prompts
    (:func:`paired_bootstrap_ci`): how far the table under ``judge`` is from the table under ``reference``."""
    names = list(samples)
    rows = []
    for i, r in enumerate(names):
        for c in names[i + 1:]:
            a = np.asarray(judge(prompts, samples[c], samples[r]), dtype=np.float64)
            b = np.asarray(reference(prompts, samples[c], samples[r]), dtype=np.float64)
            gap, lo, hi = paired_bootstrap_ci(a, b, confidence)
            rows.append({"row": r, "column": c, "p": float(a.mean()), "p_reference": float(b.mean()), "gap": gap,
                         "gap_lo": lo, "gap_hi": hi})
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
    """Mean ROUGE-L F1 (1/N) Σ_i F1_LCS(prediction_i, reference_i), by the ``rouge_l`` module (``rouge-score``)."""
    return load_metric("rouge_l").compute(predictions=list(predictions), references=list(references))["rougeL"]


def exploitability_on_pool(judge: Judge, prompts: Sequence[str], pools: Sequence[Sequence[str]],
                           samples: Sequence[Sequence[str]]) -> float:
    """max_y E_{y′~π} P(y ≻ y′ | x) − ½, averaged over prompts (:func:`nlhf.games.nash.exploitability` on samples).

    ``samples[i]``: k ≥ 16 responses of π at ``prompts[i]`` (the expectation over y′ is their mean);
    ``pools[i]``: the responses y an adversary may choose (the task's candidate pool; the samples are added). The
    adversary picks one y per prompt against the whole *distribution* π, so a policy that mixes over a Nash
    support is not penalised for mixing. The max over noisy means is biased upward by the sampling error.
    """
    per_prompt = []
    for x, pool, ys in zip(prompts, pools, samples):
        cand = sorted(set(pool) | set(ys))
        k = len(ys)
        p = np.asarray(judge([x] * (len(cand) * k), [y for y in cand for _ in range(k)], list(ys) * len(cand)))
        per_prompt.append(p.reshape(len(cand), k).mean(1).max() - 0.5)
    return float(np.mean(per_prompt))


def nontransitivity_stats(task, prompts: Sequence[str], samples: Sequence[Sequence[str]]) -> dict:
    """Non-transitivity of the exact judge on k samples per prompt: the fraction of majority cycles among triples of
    distinct samples and how well the best Bradley–Terry fit reproduces P (:mod:`nlhf.tasks.analysis`)."""
    from nlhf.tasks.analysis import bt_fit_agreement, cycle_fraction, preference_matrices

    mats = [m for m in preference_matrices(task.judge, prompts, samples) if len(m) >= 3]
    bt = bt_fit_agreement(mats)
    return {**cycle_fraction(mats), "bt_direction_agreement": bt["bt_agreement"],
            "p_direction_agreement": bt["p_agreement"], "bt_log_loss": bt["bt_logloss"],
            "p_entropy": bt["p_entropy"], "prompts_with_3plus_distinct": len(mats)}


def sft_checks(task, policy, init, tokenizer, prompts: Sequence[str], sampling: dict, seed: int,
               nontransitivity_prompts: int, nontransitivity_samples: int) -> tuple[dict, list[str]]:
    """The SFT policy's checks on fresh prompts, and its samples: the share of well-formed summaries (finished with
    EOS and parseable), their mean length in words, and, with an exact judge, P*(SFT ≻ the untrained ``init``),
    P*(SFT ≻ the reference summary) and :func:`nontransitivity_stats` on ``nontransitivity_samples`` samples of the
    first ``nontransitivity_prompts`` prompts. ``sampling``: keyword arguments of :func:`nlhf.sampling.texts.sample_texts`;
    ``seed``: the base of the named random streams (:mod:`nlhf.seeds`)."""
    from nlhf.sampling.texts import sample_texts
    from nlhf.seeds import seed_for

    ys, done = sample_texts(policy, tokenizer, prompts, seed=seed_for(seed, "sft.samples"), return_finished=True,
                            **sampling)
    well = [d and task.is_well_formed(x, y) for x, y, d in zip(prompts, ys, done)]
    out = {"well_formed": float(np.mean(well)), "mean_summary_words": float(np.mean([len(y.split()) for y in ys]))}
    if task.has_exact_judge:
        y_init = sample_texts(init, tokenizer, prompts, seed=seed_for(seed, "sft.init_samples"), **sampling)
        out["p_sft_vs_init"] = float(np.mean(task.judge(prompts, ys, y_init)))
        k = nontransitivity_samples
        nt_prompts = list(prompts[:nontransitivity_prompts])
        flat = sample_texts(policy, tokenizer, [x for x in nt_prompts for _ in range(k)],
                            seed=seed_for(seed, "sft.nontransitivity_samples"), **sampling)
        samples = [flat[i * k: (i + 1) * k] for i in range(len(nt_prompts))]
        out["nontransitivity"] = nontransitivity_stats(task, nt_prompts, samples)
        refs = task.references(nt_prompts)
        out["p_sft_vs_reference"] = float(np.mean(task.judge(nt_prompts, [s[0] for s in samples], refs)))
    return out, ys


def table_cell(long: pd.DataFrame, column: str, row: str) -> tuple[float, float]:
    """P(column ≻ row) and its CI from a long table (:func:`pairwise_table`); NaN when the cell is not there."""
    hit = long[(long["column"] == column) & (long["row"] == row)]
    if hit.empty:
        return float("nan"), float("nan")
    return float(hit["p"].iloc[0]), float(hit["ci"].iloc[0])


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error over the claims)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj


@functools.lru_cache(maxsize=None)
def z_value(confidence: float) -> float:
    """The two-sided normal quantile of a ``confidence`` interval (1.96 at 0.95). scipy.stats is imported here, on
    first use, not with the module: it takes about a second, paid by every stage that imports this module."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def claim_outcomes(cells: Sequence[Sequence[tuple[float, float]]], confidence: float = 0.95) -> pd.DataFrame:
    """Three outcomes per claim from its cells' (P̂, CI half-width), Holm-corrected across claims.

    A claim "P(A ≻ B) > ½ for every cell" *agrees* when the intersection-union p-value (the largest one-sided
    p-value of P > ½ over its cells) survives Holm at level 1 − ``confidence``; it *disagrees* when some cell is
    significantly below ½ (smallest one-sided p-value of P < ½, times the number of cells, survives Holm); otherwise
    it is *inconclusive*.
    """
    from scipy.stats import norm

    z = z_value(confidence)
    alpha = 1 - confidence
    p_agree, p_disagree = [], []
    for claim in cells:
        se = [max(ci / z, 1e-12) for _, ci in claim]
        zs = [(p - 0.5) / s for (p, _), s in zip(claim, se)]
        p_agree.append(max(norm.sf(v) for v in zs))
        p_disagree.append(min(1.0, len(zs) * min(norm.cdf(v) for v in zs)))
    a, d = holm(p_agree), holm(p_disagree)
    outcome = np.where(a <= alpha, "agrees", np.where(d <= alpha, "disagrees", "inconclusive"))
    return pd.DataFrame({"outcome": outcome, "p_agree_holm": a, "p_disagree_holm": d})


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
                        ) -> tuple[float, float, float]:
    """mean(a − b) and its percentile bootstrap interval, resampling prompts (a, b: per-prompt values)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(d.mean()), float(lo), float(hi)


def scorecard(long: pd.DataFrame, oracle: pd.DataFrame | None = None, confidence: float = 0.95,
              targets: dict[str, str] | None = None) -> pd.DataFrame:
    """Each claim of the paper (:data:`nlhf.paper.CLAIMS`) on our table: agrees / inconclusive / disagrees
    (Holm-corrected), whether our weakest cell is consistent with the paper's value, and what the oracle predicts.

    ``oracle``: a long table of the oracle policies (same layout); ``targets`` maps a trained policy to its row
    there (:func:`nlhf.training.methods.policy_targets`: its method's target; an averaged policy, its method's);
    by default a policy's own name. Claims whose policies are missing from ``long`` are skipped.
    """
    present = set(long["row"])
    kept = [(c, [cell for cell in cells if cell[0] in present and cell[1] in present]) for c, cells in CLAIMS]
    kept = [(c, cells) for c, cells in kept if cells]
    ours = [[table_cell(long, a, b) for a, b in cells] for _, cells in kept]
    out = claim_outcomes(ours, confidence)
    if oracle is not None:
        target = {n: n for n in set(oracle["row"])} | (targets or {})
        pred = [[table_cell(oracle, target.get(a, ""), target.get(b, "")) if a != b else (0.5, 0.0) for a, b in cells]
                for _, cells in kept]
        pred = [[(p, c) if not np.isnan(p) else (0.5, 0.0) for p, c in claim] for claim in pred]
        out["oracle_outcome"] = claim_outcomes(pred, confidence)["outcome"]
    rows = []
    for k, (claim, cells) in enumerate(kept):
        worst = int(np.argmin([p for p, _ in ours[k]]))
        a, b = cells[worst]
        p, ci = ours[k][worst]
        pp = PAPER_TABLE1.get((a, b), 1 - PAPER_TABLE1[(b, a)] if (b, a) in PAPER_TABLE1 else None)
        row = {"claim": claim,
               "cell": f"P({a} ≻ {b})" + (f" (weakest of {len(cells)})" if len(cells) > 1 else ""),
               "paper": None if pp is None else round(pp, 3), "ours": round(p, 3), "ci95": round(ci, 3),
               "outcome": out["outcome"][k],
               "consistent_with_paper": None if pp is None else bool(abs(p - pp) <= np.hypot(ci, PAPER_CI))}
        if oracle is not None:
            op = pred[k][worst][0]
            row.update({"oracle": round(op, 3), "oracle_outcome": out["oracle_outcome"][k]})
        rows.append(row)
    return pd.DataFrame(rows)
