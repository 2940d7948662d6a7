"""Progress of long loops (sampling, scoring, evaluation, the tiny model's bootstrap), one helper for all.

On a terminal: a tqdm bar with rate and ETA. Anywhere else (CI, Prefect task logs, a redirected file): a log
line every ~10 % or ~30 s, because a bar redrawn with carriage returns turns into one unreadable line there.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger("selftrain.progress")

T = TypeVar("T")

LOG_EVERY_S = 30.0
LOG_EVERY_FRACTION = 0.10
QUIET_FIRST_S = 5.0  # a loop done in seconds (pairs, questions, a resumed stage) logs no progress at all


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts units of work towards `total`. Use as a context manager and call `update(n)`."""

    def __init__(self, total: int, desc: str, unit: str = "it", terminal: bool | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.terminal = _on_terminal() if terminal is None else terminal
        self._bar = None
        self._stack = contextlib.ExitStack()
        self._start = self._last_log = time.monotonic()
        self._last_logged_done = 0

    def __enter__(self) -> Progress:
        if self.terminal and self.total > 0:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
            # log lines printed while the bar is drawn would be cut into it; these go above the bar instead
            self._stack.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger()]))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._stack.close()
            self._bar.close()
        elif self._last_logged_done and self.done > self._last_logged_done and exc[0] is None:
            self._log_line()  # a loop that logged progress ends with its 100 % line and total time

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._start < QUIET_FIRST_S:
            return
        step = max(1, int(self.total * LOG_EVERY_FRACTION))
        if self.done - self._last_logged_done >= step or now - self._last_log >= LOG_EVERY_S:
            self._log_line(now)

    def line(self, now: float | None = None) -> str:
        """`desc: 30/96 question (31%), 2.4 question/s, elapsed 12s, ETA 27s`"""
        now = time.monotonic() if now is None else now
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}{pct}, {rate:.3g} {self.unit}/s"
        text += f", elapsed {_duration(elapsed)}"
        if 0 < self.done < self.total and rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text

    def _log_line(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        log.info("%s", self.line(now))
        self._last_log, self._last_logged_done = now, self.done


def track(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterator[T]:
    """`for x in track(items, "bootstrap", "step")`: the loop's progress, as a bar or as periodic log lines."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else 0  # type: ignore[arg-type]
    with Progress(total, desc, unit) as bar:
        for item in items:
            yield item
            bar.update(1)
