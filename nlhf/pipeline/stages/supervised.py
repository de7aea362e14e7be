"""Stages ``data`` → ``sft`` → ``preference@{pm,rm}``: the task's datasets and tokenizer (:func:`build_task_data`),
the SFT policy μ (and its checks and comparisons), the pairwise preference model and the Bradley–Terry reward
model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nlhf.evaluate import sft_checks
from nlhf.models import build_policy, build_preference_model, build_reward_model, check_same_tokenizer, save_policy
from nlhf.pipeline.artifacts import ensure_dir, load_dataset_dir, load_tokenizer, stage_fingerprint, write_metrics
from nlhf.pipeline.comparisons import load_sft_comparisons, write_sft_comparisons
from nlhf.pipeline.layout import Layout
from nlhf.pipeline.params import PipelineConfig
from nlhf.pipeline.runtime import accelerator_for, policy_generation, sampling_kwargs
from nlhf.tasks import SyntheticTask, Task, make_task
from nlhf.training.checkpoint import seed_everything
from nlhf.training.preference import pair_loss, pair_metrics, predict_proba
from nlhf.training.sft import sft_batch, sft_loss, tokenize_sft
from nlhf.training.supervised import fit


def _mean_words(texts) -> float:
    return float(np.mean([len(t.split()) for t in texts])) if len(texts) else float("nan")


def build_task_data(task: Task, out_dir: str | Path, analysis_prompts: int = 500, analysis_samples: int = 8) -> dict:
    """Write the task's datasets under ``out_dir`` (the data folder, :meth:`Layout.data`) and return data-stage
    metrics (plain Python types, so that ``json.dumps`` writes them without a converter).

    Its content (``Dataset.save_to_disk``, named by :class:`Layout`): ``sft/{train,eval}`` (prompt, completion),
    ``prefs/{train,test}`` (prompt, y, y_prime, label, p; and ``prefs/judge``, the held-out judge's, on a task without
    an exact judge), ``prompts/{train,eval}`` (prompt, reference)
    (``Layout.DATASETS``); plus ``tokenizer/`` for word-level tasks (``task.vocabulary()`` is not None) and
    ``metrics.json`` (the row counts, which the stages check their inputs against)."""
    import datasets

    from nlhf.tasks import analysis

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m: dict = {"task": task.name}
    # a task without an exact judge also has the held-out judge's comparisons (the oracle stage trains it)
    judge_split = () if task.has_exact_judge else (("prefs", "judge"),)
    for kind, split in (*Layout.DATASETS, *judge_split):
        if kind == "sft":
            ds = task.sft_dataset(split)
            m[f"sft_{split}_rows"] = len(ds)
            m[f"sft_{split}_mean_words"] = _mean_words(ds["completion"])
        elif kind == "prefs":
            ds = task.preference_dataset(split)
            m[f"prefs_{split}_rows"] = len(ds)
            m[f"prefs_{split}_label_mean"] = float(np.mean(ds["label"])) if len(ds) else float("nan")
            p = np.asarray(ds["p"], dtype=np.float64)
            if len(p) and not np.isnan(p).any():
                m[f"prefs_{split}_bayes_accuracy"] = float(np.mean(np.maximum(p, 1 - p)))  # best possible PM accuracy
                m[f"prefs_{split}_label_logloss_floor"] = float(np.mean(
                    -(p * np.log(np.clip(p, 1e-12, 1)) + (1 - p) * np.log(np.clip(1 - p, 1e-12, 1)))))
        else:
            prompts = task.prompts(split)
            ds = datasets.Dataset.from_dict({"prompt": prompts, "reference": task.references(prompts)})
            m[f"prompts_{split}_rows"] = len(ds)
        ds.save_to_disk(str(out / kind / split))
    vocab = task.vocabulary()
    if vocab is not None:
        from nlhf.tokenization import build_word_tokenizer

        tok = build_word_tokenizer(vocab, out / Layout.TOKENIZER)
        m["vocab_size"] = len(tok)
    if isinstance(task, SyntheticTask):
        rows = task.sft_rows("train")
        styles, counts = np.unique(rows["style"], return_counts=True)
        m["sft_style_mix"] = {str(s): float(c / len(rows["style"])) for s, c in zip(styles, counts)}
        x, a, b, c = task.condorcet_example()
        pm = analysis.preference_matrices(task.judge, [x], [[a, b, c]])[0]
        m["condorcet_example_is_cycle"] = bool(analysis.is_cycle(pm, 0, 1, 2))
        if analysis_prompts:
            prompts = task.prompts("eval")[:analysis_prompts]
            mats = analysis.preference_matrices(task.judge, prompts, task.style_samples(prompts, analysis_samples))
            m.update({f"style_{k}": v for k, v in analysis.cycle_fraction(mats).items()})
            m.update({f"style_{k}": v for k, v in analysis.bt_fit_agreement(mats).items()})
            m.update({f"style_{k}": v for k, v in analysis.nash_support(mats).items()})
    # no timings here: metrics.json is part of the DVC-hashed data artifact, which must not change between reruns
    (out / Layout.DATA_COUNTS).write_text(json.dumps(m, indent=2, sort_keys=True))
    return m


def run_data(cfg: PipelineConfig) -> dict:
    """Stage ``data``: prompts, SFT pairs, labelled preference pairs and the tokenizer (artifacts/data)."""
    import datasets

    datasets.disable_progress_bars()
    t0 = time.time()
    task = make_task(cfg.task)
    out = cfg.layout.data()
    metrics = build_task_data(task, out, cfg.task.analysis_prompts, cfg.task.analysis_samples)
    if task.vocabulary() is not None:  # written by build_task_data
        tok = load_tokenizer(cfg)
    else:  # open-text task: the tokenizer of the policy's folder (a pretrained model downloaded beforehand)
        from transformers import AutoTokenizer

        from nlhf.models.local import check_policy_folder

        metrics["policy_model"] = check_policy_folder(cfg.policy_model.name_or_path, "policy_model.name_or_path")
        tok = AutoTokenizer.from_pretrained(cfg.policy_model.name_or_path)
        tok.save_pretrained(out / "tokenizer")
    metrics.update({"vocab_size": len(tok), "runtime_s": round(time.time() - t0, 2)})
    write_metrics(cfg, "data", metrics)
    return metrics


def run_sft(cfg: PipelineConfig) -> dict:
    """Stage ``sft``: fit μ on reference summaries; check well-formedness, P(SFT ≻ init) and non-transitivity."""
    t0 = time.time()
    seed_everything(cfg.sft.seed)
    accelerator = accelerator_for(cfg)
    tok = load_tokenizer(cfg)
    task = make_task(cfg.task)
    train = load_dataset_dir(cfg, "sft", "train")
    heldout = load_dataset_dir(cfg, "sft", "eval")
    examples = tokenize_sft(tok, list(train["prompt"]), list(train["completion"]))
    heldout_ex = tokenize_sft(tok, list(heldout["prompt"]), list(heldout["completion"]))
    policy = build_policy(cfg.policy_model, tok, seed=cfg.sft.seed)
    init = build_policy(cfg.policy_model, tok, seed=cfg.sft.seed).eval()  # the untrained initial policy
    max_len = max(len(ids) for ids, _ in examples + heldout_ex)
    n_pos = getattr(policy.config, "n_positions", None) or getattr(policy.config, "max_position_embeddings", 10**9)
    if max_len + cfg.sampling.max_new_tokens > n_pos:
        raise ValueError(f"policy_model.n_positions={n_pos} is too small for prompt+summary ({max_len} tokens) "
                         f"+ sampling.max_new_tokens")

    def loss_fn(model, idx):
        batch = sft_batch([examples[i] for i in idx], tok.pad_token_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        return sft_loss(model, batch)

    def eval_fn(model):
        losses = []
        for i in range(0, len(heldout_ex), 256):
            b = {k: v.to(accelerator.device) for k, v in sft_batch(heldout_ex[i: i + 256], tok.pad_token_id).items()}
            losses.append(sft_loss(model, b).item())
        return {"heldout_loss": float(np.mean(losses))}

    layout = cfg.layout
    log = fit(policy, loss_fn, len(examples), cfg.sft, layout.resume("sft"), accelerator, eval_fn, desc="sft",
              fingerprint=stage_fingerprint(cfg, "sft"))
    policy = accelerator.unwrap_model(policy).eval()

    prompts = task.prompts("eval")[: cfg.sft.check_prompts]
    checks, ys = sft_checks(task, policy, init.to(accelerator.device), tok, prompts, sampling_kwargs(cfg), cfg.seed,
                            cfg.eval.nontransitivity_prompts, cfg.eval.nontransitivity_samples)
    metrics = {"train_loss_first": log["train"][0]["loss"], "train_loss_last": log["train"][-1]["loss"],
               "heldout_loss": log["eval"][-1]["heldout_loss"], **checks}
    metrics["sft_comparisons"] = write_sft_comparisons(cfg, task, policy, tok)
    metrics["runtime_s"] = round(time.time() - t0, 2)

    save_policy(policy, tok, layout.model("sft"), policy_generation(cfg, tok))
    layout.resume("sft").unlink(missing_ok=True)
    out = ensure_dir(layout.results("sft"))
    pd.DataFrame(log["train"]).to_csv(out / "loss.csv", index=False)
    pd.DataFrame(log["eval"]).to_csv(out / "heldout.csv", index=False)
    pd.DataFrame({"prompt": prompts[:20], "summary": ys[:20]}).to_csv(out / "samples.csv", index=False)
    write_metrics(cfg, "sft", metrics)
    return metrics


def run_preference(cfg: PipelineConfig, kind: str) -> dict:
    """Stage ``pm`` (pairwise preference model) or ``rm`` (Bradley–Terry reward model) on the labelled pairs."""
    if kind not in ("pm", "rm"):
        raise ValueError(f"kind: expected 'pm' or 'rm', got {kind!r}")
    t0 = time.time()
    train_cfg = cfg.pm if kind == "pm" else cfg.rm
    model_cfg = cfg.preference_model if kind == "pm" else cfg.reward_model
    body = None
    if model_cfg.name_or_path is not None:  # checked before anything is trained
        from nlhf.models.local import check_model_folder

        section = "preference_model" if kind == "pm" else "reward_model"
        body = check_model_folder(model_cfg.name_or_path, f"{section}.name_or_path")
    train = load_dataset_dir(cfg, "prefs", "train")
    pairs = {k: list(train[k]) for k in ("prompt", "y", "y_prime", "label")}
    extra = load_sft_comparisons(cfg, "train")
    if extra is not None:
        pairs = {k: pairs[k] + list(extra[k]) for k in pairs}
    build = build_preference_model if kind == "pm" else build_reward_model
    layout = cfg.layout
    model, log = fit_scorer(cfg, kind, build, model_cfg, train_cfg, pairs, layout.resume(kind),
                            stage_fingerprint(cfg, layout.dvc_stage(kind)))
    metrics = {"n_train_pairs": len(pairs["prompt"]), "test": log["eval"][-1],
               "train_loss_first": log["train"][0]["loss"], "train_loss_last": log["train"][-1]["loss"]}
    if body is not None:
        metrics["model"] = body
    pairs = load_sft_comparisons(cfg, "heldout")
    if pairs is not None:
        q = predict_proba(model, list(pairs["prompt"]), list(pairs["y"]), list(pairs["y_prime"]))
        metrics["heldout_sft_pairs"] = pair_metrics(q, np.asarray(pairs["label"]), np.asarray(pairs["p"], float))
    metrics["runtime_s"] = round(time.time() - t0, 2)
    model.save_pretrained(layout.model(kind))
    layout.resume(kind).unlink(missing_ok=True)
    out = ensure_dir(layout.results(kind))
    pd.DataFrame(log["train"]).to_csv(out / "loss.csv", index=False)
    pd.DataFrame(log["eval"]).to_csv(out / "eval.csv", index=False)
    write_metrics(cfg, kind, metrics)
    return metrics


def fit_scorer(cfg: PipelineConfig, name: str, build, model_cfg, train_cfg, pairs: dict, state, fingerprint: str):
    """A scorer ``build(model_cfg, tok, seed=...)`` fitted by ``train_cfg`` (:func:`nlhf.training.supervised.fit`,
    resumable from ``state``) on ``pairs`` (prompt, y, y_prime, label lists), scored on the test comparisons at
    every evaluation (:func:`nlhf.training.preference.pair_metrics`); returns ``(model in eval mode, log)``."""
    seed_everything(train_cfg.seed)
    accelerator = accelerator_for(cfg)
    tok = load_tokenizer(cfg)
    test = load_dataset_dir(cfg, "prefs", "test")
    model = build(model_cfg, tok, seed=train_cfg.seed)
    check_same_tokenizer(model.tokenizer, tok, f"{name} model", "data tokenizer")
    labels = torch.tensor(pairs["label"], dtype=torch.float32)
    # tokenize once (not at every step): the scorer builds the same rows from token ids as from the strings
    prompts, ys = model.token_ids(pairs["prompt"]), model.token_ids(pairs["y"], response=True)
    y_primes = model.token_ids(pairs["y_prime"], response=True)
    test = {k: list(test[k]) for k in ("prompt", "y", "y_prime", "label", "p")}

    def loss_fn(m, idx):
        return pair_loss(m, [prompts[i] for i in idx], [ys[i] for i in idx], [y_primes[i] for i in idx], labels[idx])

    def eval_fn(m):
        q = predict_proba(m, test["prompt"], test["y"], test["y_prime"])
        return pair_metrics(q, np.asarray(test["label"]), np.asarray(test["p"], dtype=float))

    log = fit(model, loss_fn, len(prompts), train_cfg, state, accelerator, eval_fn, desc=name, fingerprint=fingerprint)
    return accelerator.unwrap_model(model).eval(), log
