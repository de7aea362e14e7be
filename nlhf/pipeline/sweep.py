"""Sweeps: the whole chain rerun over the values of one param and over whole-chain seeds, outside the default DAG.

A sweep file (``sweeps/<name>.yaml``) names one dotted key of params.yaml (e.g. ``task.synthetic.rater_weights``),
its values (the *points*), the seeds, and the methods trained at every point. A *run* is one (point, seed): the
default recipe of params.yaml with the point's value, the seed written into every seed key (``seed_keys``: the
data, SFT, comparisons, PM, RM, policy, oracle and evaluation seeds, so a seed re-draws the whole chain, not only the
policy) and the sweep's ``overrides``. Its artifacts live in ``artifacts/sweeps/<name>/<point>/seed<k>/`` and its
results in ``results/sweeps/<name>/<point>/seed<k>/``, laid out as the default run's
(:class:`nlhf.pipeline.layout.Layout`).

A run has two phases, so that a prediction is on disk (and committed) before the result it predicts exists:

* ``predict``: data → SFT → oracle (without the reward model): each method's target on the evaluation prompts'
  candidate pools, and the targets' pairwise table under the exact judge P* (:mod:`nlhf.oracle`).
* ``train``: the exact-judge policies (every point), the PM, RM and the paper-setting policies (``paper_points``),
  then :func:`evaluate_run`: one sample per evaluation prompt of SFT and of every trained policy, judged pairwise
  by P*.

The SFT policy depends only on the SFT rows, the tokenizer and the SFT recipe (:func:`sft_key`); a run whose key
equals a finished run's, in any sweep, copies that SFT model (the comparisons of SFT samples are still labelled by
its own raters). Every step is skipped when its marker (``<artifacts>/.sweep/<step>.json``) records the same
config; training states resume as in the pipeline, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nlhf.config import ConfigError, check, from_dict, load_yaml, read_params
from nlhf.pipeline.layout import Layout
from nlhf.pipeline.params import PipelineConfig, check_required

DEFAULT_CELLS = ("MD1 vs RLHF", "SP vs RLHF", "BR vs RLHF", "MD1 vs SP", "MD1 vs BR", "RLHF vs SFT", "SP vs SFT",
                 "MD1 vs SFT", "BR vs SFT")
SEED_KEYS = ("seed", "task.synthetic.seed", "sft.seed", "preference_data.seed", "pm.seed", "rm.seed", "pg.seed",
             "oracle.seed", "eval.seed")
"""The keys a whole-chain seed sets: data, SFT, SFT comparisons, PM, RM, policy, oracle and evaluation draws."""


@dataclass
class SweepSpec:
    """One sweep (``sweeps/<name>.yaml``); every field is a key of that file."""

    name: str  # names the sweep's folders under artifacts/sweeps/ and results/sweeps/
    key: str  # the dotted params.yaml key the sweep moves
    points: dict[str, Any]  # point label → the key's value there
    seeds: list[int]  # whole-chain seeds (each sets every key of seed_keys)
    exact_methods: list[str]  # trained against the exact judges at every point (methods of params.yaml)
    paper_methods: list[str] = field(default_factory=list)  # trained against the PM / RM at paper_points
    methods: list[str] | None = None  # the runs' methods, whose targets the oracle solves (None: those trained); a
    # method whose target equals another's everywhere (the predictions show it) need not be trained
    paper_points: list[str] = field(default_factory=list)  # points where the paper setting is trained too
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key → value, for every run
    seed_keys: list[str] = field(default_factory=lambda: list(SEED_KEYS))
    description: str = ""  # what the sweep asks, for the report
    cells: list[str] | None = None  # "A vs B": P*(A ≻ B), the first the headline; a name is a trained method (its
    # last iterate), <METHOD>* (Nash-EMA's averaged policy) or SFT. None: those of DEFAULT_CELLS the sweep trains

    def __post_init__(self):
        check(self.name.replace("_", "").isalnum(), "name", f"letters, digits and _ only, got {self.name!r}")
        check(len(self.points) >= 1, "points", "needs at least one point")
        for p in self.points:
            check(str(p).replace("_", "").replace(".", "").isalnum(), "points",
                  f"point labels are letters, digits, . and _ (a folder name), got {p!r}")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds",
              f"needs distinct seeds, got {self.seeds}")
        check(len(self.exact_methods) >= 1, "exact_methods", "needs at least one method")
        unknown = [p for p in self.paper_points if p not in self.points]
        check(not unknown, "paper_points", f"{unknown} are not points of the sweep ({list(self.points)})")
        check(not self.paper_points or self.paper_methods, "paper_methods", "needed when paper_points is set")
        trained = list(dict.fromkeys(self.exact_methods + self.paper_methods))
        if self.methods is None:
            self.methods = trained
        check(set(trained) <= set(self.methods), "methods",
              f"must hold every trained method; missing {sorted(set(trained) - set(self.methods))}")
        known = {"SFT", *self.exact_methods, *self.paper_methods,
                 *(f"{m}*" for m in self.exact_methods + self.paper_methods)}
        if self.cells is None:
            self.cells = [c for c in DEFAULT_CELLS if set(c.split(" vs ")) <= known]
        check(len(self.cells) >= 1, "cells", "needs at least one cell")
        for c in self.cells:
            a, sep, b = c.partition(" vs ")
            check(bool(sep) and a in known and b in known, "cells",
                  f"{c!r} is not 'A vs B' with A and B among {sorted(known)}")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    raw = load_yaml(path.read_text())
    try:
        return from_dict(SweepSpec, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _set(raw: dict, dotted: str, value: Any, source: str) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"{source}: {'.'.join(parents[: i + 1])} is not a section of params.yaml")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"{source}: {dotted} is not a key of params.yaml")
    node[leaf] = copy.deepcopy(value)


@dataclass(frozen=True)
class Run:
    """One (point, seed) of a sweep."""

    sweep: str
    point: str
    seed: int

    @property
    def tag(self) -> str:
        return f"{self.point}/seed{self.seed}"

    @property
    def layout(self) -> Layout:
        """Its artifacts and results (:meth:`nlhf.pipeline.layout.Layout.sweep_run`, below the default folders)."""
        return Layout().sweep_run(self.sweep, self.point, self.seed)

    def artifacts(self) -> str:
        return str(self.layout.artifacts_root)

    def results(self) -> str:
        return str(self.layout.results_root)


def runs(spec: SweepSpec, points=None, seeds=None) -> list[Run]:
    """The sweep's runs (optionally only some points and seeds), point by point."""
    for p in points or ():
        if p not in spec.points:
            raise ConfigError(f"--points: {p!r} is not a point of sweep {spec.name} ({list(spec.points)})")
    return [Run(spec.name, p, s) for p in spec.points if not points or p in points
            for s in spec.seeds if seeds is None or s in seeds]


