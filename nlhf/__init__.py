"""nlhf: a reproducible replication of Nash Learning from Human Feedback (Munos et al., ICML 2024), and a library
to train Hugging Face causal LMs with Nash-MD and its relatives (docs/library.md).

The library's public objects, imported on first use (``import nlhf`` stays light):

* :class:`PolicyGradientTrainer`, :class:`PolicyGradientConfig`: RLHF, self-play, Nash-MD-PG at any β, Nash-EMA-PG
  and online IPO, picked by ``config.method``; :class:`TrainerCallback`, :class:`DVCLiveCallback` for logging;
  :class:`LoraSpec` (``config.lora``) to train low-rank adapters instead of every weight.
* Judge protocols :class:`PairwiseJudge` (logit P(y ≻ y′ | x)) and :class:`RewardJudge` (r(x, y)); adapters for any
  function on texts (:class:`TextPairwiseJudge`, :class:`TextRewardJudge`); a causal LM as judge (:class:`LLMJudge`);
  a reward as a Bradley–Terry preference (:class:`BradleyTerryPairwiseJudge`); the trained judges
  (:class:`PreferenceModel`, :class:`RewardModel`); a synthetic task's exact judge (:func:`exact_pairwise_judge`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "PolicyGradientTrainer": "nlhf.training.policy_gradient",
    "PolicyGradientConfig": "nlhf.training.policy_gradient",
    "TrainerCallback": "nlhf.training.policy_gradient",
    "DVCLiveCallback": "nlhf.training.policy_gradient",
    "LoraSpec": "nlhf.models.lora",
    "PairwiseJudge": "nlhf.judges",
    "RewardJudge": "nlhf.judges",
    "TextPairwiseJudge": "nlhf.judges",
    "TextRewardJudge": "nlhf.judges",
    "BradleyTerryPairwiseJudge": "nlhf.judges",
    "LLMJudge": "nlhf.judges",
    "exact_pairwise_judge": "nlhf.judges",
    "PreferenceModel": "nlhf.models",
    "RewardModel": "nlhf.models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nlhf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
