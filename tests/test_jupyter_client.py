"""The evaluation notebook run the way a user runs it: opened in Jupyter, through a real server and kernel.

papermill (the pipeline) runs a notebook from the repository root with ``recompute = True``; a user opens it in
JupyterLab, whose kernel starts in ``notebooks/`` with the notebook's defaults (``recompute = False``: re-plot the
committed ``results/`` without training). This test is that user, minus the browser: it copies the repository's
files (as committed, plus new files not yet ignored; no ``artifacts/``, so nothing trained is available) to a
temporary folder, starts ``jupyter_server`` there with ``notebooks/`` as its root, opens a session for
``05_evaluation.ipynb`` through the REST API (as JupyterLab does: the kernel's working directory is the notebook's
folder), and executes every code cell in order over the kernel's websocket. It checks that no cell fails, that the
figures and the generated Markdown "Reading" display, and that nothing outside ``results/`` was written.

Outbound network is blocked in the server and the kernel (tests/netguard/sitecustomize.py): re-plotting must work
offline. About 10-15 s on 2 cores, most of it the kernel importing the libraries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

websocket = pytest.importorskip("websocket", reason="needs websocket-client")
pytest.importorskip("jupyter_server", reason="needs jupyter_server")
pytest.importorskip("ipykernel", reason="needs ipykernel")

REPO = Path(__file__).resolve().parent.parent
GUARD = Path(__file__).resolve().parent / "netguard"
NOTEBOOK = "notebooks/05_evaluation.ipynb"  # relative to the repository root

SERVER_START_TIMEOUT = 60  # s until GET /api answers
KERNEL_READY_TIMEOUT = 60  # s until the kernel answers kernel_info_request
CELL_TIMEOUT = 180  # s for one cell to finish (status: idle and its execute_reply)

# Paths that may change without the notebook writing them: Python's bytecode caches and Jupyter's autosave
# checkpoints. (Jupyter's runtime files, the kernel's connection file among them, go to a folder outside the copy.)
IGNORED_PARTS = {"__pycache__", ".ipynb_checkpoints"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ----------------------------------------------------------------------------------------------- the repository


def _repo_files() -> list[str]:
    """The files a fresh clone would have plus new ones not yet committed (``git ls-files -co --exclude-standard``),
    without ``artifacts/`` (the trained models, absent when a user only has the committed results)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                             capture_output=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout to know the repository's files: {e}")
    names = [n for n in out.decode().split("\0") if n]
    # A tracked file deleted in the working tree is listed but absent: skip it, as a clone of the tree would.
    return [n for n in names if not n.startswith("artifacts/") and (REPO / n).is_file()]


def _copy_repo(dest: Path) -> None:
    for name in _repo_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative POSIX path -> digest), skipping IGNORED_PARTS."""
    digests = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if IGNORED_PARTS.intersection(rel.parts) or not path.is_file():
            continue
        digests[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


# ------------------------------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """``python -m jupyter_server`` on 127.0.0.1 with a random token, its Jupyter config, data and runtime folders
    private to the test (no user settings or user kernelspecs leak in), and the network blocked."""

    def __init__(self, root_dir: Path, work: Path, pythonpath: list[Path]):
        self.root_dir = root_dir
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "jupyter_server.log"
        dirs = {name: work / name for name in ("config", "data", "runtime", "ipython")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), IPYTHONDIR=str(dirs["ipython"]),
            JUPYTER_PLATFORM_DIRS="1",  # jupyter_core's future default; no warning about migrating paths
            # The kernel inherits this environment: the copy's nlhf first, the network guard, CPU only.
            PYTHONPATH=os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        # As in JupyterLab: the kernel picks its own (inline) matplotlib backend and the default profile.
        for var in ("MPLBACKEND", "NLHF_PROFILE", "JUPYTER_PATH"):
            env.pop(var, None)
        cmd = [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root_dir}",
               "--ServerApp.allow_root=True"]  # CI containers often run as root
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self, tail: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> dict:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path} -> HTTP {e.code}: {e.read().decode(errors='replace')[:2000]}\n"
                                 f"server log:\n{self.log()}") from None
        return json.loads(text) if text else {}

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter_server exited with code {self.proc.returncode} before answering "
                                     f"GET /api:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base + "/api", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            time.sleep(0.25)
        raise AssertionError(f"jupyter_server did not answer GET {self.base}/api within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Shut the server down (it shuts its kernels down); kill it if it does not exit."""
        if self.proc.poll() is None:
            try:
                self.request("POST", "/api/shutdown", timeout=10)
            except Exception:  # noqa: BLE001 - a server already gone or hung: terminate it below
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        self._log.close()


