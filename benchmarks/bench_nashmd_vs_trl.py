"""Step time of OUR Nash-MD-PG step (``nlhf.training.policy_gradient.train_policy``) vs TRL's ``NashMDTrainer``
(trl 1.13.0, ``trl.experimental.nash_md``) on the same tiny configuration, in ONE process.

Configuration (both sides): random GPT-2 policy, 2 layers, width 128, 4 heads, vocab 512 (a byte-level BPE trained
here on a synthetic corpus; specials <|endoftext|> = BOS = EOS, <pad>, <sep>), batch 8 prompts of 16 tokens,
``max_new_tokens`` in {32, 128}, fp32, no gradient checkpointing, mixture coefficient β = 0.5, temperature 1,
Adam lr 5e-5, KL coefficient 0.1. The judge is a random GPT-2 of the same size: TRL takes a REWARD model
(``reward_funcs``, a ``GPT2ForSequenceClassification`` scoring y and y' separately), we take our pairwise PREFERENCE
model (``nlhf.models.PreferenceModel``: one backbone on x <sep> y <sep> y' and x <sep> y' <sep> y, 2B rows).

Our step = exactly what the pipeline runs: ``train_policy`` is called for warm-up + measured + 1 steps; step
boundaries are taken at each call of the sampler (``policy_gradient.generate`` is wrapped with a timer, nothing
else is changed), so a step is sampling (y ~ π_θ and y' ~ mixture in one call, 2B rows) + μ's log-probs +
preference model + policy forward/backward + clip + Adam. The last step (it writes a checkpoint) is dropped.
TRL's step is timed with a ``TrainerCallback`` (on_step_begin → on_step_end), as in the reference harness.

Ours and TRL's runs alternate (``--rounds`` blocks of each, per length), so machine load affects both; the
reported medians pool the post-warm-up steps of all rounds. Run it with the bench venv (TRL lives there):

    .venv-bench/bin/python benchmarks/bench_nashmd_vs_trl.py            # lengths 32 128, 1 torch thread

Writes benchmarks/results/nashmd_vs_trl_<date>_<host>.json. Speed claims live here, never in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 0
N_LAYER, N_EMBD, N_HEAD, VOCAB = 2, 128, 4, 512
BATCH, PROMPT_TOKENS, MIXTURE_COEF, KL_COEF, LR = 8, 16, 0.5, 0.1, 5e-5


# ---------------------------------------------------------------------------------------------------------------
# Shared setup: tokenizer and prompts (identical strings and token counts on both sides).


def build_tokenizer_and_prompts(n_prompts: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(SEED)
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "ve", "du", "ga", "he", "jo", "zu", "ba", "fi", "wo"]
    lexicon = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(600)})
    corpus = [" ".join(rng.choice(lexicon) for _ in range(rng.randint(8, 24))) for _ in range(3000)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<pad>", "<sep>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<pad>", sep_token="<sep>", unk_token="<|endoftext|>")
    tok.padding_side = "left"
    # prompts of PROMPT_TOKENS − 1 BPE tokens; TRL prepends BOS, so we give our side BOS + text: 16 tokens each
    prompts = []
    while len(prompts) < n_prompts:
        ids = tok(" ".join(rng.choice(lexicon) for _ in range(12)), add_special_tokens=False)["input_ids"]
        text = tok.decode(ids[:PROMPT_TOKENS - 1])
        if len(tok(text, add_special_tokens=False)["input_ids"]) == PROMPT_TOKENS - 1:  # stable round trip
            prompts.append(text)
    return tok, prompts


def gpt2_config(tok, **extra):
    """TRL's models: the same GPT-2 config our from-config models get (``nlhf.models._gpt2_config``), including
    ``activation_function="gelu_pytorch_tanh"`` (GPT-2's tanh GELU, fused kernel), so both sides run identical
    networks."""
    from transformers import GPT2Config

    extra.setdefault("activation_function", "gelu_pytorch_tanh")
    return GPT2Config(vocab_size=len(tok), n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, n_positions=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      **extra)


# ---------------------------------------------------------------------------------------------------------------
# Our side: nlhf.training.policy_gradient.train_policy.


def run_ours(tok, prompts, max_new_tokens: int, n_steps: int, warmup: int, seed: int) -> dict:
    from nlhf.models import ModelConfig, build_policy, build_preference_model
    from nlhf.training import policy_gradient as pg

    mcfg = ModelConfig(n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, n_positions=512)
    policy = build_policy(mcfg, tok, seed=seed)
    ref = build_policy(mcfg, tok, seed=seed)  # μ = the initial policy (a copy), as TRL's create_reference_model
    judge = build_preference_model(mcfg, tok, seed=seed + 1)
    method = pg.MethodConfig(kind="nash_md", tau=KL_COEF, beta=MIXTURE_COEF, lr=LR)
    total = warmup + n_steps + 1  # +1: the last step writes a checkpoint; it is dropped
    cfg = pg.PGConfig(steps=total, batch_size=BATCH, lr=LR, log_every=10**9, checkpoint_every=10**9, seed=seed)

    marks, lengths = [], []
    orig = pg.generate

    def timed_generate(*a, **kw):
        marks.append(time.perf_counter())
        out = orig(*a, **kw)
        lengths.append(out.response_mask.sum(-1).float().mean().item())
        return out

    pg.generate = timed_generate
    try:
        with tempfile.TemporaryDirectory(prefix="nlhf_bench_") as d:
            pg.train_policy(policy, ref, judge, tok, [tok.bos_token + p for p in prompts], method, cfg,
                            max_new_tokens=max_new_tokens, temperature=1.0, state_path=Path(d) / "state.pt",
                            desc="bench")
    finally:
        pg.generate = orig
    steps = [b - a for a, b in zip(marks, marks[1:])]  # the last (checkpointing) step has no end mark: dropped
    return {"step_s": steps[warmup:], "mean_len": statistics.mean(lengths[warmup:])}


# ---------------------------------------------------------------------------------------------------------------
# TRL side: trl.experimental.nash_md.NashMDTrainer (trl 1.13.0).


def run_trl(tok, prompts, max_new_tokens: int, n_steps: int, warmup: int, seed: int) -> dict:
    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback
    from trl.experimental.nash_md import NashMDConfig, NashMDTrainer

    torch.manual_seed(seed)
    policy = GPT2LMHeadModel(gpt2_config(tok))
    reward_model = GPT2ForSequenceClassification(gpt2_config(tok, num_labels=1))
    reward_model.config.pad_token_id = tok.pad_token_id

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t0, self.times = None, []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="trl_bench_") as d:
        args = NashMDConfig(
            output_dir=d, max_steps=warmup + n_steps, per_device_train_batch_size=BATCH,
            gradient_accumulation_steps=1, max_new_tokens=max_new_tokens, max_length=512, temperature=1.0,
            learning_rate=LR, logging_steps=10**9, save_strategy="no", report_to="none", use_cpu=True,
            bf16=False, gradient_checkpointing=False, dataloader_num_workers=0, seed=seed, push_to_hub=False,
            disable_tqdm=True, mixture_coef=MIXTURE_COEF, beta=KL_COEF,
        )
        trainer = NashMDTrainer(model=policy, reward_funcs=reward_model, args=args,
                                train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                                processing_class=tok, callbacks=[timer])
        lengths, plens = [], []
        orig = trainer._process_completions

        def process(model_output, mixture_output, prompts_):
            md, xd = orig(model_output, mixture_output, prompts_)
            P = prompts_["input_ids"].shape[1]
            plens.append(prompts_["attention_mask"].sum(-1).float().mean().item())
            lengths.append(torch.cat([md["attention_mask"][:, P:], xd["attention_mask"][:, P:]])
                           .sum(-1).float().mean().item())
            return md, xd

        trainer._process_completions = process
        trainer.train()
    return {"step_s": timer.times[warmup:], "mean_len": statistics.mean(lengths[warmup:]),
            "prompt_tokens": statistics.mean(plens)}


# ---------------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 128], help="max_new_tokens values")
    ap.add_argument("--steps", type=int, default=8, help="measured steps per block (after warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded steps at the start of each block")
    ap.add_argument("--rounds", type=int, default=2, help="alternating blocks ours/TRL per length")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both sides)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    import transformers
    import trl

    from nlhf import fast_decode

    tok, prompts = build_tokenizer_and_prompts(a.prompts)
    our_plen = statistics.mean(len(tok(tok.bos_token + p, add_special_tokens=False)["input_ids"]) for p in prompts)
    load0 = os.getloadavg()
    results = []
    for T in a.lengths:
        ours, theirs, our_len, their_len, trl_plen = [], [], [], [], []
        for r in range(a.rounds):
            o = run_ours(tok, prompts, T, a.steps, a.warmup, seed=SEED + r)
            t = run_trl(tok, prompts, T, a.steps, a.warmup, seed=SEED + r)
            ours += o["step_s"]
            theirs += t["step_s"]
            our_len.append(o["mean_len"])
            their_len.append(t["mean_len"])
            trl_plen.append(t["prompt_tokens"])
            print(f"  T={T} round {r}: ours median {statistics.median(o['step_s']):.4f} s  "
                  f"TRL median {statistics.median(t['step_s']):.4f} s", flush=True)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        row = {
            "max_new_tokens": T, "ours_median_s": round(mo, 5), "trl_median_s": round(mt, 5),
            "ratio_ours_over_trl": round(mo / mt, 4),
            "ours_step_s": [round(x, 4) for x in ours], "trl_step_s": [round(x, 4) for x in theirs],
            "ours_mean_response_len": round(statistics.mean(our_len), 2),
            "trl_mean_response_len": round(statistics.mean(their_len), 2),
            "ours_prompt_tokens": round(our_plen, 2), "trl_prompt_tokens": round(statistics.mean(trl_plen), 2),
        }
        results.append(row)
        print(f"max_new_tokens={T}: ours {mo:.4f} s/step | TRL {mt:.4f} s/step | ratio {mo / mt:.3f} | "
              f"mean response length ours {row['ours_mean_response_len']} TRL {row['trl_mean_response_len']} | "
              f"torch threads {torch.get_num_threads()} | both sides GPT-2 activation "
              f"{gpt2_config(tok).activation_function}", flush=True)

    now = datetime.now(timezone.utc)
    summary = {
        "date_utc": now.isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__},
        "torch_threads": torch.get_num_threads(),
        "fast_decode": os.environ.get("NLHF_FAST_DECODE", "1") != "0" and fast_decode.supports(
            __import__("transformers").GPT2LMHeadModel(gpt2_config(tok))),
        "config": {"n_layer": N_LAYER, "n_embd": N_EMBD, "n_head": N_HEAD, "vocab": len(tok), "batch": BATCH,
                   "activation_function": gpt2_config(tok).activation_function,
                   "prompt_tokens": PROMPT_TOKENS, "mixture_coef": MIXTURE_COEF, "kl_coef": KL_COEF, "lr": LR,
                   "fp32": True, "gradient_checkpointing": False, "temperature": 1.0,
                   "steps_per_block": a.steps, "warmup_per_block": a.warmup, "rounds": a.rounds},
        "judge": "ours: pairwise PreferenceModel (random GPT-2, same size, 2B rows x <sep> y <sep> y'); "
                 "TRL: reward model GPT2ForSequenceClassification (random, same size, y and y' scored separately)",
        "targets": {"32": 0.33, "128": 0.15},
        "results": results,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"nashmd_vs_trl_{now.strftime('%Y%m%dT%H%M%SZ')}_{platform.node() or 'host'}.json"
    path.write_text(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
