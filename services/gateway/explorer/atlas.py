"""The explorer's data layer: one hierarchy indexed once, answering each page with only what that
page shows (a concept never needs the whole hierarchy). Pure Python plus numpy, no web framework,
so the gateway's `/ui` API and the static report (`neuron-atlas report`) give the same answers.

Evidence is read from the schema-2 contract (shared/contracts/uncertainty.py) and worded the way
the CLI words it: a membership is *selective* (q <= alpha) or not (then *generic* here); its
reliability is yes, no or "too few images to tell" (null); a concept's tests are "specific", "not
specific", or their note ("not tested: budget", "not tested: 3 images"), never a bare absence."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.gateway.explorer import plots
from shared.storage.stores import Store, get_npz

PAGE_SIZE = 48  # thumbnails per grid page
CHILDREN_PAGE = 100  # rows per "more" step of the tree
TOP_IMAGES = 24  # most strongly activating images kept per neuron (a neuron page shows them all)
TYPICAL = 5  # most typical images per concept in the tree
SIBLINGS_SHOWN = 60
NEURON_PLOT_ROWS = 40  # concepts in a neuron page's support plot (its table lists them all)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
TYPICAL_BY_CENTROID = (
    "the images whose caption embeddings lie nearest the mean (centroid) of the concept's "
    "caption embeddings (embeddings.npy)"
)
TYPICAL_BY_ORDER = "the concept's first images (this result has no caption embeddings)"


def safe_name(value: str) -> str:
    """A concept id or layer name as a file-name part; the static report refuses anything else."""
    if not _SAFE_ID.match(value) or value in (".", ".."):
        raise ValueError(f"not usable in a file name: {value!r}")
    return value


@dataclass(frozen=True)
class TopImages:
    """Per neuron (column), the rows of its most strongly activating images, strongest first, and
    the share of all images in which it is active (from the stored active bitsets)."""

    image_ids: list[str]
    columns: dict[tuple[str, int], int]  # (layer, channel) -> column
    rows: np.ndarray  # int (k, neurons)
    values: np.ndarray  # float32 (k, neurons)
    rates: np.ndarray | None = None  # float (neurons,): collection rate; None without bitsets


def read_top_images(store: Store, k: int = TOP_IMAGES) -> TopImages | None:
    """The top-k images of every neuron from the stored pooled activations (`activations/*.npz`),
    and every neuron's collection rate from their active bitsets; None when the job has none. All
    neurons at once: one pass over the shards serves every page."""
    keys = sorted(store.list("activations/"))
    if not keys:
        return None
    ids: list[str] = []
    parts: list[np.ndarray] = []
    active: np.ndarray | None = None
    first: dict[str, np.ndarray] = {}
    for key in keys:
        arrays = get_npz(store, key)
        first = first or arrays
        ids.extend(str(i) for i in arrays["image_ids"])
        parts.append(arrays["pooled"])
        if "active_bits" in arrays:  # bitsets as neuron_core.active_sets.pack_mask writes them
            n = arrays["pooled"].shape[1]
            counts = np.unpackbits(arrays["active_bits"], axis=1, count=n).sum(axis=0, dtype=np.int64)
            active = counts if active is None else active + counts
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
    rates = None if active is None else active / max(1, pooled.shape[0])
    return TopImages(ids, columns, rows, values, rates)


def _num(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def evidence_badge(test: dict[str, Any] | None, passed: str, failed: str) -> dict[str, Any] | None:
    """A test's state in words: `passed` / `failed` where it was tested, else its note."""
    if test is None:
        return None
    result = test.get("result") or {}
    if test.get("status") != "tested" or not result:
        return {"kind": "untested", "text": test.get("note") or "not tested", "status": test.get("status")}
    significant = bool(result.get("significant"))
    return {
        "kind": "yes" if significant else "no",
        "text": passed if significant else failed,
        "status": "tested",
        "effect": _num(result.get("effect", result.get("statistic")), 4),
        "p_value": _num(result.get("p_value"), 6),
        "q_value": _num(result.get("q_value"), 6),
    }


def reliable_words(reliable: bool | None) -> str:
    return "too few images to tell" if reliable is None else "yes" if reliable else "no"


