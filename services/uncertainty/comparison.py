"""Compare two models run on the same images: per concept, what each model's group is, what
changed between them, and whether the change is more than same-model noise (issue 27;
docs/comparison.md says what every number means).

`compare_results(store_a, store_b)` reads two finished results (`comparison_inputs`) and returns
the `Comparison` contract (`comparison.json`). The tests are `paired_tests`'; this module only
counts, tests and assembles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from neuron_atlas_client.contracts.comparison import (
    KEPT_SHARE,
    CausalEffect,
    Comparison,
    ComparisonMethod,
    ComparisonSummary,
    ConceptComparison,
    ConceptLayer,
    ConceptSide,
    ConceptStatus,
    LayerSummary,
    ModelRecord,
    NeuronChange,
    NeuronRef,
)
from neuron_atlas_client.contracts.hierarchy import Cluster
from services.uncertainty.comparison_inputs import ComparisonInputs, Result, read_inputs
from services.uncertainty.paired_tests import PairedActivity, smallest_support_p
from services.uncertainty.stats import benjamini_hochberg
from shared.storage.stores import Store

NULL = (
    "Same model behaviour: on every image, the two models' activities of a neuron are "
    "exchangeable (swapping them changes nothing), as for two stochastic passes of one checkpoint."
)
SUPPORT_TEST = (
    "Exact sign-flip test over the concept's images (McNemar: b_only given the discordant images "
    "is Binomial(n, 1/2)), two-sided mid-p."
)
SELECTIVITY_TEST = (
    "Exact sign-flip test over all images: the concept's and the rest of the collection's "
    "discordant images flip independently (two binomials), two-sided mid-p."
)
MULTIPLE_TESTING = (
    "Benjamini-Hochberg over every (concept, neuron) pair of the comparison, support and "
    "selectivity each a family of their own. A concept's tested neurons: those whose support "
    "averaged over the two models is at least min_support / 2 (which holds both groups, and does "
    "not depend on which model an image's activity came from)."
)


def _r(value: float | np.floating) -> float:
    return round(float(value), 6)


def _jaccard(first: set[int], second: set[int]) -> float | None:
    union = first | second
    return _r(len(first & second) / len(union)) if union else None


@dataclass
class _Pair:
    """One (concept, neuron) pair's counts, before the family's q-values are known."""

    concept: str
    neuron: int
    in_a: bool
    in_b: bool
    support_a: float
    support_b: float
    a_only: int
    b_only: int
    support_p: float
    selectivity_a: float | None
    selectivity_b: float | None
    selectivity_p: float | None


def _pairs(
    activity: PairedActivity,
    concept: str,
    rows: np.ndarray,
    groups: tuple[set[int], set[int]],
    min_support: float,
) -> list[_Pair]:
    """The concept's tests over its family (PairedActivity.family), which holds both groups."""
    group_a, group_b = groups
    family = set(activity.family(rows, min_support).tolist()) | group_a | group_b
    neurons = np.array(sorted(family), dtype=np.int64)
    if neurons.size == 0:
        return []
    tests = activity.test(rows, neurons)
    out = []
    for k, neuron in enumerate(neurons.tolist()):
        out.append(
            _Pair(
                concept,
                neuron,
                neuron in group_a,
                neuron in group_b,
                float(tests.support_a[k]),
                float(tests.support_b[k]),
                int(tests.a_only[k]),
                int(tests.b_only[k]),
                float(tests.support_p[k]),
                None if tests.selectivity_a is None else float(tests.selectivity_a[k]),
                None if tests.selectivity_b is None else float(tests.selectivity_b[k]),
                None if tests.selectivity_p is None else float(tests.selectivity_p[k]),
            )
        )
    return out


def _side_selectivity(mask: np.ndarray, rows: np.ndarray, group: np.ndarray) -> float | None:
    """Mean over the group of support in the concept minus the active rate elsewhere."""
    rest = mask.shape[0] - rows.shape[0]
    if group.size == 0 or rest == 0:
        return None
    inside = mask[np.ix_(rows, group)].sum(axis=0)
    outside = mask[:, group].sum(axis=0) - inside
    return _r(np.mean(inside / rows.shape[0] - outside / rest))


def causal_effect(cluster: Cluster) -> CausalEffect:
    """A concept's specificity test in one result, as a comparison (and models.json) shows it."""
    uncertainty = cluster.uncertainty
    if uncertainty is None:
        return CausalEffect(status="no_uncertainty", note="not tested: the result has no uncertainty stage")
    specificity = uncertainty.specificity
    found = specificity.result
    if specificity.status != "tested" or found is None:
        return CausalEffect(status=specificity.status, note=specificity.note)
    return CausalEffect(
        status="tested",
        note=specificity.note,
        effect=found.effect,
        interval=found.interval,
        q_value=found.q_value,
        significant=found.significant,
    )


