"""Sweeps (nlhf.pipeline.sweep, nlhf.pipeline.sweep_report): a tiny two-point, one-seed sweep on the tiny profile,
run as a user runs it (`python -m nlhf.pipeline.sweep predict|train|report`) in a scratch copy of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nlhf.config import ConfigError
from nlhf.pipeline.sweep import SweepSpec, load_sweep, run_config, runs

ROOT = Path(__file__).resolve().parents[1]
TINY_SWEEP = {
    "name": "tiny", "key": "task.synthetic.rater_weights",
    "points": {"e0.26": [0.50, 0.26, 0.08, 0.08, 0.08], "e0.16": [0.60, 0.16, 0.08, 0.08, 0.08]},
    "seeds": [3], "exact_methods": ["RLHF", "SP", "MD1"], "paper_methods": ["RLHF", "MD1"],
    "paper_points": ["e0.16"], "overrides": {"runtime.torch_threads": 1},
}


def _sweep(repo: Path, phase: str, name: str = "tiny", check: bool = True, *extra: str):
    r = subprocess.run([sys.executable, "-m", "nlhf.pipeline.sweep", phase, f"sweeps/{name}.yaml", *extra], cwd=repo,
                       capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and r.returncode != 0:
        raise AssertionError(f"sweep {phase} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny sweep's predict phase, a premature train (refused), then train and report."""
    repo = tmp_path_factory.mktemp("sweep_repo")
    for part in ("nlhf", "profiles"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "tiny"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "sweeps").mkdir()
    (repo / "sweeps" / "tiny.yaml").write_text(yaml.safe_dump(TINY_SWEEP))
    git = lambda *a: subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *a], cwd=repo,  # noqa
                                    check=True, capture_output=True)
    git("init", "-q")
    early = _sweep(repo, "train", "tiny", False)
    predict = _sweep(repo, "predict")
    again = _sweep(repo, "predict")
    uncommitted = _sweep(repo, "train", "tiny", False)
    git("add", "-A")
    git("commit", "-qm", "predictions")
    # the second point's SFT and oracle on their own, as the stages would run them (the sweep copied the first
    # point's SFT model and candidate pools)
    alone = ("import shutil, sys; from nlhf.pipeline import stages\n"
             "from nlhf.pipeline.sweep import load_sweep, runs, run_config\n"
             "spec = load_sweep('sweeps/tiny.yaml'); cfg = run_config(spec, runs(spec, ['e0.16'])[0])\n"
             "src = cfg.paths.artifacts; cfg.paths.artifacts = 'artifacts/alone'\n"
             "shutil.copytree(src + '/data', 'artifacts/alone/data'); stages.run_sft(cfg)\n"
             "cfg.paths.results = 'results/alone'; stages.run_oracle(cfg, with_rm=False)")
    subprocess.run([sys.executable, "-c", alone], cwd=repo, check=True, capture_output=True, timeout=600)
    exact_only = _sweep(repo, "train", "tiny", True, "--jobs", "2", "--settings", "exact")
    exact_table = pd.read_csv(repo / "results/sweeps/tiny/e0.16/seed3/sweep/table_long.csv")
    then_paper = _sweep(repo, "train")
    _sweep(repo, "report")
    return {"repo": repo, "early": early, "predict": predict, "again": again, "uncommitted": uncommitted,
            "exact_only": exact_only, "exact_table": exact_table, "then_paper": then_paper}


def test_spec_errors_name_the_key(tmp_path):
    spec = SweepSpec(**{**TINY_SWEEP, "overrides": {"pg.no_such_key": 1}})
    with pytest.raises(ConfigError, match="pg.no_such_key"):
        run_config(spec, runs(spec)[0], ROOT / "params.yaml")
    with pytest.raises(ValueError, match="paper_points"):
        SweepSpec(**{**TINY_SWEEP, "paper_points": ["e0.5"]})
    spec = SweepSpec(**{**TINY_SWEEP, "exact_methods": ["NOPE"]})
    with pytest.raises(ConfigError, match="NOPE"):
        run_config(spec, runs(spec)[0], ROOT / "params.yaml")
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump({**TINY_SWEEP, "seeds": [1, 1]}))
    with pytest.raises(ConfigError, match="seeds"):
        load_sweep(bad)


def test_a_seed_redraws_the_whole_chain():
    spec = SweepSpec(**{**TINY_SWEEP, "seeds": [3]})
    cfg = run_config(spec, runs(spec)[0], ROOT / "params.yaml")
    assert (cfg.seed, cfg.task.synthetic.seed, cfg.sft.seed, cfg.pm.seed, cfg.rm.seed, cfg.pg.seed,
            cfg.preference_data.seed, cfg.oracle.seed, cfg.eval.seed) == (3,) * 9
    assert cfg.task.synthetic.rater_weights == TINY_SWEEP["points"]["e0.26"]
    assert list(cfg.methods) == ["RLHF", "SP", "MD1"] and cfg.ablation.methods == ["RLHF", "SP", "MD1"]
    assert cfg.paths.artifacts == "artifacts/sweeps/tiny/e0.26/seed3"


