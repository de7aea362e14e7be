"""What every notebook does first, and how it either runs its stage or re-plots the committed results.

A notebook runs two ways: through papermill from the repository root (``dvc repro``, with ``recompute = True``),
or opened in Jupyter, whose kernel starts in ``notebooks/`` (``recompute = False``: re-plot ``results/`` without
training). :func:`setup` makes both behave the same: it moves to the repository root, so ``params.yaml`` and the
``paths`` in it resolve as in the pipeline, and it keeps the executed notebook clean (no library progress bars, no
warning about missing widgets). :func:`stage_metrics` runs the stage or reads the metrics it wrote.
"""

from __future__ import annotations

import json
import os
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


def setup(params_file: str = "params.yaml", profile: str | None = None):
    """Move to the repository root, quiet the libraries, set the plot theme; return the validated config."""
    os.chdir(repo_root())
    quiet_libraries()
    import seaborn as sns

    from nlhf.params import load_config

    sns.set_theme(style="whitegrid")
    cfg = load_config(params_file, profile)
    print(f"profile: {cfg.profile}")
    return cfg


def stage_metrics(cfg, stage: str, run: Callable[[], dict], recompute: bool) -> dict:
    """``run()`` (the stage: trains, evaluates, writes results/) when ``recompute``; otherwise the metrics the stage
    wrote last time (:meth:`nlhf.layout.Layout.metrics`), so the notebook re-plots without training."""
    if recompute:
        return run()
    path = cfg.layout.metrics(stage)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the stage has not run here. Run it with `dvc repro`, or set "
                                f"recompute = True in this notebook's parameters cell")
    print(f"re-plotting the committed results of stage '{stage}' ({path}); set recompute = True to rerun it")
    return json.loads(path.read_text())
