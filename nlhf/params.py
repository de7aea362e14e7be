"""The pipeline's whole configuration: params.yaml (+ profile overlay) → one validated ``PipelineConfig``.

Each section's dataclass lives with the code that uses it; this module only lists the sections
(the DVC example-get-started layout: every stage reads its own section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nlhf.config import ConfigError, check, from_dict, read_params
from nlhf.evaluate import EvalConfig
from nlhf.models import ModelConfig
from nlhf.tabular_experiment import TabularConfig
from nlhf.tasks import TaskConfig
from nlhf.training.policy_gradient import MethodConfig, PGConfig
from nlhf.training.supervised import SupervisedConfig

PAPER_METHODS = ("RLHF", "SP", "MD1", "MD2", "MD3", "MD4", "MD5", "MD6", "BR", "EMA1", "EMA2")


@dataclass
class Paths:
    """Where stages write: big artifacts (DVC-cached, git-ignored) and small results (committed)."""

    artifacts: str = "artifacts"  # models and datasets
    results: str = "results"  # tables, figures, metrics, executed notebooks


@dataclass
class SamplingConfig:
    """Response sampling for SFT checks, policy training and evaluation."""

    max_new_tokens: int = 12  # response length cap (tokens, EOS included)
    temperature: float = 1.0  # divides the (mixed) logits
    batch_size: int = 256  # prompts per sampler call when sampling texts (checks, comparisons, evaluation)

    def __post_init__(self):
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")
        check(self.temperature > 0, "temperature", f"must be > 0 (got {self.temperature})")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1 (got {self.batch_size})")


@dataclass
class PreferenceDataConfig:
    """Extra human-labelled pairs for the PM/RM stages: pairs of SFT samples on RL prompts, labelled by the task's
    raters (like TL;DR's comparisons of SFT outputs). Only for tasks with raters (the synthetic task)."""

    sft_pairs: int = 20_000  # pairs of SFT samples added to the task's preference pairs (0: none)
    seed: int = 0  # sampling and labelling seed

    def __post_init__(self):
        check(self.sft_pairs >= 0, "sft_pairs", f"must be >= 0 (got {self.sft_pairs})")


@dataclass
class RuntimeConfig:
    """Devices and precision (``accelerate``)."""

    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    cpu: bool = True  # force CPU even if a GPU is visible
    torch_threads: int = 0  # 0: torch's default

    def __post_init__(self):
        check(self.mixed_precision in ("no", "bf16", "fp16"), "mixed_precision",
              f"must be one of no, bf16, fp16 (got {self.mixed_precision!r})")
        check(self.torch_threads >= 0, "torch_threads", f"must be >= 0 (got {self.torch_threads})")


@dataclass
class PipelineConfig:
    profile: str = "cpu"
    seed: int = 0
    paths: Paths = field(default_factory=Paths)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    policy_model: ModelConfig = field(default_factory=ModelConfig)
    preference_model: ModelConfig = field(default_factory=ModelConfig)
    reward_model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    sft: SupervisedConfig = field(default_factory=SupervisedConfig)
    preference_data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    pm: SupervisedConfig = field(default_factory=SupervisedConfig)
    rm: SupervisedConfig = field(default_factory=SupervisedConfig)
    pg: PGConfig = field(default_factory=PGConfig)
    methods: dict[str, MethodConfig] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def artifacts(self) -> Path:
        return Path(self.paths.artifacts)

    @property
    def results(self) -> Path:
        return Path(self.paths.results)

    def method(self, name: str) -> MethodConfig:
        """The config of a trained method; an unknown name stops with the list of known ones."""
        if name not in self.methods:
            raise KeyError(f"unknown method {name!r}; params.yaml methods: {', '.join(self.methods)}")
        return self.methods[name]


def load_config(params_file: str | Path = "params.yaml", profile: str | None = None) -> PipelineConfig:
    """Read, overlay the profile, and validate. Errors name the offending key (``params.yaml: sft.lr: ...``)."""
    raw = read_params(params_file, profile)
    try:
        return from_dict(PipelineConfig, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{Path(params_file).name} (profile {raw['profile']}): {e}") from None
