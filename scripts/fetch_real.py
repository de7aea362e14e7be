"""Fetch what the paper's own setting needs, on a machine with internet, into one folder (default ``real/``) that
profile ``tldr`` reads offline:

    python scripts/fetch_real.py real            # data, policy, scorer bodies, LLM judge; revisions pinned
    # then, offline (set `profile: tldr` and `ablation.methods: []` in params.yaml):
    dvc repro

What it fetches (``huggingface_hub.snapshot_download`` at a commit):

| folder | Hub repository | what |
|---|---|---|
| ``data/tldr`` | dataset ``trl-lib/tldr`` | SFT rows (prompt, completion): train / validation / test |
| ``data/comparisons`` | dataset ``openai/summarize_from_feedback``, its parquet conversion | the human comparisons |
| ``models/policy`` | ``EleutherAI/pythia-410m-deduped`` (``--policy``) | the policy's starting point (SFT trains it) |
| ``models/scorer`` | ``EleutherAI/pythia-160m-deduped`` (``--scorer``) | the body of the PM, the RM and the held-out judge |
| ``models/judge`` | ``Qwen/Qwen2.5-1.5B-Instruct`` (``--judge``) | the LLM judge (``eval.llm_judge``) |

Pinning: each repository's branch is resolved to its commit the first time and the commit written to
``revisions.json``; every later run downloads that commit (``--update`` resolves the branches again). The policy and
scorer folders get the pad and sep tokens the pipeline needs (``python -m nlhf prepare-model``); policy and scorer
must share a tokenizer (same family), the judge need not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (repository, repo type, branch resolved on first fetch)
SOURCES = {
    "data/tldr": ("trl-lib/tldr", "dataset", "main"),
    "data/comparisons": ("openai/summarize_from_feedback", "dataset", "refs/convert/parquet"),
    "models/policy": ("EleutherAI/pythia-410m-deduped", "model", "main"),
    "models/scorer": ("EleutherAI/pythia-160m-deduped", "model", "main"),
    "models/judge": ("Qwen/Qwen2.5-1.5B-Instruct", "model", "main"),
}
PREPARED = ("models/policy", "models/scorer")  # they need pad and sep tokens


def fetch(out: Path, sources: dict = SOURCES, update: bool = False, api=None, download=None) -> dict:
    """Download every source at its pinned commit into ``out/<name>``; returns and writes ``out/revisions.json``
    ({name: {repo, type, branch, commit}})."""
    if api is None or download is None:
        from huggingface_hub import HfApi, snapshot_download

        api, download = api or HfApi(), download or snapshot_download
    out.mkdir(parents=True, exist_ok=True)
    pins_file = out / "revisions.json"
    pins = json.loads(pins_file.read_text()) if pins_file.is_file() else {}
    for name, (repo, kind, branch) in sources.items():
        pin = pins.get(name)
        if update or pin is None or pin["repo"] != repo:
            commit = api.repo_info(repo, repo_type=kind, revision=branch).sha
            pin = {"repo": repo, "type": kind, "branch": branch, "commit": commit}
        print(f"[fetch] {name}: {repo} ({kind}) at {pin['commit']}", flush=True)
        download(repo_id=repo, repo_type=kind, revision=pin["commit"], local_dir=str(out / name))
        pins[name] = pin
        pins_file.write_text(json.dumps(pins, indent=1) + "\n")  # after each download: a rerun resumes pinned
    for name in PREPARED:
        if name in sources:
            from nlhf.models.local import add_pipeline_tokens

            added = add_pipeline_tokens(out / name)
            print(f"[fetch] {name}: " + (f"added {', '.join(added)}" if added else "has pad and sep"), flush=True)
    return pins


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="real", help="the folder (default: real, as profiles/tldr.yaml reads)")
    ap.add_argument("--policy", help=f"policy repository (default {SOURCES['models/policy'][0]})")
    ap.add_argument("--scorer", help=f"scorer body repository, same tokenizer family as the policy "
                                     f"(default {SOURCES['models/scorer'][0]})")
    ap.add_argument("--judge", help=f"LLM judge repository (default {SOURCES['models/judge'][0]})")
    ap.add_argument("--update", action="store_true", help="resolve every branch again (new commits)")
    a = ap.parse_args(argv)
    sources = dict(SOURCES)
    for key, repo in (("models/policy", a.policy), ("models/scorer", a.scorer), ("models/judge", a.judge)):
        if repo:
            sources[key] = (repo, "model", "main")
    fetch(Path(a.out), sources, a.update)
    print(f"[fetch] done: {a.out}/revisions.json pins every commit; offline: profile tldr, ablation.methods: [], "
          "dvc repro")
    return 0


if __name__ == "__main__":
    sys.exit(main())
