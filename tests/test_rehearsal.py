"""The GPU profiles rehearsed on CPU (``python -m nlhf rehearse``): every stage of profile ``gpu`` (the synthetic task,
models built from config) and of profile ``tldr`` (TL;DR read from the parquet layout scripts/fetch_real.py writes,
pythia-like policy and scorers, a Qwen2-like LLM judge, all as local folders) runs end to end under bf16 autocast,
with the steps and sizes of a small profile and nothing else of the profile changed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nlhf.config import read_params
from nlhf.pipeline.rehearsal import CUT, cut_params

ROOT = Path(__file__).resolve().parents[1]


def test_cut_takes_only_steps_and_sizes_from_the_small_profile():
    gpu, tiny = read_params(ROOT / "params.yaml", "gpu"), read_params(ROOT / "params.yaml", "tiny")
    cut = cut_params(gpu, tiny)
    assert cut["sft"]["steps"] == tiny["sft"]["steps"] and cut["policy_model"]["n_layer"] == tiny["policy_model"]["n_layer"]
    # the rest is the GPU profile's: its learning rates, context, precision; only the device changes
    assert cut["sft"]["lr"] == gpu["sft"]["lr"] != tiny["sft"]["lr"]
    assert cut["policy_model"]["n_positions"] == gpu["policy_model"]["n_positions"]
    assert cut["runtime"] == {**gpu["runtime"], "cpu": True} and cut["runtime"]["mixed_precision"] == "bf16"
    changed = {(sec, k) for sec in ("sft", "pm", "rm", "pg", "policy_model", "eval", "sampling")
               for k in gpu[sec] if cut[sec][k] != gpu[sec][k]}
    assert changed and all(k in CUT[(sec,)] for sec, k in changed), changed


def test_rehearse_refuses_to_write_over_the_repository(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nlhf", "rehearse", "gpu", str(ROOT), "--params",
                        str(ROOT / "params.yaml")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "is the folder of" in r.stderr and "give it a folder of its own" in r.stderr
    r = subprocess.run([sys.executable, "-m", "nlhf", "rehearse", "gpu", str(tmp_path / "w"), "--methods", "MDX",
                        "--params", str(ROOT / "params.yaml")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "methods: ['MDX'] not in params.yaml's methods" in r.stderr


def _rehearse(work: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "nlhf", "rehearse", *args, str(work), "--params",
                        str(ROOT / "params.yaml")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _ran_under_bf16(results: Path, stages) -> None:
    for stage in stages:
        t = json.loads((results / "timings" / f"{stage}.json").read_text())
        assert (t["device"], t["mixed_precision"]) == ("cpu", "bf16"), (stage, t)


@pytest.mark.slow
def test_gpu_profile_runs_end_to_end_on_cpu(tmp_path):
    _rehearse(tmp_path, "gpu")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["policy_model"]["n_positions"] == 64 and params["runtime"]["mixed_precision"] == "bf16"
    r = tmp_path / "results"
    _ran_under_bf16(r, ["sft", "pm", "rm", "oracle", "policy_RLHF", "policy_MD1", "policy_exact_RLHF", "eval"])
    ev = json.loads((r / "metrics" / "eval.json").read_text())
    assert 0 < ev["headline"]["MD1_vs_RLHF"]["p"] < 1
    assert (r / "eval" / "table_exact.md").exists()


@pytest.mark.slow
def test_tldr_profile_runs_end_to_end_on_cpu_with_fetched_layout_standins(tmp_path):
    _rehearse(tmp_path, "tldr")  # at the sizes of tldr-tiny, the default for a TL;DR profile
    real = tmp_path / "real"
    assert sorted(p.name for p in (real / "data" / "tldr" / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["task"]["tldr"]["sft_path"] == "./real/data/tldr" and params["sampling"]["max_new_tokens"] == 53
    r = tmp_path / "results"
    _ran_under_bf16(r, ["sft", "pm", "rm", "oracle", "policy_RLHF", "policy_MD1", "eval"])
    data = json.loads((r / "metrics" / "data.json").read_text())
    assert data["policy_model"]["model_type"] == "gpt_neox"  # the pythia-like stand-in, from its local folder
    ev = json.loads((r / "metrics" / "eval.json").read_text())
    assert ev["judges"] == ["heldout", "pm", "llm"]
    assert json.loads((r / "metrics" / "oracle.json").read_text())["applicable"] is False
