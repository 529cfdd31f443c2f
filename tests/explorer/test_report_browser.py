"""The static report in a real browser: `neuron-atlas run` (embedded), then `neuron-atlas report`,
opened from disk (file://) with no server. A synthetic job with more images than a grid page
checks the paging."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from shared.storage.thumbnails import thumbnail_ids
from tests.explorer.browser import (
    SCREENSHOTS,
    chromium,
    console_errors,
    region_is_picture,
    screenshot,
    thumbs_loaded,
    typical_loaded,
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
    """One pack per shard in thumbs/, unpacked by `report` beside its pages."""
    images = {image["id"] for image in embedded["hierarchy"]["images"]}
    assert thumbnail_ids(embedded["out"] / "thumbs") == images
    assert all(p.suffix == ".zip" for p in (embedded["out"] / "thumbs").iterdir())
    for image_id in images:
        thumb = Image.open(embedded["out"] / "explorer" / "thumbs" / f"{image_id}.webp")
        assert thumb.format == "WEBP" and max(thumb.size) <= 160


def _typical(out: Path, hierarchy: dict[str, Any], cluster: dict[str, Any]) -> list[str]:
    """The concept's five images nearest its caption-embedding centroid, from embeddings.npy."""
    embeddings = np.load(out / "embeddings.npy")
    row = {image["id"]: i for i, image in enumerate(hierarchy["images"])}
    vectors = embeddings[[row[i] for i in cluster["images"]]]
    order = np.argsort(-(vectors @ vectors.mean(axis=0)), kind="stable")[:5]
    return [cluster["images"][j] for j in order]


def test_report_opens_on_the_overview_with_typical_thumbnails(embedded: dict[str, Any], browser: Any) -> None:
    """A report holds one result: its first page is that result, each concept with its most
    typical images (nearest its caption centroid), its size and its evidence badge."""
    out, hierarchy = embedded["out"], embedded["hierarchy"]
    _open(browser, embedded["url"], "overview")
    assert browser.find_element("tag name", "h1").text == f"Result: {out.name}"
    assert not browser.find_elements("css selector", "table.jobs")  # no one-row jobs table
    top = [c for c in hierarchy["clusters"] if c["parent"] is None]
    rows = browser.find_elements("css selector", "ul.tree > li[data-concept]")
    assert [r.get_attribute("data-concept") for r in rows] == [c["id"] for c in top]
    typical_loaded(browser)
    captions = {image["id"]: image["caption"] for image in hierarchy["images"]}
    for row, cluster in zip(rows, top, strict=True):
        imgs = row.find_elements("css selector", ":scope > .row .typical img")
        expected = _typical(out, hierarchy, cluster)
        assert [i.get_attribute("data-thumb") for i in imgs] == expected
        assert [i.get_attribute("alt") for i in imgs] == [captions[i] for i in expected]  # alt text
        text = row.find_element("css selector", ":scope > .row").text
        assert cluster["label"] in text and f"{cluster['size']} images" in text
        state = cluster["uncertainty"]["specificity"]
        words = (
            ("specific" if state["result"]["significant"] else "not specific")
            if state["status"] == "tested"
            else state["note"]
        )
        assert row.find_element("css selector", ":scope > .row .chip").text == words
    shot = screenshot(browser, "report-overview")
    assert region_is_picture(shot, browser, ".typical img")
    assert console_errors(browser) == []


def _svg_values(driver: Any, plot: str, selector: str, attribute: str = "data-value") -> list[float]:
    return [
        float(v)
        for v in driver.execute_script(
            f"return [...document.querySelectorAll('svg[data-plot=\"{plot}\"] {selector}')]"
            f".map(e => e.getAttribute('{attribute}'))"
        )
    ]


