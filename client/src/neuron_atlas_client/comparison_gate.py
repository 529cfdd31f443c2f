"""A comparison as a CI gate: which promotion conditions a `comparison.json` breaks
(`neuron-atlas compare ... --fail-if-lost CONCEPT --fail-if-causal-drop CONCEPT=DROP`;
docs/comparison.md, "A CI gate")."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TextIO

from neuron_atlas_client.contracts.comparison import Comparison, ConceptComparison
from neuron_atlas_client.errors import InputError


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


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def alpha_level(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a level between 0 and 1")
    return value


def _causal_drop(text: str) -> CausalDrop:
    try:
        return parse_causal_drop(text)
    except InputError as exc:  # argparse's own message and exit status 2
        raise argparse.ArgumentTypeError(f"{exc.problem} {exc.fix}") from None


def add_gate_flags(compare: argparse.ArgumentParser) -> None:
    """--fail-if-lost, --min-kept, --fail-if-causal-drop (also `remote compare`'s)."""
    gate = compare.add_argument_group("gate", "exit 1 when B breaks any of these")
    gate.add_argument(
        "--fail-if-lost",
        action="append",
        default=[],
        metavar="CONCEPT",
        help="the concept (id or label) loses its group in B, or B keeps less than --min-kept of "
        "it (repeatable)",
    )
    gate.add_argument(
        "--min-kept",
        type=_share,
        default=0.5,
        metavar="SHARE",
        help="the kept_share --fail-if-lost requires (default: %(default)s)",
    )
    gate.add_argument(
        "--fail-if-causal-drop",
        action="append",
        type=_causal_drop,
        default=[],
        metavar="CONCEPT=DROP",
        help="the concept's causal (specificity) effect falls by more than DROP, or cannot be "
        "checked because either model did not test it (repeatable)",
    )


def _neurons(concept: ConceptComparison, which: str) -> str:
    refs = concept.lost if which == "lost" else concept.gained
    return ",".join(f"{r.layer}:{r.channel}" for r in refs or []) or "-"


def print_summary(comparison: Comparison, out: TextIO, limit: int = 10) -> None:
    s, method = comparison.summary, comparison.method
    print(
        f"A: {comparison.a.source} ({comparison.a.architecture})\nB: {comparison.b.source} "
        f"({comparison.b.architecture})\n{comparison.images} images; {method.mode_reason}",
        file=out,
    )
    print(
        f"{s.concepts} concepts: {s.unchanged} unchanged, {s.changed} changed, {len(s.vanished)} "
        f"vanished, {len(s.appeared)} appeared",
        file=out,
    )
    if method.mode == "same_layers":
        print(
            f"{s.significant_changes} of {s.tests} neuron supports changed beyond same-model "
            f"noise (BH q <= {method.alpha})",
            file=out,
        )
        for layer in comparison.layers or []:
            print(
                f"  {layer.layer}: {layer.lost} memberships lost, {layer.gained} gained; "
                f"{layer.significant_down} supports down, {layer.significant_up} up",
                file=out,
            )
    moved = [c for c in comparison.concepts if c.status in {"changed", "vanished", "appeared"}]
    moved.sort(key=lambda c: (c.kept_share if c.kept_share is not None else 2.0, c.id))
    for concept in moved[:limit]:
        kept = "-" if concept.kept_share is None else f"{concept.kept_share:.2f}"
        print(
            f"  {concept.id:8s} {concept.status:9s} kept {kept:4s} lost {_neurons(concept, 'lost')} "
            f"gained {_neurons(concept, 'gained')}  {concept.label}",
            file=out,
        )
    if len(moved) > limit:
        print(f"  ... and {len(moved) - limit} more in comparison.json", file=out)


def gate_failures(comparison: Comparison, args: argparse.Namespace) -> list[str]:
    """What B breaks of the gate flags; an InputError for a gate that names no concept of A."""
    drops: list[CausalDrop] = args.fail_if_causal_drop
    return lost_failures(comparison, args.fail_if_lost, args.min_kept) + causal_failures(comparison, drops)
