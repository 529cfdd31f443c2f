"""Progress as log lines, for a stderr that is not a terminal (CI, `nohup`, a job runner): a line
when a stage starts and when it ends, and within a stage at most one every `interval_s` (30 s)
with done/total and an estimate of the time left. Log records of the logger `neuron_atlas.progress`,
so `LOG_FORMAT=json` makes them JSON lines like the rest of the run's logs (`shared.observability.logs`)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from neuron_atlas.terminal import TerminalProgress
from neuron_atlas_client.errors import InputError

LOGGER = "neuron_atlas.progress"
INTERVAL_S = 30.0
INTERVAL_ENV = "NEURON_ATLAS_PROGRESS_INTERVAL_S"  # tests set 0: a line at every step


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass
class _Stage:
    total: int
    started: float
    last_line: float
    done: int = 0


class ProgressLines:
    """`shared.pipeline.progress.Progress` as log lines; safe to call from several threads (the labeller
    reports from its request threads)."""

    def __init__(
        self,
        log: logging.Logger | None = None,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log or logging.getLogger(LOGGER)
        self.interval_s = interval_s
        self.clock = clock
        self._stages: dict[str, _Stage] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    def start(self, stage: str, total: int) -> None:
        if total <= 0:  # nothing to do (e.g. no image needs a caption): nothing to say
            return
        now = self.clock()
        with self._lock:
            self._stages[stage] = _Stage(total, now, now)
        counts = f", 0/{total}" if total > 1 else ""
        self._line("start", stage, f"{stage}: started{counts}", 0, total, 0.0, None)

    def advance(self, stage: str, amount: int = 1) -> None:
        now = self.clock()
        with self._lock:
            state = self._stages.get(stage)
            if state is None:
                return
            state.done = min(state.total, state.done + amount)
            if now - state.last_line < self.interval_s or state.done >= state.total:
                return  # the end gets its own line from finish()
            state.last_line = now
            done, total, elapsed = state.done, state.total, now - state.started
        eta = elapsed * (total - done) / done if done else None
        left = f", about {duration(eta)} left" if eta is not None else ""
        message = f"{stage}: {done}/{total} ({done / total:.0%}), {duration(elapsed)} so far{left}"
        self._line("progress", stage, message, done, total, elapsed, eta)

    def finish(self, stage: str) -> None:
        with self._lock:
            state = self._stages.pop(stage, None)
        if state is None:
            return
        elapsed = self.clock() - state.started
        counts = f" {state.total}/{state.total}" if state.total > 1 else ""
        message = f"{stage}: done{counts} in {duration(elapsed)}"
        self._line("finish", stage, message, state.total, state.total, elapsed, 0.0)

    def _line(
        self, event: str, stage: str, message: str, done: int, total: int, elapsed: float, eta: float | None
    ) -> None:
        self.log.info(
            "%s",
            message,
            extra={
                "event": event,
                "stage": stage,
                "done": done,
                "total": total,
                "elapsed_s": round(elapsed, 1),
                "eta_s": None if eta is None else round(eta, 1),
            },
        )


def interval_from_env() -> float:
    """`NEURON_ATLAS_PROGRESS_INTERVAL_S`, else 30 s."""
    text = os.environ.get(INTERVAL_ENV)
    if not text:
        return INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise InputError(f"{INTERVAL_ENV}={text!r} is not a number of seconds.", "Unset it or give e.g. 30.")
    return value


def progress_display(quiet: bool) -> TerminalProgress | ProgressLines:
    """Bars on a terminal, lines elsewhere, nothing with --quiet."""
    if quiet:
        return TerminalProgress(enabled=False)
    if sys.stderr.isatty():
        return TerminalProgress(enabled=True)
    return ProgressLines(interval_s=interval_from_env())