def _side(result: Result, concept: str, rows: np.ndarray) -> ConceptSide:
    group = result.group(concept)
    uncertainty = result.clusters[concept].uncertainty
    return ConceptSide(
        group_size=int(group.size),
        selectivity=_side_selectivity(result.active.mask, rows, group),
        group_stability=uncertainty.group_stability if uncertainty is not None else None,
        causal=causal_effect(result.clusters[concept]),
    )


def _status(size_a: int, size_b: int, changed: bool | None) -> ConceptStatus:
    if size_a and not size_b:
        return "vanished"
    if size_b and not size_a:
        return "appeared"
    if not size_a:
        return "no_group"
    if changed is None:
        return "in_both"
    return "changed" if changed else "unchanged"


class _Naming:
    def __init__(self, result: Result) -> None:
        self.names = [(layer.name, c) for layer in result.active.layers for c in range(layer.channels)]

    def ref(self, neuron: int) -> NeuronRef:
        layer, channel = self.names[neuron]
        return NeuronRef(layer=layer, channel=channel)


def _neuron_changes(
    pairs: list[_Pair], support_q: np.ndarray, selectivity_q: np.ndarray, naming: _Naming, alpha: float
) -> list[NeuronChange]:
    changes = []
    for pair, sq, lq in zip(pairs, support_q, selectivity_q, strict=True):
        ref = naming.ref(pair.neuron)
        selectivity_change = (
            _r(pair.selectivity_b - pair.selectivity_a)
            if pair.selectivity_a is not None and pair.selectivity_b is not None
            else None
        )
        changes.append(
            NeuronChange(
                layer=ref.layer,
                channel=ref.channel,
                in_a=pair.in_a,
                in_b=pair.in_b,
                support_a=_r(pair.support_a),
                support_b=_r(pair.support_b),
                support_change=_r(pair.support_b - pair.support_a),
                a_only=pair.a_only,
                b_only=pair.b_only,
                support_p=_r(pair.support_p),
                support_q=_r(sq),
                selectivity_a=None if pair.selectivity_a is None else _r(pair.selectivity_a),
                selectivity_b=None if pair.selectivity_b is None else _r(pair.selectivity_b),
                selectivity_change=selectivity_change,
                selectivity_p=None if pair.selectivity_p is None else _r(pair.selectivity_p),
                selectivity_q=None if np.isnan(lq) else _r(lq),
                significant=bool(sq <= alpha),
            )
        )
    return changes


def _concept_layers(
    layer_names: list[str], group_a: set[int], group_b: set[int], changes: list[NeuronChange], naming: _Naming
) -> list[ConceptLayer]:
    out = []
    for name in layer_names:
        in_layer = {n for n in group_a | group_b if naming.names[n][0] == name}
        a, b = group_a & in_layer, group_b & in_layer
        moved = [c for c in changes if c.layer == name and c.significant]
        out.append(
            ConceptLayer(
                layer=name,
                group_a=len(a),
                group_b=len(b),
                gained=len(b - a),
                lost=len(a - b),
                jaccard=_jaccard(a, b),
                significant_up=sum(c.support_change > 0 for c in moved),
                significant_down=sum(c.support_change < 0 for c in moved),
            )
        )
    return out


def _kept_share(group_a: set[int], changes: list[NeuronChange]) -> float | None:
    if not group_a:
        return None
    lost = sum(c.in_a and not c.in_b and c.significant and c.support_change < 0 for c in changes)
    return _r(1 - lost / len(group_a))


def _bh(values: list[float | None]) -> np.ndarray:
    """BH over the values that exist; NaN where there is none."""
    out = np.full(len(values), np.nan)
    present = [i for i, v in enumerate(values) if v is not None]
    if present:
        out[present] = benjamini_hochberg(np.array([values[i] for i in present], dtype=np.float64))
    return out


def _record(result: Result) -> ModelRecord:
    target = result.hierarchy.models.target
    return ModelRecord(
        source=result.source,
        architecture=target.architecture,
        weights=target.weights,
        sha256=target.sha256,
        model_id=target.model_id,
        layers=[layer.name for layer in result.hierarchy.layers],
        created_at=result.hierarchy.created_at,
    )


