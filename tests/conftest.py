"""Fixtures shared by several test modules."""

import pytest

from nlhf.tasks import SyntheticTask, SyntheticTaskConfig
from nlhf.tokenization import build_word_tokenizer


@pytest.fixture(scope="session")
def completist_task():
    """A small synthetic task with the default (completist) rater population."""
    return SyntheticTask(SyntheticTaskConfig.tiny(population="completist", n_sft=200, n_pref_train=200,
                                                  n_pref_test=20, n_prompts_train=32))


@pytest.fixture(scope="session")
def completist_tok(completist_task, tmp_path_factory):
    """Its word-level tokenizer, padding on the left as the samplers expect."""
    tok = build_word_tokenizer(completist_task.vocabulary(), tmp_path_factory.mktemp("tok"))
    tok.padding_side = "left"
    return tok
