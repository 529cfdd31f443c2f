"""Progress off a terminal: log lines at each stage's start and end, and at most every interval
within a stage, with done/total and the time left."""

from __future__ import annotations

import io
import json
import logging

from neuron_atlas.progress_lines import ProgressLines, duration
from shared.observability.logs import JsonFormatter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(formatter: logging.Formatter | None = None) -> tuple[ProgressLines, io.StringIO, Clock]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or logging.Formatter("%(message)s"))
    log = logging.getLogger(f"test.progress.{id(stream)}")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    clock = Clock()
    return ProgressLines(log, interval_s=30.0, clock=clock), stream, clock


def test_a_stage_says_when_it_starts_and_ends_and_at_most_every_interval_between():
    progress, stream, clock = _lines()
    progress.start("activations", 1000)
    for _ in range(9):  # 9 shards in 27 s: within the interval, no line
        clock.now += 3
        progress.advance("activations", 100)
    clock.now += 5  # 32 s in, 950 done
    progress.advance("activations", 50)
    clock.now += 1
    progress.advance("activations", 10)  # 1 s after the last line: none
    clock.now += 2
    progress.advance("activations", 40)  # the last step: the end line says it
    progress.finish("activations")
    assert stream.getvalue().splitlines() == [
        "activations: started, 0/1000",
        "activations: 950/1000 (95%), 32 s so far, about 2 s left",
        "activations: done 1000/1000 in 35 s",
    ]


def test_a_single_step_stage_has_no_counts_and_an_empty_one_says_nothing():
    progress, stream, clock = _lines()
    progress.start("caption", 0)  # every caption provided
    progress.advance("caption", 0)
    progress.finish("caption")
    progress.start("uncertainty", 1)
    clock.now += 125
    progress.finish("uncertainty")
    assert stream.getvalue().splitlines() == ["uncertainty: started", "uncertainty: done in 2 min 05 s"]


def test_with_json_logging_each_line_is_a_json_record_with_the_counts():
    progress, stream, clock = _lines(JsonFormatter("cli"))
    progress.start("labels", 40)
    clock.now += 31
    progress.advance("labels", 10)
    progress.finish("labels")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["start", "progress", "finish"]
    assert records[1] | {"ts": None} == {
        "ts": None,
        "level": "info",
        "service": "cli",
        "logger": records[1]["logger"],
        "message": "labels: 10/40 (25%), 31 s so far, about 1 min 33 s left",
        "job_id": None,
        "tenant": None,
        "event": "progress",
        "stage": "labels",
        "done": 10,
        "total": 40,
        "elapsed_s": 31.0,
        "eta_s": 93.0,
    }


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.4, 42, 185, 3720)] == ["0 s", "42 s", "3 min 05 s", "1 h 02 min"]
