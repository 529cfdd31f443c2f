"""The light client distribution (`client/`, `neuron-atlas-client`): it installs alone, quickly,
with httpx and pydantic only; it imports no torch and no package but its own; its pins agree with
the main distribution's; and its sync client is what unasync makes of the async one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"
INSTALL_LIMIT_S = 30.0

# Run inside the fresh venv: what importing every part of the client pulls in, what the installed
# distribution holds, and what the MLflow helper says without its extra.
PROBE = """
import importlib.metadata as md, importlib.util, json, sys
import neuron_atlas_client, neuron_atlas_client.aio, neuron_atlas_client.sync
import neuron_atlas_client.remote_cli, neuron_atlas_client.mlflow_log, neuron_atlas_client.contracts.hierarchy
from neuron_atlas_client import AsyncClient, Client
from neuron_atlas_client.errors import MissingExtra

try:
    Client("http://127.0.0.1:9", api_key="unused").log_to_mlflow("0" * 32)
    missing = None
except MissingExtra as exc:
    missing = [exc.problem, exc.fix]
dist = md.distribution("neuron-atlas-client")
top = sorted({f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")
              and not f.parts[0].endswith((".dist-info", ".pth"))})
print(json.dumps({
    "loaded": sorted({n.split(".")[0] for n in sys.modules}),
    "top_level": top,
    "requires": dist.requires,
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "torch_installed": importlib.util.find_spec("torch") is not None,
    "missing_extra": missing,
}))
"""


def fresh_venv(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


def pip_install(python: Path, *args: str) -> float:
    """Seconds `pip install` took, with pip's own cache and index settings (pip.conf)."""
    start = time.monotonic()
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    return took


@pytest.mark.slow
def test_the_client_installs_alone_in_seconds_and_imports_only_itself(tmp_path: Path) -> None:
    # The first install warms pip's caches (the wheels of httpx, pydantic and setuptools for the
    # build); the second, into another fresh venv, is the one a pipeline step waits for.
    pip_install(fresh_venv(tmp_path / "warm"), str(CLIENT))
    python = fresh_venv(tmp_path / "venv")
    took = pip_install(python, str(CLIENT))
    print(f"pip install ./client from a warm cache: {took:.1f} s")
    assert took < INSTALL_LIMIT_S

    probe = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["top_level"] == ["neuron_atlas_client"]
    assert sorted(r.split(";")[0].strip() for r in found["requires"]) == [
        "httpx==0.28.1",
        "mlflow-skinny==3.17.2",
        "pydantic==2.14.3",
    ]
    assert not found["torch_installed"]
    heavy = {"torch", "numpy", "mlflow", "rich", "shared", "services", "neuron_core", "neuron_atlas"}
    assert heavy.isdisjoint(found["loaded"]), sorted(heavy & set(found["loaded"]))
    assert "torch" not in found["installed"] and "numpy" not in found["installed"]
    assert found["missing_extra"] == [
        "MLflow logging needs the MLflow client, which is not installed.",
        "pip install 'neuron-atlas-client[mlflow]'",
    ]

    # The remote CLI's console script, and its refusal before sending anything.
    remote = tmp_path / "venv" / "bin" / "neuron-atlas-remote"
    env = {"PATH": str(remote.parent), "HOME": str(tmp_path)}
    listed = subprocess.run([str(remote), "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert listed.returncode == 0 and "submit" in listed.stdout and "models" in listed.stdout
    refused = subprocess.run(
        [str(remote), "status", "0" * 32], capture_output=True, text=True, timeout=60, env=env
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("neuron-atlas remote: error: no gateway URL")


def pins(requirements: list[str]) -> dict[str, str]:
    """`name==version  # comment` lines as {name: version}."""
    found = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        found[name.strip()] = version.split(";")[0].strip()
    return found


def test_the_client_pins_what_the_main_distribution_pins() -> None:
    main = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    main_pins = pins(main["dependencies"])
    client_pins = pins(client["dependencies"])
    assert set(client_pins) == {"httpx", "pydantic"}
    assert all(main_pins[name] == version for name, version in client_pins.items())
    assert pins(client["optional-dependencies"]["mlflow"]) == pins(main["optional-dependencies"]["mlflow"])
    assert main_pins["neuron-atlas-client"] == client["version"] == main["version"]
    gateway = (ROOT / "services/gateway/requirements.txt").read_text().split()
    assert all(f"{name}=={version}" in gateway for name, version in client_pins.items())


def test_the_sync_client_is_what_unasync_makes_of_the_async_one() -> None:
    check = subprocess.run(
        [sys.executable, str(CLIENT / "generate_sync.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr


def test_a_stale_sync_client_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check compares text: an edit to aio.py that sync.py lacks is told apart."""
    monkeypatch.syspath_prepend(str(CLIENT))
    import generate_sync

    source = tmp_path / "aio.py"
    source.write_text(generate_sync.SOURCE.read_text().replace("async def job(", "async def job_by_id("))
    monkeypatch.setattr(generate_sync, "SOURCE", source)
    text = generate_sync.generated()
    assert "    def job_by_id(self, job_id: str) -> JobPublic:" in text
    assert text != generate_sync.TARGET.read_text()


def test_the_main_distribution_lends_the_mlflow_helper_its_explorer_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report needs numpy and the atlas code, so the client finds its writer through the entry
    point the main distribution declares; here declared as an install would (a dist-info)."""
    from neuron_atlas_client.mlflow_log import REPORT_ENTRY_POINTS, report_writer
    from services.gateway.explorer.report import write_report

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    ((name, target),) = declared[REPORT_ENTRY_POINTS].items()
    info = tmp_path / "neuron_atlas_probe-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: neuron-atlas-probe\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{REPORT_ENTRY_POINTS}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert report_writer() is write_report
