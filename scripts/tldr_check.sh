#!/usr/bin/env bash
# The real path checked where the truth is known: the synthetic task exported in the TL;DR schema, a GPT-2 and BPE
# built from config and saved as a local model folder, then every stage of the TL;DR path (profile synthetic-tldr:
# data, SFT, PM, RM, the held-out judge, the policies, eval) run by `python -m nlhf run`. The eval stage judges
# the table with the held-out judge, the training PM and the exported P*, and writes each judge's gap to P*
# (eval/judge_gap.csv; the summary in metrics/eval.json under judge_gap).
#
#   scripts/tldr_check.sh                 # the default recipe; results in results/tldr_check/ (about 1.5 h on 2 cores)
#   TINY=1 scripts/tldr_check.sh          # a rehearsal on the tiny profile's sizes (minutes; numbers meaningless)
#
# The export holds what the synthetic path's PM and RM learn from: the task's comparisons and the rater-labelled
# comparisons of a synthetic SFT policy's samples (the synthetic path's data and sft stages run first, in
# artifacts/<NAME>/synthetic, a few minutes; fresh ones of the same kind go to the held-out judge's file).
# SFT_COMPARISONS=0 exports the task's comparisons only. The held-out judge learns from as many fresh task pairs as
# the PM (task.synthetic.n_pref_judge = n_pref_train), at the PM's fit recipe.
#
# Knobs: METHODS ["RLHF SP MD1 BR"] the policies trained and judged (with SFT); JOBS [1] processes training the
# policies side by side (2 on two cores); NAME [tldr_check; TINY:
# tldr_check_tiny] the folder under artifacts/ and results/; SFT_COMPARISONS [1]; PY [.venv/bin/python]. Rerunning
# skips nothing (each training stage resumes from its last checkpoint when interrupted).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
METHODS=${METHODS:-RLHF SP MD1 BR}
JOBS=${JOBS:-1}
if [ -n "${TINY:-}" ]; then NAME=${NAME:-tldr_check_tiny}; SIZES=tiny; else NAME=${NAME:-tldr_check}; SIZES=cpu; fi
EXPORT=artifacts/$NAME/export
MODEL=artifacts/$NAME/local-model
SCORER=artifacts/$NAME/local-scorer
RUN=artifacts/$NAME/run   # the run's params file (profiles/ beside it)
export TOKENIZERS_PARALLELISM=false

