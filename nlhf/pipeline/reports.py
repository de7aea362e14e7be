"""The evaluation stage's derived tables: the β sweep, the exact-judge ablation beside the oracle, the second
training seed, the side-by-side scorecard, and the preference model against the reward model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nlhf.pipeline.artifacts import require
from nlhf.pipeline.params import PipelineConfig
from nlhf.pipeline.runtime import accelerator_for, load_table_policies, sampling_kwargs
from nlhf.sampling.texts import sample_texts
from nlhf.seeds import seed_for
from nlhf.training.methods import RLHF, NashMD, average_name, policy_targets


def beta_sweep_table(cfg: PipelineConfig, long: pd.DataFrame, names, oracle_long=None) -> pd.DataFrame:
    """The paper's β sweep (§9): for every Nash-MD-PG method in the table, by β, its win rate against SFT and
    against RLHF with their CIs, and, where the oracle ran, the same two numbers for its oracle target."""
    from nlhf.evaluate import to_matrix

    p, ci = to_matrix(long, names), to_matrix(long, names, "ci")
    rlhf = next((n for n, m in cfg.methods.items() if isinstance(m, RLHF) and n in names), None)
    oracle = None if oracle_long is None else oracle_long.set_index(["row", "column"])["p"]
    rows = []
    for n, m in sorted(((n, m) for n, m in cfg.methods.items() if isinstance(m, NashMD) and n in names),
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
    from nlhf.pipeline.plots import preference_heatmap

    accelerator = accelerator_for(cfg)
    sampling = sampling_kwargs(cfg)
    ablation = list(cfg.ablation.methods)
    names = ["SFT"] + ablation + [average_name(n) for n in ablation if cfg.methods[n].has_average]
    samples = {"SFT": sft_samples}
    for k, (name, model) in enumerate(load_table_policies(cfg, names[1:], "exact").items()):
        samples[name] = sample_texts(model.to(accelerator.device), tok, prompts,
                                     seed=seed_for(cfg.eval.seed, "eval.exact_judge_training_samples", k), **sampling)
    long = pairwise_table(task.judge, prompts, samples, cfg.eval.confidence)
    long.to_csv(out / "table_exact_judge_training_long.csv", index=False)
    to_matrix(long, names).to_csv(out / "table_exact_judge_training.csv")
    (out / "table_exact_judge_training.md").write_text(to_markdown(long, names))
    fig = preference_heatmap(long, names, "Policies trained against the exact judges: P*(column ≻ row)")
    fig.savefig(out / "table_exact_judge_training.png", dpi=130, bbox_inches="tight")
    m = to_matrix(long, names)
    target = policy_targets(cfg.methods)
    om = to_matrix(oracle_long, list(dict.fromkeys(target[n] for n in names)))
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
        s2 = {n: sample_texts(model.to(accelerator.device), tok, prompts,
                              seed=seed_for(cfg.eval.seed, "eval.second_seed_samples", k), **sampling)
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
    card_exact = scorecard(long, oracle_long, cfg.eval.confidence, target).set_index("claim")
    card_paper = scorecard(paper_long, oracle_long, cfg.eval.confidence, target).set_index("claim")
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
        m = json.loads(require(cfg.layout.metrics(kind), kind).read_text())
        h = m.get("heldout_sft_pairs", m["test"])
        rows.append({"model": name, "log_loss": h["log_loss"], "bayes_log_loss": h.get("bayes_log_loss"),
                     "excess_log_loss": h.get("excess_log_loss"), "kl_to_true": h.get("kl_to_true"),
                     "direction_agreement": h.get("direction_agreement"), "accuracy": h["accuracy"]})
    return pd.DataFrame(rows)
