"""Human comparisons of SFT samples: the pairs the ``sft`` stage collects once for both scorer stages.

``train``: pairs of SFT samples on RL prompts labelled by the task's raters, added to the task's preference pairs
(like TL;DR's comparisons of SFT outputs). ``heldout``: fresh pairs on evaluation prompts labelled by Bernoulli draws
of the exact judge, on which the PM and the RM are compared against the Bayes limit.
"""

from __future__ import annotations

import json
import shutil

import numpy as np

from nlhf.pipeline.artifacts import DamagedArtifactError, load_counted, rerun_hint, require
from nlhf.pipeline.params import PipelineConfig
from nlhf.pipeline.runtime import sampling_kwargs
from nlhf.sampling.texts import sample_texts
from nlhf.seeds import seed_for
from nlhf.training.checkpoint import write_json


def sample_pairs(cfg: PipelineConfig, task, policy, tok, prompts, base_seed: int, stream: str) -> dict:
    """Two independent SFT samples per prompt (random streams ``<stream>.y`` and ``<stream>.y_prime``) and the
    exact judge's P(y ≻ y′ | x) of each pair; the caller adds the labels."""
    sampling = sampling_kwargs(cfg)
    ys = sample_texts(policy, tok, prompts, seed=seed_for(base_seed, f"{stream}.y"), **sampling)
    yps = sample_texts(policy, tok, prompts, seed=seed_for(base_seed, f"{stream}.y_prime"), **sampling)
    return {"prompt": prompts, "y": ys, "y_prime": yps, "p": task.judge(prompts, ys, yps)}


def heldout_sft_pairs(cfg: PipelineConfig, task, policy, tok) -> dict:
    """Fresh pairs of SFT samples on eval prompts, labelled by Bernoulli draws of the exact judge (same for PM/RM)."""
    n = cfg.eval.n_heldout_pairs
    prompts = (task.prompts("eval") * (1 + n // max(1, len(task.prompts("eval")))))[:n]
    pairs = sample_pairs(cfg, task, policy, tok, prompts, cfg.seed, "heldout_pairs")
    draws = np.random.default_rng(seed_for(cfg.seed, "heldout_pairs.labels")).random(n)
    return {**pairs, "label": (draws < pairs["p"]).astype(np.int64)}


def sft_sample_pairs(cfg: PipelineConfig, task, policy, tok) -> dict:
    """Pairs of SFT samples on RL prompts labelled by the task's raters (``task.draw_labels``): the human
    comparisons of SFT outputs a real data collection would add. Deterministic (same pairs for PM and RM)."""
    train_prompts = task.prompts("train")
    rng = np.random.default_rng(cfg.preference_data.seed)  # draws the prompts, then the labels
    prompts = [train_prompts[i] for i in rng.integers(len(train_prompts), size=cfg.preference_data.sft_pairs)]
    pairs = sample_pairs(cfg, task, policy, tok, prompts, cfg.preference_data.seed, "sft_pairs")
    return {**pairs, "label": task.draw_labels(pairs["p"], rng)}


def write_sft_comparisons(cfg: PipelineConfig, task, policy, tok) -> dict:
    """Comparisons of SFT samples, collected once by the ``sft`` stage and read by both ``pm`` and ``rm``
    (``artifacts/sft_pairs``): ``train`` (:func:`sft_sample_pairs`, added to the task's preference pairs) and
    ``heldout`` (:func:`heldout_sft_pairs`, the PM-vs-RM comparison). Only for a task with an exact judge (the
    synthetic raters); otherwise the folder holds just ``info.json`` with zero counts."""
    import datasets

    out = cfg.layout.sft_pairs()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = {"train": 0, "heldout": 0}
    if task.has_exact_judge:
        parts = {"heldout": heldout_sft_pairs(cfg, task, policy, tok)}
        if cfg.preference_data.sft_pairs > 0:
            parts["train"] = sft_sample_pairs(cfg, task, policy, tok)
        for name, rows in parts.items():
            rows = {k: list(v) if isinstance(v, list) else np.asarray(v).tolist() for k, v in rows.items()}
            datasets.Dataset.from_dict(rows).save_to_disk(str(tmp / name))
            info[name] = len(rows["prompt"])
    write_json(tmp / "info.json", info)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info


def load_sft_comparisons(cfg: PipelineConfig, part: str):
    """The ``train`` or ``heldout`` comparisons written by :func:`write_sft_comparisons` (None if there are none),
    checked against the counts in its ``info.json``."""
    d = require(cfg.layout.sft_pairs(), "sft")
    if not (d / "info.json").is_file():
        raise FileNotFoundError(f"{d} has no info.json (not written by the sft stage of this version; run "
                                f"`dvc repro sft`)")
    info = json.loads((d / "info.json").read_text())
    n = info.get(part)
    if not isinstance(n, int):
        raise DamagedArtifactError(f"{d / 'info.json'} has no count for {part!r}; {rerun_hint(d, 'sft')}")
    if n == 0:
        if (d / part).exists():
            raise DamagedArtifactError(f"{d / part} exists but {d / 'info.json'} records no {part} comparisons; "
                                       f"{rerun_hint(d, 'sft')}")
        return None
    if not (d / part).is_dir():
        raise DamagedArtifactError(f"{d / part} is missing but {d / 'info.json'} records {n} {part} comparisons; "
                                   f"{rerun_hint(d, 'sft')}")
    return load_counted(d / part, n, "sft", d / "info.json")
