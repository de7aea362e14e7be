"""Progress of a long loop as a few plain log lines (one every 10% by default), not a redrawn bar.

The training loops run inside notebook kernels: a bar redrawn with carriage returns leaves hundreds of fragments in
the executed notebook, while a line per 10% reads cleanly there, in Jupyter, and in the terminal, where papermill's
``--log-output`` (dvc.yaml) forwards each line while the stage runs.
"""

from __future__ import annotations

import time


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """``update(done, **values)`` after each iteration; prints ``desc: done/total (pct) elapsed, ~left  k=v`` when
    ``done`` crosses the next ``1/lines`` of ``total`` (and at the end). ``start`` is where a resumed loop begins."""

    def __init__(self, desc: str, total: int, start: int = 0, lines: int = 10, enabled: bool = True):
        self.desc, self.total, self.start, self.enabled = desc, max(int(total), 1), int(start), enabled
        self.every = max(self.total // max(lines, 1), 1)
        self.t0 = time.perf_counter()
        self.next = (self.start // self.every + 1) * self.every

    def update(self, done: int, **values) -> None:
        if not self.enabled or (done < self.next and done != self.total):
            return
        self.next = (done // self.every + 1) * self.every
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else 0.0
        extra = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(f"{self.desc}: {done}/{self.total} ({done / self.total:.0%}) {_clock(elapsed)} elapsed, "
              f"~{_clock(left)} left" + (f"  {extra}" if extra else ""), flush=True)
