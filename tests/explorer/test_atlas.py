"""The explorer's data layer and thumbnails, without a browser."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from services.gateway.explorer.atlas import PAGE_SIZE, Atlas, read_top_images
from services.gateway.explorer.report import data_script, load_atlas, write_report
from shared.storage.stores import LocalStore, get_npz
from shared.storage.thumbnails import thumbnail_bytes, thumbnail_ids, thumbnail_name, write_thumbnails
from tests.explorer.synthetic import make_job


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("atlas") / "out"
    return out, make_job(out, images=600, concepts=80)


@pytest.fixture(scope="module")
def atlas(job: tuple[Path, dict[str, Any]]) -> Atlas:
    return load_atlas(job[0])


def test_thumbnail_is_a_small_webp_that_keeps_the_aspect() -> None:
    data = thumbnail_bytes(Image.new("RGB", (1200, 600), (200, 30, 30)))
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "WEBP" and thumb.size == (160, 80)
    small = Image.open(io.BytesIO(thumbnail_bytes(Image.new("L", (40, 30)))))
    assert small.size == (40, 30)  # never enlarged


def test_thumbnail_names_only_take_image_ids(tmp_path: Path) -> None:
    image_id = "a" * 64
    assert thumbnail_name(image_id) == f"{image_id}.webp"
    for bad in ("../spec", "A" * 64, "a" * 63, "a" * 64 + "/x"):
        with pytest.raises(ValueError):
            thumbnail_name(bad)
    write_thumbnails(LocalStore(tmp_path), 3, [image_id], [Image.new("RGB", (300, 300))])
    assert thumbnail_ids(tmp_path / "thumbs") == {image_id}
    assert (tmp_path / "thumbs" / "00003.zip").is_file()


def test_tree_pages_every_level_from_the_top(atlas: Atlas, job: tuple[Path, dict[str, Any]]) -> None:
    hierarchy = job[1]
    top = atlas.children(None, 0)
    assert [n["id"] for n in top["items"]] == [c["id"] for c in hierarchy["clusters"] if c["parent"] is None]
    seen, stack = set(), [n["id"] for n in top["items"]]
    while stack:  # every concept is reachable by unfolding, a page at a time
        cid = stack.pop()
        seen.add(cid)
        offset = 0
        while True:
            page = atlas.children(cid, offset, 7)
            stack.extend(n["id"] for n in page["items"])
            offset += len(page["items"])
            if offset >= page["total"]:
                break
    assert seen == {c["id"] for c in hierarchy["clusters"]}
    row = top["items"][0]
    assert set(row) >= {"label", "size", "label_quality", "reliable_share", "level", "children", "typical"}
    cluster = atlas.clusters[row["id"]]
    reliable = [n["evidence"]["reliable"] for n in cluster["neurons"]]
    decided = [r for r in reliable if r is not None]
    assert row["reliable_share"] == pytest.approx(sum(decided) / len(decided), abs=1e-3)
    selective = [n["evidence"]["selective"] for n in cluster["neurons"]]
    assert row["selective"] == sum(selective)
    assert row["selective_share"] == pytest.approx(sum(selective) / len(selective), abs=1e-3)


def test_the_synthetic_job_is_a_schema_2_result(job: tuple[Path, dict[str, Any]]) -> None:
    """The benchmark and the browser tests read what a run writes, not an older shape."""
    from neuron_atlas_client.contracts.hierarchy import Hierarchy

    Hierarchy.model_validate(job[1])


def test_a_small_concept_says_too_few_images_and_never_unreliable(atlas: Atlas) -> None:
    small = next(c for c in atlas.clusters.values() if c["size"] < 6 and c["neurons"])
    row = atlas.node(small)
    assert row["too_few_images"] is True and row["reliable"] is None and row["reliable_share"] is None
    strips = atlas.concept(small["id"])["layers"]
    assert all(n["reliable"] is None for layer in strips for n in layer["neurons"])


def test_every_specificity_state_has_its_words(atlas: Atlas) -> None:
    """The badge says specific / not specific where tested, else the contract's note
    ("not tested: budget", "not tested: 3 images"), never a bare absence."""
    seen = set()
    for cluster in atlas.clusters.values():
        state = cluster["uncertainty"]["specificity"]
        badge = atlas.node(cluster)["specificity"]
        seen.add(state["status"])
        if state["status"] == "tested":
            significant = state["result"]["significant"]
            assert (badge["kind"], badge["text"]) == (
                ("yes", "specific") if significant else ("no", "not specific")
            )
            assert badge["q_value"] == pytest.approx(state["result"]["q_value"], abs=1e-6)
        else:
            assert badge == {"kind": "untested", "text": state["note"], "status": state["status"]}
            assert badge["text"].startswith("not tested: ")
    assert seen == {"tested", "budget", "too_few_images"}


def test_typical_images_lie_nearest_the_caption_centroid(
    atlas: Atlas, job: tuple[Path, dict[str, Any]]
) -> None:
    out, hierarchy = job
    embeddings = np.load(out / "embeddings.npy")
    row = {image["id"]: i for i, image in enumerate(hierarchy["images"])}
    for cluster in sorted(hierarchy["clusters"], key=lambda c: -c["size"])[:5]:
        vectors = embeddings[[row[i] for i in cluster["images"]]]
        scores = vectors @ vectors.mean(axis=0)
        expected = [cluster["images"][j] for j in np.argsort(-scores, kind="stable")[:5]]
        assert [i["id"] for i in atlas.node(cluster)["typical"]] == expected
    assert "centroid" in atlas.summary()["typical_source"]
    # without embeddings: the first images, and the page says so
    bare = Atlas(hierarchy)
    cluster = hierarchy["clusters"][0]
    assert [i["id"] for i in bare.node(cluster)["typical"]] == cluster["images"][:5]
    assert "first images" in bare.summary()["typical_source"]


def test_search_matches_every_word_and_gives_the_path(atlas: Atlas) -> None:
    answer = atlas.search("SNOWY scene")
    assert answer["total"] > 0
    assert all("snowy" in n["label"] and "scene" in n["label"] for n in answer["items"])
    deep = next(n for n in answer["items"] if n["level"] == 1)
    assert [p["id"] for p in deep["path"]][-1] == atlas.clusters[deep["id"]]["parent"]
    assert atlas.search("")["total"] == 0 and atlas.search("zebra")["total"] == 0


def test_concept_pages_hold_every_image_once_and_no_more_than_a_page(atlas: Atlas) -> None:
    cluster = max(atlas.clusters.values(), key=lambda c: c["size"])
    first = atlas.concept(cluster["id"])
    pages = first["images_page"]["pages"]
    assert pages == -(-cluster["size"] // PAGE_SIZE) > 1
    ids = [i["id"] for p in range(pages) for i in atlas.images_page(cluster["id"], p)["items"]]
    assert ids == cluster["images"]
    assert len(first["images_page"]["items"]) == PAGE_SIZE
    strip_neurons = sum(len(layer["neurons"]) for layer in first["layers"])
    assert strip_neurons == len(cluster["neurons"])
    marked = {
        (layer["layer"], n["channel"])
        for layer in first["layers"]
        for n in layer["neurons"]
        if n["difference"]
    }
    assert marked == {(n["layer"], n["channel"]) for n in cluster["difference_neurons"]}


def test_a_concept_never_carries_the_whole_hierarchy(tmp_path: Path) -> None:
    """A concept page's answer stays small as the job grows (here 20 times more images)."""
    small = load_atlas_for(tmp_path / "small", 300, 40)
    large = load_atlas_for(tmp_path / "large", 6000, 800)
    size = lambda a: max(len(json.dumps(a.concept(c))) for c in list(a.clusters)[:50])  # noqa: E731
    assert size(large) < 3 * size(small)


