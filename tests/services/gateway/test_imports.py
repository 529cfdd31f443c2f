"""The gateway image has no torch: importing the gateway must not import it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_gateway_app_imports_without_torch_or_worker_code() -> None:
    code = (
        "import sys, services.gateway.main as m; assert m.app is not None; "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('torch', 'torchvision', 'transformers', 'sentence_transformers', 'finch') "
        "or n.startswith(('services.caption', 'services.activation', 'services.embed_cluster', "
        "'services.labelling'))); print(bad); sys.exit(1 if bad else 0)"
    )
    root = str(Path(__file__).resolve().parents[3])
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_requirements_name_no_torch() -> None:
    text = (Path(__file__).resolve().parents[3] / "services/gateway/requirements.txt").read_text()
    assert not any(
        line.split("==")[0].strip() in ("torch", "torchvision", "transformers") for line in text.splitlines()
    )
