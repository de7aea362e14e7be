"""Each stage's headline numbers: the small metrics file DVC compares across runs and experiments.

A stage writes everything it measured to ``results/metrics/<stage>.json`` (read by the notebooks and the README);
``results/summary/<stage>.json`` keeps a few numbers from it, chosen here, so that ``dvc metrics show`` and
``dvc exp show`` fit in a terminal (both paths: :class:`nlhf.pipeline.layout.Layout`). Only numbers and booleans: no
strings, lists or run times. Stages that measure the same thing use the same name (``cycle_fraction``,
``p_vs_sft``), so all stages together stay under 40 columns.
"""

from __future__ import annotations

import math

HEADLINES: dict[str, dict[str, str]] = {
    "tabular": {"theorem1_holds": "theorem1_holds", "theorem1_max_ratio": "max_ratio_to_bound"},
    "data": {"sft_rows": "sft_train_rows", "pref_bayes_accuracy": "prefs_test_bayes_accuracy"},
    "sft": {"heldout_loss": "heldout_loss", "well_formed": "well_formed", "p_vs_init": "p_sft_vs_init",
            "cycle_fraction": "nontransitivity.cycle_fraction"},
    "pm": {"excess_log_loss": "heldout_sft_pairs.excess_log_loss", "direction_agreement": "test.direction_agreement"},
    "oracle": {"p_sp_vs_rlhf": "populations.completist.p_sp_vs_rlhf.p",
               "bt_outside_nash_support": "populations.completist.bt_optimum_outside_nash_support",
               "cycle_fraction": "populations.completist.sft_sample_nontransitivity.cycle_fraction",
               "sft_in_pool": "sft_samples_in_pool"},
    "policy": {"p_vs_sft": "probe.p_vs_sft", "p_vs_target": "probe.p_vs_target", "kl": "probe.kl",
               "converged": "probe.converged"},
    "eval": {"p_md1_vs_rlhf": "headline.MD1_vs_RLHF.p", "p_md1_vs_sp": "headline.MD1_vs_SP.p",
             "p_br_vs_rlhf": "headline.BR_vs_RLHF.p", "p_rlhf_vs_sft": "headline.RLHF_vs_SFT.p",
             "claims_agree": "scorecard_exact.agrees", "claims_disagree": "scorecard_exact.disagrees",
             "exact_margin_min": "exact_judge_training.normalized_margin_min"},
}
HEADLINES["rm"] = HEADLINES["pm"]


def headline_kind(stage: str) -> str:
    """``policy_exact_MD1`` → ``policy``; ``pm`` → ``pm``."""
    return "policy" if stage.startswith("policy") else stage


def summarize(stage: str, metrics: dict) -> dict:
    """The stage's headline numbers found in ``metrics`` (dotted paths of :data:`HEADLINES`); a number missing from a
    smaller run (e.g. no exact-judge tables) is left out, and non-finite ones too (JSON has no NaN)."""
    out = {}
    for name, path in HEADLINES.get(headline_kind(stage), {}).items():
        node = metrics
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool) or (isinstance(node, (int, float)) and math.isfinite(node)):
            out[name] = node if isinstance(node, (bool, int)) else round(float(node), 4)
    return out
