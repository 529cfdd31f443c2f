"""`neuron-atlas report OUT_DIR`: the explorer as a static folder, `OUT_DIR/explorer/`, that opens
from disk. Browsers refuse `fetch` on file:// pages, so each answer the gateway's `/ui/api` would
give is a small script here (`atlasData(key, value)`), one file per concept, image page and neuron:
a concept page loads its own file and never the whole hierarchy. The run's thumbnails, one zip per
shard in `OUT_DIR/thumbs/`, are unpacked beside the pages (`explorer/thumbs/{id}.webp`: a page
from disk cannot read inside a zip), so the folder opens wherever it is copied. The job's plots are also
written as SVG files (`plots/summary.svg`, `plots/pruning.svg`), which open and print without
JavaScript."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from neuron_atlas_client.errors import InputError
from services.gateway.explorer.atlas import Atlas, read_top_images, safe_name
from services.gateway.explorer.page import ASSETS, asset, index_html
from shared.pipeline.model_view import model_store
from shared.storage import artifacts
from shared.storage.stores import LocalStore, Store, get_json, get_npy
from shared.storage.thumbnails import extract_thumbnails, thumbnail_ids

FOLDER = "explorer"


def data_script(key: str, value: Any) -> str:
    # "</" is escaped so no label can close the script; the file is JavaScript, not HTML, but
    # the same text is safe either way.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return f"atlasData({json.dumps(key)},{text});\n"


def write_data(folder: Path, relative: str, key: str, value: Any) -> None:
    """One data file of a static explorer: `data/<relative>`, a script that registers `value`."""
    path = folder / "data" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data_script(key, value), encoding="utf-8")


def fresh_staging(out_dir: Path, folder_name: str) -> Path:
    """An empty `.<folder_name>-staging/` beside the explorer, with the page's assets: the pages
    are written there and swapped in whole (`swap_in`), so a reader never sees half of them."""
    staging = out_dir / f".{folder_name}-staging"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "assets").mkdir(parents=True)
    for name in ASSETS:
        (staging / "assets" / name).write_bytes(asset(name))
    return staging


def swap_in(staging: Path, folder: Path) -> Path:
    """Replace `folder` by the finished `staging`; returns its index.html."""
    if folder.exists():
        shutil.rmtree(folder)
    staging.replace(folder)
    return folder / "index.html"


def result_view(out_dir: Path) -> Store:
    """A result folder as one result: itself, or for a multi-model run (models.json) its
    baseline's view (`models/<baseline>/` over the shared root), as the gateway's plain routes."""
    store = LocalStore(out_dir)
    if (out_dir / artifacts.MODELS).is_file() and not (out_dir / artifacts.HIERARCHY).is_file():
        return model_store(store, get_json(store, artifacts.MODELS)["baseline"])
    return store


def load_atlas(out_dir: Path) -> Atlas:
    """The result in `out_dir` as an explorer index (thumbnails and activations read lazily)."""
    store = result_view(out_dir)
    if not store.exists(artifacts.HIERARCHY) and (out_dir / "comparison.json").is_file():
        raise InputError(
            f"{out_dir} holds a comparison, not a result.",
            f"`neuron-atlas compare` writes its explorer, {out_dir / FOLDER}/; "
            "run compare again to refresh it.",
        )
    if not store.exists(artifacts.HIERARCHY):
        raise InputError(
            f"{out_dir} holds no hierarchy.json.", "Point report at the OUT_DIR of a finished run."
        )
    hierarchy = get_json(store, artifacts.HIERARCHY)
    thumbs = thumbnail_ids(out_dir / "thumbs")
    return Atlas(
        hierarchy,
        thumbs,
        lambda: read_top_images(store),
        title=out_dir.resolve().name,
        embeddings=lambda: (
            get_npy(store, artifacts.EMBEDDINGS) if store.exists(artifacts.EMBEDDINGS) else None
        ),
    )


def write_report(out_dir: Path) -> Path:
    """Write `out_dir/explorer/` afresh; returns its index.html."""
    atlas = load_atlas(out_dir)
    folder = out_dir / FOLDER
    staging = fresh_staging(out_dir, FOLDER)
    extract_thumbnails(out_dir / "thumbs", staging / "thumbs")
    summary = atlas.summary()
    (staging / "plots").mkdir()
    written = []
    for name, svg in summary["plots"].items():
        if svg:
            (staging / "plots" / f"{name}.svg").write_text(svg, encoding="utf-8")
            written.append(name)
    (staging / "index.html").write_text(index_html("static", written), encoding="utf-8")
    write_data(staging, "summary.js", "summary", summary)
    write_data(staging, "labels.js", "labels", atlas.label_index())  # for search, loaded on first use
    write_data(staging, "children/_top.js", "children/_top", atlas.children(None, 0, len(atlas.roots)))
    for cluster_id, cluster in atlas.clusters.items():
        name = safe_name(cluster_id)
        write_data(staging, f"concept/{name}.js", f"concept/{cluster_id}", atlas.concept(cluster_id))
        if cluster["children"]:
            whole = atlas.children(cluster_id, 0, len(cluster["children"]))
            write_data(staging, f"children/{name}.js", f"children/{cluster_id}", whole)
        for page in range(1, atlas.images_page(cluster_id, 0)["pages"]):
            write_data(
                staging,
                f"images/{name}-{page}.js",
                f"images/{cluster_id}/{page}",
                atlas.images_page(cluster_id, page),
            )
    for layer, channel in atlas.neuron_keys():
        write_data(
            staging,
            f"neuron/{safe_name(layer)}-{channel}.js",
            f"neuron/{layer}/{channel}",
            atlas.neuron(layer, channel),
        )
    return swap_in(staging, folder)
