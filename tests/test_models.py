"""nlhf.models: policy building, the antisymmetric preference model, the BT reward model, save/load, tokenizer
checks (the paper's §7–§8)."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nlhf.config import ConfigError, from_dict
from nlhf.models import (ModelConfig, ModelLoadError, PreferenceModel, RewardModel, build_policy,
                         build_preference_model, build_reward_model, check_same_tokenizer, generation_config, load_policy,
                         save_policy)

WORDS = "the cat dog sat on a mat ran far and then slept ate fish summary text is short long".split()


def tiny_tokenizer(words=WORDS):
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", "<sep>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   sep_token="<sep>", padding_side="left")


CFG = ModelConfig(n_layer=2, n_embd=32, n_head=4, n_positions=64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (a second gains nothing, and spins when the machine's cores are busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def pm(tok):
    return build_preference_model(CFG, tok, seed=0).eval()


def random_texts(n, seed, lo=1, hi=8):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        out.append(" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (k,), generator=g)))
    return out


# ---------------------------------------------------------------------------------------------------------------


def test_model_config_ranges():
    assert ModelConfig().n_embd == 128
    for bad in ({"n_embd": 30, "n_head": 4}, {"n_layer": 0}, {"dropout": 1.0}, {"n_positions": 1},
                {"head_hidden": 0}, {"qk_identity_init": -1.0}):
        with pytest.raises(ConfigError, match=f"model.{next(iter(bad))}"):
            from_dict(ModelConfig, bad, "model")


def test_build_policy_wires_tokenizer(tok):
    policy = build_policy(CFG, tok, seed=0)
    assert policy.config.vocab_size == len(tok)
    assert policy.config.eos_token_id == tok.eos_token_id and policy.config.pad_token_id == tok.pad_token_id
    assert policy.config.n_positions == 64 and policy.config.n_layer == 2
    again = build_policy(CFG, tok, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), again.state_dict().values()))


def test_policy_save_load_and_missing_folder(tok, tmp_path):
    policy = build_policy(CFG, tok, seed=0)
    save_policy(policy, tok, tmp_path / "sft", generation_config(tok, max_new_tokens=12))
    loaded, tok2 = load_policy(tmp_path / "sft")
    # the reloaded policy samples as the pipeline did: untruncated ancestral sampling, 12 tokens, stop at EOS
    gen = loaded.generation_config
    assert gen.do_sample and gen.temperature == 1.0 and gen.top_k == 0 and gen.top_p == 1.0
    assert gen.max_new_tokens == 12 and gen.eos_token_id == tok.eos_token_id
    check_same_tokenizer(tok, tok2, "a", "b")
    ids = torch.tensor([[4, 5, 6, 7]])
    assert torch.equal(policy(ids).logits, loaded(ids).logits)
    # a folder passed as name_or_path loads the same weights
    again = build_policy(ModelConfig(name_or_path=str(tmp_path / "sft")), tok)
    assert torch.equal(policy(ids).logits, again(ids).logits)
    with pytest.raises(FileNotFoundError, match="nope"):
        build_policy(ModelConfig(name_or_path=str(tmp_path / "nope")), tok)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        load_policy(tmp_path / "empty")


def test_preference_model_exact_antisymmetry(pm):
    xs, ys, yps = random_texts(16, 1), random_texts(16, 2), random_texts(16, 3)
    with torch.no_grad():
        p = torch.sigmoid(pm.logits(xs, ys, yps))
        q = torch.sigmoid(pm.logits(xs, yps, ys))
        same = torch.sigmoid(pm.logits(xs, ys, ys))
    assert p.shape == (16,)
    assert torch.allclose(p + q, torch.ones(16), atol=1e-6)
    # algebraically exact; across two calls only float rounding (rows sit at other batch positions) remains
    with torch.no_grad():
        assert torch.allclose(pm.logits(xs, ys, yps), -pm.logits(xs, yps, ys), atol=1e-6)
    assert torch.allclose(same, torch.full((16,), 0.5), atol=1e-6)
    assert p.std() > 0  # not a constant


def test_preference_model_padding_invariance(pm, tok):
    xs, ys, yps = random_texts(8, 4, 1, 12), random_texts(8, 5, 1, 12), random_texts(8, 6, 1, 12)
    with torch.no_grad():
        batched = pm.logits(xs, ys, yps)
        alone = torch.cat([pm.logits([x], [y], [yp]) for x, y, yp in zip(xs, ys, yps)])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_one_row_blocks_equal_separate_rows(pm, tok):
    """In the row x <sep> y <sep> y' <sep>, the y' block (blind to y, positions restarting after x) gets exactly the
    hidden states of its own row x <sep> y' <sep>: the one-row layout is an implementation detail, not a model."""
    xs, ys, yps = random_texts(6, 21, 1, 10), random_texts(6, 22, 1, 10), random_texts(6, 23, 1, 10)
    with torch.no_grad():
        both = pm.features(**pm.collate(xs, ys, yps))
        only_y = pm.features(**pm.collate(xs, ys))  # rows x <sep> y <sep> of their own
        only_yp = pm.features(**pm.collate(xs, yps))
        swapped = pm.features(**pm.collate(xs, yps, ys))
    assert both.shape == (6, 2, 3 * CFG.n_embd)
    assert torch.allclose(both[:, 0], only_y[:, 0], atol=1e-5)
    assert torch.allclose(both[:, 1], only_yp[:, 0], atol=1e-5)
    assert torch.allclose(both, swapped.flip(1), atol=1e-5)
    # and the y' block really differs from what it would be if it could see y (the mask matters)
    batch = pm.collate(xs, ys, yps)
    leaky = batch["attention_mask"] | torch.ones_like(batch["attention_mask"]).tril()
    with torch.no_grad():
        seen = pm.features(batch["input_ids"], leaky, batch["position_ids"], batch["block_ids"])
    assert not torch.allclose(seen[:, 1], both[:, 1], atol=1e-3)


