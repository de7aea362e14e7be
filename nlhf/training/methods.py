"""The policy-optimisation methods as objects (the paper's §7, App. F; online IPO for comparison).

A method is its params.yaml entry (``methods.<NAME>``, a dataclass chosen by ``kind``) plus what makes it that
method: which judge it reads, how it draws the opponent y′, its loss, its extra outputs and the policy it converges
to on an exact game (its oracle target). :func:`nlhf.training.policy_gradient.train_policy` keeps the loop, the
resume and the logging; adding a method is one class here, one entry in :data:`METHODS` and one in params.yaml.

===========  ==========  ===============================================  ===============================================
kind         judge       opponent y′ (no gradient)                         loss (per prompt, averaged over the batch)
===========  ==========  ===============================================  ===============================================
rlhf         reward      none                                              REINFORCE on r(x, y) − mean_batch r
nash_md      preference  token-level mixture softmax((1−β)·l_θ + β·l_μ)   REINFORCE on P(y ≻ y′ | x) − ½
nash_ema     preference  π_θ̄, θ̄ = exponential moving average of θ         REINFORCE on P(y ≻ y′ | x) − ½
online_ipo   preference  a second sample of π_θ                             (h_θ(y, y′) − (P(y ≻ y′ | x) − ½)/τ)²
===========  ==========  ===============================================  ===============================================

The REINFORCE methods add the per-token KL penalty −τ·Σ_{m≥n} log(π_θ/μ)(y_m) in reward-to-go form
(:func:`nlhf.training.reinforce.pg_loss`). Online IPO's h_θ(y, y′) = log(π_θ(y)/μ(y)) − log(π_θ(y′)/μ(y′))
carries the regularisation itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from nlhf.config import ConfigError, check
from nlhf.judges import JUDGE_KINDS
from nlhf.training.reinforce import effective_ema_beta, ema_update, pg_loss


@dataclass
class Rollout:
    """One step's samples. ``sequences``/``prompt_mask``/``response_mask``: the rows the loss differentiates
    (prompt + response; B rows, or 2B for a pairwise loss); ``response``/``opponent`` (+ masks): the B responses y
    and their opponents y′ the judge compares (``opponent`` is None for a reward judge)."""

    sequences: torch.Tensor
    prompt_mask: torch.Tensor
    response_mask: torch.Tensor
    response: torch.Tensor
    response_y_mask: torch.Tensor
    opponent: torch.Tensor | None = None
    opponent_mask: torch.Tensor | None = None


@dataclass
class Judged:
    """The judge's verdict on a rollout: the per-prompt signal [B] the loss uses, the logged mean signal (the mean
    reward for RLHF), and the mean P(y ≻ y′) (None without an opponent). The two means stay 0-d tensors: they are
    read on log steps only, so the other steps make no device-to-host copy for them."""

    signal: torch.Tensor
    logged_signal: torch.Tensor | float
    p_vs_opponent: torch.Tensor | float | None = None


Sampler = Callable[..., object]  # sample(model, ids, prompt_mask, **mixture) -> nlhf.sampling.decode.Generation


@dataclass(kw_only=True)
class Method:
    """Fields shared by every method. Subclasses set ``KIND`` (the params ``kind``) and ``JUDGE``."""

    KIND: ClassVar[str] = ""
    JUDGE: ClassVar[str] = "preference"  # "preference": the pairwise model P; "reward": the Bradley–Terry r

    kind: str  # selects the class (:data:`METHODS`)
    tau: float  # KL-regularisation strength toward μ (paper: 0.05 RLHF, 0.008 Nash)
    lr: float | None = None  # per-method learning rate (None: pg.lr)
    judged_by: str | None = None  # the trained model that plays its judge (JUDGE_KINDS[JUDGE]: "pm" or "rm"); a
    # pipeline names it so that the method's stage can depend on that model alone (DVC cannot derive it from kind)

    def __post_init__(self):
        check(self.kind == self.KIND, "kind", f"{type(self).__name__} has kind {self.KIND!r}, got {self.kind!r}")
        expected = self.judge_model
        check(self.judged_by in (None, expected), "judged_by",
              f"a {self.kind} method trains against the {self.JUDGE} judge, played by {expected!r} (got "
              f"{self.judged_by!r})")
        check(self.tau > 0, "tau", f"must be > 0 (got {self.tau})")
        check(self.lr is None or self.lr > 0, "lr", f"must be > 0 (got {self.lr})")

    @property
    def judge_model(self) -> str:
        """The trained model that plays this method's judge: ``"pm"`` or ``"rm"`` (:data:`JUDGE_KINDS` of ``JUDGE``);
        the one place a method's judge kind becomes a model."""
        return JUDGE_KINDS[self.JUDGE]

    @classmethod
    def config_class(cls, data: dict, join: Callable[[str], str]) -> type:
        """The dataclass a params entry describes, chosen by its ``kind`` (used by :func:`nlhf.config.from_dict`)."""
        kind = data.get("kind")
        if kind is None:
            raise ConfigError(f"{join('kind')}: required key missing; one of {', '.join(METHODS)}")
        if kind not in METHODS:
            raise ConfigError(f"{join('kind')}: unknown method kind {kind!r}; expected one of {', '.join(METHODS)}")
        return METHODS[kind]

    # -- extra outputs -------------------------------------------------------------------------------------
    has_average: ClassVar[bool] = False  # also saves an averaged-parameter policy (the table's ``<NAME>*``)

    def start_average(self, policy: torch.nn.Module, steps: int, reference_steps: int):
        """``(average model, decay)`` for methods with an averaged policy, else ``(None, None)``."""
        return None, None

    def update_average(self, average: torch.nn.Module, policy: torch.nn.Module, decay: float) -> None:
        """After each optimiser step: θ̄ ← decay·θ̄ + (1 − decay)·θ."""
        ema_update(average, policy, decay)

    # -- one step ------------------------------------------------------------------------------------------
    def rollout(self, sample: Sampler, policy, ref, average, ids: torch.Tensor, prompt_mask: torch.Tensor) -> Rollout:
        raise NotImplementedError

    def judge(self, judge_model, ids: torch.Tensor, prompt_mask: torch.Tensor, roll: Rollout, group: int = 1
              ) -> Judged:
        """The signal of each response; rows come in groups of ``group`` responses to the same prompt."""
        raise NotImplementedError

    def loss(self, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, judged: Judged) -> torch.Tensor:
        """REINFORCE with the reward-to-go KL penalty (:func:`nlhf.training.reinforce.pg_loss`)."""
        return pg_loss(logp, ref_logp, mask, judged.signal.to(logp.device), self.tau)

    # -- what it converges to --------------------------------------------------------------------------------
    def oracle_targets(self, name: str, game) -> dict[str, np.ndarray]:
        """name → the policy this method converges to on one exact game (``game``: :class:`nlhf.oracle.PoolGame`)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the reader: what the opponent is and what the signal is."""
        raise NotImplementedError


