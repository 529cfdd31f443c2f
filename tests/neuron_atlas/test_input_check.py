"""A model trained at 32 px, run with ImageNet's 256/224 transform: with class labels, the run
must say so loudly, name the input size as the cause and the --preprocessing that fixes it;
with that flag it says nothing; with --strict it fails (exit 2) with the same words.

The model is a ResNet18 whose head is fitted to striped 32 px images (tests/tiny_models.py),
loaded from a safetensors file through --weights, as a user's checkpoint is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas_client.contracts.hierarchy import SCHEMA_VERSION
from tests.tiny_models import SIZED_INPUT, write_striped_collection

# the check runs after the activation pass; the later stages as light as they go
LIGHT = ["--layers", "layer4", "--mc-samples", "0", "--tta-samples", "0", "--ablation-random-sets", "0"]
LIGHT += ["--bootstrap-resamples", "0"]
FIX = f'--preprocessing \'{{"input_size": {SIZED_INPUT}, "resize": {SIZED_INPUT}, "mean": [0.485'


@pytest.fixture(scope="module")
def striped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/ (captions in metadata.csv), labels.json (for --labels) and model.safetensors."""
    return write_striped_collection(tmp_path_factory.mktemp("striped"))


def run_cli(striped: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, stderr into a pipe."""
    command = [str(Path(sys.executable).with_name("neuron-atlas")), "run", str(striped / "images")]
    weights = ["--weights", str(striped / "model.safetensors"), "--labels", str(striped / "labels.json")]
    return subprocess.run(
        [*command, "--out", str(out), *weights, *LIGHT, *extra], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def wrong_size(striped: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    out = tmp_path_factory.mktemp("wrong") / "out"
    proc = run_cli(striped, out)
    return proc, json.loads((out / "hierarchy.json").read_text()) if proc.returncode == 0 else {}


def test_the_wrong_input_size_is_said_on_stderr_with_the_flag_that_fixes_it(wrong_size):
    proc, _ = wrong_size
    assert proc.returncode == 0, proc.stderr
    assert (
        "labelled images is 0.25 (chance 0.25) with the input used (224 px crop of a 256 px resize"
        in proc.stderr
    )
    cause = "Likely cause: the input size: the model was likely trained on 32 px inputs, not 224 px crop"
    assert (
        cause in proc.stderr
        and "on a probe of 16 of them, 32 px, ImageNet normalisation gives 1.00" in proc.stderr
    )
    assert f"what to do: Run again with {FIX}" in proc.stderr
    # said when found (in the groups stage, before labelling and the uncertainty stage), and
    # again in the report at the end
    warned = proc.stderr.index("Likely cause")
    assert proc.stderr.index("groups: started") < warned < proc.stderr.index("uncertainty: started")
    assert "WARNING (input-size): " in proc.stderr[proc.stderr.index("images: 48 used") :]


def test_the_warning_is_recorded_in_hierarchy_json(wrong_size):
    _, hierarchy = wrong_size
    [warning] = hierarchy["warnings"]
    assert warning["kind"] == "input-size"
    assert "trained on 32 px inputs" in warning["message"] and FIX in warning["fix"]
    assert {image["label"] for image in hierarchy["images"]} == {"0", "1", "2", "3"}  # from --labels
    assert hierarchy["schema_version"] == SCHEMA_VERSION


def test_with_the_right_input_size_the_run_says_nothing(striped, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(striped, out, "--preprocessing", json.dumps({"input_size": 32, "resize": 32}), "--strict")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "Likely cause" not in proc.stderr
    hierarchy = json.loads((out / "hierarchy.json").read_text())
    assert "warnings" not in hierarchy
    check = json.loads((out / "input_check.json").read_text())
    assert check["top1_accuracy"] == 1.0 and check["probe"] == []  # nothing to gain: no probe


def test_strict_turns_the_warning_into_exit_2_with_the_same_words(striped, wrong_size, tmp_path):
    _, hierarchy = wrong_size
    out = tmp_path / "out"
    proc = run_cli(striped, out, "--strict")
    assert proc.returncode == 2, proc.stderr
    [warning] = hierarchy["warnings"]
    assert f"neuron-atlas: error: {warning['message']}" in proc.stderr
    assert f"what to do: {warning['fix']}" in proc.stderr
    assert "labelling: started" not in proc.stderr  # failed before the later stages
    assert not out.exists()
