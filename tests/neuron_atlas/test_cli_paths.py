"""Every path a user gives works: relative to another working directory, with `~`, or through a
symlink, for every command that takes one. The demo and `run --out OUT_DIR` once failed on any
relative output folder (the store listed absolute paths against a relative root)."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from neuron_atlas.cli import main
from shared.pipeline.hierarchy import validate_hierarchy

# Light settings: these tests are about paths, not statistics.
LIGHT = [
    "--layers",
    "layer4",
    "--bootstrap-resamples",
    "20",
    "--mc-samples",
    "0",
    "--tta-samples",
    "0",
    "--ablation-random-sets",
    "0",
]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with `~` pointing beside it, so nothing depends on where tests run."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return cwd


def _resnet18_safetensors(path: Path) -> Path:
    from torchvision.models import resnet18

    torch.manual_seed(1)
    save_file(resnet18().state_dict(), str(path))
    return path


def _hierarchy(folder: Path) -> dict:
    document = json.loads((folder / "hierarchy.json").read_text())
    validate_hierarchy(document)
    return document


def test_sample_run_and_relabel_take_relative_paths(elsewhere: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["-q", "sample", "images", "--per-concept", "3"]) == 0
    assert capsys.readouterr().out.strip() == "images"
    assert main(["-q", "run", "images", "--out", "out", "--allow-random-weights", *LIGHT]) == 0
    hierarchy = _hierarchy(elsewhere / "out")
    assert len(hierarchy["images"]) == 18
    assert not list(elsewhere.glob(".out.partial-*"))
    assert main(["-q", "relabel", "out", "--label-cache", "cache"]) == 0
    assert _hierarchy(elsewhere / "out")["labelling"]["source"] == "offline"


def test_nested_relative_out_folder_is_made(elsewhere: Path):
    assert main(["-q", "sample", "./data/images", "--per-concept", "3"]) == 0
    assert main(["-q", "run", "data/images", "--out", "results/run-1", "--allow-random-weights", *LIGHT]) == 0
    _hierarchy(elsewhere / "results" / "run-1")


def test_paths_with_a_tilde_are_expanded(elsewhere: Path):
    home = Path(os.environ["HOME"])
    assert main(["-q", "sample", "~/images", "--per-concept", "3"]) == 0
    assert (home / "images" / "metadata.csv").is_file()
    captions = home / "captions.csv"
    captions.write_text((home / "images" / "metadata.csv").read_text().replace("a ", "one ", 1))
    weights = _resnet18_safetensors(home / "model.safetensors")
    args = [
        "-q",
        "run",
        "~/images",
        "--out=~/out",
        "--captions=~/captions.csv",
        "--weights=~/model.safetensors",
    ]
    assert main([*args, *LIGHT, "--label-cache=~/cache"]) == 0
    hierarchy = _hierarchy(home / "out")
    assert hierarchy["options"]["weights"] == str(weights)
    assert hierarchy["models"]["target"]["weights"] == "file model.safetensors"
    assert any(image["caption"].startswith("one ") for image in hierarchy["images"])
    assert not (elsewhere / "~").exists()  # never a folder literally named '~'
    assert main(["-q", "relabel", "~/out", "--label-cache=~/cache"]) == 0


def test_relative_captions_weights_and_label_cache(elsewhere: Path):
    assert main(["-q", "sample", "images", "--per-concept", "3"]) == 0
    (elsewhere / "meta").mkdir()
    (elsewhere / "images" / "metadata.csv").rename(elsewhere / "meta" / "captions.csv")
    _resnet18_safetensors(elsewhere / "model.safetensors")
    args = [
        "run",
        "images",
        "--out",
        "out",
        "--captions",
        "meta/captions.csv",
        "--weights",
        "model.safetensors",
    ]
    assert main(["-q", *args, *LIGHT, "--label-cache", "label-cache"]) == 0
    hierarchy = _hierarchy(elsewhere / "out")
    assert hierarchy["options"]["weights"] == str(elsewhere / "model.safetensors")
    assert all(image["caption_source"] == "provided" for image in hierarchy["images"])


def test_symlinked_folders_work_and_the_link_stays(elsewhere: Path, tmp_path: Path):
    assert main(["-q", "sample", str(tmp_path / "real-images"), "--per-concept", "3"]) == 0
    (elsewhere / "images").symlink_to(tmp_path / "real-images")
    (tmp_path / "real-out").mkdir()
    (elsewhere / "out").symlink_to(tmp_path / "real-out")
    assert main(["-q", "run", "images", "--out", "out", "--allow-random-weights", *LIGHT]) == 0
    assert (elsewhere / "out").is_symlink()
    _hierarchy(tmp_path / "real-out")
    assert main(["-q", "relabel", "out"]) == 0


def test_demo_writes_its_default_relative_folder(elsewhere: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["demo"]) == 0
    hierarchy = _hierarchy(elsewhere / "demo-out")
    err = capsys.readouterr().err
    assert "result: demo-out/hierarchy.json" in err
    assert "default settings" in err and "--uncertainty-budget" in err
    assert hierarchy["options"]["allow_random_weights"] is True
    # the report says in which number format the uncertainty stage's model passes ran
    precision = hierarchy["uncertainty"]["method"]["pass_precision"]
    assert precision in ("float32", "bfloat16") and f"model passes in {precision}" in err
