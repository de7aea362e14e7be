"""The recipe sweeps in benchmarks/ build their runs against the package's current config (nothing is trained here):
every generated run applies to ``params.yaml``'s config and compiles."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nlhf.pipeline.params import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _stage_runs  # noqa: E402


def _load(rel: str):
    name = "bench_" + rel.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _applies(run: _stage_runs.StageRun):
    cfg = load_config(ROOT / "params.yaml")
    exec(run.setup, {"cfg": cfg, "dataclasses": dataclasses})
    compile(_stage_runs.program(run, Path("/tmp/sweep"), threads=1), run.tag, "exec")
    return cfg


def test_scorer_sweep_rows_apply_to_the_package_config():
    sweep = _load("benchmarks/scorer_recipe_sweep/sweep.py")
    recorded = pd.read_csv(sweep.RECORDED)
    rows = sweep.expressible(recorded)
    assert 0 < len(rows) < len(recorded)
    assert (rows["pool"] == "ymean+last+ysum").all()
    for row in rows.itertuples(index=False):
        cfg = _applies(sweep.stage_run(row))
        section = cfg.pm if row.kind == "pm" else cfg.rm
        assert (section.steps, section.batch_size, section.lr, section.seed) == (row.steps, row.batch, row.lr,
                                                                                  row.seed)


def test_pg_sweep_run_applies_to_the_package_config():
    sweep = _load("benchmarks/pg_recipe/sweep.py")
    cfg = _applies(sweep.stage_run("MD1", "paper", 3e-4, 40, 8, 4, 0.1))
    assert (cfg.pg.lr, cfg.pg.steps, cfg.pg.batch_size, cfg.pg.group_size, cfg.pg.final_lr_fraction) == (
        3e-4, 40, 8, 4, 0.1)
    assert (cfg.ablation.lr, cfg.ablation.steps) == (None, None)  # the swept lr and steps reach the exact stages too


def test_target_distance_measures_kl_mode_and_its_presence_in_sft_samples():
    td = _load("benchmarks/pg_recipe/target_distance.py")
    half = float(np.log(0.5))
    # two pools: the target sits on one of two equally likely candidates, then spreads evenly
    kl, top, mode_log_mu = td.kl_to_mu([[1.0, 0.0], [0.5, 0.5]], [[half, half], [half, half]])
    assert kl == pytest.approx(np.log(2) / 2) and top == pytest.approx(0.75) and mode_log_mu == pytest.approx(half)
    pools = {"candidates": [["a", "b"], ["c", "d"]], "sft_references": [["b", "b"], ["c"]]}
    assert td.mode_in_sft_samples([[1.0, 0.0], [0.9, 0.1]], pools) == pytest.approx(0.5)  # "a" never sampled, "c" is


def test_paper_scale_estimate_adds_up_its_phases():
    """The H100 estimate: the update is 6·N·B·(P+T) FLOPs at the assumed share of the peak, the phases add up to
    the step, and a larger preference model costs more scoring time only."""
    est = _load("benchmarks/paper_scale_estimate.py")
    s = est.Scale("x", policy=1e9, scorer=2e9, policy_layers=4, policy_width=256, batch=8, prompt=100, response=20)
    step = est.step_seconds(s, mfu=0.5, bw_frac=1.0, token_overhead=0.0)
    assert step["update"] == pytest.approx(6 * 1e9 * 8 * 120 / (est.PEAK * 0.5))
    assert step["total"] == pytest.approx(sum(step[k] for k in ("prefill", "scoring", "update", "decode")))
    bigger = est.step_seconds(dataclasses.replace(s, scorer=4e9), mfu=0.5, bw_frac=1.0, token_overhead=0.0)
    assert bigger["scoring"] > step["scoring"] and bigger["update"] == step["update"]
    run = est.run_hours(s, 0.5, 1.0, 0.0, 1.0)
    assert run["policies_h"] == pytest.approx(s.methods * s.steps * step["total"] / 3600)


def test_beta_profile_targets_tie_where_a_condorcet_winner_exists():
    """The random-games analysis of the β profile: on a game with a Condorcet winner every β < 1 target is that
    winner as τ → 0 (head to head they tie), while BR, the best response to μ, can lose to it; and its quantiles are
    ordered."""
    mod = _load("benchmarks/beta_profile_random_games.py")
    # response 2 beats both others (the Condorcet winner); response 1 beats response 0, SFT's usual answer, by more
    P = np.array([[0.5, 0.15, 0.4], [0.85, 0.5, 0.45], [0.6, 0.55, 0.5]])
    mu = np.array([0.9, 0.08, 0.02])
    t = mod.targets(P, mu, 1e-4)
    for m in ("SP", "MD1", "MD4", "MD6"):
        assert t[m][2] > 0.99, (m, t[m])
    assert t["BR"][1] > 0.99 and float(t["MD1"] @ P @ t["BR"]) > 0.54  # BR best-responds to μ and loses
    df = mod.measure([0.008], n_games=20, seed=1)
    assert len(df) == len(mod.PAIRS) and (df["median_abs"] <= df["p95_abs"]).all() and (df["p95_abs"] <= df["max_abs"]).all()


def test_beta_profile_appears_when_the_reference_spreads_over_tens_of_nats(tmp_path):
    """The same three-response cycle, once with a uniform reference and once with two of its responses 18 and 22
    nats below SFT's usual answer (the equilibrium puts half its mass on them): at τ = 0.008 the targets of different β tie in the first and show the paper's profile
    (MD1 ahead of SP, MD4 and BR) in the second; the spread experiment's quantiles are ordered and the profile is
    counted; the support depth of an oracle folder is the mode's log μ̂ minus the least likely support member's."""
    mod = _load("benchmarks/beta_profile_random_games.py")
    P = np.array([[0.5, 0.53, 0.06], [0.47, 0.5, 0.95], [0.94, 0.05, 0.5]])
    uniform = mod.targets(P, np.full(3, 1 / 3), 0.008)
    for b in ("SP", "MD4"):
        assert abs(float(uniform["MD1"] @ P @ uniform[b]) - 0.5) < 0.002, b
    log_mu = np.array([0.0, -18.0, -22.0])
    t = mod.targets(P, np.exp(log_mu - np.logaddexp.reduce(log_mu)), 0.008)
    for b, at_least in (("SP", 0.07), ("MD4", 0.15), ("BR", 0.15)):
        assert float(t["MD1"] @ P @ t[b]) - 0.5 > at_least, b
    df = mod.measure_spread([0.0, 40.0], 0.008, n_games=30, seed=2, margin=0.014)
    assert (df["median_abs"] <= df["p95_abs"]).all() and (df["p95_abs"] <= df["max_abs"]).all()
    assert set(df.loc[df.spread_nats == 0, "profile_share"]) == {0.0}  # a flat reference: every β ties
    assert (df.loc[df.spread_nats == 40, "profile_share"] > 0).all()  # a wide one: some games show the profile
    summary = mod.spread_summary(df)
    assert list(summary["reference spread"]) == ["0 nats", "40 nats"]
    oracle = tmp_path / "oracle"
    (oracle / "targets").mkdir(parents=True)
    (oracle / "pools.json").write_text(json.dumps({"log_mu": [[-1.0, -5.0, -30.0], [-2.0, -2.5]]}))
    (oracle / "targets" / "NE.json").write_text(json.dumps([[0.5, 0.5, 0.0], [0.0, 1.0]]))
    assert list(mod.support_depth(oracle)) == [4.0, 0.5]
    (oracle / "targets" / "NE.json").write_text(json.dumps({"target": None}))  # a task without an exact judge
    with pytest.raises(ValueError, match="not the oracle folder of a run with an exact judge"):
        mod.support_depth(oracle)