def load_atlas_for(out: Path, images: int, concepts: int) -> Atlas:
    make_job(out, images=images, concepts=concepts, thumbs=False)
    return load_atlas(out)


def test_neuron_page_lists_its_concepts_and_its_top_images(
    atlas: Atlas, job: tuple[Path, dict[str, Any]]
) -> None:
    out, hierarchy = job
    cluster = hierarchy["clusters"][0]
    neuron = next(n for n in cluster["neurons"] if n["evidence"]["collection_rate"] < 0.5)  # no ties
    answer = atlas.neuron(neuron["layer"], neuron["channel"])
    holders = {
        c["id"]
        for c in hierarchy["clusters"]
        if any((n["layer"], n["channel"]) == (neuron["layer"], neuron["channel"]) for n in c["neurons"])
    }
    assert {c["id"] for c in answer["concepts"]} == holders
    # the top images are the strongest of the stored pooled activations, strongest first
    store = LocalStore(out)
    shards = [get_npz(store, k) for k in sorted(store.list("activations/"))]
    ids = [str(i) for s in shards for i in s["image_ids"]]
    pooled = np.concatenate([s["pooled"] for s in shards]).astype(np.float32)
    column = [name for name, _ in [(layer["name"], 0) for layer in hierarchy["layers"]]].index(
        neuron["layer"]
    )
    offset = sum(layer["channels"] for layer in hierarchy["layers"][:column]) + neuron["channel"]
    values = [i["activation"] for i in answer["top_images"]]
    assert values == sorted(values, reverse=True) and len(values) == 24
    assert answer["top_images"][0]["id"] == ids[int(np.argmax(pooled[:, offset]))]
    assert answer["top_kept"] == 24
    # the collection rate from the stored bitsets: what every membership's evidence says too
    bits = np.concatenate([np.unpackbits(s["active_bits"], axis=1, count=pooled.shape[1]) for s in shards])
    assert answer["collection_rate"] == pytest.approx(bits[:, offset].mean(), abs=1e-4)
    for concept in answer["concepts"]:
        assert concept["collection_rate"] == pytest.approx(answer["collection_rate"], abs=1e-3)
        held = next(
            n
            for n in atlas.clusters[concept["id"]]["neurons"]
            if (n["layer"], n["channel"]) == (neuron["layer"], neuron["channel"])
        )
        assert concept["selective"] == held["evidence"]["selective"]
        assert concept["support"] == pytest.approx(held["support"], abs=1e-3)
    assert answer["frequent"] is (answer["collection_rate"] >= 0.5)
    assert atlas.neuron("layer1", 0)["frequent"] is True  # the synthetic job's always-active neuron
    with pytest.raises(KeyError):
        atlas.neuron("layer1", 64)


