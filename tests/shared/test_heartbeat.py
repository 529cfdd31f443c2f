"""The liveness probe's check of the heartbeat file (the worker side: tests/deploy)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.jobs import heartbeat


def test_the_probe_passes_on_a_fresh_file_and_fails_on_a_stale_or_missing_one(tmp_path: Path) -> None:
    beat = tmp_path / "run" / "heartbeat"
    assert heartbeat.main([str(beat), "--max-age", "60"]) == 1
    heartbeat.touch(beat)
    assert heartbeat.main([str(beat), "--max-age", "60"]) == 0
    old = time.time() - 61
    os.utime(beat, (old, old))
    assert heartbeat.main([str(beat), "--max-age", "60"]) == 1


def test_keep_touching_refreshes_the_file_until_stopped(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    heartbeat.touch(beat)
    os.utime(beat, (0, 0))
    stop = heartbeat.keep_touching(beat, 0.05)
    try:
        deadline = time.monotonic() + 5
        while (heartbeat.age_s(beat) or 1e9) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (heartbeat.age_s(beat) or 1e9) < 1
    finally:
        stop.set()
