"""The pipeline's whole configuration: params.yaml (+ profile overlay) → one validated ``PipelineConfig``.

Each section's dataclass lives with the code that uses it; this module only lists the sections
(the DVC example-get-started layout: every stage reads its own section).

params.yaml is the recipe, so a key deleted from it must not fall back to a code default that is not the recipe:
every section is required, and so is every key of :data:`REQUIRED_KEYS` (the keys whose code default differs from
the committed value; ``sft``, ``pm`` and ``rm`` share one dataclass with three recipes). Any other key may be
left out because its default is the committed value (tests/test_config.py checks both against params.yaml).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from nlhf.config import ConfigError, check, from_dict, read_params, read_params_parts
from nlhf.evaluate import EvalConfig
from nlhf.models import ModelConfig, looks_local
from nlhf.oracle import OracleConfig
from nlhf.tabular.experiment import TabularConfig
from nlhf.tasks import TaskConfig
from nlhf.training.exact_judges import AblationConfig
from nlhf.training.methods import Method, table_policies
from nlhf.training.policy_gradient import PGConfig
from nlhf.training.supervised import SupervisedConfig

if TYPE_CHECKING:
    from nlhf.pipeline.layout import Layout

_SUPERVISED_RECIPE = ("steps", "batch_size", "lr", "warmup_steps", "eval_every", "checkpoint_every", "seed")
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "task.synthetic": ("n_sft", "style_probs", "labels_per_pair", "population", "rater_weights", "rater_sharpness"),  # checked when task.name is synthetic
    "policy_model": ("n_positions",),
    "preference_model": ("n_positions", "qk_identity_init"),
    "reward_model": ("n_positions", "qk_identity_init"),
    "heldout_judge.model": ("n_positions", "qk_identity_init"),
    "heldout_judge.fit": _SUPERVISED_RECIPE,
    "sampling": ("batch_size",),
    "sft": _SUPERVISED_RECIPE,
    "pm": _SUPERVISED_RECIPE,
    "rm": _SUPERVISED_RECIPE,
    "pg": ("steps", "batch_size", "lr", "final_lr_fraction"),
    "ablation": ("methods", "seed_methods", "lr", "steps"),  # the lists DVC's foreach reads from params.yaml
    "eval": ("n_prompts", "nontransitivity_prompts"),
    "oracle": ("populations",),
}
"""Keys params.yaml must state (beyond every section): a missing one is a ConfigError, not a code default."""

FOREACH_KEYS = ("methods", "ablation.methods", "ablation.seed_methods")
"""The params dvc.yaml expands its ``foreach`` stages over. DVC reads them from params.yaml alone (a profile overlay
is invisible to it), so a profile may not add to them (tests/test_reliability.py checks this list against
dvc.yaml)."""

STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "tabular": ("tabular",),
    "data": ("task", "policy_model.name_or_path"),
    "sft": ("seed", "runtime", "task", "policy_model", "sampling", "sft", "preference_data", "eval.n_heldout_pairs",
            "eval.nontransitivity_prompts", "eval.nontransitivity_samples"),
    "preference": ("seed", "runtime", "task", "{model}", "preference_data", "eval.n_heldout_pairs", "{item}"),
    "policy": ("seed", "runtime", "task", "sampling", "pg", "eval.confidence", "eval.synthetic_export",
               "methods.{item}"),
    "policy_exact": ("seed", "runtime", "task", "sampling", "pg", "eval.confidence", "eval.synthetic_export", "ablation",
                     "methods.{item}"),
    "policy_seed": ("seed", "runtime", "task", "sampling", "pg", "eval.confidence", "eval.synthetic_export",
                    "methods.{item}"),
    "oracle": ("seed", "runtime", "task", "sampling", "methods", "eval.confidence", "eval.nontransitivity_samples",
               "oracle", "heldout_judge"),
    "eval": ("seed", "runtime", "task", "sampling", "methods", "eval", "ablation"),
}
"""The params each DVC stage kind reads (``{item}``: the stage's foreach item; ``{model}``: the model section of
the preference stage's item, :data:`JUDGE_MODELS`): its ``params`` in dvc.yaml, less ``profile`` (a name; the values
it selects are in the sections) and ``paths`` (where a stage writes, not what it computes). A stage run through its
notebook sees only these (:func:`restrict`: reading anything else stops it, naming the key), so DVC reruns a stage
exactly when something it reads changes. :func:`stage_config` resolves them; a resume fingerprint hashes them
(:func:`nlhf.pipeline.artifacts.stage_fingerprint`), so a state is resumed only under the same values of everything
the stage reads (tests/test_reliability.py checks the lists against dvc.yaml)."""

JUDGE_MODELS = {"pm": "preference_model", "rm": "reward_model"}
"""The trained judges (the ``preference`` stage's items) → their network's params section."""

_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _inside_repo(p: str) -> bool:
    """A relative path below the repository root: not absolute, no ``..``, not the root itself, not git/DVC's own
    folders (stages create, replace and delete folders under these paths)."""
    pp = PurePosixPath(p.replace("\\", "/"))
    if not p.strip() or pp.is_absolute() or PureWindowsPath(p).drive or p.startswith("~"):
        return False
    parts = [x for x in pp.parts if x != "."]
    return bool(parts) and ".." not in parts and parts[0] not in (".git", ".dvc")


@dataclass
class Paths:
    """Where stages write: big artifacts (DVC-cached, git-ignored) and small results (committed). Both are
    relative paths inside the repository (a stage replaces and deletes folders below them)."""

    artifacts: str = "artifacts"  # models and datasets
    results: str = "results"  # tables, figures, metrics, executed notebooks

    def __post_init__(self):
        for f in ("artifacts", "results"):
            v = getattr(self, f)
            check(_inside_repo(v), f, f"must be a relative path inside the repository (no '..', not absolute, "
                                      f"not .git or .dvc), got {v!r}")


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
class SFTConfig(SupervisedConfig):
    """The SFT fit (:class:`~nlhf.training.supervised.SupervisedConfig`) and the size of its checks."""

    check_prompts: int = 1000  # evaluation prompts of the stage's checks (well-formedness, P(SFT ≻ init))

    def __post_init__(self):
        super().__post_init__()
        check(self.check_prompts >= 1, "check_prompts", f"must be >= 1 (got {self.check_prompts})")


@dataclass
class HeldoutJudgeConfig:
    """The held-out judge of a task without an exact judge (TL;DR): a pairwise preference model of its own size and
    seed, which the oracle stage trains on the task's ``judge`` comparisons (disjoint from the training PM's) and
    which judges the evaluation and the policies' convergence probe in place of P*."""

    model: ModelConfig = field(default_factory=ModelConfig)  # its network (a local folder in name_or_path, or a size)
    fit: SupervisedConfig = field(default_factory=lambda: SupervisedConfig(seed=1))  # its fit (own seed)


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

    def resolved(self) -> dict:
        """Where a stage runs and at which precision: ``{"device": "cuda" | "cpu", "mixed_precision": ...}``. On
        the GPU when one is there and ``cpu`` is false; ``mixed_precision`` as set, except fp16, which autocasts on
        CUDA only (on CPU it runs in float32). bf16 on CPU is torch's CPU autocast: what a CPU rehearsal of a GPU
        profile runs (:mod:`nlhf.pipeline.rehearsal`)."""
        import torch

        device = "cpu" if self.cpu or not torch.cuda.is_available() else "cuda"
        fp16_on_cpu = device == "cpu" and self.mixed_precision == "fp16"
        return {"device": device, "mixed_precision": "no" if fp16_on_cpu else self.mixed_precision}


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
    sft: SFTConfig = field(default_factory=SFTConfig)
    preference_data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    pm: SupervisedConfig = field(default_factory=SupervisedConfig)
    rm: SupervisedConfig = field(default_factory=SupervisedConfig)
    pg: PGConfig = field(default_factory=PGConfig)
    methods: dict[str, Method] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    heldout_judge: HeldoutJudgeConfig = field(default_factory=HeldoutJudgeConfig)

    def __post_init__(self):
        for name in self.methods:
            # the name goes into DVC stage names, shell commands and papermill parameters; "SFT" is the
            # evaluation table's name for the SFT policy
            check(isinstance(name, str) and _METHOD_NAME.fullmatch(name) is not None and not keyword.iskeyword(name)
                  and name != "SFT", f"methods.{name}",
                  "method names must be identifiers (letters, digits and _, not starting with a digit; not a "
                  "Python keyword, not SFT)")
        check(self.sampling.temperature == 1.0 or not self.methods, "sampling.temperature",
              f"policy-gradient training needs 1.0 (got {self.sampling.temperature}): its gradient uses the policy's "
              f"temperature-1 log-probabilities, so samples drawn at another temperature would bias it")
        known = table_policies(self.methods)
        unknown = [p for p in self.eval.policies or [] if p not in known]
        check(not unknown, "eval.policies", f"{unknown} are not policies of the configured methods; expected some of "
                                            f"{', '.join(known)}")
        for key in ("methods", "seed_methods"):
            unknown = [m for m in getattr(self.ablation, key) if m not in self.methods]
            check(not unknown, f"ablation.{key}", f"{unknown} are not in methods ({', '.join(self.methods)})")
        check(self.task.name == "synthetic" or self.policy_model.name_or_path is not None, "policy_model.name_or_path",
              f"task {self.task.name!r} takes its tokenizer and policy from a local model folder; set it (python -m "
              f"nlhf local-model builds a small one from a JSON-lines file's texts)")
        check(self.task.name == "synthetic" or not self.ablation.methods, "ablation.methods",
              f"task {self.task.name!r} has no exact judge, which the exact-judge ablation trains against: set "
              f"ablation.methods to [] in params.yaml (one command: dvc exp run -S profile={self.profile} -S "
              f"'ablation.methods=[]'; got {self.ablation.methods})")
        check(self.eval.synthetic_export is None or self.task.name == "tldr", "eval.synthetic_export",
              f"judges a run of task 'tldr' on the exported files; task {self.task.name!r} has its own judge")
        for name, judge in self.ablation.seed_methods.items():
            expected = self.methods[name].judge_model
            check(judge == expected, f"ablation.seed_methods.{name}",
                  f"{name} trains against {expected!r} (its kind is {self.methods[name].kind}), got {judge!r}")
        from nlhf.tasks.synthetic_raters import POPULATIONS

        unknown = [p for p in (self.oracle.populations or []) if p not in POPULATIONS]
        check(not unknown, "oracle.populations", f"unknown populations {unknown}; expected some of {sorted(POPULATIONS)}")
        for key, name in (("policy_model.name_or_path", self.policy_model.name_or_path),
                          ("preference_model.name_or_path", self.preference_model.name_or_path),
                          ("reward_model.name_or_path", self.reward_model.name_or_path),
                          ("heldout_judge.model.name_or_path", self.heldout_judge.model.name_or_path),
                          ("eval.llm_judge", self.eval.llm_judge)):
            check(name is None or looks_local(name), key,
                  f"{name!r} is not a local folder; Hub models are not downloaded by the pipeline (the download "
                  f"would not be pinned to a revision): run `hf download {name} --revision <commit> --local-dir "
                  f"<folder>` and set name_or_path to that folder (starting with ./ or /)")

        for section, recipe in (("sft", self.sft), ("pm", self.pm), ("rm", self.rm),
                                ("heldout_judge.fit", self.heldout_judge.fit)):
            check(recipe.warmup_steps <= recipe.steps, f"{section}.warmup_steps",
                  f"must be <= {section}.steps ({recipe.steps}), got {recipe.warmup_steps}: the learning rate "
                  f"would never reach its peak")
        for name, method in self.methods.items():
            # β = 1 keeps the average at its start (the SFT policy) for the whole run
            beta = getattr(method, "ema_beta", None)
            check(beta is None or 0.0 <= beta < 1.0, f"methods.{name}.ema_beta",
                  f"must be in [0, 1) (got {beta}): 1 freezes the averaged policy at SFT")
        self._check_context()

    def _check_context(self) -> None:
        """The longest prompt plus ``sampling.max_new_tokens`` fits the policy's context (``n_positions``), for a
        policy built from config on a task whose prompt length the params fix (the synthetic task). Otherwise the
        sft stage checks it on the data it loads."""
        if self.policy_model.name_or_path is not None or self.task.name != "synthetic":
            return
        from nlhf.tasks.synthetic_documents import PROMPT_HEAD, PROMPT_TAIL

        # a prompt is "document :", an importance word and a fact word per fact, ". summary :" (one token a word)
        longest = len(PROMPT_HEAD.split()) + 2 * self.task.synthetic.facts_max + len(PROMPT_TAIL.split())
        n = self.policy_model.n_positions
        check(longest + self.sampling.max_new_tokens <= n, "sampling.max_new_tokens",
              f"{self.sampling.max_new_tokens} new tokens after the longest prompt ({longest} tokens: "
              f"task.synthetic.facts_max = {self.task.synthetic.facts_max}) exceed policy_model.n_positions = {n}; "
              f"lower sampling.max_new_tokens to at most {n - longest} or raise policy_model.n_positions")

    @property
    def artifacts(self) -> Path:
        return Path(self.paths.artifacts)

    @property
    def results(self) -> Path:
        return Path(self.paths.results)

    @property
    def table(self) -> list[str]:
        """The policies of the evaluation table: ``eval.policies``, or every policy the configured methods produce
        (SFT, each method's last iterate, then the averaged policies: :func:`nlhf.training.methods.table_policies`)."""
        return list(self.eval.policies or table_policies(self.methods))

    @property
    def layout(self) -> Layout:
        """Every path the stages read and write, below ``paths`` (:class:`nlhf.pipeline.layout.Layout`)."""
        from nlhf.pipeline.layout import Layout

        return Layout(self.paths.artifacts, self.paths.results)

    def method(self, name: str) -> Method:
        """The config of a trained method; an unknown name stops with the list of known ones."""
        if name not in self.methods:
            raise KeyError(f"unknown method {name!r}; params.yaml methods: {', '.join(self.methods)}")
        return self.methods[name]