echo "[tldr_check] export of the synthetic task ($SIZES sizes) -> $EXPORT"
mkdir -p "$RUN/profiles"
"$PY" - "$RUN" "$SIZES" "$NAME" <<'EOF'
import sys
from pathlib import Path
import yaml
from nlhf.config import read_params
run, sizes, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
raw = read_params("params.yaml", sizes)
raw["profile"] = "cpu"  # the overlay is merged in already
raw["paths"] = {"artifacts": f"artifacts/{name}/synthetic", "results": f"artifacts/{name}/synthetic/results"}
# the held-out judge learns from as many of the task's pairs as the training PM (the judge split is fresh pairs)
raw["task"]["synthetic"]["n_pref_judge"] = raw["task"]["synthetic"]["n_pref_train"]
(run / "synthetic.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
EOF
cp profiles/cpu.yaml "$RUN/profiles/cpu.yaml"
if [ "${SFT_COMPARISONS:-1}" != 0 ]; then
  echo "[tldr_check] the synthetic path's data and SFT (their comparisons of SFT samples go into the export)"
  "$PY" -m nlhf run data sft --params "$RUN/synthetic.yaml"
  "$PY" -m nlhf export-synthetic "$EXPORT" --params "$RUN/synthetic.yaml" --sft-comparisons
else
  "$PY" -m nlhf export-synthetic "$EXPORT" --params "$RUN/synthetic.yaml"
fi
# the policy's folder, and the scorers' (the same tokenizer and weights, block 0 with the query-key identity init)
for folder in "$MODEL" "$SCORER"; do
  qk=0; [ "$folder" = "$SCORER" ] && qk=1.0
  "$PY" -m nlhf local-model "$folder" --texts "$EXPORT/sft_train.jsonl" --vocab-size 1000 --n-layer 2 --n-embd 128 \
      --n-head 4 --n-positions 128 --qk-identity-init $qk
done

# params.yaml's recipe (at the chosen sizes) under the synthetic-tldr profile, pointed at this export and model
"$PY" - "$RUN" "$SIZES" "$EXPORT" "$MODEL" "$SCORER" "$NAME" "$METHODS" <<'EOF'
import sys
from pathlib import Path
import yaml
from nlhf.config import deep_merge, read_params
from nlhf.pipeline.params import load_config
run, sizes, export, model, scorer, name, methods = sys.argv[1:]
run = Path(run)
raw = read_params("params.yaml", sizes)
overlay = yaml.safe_load(Path("profiles/synthetic-tldr.yaml").read_text())
text = (yaml.safe_dump(overlay).replace("exports/synthetic-tldr", export)
        .replace("./models/synthetic-tldr-scorer", "./" + scorer).replace("./models/synthetic-tldr", "./" + model))
raw = deep_merge(raw, yaml.safe_load(text))
raw["profile"] = "cpu"  # the overlays are merged in already
raw["paths"] = {"artifacts": f"artifacts/{name}", "results": f"results/{name}"}
raw["methods"] = {m: raw["methods"][m] for m in methods.split()}
raw["ablation"]["methods"], raw["ablation"]["seed_methods"] = [], {}
raw["eval"]["policies"] = None
if sizes == "tiny":  # the tiny profile's synthetic sizes are for word tokens: keep the whole export small too
    raw["task"]["tldr"].update({"n_prompts_train": 200, "n_prompts_eval": 100})
    raw["heldout_judge"]["fit"].update(raw["pm"])  # the held-out judge at the PM's tiny recipe
    raw["heldout_judge"]["fit"]["seed"] = 1
(run / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
cfg = load_config(run / "params.yaml")
print(f"[tldr_check] {run / 'params.yaml'}: task {cfg.task.name}, policy {cfg.policy_model.name_or_path}, "
      f"methods {list(cfg.methods)}, eval judges heldout + pm + P* of {cfg.eval.synthetic_export}")
EOF
echo "[tldr_check] python -m nlhf run data sft preference@pm preference@rm oracle"
"$PY" -m nlhf run data sft preference@pm preference@rm oracle --params "$RUN/params.yaml"
# the policies in JOBS processes, the methods dealt round-robin (each stage's result does not depend on the others)
read -r -a methods <<< "$METHODS"
pids=()
for ((j = 0; j < JOBS; j++)); do
  group=()
  for ((i = j; i < ${#methods[@]}; i += JOBS)); do group+=("policy@${methods[i]}"); done
  [ ${#group[@]} -eq 0 ] && continue
  echo "[tldr_check] python -m nlhf run ${group[*]}"
  "$PY" -m nlhf run "${group[@]}" --params "$RUN/params.yaml" & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done   # set -e: a failed group stops the script here
"$PY" -m nlhf run eval --params "$RUN/params.yaml"
cp "$RUN/params.yaml" "results/$NAME/params.yaml"   # the run's params beside its results
# each judge's calibration against the raters' labels of the test comparisons (the eval notebook draws the same)
"$PY" - "results/$NAME/eval" <<'EOF'
import sys
from pathlib import Path
import pandas as pd
from nlhf.pipeline import plots
out = Path(sys.argv[1])
fig = plots.calibration(pd.read_csv(out / "judge_calibration.csv"), title="Judges against the test comparisons' labels")
fig.savefig(out / "judge_calibration.png", dpi=120)
# along training: the held-out judge's and P*'s win rate against SFT of the same probe draws, against the KL
curves = {f.stem: pd.read_csv(f) for f in sorted((out.parent / "convergence").glob("*.csv"))}
fig = plots.judge_against_reference(curves, "Held-out judge (solid) and P* (dashed) along training")
fig.savefig(out / "judge_vs_pstar_training.png", dpi=120)
EOF
echo "[tldr_check] done: results/$NAME/eval/judge_gap.csv, judge_agreement.csv, judge_calibration.png," \
     "judge_vs_pstar_training.png," \
     "results/$NAME/metrics/eval.json (judge_gap)"
