"""TL;DR summarization (Stiennon et al. 2020) for the online / GPU profile (the paper's §8, "Data").

* SFT rows come from a ``trl-lib/tldr``-style dataset: columns ``prompt`` (``"SUBREDDIT: r/...\\n\\nTITLE: ...
  \\n\\nPOST: ...\\n\\nTL;DR:"``) and ``completion`` (the summary, with its leading space).
* Preference pairs come from ``openai/summarize_from_feedback`` "comparisons": ``info {id, post, title,
  subreddit, ...}``, ``summaries [{text, policy, note}, {...}]``, ``choice`` (0 | 1: index of the preferred
  summary), ``worker``, ``batch``, ``split``, ``extra``. Mapped to ``prompt`` (same format as SFT), ``y`` =
  summaries[0], ``y_prime`` = summaries[1] (both as " " + stripped text), ``label = 1 - choice``, ``p = NaN``.

Loading goes through ``datasets.load_dataset``: a Hub name (with ``*_revision`` pinned to a commit) works online;
offline set ``*_path`` to a builder (``"json"``, ``"parquet"``) and ``*_data_files`` to ``{split: file}``, or
``*_path`` to a local directory. Every row is checked when loaded (columns, types, non-empty text); a bad file or row
stops with :class:`TldrDataError` naming the file and the row (counted from 1, the line of a JSON-lines file).
There is no exact judge (``judge`` raises): the pipeline judges with a held-out preference model, which the oracle
stage trains on the ``judge`` comparisons (``preference_dataset("judge")``, disjoint from ``train`` and ``test``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nlhf.config import check
from nlhf.tasks.base import PREF_SPLITS, PROMPT_SPLITS, SFT_SPLITS, Task, check_split

_COMMIT = re.compile(r"[0-9a-f]{40}")
_TEXT_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".txt")


class TldrDataError(ValueError):
    """A TL;DR data file that cannot be read or does not have the expected schema; the message names the file (and
    the row)."""


class MissingSplit(KeyError):
    """The configured data has no such split (``references`` skips those; every other error propagates)."""


def is_hub_id(path: str, data_files) -> bool:
    """True when ``load_dataset(path, data_files=...)`` would download from the Hub: no data files and no local
    folder or file of that name (a path written as one, ./x, ../x, /x or ~/x, is local even before it exists)."""
    if str(path).startswith(("./", "../", "/", "~")):
        return False
    return not data_files and not Path(path).expanduser().exists()


def hub_revision_ok(path: str, data_files, revision: str | None) -> bool:
    """A Hub dataset must be pinned to a commit (40 hex digits); local data needs no revision."""
    return not is_hub_id(path, data_files) or (revision is not None and _COMMIT.fullmatch(revision) is not None)


@dataclass
class TldrTaskConfig:
    """TL;DR task: where the SFT and preference data come from, which splits, and how many rows."""

    seed: int = 0  # shuffling before taking the first n rows of a split
    sft_path: str = "trl-lib/tldr"  # load_dataset path: Hub name, local dir, or builder ("json") with data_files
    sft_name: str | None = None  # load_dataset config name
    sft_data_files: dict[str, str] | None = None  # {split: file} for a builder path (offline)
    sft_revision: str | None = None  # Hub commit (40 hex digits) of sft_path; required for a Hub dataset
    pref_path: str = "openai/summarize_from_feedback"  # comparisons-schema dataset
    pref_name: str | None = "comparisons"  # load_dataset config name (None for json files)
    pref_data_files: dict[str, str] | None = None  # {split: file} for a builder path (offline)
    pref_revision: str | None = None  # Hub commit (40 hex digits) of pref_path; required for a Hub dataset
    sft_train_split: str = "train"  # source split for sft_dataset("train")
    sft_eval_split: str = "validation"  # source split for sft_dataset("eval")
    pref_train_split: str = "train"  # source split for preference_dataset("train") (92k pairs, the paper's §8)
    pref_test_split: str = "validation"  # source split for preference_dataset("test")
    pref_judge_split: str = "validation"  # source split for preference_dataset("judge"), the held-out judge's pairs;
    # where it is the test split, that split's rows are shuffled (seed) and halved: the first half is "test", the
    # second "judge", so the judge never trains on a pair it is scored on, nor on the training PM's
    prompts_train_split: str = "train"  # SFT source split whose prompts are the RL prompts
    prompts_eval_split: str = "test"  # SFT source split whose prompts are the evaluation prompts
    n_sft: int = 0  # rows kept per split (0 = all) ...
    n_sft_eval: int = 0
    n_pref_train: int = 0
    n_pref_test: int = 0
    n_pref_judge: int = 0
    n_prompts_train: int = 0
    n_prompts_eval: int = 2_000  # the paper's 2000 samples per table cell
    max_summary_words: int = 128  # longer (or empty) completions are malformed

    def __post_init__(self) -> None:
        for f in ("n_sft", "n_sft_eval", "n_pref_train", "n_pref_test", "n_pref_judge", "n_prompts_train",
                  "n_prompts_eval"):
            check(getattr(self, f) >= 0, f, f"must be >= 0 (0 = all rows), got {getattr(self, f)}")
        check(self.max_summary_words >= 1, "max_summary_words", f"must be >= 1, got {self.max_summary_words}")
        check(bool(self.sft_path), "sft_path", "must not be empty")
        check(bool(self.pref_path), "pref_path", "must not be empty")
        check(self.pref_judge_split != self.pref_train_split, "pref_judge_split",
              f"must differ from pref_train_split ({self.pref_train_split!r}): the held-out judge must not train on "
              f"the training PM's comparisons")
        for f in ("sft_revision", "pref_revision"):
            v = getattr(self, f)
            check(v is None or _COMMIT.fullmatch(v) is not None, f, f"must be a 40-hex-digit commit id, got {v!r}")

    def check_pinned(self) -> None:
        """Raise ``ValueError("field: ...")`` if a Hub dataset is not pinned to a commit (checked when the task is
        selected: the defaults name Hub datasets that the synthetic profiles never load)."""
        for kind in ("sft", "pref"):
            path, files, rev = (getattr(self, f"{kind}_{k}") for k in ("path", "data_files", "revision"))
            check(hub_revision_ok(path, files, rev), f"{kind}_revision",
                  f"{kind}_path {path!r} is a Hub dataset: pin it to a commit (the 40-hex-digit id on its Hub "
                  f"page) so that a rerun reads the same data, or point {kind}_path/{kind}_data_files at local files")


def format_prompt(subreddit: str | None, title: str | None, post: str) -> str:
    """The trl-lib/tldr prompt format."""
    return f"SUBREDDIT: r/{subreddit or ''}\n\nTITLE: {title or ''}\n\nPOST: {post.strip()}\n\nTL;DR:"


def _nonempty_str(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def comparison_problem(ex: dict) -> str | None:
    """Why a summarize_from_feedback "comparisons" record cannot be used, or None if it can."""
    info, s, choice = ex.get("info"), ex.get("summaries"), ex.get("choice")
    if not isinstance(info, dict):
        return f"'info' must be a mapping, got {info!r}"
    post = info.get("post") or info.get("article")
    if not _nonempty_str(post):
        return f"'info' needs a non-empty 'post' (or 'article') string, got {post!r}"
    for k in ("subreddit", "title"):
        if info.get(k) is not None and not isinstance(info[k], str):
            return f"'info.{k}' must be a string or null, got {info[k]!r}"
    if not isinstance(s, list) or len(s) != 2:
        return f"'summaries' must be a list of 2 summaries, got {s!r}"
    for i, x in enumerate(s):
        if not isinstance(x, dict) or not _nonempty_str(x.get("text")):
            return f"'summaries[{i}].text' must be a non-empty string, got {x!r}"
    if isinstance(choice, bool) or choice not in (0, 1):
        return f"'choice' must be 0 or 1, got {choice!r}"
    return None


def comparison_to_row(ex: dict) -> dict:
    """One summarize_from_feedback "comparisons" record -> a (prompt, y, y_prime, label, p) row."""
    problem = comparison_problem(ex)
    if problem is not None:
        rid = ex["info"].get("id") if isinstance(ex.get("info"), dict) else None
        raise TldrDataError(f"bad comparison record {rid}: {problem}")
    info, s = ex["info"], ex["summaries"]
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
        self._sources: dict = {}

    @staticmethod
    def _where(path, data_files, split) -> str:
        """The file (or dataset and split) a split comes from, for error messages."""
        if data_files and split in data_files:
            return str(data_files[split])
        return f"{path} (split {split!r})"

    def _load(self, path, name, data_files, split, revision, what):
        """``load_dataset`` of one split, every failure naming the file; a split that is not there raises
        :class:`MissingSplit`."""
        import datasets

        where = self._where(path, data_files, split)
        if not hub_revision_ok(path, data_files, revision):
            raise TldrDataError(f"{where}: a Hub dataset needs a pinned revision (task.tldr.*_revision)")
        if data_files is not None and split not in data_files:
            raise MissingSplit(f"{path}: no data file for split {split!r} (have {sorted(data_files)})")
        if data_files is not None:
            self._check_file(data_files[split], what)
        kw = {"data_files": data_files} if data_files else {}
        if revision is not None:
            kw["revision"] = revision
        try:
            ds = datasets.load_dataset(path, name, split=split, **kw)
        except ValueError as e:
            if "Unknown split" in str(e):
                raise MissingSplit(f"{where}: {e}") from None
            raise TldrDataError(f"{where}: cannot be read as a {what} dataset ({type(e).__name__}: {e})") from e
        except Exception as e:  # e.g. StopIteration from an empty file, DatasetGenerationError from a broken one
            raise TldrDataError(f"{where}: cannot be read as a {what} dataset ({type(e).__name__}: {e})") from e
        if len(ds) == 0:
            raise TldrDataError(f"{where}: the {what} split {split!r} has no rows")
        return ds

    @staticmethod
    def _check_file(files, what) -> None:
        """A local text data file exists, is not empty and is UTF-8 (pyarrow would only fail later, on access)."""
        for f in [files] if isinstance(files, str) else list(files):
            p = Path(f).expanduser()
            if "://" in str(f) or any(ch in str(f) for ch in "*?["):
                continue  # a URL or a glob: load_dataset resolves it
            if not p.is_file():
                raise TldrDataError(f"{p}: {what} data file not found")
            if p.stat().st_size == 0:
                raise TldrDataError(f"{p}: empty {what} data file")
            if p.suffix in _TEXT_SUFFIXES:
                with open(p, "rb") as fh:
                    for line_no, line in enumerate(fh, start=1):
                        try:
                            line.decode("utf-8")
                        except UnicodeDecodeError as e:
                            raise TldrDataError(f"{p}: line {line_no} is not UTF-8 text ({e.reason} at byte "
                                                f"{e.start} of the line)") from None

    def _subsample(self, ds, n):
        if n and n < len(ds):
            ds = ds.shuffle(seed=self.cfg.seed).select(range(n))
        return ds

    def _sft_source(self, split: str, n: int = 0):
        """The split's (prompt, completion) rows, every row checked, then ``n`` of them (0: all)."""
        if split not in self._sources:
            c = self.cfg
            ds = self._load(c.sft_path, c.sft_name, c.sft_data_files, split, c.sft_revision, "sft")
            where = self._where(c.sft_path, c.sft_data_files, split)
            missing = {"prompt", "completion"} - set(ds.column_names)
            if missing:
                raise TldrDataError(f"{where}: sft data lacks columns {sorted(missing)} (has {ds.column_names})")
            ds = ds.select_columns(["prompt", "completion"])
            try:
                cols = ds[:]
            except UnicodeDecodeError as e:
                raise TldrDataError(f"{where}: not UTF-8 text ({e})") from None
            for i, (x, y) in enumerate(zip(cols["prompt"], cols["completion"])):
                for col, v in (("prompt", x), ("completion", y)):
                    if not _nonempty_str(v):
                        raise TldrDataError(f"{where}: row {i + 1}: {col!r} must be a non-empty string, got {v!r}")
            self._sources[split] = ds
        return self._subsample(self._sources[split], n)

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
        """``train`` (the PM's and RM's comparisons), ``test`` (where the judges are scored against the human labels)
        or ``judge`` (the held-out judge's); ``test`` and ``judge`` from one source split are its two halves."""
        check_split(split, PREF_SPLITS, "preference_dataset")
        c = self.cfg
        src, n = {"train": (c.pref_train_split, c.n_pref_train), "test": (c.pref_test_split, c.n_pref_test),
                  "judge": (c.pref_judge_split, c.n_pref_judge)}[split]
        ds = self._load(c.pref_path, c.pref_name, c.pref_data_files, src, c.pref_revision, "comparisons")
        where = self._where(c.pref_path, c.pref_data_files, src)
        missing = {"info", "summaries", "choice"} - set(ds.column_names)
        if missing:
            raise TldrDataError(f"{where}: comparisons lack columns {sorted(missing)} (has {ds.column_names})")
        try:
            rows = ds.select_columns(["info", "summaries", "choice"]).to_list()
        except UnicodeDecodeError as e:
            raise TldrDataError(f"{where}: not UTF-8 text ({e})") from None
        for i, ex in enumerate(rows):
            problem = comparison_problem(ex)
            if problem is not None:
                raise TldrDataError(f"{where}: row {i + 1}: {problem}")
        if split != "train" and c.pref_test_split == c.pref_judge_split:
            half = len(ds) // 2
            ds = ds.shuffle(seed=c.seed)
            ds = ds.select(range(half)) if split == "test" else ds.select(range(half, len(ds)))
        ds = self._subsample(ds, n)
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
                except MissingSplit:  # a split this copy of the data does not have
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
