"""Win rate of one policy against another with a normal confidence interval, as a local Hugging Face ``evaluate``
module (``evaluate.load("<path to this folder>")``, offline).

Input: one judged comparison per evaluation prompt x_i, p_i = P(y_i ≻ y′_i | x_i) ∈ [0, 1] (the judge's preference
probability of the policy's response y_i over the opponent's y′_i; prompts are distinct, so no clustering). Output:

    win_rate = p̄ = (1/N) Σ_i p_i,
    half     = z · s / √N,   s² = (1/(N−1)) Σ_i (p_i − p̄)²,   z = Φ⁻¹(½ + confidence/2),
    [ci_low, ci_high] = [p̄ − half, p̄ + half]

(half is NaN when N = 1). This is the normal interval of the paper's Table 1 cells (Munos et al., 2024, §8), applied
to judge probabilities rather than binary judgements.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import norm

_CITATION = """\
@inproceedings{munos2024nash,
    title = {Nash Learning from Human Feedback},
    author = {Munos, R{\\'e}mi and Valko, Michal and Calandriello, Daniele and Azar, Mohammad Gheshlaghi and
              Rowland, Mark and Guo, Zhaohan Daniel and Tang, Yunhao and Geist, Matthieu and Mesnard, Thomas and
              Fiegel, C{\\^o}me and Michi, Andrea and Selvi, Marco and Girgin, Sertan and Momchev, Nikola and
              Bachem, Olivier and Mankowitz, Daniel J. and Precup, Doina and Piot, Bilal},
    booktitle = {Proceedings of the 41st International Conference on Machine Learning (ICML)},
    year = {2024},
    url = {https://arxiv.org/abs/2312.00886},
}
"""

_DESCRIPTION = """\
Pairwise win rate P(y ≻ y′) of a policy against an opponent, estimated from one judged comparison per prompt, with
its normal confidence interval: win_rate = mean(p), half-width = z·sd(p, ddof=1)/√N with z = Φ⁻¹(½ + confidence/2),
[ci_low, ci_high] = win_rate ∓ half-width. The cells of the pairwise preference table of Nash Learning from Human
Feedback (Munos et al., 2024, Table 1).
"""

_KWARGS_DESCRIPTION = """
Args:
    preferences (list of float): P(y_i ≻ y′_i | x_i), one per prompt, in [0, 1].
    confidence (float, default 0.95): level of the two-sided interval.
Returns:
    win_rate (float): mean preference.
    ci_half_width (float): z·sd/√N (NaN when N = 1).
    ci_low (float), ci_high (float): win_rate − / + ci_half_width.
    n (int): number of comparisons N.
Examples:
    >>> win_rate = evaluate.load("nlhf/metrics/pairwise_win_rate")
    >>> win_rate.compute(preferences=[0.5, 0.5, 0.5])
    {'win_rate': 0.5, 'ci_half_width': 0.0, 'ci_low': 0.5, 'ci_high': 0.5, 'n': 3}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PairwiseWinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"preferences": datasets.Value("float64")}),
            reference_urls=["https://arxiv.org/abs/2312.00886"],
        )

    def _compute(self, preferences, confidence=0.95):
        p = np.asarray(preferences, dtype=np.float64)
        n = len(p)
        z = norm.ppf(0.5 + confidence / 2)
        mean = float(p.mean())
        half = float(z * p.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        return {"win_rate": mean, "ci_half_width": half, "ci_low": mean - half, "ci_high": mean + half, "n": n}
