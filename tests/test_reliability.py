"""No silently wrong results: a resume state is reused only under every param and input its stage reads; upstream
counts are the params'; a failed write leaves the previous file whole; a model file damaged in place is named on
load; a stage stops when the process that started it dies."""

import copy
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nlhf.config import ConfigError
from nlhf.params import FOREACH_KEYS, STAGE_PARAMS, load_config, stage_config

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch):
    monkeypatch.delenv("NLHF_PROFILE", raising=False)


def tiny_cfg(tmp_path):
    """The committed params under the tiny profile, writing below ``tmp_path``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "tiny"
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles", dirs_exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_config(tmp_path / "params.yaml")
    cfg.paths.artifacts, cfg.paths.results = str(tmp_path / "a"), str(tmp_path / "r")
    return cfg


# ------------------------------------------------------------------------------------------ resume fingerprints

def _declared_params(spec: dict) -> set[str]:
    """A dvc.yaml stage's ``params``, less profile, paths and the profile file (STAGE_PARAMS leaves them out)."""
    out = set()
    for p in spec["params"]:
        for key in ([p] if isinstance(p, str) else list(p)):
            if key not in ("profile", "paths") and not key.startswith("profiles/"):
                out.add(key.replace("${item}", "{item}").replace("${key}", "{item}"))
    return out


@pytest.mark.parametrize("kind", sorted(STAGE_PARAMS))
def test_stage_params_are_dvc_yamls(kind):
    """What a resume fingerprint hashes is exactly what DVC reruns the stage for."""
    spec = DVC["stages"][kind]
    assert _declared_params(spec.get("do", spec)) == set(STAGE_PARAMS[kind])


def test_foreach_keys_are_dvc_yamls():
    lists = {spec["foreach"].strip("${}") for spec in DVC["stages"].values()
             if isinstance(spec.get("foreach"), str)}
    assert lists == set(FOREACH_KEYS)


def _leaves(obj, path=()):
    """(path, value) of every leaf below a config value: dataclass fields and mapping entries, recursively."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name), (*path, f.name))
    elif isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    else:
        yield path, obj


def _other(v):
    """A different value of the same kind."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v * 2 + 1
    if isinstance(v, str):
        return v + "_x"
    if isinstance(v, list):
        return v + v[:1] if v else [1]
    if isinstance(v, dict):
        return {**v, "x": "y"}
    return 1  # None


def _set(cfg, key: str, path: tuple, value):
    """Set the leaf ``path`` below the stage param ``key`` (``seed``, ``eval.confidence``, ``methods.MD1``)."""
    parts = [*key.split("."), *path]
    node = cfg
    for part in parts[:-1]:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    if isinstance(node, dict):
        node[parts[-1]] = value
    else:
        object.__setattr__(node, parts[-1], value)


STAGES = ["sft", "preference@pm", "preference@rm", "policy@MD1", "policy_exact@EMA1", "policy_seed@BR"]


@pytest.mark.parametrize("stage", STAGES)
def test_fingerprint_changes_with_every_param_the_stage_reads(tmp_path, monkeypatch, stage):
    """Param by param: changing any leaf of any section the stage reads (top-level seed included) gives another
    fingerprint, so a resume state is never reused under it; a section it does not read changes nothing."""
    from nlhf import artifacts
    from nlhf.artifacts import stage_fingerprint

    monkeypatch.setattr(artifacts, "check_comparison_counts", lambda cfg: None)  # no upstream artifacts here
    cfg = tiny_cfg(tmp_path)
    base = stage_fingerprint(cfg, stage)
    keys = stage_config(cfg, stage)
    assert "seed" in keys
    checked = 0
    for key, value in keys.items():
        for path, leaf in _leaves(value):
            other = copy.deepcopy(cfg)
            _set(other, key, path, _other(leaf))
            assert stage_fingerprint(other, stage) != base, (key, path)
            checked += 1
    assert checked >= len(keys)
    unread = copy.deepcopy(cfg)
    unread.oracle.n_prompts += 1  # no stage here reads the oracle section
    unread.paths.results = str(tmp_path / "elsewhere")  # where results go is not what the stage computes
    assert stage_fingerprint(unread, stage) == base


