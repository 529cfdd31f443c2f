"""Calibration and power of the comparison's paired tests (docs/comparison.md).

The null is "same model behaviour". Here it is two stochastic passes of one checkpoint: every
image has a latent activity per channel (its concept's planted detectors, plus the image's own
variation), and each pass adds its own noise before the pipeline's rule (the top `top_fraction`
per image) makes the active sets. Models A and B are two such passes, so on every image their
activities are exchangeable. Per concept the product's own family is tested
(`PairedActivity.family`: mean support over both models >= min_support / 2), with the groups the
product's rule picks (support >= min_support), so the null is built by the same selection.

Power: in B, the planted detectors of one concept lose a share of their signal (`--drop`); a
detection is that concept's detector pair at p <= alpha.

A false-positive rate passes when it is within 2 SE of alpha (SE over the repetitions, since the
pairs of one repetition share their images).

    python benchmarks/comparison_calibration.py                 # the table in docs/comparison.md
    python benchmarks/comparison_calibration.py --repeats 40    # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.uncertainty.paired_tests import PairedActivity
from services.uncertainty.stats import benjamini_hochberg

ALPHA = 0.05
CHANNELS = 64
DETECTORS = 3  # per concept
TOP_FRACTION = 0.125
MIN_SUPPORT = 0.5
TESTS = ("support", "support_testable", "selectivity")


@dataclass(frozen=True)
class Setting:
    concepts: int = 8
    per_concept: int = 30
    pass_noise: float = 1.0  # the passes' own noise, against the image's variation of 1
    signal: float = 2.0  # the planted detectors' lift on their concept's images
    drop: float = 0.0  # share of one concept's detector signal B loses (0: the null)


def _active(values: np.ndarray, top_fraction: float = TOP_FRACTION) -> np.ndarray:
    k = max(1, round(top_fraction * values.shape[1]))
    threshold = np.sort(values, axis=1)[:, -k][:, None]
    return values >= threshold


def one_repeat(setting: Setting, rng: np.random.Generator) -> dict[str, list[float]]:
    """One pair of passes; the p-values of every null pair and of the changed concept's detectors."""
    n = setting.concepts * setting.per_concept
    concept_of = np.repeat(np.arange(setting.concepts), setting.per_concept)
    lift = np.zeros((setting.concepts, CHANNELS))
    for c in range(setting.concepts):
        lift[c, DETECTORS * c : DETECTORS * (c + 1)] = setting.signal
    latent = lift[concept_of] + rng.standard_normal((n, CHANNELS))
    lift_b = lift.copy()
    lift_b[0, :DETECTORS] *= 1 - setting.drop  # concept 0's detectors weaken in B
    pass_a = latent + setting.pass_noise * rng.standard_normal((n, CHANNELS))
    pass_b = latent + (lift_b - lift)[concept_of] + setting.pass_noise * rng.standard_normal((n, CHANNELS))
    activity = PairedActivity(_active(pass_a), _active(pass_b))
    out: dict[str, list[float]] = {"support": [], "support_testable": [], "selectivity": [], "changed": []}
    for c in range(setting.concepts):
        rows = np.flatnonzero(concept_of == c)
        neurons = activity.family(rows, MIN_SUPPORT)
        if neurons.size == 0:
            continue
        tests = activity.test(rows, neurons)
        changed = (c == 0) & (neurons < DETECTORS) if setting.drop else np.zeros(neurons.size, dtype=bool)
        out["support"].extend(tests.support_p[~changed].tolist())
        # pairs whose discordant images can reach alpha at all (0.5 ** m <= alpha); m does not
        # change when an image's activities are swapped, so the null holds given it
        testable = ~changed & (0.5 ** (tests.a_only + tests.b_only) <= ALPHA)
        out["support_testable"].extend(tests.support_p[testable].tolist())
        assert tests.selectivity_p is not None
        out["selectivity"].extend(tests.selectivity_p[~changed].tolist())
        out["changed"].extend(tests.support_p[changed].tolist())
    # the comparison's decision: BH over the whole family; under the null every discovery is false
    q = benjamini_hochberg(np.array(out["support"])) if out["support"] else np.ones(1)
    out["any_discovery"] = [0.0 if bool(np.any(q <= ALPHA)) else 1.0]  # as a p-value: 0 = found one
    return out


def rate(p_values_per_repeat: list[list[float]], alpha: float = ALPHA) -> dict[str, float]:
    """Share of p-values <= alpha, and its SE over the repetitions (each repetition's share)."""
    shares = np.array([np.mean(np.array(p) <= alpha) for p in p_values_per_repeat if p])
    tests = sum(len(p) for p in p_values_per_repeat)
    pooled = sum(int(np.sum(np.array(p) <= alpha)) for p in p_values_per_repeat) / max(tests, 1)
    se = float(shares.std(ddof=1) / math.sqrt(shares.shape[0])) if shares.shape[0] > 1 else float("nan")
    return {"rate": pooled, "se": se, "tests": float(tests), "repeats": float(shares.shape[0])}


def verdict_of(cell: dict[str, float]) -> str:
    """ok: within 2 SE of alpha; conservative: below that (valid, but loses power); OFF: above."""
    if abs(cell["rate"] - ALPHA) <= 2 * cell["se"]:
        return "ok"
    return "conservative" if cell["rate"] < ALPHA else "OFF"


def run(setting: Setting, repeats: int, seed: int = 0) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    runs = [one_repeat(setting, rng) for _ in range(repeats)]
    table = {name: rate([r[name] for r in runs]) for name in TESTS}
    # share of repetitions with any BH discovery among the null pairs (the family-wise error rate)
    table["any_discovery"] = rate([r["any_discovery"] for r in runs])
    if setting.drop:
        table["power"] = rate([r["changed"] for r in runs])
    return table


NULLS = {
    "noisy passes (pass noise 1.0)": Setting(pass_noise=1.0),
    "quiet passes (pass noise 0.3)": Setting(pass_noise=0.3),
    "small concepts (12 images)": Setting(per_concept=12),
}
POWER = {f"B loses {int(d * 100)}% of a detector's signal": Setting(drop=d) for d in (0.25, 0.5, 1.0)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    table: dict[str, Any] = {"alpha": ALPHA, "repeats": args.repeats, "nulls": {}, "power": {}}
    for name, setting in NULLS.items():
        table["nulls"][name] = result = run(setting, args.repeats)
        for test in TESTS:
            cell = result[test]
            verdict = verdict_of(cell)
            print(f"null  {name:30s} {test:16s} FPR {cell['rate']:.4f} ± {cell['se']:.4f}  {verdict}")
        family = result["any_discovery"]
        print(f"null  {name:30s} {'BH, any':16s} FWER {family['rate']:.4f} (repeats with any discovery)")
    for name, setting in POWER.items():
        table["power"][name] = result = run(setting, args.repeats)
        print(f"power {name:30s} {'support':16s} {result['power']['rate']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
