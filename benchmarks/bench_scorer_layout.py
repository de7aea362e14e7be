"""Training-step time of the preference model with the one-row block layout vs two rows per pair (same model).

One row ``x <sep> y <sep> y' <sep>`` per pair (``PreferenceModel.pair_batch``: x encoded once, the y' block blind to y)
against two rows ``x <sep> y <sep>`` and ``x <sep> y' <sep>`` (one response per row, the same features:
tests/test_models.py::test_one_row_blocks_equal_separate_rows). Both compute the same loss; the step is
forward + backward + AdamW on a batch of pairs from the task's preference data (default profile: tiny GPT-2 2x128,
batch 64), 1 torch thread, alternating blocks. Prints both medians and the ratio. Not a test.

    .venv/bin/python benchmarks/bench_scorer_layout.py [--steps 20] [--rounds 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlhf.models import ModelConfig, build_preference_model  # noqa: E402
from nlhf.tasks import SyntheticTask, SyntheticTaskConfig  # noqa: E402
from nlhf.tokenization import build_word_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    task = SyntheticTask(SyntheticTaskConfig(n_pref_train=2000, n_pref_test=10, n_sft=10))
    with tempfile.TemporaryDirectory() as d:
        tok = build_word_tokenizer(task.vocabulary(), d)
    pairs = task.preference_dataset("train")
    X, Y, YP = list(pairs["prompt"]), list(pairs["y"]), list(pairs["y_prime"])
    Z = torch.tensor(list(pairs["label"]), dtype=torch.float32)
    pm = build_preference_model(ModelConfig(n_layer=2, n_embd=128, n_head=4, n_positions=64,
                                            qk_identity_init=1.0), tok, seed=0)
    opt = torch.optim.AdamW(pm.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def logit_one_row(x, y, yp):
        return pm(**pm.pair_batch(x, y, yp))

    def logit_two_rows(x, y, yp):
        # rows x <sep> y <sep> and x <sep> y' <sep> (collate with one response), then the head as in forward
        xs = pm.token_ids(x)
        a = pm.features(**pm.collate(xs, pm.token_ids(y, response=True)))[:, 0]
        b = pm.features(**pm.collate(xs, pm.token_ids(yp, response=True)))[:, 0]
        return (pm.head(torch.cat([a, b], -1)) - pm.head(torch.cat([b, a], -1))).squeeze(-1)

    def step(logit_fn):
        idx = torch.randint(len(X), (args.batch,), generator=g).tolist()
        t = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logit_fn([X[i] for i in idx], [Y[i] for i in idx], [YP[i] for i in idx]), Z[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    # the two layouts give the same logits (up to float rounding)
    with torch.no_grad():
        diff = (logit_one_row(X[:32], Y[:32], YP[:32]) - logit_two_rows(X[:32], Y[:32], YP[:32])).abs().max().item()
    times = {"one row": [], "two rows": []}
    for _ in range(args.rounds):
        for name, fn in (("one row", logit_one_row), ("two rows", logit_two_rows)):
            step(fn)  # warm-up
            times[name] += [step(fn) for _ in range(args.steps)]
    one, two = statistics.median(times["one row"]), statistics.median(times["two rows"])
    print(f"max |logit difference| between layouts: {diff:.2e}")
    print(f"batch {args.batch}, {args.threads} thread(s): one row {one * 1e3:.1f} ms/step | two rows "
          f"{two * 1e3:.1f} ms/step | speed-up x{two / one:.2f}")


if __name__ == "__main__":
    main()
