"""The checks on what the stages read, and how they write their metrics.

Every path is :class:`nlhf.pipeline.layout.Layout`'s (``cfg.layout``). An upstream artifact that is missing, damaged, or
holds another row count than its stage recorded stops the reader with a message naming the file and the
``dvc repro`` that makes it. Resumable training states are fingerprinted with the params and the content of every
upstream artifact the training reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from nlhf.pipeline.layout import Layout
from nlhf.pipeline.params import PipelineConfig, RuntimeConfig, stage_config
from nlhf.pipeline.summary import summarize
from nlhf.training.checkpoint import content_hash, damaged, write_json


class DamagedArtifactError(RuntimeError):
    """An upstream artifact exists but cannot be read, or disagrees with the counts its stage recorded."""


def rerun_hint(path: Path, stage: str) -> str:
    """How to get back the artifact ``path`` that DVC stage ``stage`` writes (the end of an error message)."""
    return (f"restore it with `dvc checkout {path}` or rerun `dvc repro {stage}` (outside DVC: rerun the "
            f"'{stage}' stage)")


def require(path: Path, stage: str) -> Path:
    """An upstream artifact must exist and be readable (no file cut short: :func:`nlhf.training.checkpoint.damaged`);
    otherwise stop naming it and the DVC stage that writes it."""
    stage = Layout.dvc_stage(stage)
    if not Path(path).exists():
        raise FileNotFoundError(f"missing upstream artifact {path} (written by stage '{stage}'; run "
                                f"`dvc repro {stage}` first)")
    bad = damaged(path)
    if bad is not None:
        raise DamagedArtifactError(f"upstream artifact {bad[0]} is damaged ({bad[1]}); {rerun_hint(path, stage)}")
    return Path(path)


def _plain(obj):
    """``obj`` as JSON-ready values; a dataclass keeps its type's name (two method kinds can share their fields)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__qualname__,
                **{f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def fingerprint(*objs, inputs=()) -> str:
    """A short hash of configs and of the content of the upstream artifacts ``inputs`` (files or folders); a
    resumable checkpoint is reused only if it matches, i.e. only by a run with the same params and inputs."""
    text = json.dumps([_plain(o) for o in objs], sort_keys=True, default=str)
    text += "".join(f"|{Path(p).name}:{content_hash(p)}" for p in inputs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_fingerprint(cfg: PipelineConfig, stage: str) -> str:
    """The resume fingerprint of DVC stage ``stage``: every param it reads (:func:`nlhf.pipeline.params.stage_config`,
    its dvc.yaml ``params``) and the content of every upstream artifact it reads (:meth:`Layout.deps`, its dvc.yaml
    ``deps``), so a state is resumed only by a run that DVC itself would not tell apart."""
    layout = cfg.layout
    kind, _, item = stage.partition("@")
    judged_by = cfg.method(item).judged_by if kind in ("policy", "policy_seed") else None
    inputs = [p for p in layout.deps(stage, judged_by) if p != layout.check_ok]
    if layout.sft_pairs() in inputs:  # before its content enters the hash, the count it holds must be the params'
        check_comparison_counts(cfg)
    return fingerprint(stage, stage_config(cfg, stage), inputs=inputs)


def write_metrics(cfg: PipelineConfig, stage: str, metrics: dict) -> None:
    """The stage's metrics JSON (:meth:`Layout.metrics`) without its ``runtime_s``, which goes to
    :meth:`Layout.timings` (not a DVC output) with the device and precision the stage ran at: metrics files are
    hashed outputs that later stages depend on, and a wall-clock time would make them differ at every rerun. Its
    headline numbers (:mod:`nlhf.pipeline.summary`) go to :meth:`Layout.summary`, the file dvc.yaml declares as the
    stage's metrics."""
    layout = cfg.layout
    write_json(layout.metrics(stage), {k: v for k, v in metrics.items() if k != "runtime_s"})
    write_json(layout.summary(stage), summarize(layout.key(stage), metrics))
    if "runtime_s" in metrics:
        # the device and precision of the stages that declare runtime (data and tabular use neither)
        ran = cfg.runtime.resolved() if isinstance(cfg.runtime, RuntimeConfig) else {}
        write_json(layout.timings(stage), {"runtime_s": metrics["runtime_s"], **ran})


def load_tokenizer(cfg: PipelineConfig):
    from transformers import AutoTokenizer

    path = require(cfg.layout.tokenizer, "data")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise DamagedArtifactError(f"cannot load the tokenizer {path} ({e}); {rerun_hint(path, 'data')}") from e
    tok.padding_side = "left"
    return tok


def load_counted(path: Path, n_expected: int, stage: str, record: Path):
    """``load_from_disk(path)``, which must hold the ``n_expected`` rows its stage recorded in ``record``."""
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_from_disk(str(path))
        n = len(ds)
    except Exception as e:  # FileNotFoundError, ArrowInvalid, json errors from a damaged folder
        raise DamagedArtifactError(f"cannot load {path} ({type(e).__name__}: {e}); {rerun_hint(path, stage)}") \
            from e
    if n != n_expected:
        raise DamagedArtifactError(f"{path} holds {n} rows but {record} records {n_expected}; "
                                   f"{rerun_hint(path, stage)}")
    return ds


# The synthetic task's datasets and the params that size them (the data stage writes exactly that many rows).
DATASET_PARAMS = {("sft", "train"): "n_sft", ("sft", "eval"): "n_sft_eval", ("prefs", "train"): "n_pref_train",
                  ("prefs", "test"): "n_pref_test", ("prompts", "train"): "n_prompts_train",
                  ("prompts", "eval"): "n_prompts_eval"}


def _against_params(path: Path, n: int, key: str, expected: int, stage: str) -> None:
    """A count an upstream stage recorded must be the one its params ask for: a consistent shrink of an artifact
    (rows and record alike) or an artifact built with other params stops the reader, naming the file and the key."""
    if n != expected:
        raise DamagedArtifactError(f"{path} holds {n} rows but params {key} is {expected}: it was built with "
                                   f"other params or changed since; {rerun_hint(path, Layout.dvc_stage(stage))}")


def load_dataset_dir(cfg: PipelineConfig, *parts: str):
    """A dataset of the data stage (e.g. ``"sft", "train"``), checked against the row count in data/metrics.json
    and, for the synthetic task, against the param that sizes it (:data:`DATASET_PARAMS`)."""
    path = require(cfg.layout.data(*parts), "data")
    info = require(cfg.layout.data_counts, "data")
    key = "_".join(parts) + "_rows"
    counts = json.loads(info.read_text())
    if not isinstance(counts.get(key), int):
        raise DamagedArtifactError(f"{info} has no row count {key!r} (not written by this version's data stage); "
                                   f"{rerun_hint(cfg.layout.data(), 'data')}")
    ds = load_counted(path, counts[key], "data", info)
    param = DATASET_PARAMS.get(tuple(parts))
    if cfg.task.name == "synthetic" and param is not None:
        _against_params(path, len(ds), f"task.synthetic.{param}", getattr(cfg.task.synthetic, param), "data")
    return ds


def check_comparison_counts(cfg: PipelineConfig) -> None:
    """The counts of the comparisons of SFT samples (``sft_pairs/info.json``, which their loader checks the rows
    against) are the params': ``preference_data.sft_pairs`` training pairs and ``eval.n_heldout_pairs`` held-out
    ones on the synthetic task, none on a task without an exact judge."""
    path = require(cfg.layout.sft_pairs("info.json"), "sft")
    info = json.loads(path.read_text())
    synthetic = cfg.task.name == "synthetic"
    for part, key, expected in (("train", "preference_data.sft_pairs", cfg.preference_data.sft_pairs),
                                ("heldout", "eval.n_heldout_pairs", cfg.eval.n_heldout_pairs)):
        n = info.get(part)
        if not isinstance(n, int):
            raise DamagedArtifactError(f"{path} has no count for {part!r}; {rerun_hint(path.parent, 'sft')}")
        _against_params(path.parent / part, n, key if synthetic else f"task.name ({cfg.task.name}: no exact judge)",
                        expected if synthetic else 0, "sft")


def ensure_dir(p: Path) -> Path:
    """``p``, created with its parents if missing."""
    p.mkdir(parents=True, exist_ok=True)
    return p
