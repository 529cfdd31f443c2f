"""One job, several models (issue 27), embedded: `neuron-atlas run --also-model` on the planted
runs' collection equals the two single-model runs (tests/comparison_runs.py), model for model, and
its comparison equals `neuron-atlas compare` of those two runs."""

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
from shared.contracts.schema import COMPARISON_PUBLISHED, MULTI_MODEL_PUBLISHED
from tests.comparison_runs import PlantedRuns

pytestmark = pytest.mark.slow
# What differs between two runs of the same work: when it ran, and the version that ran it (the
# planted runs call the pipeline, which records "0"; the CLI records the package's version).
WHEN = {"created_at", "generator"}


def _flags() -> list[str]:
    """tests/comparison_runs.py's options, as flags."""
    return [
        "--layers=conv1",
        "--device=cpu",
        '--preprocessing={"input_size": 64, "resize": 64}',
        "--bootstrap-resamples=20",
        "--mc-samples=0",
        "--tta-samples=0",
        "--ablation-random-sets=0",
        "--pruning-random-sets=1",
        "--pruning-thresholds=0.05",
    ]


def _without(document: dict, keys: set[str]) -> dict:
    return {k: v for k, v in document.items() if k not in keys}


@pytest.fixture(scope="module")
def multi_run(planted_runs: PlantedRuns, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multi") / "out"
    original = planted_runs.sample.parent / "original.safetensors"
    moved = planted_runs.sample.parent / "moved.safetensors"
    argv = ["-q", "run", str(planted_runs.sample), "--out", str(out), f"--weights={original}"]
    assert cli_main([*argv, *_flags(), f"--also-model=resnet18,weights={moved}"]) == 0
    return out


def test_each_model_of_a_multi_model_run_equals_its_single_model_run(
    planted_runs: PlantedRuns, multi_run: Path
) -> None:
    for key, single in (("original", planted_runs.original), ("moved", planted_runs.moved)):
        folder = multi_run / "models" / key
        for name in ("groups.json", "uncertainty.json", "target.json"):
            assert (folder / name).read_bytes() == (single / name).read_bytes(), (key, name)
        shards = sorted(p.name for p in (single / "activations").iterdir())
        assert sorted(p.name for p in (folder / "activations").iterdir()) == shards
        for shard in shards:
            ours_shard, their_shard = folder / "activations" / shard, single / "activations" / shard
            assert ours_shard.read_bytes() == their_shard.read_bytes()
        ours = json.loads((folder / "hierarchy.json").read_text())
        theirs = json.loads((single / "hierarchy.json").read_text())
        assert _without(ours, WHEN) == _without(theirs, WHEN), key
    # captions, clusters and labels once, at the job's root
    for name in ("embeddings.npy", "partitions.npy", "labels.json"):
        assert (multi_run / name).read_bytes() == (planted_runs.original / name).read_bytes()
        assert not (multi_run / "models" / "moved" / name).exists()


def test_a_multi_model_runs_comparison_equals_comparing_the_two_runs(
    planted_runs: PlantedRuns, multi_run: Path, tmp_path: Path
) -> None:
    argv = ["-q", "compare", str(planted_runs.original), str(planted_runs.moved), "--out", str(tmp_path)]
    assert cli_main(argv) == 0
    separate = json.loads((tmp_path / "comparison.json").read_text())
    ours = json.loads((multi_run / "comparisons" / "moved.json").read_text())
    jsonschema.validate(ours, json.loads(COMPARISON_PUBLISHED.read_text()))
    # the same, but for where each side was read from, when, and by what
    for side in ("a", "b"):
        for document in (ours, separate):
            document[side] = _without(document[side], {"source", "created_at"})
    assert _without(ours, {"created_at", "generator"}) == _without(separate, {"created_at", "generator"})


def test_models_json_holds_one_tree_with_each_models_groups(
    planted_runs: PlantedRuns, multi_run: Path
) -> None:
    document = json.loads((multi_run / "models.json").read_text())
    jsonschema.validate(document, json.loads(MULTI_MODEL_PUBLISHED.read_text()))
    assert document["baseline"] == "original"
    assert [m["key"] for m in document["models"]] == ["original", "moved"]
    assert document["cost"]["once"] == ["ingest", "caption", "embed_cluster", "labelling"]
    single = {
        key: {c["id"]: c for c in json.loads((run / "hierarchy.json").read_text())["clusters"]}
        for key, run in (("original", planted_runs.original), ("moved", planted_runs.moved))
    }
    assert [c["id"] for c in document["concepts"]] == list(single["original"])
    for concept in document["concepts"]:
        for key, side in concept["models"].items():
            neurons = single[key][concept["id"]]["neurons"]
            assert side["group_size"] == len(neurons)
            assert [(n["layer"], n["channel"]) for n in side["neurons"]] == [
                (n["layer"], n["channel"]) for n in neurons
            ]
    # the planted change shows: the sand detectors 0-2 of the original are 40-42 in the moved copy
    sand = next(c for c in document["concepts"] if c["id"] == "L2-0")
    assert {n["channel"] for n in sand["models"]["original"]["neurons"]} >= {0, 1, 2}
    assert {n["channel"] for n in sand["models"]["moved"]["neurons"]} >= {40, 41, 42}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--also-model=resnet18"] * 4, "at most 4"),
        (["--also-model=resnet18,key=twin", "--also-model=resnet34,key=twin"], "two models have the key"),
        (["--also-model=resnet18,colour=blue"], "cannot read 'colour=blue'"),
    ],
)
def test_too_many_models_and_repeated_keys_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert cli_main(["run", str(tmp_path), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_docs_one_job_example_runs_as_written(planted_runs: PlantedRuns, tmp_path: Path) -> None:
    """docs/comparison.md's example, on a small sample, v3 the planted model and v4 its copy with
    the sand detectors moved: the folder it shows, and each model's hierarchy.json valid alone."""
    from neuron_atlas.sample import make_sample
    from tests.readme_examples import DOCS, ROOT, bash_blocks

    (example,) = (b for b in bash_blocks(DOCS / "comparison.md") if "--also-model" in b.script())
    make_sample(tmp_path / "images", per_concept=2, size=64)
    shutil.copy(planted_runs.sample.parent / "original.safetensors", tmp_path / "v3.safetensors")
    shutil.copy(planted_runs.sample.parent / "moved.safetensors", tmp_path / "v4.safetensors")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "neuron-atlas").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m neuron_atlas.cli "$@"\n')
    (shim / "neuron-atlas").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim}:{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(str(ROOT / part) for part in ("", "client/src")),
    }
    run = subprocess.run(
        ["bash", "-e", "-c", example.script()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "models.json").is_file() and (out / "comparisons" / "v4.json").is_file()
    schema = json.loads((ROOT / "shared" / "schemas" / "hierarchy.schema.json").read_text())
    for key in ("v3", "v4"):
        jsonschema.validate(json.loads((out / "models" / key / "hierarchy.json").read_text()), schema)
    assert "v3 against v4" in run.stdout


def _data(folder: Path) -> dict[str, str]:
    """An explorer folder's answers (`data/**/*.js`), by path."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted((folder / "data").rglob("*.js"))}


def _answer(script: str) -> dict:
    """The answer in one `data/*.js` script: `atlasData(KEY, VALUE);`."""
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(script, len("atlasData("))
    return decoder.raw_decode(script, end + 1)[0]


def test_a_multi_model_run_writes_each_comparisons_explorer_as_compare_does(
    planted_runs: PlantedRuns, multi_run: Path, tmp_path: Path
) -> None:
    """`run --also-model` writes OUT/comparisons/<key>/explorer/: the answers `compare` writes for
    the two single-model runs, but for the title; `report OUT` writes the baseline's explorer."""
    ours = multi_run / "comparisons" / "moved" / "explorer"
    assert (ours / "index.html").is_file() and (ours / "assets" / "app.js").is_file()
    argv = [
        "-q",
        "compare",
        str(planted_runs.original),
        str(planted_runs.moved),
        "--out",
        str(tmp_path / "c"),
    ]
    assert cli_main(argv) == 0
    theirs, mine = _data(tmp_path / "c" / "explorer"), _data(ours)
    assert sorted(mine) == sorted(theirs) and len(mine) > 3
    for name in mine:
        if name != "data/comparison/summary.js":
            assert mine[name] == theirs[name], name
    summary, separate = (_answer(answers["data/comparison/summary.js"]) for answers in (mine, theirs))
    assert summary["title"] == "original against moved"
    for document in (summary, separate):  # but for the title, when, and where each side was read
        document.pop("title"), document.pop("created_at")
        for side in document["models"].values():
            side.pop("source")
    assert summary == separate
    assert sum(summary["counts"][kind] for kind in ("changed", "vanished", "appeared")) > 0
    # `report OUT` writes the baseline's own explorer (its concepts as the single run's), beside
    # the comparisons' pages
    single = tmp_path / "original"
    shutil.copytree(planted_runs.original, single)
    assert cli_main(["report", str(single)]) == 0
    assert cli_main(["report", str(multi_run)]) == 0
    baseline, alone = _data(multi_run / "explorer"), _data(single / "explorer")
    concepts = [name for name in alone if name.startswith("data/concept/")]
    assert concepts and all(baseline[name] == alone[name] for name in concepts)
    assert (ours / "index.html").is_file()