def _single(sample: Sampler, policy, ids, prompt_mask) -> Rollout:
    out = sample(policy, ids, prompt_mask)
    return Rollout(out.sequences, prompt_mask, out.response_mask, out.response, out.response_mask)


def _preference(judge_model, ids, prompt_mask, roll: Rollout) -> torch.Tensor:
    """P(y ≻ y′ | x) per row from the judge's logits on token ids: each response against its own opponent."""
    return torch.sigmoid(judge_model.logits_from_ids(ids, prompt_mask, roll.response, roll.response_y_mask,
                                                     roll.opponent, roll.opponent_mask).float())


def group_preference(judge_model, ids, prompt_mask, roll: Rollout, group: int) -> torch.Tensor:
    """[R, k] P(y_i ≻ y′_j | x): each of the R = B·k responses against every opponent drawn for its prompt (rows
    come in groups of k = ``group``); k = 1 is :func:`_preference`."""
    if group == 1:
        return _preference(judge_model, ids, prompt_mask, roll)[:, None]
    R = ids.shape[0]
    rows = torch.arange(R, device=ids.device).repeat_interleave(group)
    cols = (rows // group) * group + torch.arange(group, device=ids.device).repeat(R)
    logits = judge_model.logits_from_ids(ids[rows], prompt_mask[rows], roll.response[rows],
                                         roll.response_y_mask[rows], roll.opponent[cols], roll.opponent_mask[cols])
    return torch.sigmoid(logits.float()).view(R, group)


class _PreferenceSignal:
    """The Nash methods' signal (1/k) Σ_j P(y ≻ y′_j | x) − ½ over the k opponents drawn for the prompt: its
    expectation over independent y′_j is P(y ≻ π′) − ½ whatever k, so averaging lowers the variance and adds no
    bias (½ = P(y ≻ y) is a baseline)."""

    def judge(self, judge_model, ids, prompt_mask, roll: Rollout, group: int = 1) -> Judged:
        p = group_preference(judge_model, ids, prompt_mask, roll, group)
        signal = p.mean(-1) - 0.5
        return Judged(signal, signal.mean(), p.mean())


@dataclass(kw_only=True)
class RLHF(Method):
    """KL-regularised reward maximisation against the Bradley–Terry reward model (§2). Its target on an exact game
    is π ∝ μ exp(r/τ) with r the Bradley–Terry fit of P (and, as ``<NAME> (RM)``, with the trained model's r)."""

    KIND: ClassVar[str] = "rlhf"
    JUDGE: ClassVar[str] = "reward"

    def rollout(self, sample, policy, ref, average, ids, prompt_mask):
        return _single(sample, policy, ids, prompt_mask)

    def judge(self, judge_model, ids, prompt_mask, roll, group=1):
        """r(x, y) minus a baseline: the batch mean (k = 1) or, with k responses per prompt, the mean of the other
        k − 1 (leave-one-out: independent of y, so unbiased, and it removes the prompt's own reward level)."""
        r = judge_model.rewards_from_ids(ids, prompt_mask, roll.response, roll.response_y_mask).float()
        if group == 1:
            return Judged(r - r.mean(), r.mean())
        g = r.view(-1, group)
        baseline = (g.sum(-1, keepdim=True) - g) / (group - 1)
        return Judged((g - baseline).reshape(-1), r.mean())

    def oracle_targets(self, name, game):
        out = {name: game.reward_maximiser(game.bt_reward, self.tau)}
        if game.rm_scores is not None:
            out[f"{name} (RM)"] = game.reward_maximiser(game.rm_scores, self.tau)
        return out

    def describe(self):
        return "RLHF: REINFORCE on the Bradley–Terry reward r(x, y) minus the batch mean"


@dataclass(kw_only=True)
class NashMD(_PreferenceSignal, Method):
    """Nash-MD-PG (§7): the opponent is drawn from the token-level mixture of π_θ and μ with weight β on μ
    (β = 0: self-play SP; β = 1: best response to SFT, BR). Target: π_β = BR_τ(π*_{τ/(1−β)}) (:mod:`nlhf.oracle`)."""

    KIND: ClassVar[str] = "nash_md"
    beta: float  # weight of μ in the opponent's token-level mixture

    def __post_init__(self):
        super().__post_init__()
        check(0.0 <= self.beta <= 1.0, "beta", f"must be in [0, 1] (got {self.beta})")

    def rollout(self, sample, policy, ref, average, ids, prompt_mask):
        # one sampler call: rows 0..B-1 draw y ~ π_θ (β = 0), rows B..2B-1 draw y′ ~ mixture(π_θ, μ; β)
        B = ids.shape[0]
        betas = torch.cat([torch.zeros(B), torch.full((B,), self.beta)]).to(ids.device)
        both = sample(policy, ids.repeat(2, 1), prompt_mask.repeat(2, 1), ref=ref, beta=betas)
        return Rollout(both.sequences[:B], prompt_mask, both.response_mask[:B], both.response[:B],
                       both.response_mask[:B], both.response[B:], both.response_mask[B:])

    def oracle_targets(self, name, game):
        return {name: game.self_play(self.tau) if self.beta == 0.0 else game.mixture_fixed_point(self.tau, self.beta)}

    def describe(self):
        return (f"Nash-MD-PG with β = {self.beta:g}: the opponent y′ is drawn from the token-level mixture "
                f"softmax((1−β)·log π_θ + β·log μ)")


@dataclass(kw_only=True)
class NashEMA(_PreferenceSignal, Method):
    """Nash-EMA-PG (§7): the opponent is π_θ̄, θ̄ the exponential moving average θ̄_t = β θ̄_{t−1} + (1−β) θ_t
    (θ̄_0 = θ_0 = SFT; the paper's printed update averages no iterates). The paper's β (0.999, 0.9995) is quoted
    for 10,000 steps; a run of T steps uses β_T = 1 − (1−β)·10,000/T, the same horizon as a fraction of the run.
    Saves π_θ̄ as ``<NAME>*``. Target: the self-play fixed point π*_τ (when θ stops moving, θ̄ = θ)."""

    KIND: ClassVar[str] = "nash_ema"
    has_average: ClassVar[bool] = True
    ema_beta: float  # EMA coefficient at the paper's scale of 10,000 steps (pg.ema_reference_steps)

    def __post_init__(self):
        super().__post_init__()
        check(0.0 <= self.ema_beta <= 1.0, "ema_beta", f"must be in [0, 1] (got {self.ema_beta})")

    def start_average(self, policy, steps, reference_steps):
        return (copy.deepcopy(policy).eval().requires_grad_(False),
                effective_ema_beta(self.ema_beta, steps, reference_steps))

    def rollout(self, sample, policy, ref, average, ids, prompt_mask):
        roll = _single(sample, policy, ids, prompt_mask)
        opp = sample(average, ids, prompt_mask)
        roll.opponent, roll.opponent_mask = opp.response, opp.response_mask
        return roll

    def oracle_targets(self, name, game):
        return {name: game.self_play(self.tau)}

    def describe(self):
        return (f"Nash-EMA-PG: the opponent y′ is drawn from π with exponentially averaged parameters "
                f"(coefficient {self.ema_beta:g})")


@dataclass(kw_only=True)
class OnlineIPO(_PreferenceSignal, Method):
    """Online IPO (Calandriello et al., 2024): y and y′ both drawn from π_θ (no gradient through the sampling), and
    the square loss (h_θ(y, y′) − (P(y ≻ y′ | x) − ½)/τ)², h_θ = log(π_θ(y)/μ(y)) − log(π_θ(y′)/μ(y′)).

    Its expected gradient is −(4/τ) times the self-play gradient ∇_θ[P(π_θ ≻ π′) − τ KL(π_θ‖μ)] at π′ = π_θ
    (tested by enumeration), so its fixed point is SP's, π*_τ; the estimator differs (a sequence-level log-ratio
    on both responses instead of REINFORCE with a per-token KL on one)."""

    KIND: ClassVar[str] = "online_ipo"

    def rollout(self, sample, policy, ref, average, ids, prompt_mask):
        # one sampler call: rows 0..B-1 are y, rows B..2B-1 are y′; the loss differentiates all 2B rows
        B = ids.shape[0]
        both = sample(policy, ids.repeat(2, 1), prompt_mask.repeat(2, 1))
        return Rollout(both.sequences, prompt_mask.repeat(2, 1), both.response_mask, both.response[:B],
                       both.response_mask[:B], both.response[B:], both.response_mask[B:])

    def judge(self, judge_model, ids, prompt_mask, roll, group=1):
        """P(y ≻ y′) − ½ of each pair (y, y′) the loss is on (a group only adds pairs of the same prompt)."""
        return super().judge(judge_model, ids, prompt_mask, roll, 1)

    def loss(self, logp, ref_logp, mask, judged):
        log_ratio = ((logp - ref_logp) * mask).sum(-1)
        B = log_ratio.shape[0] // 2
        h = log_ratio[:B] - log_ratio[B:]
        return ((h - judged.signal.to(h.device) / self.tau) ** 2).mean()

    def oracle_targets(self, name, game):
        return {name: game.self_play(self.tau)}

    def describe(self):
        return ("online IPO: y and y′ are two samples of π_θ; square loss of the log-ratio difference h(y, y′) "
                "against (P(y ≻ y′) − ½)/τ")


METHODS: dict[str, type[Method]] = {m.KIND: m for m in (RLHF, NashMD, NashEMA, OnlineIPO)}
"""params ``kind`` → method class."""


def average_name(name: str) -> str:
    """The table's name of a method's averaged-parameter policy (``EMA1`` → ``EMA1*``)."""
    return f"{name}*"


def table_policies(methods: dict[str, Method]) -> dict[str, tuple[str | None, str]]:
    """Every policy the configured methods produce, in table order (SFT, last iterates, averaged policies):
    table name → (method name or None for SFT, ``"policy"`` | ``"average"``)."""
    out: dict[str, tuple[str | None, str]] = {"SFT": (None, "policy")}
    out.update({n: (n, "policy") for n in methods})
    out.update({average_name(n): (n, "average") for n, m in methods.items() if m.has_average})
    return out


def policy_targets(methods: dict[str, Method]) -> dict[str, str]:
    """Table name → the oracle policy it should converge to (its own method's target; SFT is SFT)."""
    return {p: "SFT" if n is None else n for p, (n, _) in table_policies(methods).items()}