def test_overview_plots_show_the_numbers_of_the_run(embedded: dict[str, Any], browser: Any) -> None:
    hierarchy = embedded["hierarchy"]
    job = hierarchy["uncertainty"]
    _open(browser, embedded["url"], "overview")
    summary = job["summary"]
    assert _svg_values(browser, "summary", "[data-bar=level]") == [
        lv["clusters"] for lv in hierarchy["levels"]
    ]
    selective = _svg_values(browser, "summary", "[data-bar=selectivity][data-part=selective]")
    assert selective == [pytest.approx(summary["selective_share"], abs=1e-6)]
    for test in ("specificity", "difference"):
        counts = summary[test]
        shown = browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll("
            f"'svg[data-plot=summary] [data-bar={test}]')].map(e => [e.dataset.part, +e.dataset.value]))"
        )
        expected = {
            "significant": counts["significant"],
            "not_significant": counts["tested"] - counts["significant"],
            "not_tested_budget": counts["not_tested_budget"],
            "not_tested_too_few_images": counts["not_tested_too_few_images"],
        }
        assert shown == {k: v for k, v in expected.items() if v}, test
    # the pruning curve: each threshold's significance pruning, its random interval and the
    # least-active baseline at the numbers of hierarchy.json, drawn where the axis puts them
    pruning = job["pruning"]
    measure = pruning["verdict"]["measure"]
    point = pruning["at_alpha"]
    found = browser.execute_script(
        "const g = document.querySelector('svg[data-plot=pruning]');"
        "const pick = s => g.querySelector(`:scope > [data-series=${s}][data-q='${arguments[0]}']`);"
        "return ['significance', 'least-active', 'random', 'random-range'].map(s => {"
        " const e = pick(s); return e && {value: e.dataset.value, lower: e.dataset.lower,"
        " upper: e.dataset.upper, cy: e.getAttribute('cy')}; });",
        f"{point['q_threshold']:g}",
    )
    significance, least, random, spread = found
    assert float(significance["value"]) == pytest.approx(point["significance"][measure], abs=1e-5)
    assert float(least["value"]) == pytest.approx(point["least_active"][measure], abs=1e-5)
    assert float(random["value"]) == pytest.approx(point["random"]["mean"][measure], abs=1e-5)
    assert float(spread["lower"]) == pytest.approx(point["random"]["lower"][measure], abs=1e-2)
    assert float(spread["upper"]) == pytest.approx(point["random"]["upper"][measure], abs=1e-2)
    # y runs from 250 (0%) to 36 (100%) in the main panel
    assert float(significance["cy"]) == pytest.approx(250 - 214 * point["significance"][measure], abs=0.02)
    layers = browser.execute_script(
        "return [...document.querySelectorAll('svg[data-plot=pruning] g[data-layer]')]"
        ".map(g => g.dataset.layer)"
    )
    assert layers == [layer["layer"] for layer in point["layers"]]
    assert pruning["verdict"]["sentence"] in browser.find_element("id", "main").text
    stability = browser.find_element("css selector", "[data-fact=stability]").text
    assert f"mean group stability {summary['mean_group_stability']:.2f}" in stability
    assert f"mean clustering stability {summary['mean_clustering_stability']:.2f}" in stability
    # what ran, from the plan
    plan_rows = browser.find_elements("css selector", "table.plan tbody tr")
    assert [r.find_element("tag name", "th").text for r in plan_rows] == [
        s["name"] for s in job["plan"]["steps"]
    ]
    shot = screenshot(browser, "report-overview-plots")
    browser.execute_script("document.getElementById('pruning').scrollIntoView()")
    assert shot is not None
    screenshot(browser, "report-overview-pruning")
    assert console_errors(browser) == []


