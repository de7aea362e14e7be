"""ROUGE-L F1 as a local Hugging Face ``evaluate`` module (``evaluate.load("<path to this folder>")``, offline).

For a prediction ŷ and a reference y, with LCS(ŷ, y) the length of their longest common subsequence of tokens,

    R = LCS / |y|,   P = LCS / |ŷ|,   F1 = 2PR / (P + R)   (0 when LCS = 0),

and the score is the mean of F1 over the pairs: rougeL = (1/N) Σ_i F1(ŷ_i, y_i). Tokens are ``rouge-score``'s
default tokenization (lower-cased alphanumeric runs), without stemming.
"""

import datasets
import evaluate
import numpy as np
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    month = jul,
    year = "2004",
    address = "Barcelona, Spain",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
    pages = "74--81",
}
"""

_DESCRIPTION = """\
Mean ROUGE-L F1 (Lin, 2004) of predictions against references. For each pair, with LCS the length of the longest
common token subsequence, R = LCS/|reference|, P = LCS/|prediction| and F1 = 2PR/(P+R) (0 when LCS = 0); the score
is the mean F1 over the pairs. Computed with `rouge-score` (`RougeScorer(["rougeL"], use_stemmer=False)`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the generated texts.
    references (list of str): one reference per prediction.
Returns:
    rougeL (float): mean ROUGE-L F1 over the pairs, in [0, 1].
Examples:
    >>> rouge_l = evaluate.load("nlhf/metrics/rouge_l")
    >>> rouge_l.compute(predictions=["the cat sat"], references=["the cat sat"])
    {'rougeL': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        # rouge-score's signature is score(target, prediction)
        f1 = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
        return {"rougeL": float(np.mean(f1))}
