"""Stage ``tabular``: the tabular half (the paper's §3–6) on exact games (:mod:`nlhf.tabular.experiment`)."""

from __future__ import annotations



from nlhf.pipeline.artifacts import write_metrics
from nlhf.pipeline.params import PipelineConfig


def run_tabular(cfg: PipelineConfig) -> dict:
    """Stage ``tabular``: Nash-MD and the comparison algorithms on exact games (:mod:`nlhf.tabular.experiment`)."""
    from nlhf.tabular.experiment import run_tabular as run

    metrics = run(cfg.tabular, cfg.layout.results("tabular"))
    write_metrics(cfg, "tabular", metrics)
    return metrics
