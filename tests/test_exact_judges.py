"""The exact judges of the ablation: P* behind the pairwise judge protocol, and the Bradley–Terry fit of P*
behind the reward model's, extended to responses outside the candidate pool."""

import numpy as np
import pytest
import torch

from nlhf.games import bradley_terry
from nlhf.oracle import Pool
from nlhf.tasks.synthetic_raters import preference_from_utilities
from nlhf.judges import exact_pairwise_judge
from nlhf.training.exact_judges import ExactBTReward


def _pool(task, x, seed=0):
    cands = task.candidates(x)
    log_mu = np.log(np.random.default_rng(seed).dirichlet(np.ones(len(cands))))
    return Pool(x, cands, [], log_mu, 1.0)


def _ids(tok, texts, eos=False):
    enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def test_exact_preference_reads_token_ids_as_the_judge_reads_text(completist_task, completist_tok):
    task, tok = completist_task, completist_tok
    xs = task.prompts("eval")[:4]
    ys = [task.candidates(x)[0] for x in xs]
    yps = [task.references([x])[0] for x in xs]
    tok.padding_side = "left"
    p_ids, p_mask = _ids(tok, xs)
    tok.padding_side = "right"
    y_ids, y_mask = _ids(tok, ys)
    yp_ids, yp_mask = _ids(tok, yps)
    tok.padding_side = "left"
    logits = exact_pairwise_judge(task, tok).logits_from_ids(p_ids, p_mask, y_ids, y_mask, yp_ids, yp_mask)
    np.testing.assert_allclose(torch.sigmoid(logits.double()).numpy(), task.judge(xs, ys, yps), atol=1e-6)


def test_bt_reward_gives_back_the_pool_fit_and_ranks_outsiders_by_their_comparisons(completist_task, completist_tok):
    task, tok = completist_task, completist_tok
    x = task.prompts("train")[0]
    pool = _pool(task, x)
    judge = ExactBTReward(task, tok, [pool])
    u, mu, r = judge.fits[x]
    P = preference_from_utilities(u[:, None, :], u[None, :, :], task.cfg.rater_weights, task.cfg.rater_sharpness)
    np.testing.assert_allclose(r, bradley_terry.fit_bradley_terry(P, np.outer(mu, mu)))
    # a pool member's score solves its own stationarity equation: the joint fit's score (up to the tiny ridge)
    for j in (0, len(pool.candidates) // 2, len(pool.candidates) - 1):
        assert judge.reward(x, pool.candidates[j]) == pytest.approx(r[j], abs=1e-3)
    # outside the pool: the complete summary with two invented words appended is not a candidate, but every rater
    # values it exactly as the pool's embellished summaries (one invented word), so it gets their score
    complete = task.references([x])[0]
    extra = [w for w in task.fact_words if w not in x.split()][:2]
    outsider = " ".join([complete] + extra)
    assert outsider not in pool.candidates
    embellished = [j for j, y in enumerate(pool.candidates) if y.startswith(complete + " ")
                   and len(y.split()) == len(complete.split()) + 1 and y.split()[-1] not in x.split()]
    assert embellished
    member = pool.candidates[embellished[0]]
    assert judge.reward(x, outsider) == pytest.approx(judge.reward(x, member), abs=1e-9)
    # (it wins nearly every comparison, so its likelihood is flat and the joint fit's ridge moves it a little)
    assert judge.reward(x, member) == pytest.approx(r[embellished[0]], rel=0.01)
    # a malformed response loses every comparison: it sits at the bracket's low end
    assert judge.reward(x, "document :") == pytest.approx(r.min() - 20.0)
    with pytest.raises(KeyError, match="no candidate pool"):
        judge.reward("document : key storm . summary :", "storm")
