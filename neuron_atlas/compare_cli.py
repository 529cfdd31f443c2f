"""`neuron-atlas compare A_OUT B_OUT --out DIR`: what changed between two models run on the same
images (docs/comparison.md). Writes DIR/comparison.json, prints a short summary on stdout, and,
with --fail-if-lost / --fail-if-causal-drop, exits 1 when the candidate B breaks a condition
(a CI gate); 2 when the two results cannot be compared or a flag is wrong."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from neuron_atlas.comparison_gate import CausalDrop, causal_failures, lost_failures, parse_causal_drop
from neuron_atlas.option_flags import user_path
from shared.contracts.comparison import Comparison, ConceptComparison
from shared.errors import InputError

GATE_FAILED = 1
COMPARISON_FILE = "comparison.json"


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a level between 0 and 1")
    return value


def _causal_drop(text: str) -> CausalDrop:
    try:
        return parse_causal_drop(text)
    except InputError as exc:  # argparse's own message and exit status 2
        raise argparse.ArgumentTypeError(f"{exc.problem} {exc.fix}") from None


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare two results over the same images (A the reference, B the candidate): "
        "per concept, the neurons gained and lost, tested against same-model noise",
        description="Compare two finished results over the same images. Exit status: 0 done "
        "(every gate passed), 1 a gate failed, 2 the results cannot be compared or a flag is wrong.",
    )
    compare.add_argument("a_out", type=user_path, metavar="A_OUT", help="the reference result folder")
    compare.add_argument("b_out", type=user_path, metavar="B_OUT", help="the candidate result folder")
    compare.add_argument(
        "--out", type=user_path, required=True, metavar="DIR", help=f"folder for {COMPARISON_FILE}"
    )
    compare.add_argument("--alpha", type=_alpha, metavar="A", help="test level (default: A's alpha)")
    compare.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary")
    add_gate_flags(compare)


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


def run_compare(args: argparse.Namespace, version: str) -> int:
    from services.uncertainty.comparison import compare_results
    from shared.artifacts import write_model
    from shared.storage import LocalStore

    for path in (args.a_out, args.b_out):
        if not path.is_dir():
            raise InputError(f"{path} is not a folder.", "Pass the OUT_DIR of two finished runs.")
    comparison = compare_results(
        LocalStore(args.a_out),
        LocalStore(args.b_out),
        (str(args.a_out), str(args.b_out)),
        alpha=args.alpha,
        generator=f"neuron-atlas {version}",
    )
    failures = gate_failures(comparison, args)
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder.", "Choose another --out.")
    write_model(LocalStore(out_dir), COMPARISON_FILE, comparison)
    if not getattr(args, "quiet", False):
        print_summary(comparison, sys.stdout)
        print(f"result: {out_dir / COMPARISON_FILE}", file=sys.stderr)
    for failure in failures:
        print(f"neuron-atlas: gate failed: {failure}", file=sys.stderr)
    return GATE_FAILED if failures else 0
