"""What the trained policies write: the share of each summary form in their samples, next to SFT's.

The completist raters judge a summary by its form (``nlhf.tasks.synthetic_raters.summary_form``): the complete
summary is the Nash target's, the embellished one (the complete summary followed by an invented word) is RLHF's and
BR's. This samples one response per evaluation prompt from SFT and from each listed policy of the committed run and
prints the share of every form (and of malformed samples), so a policy's place in the tables can be read as what it
writes: whether it found its target's form, and how much of its mass is still on other forms. The last three columns
are the one step that separates the two targets: given the prompt and the complete summary, the policy's probability
of stopping (EOS), of appending an invented word (the embellished form) or a document word (a repeat), averaged over
the prompts. A policy gradient raises a next word's probability at a rate proportional to that probability, so a
target form the SFT policy rarely reaches is found slowly.

    python benchmarks/pg_recipe/summary_forms.py            # the exact-judge ablation's methods, both settings
    python benchmarks/pg_recipe/summary_forms.py --methods MD1 --prompts 2000
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nlhf.models.policy import load_policy  # noqa: E402
from nlhf.pipeline.params import load_config  # noqa: E402
from nlhf.pipeline.runtime import load_sft, sampling_kwargs  # noqa: E402
from nlhf.sampling.texts import sample_texts  # noqa: E402
from nlhf.tasks import make_task  # noqa: E402
from nlhf.tasks.synthetic_documents import parse_prompt  # noqa: E402
from nlhf.tasks.synthetic_raters import FORMS, summary_features  # noqa: E402


def form_shares(model, tok, prompts: list[str], cfg, seed: int) -> dict[str, float]:
    """Share of each form among one sample per prompt."""
    ys = sample_texts(model, tok, prompts, seed=seed, **sampling_kwargs(cfg))
    counts = collections.Counter()
    for x, y in zip(prompts, ys):
        f = summary_features(parse_prompt(x), y, cfg.sampling.max_new_tokens)
        counts["malformed" if f is None else next(k for k in FORMS if f[f"form_{k}"])] += 1
    return {k: counts[k] / len(prompts) for k in (*FORMS, "malformed")}


@torch.no_grad()
def after_complete(model, tok, prompts: list[str], fact_words: list[str]) -> dict[str, float]:
    """Mean next-word probabilities after prompt + complete summary: stop, invented word, document word."""
    vocab = tok.get_vocab()
    totals = collections.Counter()
    for x in prompts:
        doc = parse_prompt(x)
        ids = tok(x + " " + " ".join(doc.facts), add_special_tokens=False, return_tensors="pt")["input_ids"]
        p = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
        in_doc = [vocab[w] for w in doc.facts]
        invented = [vocab[w] for w in fact_words if w not in doc.facts]
        totals["next: EOS"] += p[tok.eos_token_id].item()
        totals["next: invented"] += p[invented].sum().item()
        totals["next: document word"] += p[in_doc].sum().item()
    return {k: v / len(prompts) for k, v in totals.items()}


def describe(model, tok, task, prompts: list[str], cfg, seed: int) -> dict[str, float]:
    return {**form_shares(model, tok, prompts, cfg, seed), **after_complete(model, tok, prompts, task.fact_words)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["RLHF", "SP", "MD1", "MD4", "BR", "EMA1", "IPO"])
    ap.add_argument("--variants", nargs="+", default=["paper", "exact"], choices=["paper", "exact", "seed"])
    ap.add_argument("--prompts", type=int, default=1000, help="evaluation prompts, one sample each")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "params.yaml")
    layout = cfg.layout
    task = make_task(cfg.task)
    prompts = task.prompts("eval")[: args.prompts]
    sft, tok = load_sft(cfg)
    rows = {"SFT": describe(sft, tok, task, prompts, cfg, args.seed)}
    for variant in args.variants:
        for name in args.methods:
            folder = ROOT / layout.policy(name, variant) / "policy"
            if folder.is_dir():
                rows[f"{name} ({variant})"] = describe(load_policy(folder)[0].eval(), tok, task, prompts, cfg, args.seed)
    print(pd.DataFrame(rows).T.round(3).to_markdown())


if __name__ == "__main__":
    main()
