"""The pipeline's stages as functions: data → sft → {pm, rm} → policy × 13 → eval (dvc.yaml holds the DAG).

Each stage reads its inputs from ``cfg.artifacts``, writes its models/datasets there (DVC outs) and its small
results (metrics JSON, CSV, figures) under ``cfg.results / <stage>``; the notebooks call these functions and plot.
A missing or damaged upstream artifact, or a dataset whose row count differs from the count its stage recorded,
stops the stage with a message naming the file and the stage that makes it. Resumable training states are
fingerprinted with the params and the content of every upstream artifact the training reads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator

from nlhf.models import (
    PreferenceModel,
    RewardModel,
    build_policy,
    build_preference_model,
    build_reward_model,
    check_same_tokenizer,
    generation_config,
    load_policy,
    save_policy,
)
from nlhf.params import PipelineConfig
from nlhf.rollout import sample_texts
from nlhf.summary import summarize
from nlhf.tasks import make_task
from nlhf.tasks.analysis import bt_fit_agreement, cycle_fraction, preference_matrices
from nlhf.training.checkpoint import content_hash, damaged, seed_everything, write_json
from nlhf.training.policy_gradient import train_policy
from nlhf.training.probe import ConvergenceProbe, converged
from nlhf.training.preference import pair_loss, pair_metrics, predict_proba
from nlhf.training.sft import sft_batch, sft_loss, tokenize_sft
from nlhf.training.supervised import fit

# ------------------------------------------------------------------------------------------------ paths & helpers


def artifact(cfg: PipelineConfig, *parts: str) -> Path:
    return cfg.artifacts.joinpath(*parts)


DVC_STAGES = {"pm": "preference@pm", "rm": "preference@rm"}  # short names -> the DVC stage names in dvc.yaml


class DamagedArtifactError(RuntimeError):
    """An upstream artifact exists but cannot be read, or disagrees with the counts its stage recorded."""


def _rerun_hint(path: Path, stage: str) -> str:
    return (f"restore it with `dvc checkout {path}` or rerun `dvc repro {stage}` (outside DVC: rerun the "
            f"'{stage}' stage)")


def require(path: Path, stage: str) -> Path:
    """An upstream artifact must exist and be readable (no file cut short: :func:`nlhf.training.checkpoint.damaged`);
    otherwise stop naming it and the DVC stage that writes it."""
    stage = DVC_STAGES.get(stage, stage)
    if not Path(path).exists():
        raise FileNotFoundError(f"missing upstream artifact {path} (written by stage '{stage}'; run "
                                f"`dvc repro {stage}` first)")
    bad = damaged(path)
    if bad is not None:
        raise DamagedArtifactError(f"upstream artifact {bad[0]} is damaged ({bad[1]}); {_rerun_hint(path, stage)}")
    return Path(path)


def fingerprint(*objs, inputs=()) -> str:
    """A short hash of configs and of the content of the upstream artifacts ``inputs`` (files or folders); a
    resumable checkpoint is reused only if it matches, i.e. only by a run with the same params and inputs."""
    text = json.dumps([asdict(o) if hasattr(o, "__dataclass_fields__") else o for o in objs], sort_keys=True,
                      default=str)
    text += "".join(f"|{Path(p).name}:{content_hash(p)}" for p in inputs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def accelerator_for(cfg: PipelineConfig) -> Accelerator:
    if cfg.runtime.torch_threads:
        torch.set_num_threads(cfg.runtime.torch_threads)
    cpu = cfg.runtime.cpu or not torch.cuda.is_available()
    return Accelerator(cpu=cpu, mixed_precision="no" if cpu else cfg.runtime.mixed_precision)


def metrics_path(cfg: PipelineConfig, stage: str) -> Path:
    """Stage metrics live apart from the stage's results folder (DVC outs may not overlap)."""
    return cfg.results / "metrics" / f"{stage}.json"


def write_metrics(cfg: PipelineConfig, stage: str, metrics: dict) -> None:
    """The stage's metrics JSON without its ``runtime_s``, which goes to ``results/timings/<stage>.json`` (not a
    DVC output): metrics files are hashed outputs that later stages depend on, and a wall-clock time would make
    them differ at every rerun. Its headline numbers (:mod:`nlhf.summary`) go to ``results/summary/<stage>.json``,
    the file dvc.yaml declares as the stage's metrics."""
    write_json(metrics_path(cfg, stage), {k: v for k, v in metrics.items() if k != "runtime_s"})
    write_json(cfg.results / "summary" / f"{stage}.json", summarize(stage, metrics))
    if "runtime_s" in metrics:
        write_json(cfg.results / "timings" / f"{stage}.json", {"runtime_s": metrics["runtime_s"]})


def resume_path(cfg: PipelineConfig, name: str) -> Path:
    """Resumable training state lives outside the DVC outs (DVC deletes outs before rerunning a stage)."""
    return artifact(cfg, ".resume", f"{name}.pt")


def load_tokenizer(cfg: PipelineConfig):
    from transformers import AutoTokenizer

    path = require(artifact(cfg, "data", "tokenizer"), "data")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise DamagedArtifactError(f"cannot load the tokenizer {path} ({e}); {_rerun_hint(path, 'data')}") from e
    tok.padding_side = "left"
    return tok


def _load_counted(path: Path, n_expected: int, stage: str, record: Path):
    """``load_from_disk(path)``, which must hold the ``n_expected`` rows its stage recorded in ``record``."""
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_from_disk(str(path))
        n = len(ds)
    except Exception as e:  # FileNotFoundError, ArrowInvalid, json errors from a damaged folder
        raise DamagedArtifactError(f"cannot load {path} ({type(e).__name__}: {e}); {_rerun_hint(path, stage)}") \
            from e
    if n != n_expected:
        raise DamagedArtifactError(f"{path} holds {n} rows but {record} records {n_expected}; "
                                   f"{_rerun_hint(path, stage)}")
    return ds


