"""Exact judges for the policy-gradient loop: the method without the judge's errors (the exact-judge ablation).

The paper's setting trains Nash-MD-PG against a learned preference model and RLHF against a learned Bradley–Terry
reward model, so a trained policy mixes what the algorithm converges to with what the judge gets wrong. On the
synthetic task both judges have exact counterparts, with the trained models' judge protocols
(:mod:`nlhf.judges`, token ids in):

* P*(y ≻ y′ | x), the task's exact judge, for the Nash methods: :func:`nlhf.judges.exact_pairwise_judge`.
* :class:`ExactBTReward` — r*(x, y), the Bradley–Terry fit of P* that a perfect reward model would learn: on each
  prompt's candidate pool (:func:`nlhf.oracle.build_pools`) the scores r_j of the μ̂-weighted fit
  (:func:`nlhf.games.bradley_terry.fit_bradley_terry`, the oracle's RLHF reward), and for any response y the score
  that fits its comparisons against the pool, the root of

      Σ_j μ̂_j [P*(y ≻ c_j) − σ(r − r_j)] = 0,

  the stationarity condition of the same likelihood in y's own score (for y in the pool it gives back r_y, up to the
  fit's ridge). It is unique (the sum decreases in r) and is bracketed to [min r_j − 20, max r_j + 20].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from nlhf.games import bradley_terry
from nlhf.config import check
from nlhf.judges import TextRewardJudge
from nlhf.tasks.synthetic_raters import preference_from_utilities


@dataclass
class AblationConfig:
    """The exact-judge ablation and the seed replicates (params.yaml ``ablation``)."""

    methods: list[str] = field(default_factory=lambda: ["RLHF", "SP", "MD1", "MD4", "BR", "EMA1"])  # retrained
    # against the exact judges (module docstring); each trains on the first ``train_prompts`` training prompts,
    # every one of which gets a candidate pool of ``pool_sft_samples`` SFT samples for the RLHF reward r*
    train_prompts: int = 2000
    pool_sft_samples: int = 16
    seed_methods: dict[str, str] = field(default_factory=lambda: {"RLHF": "rm", "SP": "pm", "MD1": "pm", "BR": "pm"})
    # retrained with the paper's judges at seed pg.seed + 1 (the spread of the headline comparisons over training
    # seeds), each with the trained model it trains against (its method's ``judged_by``: DVC depends on that one)
    lr: float | None = None  # the exact-judge stages' learning rate (None: pg.lr). An exact judge has no errors
    # for a faster policy to exploit, so its best rate can be higher than the trained judges' (benchmarks/pg_recipe/)
    steps: int | None = None  # the exact-judge stages' step count (None: pg.steps); more steps let a policy reach
    # a target further from μ, where a trained judge would only be exploited longer

    def __post_init__(self):
        for f in ("train_prompts", "pool_sft_samples"):
            check(getattr(self, f) >= 1, f, f"must be >= 1 (got {getattr(self, f)})")
        check(self.lr is None or self.lr > 0, "lr", f"must be > 0 or null (got {self.lr})")
        check(self.steps is None or self.steps >= 1, "steps", f"must be >= 1 or null (got {self.steps})")
        for name, judge in self.seed_methods.items():
            check(judge in ("pm", "rm"), f"seed_methods.{name}",
                  f"the trained model {name} trains against: pm or rm (got {judge!r})")


class ExactBTReward(TextRewardJudge):
    """r*(x, y), the Bradley–Terry fit of P* extended to any response (module docstring), behind the reward
    model's ``rewards_from_ids`` (a :class:`nlhf.judges.TextRewardJudge`). ``pools``: the candidate pools of the
    training prompts."""

    kind = "exact_bt_reward"

    def __init__(self, task, tokenizer, pools: Sequence):
        super().__init__(self.rewards, tokenizer)
        self.task = task
        self.fits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for pool in pools:
            u = task.utilities([pool.prompt] * len(pool.candidates), pool.candidates)
            P = preference_from_utilities(u[:, None, :], u[None, :, :], task.cfg.rater_weights,
                                          task.cfg.rater_sharpness)
            mu = np.exp(pool.log_mu)
            self.fits[pool.prompt] = (u, mu, bradley_terry.fit_bradley_terry(P, np.outer(mu, mu)))

    def reward(self, prompt: str, y: str) -> float:
        if prompt not in self.fits:
            raise KeyError(f"ExactBTReward: no candidate pool for prompt {prompt!r}")
        u, mu, r = self.fits[prompt]
        p = preference_from_utilities(self.task.utilities([prompt], [y]), u, self.task.cfg.rater_weights,
                                      self.task.cfg.rater_sharpness)

        def excess(s: float) -> float:
            return float(mu @ (p - expit(s - r)))

        lo, hi = r.min() - 20.0, r.max() + 20.0
        if excess(lo) <= 0:
            return float(lo)
        if excess(hi) >= 0:
            return float(hi)
        return float(brentq(excess, lo, hi, xtol=1e-10))

    def rewards(self, prompts: list[str], ys: list[str]) -> list[float]:
        return [self.reward(x, y) for x, y in zip(prompts, ys)]