def test_qk_identity_init(tok):
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=4, n_positions=64, qk_identity_init=1.0)
    pm = build_preference_model(cfg, tok, seed=0)
    w = pm.backbone.h[0].attn.c_attn.weight
    assert torch.equal(w[:, :32], torch.eye(32)) and torch.equal(w[:, 32:64], torch.eye(32))
    assert not torch.equal(pm.backbone.h[1].attn.c_attn.weight[:, :32], torch.eye(32))
    with pytest.raises(ValueError, match="qk_identity_init"):
        build_preference_model(ModelConfig(name_or_path="gpt2", qk_identity_init=1.0), tok)


def test_preference_model_token_path_matches_strings(pm, tok):
    xs, ys, yps = random_texts(6, 7), random_texts(6, 8), random_texts(6, 9)
    px = tok(xs, return_tensors="pt", padding=True)  # left-padded prompts, as the sampler gets them
    tok.padding_side = "right"
    try:
        # sampler-style responses: right-padded, ending with EOS inside the mask
        ry = tok([y + " <eos>" for y in ys], return_tensors="pt", padding=True)
        ryp = tok([y + " <eos>" for y in yps], return_tensors="pt", padding=True)
    finally:
        tok.padding_side = "left"
    with torch.no_grad():
        from_ids = pm.logits_from_ids(px["input_ids"], px["attention_mask"], ry["input_ids"], ry["attention_mask"],
                                      ryp["input_ids"], ryp["attention_mask"])
        from_text = pm.logits(xs, ys, yps)
    assert torch.allclose(from_ids, from_text, atol=1e-6)
    # the pre-tokenized id lists training uses build the very same batch as the strings
    ids_batch = pm.pair_batch(pm.token_ids(xs), pm.token_ids(ys, response=True), pm.token_ids(yps, response=True))
    text_batch = pm.pair_batch(xs, ys, yps)
    assert all(torch.equal(ids_batch[k], text_batch[k]) for k in text_batch)
    # the scored text really is one row "x <sep> y <sep> y' <sep>"
    batch = pm.collate(xs[:1], ys[:1], yps[:1])
    row = batch["input_ids"][0][batch["block_ids"][0] >= 0]
    assert tok.decode(row) == f"{xs[0]} <sep> {ys[0]} <sep> {yps[0]} <sep>"


def test_preference_model_truncation_keeps_antisymmetry(tok):
    pm = build_preference_model(CFG, tok, seed=0, max_length=16).eval()
    xs, ys, yps = random_texts(5, 10, 10, 20), random_texts(5, 11, 2, 12), random_texts(5, 12, 2, 12)
    batch = pm.collate(xs, ys, yps)
    assert batch["position_ids"].max() < 16
    with torch.no_grad():
        assert torch.allclose(pm.logits(xs, ys, yps), -pm.logits(xs, yps, ys), atol=1e-6)


