"""The three networks of NLHF (the paper's §7–8): the policy, the pairwise preference model, the BT reward model.

* :mod:`nlhf.models.hf`: :class:`ModelConfig`, the from-config GPT-2 (:func:`gpt2_config`), model folders and
  their load errors, tokenizer wiring and :func:`check_same_tokenizer`.
* :mod:`nlhf.models.policy`: the policy π_θ(y|x), a causal LM; build, save (with its sampling
  :func:`generation_config`), load.
* :mod:`nlhf.models.encoder`: the scorers' shared encoder, one row ``x <sep> y_1 <sep> y_2 <sep>`` per example
  whose response blocks see x and themselves only, giving features h(x, y_i); save/load.
* :mod:`nlhf.models.scorers`: :class:`PreferenceModel` P_θ(y≻y'|x) = σ(g([h(x,y); h(x,y')]) − g([h(x,y');
  h(x,y)])) and :class:`RewardModel` r(x, y) = MLP(h(x,y)).
"""

from nlhf.models.encoder import Pieces, Scorer, qk_identity_init
from nlhf.models.hf import ModelConfig, ModelLoadError, check_same_tokenizer, gpt2_config, looks_local
from nlhf.models.policy import build_policy, generation_config, load_policy, save_policy
from nlhf.models.scorers import PreferenceModel, RewardModel, build_preference_model, build_reward_model

__all__ = [
    "ModelConfig",
    "ModelLoadError",
    "gpt2_config",
    "looks_local",
    "check_same_tokenizer",
    "build_policy",
    "generation_config",
    "load_policy",
    "save_policy",
    "Pieces",
    "Scorer",
    "qk_identity_init",
    "PreferenceModel",
    "RewardModel",
    "build_preference_model",
    "build_reward_model",
]
