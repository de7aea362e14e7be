"""Tasks: where prompts, reference summaries and (human) preferences come from.

``make_task(cfg)`` builds the task named by ``cfg.name`` ("synthetic" | "tldr"); ``build_task_data(task, out)``
writes its datasets for the pipeline's data stage and returns the stage's metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nlhf.config import check
from nlhf.tasks.base import Task
from nlhf.tasks.synthetic import SyntheticTask
from nlhf.tasks.synthetic_config import SyntheticTaskConfig
from nlhf.tasks.tldr import TldrTask, TldrTaskConfig

__all__ = ["Task", "TaskConfig", "SyntheticTask", "SyntheticTaskConfig", "TldrTask", "TldrTaskConfig",
           "make_task", "build_task_data"]


@dataclass
class TaskConfig:
    """The ``task`` section of params.yaml: which task, and each task's own settings."""

    name: Literal["synthetic", "tldr"] = "synthetic"  # offline synthetic raters (default) or TL;DR (GPU profile)
    synthetic: SyntheticTaskConfig = field(default_factory=SyntheticTaskConfig)  # used when name == "synthetic"
    tldr: TldrTaskConfig = field(default_factory=TldrTaskConfig)  # used when name == "tldr"
    analysis_prompts: int = 500  # data stage: eval prompts whose style samples are checked for cycles
    analysis_samples: int = 8  # ... summaries drawn per prompt

    def __post_init__(self) -> None:
        check(self.name in ("synthetic", "tldr"), "name", f"must be 'synthetic' or 'tldr', got {self.name!r}")
        check(self.analysis_prompts >= 0, "analysis_prompts", "must be >= 0")
        check(self.analysis_samples >= 3, "analysis_samples", "must be >= 3 (triples)")
        if self.name == "tldr":
            try:
                self.tldr.check_pinned()
            except ValueError as e:
                raise ValueError(f"tldr.{e}") from None


def make_task(cfg: TaskConfig | SyntheticTaskConfig | TldrTaskConfig | dict | None = None) -> Task:
    """Task for a config: a ``TaskConfig`` (selects by ``name``), a task's own config, or a dict of TaskConfig."""
    if cfg is None:
        cfg = TaskConfig()
    if isinstance(cfg, dict):
        from nlhf.config import from_dict

        cfg = from_dict(TaskConfig, cfg, "task")
    if isinstance(cfg, SyntheticTaskConfig):
        return SyntheticTask(cfg)
    if isinstance(cfg, TldrTaskConfig):
        return TldrTask(cfg)
    if isinstance(cfg, TaskConfig):
        return SyntheticTask(cfg.synthetic) if cfg.name == "synthetic" else TldrTask(cfg.tldr)
    raise TypeError(f"make_task: unsupported config {type(cfg).__name__}")


def _mean_words(texts) -> float:
    return float(np.mean([len(t.split()) for t in texts])) if len(texts) else float("nan")


def build_task_data(task: Task, out_dir: str | Path, analysis_prompts: int = 500, analysis_samples: int = 8) -> dict:
    """Write the task's datasets under ``out_dir`` (the data folder, :meth:`nlhf.layout.Layout.data`) and return
    data-stage metrics (plain Python types, so that ``json.dumps`` writes them without a converter).

    Its content (``Dataset.save_to_disk``, named by :class:`~nlhf.layout.Layout`): ``sft/{train,eval}`` (prompt,
    completion), ``prefs/{train,test}`` (prompt, y, y_prime, label, p), ``prompts/{train,eval}`` (prompt,
    reference) (``Layout.DATASETS``); plus ``tokenizer/`` for word-level tasks (``task.vocabulary()`` is not None)
    and ``metrics.json`` (the row counts, which the stages check their inputs against).
    """
    import datasets

    from nlhf.layout import Layout
    from nlhf.tasks import analysis

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m: dict = {"task": task.name}
    for kind, split in Layout.DATASETS:
        if kind == "sft":
            ds = task.sft_dataset(split)
            m[f"sft_{split}_rows"] = len(ds)
            m[f"sft_{split}_mean_words"] = _mean_words(ds["completion"])
        elif kind == "prefs":
            ds = task.preference_dataset(split)
            m[f"prefs_{split}_rows"] = len(ds)
            m[f"prefs_{split}_label_mean"] = float(np.mean(ds["label"])) if len(ds) else float("nan")
            p = np.asarray(ds["p"], dtype=np.float64)
            if len(p) and not np.isnan(p).any():
                m[f"prefs_{split}_bayes_accuracy"] = float(np.mean(np.maximum(p, 1 - p)))  # best possible PM accuracy
                m[f"prefs_{split}_label_logloss_floor"] = float(np.mean(
                    -(p * np.log(np.clip(p, 1e-12, 1)) + (1 - p) * np.log(np.clip(1 - p, 1e-12, 1)))))
        else:
            prompts = task.prompts(split)
            ds = datasets.Dataset.from_dict({"prompt": prompts, "reference": task.references(prompts)})
            m[f"prompts_{split}_rows"] = len(ds)
        ds.save_to_disk(str(out / kind / split))
    vocab = task.vocabulary()
    if vocab is not None:
        from nlhf.tokenization import build_word_tokenizer

        tok = build_word_tokenizer(vocab, out / Layout.TOKENIZER)
        m["vocab_size"] = len(tok)
    if isinstance(task, SyntheticTask):
        rows = task.sft_rows("train")
        styles, counts = np.unique(rows["style"], return_counts=True)
        m["sft_style_mix"] = {str(s): float(c / len(rows["style"])) for s, c in zip(styles, counts)}
        x, a, b, c = task.condorcet_example()
        pm = analysis.preference_matrices(task.judge, [x], [[a, b, c]])[0]
        m["condorcet_example_is_cycle"] = bool(analysis.is_cycle(pm, 0, 1, 2))
        if analysis_prompts:
            prompts = task.prompts("eval")[:analysis_prompts]
            mats = analysis.preference_matrices(task.judge, prompts, task.style_samples(prompts, analysis_samples))
            m.update({f"style_{k}": v for k, v in analysis.cycle_fraction(mats).items()})
            m.update({f"style_{k}": v for k, v in analysis.bt_fit_agreement(mats).items()})
            m.update({f"style_{k}": v for k, v in analysis.nash_support(mats).items()})
    # no timings here: metrics.json is part of the DVC-hashed data artifact, which must not change between reruns
    (out / Layout.DATA_COUNTS).write_text(json.dumps(m, indent=2, sort_keys=True))
    return m
