"""Judges that fail on purpose, for the resume and NaN tests (tests/test_training.py, tests/test_probe.py and the
multiprocess worker): a preference model that is killed, or turns NaN, at its ``at``-th call."""

import torch


class Interrupt(Exception):
    """A kill in the middle of a run."""


class FaultyJudge(torch.nn.Module):
    """``pm`` (a pairwise judge), except that its ``at``-th call raises :class:`Interrupt` (``fault="kill"``) or
    every call from the ``at``-th on returns NaN logits (``fault="nan"``: sampling is untouched, the loss is not)."""

    def __init__(self, pm, at: int, fault: str = "kill"):
        super().__init__()
        self.pm, self.at, self.fault, self.n = pm, at, fault, 0
        self.kind, self.tokenizer = pm.kind, pm.tokenizer

    def logits_from_ids(self, *a):
        self.n += 1
        if self.fault == "kill" and self.n == self.at:
            raise Interrupt
        out = self.pm.logits_from_ids(*a)
        return out * float("nan") if self.fault == "nan" and self.n >= self.at else out
