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


def test_the_notebook_launcher_prints_papermills_usage_without_a_traceback(capsys):
    """``python -m nlhf notebook`` (what DVC runs for every stage) with --help, or with a bad option, answers as
    papermill does (exit 0 / 2), not with a traceback."""
    from nlhf.pipeline.notebook import execute

    assert execute(["--help"]) == 0 and "Usage: papermill" in capsys.readouterr().out
    assert execute(["--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "No such option" in err and "Traceback" not in err


def test_export_synthetic_adds_the_sft_stages_comparisons_and_fresh_ones_for_the_judge(tmp_path, monkeypatch, capsys):
    """``--sft-comparisons``: before the sft stage it stops naming what to run; after it, the train file holds the
    task's pairs and then exactly the sft stage's comparisons of SFT samples (what the synthetic path's PM learns
    from), and the judge file the task's judge pairs and as many fresh comparisons of SFT samples, none of them a
    train pair."""
    from nlhf.pipeline.cli import main
    from nlhf.pipeline.comparisons import load_sft_comparisons
    from nlhf.pipeline.params import load_config
    from nlhf.tasks import make_task

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "tiny"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    tiny = yaml.safe_load((tmp_path / "profiles" / "tiny.yaml").read_text())
    tiny["preference_data"]["sft_pairs"] = 30
    tiny["sft"].update(steps=10, eval_every=10, checkpoint_every=10, check_prompts=8)
    tiny["task"]["synthetic"].update(n_pref_train=40, n_pref_test=20)
    tiny["eval"].update(n_heldout_pairs=10, nontransitivity_prompts=4)
    (tmp_path / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["export-synthetic", "export", "--sft-comparisons"]) == 1
    assert "`dvc repro sft` first" in capsys.readouterr().err  # the stage that writes the missing artifact
    assert main(["run", "data", "sft"]) == 0
    assert main(["export-synthetic", "export", "--sft-comparisons"]) == 0
    cfg = load_config("params.yaml")
    k = cfg.task.synthetic.labels_per_pair
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    n_judge_task = len(make_task(cfg.task).preference_rows("judge")["prompt"])
    dropped = manifest["sft_comparisons_with_an_empty_sample"]
    stage = load_sft_comparisons(cfg, "train")
    kept = [(x, y, yp) for x, y, yp in zip(stage["prompt"], stage["y"], stage["y_prime"]) if y.strip() and yp.strip()]
    assert manifest["sft_comparisons"] == {"train": len(kept), "judge": n_judge_task - dropped["judge"]}
    assert kept and dropped["train"] == 30 - len(kept)
    read = lambda f: [json.loads(x) for x in (tmp_path / "export" / f).read_text().splitlines()]  # noqa: E731
    sampled = [r for r in read("comparisons_train.jsonl") if r["summaries"][0]["policy"] == "sft"][::k]
    assert [(r["info"]["post"], r["summaries"][0]["text"], r["summaries"][1]["text"]) for r in sampled] == kept
    fresh = [r["info"]["post"] for r in read("comparisons_judge.jsonl") if r["summaries"][0]["policy"] == "sft"][::k]
    assert len(fresh) == n_judge_task - dropped["judge"] > 0
    assert fresh[:5] != [x for x, _, _ in kept][:5]  # drawn from their own stream, not the train pairs' draws


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


def test_export_policy_comparisons_stops_naming_the_missing_export_key_or_the_unknown_policy(tmp_path, monkeypatch,
                                                                                               capsys):
    """``python -m nlhf export-policy-comparisons`` labels with the run's exported P*: a TL;DR run without
    ``eval.synthetic_export`` stops naming the key, a writer that is not one of the run's policies stops naming
    ``--policies`` and the run's policies, and neither writes anything."""
    from nlhf.pipeline.cli import main

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    params["profile"] = "tldr-tiny"
    params["ablation"]["methods"], params["ablation"]["seed_methods"] = [], {}
    (tmp_path / "tldr.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["export-policy-comparisons", "out", "--params", "tldr.yaml", "--pairs", "10"]) == 1
    assert "eval.synthetic_export: tldr.yaml names no synthetic export" in capsys.readouterr().err
    params["eval"]["synthetic_export"] = "export"
    (tmp_path / "tldr.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["export-policy-comparisons", "out", "--params", "tldr.yaml", "--pairs", "10",
                 "--policies", "SFT", "MD9"]) == 1
    err = capsys.readouterr().err
    assert "--policies: ['MD9'] are not policies of this run" in err and "'SFT', 'RLHF'" in err
    assert not (tmp_path / "out").exists()


def _gpt2_without_pad_and_sep(folder: Path) -> None:
    """A downloaded-like causal LM folder: GPT-2 with a BPE that has EOS but neither pad nor sep."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(["a short summary of a post"] * 4, trainer=trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.save_pretrained(folder)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=32,
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).save_pretrained(folder)


def test_fetch_pins_every_commit_and_prepares_the_models(tmp_path):
    """scripts/fetch_real.py (the Hub replaced by stand-ins): each branch is resolved to a commit once and that
    commit downloaded, then and on every rerun; the policy and scorer folders get pad and sep and pass the folder
    check that the pipeline runs."""
    import importlib.util

    from nlhf.models.local import check_policy_folder

    spec = importlib.util.spec_from_file_location("fetch_real", ROOT / "scripts" / "fetch_real.py")
    fetch_real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch_real)
    heads = {"org/data": "a" * 40, "org/lm": "b" * 40}
    calls = []

    class Api:
        def repo_info(self, repo, repo_type, revision):
            return type("Info", (), {"sha": heads[repo]})

    def download(repo_id, repo_type, revision, local_dir):
        calls.append((repo_id, revision))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        if repo_type == "model" and not (Path(local_dir) / "config.json").exists():
            _gpt2_without_pad_and_sep(Path(local_dir))

    sources = {"data/tldr": ("org/data", "dataset", "main"), "models/policy": ("org/lm", "model", "main")}
    pins = fetch_real.fetch(tmp_path, sources, api=Api(), download=download)
    assert pins["models/policy"]["commit"] == "b" * 40 and calls == [("org/data", "a" * 40), ("org/lm", "b" * 40)]
    info = check_policy_folder(str(tmp_path / "models/policy"), "policy_model.name_or_path")
    heads["org/lm"] = "c" * 40  # the branch moves on: a rerun still downloads the pinned commit
    fetch_real.fetch(tmp_path, sources, api=Api(), download=download)
    assert calls[-1] == ("org/lm", "b" * 40)
    assert check_policy_folder(str(tmp_path / "models/policy"), "k")["content_sha256"] == info["content_sha256"]
    assert json.loads((tmp_path / "revisions.json").read_text())["models/policy"]["commit"] == "b" * 40
    fetch_real.fetch(tmp_path, sources, update=True, api=Api(), download=download)
    assert calls[-1] == ("org/lm", "c" * 40)