def test_concept_page_plots_each_neurons_support_and_the_uncertainty_split(
    embedded: dict[str, Any], browser: Any
) -> None:
    hierarchy = embedded["hierarchy"]
    cluster = max(
        (c for c in hierarchy["clusters"] if c["uncertainty"]["model_uncertainty"]),
        key=lambda c: len(c["neurons"]),
    )
    _open(browser, embedded["url"] + f"#/job/report/concept/{cluster['id']}", "concept")
    dots = browser.execute_script(
        "return [...document.querySelectorAll('svg[data-plot=support] circle[data-channel]')].map(e =>"
        " [e.dataset.layer, +e.dataset.channel, +e.dataset.value, +e.dataset.lower, +e.dataset.upper,"
        " +e.getAttribute('cy'), e.closest('a').getAttribute('href')])"
    )
    assert len(dots) == len(cluster["neurons"])
    by_key = {(n["layer"], n["channel"]): n for n in cluster["neurons"]}
    for layer, channel, value, lower, upper, cy, href in dots:
        neuron = by_key[(layer, channel)]
        assert value == pytest.approx(neuron["support"], abs=1e-5)
        assert [lower, upper] == pytest.approx(neuron["evidence"]["interval"], abs=1e-3)
        assert cy == pytest.approx(160 - 146 * neuron["support"], abs=0.02)  # y: 160 (0) to 14 (1)
        assert href.endswith(f"/neuron/{layer}/{channel}")
    mu = cluster["uncertainty"]["model_uncertainty"]
    parts = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll("
        "'svg[data-plot=model-uncertainty] [data-part]')].map(e => [e.dataset.part, +e.dataset.value]))"
    )
    assert parts["expected_entropy"] == pytest.approx(mu["expected_entropy"], abs=1e-5)
    assert parts["mutual_information"] == pytest.approx(mu["mutual_information"], abs=1e-5)
    text = browser.find_element("id", "main").text
    interpretation = hierarchy["uncertainty"]["method"]["model_uncertainty"]["interpretation"]
    assert ("sensitivity to feature dropout" in text) == (interpretation != "epistemic")
    assert "lacks knowledge" not in text
    for test in hierarchy["uncertainty"]["method"]["tests"]:
        if test["name"] in ("specificity", "keep_only", "difference", "importance"):
            assert test["null"] in text  # each test's null where its result is read
    state = cluster["uncertainty"]["specificity"]
    if state["status"] != "tested":
        assert state["note"] in text
    screenshot(browser, "report-concept-evidence")
    assert console_errors(browser) == []


