"""Atomic writes and resumable training state.

Every file or folder a stage produces is first written under a temporary name in the same directory and then
renamed into place, so an interrupted stage never leaves a half-written checkpoint, model or metrics file.
A training loop saves its whole state (model, optimizer, step, RNG states, logs) with :func:`save_state` every
few steps and picks it up with :func:`load_state` when restarted. States hold only tensors and plain Python values
and are read with ``torch.load(weights_only=True)``, which never runs code from the file; a file that cannot be
read that way (cut short, damaged, or not a training state) is ignored with one printed line and training starts
fresh. A state is resumed only by the run it was written for: the caller's fingerprint covers the params and the
:func:`content_hash` of every upstream input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

# torch is imported inside the functions that need it: the notebook launcher (nlhf.pipeline.notebook.execute) uses
# only the atomic writes, and importing torch there would add about 2 s to every stage DVC runs


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the finished temporary file ``tmp`` to ``path`` (``os.replace``, atomic within a folder), with the
    permissions of a file created the ordinary way (0644 under the usual umask; ``mkstemp`` makes it 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _atomic_file(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Call ``writer(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path`` (:func:`publish`);
    if the writer raises (a full disk, an interrupt), the temporary file is removed and ``path`` is left as it
    was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def restored_on_failure(paths: Iterable[str | os.PathLike]):
    """Run the block; if it raises, put every path of ``paths`` (files or folders) back as it was on entry: what
    the block wrote there is removed and the copies taken on entry are renamed back. A stage's result files are
    each written atomically; this makes the set of them change together, so a stage that fails halfway (a
    read-only folder, a full disk, an exception after its first table) leaves its previous results untouched.
    Meant for small files (results, not models): every path is copied on entry."""
    saved = []
    for path in map(Path, paths):
        copy = path.parent / f".{path.name}.keep-{uuid.uuid4().hex[:8]}"
        if path.is_dir():
            shutil.copytree(path, copy, symlinks=True)
        elif path.exists():
            shutil.copy2(path, copy)
        saved.append((path, copy if path.exists() else None))
    try:
        yield
    except BaseException:
        for path, copy in saved:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            if copy is not None:
                os.replace(copy, path)
        raise
    finally:
        for _, copy in saved:
            if copy is not None and copy.exists():
                shutil.rmtree(copy) if copy.is_dir() else copy.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    _atomic_file(path, write)


def json_text(obj: Any) -> str:
    """Pretty JSON of metrics (numpy scalars/arrays and paths converted)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON (numpy scalars converted)."""
    atomic_write_text(path, json_text(obj) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_dir(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_dir)`` on an empty folder beside ``path``, then swap it into ``path``; returns ``path``.

    If the writer raises (or the process dies) before the swap, ``path`` keeps its previous content and the
    temporary folder is removed (a killed process leaves it behind under a hidden ``.name.tmp-*`` name). The
    previous folder is moved aside to ``.name.old`` before the new one is renamed in and deleted afterwards, so
    ``path`` is never a mix of the two. The temporary folder is made with the process's umask, like any folder the
    writer would make itself (``tempfile.mkdtemp`` would make it private to the owner)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        writer(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old"
            if old.exists():  # left by a process killed between the two renames
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # the save is complete; a leftover is removed by the next one
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def rng_state() -> dict:
    """Python, numpy and torch global RNG states (to make a resumed run bitwise equal to an uninterrupted one), as
    tensors and plain values (loadable with ``weights_only=True``)."""
    import torch
    np_state = np.random.get_state(legacy=False)
    numpy = {"bit_generator": np_state["bit_generator"],
             "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": int(np_state["state"]["pos"]),
             "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}
    return {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    import torch
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and tensors, recursively (what ``weights_only`` loading reads)."""
    import torch
    if isinstance(obj, dict):
        return type(obj)((k, _plain(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):  # not subclasses (torch.Size, named tuples): kept as they are
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    return obj


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Atomically ``torch.save`` a training state dict (tensors and plain Python values only)."""
    import torch
    _atomic_file(path, lambda tmp: torch.save(_plain(state), tmp))


def load_state(path: str | os.PathLike, log: Callable[[str], None] = print,
               fingerprint: str | None = None) -> dict | None:
    """Load a state saved by :func:`save_state`, or ``None`` when there is none or it cannot be read safely, or,
    when ``fingerprint`` is given, when it was written for other params or upstream inputs.

    Only tensors and plain values are unpickled (``weights_only=True``); a truncated or damaged file, or one that
    would need arbitrary code to load, is reported with ``log`` (one line naming it) and ignored, so the stage
    starts fresh instead of failing at every rerun."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"step", "fingerprint", "log"} <= set(state):
            raise ValueError("not a training state written by save_state")
    except Exception as e:  # EOFError, RuntimeError, UnpicklingError, ...: all mean "not usable"
        msg = " ".join(str(e).split())
        log(f"ignoring unreadable checkpoint {path} ({type(e).__name__}: {msg[:160]}); starting fresh")
        return None
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        log(f"ignoring checkpoint {path}: written for other params or upstream inputs; starting fresh")
        return None
    return state


def content_hash(*paths: str | os.PathLike) -> str:
    """SHA-256 of the names and bytes of every file under ``paths`` (files or folders, in the given order; a
    missing path hashes as missing). Resume fingerprints include it, so a checkpoint trained against one upstream
    artifact is never resumed against another."""
    h = hashlib.sha256()
    for root in map(Path, paths):
        if not root.exists():
            h.update(b"missing\0")
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        h.update(f"root:{len(files)}\0".encode())
        for f in files:
            rel = f.name if f == root else f.relative_to(root).as_posix()
            h.update(f"{rel}:{f.stat().st_size}\0".encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


HASHES = "sha256.json"
"""The file of a saved model folder that records the SHA-256 of every other file in it (:func:`record_hashes`)."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record_hashes(folder: str | os.PathLike) -> None:
    """Write :data:`HASHES` into ``folder``: the SHA-256 of each of its files, so that a file changed in place
    (same size, valid header: only its bytes differ) is caught when the folder is read (:func:`hash_mismatch`)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != HASHES)
    (folder / HASHES).write_text(json.dumps({p.relative_to(folder).as_posix(): _sha256(p) for p in files},
                                            indent=1) + "\n")


def hash_mismatch(folder: str | os.PathLike) -> tuple[Path, str] | None:
    """The first file of a folder written with :func:`record_hashes` whose bytes are not the ones recorded when it
    was saved, and why; None when all match. A folder without the record is reported too (it was not saved by
    this code, or the record was lost)."""
    folder = Path(folder)
    record = folder / HASHES
    if not record.is_file():
        return record, "missing: the folder records no file hashes (not saved by this version's save functions)"
    try:
        hashes = json.loads(record.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        return record, f"unreadable ({type(e).__name__}: {e})"
    for name, digest in hashes.items():
        f = folder / name
        if not f.is_file():
            return f, f"missing (recorded in {HASHES})"
        if _sha256(f) != digest:
            return f, f"SHA-256 differs from the one {HASHES} recorded when it was saved (changed in place)"
    return None


def damaged_file(path: str | os.PathLike) -> str | None:
    """Why a file written by a stage cannot be read (cut short or not parseable), or None if it looks whole.

    Checked without loading the content: a safetensors file's JSON header and that the file is exactly as long as
    the header says; a JSON file parses; an Arrow stream (``datasets.save_to_disk``) reads to its end."""
    path = Path(path)
    size = path.stat().st_size
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    return f"{size} bytes, shorter than a safetensors header"
                n = int.from_bytes(head, "little")
                if n > size - 8:
                    return f"header of {n} bytes in a {size}-byte file"
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if size != 8 + n + end:
                return f"{size} bytes where the header describes {8 + n + end}"
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".arrow":
            import pyarrow as pa

            with pa.memory_map(str(path)) as src:
                pa.ipc.open_stream(src).read_all()
    except (ValueError, KeyError, TypeError, OSError) as e:  # json, UnicodeDecodeError, pyarrow.ArrowInvalid
        return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    return None


def damaged(path: str | os.PathLike) -> tuple[Path, str] | None:
    """The first damaged file under ``path`` (a file or a folder) and why (:func:`damaged_file`; in a folder that
    records its files' hashes, also :func:`hash_mismatch`), or None."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        why = damaged_file(f)
        if why is not None:
            return f, why
    if path.is_dir() and (path / HASHES).is_file():
        return hash_mismatch(path)
    return None
