"""Stage ``eval``: the paper's Table 1 under the exact judge and the trained PM, ROUGE-L, exploitability, the
scorecard, and the derived tables of :mod:`nlhf.pipeline.reports`."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from nlhf.pipeline.artifacts import ensure_dir, load_tokenizer, require, write_metrics
from nlhf.pipeline.params import PipelineConfig
from nlhf.pipeline.reports import beta_sweep_table, exact_judge_tables, pm_vs_rm_table
from nlhf.pipeline.runtime import accelerator_for, heldout_judge, load_table_policies, sampling_kwargs, text_judge
from nlhf.sampling.texts import sample_texts
from nlhf.seeds import seed_for
from nlhf.tasks import make_task
from nlhf.training.methods import policy_targets


def run_eval(cfg: PipelineConfig) -> dict:
    """Stage ``eval``: Table 1 under the exact judge P* and under the trained PM, ROUGE-L, exploitability, scorecard."""
    from nlhf.evaluate import to_matrix

    t0 = time.time()
    llm_model = None
    if cfg.eval.llm_judge is not None:  # checked before anything is sampled
        from nlhf.models.local import check_model_folder

        llm_model = check_model_folder(cfg.eval.llm_judge, "eval.llm_judge", causal_lm=True)
    accelerator = accelerator_for(cfg)
    tok = load_tokenizer(cfg)
    task = make_task(cfg.task)
    names = cfg.table
    prompts = task.prompts("eval")[: cfg.eval.n_prompts]
    samples = {}
    for k, (name, model) in enumerate(load_table_policies(cfg, names).items()):
        samples[name] = sample_texts(model.to(accelerator.device), tok, prompts,
                                     seed=seed_for(cfg.eval.seed, "eval.samples", k), **sampling_kwargs(cfg))
    judges = table_judges(cfg, task, tok, accelerator.device)
    out = ensure_dir(cfg.layout.results("eval"))
    metrics: dict = {"n_prompts": len(prompts), "judges": list(judges)}
    if llm_model is not None:
        metrics["llm_judge_model"] = llm_model
    oracle_long = oracle_policy = None
    if task.has_exact_judge and hasattr(task.cfg, "population"):
        odir = cfg.layout.results("oracle", task.cfg.population)
        oracle_long = pd.read_csv(require(odir / "table_long.csv", "oracle"))
        oracle_policy = pd.read_csv(require(odir / "per_policy.csv", "oracle")).set_index("policy")["p_vs_sft"]
    tables = write_tables(cfg, judges, prompts, samples, oracle_long, out, metrics)
    main = next(iter(judges))
    metrics["judge_agreement"] = write_judge_agreement(cfg, judges, out)
    if "pstar" in judges:
        metrics["judge_gap"] = write_judge_gap(cfg, judges, prompts, samples, out)
    per_policy = per_policy_table(cfg, task, tok, judges[main], tables[main], prompts, samples, accelerator.device)
    if oracle_policy is not None:
        metrics.update(oracle_columns(cfg, task, per_policy, oracle_policy, prompts, samples))
    per_policy.to_csv(out / "per_policy.csv", index=False)
    beta_sweep_table(cfg, tables[main], names, oracle_long).to_csv(out / "beta_sweep.csv", index=False)
    if task.has_exact_judge and oracle_long is not None and cfg.ablation.methods:
        metrics["exact_judge_training"] = exact_judge_tables(cfg, task, tok, prompts, samples["SFT"], oracle_long,
                                                             oracle_policy, tables["exact"], out)
    pd.DataFrame({"prompt": prompts[:10], **{n: samples[n][:10] for n in names}}).to_csv(out / "samples.csv",
                                                                                          index=False)
    pm_vs_rm_table(cfg).to_csv(out / "pm_vs_rm.csv", index=False)
    m, ci = to_matrix(tables[main], names), to_matrix(tables[main], names, "ci")
    metrics["headline"] = {f"{a}_vs_{b}": {"p": round(float(m.loc[b, a]), 4), "ci95": round(float(ci.loc[b, a]), 4)}
                           for a, b in (("MD1", "RLHF"), ("MD1", "SP"), ("BR", "RLHF"), ("RLHF", "SFT"))
                           if a in names and b in names}
    metrics["runtime_s"] = round(time.time() - t0, 2)
    write_metrics(cfg, "eval", metrics)
    return metrics


def table_judges(cfg: PipelineConfig, task, tok, device) -> dict:
    """name → judge of the table, the main one first: P* where the task has it, else the held-out judge; then the
    training PM, the LLM judge (``eval.llm_judge``) and the exported P* (``eval.synthetic_export``) when set."""
    pm = text_judge(cfg.layout.model("pm"), "preference model", "pm", tok, device)
    main = {"exact": task.judge} if task.has_exact_judge else {"heldout": heldout_judge(cfg, tok, device)}
    judges = {**main, "pm": pm}
    if cfg.eval.llm_judge is not None:
        judges["llm"] = llm_judge(cfg.eval, device)
    if cfg.eval.synthetic_export is not None:  # the exact judge of the data this run trained on
        from nlhf.tasks.tldr_export import ExportedJudge

        judges["pstar"] = ExportedJudge(cfg.eval.synthetic_export)
    return judges


def write_tables(cfg: PipelineConfig, judges: dict, prompts, samples: dict, oracle_long, out, metrics: dict) -> dict:
    """Per judge: the pairwise table (long, matrix, markdown) and the scorecard against the paper's claims (its
    outcome counts into ``metrics``); returns judge name → long table."""
    from nlhf.evaluate import pairwise_table, scorecard, to_markdown, to_matrix

    names, tables = cfg.table, {}
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
    return tables


def per_policy_table(cfg: PipelineConfig, task, tok, main_judge, main_table, prompts, samples: dict, device):
    """One row per policy of the table: win rate against SFT (main judge) and against the references (with its
    CI), ROUGE-L, exploitability (enumerable tasks with an exact judge), length; well-formedness and how often its
    samples fall in the oracle's pools where the task has an exact judge."""
    from nlhf.evaluate import exploitability_on_pool, rouge_l, to_matrix, win_rate_ci

    names, refs = cfg.table, task.references(prompts)
    expl = {n: None for n in names}
    if hasattr(task, "candidates") and task.has_exact_judge:  # the adversary's pool needs an enumerable task
        k, ex_prompts = cfg.eval.exploitability_samples, prompts[: cfg.eval.exploitability_prompts]
        pools = [task.candidates(x) for x in ex_prompts]
        for j, (name, model) in enumerate(load_table_policies(cfg, names).items()):
            flat = sample_texts(model.to(device), tok, [x for x in ex_prompts for _ in range(k)],
                                seed=seed_for(cfg.eval.seed, "eval.exploitability_samples", j), **sampling_kwargs(cfg))
            expl[name] = exploitability_on_pool(task.judge, ex_prompts, pools,
                                                [flat[i * k: (i + 1) * k] for i in range(len(ex_prompts))])
    vs_reference = {n: win_rate_ci(main_judge(prompts, samples[n], refs), cfg.eval.confidence) for n in names}
    per_policy = pd.DataFrame({
        "policy": names,
        "p_vs_sft": [float(to_matrix(main_table, names).loc["SFT", n]) for n in names],
        "p_vs_reference": [vs_reference[n][0] for n in names],  # against the dataset's reference summaries
        "p_vs_reference_ci": [vs_reference[n][1] for n in names],
        "rouge_l": [rouge_l(samples[n], refs) for n in names],
        "exploitability": [expl[n] for n in names],
        "mean_words": [float(np.mean([len(y.split()) for y in samples[n]])) for n in names],
    })
    if task.has_exact_judge:
        per_policy["well_formed"] = [float(np.mean([task.is_well_formed(x, y) for x, y in zip(prompts, samples[n])]))
                                     for n in names]
    pools_file = cfg.layout.oracle_pools
    if task.has_exact_judge and pools_file.exists():
        # how often a policy's samples fall inside the oracle's candidate pools (the oracle's prompts come first)
        cands = [set(c) for c in json.loads(pools_file.read_text())["candidates"]]
        per_policy["in_oracle_pool"] = [float(np.mean([y in c for y, c in zip(samples[n], cands)])) for n in names]
    return per_policy