def stage_keys(stage: str) -> list[str]:
    """The params keys DVC stage ``stage`` (``sft``, ``preference@pm``, ``policy_exact@MD1``) reads
    (:data:`STAGE_PARAMS` with its item filled in)."""
    kind, _, item = stage.partition("@")
    if kind not in STAGE_PARAMS:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_PARAMS)}")
    return [key.format(item=item, model=JUDGE_MODELS.get(item, "")) for key in STAGE_PARAMS[kind]]


def stage_config(cfg: PipelineConfig, stage: str) -> dict:
    """The params DVC stage ``stage`` reads, by key (:func:`stage_keys`): ``{"seed": 0, "pg": PGConfig(...),
    "methods.MD1": NashMD(...), ...}``."""
    out = {}
    for key in stage_keys(stage):
        node = cfg
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        out[key] = node
    return out


class UndeclaredParamError(AttributeError):
    """A stage read a param its dvc.yaml entry does not declare (DVC would not rerun it when that param changes)."""


class _Undeclared:
    """Stands for a params section, or the undeclared part of one, inside a stage's config (:func:`restrict`)."""

    def __init__(self, stage: str, path: str, value=None, allowed: frozenset = frozenset()):
        self._stage, self._path, self._value, self._allowed = stage, path, value, allowed

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._allowed:
            return getattr(self._value, name)
        raise UndeclaredParamError(
            f"stage {self._stage} read {self._path}.{name}, which is not among the params it declares (dvc.yaml; "
            f"nlhf/pipeline/params.py STAGE_PARAMS): DVC would not rerun it when that value changes. Declare it in "
            f"both, or read something the stage declares")


