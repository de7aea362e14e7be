"""The notebooks as a reader meets them.

* Every source notebook runs from ``notebooks/`` (where Jupyter starts its kernel) in re-plot mode, its default:
  it reads the committed ``results/`` (no ``artifacts/``: a fresh clone has none), writes nothing outside
  ``results/`` and ends with its generated "Reading".
* The executed notebooks the pipeline committed carry no machine paths, progress-bar fragments or widget warnings.
* The per-stage headline metrics stay small enough for ``dvc metrics show`` in a terminal.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
EXECUTED = sorted((ROOT / "results" / "notebooks").glob("*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(/(home|root|tmp|work|Users|usr|opt|var|mnt|private)/|[A-Za-z]:\\\\)")


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file() and not {"__pycache__", ".ipynb_checkpoints"} & set(p.parts)}


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The repository's files (committed and new, not ignored) without artifacts/, as a fresh clone has them."""
    dst = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file() and not f.startswith("artifacts/"):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            (dst / f).write_bytes(src.read_bytes())
    return dst


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_replots_from_the_notebooks_folder(clone, tmp_path, name):
    import papermill

    before = _files(clone)
    out = tmp_path / name
    papermill.execute_notebook(str(clone / "notebooks" / name), str(out), cwd=str(clone / "notebooks"),
                               kernel_name="python3", progress_bar=False)
    after = _files(clone)
    changed = sorted(f for f in set(before) | set(after) if before.get(f) != after.get(f))
    assert all(f.startswith("results/") for f in changed), f"{name} wrote outside results/: {changed}"
    nb = json.loads(out.read_text())
    text = json.dumps(nb["cells"])
    assert "re-plotting the committed results" in text, "the notebook did not take the re-plot path"
    assert nb["cells"][-2]["cell_type"] == "markdown" and nb["cells"][-2]["source"][0].startswith("## Reading")
    reading = [o for o in nb["cells"][-1]["outputs"] if "text/markdown" in o.get("data", {})]
    assert reading and len("".join(reading[-1]["data"]["text/markdown"])) > 100, "no generated Reading"


def test_the_pipeline_recomputes_and_the_reader_replots():
    """dvc.yaml runs every notebook with recompute=True; each notebook's own default is False (re-plot)."""
    dvc = (ROOT / "dvc.yaml").read_text()
    assert "-p recompute True" in dvc
    for name in NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / name).read_text())
        params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        assert re.search(r"^recompute = False\b", "".join(params["source"]), re.M), name


def test_setup_finds_the_repository_root_from_any_subfolder(tmp_path, monkeypatch):
    from nlhf.pipeline.notebook import repo_root

    monkeypatch.chdir(ROOT / "notebooks")
    assert repo_root() == ROOT
    with pytest.raises(FileNotFoundError, match="no repository root"):
        repo_root(tmp_path)


def test_replot_without_results_names_the_file_and_the_way_out(tmp_path):
    from nlhf.pipeline.notebook import stage_metrics
    from nlhf.pipeline.params import load_config

    cfg = load_config(ROOT / "params.yaml")
    cfg.paths.results = "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere/metrics/sft\.json not found.*dvc repro.*recompute = True"):
        stage_metrics(cfg, "sft", lambda c: {}, recompute=False)
    assert stage_metrics(cfg, "sft", lambda c: {"ran": 1}, recompute=True) == {"ran": 1}


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.name)
def test_executed_notebooks_are_clean(path):
    nb = json.loads(path.read_text())
    meta = nb["metadata"].get("papermill", {})
    for key in ("input_path", "output_path", "cwd"):
        assert not ABSOLUTE_PATH.search(str(meta.get(key) or "")), f"papermill metadata {key}: {meta.get(key)}"
    for i, cell in enumerate(nb["cells"]):
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) + json.dumps(o.get("data", {})) + "".join(o.get("traceback", []))
            where = f"{path.name} cell {i}"
            assert not ABSOLUTE_PATH.search(text), f"{where}: a machine path: {ABSOLUTE_PATH.search(text)[0]!r}"
            assert "\r" not in text, f"{where}: a progress-bar fragment (carriage return)"
            assert not re.search(r"it/s\]|s/it\]|\|[█▏▎▍▌▋▊▉ ]+\|", text), f"{where}: a progress bar"
            assert "IProgress" not in text and "ipywidgets" not in text, f"{where}: a widget warning"
            assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {}), f"{where}: a widget"
            assert o.get("output_type") != "error", f"{where}: an error"


def test_headline_metrics_fit_a_terminal():
    """Each stage's summary holds numbers and booleans only, and all stages together at most 40 columns."""
    summaries = sorted((ROOT / "results" / "summary").glob("*.json"))
    assert summaries, "no results/summary/*.json: run the pipeline"
    columns = set()
    for f in summaries:
        data = json.loads(f.read_text())
        assert data and all(isinstance(v, (int, float, bool)) for v in data.values()), f.name
        columns |= set(data)
    assert len(columns) <= 40, sorted(columns)
    assert "runtime_s" not in columns
    dvc = (ROOT / "dvc.yaml").read_text()
    declared = re.findall(r"metrics:\n\s+- (\S+): \{cache: false\}", dvc)
    assert declared and all(m.startswith("results/summary/") for m in declared), declared


def test_summarize_keeps_only_headline_numbers():
    from nlhf.pipeline.summary import summarize

    metrics = {"probe": {"p_vs_sft": 0.712345, "p_vs_target": float("nan"), "kl": 2, "converged": True},
               "method": "MD1", "runtime_s": 12.0}
    assert summarize("policy_exact_MD1", metrics) == {"p_vs_sft": 0.7123, "kl": 2, "converged": True}
    assert summarize("unknown_stage", metrics) == {}


def test_progress_prints_a_line_per_tenth_and_no_carriage_returns(capsys):
    from nlhf.progress import Progress

    p = Progress("train", total=95, start=0)
    for done in range(1, 96):
        p.update(done, loss=1.0 / done)
    out = capsys.readouterr().out
    lines = out.strip().split("\n")
    assert 9 <= len(lines) <= 11 and "\r" not in out
    assert lines[-1].startswith("train: 95/95 (100%)") and "loss=" in lines[-1]
    resumed = Progress("train", total=100, start=50)
    for done in range(51, 101):
        resumed.update(done)
    assert [ln.split()[1] for ln in capsys.readouterr().out.strip().split("\n")] == [
        f"{k}/100" for k in range(60, 101, 10)]
