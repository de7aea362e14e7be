"""No silently wrong results: a resume state is reused only under every param and input its stage reads; upstream
counts are the params'; a failed write leaves the previous file whole; a model file damaged in place is named on
load; a stage stops when the process that started it dies."""

import copy
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nlhf.pipeline.params import FOREACH_KEYS, STAGE_PARAMS, load_config, stage_config

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch):
    monkeypatch.delenv("NLHF_PROFILE", raising=False)


def tiny_cfg(tmp_path):
    """The committed params under the tiny profile, writing below ``tmp_path``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "tiny"
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles", dirs_exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_config(tmp_path / "params.yaml")
    cfg.paths.artifacts, cfg.paths.results = str(tmp_path / "a"), str(tmp_path / "r")
    return cfg


# ------------------------------------------------------------------------------------------ resume fingerprints

def _dvc_stage_params() -> dict[str, set[str]]:
    """Each DVC stage's params as DVC resolves dvc.yaml (foreach items filled in), less profile, paths and the
    profile file (STAGE_PARAMS leaves them out)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {st.addressing: {k for d in st.deps if isinstance(d, ParamsDependency) and d.def_path == "params.yaml"
                                for k in d.params if k not in ("profile", "paths")}
                for st in repo.index.stages if st.addressing != "check"}


def test_stage_params_are_dvc_yamls():
    """What a resume fingerprint hashes, and what a stage may read (nlhf.pipeline.params.restrict), is exactly what
    DVC reruns the stage for, stage by stage."""
    from nlhf.pipeline.params import stage_keys

    declared = _dvc_stage_params()
    assert {s.partition("@")[0] for s in declared} == set(STAGE_PARAMS)
    for stage, keys in declared.items():
        assert keys == set(stage_keys(stage)), stage


def test_foreach_keys_are_dvc_yamls():
    lists = {spec["foreach"].strip("${}") for spec in DVC["stages"].values()
             if isinstance(spec.get("foreach"), str)}
    assert lists == set(FOREACH_KEYS)


def _leaves(obj, path=()):
    """(path, value) of every leaf below a config value: dataclass fields and mapping entries, recursively."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name), (*path, f.name))
    elif isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    else:
        yield path, obj


def _other(v):
    """A different value of the same kind."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v * 2 + 1
    if v in ("pm", "rm"):  # a method's judged_by: the other trained judge
        return {"pm": "rm", "rm": "pm"}[v]
    if isinstance(v, str):
        return v + "_x"
    if isinstance(v, list):
        return v + v[:1] if v else [1]
    if isinstance(v, dict):
        return {**v, "x": "y"}
    return 1  # None


def _set(cfg, key: str, path: tuple, value):
    """Set the leaf ``path`` below the stage param ``key`` (``seed``, ``eval.confidence``, ``methods.MD1``)."""
    parts = [*key.split("."), *path]
    node = cfg
    for part in parts[:-1]:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    if isinstance(node, dict):
        node[parts[-1]] = value
    else:
        object.__setattr__(node, parts[-1], value)


STAGES = ["sft", "preference@pm", "preference@rm", "policy@MD1", "policy_exact@EMA1", "policy_seed@BR"]


@pytest.mark.parametrize("stage", STAGES)
def test_fingerprint_changes_with_every_param_the_stage_reads(tmp_path, monkeypatch, stage):
    """Param by param: changing any leaf of any section the stage reads (top-level seed included) gives another
    fingerprint, so a resume state is never reused under it; a section it does not read changes nothing."""
    from nlhf.pipeline import artifacts
    from nlhf.pipeline.artifacts import stage_fingerprint

    monkeypatch.setattr(artifacts, "check_comparison_counts", lambda cfg: None)  # no upstream artifacts here
    cfg = tiny_cfg(tmp_path)
    base = stage_fingerprint(cfg, stage)
    keys = stage_config(cfg, stage)
    assert "seed" in keys
    checked = 0
    for key, value in keys.items():
        for path, leaf in _leaves(value):
            other = copy.deepcopy(cfg)
            _set(other, key, path, _other(leaf))
            assert stage_fingerprint(other, stage) != base, (key, path)
            checked += 1
    assert checked >= len(keys)
    unread = copy.deepcopy(cfg)
    unread.oracle.n_prompts += 1  # no stage here reads the oracle section
    unread.paths.results = str(tmp_path / "elsewhere")  # where results go is not what the stage computes
    assert stage_fingerprint(unread, stage) == base


