"""``nlhf.pipeline.layout.Layout`` names every path, and dvc.yaml declares exactly those paths for each stage."""

import re
from pathlib import Path

import pytest
import yaml

from nlhf.pipeline.layout import Layout
from nlhf.pipeline.params import load_config

ROOT = Path(__file__).resolve().parents[1]


def _dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them (``foreach`` expanded over params.yaml): each one's artifact and result
    paths, as the lists ``deps`` and ``outs`` (metrics and plots included), and its command."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {st.addressing: {"deps": [str(d.def_path) for d in st.deps if not isinstance(d, ParamsDependency)],
                                "outs": [str(o.def_path) for o in st.outs], "cmd": st.cmd}
                for st in repo.index.stages}


def _paths(entries) -> set[str]:
    """The artifact and result paths of a dvc.yaml list (strings, or one-key mappings of a path to its options)."""
    paths = set()
    for e in entries or []:
        for p in ([e] if isinstance(e, str) else list(e)):
            if p.startswith(("artifacts/", "results/")):
                paths.add(p)
    return paths


STAGES = _dvc_stages()
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_paths_are_the_ones_dvc_yaml_spells():
    cfg = load_config(ROOT / "params.yaml")
    assert (cfg.paths.artifacts, cfg.paths.results) == ("artifacts", "results")
    assert cfg.layout.artifacts_root == Layout().artifacts_root and cfg.layout.results_root == Layout().results_root


def test_every_stage_is_covered():
    kinds = {s.split("@")[0] for s in STAGES}
    assert kinds == {"check", "tabular", "data", "sft", "preference", "oracle", "policy", "policy_exact",
                     "policy_seed", "eval"}
    assert {"preference@pm", "preference@rm", "policy@MD1", "policy_exact@RLHF", "policy_seed@BR"} <= set(STAGES)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_outs_are_the_layouts(stage):
    spec, layout = STAGES[stage], Layout()
    declared = _paths(spec["outs"])
    assert declared == {str(p) for p in layout.outs(stage)}
    if stage != "check":
        assert str(layout.metrics(stage)) in declared and str(layout.notebook(stage)) in spec["cmd"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_deps_are_the_layouts(stage):
    kind, _, item = stage.partition("@")
    judged_by = PARAMS["methods"][item]["judged_by"] if kind in ("policy", "policy_seed") else None
    if kind == "policy_seed":  # the seed list names each method's judge too, for DVC
        assert PARAMS["ablation"]["seed_methods"][item] == judged_by
    assert _paths(STAGES[stage]["deps"]) == {str(p) for p in Layout().deps(stage, judged_by)}


def test_check_writes_the_layouts_marker():
    assert f"--out {Layout().check_ok}" in STAGES["check"]["cmd"]


def test_top_level_plots_lie_in_layout_folders():
    layout = Layout()
    folders = {layout.convergence("x", v).parent for v in Layout.POLICY_VARIANTS}
    folders |= {layout.results(f) for f in ("policy", "sft", "pm", "rm", "eval")}
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for entry in dvc["plots"]:
        (name, spec), = entry.items()
        files = [name] if name.startswith("results/") else list(spec["y"])
        for f in files:
            assert Path(f) in folders or Path(f).parent in folders, f


def test_layout_names():
    lay = Layout("a", "r")
    assert lay.policy("MD1", "exact") == Path("a/policies_exact/MD1")
    assert lay.policy_stage("MD1", "seed") == "policy_seed@MD1" and lay.policy_key("MD1") == "policy_MD1"
    assert lay.key("preference@rm") == "rm" and lay.key("policy_exact@SP") == "policy_exact_SP"
    assert lay.key("policy_exact_SP") == "policy_exact_SP" and lay.dvc_stage("pm") == "preference@pm"
    assert lay.metrics("policy_exact@SP") == lay.metrics("policy_exact_SP") == Path("r/metrics/policy_exact_SP.json")
    assert lay.summary("pm") == Path("r/summary/pm.json") and lay.timings("eval") == Path("r/timings/eval.json")
    assert lay.results("preference@pm") == Path("r/pm") and lay.results("oracle", "condorcet") == Path(
        "r/oracle/condorcet")
    assert lay.policy_results("MD1", "seed") == Path("r/policy_seed/MD1")
    assert lay.notebook("preference@rm") == Path("r/notebooks/03_preference_models_rm.ipynb")
    assert lay.notebook("policy_exact@MD1") == Path("r/notebooks/04_policy_exact_MD1.ipynb")
    assert lay.resume("sft") == Path("a/.resume/sft.pt") and lay.tokenizer == Path("a/data/tokenizer")
    assert lay.data_counts == Path("a/data/metrics.json") and lay.sft_pairs("info.json") == Path(
        "a/sft_pairs/info.json")
    assert lay.oracle_target("RLHF (RM)") == Path("a/oracle/targets/RLHF_RM.json")
    assert lay.oracle_pools == Path("a/oracle/pools.json")
    with pytest.raises(ValueError, match="sft, pm or rm"):
        lay.model("policy")
    with pytest.raises(KeyError, match="unknown stage"):
        lay.outs("nope")


def test_write_metrics_writes_the_layouts_files(tmp_path, monkeypatch):
    from nlhf.pipeline.artifacts import write_metrics

    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "params.yaml")
    write_metrics(cfg, "policy_exact_MD1", {"probe": {"p_vs_sft": 0.75}, "runtime_s": 3.0})
    lay = cfg.layout
    stage = "policy_exact@MD1"
    assert sorted(str(p) for p in Path("results").rglob("*.json")) == sorted(
        str(p) for p in (lay.metrics(stage), lay.summary(stage), lay.timings(stage)))


def test_no_path_spelled_outside_the_layout():
    """The package and notebooks join no results/artifacts folder names themselves: every path is the Layout's."""
    pat = re.compile(r"cfg\.(results|artifacts) /|paths\.(results|artifacts)\)? /|artifacts_root /|results_root /")
    files = [*ROOT.glob("nlhf/**/*.py"), *ROOT.glob("notebooks/*.ipynb"), ROOT / "scripts/gpu_run.sh"]
    layout = ROOT / "nlhf/pipeline/layout.py"
    hits = [f"{f.relative_to(ROOT)}" for f in files if f != layout and pat.search(f.read_text())]
    assert not hits, hits