def load_dataset_dir(cfg: PipelineConfig, *parts: str):
    """A dataset of the data stage (e.g. ``"sft", "train"``), checked against the row count in data/metrics.json."""
    path = require(artifact(cfg, "data", *parts), "data")
    info = require(artifact(cfg, "data", "metrics.json"), "data")
    key = "_".join(parts) + "_rows"
    counts = json.loads(info.read_text())
    if not isinstance(counts.get(key), int):
        raise DamagedArtifactError(f"{info} has no row count {key!r} (not written by this version's data stage); "
                                   f"{_rerun_hint(artifact(cfg, 'data'), 'data')}")
    return _load_counted(path, counts[key], "data", info)


def sampling_kwargs(cfg: PipelineConfig) -> dict:
    """Keyword arguments of :func:`nlhf.rollout.sample_texts` from the ``sampling`` section."""
    return dict(max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature,
                batch_size=cfg.sampling.batch_size)


def policy_generation(cfg: PipelineConfig, tok):
    """The sampling settings saved with every policy (:func:`nlhf.models.generation_config`)."""
    return generation_config(tok, cfg.sampling.max_new_tokens, cfg.sampling.temperature)


def load_sft(cfg: PipelineConfig, device=None):
    model, tok = load_policy(require(artifact(cfg, "models", "sft"), "sft"))
    tok.padding_side = "left"
    return model.to(device or "cpu").eval(), tok


def sample_matrix_stats(task, prompts, samples) -> dict:
    """Non-transitivity of the exact judge on k samples per prompt: cycle fraction and BT-fit agreement."""
    mats = preference_matrices(task.judge, prompts, samples)
    mats = [m for m in mats if len(m) >= 3]
    bt = bt_fit_agreement(mats)
    return {**cycle_fraction(mats), "bt_direction_agreement": bt["bt_agreement"],
            "p_direction_agreement": bt["p_agreement"], "bt_log_loss": bt["bt_logloss"],
            "p_entropy": bt["p_entropy"], "prompts_with_3plus_distinct": len(mats)}


# ------------------------------------------------------------------------------------------------------- stages


def run_tabular(cfg: PipelineConfig) -> dict:
    """Stage ``tabular``: Nash-MD and the comparison algorithms on exact games (:mod:`nlhf.tabular_experiment`)."""
    from nlhf.tabular_experiment import run_tabular as run

    metrics = run(cfg.tabular, cfg.results / "tabular")
    write_metrics(cfg, "tabular", metrics)
    return metrics


def run_data(cfg: PipelineConfig) -> dict:
    """Stage ``data``: prompts, SFT pairs, labelled preference pairs and the tokenizer (artifacts/data)."""
    import datasets

    from nlhf.tasks import build_task_data

    datasets.disable_progress_bars()
    t0 = time.time()
    task = make_task(cfg.task)
    out = artifact(cfg, "data")
    metrics = build_task_data(task, out, cfg.task.analysis_prompts, cfg.task.analysis_samples)
    if task.vocabulary() is not None:  # written by build_task_data
        tok = load_tokenizer(cfg)
    else:  # open-text task: the policy's own tokenizer (e.g. a Hub model in the gpu profile)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.policy_model.name_or_path)
        tok.save_pretrained(out / "tokenizer")
    metrics.update({"vocab_size": len(tok), "runtime_s": round(time.time() - t0, 2)})
    write_metrics(cfg, "data", metrics)
    return metrics


