"""Judge protocols: what the policy-gradient trainer asks of a judge, and adapters that give any judge that shape.

The trainer samples token ids and asks the judge about them in one of two ways (the paper's §2 and §3):

* a **pairwise judge** gives P(y ≻ y′ | x), the preference the Nash methods play against (self-play, Nash-MD at
  any β, Nash-EMA, online IPO). It answers with the logit, logit P(y ≻ y′ | x), so a learned model's raw output
  passes through unchanged;
* a **reward judge** gives r(x, y), the Bradley–Terry reward RLHF maximises.

Both read the sampler's padded tensors (prompts left-padded, responses right-padded, masks marking real tokens),
so a model that works on ids never decodes and re-tokenizes. Three kinds of judge satisfy the protocols:

* the trained models, :class:`nlhf.models.PreferenceModel` and :class:`nlhf.models.RewardModel`;
* any function on texts, through :class:`TextPairwiseJudge` (``fn(prompts, ys, y_primes) -> probabilities``) and
  :class:`TextRewardJudge` (``fn(prompts, ys) -> rewards``): an LLM asked which summary is better, a metric, a
  human-labelled lookup;
* the synthetic task's exact judge P*, :func:`exact_pairwise_judge` (the reward that a perfect Bradley–Terry
  model would learn from P* is :class:`nlhf.training.exact_judges.ExactBTReward`).

A reward judge becomes a pairwise one through :class:`BradleyTerryPairwiseJudge`, σ(r(x, y) − r(x, y′)).

:data:`JUDGE_KINDS` names which judge each method reads and which trained model plays it.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

JUDGE_KINDS: dict[str, str] = {"preference": "pm", "reward": "rm"}
"""A method's judge (``Method.JUDGE``) → the pipeline's trained model that plays it (its stage name)."""


@runtime_checkable
class PairwiseJudge(Protocol):
    """logit P(y ≻ y′ | x) for each row: [B] from prompts [B, P], responses [B, T] and opponents [B, T′] with
    their masks."""

    def logits_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor,
                        y_prime_ids: Tensor, y_prime_mask: Tensor) -> Tensor: ...


@runtime_checkable
class RewardJudge(Protocol):
    """r(x, y) for each row: [B] from prompts [B, P] and responses [B, T] with their masks."""

    def rewards_from_ids(self, prompt_ids: Tensor, prompt_mask: Tensor, y_ids: Tensor, y_mask: Tensor) -> Tensor: ...


def check_judge(judge, kind: str, name: str = "judge") -> None:
    """Raise TypeError unless ``judge`` answers the protocol of ``kind`` (``"preference"`` or ``"reward"``)."""
    if kind not in JUDGE_KINDS:
        raise ValueError(f"{name}: judge kind must be one of {sorted(JUDGE_KINDS)}, got {kind!r}")
    protocol, method = ((PairwiseJudge, "logits_from_ids") if kind == "preference"
                        else (RewardJudge, "rewards_from_ids"))
    if not isinstance(judge, protocol):
        raise TypeError(f"{name}: a {kind} judge must have {method}(...) ({protocol.__name__}); got "
                        f"{type(judge).__name__}. Wrap a function on texts in "
                        f"{'TextPairwiseJudge' if kind == 'preference' else 'TextRewardJudge'}")


def decode_rows(tokenizer, ids: Tensor, mask: Tensor) -> list[str]:
    """The texts of padded rows: the tokens where ``mask`` is 1, special tokens dropped."""
    rows = [[t for t, m in zip(r, k) if m] for r, k in zip(ids.tolist(), mask.tolist())]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


class TextPairwiseJudge(torch.nn.Module):
    """A pairwise judge from a function on texts: ``fn(prompts, ys, y_primes)`` returns P(y ≻ y′ | x) per row (a
    sequence of floats in [0, 1]). The trainer's ids are decoded with ``tokenizer`` (special tokens dropped);
    probabilities are returned as logits, clipped 1e-12 away from 0 and 1."""

    def __init__(self, fn: Callable[[list[str], list[str], list[str]], Sequence[float]], tokenizer):
        super().__init__()
        self.fn, self.tokenizer = fn, tokenizer

    def logits_from_ids(self, prompt_ids, prompt_mask, y_ids, y_mask, y_prime_ids, y_prime_mask) -> Tensor:
        p = self.fn(decode_rows(self.tokenizer, prompt_ids, prompt_mask), decode_rows(self.tokenizer, y_ids, y_mask),
                    decode_rows(self.tokenizer, y_prime_ids, y_prime_mask))
        return torch.logit(torch.as_tensor(p, dtype=torch.float64), eps=1e-12).float().to(y_ids.device)


class TextRewardJudge(torch.nn.Module):
    """A reward judge from a function on texts: ``fn(prompts, ys)`` returns r(x, y) per row."""

    def __init__(self, fn: Callable[[list[str], list[str]], Sequence[float]], tokenizer):
        super().__init__()
        self.fn, self.tokenizer = fn, tokenizer

    def rewards_from_ids(self, prompt_ids, prompt_mask, y_ids, y_mask) -> Tensor:
        r = self.fn(decode_rows(self.tokenizer, prompt_ids, prompt_mask), decode_rows(self.tokenizer, y_ids, y_mask))
        return torch.as_tensor(r, dtype=torch.float32).to(y_ids.device)


def exact_pairwise_judge(task, tokenizer) -> TextPairwiseJudge:
    """P*(y ≻ y′ | x), the exact judge of a task that has one (``task.judge``), as a pairwise judge."""
    if not getattr(task, "has_exact_judge", False):
        raise ValueError(f"task {type(task).__name__} has no exact judge")
    return TextPairwiseJudge(task.judge, tokenizer)


class BradleyTerryPairwiseJudge(torch.nn.Module):
    """A pairwise judge from a reward judge: logit P(y ≻ y′ | x) = r(x, y) − r(x, y′), the Bradley–Terry model
    (§2). It lets the Nash methods train against a reward model; a reward cannot express a non-transitive
    preference, so on such data the Nash equilibrium it implies is the reward's maximiser."""

    def __init__(self, reward_judge):
        super().__init__()
        check_judge(reward_judge, "reward", "reward_judge")
        self.reward_judge = reward_judge

    def logits_from_ids(self, prompt_ids, prompt_mask, y_ids, y_mask, y_prime_ids, y_prime_mask) -> Tensor:
        r = self.reward_judge.rewards_from_ids
        return r(prompt_ids, prompt_mask, y_ids, y_mask) - r(prompt_ids, prompt_mask, y_prime_ids, y_prime_mask)
