"""What every notebook does first, and how it either runs its stage or re-plots the committed results.

A notebook runs two ways: through papermill from the repository root (``dvc repro``, with ``recompute = True``),
or opened in Jupyter, whose kernel starts in ``notebooks/`` (``recompute = False``: re-plot ``results/`` without
training). :func:`setup` makes both behave the same: it moves to the repository root, so ``params.yaml`` and the
``paths`` in it resolve as in the pipeline, and it keeps the executed notebook clean (no library progress bars, no
warning about missing widgets). :func:`stage_metrics` runs the stage or reads the metrics it wrote.

How DVC runs a notebook (:func:`execute`, ``python -m nlhf notebook``): papermill writes the executed copy under a
temporary name and it replaces the previous one only when the whole notebook ran, and the run stops when the
process that started it dies (:func:`exit_with_parent`), so neither an interrupted nor a failed stage leaves a
truncated notebook or a kernel that keeps writing results after DVC has gone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable

MARKERS = ("dvc.yaml", "params.yaml")


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding dvc.yaml and params.yaml."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / m).is_file() for m in MARKERS):
            return folder
    raise FileNotFoundError(f"no repository root (a folder with {' and '.join(MARKERS)}) at or above {here}; "
                            f"start the notebook inside the nlhf repository")


def quiet_libraries() -> None:
    """No progress bars from datasets/transformers/tqdm.auto in the executed notebook (our training loops log a
    line every 10% instead), and no 'IProgress not found' warning where ipywidgets is missing."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from tqdm import TqdmExperimentalWarning

    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def exit_with_parent(on_exit: Callable[[], None] | None = None, interval: float = 0.5) -> threading.Thread:
    """Watch the process that started this one from a daemon thread; when it dies (this process is re-parented),
    call ``on_exit`` and end this process at once (``os._exit``: no further output is written).

    A kernel started by papermill, or papermill started by DVC, would otherwise run on as an orphan after ``kill
    -9`` of its parent and write outputs nobody records. ipykernel has a similar watch, but only when
    ``$JPY_PARENT_PID`` names its parent; this one needs nothing from the environment."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        try:
            if on_exit is not None:
                on_exit()
        finally:
            os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def execute(argv: list[str]) -> int:
    """``papermill`` with ``argv`` (its command line: ``IN OUT`` and options), writing the executed notebook to a
    temporary file beside ``OUT`` that replaces ``OUT`` only when every cell ran (:func:`nlhf.training.checkpoint.
    publish`): a failed cell, a full disk or a kill leaves the previous ``OUT`` as it was. The process ends when
    its parent (DVC) dies, after removing the temporary file (:func:`exit_with_parent`); the kernel, whose parent
    is this process, then stops too."""
    # papermill imports jsonschema (through nbformat), which imports rfc3987_syntax when it is installed (JupyterLab's
    # dependencies install it) for the "iri" and "iri-reference" string formats, which no notebook schema uses;
    # building its grammar takes about 1.7 s, paid by every stage DVC runs. Marked absent, jsonschema skips only the
    # checkers of those two formats.
    sys.modules.setdefault("rfc3987_syntax", None)
    from papermill.cli import papermill as command

    from nlhf.training.checkpoint import publish

    import click

    try:
        ctx = command.make_context("papermill", list(argv))
    except click.exceptions.Exit as e:  # --help (or --version): papermill has printed it
        return e.exit_code
    except click.ClickException as e:  # a bad option or argument: papermill's usage message, no traceback
        e.show()
        return e.exit_code
    with ctx:
        out = ctx.params.get("output_path") or "-"
        if out == "-":  # to stdout: nothing to rename
            command.invoke(ctx)
            return 0
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.stem}.tmp-{uuid.uuid4().hex[:8]}{out.suffix}"
        ctx.params["output_path"] = str(tmp)
        exit_with_parent(on_exit=lambda: tmp.unlink(missing_ok=True))
        try:
            command.invoke(ctx)
            _record_output_path(tmp, str(out))
            publish(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return 0


def _record_output_path(path: Path, output_path: str) -> None:
    """Papermill records the path it wrote in the notebook's metadata: make it the final one, not the temporary."""
    import nbformat

    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    if nb.metadata.get("papermill", {}).get("output_path") not in (None, output_path):
        nb.metadata.papermill.output_path = output_path
        nbformat.write(nb, path)


def setup(params_file: str = "params.yaml", profile: str | None = None):
    """Move to the repository root, quiet the libraries, set the plot theme; return the validated config. The
    kernel ends when the process that started it (papermill, Jupyter) dies (:func:`exit_with_parent`)."""
    exit_with_parent()
    os.chdir(repo_root())
    quiet_libraries()
    import seaborn as sns

    from nlhf.pipeline.params import load_config

    sns.set_theme(style="whitegrid")
    cfg = load_config(params_file, profile)
    print(f"profile: {cfg.profile}")
    return cfg


def stage_metrics(cfg, stage: str, run: Callable, recompute: bool) -> dict:
    """``run(cfg)`` (the stage: trains, evaluates, writes results/) when ``recompute``, with a config that shows the
    stage only the params it declares (:func:`nlhf.pipeline.params.restrict`); otherwise the metrics the stage wrote
    last time (:meth:`nlhf.pipeline.layout.Layout.metrics`), so the notebook re-plots without training. A stage
    that fails leaves its previous result files as they were (:meth:`nlhf.pipeline.layout.Layout.result_files`,
    :func:`nlhf.training.checkpoint.restored_on_failure`)."""
    if recompute:
        from nlhf.pipeline.params import restrict
        from nlhf.training.checkpoint import restored_on_failure

        layout = cfg.layout
        dvc_stage = layout.dvc_stage(stage)
        with restored_on_failure(layout.result_files(dvc_stage)):
            return run(restrict(cfg, dvc_stage))
    path = cfg.layout.metrics(stage)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the stage has not run here. Run it with `dvc repro`, or set "
                                f"recompute = True in this notebook's parameters cell")
    print(f"re-plotting the committed results of stage '{stage}' ({path}); set recompute = True to rerun it")
    return json.loads(path.read_text())