# ------------------------------------------------------------------------------------------------- the kernel


class KernelChannel:
    """The kernel's websocket (``/api/kernels/<id>/channels``, jupyter_server's JSON message format: every message
    carries its ``channel``), with just what a notebook front end needs to run cells."""

    def __init__(self, server: JupyterServer, kernel_id: str, session_id: str):
        self.server = server
        self.session = session_id
        url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={session_id}"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {server.token}"], timeout=10)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass

    def send(self, channel: str, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "test",
                       "date": datetime.now(timezone.utc).isoformat(), "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": []}))
        return msg_id

    def recv(self, deadline: float, what: str) -> dict:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(what)
        self.ws.settimeout(left)
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            raise TimeoutError(what) from None

    def wait_ready(self, timeout: float = KERNEL_READY_TIMEOUT) -> dict:
        """kernel_info_request until a reply: a kernel still starting drops requests, so ask again every few s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("shell", "kernel_info_request", {})
            retry = min(deadline, time.monotonic() + 5)
            try:
                while True:
                    msg = self.recv(retry, "kernel_info_reply")
                    if msg["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") == msg_id:
                        return msg["content"]
            except TimeoutError:
                continue
        raise AssertionError(f"the kernel did not answer kernel_info_request within {timeout} s\n"
                             f"server log:\n{self.server.log()}")

    def execute(self, code: str, timeout: float = CELL_TIMEOUT) -> tuple[dict, list[dict]]:
        """Run ``code``; return its execute_reply content and the iopub messages it caused, up to ``idle``."""
        msg_id = self.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False,
            "stop_on_error": True})
        deadline = time.monotonic() + timeout
        reply, iopub, idle = None, [], False
        while reply is None or not idle:
            try:
                msg = self.recv(deadline, "cell")
            except TimeoutError:
                raise AssertionError(
                    f"the cell did not finish within {timeout} s (execute_reply: {reply is not None}, idle: {idle}); "
                    f"output so far:\n{_text(iopub)[-3000:]}\nserver log:\n{self.server.log()}") from None
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
                reply = msg["content"]
            elif msg["channel"] == "iopub":
                if msg["msg_type"] == "status":
                    idle = msg["content"]["execution_state"] == "idle"
                else:
                    iopub.append(msg)
        return reply, iopub


def _text(iopub: list[dict]) -> str:
    """The plain text of a cell's output (stream, text/plain of displays, tracebacks), for failure messages."""
    parts = []
    for m in iopub:
        c = m["content"]
        if m["msg_type"] == "stream":
            parts.append(c["text"])
        elif m["msg_type"] in ("display_data", "execute_result"):
            parts.append(c["data"].get("text/plain", "") + "\n")
        elif m["msg_type"] == "error":
            parts.append(ANSI.sub("", "\n".join(c["traceback"])) + "\n")
    return "".join(parts)


def _mimetypes(iopub: list[dict]) -> set[str]:
    return {mime for m in iopub if m["msg_type"] in ("display_data", "execute_result") for mime in m["content"]["data"]}


def run_notebook(server: JupyterServer, notebook: str) -> list[dict]:
    """Open ``notebook`` (relative to the server's root) as JupyterLab does and run its code cells in order.
    Returns, per code cell, its source, execute_reply and iopub messages. The session is deleted at the end."""
    nb = json.loads((server.root_dir / notebook).read_text())
    # POST /api/sessions with type "notebook": the server starts the kernel in the notebook's folder.
    session = server.request("POST", "/api/sessions", {"path": notebook, "name": Path(notebook).name,
                                                       "type": "notebook", "kernel": {"name": "python3"}})
    channel = None
    try:
        channel = KernelChannel(server, session["kernel"]["id"], uuid.uuid4().hex)
        channel.wait_ready()
        results = []
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            reply, iopub = channel.execute(source)
            results.append({"index": index, "source": source, "reply": reply, "iopub": iopub})
            if reply["status"] != "ok":
                break  # as "Run All" does: stop at the first failing cell
        # Where the kernel ran and which Python and nlhf it used, for the assertions.
        _, probe = channel.execute("import json as _j, os as _o, sys as _s, nlhf as _n\n"
                                   "print(_j.dumps({'cwd': _o.getcwd(), 'prefix': _s.prefix, 'nlhf': _n.__file__}))")
        results.append({"index": None, "source": "<probe>", "reply": None, "iopub": probe})
        return results
    finally:
        if channel is not None:
            channel.close()
        try:
            server.request("DELETE", f"/api/sessions/{session['id']}", timeout=20)
        except AssertionError:
            pass  # the server shuts the kernel down with itself anyway


