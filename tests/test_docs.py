"""The README and Makefile say only what is so: paths exist, quoted results match the committed files they cite.

Conventions the README follows (so its numbers can be checked):

* a table whose last two header cells are ``source | key`` is a list of claims: the cell before ``source`` is the
  value as written, ``source`` names the file(s) in inline code and ``key`` where in the file the value is —
  a dotted path for JSON, ``ROW:COLUMN`` for a CSV (first column = ROW) or a markdown table, ``sum(k)`` sums ``k``
  over the files a glob names; a range ``a–b`` over a glob is the min and max over the files;
* a table preceded by ``<!-- check-columns: SPEC | SPEC ... -->`` checks each of its cells (after the first column,
  the row name) against ``SPEC = path#key``, where ``<ROW>`` in the path is the row name and the key is a dotted
  JSON path or, for a CSV / markdown file, the column (the row being the row name);
* every decimal number in the prose of the results section is one of the values those tables check.

Numbers are compared as rounded where written (0.483 matches 0.48295); ``x%`` is ``x/100``, ``s`` seconds,
``min`` minutes of a value in seconds.
"""

from __future__ import annotations

import csv
import fnmatch
import importlib.metadata as md
import json
import re
import subprocess
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PATH_PREFIXES = ("results/", "docs/", "notebooks/", "nlhf/", "profiles/", "benchmarks/", "scripts/", "tests/")
ROOT_FILES = {"params.yaml", "dvc.yaml", "dvc.lock", "Makefile", "LICENSE", "CITATION.cff", "pyproject.toml",
              "requirements.lock", "environment.yml", "README.md"}


# ---------------------------------------------------------------------------------------------------- helpers
@lru_cache(maxsize=1)
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def repo_files() -> tuple[str, ...]:
    """Files a fresh clone would have: tracked plus untracked-but-not-ignored (git-ignored outputs excluded)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return tuple(str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts)
    return tuple(f for f in out.splitlines() if (ROOT / f).exists())


def expand(pattern: str) -> list[str]:
    """Brace alternatives and placeholders: <METHOD> (the methods of the pipeline variant the path names),
    <population> (oracle populations); any other <...> becomes a glob."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m:
        return [q for alt in m.group(1).split(",") for q in expand(pattern[:m.start()] + alt + pattern[m.end():])]
    p = params()
    if "<METHOD>" in pattern:
        names = (p["ablation"]["methods"] if "_exact" in pattern else
                 list(p["ablation"]["seed_methods"]) if "_seed" in pattern else list(p["methods"]))
        return [q for n in names for q in expand(pattern.replace("<METHOD>", n))]
    if "<population>" in pattern:
        return [q for n in p["oracle"]["populations"] for q in expand(pattern.replace("<population>", n))]
    return [re.sub(r"<[^<>]+>", "*", pattern)]


def matches(pattern: str) -> list[str]:
    pat = pattern.rstrip("/")
    return sorted(f for f in repo_files() if fnmatch.fnmatchcase(f, pat) or fnmatch.fnmatchcase(f, pat + "/*"))


def strip_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def doc_paths(name: str = "README.md") -> set[str]:
    """Repository paths a markdown file names in inline code (repository-relative) or links (file-relative)."""
    text = re.sub(r"<!--.*?-->", "", strip_fences((ROOT / name).read_text(encoding="utf-8")), flags=re.S)
    folder = Path(name).parent
    found = set()
    for line in text.splitlines():
        base = None  # a bare file name (`table.md`) is read in the folder of the line's first path
        for span in re.findall(r"`([^`\n]+)`", line):
            for tok in re.split(r"\s+|,(?![^{}]*\})", span):  # commas inside {a,b} alternatives stay
                tok = tok.strip("()[]:;'\"")
                tok = re.sub(r"^([^:]+\.\w+):.*", r"\1", tok)  # `dvc exp run -S file.yaml:key=value`
                if tok.startswith(PATH_PREFIXES) or tok in ROOT_FILES:
                    found.add(tok)
                    base = base or (tok if tok.endswith("/") else tok.rsplit("/", 1)[0] + "/")
                elif base and "/" in base and re.fullmatch(r"[\w.*-]+\.(md|png|csv|json|ipynb)", tok):
                    found.add(base + tok)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:|#", target):
            found.add((folder / target.split("#")[0]).as_posix())
    return found


