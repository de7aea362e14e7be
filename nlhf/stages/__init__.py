"""The pipeline's stages, one function each: tabular; data → sft → {pm, rm} → oracle → policy × method (+ the
exact-judge ablation and a second seed) → eval. dvc.yaml holds the DAG; each notebook calls its stage's function.

A stage reads its params section and its inputs from ``cfg.artifacts`` (checked: :mod:`nlhf.artifacts`), writes its
models and datasets there (DVC outputs) and its metrics, tables and figures under ``cfg.results``; every path is
:class:`nlhf.layout.Layout`'s (``cfg.layout``). The pieces they are
made of live in their own modules: paths and checks (:mod:`nlhf.artifacts`), the runtime and model loading
(:mod:`nlhf.runtime`), the SFT comparisons (:mod:`nlhf.comparisons`), the evaluation's derived tables
(:mod:`nlhf.reports`) and the random streams (:mod:`nlhf.seeds`).
"""

from nlhf.stages.evaluation import run_eval
from nlhf.stages.oracle import run_oracle
from nlhf.stages.policy import run_policy
from nlhf.stages.supervised import run_data, run_preference, run_sft
from nlhf.stages.tabular import run_tabular

__all__ = ["run_tabular", "run_data", "run_sft", "run_preference", "run_oracle", "run_policy", "run_eval"]
