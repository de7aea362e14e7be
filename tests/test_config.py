"""params.yaml → typed config: the shipped profiles load; bad keys, types, ranges, missing sections and keys,
non-finite numbers, paths outside the repository, unsafe method names and unpinned Hub ids are ConfigErrors that
name the key; the profile comes from params.yaml only; a missing or damaged upstream artifact names the file and
its stage; environment.yml agrees with the lock.

Every test works on a copy of params.yaml whose ``profile`` is set explicitly, with $NLHF_PROFILE unset, so neither
the live file's ``profile:`` key nor the environment changes what is tested."""

import dataclasses
import json
import re
import shutil
import typing
from pathlib import Path

import pytest
import yaml

from nlhf.config import ConfigError
from nlhf.paper import PAPER_POLICIES
from nlhf.pipeline.params import REQUIRED_KEYS, PipelineConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch):
    monkeypatch.delenv("NLHF_PROFILE", raising=False)


def recipe() -> dict:
    """The committed recipe (params.yaml) with the default profile selected."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "cpu"
    return params


def write_params(tmp_path, edit=lambda p: None) -> Path:
    """A params.yaml (the recipe after ``edit``) next to a copy of profiles/, in ``tmp_path``."""
    params = recipe()
    edit(params)
    if not (tmp_path / "profiles").exists():
        shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path / "params.yaml"


# The trained policies of the paper's β sweep (§8), first in params.yaml's methods.
PAPER_METHODS = ("RLHF", "SP", "MD1", "MD2", "MD3", "MD4", "MD5", "MD6", "BR", "EMA1", "EMA2")


@pytest.mark.parametrize("profile", ["cpu", "tiny", "gpu"])
def test_shipped_profiles_load(tmp_path, profile):
    path = write_params(tmp_path, lambda p: p.update(profile=profile))
    for cfg in (load_config(path), load_config(write_params(tmp_path), profile)):
        assert cfg.profile == profile
        assert tuple(cfg.methods)[: len(PAPER_METHODS)] == PAPER_METHODS
        assert set(PAPER_POLICIES) <= set(cfg.table) and cfg.table[0] == "SFT"
        betas = [cfg.methods[m].beta for m in ("SP", "MD1", "MD2", "MD3", "MD4", "MD5", "MD6", "BR")]
        assert betas == [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0]  # the paper's β sweep


def _del(section, key=None):
    def edit(p):
        if key is None:
            del p[section]
        else:
            del p[section][key]
    return edit


@pytest.mark.parametrize("edit, match", [
    (lambda p: p["sft"].update(lr="fast"), r"sft\.lr: expected float, got str"),
    (lambda p: p["sft"].update(steps=0), r"sft\.steps: must be >= 1"),
    (lambda p: p["sampling"].update(temperature=0.7), r"sampling\.temperature: policy-gradient training needs 1\.0"),
    (lambda p: p["pg"].update(lerning_rate=1.0), r"pg\.lerning_rate: unknown key"),
    (lambda p: p["methods"]["MD1"].update(beta=1.5), r"methods\.MD1\.beta: must be in \[0, 1\]"),
    (lambda p: p["methods"]["RLHF"].update(tau=0), r"methods\.RLHF\.tau: must be > 0"),
    (lambda p: p["methods"].update(DPO={"kind": "dpo", "tau": 0.1}), r"methods\.DPO\.kind: unknown method kind"),
    (lambda p: p["methods"]["EMA1"].update(beta=0.9), r"methods\.EMA1\.beta: unknown key; known keys: ema_beta"),
    (lambda p: p["eval"].update(policies=["SFT", "MD9"]), r"eval\.policies: \['MD9'\] are not policies of the"),
    (lambda p: p["eval"].update(policies=["SFT", "MD1*"]), r"eval\.policies: \['MD1\*'\] are not policies"),
    (lambda p: p["policy_model"].update(n_embd=100, n_head=3), r"policy_model\.n_embd"),
    (lambda p: p["task"]["synthetic"].update(rater_weights=[0.5, 0.5]), r"task\.synthetic\.rater_weights"),
    (lambda p: p["tabular"].update(taus=[0.1, -1.0]), r"tabular\.taus"),
    (lambda p: p.update(profile="nope"), r"profile: unknown profile 'nope'"),
    (lambda p: p.update(profile="../../etc/x"), r"profile: expected the name of a file profiles/<name>\.yaml"),
    # a section deleted: an error, not the code defaults (PG lr 1e-4 instead of 3e-5, SFT 1000 steps, ...)
    (_del("pg"), r"pg: required section missing"),
    (_del("sft"), r"sft: required section missing"),
    (_del("eval"), r"eval: required section missing"),
    (lambda p: p.update(pg=None), r"pg: required section missing"),
    # a recipe key deleted whose code default is not the recipe
    (_del("pg", "lr"), r"pg\.lr: required key missing"),
    (_del("sft", "steps"), r"sft\.steps: required key missing"),
    (_del("ablation", "steps"), r"ablation\.steps: required key missing"),
    (lambda p: p["ablation"].update(steps=0), r"ablation\.steps: must be >= 1 or null \(got 0\)"),
    # a method without a required field, or null: the key path, not a TypeError
    (lambda p: p["methods"]["MD1"].pop("tau"), r"methods\.MD1\.tau: required key missing"),
    (lambda p: p["methods"].update(MD1=None), r"methods\.MD1: expected a mapping of Method keys"),
    (lambda p: p["methods"].update(MD1=[0.1]), r"methods\.MD1: expected a mapping"),
    # the trained judge a method's stages depend on (dvc.yaml reads it): stated, and the one its kind trains against
    (lambda p: p["methods"]["MD1"].pop("judged_by"), r"methods\.MD1\.judged_by: required key missing \(pm or rm"),
    (lambda p: p["methods"]["RLHF"].update(judged_by="pm"), r"methods\.RLHF\.judged_by: a rlhf method trains against the "
                                                         r"reward judge, played by 'rm' \(got 'pm'\)"),
    (lambda p: p["ablation"]["seed_methods"].update(SP="rm"), r"ablation\.seed_methods\.SP: SP trains against 'pm'"),
    (lambda p: p["ablation"]["seed_methods"].update(SP="xm"), r"ablation\.seed_methods\.SP: the trained model SP "
                                                               r"trains against: pm or rm"),
    (lambda p: p.update(sampling=3), r"sampling: expected a mapping of SamplingConfig keys"),
    # non-finite numbers
    (lambda p: p["pg"].update(lr=float("inf")), r"pg\.lr: must be a finite number, got inf"),
    (lambda p: p["sft"].update(lr=float("nan")), r"sft\.lr: must be a finite number, got nan"),
    (lambda p: p["tabular"].update(taus=[0.1, float("inf")]), r"tabular\.taus: must be a finite number"),
    # paths confined to the repository
    (lambda p: p["paths"].update(artifacts="../.."), r"paths\.artifacts: must be a relative path inside the repo"),
    (lambda p: p["paths"].update(results="/tmp/results"), r"paths\.results: must be a relative path inside the "),
    (lambda p: p["paths"].update(artifacts="a/../../b"), r"paths\.artifacts: must be a relative path"),
    (lambda p: p["paths"].update(artifacts="."), r"paths\.artifacts: must be a relative path"),
    (lambda p: p["paths"].update(artifacts=".git/x"), r"paths\.artifacts: must be a relative path"),
    # method names go into shell commands and stage names: identifiers only
    (lambda p: p["methods"].update({"MD1; rm -rf ~": {"kind": "rlhf", "judged_by": "rm", "tau": 0.1}}),
     r"methods\.MD1; rm -rf ~: method names must be identifiers"),
    (lambda p: p["methods"].update({"1x": {"kind": "rlhf", "judged_by": "rm", "tau": 0.1}}), r"methods\.1x: method names must be"),
    (lambda p: p["methods"].update({"None": {"kind": "rlhf", "judged_by": "rm", "tau": 0.1}}), r"methods\.None: method names must"),
    (lambda p: p["methods"].update({"SFT": {"kind": "rlhf", "judged_by": "rm", "tau": 0.1}}), r"methods\.SFT: method names must"),
    # Hub downloads must be pinned: models only from local folders, TL;DR datasets with a commit
    (lambda p: p["policy_model"].update(name_or_path="gpt2"), r"policy_model\.name_or_path: 'gpt2' is not a local"),
    (lambda p: p["task"].update(name="tldr"), r"task\.tldr\.sft_revision: sft_path 'trl-lib/tldr' is a Hub dataset"),
    (lambda p: p["task"].update(name="tldr", tldr={"sft_revision": "main"}),
     r"task\.tldr\.sft_revision: must be a 40-hex-digit commit id"),
    # the longest synthetic prompt (2 * facts_max + 5 = 17 tokens) and the response must fit the policy's context
    (lambda p: p["sampling"].update(max_new_tokens=48),
     r"sampling\.max_new_tokens: 48 new tokens after the longest prompt \(17 tokens: task\.synthetic\.facts_max = "
     r"6\) exceed policy_model\.n_positions = 64; lower sampling\.max_new_tokens to at most 47"),
    (lambda p: p["task"]["synthetic"].update(facts_max=30, n_fact_words=60, max_summary_words=40),
     r"sampling\.max_new_tokens: .*longest prompt \(65 tokens.*policy_model\.n_positions = 64"),
    # a warm-up longer than the run never reaches the peak learning rate
    (lambda p: p["sft"].update(warmup_steps=3000), r"sft\.warmup_steps: must be <= sft\.steps \(2000\), got 3000"),
    (lambda p: p["pm"].update(warmup_steps=1801), r"pm\.warmup_steps: must be <= pm\.steps"),
    (lambda p: p["rm"].update(warmup_steps=901), r"rm\.warmup_steps: must be <= rm\.steps"),
    # an EMA coefficient of 1 keeps the averaged policy at SFT
    (lambda p: p["methods"]["EMA1"].update(ema_beta=1.0), r"methods\.EMA1\.ema_beta: must be in \[0, 1\)"),
    # the lists DVC expands stages over are the recipe's, not a code default
    (_del("ablation", "methods"), r"ablation\.methods: required key missing"),
    (_del("ablation", "seed_methods"), r"ablation\.seed_methods: required key missing"),
])
def test_bad_params_name_the_key(tmp_path, edit, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write_params(tmp_path, edit))


def test_unreadable_params_file_is_named(tmp_path):
    path = write_params(tmp_path)
    path.write_text("sft: {steps: 2\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not readable as YAML"):
        load_config(path)
    path.write_bytes(b"seed: \xff\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not readable as YAML"):
        load_config(path)


def test_profile_comes_from_params_yaml_only(tmp_path, monkeypatch):
    """$NLHF_PROFILE may only repeat the profile params.yaml names (DVC records params.yaml, not the environment)."""
    path = write_params(tmp_path)  # profile: cpu
    monkeypatch.setenv("NLHF_PROFILE", "tiny")
    with pytest.raises(ConfigError, match=r"profile: \$NLHF_PROFILE=tiny disagrees with profile 'cpu' "
                                          r"\(params\.yaml\).*set `profile: tiny` in params\.yaml"):
        load_config(path)
    monkeypatch.setenv("NLHF_PROFILE", "cpu")
    assert load_config(path).profile == "cpu"
    # an explicit argument is the caller's choice; the environment must agree with it too
    assert load_config(path, "cpu").profile == "cpu"
    with pytest.raises(ConfigError, match=r"NLHF_PROFILE=cpu disagrees with profile 'tiny' \(the profile argument"):
        load_config(path, "tiny")
    monkeypatch.setenv("NLHF_PROFILE", "tiny")
    assert load_config(write_params(tmp_path, lambda p: p.update(profile="tiny"))).profile == "tiny"


def test_missing_method_name_lists_known_ones(tmp_path):
    cfg = load_config(write_params(tmp_path))
    with pytest.raises(KeyError, match="unknown method 'MD9'.*MD1"):
        cfg.method("MD9")


@pytest.mark.parametrize("section", [f.name for f in dataclasses.fields(PipelineConfig) if f.name != "profile"])
def test_every_section_is_required(tmp_path, section):
    with pytest.raises(ConfigError, match=rf"{section}: required (section|key) missing"):
        load_config(write_params(tmp_path, _del(section)))


def _leaves(node: dict, cls: type, path: str):
    """(key path, value, code default) of every key params.yaml states, below the sections (methods excluded)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in node.items():
        f, key = fields[k], f"{path}.{k}" if path else k
        if dataclasses.is_dataclass(hints[k]):
            yield from _leaves(v, hints[k], key)
        elif k != "methods" and path:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            yield key, v, default


