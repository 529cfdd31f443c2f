"""`neuron-atlas compare`: comparison.json, the summary, the gates' exit statuses, the errors, and
docs/comparison.md's examples run as written, on the planted runs (tests/comparison_runs.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from neuron_atlas.cli import main as cli_main
from shared.contracts.schema import COMPARISON_PUBLISHED
from tests.comparison_runs import PlantedRuns
from tests.readme_examples import DOCS, ROOT, bash_blocks

pytestmark = pytest.mark.slow
PAGE = DOCS / "comparison.md"
SAND_CONCEPT = "L2-0"  # blue circles on sand: its group holds the sand detectors


def test_compare_writes_a_valid_comparison_and_a_summary(
    planted_runs: PlantedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert cli_main(["compare", str(planted_runs.original), str(planted_runs.zeroed), "--out", str(out)]) == 0
    document = json.loads((out / "comparison.json").read_text())
    jsonschema.validate(document, json.loads(COMPARISON_PUBLISHED.read_text()))
    assert document["method"]["mode"] == "same_layers" and document["images"] == 72
    captured = capsys.readouterr()
    assert "changed beyond same-model noise" in captured.out
    assert f"{SAND_CONCEPT}     changed" in captured.out and "lost conv1:0,conv1:1,conv1:2" in captured.out
    assert captured.err.strip().splitlines() == [
        f"result: {out / 'comparison.json'}",
        f"explorer: {(out / 'explorer' / 'index.html').resolve().as_uri()}",
    ]


def test_the_gates_fail_the_zeroed_detectors_and_pass_the_moved_ones(
    planted_runs: PlantedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = ["--fail-if-lost", SAND_CONCEPT, "--fail-if-causal-drop", f"{SAND_CONCEPT}=0.2"]
    zeroed = ["compare", str(planted_runs.original), str(planted_runs.zeroed), "--out", str(tmp_path / "z")]
    assert cli_main(["-q", *zeroed, *gate]) == 1
    err = capsys.readouterr().err
    assert f"gate failed: {SAND_CONCEPT} (" in err and "causal effect fell from" in err
    assert "group vanished" not in err  # the group kept half of itself: --min-kept 0.5 holds
    assert cli_main(["-q", *zeroed, "--fail-if-lost", SAND_CONCEPT, "--min-kept", "0.9"]) == 1
    assert "B keeps 0.50 of A's group (at least 0.90 required)" in capsys.readouterr().err
    moved = ["compare", str(planted_runs.original), str(planted_runs.moved), "--out", str(tmp_path / "m")]
    assert cli_main(["-q", *moved, *gate]) == 0  # the same detectors, under other indices
    # a concept neither model tested cannot pass a causal gate
    assert cli_main(["-q", *moved, "--fail-if-causal-drop", "L1-17=0.2"]) == 1
    assert "cannot be checked: not tested" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fail-if-lost", "no such concept"], "No concept is called 'no such concept'"),
        (["--fail-if-lost", "L3-2"], "A has no group for L3-2"),
        (["--fail-if-causal-drop", "L2-0"], "is not CONCEPT=DROP"),
        (["--min-kept", "1.5"], "not a share between 0 and 1"),
    ],
)
def test_a_wrong_gate_is_exit_2_with_what_to_do(
    planted_runs: PlantedRuns,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    argv = ["compare", str(planted_runs.original), str(planted_runs.moved), "--out", str(tmp_path), *flags]
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse's own refusal of a flag's value
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err


def test_results_that_cannot_be_compared_are_exit_2(
    planted_runs: PlantedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli_main(["compare", str(planted_runs.original), str(planted_runs.sample), "--out", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert "holds no hierarchy.json" in err and "what to do:" in err
    assert not (tmp_path / "comparison.json").exists()


def _shim(folder: Path) -> dict[str, str]:
    """`neuron-atlas` on PATH, running this worktree's code with the test's interpreter."""
    folder.mkdir()
    script = folder / "neuron-atlas"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m neuron_atlas.cli "$@"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


def test_the_docs_examples_compare_and_gate_a_promotion(planted_runs: PlantedRuns, tmp_path: Path) -> None:
    """docs/comparison.md's first example (its two runs are the planted runs: v3 the original,
    v4 the zeroed copy) and its CI gate, as written: the gate refuses v4."""
    first, gate = (
        b
        for b in bash_blocks(PAGE)
        if b.commands[0].startswith("neuron-atlas") and "--also-model" not in b.script()
    )  # the one-job example is run by tests/neuron_atlas/test_multi_model.py
    env = _shim(tmp_path / "bin")
    shutil.copytree(planted_runs.original, tmp_path / "out-v3")
    shutil.copytree(planted_runs.zeroed, tmp_path / "out-v4")
    run = subprocess.run(
        ["bash", "-e", "-c", first.script(skip=("neuron-atlas run",))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "4 changed, 0 vanished" in run.stdout and (tmp_path / "compare-v4" / "comparison.json").is_file()
    promotion = subprocess.run(
        ["bash", "-c", gate.script()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert promotion.returncode == 1
    assert "gate failed: L2-0" in promotion.stderr and "v4 is not promoted" in promotion.stderr