def test_fingerprint_covers_every_input_and_only_those(tmp_path):
    from nlhf.pipeline.artifacts import stage_fingerprint

    cfg = tiny_cfg(tmp_path)
    layout = cfg.layout
    before = {s: stage_fingerprint(cfg, s) for s in ("policy@MD1", "policy_exact@MD1")}
    (layout.model("pm")).mkdir(parents=True)
    (layout.model("pm") / "model.safetensors").write_bytes(b"weights")
    assert stage_fingerprint(cfg, "policy@MD1") != before["policy@MD1"]
    assert stage_fingerprint(cfg, "policy_exact@MD1") == before["policy_exact@MD1"]  # exact judges: no PM read
    layout.oracle_target("MD1").parent.mkdir(parents=True)
    layout.oracle_target("MD1").write_text("{}")
    assert stage_fingerprint(cfg, "policy_exact@MD1") != before["policy_exact@MD1"]


# ------------------------------------------------------------------------------------------ counts against params

def _dataset(path: Path, n: int, **columns):
    import datasets

    datasets.Dataset.from_dict({k: [v] * n for k, v in columns.items()}).save_to_disk(str(path))


def test_a_consistent_shrink_of_the_sft_pairs_stops_the_reader(tmp_path):
    """Rows and info.json shrunk alike (100 pairs where the params ask for 500): the preference stage's inputs stop
    naming the file and the param, before any training."""
    from nlhf.pipeline.artifacts import DamagedArtifactError, check_comparison_counts, stage_fingerprint

    cfg = tiny_cfg(tmp_path)
    d = cfg.layout.sft_pairs()
    row = dict(prompt="x", y="a", y_prime="b", p=0.5, label=1)
    _dataset(d / "train", 500, **row)
    _dataset(d / "heldout", cfg.eval.n_heldout_pairs, **row)
    (d / "info.json").write_text(json.dumps({"train": 500, "heldout": cfg.eval.n_heldout_pairs}))
    check_comparison_counts(cfg)
    shutil.rmtree(d / "train")
    _dataset(d / "train", 100, **row)
    (d / "info.json").write_text(json.dumps({"train": 100, "heldout": cfg.eval.n_heldout_pairs}))
    msg = r"sft_pairs/train holds 100 rows but params preference_data\.sft_pairs is 500.*dvc repro sft"
    with pytest.raises(DamagedArtifactError, match=msg):
        check_comparison_counts(cfg)
    with pytest.raises(DamagedArtifactError, match=msg):
        stage_fingerprint(cfg, "preference@pm")
    cfg.eval.n_heldout_pairs += 1
    cfg.preference_data.sft_pairs = 100
    with pytest.raises(DamagedArtifactError, match=r"sft_pairs/heldout holds 100 rows but params "
                                                   r"eval\.n_heldout_pairs is 101"):
        check_comparison_counts(cfg)


def test_a_consistent_shrink_of_a_dataset_stops_the_reader(tmp_path):
    from nlhf.pipeline.artifacts import DamagedArtifactError, load_dataset_dir

    cfg = tiny_cfg(tmp_path)
    n = cfg.task.synthetic.n_pref_train
    data = cfg.layout.data()
    _dataset(data / "prefs" / "train", n, prompt="x", y="a", y_prime="b", label=1.0, p=0.5)
    (data / "metrics.json").write_text(json.dumps({"prefs_train_rows": n}))
    assert len(load_dataset_dir(cfg, "prefs", "train")) == n
    shutil.rmtree(data / "prefs" / "train")
    _dataset(data / "prefs" / "train", 100, prompt="x", y="a", y_prime="b", label=1.0, p=0.5)
    (data / "metrics.json").write_text(json.dumps({"prefs_train_rows": 100}))
    with pytest.raises(DamagedArtifactError, match=rf"prefs/train holds 100 rows but params "
                                                   rf"task\.synthetic\.n_pref_train is {n}.*dvc repro data"):
        load_dataset_dir(cfg, "prefs", "train")


