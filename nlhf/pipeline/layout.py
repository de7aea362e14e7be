"""Every path of the pipeline: :class:`Layout`, built from params ``paths`` (``cfg.layout``)."""

from __future__ import annotations

import os
from pathlib import Path


class Layout:
    """Every path the pipeline reads or writes, below ``paths.artifacts`` (A: models and datasets, DVC-cached,
    git-ignored) and ``paths.results`` (R: metrics, tables, figures, executed notebooks, committed). ``<key>`` is a
    stage's file name (:meth:`key`: ``pm``, ``policy_exact_MD1``), ``<v>`` a policy variant's suffix
    (:data:`POLICY_VARIANTS`: none, ``_exact``, ``_seed``)::

        A/check.ok                                 check: params validated
        A/data/{sft,prefs,prompts}/<split>/        data: datasets (DATASETS)
        A/data/tokenizer/                          data: word-level tokenizer
        A/data/metrics.json                        data: the row counts readers check
        A/models/{sft,pm,rm}/                      sft, preference@pm, preference@rm
        A/sft_pairs/{train,heldout}/, info.json    sft: comparisons of SFT samples and their counts
        A/oracle/pools.json, targets/<method>.json, judge/  oracle (judge/: the evaluation's judge)
        A/policies<v>/<method>/                    policy<v>@<method>
        A/.resume/<name>.pt                        resumable training states (not a DVC output)
        R/<folder>/                                tables and figures: tabular, sft, pm, rm, oracle/<population>,
                                                   policy<v>/<method>, eval
        R/convergence<v>/<method>.csv              policy<v>@<method>: convergence probe
        R/metrics/<key>.json                       every number a stage measured
        R/summary/<key>.json                       its headline numbers (the DVC metrics, nlhf.pipeline.summary)
        R/timings/<key>.json                       its run time (not a DVC output)
        R/notebooks/<notebook>.ipynb               executed notebooks
        A/sweeps/<sweep>/<point>/seed<k>/, R/...   a sweep's run (nlhf.pipeline.sweep): this same tree, below its folder
        A/.sweep/<step>.json                       in a sweep run: its finished steps
        R/sweep/                                   in a sweep run: its pairwise table and samples
        R/sweeps/<sweep>/                          a sweep's report

    Stage metrics live apart from the stage's results folder (DVC outs may not overlap); resumable states live
    outside the DVC outs (DVC deletes outs before rerunning a stage). :meth:`outs` and :meth:`deps` are the paths
    dvc.yaml declares for a stage.
    """

    # Three sets of trained policies: the paper's setting (trained PM / RM), the exact-judge ablation, and a second
    # training seed of the paper's setting. A variant's outputs carry its suffix.
    POLICY_VARIANTS = {"paper": "", "exact": "_exact", "seed": "_seed"}
    DVC_STAGES = {"pm": "preference@pm", "rm": "preference@rm"}  # short names -> the DVC stage names in dvc.yaml
    DATASETS = (("sft", "train"), ("sft", "eval"), ("prefs", "train"), ("prefs", "test"), ("prompts", "train"),
                ("prompts", "eval"))  # the data stage's datasets, (kind, split)
    TOKENIZER = "tokenizer"  # in the data folder
    DATA_COUNTS = "metrics.json"  # in the data folder: the datasets' row counts
    NOTEBOOKS = {"tabular": "00_tabular_nash_md", "data": "01_data", "sft": "02_sft",
                 "preference": "03_preference_models", "policy": "04_policy", "eval": "05_evaluation",
                 "oracle": "06_oracle"}  # stage kind -> notebook name (notebooks/<name>.ipynb)

    def __init__(self, artifacts: str | os.PathLike = "artifacts", results: str | os.PathLike = "results"):
        self.artifacts_root = Path(artifacts)
        self.results_root = Path(results)

    # ---------------------------------------------------------------------------------------- sweeps
    def sweep_run(self, sweep: str, point: str, seed: int) -> "Layout":
        """The layout of one run (point, seed) of a sweep: the same tree below A/sweeps/… and R/sweeps/…."""
        part = Path("sweeps", sweep, point, f"seed{seed}")
        return Layout(self.artifacts_root / part, self.results_root / part)

    def sweep_runs(self) -> Path:
        """A/sweeps: every sweep run's artifacts."""
        return self.artifact("sweeps")

    def sweep_pool_cache(self, key: str) -> Path:
        """A/sweeps/.pools/<key>.json: the oracle's pools shared by sweep runs that differ only in their raters."""
        return self.sweep_runs() / ".pools" / f"{key}.json"

    def sweep_report(self, sweep: str) -> Path:
        """R/sweeps/<sweep>: a sweep's report."""
        return self.results_root / "sweeps" / sweep

    @property
    def sweep_steps(self) -> Path:
        """In a sweep run: the markers of its finished steps."""
        return self.artifact(".sweep")

    # ---------------------------------------------------------------------------------------- stage names
    @classmethod
    def policy_stage(cls, name: str, variant: str = "paper") -> str:
        """The DVC stage that trains policy ``name`` of ``variant``: ``policy_exact@MD1``."""
        return f"policy{cls.POLICY_VARIANTS[variant]}@{name}"

    @classmethod
    def policy_key(cls, name: str, variant: str = "paper") -> str:
        """The file name of that stage's metrics: ``policy_exact_MD1``."""
        return f"policy{cls.POLICY_VARIANTS[variant]}_{name}"

    @classmethod
    def dvc_stage(cls, stage: str) -> str:
        """The DVC stage name for a short one (``pm`` -> ``preference@pm``) or a policy stage's file name
        (:meth:`policy_key`: ``policy_exact_MD1`` -> ``policy_exact@MD1``); other names unchanged."""
        if stage in cls.DVC_STAGES:
            return cls.DVC_STAGES[stage]
        if "@" not in stage:
            for suffix in sorted(cls.POLICY_VARIANTS.values(), key=len, reverse=True):
                prefix = f"policy{suffix}_"
                if stage.startswith(prefix) and len(stage) > len(prefix):
                    return f"policy{suffix}@{stage[len(prefix):]}"
        return stage

    @staticmethod
    def key(stage: str) -> str:
        """A stage's file name: ``preference@pm`` -> ``pm``, ``policy_exact@MD1`` -> ``policy_exact_MD1``; a file
        name is returned unchanged."""
        kind, at, item = stage.partition("@")
        if not at:
            return stage
        return item if kind == "preference" else f"{kind}_{item}"

    # ---------------------------------------------------------------------------------------- artifacts
    def artifact(self, *parts: str) -> Path:
        return self.artifacts_root.joinpath(*parts)

    @property
    def check_ok(self) -> Path:
        return self.artifact("check.ok")

    def data(self, *parts: str) -> Path:
        """The data stage's folder, or a path in it (``data("sft", "train")``)."""
        return self.artifact("data", *parts)

    @property
    def tokenizer(self) -> Path:
        return self.data(self.TOKENIZER)

    @property
    def data_counts(self) -> Path:
        return self.data(self.DATA_COUNTS)

    def model(self, kind: str) -> Path:
        """A trained network: ``sft`` (the SFT policy), ``pm`` (preference model), ``rm`` (reward model)."""
        if kind not in ("sft", "pm", "rm"):
            raise ValueError(f"model: expected sft, pm or rm, got {kind!r}")
        return self.artifact("models", kind)

    def sft_pairs(self, *parts: str) -> Path:
        """The comparisons of SFT samples (``train``, ``heldout``, ``info.json``)."""
        return self.artifact("sft_pairs", *parts)

    def oracle(self, *parts: str) -> Path:
        """The oracle's folder, or a path in it (``oracle("pools.json")``)."""
        return self.artifact("oracle", *parts)

    @property
    def oracle_pools(self) -> Path:
        """The candidate pools every policy stage measures itself on."""
        return self.oracle("pools.json")

    @property
    def eval_judge(self) -> Path:
        """The judge of the evaluation and of the policies' convergence probe, written by the oracle stage: on a task
        without an exact judge the held-out judge (a preference model folder), otherwise ``judge.json`` naming P*."""
        return self.oracle("judge")

    def oracle_target(self, name: str) -> Path:
        """The oracle policy of method ``name`` (``RLHF (RM)`` -> targets/RLHF_RM.json)."""
        return self.oracle("targets", f"{name.replace(' (', '_').replace(')', '')}.json")

    def policies(self, variant: str = "paper") -> Path:
        """The folder of every policy of ``variant``."""
        return self.artifact(f"policies{self.POLICY_VARIANTS[variant]}")

    def policy(self, name: str, variant: str = "paper") -> Path:
        return self.policies(variant) / name

    @property
    def resume_dir(self) -> Path:
        return self.artifact(".resume")

    def resume(self, name: str) -> Path:
        """The resumable training state of ``name`` (``sft``, ``pm``, ``policy_exact_MD1``)."""
        return self.resume_dir / f"{name}.pt"

    # ---------------------------------------------------------------------------------------- results
    def results(self, stage_or_folder: str, *parts: str) -> Path:
        """A stage's tables and figures: ``results("sft")``, ``results("oracle", population)``; a DVC stage name
        gives its folder (``preference@pm`` -> R/pm, ``policy_exact@MD1`` -> R/policy_exact/MD1)."""
        kind, at, item = stage_or_folder.partition("@")
        folder = (item,) if kind == "preference" else (kind, item) if at else (kind,)
        return self.results_root.joinpath(*folder, *parts)

    def policy_results(self, name: str, variant: str = "paper") -> Path:
        return self.results(self.policy_stage(name, variant))

    def convergence(self, name: str, variant: str = "paper") -> Path:
        """The convergence probe of policy ``name`` of ``variant`` (a CSV)."""
        return self.results_root / f"convergence{self.POLICY_VARIANTS[variant]}" / f"{name}.csv"

    def metrics(self, stage: str) -> Path:
        return self.results_root / "metrics" / f"{self.key(stage)}.json"

    def summary(self, stage: str) -> Path:
        return self.results_root / "summary" / f"{self.key(stage)}.json"

    def timings(self, stage: str) -> Path:
        return self.results_root / "timings" / f"{self.key(stage)}.json"

    def notebook(self, stage: str) -> Path:
        """The executed notebook of DVC stage ``stage`` (``policy_exact@MD1`` -> 04_policy_exact_MD1.ipynb)."""
        kind, at, item = stage.partition("@")
        base = kind.split("_")[0] if kind.startswith("policy") else kind
        name = self.NOTEBOOKS[base] + kind[len(base):] + (f"_{item}" if at else "")
        return self.results_root / "notebooks" / f"{name}.ipynb"

    # ---------------------------------------------------------------------------------------- per DVC stage
    def outs(self, stage: str) -> list[Path]:
        """What DVC stage ``stage`` writes (its outs, metrics and plots in dvc.yaml), artifacts first."""
        kind, _, item = stage.partition("@")
        if kind == "check":
            return [self.check_ok]
        variants = {f"policy{suffix}": variant for variant, suffix in self.POLICY_VARIANTS.items()}
        plots = []
        if kind in variants:
            arts = [self.policy(item, variants[kind])]
            plots = [self.convergence(item, variants[kind])]
        elif kind == "preference":
            arts = [self.model(item)]
        elif kind in ("tabular", "data", "sft", "oracle", "eval"):
            arts = {"data": [self.data()], "sft": [self.model("sft"), self.sft_pairs()],
                    "oracle": [self.oracle()]}.get(kind, [])
        else:
            raise KeyError(f"unknown stage {stage!r}")
        folder = [] if kind == "data" else [self.results(stage)]  # the data stage has no tables or figures
        return [*arts, *folder, self.notebook(stage), self.metrics(stage), self.summary(stage), *plots]

    def result_files(self, stage: str) -> list[Path]:
        """What DVC stage ``stage`` writes below the results root except its executed notebook (which papermill
        writes and :func:`nlhf.pipeline.notebook.execute` replaces), plus its timings: the files that must change
        together or not at all."""
        notebook = self.notebook(stage)
        outs = [p for p in self.outs(stage) if p != notebook and self.results_root in p.parents]
        return [*outs, self.timings(stage)]

    def deps(self, stage: str, judged_by: str | None = None) -> list[Path]:
        """The artifacts and results DVC stage ``stage`` reads (its deps in dvc.yaml besides code and notebooks);
        a policy stage trained against a trained judge reads that model, ``judged_by`` (``pm`` or ``rm``: the
        method's ``judged_by``)."""
        kind, _, item = stage.partition("@")
        if kind == "check":
            return []
        pools = self.oracle_pools
        if kind in ("policy", "policy_seed"):  # trained judges
            if judged_by not in ("pm", "rm"):
                raise ValueError(f"{stage}: judged_by must be 'pm' or 'rm', got {judged_by!r}")
            deps = [self.data(), self.model("sft"), self.model(judged_by), pools, self.oracle_target(item),
                    self.eval_judge]
        elif kind == "policy_exact":  # the task's exact judges
            deps = [self.data(), self.model("sft"), pools, self.oracle_target(item)]
        elif kind in ("tabular", "data", "sft", "preference", "oracle", "eval"):
            deps = {"sft": [self.data()], "preference": [self.data(), self.sft_pairs()],
                    "oracle": [self.data(), self.model("sft"), self.model("rm")],
                    "eval": [self.data(), self.model("sft"), self.model("pm"),
                             *(self.policies(v) for v in self.POLICY_VARIANTS), self.metrics("pm"),
                             self.metrics("rm"), self.results("oracle"), pools, self.eval_judge]}.get(kind, [])
        else:
            raise KeyError(f"unknown stage {stage!r}")
        return [self.check_ok, *deps]
