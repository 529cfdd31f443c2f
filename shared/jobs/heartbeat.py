"""Worker liveness: the worker's event loop touches a file; a probe fails when the file goes stale.

A hung worker (its main loop blocked, or unable to reach the broker for that long) stops touching
the file, so `python -m shared.jobs.heartbeat FILE --max-age SECONDS` exits non-zero and Kubernetes
restarts the pod. A long task does not stop it: tasks run in pool processes, and the hard time
limit ends a stuck one. This module imports nothing heavy, so the probe starts in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path)


def age_s(path: Path, now: float | None = None) -> float | None:
    """Seconds since the file was last touched, or None when there is no file."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - mtime


def keep_touching(path: Path, interval_s: float) -> threading.Event:
    """Touch from a thread until the process exits (or the returned event is set): used during
    a warm shutdown, when the event loop has stopped but the pool is still finishing a task."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval_s):
            touch(path)

    threading.Thread(target=run, name="heartbeat-shutdown", daemon=True).start()
    return stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when FILE was touched within --max-age seconds.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--max-age", type=float, required=True)
    args = parser.parse_args(argv)
    age = age_s(args.file)
    if age is None:
        print(f"no heartbeat at {args.file}", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(f"heartbeat {age:.0f} s old (limit {args.max_age:.0f} s): the worker is stuck", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
