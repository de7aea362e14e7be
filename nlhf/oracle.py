"""The task's oracle: what each method converges to with a perfect judge, on an enumerable candidate pool.

For every evaluation prompt x the synthetic task enumerates a *candidate pool* Y(x): every summary its grammar
makes likely (``SyntheticTask.candidates``) plus the distinct summaries the SFT policy samples. On the pool the
exact judge gives a preference matrix P_x, and the SFT policy gives μ̂(·|x), its exact sequence probabilities
renormalised on the pool. Each method's target (:meth:`nlhf.training.methods.Method.oracle_targets`) is then a
small tabular problem, solved with the solvers of :mod:`nlhf.games` (the same code as the tabular half):

* NE: a maximin strategy of P_x − ½ (the unregularised Nash equilibrium, §1).
* SP (β = 0): π*_τ, the unique fixed point π = softmax(log μ̂ + Pπ/τ) of the τ-regularised game (Prop. 1).
  Nash-EMA-PG has the same fixed point: when θ stops moving, its EMA θ̄ equals θ, so the opponent is π itself;
  so does online IPO, whose expected gradient is a multiple of self-play's (:class:`nlhf.training.methods.OnlineIPO`).
* MD_β (Nash-MD-PG, §7): the fixed point π_β = argmax_π P(π ≻ π^β) − τ KL(π‖μ̂) with the opponent
  π^β ∝ π^{1−β} μ̂^β. Writing π = softmax(log μ̂ + P m/τ) with m = π^β gives
  m ∝ μ̂^β μ̂^{1−β} exp((1−β) P m/τ), i.e. m = π*_{τ/(1−β)}: so

      π_β = BR_τ(π*_{τ/(1−β)}),   BR_τ(q) = softmax(log μ̂ + P q/τ),

  the regularised best response to the Nash equilibrium of the game regularised more strongly, by τ/(1−β).
  β = 0 gives π*_τ; β = 1 (BR) gives BR_τ(μ̂), the regularised best response to SFT.
* RLHF: π ∝ μ̂ exp(r/τ_RLHF) with r the Bradley–Terry fit of P on pairs drawn from μ̂ (weights μ̂_i μ̂_j, the
  comparisons a reward model is trained on), and with r the trained reward model's scores ("RLHF (RM)").

Token-level mixture. The sampler draws the opponent token by token from softmax((1−β) logits_π + β logits_μ)
(App. F.1); the product of these per-prefix factors is not the sequence-level π^{1−β}μ̂^β/Z, because each prefix
has its own normaliser. :func:`token_level_mixture` builds both on the pool's prefix tree (the conditionals of π
and μ̂ restricted to the pool) so their total-variation distance can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import logsumexp, softmax

from nlhf.games import bradley_terry, nash
from nlhf.config import check
from nlhf.evaluate import z_value
from nlhf.training.methods import NashMD


@dataclass
class OracleConfig:
    """Sizes of the oracle (params.yaml ``oracle``)."""

    n_prompts: int = 256  # evaluation prompts, one candidate pool each (also the policies' convergence probe)
    sft_samples: int = 32  # SFT samples per prompt whose distinct summaries join the pool
    coverage_samples: int = 16  # fresh SFT samples per prompt: the fraction inside the pool is reported
    populations: list[str] | None = None  # rater populations to solve (None: the task's own); RLHF (RM): the task's
    seed: int = 0  # sampling seed

    def __post_init__(self):
        for f in ("n_prompts", "sft_samples", "coverage_samples"):
            check(getattr(self, f) >= 1, f, f"must be >= 1 (got {getattr(self, f)})")


@dataclass
class Pool:
    """One prompt's candidate pool: summaries, their token ids (EOS included) and μ̂ on the pool."""

    prompt: str
    candidates: list[str]
    token_ids: list[tuple[int, ...]]
    log_mu: np.ndarray  # log μ̂ renormalised on the pool
    sft_mass: float  # Σ_{y in pool} μ(y|x) before renormalising