class Atlas:
    """An index over one job's hierarchy. `thumbs` says which images have a thumbnail (True:
    all of them); `top_images` is read on first use (a neuron page), never for the tree or a
    concept; `embeddings` (the caption embeddings, rows in the hierarchy's image order) on the
    first tree row, to pick each concept's most typical images."""

    def __init__(
        self,
        hierarchy: dict[str, Any],
        thumbs: Iterable[str] | bool = (),
        top_images: Callable[[], TopImages | None] | None = None,
        title: str = "",
        embeddings: Callable[[], np.ndarray | None] | None = None,
        comparisons: Sequence[dict[str, str]] = (),
    ) -> None:
        """`comparisons`: a multi-model job's, the baseline against each other model
        ({"baseline", "key"}), which its overview lists."""
        self.hierarchy = hierarchy
        self.comparisons = list(comparisons)
        self.title = title
        self.clusters: dict[str, dict[str, Any]] = {c["id"]: c for c in hierarchy["clusters"]}
        self.images: dict[str, dict[str, Any]] = {i["id"]: i for i in hierarchy["images"]}
        self._all_thumbs = thumbs is True  # the gateway knows only that the job has them
        self.thumbs = set() if isinstance(thumbs, bool) else set(thumbs)
        self.roots = [c["id"] for c in hierarchy["clusters"] if c["parent"] is None]
        self._top_images_loader = top_images
        self._top_images: TopImages | None = None
        self._top_loaded = False
        self._embeddings_loader = embeddings
        self._embeddings: np.ndarray | None = None
        self._embeddings_loaded = False
        self._row: dict[str, int] = {}
        self._typical: dict[str, list[str]] = {}
        self._neuron_index: dict[tuple[str, int], list[dict[str, Any]]] | None = None
        self._summary_plots: dict[str, str | None] | None = None
        self._lock = threading.Lock()  # the gateway answers from several threads: load once
        job = hierarchy.get("uncertainty") or {}
        method = job.get("method") or {}
        self.alpha = float(method.get("alpha") or (hierarchy.get("options") or {}).get("alpha") or 0.05)
        self.min_support = float((hierarchy.get("options") or {}).get("min_support") or 0.5)
        self.nulls = {t["name"]: t["null"] for t in method.get("tests") or []}
        mu = method.get("model_uncertainty") or {}
        self.interpretation: str | None = mu.get("interpretation")
        sampled = [i["model_uncertainty"] for i in hierarchy["images"] if i.get("model_uncertainty")]
        self.job_model_uncertainty = (
            {k: float(np.mean([s[k] for s in sampled])) for k in ("total", "mutual_information")}
            if sampled
            else None
        )
        classes = ((hierarchy.get("models") or {}).get("target") or {}).get("num_classes")
        self.max_entropy = math.log(classes) if classes and classes > 1 else None

    # --- the tree ---

    def _loaded_embeddings(self) -> np.ndarray | None:
        with self._lock:
            return self._load_embeddings()

    def _load_embeddings(self) -> np.ndarray | None:
        if not self._embeddings_loaded:
            found = self._embeddings_loader() if self._embeddings_loader else None
            # rows must be the hierarchy's images, in its order; anything else is not used
            if found is not None and found.ndim == 2 and found.shape[0] == len(self.hierarchy["images"]):
                self._embeddings = np.asarray(found, dtype=np.float32)
                self._row = {image["id"]: i for i, image in enumerate(self.hierarchy["images"])}
            self._embeddings_loaded = True
        return self._embeddings

    @property
    def typical_source(self) -> str:
        return TYPICAL_BY_CENTROID if self._loaded_embeddings() is not None else TYPICAL_BY_ORDER

    def typical(self, cluster_id: str) -> list[str]:
        """The concept's TYPICAL images nearest its caption-embedding centroid (cosine, the
        embeddings being unit length), most typical first; its first images without embeddings."""
        if cluster_id not in self._typical:
            images = self._cluster(cluster_id)["images"]
            embeddings = self._loaded_embeddings()
            if embeddings is None:
                chosen = images[:TYPICAL]
            else:
                vectors = embeddings[[self._row[i] for i in images]]
                scores = vectors @ vectors.mean(axis=0)
                chosen = [images[int(j)] for j in np.argsort(-scores, kind="stable")[:TYPICAL]]
            self._typical[cluster_id] = chosen
        return self._typical[cluster_id]

    def node(self, cluster: dict[str, Any]) -> dict[str, Any]:
        """What a tree row shows of a concept: label, size, typical images and an evidence badge."""
        known = [n["evidence"] for n in cluster["neurons"] if n.get("evidence") is not None]
        decided = [e["reliable"] for e in known if e.get("reliable") is not None]
        uncertainty = cluster.get("uncertainty") or {}
        return {
            "id": cluster["id"],
            "level": cluster["level"],
            "label": cluster["label"],
            "size": cluster["size"],
            "label_quality": _num(cluster.get("label_quality"), 3),
            "neurons": len(cluster["neurons"]),
            "children": len(cluster["children"]),
            "selective": sum(1 for e in known if e.get("selective")) if known else None,
            "selective_share": _num(sum(1 for e in known if e.get("selective")) / len(known), 3)
            if known
            else None,
            "reliable": sum(decided) if decided else None,
            "reliable_share": _num(sum(decided) / len(decided), 3) if decided else None,
            "too_few_images": bool(known) and not decided,
            "specificity": evidence_badge(uncertainty.get("specificity"), "specific", "not specific"),
            "typical": [self.image(i) for i in self.typical(cluster["id"])],
        }

    def summary(self) -> dict[str, Any]:
        """The overview: counts, models, the evidence summary, the plan, the tests and their nulls,
        and the job's plots."""
        h = self.hierarchy
        job = h.get("uncertainty") or {}
        method = job.get("method") or {}
        pruning = job.get("pruning")
        return {
            "title": self.title,
            "images": len(h["images"]),
            "concepts": len(h["clusters"]),
            "levels": h.get("levels", []),
            "layers": h.get("layers", []),
            "models": h.get("models", {}),
            "labelling": {k: (h.get("labelling") or {}).get(k) for k in ("source", "model", "quality")},
            "page_size": PAGE_SIZE,
            "typical": TYPICAL,
            "typical_source": self.typical_source,
            "alpha": self.alpha,
            "min_support": self.min_support,
            "uncertainty": None
            if not job
            else {
                "summary": job.get("summary"),
                "tests": method.get("tests") or [],
                "model_uncertainty": method.get("model_uncertainty"),
                "input_sensitivity": method.get("input_sensitivity"),
                "plan": job.get("plan"),
                "pruning": None
                if not pruning
                else {
                    "heldout_images": pruning["heldout_images"],
                    "selection_images": pruning["selection_images"],
                    "random_sets": pruning["random_sets"],
                    "verdict": pruning["verdict"]["sentence"],
                },
            },
            "plots": self.summary_plots(),
            "warnings": h.get("warnings"),
            **({"comparisons": self.comparisons} if self.comparisons else {}),
        }

    def summary_plots(self) -> dict[str, str | None]:
        if self._summary_plots is None:
            pruning = (self.hierarchy.get("uncertainty") or {}).get("pruning")
            self._summary_plots = {
                "summary": plots.summary_svg(self.hierarchy),
                "pruning": plots.pruning_svg(pruning, self.alpha) if pruning else None,
            }
        return self._summary_plots

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
        """One concept's page: the first page of its images, its neurons per layer, its evidence
        (with each test's null) and plots, and its relatives (ids and labels only)."""
        cluster = self._cluster(cluster_id)
        parent = self.clusters.get(cluster["parent"]) if cluster["parent"] else None
        siblings = [i for i in (parent["children"] if parent else self.roots) if i != cluster_id]
        difference = {(n["layer"], n["channel"]) for n in cluster["difference_neurons"]}
        layers = self._strips(cluster["neurons"], difference)
        uncertainty = cluster.get("uncertainty")
        mu = (uncertainty or {}).get("model_uncertainty")
        return {
            **self.node(cluster),
            "path": self._path(cluster),
            "label_source": cluster.get("label_source"),
            "label_warning": cluster.get("label_warning"),
            "difference_description": cluster.get("difference_description"),
            "difference_source": cluster.get("difference_source"),
            "uncertainty": uncertainty,
            "alpha": self.alpha,
            "min_support": self.min_support,
            "nulls": self.nulls,
            "interpretation": self.interpretation,
            "parent": self._link(parent) if parent else None,
            "children_links": [self._link(self.clusters[i]) for i in cluster["children"][:SIBLINGS_SHOWN]],
            "siblings": [self._link(self.clusters[i]) for i in siblings[:SIBLINGS_SHOWN]],
            "siblings_total": len(siblings),
            "layers": layers,
            "difference_count": len(difference),
            "plots": {
                "support": plots.support_svg(layers, self.min_support, cluster["label"]) if layers else None,
                "model_uncertainty": plots.model_uncertainty_svg(
                    mu,
                    self.interpretation or "sensitivity to feature dropout",
                    self.max_entropy,
                    self.job_model_uncertainty,
                )
                if mu
                else None,
            },
            "images_page": self.images_page(cluster_id, 0),
        }

    def _link(self, cluster: dict[str, Any]) -> dict[str, Any]:
        return {"id": cluster["id"], "label": cluster["label"], "size": cluster["size"]}

    def _membership(self, neuron: dict[str, Any]) -> dict[str, Any]:
        """A membership's evidence as the pages show it."""
        evidence = neuron.get("evidence") or {}
        rate = evidence.get("collection_rate")
        return {
            "support": _num(neuron["support"], 3),
            "count": evidence.get("count"),
            "interval": [_num(x, 3) for x in evidence.get("interval") or []] or None,
            "reliable": evidence.get("reliable"),
            "selective": evidence.get("selective"),
            "q_value": _num(evidence.get("q_value"), 6),
            "generic": evidence.get("generic"),
            "collection_rate": _num(rate, 3),
            "frequent": None if rate is None else rate >= self.min_support,
            "inclusion_probability": _num(evidence.get("inclusion_probability"), 3),
        }

    def _strips(
        self, neurons: list[dict[str, Any]], difference: set[tuple[str, int]]
    ) -> list[dict[str, Any]]:
        """The group per layer, in the job's layer order, each neuron with support and interval."""
        by_layer: dict[str, list[dict[str, Any]]] = {}
        for neuron in neurons:
            by_layer.setdefault(neuron["layer"], []).append(
                {
                    "channel": neuron["channel"],
                    **self._membership(neuron),
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
                    index.setdefault(key, []).append(
                        {
                            **self._link(cluster),
                            "level": cluster["level"],
                            **self._membership(neuron),
                            "difference": key in difference,
                        }
                    )
            self._neuron_index = index
        return self._neuron_index

    def has_neuron(self, layer: str, channel: int) -> bool:
        sizes = {entry["name"]: entry["channels"] for entry in self.hierarchy.get("layers", [])}
        return layer in sizes and 0 <= channel < sizes[layer]

    def _top(self) -> TopImages | None:
        with self._lock:
            if not self._top_loaded:
                self._top_images = self._top_images_loader() if self._top_images_loader else None
                self._top_loaded = True
            return self._top_images

    def neuron(self, layer: str, channel: int) -> dict[str, Any]:
        """Every concept whose group holds the neuron (support, interval and selectivity there),
        its collection-wide rate and whether it is frequent, and its most activating images."""
        if not self.has_neuron(layer, channel):
            raise KeyError(f"{layer}/{channel}")
        found = self._top()
        top: list[dict[str, Any]] = []
        rate: float | None = None
        if found is not None and (layer, channel) in found.columns:
            column = found.columns[(layer, channel)]
            top = [
                self.image(found.image_ids[int(row)], activation=_num(value, 3))
                for row, value in zip(found.rows[:, column], found.values[:, column], strict=True)
            ]
            rate = None if found.rates is None else float(found.rates[column])
        concepts = sorted(self._neurons().get((layer, channel), []), key=lambda c: (-c["level"], c["id"]))
        if rate is None:  # without stored bitsets: the rate its memberships carry
            rate = next((c["collection_rate"] for c in concepts if c["collection_rate"] is not None), None)
        title = f"{layer}/{channel}"
        return {
            "layer": layer,
            "channel": channel,
            "collection_rate": _num(rate, 4),
            "frequent": None if rate is None else rate >= self.min_support,
            "min_support": self.min_support,
            "alpha": self.alpha,
            "concepts": concepts,
            "selective_in": sum(1 for c in concepts if c["selective"]),
            "top_images": top,
            "top_kept": TOP_IMAGES,
            "plot": plots.concept_support_svg(concepts, self.min_support, title, NEURON_PLOT_ROWS)
            if concepts
            else None,
            "plot_rows": min(len(concepts), NEURON_PLOT_ROWS),
        }

    def neuron_keys(self) -> list[tuple[str, int]]:
        return [
            (entry["name"], channel)
            for entry in self.hierarchy.get("layers", [])
            for channel in range(entry["channels"])
        ]