# ------------------------------------------------------------------------------------------ partial writes

def _half_then_fail(real):
    """A writer that writes the first half of what ``real`` would write, then fails as a full disk does."""
    def write(tmp):
        real(tmp)
        data = Path(tmp).read_bytes()
        Path(tmp).write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")
    return write


def test_a_failed_write_leaves_the_previous_file_and_a_new_one_is_readable_by_all(tmp_path, monkeypatch):
    from nlhf.training import checkpoint

    path = tmp_path / "metrics" / "pm.json"
    checkpoint.write_json(path, {"old": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    real = checkpoint._atomic_file
    monkeypatch.setattr(checkpoint, "_atomic_file", lambda p, writer: real(p, _half_then_fail(writer)))
    with pytest.raises(OSError, match="No space left"):
        checkpoint.write_json(path, {"new": list(range(100))})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in path.parent.iterdir()] == ["pm.json"]  # no temporary file left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_stage_leaves_its_previous_results(tmp_path, monkeypatch):
    """The rm stage wrote its tables and metrics, then its timings folder is read-only: every result file of the
    stage is back as it was, none is new, and no copy is left behind."""
    from nlhf.pipeline import artifacts
    from nlhf.pipeline.notebook import stage_metrics

    cfg = tiny_cfg(tmp_path)
    layout = cfg.layout
    artifacts.write_metrics(cfg, "rm", {"test": {"log_loss": 0.5}, "runtime_s": 1.0})
    (layout.results("rm")).mkdir(parents=True)
    (layout.results("rm") / "loss.csv").write_text("step,loss\n0,0.7\n")
    results = layout.results_root

    def snapshot():
        return {p.relative_to(results).as_posix(): p.read_bytes() for p in results.rglob("*") if p.is_file()}

    before = snapshot()
    real = artifacts.write_json

    def read_only_timings(path, obj):
        if Path(path).parent == layout.timings("rm").parent:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, obj)

    def stage(_cfg):
        (layout.results("rm") / "loss.csv").write_text("step,loss\n0,0.1\n")
        (layout.results("rm") / "eval.csv").write_text("step,log_loss\n0,0.2\n")
        artifacts.write_metrics(cfg, "rm", {"test": {"log_loss": 0.1}, "runtime_s": 2.0})
        return {}

    monkeypatch.setattr(artifacts, "write_json", read_only_timings)
    with pytest.raises(PermissionError):
        stage_metrics(cfg, "rm", stage, recompute=True)
    assert snapshot() == before
    monkeypatch.setattr(artifacts, "write_json", real)
    stage_metrics(cfg, "rm", stage, recompute=True)
    assert json.loads(layout.metrics("rm").read_text()) == {"test": {"log_loss": 0.1}}
    assert (layout.results("rm") / "eval.csv").exists()


NOTEBOOK_META = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
                 "language_info": {"name": "python"}}