def test_each_recipe_key_is_required_or_its_code_default():
    """Deleting any key from the committed params.yaml either stops with a ConfigError (REQUIRED_KEYS) or changes
    nothing (its code default is the committed value)."""
    required = {f"{path}.{k}" for path, keys in REQUIRED_KEYS.items() for k in keys}
    silent = [(key, value, default) for key, value, default in _leaves(recipe(), PipelineConfig, "")
              if key not in required and value != default]
    assert not silent, f"keys whose code default differs from params.yaml; add them to REQUIRED_KEYS: {silent}"


@pytest.mark.parametrize("key", [f"{path}.{k}" for path, keys in REQUIRED_KEYS.items() for k in keys])
def test_required_keys_are_required(tmp_path, key):
    *path, last = key.split(".")

    def edit(p):
        node = p
        for part in path:
            node = node[part]
        del node[last]

    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: required key missing"):
        load_config(write_params(tmp_path, edit))


def test_missing_upstream_artifact_names_file_and_stage(tmp_path):
    from nlhf.pipeline import artifacts, stages
    from nlhf.pipeline.comparisons import load_sft_comparisons

    cfg = load_config(write_params(tmp_path), "tiny")
    cfg.paths.artifacts = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"nothing/data/tokenizer.*stage 'data'.*dvc repro data"):
        stages.run_sft(cfg)
    with pytest.raises(FileNotFoundError, match=r"nothing/models/sft.*stage 'sft'"):
        stages.run_policy(cfg, "MD1")
    # the hint names the DVC stage that writes the file
    for kind in ("pm", "rm"):
        with pytest.raises(FileNotFoundError, match=rf"nothing/models/{kind}.*stage 'preference@{kind}'.*"
                                                    rf"`dvc repro preference@{kind}`"):
            artifacts.require(cfg.layout.model(kind), kind)
    # the SFT-sample comparisons the pm / rm stages read
    with pytest.raises(FileNotFoundError, match=r"nothing/sft_pairs.*stage 'sft'.*dvc repro sft"):
        load_sft_comparisons(cfg, "train")
    (tmp_path / "nothing" / "sft_pairs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"sft_pairs has no info.json.*dvc repro sft"):
        load_sft_comparisons(cfg, "heldout")


def test_comparisons_must_match_their_recorded_counts(tmp_path):
    """A deleted or shortened ``sft_pairs/train`` (info.json: 500 pairs) stops the pm/rm stage instead of training
    on fewer pairs."""
    import datasets

    from nlhf.pipeline import artifacts
    from nlhf.pipeline.comparisons import load_sft_comparisons

    cfg = load_config(write_params(tmp_path), "tiny")
    cfg.paths.artifacts = str(tmp_path / "a")
    d = tmp_path / "a" / "sft_pairs"
    d.mkdir(parents=True)
    rows = {"prompt": ["x"] * 5, "y": ["a"] * 5, "y_prime": ["b"] * 5, "p": [0.5] * 5, "label": [1] * 5}
    datasets.Dataset.from_dict(rows).save_to_disk(str(d / "train"))
    (d / "info.json").write_text(json.dumps({"train": 5, "heldout": 0}))
    assert len(load_sft_comparisons(cfg, "train")) == 5
    assert load_sft_comparisons(cfg, "heldout") is None
    (d / "info.json").write_text(json.dumps({"train": 500, "heldout": 0}))
    with pytest.raises(artifacts.DamagedArtifactError, match=r"sft_pairs/train holds 5 rows but .*info\.json records "
                                                          r"500.*dvc checkout .*sft_pairs.*dvc repro sft"):
        load_sft_comparisons(cfg, "train")
    shutil.rmtree(d / "train")
    with pytest.raises(artifacts.DamagedArtifactError, match=r"sft_pairs/train is missing but .*info\.json records 500"):
        load_sft_comparisons(cfg, "train")


def test_data_datasets_must_match_their_recorded_counts(tmp_path):
    import datasets

    from nlhf.pipeline import artifacts

    cfg = load_config(write_params(tmp_path), "tiny")
    cfg.paths.artifacts = str(tmp_path / "a")
    data = tmp_path / "a" / "data"
    datasets.Dataset.from_dict({"prompt": ["x"] * 3, "completion": ["y"] * 3}).save_to_disk(str(data / "sft/train"))
    with pytest.raises(FileNotFoundError, match=r"data/metrics\.json.*stage 'data'"):
        artifacts.load_dataset_dir(cfg, "sft", "train")
    (data / "metrics.json").write_text(json.dumps({"sft_train_rows": 3}))
    cfg.task.synthetic.n_sft = 3  # the params asked for 3 rows (tests/test_reliability.py: when they did not)
    assert len(artifacts.load_dataset_dir(cfg, "sft", "train")) == 3
    (data / "metrics.json").write_text(json.dumps({"sft_train_rows": 4}))
    with pytest.raises(artifacts.DamagedArtifactError, match=r"sft/train holds 3 rows but .*metrics\.json records 4.*"
                                                          r"dvc repro data"):
        artifacts.load_dataset_dir(cfg, "sft", "train")


def test_check_command(tmp_path, monkeypatch, capsys):
    """`python -m nlhf check` (DVC's first stage): validates everything, writes a marker whose content does not
    depend on the params, deletes resume states only with --fresh, and fails with the key named."""
    from nlhf.pipeline.cli import CHECK_OK, main

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    resume = tmp_path / "artifacts" / ".resume"
    resume.mkdir(parents=True)
    (resume / "sft.pt").write_bytes(b"state")
    marker = tmp_path / "artifacts" / "check.ok"
    assert main(["check", "--out", "artifacts/check.ok"]) == 0
    assert (resume / "sft.pt").exists() and marker.read_text() == CHECK_OK
    write_params(tmp_path, lambda p: p["pg"].update(lr=1e-3))  # another valid recipe: the same marker
    assert main(["check", "--fresh", "--out", "artifacts/check.ok"]) == 0
    assert marker.read_text() == CHECK_OK and not (resume / "sft.pt").exists()
    assert "removed the resumable state artifacts/.resume/sft.pt" in capsys.readouterr().out
    marker.unlink()
    write_params(tmp_path, lambda p: p["pg"].update(lr=float("inf")))
    assert main(["check", "--out", "artifacts/check.ok"]) == 1
    assert "pg.lr: must be a finite number, got inf" in capsys.readouterr().err and not marker.exists()
    write_params(tmp_path)
    monkeypatch.setenv("NLHF_PROFILE", "tiny")
    assert main(["check"]) == 1 and "$NLHF_PROFILE=tiny disagrees" in capsys.readouterr().err
    monkeypatch.delenv("NLHF_PROFILE")
    # a stage's upstream inputs
    for stage, err in [("policy@MD1", "missing upstream artifact artifacts/models/sft"),
                       ("policy@MD9", "unknown method 'MD9'"), ("nope", "unknown stage 'nope'"),
                       ("sft", "missing upstream artifact artifacts/data/tokenizer")]:
        assert main(["check", stage]) == 1
        assert err in capsys.readouterr().err, stage
    assert main(["check", "data"]) == 0


def test_dvc_yaml_checks_params_first_and_quotes_method_names():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    check = stages.pop("check")
    assert check["cmd"] == "python -m nlhf check --fresh --out artifacts/check.ok"
    assert check["params"] == [{"params.yaml": None}]  # every param
    assert check["outs"] == [{"artifacts/check.ok": {"cache": False}}]
    for name, stage in stages.items():
        assert "artifacts/check.ok" in stage.get("do", stage)["deps"], f"stage {name} must run after check"
    assert "-r method '${key}'" in stages["policy"]["do"]["cmd"]
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert {"__pycache__/", "*.py[cod]", ".ipynb_checkpoints/"} <= set(ignored)


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


def test_an_edit_the_profile_overrides_stops_check(tmp_path, monkeypatch, capsys):
    """`dvc exp run -S pg.steps=700` edits params.yaml; under a profile that sets pg.steps itself the edit would be
    silently ignored, so `check` (DVC's first stage) stops and says where to set it. Keys the profile leaves alone,
    and the same edit under the default profile, pass."""
    import subprocess

    from nlhf.config import shadowed_edits
    from nlhf.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    path = write_params(tmp_path, lambda p: p.update(profile="tiny"))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "recipe"], cwd=tmp_path, check=True)
    assert shadowed_edits(path) == []
    write_params(tmp_path, lambda p: (p.update(profile="tiny"), p["pg"].update(steps=700, lr=2e-4)))
    [msg] = shadowed_edits(path)
    assert msg.startswith("pg.steps: params.yaml now sets 700, but profile 'tiny' overrides pg.steps with 4")
    assert "dvc exp run -S profiles/tiny.yaml:pg.steps=<value>" in msg  # pg.lr is not in tiny.yaml: no message
    assert main(["check"]) == 1 and "pg.steps: params.yaml now sets 700" in capsys.readouterr().err
    write_params(tmp_path, lambda p: p["pg"].update(steps=700))  # the default profile's overlay is empty
    assert shadowed_edits(path) == [] and main(["check"]) == 0


