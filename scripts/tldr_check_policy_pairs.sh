#!/usr/bin/env bash
# After scripts/tldr_check.sh: the same run's policies judged again by a held-out judge that also learned from
# rater-labelled comparisons of trained policies' summaries, as the human TL;DR comparisons hold summaries of trained
# policies besides the SFT model's. Only the held-out judge changes: the run's SFT, PM, RM and policies are copied,
# not trained again.
#
#   1. python -m nlhf export-policy-comparisons: a copy of the run's export whose judge file adds PAIRS comparisons
#      on the RL prompts (never the evaluation prompts), each summary written by one of the run's policies (SFT and
#      the trained ones, drawn uniformly for each side), labelled by the export's raters (votes on P*);
#   2. the data stage reads the new judge file, the oracle stage fits the held-out judge on it at the same recipe,
#      and the eval stage judges the same evaluation samples with it, with the training PM and with P*.
#
#   BASE=tldr_check scripts/tldr_check_policy_pairs.sh      # results in results/tldr_check_policy_pairs/
#
# Knobs: BASE [tldr_check] the tldr_check.sh run (NAME there); NAME [<BASE>_policy_pairs]; PAIRS [20000];
# WRITERS [every policy of the run's table] the policies whose summaries are compared (leave one out to see whether
# the judge learns its kind of text from the others'); SEED [0] draws the prompts, writers, samples and labels;
# PY [.venv/bin/python].
# results/<NAME>/ holds what this run writes (data, oracle, eval), its params, and a copy of the base run's stage
# metrics (which the eval stage checks its inputs against); the training curves are the base run's, in
# results/<BASE>/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BASE=${BASE:-tldr_check}
NAME=${NAME:-${BASE}_policy_pairs}
PAIRS=${PAIRS:-20000}
SEED=${SEED:-0}
WRITERS=${WRITERS:-}
export TOKENIZERS_PARALLELISM=false
[ -f "results/$BASE/metrics/eval.json" ] || { echo "error: results/$BASE/metrics/eval.json: run" \
    "NAME=$BASE scripts/tldr_check.sh first" >&2; exit 1; }
[ -e "artifacts/$NAME" ] && { echo "error: artifacts/$NAME exists (a run of this script; remove it to redo it)" >&2
                              exit 1; }

echo "[policy_pairs] the base run's artifacts and stage metrics -> artifacts/$NAME, results/$NAME/metrics"
mkdir -p "artifacts/$NAME"
for d in artifacts/"$BASE"/*; do
  case "$(basename "$d")" in export|synthetic|run) ;; *) cp -a "$d" "artifacts/$NAME/" ;; esac
done
mkdir -p "artifacts/$NAME/run/profiles"
cp "artifacts/$BASE/run/profiles/"* "artifacts/$NAME/run/profiles/"
rm -rf "results/$NAME" && mkdir -p "results/$NAME" && cp -a "results/$BASE/metrics" "results/$NAME/metrics"

"$PY" -m nlhf export-policy-comparisons "artifacts/$NAME/export" --params "artifacts/$BASE/run/params.yaml" \
    --pairs "$PAIRS" --seed "$SEED" ${WRITERS:+--policies $WRITERS}
# the base run's params with this run's export (its judge file, and P*: the same task) and folders
"$PY" - "$BASE" "$NAME" <<'EOF'
import sys
from pathlib import Path
import yaml
base, name = sys.argv[1:]
text = Path(f"artifacts/{base}/run/params.yaml").read_text()
text = text.replace(f"artifacts/{base}/export", f"artifacts/{name}/export")
raw = yaml.safe_load(text)
raw["paths"] = {"artifacts": f"artifacts/{name}", "results": f"results/{name}"}
Path(f"artifacts/{name}/run/params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
EOF
echo "[policy_pairs] python -m nlhf run data oracle eval"
"$PY" -m nlhf run data oracle eval --params "artifacts/$NAME/run/params.yaml"
cp "artifacts/$NAME/run/params.yaml" "results/$NAME/params.yaml"
cp "artifacts/$NAME/export/manifest.json" "results/$NAME/export_manifest.json"
"$PY" - "results/$NAME/eval" <<'EOF'
import sys
from pathlib import Path
import pandas as pd
from nlhf.pipeline import plots
out = Path(sys.argv[1])
fig = plots.calibration(pd.read_csv(out / "judge_calibration.csv"), title="Judges against the test comparisons' labels")
fig.savefig(out / "judge_calibration.png", dpi=120)
EOF
echo "[policy_pairs] done: results/$NAME/eval/judge_gap.csv, results/$NAME/metrics/eval.json (judge_gap)"
