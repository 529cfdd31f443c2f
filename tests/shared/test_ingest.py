import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuron_atlas_client.errors import InputError
from shared.pipeline.ingest import (
    READ_THREADS,
    PixelBudget,
    decode_entries,
    decode_threads,
    read_captions,
    read_label_file,
    read_labels,
    scan_image_folder,
    sha256_bytes,
)


def png(path: Path, size=(20, 20), colour=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_images_are_found_recursively_identified_by_sha256_and_bad_files_listed(tmp_path):
    data = png(tmp_path / "b.png")
    png(tmp_path / "sub" / "a.png", colour=(0, 255, 0))
    (tmp_path / "copy.png").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    png(tmp_path / "huge.png", size=(200, 200))
    (tmp_path / "metadata.csv").write_text("file_name,caption\n")
    records, skipped = scan_image_folder(tmp_path, max_pixels=10_000)
    assert [r.file_name for r in records] == ["b.png", "sub/a.png"]
    assert records[0].id == sha256_bytes(data) and records[0].format == "png"
    reasons = {s.file_name: s.reason for s in skipped}
    assert reasons["copy.png"] == "same bytes as b.png (duplicate)"
    assert "not an image" in reasons["notes.txt"]
    assert "200x200 = 40,000 pixels" in reasons["huge.png"] and "max_image_pixels" in reasons["huge.png"]
    assert "metadata.csv" not in reasons


def test_truncated_images_pass_the_header_check_and_are_skipped_at_decode(tmp_path):
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    png(tmp_path / "ok.png")
    records, _ = scan_image_folder(tmp_path, max_pixels=10**6)
    entries = [{"file_name": r.file_name, "path": r.path} for r in records]
    kept, images, skipped = decode_entries(entries, lambda e: e["path"].read_bytes())
    assert [e["file_name"] for e in kept] == ["ok.png"] and len(images) == 1
    assert skipped[0]["file_name"] == "cut.jpg" and "could not be decoded" in skipped[0]["reason"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "holds no files"),
        (lambda d: (d / "a.txt").write_text("x"), "none of them a usable image"),
    ],
)
def test_folders_without_images_get_an_error_that_says_what_to_do(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(InputError) as err:
        scan_image_folder(tmp_path, 10**6)
    assert message in err.value.problem and "JPEG, PNG" in err.value.fix


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        scan_image_folder(tmp_path / "nope", 10**6)


def test_captions_come_from_imagefolder_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "metadata.csv"
    csv_file.write_text('file_name,caption\na.png,a red circle\n./b.png,"blue, square"\nc.png,\n')
    assert read_captions(csv_file) == {"a.png": "a red circle", "b.png": "blue, square"}
    jsonl = tmp_path / "metadata.jsonl"
    jsonl.write_text(json.dumps({"file_name": "a.png", "text": "from text"}) + "\n\n")
    assert read_captions(jsonl) == {"a.png": "from text"}


def test_class_labels_come_from_an_optional_label_column(tmp_path):
    csv_file = tmp_path / "metadata.csv"
    csv_file.write_text("file_name,caption,label\na.png,a red circle,3\nb.png,,7\nc.png,x,\n")
    assert read_labels(csv_file) == {"a.png": "3", "b.png": "7"}  # a label without a caption too
    jsonl = tmp_path / "metadata.jsonl"
    jsonl.write_text(json.dumps({"file_name": "a.png", "caption": "x", "label": 2}) + "\n")
    assert read_labels(jsonl) == {"a.png": "2"}
    plain = tmp_path / "plain.csv"
    plain.write_text("file_name,caption\na.png,x\n")
    assert read_labels(plain) == {}


def test_a_labels_file_is_a_csv_or_a_json_object(tmp_path):
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("file_name,label\na.png,3\n./sub/b.png, 7 \n")
    assert read_label_file(csv_file) == {"a.png": "3", "sub/b.png": "7"}
    json_file = tmp_path / "labels.json"
    json_file.write_text(json.dumps({"a.png": 2, "sub/b.png": "5"}))
    assert read_label_file(json_file) == {"a.png": "2", "sub/b.png": "5"}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("labels.txt", "a.png 3", "neither .csv nor .json"),
        ("labels.csv", "name,class\na.png,3\n", "needs a header with file_name and label columns"),
        ("labels.csv", "file_name,label\na.png,3\nb.png,\n", "line 3 has no label"),
        ("labels.csv", "file_name,label\n", "holds no labels"),
        ("labels.json", '{"a.png": 3,}', "is not valid JSON"),
        ("labels.json", '[["a.png", 3]]', "holds a JSON list, not an object"),
        ("labels.json", '{"a.png": null}', "the label of 'a.png' is null"),
        ("labels.json", '{"a.png": true}', "the label of 'a.png' is true"),
        ("labels.json", "{}", "holds no labels"),
    ],
)
def test_a_malformed_labels_file_says_what_is_wrong_and_what_to_do(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message) as err:
        read_label_file(tmp_path / name)
    assert err.value.fix


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("metadata.csv", "name,caption\na.png,x\n", "needs a file_name column"),
        ("metadata.jsonl", '{"file_name": "a.png", "caption": "x"}\n{oops\n', "line 2 is not valid JSON"),
        ("captions.txt", "a.png x", "neither .csv nor .jsonl"),
    ],
)
def test_bad_caption_files_say_what_is_wrong(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        read_captions(tmp_path / name)


def jpeg(size: tuple[int, int], seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth gradients plus noise, so scaled decoding has detail to lose."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    pixels = np.stack([x * 255, y * 255, (x + y) * 127], axis=-1) + rng.normal(0, 8, (h, w, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_large_jpegs_decode_at_a_reduced_scale_never_below_what_the_models_need():
    from shared.pipeline.ingest import DECODE_MIN_SIDE, decode_image

    # 4000 x 3000 decodes at 1/4 (1000 x 750); 1/8 would be 500 x 375, under 384 on one side.
    assert decode_image(jpeg((4000, 3000))).size == (1000, 750)
    assert decode_image(jpeg((4000, 3000)), min_side=None).size == (4000, 3000)
    assert decode_image(jpeg((640, 480))).size == (640, 480)  # under twice the bound: full size
    assert decode_image(jpeg((3000, 800))).size == (1500, 400)
    assert min(decode_image(jpeg((2000, 1600))).size) >= DECODE_MIN_SIDE


def test_scaled_decoding_gives_the_target_model_nearly_the_same_input():
    import torch

    from neuron_core.hooks import preprocess
    from shared.pipeline.ingest import decode_image

    data = jpeg((4000, 3000), seed=1)
    scaled, full = preprocess([decode_image(data)]), preprocess([decode_image(data, min_side=None)])
    # normalised units (about 1/58 of the 0..255 range per 0.07): a few grey levels at most
    assert float((scaled - full).abs().mean()) < 0.05
    assert float(torch.corrcoef(torch.stack([scaled.flatten(), full.flatten()]))[0, 1]) > 0.99


def test_shards_decode_in_parallel_and_keep_their_order(tmp_path):
    datas = {f"{i:03d}.jpg": jpeg((64 + i, 48), seed=i) for i in range(40)}
    datas["bad.jpg"] = b"\xff\xd8 not really"
    entries = [{"file_name": name} for name in sorted(datas)]
    kept, images, skipped = decode_entries(entries, lambda entry: datas[entry["file_name"]])
    assert [e["file_name"] for e in kept] == sorted(n for n in datas if n != "bad.jpg")
    assert [im.size[0] for im in images] == [64 + i for i in range(40)]
    assert [s["file_name"] for s in skipped] == ["bad.jpg"]


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.txt", "not an image")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_an_image_with_an_archive_appended_is_refused(tmp_path, kind):
    from shared.pipeline.ingest import inspect_image

    data = png(tmp_path / "a.png") if kind == "png" else jpeg((64, 48))
    assert inspect_image(data, 10**8)[0] in ("png", "jpeg")
    with pytest.raises(ValueError, match="appended"):
        inspect_image(data + _zip_bytes(), 10**8)


def test_a_caption_given_for_a_later_copy_goes_with_the_image_its_first_copy_keeps(tmp_path):
    from shared.pipeline.ingest import manifest_document

    data = png(tmp_path / "b.png")
    (tmp_path / "a_copy.png").write_bytes(data)  # sorts first: it keeps the image
    records, skipped = scan_image_folder(tmp_path, max_pixels=10**6)
    manifest = manifest_document(records, skipped, {"b.png": "a red square"})
    assert [(e["file_name"], e["caption"]) for e in manifest["images"]] == [("a_copy.png", "a red square")]
    assert manifest["skipped"] == [{"file_name": "b.png", "reason": "same bytes as a_copy.png (duplicate)"}]


def test_large_images_without_a_draft_mode_are_reduced_right_after_decoding():
    from shared.pipeline.ingest import decode_image

    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(buffer, format="PNG")
    image = decode_image(buffer.getvalue())
    assert 384 <= min(image.size) < 768 and image.size[0] in (571, 572)  # 3000 // 384 = 7: 1/7 scale
    assert decode_image(buffer.getvalue(), min_side=None).size == (4000, 3000)
    small = io.BytesIO()
    Image.new("RGB", (700, 500)).save(small, format="PNG")
    assert decode_image(small.getvalue()).size == (700, 500)  # under twice the bound: untouched


def test_the_pixel_budget_bounds_the_pixels_decoded_at_once() -> None:
    """Workers decode on several threads; the pixels in flight never pass the budget, and an
    image larger than the whole budget still decodes (alone)."""
    budget = PixelBudget(100)
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def decode(pixels: int) -> None:
        with budget.held(pixels):
            with lock:
                in_flight[0] += min(pixels, 100)
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.02)
            with lock:
                in_flight[0] -= min(pixels, 100)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(decode, [40] * 12 + [500, 30]))
    # two 40s ran together (the threads did overlap), never a third, and the 500 ran alone
    assert 80 <= peak[0] <= 100


