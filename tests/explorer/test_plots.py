"""The explorer's plots as SVG text: well-formed whatever a label holds, standalone (no script, no
style attribute), and every mark at the numbers it was given."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from services.gateway.explorer import plots
from tests.explorer.synthetic import make_job

NS = {"s": "http://www.w3.org/2000/svg"}


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_job(tmp_path_factory.mktemp("plots") / "out", images=300, concepts=40, thumbs=False)


def _parse(svg: str) -> ET.Element:
    assert "<script" not in svg and " style=" not in svg
    return ET.fromstring(svg)


def test_share_axis_zooms_where_the_points_crowd_and_keeps_zero_to_one_otherwise() -> None:
    assert plots.share_range([0.978, 0.995]) == (0.97, 1.0, [0.97, 0.98, 0.99, 1.0])
    assert plots.share_range([0.2, 0.9]) == (0.0, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0])
    lo, hi, ticks = plots.share_range([0.0])
    assert lo == 0 and hi > 0 and len(ticks) >= 3


def test_pruning_marks_sit_at_the_curve_numbers(hierarchy: dict[str, Any]) -> None:
    pruning = hierarchy["uncertainty"]["pruning"]
    root = _parse(plots.pruning_svg(pruning, 0.05))
    for point in pruning["curve"]:
        q = f"{point['q_threshold']:g}"
        top = {e.get("data-series"): e for e in root.findall(f"./*[@data-q='{q}']")}
        assert float(top["significance"].get("data-value")) == pytest.approx(
            point["significance"]["top1_agreement"]
        )
        assert float(top["least-active"].get("data-value")) == pytest.approx(
            point["least_active"]["top1_agreement"]
        )
        spread = top["random-range"]
        assert float(spread.get("data-lower")) == pytest.approx(
            point["random"]["lower"]["top1_agreement"], abs=0.01
        )
        assert float(spread.get("data-upper")) == pytest.approx(
            point["random"]["upper"]["top1_agreement"], abs=0.01
        )
        for layer in point["layers"]:
            mark = root.find(
                f".//s:g[@data-layer='{layer['layer']}']/*[@data-series='significance'][@data-q='{q}']", NS
            )
            assert mark is not None
            assert float(mark.get("data-value")) == pytest.approx(layer["significance"]["top1_agreement"])
    assert pruning["verdict"]["sentence"] in root.find("s:desc", NS).text


def test_summary_counts_levels_memberships_and_tests_from_the_result(hierarchy: dict[str, Any]) -> None:
    root = _parse(plots.summary_svg(hierarchy))
    bars = root.findall(".//*[@data-bar='level']")
    assert [int(b.get("data-value")) for b in bars] == [lv["clusters"] for lv in hierarchy["levels"]]
    summary = hierarchy["uncertainty"]["summary"]
    parts = {
        b.get("data-part"): float(b.get("data-value")) for b in root.findall(".//*[@data-bar='specificity']")
    }
    assert parts["not_tested_budget"] == summary["specificity"]["not_tested_budget"]
    assert parts["not_tested_too_few_images"] == summary["specificity"]["not_tested_too_few_images"]
    # a test that never ran says why, from the plan
    importance = root.find(".//*[@data-bar='importance']")
    assert importance.get("data-part") == "not_run" and "--uncertainty-budget full" in importance.text
    frequent = root.find(".//*[@data-frequent]")
    assert int(frequent.get("data-frequent")) == summary["frequent_neurons"]


def test_a_label_cannot_break_out_of_the_svg() -> None:
    layers = [
        {
            "layer": 'l"1',
            "neurons": [{"channel": 3, "support": 0.75, "interval": [0.5, 0.9], "selective": True}],
        }
    ]
    root = _parse(plots.support_svg(layers, 0.5, '</svg><script>alert("x")</script> & <b>'))
    assert "<script>" in root.find("s:title", NS).text  # as text, not as an element
    dot = root.find(".//s:circle[@data-channel]", NS)
    assert dot.get("data-layer") == 'l"1' and float(dot.get("data-value")) == 0.75


def test_model_uncertainty_split_adds_up(tmp_path: Path) -> None:
    mu = {"images": 6, "total": 2.5, "expected_entropy": 2.3, "mutual_information": 0.2}
    root = _parse(
        plots.model_uncertainty_svg(
            mu, "sensitivity to feature dropout", 6.9, {"total": 2.0, "mutual_information": 0.1}
        )
    )
    parts = {e.get("data-part"): float(e.get("data-value")) for e in root.findall(".//*[@data-part]")}
    assert parts["expected_entropy"] + parts["mutual_information"] == pytest.approx(mu["total"])
    assert "sensitivity to feature dropout" in root.find("s:desc", NS).text
    epistemic = _parse(plots.model_uncertainty_svg(mu, "epistemic", None, None))
    assert "epistemic" in epistemic.find("s:desc", NS).text