def _notebook(path: Path, *sources: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(metadata=NOTEBOOK_META)
    nb.cells = [nbformat.v4.new_code_cell("recompute = False", metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)
    return path


def _pm_command(notebook: str, out: str) -> str:
    """The command dvc.yaml runs for a notebook stage (its ``PM`` variable), on ``notebook``."""
    (pm,) = [v["PM"] for v in DVC["vars"] if "PM" in v]
    return f"{pm} {notebook} {out}"


def _env():
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               PYTHONPATH=str(ROOT))
    env.pop("NLHF_PROFILE", None)
    return env


def test_executed_notebook_replaces_the_previous_one_only_when_every_cell_ran(tmp_path):
    """A cell that fails leaves the previous executed notebook as it was (and no temporary file); a notebook that
    runs replaces it whole, readable by all, with its final path in papermill's metadata."""
    import nbformat

    _notebook(tmp_path / "ok.ipynb", "print('ran', recompute)")
    _notebook(tmp_path / "bad.ipynb", "print('ran')", "raise RuntimeError('boom')")
    out = tmp_path / "results" / "notebooks"
    out.mkdir(parents=True)
    (out / "nb.ipynb").write_text("the previous executed notebook")
    r = subprocess.run(_pm_command("bad.ipynb", "results/notebooks/nb.ipynb"), shell=True, cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "boom" in r.stdout + r.stderr
    assert [p.name for p in out.iterdir()] == ["nb.ipynb"]
    assert (out / "nb.ipynb").read_text() == "the previous executed notebook"
    r = subprocess.run(_pm_command("ok.ipynb", "results/notebooks/nb.ipynb"), shell=True, cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    nb = nbformat.read(out / "nb.ipynb", as_version=4)
    assert "ran True" in "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert nb.metadata.papermill.output_path == "results/notebooks/nb.ipynb"
    assert (out / "nb.ipynb").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in out.iterdir()] == ["nb.ipynb"]


def test_a_notebook_write_cut_short_leaves_the_previous_one(tmp_path, monkeypatch):
    """papermill's writer fails halfway (a full disk) while writing the executed notebook: the previous one stays."""
    from papermill.iorw import LocalHandler

    from nlhf.pipeline.notebook import execute

    _notebook(tmp_path / "nb.ipynb", "x = 1")
    out = tmp_path / "out" / "nb.ipynb"
    out.parent.mkdir()
    out.write_text("the previous executed notebook")
    real = LocalHandler.write

    def write(self, buf, path):
        real(self, buf[: len(buf) // 2], path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalHandler, "write", write)
    with pytest.raises(OSError, match="No space left"):
        execute(["-k", "python3", str(tmp_path / "nb.ipynb"), str(out)])
    assert out.read_text() == "the previous executed notebook"
    assert [p.name for p in out.parent.iterdir()] == ["nb.ipynb"]


# ------------------------------------------------------------------------------------------ damaged model files

def test_a_model_file_changed_in_place_is_named_on_load(tmp_path, completist_tok):
    """4 KB of a saved model's tensor bytes overwritten (same size, valid header): loading the policy or the scorer,
    and the stages' check of an upstream folder, stop naming the file."""
    from nlhf.models import ModelConfig, ModelLoadError, build_policy, build_preference_model, load_policy, save_policy
    from nlhf.models import PreferenceModel
    from nlhf.pipeline.artifacts import DamagedArtifactError, require

    cfg = ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64)
    save_policy(build_policy(cfg, completist_tok, seed=0), completist_tok, tmp_path / "sft")
    build_preference_model(cfg, completist_tok, seed=0).save_pretrained(tmp_path / "pm")
    load_policy(tmp_path / "sft")
    PreferenceModel.from_pretrained(tmp_path / "pm")
    for folder in ("sft", "pm"):
        weights = tmp_path / folder / "model.safetensors"
        size = weights.stat().st_size
        with open(weights, "r+b") as f:
            f.seek(size - 8192)
            f.write(os.urandom(4096))
        assert weights.stat().st_size == size
    with pytest.raises(ModelLoadError, match=r"policy: .*sft/model\.safetensors: SHA-256 differs"):
        load_policy(tmp_path / "sft")
    with pytest.raises(ModelLoadError, match=r"preference_model: .*pm/model\.safetensors: SHA-256 differs"):
        PreferenceModel.from_pretrained(tmp_path / "pm")
    with pytest.raises(DamagedArtifactError, match=r"sft/model\.safetensors is damaged \(SHA-256 differs"):
        require(tmp_path / "sft", "sft")


# ------------------------------------------------------------------------------------------ a dead parent

def _gone(pid: int) -> bool:
    """The process ended (no such process, or a zombie waiting for a parent that does not reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killing_dvc_stops_papermill_and_the_kernel(tmp_path):
    """A stand-in for DVC runs a notebook stage's command as DVC does (its shell, dvc.yaml's command line); the
    notebook's kernel writes a heartbeat. After `kill -9` of the stand-in, papermill and the kernel end within
    seconds, the heartbeat stops, and no executed notebook (or temporary file) is left."""
    _notebook(tmp_path / "nb.ipynb", "import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\n"
                                     "while True:\n    open('beat', 'a').write('.')\n    time.sleep(0.1)")
    dvc = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                            "sys.exit(subprocess.Popen(sys.argv[1], shell=True).wait())",
                            _pm_command("nb.ipynb", "results/notebooks/nb.ipynb")], cwd=tmp_path, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait(lambda: (tmp_path / "beat").exists(), 120), "the kernel did not start"
        kernel = int((tmp_path / "kernel.pid").read_text())
        papermill = int(Path(f"/proc/{kernel}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(dvc.pid, signal.SIGKILL)
        dvc.wait()
        assert _wait(lambda: _gone(papermill) and _gone(kernel), 10), "papermill or the kernel outlived DVC"
        size = (tmp_path / "beat").stat().st_size
        time.sleep(1)
        assert (tmp_path / "beat").stat().st_size == size
        assert not list((tmp_path / "results" / "notebooks").iterdir())
    finally:
        for pid in [dvc.pid, *(int(p.read_text()) for p in [tmp_path / "kernel.pid"] if p.exists())]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_kernel_ends_when_its_parent_dies(tmp_path):
    """The kernel's own watch (nlhf.pipeline.notebook.setup calls it): a child that a parent started ends within
    seconds of `kill -9` of the parent, whatever $JPY_PARENT_PID says."""
    child = ("import os, sys, time\nfrom nlhf.pipeline.notebook import exit_with_parent\nexit_with_parent()\n"
             "open('child.pid', 'w').write(str(os.getpid()))\nwhile True:\n    time.sleep(0.1)")
    env = {k: v for k, v in _env().items() if k != "JPY_PARENT_PID"}
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', sys.argv[1]]); time.sleep(600)", child],
                              cwd=tmp_path, env=env)
    try:
        assert _wait(lambda: (tmp_path / "child.pid").exists(), 60)
        pid = int((tmp_path / "child.pid").read_text())
        assert not _gone(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait(lambda: _gone(pid), 5), "the child outlived its parent"
    finally:
        parent.kill()
        if (tmp_path / "child.pid").exists() and not _gone(int((tmp_path / "child.pid").read_text())):
            os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGKILL)


def test_a_stage_sees_only_the_params_it_declares(tmp_path):
    """restrict(): a stage reading a param DVC would not rerun it for stops with the key; what it declares reads
    as before, and so does its resume fingerprint."""
    from nlhf.pipeline.params import UndeclaredParamError, restrict

    cfg = tiny_cfg(tmp_path)
    sft = restrict(cfg, "sft")
    assert sft.sft == cfg.sft and sft.eval.n_heldout_pairs == cfg.eval.n_heldout_pairs
    assert sft.layout.model("sft") == cfg.layout.model("sft")
    with pytest.raises(UndeclaredParamError, match=r"stage sft read eval\.n_prompts, which is not among the params"):
        sft.eval.n_prompts
    with pytest.raises(UndeclaredParamError, match=r"stage sft read pg\.steps"):
        sft.pg.steps
    md1 = restrict(cfg, "policy@MD1")
    assert md1.method("MD1") == cfg.method("MD1") and md1.pg == cfg.pg
    with pytest.raises(UndeclaredParamError, match=r"stage policy@MD1 read methods\.SP"):
        md1.methods["SP"]
    with pytest.raises(UndeclaredParamError, match=r"stage preference@pm read reward_model\.n_layer"):
        restrict(cfg, "preference@pm").reward_model.n_layer
    for stage in ("sft", "preference@rm", "policy_seed@RLHF", "oracle", "eval"):
        assert stage_config(restrict(cfg, stage), stage) == stage_config(cfg, stage)
