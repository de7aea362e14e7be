"""The package's Hugging Face ``evaluate`` modules (nlhf/metrics): bitwise equal to the formulas they replace, known
values, their MetricInfo, and loading with every outbound connection blocked."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rouge_score import rouge_scorer
from scipy.stats import norm

from nlhf.evaluate import METRICS_DIR, load_metric, pairwise_table, rouge_l, win_rate_ci

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the a cat dog sat on mat ran big small red blue Über naïve 42 x-ray".split()


def formula_win_rate(vals: np.ndarray, confidence: float) -> tuple[float, float]:
    """mean and z·sd(ddof=1)/√N, NaN half-width at N = 1."""
    z = norm.ppf(0.5 + confidence / 2)
    n = len(vals)
    return float(vals.mean()), float(z * vals.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def formula_pairwise_table(judge, prompts, samples, confidence=0.95) -> pd.DataFrame:
    """The table computed with :func:`formula_win_rate` in place of the module."""
    names, n, rows = list(samples), len(prompts), []
    for i, r in enumerate(names):
        for j, c in enumerate(names):
            if j <= i:
                continue
            mean, half = formula_win_rate(np.asarray(judge(prompts, samples[c], samples[r]), dtype=np.float64),
                                          confidence)
            rows.append({"row": r, "column": c, "p": mean, "ci": half, "n": n})
            rows.append({"row": c, "column": r, "p": 1.0 - mean, "ci": half, "n": n})
        rows.append({"row": r, "column": r, "p": 0.5, "ci": 0.0, "n": n})
    return pd.DataFrame(rows)


def formula_rouge_l(predictions, references) -> float:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(np.mean([scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]))


def same_float(a: float, b: float) -> bool:
    """Bitwise equality (NaN equals NaN)."""
    return np.float64(a).tobytes() == np.float64(b).tobytes()


def random_texts(rng, n, max_words=30):
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, max_words + 1))) for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 2000])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_win_rate_module_is_bitwise_the_formula(n, confidence):
    rng = np.random.default_rng(n)
    for vals in (rng.random(n), rng.random(n).astype(np.float32).astype(np.float64),  # a float32 judge
                 rng.choice([0.0, 0.5, 1.0], size=n)):  # a judge with ties
        mean, half = win_rate_ci(vals, confidence)
        ref_mean, ref_half = formula_win_rate(vals, confidence)
        assert same_float(mean, ref_mean) and same_float(half, ref_half)
        out = load_metric("pairwise_win_rate").compute(preferences=vals, confidence=confidence)
        assert out["n"] == n
        assert same_float(out["ci_low"], ref_mean - ref_half) and same_float(out["ci_high"], ref_mean + ref_half)


def test_pairwise_table_is_bitwise_the_formula():
    rng = np.random.default_rng(0)
    prompts = [f"x{i}" for i in range(300)]
    samples = {name: random_texts(rng, len(prompts), 8) for name in ("SFT", "RLHF", "MD1", "BR")}
    u = {y: rng.normal() for ys in samples.values() for y in ys}

    def judge(xs, ys, yps):  # Bradley-Terry on random utilities: antisymmetric, probabilities in (0, 1)
        return 1 / (1 + np.exp(-np.array([u[y] - u[yp] for y, yp in zip(ys, yps)])))

    for confidence in (0.95, 0.9):
        pd.testing.assert_frame_equal(pairwise_table(judge, prompts, samples, confidence),
                                      formula_pairwise_table(judge, prompts, samples, confidence), check_exact=True)


@pytest.mark.parametrize("seed", range(5))
def test_rouge_l_module_is_bitwise_the_formula(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    preds, refs = random_texts(rng, n), random_texts(rng, n)
    if seed == 0:
        preds[:3], refs[:3] = ["", "  ", "same words here"], ["", "a", "same words here"]  # empty and identical
    assert same_float(rouge_l(preds, refs), formula_rouge_l(preds, refs))


def test_known_values():
    assert rouge_l(["the cat sat on the mat", "a b c"], ["the cat sat on the mat", "a b c"]) == 1.0
    assert rouge_l(["red blue"], ["cat dog"]) == 0.0
    # LCS "the cat mat" = 3 tokens: P = 3/3, R = 3/6, F1 = 2PR / (P + R) = 2/3
    assert rouge_l(["the cat mat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    wr = load_metric("pairwise_win_rate")
    out = wr.compute(preferences=[0.5] * 100)
    assert out["win_rate"] == 0.5 and out["ci_half_width"] == 0.0 and out["ci_low"] == out["ci_high"] == 0.5
    # symmetric spread around ½: the interval is centred on ½, and the mirror 1 − p has the same half-width
    p = np.tile([0.2, 0.8], 500)
    out, mirror = wr.compute(preferences=p), wr.compute(preferences=1 - p)
    assert out["win_rate"] == pytest.approx(0.5) and out["ci_low"] + out["ci_high"] == pytest.approx(1.0)
    assert out["ci_half_width"] == pytest.approx(norm.ppf(0.975) * np.std(p, ddof=1) / np.sqrt(1000))
    assert mirror["win_rate"] == pytest.approx(1 - out["win_rate"])
    assert mirror["ci_half_width"] == pytest.approx(out["ci_half_width"])
    assert np.isnan(wr.compute(preferences=[0.7])["ci_half_width"])


def test_metric_info():
    r, w = load_metric("rouge_l"), load_metric("pairwise_win_rate")
    assert list(r.features) == ["predictions", "references"] and list(w.features) == ["preferences"]
    assert "Lin, Chin-Yew" in r.citation and "2004" in r.citation
    assert "Nash Learning from Human Feedback" in w.citation and "2312.00886" in w.citation
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))["preferred-citation"]
    authors = re.search(r"author = \{(.*?)\},\n", w.citation, flags=re.S).group(1)
    authors = " ".join(authors.split()).replace(r"{\'e}", "é").replace(r"{\^o}", "ô")
    assert [a.strip() for a in authors.split(" and ")] == [f"{a['family-names']}, {a['given-names']}"
                                                           for a in cff["authors"]]
    assert cff["collection-title"] in w.citation
    for m in (r, w):
        assert "=" in m.description  # the formula
    assert load_metric("rouge_l") is r  # cached: one load per process
    assert sorted(p.name for p in METRICS_DIR.iterdir() if p.is_dir() and not p.name.startswith("__")) == \
        ["pairwise_win_rate", "rouge_l"]


# Runs in a fresh process with a fresh Hugging Face cache, the e2e tests' network guard on PYTHONPATH (every
# non-loopback connection and DNS lookup raises) and the socket calls recorded, so a swallowed attempt also fails.
OFFLINE_SCRIPT = r"""
import socket
import numpy as np
attempts = []
for name in ("connect", "connect_ex"):
    guarded = getattr(socket.socket, name)
    def record(self, address, _guarded=guarded):
        attempts.append(address)
        return _guarded(self, address)
    setattr(socket.socket, name, record)
guarded_dns = socket.getaddrinfo
def record_dns(host, *a, **k):
    attempts.append(host)
    return guarded_dns(host, *a, **k)
socket.getaddrinfo = record_dns
assert guarded_dns.__name__ == "_blocked_getaddrinfo", "network guard not loaded"
from nlhf.evaluate import load_metric, rouge_l, win_rate_ci
assert rouge_l(["the cat sat"], ["the cat sat"]) == 1.0
assert win_rate_ci(np.full(10, 0.5)) == (0.5, 0.0)
assert not attempts, attempts
print("OFFLINE-OK")
"""


@pytest.mark.parametrize("offline_vars", [True, False], ids=["hf-offline-vars", "no-offline-vars"])
def test_modules_load_and_compute_with_the_network_blocked(tmp_path, offline_vars):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "netguard"), str(ROOT)]), HF_HOME=str(tmp_path / "hf"))
    if offline_vars:
        env.update(HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and "OFFLINE-OK" in res.stdout, res.stdout + res.stderr
    # the module scripts were copied into the fresh cache, i.e. loaded from the package, not found elsewhere
    assert list((tmp_path / "hf" / "modules" / "evaluate_modules" / "metrics").glob("*/*/rouge_l.py"))
