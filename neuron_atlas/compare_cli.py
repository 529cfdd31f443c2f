"""`neuron-atlas compare A_OUT B_OUT --out DIR`: what changed between two models run on the same
images (docs/comparison.md). Writes DIR/comparison.json and the explorer's comparison view,
DIR/explorer/index.html (docs/explorer.md), prints a short summary on stdout, and,
with --fail-if-lost / --fail-if-causal-drop, exits 1 when the candidate B breaks a condition
(a CI gate); 2 when the two results cannot be compared or a flag is wrong."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuron_atlas_client.comparison_gate import add_gate_flags, alpha_level, gate_failures, print_summary
from neuron_atlas_client.errors import InputError
from neuron_atlas_client.option_flags import user_path

GATE_FAILED = 1
COMPARISON_FILE = "comparison.json"


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
        "--out",
        type=user_path,
        required=True,
        metavar="DIR",
        help=f"folder for {COMPARISON_FILE} and explorer/ (its web pages)",
    )
    compare.add_argument("--alpha", type=alpha_level, metavar="A", help="test level (default: A's alpha)")
    compare.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary")
    add_gate_flags(compare)


def run_compare(args: argparse.Namespace, version: str) -> int:
    # torch, numpy, scipy: `neuron-atlas --help` imports this module and must not load them
    from services.gateway.explorer.comparison_report import load_comparison_view, write_comparison_report
    from services.uncertainty.comparison import compare_results
    from shared.storage.artifacts import write_model
    from shared.storage.stores import LocalStore

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
    # the view reads the document as written, as the gateway does
    document = json.loads((out_dir / COMPARISON_FILE).read_text(encoding="utf-8"))
    view = load_comparison_view(document, args.a_out, args.b_out, title=out_dir.resolve().name)
    index = write_comparison_report(out_dir, view)
    if not getattr(args, "quiet", False):
        print_summary(comparison, sys.stdout)
        print(f"result: {out_dir / COMPARISON_FILE}", file=sys.stderr)
        print(f"explorer: {index.resolve().as_uri()}", file=sys.stderr)
    for failure in failures:
        print(f"neuron-atlas: gate failed: {failure}", file=sys.stderr)
    return GATE_FAILED if failures else 0
