"""Shared pieces of the benchmarks (``bench_nashmd_vs_trl.py`` on CPU, ``bench_gpu.py`` on a GPU): the tokenizer
and prompts both sides get, the GPT-2 config both sides build, and one timed run of OUR Nash-MD-PG loop and of
TRL's ``NashMDTrainer``, for a given model shape.

Our step = exactly what the pipeline runs: the library's ``PolicyGradientTrainer`` is run for warm-up + measured + 1
steps; step boundaries are taken by a trainer callback at the start of each step (``on_step_begin``). With
``phases=True`` the end of sampling (``on_rollout``) and the start of the update (``on_update_begin``, after the
judge) are marked too, which splits each step into

    generation  sampler call: y ~ π_θ and y' ~ mixture(π_θ, μ; β) in one call on 2B rows
    scoring     μ's log-probs of y (one forward) + the preference model (B rows x <sep> y <sep> y' <sep>)
    update      policy forward + loss + backward + gradient clipping + Adam (+ the loop's bookkeeping)

``sync`` (``torch.cuda.synchronize`` on a GPU) is called at every mark so that asynchronous kernels are charged to
the phase that launched them. TRL's step is timed with a ``TrainerCallback`` (on_step_begin → on_step_end, with
``sync`` at both ends).
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

SEED = 0
MIXTURE_COEF, KL_COEF, LR = 0.5, 0.1, 5e-5
JUDGE = ("ours: pairwise PreferenceModel (random GPT-2, same size, B rows x <sep> y <sep> y' <sep>, blocks blind to "
         "each other); TRL: reward model GPT2ForSequenceClassification (random, same size, y and y' scored separately)")


@dataclass(frozen=True)
class Shape:
    """Model and batch shape shared by both sides (policy, reference and judge are GPT-2s of this size)."""

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    vocab: int = 512
    batch: int = 8
    prompt_tokens: int = 16
    n_positions: int = 512

    def as_dict(self) -> dict:
        return asdict(self)


def no_sync() -> None:
    """The ``sync`` of a CPU run: nothing to wait for."""


def provenance(loadavg_start, machine: dict, versions: dict) -> tuple[dict, str]:
    """The header of a results JSON (date, machine with its load average at start and now, library versions; the
    arguments add to the common fields) and the file stem ``<date>_<host>``."""
    import transformers

    now = datetime.now(timezone.utc)
    header = {
        "date_utc": now.isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(), **machine,
                    "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, **versions},
    }
    return header, f"{now.strftime('%Y%m%dT%H%M%SZ')}_{platform.node() or 'host'}"


def fast_decode_used(tok) -> bool:
    """Whether our sampler takes ``nlhf.sampling.fast_decode`` for these GPT-2s (``NLHF_FAST_DECODE=0`` turns it
    off)."""
    from transformers import GPT2LMHeadModel

    from nlhf.sampling import fast_decode

    tiny = Shape(n_layer=1, n_embd=8, n_head=1)
    enabled = os.environ.get("NLHF_FAST_DECODE", "1") != "0"
    return enabled and fast_decode.supports(GPT2LMHeadModel(gpt2_config(tok, tiny)))


# ---------------------------------------------------------------------------------------------------------------
# Shared setup: tokenizer and prompts (identical strings and token counts on both sides).


BPE_TRAINED_MAX = 512  # the synthetic corpus's BPE is trained up to this size; larger vocabularies are filled up


def build_tokenizer_and_prompts(n_prompts: int, vocab: int = 512, prompt_tokens: int = 16, seed: int = SEED):
    """A byte-level BPE of ``vocab`` tokens trained on a synthetic corpus (specials <|endoftext|> = BOS = EOS,
    <pad>, <sep>) and ``n_prompts`` prompts of ``prompt_tokens`` − 1 BPE tokens (TRL prepends BOS; our side gets the
    same string with BOS prepended: ``prompt_tokens`` tokens each).

    Beyond :data:`BPE_TRAINED_MAX` tokens (GPT-2's 50257, for a model of GPT-2 small's size) the BPE is trained at
    that size and filled up with added tokens ``<unused{i}>`` that decode and re-encode to themselves: the cost of a
    step depends on the number of embedding rows, not on what they mean, and training a BPE of 50k tokens on this
    corpus takes minutes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "ve", "du", "ga", "he", "jo", "zu", "ba", "fi", "wo"]
    lexicon = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(600)})
    corpus = [" ".join(rng.choice(lexicon) for _ in range(rng.randint(8, 24))) for _ in range(3000)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=min(vocab, BPE_TRAINED_MAX), special_tokens=["<|endoftext|>", "<pad>", "<sep>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<pad>", sep_token="<sep>", unk_token="<|endoftext|>")
    tok.padding_side = "left"
    if vocab > len(tok):
        tok.add_tokens([f"<unused{i}>" for i in range(vocab - len(tok))])
    prompts = []
    while len(prompts) < n_prompts:
        ids = tok(" ".join(rng.choice(lexicon) for _ in range(12)), add_special_tokens=False)["input_ids"]
        text = tok.decode(ids[:prompt_tokens - 1])
        if len(tok(text, add_special_tokens=False)["input_ids"]) == prompt_tokens - 1:  # stable round trip
            prompts.append(text)
    return tok, prompts


def gpt2_config(tok, shape: Shape, **extra):
    """TRL's models: the GPT-2 config our from-config models get (:func:`nlhf.models.gpt2_config`), including
    ``activation_function="gelu_pytorch_tanh"`` (GPT-2's tanh GELU, fused kernel), so both sides run identical
    networks. Dropout is GPT-2's default 0.1 (TRL's models as a user would build them; our side builds its models
    with ``ModelConfig``'s dropout 0): passed explicitly because the package's config takes it from ``ModelConfig``."""
    from nlhf.models import ModelConfig
    from nlhf.models import gpt2_config as package_gpt2_config

    cfg = ModelConfig(n_layer=shape.n_layer, n_embd=shape.n_embd, n_head=shape.n_head, n_positions=shape.n_positions,
                      dropout=0.1)
    return package_gpt2_config(cfg, tok, **extra)


class StepFlops:
    """Counts the floating-point operations of each step with ``torch.utils.flop_counter.FlopCounterMode`` (matrix
    products and attention, forward and backward: what a step's time is bound by): ``begin()`` at a step's start,
    ``end()`` at its end; ``per_step`` holds one count per step. The counter slows the step: a run that counts is
    not timed."""

    def __init__(self):
        self.mode, self.per_step = None, []

    def begin(self):
        from torch.utils.flop_counter import FlopCounterMode

        self.end()
        self.mode = FlopCounterMode(display=False)
        self.mode.__enter__()

    def end(self):
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.per_step.append(self.mode.get_total_flops())
            self.mode = None


def matmul_peak_gflops(n_embd: int, vocab: int, rows: int = 4096, repeats: int = 20) -> float:
    """The best fp32 matrix-product rate (GFLOP/s) this process reaches at the models' shapes (rows x n_embd times
    n_embd x {n_embd, 4 n_embd, vocab}, and back): the rate a step whose every FLOP ran at it would take; the FLOP
    floor of a step is its count over this rate."""
    best = 0.0
    for k, n in ((n_embd, n_embd), (n_embd, 4 * n_embd), (n_embd, vocab), (4 * n_embd, n_embd)):
        a, b = torch.randn(rows, k), torch.randn(k, n)
        torch.mm(a, b)
        t = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * rows * k * n * repeats / (time.perf_counter() - t) / 1e9)
    return best


