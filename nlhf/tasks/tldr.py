"""TL;DR summarization (Stiennon et al. 2020) for the online / GPU profile (PAPER §4 "Data").

* SFT rows come from a ``trl-lib/tldr``-style dataset: columns ``prompt`` (``"SUBREDDIT: r/...\\n\\nTITLE: ...
  \\n\\nPOST: ...\\n\\nTL;DR:"``) and ``completion`` (the summary, with its leading space).
* Preference pairs come from ``openai/summarize_from_feedback`` "comparisons": ``info {id, post, title,
  subreddit, ...}``, ``summaries [{text, policy, note}, {...}]``, ``choice`` (0 | 1: index of the preferred
  summary), ``worker``, ``batch``, ``split``, ``extra``. Mapped to ``prompt`` (same format as SFT), ``y`` =
  summaries[0], ``y_prime`` = summaries[1] (both as " " + stripped text), ``label = 1 - choice``, ``p = NaN``.

Loading goes through ``datasets.load_dataset``: a Hub name works online; offline set ``*_path`` to a builder
(``"json"``, ``"parquet"``) and ``*_data_files`` to ``{split: file}``, or ``*_path`` to a local directory.
There is no exact judge: the GPU profile judges with a held-out preference model (``judge`` raises).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from nlhf.config import check
from nlhf.tasks.base import PREF_SPLITS, PROMPT_SPLITS, SFT_SPLITS, Task, check_split


@dataclass
class TldrTaskConfig:
    """TL;DR task: where the SFT and preference data come from, which splits, and how many rows."""

    seed: int = 0  # shuffling before taking the first n rows of a split
    sft_path: str = "trl-lib/tldr"  # load_dataset path: Hub name, local dir, or builder ("json") with data_files
    sft_name: str | None = None  # load_dataset config name
    sft_data_files: dict[str, str] | None = None  # {split: file} for a builder path (offline)
    pref_path: str = "openai/summarize_from_feedback"  # comparisons-schema dataset
    pref_name: str | None = "comparisons"  # load_dataset config name (None for json files)
    pref_data_files: dict[str, str] | None = None  # {split: file} for a builder path (offline)
    sft_train_split: str = "train"  # source split for sft_dataset("train")
    sft_eval_split: str = "validation"  # source split for sft_dataset("eval")
    pref_train_split: str = "train"  # source split for preference_dataset("train") (92k pairs, PAPER §4)
    pref_test_split: str = "validation"  # source split for preference_dataset("test")
    prompts_train_split: str = "train"  # SFT source split whose prompts are the RL prompts
    prompts_eval_split: str = "test"  # SFT source split whose prompts are the evaluation prompts
    n_sft: int = 0  # rows kept per split (0 = all) ...
    n_sft_eval: int = 0
    n_pref_train: int = 0
    n_pref_test: int = 0
    n_prompts_train: int = 0
    n_prompts_eval: int = 2_000  # the paper's 2000 samples per table cell
    max_summary_words: int = 128  # longer (or empty) completions are malformed

    def __post_init__(self) -> None:
        for f in ("n_sft", "n_sft_eval", "n_pref_train", "n_pref_test", "n_prompts_train", "n_prompts_eval"):
            check(getattr(self, f) >= 0, f, f"must be >= 0 (0 = all rows), got {getattr(self, f)}")
        check(self.max_summary_words >= 1, "max_summary_words", f"must be >= 1, got {self.max_summary_words}")
        check(bool(self.sft_path), "sft_path", "must not be empty")
        check(bool(self.pref_path), "pref_path", "must not be empty")


def format_prompt(subreddit: str | None, title: str | None, post: str) -> str:
    """The trl-lib/tldr prompt format."""
    return f"SUBREDDIT: r/{subreddit or ''}\n\nTITLE: {title or ''}\n\nPOST: {post.strip()}\n\nTL;DR:"


def comparison_to_row(ex: dict) -> dict:
    """One summarize_from_feedback "comparisons" record -> a (prompt, y, y_prime, label, p) row."""
    info, s = ex["info"], ex["summaries"]
    if len(s) != 2 or ex["choice"] not in (0, 1):
        raise ValueError(f"bad comparison record (need 2 summaries and choice 0|1): {ex.get('info', {}).get('id')}")
    post = info.get("post") or info.get("article") or ""
    return {"prompt": format_prompt(info.get("subreddit"), info.get("title"), post),
            "y": " " + s[0]["text"].strip(), "y_prime": " " + s[1]["text"].strip(),
            "label": 1 - int(ex["choice"]), "p": math.nan}


class TldrTask(Task):
    """TL;DR SFT + human comparisons behind the common Task interface (no exact judge)."""

    name = "tldr"

    def __init__(self, cfg: TldrTaskConfig | None = None):
        self.cfg = cfg or TldrTaskConfig()
        self._refs: dict[str, str] | None = None

    def _load(self, path, name, data_files, split, n):
        import datasets

        kw = {"data_files": data_files} if data_files else {}
        ds = datasets.load_dataset(path, name, split=split, **kw)
        if n and n < len(ds):
            ds = ds.shuffle(seed=self.cfg.seed).select(range(n))
        return ds

    def _sft_source(self, split: str, n: int = 0):
        c = self.cfg
        ds = self._load(c.sft_path, c.sft_name, c.sft_data_files, split, n)
        missing = {"prompt", "completion"} - set(ds.column_names)
        if missing:
            raise ValueError(f"sft dataset {c.sft_path!r} split {split!r} lacks columns {sorted(missing)}")
        return ds.select_columns(["prompt", "completion"])

    def sft_dataset(self, split: str):
        check_split(split, SFT_SPLITS, "sft_dataset")
        c = self.cfg
        if split == "train":
            return self._sft_source(c.sft_train_split, c.n_sft)
        return self._sft_source(c.sft_eval_split, c.n_sft_eval)

    def prompts(self, split: str) -> list[str]:
        check_split(split, PROMPT_SPLITS, "prompts")
        c = self.cfg
        if split == "train":
            src, n = c.prompts_train_split, c.n_prompts_train
        else:
            src, n = c.prompts_eval_split, c.n_prompts_eval
        out = list(dict.fromkeys(self._sft_source(src)["prompt"]))
        if n and n < len(out):
            import numpy as np

            idx = np.random.default_rng(self.cfg.seed).permutation(len(out))[:n]
            out = [out[i] for i in sorted(idx)]
        return out

    def preference_dataset(self, split: str):
        check_split(split, PREF_SPLITS, "preference_dataset")
        c = self.cfg
        src, n = (c.pref_train_split, c.n_pref_train) if split == "train" else (c.pref_test_split, c.n_pref_test)
        ds = self._load(c.pref_path, c.pref_name, c.pref_data_files, src, n)
        return ds.map(comparison_to_row, remove_columns=ds.column_names, desc=f"comparisons[{src}]")

    def references(self, prompts: Sequence[str]) -> list[str]:
        """The dataset's human-written TL;DR for each prompt (looked up across the configured SFT splits)."""
        if self._refs is None:
            c = self.cfg
            self._refs = {}
            splits = [c.sft_train_split, c.sft_eval_split, c.prompts_train_split, c.prompts_eval_split]
            for split in dict.fromkeys(splits):
                try:
                    ds = self._sft_source(split)
                except (ValueError, KeyError):  # a split this copy of the data does not have
                    continue
                for p, comp in zip(ds["prompt"], ds["completion"]):
                    self._refs.setdefault(p, comp)
        missing = [p for p in prompts if p not in self._refs]
        if missing:
            raise KeyError(f"tldr.references: {len(missing)} prompt(s) have no reference, e.g. {missing[0][:80]!r}")
        return [self._refs[p] for p in prompts]

    def is_well_formed(self, prompt: str, y: str) -> bool:
        n = len(y.split())
        return 1 <= n <= self.cfg.max_summary_words
