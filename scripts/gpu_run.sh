#!/usr/bin/env bash
# The one script for the GPU machine: install what is missing from wheels copied there, run the GPU benchmark
# (benchmarks/bench_gpu.py, anchor config, 32 and 128 new tokens) and the pipeline under the `gpu` profile within a
# wall-clock budget (each stage in its own process: `python -m nlhf run <stage>`), and put logs, metrics and tables
# into $OUT (a handful of files, listed below).
#
#   scripts/gpu_run.sh prepare     # on a machine with internet: wheels for the GPU machine's Python 3.12 into .wheels/
#   scripts/gpu_run.sh             # on the GPU machine, in the repo root (with .wheels/ copied along), $OUT set
#   PIPE_PROFILE=tldr scripts/gpu_run.sh   # the paper's setting: real/ (scripts/fetch_real.py) copied along too
#   SMOKE=1 OUT=/tmp/gpu_smoke scripts/gpu_run.sh   # CPU rehearsal: tiny bench on cpu, the gpu profile cut to the
#                                  # tiny profile's steps and sizes (nlhf.pipeline.rehearsal.cut_params), 2 methods
#   SMOKE=1 PIPE_PROFILE=tldr OUT=/tmp/tldr_smoke scripts/gpu_run.sh   # the same for tldr (sizes of tldr-tiny), on
#                                  # stand-ins of real/ when there is none
#
# What lands in $OUT: run.log (everything), bench.log, bench_gpu.json + bench_gpu.md (the benchmark), pipeline.log
# (every stage's output), pipeline_status.json (per stage: ok / failed / timeout / skipped, seconds), summary.md
# (bench table + stage table + the eval table and scorecard when eval ran), results.tar.gz (the pipeline's results/
# folder: metrics JSON, CSV and markdown tables; no models).
#
# Knobs (environment; defaults in brackets):
#   PY [python3; SMOKE: .venv/bin/python]  interpreter (the GPU image's python3 holds torch 2.11)
#   WHEELS [.wheels]          wheels copied to the machine; only those needed are installed, into /tmp/site (PYTHONPATH)
#   BUDGET_S [480]            wall clock for everything (install + bench + pipeline + packing)
#   BENCH_TIMEOUT_S [210]     hard limit of the benchmark
#   BENCH_ARGS [""]           extra bench_gpu.py flags (SMOKE: --device cpu --tiny)
#   PIPE_PROFILE [gpu]        params profile (gpu; tldr: TL;DR from real/, which must be in the repo root; the
#                             exact-judge ablation is left out, TL;DR has no exact judge)
#   REHEARSE_SIZES [""; SMOKE: tiny, tldr-tiny for tldr]  a profile whose steps and sizes replace PIPE_PROFILE's, on
#                             CPU (bf16 autocast kept; nlhf.pipeline.rehearsal); with a tldr profile and no real/,
#                             stand-ins are written
#   PIPE_METHODS ["RLHF SP MD1 BR"]  policies to train (params.yaml methods); eval covers SFT + those that finished
#   PIPE_STEPS_SCALE [0.5; SMOKE: 1]  multiplies sft/pm/rm/pg steps and the held-out judge's (tldr): 0.5 is a guess
#                             (no GPU timing yet) at what
#                             fits ~5 min next to the bench; 1 = the gpu profile as written (needs a bigger BUDGET_S)
#   EVAL_RESERVE_S [75]       a policy stage starts only if this much time is left for eval after it
#   PIPE_WORK [mktemp]        where the pipeline writes artifacts/ and results/ (never the repo's own)
#   SKIP_BENCH=1 / SKIP_PIPE=1
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS=${WHEELS:-.wheels}

