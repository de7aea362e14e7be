"""Task layer: the synthetic judge's math, the Condorcet profile, determinism, loaders, tokenizer, analysis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nlhf.games import bradley_terry
from nlhf.config import ConfigError, from_dict
from nlhf.tasks import SyntheticTask, SyntheticTaskConfig, TaskConfig, TldrTask, TldrTaskConfig, make_task
from nlhf.tasks import analysis
from nlhf.tasks.synthetic_documents import FACT_WORDS, STYLES, parse_prompt
from nlhf.tasks.synthetic_raters import summary_features
from nlhf.tasks.tldr import TldrDataError

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def task(tiny_config) -> SyntheticTask:
    return SyntheticTask(tiny_config(seed=3))


def _random_summaries(task, prompts, rng, k):
    out = []
    for x in prompts:
        doc = parse_prompt(x)
        s = [task.reference_summary(doc, STYLES[i], rng) for i in task.sample_styles(rng, k)]
        s = [task.perturb(doc, y, rng) if rng.random() < 0.5 else y for y in s]
        s += ["", "document storm", " ".join(["storm"] * 20)]  # malformed: empty, non-fact token, over-long
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------------ judge
def test_judge_antisymmetric_and_in_range(task):
    rng = np.random.default_rng(0)
    prompts = task.prompts("eval")[:60]
    for P in analysis.preference_matrices(task.judge, prompts, _random_summaries(task, prompts, rng, 8),
                                          dedupe=True):
        assert np.all((P >= 0) & (P <= 1))
        np.testing.assert_array_equal(np.diag(P), 0.5)
    xs, ys, yps = [], [], []
    for x, s in zip(prompts, _random_summaries(task, prompts, rng, 6)):
        for i in range(len(s)):
            for j in range(len(s)):
                xs.append(x), ys.append(s[i]), yps.append(s[j])
    p, q = task.judge(xs, ys, yps), task.judge(xs, yps, ys)
    np.testing.assert_allclose(p + q, 1.0, rtol=0, atol=1e-15)
    same = np.array([a == b for a, b in zip(ys, yps)])
    assert np.all(p[same] == 0.5)


def test_malformed_lose_to_every_well_formed(task):
    x = task.prompts("eval")[0]
    doc = parse_prompt(x)
    good = [task.reference_summary(doc, s, np.random.default_rng(1)) for s in STYLES]
    bad = ["", "key", "storm <unk>", " ".join(doc.facts * 5)]
    for b in bad:
        assert not task.is_well_formed(x, b)
        p = task.judge([x] * len(good), good, [b] * len(good))
        assert np.all(p > 0.9), (b, p)
    assert task.judge([x], [""], ["key"])[0] == 0.5  # malformed tie among themselves


def test_condorcet_example_is_a_cycle(task):
    x, a, b, c = task.condorcet_example()
    u = task.utilities([x] * 3, [a, b, c])  # rows A, B, C; columns thorough, skimmer, fact_checker
    assert u[0, 0] > u[1, 0] > u[2, 0]  # thorough: A > B > C
    assert u[1, 1] > u[2, 1] > u[0, 1]  # skimmer: B > C > A
    assert u[2, 2] > u[0, 2] > u[1, 2]  # fact-checker: C > A > B
    p = task.judge([x] * 3, [a, b, c], [b, c, a])
    assert np.all(p > 0.55), p  # A ≻ B ≻ C ≻ A by clear margins
    P = analysis.preference_matrices(task.judge, [x], [[a, b, c]])[0]
    assert analysis.is_cycle(P, 0, 1, 2)
    assert analysis.condorcet_winner(P) is None


def test_style_triples_often_cycle(task):
    """The style samples of the condorcet raters cycle on a fixed share of triples (about 8%, on about 45% of the
    prompts); the bounds leave room for the sampling noise of 200 prompts."""
    prompts = task.prompts("eval")[:200]
    mats = analysis.preference_matrices(task.judge, prompts, task.style_samples(prompts, 8))
    cf = analysis.cycle_fraction(mats)
    assert cf["n_triples"] > 2000
    assert cf["cycle_fraction"] >= 0.04, cf
    assert cf["prompts_with_cycle"] >= 0.3, cf
    bt = analysis.bt_fit_agreement(mats)
    assert bt["bt_agreement"] < 0.95 and bt["bt_excess_logloss"] > 0.005, bt  # no scalar score fits P


def test_determinism_and_seed(task, tiny_config):
    cfg = tiny_config(seed=3)
    a, b = SyntheticTask(cfg), SyntheticTask(cfg)
    assert a.prompts("train") == b.prompts("train")
    assert a.sft_dataset("train").to_dict() == b.sft_dataset("train").to_dict()
    assert a.preference_dataset("test").to_dict() == b.preference_dataset("test").to_dict()
    c = SyntheticTask(tiny_config(seed=4))
    assert c.prompts("train") != a.prompts("train")
    # a split's content does not depend on the size of another split
    d = SyntheticTask(tiny_config(seed=3, n_sft=50))
    assert d.prompts("eval") == a.prompts("eval")


def test_datasets_schema_and_labels(task):
    sft = task.sft_dataset("train")
    assert sft.column_names == ["prompt", "completion"] and len(sft) == task.cfg.n_sft
    assert all(task.is_well_formed(x, y) for x, y in zip(sft["prompt"], sft["completion"]))
    styles = set(task.sft_rows("train")["style"])
    assert styles == set(STYLES)
    prefs = task.preference_dataset("train")
    assert prefs.column_names == ["prompt", "y", "y_prime", "label", "p"]
    p, lab = np.array(prefs["p"]), np.array(prefs["label"])
    np.testing.assert_allclose(p, task.judge(prefs["prompt"], prefs["y"], prefs["y_prime"]))
    assert set(lab.tolist()) <= {0, 1}
    assert abs(lab.mean() - p.mean()) < 4 * math.sqrt(0.25 / len(p))  # labels ~ Bernoulli(p)
    assert np.mean([a != b for a, b in zip(prefs["y"], prefs["y_prime"])]) > 0.99


def test_the_invented_style_is_the_embellished_form(task):
    """SFT's ``complete_invented`` references are exactly the form RLHF's target sits on (the complete summary
    followed by one word not in the document), so SFT reaches it in one step from the complete summary."""
    rng = np.random.default_rng(0)
    for x in task.prompts("eval")[:50]:
        doc = parse_prompt(x)
        y = task.reference_summary(doc, "complete_invented", rng)
        assert summary_features(doc, y, task.cfg.max_summary_words)["form_embellished"] == 1.0
        assert y.split()[:-1] == list(doc.facts) and y.split()[-1] not in doc.facts


def test_references_and_prompts(task):
    prompts = task.prompts("eval")
    assert len(prompts) == task.cfg.n_prompts_eval
    refs = task.references(prompts)
    for x, r in zip(prompts, refs):
        assert task.is_well_formed(x, r)
        assert r.split() == list(parse_prompt(x).facts)
    doc = parse_prompt(prompts[0])
    assert task.cfg.facts_min <= len(doc.facts) <= task.cfg.facts_max and 3 in doc.importance
    with pytest.raises(ValueError, match="split"):
        task.prompts("test")


def test_build_task_data(tmp_path, tiny_config):
    from nlhf.pipeline.stages.supervised import build_task_data

    t = SyntheticTask(tiny_config(n_sft=100, n_sft_eval=20, n_pref_train=100, n_pref_test=20, n_prompts_train=30,
                                  n_prompts_eval=40))
    m = build_task_data(t, tmp_path, analysis_prompts=20)
    assert m["sft_train_rows"] == 100 and m["prompts_eval_rows"] == 40 and m["condorcet_example_is_cycle"]
    assert 0 <= m["style_cycle_fraction"] <= 1 and (tmp_path / "metrics.json").exists()
    # the folder is a DVC-hashed artifact: a rebuild is byte-identical (no timings or other run-dependent values)
    from nlhf.training.checkpoint import content_hash

    assert not any("seconds" in k or "time" in k for k in m)
    build_task_data(t, tmp_path / "again", analysis_prompts=20)
    (tmp_path / "again").rename(tmp_path.parent / f"{tmp_path.name}_again")
    assert content_hash(tmp_path) == content_hash(tmp_path.parent / f"{tmp_path.name}_again")
    import datasets

    from nlhf.pipeline.layout import Layout

    data = {f"{kind}/{split}": datasets.load_from_disk(str(tmp_path / kind / split)) for kind, split in Layout.DATASETS}
    assert data["prefs/test"].column_names == ["prompt", "y", "y_prime", "label", "p"]
    assert data["prompts/eval"]["reference"] == t.references(data["prompts/eval"]["prompt"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / Layout.TOKENIZER)
    ids = tok(data["sft/train"]["prompt"][0] + " " + data["sft/train"]["completion"][0])["input_ids"]
    assert tok.unk_token_id not in ids


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("bad, field", [
    ({"facts_min": 1}, "facts_min"),
    ({"facts_min": 5, "facts_max": 4}, "facts_max"),
    ({"rater_weights": [0.5, 0.5, 0.5]}, "rater_weights"),
    ({"rater_sharpness": [1.0, -1.0, 1.0]}, "rater_sharpness"),
    ({"style_probs": [1.0]}, "style_probs"),
    ({"n_sft": 0}, "n_sft"),
    ({"perturb_prob": 1.5}, "perturb_prob"),
    ({"max_summary_words": 3}, "max_summary_words"),
])
def test_bad_config_names_field(bad, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        SyntheticTaskConfig(**bad)
    with pytest.raises(ConfigError, match=f"task.synthetic.{field}:"):
        from_dict(TaskConfig, {"synthetic": bad}, "task")


def test_make_task_by_name(tiny_config):
    assert isinstance(make_task({"name": "synthetic"}), SyntheticTask)
    local = {"sft_path": "json", "sft_data_files": {"train": str(FIX / "tldr_sft_train.jsonl")}, "pref_path": "json",
             "pref_name": None, "pref_data_files": {"train": str(FIX / "comparisons_train.jsonl")}}
    assert isinstance(make_task({"name": "tldr", "tldr": local}), TldrTask)
    assert isinstance(make_task(tiny_config()), SyntheticTask)
    with pytest.raises(ConfigError, match="task.name"):
        make_task({"name": "xsum"})


# ---------------------------------------------------------------------------------------------- TL;DR
@pytest.fixture(scope="module")
def tldr() -> TldrTask:
    files = lambda stem, splits: {s: str(FIX / f"{stem}_{s}.jsonl") for s in splits}  # noqa: E731
    return TldrTask(TldrTaskConfig(sft_path="json", sft_data_files=files("tldr_sft", ["train", "validation", "test"]),
                                   pref_path="json", pref_name=None,
                                   pref_data_files=files("comparisons", ["train", "validation"])))


def test_tldr_loaders(tldr):
    sft = tldr.sft_dataset("train")
    assert sft.column_names == ["prompt", "completion"] and len(sft) == 8
    assert sft[0]["prompt"].startswith("SUBREDDIT: r/") and sft[0]["prompt"].endswith("TL;DR:")
    assert len(tldr.sft_dataset("eval")) == 2
    prefs = tldr.preference_dataset("train")
    assert prefs.column_names == ["prompt", "y", "y_prime", "label", "p"] and len(prefs) == 10
    assert prefs["label"] == [1 - (k % 2) for k in range(10)]  # choice alternates 0, 1 in the fixture
    assert all(math.isnan(p) for p in prefs["p"])
    assert prefs[0]["y_prime"] == " The author asks a question about cooking."  # stripped, one leading space
    assert prefs[0]["prompt"] == sft[0]["prompt"]  # same prompt format as SFT
    # the held-out judge's comparisons and the test comparisons: the two halves of the validation split
    test, judge = tldr.preference_dataset("test"), tldr.preference_dataset("judge")
    assert len(test) == len(judge) == 2
    assert not {(r["prompt"], r["y"]) for r in test} & {(r["prompt"], r["y"]) for r in judge}
    ev = tldr.prompts("eval")
    assert len(ev) == 2 and tldr.references(ev)[0].startswith(" ")
    assert tldr.is_well_formed(ev[0], " a summary") and not tldr.is_well_formed(ev[0], "  ")
    with pytest.raises(NotImplementedError, match="preference model"):
        tldr.judge(ev, ["a", "b"], ["b", "a"])
    assert not tldr.has_exact_judge and tldr.vocabulary() is None


def test_tldr_subsampling():
    cfg = TldrTaskConfig(sft_path="json", sft_data_files={"train": str(FIX / "tldr_sft_train.jsonl")}, n_sft=3,
                         n_prompts_train=5)
    t = TldrTask(cfg)
    a, b = t.sft_dataset("train"), TldrTask(cfg).sft_dataset("train")
    assert len(a) == 3 and a.to_dict() == b.to_dict()
    assert len(t.prompts("train")) == 5
    x = t.prompts("train")[0]
    assert t.references([x])[0].startswith(" ")  # missing validation/test splits are skipped
    with pytest.raises(KeyError, match="no reference"):
        t.references(["not a prompt"])


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _sft_rows():
    return [json.loads(ln) for ln in (FIX / "tldr_sft_train.jsonl").read_text().splitlines()]


def _comparisons():
    return [json.loads(ln) for ln in (FIX / "comparisons_train.jsonl").read_text().splitlines()]


def _set(rows, i, **kw):
    rows[i].update(kw)
    return rows


def _bad_sft(tmp_path, case):
    f = tmp_path / "sft.jsonl"
    if case == "empty":
        f.write_text("")
    elif case == "not_utf8":
        f.write_bytes((FIX / "tldr_sft_train.jsonl").read_bytes() + b'{"prompt": "x\xff", "completion": " y"}\n')
    elif case == "null_completion":
        _jsonl(f, _set(_sft_rows(), 3, completion=None))
    elif case == "number_completion":
        _jsonl(f, _set(_sft_rows(), 2, completion=7))
    elif case == "blank_prompt":
        _jsonl(f, _set(_sft_rows(), 1, prompt="  "))
    elif case == "no_completion_column":
        _jsonl(f, [{"prompt": r["prompt"], "summary": r["completion"]} for r in _sft_rows()])
    return f


@pytest.mark.parametrize("case, match", [
    ("empty", r"sft\.jsonl: empty sft data file"),
    ("not_utf8", r"sft\.jsonl: line 9 is not UTF-8 text"),
    ("null_completion", r"sft\.jsonl: row 4: 'completion' must be a non-empty string, got None"),
    ("number_completion", r"sft\.jsonl: row 3: 'completion' must be a non-empty string, got 7"),
    ("blank_prompt", r"sft\.jsonl: row 2: 'prompt' must be a non-empty string"),
    ("no_completion_column", r"sft\.jsonl: sft data lacks columns \['completion'\]"),
    ("missing_file", r"sft\.jsonl: sft data file not found"),
])
def test_tldr_bad_sft_file_names_file_and_row(tmp_path, case, match):
    """A TL;DR file with a null or non-string field, an empty file or non-UTF-8 bytes stops with the file (and the
    row) named, before any loader returns a row (``references()`` used to return None for a null completion)."""
    f = _bad_sft(tmp_path, case)
    t = TldrTask(TldrTaskConfig(sft_path="json", sft_data_files={"train": str(f)}))
    for call in (lambda: t.sft_dataset("train"), lambda: t.prompts("train"), lambda: t.references(["x"])):
        with pytest.raises(TldrDataError, match=match):
            call()


@pytest.mark.parametrize("edit, match", [
    (lambda rows: [{k: v for k, v in r.items() if k != "info"} for r in rows], r"comparisons lack columns \['info'\]"),
    (lambda rows: _set(rows, 2, info=None), r"row 3: 'info' must be a mapping"),
    (lambda rows: _set(rows, 4, summaries=rows[4]["summaries"][:1]), r"row 5: 'summaries' must be a list of 2"),
    (lambda rows: _set(rows, 1, summaries=[{"text": None}, {"text": "b"}]), r"row 2: 'summaries\[0\]\.text' must"),
    (lambda rows: _set(rows, 5, choice=2), r"row 6: 'choice' must be 0 or 1, got 2"),
    (lambda rows: [], r"empty comparisons data file"),
])
def test_tldr_bad_comparisons_name_file_and_row(tmp_path, edit, match):
    f = _jsonl(tmp_path / "cmp.jsonl", edit(_comparisons()))
    t = TldrTask(TldrTaskConfig(pref_path="json", pref_name=None, pref_data_files={"train": f}))
    with pytest.raises(TldrDataError, match=r"cmp\.jsonl: " + match):
        t.preference_dataset("train")


def test_tldr_hub_datasets_must_be_pinned():
    cfg = TldrTaskConfig()  # Hub names, no revision
    with pytest.raises(ValueError, match=r"sft_revision: sft_path 'trl-lib/tldr' is a Hub dataset: pin it"):
        cfg.check_pinned()
    with pytest.raises(TldrDataError, match=r"trl-lib/tldr \(split 'train'\): a Hub dataset needs a pinned revision"):
        TldrTask(cfg).sft_dataset("train")  # refused before any download
    TldrTaskConfig(sft_revision="0" * 40, pref_revision="a" * 40).check_pinned()


# ------------------------------------------------------------------------------------------- tokenizer
def test_word_tokenizer_round_trip(tmp_path, task):
    from transformers import AutoTokenizer

    from nlhf.tokenization import build_word_tokenizer

    tok = build_word_tokenizer(task.vocabulary(), tmp_path / "tok")
    assert len(tok) == 5 + len(task.vocabulary())
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.sep_token_id) == (0, 1, 2, 3, 4)
    re = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert re.padding_side == "left" and re.eos_token_id == 3 and re.pad_token_id == 0 and re.sep_token_id == 4
    x = task.prompts("eval")[0]
    y = task.references([x])[0]
    ids = re(x + " " + y)["input_ids"]
    assert len(ids) == len((x + " " + y).split()) and re.unk_token_id not in ids
    assert re.decode(ids) == x + " " + y
    assert re.decode(ids + [re.eos_token_id, re.pad_token_id], skip_special_tokens=True) == x + " " + y
    batch = re([x, "summary :"], padding=True)
    assert batch["input_ids"][1][0] == re.pad_token_id and batch["attention_mask"][1][0] == 0  # left padding
    assert re("storm zebra")["input_ids"][1] == re.unk_token_id
    assert set(FACT_WORDS[:5]) <= set(re.get_vocab())


# -------------------------------------------------------------------------------------------- analysis
def test_analysis_on_hand_made_matrices():
    cyc = np.array([[0.5, 0.8, 0.2], [0.2, 0.5, 0.8], [0.8, 0.2, 0.5]])  # 0 ≻ 1 ≻ 2 ≻ 0
    r = np.array([0.0, 1.0, 2.5])
    bt = 1 / (1 + np.exp(-(r[:, None] - r[None, :])))  # transitive (exactly Bradley–Terry)
    assert analysis.cycle_fraction([cyc])["cycle_fraction"] == 1.0
    assert analysis.cycle_fraction([bt])["cycle_fraction"] == 0.0
    assert analysis.cycle_fraction(np.stack([cyc, bt]))["cycle_fraction"] == 0.5
    np.testing.assert_allclose(bradley_terry.fit_bradley_terry(bt, **analysis.BT_FIT), r - r.mean(), atol=1e-4)
    a = analysis.bt_fit_agreement([bt])
    assert a["bt_agreement"] == 1.0 and abs(a["bt_excess_logloss"]) < 1e-6
    c = analysis.bt_fit_agreement([cyc])  # symmetric cycle: BT fit is flat, gets no direction right
    assert c["bt_agreement"] < 1.0 and c["bt_excess_logloss"] > 0.1 and c["p_agreement"] == 1.0
    np.testing.assert_allclose(analysis.maximin_mixture(cyc), [1 / 3] * 3, atol=1e-6)
    assert analysis.condorcet_winner(bt) == 2 and analysis.condorcet_winner(cyc) is None
    ns = analysis.nash_support([cyc, bt])
    assert ns["condorcet_winner_fraction"] == 0.5 and ns["nash_support_mean"] == 2.0


# ------------------------------------------------------------------------------------------------ TL;DR export
def test_the_synthetic_export_reads_back_as_tldr_data_with_its_exact_judge(tmp_path, tiny_config):
    """The export is TL;DR data (the loaders read it), its comparisons carry each rater's vote (their mean is the
    pair's label), the held-out judge's pairs are fresh, and the exported P* on TL;DR prompts is the task's P*."""
    from nlhf.tasks.tldr_export import (COMPARISON_FILES, SFT_FILES, ExportedJudge, export_synthetic,
                                        from_tldr_prompt, load_manifest)

    task = SyntheticTask(tiny_config(seed=5, labels_per_pair=3, n_pref_train=30, n_pref_test=12, n_pref_judge=9))
    manifest = export_synthetic(task, tmp_path)
    assert manifest["rows"]["comparisons_train.jsonl"] == 3 * 30 and load_manifest(tmp_path) == manifest
    assert manifest["rows"]["comparisons_judge.jsonl"] == 3 * 9  # n_pref_judge fresh pairs (null: n_pref_test)
    tldr = TldrTask(TldrTaskConfig(
        sft_path="json", sft_data_files={s: str(tmp_path / f) for s, f in SFT_FILES.items()}, pref_path="json",
        pref_name=None, pref_data_files={s: str(tmp_path / f) for s, (f, _) in COMPARISON_FILES.items()},
        pref_judge_split="judge"))
    assert [from_tldr_prompt(x) for x in tldr.prompts("eval")] == task.prompts("eval")
    assert [r.strip() for r in tldr.references(tldr.prompts("eval"))] == task.references(task.prompts("eval"))
    train = tldr.preference_dataset("train")
    rows = task.preference_rows("train")
    votes = np.asarray(train["label"], dtype=float).reshape(30, 3)  # three raters' records per pair
    np.testing.assert_allclose(votes.mean(1), rows["label"])
    judge = ExportedJudge(tmp_path)
    np.testing.assert_allclose(judge(train["prompt"], train["y"], train["y_prime"]), np.repeat(rows["p"], 3))
    pairs = {s: set(zip(*(tldr.preference_dataset(s)[k] for k in ("prompt", "y", "y_prime"))))
             for s in ("train", "test", "judge")}
    assert pairs["judge"] and not pairs["judge"] & (pairs["train"] | pairs["test"])
    with pytest.raises(ValueError, match="not a prompt of the synthetic export"):
        judge(["SUBREDDIT: r/cooking\n\nTITLE: x\n\nPOST: y\n\nTL;DR:"], [" a"], [" b"])
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none'}: not a synthetic export"):
        ExportedJudge(tmp_path / "none")
    with pytest.raises(ValueError, match="n_pref_judge: must be null or >= 1, got 0"):
        tiny_config(n_pref_judge=0)


