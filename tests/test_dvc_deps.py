"""Narrow dependencies: an edit of a param makes `dvc status` report only the stages that read it, on a scratch copy
of the pipeline whose every stage is up to date (each output a small stand-in, committed with `dvc commit`).

What a stage may read is what it declares (nlhf.pipeline.params.restrict enforces it when the tiny DAG runs in
tests/test_pipeline_e2e.py); this checks the other direction: no stage declares what it does not need."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", "profiles", "nlhf", "notebooks")


def _dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([*DVC, *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _stale(repo: Path) -> set[str]:
    """The stages `dvc status` reports, less `check` (it validates the whole of params.yaml, so any edit makes it
    stale; its output never changes, so nothing downstream of it reruns for that)."""
    return set(json.loads(_dvc(repo, "status", "--json") or "{}")) - {"check"}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The pipeline's files with a stand-in for every output, all stages up to date."""
    from dvc.repo import Repo

    repo = tmp_path_factory.mktemp("deps")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")
    with Repo(str(repo)) as r:
        stages = list(r.index.stages)
    outs = {str(o.def_path) for st in stages for o in st.outs}
    deps = {str(d.def_path) for st in stages for d in st.deps if not hasattr(d, "params")}
    for out in outs:
        inside = [d for d in deps if d.startswith(out + "/")]
        path = repo / out
        if inside:  # a folder output some stage reads a file of
            for d in inside:
                (repo / d).parent.mkdir(parents=True, exist_ok=True)
                (repo / d).write_text(d)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(out)
    _dvc(repo, "commit", "--force", "--quiet")
    assert _stale(repo) == set()
    return repo


def _stale_after_edit(repo: Path, section: str, key: str, value) -> set[str]:
    """The stages `dvc status` reports with ``params.yaml`` ``section.key`` set to ``value``; the file is put back."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return _stale(repo)
    finally:
        shutil.copy2(ROOT / "params.yaml", repo / "params.yaml")


def test_eval_n_prompts_reruns_only_eval(scratch):
    assert _stale_after_edit(scratch, "eval", "n_prompts", 500) == {"eval"}


def test_the_reward_models_params_rerun_the_rm_and_what_reads_it(scratch):
    """An RM param: only the rm stage; its new model then: the oracle (RLHF's target under the trained RM) and the
    policies trained against the RM, not those trained against the PM."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    rlhf = {n for n, m in params["methods"].items() if m["judged_by"] == "rm"}
    seed_rlhf = {n for n, j in params["ablation"]["seed_methods"].items() if j == "rm"}
    assert rlhf and seed_rlhf and len(rlhf) < len(params["methods"])
    for section, key, value in (("rm", "lr", 0.001), ("reward_model", "head_hidden", 64)):
        assert _stale_after_edit(scratch, section, key, value) == {"preference@rm"}, (section, key)
    model = scratch / "artifacts" / "models" / "rm"
    original = model.read_text()
    model.write_text("a retrained reward model")
    try:
        assert _stale(scratch) == {"preference@rm", "oracle", *(f"policy@{n}" for n in rlhf),
                                   *(f"policy_seed@{n}" for n in seed_rlhf)}
    finally:
        model.write_text(original)
    assert _stale(scratch) == set()


def test_the_preference_models_params_rerun_only_the_pm(scratch):
    assert _stale_after_edit(scratch, "pm", "steps", 10) == {"preference@pm"}