class _DeclaredMethods(dict):
    """The ``methods`` entries a stage declares; asking for another one names it."""

    def __init__(self, stage: str, entries: dict):
        super().__init__(entries)
        self._stage = stage

    def __missing__(self, name):
        raise UndeclaredParamError(f"stage {self._stage} read methods.{name}, which is not among the params it "
                                   f"declares (dvc.yaml; nlhf/pipeline/params.py STAGE_PARAMS)")


def restrict(cfg: PipelineConfig, stage: str) -> PipelineConfig:
    """A copy of ``cfg`` in which DVC stage ``stage`` can read only the params it declares (:func:`stage_keys`),
    plus ``profile`` and ``paths``; reading anything else raises :class:`UndeclaredParamError` naming the key. Every
    stage the notebooks run goes through it, so the pipeline's own run (and the tests' tiny run of the DAG) shows
    that no stage reads a param DVC does not rerun it for."""
    import copy

    keys = stage_keys(stage)
    out = copy.copy(cfg)
    for f in fields(PipelineConfig):
        if f.name in ("profile", "paths") or f.name in keys:
            continue
        subkeys = frozenset(k.split(".", 1)[1] for k in keys if k.startswith(f.name + "."))
        value = getattr(cfg, f.name)
        if f.name == "methods":
            value = _DeclaredMethods(stage, {k: v for k, v in value.items() if k in subkeys})
        else:
            value = _Undeclared(stage, f.name, value, subkeys)
        object.__setattr__(out, f.name, value)
    return out


