"""The checks on what the stages read, and how they write their metrics.

Every path is :class:`nlhf.layout.Layout`'s (``cfg.layout``). An upstream artifact that is missing, damaged, or
holds another row count than its stage recorded stops the reader with a message naming the file and the
``dvc repro`` that makes it. Resumable training states are fingerprinted with the params and the content of every
upstream artifact the training reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from nlhf.layout import Layout
from nlhf.params import PipelineConfig
from nlhf.summary import summarize
from nlhf.training.checkpoint import content_hash, damaged, write_json


class DamagedArtifactError(RuntimeError):
    """An upstream artifact exists but cannot be read, or disagrees with the counts its stage recorded."""


def _rerun_hint(path: Path, stage: str) -> str:
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
        raise DamagedArtifactError(f"upstream artifact {bad[0]} is damaged ({bad[1]}); {_rerun_hint(path, stage)}")
    return Path(path)


def fingerprint(*objs, inputs=()) -> str:
    """A short hash of configs and of the content of the upstream artifacts ``inputs`` (files or folders); a
    resumable checkpoint is reused only if it matches, i.e. only by a run with the same params and inputs."""
    text = json.dumps([asdict(o) if hasattr(o, "__dataclass_fields__") else o for o in objs], sort_keys=True,
                      default=str)
    text += "".join(f"|{Path(p).name}:{content_hash(p)}" for p in inputs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_metrics(cfg: PipelineConfig, stage: str, metrics: dict) -> None:
    """The stage's metrics JSON (:meth:`Layout.metrics`) without its ``runtime_s``, which goes to
    :meth:`Layout.timings` (not a DVC output): metrics files are hashed outputs that later stages depend on, and a
    wall-clock time would make them differ at every rerun. Its headline numbers (:mod:`nlhf.summary`) go to
    :meth:`Layout.summary`, the file dvc.yaml declares as the stage's metrics."""
    layout = cfg.layout
    write_json(layout.metrics(stage), {k: v for k, v in metrics.items() if k != "runtime_s"})
    write_json(layout.summary(stage), summarize(layout.key(stage), metrics))
    if "runtime_s" in metrics:
        write_json(layout.timings(stage), {"runtime_s": metrics["runtime_s"]})


def load_tokenizer(cfg: PipelineConfig):
    from transformers import AutoTokenizer

    path = require(cfg.layout.tokenizer, "data")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise DamagedArtifactError(f"cannot load the tokenizer {path} ({e}); {_rerun_hint(path, 'data')}") from e
    tok.padding_side = "left"
    return tok


def _load_counted(path: Path, n_expected: int, stage: str, record: Path):
    """``load_from_disk(path)``, which must hold the ``n_expected`` rows its stage recorded in ``record``."""
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_from_disk(str(path))
        n = len(ds)
    except Exception as e:  # FileNotFoundError, ArrowInvalid, json errors from a damaged folder
        raise DamagedArtifactError(f"cannot load {path} ({type(e).__name__}: {e}); {_rerun_hint(path, stage)}") \
            from e
    if n != n_expected:
        raise DamagedArtifactError(f"{path} holds {n} rows but {record} records {n_expected}; "
                                   f"{_rerun_hint(path, stage)}")
    return ds


def load_dataset_dir(cfg: PipelineConfig, *parts: str):
    """A dataset of the data stage (e.g. ``"sft", "train"``), checked against the row count in data/metrics.json."""
    path = require(cfg.layout.data(*parts), "data")
    info = require(cfg.layout.data_counts, "data")
    key = "_".join(parts) + "_rows"
    counts = json.loads(info.read_text())
    if not isinstance(counts.get(key), int):
        raise DamagedArtifactError(f"{info} has no row count {key!r} (not written by this version's data stage); "
                                   f"{_rerun_hint(cfg.layout.data(), 'data')}")
    return _load_counted(path, counts[key], "data", info)


def ensure_dir(p: Path) -> Path:
    """``p``, created with its parents if missing."""
    p.mkdir(parents=True, exist_ok=True)
    return p
