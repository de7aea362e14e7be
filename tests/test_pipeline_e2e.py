"""The real pipeline, end to end, on the tiny profile: `dvc repro` runs every stage's notebook through papermill
in a temporary copy of the repo (the committed results/ and dvc.lock are never touched), with outbound network
blocked in every process (tests/netguard/sitecustomize.py). Also the ways a run could silently go wrong: a bad
param or a disagreeing $NLHF_PROFILE stops `dvc repro` before any output is touched, `dvc repro -f` starts training
from scratch, a resume state is not resumed against a retrained upstream model, and importing the package leaves
`dvc status` clean."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nlhf.paper import PAPER_POLICIES
from nlhf.pipeline.params import load_config

ROOT = Path(__file__).resolve().parents[1]
GUARD = Path(__file__).resolve().parent / "netguard"
TINY_ABLATION = ("RLHF", "SP", "EMA1", "IPO")  # the exact-judge stages of the tiny run


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["DO_NOT_TRACK"] = "1"
    # tiny models: one intra-op thread each; on a machine whose cores are busy, spinning OpenMP workers of several
    # processes slow each other down many times over
    env["OMP_NUM_THREADS"] = "1"
    env.pop("NLHF_PROFILE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # imports write __pycache__, as on a user's machine
    return env


def _run(args, cwd, check=True, **env):
    r = subprocess.run(args, cwd=cwd, env={**_env(), **env}, capture_output=True, text=True, timeout=1500)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n"
                             f"{r.stderr[-6000:]}")
    return r


def copy_working_tree(dst: Path) -> None:
    """The working tree's files (tracked + untracked, not ignored) into ``dst``, less results/, artifacts/ and
    dvc.lock: what a fresh clone has before its first `dvc repro`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("results/", "artifacts/")) and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """A copy of the working tree (tracked + untracked, not ignored) with `profile: tiny`, as a fresh git repo."""
    dst = tmp_path_factory.mktemp("repo")
    copy_working_tree(dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["profile"] = "tiny"
    # the exact-judge ablation on one method of each kind (reward judge, mixture opponent, averaged policy, pairwise
    # loss); set in params.yaml, where DVC's foreach reads it (a profile may not change the list)
    params["ablation"]["methods"] = list(TINY_ABLATION)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dst)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dst)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"], dst)
    _run([sys.executable, "-m", "dvc", "repro"], dst)
    return dst