def run_sft(cfg: PipelineConfig) -> dict:
    """Stage ``sft``: fit μ on reference summaries; check well-formedness, P(SFT ≻ init) and non-transitivity."""
    t0 = time.time()
    seed_everything(cfg.sft.seed)
    acc = accelerator_for(cfg)
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
        batch = {k: v.to(acc.device) for k, v in sft_batch([examples[i] for i in idx], tok.pad_token_id).items()}
        return sft_loss(model, batch)

    def eval_fn(model):
        losses = []
        for i in range(0, len(heldout_ex), 256):
            b = {k: v.to(acc.device) for k, v in sft_batch(heldout_ex[i: i + 256], tok.pad_token_id).items()}
            losses.append(sft_loss(model, b).item())
        return {"heldout_loss": float(np.mean(losses))}

    log = fit(policy, loss_fn, len(examples), cfg.sft, resume_path(cfg, "sft"), acc, eval_fn, desc="sft",
              fingerprint=fingerprint(cfg.sft, cfg.policy_model, cfg.task, cfg.runtime,
                                      inputs=[artifact(cfg, "data")]))
    policy = acc.unwrap_model(policy).eval()

    # -- checks on fresh eval prompts --
    prompts = task.prompts("eval")[: cfg.eval.n_prompts]
    smp = sampling_kwargs(cfg)
    ys, done = sample_texts(policy, tok, prompts, seed=cfg.seed + 11, return_finished=True, **smp)
    well = [d and task.is_well_formed(x, y) for x, y, d in zip(prompts, ys, done)]
    metrics = {"train_loss_first": log["train"][0]["loss"], "train_loss_last": log["train"][-1]["loss"],
               "heldout_loss": log["eval"][-1]["heldout_loss"], "well_formed": float(np.mean(well)),
               "mean_summary_words": float(np.mean([len(y.split()) for y in ys]))}
    if task.has_exact_judge:
        y_init = sample_texts(init.to(acc.device), tok, prompts, seed=cfg.seed + 12, **smp)
        metrics["p_sft_vs_init"] = float(np.mean(task.judge(prompts, ys, y_init)))
        k = cfg.eval.nontransitivity_samples
        nt_prompts = prompts[: cfg.eval.nontransitivity_prompts]
        rep = [x for x in nt_prompts for _ in range(k)]
        flat = sample_texts(policy, tok, rep, seed=cfg.seed + 13, **smp)
        samples = [flat[i * k: (i + 1) * k] for i in range(len(nt_prompts))]
        metrics["nontransitivity"] = sample_matrix_stats(task, nt_prompts, samples)
        refs = task.references(nt_prompts)
        metrics["p_sft_vs_reference"] = float(np.mean(task.judge(nt_prompts, [s[0] for s in samples], refs)))
    metrics["sft_comparisons"] = write_sft_comparisons(cfg, task, policy, tok)
    metrics["runtime_s"] = round(time.time() - t0, 2)

    save_policy(policy, tok, artifact(cfg, "models", "sft"), policy_generation(cfg, tok))
    resume_path(cfg, "sft").unlink(missing_ok=True)
    out = _mk(cfg.results / "sft")
    pd.DataFrame(log["train"]).to_csv(out / "loss.csv", index=False)
    pd.DataFrame(log["eval"]).to_csv(out / "heldout.csv", index=False)
    pd.DataFrame({"prompt": prompts[:20], "summary": ys[:20]}).to_csv(out / "samples.csv", index=False)
    write_metrics(cfg, "sft", metrics)
    return metrics


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def heldout_sft_pairs(cfg: PipelineConfig, task, policy, tok) -> dict:
    """Fresh pairs of SFT samples on eval prompts, labelled by Bernoulli draws of the exact judge (same for PM/RM)."""
    n = cfg.eval.n_heldout_pairs
    prompts = (task.prompts("eval") * (1 + n // max(1, len(task.prompts("eval")))))[:n]
    smp = sampling_kwargs(cfg)
    ys = sample_texts(policy, tok, prompts, seed=cfg.seed + 21, **smp)
    yps = sample_texts(policy, tok, prompts, seed=cfg.seed + 22, **smp)
    p = task.judge(prompts, ys, yps)
    labels = (np.random.default_rng(cfg.seed + 23).random(n) < p).astype(np.int64)
    return {"prompt": prompts, "y": ys, "y_prime": yps, "p": p, "label": labels}


def sft_sample_pairs(cfg: PipelineConfig, task, policy, tok) -> dict:
    """Pairs of SFT samples on RL prompts labelled by the task's raters (``task.draw_labels``): the human
    comparisons of SFT outputs a real data collection would add. Deterministic (same pairs for PM and RM)."""
    n = cfg.preference_data.sft_pairs
    train_prompts = task.prompts("train")
    rng = np.random.default_rng(cfg.preference_data.seed)
    prompts = [train_prompts[i] for i in rng.integers(len(train_prompts), size=n)]
    smp = sampling_kwargs(cfg)
    ys = sample_texts(policy, tok, prompts, seed=cfg.preference_data.seed + 1, **smp)
    yps = sample_texts(policy, tok, prompts, seed=cfg.preference_data.seed + 2, **smp)
    p = task.judge(prompts, ys, yps)
    return {"prompt": prompts, "y": ys, "y_prime": yps, "p": p, "label": task.draw_labels(p, rng)}


def write_sft_comparisons(cfg: PipelineConfig, task, policy, tok) -> dict:
    """Comparisons of SFT samples, collected once by the ``sft`` stage and read by both ``pm`` and ``rm``
    (``artifacts/sft_pairs``): ``train`` (:func:`sft_sample_pairs`, added to the task's preference pairs) and
    ``heldout`` (:func:`heldout_sft_pairs`, the PM-vs-RM comparison). Only for a task with an exact judge (the
    synthetic raters); otherwise the folder holds just ``info.json`` with zero counts."""
    import datasets

    out = artifact(cfg, "sft_pairs")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = {"train": 0, "heldout": 0}
    if task.has_exact_judge:
        parts = {"heldout": heldout_sft_pairs(cfg, task, policy, tok)}
        if cfg.preference_data.sft_pairs > 0:
            parts["train"] = sft_sample_pairs(cfg, task, policy, tok)
        for name, rows in parts.items():
            rows = {k: list(v) if isinstance(v, list) else np.asarray(v).tolist() for k, v in rows.items()}
            datasets.Dataset.from_dict(rows).save_to_disk(str(tmp / name))
            info[name] = len(rows["prompt"])
    write_json(tmp / "info.json", info)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info


def load_sft_comparisons(cfg: PipelineConfig, part: str):
    """The ``train`` or ``heldout`` comparisons written by :func:`write_sft_comparisons` (None if there are none),
    checked against the counts in its ``info.json``."""
    d = require(artifact(cfg, "sft_pairs"), "sft")
    if not (d / "info.json").is_file():
        raise FileNotFoundError(f"{d} has no info.json (not written by the sft stage of this version; run "
                                f"`dvc repro sft`)")
    info = json.loads((d / "info.json").read_text())
    n = info.get(part)
    if not isinstance(n, int):
        raise DamagedArtifactError(f"{d / 'info.json'} has no count for {part!r}; {_rerun_hint(d, 'sft')}")
    if n == 0:
        if (d / part).exists():
            raise DamagedArtifactError(f"{d / part} exists but {d / 'info.json'} records no {part} comparisons; "
                                       f"{_rerun_hint(d, 'sft')}")
        return None
    if not (d / part).is_dir():
        raise DamagedArtifactError(f"{d / part} is missing but {d / 'info.json'} records {n} {part} comparisons; "
                                   f"{_rerun_hint(d, 'sft')}")
    return _load_counted(d / part, n, "sft", d / "info.json")


def run_preference(cfg: PipelineConfig, kind: str) -> dict:
    """Stage ``pm`` (pairwise preference model) or ``rm`` (Bradley–Terry reward model) on the labelled pairs."""
    if kind not in ("pm", "rm"):
        raise ValueError(f"kind: expected 'pm' or 'rm', got {kind!r}")
    t0 = time.time()
    tcfg = cfg.pm if kind == "pm" else cfg.rm
    mcfg = cfg.preference_model if kind == "pm" else cfg.reward_model
    seed_everything(tcfg.seed)
    acc = accelerator_for(cfg)
    tok = load_tokenizer(cfg)
    train = load_dataset_dir(cfg, "prefs", "train")
    test = load_dataset_dir(cfg, "prefs", "test")
    build = build_preference_model if kind == "pm" else build_reward_model
    model = build(mcfg, tok, seed=tcfg.seed)
    check_same_tokenizer(model.tokenizer, tok, f"{kind} model", "data tokenizer")
    X, Y, YP = list(train["prompt"]), list(train["y"]), list(train["y_prime"])
    Z = list(train["label"])
    extra = load_sft_comparisons(cfg, "train")
    if extra is not None:
        X, Y, YP = X + list(extra["prompt"]), Y + list(extra["y"]), YP + list(extra["y_prime"])
        Z = Z + list(extra["label"])
    Z = torch.tensor(Z, dtype=torch.float32)
    # tokenize once (not at every step): the scorer builds the same rows from token ids as from the strings
    X, Y, YP = model.token_ids(X), model.token_ids(Y, response=True), model.token_ids(YP, response=True)
    test = {k: list(test[k]) for k in ("prompt", "y", "y_prime", "label", "p")}

    def loss_fn(m, idx):
        return pair_loss(m, [X[i] for i in idx], [Y[i] for i in idx], [YP[i] for i in idx], Z[idx])

    def eval_fn(m):
        q = predict_proba(m, test["prompt"], test["y"], test["y_prime"])
        return pair_metrics(q, np.asarray(test["label"]), np.asarray(test["p"], dtype=float))

    log = fit(model, loss_fn, len(X), tcfg, resume_path(cfg, kind), acc, eval_fn, desc=kind,
              fingerprint=fingerprint(tcfg, mcfg, cfg.task, cfg.runtime,
                                      inputs=[artifact(cfg, "data"), artifact(cfg, "sft_pairs")]))
    model = acc.unwrap_model(model).eval()
    metrics = {"n_train_pairs": len(X), "test": log["eval"][-1], "train_loss_first": log["train"][0]["loss"],
               "train_loss_last": log["train"][-1]["loss"]}
    pairs = load_sft_comparisons(cfg, "heldout")
    if pairs is not None:
        q = predict_proba(model, list(pairs["prompt"]), list(pairs["y"]), list(pairs["y_prime"]))
        metrics["heldout_sft_pairs"] = pair_metrics(q, np.asarray(pairs["label"]), np.asarray(pairs["p"], float))
    metrics["runtime_s"] = round(time.time() - t0, 2)
    model.save_pretrained(artifact(cfg, "models", kind))
    resume_path(cfg, kind).unlink(missing_ok=True)
    out = _mk(cfg.results / kind)
    pd.DataFrame(log["train"]).to_csv(out / "loss.csv", index=False)
    pd.DataFrame(log["eval"]).to_csv(out / "eval.csv", index=False)
    write_metrics(cfg, kind, metrics)
    return metrics


# Three sets of trained policies: the paper's setting (trained PM / RM), the exact-judge ablation, and a second
# training seed of the paper's setting. A variant's outputs carry its suffix: artifacts/policies_exact/MD1,
# results/metrics/policy_exact_MD1.json, stage policy_exact@MD1.
POLICY_VARIANTS = {"paper": "", "exact": "_exact", "seed": "_seed"}


def policy_dir(cfg: PipelineConfig, name: str, variant: str = "paper") -> Path:
    return artifact(cfg, f"policies{POLICY_VARIANTS[variant]}", name)


def policy_stage(name: str, variant: str = "paper") -> str:
    return f"policy{POLICY_VARIANTS[variant]}@{name}"


def run_policy(cfg: PipelineConfig, name: str, variant: str = "paper") -> dict:
    """Stage ``policy@<name>``: RLHF / Nash-MD-PG / Nash-EMA-PG from μ; saves the policy (and EMA* for EMA).

    ``variant``: ``paper`` trains against the trained PM (Nash) or RM (RLHF); ``exact`` against the task's exact
    judges (:mod:`nlhf.training.exact_judges`) on the ablation's training prompts; ``seed`` like ``paper`` with the
    training seed pg.seed + 1."""
    if variant not in POLICY_VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(POLICY_VARIANTS)}, got {variant!r}")
    method = cfg.method(name)
    suffix = POLICY_VARIANTS[variant]
    pg_cfg = replace(cfg.pg, seed=cfg.pg.seed + 1) if variant == "seed" else cfg.pg
    t0 = time.time()
    seed_everything(pg_cfg.seed)
    acc = accelerator_for(cfg)
    policy, tok = load_sft(cfg)
    ref, _ = load_sft(cfg)
    task = make_task(cfg.task)
    prompts = task.prompts("train")
    judge_file = artifact(cfg, "models", "rm" if method.kind == "rlhf" else "pm")
    if variant == "exact":
        from nlhf import oracle
        from nlhf.training.exact_judges import ExactBTReward, ExactPreference

        if not task.has_exact_judge:
            raise ValueError(f"the exact-judge ablation needs a task with an exact judge, got {cfg.task.name!r}")
        prompts = prompts[: cfg.ablation.train_prompts]
        judge_file = artifact(cfg, "models", "sft")
        if method.kind == "rlhf":
            k = cfg.ablation.pool_sft_samples
            flat = sample_texts(ref, tok, [x for x in prompts for _ in range(k)], seed=cfg.seed + 43,
                                **sampling_kwargs(cfg))
            pools = oracle.build_pools(task, ref, tok, prompts, [flat[i * k: (i + 1) * k] for i in range(len(prompts))])
            judge_model = ExactBTReward(task, tok, pools)
        else:
            judge_model = ExactPreference(task, tok)
    else:
        judge_model = (RewardModel if method.kind == "rlhf" else PreferenceModel).from_pretrained(
            require(judge_file, DVC_STAGES["rm" if method.kind == "rlhf" else "pm"]))
        check_same_tokenizer(judge_model.tokenizer, tok, f"{'reward' if method.kind == 'rlhf' else 'preference'} "
                             f"model ({judge_model.kind})", "policy (SFT)")
    probe = None
    if task.has_exact_judge:
        probe = ConvergenceProbe.from_oracle(require(artifact(cfg, "oracle"), "oracle"), name, task, tok,
                                             ref.to(acc.device), samples=pg_cfg.probe_samples,
                                             max_new_tokens=cfg.sampling.max_new_tokens, seed=cfg.seed + 41,
                                             confidence=cfg.eval.confidence)
    state = resume_path(cfg, f"policy{suffix}_{name}")
    log, ema = train_policy(policy, ref, judge_model, tok, prompts, method, pg_cfg,
                            max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature,
                            state_path=state, accelerator=acc,
                            fingerprint=fingerprint(method, pg_cfg, cfg.sampling, cfg.task, cfg.runtime, variant,
                                                    cfg.ablation if variant == "exact" else None, inputs=[
                                                        artifact(cfg, "data"), artifact(cfg, "models", "sft"),
                                                        judge_file, *([artifact(cfg, "oracle")] if probe else [])]),
                            desc=policy_stage(name, variant), probe=probe)
    policy = acc.unwrap_model(policy).eval()
    out_dir = policy_dir(cfg, name, variant)
    save_policy(policy, tok, out_dir / "policy", policy_generation(cfg, tok))
    if ema is not None:
        save_policy(ema, tok, out_dir / "average", policy_generation(cfg, tok))
    state.unlink(missing_ok=True)

    metrics = {"method": name, "variant": variant, "kind": method.kind, "tau": method.tau, "beta": method.beta,
               "seed": pg_cfg.seed, "ema_beta_effective": log.get("ema_beta_effective"), "final": log["train"][-1]}
    if ema is not None and task.has_exact_judge:
        # the averaged policy against SFT (the last iterate's numbers are the probe's)
        prompts_e = task.prompts("eval")[: cfg.eval.n_prompts]
        smp = sampling_kwargs(cfg)
        y_avg = sample_texts(ema, tok, prompts_e, seed=cfg.seed + 33, **smp)
        y_ref = sample_texts(ref.to(acc.device), tok, prompts_e, seed=cfg.seed + 32, **smp)
        metrics["p_average_vs_sft_exact"] = float(np.mean(task.judge(prompts_e, y_avg, y_ref)))
    metrics["runtime_s"] = round(time.time() - t0, 2)
    out = _mk(cfg.results / f"policy{suffix}" / name)
    pd.DataFrame(log["train"]).to_csv(out / "curve.csv", index=False)
    if log.get("probe"):
        pd.DataFrame(log["probe"]).to_csv(_mk(cfg.results / f"convergence{suffix}") / f"{name}.csv", index=False)
        metrics["probe"] = {**log["probe"][-1], **converged(log["probe"], pg_cfg.steps)}
    write_metrics(cfg, f"policy{suffix}_{name}", metrics)
    return metrics


def load_table_policies(cfg: PipelineConfig, names, variant: str = "paper") -> dict:
    """name → policy model for the table: SFT, each method's last iterate, and EMA*'s averaged policy."""
    models = {}
    for name in names:
        if name == "SFT":
            path, stage = artifact(cfg, "models", "sft"), "sft"
        elif name.endswith("*"):
            path, stage = policy_dir(cfg, name[:-1], variant) / "average", policy_stage(name[:-1], variant)
        else:
            path, stage = policy_dir(cfg, name, variant) / "policy", policy_stage(name, variant)
        model, _ = load_policy(require(path, stage))
        models[name] = model.eval()
    return models


def run_eval(cfg: PipelineConfig) -> dict:
    """Stage ``eval``: Table 1 under the exact judge P* and under the trained PM, ROUGE-L, exploitability, scorecard."""
    from nlhf.evaluate import (exploitability_on_pool, paired_bootstrap_ci, pairwise_table, rouge_l, scorecard,
                               to_markdown, to_matrix)

    t0 = time.time()
    acc = accelerator_for(cfg)
    tok = load_tokenizer(cfg)
    task = make_task(cfg.task)
    names = list(cfg.eval.policies)
    prompts = task.prompts("eval")[: cfg.eval.n_prompts]
    smp = sampling_kwargs(cfg)
    samples = {}
    for k, (name, model) in enumerate(load_table_policies(cfg, names).items()):
        samples[name] = sample_texts(model.to(acc.device), tok, prompts, seed=cfg.eval.seed + 1000 + k, **smp)
    pm = PreferenceModel.from_pretrained(require(artifact(cfg, "models", "pm"), "pm")).to(acc.device).eval()
    check_same_tokenizer(pm.tokenizer, tok, "preference model", "policies")

    def pm_judge(xs, ys, yps):
        from nlhf.training.preference import predict_proba
        return predict_proba(pm, list(xs), list(ys), list(yps))

    judges = {"pm": pm_judge}
    if task.has_exact_judge:
        judges = {"exact": task.judge, **judges}
    out = _mk(cfg.results / "eval")
    metrics: dict = {"n_prompts": len(prompts), "judges": list(judges)}
    oracle_long = oracle_policy = None
    if task.has_exact_judge and hasattr(task.cfg, "population"):
        odir = cfg.results / "oracle" / task.cfg.population
        oracle_long = pd.read_csv(require(odir / "table_long.csv", "oracle"))
        oracle_policy = pd.read_csv(require(odir / "per_policy.csv", "oracle")).set_index("policy")["p_vs_sft"]
    tables = {}
    for jname, judge in judges.items():
        long = pairwise_table(judge, prompts, samples, cfg.eval.confidence)
        tables[jname] = long
        long.to_csv(out / f"table_{jname}_long.csv", index=False)
        to_matrix(long, names).to_csv(out / f"table_{jname}.csv")
        (out / f"table_{jname}.md").write_text(to_markdown(long, names))
        card = scorecard(long, oracle_long, cfg.eval.confidence)
        card.to_csv(out / f"scorecard_{jname}.csv", index=False)
        (out / f"scorecard_{jname}.md").write_text(card.to_markdown(index=False) + "\n")
        metrics[f"scorecard_{jname}"] = {o: int((card["outcome"] == o).sum()) for o in
                                         ("agrees", "inconclusive", "disagrees")}
    main = "exact" if "exact" in judges else "pm"
    refs = task.references(prompts)
    expl = {n: None for n in names}
    if hasattr(task, "candidates") and task.has_exact_judge:  # the adversary's pool needs an enumerable task
        k, ex_prompts = cfg.eval.exploitability_samples, prompts[: cfg.eval.exploitability_prompts]
        pools = [task.candidates(x) for x in ex_prompts]
        for j, (name, model) in enumerate(load_table_policies(cfg, names).items()):
            flat = sample_texts(model.to(acc.device), tok, [x for x in ex_prompts for _ in range(k)],
                                seed=cfg.eval.seed + 2000 + j, **smp)
            expl[name] = exploitability_on_pool(task.judge, ex_prompts, pools,
                                                [flat[i * k: (i + 1) * k] for i in range(len(ex_prompts))])
    per_policy = pd.DataFrame({
        "policy": names,
        "p_vs_sft": [float(to_matrix(tables[main], names).loc["SFT", n]) for n in names],
        "rouge_l": [rouge_l(samples[n], refs) for n in names],
        "exploitability": [expl[n] for n in names],
        "mean_words": [float(np.mean([len(y.split()) for y in samples[n]])) for n in names],
    })
    if task.has_exact_judge:
        per_policy["well_formed"] = [float(np.mean([task.is_well_formed(x, y) for x, y in zip(prompts, samples[n])]))
                                     for n in names]
    pools_file = artifact(cfg, "oracle", "pools.json")
    if task.has_exact_judge and pools_file.exists():
        # how often a policy's samples fall inside the oracle's candidate pools (the oracle's prompts come first)
        cands = [set(c) for c in json.loads(pools_file.read_text())["candidates"]]
        per_policy["in_oracle_pool"] = [float(np.mean([y in c for y, c in zip(samples[n], cands)])) for n in names]
    if oracle_policy is not None:
        # normalised margin: how much of its method's oracle margin over SFT a trained policy reaches
        target = {n: ("SP" if n.startswith("EMA") else n) for n in names}
        ceiling = [float(oracle_policy.get(target[n], np.nan)) for n in names]
        per_policy["oracle_target_vs_sft"] = ceiling
        per_policy["normalized_margin"] = [(p - 0.5) / (c - 0.5) if c - 0.5 > 1e-3 else np.nan
                                           for p, c in zip(per_policy["p_vs_sft"], ceiling)]
        if "RLHF" in names and "SFT" in names:
            # the paper's "RLHF is the best against SFT": paired difference with the best other policy
            vs_sft = {n: np.asarray(task.judge(prompts, samples[n], samples["SFT"])) for n in names if n != "SFT"}
            rival = max((n for n in vs_sft if n != "RLHF"), key=lambda n: vs_sft[n].mean())
            d, lo, hi = paired_bootstrap_ci(vs_sft["RLHF"], vs_sft[rival], cfg.eval.confidence)
            metrics["rlhf_best_vs_sft"] = {"best_other": rival, "difference": round(d, 4),
                                           "ci": [round(lo, 4), round(hi, 4)]}
    per_policy.to_csv(out / "per_policy.csv", index=False)
    beta_sweep_table(cfg, tables[main], names, oracle_long).to_csv(out / "beta_sweep.csv", index=False)
    if task.has_exact_judge and oracle_long is not None and cfg.ablation.methods:
        metrics["exact_judge_training"] = exact_judge_tables(cfg, task, tok, prompts, samples["SFT"], oracle_long,
                                                             oracle_policy, tables["exact"], out)
    pd.DataFrame({"prompt": prompts[:10], **{n: samples[n][:10] for n in names}}).to_csv(out / "samples.csv",
                                                                                          index=False)
    pm_vs_rm_table(cfg).to_csv(out / "pm_vs_rm.csv", index=False)
    m = to_matrix(tables[main], names)
    headline = {}
    for a, b in (("MD1", "RLHF"), ("MD1", "SP"), ("BR", "RLHF"), ("RLHF", "SFT")):
        if a in names and b in names:
            ci = to_matrix(tables[main], names, "ci").loc[b, a]
            headline[f"{a}_vs_{b}"] = {"p": round(float(m.loc[b, a]), 4), "ci95": round(float(ci), 4)}
    metrics["headline"] = headline
    metrics["runtime_s"] = round(time.time() - t0, 2)
    write_metrics(cfg, "eval", metrics)
    return metrics


def beta_sweep_table(cfg: PipelineConfig, long: pd.DataFrame, names, oracle_long=None) -> pd.DataFrame:
    """The paper's β sweep (§9): for every Nash-MD-PG method in the table, by β, its win rate against SFT and
    against RLHF with their CIs, and, where the oracle ran, the same two numbers for its oracle target."""
    from nlhf.evaluate import to_matrix

    p, ci = to_matrix(long, names), to_matrix(long, names, "ci")
    rlhf = next((n for n, m in cfg.methods.items() if m.kind == "rlhf" and n in names), None)
    oracle = None if oracle_long is None else oracle_long.set_index(["row", "column"])["p"]
    rows = []
    for n, m in sorted(((n, m) for n, m in cfg.methods.items() if m.kind == "nash_md" and n in names),
                       key=lambda t: t[1].beta):
        row = {"policy": n, "beta": m.beta, "p_vs_sft": p.loc["SFT", n], "p_vs_sft_ci": ci.loc["SFT", n]}
        if rlhf is not None:
            row.update(p_vs_rlhf=p.loc[rlhf, n], p_vs_rlhf_ci=ci.loc[rlhf, n])
        if oracle is not None and ("SFT", n) in oracle:
            row["oracle_target_vs_sft"] = oracle[("SFT", n)]
            if rlhf is not None and (rlhf, n) in oracle:
                row["oracle_target_vs_rlhf"] = oracle[(rlhf, n)]
        rows.append(row)
    return pd.DataFrame(rows)


def exact_judge_tables(cfg: PipelineConfig, task, tok, prompts, sft_samples, oracle_long, oracle_policy,
                       paper_long, out: Path) -> dict:
    """The exact-judge ablation's table (its policies and SFT under P*), its normalised margins, its sign agreement
    with the oracle table, the second training seed of the headline comparisons, and the scorecard with theory,
    exact-judge training, the paper's setting and the paper side by side."""
    from nlhf.evaluate import pairwise_table, scorecard, to_markdown, to_matrix
    from nlhf.plots import preference_heatmap

    acc = accelerator_for(cfg)
    smp = sampling_kwargs(cfg)
    ablation = list(cfg.ablation.methods)
    names = ["SFT"] + ablation + [f"{n}*" for n in ablation if cfg.methods[n].kind == "nash_ema"]
    samples = {"SFT": sft_samples}
    for k, (name, model) in enumerate(load_table_policies(cfg, names[1:], "exact").items()):
        samples[name] = sample_texts(model.to(acc.device), tok, prompts, seed=cfg.eval.seed + 3000 + k, **smp)
    long = pairwise_table(task.judge, prompts, samples, cfg.eval.confidence)
    long.to_csv(out / "table_exact_judge_training_long.csv", index=False)
    to_matrix(long, names).to_csv(out / "table_exact_judge_training.csv")
    (out / "table_exact_judge_training.md").write_text(to_markdown(long, names))
    fig = preference_heatmap(long, names, "Policies trained against the exact judges: P*(column ≻ row)")
    fig.savefig(out / "table_exact_judge_training.png", dpi=130, bbox_inches="tight")
    m = to_matrix(long, names)
    target = {n: ("SP" if n.rstrip("*") in cfg.methods and cfg.methods[n.rstrip("*")].kind == "nash_ema" else n)
              for n in names}
    om = to_matrix(oracle_long, list(dict.fromkeys(target.values())))
    margins = []
    for n in names[1:]:
        ceiling = float(oracle_policy.get(target[n], np.nan))
        margins.append({"policy": n, "p_vs_sft": float(m.loc["SFT", n]), "oracle_target_vs_sft": ceiling,
                        "normalized_margin": (float(m.loc["SFT", n]) - 0.5) / (ceiling - 0.5)})
    pd.DataFrame(margins).to_csv(out / "per_policy_exact_judge_training.csv", index=False)
    # sign agreement with the oracle where the oracle is clearly away from a tie
    cells = []
    for r in names:
        for c in names:
            if r < c and target[r] != target[c]:
                o = float(om.loc[target[r], target[c]])
                if abs(o - 0.5) > 0.04:
                    cells.append({"row": r, "column": c, "oracle": o, "trained": float(m.loc[r, c]),
                                  "same_sign": bool((o - 0.5) * (float(m.loc[r, c]) - 0.5) > 0)})
    pd.DataFrame(cells).to_csv(out / "exact_judge_vs_oracle_signs.csv", index=False)
    # a second training seed of the paper's setting
    seed_rows = []
    seed_names = [n for n in cfg.ablation.seed_methods]
    if seed_names:
        s2 = {n: sample_texts(model.to(acc.device), tok, prompts, seed=cfg.eval.seed + 4000 + k, **smp)
              for k, (n, model) in enumerate(load_table_policies(cfg, seed_names, "seed").items())}
        pm_ = to_matrix(paper_long, list(dict.fromkeys(paper_long["row"])))
        ci_ = to_matrix(paper_long, list(dict.fromkeys(paper_long["row"])), "ci")
        for a, b in (("MD1", "RLHF"), ("MD1", "SP"), ("BR", "RLHF")):
            if a in s2 and b in s2:
                p2 = float(np.mean(task.judge(prompts, s2[a], s2[b])))
                p1 = float(pm_.loc[b, a])
                seed_rows.append({"comparison": f"P({a} ≻ {b})", "seed_1": p1, "seed_2": p2,
                                  "spread": abs(p1 - p2), "sampling_ci95": float(ci_.loc[b, a])})
    pd.DataFrame(seed_rows).to_csv(out / "seeds.csv", index=False)
    # theory / exact-judge training / paper setting / paper, claim by claim
    card_exact = scorecard(long, oracle_long, cfg.eval.confidence).set_index("claim")
    card_paper = scorecard(paper_long, oracle_long, cfg.eval.confidence).set_index("claim")
    side = pd.DataFrame({"paper": card_paper["paper"], "oracle (theory)": card_paper["oracle"],
                         "oracle outcome": card_paper["oracle_outcome"],
                         "exact-judge training": card_exact["ours"].reindex(card_paper.index),
                         "exact-judge outcome": card_exact["outcome"].reindex(card_paper.index),
                         "trained judges (paper setting)": card_paper["ours"],
                         "paper-setting outcome": card_paper["outcome"]}).reset_index()
    side.to_csv(out / "scorecard_side_by_side.csv", index=False)
    (out / "scorecard_side_by_side.md").write_text(side.to_markdown(index=False) + "\n")
    return {"normalized_margin_min": float(min(r["normalized_margin"] for r in margins)),
            "sign_agreement": f"{sum(c['same_sign'] for c in cells)}/{len(cells)}",
            "seeds": {r["comparison"]: {k: round(v, 4) for k, v in r.items() if k != "comparison"}
                      for r in seed_rows}}


def pm_vs_rm_table(cfg: PipelineConfig) -> pd.DataFrame:
    """Held-out pairs of SFT samples: log-loss of each model next to the Bayes limit, and direction agreement."""
    rows = []
    for kind, name in (("pm", "preference model"), ("rm", "reward model (BT)")):
        m = json.loads(require(metrics_path(cfg, kind), kind).read_text())
        h = m.get("heldout_sft_pairs", m["test"])
        rows.append({"model": name, "log_loss": h["log_loss"], "bayes_log_loss": h.get("bayes_log_loss"),
                     "excess_log_loss": h.get("excess_log_loss"), "kl_to_true": h.get("kl_to_true"),
                     "direction_agreement": h.get("direction_agreement"), "accuracy": h["accuracy"]})
    return pd.DataFrame(rows)


def run_oracle(cfg: PipelineConfig) -> dict:
    """Stage ``oracle``: each method's target on candidate pools of the evaluation prompts, under the exact judge of
    every configured rater population (:mod:`nlhf.oracle`); the oracle table, exploitability and support facts."""

    from nlhf import oracle
    from nlhf.evaluate import to_markdown, to_matrix
    from nlhf.plots import preference_heatmap
    from nlhf.tasks import SyntheticTask

    t0 = time.time()
    task = make_task(cfg.task)
    if not isinstance(task, SyntheticTask):
        raise ValueError(f"task.name: the oracle needs an enumerable task with an exact judge (synthetic), got "
                         f"{cfg.task.name!r}")
    ocfg = cfg.oracle
    acc = accelerator_for(cfg)
    policy, tok = load_sft(cfg, acc.device)
    prompts = task.prompts("eval")[: ocfg.n_prompts]
    smp = sampling_kwargs(cfg)

    def sft_samples(k: int, seed: int) -> list[list[str]]:
        flat = sample_texts(policy, tok, [x for x in prompts for _ in range(k)], seed=seed, **smp)
        return [flat[i * k: (i + 1) * k] for i in range(len(prompts))]

    in_pool_samples = sft_samples(ocfg.sft_samples, ocfg.seed + 1)
    pools = oracle.build_pools(task, policy, tok, prompts, in_pool_samples, cfg.sampling.temperature)
    fresh = sft_samples(ocfg.coverage_samples, ocfg.seed + 2)
    coverage = float(np.mean([y in set(p.candidates) for p, ys in zip(pools, fresh) for y in ys]))
    rm = RewardModel.from_pretrained(require(artifact(cfg, "models", "rm"), "rm")).to(acc.device).eval()
    with torch.no_grad():
        rm_scores = [rm.rewards([p.prompt] * len(p.candidates), p.candidates).double().cpu().numpy() for p in pools]

    methods = {n: m for n, m in cfg.methods.items()}
    order = ["SFT", "NE"] + [n for n, m in methods.items() if m.kind == "rlhf"]
    order += [f"{n} (RM)" for n, m in methods.items() if m.kind == "rlhf"]
    order += [n for n, m in methods.items() if m.kind == "nash_md"]
    nash = [n for n, m in methods.items() if m.kind == "nash_md" and m.beta == 0.0]
    rlhf = [n for n, m in methods.items() if m.kind == "rlhf"]
    populations = ocfg.populations or [task.cfg.population]
    metrics: dict = {"n_prompts": len(pools), "pool_size_mean": float(np.mean([len(p.candidates) for p in pools])),
                     "sft_mass_on_pool": float(np.mean([p.sft_mass for p in pools])),
                     "sft_samples_in_pool": coverage, "populations": {}}
    for population in populations:
        pop_task = task if population == task.cfg.population else SyntheticTask(
            replace(task.cfg, population=population, rater_weights=None, rater_sharpness=None))
        Ps = oracle.pool_matrices(pop_task, pools)
        own = population == task.cfg.population
        per_prompt = [oracle.method_targets(P, p.log_mu, methods, s if own else None)
                      for P, p, s in zip(Ps, pools, rm_scores)]
        names = [n for n in order if n in per_prompt[0]]
        long = oracle.table_long(per_prompt, Ps, names, cfg.eval.confidence)
        out = _mk(cfg.results / "oracle" / population)
        long.to_csv(out / "table_long.csv", index=False)
        to_matrix(long, names).to_csv(out / "table.csv")
        (out / "table.md").write_text(to_markdown(long, names))
        fig = preference_heatmap(long, names, f"Oracle policies, exact judge ({population} raters)")
        fig.savefig(out / "table.png", dpi=120)
        expl = oracle.exploitability_per_policy(per_prompt, Ps, names)
        m = to_matrix(long, names)
        pd.DataFrame({"policy": names, "p_vs_sft": [float(m.loc["SFT", n]) for n in names],
                      "exploitability": [expl[n] for n in names]}).to_csv(out / "per_policy.csv", index=False)
        gap = oracle.mixture_gap(per_prompt, pools, methods)
        gap.to_csv(out / "token_vs_sequence_mixture.csv", index=False)
        pm: dict = {**oracle.support_stats(per_prompt, Ps, [p.log_mu for p in pools]),
                    "sft_sample_nontransitivity": oracle.sample_cycles(
                        Ps, pools, [ys[: cfg.eval.nontransitivity_samples] for ys in in_pool_samples])}
        if nash and rlhf:
            ci = to_matrix(long, names, "ci")
            pm["p_sp_vs_rlhf"] = {"p": round(float(m.loc[rlhf[0], nash[0]]), 4),
                                  "ci95": round(float(ci.loc[rlhf[0], nash[0]]), 4)}
        pm["token_vs_sequence_tv_max"] = float(gap["tv_mean"].max()) if len(gap) else None
        metrics["populations"][population] = pm
        if own:  # the targets the policy stages measure their convergence against
            oracle.write_targets(artifact(cfg, "oracle"), pools, per_prompt, fresh)
    metrics["runtime_s"] = round(time.time() - t0, 2)
    write_metrics(cfg, "oracle", metrics)
    return metrics