def oracle_columns(cfg: PipelineConfig, task, per_policy: pd.DataFrame, oracle_policy, prompts, samples) -> dict:
    """Adds each policy's oracle target against SFT and its normalised margin (how much of its method's oracle
    margin over SFT it reaches) to ``per_policy``; returns the paper's "RLHF is the best against SFT" check (the
    paired difference with the best other policy under P*) as metrics."""
    from nlhf.evaluate import paired_bootstrap_ci

    names, target = cfg.table, policy_targets(cfg.methods)
    ceiling = [float(oracle_policy.get(target[n], np.nan)) for n in names]
    per_policy["oracle_target_vs_sft"] = ceiling
    per_policy["normalized_margin"] = [(p - 0.5) / (c - 0.5) if c - 0.5 > 1e-3 else np.nan
                                       for p, c in zip(per_policy["p_vs_sft"], ceiling)]
    if not ("RLHF" in names and "SFT" in names):
        return {}
    vs_sft = {n: np.asarray(task.judge(prompts, samples[n], samples["SFT"])) for n in names if n != "SFT"}
    rival = max((n for n in vs_sft if n != "RLHF"), key=lambda n: vs_sft[n].mean())
    d, lo, hi = paired_bootstrap_ci(vs_sft["RLHF"], vs_sft[rival], cfg.eval.confidence)
    return {"rlhf_best_vs_sft": {"best_other": rival, "difference": round(d, 4), "ci": [round(lo, 4), round(hi, 4)]}}


