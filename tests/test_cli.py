"""``python -m nlhf run <stage> ...``: DVC stage names run those stages' functions (as their notebooks do), in order."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_stage_names_map_to_their_functions():
    from nlhf.pipeline import stages
    from nlhf.pipeline.cli import stage_function

    assert stage_function("sft") == (stages.run_sft, ())
    assert stage_function("preference@rm") == (stages.run_preference, ("rm",))
    assert stage_function("policy@MD1") == (stages.run_policy, ("MD1", "paper"))
    assert stage_function("policy_exact@SP") == (stages.run_policy, ("SP", "exact"))
    assert stage_function("policy_seed@BR") == (stages.run_policy, ("BR", "seed"))
    for bad in ("nope", "policy", "preference@xx", "eval@1"):
        with pytest.raises(KeyError, match="unknown stage"):
            stage_function(bad)


def test_run_executes_the_stage(tmp_path, monkeypatch, capsys):
    from nlhf.pipeline.cli import main

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "tiny"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "nope"]) == 1 and "unknown stage 'nope'" in capsys.readouterr().err
    # every name is checked before the first stage starts: nothing ran
    assert main(["run", "tabular", "nope"]) == 1 and "unknown stage 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    assert main(["run", "tabular"]) == 0
    metrics = json.loads((tmp_path / "results" / "metrics" / "tabular.json").read_text())
    assert metrics["theorem1_holds"] and metrics["steps"] == 300  # the tiny profile's recipe
    assert json.loads((tmp_path / "results" / "summary" / "tabular.json").read_text())["theorem1_holds"] is True
    assert '"theorem1_holds": true' in capsys.readouterr().out


def test_export_synthetic_writes_the_configured_task_and_refuses_another(tmp_path, monkeypatch, capsys):
    """``python -m nlhf export-synthetic`` exports the synthetic task of the params file; on a TL;DR profile it
    stops naming task.name, and eval.synthetic_export on a synthetic run is refused naming the key."""
    from nlhf.config import ConfigError
    from nlhf.pipeline.cli import main
    from nlhf.pipeline.params import load_config

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "tiny"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    assert main(["export-synthetic", "export"]) == 0
    rows = json.loads((tmp_path / "export" / "manifest.json").read_text())["rows"]
    assert rows["sft_train.jsonl"] == 2000 and rows["comparisons_train.jsonl"] == 2000 * params["task"]["synthetic"][
        "labels_per_pair"]  # the tiny profile's sizes, one record per rater asked
    params["profile"] = "tldr-tiny"
    params["ablation"]["methods"], params["ablation"]["seed_methods"] = [], {}
    (tmp_path / "tldr.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["export-synthetic", "again", "--params", "tldr.yaml"]) == 1
    assert "task.name: export-synthetic exports the synthetic task" in capsys.readouterr().err
    params["profile"] = "tiny"
    params["eval"]["synthetic_export"] = "export"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ConfigError, match="eval.synthetic_export: judges a run of task 'tldr'"):
        load_config(tmp_path / "params.yaml")
