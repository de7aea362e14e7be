"""Convergence probe: where a policy stands during training, measured with the exact judge on fixed prompts (or, on a
task without one, with the evaluation's judge: :class:`JudgeProbe`).

Every ``eval_every`` steps the probe samples ``samples`` responses per prompt from π_t on the oracle's evaluation
prompts (``artifacts/oracle``, :func:`nlhf.oracle.write_targets`) and reports, with P* the task's exact judge:

* ``p_vs_sft``     P*(π_t ≻ SFT) = E_{y~π_t} mean_j P*(y ≻ s_j) over the stored SFT samples s_j of each prompt,
  with the normal 95% CI over prompts (``p_vs_sft_ci``);
* ``p_vs_target``  P*(π_t ≻ π_target) = E_{y~π_t} Σ_c π_target(c) P*(y ≻ c), with π_target the method's oracle
  policy on the prompt's candidate pool (the fixed point it should converge to, :mod:`nlhf.oracle`);
* ``kl``           KL(π_t ‖ μ) = E_{y~π_t} Σ_n log π_t(y_n|·) − log μ(y_n|·), on the same samples;
* ``words``        mean response length in words; ``in_pool`` the fraction of samples inside the candidate pool.

The probe draws from its own generator, seeded per step, so training's random streams (and a resumed run) are
untouched. Converged (:func:`converged`) means that over the last 25% of training P*(π_t ≻ SFT) moves by less than
its own 95% CI and has not fallen from its peak.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nlhf.evaluate import z_value
from nlhf.sampling.decode import generate
from nlhf.sampling.logprobs import response_logprobs


class ConvergenceProbe:
    """Callable ``probe(model, step) -> dict`` (module docstring)."""

    def __init__(self, task, tokenizer, ref, prompts: Sequence[str], sft_references: Sequence[Sequence[str]],
                 candidates: Sequence[Sequence[str]], target: Sequence[np.ndarray], *, samples: int,
                 max_new_tokens: int, seed: int = 0, confidence: float = 0.95, batch_size: int = 1024):
        if not (len(prompts) == len(sft_references) == len(candidates) == len(target)):
            raise ValueError("ConvergenceProbe: prompts, references, candidates and target differ in length")
        self.task, self.tok, self.ref = task, tokenizer, ref
        self.prompts = list(prompts)
        self.samples, self.max_new_tokens, self.seed = samples, max_new_tokens, seed
        self.z = z_value(confidence)
        self.batch_size = batch_size
        self.pools = [set(c) for c in candidates]
        # utilities of the references and candidates are fixed: compute them once
        self.u_ref = [task.utilities([x] * len(r), list(r)) for x, r in zip(prompts, sft_references)]
        self.u_cand = [task.utilities([x] * len(c), list(c)) for x, c in zip(prompts, candidates)]
        self.target = [np.asarray(t, dtype=np.float64) for t in target]

    @classmethod
    def from_oracle(cls, pools_file, target_file, task, tokenizer, ref, *, samples: int, max_new_tokens: int,
                    seed: int = 0, confidence: float = 0.95) -> "ConvergenceProbe":
        """The probe for one method, from the oracle stage's pools and that method's target
        (:func:`nlhf.oracle.write_targets`)."""
        pools = json.loads(Path(pools_file).read_text())
        target = json.loads(Path(target_file).read_text())
        return cls(task, tokenizer, ref, pools["prompts"], pools["sft_references"], pools["candidates"], target,
                   samples=samples, max_new_tokens=max_new_tokens, seed=seed, confidence=confidence)

    def _preference(self, u: np.ndarray, u_other: np.ndarray) -> np.ndarray:
        from nlhf.tasks.synthetic_raters import preference_from_utilities

        return preference_from_utilities(u[:, None, :], u_other[None, :, :], self.task.cfg.rater_weights,
                                         self.task.cfg.rater_sharpness)

    @torch.no_grad()
    def draw(self, model, step: int) -> tuple[list[str], list[str], np.ndarray]:
        """``samples`` responses per prompt from ``model`` (prompt-major), from the probe's own generator seeded by
        ``step``: (the prompt of each response, the responses, KL(π ‖ μ) of each)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + step)
        k = self.samples
        flat = [x for x in self.prompts for _ in range(k)]
        texts, kl = [], []
        for i in range(0, len(flat), self.batch_size):
            enc = self.tok(flat[i: i + self.batch_size], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(device)
            g = generate(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=self.max_new_tokens,
                         eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id, generator=gen,
                         logprobs=True)
            ref_lp = response_logprobs(self.ref, g.sequences, g.attention_mask, g.prompt_len)
            kl.append(((g.policy_logprobs - ref_lp) * g.response_mask).sum(-1).cpu().numpy())
            eos = self.tok.eos_token_id
            for row, m in zip(g.response.tolist(), g.response_mask.tolist()):
                texts.append(self.tok.decode([t for t, b in zip(row, m) if b and t != eos], skip_special_tokens=True))
        if was_training:
            model.train()
        return flat, texts, np.concatenate(kl)

    def __call__(self, model, step: int) -> dict:
        flat, texts, kl = self.draw(model, step)
        k = self.samples
        u = self.task.utilities(flat, texts)
        p_sft, p_tgt, in_pool = [], [], []
        for j, x in enumerate(self.prompts):
            uj = u[j * k: (j + 1) * k]
            p_sft.append(self._preference(uj, self.u_ref[j]).mean())
            p_tgt.append((self._preference(uj, self.u_cand[j]) @ self.target[j]).mean())
            in_pool.append(np.mean([y in self.pools[j] for y in texts[j * k: (j + 1) * k]]))
        p_sft, p_tgt = np.array(p_sft), np.array(p_tgt)
        return {"step": step, "p_vs_sft": float(p_sft.mean()), "p_vs_sft_ci": self.half_width(p_sft),
                "p_vs_target": float(p_tgt.mean()), "p_vs_target_ci": self.half_width(p_tgt), "kl": float(kl.mean()),
                "words": float(np.mean([len(t.split()) for t in texts])), "in_pool": float(np.mean(in_pool))}

    def half_width(self, per_prompt: np.ndarray) -> float:
        """The normal CI half-width of a mean over prompts."""
        v = per_prompt
        return float(self.z * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


class JudgeProbe(ConvergenceProbe):
    """The probe on a task without an exact judge: the same draws, scored by a pairwise ``judge(prompts, ys,
    y_primes) -> P(y ≻ y′ | x)`` (the evaluation's judge) instead of P*: ``p_vs_sft`` = E_{y~π_t} mean_j P(y ≻ s_j)
    with its CI over prompts, ``kl`` and ``words``; no target, no pool (``p_vs_target`` and ``in_pool`` are None).

    ``reference``: a second pairwise judge of the same pairs, where one is known (the exact judge of a synthetic
    task exported in the task's schema, :class:`nlhf.tasks.tldr_export.ExportedJudge`): its win rate against SFT,
    ``p_vs_sft_reference`` with its CI, shows along training where the probe's judge stops agreeing with it."""

    def __init__(self, judge, tokenizer, ref, prompts: Sequence[str], sft_references: Sequence[Sequence[str]], *,
                 samples: int, max_new_tokens: int, seed: int = 0, confidence: float = 0.95, batch_size: int = 1024,
                 reference=None):
        if len(prompts) != len(sft_references):
            raise ValueError("JudgeProbe: prompts and references differ in length")
        self.judge, self.reference, self.tok, self.ref = judge, reference, tokenizer, ref
        self.prompts, self.references = list(prompts), [list(r) for r in sft_references]
        self.samples, self.max_new_tokens, self.seed = samples, max_new_tokens, seed
        self.z = z_value(confidence)
        self.batch_size = batch_size

    @classmethod
    def from_prompts_file(cls, pools_file, judge, tokenizer, ref, **kwargs) -> "JudgeProbe":
        """The probe on the oracle stage's prompts and SFT samples (:func:`nlhf.oracle.write_probe_prompts`)."""
        pools = json.loads(Path(pools_file).read_text())
        return cls(judge, tokenizer, ref, pools["prompts"], pools["sft_references"], **kwargs)

    def __call__(self, model, step: int) -> dict:
        flat, texts, kl = self.draw(model, step)
        k = self.samples
        xs, ys, refs = [], [], []
        for j, x in enumerate(self.prompts):
            for y in texts[j * k: (j + 1) * k]:
                for s in self.references[j]:
                    xs.append(x), ys.append(y), refs.append(s)
        p_sft = self._vs_sft(self.judge, xs, ys, refs)
        row = {"step": step, "p_vs_sft": float(p_sft.mean()), "p_vs_sft_ci": self.half_width(p_sft),
               "p_vs_target": None, "p_vs_target_ci": None, "kl": float(kl.mean()),
               "words": float(np.mean([len(t.split()) for t in texts])), "in_pool": None}
        if self.reference is not None:
            p_ref = self._vs_sft(self.reference, xs, ys, refs)
            row.update(p_vs_sft_reference=float(p_ref.mean()), p_vs_sft_reference_ci=self.half_width(p_ref))
        return row

    def _vs_sft(self, judge, xs, ys, refs) -> np.ndarray:
        """Per prompt, the mean of ``judge``'s P(y ≻ s_j) over its samples y and SFT samples s_j."""
        return np.asarray(judge(xs, ys, refs), dtype=np.float64).reshape(len(self.prompts), -1).mean(axis=1)


def converged(curve: Sequence[dict], steps: int, key: str = "p_vs_sft", window: float = 0.25) -> dict:
    """Did ``key`` settle over the last ``window`` of training, at its best? The least-squares line through the probe
    points with step ≥ (1 − window)·steps predicts a change Δ over the window; converged when |Δ| is below the mean
    95% CI half-width of those points (the change is smaller than what one evaluation can resolve) *and* the curve
    has not fallen from its peak: a curve that rose, then fell and flattened (a policy over-optimising its judge:
    its win rate against SFT falls while it keeps moving away from μ) has settled, but not at what it was trained
    for. The peak is the best mean of as many consecutive points as the window holds, the end the window's mean; it
    fell when ``drop_from_peak`` exceeds the 95% CI of that difference. (The largest single point of a flat, noisy
    curve exceeds its last point by about one CI on its own, so a rule on single points would call about half of the
    flat curves fallen; on windows, about one in ten, as the slope rule does: the rule is a screen, not a calibrated
    test, since the peak window is chosen after the fact and the probe's CI, over prompts, overstates the noise of
    a difference between two steps on the same prompts.)"""
    pts = [r for r in curve if r["step"] >= (1 - window) * steps]
    if len(pts) < 3:
        return {"converged": None, "change_last_quarter": None, "ci95": None, "points": len(pts),
                "drop_from_peak": None, "drop_ci95": None, "peak_step": None, "peak_mean": None}
    x = np.array([r["step"] for r in pts], float)
    y = np.array([r[key] for r in pts], float)
    slope = np.polyfit(x, y, 1)[0]
    change = float(slope * window * steps)
    ci = float(np.mean([r[f"{key}_ci"] for r in pts]))
    values = np.array([r[key] for r in curve], float)
    cis = np.array([r[f"{key}_ci"] for r in curve], float)
    k = len(pts)
    means = np.convolve(values, np.ones(k) / k, mode="valid")
    peak = int(np.argmax(means))
    drop = float(means[peak] - y.mean())
    drop_ci = float(np.sqrt(np.mean(cis[peak: peak + k] ** 2) / k + np.mean(cis[-k:] ** 2) / k))
    settled, at_peak = abs(change) < ci, drop <= drop_ci
    middle = curve[peak + k // 2]["step"]  # the peak window's middle step
    return {"converged": bool(settled and at_peak), "change_last_quarter": change, "ci95": ci, "points": len(pts),
            "drop_from_peak": drop, "drop_ci95": drop_ci, "peak_step": middle, "peak_mean": float(means[peak])}
