"""The paper's own setting through the pipeline, offline: `dvc repro` on a task without an exact judge (TL;DR) runs
every stage on the real-schema fixtures (tests/fixtures/), with a small model built from config and saved as a
local folder standing in for a pretrained checkpoint (profile tldr-tiny; numbers are meaningless). What needs P* is
left out visibly: no exact-judge stages (their foreach list is empty), the oracle stage states it does not apply and
trains the held-out judge, which judges the evaluation table and the policies' convergence probe."""

import json
import shutil
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest
import yaml

from nlhf.config import ConfigError, load_yaml
from nlhf.pipeline.params import load_config

from test_pipeline_e2e import _run, copy_working_tree

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("RLHF", "MD1", "EMA1")  # one of each kind of judge and opponent; the full list runs the same stages


def _params(dst: Path, profile: str | None = "tldr-tiny") -> None:
    """params.yaml with a few methods and no seed replicas; on ``profile`` without the exact-judge ablation (None:
    the default profile, as a fresh clone has it)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["methods"] = {n: params["methods"][n] for n in METHODS}
    params["ablation"]["seed_methods"] = {}
    if profile is not None:
        params["profile"] = profile
        params["ablation"]["methods"] = []  # no exact judge to train against
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def tldr_repo(tmp_path_factory):
    """A copy of the working tree with its local model folder, switched to the tldr-tiny profile and run by the
    README's one command (`dvc exp run -S profile=... -S 'ablation.methods=[]'`)."""
    dst = tmp_path_factory.mktemp("tldr")
    copy_working_tree(dst)
    _params(dst, profile=None)
    _run(["git", "init", "-q"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "scratch"], dst)
    _run([sys.executable, "-m", "nlhf", "local-model", "models/tldr-tiny", "--texts",
          "tests/fixtures/tldr_sft_train.jsonl", "--vocab-size", "500"], dst)
    _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "profile=tldr-tiny", "-S", "ablation.methods=[]"], dst)
    return dst


@pytest.mark.slow
def test_every_stage_runs_on_a_task_without_an_exact_judge(tldr_repo):
    r = tldr_repo / "results"
    stages = _run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], tldr_repo).stdout.split()
    assert not [s for s in stages if s.startswith("policy_exact@")]  # the ablation's foreach list is empty
    for nb in ["01_data", "02_sft", "03_preference_models_pm", "03_preference_models_rm", "06_oracle",
               *(f"04_policy_{n}" for n in METHODS), "05_evaluation"]:
        executed = json.loads((r / "notebooks" / f"{nb}.ipynb").read_text())
        assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code"), nb
    # the oracle says it does not apply, and trains the held-out judge instead
    oracle = json.loads((r / "metrics" / "oracle.json").read_text())
    assert oracle["applicable"] is False and "no exact judge" in (r / "oracle" / "not_applicable.md").read_text()
    assert oracle["heldout_judge"]["n_train_pairs"] > 0 and 0 < oracle["heldout_judge"]["test"]["accuracy"] <= 1
    assert (tldr_repo / "artifacts" / "oracle" / "judge" / "config.json").exists()
    # the table under the held-out judge (and the training PM), every policy, antisymmetric, with CIs
    ev = json.loads((r / "metrics" / "eval.json").read_text())
    assert ev["judges"] == ["heldout", "pm", "llm"]  # the LLM judge: the local model asked which summary is better
    long = pd.read_csv(r / "eval" / "table_heldout_long.csv")
    assert set(long["row"]) == {"SFT", *METHODS, "EMA1*"}
    piv = long.pivot(index="row", columns="column", values="p")
    assert ((piv + piv.T - 1).abs().max().max()) < 1e-9 and long["ci"].notna().all()
    # each judge scored against the human labels of the test comparisons, and each policy against the references
    agreement = pd.read_csv(r / "eval" / "judge_agreement.csv").set_index("judge")
    assert list(agreement.index) == ["heldout", "pm", "llm"] and agreement["log_loss"].gt(0).all()
    assert set(pd.read_csv(r / "eval" / "judge_calibration.csv")["judge"]) <= {"heldout", "pm", "llm"}
    per_policy = pd.read_csv(r / "eval" / "per_policy.csv")
    assert per_policy["p_vs_reference"].between(0, 1).all() and per_policy["p_vs_reference_ci"].notna().all()
    # each policy's convergence probe: the held-out judge against SFT, no oracle target
    for n in METHODS:
        probe = pd.read_csv(r / "convergence" / f"{n}.csv")
        assert len(probe) >= 2 and probe["p_vs_sft"].between(0, 1).all() and probe["p_vs_target"].isna().all()


