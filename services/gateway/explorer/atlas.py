"""The explorer's data layer: one hierarchy indexed once, answering each page with only what that
page shows (a concept never needs the whole hierarchy). Pure Python plus numpy, no web framework,
so the gateway's `/ui` API and the static report (`neuron-atlas report`) give the same answers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.storage import Store, get_npz

PAGE_SIZE = 48  # thumbnails per grid page
CHILDREN_PAGE = 100  # rows per "more" step of the tree
TOP_IMAGES = 24  # most strongly activating images on a neuron page
SIBLINGS_SHOWN = 60
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def safe_name(value: str) -> str:
    """A concept id or layer name as a file-name part; the static report refuses anything else."""
    if not _SAFE_ID.match(value) or value in (".", ".."):
        raise ValueError(f"not usable in a file name: {value!r}")
    return value


@dataclass(frozen=True)
class TopImages:
    """Per neuron (column), the rows of its most strongly activating images, strongest first."""

    image_ids: list[str]
    columns: dict[tuple[str, int], int]  # (layer, channel) -> column
    rows: np.ndarray  # int (k, neurons)
    values: np.ndarray  # float32 (k, neurons)


def read_top_images(store: Store, k: int = TOP_IMAGES) -> TopImages | None:
    """The top-k images of every neuron from the stored pooled activations (`activations/*.npz`);
    None when the job has none. All neurons at once: one pass over the shards serves every page."""
    keys = sorted(store.list("activations/"))
    if not keys:
        return None
    ids: list[str] = []
    parts: list[np.ndarray] = []
    first: dict[str, np.ndarray] = {}
    for key in keys:
        arrays = get_npz(store, key)
        first = first or arrays
        ids.extend(str(i) for i in arrays["image_ids"])
        parts.append(arrays["pooled"])
    pooled = np.concatenate(parts, axis=0).astype(np.float32)
    k = min(k, pooled.shape[0])
    rows = np.argpartition(-pooled, k - 1, axis=0)[:k]
    values = np.take_along_axis(pooled, rows, axis=0)
    order = np.argsort(-values, axis=0, kind="stable")
    rows, values = np.take_along_axis(rows, order, axis=0), np.take_along_axis(values, order, axis=0)
    columns: dict[tuple[str, int], int] = {}
    offset = 0
    for name, channels in zip(first["layer_names"], first["layer_channels"], strict=True):
        for channel in range(int(channels)):
            columns[(str(name), channel)] = offset + channel
        offset += int(channels)
    return TopImages(ids, columns, rows, values)


def _num(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


class Atlas:
    """An index over one job's hierarchy. `thumbs` says which images have a thumbnail (True:
    all of them);
    `top_images` is read on first use (a neuron page), never for the tree or a concept."""

    def __init__(
        self,
        hierarchy: dict[str, Any],
        thumbs: Iterable[str] | bool = (),
        top_images: Callable[[], TopImages | None] | None = None,
        title: str = "",
    ) -> None:
        self.hierarchy = hierarchy
        self.title = title
        self.clusters: dict[str, dict[str, Any]] = {c["id"]: c for c in hierarchy["clusters"]}
        self.images: dict[str, dict[str, Any]] = {i["id"]: i for i in hierarchy["images"]}
        self._all_thumbs = thumbs is True  # the gateway knows only that the job has them
        self.thumbs = set() if isinstance(thumbs, bool) else set(thumbs)
        self.roots = [c["id"] for c in hierarchy["clusters"] if c["parent"] is None]
        self._top_images_loader = top_images
        self._top_images: TopImages | None = None
        self._top_loaded = False
        self._neuron_index: dict[tuple[str, int], list[dict[str, Any]]] | None = None

    # --- the tree ---

    def node(self, cluster: dict[str, Any]) -> dict[str, Any]:
        """What a tree row shows of a concept."""
        evidences = [n.get("evidence") for n in cluster["neurons"]]
        known = [e for e in evidences if e is not None]
        reliable = sum(1 for e in known if e.get("reliable")) / len(known) if known else None
        selective = sum(1 for e in known if e.get("significant")) / len(known) if known else None
        return {
            "id": cluster["id"],
            "level": cluster["level"],
            "label": cluster["label"],
            "size": cluster["size"],
            "label_quality": _num(cluster.get("label_quality"), 3),
            "neurons": len(cluster["neurons"]),
            "reliable_share": _num(reliable, 3),
            "selective_share": _num(selective, 3),
            "children": len(cluster["children"]),
        }

    def summary(self) -> dict[str, Any]:
        h = self.hierarchy
        uncertainty = h.get("uncertainty") or {}
        return {
            "title": self.title,
            "images": len(h["images"]),
            "concepts": len(h["clusters"]),
            "levels": h.get("levels", []),
            "layers": h.get("layers", []),
            "models": h.get("models", {}),
            "uncertainty": uncertainty.get("summary"),
            "labelling": {k: (h.get("labelling") or {}).get(k) for k in ("source", "model", "quality")},
            "page_size": PAGE_SIZE,
        }

    def children(self, parent: str | None, offset: int = 0, limit: int = CHILDREN_PAGE) -> dict[str, Any]:
        """The tree's rows under `parent` (None: the top level), a page at a time."""
        ids = self.roots if parent is None else self._cluster(parent)["children"]
        window = ids[max(0, offset) : max(0, offset) + limit]
        return {
            "parent": parent,
            "offset": offset,
            "total": len(ids),
            "items": [self.node(self.clusters[i]) for i in window],
        }

    def search(self, query: str, limit: int = 50) -> dict[str, Any]:
        """Concepts whose label holds every word of `query` (case-insensitive), with their path."""
        words = [w for w in query.lower().split() if w]
        found = [
            c for c in self.hierarchy["clusters"] if words and all(w in c["label"].lower() for w in words)
        ]
        return {
            "query": query,
            "total": len(found),
            "items": [{**self.node(c), "path": self._path(c)} for c in found[:limit]],
        }

    def label_index(self) -> list[list[Any]]:
        """[id, label, level, size, parent] of every concept: what the static report's search
        reads (the gateway searches on the server instead)."""
        return [[c["id"], c["label"], c["level"], c["size"], c["parent"]] for c in self.hierarchy["clusters"]]

    def _path(self, cluster: dict[str, Any]) -> list[dict[str, str]]:
        path = []
        parent = cluster["parent"]
        while parent is not None and parent in self.clusters:
            path.append({"id": parent, "label": self.clusters[parent]["label"]})
            parent = self.clusters[parent]["parent"]
        return path[::-1]

    # --- a concept ---

    def _cluster(self, cluster_id: str) -> dict[str, Any]:
        if cluster_id not in self.clusters:
            raise KeyError(cluster_id)
        return self.clusters[cluster_id]

    def concept(self, cluster_id: str) -> dict[str, Any]:
        """One concept's page: the first page of its images, its neurons per layer, its
        statistics and its relatives (ids and labels only)."""
        cluster = self._cluster(cluster_id)
        parent = self.clusters.get(cluster["parent"]) if cluster["parent"] else None
        siblings = [i for i in (parent["children"] if parent else self.roots) if i != cluster_id]
        difference = {(n["layer"], n["channel"]) for n in cluster["difference_neurons"]}
        return {
            **self.node(cluster),
            "path": self._path(cluster),
            "label_source": cluster.get("label_source"),
            "label_warning": cluster.get("label_warning"),
            "difference_description": cluster.get("difference_description"),
            "difference_source": cluster.get("difference_source"),
            "uncertainty": cluster.get("uncertainty"),
            "parent": self._link(parent) if parent else None,
            "children_links": [self._link(self.clusters[i]) for i in cluster["children"][:SIBLINGS_SHOWN]],
            "siblings": [self._link(self.clusters[i]) for i in siblings[:SIBLINGS_SHOWN]],
            "siblings_total": len(siblings),
            "layers": self._strips(cluster["neurons"], difference),
            "difference_count": len(difference),
            "images_page": self.images_page(cluster_id, 0),
        }

    def _link(self, cluster: dict[str, Any]) -> dict[str, Any]:
        return {"id": cluster["id"], "label": cluster["label"], "size": cluster["size"]}

    def _strips(
        self, neurons: list[dict[str, Any]], difference: set[tuple[str, int]]
    ) -> list[dict[str, Any]]:
        """The group per layer, in the job's layer order, each neuron with support and interval."""
        by_layer: dict[str, list[dict[str, Any]]] = {}
        for neuron in neurons:
            evidence = neuron.get("evidence") or {}
            by_layer.setdefault(neuron["layer"], []).append(
                {
                    "channel": neuron["channel"],
                    "support": _num(neuron["support"], 3),
                    "interval": [_num(x, 3) for x in evidence.get("interval") or []] or None,
                    "reliable": evidence.get("reliable"),
                    "selective": evidence.get("significant"),
                    "q_value": _num(evidence.get("q_value"), 4),
                    "generic": evidence.get("generic"),
                    "collection_rate": _num(evidence.get("collection_rate"), 3),
                    "inclusion_probability": _num(evidence.get("inclusion_probability"), 3),
                    "difference": (neuron["layer"], neuron["channel"]) in difference,
                }
            )
        channels = {layer["name"]: layer["channels"] for layer in self.hierarchy.get("layers", [])}
        order = [name for name in channels if name in by_layer] + [n for n in by_layer if n not in channels]
        return [
            {
                "layer": name,
                "channels": channels.get(name),
                "neurons": sorted(by_layer[name], key=lambda n: (-n["support"], n["channel"])),
            }
            for name in order
        ]

    def images_page(self, cluster_id: str, page: int) -> dict[str, Any]:
        """Page `page` of a concept's images: id, caption, file name, whether a thumbnail exists."""
        images = self._cluster(cluster_id)["images"]
        pages = max(1, -(-len(images) // PAGE_SIZE))
        page = min(max(0, page), pages - 1)
        return {
            "concept": cluster_id,
            "page": page,
            "pages": pages,
            "total": len(images),
            "page_size": PAGE_SIZE,
            "items": [self.image(i) for i in images[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]],
        }

    def image(self, image_id: str, **extra: Any) -> dict[str, Any]:
        entry = self.images.get(image_id, {})
        return {
            "id": image_id,
            "caption": entry.get("caption") or "",
            "file_name": entry.get("file_name") or image_id[:12],
            "thumb": self._all_thumbs or image_id in self.thumbs,
            **extra,
        }

    # --- a neuron ---

    def _neurons(self) -> dict[tuple[str, int], list[dict[str, Any]]]:
        if self._neuron_index is None:
            index: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for cluster in self.hierarchy["clusters"]:
                difference = {(n["layer"], n["channel"]) for n in cluster["difference_neurons"]}
                for neuron in cluster["neurons"]:
                    key = (neuron["layer"], neuron["channel"])
                    evidence = neuron.get("evidence") or {}
                    index.setdefault(key, []).append(
                        {
                            **self._link(cluster),
                            "level": cluster["level"],
                            "support": _num(neuron["support"], 3),
                            "interval": evidence.get("interval"),
                            "reliable": evidence.get("reliable"),
                            "selective": evidence.get("significant"),
                            "generic": evidence.get("generic"),
                            "difference": key in difference,
                        }
                    )
            self._neuron_index = index
        return self._neuron_index

    def has_neuron(self, layer: str, channel: int) -> bool:
        sizes = {entry["name"]: entry["channels"] for entry in self.hierarchy.get("layers", [])}
        return layer in sizes and 0 <= channel < sizes[layer]

    def neuron(self, layer: str, channel: int) -> dict[str, Any]:
        """Every concept whose group holds the neuron, and its most strongly activating images."""
        if not self.has_neuron(layer, channel):
            raise KeyError(f"{layer}/{channel}")
        if not self._top_loaded:
            self._top_images = self._top_images_loader() if self._top_images_loader else None
            self._top_loaded = True
        top: list[dict[str, Any]] = []
        found = self._top_images
        if found is not None and (layer, channel) in found.columns:
            column = found.columns[(layer, channel)]
            top = [
                self.image(found.image_ids[int(row)], activation=_num(value, 3))
                for row, value in zip(found.rows[:, column], found.values[:, column], strict=True)
            ]
        concepts = sorted(self._neurons().get((layer, channel), []), key=lambda c: (-c["level"], c["id"]))
        return {"layer": layer, "channel": channel, "concepts": concepts, "top_images": top}

    def neuron_keys(self) -> list[tuple[str, int]]:
        return [
            (entry["name"], channel)
            for entry in self.hierarchy.get("layers", [])
            for channel in range(entry["channels"])
        ]