def test_neuron_page_lists_the_concepts_hierarchy_json_says(embedded: dict[str, Any], browser: Any) -> None:
    hierarchy = embedded["hierarchy"]
    holders: dict[tuple[str, int], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for cluster in hierarchy["clusters"]:
        for neuron in cluster["neurons"]:
            holders.setdefault((neuron["layer"], neuron["channel"]), []).append((cluster, neuron))
    (layer, channel), held = max(
        holders.items(), key=lambda kv: (len({c["level"] for c, _ in kv[1]}), len(kv[1]))
    )
    _open(browser, embedded["url"] + f"#/job/report/neuron/{layer}/{channel}", "neuron")
    rows = browser.find_elements("css selector", "table.neuron-concepts tbody tr")
    assert {r.get_attribute("data-concept") for r in rows} == {c["id"] for c, _ in held}
    for row in rows:
        cluster, neuron = next((c, n) for c, n in held if c["id"] == row.get_attribute("data-concept"))
        cells = [td.text for td in row.find_elements("tag name", "td")]
        assert cells[0] == cluster["label"] and cells[3] == f"{neuron['support']:.2f}"
        assert cells[6].startswith("yes" if neuron["evidence"]["selective"] else "no, generic here")
        reliable = neuron["evidence"]["reliable"]
        assert cells[5] == ("too few images to tell" if reliable is None else "yes" if reliable else "no")
    rate = held[0][1]["evidence"]["collection_rate"]
    assert browser.find_element("css selector", "[data-fact=collection-rate]").text == f"{round(rate * 100)}%"
    frequent = browser.find_element("css selector", "[data-fact=frequent]").text
    assert frequent.startswith("frequent") if rate >= 0.5 else frequent.startswith("not frequent")
    plotted = {
        e.get_attribute("data-concept")
        for e in browser.find_elements("css selector", "svg[data-plot=neuron-support] circle")
    }
    assert plotted == {c["id"] for c, _ in held}
    assert thumbs_loaded(browser) == min(24, len(hierarchy["images"]))
    assert "24 are kept per neuron" in browser.find_element("id", "main").text
    screenshot(browser, "report-neuron")
    assert console_errors(browser) == []


def test_report_walks_overview_concept_neuron_and_back(embedded: dict[str, Any], browser: Any) -> None:
    url, hierarchy = embedded["url"], embedded["hierarchy"]
    assert url.startswith("file://") and url.endswith("/explorer/index.html")
    _open(browser, url, "overview")
    top = [c for c in hierarchy["clusters"] if c["parent"] is None]
    rows = browser.find_elements("css selector", "ul.tree > li[data-concept]")
    # fold open a branch with the keyboard, down to level 1
    toggle = rows[0].find_element("css selector", "button.toggle")
    toggle.send_keys("\n")
    wait_for(browser, "document.querySelector('ul.tree > li [role=group] li[data-concept]')")
    assert toggle.get_attribute("aria-expanded") == "true"
    typical_loaded(browser, "[role=group]")
    screenshot(browser, "report-tree")

    first_child = top[0]["children"][0]
    browser.find_element("css selector", f'li[data-concept="{first_child}"] > .row a.concept-link').click()
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
    browser.find_element(
        "css selector", f'.strip a[href$="/neuron/{neuron["layer"]}/{neuron["channel"]}"]'
    ).click()
    wait_rendered(browser, "neuron")
    text = browser.find_element("id", "main").text
    assert f"Neuron {neuron['layer']} / channel {neuron['channel']}" in text and cluster["label"] in text

    browser.back()
    wait_rendered(browser, "concept")
    assert browser.find_element("tag name", "h1").text == cluster["label"]
    browser.find_element("css selector", "#crumbs a[href$='/job/report']").click()
    wait_rendered(browser, "overview")
    assert console_errors(browser) == []


def test_a_concept_page_prints_for_a_review_document(embedded: dict[str, Any], browser: Any) -> None:
    """The print stylesheet: no navigation or buttons, captions under the images, plots whole."""
    hierarchy = embedded["hierarchy"]
    cluster = max(hierarchy["clusters"], key=lambda c: len(c["neurons"]))
    _open(browser, embedded["url"] + f"#/job/report/concept/{cluster['id']}", "concept")
    thumbs_loaded(browser)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        hidden = browser.execute_script(
            "return ['.top', '.pager', 'button'].map(s => [...document.querySelectorAll(s)]"
            ".every(e => getComputedStyle(e).display === 'none'))"
        )
        assert hidden == [True, True, True]
        assert (
            browser.execute_script(
                "return getComputedStyle(document.querySelector('.grid figcaption')).opacity"
            )
            == "1"
        )
        width = browser.execute_script(
            "return document.querySelector('svg[data-plot=support]').getBoundingClientRect().width"
        )
        assert width > 300
        screenshot(browser, "report-concept-print")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    pdf = browser.execute_cdp_cmd("Page.printToPDF", {"printBackground": False})
    assert base64.b64decode(pdf["data"]).startswith(b"%PDF")


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
    _open(browser, embedded["url"] + "#/job/report", "overview")
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
    _open(browser, embedded["url"], "overview")
    _tab_to(browser, f'li[data-concept="{top["id"]}"] button.toggle')
    enter()
    child = top["children"][0]
    wait_for(browser, f"document.querySelector('li[data-concept=\"{child}\"]')")
    _tab_to(browser, f'li[data-concept="{child}"] > .row a.concept-link')
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
    wait_rendered(browser, "overview")
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
    not os.environ.get("EXPLORER_DOCS_SCREENSHOT"), reason="set to refresh the README pictures"
)
def test_refresh_the_readme_screenshots(embedded: dict[str, Any], browser: Any) -> None:
    """EXPLORER_DOCS_SCREENSHOT=docs/explorer.png: the overview that the README shows, and beside
    it explorer-concept.png, a concept page."""
    target = Path(os.environ["EXPLORER_DOCS_SCREENSHOT"])
    clusters = embedded["hierarchy"]["clusters"]
    top = next(c for c in clusters if c["parent"] is None and c["children"])
    concept = max(clusters, key=lambda c: (c["level"] == 1, len(c["difference_neurons"])))
    browser.set_window_size(1000, 1300)
    try:
        _open(browser, embedded["url"], "overview")
        browser.find_element("css selector", f'li[data-concept="{top["id"]}"] button.toggle').click()
        wait_for(browser, "document.querySelector('[role=group] li[data-concept]')")
        typical_loaded(browser)
        screenshot(browser, "readme")
        shutil.copyfile(SCREENSHOTS / "readme.png", target)
        _open(browser, embedded["url"] + f"#/job/report/concept/{concept['id']}", "concept")
        thumbs_loaded(browser)
        # one thumbnail focused, so its caption shows
        browser.execute_script("document.querySelector('.grid .thumb').focus({preventScroll: true})")
        screenshot(browser, "readme-concept")
        shutil.copyfile(SCREENSHOTS / "readme-concept.png", target.with_name(target.stem + "-concept.png"))
    finally:
        browser.set_window_size(1280, 900)
