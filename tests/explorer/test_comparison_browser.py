"""The comparison view that `neuron-atlas compare A_OUT B_OUT --out DIR` writes (DIR/explorer/),
opened from disk in headless Chromium: the planted ResNet18 against its copy with the sand
detectors (conv1 channels 0-2) zeroed (tests/comparison_runs.py). The tree marks the changed
concepts, the filter keeps only them, and the sand concept's page marks the lost detectors in
A's group and the gained neurons in B's, in words as well as colour."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas.cli import main as cli_main
from tests.comparison_runs import SAND, PlantedRuns
from tests.explorer.browser import SCREENSHOTS, chromium, console_errors, screenshot, wait_for, wait_rendered

pytestmark = pytest.mark.slow
SAND_CONCEPT = "L2-0"  # blue circles on sand


@pytest.fixture(scope="module")
def compared(planted_runs: PlantedRuns, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("compared") / "v2"
    assert (
        cli_main(["-q", "compare", str(planted_runs.original), str(planted_runs.zeroed), "--out", str(out)])
        == 0
    )
    document = json.loads((out / "comparison.json").read_text())
    hierarchy = json.loads((planted_runs.original / "hierarchy.json").read_text())
    return {
        "url": (out / "explorer" / "index.html").resolve().as_uri(),
        "document": document,
        "hierarchy": hierarchy,
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _concept(document: dict[str, Any], concept: str) -> dict[str, Any]:
    return next(c for c in document["concepts"] if c["id"] == concept)


def test_the_tree_marks_each_concept_and_filters_to_the_changed_ones(
    compared: dict[str, Any], browser: Any
) -> None:
    document = compared["document"]
    browser.get(compared["url"])
    wait_rendered(browser, "comparison")
    rows = browser.find_elements("css selector", "ul.tree > li[data-concept]")
    roots = {c["id"] for c in compared["hierarchy"]["clusters"] if c["parent"] is None}
    top = {c["id"]: c for c in document["concepts"] if c["id"] in roots}
    assert {r.get_attribute("data-concept") for r in rows} == set(top)
    changed_top = next(cid for cid, c in top.items() if c["status"] == "changed")
    row = browser.find_element("css selector", f'ul.tree > li[data-concept="{changed_top}"] > .row')
    assert "changed" in row.find_element("css selector", ".marker").text  # words, not colour alone
    screenshot(browser, "comparison-overview")
    browser.find_element("id", "changed-only").click()
    wait_for(browser, "document.querySelector('.changed-list li')")
    listed = [
        e.get_attribute("data-concept") for e in browser.find_elements("css selector", ".changed-list > li")
    ]
    assert set(listed) == {
        c["id"] for c in document["concepts"] if c["status"] in {"changed", "vanished", "appeared"}
    }
    assert SAND_CONCEPT in listed
    assert console_errors(browser) == []


def test_a_changed_concept_marks_its_lost_and_gained_neurons(compared: dict[str, Any], browser: Any) -> None:
    document = compared["document"]
    concept = _concept(document, SAND_CONCEPT)
    browser.get(compared["url"])
    wait_rendered(browser, "comparison")
    browser.find_element("id", "changed-only").click()
    wait_for(browser, f"document.querySelector('.changed-list li[data-concept=\"{SAND_CONCEPT}\"] a')")
    browser.find_element("css selector", f'.changed-list li[data-concept="{SAND_CONCEPT}"] a').click()
    wait_rendered(browser, "comparison-concept")
    assert browser.find_element("tag name", "h1").text == concept["label"]
    assert "changed" in browser.find_element("css selector", ".chips-row .marker").text

    def cells(css: str) -> list[tuple[int, str]]:
        return [
            (int(e.get_attribute("data-channel")), e.text)
            for e in browser.find_elements("css selector", f".cmp-layer {css}")
        ]

    lost, gained = cells(".cmp-strip .lost"), cells(".cmp-strip .gained")
    assert [ch for ch, _ in lost] == SAND == [n["channel"] for n in concept["lost"]]
    assert [ch for ch, _ in gained] == [n["channel"] for n in concept["gained"]]
    assert all("lost" in text for _, text in lost) and all("gained" in text for _, text in gained)
    # lost cells sit in A's column, gained ones in B's
    columns = browser.find_elements("css selector", ".cmp-layer .compare > section")
    assert len(columns) == 2
    assert not columns[0].find_elements("css selector", ".gained")
    assert not columns[1].find_elements("css selector", ".lost")
    kept = browser.find_element("css selector", '[data-fact="jaccard"]').text
    assert kept == f"{concept['jaccard']:.2f}"
    text = browser.find_element("id", "main").text
    assert "Null" in text and "same model" in text.lower()
    shot = screenshot(browser, "comparison-concept")
    assert shot.width >= 1000
    assert console_errors(browser) == []


@pytest.mark.skipif(not os.environ.get("EXPLORER_DOCS_SCREENSHOT"), reason="set to refresh the docs pictures")
def test_refresh_the_comparison_screenshot(compared: dict[str, Any], browser: Any) -> None:
    """EXPLORER_DOCS_SCREENSHOT=docs/explorer.png: explorer-comparison.png beside it, the sand
    concept's page with its lost and gained neurons."""
    target = Path(os.environ["EXPLORER_DOCS_SCREENSHOT"])
    browser.set_window_size(1000, 1300)
    try:
        browser.get(compared["url"] + f"#/comparison/report/concept/{SAND_CONCEPT}")
        wait_rendered(browser, "comparison-concept")
        screenshot(browser, "docs-comparison")
        shutil.copyfile(SCREENSHOTS / "docs-comparison.png", target.with_name("explorer-comparison.png"))
    finally:
        browser.set_window_size(1280, 900)
