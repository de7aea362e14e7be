"""The synthetic task written in the TL;DR schema, and its exact judge P* read back on TL;DR prompts.

No TL;DR data can be judged exactly, so the real path (task ``tldr``: JSON-lines files, a local model folder, a
held-out preference model as the judge) is checked on data whose truth is known: the synthetic task exported as

* ``sft_train.jsonl``, ``sft_validation.jsonl``, ``sft_test.jsonl``: ``{"prompt", "completion"}`` rows in the
  ``trl-lib/tldr`` form; the prompt is ``format_prompt("synthetic", None, x)`` around the synthetic prompt x, the
  completion is " " + a reference summary (train, validation: the SFT rows; test: the evaluation prompts with the
  complete summary, the task's reference);
* ``comparisons_train.jsonl``, ``comparisons_validation.jsonl``, ``comparisons_judge.jsonl``: ``summarize_from_
  feedback`` "comparisons" records, one per rater asked (``labels_per_pair`` records for a pair, as the human data
  has several workers per pair), ``choice`` = the summary that rater preferred; the P* of the pair is kept in
  ``extra.p_star`` (read by nothing in the pipeline). The judge file holds fresh pairs (the synthetic task's
  ``judge`` split), so the held-out judge shares none of the task's pairs with the PM's training pairs or with the
  test pairs;
* optionally, comparisons of SFT samples (``sft_comparisons``: pairs of a synthetic SFT policy's samples labelled
  by the task's raters, ``policy`` = ``"sft"``) added to the train and judge files: the synthetic path's PM and RM
  learn from the task's pairs *and* as many comparisons of SFT samples (``preference_data.sft_pairs``; the judge
  file's are drawn afresh, on the same RL prompts, so a short sample pair may recur by chance), and the
  human TL;DR comparisons also hold summaries sampled from trained policies, so an export without them gives the
  TL;DR path's judges half the synthetic path's data and none of its sampled summaries;
* ``manifest.json``: the synthetic task's params, from which :class:`ExportedJudge` rebuilds P*.

A copy of an export may add comparisons of trained policies' samples to one file (:func:`add_policy_comparisons`;
each summary carries the name of the policy that wrote it, as in the human data, where a comparison may set
two policies' summaries against each other).

A pipeline run of task ``tldr`` on these files measures its policies with the held-out judge; the same samples
judged by :class:`ExportedJudge` (``eval.synthetic_export``) give the gap between the two, the check that the real
path measures what the synthetic path measures.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from nlhf.progress import Progress
from nlhf.tasks.synthetic import SyntheticTask
from nlhf.tasks.synthetic_config import SyntheticTaskConfig
from nlhf.tasks.tldr import format_prompt

SUBREDDIT = "synthetic"
MANIFEST = "manifest.json"
SFT_FILES = {"train": "sft_train.jsonl", "validation": "sft_validation.jsonl", "test": "sft_test.jsonl"}
# the TL;DR split name of each exported comparison file, and the synthetic split it is drawn from
COMPARISON_FILES = {"train": ("comparisons_train.jsonl", "train"),
                    "validation": ("comparisons_validation.jsonl", "test"),
                    "judge": ("comparisons_judge.jsonl", "judge")}
_HEAD, _TAIL = format_prompt(SUBREDDIT, None, "\x00").split("\x00")


def to_tldr_prompt(prompt: str) -> str:
    """The TL;DR prompt around a synthetic prompt (the post; no title)."""
    return format_prompt(SUBREDDIT, None, prompt)


def from_tldr_prompt(text: str) -> str:
    """The synthetic prompt inside a TL;DR prompt written by :func:`to_tldr_prompt`; ValueError otherwise."""
    if not (text.startswith(_HEAD) and text.endswith(_TAIL)):
        raise ValueError(f"not a prompt of the synthetic export: {text[:80]!r}")
    return text[len(_HEAD): len(text) - len(_TAIL)]


def _write_jsonl(path: Path, rows) -> int:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        n = 0
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def _sft_records(prompts: Sequence[str], completions: Sequence[str]):
    for x, y in zip(prompts, completions):
        yield {"prompt": to_tldr_prompt(x), "completion": " " + y}


def _comparison_records(rows: dict, k: int, tldr_split: str, policy: str = "synthetic"):
    """One record per rater: ``round(label · k)`` of the ``k = labels_per_pair`` raters preferred y (choice 0).
    ``rows``: ``prompt``, ``y``, ``y_prime``, ``label`` (the fraction of raters preferring y), ``p`` (P*), and
    optionally ``policy_y`` / ``policy_y_prime``, the policy that wrote each summary (else ``policy`` for both)."""
    n = len(rows["prompt"])
    writers = zip(rows.get("policy_y", [policy] * n), rows.get("policy_y_prime", [policy] * n))
    for i, (x, y, yp, label, p, (a, b)) in enumerate(zip(rows["prompt"], rows["y"], rows["y_prime"], rows["label"],
                                                         rows["p"], writers)):
        prefer_y = int(round(float(label) * k))
        info = {"id": f"{policy}_{tldr_split}_{i}", "post": x, "title": None, "subreddit": SUBREDDIT,
                "site": None, "article": None}
        summaries = [{"text": y, "policy": a, "note": None},
                     {"text": yp, "policy": b, "note": None}]
        for r in range(k):
            yield {"info": info, "summaries": summaries, "choice": 0 if r < prefer_y else 1, "worker": f"rater{r}",
                   "batch": tldr_split, "split": tldr_split, "extra": {"p_star": float(p)}}


def export_synthetic(task: SyntheticTask, out_dir: str | os.PathLike, sft_comparisons: dict | None = None) -> dict:
    """Write ``task``'s data in the TL;DR schema into ``out_dir`` (see the module docstring); returns the manifest
    (also written as ``manifest.json``, last, so that a folder with a manifest is complete).

    ``sft_comparisons``: ``{"train": rows, "judge": rows}`` (either may be left out), comparisons of SFT samples
    labelled by ``task``'s raters (:func:`nlhf.pipeline.comparisons.sft_sample_pairs`), written after the task's
    pairs of that file, less those with an empty sample; the manifest counts both (``sft_comparisons``,
    ``sft_comparisons_with_an_empty_sample``)."""
    sft_comparisons = dict(sft_comparisons or {})
    unknown = sorted(set(sft_comparisons) - {"train", "judge"})
    if unknown:
        raise ValueError(f"sft_comparisons: only 'train' and 'judge' take comparisons of SFT samples, got {unknown}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, source in (("train", "train"), ("validation", "eval")):
        rows = task.sft_rows(source)
        counts[SFT_FILES[split]] = _write_jsonl(out / SFT_FILES[split], _sft_records(rows["prompt"],
                                                                                      rows["completion"]))
    prompts = task.prompts("eval")
    counts[SFT_FILES["test"]] = _write_jsonl(out / SFT_FILES["test"], _sft_records(prompts, task.references(prompts)))
    # a TL;DR comparison holds two non-empty summaries: pairs with an empty sample (an SFT policy that stopped at
    # once) are left out and counted
    dropped = {}
    for split, rows in list(sft_comparisons.items()):
        keep = [i for i, (y, yp) in enumerate(zip(rows["y"], rows["y_prime"])) if y.strip() and yp.strip()]
        dropped[split] = len(rows["y"]) - len(keep)
        sft_comparisons[split] = {c: [rows[c][i] for i in keep] for c in ("prompt", "y", "y_prime", "label", "p")}
    k = task.cfg.labels_per_pair
    for tldr_split, (name, source) in COMPARISON_FILES.items():
        records = _comparison_records(task.preference_rows(source), k, tldr_split)
        if tldr_split in sft_comparisons:
            records = itertools.chain(records, _comparison_records(sft_comparisons[tldr_split], k, tldr_split, "sft"))
        counts[name] = _write_jsonl(out / name, records)
    manifest = {"what": "the synthetic task in the TL;DR schema (nlhf.tasks.tldr_export)",
                "task": asdict(task.cfg), "rows": counts}
    if sft_comparisons:
        manifest["sft_comparisons"] = {split: len(rows["prompt"]) for split, rows in sft_comparisons.items()}
        manifest["sft_comparisons_with_an_empty_sample"] = dropped
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def policy_comparisons(judge: "ExportedJudge", prompts: Sequence[str], samplers: dict, n: int, seed: int,
                       progress: bool = False) -> dict:
    """``n`` comparisons of trained policies' summaries on ``prompts`` (TL;DR prompts of the export), labelled by
    the exported task's raters.

    Each pair draws a prompt uniformly and, independently for y and y′, a writer uniformly among ``samplers``
    (name → ``sample(prompts, seed) -> summaries``), so a policy may meet itself, as in the human data's pairs of one
    policy's samples; each writer samples all its rows of a side in one call, with a seed of its own. The labels are
    the raters' votes on P*(y ≻ y′ | x) (:meth:`SyntheticTask.draw_labels`). Returns the rows
    :func:`add_policy_comparisons` writes: ``prompt`` (the synthetic prompt), ``y``, ``y_prime``, ``policy_y``,
    ``policy_y_prime``, ``label``, ``p``. ``progress``: a line as the samples come in."""
    if n < 1 or not samplers:
        raise ValueError(f"policy_comparisons: needs n >= 1 and at least one policy, got n={n}, {list(samplers)}")
    names = list(samplers)
    rng = np.random.default_rng(seed)  # draws the prompts and the writers, then the labels
    xs = [prompts[i] for i in rng.integers(len(prompts), size=n)]
    writers = {"y": rng.integers(len(names), size=n), "y_prime": rng.integers(len(names), size=n)}
    texts = {side: [""] * n for side in writers}
    bar, done = Progress("policy comparisons: summaries", 2 * n, enabled=progress), 0
    for s, (side, drawn) in enumerate(writers.items()):
        for w, name in enumerate(names):
            rows = np.flatnonzero(drawn == w)
            if len(rows):
                out = samplers[name]([xs[i] for i in rows], seed + 1 + 2 * w + s)
                for i, text in zip(rows, out):
                    texts[side][i] = text
                done += len(rows)
                bar.update(done, writer=name, side=side)
    p = judge(xs, texts["y"], texts["y_prime"])
    return {"prompt": [from_tldr_prompt(x) for x in xs], "y": texts["y"], "y_prime": texts["y_prime"],
            "policy_y": [names[w] for w in writers["y"]], "policy_y_prime": [names[w] for w in writers["y_prime"]],
            "label": judge.task.draw_labels(p, rng), "p": p}


def add_policy_comparisons(src: str | os.PathLike, out_dir: str | os.PathLike, rows: dict,
                           split: str = "judge") -> dict:
    """A copy of the export ``src`` in ``out_dir`` whose ``split`` comparisons file holds, after its own records,
    ``rows`` (:func:`policy_comparisons`; prompts synthetic, without the TL;DR frame), one record per rater, each
    summary named by the policy that wrote it; pairs with an empty summary are left out and counted. ``src`` is not
    changed; the manifest, written last, records the source and the counts (``policy_comparisons``)."""
    if split not in COMPARISON_FILES:
        raise ValueError(f"add_policy_comparisons: split must be one of {sorted(COMPARISON_FILES)}, got {split!r}")
    src, out = Path(src), Path(out_dir)
    manifest = load_manifest(src)
    if out.exists():
        raise FileExistsError(f"{out}: exists; add_policy_comparisons writes a new folder")
    keep = [i for i, (y, yp) in enumerate(zip(rows["y"], rows["y_prime"])) if y.strip() and yp.strip()]
    dropped = len(rows["y"]) - len(keep)
    rows = {c: [rows[c][i] for i in keep] for c in ("prompt", "y", "y_prime", "policy_y", "policy_y_prime",
                                                   "label", "p")}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(MANIFEST))
    name = COMPARISON_FILES[split][0]
    with (tmp / name).open("a", encoding="utf-8") as f:
        for r in _comparison_records(rows, manifest["task"]["labels_per_pair"], split, "policies"):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    writers = rows["policy_y"] + rows["policy_y_prime"]
    manifest["rows"][name] = sum(1 for _ in (tmp / name).open(encoding="utf-8"))
    manifest["policy_comparisons"] = {"source": str(src), "split": split, "pairs": len(keep),
                                      "with_an_empty_summary": dropped,
                                      "summaries_by_policy": {w: writers.count(w) for w in sorted(set(writers))}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.rename(out)
    return manifest


def load_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of an export folder; FileNotFoundError naming the folder when it has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a synthetic export (no {MANIFEST}; write one with "
                                f"`python -m nlhf export-synthetic {folder}`)")
    return json.loads(path.read_text())


class ExportedJudge:
    """P*(y ≻ y′ | x) of the exported task on TL;DR prompts and summaries (leading spaces ignored): the exact judge
    of the data a ``tldr`` run trained on."""

    def __init__(self, folder: str | os.PathLike):
        self.task = SyntheticTask(SyntheticTaskConfig(**load_manifest(folder)["task"]))

    def __call__(self, prompts: Sequence[str], ys: Sequence[str], y_primes: Sequence[str]) -> np.ndarray:
        xs = [from_tldr_prompt(x) for x in prompts]
        return self.task.judge(xs, [y.strip() for y in ys], [y.strip() for y in y_primes])