def test_reward_is_the_same_in_a_pair_row_and_alone_under_truncation(tok):
    """The prompt cut depends on x alone, so r(x, y) does not depend on what y is paired with (the RLHF loop scores
    single responses, training scores pair rows)."""
    rm = build_reward_model(CFG, tok, seed=0, max_length=16).eval()
    xs, ys, yps = random_texts(5, 24, 10, 20), random_texts(5, 25, 1, 12), random_texts(5, 26, 1, 12)
    with torch.no_grad():
        alone = rm.rewards(xs, ys)
        paired = rm(**rm.pair_batch(xs, ys, yps))[:, 0]
    assert torch.allclose(alone, paired, atol=1e-5)


def test_scorer_rejects_eager_attention(tok):
    from transformers import AutoModel, GPT2Config

    backbone = AutoModel.from_config(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=4),
                                     attn_implementation="eager")
    with pytest.raises(ValueError, match="sdpa"):
        PreferenceModel(backbone, tok)


def test_preference_model_gradient_and_save_load(pm, tok, tmp_path):
    xs, ys, yps = random_texts(4, 13), random_texts(4, 14), random_texts(4, 15)
    batch = pm.collate(xs, ys, yps)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(pm(**batch), torch.ones(4))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pm.parameters())
    pm.zero_grad()
    pm.save_pretrained(tmp_path / "pm")
    pm.save_pretrained(tmp_path / "pm")  # overwriting an existing checkpoint works (atomic swap)
    loaded = PreferenceModel.from_pretrained(tmp_path / "pm").eval()
    with torch.no_grad():
        assert torch.equal(loaded.logits(xs, ys, yps), pm.logits(xs, ys, yps))
    assert loaded.max_length == pm.max_length
    with pytest.raises(ValueError, match="preference_model"):
        RewardModel.from_pretrained(tmp_path / "pm")


def test_reward_model_round_trip_and_bt(tok, tmp_path):
    rm = build_reward_model(CFG, tok, seed=3).eval()
    xs, ys, yps = random_texts(8, 16), random_texts(8, 17), random_texts(8, 18)
    with torch.no_grad():
        r, rp = rm.rewards(xs, ys), rm.rewards(xs, yps)
        assert r.shape == (8,) and r.std() > 0
        assert torch.allclose(rm.logits(xs, ys, yps), r - rp, atol=1e-6)
    rm.save_pretrained(tmp_path / "rm")
    loaded = RewardModel.from_pretrained(tmp_path / "rm").eval()
    with torch.no_grad():
        assert torch.equal(loaded.rewards(xs, ys), r)
    check_same_tokenizer(loaded.tokenizer, tok, "reward model", "policy")
    with pytest.raises(FileNotFoundError, match="missing_rm"):
        RewardModel.from_pretrained(tmp_path / "missing_rm")
    with pytest.raises(FileNotFoundError, match="missing_pm"):
        PreferenceModel.from_pretrained(tmp_path / "missing_pm")