def compare(inputs: ComparisonInputs, alpha: float = 0.05, generator: str = "neuron-atlas") -> Comparison:
    """The comparison of two checked results at level `alpha`."""
    min_support = inputs.a.hierarchy.options.min_support
    row_of = {image_id: i for i, image_id in enumerate(inputs.image_ids)}
    concepts = [c.id for c in inputs.a.hierarchy.clusters]
    rows = {cid: np.array(sorted(row_of[i] for i in inputs.a.clusters[cid].images)) for cid in concepts}
    groups = {cid: (set(inputs.a.group(cid).tolist()), set(inputs.b.group(cid).tolist())) for cid in concepts}
    pairs: list[_Pair] = []
    if inputs.same_layers:
        activity = PairedActivity(inputs.a.active.mask, inputs.b.active.mask)
        for cid in concepts:
            pairs.extend(_pairs(activity, cid, rows[cid], groups[cid], min_support))
    support_q = _bh([p.support_p for p in pairs])
    selectivity_q = _bh([p.selectivity_p for p in pairs])
    naming = _Naming(inputs.a)
    layer_names = [layer.name for layer in inputs.a.active.layers]
    by_concept: dict[str, list[NeuronChange]] = {cid: [] for cid in concepts}
    changes = _neuron_changes(pairs, support_q, selectivity_q, naming, alpha)
    for pair, change in zip(pairs, changes, strict=True):
        by_concept[pair.concept].append(change)

    results = []
    for cid in concepts:
        cluster = inputs.a.clusters[cid]
        group_a, group_b = groups[cid]
        side_a, side_b = _side(inputs.a, cid, rows[cid]), _side(inputs.b, cid, rows[cid])
        effect_a, effect_b = side_a.causal.effect, side_b.causal.effect
        causal_change = _r(effect_b - effect_a) if effect_a is not None and effect_b is not None else None
        concept = ConceptComparison(
            id=cid,
            level=cluster.level,
            label=cluster.label,
            size=cluster.size,
            status=_status(len(group_a), len(group_b), None),
            kept_share=None,
            testable=None,
            a=side_a,
            b=side_b,
            causal_change=causal_change,
        )
        if inputs.same_layers:
            mine = by_concept[cid]
            concept.status = _status(len(group_a), len(group_b), any(c.significant for c in mine))
            concept.kept_share = _kept_share(group_a, mine)
            concept.testable = smallest_support_p(cluster.size) <= alpha
            concept.jaccard = _jaccard(group_a, group_b)
            concept.gained = [naming.ref(n) for n in sorted(group_b - group_a)]
            concept.lost = [naming.ref(n) for n in sorted(group_a - group_b)]
            concept.layers = _concept_layers(layer_names, group_a, group_b, mine, naming)
            concept.neurons = mine
        results.append(concept)

    return Comparison(
        schema_version="1.0",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        generator=generator,
        a=_record(inputs.a),
        b=_record(inputs.b),
        images=len(inputs.image_ids),
        method=ComparisonMethod(
            alpha=alpha,
            mode="same_layers" if inputs.same_layers else "different_layers",
            mode_reason=inputs.mode_reason,
            null=NULL,
            support_test=SUPPORT_TEST,
            selectivity_test=SELECTIVITY_TEST,
            multiple_testing=MULTIPLE_TESTING,
            kept_share=KEPT_SHARE,
        ),
        summary=_summary(results, len(pairs), inputs.same_layers),
        layers=_layer_summaries(results, layer_names) if inputs.same_layers else None,
        concepts=results,
    )


def _summary(concepts: list[ConceptComparison], tests: int, same_layers: bool) -> ComparisonSummary:
    kept = [c.kept_share for c in concepts if c.kept_share is not None]
    jaccards = [c.jaccard for c in concepts if c.jaccard is not None]
    return ComparisonSummary(
        concepts=len(concepts),
        unchanged=sum(c.status == "unchanged" for c in concepts),
        changed=sum(c.status == "changed" for c in concepts),
        vanished=[c.id for c in concepts if c.status == "vanished"],
        appeared=[c.id for c in concepts if c.status == "appeared"],
        tests=tests,
        significant_changes=sum(n.significant for c in concepts for n in c.neurons or []),
        min_kept_share=min(kept) if kept else None,
        mean_jaccard=_r(np.mean(jaccards)) if same_layers and jaccards else None,
    )


def _layer_summaries(concepts: list[ConceptComparison], layer_names: list[str]) -> list[LayerSummary]:
    out = []
    for name in layer_names:
        rows = [layer for c in concepts for layer in c.layers or [] if layer.layer == name]
        jaccards = [r.jaccard for r in rows if r.jaccard is not None]
        out.append(
            LayerSummary(
                layer=name,
                memberships_a=sum(r.group_a for r in rows),
                memberships_b=sum(r.group_b for r in rows),
                gained=sum(r.gained for r in rows),
                lost=sum(r.lost for r in rows),
                significant_up=sum(r.significant_up for r in rows),
                significant_down=sum(r.significant_down for r in rows),
                mean_jaccard=_r(np.mean(jaccards)) if jaccards else None,
            )
        )
    return out


def compare_results(
    store_a: Store,
    store_b: Store,
    sources: tuple[str, str],
    alpha: float | None = None,
    generator: str = "neuron-atlas",
) -> Comparison:
    """Read, check and compare two finished results (A the reference, B the candidate); at A's
    alpha unless `alpha` is given."""
    inputs = read_inputs(store_a, store_b, sources)
    return compare(inputs, inputs.a.hierarchy.options.alpha if alpha is None else alpha, generator)
