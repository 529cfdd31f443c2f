"""The explorer's comparison view (issue 27, docs/explorer.md "Comparing two models"): what changed
between two models run on the same images, concept by concept, read from a `comparison.json`
and the two results' `hierarchy.json` (for the concept tree and each model's labels). Plain
Python, like `atlas.py`, so the gateway's `/ui/api/comparisons` and the static folder that
`neuron-atlas compare` writes give the same answers.

`comparison_view(comparison, hierarchy_a, hierarchy_b)` is the one entry: anything that holds a
comparison document and the two hierarchies (two jobs on the suite, two result folders, or a
multi-model job's own `comparison.json` beside its `models/<key>/hierarchy.json`) opens here.

Each concept gets one change marker, in words:
- *changed*: some neuron's support changed beyond same-model noise (BH q <= alpha);
- *vanished* / *appeared*: one model has a group, the other none;
- *unchanged*: it could have shown a change and did not;
- *not testable*: too few images for any change to reach alpha (it stays "unchanged" in the
  document, which says so with `testable: false`);
- *no group*: neither model has one; *in both* (different layers): both have one, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHANGED_KINDS = ("changed", "vanished", "appeared")

MARKERS: dict[str, dict[str, str]] = {
    "changed": {
        "text": "changed",
        "title": "Some of its neurons' support changed beyond what two passes of the same model show "
        "(BH q ≤ alpha)",
    },
    "vanished": {"text": "group vanished", "title": "Model A has a neuron group for it, model B none"},
    "appeared": {"text": "group appeared", "title": "Model B has a neuron group for it, model A none"},
    "unchanged": {
        "text": "unchanged",
        "title": "No neuron's support changed beyond same-model noise, and it has enough images to show one",
    },
    "untested": {
        "text": "not testable: too few images",
        "title": "Too few images for any change to reach alpha "
        "(the smallest two-sided p of n images is 0.5^n)",
    },
    "no_group": {"text": "no group in either", "title": "Neither model has a neuron group for it"},
    "in_both": {
        "text": "group in both",
        "title": "Both models have a group; other layers, so compared side by side without neuron identity",
    },
}


def _num(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def marker_kind(concept: dict[str, Any]) -> str:
    """The marker of a concept of comparison.json: its status, except that an unchanged concept
    too small for any change to be significant is "untested", not "unchanged"."""
    status = str(concept["status"])
    if status == "unchanged" and concept.get("testable") is False:
        return "untested"
    return status


def _causal_null(hierarchy: dict[str, Any]) -> str | None:
    tests = ((hierarchy.get("uncertainty") or {}).get("method") or {}).get("tests") or []
    found = next((t for t in tests if "specific" in str(t.get("name", "")).lower()), None)
    return None if found is None else found.get("null")


@dataclass
class ComparisonView:
    """An index over one comparison and its two hierarchies. `links`: where each model's own
    explorer lives ({"a": job id, "b": job id} on the gateway), or empty (the static folder)."""

    comparison: dict[str, Any]
    hierarchy_a: dict[str, Any]
    hierarchy_b: dict[str, Any]
    title: str = ""
    links: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.concepts = {c["id"]: c for c in self.comparison["concepts"]}
        self.clusters = {c["id"]: c for c in self.hierarchy_a["clusters"]}
        self.labels_b = {c["id"]: c["label"] for c in self.hierarchy_b["clusters"]}
        self.roots = [c["id"] for c in self.hierarchy_a["clusters"] if c["parent"] is None]
        self.same_layers = self.comparison["method"]["mode"] == "same_layers"
        self._changed_below: dict[str, int] = {}
        for cid in self.concepts:
            if marker_kind(self.concepts[cid]) in CHANGED_KINDS:
                for ancestor in self._path_ids(cid):
                    self._changed_below[ancestor] = self._changed_below.get(ancestor, 0) + 1

    def _path_ids(self, cluster_id: str) -> list[str]:
        out = []
        parent = self.clusters[cluster_id]["parent"] if cluster_id in self.clusters else None
        while parent is not None and parent in self.clusters:
            out.append(parent)
            parent = self.clusters[parent]["parent"]
        return out[::-1]

    def _path(self, cluster_id: str) -> list[dict[str, str]]:
        return [{"id": p, "label": self.clusters[p]["label"]} for p in self._path_ids(cluster_id)]

    def _concept(self, cluster_id: str) -> dict[str, Any]:
        if cluster_id not in self.concepts or cluster_id not in self.clusters:
            raise KeyError(cluster_id)
        return self.concepts[cluster_id]

    def _label_b(self, cluster_id: str) -> str | None:
        """B's label where it is worded differently from A's (the concept is the same)."""
        label = self.labels_b.get(cluster_id)
        return label if label and label != self.clusters[cluster_id]["label"] else None

    # --- the tree ---

    def node(self, cluster_id: str) -> dict[str, Any]:
        """A tree row: label, size, the change marker and its short numbers."""
        c = self._concept(cluster_id)
        cluster = self.clusters[cluster_id]
        kind = marker_kind(c)
        return {
            "id": cluster_id,
            "label": cluster["label"],
            "label_b": self._label_b(cluster_id),
            "level": cluster["level"],
            "size": cluster["size"],
            "children": len(cluster["children"]),
            "marker": {"kind": kind, **MARKERS[kind]},
            "changed_below": self._changed_below.get(cluster_id, 0),
            "kept_share": _num(c.get("kept_share"), 3),
            "jaccard": _num(c.get("jaccard"), 3),
            "gained": len(c.get("gained") or []),
            "lost": len(c.get("lost") or []),
            "significant": sum(1 for n in c.get("neurons") or [] if n["significant"]),
            "group_a": c["a"]["group_size"],
            "group_b": c["b"]["group_size"],
        }

    def children(self, parent: str | None) -> dict[str, Any]:
        """The tree's rows under `parent` (None: the top level), all at once (a comparison's tree
        is the result's, whose levels hold at most a few hundred concepts per parent)."""
        ids = self.roots if parent is None else self.clusters[self._concept(parent)["id"]]["children"]
        return {"parent": parent, "total": len(ids), "items": [self.node(i) for i in ids]}

    def changed(self) -> dict[str, Any]:
        """The filter "changed concepts only": every changed, vanished or appeared concept with
        its path, the highest level first, then the smallest share of A's group kept."""
        ids = [
            cid
            for cid, c in self.concepts.items()
            if marker_kind(c) in CHANGED_KINDS and cid in self.clusters
        ]
        ids.sort(key=lambda i: (-self.clusters[i]["level"], self.concepts[i].get("kept_share") or 0.0, i))
        return {"total": len(ids), "items": [{**self.node(i), "path": self._path(i)} for i in ids]}

    def summary(self) -> dict[str, Any]:
        """The comparison's overview: the two models, the mode, the counts, each layer, and each
        test's null in words."""
        doc = self.comparison
        method = doc["method"]
        counts = {k: 0 for k in MARKERS}
        for c in self.concepts.values():
            counts[marker_kind(c)] += 1
        models = {}
        for side in ("a", "b"):
            record = doc[side]
            models[side] = {
                "source": record["source"],
                "architecture": record["architecture"],
                "weights": record["weights"],
                "layers": record["layers"],
                "job": self.links.get(side),
            }
        return {
            "view": "comparison",
            "title": self.title,
            "images": doc["images"],
            "concepts": len(self.concepts),
            "created_at": doc["created_at"],
            "models": models,
            "mode": method["mode"],
            "mode_reason": method["mode_reason"],
            "alpha": method["alpha"],
            "counts": counts,
            "markers": MARKERS,
            "summary": doc["summary"],
            "layers": doc.get("layers") or [],
            "tests": self._tests(),
        }

    def _tests(self) -> list[dict[str, str]]:
        method = self.comparison["method"]
        tests = [
            {"name": "What “same model behaviour” means (every test's null)", "text": method["null"]},
        ]
        if self.same_layers:
            tests += [
                {"name": "Support change", "text": method["support_test"]},
                {"name": "Selectivity change", "text": method["selectivity_test"]},
                {"name": "Many tests at once", "text": method["multiple_testing"]},
                {"name": "Share of A's group kept", "text": method["kept_share"]},
            ]
        causal = _causal_null(self.hierarchy_a) or _causal_null(self.hierarchy_b)
        if causal:
            tests.append(
                {"name": "Causal effect (each model's own specificity test)", "text": f"Null: {causal}"}
            )
        return tests

    # --- a concept ---

    def concept(self, cluster_id: str) -> dict[str, Any]:
        """One concept in both models: the marker, both sides' numbers, and (same layers) both
        groups per layer with the gained and lost neurons, and every tested neuron's change."""
        c = self._concept(cluster_id)
        cluster = self.clusters[cluster_id]
        parent = cluster["parent"]
        return {
            **self.node(cluster_id),
            "path": self._path(cluster_id),
            "parent": None if parent is None else {"id": parent, "label": self.clusters[parent]["label"]},
            "children_links": [{"id": i, "label": self.clusters[i]["label"]} for i in cluster["children"]],
            "mode": self.comparison["method"]["mode"],
            "alpha": self.comparison["method"]["alpha"],
            "testable": c.get("testable"),
            "causal_change": _num(c.get("causal_change")),
            "sides": {side: self._side(c[side]) for side in ("a", "b")},
            "layers": self._layers(c) if self.same_layers else self._layer_counts(cluster_id),
            "neurons": self._neuron_rows(c) if self.same_layers else [],
            "jobs": self.links,
            "tests": self._tests(),
        }

    @staticmethod
    def _side(side: dict[str, Any]) -> dict[str, Any]:
        causal = side["causal"]
        return {
            "group_size": side["group_size"],
            "selectivity": _num(side.get("selectivity")),
            "group_stability": _num(side.get("group_stability"), 3),
            "causal": {
                "status": causal["status"],
                "note": causal["note"],
                "effect": _num(causal.get("effect")),
                "interval": causal.get("interval"),
                "q_value": _num(causal.get("q_value"), 6),
                "significant": causal.get("significant"),
            },
        }

    def _layers(self, c: dict[str, Any]) -> list[dict[str, Any]]:
        """Per layer, A's and B's groups as neuron cells: each with its support in that model,
        `lost` (in A's group, not B's) or `gained` (in B's, not A's), and its test."""
        tested = {(n["layer"], n["channel"]): n for n in c.get("neurons") or []}
        out = []
        for layer in c.get("layers") or []:
            name = layer["layer"]
            cells: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
            for (lname, channel), n in sorted(tested.items(), key=lambda kv: kv[0][1]):
                if lname != name:
                    continue
                change = {
                    "change": _num(n["support_change"], 3),
                    "q": _num(n["support_q"], 6),
                    "significant": n["significant"],
                }
                if n["in_a"]:
                    cells["a"].append(
                        {
                            "channel": channel,
                            "support": _num(n["support_a"], 3),
                            "lost": not n["in_b"],
                            **change,
                        }
                    )
                if n["in_b"]:
                    cells["b"].append(
                        {
                            "channel": channel,
                            "support": _num(n["support_b"], 3),
                            "gained": not n["in_a"],
                            **change,
                        }
                    )
            out.append(
                {
                    "layer": name,
                    "group_a": layer["group_a"],
                    "group_b": layer["group_b"],
                    "gained": layer["gained"],
                    "lost": layer["lost"],
                    "jaccard": _num(layer.get("jaccard"), 3),
                    "significant_up": layer["significant_up"],
                    "significant_down": layer["significant_down"],
                    "a": cells["a"],
                    "b": cells["b"],
                }
            )
        return out

    def _layer_counts(self, cluster_id: str) -> list[dict[str, Any]]:
        """Other layers: each model's group size per layer, from its hierarchy (no neuron
        identity across the two, so no gained or lost)."""
        out = []
        for side, hierarchy in (("a", self.hierarchy_a), ("b", self.hierarchy_b)):
            cluster = next((x for x in hierarchy["clusters"] if x["id"] == cluster_id), None)
            sizes: dict[str, int] = {}
            for n in (cluster or {}).get("neurons", []):
                sizes[n["layer"]] = sizes.get(n["layer"], 0) + 1
            for layer in hierarchy.get("layers", []):
                out.append({"model": side, "layer": layer["name"], "group": sizes.get(layer["name"], 0)})
        return out

    @staticmethod
    def _neuron_rows(c: dict[str, Any]) -> list[dict[str, Any]]:
        """Every tested neuron, the significant changes first, then by the size of the change."""
        rows = [
            {
                "layer": n["layer"],
                "channel": n["channel"],
                "in_a": n["in_a"],
                "in_b": n["in_b"],
                "support_a": _num(n["support_a"], 3),
                "support_b": _num(n["support_b"], 3),
                "support_change": _num(n["support_change"], 3),
                "a_only": n["a_only"],
                "b_only": n["b_only"],
                "support_q": _num(n["support_q"], 6),
                "selectivity_a": _num(n.get("selectivity_a"), 3),
                "selectivity_b": _num(n.get("selectivity_b"), 3),
                "selectivity_change": _num(n.get("selectivity_change"), 3),
                "selectivity_q": _num(n.get("selectivity_q"), 6),
                "significant": n["significant"],
            }
            for n in c.get("neurons") or []
        ]
        rows.sort(
            key=lambda r: (not r["significant"], -abs(r["support_change"] or 0.0), r["layer"], r["channel"])
        )
        return rows


def comparison_view(
    comparison: dict[str, Any],
    hierarchy_a: dict[str, Any],
    hierarchy_b: dict[str, Any],
    title: str = "",
    links: dict[str, str] | None = None,
) -> ComparisonView:
    """The comparison view of a `comparison.json` (as plain JSON) and its two results'
    `hierarchy.json`. A concept of the comparison missing from A's hierarchy is refused: the
    three documents must be of one comparison."""
    missing = [
        c["id"] for c in comparison["concepts"] if c["id"] not in {x["id"] for x in hierarchy_a["clusters"]}
    ]
    if missing:
        raise ValueError(f"the comparison's concepts {missing[:3]} are not in model A's hierarchy")
    return ComparisonView(comparison, hierarchy_a, hierarchy_b, title, dict(links or {}))