# ---------------------------------------------------------------------------------------------------------------
# Our side: the library's trainer, nlhf.training.policy_gradient.PolicyGradientTrainer.


def run_ours(tok, prompts, max_new_tokens: int, n_steps: int, warmup: int, seed: int, shape: Shape, *,
             accelerator=None, sync: Callable[[], None] = no_sync, phases: bool = False,
             on_models: Callable | None = None, flops: bool = False) -> dict:
    """The trainer (method nash_md) for warm-up + ``n_steps`` + 1 steps on ``shape``; returns the measured steps'
    times (the warm-up and the last, checkpointing, step dropped). ``accelerator``: passed to the trainer (e.g.
    ``Accelerator(mixed_precision="bf16")``; None: the trainer builds its own). ``phases``: also return the per-step
    generation / scoring / update split (module docstring) with token counts. ``on_models(policy, ref, judge)`` is
    called once with the built models (e.g. to count parameters). ``flops``: also count each measured step's FLOPs
    (:class:`StepFlops`; its times are then not the step's)."""
    from nlhf.models import ModelConfig, build_policy, build_preference_model
    from nlhf.training import policy_gradient as pg

    mcfg = ModelConfig(n_layer=shape.n_layer, n_embd=shape.n_embd, n_head=shape.n_head,
                       n_positions=shape.n_positions)
    policy = build_policy(mcfg, tok, seed=seed)
    ref = build_policy(mcfg, tok, seed=seed)  # μ = the initial policy (a copy), as TRL's create_reference_model
    judge = build_preference_model(mcfg, tok, seed=seed + 1)
    if on_models is not None:
        on_models(policy, ref, judge)
    total = warmup + n_steps + 1  # +1: the last step writes a checkpoint; it is dropped
    cfg = pg.PolicyGradientConfig(method="nash_md", tau=KL_COEF, beta=MIXTURE_COEF, steps=total,
                                  batch_size=shape.batch, lr=LR, log_every=10**9, checkpoint_every=10**9, seed=seed,
                                  max_new_tokens=max_new_tokens)
    marks, gen_end, upd_start, lengths, gen_tokens, upd_shape = [], [], [], [], [], []
    counter = StepFlops()

    class Timer(pg.TrainerCallback):
        def on_step_begin(self, step):
            sync()
            marks.append(time.perf_counter())
            if flops and warmup <= step < total - 1:
                counter.begin()

        def on_step_end(self, step):
            counter.end()

        def on_rollout(self, step, roll):
            masks = torch.cat([roll.response_y_mask, roll.opponent_mask])  # y and y', one sampler call
            if phases:
                sync()
                gen_end.append(time.perf_counter())
                gen_tokens.append((int(masks.sum().item()), int(masks.numel())))
                upd_shape.append((*roll.sequences.shape, roll.prompt_mask.shape[1]))
            lengths.append(masks.sum(-1).float().mean().item())

        def on_update_begin(self, step):
            if phases:
                sync()
                upd_start.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="nlhf_bench_") as d:
        pg.PolicyGradientTrainer(policy, ref, judge, tok, [tok.bos_token + p for p in prompts], cfg,
                                 accelerator=accelerator, state_path=Path(d) / "state.pt", desc="bench",
                                 callbacks=[Timer()]).train()
    steps = [b - a for a, b in zip(marks, marks[1:])]  # the last (checkpointing) step has no end mark: dropped
    out = {"step_s": steps[warmup:], "mean_len": statistics.mean(lengths[warmup:])}
    if flops:
        out["flops"] = counter.per_step
    if phases:
        keep = range(warmup, len(steps))
        out.update(
            gen_s=[gen_end[i] - marks[i] for i in keep],
            score_s=[upd_start[i] - gen_end[i] for i in keep],
            update_s=[marks[i + 1] - upd_start[i] for i in keep],
            gen_tokens=[gen_tokens[i][0] for i in keep],  # real sampled tokens, y and y' (EOS included)
            gen_positions=[gen_tokens[i][1] for i in keep],  # 2B x T columns the sampler ran
            update_shape=[upd_shape[i] for i in keep],  # (B, P + T, P) of the policy forward/backward
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# TRL side: trl.experimental.nash_md.NashMDTrainer (trl 1.13.0).


def run_trl(tok, prompts, max_new_tokens: int, n_steps: int, warmup: int, seed: int, shape: Shape, *,
            use_cpu: bool = True, bf16: bool = False, sync: Callable[[], None] = no_sync, flops: bool = False) -> dict:
    """TRL's ``NashMDTrainer`` for warm-up + ``n_steps`` steps on ``shape``; the measured steps' times (and their
    FLOPs with ``flops``, as :func:`run_ours`)."""
    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback
    from trl.experimental.nash_md import NashMDConfig, NashMDTrainer

    torch.manual_seed(seed)
    policy = GPT2LMHeadModel(gpt2_config(tok, shape))
    reward_model = GPT2ForSequenceClassification(gpt2_config(tok, shape, num_labels=1))
    reward_model.config.pad_token_id = tok.pad_token_id

    counter = StepFlops()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t0, self.times = None, []

        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t0 = time.perf_counter()
            if flops and state.global_step >= warmup:
                counter.begin()

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.times.append(time.perf_counter() - self.t0)
            counter.end()

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="trl_bench_") as d:
        args = NashMDConfig(
            output_dir=d, max_steps=warmup + n_steps, per_device_train_batch_size=shape.batch,
            gradient_accumulation_steps=1, max_new_tokens=max_new_tokens, max_length=shape.n_positions,
            temperature=1.0, learning_rate=LR, logging_steps=10**9, save_strategy="no", report_to="none",
            use_cpu=use_cpu, bf16=bf16, gradient_checkpointing=False, dataloader_num_workers=0, seed=seed,
            push_to_hub=False, disable_tqdm=True, mixture_coef=MIXTURE_COEF, beta=KL_COEF,
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
    out = {"step_s": timer.times[warmup:], "mean_len": statistics.mean(lengths[warmup:]),
           "prompt_tokens": statistics.mean(plens)}
    if flops:
        out["flops"] = counter.per_step
    return out
