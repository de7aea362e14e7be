"""The library as a researcher uses it without the pipeline: the example of docs/library.md runs as written and
learns, the judge adapters answer the protocols with what their functions say, and wrong inputs stop with errors
that name them."""

import math
import random
import re
from pathlib import Path

import pytest
import torch

import nlhf
from nlhf import (BradleyTerryPairwiseJudge, LLMJudge, PolicyGradientConfig, PolicyGradientTrainer,
                  TextPairwiseJudge, TextRewardJudge)

ROOT = Path(__file__).resolve().parents[1]


def _local_model(root: Path, n_positions: int = 128, seed: int = 0) -> list[str]:
    """A tiny GPT-2 and a byte-level BPE saved as a local folder ``models/my-causal-lm`` (what a user has after
    downloading a model), and 64 prompts in ``prompts.txt``; returns the prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    rng = random.Random(seed)
    words = "the a cat dog sat ran on under mat table all day night quickly slowly red blue big small bird tree".split()
    corpus = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(500)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    folder = root / "models" / "my-causal-lm"
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=32, n_layer=1, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(folder)
    prompts = [f"Summarize: {c}" for c in corpus[:64]]
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return prompts


def _example() -> str:
    text = (ROOT / "docs" / "library.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/library.md should hold exactly one python example"
    return blocks[0]


def _tokenizer(root: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "models" / "my-causal-lm")
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    return tok


def test_the_documented_example_runs_as_written_and_learns(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    _local_model(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = _example()
    scope: dict = {"__name__": "__main__"}
    exec(compile(code, "docs/library.md", "exec"), scope)
    curve = scope["curve"]
    # the judge prefers short responses: the policy learns to stop early (from the 24-token limit)
    assert curve[0]["length"] > 20 and curve[-1]["length"] < 8
    assert scope["rows"] == curve  # the list callback saw every logged row
    assert "response length" in capsys.readouterr().out
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "my-causal-lm-nash-md")
    for a, b in zip(saved.state_dict().values(), scope["policy"].state_dict().values()):
        assert torch.equal(a, b)
    # run again as written: the finished state is resumed (no step is retrained) and the curve is the same
    rerun: dict = {"__name__": "__main__"}
    exec(compile(code, "docs/library.md", "exec"), rerun)
    assert rerun["curve"] == curve and rerun["rows"] == []
    for a, b in zip(rerun["policy"].state_dict().values(), scope["policy"].state_dict().values()):
        assert torch.equal(a, b)


def test_text_judges_answer_with_their_functions_values(tmp_path):
    _local_model(tmp_path)
    tok = _tokenizer(tmp_path)
    xs, ys, yps = ["Summarize: a cat", "Summarize: the dog ran"], ["cat sat", "dog"], ["a big red bird", "dog ran"]
    tok.padding_side = "left"
    x = tok(xs, return_tensors="pt", padding=True)
    tok.padding_side = "right"
    y, yp = tok(ys, return_tensors="pt", padding=True), tok(yps, return_tensors="pt", padding=True)
    seen = []

    def prefer(prompts, a, b):
        seen.append((prompts, a, b))
        return [0.25, 0.9]

    logits = TextPairwiseJudge(prefer, tok).logits_from_ids(x.input_ids, x.attention_mask, y.input_ids,
                                                            y.attention_mask, yp.input_ids, yp.attention_mask)
    assert seen == [(xs, ys, yps)]  # the texts, padding and special tokens dropped
    assert torch.sigmoid(logits).tolist() == pytest.approx([0.25, 0.9], abs=1e-6)
    reward = TextRewardJudge(lambda prompts, a: [-len(t.split()) for t in a], tok)
    assert reward.rewards_from_ids(x.input_ids, x.attention_mask, y.input_ids, y.attention_mask).tolist() == [-2, -1]
    bt = BradleyTerryPairwiseJudge(reward).logits_from_ids(x.input_ids, x.attention_mask, y.input_ids,
                                                           y.attention_mask, yp.input_ids, yp.attention_mask)
    assert bt.tolist() == [-2 - (-4), -1 - (-2)]  # r(y) − r(y′)


def test_wrong_inputs_stop_with_errors_that_name_them(tmp_path):
    from transformers import AutoModelForCausalLM

    prompts = _local_model(tmp_path, n_positions=40)
    tok = _tokenizer(tmp_path)
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "my-causal-lm")
    pairwise = TextPairwiseJudge(lambda p, a, b: [0.5] * len(a), tok)
    reward = TextRewardJudge(lambda p, a: [0.0] * len(a), tok)
    with pytest.raises(TypeError, match=r"judge \(method 'rlhf'\): a reward judge must have rewards_from_ids"):
        PolicyGradientTrainer(policy, policy, pairwise, tok, prompts, PolicyGradientConfig(method="rlhf", tau=0.05))
    with pytest.raises(TypeError, match=r"judge \(method 'nash_md'\): a preference judge must have logits_from_ids"):
        PolicyGradientTrainer(policy, policy, reward, tok, prompts, PolicyGradientConfig(max_new_tokens=4))
    with pytest.raises(ValueError, match=r"^max_new_tokens: 24 new tokens after the longest prompt \(\d+ tokens\) "
                                         r"exceed the policy's 40 positions"):
        PolicyGradientTrainer(policy, policy, pairwise, tok, prompts, PolicyGradientConfig(max_new_tokens=24))
    with pytest.raises(ValueError, match=r"^method: unknown method 'nash'"):
        PolicyGradientConfig(method="nash")
    with pytest.raises(ValueError, match=r"^beta: must be in \[0, 1\]"):
        PolicyGradientConfig(method="nash_md", beta=1.5)
    with pytest.raises(ValueError, match=r"^prompts: the trainer needs at least one"):
        PolicyGradientTrainer(policy, policy, pairwise, tok, [], PolicyGradientConfig(max_new_tokens=4))


def test_dvclive_callback_logs_every_row_at_its_step():
    """``DVCLiveCallback`` speaks DVCLive's ``Live`` API: one ``log_metric`` per value, then ``next_step``."""
    calls = []

    class Live:
        def log_metric(self, name, value):
            calls.append((name, value))

        def next_step(self):
            calls.append("next")

    cb = nlhf.DVCLiveCallback(Live())
    cb.on_log({"step": 1, "loss": 0.5, "p_vs_opponent": None, "kl_to_ref": 0.1})
    cb.on_log({"step": 2, "loss": 0.25, "p_vs_opponent": 0.6, "kl_to_ref": 0.2})
    assert calls == [("train/loss", 0.5), ("train/kl_to_ref", 0.1), "next",
                     ("train/loss", 0.25), ("train/p_vs_opponent", 0.6), ("train/kl_to_ref", 0.2), "next"]


