"""The two judges on the shared encoder (:mod:`nlhf.models.encoder`): the pairwise preference model and the
Bradley–Terry reward model.

* Preference model (§4, the paper's T5X "rater" that reads x and both summaries): an MLP g reads both responses'
  features h(x,y), h(x,y') and

      P_θ(y≻y'|x) = σ(f(x,y,y') − f(x,y',y)),   f(x,y,y') = g([h(x,y) ; h(x,y')]),

  so swapping y and y' swaps the two features and negates the logit: P_θ(y≻y'|x) + P_θ(y'≻y|x) = 1 and
  P_θ(y≻y|x) = 1/2 whatever the weights (exactly in the features; a block encoded at the other offset of the row
  differs only by float rounding, ~1e-7, tested to 1e-6). No Bradley–Terry assumption: g sees both responses, so
  P may be intransitive.
* Reward model r(x,y) = MLP(h(x,y)); Bradley–Terry P(y≻y'|x) = σ(r(x,y) − r(x,y')).

Both read one row ``x <sep> y <sep> y' <sep>`` per pair (x encoded once, the two response blocks blind to each
other) and are trained on it through :meth:`~nlhf.models.encoder.Scorer.pair_batch` and ``forward``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlhf.models.encoder import Pieces, Scorer
from nlhf.models.hf import ModelConfig


class PreferenceModel(Scorer):
    """P_θ(y≻y'|x) = σ(f(x,y,y') − f(x,y',y)) with f(x,y,y') = g([h(x,y) ; h(x,y')]) (the paper's §3, §8), so
    P_θ(y≻y'|x) + P_θ(y'≻y|x) = 1 and P_θ(y≻y|x) = 1/2 whatever the weights (exactly in the features h; up to
    float rounding of the block encodings across the two orders). g is an MLP on BOTH
    responses' features, so no Bradley–Terry structure is imposed: P may be intransitive.

    ``logits(prompts, ys, y_primes)``: the antisymmetric logit (strings or id lists; P = its sigmoid);
    ``logits_from_ids(...)``: the same on the sampler's padded tensors; ``forward(**pair_batch(...))``: training.
    """

    kind = "preference_model"
    n_responses = 2

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                block_ids: Tensor) -> Tensor:
        """Antisymmetric logits f(x,y,y') − f(x,y',y), [B], from a two-response batch (:meth:`pair_batch`)."""
        h = self.features(input_ids, attention_mask, position_ids, block_ids)
        a, b = h[:, 0], h[:, 1]
        return (self.head(torch.cat([a, b], -1)) - self.head(torch.cat([b, a], -1))).squeeze(-1)

    def logits(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """logit P_θ(y≻y'|x) for lists of strings (or id lists), [B]."""
        return self(**self.pair_batch(prompts, ys, y_primes))

    def logits_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor,
                        y_prime_ids: Tensor, y_prime_mask: Tensor) -> Tensor:
        """Same as :meth:`logits` on padded tensors (e.g. the sampler's prompt / response / response_mask)."""
        return self(**self.collate(prompt_ids, y_ids, y_prime_ids, prompt_mask=prompt_mask,
                                   response_masks=(y_mask, y_prime_mask)))


class RewardModel(Scorer):
    """Bradley–Terry reward r(x,y) = MLP(h(x,y)) on the same encoder and features as the preference model;
    P(y≻y'|x) = σ(r(x,y) − r(x,y')) (the paper's §2).

    ``rewards(prompts, ys)``: r [B] (strings or id lists); ``rewards_from_ids(...)``: the same on the sampler's
    padded tensors; ``logits(prompts, ys, y_primes)``: r(x,y) − r(x,y') from one pair row;
    ``forward(**collate(...))``: r [B] for one response per row, [B, K] for K.
    """

    kind = "reward_model"
    n_responses = 1

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                block_ids: Tensor) -> Tensor:
        """r(x, y_k) for every response block: [B] for one response per row, else [B, K]."""
        r = self.head(self.features(input_ids, attention_mask, position_ids, block_ids)).squeeze(-1)
        return r[:, 0] if r.shape[1] == 1 else r

    def rewards(self, prompts: Pieces, ys: Pieces) -> Tensor:
        """r(x, y), [B], for lists of strings or id lists (one row x <sep> y <sep> per example)."""
        return self(**self.collate(prompts, ys))

    def rewards_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor) -> Tensor:
        """Same as :meth:`rewards` on padded tensors (e.g. the sampler's prompt / response / response_mask)."""
        return self(**self.collate(prompt_ids, y_ids, prompt_mask=prompt_mask, response_masks=(y_mask,)))

    def logits(self, prompts: Pieces, ys: Pieces, y_primes: Pieces) -> Tensor:
        """r(x,y) − r(x,y'), [B], for lists of strings or id lists (one row per pair)."""
        r = self(**self.pair_batch(prompts, ys, y_primes))
        return r[:, 0] - r[:, 1]


def build_preference_model(cfg: ModelConfig, tokenizer, *, seed: int | None = None,
                           max_length: int | None = None) -> PreferenceModel:
    """A fresh :class:`PreferenceModel` (tiny GPT-2 from config, or a backbone from ``cfg.name_or_path``)."""
    return PreferenceModel.build(cfg, tokenizer, seed=seed, max_length=max_length)


def build_reward_model(cfg: ModelConfig, tokenizer, *, seed: int | None = None,
                       max_length: int | None = None) -> RewardModel:
    """A fresh :class:`RewardModel` (tiny GPT-2 from config, or a backbone from ``cfg.name_or_path``)."""
    return RewardModel.build(cfg, tokenizer, seed=seed, max_length=max_length)
