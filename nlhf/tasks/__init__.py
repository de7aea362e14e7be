"""Tasks: where prompts, reference summaries and (human) preferences come from.

``make_task(cfg)`` builds the task named by ``cfg.name`` ("synthetic" | "tldr").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nlhf.config import check
from nlhf.tasks.base import Task
from nlhf.tasks.synthetic import SyntheticTask
from nlhf.tasks.synthetic_config import SyntheticTaskConfig
from nlhf.tasks.tldr import TldrTask, TldrTaskConfig

__all__ = ["Task", "TaskConfig", "SyntheticTask", "SyntheticTaskConfig", "TldrTask", "TldrTaskConfig",
           "make_task"]


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