@pytest.mark.slow
def test_dvc_repro_runs_the_whole_dag(tiny_repo):
    r = tiny_repo / "results"
    for nb in ["00_tabular_nash_md", "01_data", "02_sft", "03_preference_models_pm", "03_preference_models_rm",
               "04_policy_MD1", "04_policy_EMA2", "05_evaluation"]:
        executed = json.loads((r / "notebooks" / f"{nb}.ipynb").read_text())
        assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code"), nb
    long = pd.read_csv(r / "eval" / "table_exact_long.csv")
    # the paper's 14 policies and the added method (online IPO), every one of them trained and judged
    assert set(long["row"]) == set(PAPER_POLICIES) | {"IPO"} and len(long) == 15 * 15
    # antisymmetric table with 1/2 on the diagonal, every cell with a CI
    piv = long.pivot(index="row", columns="column", values="p")
    assert ((piv + piv.T - 1).abs().max().max()) < 1e-9
    assert (long[long.row == long.column]["p"] == 0.5).all()
    assert long["ci"].notna().all()
    card = pd.read_csv(r / "eval" / "scorecard_exact.csv")
    assert {"claim", "paper", "ours", "ci95", "outcome", "oracle", "oracle_outcome"} <= set(card.columns)
    assert len(card) >= 8 and set(card["outcome"]) <= {"agrees", "inconclusive", "disagrees"}
    # the oracle: both populations solved, each with an antisymmetric table of the oracle policies
    for population in ("condorcet", "completist"):
        olong = pd.read_csv(r / "oracle" / population / "table_long.csv")
        opiv = olong.pivot(index="row", columns="column", values="p")
        assert ((opiv + opiv.T - 1).abs().max().max()) < 1e-9
        assert (opiv.loc[:, "NE"] >= 0.5 - 1e-9).all()  # nothing beats the Nash equilibrium
    assert {"normalized_margin", "in_oracle_pool"} <= set(pd.read_csv(r / "eval" / "per_policy.csv"))
    # convergence probes: the start and every 5% of the 4 tiny steps, for each set of policies
    # each variant's step count: pg.steps (ablation.steps for the exact judges), the probe at every step here
    cfg = load_config(tiny_repo / "params.yaml")
    for folder, name, steps in (("convergence", "MD1", cfg.pg.steps), ("convergence_exact", "RLHF", cfg.ablation.steps),
                                ("convergence_seed", "BR", cfg.pg.steps)):
        probe = pd.read_csv(r / folder / f"{name}.csv")
        assert list(probe["step"]) == list(range(steps + 1)), folder
        assert probe[["p_vs_sft", "p_vs_target", "kl"]].notna().all().all()
    assert cfg.ablation.steps != cfg.pg.steps  # profiles/tiny.yaml keeps them apart, so this checks the routing
    # each variant's learning rate: pg.lr (ablation.lr for the exact judges), cosine-decayed to pg.final_lr_fraction
    for variant, name, lr in (("paper", "MD1", cfg.pg.lr), ("exact", "SP", cfg.ablation.lr or cfg.pg.lr)):
        curve = pd.read_csv(r / "policy" / name / "curve.csv" if variant == "paper" else
                            r / "policy_exact" / name / "curve.csv")
        assert curve["lr"].iloc[-1] == pytest.approx(lr * cfg.pg.final_lr_fraction), variant
    assert cfg.ablation.lr != cfg.pg.lr  # the default params keep the two rates apart, so this checks the routing
    # the exact-judge ablation's table, its signs against the oracle, the second seed, the side-by-side scorecard
    ablation = pd.read_csv(r / "eval" / "table_exact_judge_training_long.csv")
    assert set(ablation["row"]) == {"SFT", *TINY_ABLATION, "EMA1*"}
    # DVC built exactly those exact-judge stages, and eval read what they trained
    assert sorted(p.name for p in (tiny_repo / "artifacts" / "policies_exact").iterdir()) == sorted(TINY_ABLATION)
    assert cfg.ablation.methods == list(TINY_ABLATION)
    assert set(pd.read_csv(r / "eval" / "seeds.csv")["comparison"]) == {"P(MD1 ≻ RLHF)", "P(MD1 ≻ SP)", "P(BR ≻ RLHF)"}
    side = pd.read_csv(r / "eval" / "scorecard_side_by_side.csv")
    assert {"oracle outcome", "exact-judge outcome", "paper-setting outcome", "paper"} <= set(side.columns)
    plots = json.loads(_dvc(tiny_repo, "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots["errors"]
    for name in ("results/convergence/MD1.csv", "results/convergence_exact/SP.csv", "SFT loss [nats per token]",
                 "results/policy/MD1/curve.csv"):
        assert name in plots["data"], (name, sorted(plots["data"])[:20])
    assert any("beta sweep" in name for name in plots["data"])
    # the DVC metrics are the small per-stage summaries: numbers only, at most 40 columns in all
    shown = next(iter(json.loads(_dvc(tiny_repo, "metrics", "show", "--json").stdout).values()))["data"]
    assert shown and all(f.startswith("results/summary/") for f in shown), sorted(shown)
    columns = {k for f in shown.values() for k in f["data"]}
    assert 10 <= len(columns) <= 40, sorted(columns)
    for stage in ["tabular", "data", "sft", "pm", "rm", "policy_RLHF", "policy_EMA1", "oracle", "eval"]:
        assert (r / "metrics" / f"{stage}.json").exists(), stage
    # timings live outside the hashed outputs that later stages depend on (eval depends on pm.json and rm.json)
    for stage in ["data", "sft", "pm", "rm", "policy_MD1"]:
        assert "runtime_s" not in json.loads((r / "metrics" / f"{stage}.json").read_text()), stage
        assert json.loads((r / "timings" / f"{stage}.json").read_text())["runtime_s"] > 0, stage
    resume = tiny_repo / "artifacts" / ".resume"
    assert not resume.exists() or not any(resume.iterdir())  # every stage finished and removed its state


def _dvc(repo, *args, check=True, **env):
    return _run([sys.executable, "-m", "dvc", *args], repo, check=check, **env)


def _ran(out: str) -> set:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def _edit_params(repo, edit) -> str:
    """Apply ``edit`` to the repo's params.yaml; returns the previous text (to put back)."""
    before = (repo / "params.yaml").read_text()
    params = yaml.safe_load(before)
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return before


@pytest.mark.slow
def test_second_repro_is_a_no_op_and_a_method_change_reruns_only_that_policy_and_eval(tiny_repo):
    out = _dvc(tiny_repo, "status").stdout
    assert "up to date" in out, out
    r = tiny_repo / "results"
    before = {f: (r / f).read_bytes() for f in ("metrics/policy_MD3.json", "eval/table_exact_long.csv",
                                                "metrics/eval.json")}
    # β (and τ, so that 4 tiny steps surely give other weights; with β alone the seeded draws can coincide and
    # then DVC rightly sees eval's inputs unchanged)
    original = _edit_params(tiny_repo, lambda p: p["methods"]["MD3"].update(beta=0.9, tau=0.5))
    status = json.loads(_dvc(tiny_repo, "status", "--json").stdout)
    # check validates every param; the oracle solves every method's target; eval reads the methods (the β of its
    # β-sweep table, each policy's target)
    assert set(status) == {"check", "oracle", "policy@MD3", "eval"}, status
    out = _dvc(tiny_repo, "repro").stdout
    # only that policy, its oracle target and the table downstream of them (check's output does not change, so it
    # invalidates nothing)
    assert _ran(out) == {"check", "oracle", "policy@MD3", "eval"}, out
    assert (r / "metrics/policy_MD3.json").read_bytes() != before["metrics/policy_MD3.json"]
    # put β back: the same stages rerun and, being seeded, give back the original results byte for byte
    (tiny_repo / "params.yaml").write_text(original)
    assert _ran(_dvc(tiny_repo, "repro").stdout) == {"check", "oracle", "policy@MD3", "eval"}
    for f, content in before.items():
        assert (r / f).read_bytes() == content, f
    assert "up to date" in _dvc(tiny_repo, "status").stdout


@pytest.mark.slow
def test_bad_params_stop_dvc_repro_before_any_output_is_touched(tiny_repo):
    """A bad value (or an $NLHF_PROFILE that disagrees with params.yaml) fails the `check` stage, which runs first:
    no stage has deleted its outputs and no executed notebook is overwritten."""
    watched = [tiny_repo / "results/notebooks/04_policy_MD1.ipynb", tiny_repo / "results/metrics/pm.json",
               tiny_repo / "artifacts/policies/MD1/policy/model.safetensors"]
    before = [f.read_bytes() for f in watched]
    original = _edit_params(tiny_repo, lambda p: p["pg"].update(lr=float("inf")))
    try:
        r = _dvc(tiny_repo, "repro", check=False)
        assert r.returncode != 0
        assert "pg.lr: must be a finite number, got inf" in r.stdout + r.stderr, r.stderr[-3000:]
        assert _ran(r.stdout) == {"check"}, r.stdout
        assert [f.read_bytes() for f in watched] == before
        (tiny_repo / "params.yaml").write_text(original)
        _edit_params(tiny_repo, lambda p: p["methods"]["MD1"].update(tau=0.01))
        r = _dvc(tiny_repo, "repro", "policy@MD1", check=False, NLHF_PROFILE="cpu")
        assert r.returncode != 0 and _ran(r.stdout) == {"check"}, r.stdout
        assert "$NLHF_PROFILE=cpu disagrees with profile 'tiny'" in r.stdout + r.stderr, r.stderr[-3000:]
        assert [f.read_bytes() for f in watched] == before
    finally:
        (tiny_repo / "params.yaml").write_text(original)
    _dvc(tiny_repo, "repro", "check")  # validated again; nothing downstream changes
    assert "up to date" in _dvc(tiny_repo, "status").stdout


@pytest.mark.slow
def test_forced_repro_and_a_changed_param_start_training_fresh(tiny_repo):
    """`dvc repro -f` reruns `check`, which deletes the resumable states: every stage starts from scratch."""
    resume = tiny_repo / "artifacts" / ".resume"
    resume.mkdir(parents=True, exist_ok=True)
    (resume / "policy_MD1.pt").write_bytes(b"a state of an interrupted run")
    r = _dvc(tiny_repo, "repro", "-f", "-s", "check")
    assert not (resume / "policy_MD1.pt").exists()
    assert "removed the resumable state artifacts/.resume/policy_MD1.pt" in r.stdout, r.stdout
    assert "up to date" in _dvc(tiny_repo, "status").stdout  # the check's output is unchanged


@pytest.mark.slow
def test_importing_the_package_leaves_dvc_status_clean(tiny_repo):
    """Bytecode caches and other run debris in dependency folders are not changes (.dvcignore)."""
    imports = "import nlhf.pipeline.stages, nlhf.tasks.tldr, nlhf.training.supervised, nlhf.__main__"
    _run([sys.executable, "-c", imports], tiny_repo)
    assert list((tiny_repo / "nlhf").rglob("__pycache__")), "the import should have written bytecode"
    for d in ("nlhf/tasks/__pycache__", "nlhf/training/__pycache__", "notebooks/.ipynb_checkpoints",
              "profiles/.ipynb_checkpoints"):
        (tiny_repo / d).mkdir(parents=True, exist_ok=True)
        (tiny_repo / d / "x.pyc").write_bytes(b"debris")
    assert "up to date" in _dvc(tiny_repo, "status").stdout


@pytest.mark.slow
def test_resume_state_is_not_used_against_a_retrained_preference_model(tiny_repo, tmp_path):
    """policy@MD1 killed after its step-2 checkpoint, then the PM retrained with another lr: the rerun ignores the
    checkpoint (its fingerprint holds the old PM's content hash) and equals a clean run against the new PM. Killed
    again and rerun with another top-level seed: the checkpoint is ignored too (the fingerprint holds every param
    the stage reads)."""
    shutil.copytree(tiny_repo / "artifacts", tmp_path / "a")
    code = f"""
import json, torch
from nlhf.models import PreferenceModel
from nlhf.pipeline import stages
from nlhf.pipeline.params import load_config

cfg = load_config("params.yaml")
cfg.paths.artifacts = {str(tmp_path / 'a')!r}; cfg.paths.results = {str(tmp_path / 'r')!r}
load = PreferenceModel.from_pretrained

class Killed(Exception):
    pass

def killing(path):  # the judge dies at its 3rd call: after the step-2 checkpoint of the 4-step run
    pm, calls = load(path), [0]
    inner = pm.logits_from_ids
    def logits_from_ids(*a):
        calls[0] += 1
        if calls[0] == 3:
            raise Killed
        return inner(*a)
    pm.logits_from_ids = logits_from_ids
    return pm

def killed_policy_run():  # policy@MD1 killed after its step-2 checkpoint: a resume state is left
    PreferenceModel.from_pretrained = staticmethod(killing)
    try:
        stages.run_policy(cfg, "MD1")
    except Killed:
        pass
    del PreferenceModel.from_pretrained
    assert cfg.layout.resume("policy_MD1").exists()

killed_policy_run()
cfg.pm.lr *= 3
stages.run_preference(cfg, "pm")
stages.run_policy(cfg, "MD1")
from safetensors.torch import load_file
after = load_file(str(cfg.layout.policy("MD1") / "policy" / "model.safetensors"))
stages.run_policy(cfg, "MD1")  # a clean run: no resume state left
clean = load_file(str(cfg.layout.policy("MD1") / "policy" / "model.safetensors"))
equal = all(torch.equal(after[k], clean[k]) for k in clean)
# killed again, then rerun with another top-level seed (the probe's and the averaged policy's samples)
killed_policy_run()
cfg.seed += 1
print("SEED CHANGED")
stages.run_policy(cfg, "MD1")
print(json.dumps({{"equal": equal}}))
"""
    r = _run([sys.executable, "-c", code], tiny_repo)
    first, seed = r.stdout.split("SEED CHANGED")
    assert "[policy@MD1] ignoring checkpoint" in first and "starting fresh" in first, r.stdout[-3000:]
    assert "[policy@MD1] ignoring checkpoint" in seed and "resumed" not in seed, seed[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"equal": True}


@pytest.mark.slow
def test_same_seed_gives_identical_tables(tiny_repo, tmp_path):
    """A second, independent run of every stage (`python -m nlhf run <stage> ...`: one process, other output paths)
    reproduces the table bitwise: a stage's result does not depend on what ran before it in the process."""
    from nlhf.pipeline.layout import Layout
    from nlhf.pipeline.params import load_config

    shutil.copytree(tiny_repo / "profiles", tmp_path / "profiles")
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["paths"] = {"artifacts": "a", "results": "r"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_config(tmp_path / "params.yaml")
    names = [("paper", cfg.methods), ("exact", cfg.ablation.methods), ("seed", cfg.ablation.seed_methods)]
    stages = ["data", "sft", "preference@pm", "preference@rm", "oracle",
              *(Layout.policy_stage(m, variant) for variant, methods in names for m in methods), "eval"]
    _run([sys.executable, "-m", "nlhf", "run", *stages, "--params", "params.yaml"], tmp_path,
         PYTHONPATH=os.pathsep.join([str(GUARD), str(tiny_repo)]))
    a = pd.read_csv(tiny_repo / "results" / "eval" / "table_exact_long.csv")
    b = pd.read_csv(tmp_path / "r" / "eval" / "table_exact_long.csv")
    pd.testing.assert_frame_equal(a, b)
    assert (a["p"] != 0.5).any()  # the table is not trivially constant
    for population in ("completist", "condorcet"):  # the oracle is deterministic too
        pd.testing.assert_frame_equal(pd.read_csv(tiny_repo / "results" / "oracle" / population / "table_long.csv"),
                                      pd.read_csv(tmp_path / "r" / "oracle" / population / "table_long.csv"))
