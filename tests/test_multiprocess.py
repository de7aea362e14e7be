"""The training loops under ``accelerate launch`` with 2 processes on CPU (gloo), on a tiny setup (~20 s).

One launch of tests/multiprocess_worker.py runs, on each rank, ``train_policy`` (Nash-MD-PG: an uninterrupted run,
then a run killed after its step-2 checkpoint and restarted) and ``fit`` (SFT), each with the Accelerator it builds
itself, as the pipeline's stages would. Each rank saves what it saw; the tests compare the ranks.

Launch command: ``accelerate launch --multi_gpu --num_processes 2``. ``--cpu --num_processes 2`` starts ONE process
in accelerate 1.15 (its simple launcher; several CPU processes need an MPI hostfile), ``--multi_gpu`` starts one
process per rank through torchrun, and the loops' own ``Accelerator(cpu=not torch.cuda.is_available())`` then
picks the MULTI_CPU / gloo backend (the test hides any GPU with ``CUDA_VISIBLE_DEVICES=""``).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
WORKER = HERE / "multiprocess_worker.py"
GUARD = HERE / "netguard"

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("mp")
    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(GUARD), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.pop("NLHF_PROFILE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), str(WORKER), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"accelerate launch failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return [torch.load(out / f"rank{i}.pt", weights_only=False) for i in range(2)]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_both_ranks_ran(ranks):
    for i, r in enumerate(ranks):
        assert (r["process_index"], r["env_rank"], r["num_processes"]) == (i, i, 2)
        assert r["distributed_type"].endswith("MULTI_CPU") and r["backend"] == "gloo"
        assert r["pg_steps"] == [1, 2, 3, 4] and r["sft_steps"] == [1, 2, 3, 4]


def test_policy_gradient_ranks_stay_in_sync(ranks):
    a, b = ranks
    assert _equal(a["pg_init"], b["pg_init"])
    assert _equal(a["pg_final"], b["pg_final"]), "DDP should keep the policy identical on every rank"
    assert not _equal(a["pg_final"], a["pg_init"]), "the policy did not move"
    # data parallelism: each rank draws its own prompts (seed + 1000 * process_index)
    assert len(a["pg_prompts"]) == len(b["pg_prompts"]) == 4
    assert all(not torch.equal(x, y) for x, y in zip(a["pg_prompts"], b["pg_prompts"]))


def test_policy_gradient_resume_keeps_ranks_in_sync(ranks):
    a, b = ranks
    assert a["pg_interrupted"] and b["pg_interrupted"]
    assert _equal(a["pg_resumed_final"], b["pg_resumed_final"])


def test_policy_gradient_resume_is_bitwise_per_rank(ranks):
    a, b = ranks
    for r in ranks:  # the restarted run draws what the uninterrupted one drew, on each rank
        assert all(torch.equal(x, y) for x, y in zip(r["pg_resumed_prompts"], r["pg_prompts"][2:]))
    assert all(not torch.equal(x, y) for x, y in zip(a["pg_resumed_prompts"], b["pg_resumed_prompts"]))
    assert _equal(a["pg_resumed_final"], a["pg_final"])


def test_supervised_ranks_stay_in_sync(ranks):
    a, b = ranks
    assert _equal(a["sft_init"], b["sft_init"])
    assert _equal(a["sft_final"], b["sft_final"]), "DDP should keep the model identical on every rank"
    assert not _equal(a["sft_final"], a["sft_init"]), "the model did not move"


def test_supervised_ranks_split_the_batch(ranks):
    a, b = ranks
    for x, y in zip(a["sft_batches"], b["sft_batches"]):
        assert len(x) + len(y) == 8 and x != y