def test_tokenizer_mismatch_raises(tok):
    other = tiny_tokenizer(list(reversed(WORDS)))  # same size and specials, different ids
    with pytest.raises(ValueError, match="preference model.*policy"):
        check_same_tokenizer(tok, other, "preference model", "policy")
    smaller = tiny_tokenizer(WORDS[:-2])
    with pytest.raises(ValueError, match="vocabulary size"):
        check_same_tokenizer(smaller, tok, "reward model", "policy")
    check_same_tokenizer(tok, tiny_tokenizer(), "a", "b")  # identical: no error


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_model_files_name_the_path(pm, tok, tmp_path):
    """A safetensors or JSON file cut short: the loaders name the folder and say how to get it back, and the stages'
    ``require`` names the file and the DVC stage to rerun before anything is loaded."""
    from nlhf.pipeline.artifacts import DamagedArtifactError, require

    save_policy(build_policy(CFG, tok, seed=0), tok, tmp_path / "sft")
    pm.save_pretrained(tmp_path / "pm")
    assert require(tmp_path / "sft", "sft") == tmp_path / "sft"  # whole folders pass
    require(tmp_path / "pm", "pm")

    _cut(tmp_path / "sft" / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"policy: cannot load .*sft \(.*\)\. The folder is damaged or "
                                             r"incomplete: restore it with `dvc checkout .*sft` or rerun"):
        load_policy(tmp_path / "sft")
    with pytest.raises(DamagedArtifactError, match=r"sft/model\.safetensors is damaged \(\d+ bytes where the header "
                                                   r"describes \d+\); restore it with `dvc checkout .*sft` or rerun "
                                                   r"`dvc repro sft`"):
        require(tmp_path / "sft", "sft")

    _cut(tmp_path / "pm" / "nlhf_head.safetensors")
    with pytest.raises(ModelLoadError, match=r"preference_model: cannot load .*pm"):
        PreferenceModel.from_pretrained(tmp_path / "pm")
    with pytest.raises(DamagedArtifactError, match=r"pm/nlhf_head\.safetensors is damaged.*dvc repro preference@pm"):
        require(tmp_path / "pm", "pm")
    pm.save_pretrained(tmp_path / "pm")
    _cut(tmp_path / "pm" / "config.json")
    with pytest.raises(DamagedArtifactError, match=r"pm/config\.json is damaged \(JSONDecodeError"):
        require(tmp_path / "pm", "preference@pm")


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_interrupted_save_keeps_the_previous_folder(tok, tmp_path, monkeypatch):
    """Policy and scorers save through one atomic folder swap (checkpoint.atomic_save_dir): a save that fails
    midway (here: the weights are written, then writing the tokenizer fails) leaves the previous checkpoint
    byte for byte and no temporary folder; the next save replaces it whole."""
    policy, pm, rm = build_policy(CFG, tok, seed=0), build_preference_model(CFG, tok, seed=0), \
        build_reward_model(CFG, tok, seed=0)
    saves = {"sft": lambda seed: save_policy(build_policy(CFG, tok, seed=seed), tok, tmp_path / "sft"),
             "pm": lambda seed: build_preference_model(CFG, tok, seed=seed).save_pretrained(tmp_path / "pm"),
             "rm": lambda seed: build_reward_model(CFG, tok, seed=seed).save_pretrained(tmp_path / "rm")}
    assert save_policy(policy, tok, tmp_path / "sft") == tmp_path / "sft"
    assert pm.save_pretrained(tmp_path / "pm") == tmp_path / "pm"
    rm.save_pretrained(tmp_path / "rm")
    before = {name: _snapshot(tmp_path / name) for name in saves}

    def killed(*a, **k):
        raise RuntimeError("killed while writing the tokenizer")

    with monkeypatch.context() as m:
        m.setattr(tok, "save_pretrained", killed)
        for name, save in saves.items():
            with pytest.raises(RuntimeError, match="killed"):
                save(seed=1)
            assert _snapshot(tmp_path / name) == before[name], name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pm", "rm", "sft"]  # no .tmp-* / .old folders left
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(load_policy(tmp_path / "sft")[0](ids).logits, policy(ids).logits)
    for name, save in saves.items():  # a whole save afterwards replaces the folder
        save(seed=1)
        assert _snapshot(tmp_path / name) != before[name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pm", "rm", "sft"]


def test_atomic_save_dir_replaces_whole_folders(tmp_path):
    import os

    from nlhf.training.checkpoint import atomic_save_dir

    target = tmp_path / "out"
    atomic_save_dir(target, lambda d: (d / "a.txt").write_text("1"))
    (tmp_path / ".out.old").mkdir()  # left by a process killed between the two renames
    atomic_save_dir(target, lambda d: (d / "b.txt").write_text("2"))
    assert _snapshot(target) == {"b.txt": b"2"}  # nothing of the previous folder survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's private 0o700


def test_collate_any_number_of_responses(pm, tok):
    xs, ys, yps = random_texts(3, 27), random_texts(3, 28), random_texts(3, 29)
    three = pm.collate(xs, ys, yps, ys)
    assert int(three["block_ids"].max()) == 3
    with torch.no_grad():
        h = pm.features(**three)
    assert torch.allclose(h[:, 0], h[:, 2], atol=1e-5)  # the same response in blocks 1 and 3
    with pytest.raises(ValueError, match="at least one response"):
        pm.collate(xs)
    with pytest.raises(ValueError, match="2 responses but 1 response masks"):
        pm.collate(xs, ys, yps, response_masks=[None])