def test_the_public_names_import_from_the_package():
    for name in nlhf.__all__:
        assert getattr(nlhf, name) is not None
    assert math.isclose(PolicyGradientConfig().beta, 0.125)  # the paper's MD1 by default


class _FavoursA(torch.nn.Module):
    """A judge model with a position bias: the answer token " A" gets +``bias`` on top of the model's logit."""

    def __init__(self, model, a_id: int, bias: float):
        super().__init__()
        self.model, self.a_id, self.bias = model, a_id, bias

    def forward(self, **kw):
        out = self.model(**kw)
        out.logits[..., self.a_id] += self.bias
        return out


def test_llm_judge_averages_both_orders_and_cancels_position_bias(tmp_path):
    from transformers import AutoModelForCausalLM

    prompts = _local_model(tmp_path)[:6]
    tok = _tokenizer(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "my-causal-lm")
    template = "Text: {prompt} A: {a} B: {b} Better:"
    ys, yps = ["cat sat on the mat", "dog", "red bird"] * 2, ["the dog ran all day", "cat", "blue tree"] * 2
    # this tiny BPE splits " A" into a space and "A", so the answers are the letters alone (a real model's tokenizer
    # usually has " A" and " B" as single tokens: the default)
    judge = LLMJudge(model, tok, template=template, answers=("A", "B"))
    # the definition, row by row: σ(ℓ_A − ℓ_B) of the last position, in both orders
    a, b = judge.answer_ids
    for x, y, yp, got in zip(prompts, ys, yps, judge.preference(prompts, ys, yps).tolist()):
        first = [model(**tok(template.format(prompt=x, a=u, b=v), return_tensors="pt")).logits[0, -1]
                 for u, v in ((y, yp), (yp, y))]
        want = 0.5 * (torch.sigmoid(first[0][a] - first[0][b]) + 1 - torch.sigmoid(first[1][a] - first[1][b]))
        assert got == pytest.approx(want.item(), abs=1e-5)
    biased = LLMJudge(_FavoursA(model, a, 3.0), tok, template=template, answers=("A", "B"))
    p, q = biased.preference(prompts, ys, yps), biased.preference(prompts, yps, ys)
    assert (biased.first_wins(prompts, ys, ys) > 0.9).all()  # the bias is real ...
    assert torch.allclose(biased.preference(prompts, ys, ys), torch.full((6,), 0.5), atol=1e-6)  # ... and cancels
    assert torch.allclose(p + q, torch.ones(6), atol=1e-6)
    with pytest.raises(ValueError, match=r"^template: must contain \{b\}"):
        LLMJudge(model, tok, template="{prompt} {a}")
    with pytest.raises(ValueError, match=r"^answers: .* two different tokens"):
        LLMJudge(model, tok)  # " A" and " B" both start with the space token here
    # behind the pairwise protocol, it drives the trainer
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "my-causal-lm")
    out = PolicyGradientTrainer(policy, model, judge.pairwise_judge(tok), tok, prompts,
                                PolicyGradientConfig(steps=2, batch_size=2, max_new_tokens=4, log_every=1)).train()
    assert [r["step"] for r in out.log["train"]] == [1, 2] and 0 < out.log["train"][-1]["p_vs_opponent"] < 1
