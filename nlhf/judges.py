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
  :class:`TextRewardJudge` (``fn(prompts, ys) -> rewards``): a metric, a human-labelled lookup;
* a causal LM asked which of two responses is better, both orders averaged: :class:`LLMJudge`;
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


DEFAULT_LLM_JUDGE_PROMPT = (
    "Which of the two summaries of the text below is better? Answer with A or B.\n\n"
    "Text: {prompt}\n\nSummary A: {a}\n\nSummary B: {b}\n\nThe better summary is")
"""The question :class:`LLMJudge` asks by default; ``{prompt}``, ``{a}``, ``{b}`` are filled in."""


class LLMJudge:
    """P(y ≻ y′ | x) from a causal language model asked which of two responses is better.

    The model reads ``template`` filled with the prompt and the two responses and is scored on its next token: with
    ℓ_A, ℓ_B the log-probabilities of the two answers' first tokens, p(A first) = σ(ℓ_A − ℓ_B). A judge model tends
    to favour one position, so each pair is asked in both orders and

        P(y ≻ y′ | x) = ½ [p(y wins, y shown as A) + p(y wins, y shown as B)],

    which is antisymmetric by construction (P(y ≻ y′) + P(y′ ≻ y) = 1 and P(y ≻ y) = ½) whatever the model's
    position bias. Use it with the trainer through :meth:`pairwise_judge`; ``preference`` alone scores texts (the
    evaluation's judge). ``model`` and ``tokenizer`` are any causal LM and its tokenizer (a local instruct model);
    the tokenizer is set to pad on the left (with EOS as its pad token where it has none).
    """

    def __init__(self, model, tokenizer, template: str = DEFAULT_LLM_JUDGE_PROMPT, answers: tuple[str, str] = (" A", " B"),
                 batch_size: int = 16):
        for field in ("{prompt}", "{a}", "{b}"):
            if field not in template:
                raise ValueError(f"template: must contain {field} (got {template!r})")
        ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        if any(not i for i in ids) or ids[0][0] == ids[1][0]:
            raise ValueError(f"answers: {answers!r} must start with two different tokens of the judge's tokenizer")
        self.answer_ids = (ids[0][0], ids[1][0])
        self.model, self.tokenizer, self.template, self.batch_size = model.eval(), tokenizer, template, batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

    @torch.no_grad()
    def first_wins(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> Tensor:
        """p(the response shown as A is better), [B]: σ(ℓ_A − ℓ_B) at the end of the filled template."""
        from nlhf.sampling.transformers_compat import position_ids_from_mask

        texts = [self.template.format(prompt=x, a=a, b=b) for x, a, b in zip(prompts, firsts, seconds)]
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i: i + self.batch_size], return_tensors="pt", padding=True).to(device)
            logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                position_ids=position_ids_from_mask(enc["attention_mask"])).logits[:, -1].float()
            out.append(torch.sigmoid(logits[:, self.answer_ids[0]] - logits[:, self.answer_ids[1]]).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def preference(self, prompts: Sequence[str], ys: Sequence[str], y_primes: Sequence[str]) -> Tensor:
        """P(y ≻ y′ | x) per row, both orders averaged (class docstring)."""
        return 0.5 * (self.first_wins(prompts, ys, y_primes) + 1.0 - self.first_wins(prompts, y_primes, ys))

    def pairwise_judge(self, policy_tokenizer) -> TextPairwiseJudge:
        """This judge behind the pairwise protocol, for a trainer whose policy uses ``policy_tokenizer``."""
        return TextPairwiseJudge(lambda x, y, yp: self.preference(x, y, yp).double(), policy_tokenizer)