def split_row(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def md_tables(text: str):
    """(check-columns comment or None, header cells, body rows) of every markdown table in ``text``."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|\s*:?-", lines[i + 1]):
            prev = lines[i - 1].strip() if i else ""
            m = re.match(r"<!--\s*check-columns:(.*?)-->", prev)
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append((m.group(1) if m else None, split_row(lines[i]), [split_row(r) for r in lines[i + 2:j]]))
            i = j
        else:
            i += 1
    return out


def dig(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def lookup(path: str, key: str):
    """The value at ``key`` of one file (see the module docstring)."""
    f = ROOT / path
    assert f.is_file(), f"{path} does not exist"
    if f.suffix == ".json":
        return dig(json.loads(f.read_text(encoding="utf-8")), key)
    row, col = key.rsplit(":", 1)
    if f.suffix == ".csv":
        with f.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        header = rows[0]
        cells = [r for r in rows[1:] if r and r[0] == row]
    else:  # markdown table
        (_, header, body), = md_tables(f.read_text(encoding="utf-8"))
        cells = [r for r in body if r and r[0] == row]
    assert cells, f"{path}: no row {row!r}"
    assert col in header, f"{path}: no column {col!r} (columns: {header})"
    return cells[0][header.index(col)]


def lookup_many(source: str, key: str):
    """One value, or for a glob / brace / placeholder source the list of values (``sum(k)``: their sum)."""
    summed = re.fullmatch(r"sum\((.+)\)", key)
    key = summed.group(1) if summed else key
    if not re.search(r"[*{<]", source):
        return lookup(source, key)
    files = [f for q in expand(source) for f in matches(q)]
    assert files, f"{source} matches no file"
    values = [float(lookup(f, key)) for f in files]
    return sum(values) if summed else values


NUM = r"-?\d+(?:\.\d+)?"


def close(written: str, actual, scale: float = 1.0) -> bool:
    decimals = len(written.split(".")[1]) if "." in written else 0
    return abs(float(actual) * scale - float(written)) <= 0.5 * 10 ** -decimals + 1e-9


def check_value(written: str, actual, where: str) -> None:
    w = written.strip().replace(",", "")
    if w in ("—", "-", ""):
        return
    scale = 1.0
    for unit, s in (("%", 100.0), (" min", 1 / 60), (" s", 1.0)):
        if w.endswith(unit):
            w, scale = w[: -len(unit)].strip(), s
    if isinstance(actual, bool) or w in ("yes", "no"):
        assert actual is (w == "yes"), f"{where}: README says {written!r}, the file has {actual!r}"
        return
    if "±" in w:
        p, ci = (x.strip() for x in w.split("±"))
        if isinstance(actual, str):
            a_p, a_ci = (x.strip() for x in actual.split("±"))
        else:
            a_p, a_ci = actual["p"], actual.get("ci95", actual.get("ci"))
        assert close(p, a_p, scale) and close(ci, a_ci, scale), \
            f"{where}: README says {written!r}, the file has {a_p} ± {a_ci}"
        return
    rng = re.fullmatch(rf"({NUM})\s*–\s*({NUM})", w)
    if rng:
        assert isinstance(actual, list), f"{where}: a range needs a glob source"
        lo, hi = min(actual), max(actual)
        assert close(rng.group(1), lo, scale) and close(rng.group(2), hi, scale), \
            f"{where}: README says {written!r}, the files give {lo}–{hi}"
        return
    if re.fullmatch(NUM, w):
        try:
            value = float(actual)
        except (TypeError, ValueError):
            pytest.fail(f"{where}: README says {written!r}, the file has {actual!r}")
        assert close(w, value, scale), f"{where}: README says {written!r}, the file has {actual!r}"
        return
    assert str(actual).strip() == written.strip(), f"{where}: README says {written!r}, the file has {actual!r}"


def checked_cells() -> list[tuple[str, str, str, str]]:
    """(written value, source, key, where) for every checked cell of the README."""
    out = []
    for spec, header, body in md_tables(README):
        if header[-2:] == ["source", "key"]:
            for row in body:
                values = [v.strip() for v in row[-3].split(" / ")]
                sources = re.findall(r"`([^`]+)`", row[-2])
                keys = re.findall(r"`([^`]+)`", row[-1])
                assert sources and keys, f"claim {row[0]!r}: name its source and key in inline code"
                sources = sources * len(values) if len(sources) == 1 else sources
                keys = keys * len(values) if len(keys) == 1 else keys
                assert len(sources) == len(values) == len(keys), f"claim {row[0]!r}: values, sources, keys differ"
                out += [(v, s, k, f"README claim {row[0]!r}") for v, s, k in zip(values, sources, keys)]
        elif spec is not None:
            specs = [s.strip() for s in spec.split("|")]
            assert len(specs) == len(header) - 1, f"check-columns comment of table {header}: one spec per column"
            for row in body:
                for s, cell in zip(specs, row[1:]):
                    path, key = s.split("#", 1)
                    path = path.replace("<ROW>", row[0])
                    if not path.endswith(".json"):
                        key = f"{row[0]}:{key}"
                    out.append((cell, path, key, f"README table {header[0]!r}, row {row[0]!r}, {s}"))
    return out


def results_section() -> str:
    m = re.search(r"^## Results.*?(?=^## )", README, flags=re.S | re.M)
    assert m, "README has no '## Results' section"
    return m.group(0)


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", ["README.md"] + sorted(p.relative_to(ROOT).as_posix()
                                                       for p in (ROOT / "docs").glob("*.md")))
def test_doc_paths_exist(name):
    paths = doc_paths(name)
    assert name != "README.md" or len(paths) > 20, f"found only {sorted(paths)}"
    missing = [f"{p} ({q})" for p in sorted(paths) for q in expand(p) if not matches(q)]
    assert not missing, f"{name} names paths a fresh clone does not have: {missing}"


def reproduce_echo_paths() -> list[str]:
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("reproduce:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    paths = []
    for line in recipe:
        if "echo" not in line:
            continue
        base = None
        for tok in re.split(r"[\s,]+", line.split("echo", 1)[1]):
            tok = tok.strip("\"'():;")
            if "$(" in tok or not tok:
                continue
            if "/" in tok and tok.startswith(PATH_PREFIXES):
                paths.append(tok)
                base = tok.rstrip("/").rsplit("/", 1)[0]
            elif base and re.fullmatch(r"[\w.*<>-]+\.(md|png|csv|json|ipynb)", tok):
                paths.append(f"{base}/{tok}")
    return paths


def test_make_reproduce_echoes_paths_that_exist():
    paths = reproduce_echo_paths()
    assert len(paths) >= 3, f"found only {paths} in the reproduce target's echo lines"
    missing = [f"{p} ({q})" for p in paths for q in expand(p) if not matches(q)]
    assert not missing, f"`make reproduce` points to paths that do not exist: {missing}"


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README))
    assert named and named <= targets, f"README names make targets the Makefile lacks: {named - targets}"


def test_readme_numbers_match_their_files():
    cells = checked_cells()
    assert len(cells) > 40, f"only {len(cells)} checked numbers"
    errors = []
    for written, source, key, where in cells:
        try:
            check_value(written, lookup_many(source, key), f"{where} ({source} {key})")
        except (AssertionError, KeyError, ValueError, pytest.fail.Exception) as e:
            errors.append(str(e).split("\nassert")[0] if where in str(e) else f"{where} ({source} {key}): {e!r}")
    assert not errors, "README numbers that do not match their files:\n" + "\n".join(errors)


def test_results_prose_numbers_are_checked():
    checked = {n for w, *_ in checked_cells() for n in re.findall(r"\d+\.\d+", w)}
    prose = re.sub(r"<!--.*?-->|`[^`\n]*`", "", results_section(), flags=re.S)
    prose = "\n".join(l for l in prose.splitlines() if not l.startswith("|"))
    # parameter values (β = 0.125, β ≤ 0.75) are not results
    unchecked = [n for pre, n in re.findall(r"([βτ]\s*[=≤≥<>]\s*)?(\d+\.\d+)", prose) if not pre and n not in checked]
    assert not unchecked, f"numbers in the results prose that no table checks against a file: {unchecked}"


def test_glossary_matches_params():
    methods = params()["methods"]
    md_betas = ", ".join(f"{methods[f'MD{i}']['beta']:g}" for i in range(1, 7))
    assert f"β = {md_betas}" in README, f"the glossary should give MD1–MD6 as β = {md_betas}"
    assert f"β = {methods['EMA1']['ema_beta']:g} and {methods['EMA2']['ema_beta']:g}" in README
    assert f"τ = {methods['IPO']['tau']:g}" in README
    assert f"τ = {methods['RLHF']['tau']:g}" in README and f"τ = {methods['SP']['tau']:g}" in README
    assert methods["SP"]["beta"] == 0 and methods["BR"]["beta"] == 1


# (?i) where case does not matter; the note files outside the repository are named in capitals (docs/paper.md is ours)
WORKSHOP = [r"(?i)\blent\b", r"(?i)\bcarr(?:y|ied)\b", r"(?i)\bsessions?\b", r"PAPER\.md", r"DESIGN\.md", r"/work/",
            r"(?<![\w&/#])#\d+\b"]


@pytest.mark.parametrize("name", ["README.md", "docs/*.md", "scripts/gpu_run.sh", "CITATION.cff"])
def test_no_workshop_words(name):
    files = sorted(ROOT.glob(name))
    assert files, name
    for f in files:
        text = f.read_text(encoding="utf-8")
        for pat in WORKSHOP:
            hits = [m.group(0) for m in re.finditer(pat, text)]
            assert not hits, f"{f.relative_to(ROOT)}: {hits} ({pat}) only makes sense inside the project's workshop"


def min_python(specs) -> str | None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    sets = [SpecifierSet(s) for s in specs]
    for v in (f"3.{m}.{p}" for m in range(8, 16) for p in range(40)):
        if all(Version(v) in s for s in sets):
            return v
    return None


def test_requires_python_matches_the_lock():
    """pyproject's requires-python admits exactly the Pythons every pinned package of the lock installs on."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = dict(l.split("==", 1) for l in (ROOT / "requirements.lock").read_text().split() if "==" in l)
    specs, seen = [], 0
    for name, version in pins.items():
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        seen += 1
        if dist.metadata.get("Requires-Python"):
            specs.append(dist.metadata["Requires-Python"])
    if seen < len(pins) // 2:
        pytest.skip(f"only {seen} of {len(pins)} locked packages installed at their pinned version")
    assert min_python([project["requires-python"]]) == min_python(specs), (
        f"pyproject requires-python {project['requires-python']!r}; the lock's packages need >= {min_python(specs)}")


def test_bibtex_matches_citation_cff():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))["preferred-citation"]
    bib = re.search(r"```bibtex\n(.*?)```", README, flags=re.S)
    assert bib, "README has no ```bibtex block"
    fields = {k: " ".join(v.split()) for k, v in re.findall(r"(\w+)\s*=\s*\{((?:[^{}]|\{[^{}]*\})*)\}", bib.group(1))}
    latex = {r"{\'e}": "é", r"{\^o}": "ô", r"{\"o}": "ö"}
    authors = fields["author"]
    for k, v in latex.items():
        authors = authors.replace(k, v)
    names = [a.strip() for a in authors.split(" and ")]
    want = [f"{a['family-names']}, {a['given-names']}" for a in cff["authors"]]
    assert names == want, f"BibTeX authors differ from CITATION.cff:\n{names}\n{want}"
    assert fields["title"] == cff["title"] and fields["year"] == str(cff["year"])
    assert fields["url"] == cff["url"] == "https://arxiv.org/abs/2312.00886"
    assert fields["booktitle"] == cff["collection-title"]
