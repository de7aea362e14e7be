"""``python -m nlhf check [STAGE ...]``: validate params.yaml (and a stage's upstream inputs) before running anything.

DVC runs ``python -m nlhf check --fresh --out artifacts/check.ok`` as the first stage of the DAG (dvc.yaml), so a
bad param stops ``dvc repro`` before any stage has deleted its outputs or papermill has overwritten an executed
notebook. The output file's content never changes, so a passing check does not invalidate the stages after it.

``--fresh`` deletes the resumable training states (``<artifacts>/.resume``): DVC reruns the check stage only when
params, code or profiles changed, or when forced (``dvc repro -f``), and in each of those cases every stage must
start from scratch. (A state is also never resumed for other params or upstream inputs: see
:func:`nlhf.stages.fingerprint`.)

With stage names (``sft``, ``preference@pm``, ``policy@MD1``, ...) it also checks that the stage's upstream
artifacts exist, are readable and hold the row counts their stages recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHECK_OK = "params validated by `python -m nlhf check`\n"


def _stage_inputs(cfg, stage: str) -> list[str]:
    """Check the upstream artifacts of ``stage`` with the stages' own loaders; returns what was checked."""
    from nlhf import stages

    art = lambda *p: stages.artifact(cfg, *p)  # noqa: E731
    checked = []
    if stage in ("tabular", "data"):
        return checked
    if stage == "sft":
        stages.load_tokenizer(cfg)
        for split in ("train", "eval"):
            stages.load_dataset_dir(cfg, "sft", split)
        return ["data/tokenizer", "data/sft"]
    if stage in ("preference@pm", "preference@rm"):
        stages.load_tokenizer(cfg)
        for split in ("train", "test"):
            stages.load_dataset_dir(cfg, "prefs", split)
        for part in ("train", "heldout"):
            stages.load_sft_comparisons(cfg, part)
        return ["data/tokenizer", "data/prefs", "sft_pairs"]
    if stage.split("@")[0] in ("policy", "policy_exact", "policy_seed") and "@" in stage:
        kind, name = stage.split("@", 1)
        method = cfg.method(name)
        stages.require(art("models", "sft"), "sft")
        stages.require(art("oracle", "pools.json"), "oracle")
        if kind == "policy_exact":
            return ["models/sft", "oracle"]
        judge = "rm" if method.kind == "rlhf" else "pm"
        stages.require(art("models", judge), f"preference@{judge}")
        return ["models/sft", f"models/{judge}", "oracle"]
    if stage == "eval":
        stages.load_tokenizer(cfg)
        stages.require(art("models", "sft"), "sft")
        stages.require(art("models", "pm"), "preference@pm")
        for variant, names in (("paper", cfg.methods), ("exact", cfg.ablation.methods),
                               ("seed", cfg.ablation.seed_methods)):
            for name in names:
                stages.require(stages.policy_dir(cfg, name, variant), stages.policy_stage(name, variant))
        return ["data/tokenizer", "models/sft", "models/pm", "policies", "policies_exact", "policies_seed"]
    if stage == "oracle":
        stages.require(art("models", "sft"), "sft")
        stages.require(art("models", "rm"), "preference@rm")
        return ["models/sft", "models/rm"]
    raise KeyError(f"unknown stage {stage!r}; stages: tabular, data, sft, preference@pm, preference@rm, oracle, "
                   f"policy@<method> ({', '.join(cfg.methods)}), policy_exact@<method>, policy_seed@<method>, eval")


def _fresh(cfg) -> None:
    resume = Path(cfg.paths.artifacts) / ".resume"
    for state in sorted(resume.glob("*.pt")) if resume.is_dir() else []:
        state.unlink()
        print(f"check: removed the resumable state {state} (params, code or profiles changed, or the run was "
              f"forced): its stage starts fresh")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlhf", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="validate params.yaml (+ profile) and, for named stages, their inputs")
    chk.add_argument("stages", nargs="*", help="stage names whose upstream artifacts to check (e.g. policy@MD1)")
    chk.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    chk.add_argument("--out", help="write a fixed marker file here when everything is valid (the DVC output)")
    chk.add_argument("--fresh", action="store_true", help="delete resumable training states (<artifacts>/.resume)")
    args = parser.parse_args(argv)

    from nlhf.config import ConfigError, shadowed_edits
    from nlhf.params import load_config

    try:
        cfg = load_config(args.params)
        shadowed = shadowed_edits(args.params)
        if shadowed:
            raise ConfigError("\n".join(shadowed))
        print(f"check: {args.params} (profile {cfg.profile}) is valid")
        for stage in args.stages:
            what = _stage_inputs(cfg, stage)
            print(f"check: inputs of {stage} are present and complete" + (f" ({', '.join(what)})" if what else ""))
    except (ConfigError, FileNotFoundError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1
    if args.fresh:
        _fresh(cfg)
    if args.out:
        from nlhf.training.checkpoint import atomic_write_text

        atomic_write_text(args.out, CHECK_OK)
    return 0


if __name__ == "__main__":
    sys.exit(main())
