"""benchmarks/explorer.py at CI size: it runs end to end (synthetic job, static report, headless
Chromium) and prints its timings. The 16,000-image numbers come from running it by hand (README,
"Speed"); a timed assertion here would fail on a busy 2-core machine for no fault of the page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_explorer_benchmark_measures_the_overview_at_ci_size() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "explorer.py"),
            "--images",
            "300",
            "--repeats",
            "1",
            "--no-gateway",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    overview = re.search(r"overview\s+interactive\s+(\d+) ms\s+visible thumbnails\s+(\d+) ms", proc.stdout)
    assert overview, proc.stdout
    assert re.search(r"level-1 concept .* first render\s+\d+ ms", proc.stdout), proc.stdout