def run_config(spec: SweepSpec, run: Run, params: str | Path = "params.yaml") -> PipelineConfig:
    """The run's validated config: params.yaml (+ profile), the point's value, the seed, the overrides; the methods
    reduced to the sweep's ``methods``."""
    raw = read_params(params)
    _set(raw, spec.key, spec.points[run.point], f"sweep {spec.name}: key")
    for k in spec.seed_keys:
        _set(raw, k, run.seed, f"sweep {spec.name}: seed_keys")
    for k, v in spec.overrides.items():
        _set(raw, k, v, f"sweep {spec.name}: overrides")
    missing = [m for m in spec.methods if m not in raw["methods"]]
    if missing:
        raise ConfigError(f"sweep {spec.name}: methods {missing} are not in params.yaml methods")
    raw["methods"] = {m: raw["methods"][m] for m in spec.methods}
    raw["ablation"]["methods"] = list(spec.methods)  # the sweep's train phase picks the ones it trains
    raw["ablation"]["seed_methods"] = {}
    raw["oracle"]["populations"] = None  # the run's own population only
    try:
        check_required(raw)
        cfg = from_dict(PipelineConfig, raw, "")
    except ConfigError as e:
        raise ConfigError(f"sweep {spec.name}, run {run.tag}: {e}") from None
    cfg.paths.artifacts, cfg.paths.results = run.artifacts(), run.results()
    return cfg


def _config_hash(cfg: PipelineConfig) -> str:
    d = asdict(cfg)
    d.pop("paths")
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Steps:
    """Markers of a run's finished steps (``<artifacts>/.sweep/<step>.json``): a step is done when its marker holds
    the hash of the run's config and of the content of the step's inputs (the models it reads), so a retrained
    upstream model, or another set of policies to evaluate, reruns it. A change of code does not: delete the run's
    ``.sweep`` folder then. Models are git-ignored artifacts, so a fresh clone redoes every step."""

    def __init__(self, cfg: PipelineConfig):
        self.dir = cfg.layout.sweep_steps
        self.config = _config_hash(cfg)

    def key(self, inputs=()) -> str:
        from nlhf.training.checkpoint import content_hash

        text = self.config + "".join(f"|{p}:{content_hash(p)}" for p in inputs)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def done(self, step: str, inputs=()) -> bool:
        f = self.dir / f"{step}.json"
        return f.is_file() and json.loads(f.read_text()).get("key") == self.key(inputs)

    def mark(self, step: str, seconds: float, inputs=(), record: dict | None = None) -> None:
        from nlhf.training.checkpoint import write_json

        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / f"{step}.json", {"key": self.key(inputs), "config": self.config,
                                               "seconds": round(seconds, 1), **(record or {})})


