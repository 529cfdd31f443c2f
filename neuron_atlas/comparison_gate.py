"""A comparison as a CI gate: which promotion conditions a `comparison.json` breaks
(`neuron-atlas compare ... --fail-if-lost CONCEPT --fail-if-causal-drop CONCEPT=DROP`;
docs/comparison.md, "A CI gate")."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.comparison import Comparison, ConceptComparison
from shared.errors import InputError


@dataclass(frozen=True)
class CausalDrop:
    concept: str
    threshold: float


def parse_causal_drop(text: str) -> CausalDrop:
    """CONCEPT=DROP, e.g. L2-0=0.2: the largest fall of the causal effect allowed."""
    concept, sep, value = text.rpartition("=")
    try:
        threshold = float(value)
    except ValueError:
        threshold = -1.0
    if not sep or not concept or threshold < 0:
        raise InputError(
            f"--fail-if-causal-drop {text!r} is not CONCEPT=DROP.",
            "e.g. --fail-if-causal-drop L2-0=0.2: a concept id or label, and a drop in top-logit "
            "units, at least 0.",
        )
    return CausalDrop(concept, threshold)


def find_concept(comparison: Comparison, name: str) -> ConceptComparison:
    """A concept by id (L2-0), or by its label when exactly one concept has it."""
    by_id = [c for c in comparison.concepts if c.id == name]
    found = by_id or [c for c in comparison.concepts if c.label == name]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(
            f"No concept is called {name!r}.",
            "Name a concept by its id (e.g. L2-0) or its exact label, as comparison.json lists them.",
        )
    raise InputError(
        f"{len(found)} concepts have the label {name!r}: {', '.join(c.id for c in found)}.",
        "Name the concept by its id.",
    )


def lost_failures(comparison: Comparison, names: list[str], min_kept: float) -> list[str]:
    """A named concept fails when B has no group for it, or keeps less than `min_kept` of A's
    group (kept_share: neurons that left the group with a significant fall of their support)."""
    failures = []
    for name in names:
        concept = find_concept(comparison, name)
        if concept.a.group_size == 0:
            raise InputError(
                f"--fail-if-lost {name}: A has no group for {concept.id} ({concept.label}), so "
                "there is nothing to lose.",
                "Name a concept that has a group in A (comparison.json: a.group_size > 0).",
            )
        if concept.status == "vanished":
            failures.append(f"{concept.id} ({concept.label}): its group vanished in B")
        elif concept.kept_share is not None and concept.kept_share < min_kept:
            failures.append(
                f"{concept.id} ({concept.label}): B keeps {concept.kept_share:.2f} of A's group "
                f"(at least {min_kept:.2f} required)"
            )
    return failures


def causal_failures(comparison: Comparison, drops: list[CausalDrop]) -> list[str]:
    """A named concept fails when its causal effect falls by more than its threshold, or when
    the fall cannot be checked (the concept was not tested in either model): a gate that cannot
    check does not pass."""
    failures = []
    for drop in drops:
        concept = find_concept(comparison, drop.concept)
        a, b = concept.a.causal, concept.b.causal
        if a.effect is None or b.effect is None:
            untested = "A" if a.effect is None else "B"
            note = (a if a.effect is None else b).note
            failures.append(
                f"{concept.id} ({concept.label}): the causal effect cannot be checked: {note} in {untested}"
            )
        elif a.effect - b.effect > drop.threshold:
            failures.append(
                f"{concept.id} ({concept.label}): causal effect fell from {a.effect:.3f} to "
                f"{b.effect:.3f} (by more than {drop.threshold:g})"
            )
    return failures