def _start_server(root_dir: Path, work: Path, pythonpath: list[Path], attempts: int = 3) -> JupyterServer:
    """A ready server; a new port if another process took the free one between our check and the server's bind."""
    for attempt in range(attempts):
        server = JupyterServer(root_dir, work, pythonpath)
        try:
            server.wait_ready()
            return server
        except AssertionError:
            server.stop()
            if attempt + 1 == attempts or "already in use" not in server.log():
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------- the test


def test_evaluation_notebook_runs_in_a_jupyter_kernel(tmp_path):
    repo = tmp_path / "repo"
    _copy_repo(repo)
    notebook = repo / NOTEBOOK
    assert notebook.is_file(), f"{NOTEBOOK} is not among the repository's files"
    before = _snapshot(repo)

    server = _start_server(root_dir=notebook.parent, work=tmp_path / "jupyter", pythonpath=[repo, GUARD])
    try:
        t0 = time.monotonic()
        results = run_notebook(server, notebook.name)
        elapsed = time.monotonic() - t0
    finally:
        server.stop()

    *cells, probe = results
    # 1. Every cell ran without an error (the first failure stops the run, as Run All does).
    for r in cells:
        errors = [m for m in r["iopub"] if m["msg_type"] == "error"]
        if r["reply"]["status"] != "ok" or errors:
            raise AssertionError(f"cell {r['index']} of {NOTEBOOK} failed in the Jupyter kernel:\n"
                                 f"--- source ---\n{r['source'][:1500]}\n--- output ---\n{_text(r['iopub'])[-5000:]}")
    n_code = sum(c["cell_type"] == "code" for c in json.loads(notebook.read_text())["cells"])
    assert len(cells) == n_code, f"ran {len(cells)} of {n_code} code cells"

    # 2. The kernel was this environment's Python, started in notebooks/ and moved to the copy's root by the
    #    notebook's setup cell, with the copy's nlhf.
    probe_text = _text(probe["iopub"]).strip()
    assert probe_text.startswith("{"), f"could not ask the kernel where it ran:\n{probe_text[-3000:]}"
    where = json.loads(probe_text.splitlines()[-1])
    assert Path(where["prefix"]).resolve() == Path(sys.prefix).resolve(), \
        f"the kernel ran {where['prefix']}, not this environment ({sys.prefix})"
    assert Path(where["nlhf"]).resolve().is_relative_to(repo.resolve()), \
        f"the kernel imported nlhf from {where['nlhf']}, not from the copy {repo}"
    assert Path(where["cwd"]).resolve().is_relative_to(repo.resolve()), \
        f"the kernel's working directory {where['cwd']} is outside the copy {repo}"

    # 3. The figures and the generated Reading displayed.
    outputs = [m for r in cells for m in r["iopub"]]
    assert "image/png" in _mimetypes(outputs), "no cell displayed a figure (image/png)"
    assert "text/markdown" in _mimetypes(cells[-1]["iopub"]), \
        "the notebook's last code cell should display its generated Reading as Markdown (text/markdown); it " \
        f"displayed {sorted(_mimetypes(cells[-1]['iopub'])) or 'nothing'}"

    # 4. Opening the notebook wrote nothing outside results/.
    after = _snapshot(repo)
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    created = sorted(after.keys() - before.keys())
    deleted = sorted(before.keys() - after.keys())
    outside = [f"{kind}: {p}" for kind, paths in (("changed", changed), ("created", created), ("deleted", deleted))
               for p in paths if not p.startswith("results/")]
    assert not outside, "running the notebook in Jupyter touched files outside results/:\n" + "\n".join(outside)
    print(f"{n_code} code cells ran in {elapsed:.1f} s")