def test_every_stage_depends_on_the_selected_profile_file_only():
    """A stage's inputs name profiles/${profile}.yaml (editing gpu.yaml does not rerun the cpu pipeline) and its
    params record that file's values; the default profile's file exists and is empty."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        assert "profiles" not in stage["deps"] and "profiles/${profile}.yaml" in stage["deps"], name
        if name != "check":
            assert {"profiles/${profile}.yaml": None} in stage["params"], name
    assert yaml.safe_load((ROOT / "profiles" / "cpu.yaml").read_text()) == {}


def test_params_read_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S` rewrites params.yaml as YAML 1.2 and drops the quotes of `mixed_precision: "no"`; the file
    must still load as the same recipe (YAML 1.1 would read the bare `no` as False)."""
    path = write_params(tmp_path)
    text = path.read_text()
    assert "mixed_precision: 'no'" in text or 'mixed_precision: "no"' in text
    path.write_text(text.replace("mixed_precision: 'no'", "mixed_precision: no").replace(
        'mixed_precision: "no"', "mixed_precision: no"))
    cfg = load_config(path)
    assert cfg.runtime.mixed_precision == "no" and cfg.runtime.cpu is True


@pytest.mark.parametrize("section", ["eval", "tabular", "preference_data", "ablation"])
def test_every_section_is_required_in_params_yaml_itself(tmp_path, section):
    """The tiny profile sets keys of these sections; that does not make a section deleted from params.yaml optional
    (params.yaml states the whole recipe; a profile only overrides part of it)."""
    with pytest.raises(ConfigError, match=rf"{section}: required section missing in params\.yaml"):
        load_config(write_params(tmp_path, lambda p: (p.update(profile="tiny"), p.pop(section))))


