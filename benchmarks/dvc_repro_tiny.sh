#!/usr/bin/env bash
# Wall time of `dvc repro` on the tiny profile at a commit (the end-to-end test's configuration: profile tiny,
# exact-judge ablation RLHF SP EMA1 IPO), in a scratch clone, beside the sum of the stages' own runtimes
# (results/timings/): the difference is what running a stage costs besides its work (DVC, papermill, the kernel,
# imports, plots). Two commits, one after the other, compare that overhead.
#
#   benchmarks/dvc_repro_tiny.sh REV [REV ...]     # appends a line per commit to benchmarks/results/dvc_repro_tiny.txt
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$ROOT/.venv/bin:$PATH" OMP_NUM_THREADS=1
for rev in "$@"; do
  work=$(mktemp -d)
  git clone -q "$ROOT" "$work/repo" && cd "$work/repo" && git checkout -q "$rev"
  rm -rf results/* dvc.lock
  python - <<'PY'
import yaml
p = yaml.safe_load(open("params.yaml"))
p["profile"] = "tiny"
p["ablation"]["methods"] = ["RLHF", "SP", "EMA1", "IPO"]
open("params.yaml", "w").write(yaml.safe_dump(p, sort_keys=False))
PY
  git -c user.email=bench@localhost -c user.name=bench commit -qam "tiny profile"
  t0=$(date +%s)
  python -m dvc repro > "$work/repro.log" 2>&1
  wall=$(( $(date +%s) - t0 ))
  read -r n sum < <(python -c "import glob, json; t = [json.load(open(f))['runtime_s'] for f in glob.glob('results/timings/*.json')]; print(len(t), round(sum(t), 1))")
  line="$(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short "$rev"): wall $wall s, $n timed stages, their runtimes sum to $sum s, overhead $(( wall - ${sum%.*} )) s"
  echo "$line" | tee -a "$ROOT/benchmarks/results/dvc_repro_tiny.txt"
  cd "$ROOT" && rm -rf "$work"
done