@torch.no_grad()
def sequence_logprobs(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], temperature: float = 1.0,
                      batch_size: int = 1024) -> np.ndarray:
    """log π(y|x) = Σ_n log softmax(logits/T)[y_n] over the response tokens and the closing EOS (float64)."""
    from nlhf.training.sft import sft_batch, tokenize_sft

    examples = tokenize_sft(tokenizer, list(prompts), list(responses))
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(examples), batch_size):
        b = sft_batch(examples[i: i + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        logp = torch.log_softmax(logits[:, :-1].double() / temperature, -1)
        labels = b["labels"][:, 1:].to(device)
        tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
        out.append(tok.sum(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def build_pools(task, model, tokenizer, prompts: Sequence[str], sft_samples: Sequence[Sequence[str]],
                temperature: float = 1.0) -> list[Pool]:
    """Pools of grammar candidates plus the given SFT samples (malformed samples are dropped), with μ̂."""
    cands = []
    for x, samples in zip(prompts, sft_samples):
        extra = {y for y in samples if task.is_well_formed(x, y)}
        cands.append(sorted(set(task.candidates(x)) | extra))
    flat_x = [x for x, c in zip(prompts, cands) for _ in c]
    flat_y = [y for c in cands for y in c]
    logp = sequence_logprobs(model, tokenizer, flat_x, flat_y, temperature)
    ids = tokenizer(flat_y, add_special_tokens=False)["input_ids"]
    pools, k = [], 0
    for x, c in zip(prompts, cands):
        lp = logp[k: k + len(c)]
        toks = [tuple(t) + (tokenizer.eos_token_id,) for t in ids[k: k + len(c)]]
        mass = logsumexp(lp)
        pools.append(Pool(x, c, toks, lp - mass, float(np.exp(mass))))
        k += len(c)
    return pools


def save_pool_set(path, pools: Sequence[Pool], in_pool_samples, fresh_samples) -> None:
    """Pools (candidates, token ids, μ̂ at full precision, SFT mass) and the SFT samples that built them, as JSON."""
    import json

    from nlhf.training.checkpoint import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({
        "pools": [{"prompt": p.prompt, "candidates": p.candidates, "token_ids": [list(t) for t in p.token_ids],
                   "log_mu": p.log_mu.tolist(), "sft_mass": p.sft_mass} for p in pools],
        "in_pool_samples": [list(s) for s in in_pool_samples], "fresh_samples": [list(s) for s in fresh_samples]}))


def load_pool_set(path) -> tuple[list[Pool], list[list[str]], list[list[str]]]:
    """What :func:`save_pool_set` wrote: (pools, in-pool SFT samples, fresh SFT samples); float64 round-trips
    exactly through JSON, so the targets solved on them are the same bits."""
    import json

    d = json.loads(Path(path).read_text())
    pools = [Pool(p["prompt"], p["candidates"], [tuple(t) for t in p["token_ids"]], np.array(p["log_mu"]),
                  p["sft_mass"]) for p in d["pools"]]
    return pools, d["in_pool_samples"], d["fresh_samples"]


def regularized_mixture_target(P: np.ndarray, mu: np.ndarray, tau: float, beta: float) -> np.ndarray:
    """The Nash-MD-PG fixed point π_β = BR_τ(π*_{τ/(1−β)}) (module docstring); β = 1 gives BR_τ(μ)."""
    opponent = mu if beta >= 1.0 else nash.regularized_nash(P, mu, tau / (1.0 - beta))
    return nash.best_response_tau(P, opponent, mu, tau)


def rlhf_target(log_mu: np.ndarray, reward: np.ndarray, tau: float) -> np.ndarray:
    """KL-regularised reward maximiser π ∝ μ exp(r/τ)."""
    return softmax(log_mu + np.asarray(reward, float) / tau)


class PoolGame:
    """One prompt's exact game: P on the pool, μ̂, and the solutions the methods' targets are built from (cached:
    several methods share π*_τ and the Bradley–Terry fit). ``rm_scores``: the trained reward model's scores of
    the candidates, or None."""

    def __init__(self, P: np.ndarray, log_mu: np.ndarray, rm_scores: np.ndarray | None = None):
        self.P, self.log_mu, self.rm_scores = P, log_mu, rm_scores
        self.mu = np.exp(log_mu)
        self._bt: np.ndarray | None = None
        self._self_play: dict[float, np.ndarray] = {}

    @property
    def bt_reward(self) -> np.ndarray:
        """The Bradley–Terry fit of P on pairs weighted μ̂_i μ̂_j (what a reward model learns from SFT pairs)."""
        if self._bt is None:
            self._bt = bradley_terry.fit_bradley_terry(self.P, np.outer(self.mu, self.mu))
        return self._bt

    def self_play(self, tau: float) -> np.ndarray:
        """π*_τ, the τ-regularised Nash equilibrium (Prop. 1)."""
        if tau not in self._self_play:
            self._self_play[tau] = nash.regularized_nash(self.P, self.mu, tau)
        return self._self_play[tau]

    def mixture_fixed_point(self, tau: float, beta: float) -> np.ndarray:
        """Nash-MD-PG's π_β (:func:`regularized_mixture_target`)."""
        return regularized_mixture_target(self.P, self.mu, tau, beta)

    def reward_maximiser(self, reward: np.ndarray, tau: float) -> np.ndarray:
        """π ∝ μ̂ exp(r/τ) (:func:`rlhf_target`)."""
        return rlhf_target(self.log_mu, reward, tau)


def method_targets(P: np.ndarray, log_mu: np.ndarray, methods: dict, rm_scores: np.ndarray | None = None
                   ) -> dict[str, np.ndarray]:
    """name → the oracle policy on one pool: SFT, NE, then each configured method's targets
    (:meth:`nlhf.training.methods.Method.oracle_targets`, e.g. RLHF and RLHF (RM))."""
    game = PoolGame(P, log_mu, rm_scores)
    out = {"SFT": game.mu, "NE": nash.nash_equilibrium(P)}
    for name, m in methods.items():
        out.update(m.oracle_targets(name, game))
    return out


def token_level_mixture(token_ids: Sequence[tuple[int, ...]], pi: np.ndarray, mu: np.ndarray, beta: float
                        ) -> np.ndarray:
    """The distribution the per-token mixture softmax((1−β) log π(·|h) + β log μ(·|h)) puts on each sequence,
    with π(·|h), μ(·|h) the next-token conditionals of ``pi``/``mu`` on the pool's prefix tree."""
    mass_pi: dict[tuple[int, ...], float] = {}
    mass_mu: dict[tuple[int, ...], float] = {}
    children: dict[tuple[int, ...], set[int]] = {}
    for seq, p, m in zip(token_ids, pi, mu):
        for n in range(len(seq) + 1):
            h = seq[:n]
            mass_pi[h] = mass_pi.get(h, 0.0) + p
            mass_mu[h] = mass_mu.get(h, 0.0) + m
            if n < len(seq):
                children.setdefault(h, set()).add(seq[n])
    out = np.ones(len(token_ids))
    for i, seq in enumerate(token_ids):
        for n, t in enumerate(seq):
            h = seq[:n]

            def weight(c):
                return (mass_pi[h + (c,)] / mass_pi[h]) ** (1 - beta) * (mass_mu[h + (c,)] / mass_mu[h]) ** beta

            out[i] *= weight(t) / sum(weight(c) for c in children[h])
    return out / out.sum()


def sequence_level_mixture(pi: np.ndarray, mu: np.ndarray, beta: float) -> np.ndarray:
    """π^{1−β} μ^β / Z on the pool."""
    return softmax((1 - beta) * np.log(pi) + beta * np.log(mu))


def table_long(per_prompt: list[dict[str, np.ndarray]], Ps: Sequence[np.ndarray], order: Sequence[str],
               confidence: float = 0.95) -> pd.DataFrame:
    """Long table of P(column ≻ row) = mean over prompts of colᵀ P_x row, with the normal CI over prompts."""
    z = z_value(confidence)
    rows = []
    for r in order:
        for c in order:
            v = np.array([t[c] @ P @ t[r] for t, P in zip(per_prompt, Ps)])
            half = float(z * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 and r != c else 0.0
            rows.append({"row": r, "column": c, "p": 0.5 if r == c else float(v.mean()), "ci": half, "n": len(v)})
    return pd.DataFrame(rows)


def exploitability_per_policy(per_prompt: list[dict[str, np.ndarray]], Ps: Sequence[np.ndarray],
                              order: Sequence[str]) -> dict[str, float]:
    """Mean over prompts of max_y P(y ≻ π) − ½ on the pool (:func:`nlhf.games.nash.exploitability`)."""
    return {name: float(np.mean([nash.exploitability(P, t[name]) for t, P in zip(per_prompt, Ps)]))
            for name in order}


def support_stats(per_prompt: list[dict[str, np.ndarray]], Ps: Sequence[np.ndarray], log_mus, tol: float = 1e-6
                  ) -> dict[str, float]:
    """How often the Bradley–Terry optimum (μ̂-weighted fit) lies outside the NE's support, and the support size."""
    outside, size = [], []
    for t, P, lm in zip(per_prompt, Ps, log_mus):
        mu = np.exp(lm)
        r = bradley_terry.fit_bradley_terry(P, np.outer(mu, mu))
        outside.append(t["NE"][int(np.argmax(r))] <= tol)
        size.append(int((t["NE"] > tol).sum()))
    return {"bt_optimum_outside_nash_support": float(np.mean(outside)), "nash_support_size": float(np.mean(size))}


def pool_matrices(task, pools: Sequence[Pool]) -> list[np.ndarray]:
    """The exact judge's P_x on every pool (the task's rater population)."""
    from nlhf.tasks.synthetic_raters import preference_from_utilities

    out = []
    for pool in pools:
        u = task.utilities([pool.prompt] * len(pool.candidates), pool.candidates)
        out.append(preference_from_utilities(u[:, None, :], u[None, :, :], task.cfg.rater_weights,
                                             task.cfg.rater_sharpness))
    return out


def sample_cycles(Ps: Sequence[np.ndarray], pools: Sequence[Pool], samples: Sequence[Sequence[str]]) -> dict:
    """Non-transitivity among SFT samples: cycle fraction of triples and the Bradley–Terry fit's direction agreement
    (:mod:`nlhf.tasks.analysis`), on the distinct well-formed samples of each prompt."""
    from nlhf.tasks.analysis import bt_fit_agreement, cycle_fraction

    mats = []
    for P, pool, ys in zip(Ps, pools, samples):
        index = {y: i for i, y in enumerate(pool.candidates)}
        idx = sorted({index[y] for y in ys if y in index})
        if len(idx) >= 3:
            mats.append(P[np.ix_(idx, idx)])
    bt = bt_fit_agreement(mats)
    return {**cycle_fraction(mats), "bt_direction_agreement": bt["bt_agreement"], "p_direction_agreement": 1.0}


def mixture_gap(per_prompt: list[dict[str, np.ndarray]], pools: Sequence[Pool], methods: dict) -> pd.DataFrame:
    """Total-variation distance between the token-level and the sequence-level mixture π^{1−β}μ̂^β of each Nash-MD
    method's target π_β, averaged over prompts."""
    rows = []
    for name, m in methods.items():
        if not isinstance(m, NashMD) or m.beta in (0.0, 1.0):
            continue
        tv = []
        for t, pool in zip(per_prompt, pools):
            mu = np.exp(pool.log_mu)
            seq = sequence_level_mixture(t[name], mu, m.beta)
            tok = token_level_mixture(pool.token_ids, t[name], mu, m.beta)
            tv.append(0.5 * np.abs(seq - tok).sum())
        rows.append({"method": name, "beta": m.beta, "tv_mean": float(np.mean(tv)), "tv_max": float(np.max(tv))})
    return pd.DataFrame(rows)


def write_targets(pools_file, target_file, pools: Sequence[Pool], per_prompt: list[dict[str, np.ndarray]],
                  sft_references: Sequence[Sequence[str]]) -> None:
    """Save what a training run measures itself against: ``pools_file`` (prompts, candidates, log μ̂ and fresh SFT
    samples per prompt) and one file per oracle policy, ``target_file(name)`` (so that a change to one method's
    params leaves the other files, and the runs that read them, unchanged)."""
    import json
    from pathlib import Path

    Path(pools_file).parent.mkdir(parents=True, exist_ok=True)
    Path(pools_file).write_text(json.dumps({
        "prompts": [p.prompt for p in pools], "candidates": [p.candidates for p in pools],
        "log_mu": [p.log_mu.round(10).tolist() for p in pools], "sft_references": [list(s) for s in sft_references]}))
    for name in per_prompt[0]:
        path = Path(target_file(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([t[name].round(10).tolist() for t in per_prompt]))


def write_probe_prompts(pools_file, target_file, prompts: Sequence[str], sft_references: Sequence[Sequence[str]],
                        methods: Sequence[str], reason: str) -> None:
    """On a task without an exact judge: ``pools_file`` in :func:`write_targets`' format with the probe's prompts
    and SFT samples but no candidates, and for each method a ``target_file(name)`` holding no target, with
    ``reason``."""
    import json
    from pathlib import Path

    Path(pools_file).parent.mkdir(parents=True, exist_ok=True)
    Path(pools_file).write_text(json.dumps({"prompts": list(prompts), "candidates": [[] for _ in prompts],
                                            "log_mu": [[] for _ in prompts],
                                            "sft_references": [list(s) for s in sft_references]}))
    for name in methods:
        path = Path(target_file(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"target": None, "reason": reason}))