def _step(steps: Steps, name: str, fn, log, inputs=(), record=None) -> None:
    """Run ``fn`` unless ``name`` is done for these ``inputs``; ``record(out)`` adds fields to its marker."""
    if steps.done(name, inputs):
        log(f"{name}: done")
        return
    t = time.time()
    log(f"{name}: running")
    out = fn()
    steps.mark(name, time.time() - t, inputs, record(out) if record else None)
    log(f"{name}: finished in {time.time() - t:.0f} s")


def sft_key(cfg: PipelineConfig) -> str:
    """What the SFT model depends on: the content of the SFT rows and the tokenizer, the SFT recipe, the policy
    network and the runtime (thread count included: it changes the floating-point sums). Runs with the same key
    train the same SFT weights."""
    from nlhf.training.checkpoint import content_hash

    recipe = json.dumps([asdict(cfg.sft), asdict(cfg.policy_model), asdict(cfg.runtime)], sort_keys=True)
    return hashlib.sha256((content_hash(cfg.layout.data("sft"), cfg.layout.tokenizer) + recipe).encode()
                          ).hexdigest()[:16]


def pool_key(cfg: PipelineConfig) -> str:
    """What the oracle's candidate pools depend on: the SFT model (:func:`sft_key`), the task's documents and
    grammar (its params less the raters and the labels), the oracle's sizes and seed and the sampling. Runs with the
    same key have the same pools; only the exact judge on them differs. (On a CPU the same SFT key trains the same
    SFT weights bit for bit; on a GPU, where training need not be deterministic, share nothing.)"""
    task = {k: v for k, v in asdict(cfg.task.synthetic).items()
            if k not in ("population", "rater_weights", "rater_sharpness", "labels_per_pair")}
    text = json.dumps([sft_key(cfg), task, asdict(cfg.oracle), asdict(cfg.sampling), cfg.task.name], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sft_donor(cfg: PipelineConfig) -> Path | None:
    """The SFT model folder of a finished run of any sweep with the same :func:`sft_key`, if there is one (on a CPU
    only: elsewhere training need not be deterministic)."""
    if not cfg.runtime.cpu:
        return None
    key = sft_key(cfg)
    for marker in sorted(Layout().sweep_runs().glob(f"*/*/*/{Layout().sweep_steps.name}/sft.json")):
        model = Layout(marker.parents[1]).model("sft")
        if json.loads(marker.read_text()).get("sft_key") == key and model.is_dir() and model != cfg.layout.model("sft"):
            return model
    return None


def _sft_or_share(cfg: PipelineConfig, log) -> dict:
    """Stage ``sft``, or, when a finished run has the same :func:`sft_key`, a copy of its SFT model and only the
    rater-labelled comparisons of SFT samples that PM and RM read (they depend on the run's raters)."""
    from nlhf.pipeline import stages
    from nlhf.pipeline.comparisons import write_sft_comparisons
    from nlhf.pipeline.runtime import load_sft
    from nlhf.tasks import make_task

    donor = _sft_donor(cfg)
    if donor is None:
        stages.run_sft(cfg)
    else:
        log(f"sft: the SFT model of {donor.parents[1]} (same SFT data and recipe)")
        dst = cfg.layout.model("sft")
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(donor, dst)
        from nlhf.pipeline.runtime import accelerator_for

        policy, tok = load_sft(cfg, accelerator_for(cfg).device)  # where the sft stage samples them
        write_sft_comparisons(cfg, make_task(cfg.task), policy, tok)
    return {"sft_key": sft_key(cfg), "shared_from": None if donor is None else str(donor)}


def predict(spec: SweepSpec, run: Run, params: str | Path = "params.yaml", log=print) -> None:
    """Phase ``predict`` of one run: data, SFT (copied from a run with the same SFT inputs), the oracle without RM."""
    from nlhf.pipeline import stages

    cfg = run_config(spec, run, params)
    steps = Steps(cfg)
    say = lambda msg: log(f"[{spec.name} {run.tag}] {msg}")  # noqa: E731
    layout = cfg.layout
    _step(steps, "data", lambda: stages.run_data(cfg), say)
    _step(steps, "sft", lambda: _sft_or_share(cfg, say), say, [layout.data()], record=lambda out: out)
    cache = Layout().sweep_pool_cache(pool_key(cfg)) if cfg.runtime.cpu else None  # see pool_key
    _step(steps, "oracle", lambda: stages.run_oracle(cfg, with_rm=False, pool_cache=cache), say, [layout.model("sft")])


SETTINGS = ("exact", "paper")  # the exact-judge policies; PM, RM and the policies trained against them


def train(spec: SweepSpec, run: Run, params: str | Path = "params.yaml", log=print, settings=SETTINGS) -> None:
    """Phase ``train`` of one run: exact-judge policies; at paper points PM, RM and paper-setting policies; then
    :func:`evaluate_run` of what was trained. ``settings`` names the settings to train now (a later call with the
    other one trains it and evaluates again, with the exact-judge samples unchanged: each policy's sampling seed is
    its place in the table, and the exact ones come first). The run's predictions must exist (phase ``predict``)."""
    from nlhf.pipeline import stages

    cfg = run_config(spec, run, params)
    steps = Steps(cfg)
    say = lambda msg: log(f"[{spec.name} {run.tag}] {msg}")  # noqa: E731
    layout = cfg.layout
    predicted(spec, run, params)
    upstream = [layout.model("sft"), layout.oracle()]
    untrained = [m for m in spec.exact_methods if not steps.done(f"policy_exact@{m}", upstream)]
    if "exact" not in settings and untrained:  # the evaluation table holds the exact-judge policies first
        raise RuntimeError(f"sweep {spec.name}, run {run.tag}: exact-judge policies {untrained} are not trained; "
                           "train with --settings exact first")
    if "exact" in settings:
        for m in spec.exact_methods:
            _step(steps, f"policy_exact@{m}", lambda m=m: stages.run_policy(cfg, m, "exact"), say, upstream)
    paper = spec.paper_methods if run.point in spec.paper_points and "paper" in settings else []
    if paper:
        for kind in ("pm", "rm"):
            _step(steps, kind, lambda kind=kind: stages.run_preference(cfg, kind), say,
                  [layout.data(), layout.sft_pairs()])
        for m in paper:
            judge = cfg.method(m).judge_model
            _step(steps, f"policy@{m}", lambda m=m: stages.run_policy(cfg, m, "paper"), say,
                  [*upstream, layout.model(judge)])
    evaluated = [layout.model("sft"), *(layout.policy(m, "exact") for m in spec.exact_methods),
                 *(layout.policy(m, "paper") for m in paper)]
    _step(steps, "evaluate", lambda: evaluate_run(cfg, spec.exact_methods, paper), say, evaluated)


def predicted(spec: SweepSpec, run: Run, params: str | Path = "params.yaml") -> None:
    """The run's predictions exist for its SFT model and are committed; RuntimeError otherwise."""
    cfg = run_config(spec, run, params)
    if not Steps(cfg).done("oracle", [cfg.layout.model("sft")]):
        raise RuntimeError(f"sweep {spec.name}, run {run.tag}: no prediction yet; run the predict phase (and commit "
                           f"its results) before training")
    require_committed(cfg.layout.results("oracle"), f"sweep {spec.name}, run {run.tag}")


def require_committed(folder: Path, what: str) -> None:
    """The predictions in ``folder`` must be committed to git, unchanged, before the training they predict: git
    history is the record that they came first."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True)

    tracked = git("ls-files", "--", str(folder))
    if tracked.returncode != 0:
        raise RuntimeError(f"{what}: the predictions must be committed to git before training, but this is not a "
                           f"git repository ({tracked.stderr.strip()}); `git init` and commit {folder}")
    changed = git("status", "--porcelain", "--", str(folder)).stdout.strip()
    if not tracked.stdout.strip() or changed:
        raise RuntimeError(f"{what}: commit the predictions in {folder} before training them (git history is the "
                           f"record that they came first); `git status {folder}` lists what is not committed")


def evaluate_run(cfg: PipelineConfig, exact_methods, paper_methods) -> pd.DataFrame:
    """One sample per evaluation prompt of SFT and of each trained policy, the pairwise table P*(column ≻ row) with
    its CI (:func:`nlhf.evaluate.pairwise_table`), and the form of every sample (``<results>/sweep/table_long.csv``,
    ``samples.csv``). Exact-judge policies are named ``<METHOD>`` (``<METHOD>*``: Nash-EMA's averaged policy), the
    paper setting's ``<METHOD> (PM/RM)``.

    The ``eval.n_prompts`` evaluation prompts come after the oracle's ``oracle.n_prompts`` (the convergence probe's,
    on which the policy-gradient recipe was chosen), so what is reported was never used to choose anything."""
    import torch

    from nlhf.evaluate import pairwise_table
    from nlhf.models.policy import load_policy
    from nlhf.pipeline.runtime import accelerator_for, load_sft, sampling_kwargs
    from nlhf.sampling.texts import sample_texts
    from nlhf.seeds import seed_for
    from nlhf.tasks import make_task

    layout = cfg.layout
    accelerator = accelerator_for(cfg)
    task = make_task(cfg.task)
    prompts = task.prompts("eval")[cfg.oracle.n_prompts: cfg.oracle.n_prompts + cfg.eval.n_prompts]
    if len(prompts) < cfg.eval.n_prompts:
        raise ConfigError(f"task.synthetic.n_prompts_eval: the sweep evaluates eval.n_prompts = {cfg.eval.n_prompts} "
                          f"prompts after the oracle's {cfg.oracle.n_prompts}; only {len(prompts)} are left")
    sft, tok = load_sft(cfg, accelerator.device)
    policies = {"SFT": sft}
    for variant, names in (("exact", exact_methods), ("paper", paper_methods)):
        for m in names:
            suffix = "" if variant == "exact" else " (PM/RM)"
            for which, name in (("policy", m), ("average", f"{m}*")):  # Nash-EMA's averaged policy too
                if which == "policy" or (layout.policy(m, variant) / which).is_dir():
                    model, _ = load_policy(layout.policy(m, variant) / which)
                    policies[name + suffix] = model.to(accelerator.device).eval()
    samples = {}
    with torch.no_grad():
        for k, (name, model) in enumerate(policies.items()):
            samples[name] = sample_texts(model, tok, prompts, seed=seed_for(cfg.eval.seed, "sweep.samples", k),
                                         **sampling_kwargs(cfg))
    long = pairwise_table(task.judge, prompts, samples, cfg.eval.confidence)
    out = layout.results("sweep")
    out.mkdir(parents=True, exist_ok=True)
    long.to_csv(out / "table_long.csv", index=False)
    forms = {n: task.forms(prompts, ys) for n, ys in samples.items()}
    pd.DataFrame({"prompt": prompts, **{n: samples[n] for n in samples},
                  **{f"form: {n}": forms[n] for n in samples}}).to_csv(out / "samples.csv", index=False)
    return long


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m nlhf.pipeline.sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("phase", choices=["predict", "train", "report"])
    ap.add_argument("sweep", help="sweep file, e.g. sweeps/embellisher_share.yaml")
    ap.add_argument("--points", nargs="+", help="only these points (default: all)")
    ap.add_argument("--seeds", nargs="+", type=int, help="only these seeds (default: all)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process (predict: one "
                                                        "process per seed, so that a seed's points share its SFT)")
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                    help="train: only these settings (default: both; the paper setting only at paper_points)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # "k/N": the k-th of N processes started by --jobs N
    args = ap.parse_args(argv)
    try:
        spec = load_sweep(args.sweep)
        todo = runs(spec, args.points, args.seeds)
        for r in todo:
            run_config(spec, r, args.params)  # every run's config is valid before anything starts
        if args.phase == "train":  # every run's predictions are committed before any training starts
            for r in todo:
                predicted(spec, r, args.params)
    except (ConfigError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from nlhf.pipeline.notebook import quiet_libraries

    quiet_libraries()
    if args.phase == "report":
        from nlhf.pipeline.sweep_report import write_report

        write_report(spec, args.params)
        return 0
    if args.jobs > 1 and args.worker is None:
        return _parallel(argv if argv is not None else sys.argv[1:], args.jobs)
    if args.worker is not None:
        k, n = map(int, args.worker.split("/"))
        if args.phase == "predict":  # a seed's runs stay in one process
            todo = [r for r in todo if spec.seeds.index(r.seed) % n == k]
        else:
            todo = todo[k::n]
    for r in todo:
        if args.phase == "predict":
            predict(spec, r, args.params)
        else:
            train(spec, r, args.params, settings=tuple(args.settings))
    return 0


def _parallel(argv: list[str], jobs: int) -> int:
    """Start ``jobs`` worker processes of the same command (each takes its share of the runs); their output goes
    to this terminal line by line. Non-zero if any worker failed."""
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-m", "nlhf.pipeline.sweep", *argv, "--worker", f"{k}/{jobs}"])
             for k in range(jobs)]
    codes = [p.wait() for p in procs]
    for k, c in enumerate(codes):
        if c:
            print(f"error: sweep worker {k}/{jobs} failed (exit {c})", file=sys.stderr)
    return 1 if any(codes) else 0  # a worker killed by a signal has a negative code


if __name__ == "__main__":
    sys.exit(main())