@pytest.mark.slow
def test_the_heldout_judge_never_sees_the_training_or_test_comparisons(tldr_repo):
    data = tldr_repo / "artifacts" / "data" / "prefs"
    pairs = {s: {(x, y, yp) for x, y, yp in zip(*(datasets.load_from_disk(str(data / s))[k]
                                                   for k in ("prompt", "y", "y_prime")))}
             for s in ("train", "test", "judge")}
    assert pairs["judge"] and pairs["test"]
    assert not pairs["judge"] & pairs["train"] and not pairs["judge"] & pairs["test"]


@pytest.mark.slow
def test_the_policies_use_the_local_models_tokenizer(tldr_repo):
    from transformers import AutoTokenizer

    local = AutoTokenizer.from_pretrained(str(tldr_repo / "models" / "tldr-tiny"))
    policy = AutoTokenizer.from_pretrained(str(tldr_repo / "artifacts" / "policies" / "MD1" / "policy"))
    assert local.get_vocab() == policy.get_vocab() and len(local) == 500


def test_a_task_without_an_exact_judge_refuses_the_exact_judge_ablation(tmp_path):
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    _params(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["ablation"]["methods"] = ["RLHF"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ConfigError, match=r"ablation\.methods: task 'tldr' has no exact judge"):
        load_config(tmp_path / "params.yaml")


@pytest.mark.parametrize("break_it, message", [
    (lambda d: shutil.rmtree(d), r"policy_model\.name_or_path: folder not found"),
    (lambda d: (d / "tokenizer_config.json").write_text(
        (d / "tokenizer_config.json").read_text().replace('"pad_token": "<pad>"', '"pad_token": null')),
     r"policy_model\.name_or_path: the tokenizer in .* has no pad_token"),
    (lambda d: (d / "config.json").write_text((d / "config.json").read_text().replace('"gpt2"', '"distilbert"')),
     r"policy_model\.name_or_path: .* holds a 'distilbert' model, which AutoModelForCausalLM cannot load"),
])
def test_a_bad_policy_folder_stops_with_the_key(tmp_path, break_it, message):
    """A missing folder, a tokenizer without a pad token, or a model that cannot generate: an error naming the key,
    before anything is trained; a good folder gives its type and content hash for the run's metrics."""
    from nlhf.models import ModelConfig
    from nlhf.models.local import build_local_lm, check_policy_folder

    folder = tmp_path / "lm"
    build_local_lm(["a short text", "another one"] * 20, folder, ModelConfig(n_layer=1, n_embd=8, n_head=2), 300)
    info = check_policy_folder(str(folder), "policy_model.name_or_path")
    assert info["model_type"] == "gpt2" and len(info["content_sha256"]) == 64
    break_it(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        check_policy_folder(str(folder), "policy_model.name_or_path")


def test_a_scorer_body_folder_differs_from_the_policy_folder_only_in_block_0_queries_and_keys(tmp_path):
    """``--qk-identity-init`` writes the policy folder's tokenizer and weights (same texts, same seed) but block 0's
    W_Q = W_K = scale·I, which a scorer loading the folder keeps (a loaded body gets no init of its own)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from nlhf.models import ModelConfig, PreferenceModel
    from nlhf.models.local import build_local_lm

    texts, cfg = ["a short text", "another one"] * 20, ModelConfig(n_layer=2, n_embd=8, n_head=2)
    build_local_lm(texts, tmp_path / "policy", cfg, 300)
    build_local_lm(texts, tmp_path / "scorer", cfg, 300, qk_identity=0.5)
    assert (tmp_path / "policy" / "tokenizer.json").read_bytes() == (tmp_path / "scorer" / "tokenizer.json").read_bytes()
    plain, scorer = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("policy", "scorer"))
    assert plain.keys() == scorer.keys()
    qkv = "transformer.h.0.attn.c_attn.weight"
    assert all(torch.equal(plain[k], scorer[k]) for k in plain if k != qkv)
    assert torch.equal(scorer[qkv][:, :16], torch.cat([0.5 * torch.eye(8)] * 2, dim=1))
    assert torch.equal(scorer[qkv][:, 16:], plain[qkv][:, 16:]) and not torch.equal(scorer[qkv], plain[qkv])
    tok = AutoTokenizer.from_pretrained(tmp_path / "scorer")
    pm = PreferenceModel.build(ModelConfig(name_or_path=str(tmp_path / "scorer")), tok)
    assert torch.equal(pm.backbone.h[0].attn.c_attn.weight, scorer[qkv])
    with pytest.raises(ValueError, match="qk_identity must be >= 0"):
        build_local_lm(texts, tmp_path / "bad", cfg, 300, qk_identity=-1.0)


@pytest.mark.parametrize("key, causal_lm, break_it, message", [
    ("preference_model.name_or_path", False, lambda d: shutil.rmtree(d), "folder not found"),
    ("heldout_judge.model.name_or_path", False, lambda d: (d / "config.json").write_text("{not json"),
     "cannot read the model config"),
    ("reward_model.name_or_path", False, lambda d: [f.unlink() for f in d.glob("*token*")], "no usable tokenizer"),
    ("eval.llm_judge", True, lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"gpt2"', '"distilbert"')), "AutoModelForCausalLM cannot load"),
])
def test_a_bad_scorer_or_judge_folder_stops_with_its_key(tmp_path, key, causal_lm, break_it, message):
    """The PM, RM, held-out judge and LLM judge folders are checked like the policy's: an error naming the key;
    a good folder gives the identity the run's metrics record."""
    from nlhf.models import ModelConfig
    from nlhf.models.local import build_local_lm, check_model_folder

    folder = tmp_path / "lm"
    build_local_lm(["a short text", "another one"] * 20, folder, ModelConfig(n_layer=1, n_embd=8, n_head=2), 300)
    info = check_model_folder(str(folder), key, causal_lm=causal_lm)
    assert info["model_type"] == "gpt2" and len(info["content_sha256"]) == 64 and "hub_commit" not in info
    meta = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"  # as `hf download` leaves it
    meta.parent.mkdir(parents=True)
    meta.write_text(f"{'a1' * 20}\n\"etag\"\n1733500000.0\n")
    assert check_model_folder(str(folder), key, causal_lm=causal_lm)["hub_commit"] == "a1" * 20
    break_it(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=rf"^{key.replace('.', chr(92) + '.')}: .*{message}"):
        check_model_folder(str(folder), key, causal_lm=causal_lm)


@pytest.mark.slow
@pytest.mark.parametrize("stage, key, value, message", [
    ("preference@pm", "preference_model.name_or_path", "./models/missing", "folder not found"),
    ("oracle", "heldout_judge.model.name_or_path", "./models/missing", "folder not found"),
    ("eval", "eval.llm_judge", "./models/missing", "folder not found"),
    ("data", "task.tldr.pref_data_files.train", "broken/comparisons_train.jsonl", "broken/comparisons_train.jsonl"),
])
def test_a_missing_folder_or_malformed_file_stops_the_stage_and_keeps_what_ran(tldr_repo, stage, key, value,
                                                                              message):
    """On the tldr DAG after its run: a stage pointed at a missing model folder or a malformed data file stops
    with an error naming the key or the file, before it writes anything: the artifacts and results of the stages
    that ran are byte for byte what they were."""
    from nlhf.training.checkpoint import content_hash

    params = load_yaml((tldr_repo / "params.yaml").read_text())  # as DVC wrote it (YAML 1.2: `no` is a string)
    overlay = yaml.safe_load((tldr_repo / "profiles" / "tldr-tiny.yaml").read_text())
    if stage == "data":  # a comparisons file cut in the middle of a row
        bad = tldr_repo / value
        bad.parent.mkdir(exist_ok=True)
        text = (tldr_repo / overlay["task"]["tldr"]["pref_data_files"]["train"]).read_text()
        bad.write_text(text[: len(text) // 2])
    *parents, leaf = key.split(".")
    node = overlay
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = value
    (tldr_repo / "profiles" / "tldr-tiny-broken.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    params["profile"] = "tldr-tiny-broken"
    (tldr_repo / "params_broken.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = content_hash(tldr_repo / "artifacts", tldr_repo / "results")
    r = _run([sys.executable, "-m", "nlhf", "run", stage, "--params", "params_broken.yaml"], tldr_repo, check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
    if stage != "data":
        assert f"{key}: " in r.stderr
    assert content_hash(tldr_repo / "artifacts", tldr_repo / "results") == before