def test_a_copy_of_the_export_adds_labelled_comparisons_of_policies_samples_each_summary_named_by_its_writer(
        tmp_path, tiny_config):
    """``policy_comparisons`` draws a prompt and two writers per pair and labels the pair with the raters' votes on
    P* (who prefer the complete summary to a made-up one); ``add_policy_comparisons`` appends them to a copy of the export's file, each summary named by the policy that
    wrote it, leaves the source as it was, drops a pair with an empty summary and counts it."""
    from nlhf.tasks.tldr_export import (COMPARISON_FILES, SFT_FILES, ExportedJudge, add_policy_comparisons,
                                        export_synthetic, from_tldr_prompt, load_manifest, policy_comparisons,
                                        to_tldr_prompt)

    task = SyntheticTask(tiny_config(seed=5, labels_per_pair=3, n_pref_train=20, n_pref_test=6, n_pref_judge=8))
    export_synthetic(task, tmp_path / "src")
    before = {f.name: f.read_bytes() for f in (tmp_path / "src").iterdir()}
    judge, prompts = ExportedJudge(tmp_path / "src"), [to_tldr_prompt(x) for x in task.prompts("train")[:5]]
    calls = []

    def writer(name, text):  # a policy that writes one fixed summary per prompt (its first fact, or a word)
        def sample(xs, seed):
            calls.append((name, len(xs), seed))
            return [text(x) for x in xs]
        return sample

    complete = lambda x: " " + task.references([from_tldr_prompt(x)])[0]  # noqa: E731
    samplers = {"SFT": writer("SFT", complete), "RLHF": writer("RLHF", lambda x: " banana banana"),
                "MD1": writer("MD1", lambda x: " ")}
    rows = policy_comparisons(judge, prompts, samplers, 200, seed=7)
    assert {n for n, _, _ in calls} == set(samplers) and len({s for _, _, s in calls}) == 6  # a seed a writer a side
    again = policy_comparisons(judge, prompts, samplers, 200, seed=7)
    assert all(np.array_equal(rows[k], again[k]) for k in rows)  # repeatable by seed
    assert set(rows["policy_y"]) == set(rows["policy_y_prime"]) == set(samplers)
    assert set(rows["prompt"]) <= set(task.prompts("train")[:5])
    np.testing.assert_allclose(rows["p"], task.judge(rows["prompt"], [y.strip() for y in rows["y"]],
                                                     [y.strip() for y in rows["y_prime"]]))
    assert set(np.round(np.asarray(rows["label"]) * 3, 6)) <= {0, 1, 2, 3}  # the votes of three raters
    sft_vs_rlhf = [lab for a, b, lab in zip(rows["policy_y"], rows["policy_y_prime"], rows["label"])
                   if (a, b) == ("SFT", "RLHF")]
    assert sft_vs_rlhf and np.mean(sft_vs_rlhf) > 0.8
    manifest = add_policy_comparisons(tmp_path / "src", tmp_path / "out", rows)
    assert {f.name: f.read_bytes() for f in (tmp_path / "src").iterdir()} == before
    empty = sum("MD1" in (a, b) for a, b in zip(rows["policy_y"], rows["policy_y_prime"]))
    added = manifest["policy_comparisons"]
    assert added["pairs"] == 200 - empty and added["with_an_empty_summary"] == empty > 0
    assert added["summaries_by_policy"] == {"RLHF": 2 * (200 - empty) - added["summaries_by_policy"]["SFT"],
                                            "SFT": added["summaries_by_policy"]["SFT"]}
    assert load_manifest(tmp_path / "out") == manifest and manifest["rows"]["comparisons_judge.jsonl"] == 3 * (
        8 + 200 - empty)
    records = [json.loads(x) for x in (tmp_path / "out" / "comparisons_judge.jsonl").read_text().splitlines()]
    kept = [(a, b) for a, b in zip(rows["policy_y"], rows["policy_y_prime"]) if "MD1" not in (a, b)]
    assert [(r["summaries"][0]["policy"], r["summaries"][1]["policy"]) for r in records[24::3]] == kept
    tldr = TldrTask(TldrTaskConfig(
        sft_path="json", sft_data_files={s: str(tmp_path / "out" / f) for s, f in SFT_FILES.items()},
        pref_path="json", pref_name=None, pref_judge_split="judge",
        pref_data_files={s: str(tmp_path / "out" / f) for s, (f, _) in COMPARISON_FILES.items()}))
    read = tldr.preference_dataset("judge")
    keep = [i for i, (a, b) in enumerate(zip(rows["policy_y"], rows["policy_y_prime"])) if "MD1" not in (a, b)]
    np.testing.assert_allclose(np.asarray(read["label"][24:], dtype=float).reshape(-1, 3).mean(1),
                               np.asarray(rows["label"])[keep])
    np.testing.assert_allclose(judge(read["prompt"][24::3], read["y"][24::3], read["y_prime"][24::3]),
                               np.asarray(rows["p"])[keep])
    with pytest.raises(FileExistsError, match="exists"):
        add_policy_comparisons(tmp_path / "src", tmp_path / "out", rows)
    with pytest.raises(ValueError, match="split must be one of"):
        add_policy_comparisons(tmp_path / "src", tmp_path / "other", rows, split="test")
    with pytest.raises(ValueError, match="needs n >= 1"):
        policy_comparisons(judge, prompts, samplers, 0, seed=7)


