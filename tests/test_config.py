"""params.yaml → typed config: the shipped profiles load; bad keys, types and ranges name the key;
a missing upstream artifact names the file and its stage; environment.yml agrees with the lock."""

import re
from pathlib import Path

import pytest
import yaml

from nlhf.config import ConfigError
from nlhf.params import PAPER_METHODS, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["cpu", "tiny", "gpu"])
def test_shipped_profiles_load(profile):
    cfg = load_config(ROOT / "params.yaml", profile)
    assert cfg.profile == profile
    assert tuple(cfg.methods) == PAPER_METHODS
    betas = [cfg.methods[m].beta for m in ("SP", "MD1", "MD2", "MD3", "MD4", "MD5", "MD6", "BR")]
    assert betas == [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0]  # the paper's β sweep


def _write(tmp_path, edit):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("edit, match", [
    (lambda p: p["sft"].update(lr="fast"), r"sft\.lr: expected float, got str"),
    (lambda p: p["sft"].update(steps=0), r"sft\.steps: must be >= 1"),
    (lambda p: p["pg"].update(lerning_rate=1.0), r"pg\.lerning_rate: unknown key"),
    (lambda p: p["methods"]["MD1"].update(beta=1.5), r"methods\.MD1\.beta: must be in \[0, 1\]"),
    (lambda p: p["methods"]["RLHF"].update(tau=0), r"methods\.RLHF\.tau: must be > 0"),
    (lambda p: p["methods"].update(DPO={"kind": "dpo", "tau": 0.1}), r"methods\.DPO\.kind: unknown method kind"),
    (lambda p: p["policy_model"].update(n_embd=100, n_head=3), r"policy_model\.n_embd"),
    (lambda p: p["task"]["synthetic"].update(rater_weights=[0.5, 0.5]), r"task\.synthetic\.rater_weights"),
    (lambda p: p["tabular"].update(taus=[0.1, -1.0]), r"tabular\.taus"),
    (lambda p: p.update(profile="nope"), r"profile: unknown profile 'nope'"),
])
def test_bad_params_name_the_key(tmp_path, edit, match):
    (tmp_path / "profiles").mkdir()
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, edit))


def test_unknown_method_name_lists_known_ones():
    cfg = load_config(ROOT / "params.yaml")
    with pytest.raises(KeyError, match="unknown method 'MD9'.*MD1"):
        cfg.method("MD9")


def test_missing_upstream_artifact_names_file_and_stage(tmp_path):
    from nlhf import stages

    cfg = load_config(ROOT / "params.yaml", "tiny")
    cfg.paths.artifacts = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"nothing/data/tokenizer.*stage 'data'.*dvc repro data"):
        stages.run_sft(cfg)
    with pytest.raises(FileNotFoundError, match=r"nothing/models/sft.*stage 'sft'"):
        stages.run_policy(cfg, "MD1")
    # the SFT-sample comparisons the pm / rm stages read
    with pytest.raises(FileNotFoundError, match=r"nothing/sft_pairs.*stage 'sft'.*dvc repro sft"):
        stages.load_sft_comparisons(cfg, "train")
    (tmp_path / "nothing" / "sft_pairs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"sft_pairs has no info.json.*dvc repro sft"):
        stages.load_sft_comparisons(cfg, "heldout")


def test_environment_yml_installs_exactly_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(re.fullmatch(r"python=3\.11(\.\*)?", str(d)) for d in deps)
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.lock" in pip and "-e ." in pip
    lock = [ln for ln in (ROOT / "requirements.lock").read_text().splitlines() if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", ln) for ln in lock), "every lock line is pinned"
    assert "torch==2.13.0" in lock  # the CPU wheel; an unpinned torch pulls a CUDA build


def test_lock_satisfies_pyproject_ranges():
    import tomllib

    from packaging.requirements import Requirement

    pins = {}
    for ln in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in ln:
            name, ver = ln.split("==")
            pins[name.lower().replace("_", "-")] = ver
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["pipeline"]
    for r in map(Requirement, reqs):
        name = r.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a dependency but not in the lock"
        assert r.specifier.contains(pins[name], prereleases=True), f"lock pins {name}=={pins[name]}, outside {r}"