def check_required(raw: dict, source: str = "") -> None:
    """Every section of :class:`PipelineConfig` and every key of :data:`REQUIRED_KEYS` is in ``raw``; ``source``
    (e.g. " in params.yaml") ends the message."""
    for f in fields(PipelineConfig):
        if raw.get(f.name) is None:
            what = "key" if f.type in ("int", "str", int, str) else "section"
            raise ConfigError(f"{f.name}: required {what} missing{source} (params.yaml states the whole recipe; "
                              f"the code defaults of a section are not the recipe, and a profile only overrides "
                              f"it)")
    task = raw.get("task") if isinstance(raw.get("task"), dict) else {}
    for path, keys in REQUIRED_KEYS.items():
        if path == "task.synthetic" and task.get("name", "synthetic") != "synthetic":
            continue
        node = raw
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else {}
        if node is None:
            raise ConfigError(f"{path}: required section missing{source}")
        if not isinstance(node, dict):
            continue  # from_dict names the wrong type
        for k in keys:
            if k not in node:
                raise ConfigError(f"{path}.{k}: required key missing{source} (its code default is not the "
                                  f"recipe's value)")


def check_foreach(base: dict, overlay: dict, profile: str) -> None:
    """The profile ``overlay`` leaves the items of every ``foreach`` list (:data:`FOREACH_KEYS`) to ``base`` (the
    params file): DVC builds those stages from the params file alone, so an item a profile adds gets no stage and
    one it drops is still trained and never read. A method's fields (``methods.MD1.tau``) may be overridden."""
    for key in FOREACH_KEYS:
        node, here = overlay, base
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            here = here.get(part) if isinstance(here, dict) else None
        if node is None:
            continue
        if isinstance(node, dict) and isinstance(here, dict):
            extra = [k for k in node if k not in here]
            if not extra:
                continue
            what = f"adds {extra}"
        else:
            what = f"sets {node!r}"
        raise ConfigError(f"{key}: profile {profile!r} {what}, but DVC builds one stage per entry of {key} from "
                          f"params.yaml only (dvc.yaml foreach), never from profiles/{profile}.yaml; set the list "
                          f"in params.yaml (or a copy of it for that run), not in the profile")


def load_config(params_file: str | Path = "params.yaml", profile: str | None = None) -> PipelineConfig:
    """Read, overlay the profile, and validate. Errors name the offending key (``params.yaml: sft.lr: ...``).

    Every section and required key must be in the params file itself, not only in the profile's overlay (the
    params file states the recipe); the overlay may not change a list DVC expands stages over."""
    raw = read_params(params_file, profile)
    try:
        base, overlay = read_params_parts(params_file, raw["profile"])
        check_required(base, f" in {Path(params_file).name}")
        check_foreach(base, overlay, raw["profile"])
        check_required(raw)
        cfg = from_dict(PipelineConfig, raw, "")
        for name, method in cfg.methods.items():
            if method.judged_by is None:  # from_dict has checked the value of one that is there
                raise ConfigError(f"methods.{name}.judged_by: required key missing (pm or rm: the trained model it "
                                  f"trains against, which dvc.yaml makes its stages depend on)")
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{Path(params_file).name} (profile {raw['profile']}): {e}") from None