def test_the_export_adds_comparisons_of_sft_samples_after_the_tasks_own(tmp_path, tiny_config):
    """``sft_comparisons``: each pair of SFT samples is written after the task's pairs of its file, one record per
    rater (policy "sft"), so the TL;DR loader reads the task's rows and then these, with the same votes; only the
    train and judge files take them; a pair with an empty sample is left out."""
    from nlhf.tasks.tldr_export import COMPARISON_FILES, SFT_FILES, export_synthetic

    task = SyntheticTask(tiny_config(seed=5, labels_per_pair=2, n_pref_train=10, n_pref_test=4))
    x = task.prompts("train")[:3]
    sft = {"prompt": x, "y": ["a b", "c", "d e f"], "y_prime": ["g", "h i", "j"], "label": np.array([1.0, 0.5, 0.0]),
           "p": np.array([0.9, 0.5, 0.2])}
    judge = {k: [*v[:1], *v[:1]] for k, v in sft.items()}
    judge["y_prime"][1] = " "  # an SFT sample that stopped at once: no TL;DR comparison has an empty summary
    manifest = export_synthetic(task, tmp_path, {"train": sft, "judge": judge})
    assert manifest["sft_comparisons"] == {"train": 3, "judge": 1}
    assert manifest["sft_comparisons_with_an_empty_sample"] == {"train": 0, "judge": 1}
    assert manifest["rows"]["comparisons_train.jsonl"] == 2 * (10 + 3)
    records = [json.loads(line) for line in (tmp_path / "comparisons_train.jsonl").read_text().splitlines()]
    assert {r["summaries"][0]["policy"] for r in records[:20]} == {"synthetic"}
    assert [r["summaries"][0]["policy"] for r in records[20:]] == ["sft"] * 6
    tldr = TldrTask(TldrTaskConfig(
        sft_path="json", sft_data_files={s: str(tmp_path / f) for s, f in SFT_FILES.items()}, pref_path="json",
        pref_name=None, pref_data_files={s: str(tmp_path / f) for s, (f, _) in COMPARISON_FILES.items()},
        pref_judge_split="judge"))
    train = tldr.preference_dataset("train")
    assert [y.strip() for y in train["y"][20::2]] == sft["y"]
    np.testing.assert_allclose(np.asarray(train["label"][20:], dtype=float).reshape(3, 2).mean(1), sft["label"])
    assert len(tldr.preference_dataset("judge")["y"]) == 2 * (len(task.preference_rows("judge")["y"]) + 1)
    with pytest.raises(ValueError, match=r"only 'train' and 'judge' take comparisons of SFT samples, got \['test'\]"):
        export_synthetic(task, tmp_path / "again", {"test": sft})