# ------------------------------------------------------------------------------------------------ prepare (here)
if [ "${1:-}" = "prepare" ]; then
    # Pure-python wheels (plus multiprocess's py312 build) for what the GPU image may lack: trl and datasets (bench),
    # datasets, evaluate, rouge_score and tabulate (pipeline; pandas' to_markdown in the eval stage needs tabulate), and their
    # missing needs. Versions = requirements.lock. The folder is git-ignored (/.wheels/). ~4 MB.
    PIP_PY=${PIP_PY:-.venv-bench/bin/python}
    mkdir -p "$WHEELS"
    plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    "$PIP_PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
        "${plat[@]}" -d "$WHEELS" trl==1.13.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 nltk==3.10.4 \
        defusedxml==0.7.1 fsspec==2026.9.0 tabulate==0.10.0 evaluate==0.4.6 ${EXTRA_WHEELS:-} || exit 1
    # rouge_score 0.1.2 is an sdist only: build its (pure-python) wheel here
    "$PIP_PY" -m pip wheel --no-deps -w "$WHEELS" rouge_score==0.1.2 || exit 1
    ls -la "$WHEELS"
    du -sh "$WHEELS"
    exit 0
fi

# ------------------------------------------------------------------------------------------------ run
if [ -n "${SMOKE:-}" ]; then
    PY=${PY:-.venv/bin/python}   # the lock's venv; trl comes from .wheels like on the GPU machine
    BENCH_ARGS=${BENCH_ARGS:---device cpu --tiny}
    if [ "${PIPE_PROFILE:-gpu}" = tldr ]; then REHEARSE_SIZES=${REHEARSE_SIZES:-tldr-tiny}; fi
    REHEARSE_SIZES=${REHEARSE_SIZES:-tiny}
    PIPE_METHODS=${PIPE_METHODS:-RLHF MD1}
    PIPE_STEPS_SCALE=${PIPE_STEPS_SCALE:-1}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
PY=${PY:-python3}
case $PY in /*) ;; */*) PY=$ROOT/$PY ;; esac   # a relative interpreter path: from the repo root (stages run elsewhere)
BUDGET_S=${BUDGET_S:-480}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-210}
BENCH_ARGS=${BENCH_ARGS:-}
PIPE_PROFILE=${PIPE_PROFILE:-gpu}
REHEARSE_SIZES=${REHEARSE_SIZES:-}
PIPE_METHODS=${PIPE_METHODS:-RLHF SP MD1 BR}
PIPE_STEPS_SCALE=${PIPE_STEPS_SCALE:-0.5}
EVAL_RESERVE_S=${EVAL_RESERVE_S:-75}
TAIL_S=15            # kept for packing the outputs
MIN_STAGE_S=20       # a stage with less time than this left is skipped
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
PIPE_WORK=${PIPE_WORK:-$(mktemp -d /tmp/nlhf_gpu_run.XXXXXX)}
WORK=$(mktemp -d /tmp/nlhf_gpu_out.XXXXXX)   # scratch for the bench's own files
export PIPE_PROFILE PIPE_STEPS_SCALE REHEARSE_SIZES
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    TRL_EXPERIMENTAL_SILENCE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 MPLBACKEND=Agg
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET_S - TAIL_S))
left() { echo $((DEADLINE - $(date +%s))); }

