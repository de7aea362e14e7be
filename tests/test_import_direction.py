"""The library never imports the pipeline: no module of ``nlhf`` outside ``nlhf/pipeline/`` (and the ``python -m nlhf``
entry point) imports ``nlhf.pipeline``, and importing the library loads none of it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nlhf"
PIPELINE = PACKAGE / "pipeline"


def library_files() -> list[Path]:
    """The library's module files: every one under nlhf/ except the pipeline's and the entry point."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if PIPELINE not in p.parents and p != PACKAGE / "__main__.py")


def package_of(path: Path) -> str:
    """The dotted package a module file belongs to (``nlhf/tasks/base.py`` → ``nlhf.tasks``)."""
    return ".".join(path.relative_to(ROOT).parent.parts)


def pipeline_imports(tree: ast.AST, package: str = "nlhf") -> list[str]:
    """Every import in ``tree`` that names ``nlhf.pipeline`` (``import nlhf.pipeline...``,
    ``from nlhf.pipeline... import ...``, ``from nlhf import pipeline``; a relative import resolved against
    ``package``, the package of the file), as ``line: statement``."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        if any(n == "nlhf.pipeline" or n.startswith("nlhf.pipeline.") for n in names):
            hits.append(f"{node.lineno}: {ast.unparse(node)}")
    return hits


def test_the_check_sees_every_spelling():
    code = ("import nlhf.pipeline\nimport nlhf.pipeline.layout as L\nfrom nlhf import pipeline\n"
            "from nlhf.pipeline import stages\nfrom nlhf.pipeline.params import load_config\n"
            "import nlhf.pipelines_x, nlhf.tasks\nfrom nlhf import tasks\n")
    assert len(pipeline_imports(ast.parse(code))) == 5
    relative = "from ..pipeline import layout\nfrom . import pipeline\nfrom .. import judges\nfrom .layout import x\n"
    assert len(pipeline_imports(ast.parse(relative), "nlhf.tasks")) == 1
    assert len(pipeline_imports(ast.parse(relative), "nlhf")) == 1


def test_library_modules_do_not_import_the_pipeline():
    files = library_files()
    assert PACKAGE / "training" / "policy_gradient.py" in files and PACKAGE / "judges.py" in files
    hits = {str(f.relative_to(ROOT)): h for f in files
            if (h := pipeline_imports(ast.parse(f.read_text()), package_of(f)))}
    assert not hits, hits


def test_importing_the_library_loads_no_pipeline_module():
    code = ("import nlhf.training.policy_gradient, nlhf.judges, nlhf.oracle, nlhf.tasks, nlhf.models, nlhf.sampling; "
            "import sys; print(any(m.startswith('nlhf.pipeline') for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
