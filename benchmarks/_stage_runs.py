"""Run one pipeline stage (``nlhf.pipeline.stages``) under changed settings, several runs at a time, for the recipe
sweeps (``pg_recipe/sweep.py``, ``scorer_recipe_sweep/sweep.py``).

Each run is a subprocess in the repository root with its own ``OUT/<tag>/artifacts`` and ``OUT/<tag>/results``
folders, so the pipeline's outputs are never written: the stage's inputs are symlinks to the repository's
``artifacts/<part>`` (read only), everything the stage writes lands in the scratch folders. A run logs to
``OUT/<tag>.log``; its line ``RESULT {json}`` holds the stage's metrics and its wall time in ``seconds``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROGRAM = """
import dataclasses, json, time, torch
torch.set_num_threads({threads})
from nlhf.pipeline import stages
from nlhf.pipeline.params import load_config
cfg = load_config("params.yaml")
cfg.paths.results = {results!r}
cfg.paths.artifacts = {artifacts!r}
{setup}
t = time.time()
m = {call}
print("RESULT", json.dumps({{"seconds": time.time() - t, **m}}))
"""


@dataclass(frozen=True)
class StageRun:
    tag: str  # names the run's log and scratch folder
    setup: str  # statements run on the loaded ``cfg`` before the stage, e.g. "cfg.pm = dataclasses.replace(...)"
    call: str  # the stage call, e.g. 'stages.run_preference(cfg, "pm")'


def program(run: StageRun, out: Path, threads: int) -> str:
    """The Python source one run executes."""
    return _PROGRAM.format(threads=threads, results=str(out / run.tag / "results"),
                           artifacts=str(out / run.tag / "artifacts"), setup=run.setup, call=run.call)


def _start(run: StageRun, out: Path, inputs: tuple[str, ...], threads: int) -> subprocess.Popen:
    artifacts = out / run.tag / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    for part in inputs:
        link = artifacts / part
        if not link.exists():
            link.symlink_to(ROOT / "artifacts" / part)
    with open(out / f"{run.tag}.log", "w") as log:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen([sys.executable, "-c", program(run, out, threads)], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)


def run_all(runs: list[StageRun], out: Path, inputs: tuple[str, ...], jobs: int) -> None:
    """Run every run, ``jobs`` at a time, each with ``2 // jobs`` torch threads (at least 1: the sweeps are sized
    for a 2-core machine). ``inputs``: the parts of ``artifacts/`` the stage reads."""
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, 2 // jobs)
    todo, running = list(runs), []
    while todo or running:
        while todo and len(running) < jobs:
            running.append(_start(todo.pop(0), out, inputs, threads))
        time.sleep(2)
        running = [p for p in running if p.poll() is None]


def result(out: Path, tag: str) -> dict | None:
    """The RESULT of a finished run; None (and a note naming its log) if it did not finish."""
    log = out / f"{tag}.log"
    lines = [x for x in log.read_text().splitlines() if x.startswith("RESULT ")] if log.is_file() else []
    if not lines:
        print(f"{tag}: not finished, see {log}")
        return None
    return json.loads(lines[-1][len("RESULT "):])


def finished_tags(out: Path) -> list[str]:
    """Tags of every run with a log in ``out``."""
    return sorted(p.stem for p in out.glob("*.log"))
