"""Fixtures shared by several test modules."""

import pytest

from nlhf.tasks import SyntheticTask, SyntheticTaskConfig
from nlhf.tokenization import build_word_tokenizer


# The sizes of a small synthetic task for tests, ~10x below the CPU profile's.
TINY_SIZES = dict(n_sft=2_000, n_sft_eval=200, n_pref_train=2_000, n_pref_test=200, n_prompts_train=500,
                  n_prompts_eval=200)


def tiny_task_config(**overrides) -> SyntheticTaskConfig:
    """A synthetic task config of ``TINY_SIZES``, with ``overrides``."""
    return SyntheticTaskConfig(**{**TINY_SIZES, **overrides})


@pytest.fixture(scope="session")
def tiny_config():
    """:func:`tiny_task_config`, for test modules (they cannot import conftest)."""
    return tiny_task_config


@pytest.fixture(scope="session")
def completist_task():
    """A small synthetic task with the default (completist) rater population."""
    return SyntheticTask(tiny_task_config(population="completist", n_sft=200, n_pref_train=200, n_pref_test=20,
                                          n_prompts_train=32))


@pytest.fixture(scope="session")
def completist_tok(completist_task, tmp_path_factory):
    """Its word-level tokenizer, padding on the left as the samplers expect."""
    tok = build_word_tokenizer(completist_task.vocabulary(), tmp_path_factory.mktemp("tok"))
    tok.padding_side = "left"
    return tok