def test_fingerprint_covers_every_input_and_only_those(tmp_path):
    from nlhf.artifacts import stage_fingerprint

    cfg = tiny_cfg(tmp_path)
    layout = cfg.layout
    before = {s: stage_fingerprint(cfg, s) for s in ("policy@MD1", "policy_exact@MD1")}
    (layout.model("pm")).mkdir(parents=True)
    (layout.model("pm") / "model.safetensors").write_bytes(b"weights")
    assert stage_fingerprint(cfg, "policy@MD1") != before["policy@MD1"]
    assert stage_fingerprint(cfg, "policy_exact@MD1") == before["policy_exact@MD1"]  # exact judges: no PM read
    layout.oracle_target("MD1").parent.mkdir(parents=True)
    layout.oracle_target("MD1").write_text("{}")
    assert stage_fingerprint(cfg, "policy_exact@MD1") != before["policy_exact@MD1"]


# ------------------------------------------------------------------------------------------ counts against params

def _dataset(path: Path, n: int, **columns):
    import datasets

    datasets.Dataset.from_dict({k: [v] * n for k, v in columns.items()}).save_to_disk(str(path))


def test_a_consistent_shrink_of_the_sft_pairs_stops_the_reader(tmp_path):
    """Rows and info.json shrunk alike (100 pairs where the params ask for 500): the preference stage's inputs stop
    naming the file and the param, before any training."""
    from nlhf.artifacts import DamagedArtifactError, check_comparison_counts, stage_fingerprint

    cfg = tiny_cfg(tmp_path)
    d = cfg.layout.sft_pairs()
    row = dict(prompt="x", y="a", y_prime="b", p=0.5, label=1)
    _dataset(d / "train", 500, **row)
    _dataset(d / "heldout", cfg.eval.n_heldout_pairs, **row)
    (d / "info.json").write_text(json.dumps({"train": 500, "heldout": cfg.eval.n_heldout_pairs}))
    check_comparison_counts(cfg)
    shutil.rmtree(d / "train")
    _dataset(d / "train", 100, **row)
    (d / "info.json").write_text(json.dumps({"train": 100, "heldout": cfg.eval.n_heldout_pairs}))
    msg = r"sft_pairs/train holds 100 rows but params preference_data\.sft_pairs is 500.*dvc repro sft"
    with pytest.raises(DamagedArtifactError, match=msg):
        check_comparison_counts(cfg)
    with pytest.raises(DamagedArtifactError, match=msg):
        stage_fingerprint(cfg, "preference@pm")
    cfg.eval.n_heldout_pairs += 1
    cfg.preference_data.sft_pairs = 100
    with pytest.raises(DamagedArtifactError, match=r"sft_pairs/heldout holds 100 rows but params "
                                                   r"eval\.n_heldout_pairs is 101"):
        check_comparison_counts(cfg)


def test_a_consistent_shrink_of_a_dataset_stops_the_reader(tmp_path):
    from nlhf.artifacts import DamagedArtifactError, load_dataset_dir

    cfg = tiny_cfg(tmp_path)
    n = cfg.task.synthetic.n_pref_train
    data = cfg.layout.data()
    _dataset(data / "prefs" / "train", n, prompt="x", y="a", y_prime="b", label=1.0, p=0.5)
    (data / "metrics.json").write_text(json.dumps({"prefs_train_rows": n}))
    assert len(load_dataset_dir(cfg, "prefs", "train")) == n
    shutil.rmtree(data / "prefs" / "train")
    _dataset(data / "prefs" / "train", 100, prompt="x", y="a", y_prime="b", label=1.0, p=0.5)
    (data / "metrics.json").write_text(json.dumps({"prefs_train_rows": 100}))
    with pytest.raises(DamagedArtifactError, match=rf"prefs/train holds 100 rows but params "
                                                   rf"task\.synthetic\.n_pref_train is {n}.*dvc repro data"):
        load_dataset_dir(cfg, "prefs", "train")
