"""The pipeline's stages, one function each: tabular; data → sft → {pm, rm} → oracle → policy × 13 (+ the
exact-judge ablation and a second seed) → eval. dvc.yaml holds the DAG; each notebook calls its stage's function.

A stage reads its params section and its inputs from ``cfg.artifacts`` (checked: :mod:`nlhf.artifacts`), writes its
models and datasets there (DVC outputs) and its metrics, tables and figures under ``cfg.results``; every path is
:class:`nlhf.artifacts.Layout`'s (``cfg.layout``). The pieces it is
made of live in their own modules: paths and checks (:mod:`nlhf.artifacts`), the runtime and model loading
(:mod:`nlhf.runtime`), the SFT comparisons (:mod:`nlhf.comparisons`), the evaluation's derived tables
(:mod:`nlhf.reports`) and the random streams (:mod:`nlhf.seeds`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import torch

from nlhf.artifacts import ensure_dir, fingerprint, load_dataset_dir, load_tokenizer, require, write_metrics
from nlhf.comparisons import load_sft_comparisons, write_sft_comparisons
from nlhf.evaluate import sft_checks
from nlhf.models import (
    PreferenceModel,
    RewardModel,
    build_policy,
    build_preference_model,
    build_reward_model,
    check_same_tokenizer,
    save_policy,
)
from nlhf.params import PipelineConfig
from nlhf.reports import beta_sweep_table, exact_judge_tables, pm_vs_rm_table
from nlhf.sampling.texts import sample_texts
from nlhf.runtime import accelerator_for, load_sft, load_table_policies, policy_generation, sampling_kwargs
from nlhf.seeds import seed_for
from nlhf.tasks import make_task
from nlhf.training.checkpoint import seed_everything
from nlhf.training.methods import RLHF, NashMD, policy_targets
from nlhf.training.policy_gradient import train_policy
from nlhf.training.probe import ConvergenceProbe, converged
from nlhf.training.preference import pair_loss, pair_metrics, predict_proba
from nlhf.training.sft import sft_batch, sft_loss, tokenize_sft
from nlhf.training.supervised import fit


# ------------------------------------------------------------------------------------------------------- stages


def run_tabular(cfg: PipelineConfig) -> dict:
    """Stage ``tabular``: Nash-MD and the comparison algorithms on exact games (:mod:`nlhf.tabular.experiment`)."""
    from nlhf.tabular.experiment import run_tabular as run

    metrics = run(cfg.tabular, cfg.layout.results("tabular"))
    write_metrics(cfg, "tabular", metrics)
    return metrics


def run_data(cfg: PipelineConfig) -> dict:
    """Stage ``data``: prompts, SFT pairs, labelled preference pairs and the tokenizer (artifacts/data)."""
    import datasets

    from nlhf.tasks import build_task_data

    datasets.disable_progress_bars()
    t0 = time.time()
    task = make_task(cfg.task)
    out = cfg.layout.data()
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
              fingerprint=fingerprint(cfg.sft, cfg.policy_model, cfg.task, cfg.runtime,
                                      inputs=[layout.data()]))
    policy = accelerator.unwrap_model(policy).eval()

    prompts = task.prompts("eval")[: cfg.eval.n_prompts]
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
    seed_everything(train_cfg.seed)
    accelerator = accelerator_for(cfg)
    tok = load_tokenizer(cfg)
    train = load_dataset_dir(cfg, "prefs", "train")
    test = load_dataset_dir(cfg, "prefs", "test")
    build = build_preference_model if kind == "pm" else build_reward_model
    model = build(model_cfg, tok, seed=train_cfg.seed)
    check_same_tokenizer(model.tokenizer, tok, f"{kind} model", "data tokenizer")
    prompts, ys, y_primes = list(train["prompt"]), list(train["y"]), list(train["y_prime"])
    labels = list(train["label"])
    extra = load_sft_comparisons(cfg, "train")
    if extra is not None:
        prompts, ys = prompts + list(extra["prompt"]), ys + list(extra["y"])
        y_primes = y_primes + list(extra["y_prime"])
        labels = labels + list(extra["label"])
    labels = torch.tensor(labels, dtype=torch.float32)
    # tokenize once (not at every step): the scorer builds the same rows from token ids as from the strings
    prompts, ys = model.token_ids(prompts), model.token_ids(ys, response=True)
    y_primes = model.token_ids(y_primes, response=True)
    test = {k: list(test[k]) for k in ("prompt", "y", "y_prime", "label", "p")}

    def loss_fn(m, idx):
        return pair_loss(m, [prompts[i] for i in idx], [ys[i] for i in idx], [y_primes[i] for i in idx], labels[idx])

    def eval_fn(m):
        q = predict_proba(m, test["prompt"], test["y"], test["y_prime"])
        return pair_metrics(q, np.asarray(test["label"]), np.asarray(test["p"], dtype=float))

    layout = cfg.layout
    log = fit(model, loss_fn, len(prompts), train_cfg, layout.resume(kind), accelerator, eval_fn, desc=kind,
              fingerprint=fingerprint(train_cfg, model_cfg, cfg.task, cfg.runtime,
                                      inputs=[layout.data(), layout.sft_pairs()]))
    model = accelerator.unwrap_model(model).eval()
    metrics = {"n_train_pairs": len(prompts), "test": log["eval"][-1], "train_loss_first": log["train"][0]["loss"],
               "train_loss_last": log["train"][-1]["loss"]}
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


def run_policy(cfg: PipelineConfig, name: str, variant: str = "paper") -> dict:
    """Stage ``policy@<name>``: RLHF / Nash-MD-PG / Nash-EMA-PG from μ; saves the policy (and EMA* for EMA).

    ``variant``: ``paper`` trains against the trained PM (Nash) or RM (RLHF); ``exact`` against the task's exact
    judges (:mod:`nlhf.training.exact_judges`) on the ablation's training prompts; ``seed`` like ``paper`` with the
    training seed pg.seed + 1."""
    layout = cfg.layout
    if variant not in layout.POLICY_VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(layout.POLICY_VARIANTS)}, got {variant!r}")
    method = cfg.method(name)
    pg_cfg = replace(cfg.pg, seed=cfg.pg.seed + 1) if variant == "seed" else cfg.pg
    t0 = time.time()
    seed_everything(pg_cfg.seed)
    accelerator = accelerator_for(cfg)
    policy, tok = load_sft(cfg)
    ref, _ = load_sft(cfg)
    task = make_task(cfg.task)
    prompts = task.prompts("train")
    judge = "rm" if method.JUDGE == "reward" else "pm"
    judge_file = layout.model(judge)
    if variant == "exact":
        from nlhf import oracle
        from nlhf.training.exact_judges import ExactBTReward, ExactPreference

        if not task.has_exact_judge:
            raise ValueError(f"the exact-judge ablation needs a task with an exact judge, got {cfg.task.name!r}")
        prompts = prompts[: cfg.ablation.train_prompts]
        judge_file = layout.model("sft")
        if method.JUDGE == "reward":
            k = cfg.ablation.pool_sft_samples
            flat = sample_texts(ref, tok, [x for x in prompts for _ in range(k)],
                                seed=seed_for(cfg.seed, "policy.exact_bt_pool_samples"),
                                **sampling_kwargs(cfg))
            pools = oracle.build_pools(task, ref, tok, prompts, [flat[i * k: (i + 1) * k] for i in range(len(prompts))])
            judge_model = ExactBTReward(task, tok, pools)
        else:
            judge_model = ExactPreference(task, tok)
    else:
        judge_model = {"rm": RewardModel, "pm": PreferenceModel}[judge].from_pretrained(
            require(judge_file, layout.dvc_stage(judge)))
        check_same_tokenizer(judge_model.tokenizer, tok, f"{method.JUDGE} model ({judge_model.kind})", "policy (SFT)")
    probe = None
    if task.has_exact_judge:
        probe = ConvergenceProbe.from_oracle(require(layout.oracle_pools, "oracle"),
                                             require(layout.oracle_target(name), "oracle"), task, tok,
                                             ref.to(accelerator.device), samples=pg_cfg.probe_samples,
                                             max_new_tokens=cfg.sampling.max_new_tokens,
                                             seed=seed_for(cfg.seed, "policy.probe"),
                                             confidence=cfg.eval.confidence)
    state = layout.resume(layout.policy_key(name, variant))
    log, ema = train_policy(policy, ref, judge_model, tok, prompts, method, pg_cfg,
                            max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature,
                            state_path=state, accelerator=accelerator,
                            fingerprint=fingerprint(method, pg_cfg, cfg.sampling, cfg.task, cfg.runtime, variant,
                                                    cfg.ablation if variant == "exact" else None, inputs=[
                                                        layout.data(), layout.model("sft"),
                                                        judge_file, *([layout.oracle()] if probe else [])]),
                            desc=layout.policy_stage(name, variant), probe=probe)
    policy = accelerator.unwrap_model(policy).eval()
    out_dir = layout.policy(name, variant)
    save_policy(policy, tok, out_dir / "policy", policy_generation(cfg, tok))
    if ema is not None:
        save_policy(ema, tok, out_dir / "average", policy_generation(cfg, tok))
    state.unlink(missing_ok=True)

    metrics = {"method": name, "variant": variant, **asdict(method), "seed": pg_cfg.seed, "ema_beta_effective": log.get("ema_beta_effective"), "final": log["train"][-1]}
    if ema is not None and task.has_exact_judge:
        # the averaged policy against SFT (the last iterate's numbers are the probe's)
        prompts_e = task.prompts("eval")[: cfg.eval.n_prompts]
        sampling = sampling_kwargs(cfg)
        y_avg = sample_texts(ema, tok, prompts_e, seed=seed_for(cfg.seed, "policy.average_samples"), **sampling)
        y_ref = sample_texts(ref.to(accelerator.device), tok, prompts_e,
                             seed=seed_for(cfg.seed, "policy.average_reference_samples"), **sampling)
        metrics["p_average_vs_sft_exact"] = float(np.mean(task.judge(prompts_e, y_avg, y_ref)))
    metrics["runtime_s"] = round(time.time() - t0, 2)
    out = ensure_dir(layout.policy_results(name, variant))
    pd.DataFrame(log["train"]).to_csv(out / "curve.csv", index=False)
    if log.get("probe"):
        convergence = layout.convergence(name, variant)
        ensure_dir(convergence.parent)
        pd.DataFrame(log["probe"]).to_csv(convergence, index=False)
        metrics["probe"] = {**log["probe"][-1], **converged(log["probe"], pg_cfg.steps)}
    write_metrics(cfg, layout.policy_key(name, variant), metrics)
    return metrics


def run_eval(cfg: PipelineConfig) -> dict:
    """Stage ``eval``: Table 1 under the exact judge P* and under the trained PM, ROUGE-L, exploitability, scorecard."""
    from nlhf.evaluate import (exploitability_on_pool, paired_bootstrap_ci, pairwise_table, rouge_l, scorecard,
                               to_markdown, to_matrix)

    t0 = time.time()
    accelerator = accelerator_for(cfg)
    tok = load_tokenizer(cfg)
    task = make_task(cfg.task)
    names = cfg.table
    prompts = task.prompts("eval")[: cfg.eval.n_prompts]
    sampling = sampling_kwargs(cfg)
    samples = {}
    for k, (name, model) in enumerate(load_table_policies(cfg, names).items()):
        samples[name] = sample_texts(model.to(accelerator.device), tok, prompts,
                                     seed=seed_for(cfg.eval.seed, "eval.samples", k), **sampling)
    layout = cfg.layout
    pm = PreferenceModel.from_pretrained(require(layout.model("pm"), "pm")).to(accelerator.device).eval()
    check_same_tokenizer(pm.tokenizer, tok, "preference model", "policies")

    def pm_judge(xs, ys, yps):
        from nlhf.training.preference import predict_proba
        return predict_proba(pm, list(xs), list(ys), list(yps))

    judges = {"pm": pm_judge}
    if task.has_exact_judge:
        judges = {"exact": task.judge, **judges}
    out = ensure_dir(layout.results("eval"))
    metrics: dict = {"n_prompts": len(prompts), "judges": list(judges)}
    oracle_long = oracle_policy = None
    if task.has_exact_judge and hasattr(task.cfg, "population"):
        odir = layout.results("oracle", task.cfg.population)
        oracle_long = pd.read_csv(require(odir / "table_long.csv", "oracle"))
        oracle_policy = pd.read_csv(require(odir / "per_policy.csv", "oracle")).set_index("policy")["p_vs_sft"]
    tables = {}
    for jname, judge in judges.items():
        long = pairwise_table(judge, prompts, samples, cfg.eval.confidence)
        tables[jname] = long
        long.to_csv(out / f"table_{jname}_long.csv", index=False)
        to_matrix(long, names).to_csv(out / f"table_{jname}.csv")
        (out / f"table_{jname}.md").write_text(to_markdown(long, names))
        card = scorecard(long, oracle_long, cfg.eval.confidence, policy_targets(cfg.methods))
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
            flat = sample_texts(model.to(accelerator.device), tok, [x for x in ex_prompts for _ in range(k)],
                                seed=seed_for(cfg.eval.seed, "eval.exploitability_samples", j), **sampling)
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
    pools_file = layout.oracle_pools
    if task.has_exact_judge and pools_file.exists():
        # how often a policy's samples fall inside the oracle's candidate pools (the oracle's prompts come first)
        cands = [set(c) for c in json.loads(pools_file.read_text())["candidates"]]
        per_policy["in_oracle_pool"] = [float(np.mean([y in c for y, c in zip(samples[n], cands)])) for n in names]
    if oracle_policy is not None:
        # normalised margin: how much of its method's oracle margin over SFT a trained policy reaches
        target = policy_targets(cfg.methods)
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
    accelerator = accelerator_for(cfg)
    policy, tok = load_sft(cfg, accelerator.device)
    prompts = task.prompts("eval")[: ocfg.n_prompts]
    sampling = sampling_kwargs(cfg)

    def sft_samples(k: int, seed: int) -> list[list[str]]:
        flat = sample_texts(policy, tok, [x for x in prompts for _ in range(k)], seed=seed, **sampling)
        return [flat[i * k: (i + 1) * k] for i in range(len(prompts))]

    in_pool_samples = sft_samples(ocfg.sft_samples, seed_for(ocfg.seed, "oracle.pool_samples"))
    pools = oracle.build_pools(task, policy, tok, prompts, in_pool_samples, cfg.sampling.temperature)
    fresh = sft_samples(ocfg.coverage_samples, seed_for(ocfg.seed, "oracle.coverage_samples"))
    coverage = float(np.mean([y in set(p.candidates) for p, ys in zip(pools, fresh) for y in ys]))
    layout = cfg.layout
    rm = RewardModel.from_pretrained(require(layout.model("rm"), "rm")).to(accelerator.device).eval()
    with torch.no_grad():
        rm_scores = [rm.rewards([p.prompt] * len(p.candidates), p.candidates).double().cpu().numpy() for p in pools]

    methods = cfg.methods
    nash = [n for n, m in methods.items() if isinstance(m, NashMD) and m.beta == 0.0]
    rlhf = [n for n, m in methods.items() if isinstance(m, RLHF)]
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
        names = list(per_prompt[0])
        long = oracle.table_long(per_prompt, Ps, names, cfg.eval.confidence)
        out = ensure_dir(layout.results("oracle", population))
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
            oracle.write_targets(layout.oracle_pools, layout.oracle_target, pools, per_prompt, fresh)
    metrics["runtime_s"] = round(time.time() - t0, 2)
    write_metrics(cfg, "oracle", metrics)
    return metrics