@pytest.mark.slow
def test_training_waits_for_the_prediction(swept):
    assert swept["early"].returncode != 0 and "no prediction yet" in swept["early"].stderr
    assert swept["uncommitted"].returncode != 0 and "commit the predictions" in swept["uncommitted"].stderr
    assert "policy_exact" not in swept["uncommitted"].stdout  # refused before any run started
    assert "oracle: done" in swept["again"].stdout and "running" not in swept["again"].stdout


def test_settings_train_apart_and_agree(swept):
    """``--settings exact`` at a paper point trains no PM, RM or paper policy; the later call trains those only and
    evaluates again with the exact-judge samples unchanged."""
    assert "pm: running" not in swept["exact_only"].stdout and "policy@" not in swept["exact_only"].stdout
    later = swept["then_paper"].stdout
    assert "[tiny e0.16/seed3] policy_exact@MD1: done" in later and "[tiny e0.16/seed3] pm: running" in later
    assert "[tiny e0.26/seed3] evaluate: done" in later  # nothing to add where the paper setting is not trained
    final = pd.read_csv(swept["repo"] / "results/sweeps/tiny/e0.16/seed3/sweep/table_long.csv")
    key = ["row", "column"]
    merged = swept["exact_table"].merge(final, on=key, suffixes=("", "_final"))
    assert len(merged) == len(swept["exact_table"]) > 0 and "MD1 (PM/RM)" in set(final["column"])
    assert (merged["p"] == merged["p_final"]).all()


@pytest.mark.slow
def test_shared_sft_and_pools_are_what_the_point_would_make(swept):
    """The second point copies the first point's SFT model and reads its candidate pools; the sft and oracle stages
    run alone on the second point give the same bytes: SFT, rater-labelled comparisons, targets."""
    from nlhf.training.checkpoint import content_hash

    repo = swept["repo"]
    assert "sft: the SFT model of" in swept["predict"].stdout
    shared, alone = repo / "artifacts/sweeps/tiny/e0.16/seed3", repo / "artifacts/alone"
    for part in ("models/sft", "sft_pairs", "oracle"):
        assert content_hash(shared / part) == content_hash(alone / part), part
    assert len(list((repo / "artifacts/sweeps/.pools").glob("*.json"))) == 1  # one pool set for both points
    first = repo / "artifacts/sweeps/tiny/e0.26/seed3"  # other raters: other preference labels, the same SFT rows
    assert content_hash(first / "data/prefs") != content_hash(shared / "data/prefs")
    assert content_hash(first / "data/sft") == content_hash(shared / "data/sft")


@pytest.mark.slow
def test_report_holds_predictions_and_results(swept):
    root = swept["repo"] / "results/sweeps/tiny"
    pred = pd.read_csv(root / "predictions.csv")
    assert set(pred["point"]) == {"e0.26", "e0.16"}
    oracle = pd.read_csv(swept["repo"] / "results/sweeps/tiny/e0.16/seed3/oracle/completist/table_long.csv")
    want = oracle[(oracle["row"] == "RLHF") & (oracle["column"] == "MD1")]["p"].iloc[0]
    assert pred.set_index("point").loc["e0.16", "MD1 vs RLHF"] == pytest.approx(want)
    cells = pd.read_csv(root / "cells.csv")
    trained = pd.read_csv(swept["repo"] / "results/sweeps/tiny/e0.16/seed3/sweep/table_long.csv")
    row = cells[(cells["point"] == "e0.16") & (cells["cell"] == "MD1 vs RLHF")].iloc[0]
    exact = trained[(trained["row"] == "RLHF") & (trained["column"] == "MD1")]["p"].iloc[0]
    paper = trained[(trained["row"] == "RLHF (PM/RM)") & (trained["column"] == "MD1 (PM/RM)")]["p"].iloc[0]
    assert (row["exact"], row["paper"]) == pytest.approx((exact, paper))
    assert np.isnan(cells[(cells["point"] == "e0.26") & (cells["cell"] == "MD1 vs RLHF")]["paper"].iloc[0])
    # the forms' contributions add up to the headline cell's margin
    forms = pd.read_csv(root / "forms.csv")
    for (point, setting), g in forms.groupby(["point", "setting"]):
        c = cells[(cells["point"] == point) & (cells["cell"] == "MD1 vs RLHF")].iloc[0][setting]
        assert g["contribution"].sum() == pytest.approx(c - 0.5, abs=1e-9)
    assert "## e0.16, paper judges: margin" in (root / "forms.md").read_text()
    # the reported prompts are not the oracle's (the convergence probe's, on which recipes are chosen)
    samples = pd.read_csv(swept["repo"] / "results/sweeps/tiny/e0.16/seed3/sweep/samples.csv")
    probe = json.loads((swept["repo"] / "artifacts/sweeps/tiny/e0.16/seed3/oracle/pools.json").read_text())["prompts"]
    assert not set(samples["prompt"]) & set(probe)
    report = json.loads((root / "report.json").read_text())
    assert report["trained_runs"] == 2 and "slope" in report["fit"]["exact"]
    assert (root / "trained_vs_predicted.png").stat().st_size > 10_000 and (root / "frontier.png").is_file()
    opt = pd.read_csv(root / "overoptimisation.csv")
    assert len(opt) == 3 * 2 + 2  # exact methods at both points, paper methods at one
    per_method = pd.read_csv(root / "overoptimisation_summary.csv").set_index("row")
    assert len(per_method) == len(opt) and (per_method["seeds"] == 1).all()  # one seed per run here
    assert per_method.loc["e0.16 paper MD1", "kl_final"] == pytest.approx(
        opt[(opt.point == "e0.16") & (opt.setting == "paper") & (opt.policy == "MD1")]["kl_final"].iloc[0], abs=1e-3)
    assert report["runs_not_trained"] == [] and report["runs_without_prediction"] == []