def test_required_keys_are_required_in_params_yaml_itself(tmp_path):
    """sft.steps deleted from params.yaml while the tiny profile sets it: still an error."""
    with pytest.raises(ConfigError, match=r"sft\.steps: required key missing in params\.yaml"):
        load_config(write_params(tmp_path, lambda p: (p.update(profile="tiny"), p["sft"].pop("steps"))))


def test_floats_need_no_dot(tmp_path):
    """`lr: 1e-4` is the float 0.0001 (YAML 1.2, as DVC reads it), in params.yaml and in a profile alike."""
    path = write_params(tmp_path)
    path.write_text(path.read_text().replace("lr: 0.0002", "lr: 2e-4", 1))
    assert "lr: 2e-4" in path.read_text()
    (tmp_path / "profiles" / "cpu.yaml").write_text("sft: {lr: 1e-3}\npm: {lr: 5E-4}\n")
    cfg = load_config(path)
    assert (cfg.pg.lr, cfg.sft.lr, cfg.pm.lr) == (2e-4, 1e-3, 5e-4)
    assert load_config(path).runtime.mixed_precision == "no"  # the YAML 1.2 booleans are unchanged


def test_longest_synthetic_prompt_is_what_check_assumes(completist_tok):
    """The check's longest prompt, 2 * facts_max + 5 tokens, is the length of the task's longest prompts."""
    from nlhf.tasks import SyntheticTask

    from conftest import tiny_task_config

    task = SyntheticTask(tiny_task_config(population="completist", facts_min=6, facts_max=6, n_prompts_eval=50))
    lengths = {len(completist_tok(x, add_special_tokens=False)["input_ids"]) for x in task.prompts("eval")}
    assert lengths == {2 * 6 + 5}