def test_decoding_with_a_small_pixel_budget_gives_the_same_images(sample_dir: Path) -> None:
    paths = sorted(sample_dir.glob("*.png"))[:6]
    entries = []
    for p in paths:
        with Image.open(p) as image:
            entries.append({"file_name": p.name, "width": image.width, "height": image.height, "path": p})
    one_at_a_time = decode_entries(entries, lambda e: e["path"].read_bytes(), pixel_budget=1)
    default = decode_entries(entries, lambda e: e["path"].read_bytes())
    assert [np.asarray(a).tobytes() for a in one_at_a_time[1]] == [
        np.asarray(b).tobytes() for b in default[1]
    ]


def test_reads_wait_for_storage_on_more_threads_than_decode(tmp_path: Path) -> None:
    """A read from object storage waits for its answer: the shard's reads overlap beyond the
    decoding threads (so the suite does not pay each wait in turn), and the images come back
    in order."""
    datas = {f"{i}.png": png(tmp_path / f"{i}.png", colour=(i, 0, 0)) for i in range(24)}
    reading, peak, lock = [0], [0], threading.Lock()

    def slow_read(entry: dict) -> bytes:
        with lock:
            reading[0] += 1
            peak[0] = max(peak[0], reading[0])
        time.sleep(0.05)  # a storage round trip
        with lock:
            reading[0] -= 1
        return datas[entry["file_name"]]

    entries = [{"file_name": name, "width": 20, "height": 20} for name in datas]
    kept, images, skipped = decode_entries(entries, slow_read)
    assert not skipped and [e["file_name"] for e in kept] == list(datas)
    assert [image.getpixel((0, 0))[0] for image in images] == list(range(24))
    assert min(decode_threads(), READ_THREADS - 1) < peak[0] <= READ_THREADS
