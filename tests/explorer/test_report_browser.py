"""The static report in a real browser: `neuron-atlas run` (embedded), then `neuron-atlas report`,
opened from disk (file://) with no server. A synthetic job with more images than a grid page
checks the paging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.explorer.browser import (
    SCREENSHOTS,
    chromium,
    console_errors,
    region_is_picture,
    screenshot,
    thumbs_loaded,
    wait_for,
    wait_rendered,
)
from tests.explorer.synthetic import make_job

CLI = str(Path(sys.executable).with_name("neuron-atlas"))
FAST = [
    "--allow-random-weights",
    "--layers",
    "layer3,layer4",
    "--bootstrap-resamples",
    "20",
    "--mc-samples",
    "2",
    "--tta-samples",
    "1",
    "--pruning-thresholds",
    "0.05",
    "--ablation-random-sets",
    "2",
    "--ablation-max-images",
    "2",
    "--pruning-random-sets",
    "1",
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def embedded(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("explorer") / "out"
    _cli("-q", "run", str(sample_dir), "--out", str(out), *FAST)
    url = _cli("report", str(out)).stdout.strip()
    return {"out": out, "url": url, "hierarchy": json.loads((out / "hierarchy.json").read_text())}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _open(driver: Any, url: str, page: str) -> None:
    driver.get(url)
    wait_rendered(driver, page)


def test_embedded_run_writes_a_thumbnail_per_image(embedded: dict[str, Any]) -> None:
    for image in embedded["hierarchy"]["images"]:
        thumb = Image.open(embedded["out"] / "thumbs" / f"{image['id']}.webp")
        assert thumb.format == "WEBP" and max(thumb.size) <= 160


def test_report_opens_from_disk_and_walks_tree_concept_neuron_and_back(
    embedded: dict[str, Any], browser: Any
) -> None:
    url, hierarchy = embedded["url"], embedded["hierarchy"]
    assert url.startswith("file://") and url.endswith("/explorer/index.html")
    _open(browser, url, "jobs")
    screenshot(browser, "report-jobs")
    browser.find_element("link text", "Explore").click()
    wait_rendered(browser, "tree")
    top = [c for c in hierarchy["clusters"] if c["parent"] is None]
    rows = browser.find_elements("css selector", "ul.tree > li[data-concept]")
    assert [r.get_attribute("data-concept") for r in rows] == [c["id"] for c in top]
    # fold open a branch with the keyboard, down to level 1
    toggle = rows[0].find_element("css selector", "button.toggle")
    toggle.send_keys("\n")
    wait_for(browser, "document.querySelector('ul.tree > li [role=group] li[data-concept]')")
    assert toggle.get_attribute("aria-expanded") == "true"
    tree = screenshot(browser, "report-tree")
    assert "label quality" in browser.find_element("id", "main").text
    assert tree is not None

    first_child = top[0]["children"][0]
    browser.find_element("css selector", f'li[data-concept="{first_child}"] > .row > a').click()
    wait_rendered(browser, "concept")
    cluster = next(c for c in hierarchy["clusters"] if c["id"] == first_child)
    assert browser.find_element("tag name", "h1").text == cluster["label"]
    assert len(browser.find_elements("css selector", ".grid .thumb")) == cluster["size"]
    assert thumbs_loaded(browser) == cluster["size"]
    concept_shot = screenshot(browser, "report-concept")
    browser.execute_script("document.getElementById('images').scrollIntoView()")
    grid_shot = screenshot(browser, "report-concept-grid")
    assert region_is_picture(grid_shot, browser, ".grid .thumb img")
    assert concept_shot is not None
    # a thumbnail's caption shows on keyboard focus, and the image has alt text
    figure = browser.find_element("css selector", ".grid .thumb")
    caption = figure.find_element("tag name", "figcaption")
    assert not caption.is_displayed()
    browser.execute_script("arguments[0].focus()", figure)
    wait_for(
        browser, "getComputedStyle(document.querySelector('.grid .thumb figcaption')).opacity === '1'", 5
    )
    image = next(i for i in hierarchy["images"] if i["id"] == figure.get_attribute("data-image"))
    assert image["caption"] in caption.text
    assert image["caption"] in figure.find_element("tag name", "img").get_attribute("alt")

    neuron = cluster["neurons"][0]
    browser.find_element("css selector", f'a[href$="/neuron/{neuron["layer"]}/{neuron["channel"]}"]').click()
    wait_rendered(browser, "neuron")
    text = browser.find_element("id", "main").text
    assert f"Neuron {neuron['layer']} / channel {neuron['channel']}" in text and cluster["label"] in text
    assert thumbs_loaded(browser) == min(24, len(hierarchy["images"]))
    screenshot(browser, "report-neuron")

    browser.back()
    wait_rendered(browser, "concept")
    assert browser.find_element("tag name", "h1").text == cluster["label"]
    browser.find_element("css selector", "#crumbs a[href$='/job/report']").click()
    wait_rendered(browser, "tree")
    assert console_errors(browser) == []


def test_report_compares_two_siblings(embedded: dict[str, Any], browser: Any) -> None:
    hierarchy = embedded["hierarchy"]
    parent = next(c for c in hierarchy["clusters"] if len(c["children"]) >= 2)
    a, b = (next(c for c in hierarchy["clusters"] if c["id"] == i) for i in parent["children"][:2])
    _open(browser, embedded["url"] + f"#/job/report/concept/{a['id']}", "concept")
    browser.find_element("css selector", f'a[href$="/compare/{a["id"]}/{b["id"]}"]').click()
    wait_rendered(browser, "compare")
    keys = lambda c: {f"{n['layer']}/{n['channel']}" for n in c["neurons"]}  # noqa: E731
    text = browser.find_element("id", "main").text
    assert f"Shared neurons ({len(keys(a) & keys(b))})" in text
    assert f"Only in this concept's group ({len(keys(a) - keys(b))})" in text
    screenshot(browser, "report-compare")
    assert console_errors(browser) == []


def test_search_finds_a_label(embedded: dict[str, Any], browser: Any) -> None:
    hierarchy = embedded["hierarchy"]
    target = hierarchy["clusters"][0]
    word = max(target["label"].split(), key=len)
    _open(browser, embedded["url"] + "#/job/report", "tree")
    box = browser.find_element("id", "search")
    box.send_keys(word, "\n")
    wait_for(browser, "document.querySelector('#results ol')")
    found = [a.text for a in browser.find_elements("css selector", "#results ol > li > a")]
    assert target["label"] in found
    assert all(word.lower() in label.lower() for label in found)
    screenshot(browser, "report-search")
    assert console_errors(browser) == []


def _tab_to(driver: Any, css: str, limit: int = 300, back: bool = False) -> None:
    """Press Tab (Shift+Tab with `back`) until the focused element matches `css` (bounded)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(limit):
        if driver.execute_script("return document.activeElement.matches(arguments[0])", css):
            return
        keys = ActionChains(driver)
        (
            keys.key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT)
            if back
            else keys.send_keys(Keys.TAB)
        ).perform()
    raise AssertionError(f"Tab never reached {css}")


