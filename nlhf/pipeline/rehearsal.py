"""A GPU profile rehearsed on CPU: the profile's own stages and settings (bf16 autocast, the model architectures
and local folders it names, the file layout its data is read from) with the steps and sizes of a small profile, so
that the first run on a GPU fails on nothing but the GPU.

    python -m nlhf rehearse gpu WORK     # sizes of profile tiny
    python -m nlhf rehearse tldr WORK    # sizes of profile tldr-tiny, on stand-ins of what scripts/fetch_real.py fetches

What is cut: the keys of :data:`CUT` (steps, batch sizes, model widths and depths of models built from config,
prompt and sample counts), taken from the small profile; and ``runtime.cpu``. What is kept: everything else of the
profile, ``runtime.mixed_precision`` included (on CPU, ``bf16`` runs under CPU autocast). A profile whose task reads
local folders (``task.name: tldr``) gets stand-ins in the layout ``scripts/fetch_real.py`` writes: the real-schema
fixtures as parquet files, tiny models of the fetched architectures (pythia: ``gpt_neox``; Qwen2.5: ``qwen2``) whose
tokenizers lack pad and sep, prepared as the README says (``python -m nlhf prepare-model``). Everything is written
under WORK (params, stand-ins, artifacts, results; never the repository's own files); the stages run there, in one
process, in the DAG's order: data, sft, the PM and the RM, oracle, the policies, the exact-judge ablation of the
first method (where the task has an exact judge) and eval. Not rehearsed: ``tabular`` (no GPU path) and the
second-seed policies (the same stage as the policies). Paths the profile names are read relative to WORK, so the
profiles meant for rehearsal are the GPU ones (``gpu``, ``tldr``), not those reading files of the repository
(``tldr-tiny``, ``synthetic-tldr``).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

from nlhf.config import ConfigError, read_params

# section path -> the keys a rehearsal takes from the small profile (the rest of the section stays the profile's)
_SIZE = ("n_layer", "n_embd", "n_head", "head_hidden")
_FIT = ("steps", "batch_size", "warmup_steps", "eval_every", "checkpoint_every")
CUT: dict[tuple[str, ...], tuple[str, ...]] = {
    ("task", "synthetic"): ("n_sft", "n_sft_eval", "n_pref_train", "n_pref_test", "n_prompts_train",
                            "n_prompts_eval"),
    ("task", "tldr"): ("n_prompts_train", "n_prompts_eval"),
    ("preference_data",): ("sft_pairs",),
    ("policy_model",): _SIZE, ("preference_model",): _SIZE, ("reward_model",): _SIZE,
    ("heldout_judge", "model"): _SIZE,
    ("sft",): (*_FIT, "check_prompts"), ("pm",): _FIT, ("rm",): _FIT, ("heldout_judge", "fit"): _FIT,
    ("pg",): ("steps", "batch_size", "log_every", "checkpoint_every"),
    ("sampling",): ("batch_size",),
    ("eval",): ("n_prompts", "nontransitivity_prompts", "n_heldout_pairs", "exploitability_prompts",
                "exploitability_samples"),
    ("oracle",): ("n_prompts", "sft_samples", "coverage_samples"),
    ("ablation",): ("train_prompts", "pool_sft_samples", "steps"),
}
# what scripts/fetch_real.py writes for profile tldr: folder -> (model type, the tokenizer it shares)
FETCHED_MODELS = {"models/policy": ("gpt_neox", "pythia"), "models/scorer": ("gpt_neox", "pythia"),
                  "models/judge": ("qwen2", "judge")}
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"  # a source checkout's real-schema fixtures
STANDINS_DONE = ".standins-complete"  # written last: a folder without it is rebuilt


def _section(d: dict, path: tuple[str, ...]) -> dict | None:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d if isinstance(d, dict) else None


def cut_params(raw: dict, small: dict) -> dict:
    """``raw`` (a profile merged into params.yaml) with the keys of :data:`CUT` that ``small`` (another merged
    profile) sets taken from ``small``, and ``runtime.cpu: true``; nothing else changes."""
    out = copy.deepcopy(raw)
    for path, keys in CUT.items():
        src, dst = _section(small, path), _section(out, path)
        if src is None or dst is None:
            continue
        for k in keys:
            if k in src:
                dst[k] = copy.deepcopy(src[k])
    out.setdefault("runtime", {})["cpu"] = True
    return out


def rehearsal_params(params: str | os.PathLike, profile: str, sizes: str, methods: list[str]) -> dict:
    """params.yaml under ``profile``, cut to profile ``sizes`` (:func:`cut_params`), its methods narrowed to
    ``methods`` (the exact-judge ablation to the first of them where the task has an exact judge), paths under the
    working folder."""
    raw = cut_params(read_params(params, profile), read_params(params, sizes))
    unknown = [m for m in methods if m not in raw["methods"]]
    if unknown:
        raise ConfigError(f"methods: {unknown} not in params.yaml's methods ({', '.join(raw['methods'])})")
    raw["methods"] = {m: spec for m, spec in raw["methods"].items() if m in methods}  # params.yaml's order
    methods = list(raw["methods"])
    exact = raw["task"]["name"] != "tldr"
    raw["ablation"]["methods"] = methods[:1] if exact else []
    raw["ablation"]["seed_methods"] = {}
    raw["eval"]["policies"] = None
    raw["paths"] = {"artifacts": "artifacts", "results": "results"}
    return raw


def write_fetch_standins(root: str | os.PathLike, fixtures: str | os.PathLike = FIXTURES) -> list[Path]:
    """Stand-ins for ``python scripts/fetch_real.py ROOT`` followed by the README's ``prepare-model`` steps: the
    real-schema fixtures as the parquet files of trl-lib/tldr (``data/tldr/data/<split>-00000-of-00001.parquet``)
    and of summarize_from_feedback's parquet conversion (``data/comparisons/comparisons/<split>/0000.parquet``), and
    :data:`FETCHED_MODELS` built small (:func:`nlhf.models.local.build_pretrained_standin`). Returns what it wrote."""
    import datasets

    from nlhf.models.local import add_pipeline_tokens, build_pretrained_standin, read_texts
    from nlhf.tokenization import build_bpe_tokenizer

    root, fixtures = Path(root), Path(fixtures)
    written = []
    data = [(f"tldr_sft_{split}.jsonl", f"tldr/data/{split}-00000-of-00001.parquet")
            for split in ("train", "validation", "test")]
    data += [(f"comparisons_{split}.jsonl", f"comparisons/comparisons/{split}/0000.parquet")
             for split in ("train", "validation")]
    for fixture, file in data:
        out = root / "data" / file
        out.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_json(str(fixtures / fixture)).to_parquet(str(out))
        written.append(out)
    texts = read_texts(sorted(fixtures.glob("tldr_sft_*.jsonl")), ["prompt", "completion"])
    # the judge is scored on the answers " A" and " B": its tokenizer must hold each as one token, as Qwen's does
    answers = ["The better summary is A", "The better summary is B"] * 50
    tokenizers = {"pythia": build_bpe_tokenizer(texts, 500, model_max_length=1024, pipeline_tokens=False),
                  "judge": build_bpe_tokenizer(texts + answers, 500, model_max_length=2048, pipeline_tokens=False)}
    for folder, (model_type, tok) in FETCHED_MODELS.items():
        out = build_pretrained_standin(tokenizers[tok], root / folder, model_type, seed=len(written))
        if folder != "models/judge":  # fetch_real.py prepares the policy and the scorer, not the judge
            add_pipeline_tokens(out)
        written.append(out)
    (root / STANDINS_DONE).write_text("stand-ins written by nlhf.pipeline.rehearsal.write_fetch_standins\n")
    return written


def stage_list(raw: dict) -> list[str]:
    """The stages rehearsed for ``raw`` (module docstring), in an order that runs (each after its inputs)."""
    stages = ["data", "sft", "preference@pm", "preference@rm", "oracle"]
    stages += [f"policy@{m}" for m in raw["methods"]] + [f"policy_exact@{m}" for m in raw["ablation"]["methods"]]
    return stages + ["eval"]


def default_sizes(params: str | os.PathLike, profile: str) -> str:
    """The small profile a rehearsal of ``profile`` takes its steps and sizes from: ``tldr-tiny`` for a TL;DR
    profile (its held-out judge and LLM judge need that profile's sizes), else ``tiny``."""
    return "tldr-tiny" if read_params(params, profile)["task"]["name"] == "tldr" else "tiny"


def rehearse(profile: str, work: str | os.PathLike, sizes: str | None, methods: list[str],
             params: str | os.PathLike = "params.yaml") -> int:
    """Write WORK/params.yaml (:func:`rehearsal_params`; ``sizes`` None: :func:`default_sizes`), the stand-ins a
    tldr profile reads, then run the stages (:func:`stage_list`) with ``python -m nlhf run`` in WORK; returns its
    exit status."""
    work = Path(work)
    if work.resolve() == Path(params).resolve().parent:
        raise ConfigError(f"work: {work} is the folder of {params}; the rehearsal writes params.yaml, profiles/, "
                          f"artifacts/ and results/ there: give it a folder of its own")
    sizes = sizes or default_sizes(params, profile)
    raw = rehearsal_params(params, profile, sizes, methods)
    raw["profile"] = profile
    (work / "profiles").mkdir(parents=True, exist_ok=True)
    (work / "profiles" / f"{profile}.yaml").write_text("# merged into params.yaml by the rehearsal\n")
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    if raw["task"]["name"] == "tldr":
        real = work / "real"
        if not (real / STANDINS_DONE).exists():
            print(f"rehearse: stand-ins of the fetched data and models -> {real}", flush=True)
            write_fetch_standins(real)
    stages = stage_list(raw)
    print(f"rehearse: profile {profile} at the sizes of {sizes}, runtime {raw['runtime']}: "
          f"python -m nlhf run {' '.join(stages)} (in {work})", flush=True)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "nlhf", "run", *stages], cwd=work, env=env).returncode