def _per_run(values: dict[str, list[float]], predicted: dict[str, float]) -> pd.DataFrame:
    """A per-run table of one point: cell -> the exact-judge values of its seeds."""
    return pd.DataFrame([{"point": "p", "seed": k, "cell": c, "predicted": predicted[c], "exact": v,
                          "exact_ci": 0.01, "paper": np.nan, "paper_ci": np.nan}
                         for c, vs in values.items() for k, v in enumerate(vs)])


def test_summary_verdicts_against_half_and_against_the_prediction():
    from scipy import stats

    from nlhf.evaluate import holm
    from nlhf.pipeline.sweep_report import summary

    spec = SweepSpec(**TINY_SWEEP)
    per_run = _per_run({"A vs B": [0.60, 0.61, 0.62], "C vs D": [0.50, 0.51, 0.49], "E vs F": [0.55, 0.58, 0.52]},
                       {"A vs B": 0.70, "C vs D": 0.50, "E vs F": 0.55})
    out = summary(spec, per_run).set_index("cell")
    half = stats.t.ppf(0.975, 2) * np.std([0.60, 0.61, 0.62], ddof=1) / np.sqrt(3)
    assert out.loc["A vs B", "exact"] == pytest.approx(0.61) and out.loc["A vs B", "exact_seed_ci"] == pytest.approx(half)
    assert out.loc["A vs B", "exact_verdict"] == "A ahead" and out.loc["A vs B", "exact_vs_prediction"] == "below"
    assert out.loc["C vs D", "exact_verdict"] == "n.s." and out.loc["C vs D", "exact_vs_prediction"] == "agrees"
    assert out.loc["E vs F", "exact_vs_prediction"] == "agrees"
    assert out.loc["A vs B", "exact_minus_predicted"] == pytest.approx(-0.09)
    # Holm: the smallest p times m, then step down, never decreasing
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # seeds that agree exactly: significant unless their mean is the null
    same = summary(spec, _per_run({"A vs B": [0.6, 0.6, 0.6]}, {"A vs B": 0.6})).iloc[0]
    assert same["exact_verdict"] == "A ahead" and same["exact_vs_prediction"] == "agrees"


def test_fit_recovers_the_slope_and_the_null():
    from nlhf.pipeline.sweep_report import fit

    rows = [{"point": f"p{k}", "seed": s, "cell": "MD1 vs RLHF", "predicted": x, "exact": 0.5 + 0.5 * (x - 0.5) + e,
             "paper": np.nan} for k, x in enumerate([0.5, 0.55, 0.6]) for s, e in enumerate([-0.01, 0.0, 0.01])]
    out = fit(pd.DataFrame(rows), "MD1 vs RLHF", "p0")
    assert out["exact"]["slope"] == pytest.approx(0.5)
    assert out["exact"]["null"]["mean"] == pytest.approx(0.5) and out["exact"]["null"]["covers_half"]
    # a sweep whose predictions do not move (every point 0.596 ± 0.0005) has no slope to report, whatever the noise
    flat = [dict(r, predicted=0.596 + 0.0005 * (k - 1)) for k, r in
            zip([int(r["point"][1]) for r in rows], rows)]
    out = fit(pd.DataFrame(flat), "MD1 vs RLHF", None)
    assert "slope" not in out["exact"] and "span 0.0010, within 0.01" in out["exact"]["no_slope"]
    assert "null" not in out["exact"]