def test_keyboard_alone_reaches_a_concept_a_neuron_and_the_tree(
    embedded: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    enter = lambda: ActionChains(browser).send_keys(Keys.ENTER).perform()  # noqa: E731
    hierarchy = embedded["hierarchy"]
    top = next(c for c in hierarchy["clusters"] if c["parent"] is None and c["children"])
    _open(browser, embedded["url"] + "#/job/report", "tree")
    _tab_to(browser, f'li[data-concept="{top["id"]}"] button.toggle')
    enter()
    child = top["children"][0]
    wait_for(browser, f"document.querySelector('li[data-concept=\"{child}\"]')")
    _tab_to(browser, f'li[data-concept="{child}"] > .row > a')
    enter()
    wait_rendered(browser, "concept")
    # the new page's heading has the focus, so the next Tabs walk this page
    assert browser.execute_script("return document.activeElement.tagName") == "H1"
    _tab_to(browser, ".strip a")
    enter()
    wait_rendered(browser, "neuron")
    _tab_to(browser, ".grid .thumb")
    wait_for(
        browser, "getComputedStyle(document.activeElement.querySelector('figcaption')).opacity === '1'", 5
    )
    _tab_to(browser, "#crumbs a[href$='/job/report']", back=True)
    enter()
    wait_rendered(browser, "tree")
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("synthetic") / "out"
    hierarchy = make_job(out, images=400, concepts=40)
    url = _cli("report", str(out)).stdout.strip()
    return {"url": url, "hierarchy": hierarchy}


def test_grid_pages_through_every_image_of_a_large_concept(
    synthetic_report: dict[str, Any], browser: Any
) -> None:
    top = max(synthetic_report["hierarchy"]["clusters"], key=lambda c: c["size"])
    assert top["size"] > 2 * 48
    _open(browser, synthetic_report["url"] + f"#/job/report/concept/{top['id']}", "concept")
    seen: list[str] = []
    for page in range(100):
        shown = [f.get_attribute("data-image") for f in browser.find_elements("css selector", ".grid .thumb")]
        assert 0 < len(shown) <= 48
        seen.extend(shown)
        if page == 0:
            screenshot(browser, "report-concept-large")
        nxt = browser.find_elements("css selector", ".pager a[rel=next][href]")
        if not nxt:
            break
        nxt[0].click()
        wait_for(
            browser,
            f"document.body.dataset.rendered === 'concept' && location.hash.endsWith('/page/{page + 2}')",
        )
    assert seen == top["images"]
    assert console_errors(browser) == []


@pytest.mark.skipif(
    not os.environ.get("EXPLORER_DOCS_SCREENSHOT"), reason="set to refresh the README picture"
)
def test_refresh_the_readme_screenshot(embedded: dict[str, Any], browser: Any) -> None:
    """EXPLORER_DOCS_SCREENSHOT=docs/explorer.png: the concept page that the README shows."""
    clusters = embedded["hierarchy"]["clusters"]
    concept = max(clusters, key=lambda c: (c["level"] == 1, len(c["difference_neurons"])))
    browser.set_window_size(1000, 1400)
    try:
        _open(browser, embedded["url"] + f"#/job/report/concept/{concept['id']}", "concept")
        thumbs_loaded(browser)
        # one thumbnail focused, so its caption shows
        browser.execute_script("document.querySelector('.grid .thumb').focus({preventScroll: true})")
        screenshot(browser, "readme")
    finally:
        browser.set_window_size(1280, 900)
    shutil.copyfile(SCREENSHOTS / "readme.png", os.environ["EXPLORER_DOCS_SCREENSHOT"])
