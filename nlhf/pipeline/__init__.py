"""The replication's pipeline: the DVC stages, their files and their reports, built on the library.

The rule: the pipeline imports the library; the library (every other module of ``nlhf``) never imports the pipeline
(tests/test_import_direction.py checks it).

* :mod:`nlhf.pipeline.params`: params.yaml (+ its profile) as one validated :class:`PipelineConfig`;
* :mod:`nlhf.pipeline.layout`: :class:`Layout`, the name of every artifact and result path;
* :mod:`nlhf.pipeline.artifacts`: reading a stage's upstream artifacts (checked), writing its metrics;
* :mod:`nlhf.pipeline.runtime`: the accelerator, sampling settings and model loading of the stages;
* :mod:`nlhf.pipeline.comparisons`: the rater-labelled and held-out comparisons of SFT samples;
* :mod:`nlhf.pipeline.reports`: the evaluation's derived tables;
* :mod:`nlhf.pipeline.summary`: each stage's headline numbers (the DVC metrics);
* :mod:`nlhf.pipeline.notebook`: what the notebooks share, and running a notebook under DVC;
* :mod:`nlhf.pipeline.plots`: the notebooks' figures;
* :mod:`nlhf.pipeline.stages`: one function per DVC stage;
* :mod:`nlhf.pipeline.cli`: ``python -m nlhf check | run | notebook``;
* :mod:`nlhf.pipeline.sweep`: sweeps outside the DAG (``python -m nlhf.pipeline.sweep predict | train | report``);
* :mod:`nlhf.pipeline.sweep_report`: a sweep's report.
"""