def test_no_activations_means_no_top_images(job: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    assert read_top_images(LocalStore(tmp_path)) is None
    atlas = Atlas(job[1])
    assert atlas.neuron("layer1", 0)["top_images"] == []


def test_report_data_cannot_close_a_script_and_is_split_per_concept(job: tuple[Path, dict[str, Any]]) -> None:
    assert "</script>" not in data_script("k", {"label": "</script><b>"})
    out, hierarchy = job
    index = write_report(out)
    assert index == out / "explorer" / "index.html"
    assert 'content="static"' in index.read_text()
    data = out / "explorer" / "data"
    assert {p.stem for p in (data / "concept").glob("*.js")} == {c["id"] for c in hierarchy["clusters"]}
    assert len(list((data / "neuron").glob("*.js"))) == sum(
        layer["channels"] for layer in hierarchy["layers"]
    )
    biggest = max((data / "concept").glob("*.js"), key=lambda p: p.stat().st_size).stat().st_size
    assert biggest < (out / "hierarchy.json").stat().st_size / 10
    # the job's plots as files that open without JavaScript, linked from the page's noscript
    for name in ("summary", "pruning"):
        svg = (out / "explorer" / "plots" / f"{name}.svg").read_text()
        assert svg.startswith("<svg") and "<script" not in svg and " style=" not in svg
        assert f'href="plots/{name}.svg"' in index.read_text()


def test_report_of_a_folder_without_a_result_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neuron_atlas.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "holds no hierarchy.json" in capsys.readouterr().err
    assert not (tmp_path / "explorer").exists()


def test_report_of_a_comparison_folder_points_to_its_own_explorer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neuron_atlas.cli import main

    (tmp_path / "comparison.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a comparison, not a result" in err and "neuron-atlas compare" in err


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_text_colours_keep_aa_contrast_on_their_backgrounds() -> None:
    """WCAG AA (4.5:1) for every text colour of the stylesheet on the backgrounds it is used on."""
    import re

    from services.gateway.explorer.page import asset

    css = asset("style.css").decode()
    colours = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    pairs = [
        ("ink", "paper"),
        ("muted", "paper"),
        ("muted", "panel"),
        ("accent", "paper"),
        ("accent", "panel"),
        ("diff", "diff-bg"),
        ("ok", "paper"),
        ("ink", "diff-bg"),
        ("paper", "ink"),
        ("yes", "yes-bg"),
        ("muted", "no-bg"),
        ("untested", "untested-bg"),
        ("generic", "paper"),
        ("lost", "lost-bg"),
        ("gained", "gained-bg"),
        ("ink", "lost-bg"),
        ("ink", "gained-bg"),
    ]
    for text, background in pairs:
        assert _contrast(colours[text], colours[background]) >= 4.5, (text, background)


def _contrast(a: str, b: str) -> float:
    lighter, darker = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_plot_colours_keep_aa_contrast_on_white() -> None:
    """Plot text at 4.5:1 and marks at 3:1 (WCAG 1.4.11, non-text contrast) on the plots' white."""
    from services.gateway.explorer import plots

    assert all(_contrast(c, plots.PAPER) >= 4.5 for c in plots.TEXT_COLOURS)
    assert all(_contrast(c, plots.PAPER) >= 3 for c in plots.MARK_COLOURS), [
        (c, round(_contrast(c, plots.PAPER), 2)) for c in plots.MARK_COLOURS
    ]


def test_a_result_without_the_uncertainty_stage_has_every_page(job: tuple[Path, dict[str, Any]]) -> None:
    """--uncertainty off: no evidence anywhere; the pages say so instead of failing."""
    import copy

    hierarchy = copy.deepcopy(job[1])
    del hierarchy["uncertainty"]
    for cluster in hierarchy["clusters"]:
        del cluster["uncertainty"]
        for neuron in cluster["neurons"]:
            del neuron["evidence"]
    atlas = Atlas(hierarchy)
    summary = atlas.summary()
    assert summary["uncertainty"] is None and summary["plots"]["pruning"] is None
    assert "<svg" in summary["plots"]["summary"]
    cluster = hierarchy["clusters"][0]
    row = atlas.node(cluster)
    assert row["specificity"] is None and row["selective"] is None and row["too_few_images"] is False
    page = atlas.concept(cluster["id"])
    assert page["uncertainty"] is None and page["plots"]["model_uncertainty"] is None
    neuron = cluster["neurons"][0]
    assert atlas.neuron(neuron["layer"], neuron["channel"])["collection_rate"] is None
