"""Where the CLI's log lines go: text on stderr, or with `LOG_FORMAT=json` one JSON object a line
(the suite's format, `shared.observability.logs`), so a log pipeline can read a CLI run like a worker's."""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import TextIO, cast

from neuron_atlas.progress_lines import LOGGER as PROGRESS_LOGGER
from shared.observability.logs import configure_logging

REPORT_LOGGER = "neuron_atlas.report"


def json_logs() -> bool:
    return os.environ.get("LOG_FORMAT", "").strip().lower() == "json"


def configure_cli_logging(verbose: bool) -> None:
    """Warnings (and with -v details) on stderr; progress lines always pass (they are shown or
    not by the run: `--quiet` and a terminal make none)."""
    level = logging.INFO if verbose else logging.WARNING
    progress = logging.getLogger(PROGRESS_LOGGER)
    progress.setLevel(logging.INFO)
    logging.getLogger(REPORT_LOGGER).setLevel(logging.INFO)
    if json_logs():
        configure_logging("cli", level, "json")
        logging.captureWarnings(True)  # a library's warnings.warn becomes a JSON line too
        progress.handlers[:] = []
        progress.propagate = True
        return
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Its own handler on the stderr of this call (tests swap sys.stderr between calls), with the
    # time: a line in a CI log says when it was written.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s neuron-atlas: %(message)s", "%Y-%m-%d %H:%M:%S"))
    progress.handlers[:] = [handler]
    progress.propagate = False


class LogLines(io.TextIOBase):
    """A text stream whose every line becomes a log record (at `level`): the run's report and
    errors, where stderr must hold JSON lines only."""

    def __init__(self, log: logging.Logger, level: int = logging.INFO) -> None:
        super().__init__()
        self.log, self.level = log, level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self.log.log(self.level, "%s", line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.log.log(self.level, "%s", self._pending)
            self._pending = ""


def stderr_stream() -> TextIO:
    """Where the CLI prints its report: stderr itself, or with LOG_FORMAT=json log records."""
    if json_logs():
        return cast(TextIO, LogLines(logging.getLogger(REPORT_LOGGER)))
    return sys.stderr