install_wheels() {
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "[install] no wheels in $WHEELS: using what is installed"
        return 0
    fi
    # A small resolver over the copied wheels: roots = nlhf's own dependencies (pyproject.toml) + trl==1.13.0 +
    # tabulate (pandas' to_markdown, used by the eval stage, not declared in pyproject.toml);
    # a requirement already met by the installed packages is left alone, otherwise the copied wheel that meets it
    # is chosen (then its own requirements are checked the same way). Nothing is fetched; problems are printed.
    local plan
    plan=$("$PY" - "$WHEELS" <<'EOF'
import email, sys, tomllib, zipfile
import importlib.metadata as md
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon
from packaging.version import Version

wheels = {}
for w in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(w) as z:
        m = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    wheels[canon(m["Name"])] = (w, Version(m["Version"]), m.get_all("Requires-Dist") or [])

def installed(name):
    try:
        return Version(md.version(name))
    except md.PackageNotFoundError:
        return None

roots = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"] + ["trl==1.13.0", "tabulate"]
chosen, problems, todo, seen = {}, [], [(r, "nlhf/bench") for r in roots], set()
while todo:
    text, why = todo.pop(0)
    r = Requirement(text)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    name = canon(r.name)
    have = chosen[name][1] if name in chosen else installed(name)
    if have is not None and r.specifier.contains(have, prereleases=True):
        continue
    if name in wheels and r.specifier.contains(wheels[name][1], prereleases=True) and name not in chosen:
        chosen[name] = wheels[name]
        print(f"# {name} {wheels[name][1]} (installed: {have}; needed: {r} by {why})", file=sys.stderr)
        todo += [(q, name) for q in wheels[name][2]]
    else:
        problems.append(f"{r} (needed by {why}; installed {have}; copied wheel "
                        f"{wheels[name][1] if name in wheels else None})")
for p in problems:
    print(f"# WARNING unmet: {p}", file=sys.stderr)
print(" ".join(str(w) for w, _, _ in chosen.values()))
EOF
) || { echo "[install] resolver failed"; return 1; }
    if [ -z "$plan" ]; then
        echo "[install] everything needed is installed"
        return 0
    fi
    echo "[install] $plan"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $plan \
        || { echo "[install] pip failed"; return 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
}

# The params of this run, for `python -m nlhf run`: params.yaml with the profile overlay merged in (cut to the
# steps and sizes of REHEARSE_SIZES, on CPU, when set), the step counts scaled, no ablation for a task without an
# exact judge and, with EVAL_POLICIES set, eval.policies replaced and no ablation policies; written to
# $PIPE_WORK/<file> beside an empty profiles/<profile>.yaml. Its paths (artifacts, results) are relative to
# $PIPE_WORK, where the stages run.
PARAMS_PY='
import os, sys
from pathlib import Path
import yaml
from nlhf.config import read_params
from nlhf.pipeline.params import load_config
from nlhf.pipeline.rehearsal import cut_params
out, profile = Path(sys.argv[1]), os.environ["PIPE_PROFILE"]
raw = read_params("params.yaml", profile)
if os.environ.get("REHEARSE_SIZES"):
    raw = cut_params(raw, read_params("params.yaml", os.environ["REHEARSE_SIZES"]))
if raw["task"]["name"] == "tldr":  # no exact judge to train against
    raw["ablation"]["methods"], raw["ablation"]["seed_methods"] = [], {}
raw["paths"] = {"artifacts": "artifacts", "results": "results"}
scale = float(os.environ.get("PIPE_STEPS_SCALE", "1"))
if scale != 1:
    for sec in (raw["sft"], raw["pm"], raw["rm"], raw["pg"], raw["heldout_judge"]["fit"]):
        sec["steps"] = max(2, round(sec["steps"] * scale))
if os.environ.get("EVAL_POLICIES"):  # eval of these policies only: no exact-judge or second-seed policies
    raw["eval"]["policies"] = os.environ["EVAL_POLICIES"].split()
    raw["ablation"]["methods"], raw["ablation"]["seed_methods"] = [], {}
(out.parent / "profiles").mkdir(parents=True, exist_ok=True)
(out.parent / "profiles" / f"{profile}.yaml").write_text("")
out.write_text(yaml.safe_dump(raw, sort_keys=False))
cfg = load_config(out)
print(f"[params {out.name}] profile {cfg.profile}, runtime {cfg.runtime}, policy {cfg.policy_model}, "
      f"steps sft/pm/rm/pg {cfg.sft.steps}/{cfg.pm.steps}/{cfg.rm.steps}/{cfg.pg.steps}"
      + (f", eval policies {cfg.eval.policies}" if os.environ.get("EVAL_POLICIES") else ""), flush=True)
'
write_params() {  # write_params FILE: the params file $PIPE_WORK/FILE (see PARAMS_PY), its summary in pipeline.log
    "$PY" -c "$PARAMS_PY" "$PIPE_WORK/$1" >> "$OUT/pipeline.log" 2>&1
}

STATUS=$WORK/status.tsv
: > "$STATUS"
run_stage() {  # run_stage NAME STAGE PARAMS: `python -m nlhf run STAGE --params PARAMS` in $PIPE_WORK; appends
    # "NAME status rc seconds" to $STATUS
    local name=$1 stage=$2 params=$3
    local l; l=$(left)
    if [ "$l" -lt "$MIN_STAGE_S" ]; then
        echo "[pipeline] skip $name: ${l}s left"
        printf '%s\tskipped\t-\t0\n' "$name" >> "$STATUS"
        return 1
    fi
    echo "[pipeline] $name (limit ${l}s) $(date -u +%H:%M:%S)"
    echo "[stage $stage] python -m nlhf run $stage --params $params" >> "$OUT/pipeline.log"
    local t=$(date +%s) rc
    (cd "$PIPE_WORK" && exec timeout --kill-after=10 "$l" "$PY" -m nlhf run "$stage" --params "$params") \
        >> "$OUT/pipeline.log" 2>&1
    rc=$?
    local dt=$(( $(date +%s) - t )) st=ok
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && st=timeout
    [ $rc -ne 0 ] && [ "$st" = ok ] && st=failed
    printf '%s\t%s\t%s\t%s\n' "$name" "$st" "$rc" "$dt" >> "$STATUS"
    echo "[pipeline] $name: $st (rc $rc, ${dt}s)"
    [ $rc -eq 0 ]
}

main() {
    echo "[gpu_run] $(date -u +%FT%TZ) host $(uname -n) budget ${BUDGET_S}s, repo $ROOT," \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo n/a)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
        --format=csv || echo "[gpu_run] no nvidia-smi"
    install_wheels
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$ROOT"
    "$PY" - <<'EOF'
import importlib, sys
print("[gpu_run] python", sys.version.split()[0], sys.executable)
for m in ("torch", "transformers", "accelerate", "tokenizers", "huggingface_hub", "datasets", "pyarrow", "fsspec",
          "trl", "rouge_score", "nltk", "pandas", "numpy", "nlhf"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m} {getattr(mod, '__version__', '?')} {getattr(mod, '__file__', '')}")
    except Exception as e:
        print(f"  {m} NOT IMPORTABLE: {type(e).__name__}: {e}")
import torch
print("  cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

    # -- the benchmark
    if [ -z "${SKIP_BENCH:-}" ]; then
        local bl=$BENCH_TIMEOUT_S
        [ "$(left)" -lt "$bl" ] && bl=$(left)
        echo "[bench] bench_gpu.py $BENCH_ARGS (limit ${bl}s) $(date -u +%H:%M:%S)"
        local t=$(date +%s)
        # shellcheck disable=SC2086
        timeout --kill-after=10 "$bl" "$PY" benchmarks/bench_gpu.py --out "$WORK/bench" $BENCH_ARGS \
            > "$OUT/bench.log" 2>&1
        echo "[bench] rc $? in $(( $(date +%s) - t ))s"
        grep -E "^(device|config|max_new_tokens=|  T=)" "$OUT/bench.log"
        local j; j=$(ls "$WORK"/bench/bench_gpu_*.json 2>/dev/null | tail -1)
        if [ -n "$j" ]; then
            cp "$j" "$OUT/bench_gpu.json"
            cp "${j%.json}.md" "$OUT/bench_gpu.md"
        fi
    fi

    # -- the pipeline (gpu profile): data -> sft -> pm, rm -> oracle -> policies -> eval, each stage within the
    # deadline
    if [ -z "${SKIP_PIPE:-}" ]; then
        echo "[pipeline] profile $PIPE_PROFILE${REHEARSE_SIZES:+ at the sizes of $REHEARSE_SIZES (CPU rehearsal)}," \
            "methods: $PIPE_METHODS, steps x$PIPE_STEPS_SCALE, work $PIPE_WORK"
        : > "$OUT/pipeline.log"
        # a profile that reads local folders (tldr: ./real/...) reads them relative to $PIPE_WORK
        local standins_ok=1
        if [ -e "$PIPE_WORK/real" ]; then
            echo "[pipeline] $PIPE_WORK/real is there already: used as it is"
        elif [ -d "$ROOT/real" ]; then
            ln -s "$ROOT/real" "$PIPE_WORK/real"
        elif [ -n "$REHEARSE_SIZES" ] && [ "$PIPE_PROFILE" = tldr ]; then
            echo "[pipeline] no real/: stand-ins of what scripts/fetch_real.py fetches -> $PIPE_WORK/real"
            "$PY" -c "import sys; from nlhf.pipeline.rehearsal import write_fetch_standins as w; w(sys.argv[1])" \
                "$PIPE_WORK/real" >> "$OUT/pipeline.log" 2>&1 || standins_ok=0
            [ $standins_ok = 1 ] || { echo "[pipeline] the stand-ins failed (pipeline.log)";
                                      printf 'standins\tfailed\t1\t0\n' >> "$STATUS"; }
        fi
        local trained=""
        if [ $standins_ok = 1 ] && write_params params.yaml && run_stage data data params.yaml && run_stage sft sft params.yaml \
            && run_stage pm preference@pm params.yaml && run_stage rm preference@rm params.yaml \
            && run_stage oracle oracle params.yaml; then
            for m in $PIPE_METHODS; do
                if [ $(( $(left) - EVAL_RESERVE_S )) -lt "$MIN_STAGE_S" ]; then
                    echo "[pipeline] skip policy@$m: $(left)s left, ${EVAL_RESERVE_S}s kept for eval"
                    printf 'policy@%s\tskipped\t-\t0\n' "$m" >> "$STATUS"
                    continue
                fi
                run_stage "policy@$m" "policy@$m" params.yaml && trained="$trained $m"
            done
            if [ -n "$trained" ]; then
                local pols="SFT$trained"
                case " $trained " in *" EMA1 "*) pols="$pols EMA1*";; esac
                case " $trained " in *" EMA2 "*) pols="$pols EMA2*";; esac
                EVAL_POLICIES="$pols" write_params params_eval.yaml && run_stage eval eval params_eval.yaml
            fi
        fi
        [ -d "$PIPE_WORK/results" ] && tar czf "$OUT/results.tar.gz" -C "$PIPE_WORK" results
    fi

    # -- the status JSON and the summary
    "$PY" - "$STATUS" "$OUT" "$PIPE_WORK" <<'EOF'