@pytest.mark.parametrize("edit, key", [
    (lambda p: p.update(ablation={"methods": ["RLHF", "SP"]}), "ablation.methods"),
    (lambda p: p.update(ablation={"seed_methods": {"NEW": "pm"}}), "ablation.seed_methods"),
    (lambda p: p.update(methods={"NEW": {"kind": "rlhf", "tau": 0.1}}), "methods"),
])
def test_a_profile_may_not_change_a_list_dvc_expands_stages_over(tmp_path, edit, key):
    """DVC builds the policy, policy_exact and policy_seed stages from params.yaml's lists only: a list in a profile
    would train stages nobody reads or read policies nobody trains. Overriding a method's fields stays possible."""
    path = write_params(tmp_path)
    overlay = {}
    edit(overlay)
    (tmp_path / "profiles" / "cpu.yaml").write_text(yaml.safe_dump(overlay))
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: profile 'cpu' (sets|adds) .*set the list in "
                                          rf"params\.yaml"):
        load_config(path)
    (tmp_path / "profiles" / "cpu.yaml").write_text(yaml.safe_dump({"methods": {"MD1": {"tau": 0.02}}}))
    assert load_config(path).methods["MD1"].tau == 0.02


@pytest.mark.parametrize("key, value", [("artifacts", "nlhf"), ("results", "out"), ("artifacts", "artifacts/x")])
def test_check_refuses_paths_dvc_yaml_does_not_declare(tmp_path, monkeypatch, capsys, key, value):
    """`python -m nlhf check` (the DVC pipeline's first stage) stops when paths are not the folders dvc.yaml
    declares; the same params still load for a stage run outside DVC (`python -m nlhf run`, tests)."""
    from nlhf.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    path = write_params(tmp_path, lambda p: p["paths"].update({key: value}))
    assert main(["check", "--out", "artifacts/check.ok"]) == 1
    err = capsys.readouterr().err
    assert f"paths.{key}: dvc.yaml declares the stages' outputs under {key}/, got {value!r}" in err, err
    assert not (tmp_path / "artifacts" / "check.ok").exists()
    assert getattr(load_config(path).paths, key) == value
    write_params(tmp_path, lambda p: p["paths"].update(artifacts="./artifacts", results="results/"))
    assert main(["check"]) == 0