def llm_judge(ecfg, device=None):
    """``eval.llm_judge`` (a local causal-LM folder) asked which summary is better (:class:`nlhf.judges.LLMJudge`,
    both orders averaged), as a judge on texts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nlhf.judges import DEFAULT_LLM_JUDGE_PROMPT, LLMJudge
    from nlhf.models.hf import resolve

    folder = resolve(ecfg.llm_judge, "eval.llm_judge")
    judge = LLMJudge(AutoModelForCausalLM.from_pretrained(folder).to(device or "cpu"),
                     AutoTokenizer.from_pretrained(folder), ecfg.llm_judge_prompt or DEFAULT_LLM_JUDGE_PROMPT,
                     tuple(ecfg.llm_judge_answers))
    return lambda xs, ys, yps: judge.preference(list(xs), list(ys), list(yps)).double().numpy()


def write_judge_gap(cfg: PipelineConfig, judges: dict, prompts, samples: dict, out) -> dict:
    """Each judge's table against the table under the exported P* (:func:`nlhf.evaluate.judge_gap`):
    ``judge_gap.csv``; returns per judge the largest gap, its cell and interval, and the headline cell's gap."""
    from nlhf.evaluate import judge_gap

    tables, summary = [], {}
    for name, judge in judges.items():
        if name == "pstar":
            continue
        gap = judge_gap(judge, judges["pstar"], prompts, samples, cfg.eval.confidence)
        tables.append(gap.assign(judge=name))
        worst = gap.loc[gap["gap"].abs().idxmax()]
        summary[name] = {"max_abs_gap": round(abs(float(worst["gap"])), 4),
                         "max_gap_cell": f"{worst['column']} vs {worst['row']}",
                         "max_gap_ci": [round(float(worst["gap_lo"]), 4), round(float(worst["gap_hi"]), 4)],
                         "cells_gap_excludes_zero": int(((gap["gap_lo"] > 0) | (gap["gap_hi"] < 0)).sum()),
                         "cells": len(gap)}
        for _, h in gap[gap[["row", "column"]].isin(["MD1", "RLHF"]).all(axis=1)].iterrows():
            flip = h["column"] != "MD1"  # reported as P(MD1 ≻ RLHF)
            p, ref, lo, hi = ((1 - h["p"], 1 - h["p_reference"], -h["gap_hi"], -h["gap_lo"]) if flip else
                              (h["p"], h["p_reference"], h["gap_lo"], h["gap_hi"]))
            summary[name]["headline"] = {"cell": "MD1 vs RLHF", "p": round(float(p), 4),
                                         "p_reference": round(float(ref), 4), "gap": round(float(p - ref), 4),
                                         "gap_ci": [round(float(lo), 4), round(float(hi), 4)]}
    pd.concat(tables)[["judge", "row", "column", "p", "p_reference", "gap", "gap_lo", "gap_hi"]].to_csv(
        out / "judge_gap.csv", index=False)
    return summary


def write_judge_agreement(cfg: PipelineConfig, judges: dict, out) -> dict:
    """Each judge of the table against the human labels of the test comparisons (:func:`nlhf.evaluate.
    judge_agreement`): ``judge_agreement.csv`` and the calibration bins ``judge_calibration.csv``; returns the
    per-judge numbers for the metrics."""
    from nlhf.evaluate import judge_agreement
    from nlhf.pipeline.artifacts import load_dataset_dir

    test = load_dataset_dir(cfg, "prefs", "test")
    rows, bins = [], []
    for name, judge in judges.items():
        stats, calibration = judge_agreement(judge(list(test["prompt"]), list(test["y"]), list(test["y_prime"])),
                                             np.asarray(test["label"], dtype=np.float64))
        rows.append({"judge": name, **stats})
        bins.append(calibration.assign(judge=name))
    pd.DataFrame(rows).to_csv(out / "judge_agreement.csv", index=False)
    pd.concat(bins).to_csv(out / "judge_calibration.csv", index=False)
    return {r["judge"]: {k: r[k] for k in ("log_loss", "accuracy")} for r in rows}