import json, sys
from pathlib import Path
from nlhf.pipeline.layout import Layout
status, out, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
layout = Layout(work / "artifacts", work / "results")
rows = [dict(zip(("stage", "status", "rc", "seconds"), l.split("\t"))) for l in status.read_text().splitlines() if l]
(out / "pipeline_status.json").write_text(json.dumps(rows, indent=1))
md = ["# GPU run summary", ""]
bench = out / "bench_gpu.md"
md += [bench.read_text() if bench.exists() else "(no benchmark table: see bench.log)", ""]
if rows:
    md += ["## Pipeline stages", "", "| stage | status | seconds | runtime_s (timings) |", "|---|---|---|---|"]
    for r in rows:
        t = layout.timings(r["stage"])
        rt = json.loads(t.read_text()).get("runtime_s") if t.exists() else None
        md.append(f"| {r['stage']} | {r['status']} | {r['seconds']} | {rt if rt is not None else ''} |")
    md.append("")
for f in ("table_exact.md", "scorecard_exact.md", "table_heldout.md", "scorecard_heldout.md", "table_llm.md",
          "table_pm.md"):
    p = layout.results("eval", f)
    if p.exists():
        md += [f"## eval/{f}", "", p.read_text(), ""]
ev = layout.metrics("eval")
if ev.exists():
    md += ["## eval headline", "", "```", json.dumps(json.loads(ev.read_text()).get("headline"), indent=1), "```"]
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
    echo "[gpu_run] done in $(( $(date +%s) - T0 ))s; files in $OUT:"
    ls -la "$OUT"
}

main 2>&1 | tee "$OUT/run.log"
