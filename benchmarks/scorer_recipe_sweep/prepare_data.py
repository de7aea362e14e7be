"""Write the sweep's inputs from a finished default run (`dvc repro sft`): OUT/data.pkl and OUT/tokenizer/.

    .venv/bin/python benchmarks/scorer_recipe_sweep/prepare_data.py OUT

data.pkl = {"task": the task's training pairs, "sft": the labelled SFT-sample comparisons, "held": the held-out
SFT-sample comparisons, "test": the task's test pairs}, each {prompt, y, y_prime, label, p} as lists.
(The committed results used the SFT policy of 2026-11-27 04:00, 3,000 SFT steps; the default now trains 2,500.)
"""
import pickle
import shutil
import sys
from pathlib import Path

from nlhf.params import load_config
from nlhf.stages import artifact, load_dataset_dir, load_sft_comparisons

out = Path(sys.argv[1] if len(sys.argv) > 1 else "sweep_data")
out.mkdir(parents=True, exist_ok=True)
cfg = load_config("params.yaml")
cols = ("prompt", "y", "y_prime", "label", "p")
parts = {"task": load_dataset_dir(cfg, "prefs", "train"), "test": load_dataset_dir(cfg, "prefs", "test"),
         "sft": load_sft_comparisons(cfg, "train"), "held": load_sft_comparisons(cfg, "heldout")}
if any(v is None for v in parts.values()):
    sys.exit("no SFT comparisons in artifacts/sft_pairs (the synthetic task with preference_data.sft_pairs > 0 needed)")
pickle.dump({k: {c: list(v[c]) for c in cols} for k, v in parts.items()}, open(out / "data.pkl", "wb"))
shutil.copytree(artifact(cfg, "data", "tokenizer"), out / "tokenizer", dirs_exist_ok=True)
print("wrote", out / "data.pkl", {k: len(v) for k, v in parts.items()})
