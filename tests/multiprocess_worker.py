"""Worker for tests/test_multiprocess.py: the training loops under ``accelerate launch`` with 2 CPU processes.

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 tests/multiprocess_worker.py OUT_DIR

(``--multi_gpu`` is what makes accelerate start one process per rank through torchrun; with ``--cpu`` it starts a
single process unless an MPI hostfile is given. On a box without a visible GPU the loops' own
``Accelerator(cpu=True)`` then picks the ``MULTI_CPU`` / gloo backend.)

Each rank runs, on the same tiny setup as tests/test_training.py (SMALL GPT-2s built from config, the tiny
synthetic task and its word tokenizer), a few steps of

* ``PolicyGradientTrainer`` (Nash-MD-PG) — its own Accelerator, exactly as the pipeline calls it without one;
* ``fit`` (SFT loss) — likewise;

and writes ``OUT_DIR/rank<r>.pt`` with what the test compares: its rank and world size as accelerate saw them, the
initial and trained parameters of each loop, and the data each rank drew (prompt ids of each step's rollout,
recorded by a trainer callback; batch indices of ``fit``).
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlhf.models import ModelConfig, build_policy, build_preference_model  # noqa: E402
from nlhf.tasks import SyntheticTask, SyntheticTaskConfig  # noqa: E402
from nlhf.tokenization import build_word_tokenizer  # noqa: E402
from nlhf.training import policy_gradient as pg  # noqa: E402
from nlhf.training.sft import sft_batch, sft_loss, tokenize_sft  # noqa: E402
from nlhf.training.supervised import SupervisedConfig, fit  # noqa: E402
from tests.faulty_judges import FaultyJudge, Interrupt  # noqa: E402

SMALL = ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64)


def _params(model) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    env_rank = int(os.environ.get("RANK", "0"))
    task = SyntheticTask(SyntheticTaskConfig(n_sft=400, n_sft_eval=200, n_pref_train=300, n_pref_test=30,
                                              n_prompts_train=64, n_prompts_eval=200))
    with tempfile.TemporaryDirectory(prefix=f"nlhf_mp{env_rank}_") as d:
        tok = build_word_tokenizer(task.vocabulary(), Path(d) / "tok")
    result: dict = {"env_rank": env_rank}

    # ---- policy gradient (Nash-MD-PG, β = 0.5: one sampler call draws y and y')
    pm = build_preference_model(SMALL, tok, seed=1).eval()
    ref = build_policy(SMALL, tok, seed=2).eval()
    cfg = pg.PolicyGradientConfig(method="nash_md", tau=0.05, beta=0.5, steps=4, batch_size=4, lr=1e-2, log_every=1,
                                  checkpoint_every=2, seed=0, max_new_tokens=6)
    prompts = task.prompts("train")
    seen_prompts: list[torch.Tensor] = []

    class RecordPrompts(pg.TrainerCallback):
        def on_rollout(self, step, roll):
            seen_prompts.append(roll.sequences[:, : roll.prompt_mask.shape[1]].detach().cpu().clone())

    def run(judge, state_path):
        policy = copy.deepcopy(ref).train()
        out = pg.PolicyGradientTrainer(policy, ref, judge, tok, prompts, cfg, state_path=state_path, fingerprint="mp",
                                       desc=f"pg{env_rank}", callbacks=[RecordPrompts()]).train()
        return policy, out.log

    result["pg_init"] = _params(ref)
    policy, log = run(pm, out / "pg_a.pt")  # uninterrupted
    result.update(pg_final=_params(policy), pg_prompts=list(seen_prompts),
                  pg_steps=[r["step"] for r in log["train"]])
    # interrupted at the 3rd judge call (step 3, after the step-2 checkpoint; the same step on every rank, before
    # any collective), then restarted: resumes from the checkpoint rank 0 wrote
    try:
        run(FaultyJudge(pm, 3), out / "pg_b.pt")
        result["pg_interrupted"] = False
    except Interrupt:
        result["pg_interrupted"] = True
    seen_prompts.clear()
    policy, log = run(pm, out / "pg_b.pt")
    result.update(pg_resumed_final=_params(policy), pg_resumed_prompts=list(seen_prompts),
                  pg_resumed_steps=[r["step"] for r in log["train"]])
    from accelerate import PartialState

    state = PartialState()
    result.update(process_index=state.process_index, num_processes=state.num_processes,
                  distributed_type=str(state.distributed_type), backend=state.backend)

    # ---- supervised fit (SFT loss on the tiny task)
    ds = task.sft_dataset("train")
    ex = tokenize_sft(tok, list(ds["prompt"]), list(ds["completion"]))
    model = build_policy(SMALL, tok, seed=0)
    result["sft_init"] = _params(model)
    batches = []

    def loss_fn(m, idx):
        batches.append(list(idx))
        return sft_loss(m, sft_batch([ex[i] for i in idx], tok.pad_token_id))

    slog = fit(model, loss_fn, len(ex), SupervisedConfig(steps=4, batch_size=8, lr=1e-2, warmup_steps=1,
                                                         log_every=1, checkpoint_every=2),
               out / "sft_state.pt", desc=f"sft{env_rank}")
    result.update(sft_final=_params(model), sft_batches=batches, sft_steps=[r["step"] for r in slog["train"]])
    torch.save(result, out / f"rank{state.process_index}.pt")
    print(f"[worker] rank {state.process_index}/{state.num_processes} {state.distributed_type} done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
