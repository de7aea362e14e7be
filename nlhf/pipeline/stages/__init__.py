"""The pipeline's stages, one function each: tabular; data → sft → {pm, rm} → oracle → policy × method (+ the
exact-judge ablation and a second seed) → eval. dvc.yaml holds the DAG; each notebook calls its stage's function.

A stage reads its params section and its inputs from ``cfg.artifacts`` (checked: :mod:`nlhf.pipeline.artifacts`),
writes its models and datasets there (DVC outputs) and its metrics, tables and figures under ``cfg.results``; every
path is :class:`nlhf.pipeline.layout.Layout`'s (``cfg.layout``). The pieces they are made of live in their own
modules: paths and checks (:mod:`nlhf.pipeline.artifacts`), the runtime and model loading
(:mod:`nlhf.pipeline.runtime`), the SFT comparisons (:mod:`nlhf.pipeline.comparisons`), the evaluation's derived
tables (:mod:`nlhf.pipeline.reports`) and the random streams (:mod:`nlhf.seeds`).
"""

from nlhf.pipeline.stages.evaluation import run_eval
from nlhf.pipeline.stages.oracle import run_oracle
from nlhf.pipeline.stages.policy import run_policy
from nlhf.pipeline.stages.supervised import run_data, run_preference, run_sft
from nlhf.pipeline.stages.tabular import run_tabular

__all__ = ["run_tabular", "run_data", "run_sft", "run_preference", "run_oracle", "run_policy", "run_eval"]
