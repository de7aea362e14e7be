"""The pipeline's named random streams.

Every sampling or labelling step draws from its own seed: a base seed (the run's ``seed``, or a section's own, e.g.
``eval.seed``) plus the stream's fixed offset here (plus an index for one stream per policy), so adding a step never
shifts the draws of another and two steps never share a stream by accident.
"""

from __future__ import annotations

OFFSETS: dict[str, int] = {
    # stage sft (base: seed): its checks, and the held-out comparisons of SFT samples
    "sft.samples": 11, "sft.init_samples": 12, "sft.nontransitivity_samples": 13,
    "heldout_pairs.y": 21, "heldout_pairs.y_prime": 22, "heldout_pairs.labels": 23,
    # stage sft (base: preference_data.seed): the rater-labelled comparisons of SFT samples
    "sft_pairs.y": 1, "sft_pairs.y_prime": 2,
    # policy stages (base: seed)
    "policy.average_reference_samples": 32, "policy.average_samples": 33, "policy.probe": 41,
    "policy.exact_bt_pool_samples": 43,
    # stage eval (base: eval.seed; + the policy's index in the table)
    "eval.samples": 1000, "eval.exploitability_samples": 2000, "eval.exact_judge_training_samples": 3000,
    "eval.second_seed_samples": 4000,
    # a sweep run's evaluation (base: eval.seed; + the policy's index): nlhf.pipeline.sweep.evaluate_run
    "sweep.samples": 5000,
    # stage oracle (base: oracle.seed)
    "oracle.pool_samples": 1, "oracle.coverage_samples": 2,
    # python -m nlhf export-synthetic --sft-comparisons (base: preference_data.seed): the held-out judge's
    # comparisons of SFT samples, drawn like the sft stage's (its prompts, samples and labels) from this seed
    "export.judge_pairs": 100,
    # python -m nlhf export-policy-comparisons (base: --seed): the prompts, writers and labels, and from the next
    # seeds one sample stream per writer and side (nlhf.tasks.tldr_export.policy_comparisons)
    "export.policy_pairs": 200,
}


def seed_for(base: int, stream: str, index: int = 0) -> int:
    """The seed of ``stream`` (a key of :data:`OFFSETS`): ``base + OFFSETS[stream] + index``."""
    if stream not in OFFSETS:
        raise KeyError(f"unknown random stream {stream!r}; known: {', '.join(OFFSETS)}")
    return base + OFFSETS[stream] + index
