"""The comparison view on the gateway (`/ui/comparisons/{id}`, data under
`/ui/api/comparisons/{id}/...`), on the shared suite: a tenant's comparison of its job with itself
(`POST /v1/comparisons`), opened in a real browser under the page's CSP, and never shown to
another tenant. The changed markers and the gained and lost neurons are checked on the planted
runs' comparison in test_comparison_browser.py; the same page draws both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.security_headers import EXPLORER_CSP
from tests.explorer.browser import chromium, console_errors, screenshot, wait_for, wait_rendered
from tests.services.gateway.helpers import finished_job

# Every route of the comparison view: tests/services/gateway/test_tenancy.py's matrix counts them
# as checked here (no key 401, another tenant 404, the owner 200).
UI_COMPARISON_ROUTES = {
    ("GET", "/ui/api/comparisons/{comparison_id}/summary"),
    ("GET", "/ui/api/comparisons/{comparison_id}/children"),
    ("GET", "/ui/api/comparisons/{comparison_id}/changed"),
    ("GET", "/ui/api/comparisons/{comparison_id}/concepts/{cluster_id}"),
}


@pytest.fixture(scope="module")
def ui_comparison(suite: Any, sample_dir: Path) -> dict[str, Any]:
    """Tenant A's job compared with itself on the suite."""
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=360) as client:
        job = finished_job(client, sample_dir)
        created = client.post("/v1/comparisons", json={"a": job["id"], "b": job["id"]})
        assert created.status_code == 201, created.text
        hierarchy = client.get(f"/v1/jobs/{job['id']}/hierarchy").raise_for_status().json()
    return {"id": created.json()["id"], "job": job["id"], "hierarchy": hierarchy}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _paths(comparison_id: str, cluster: str) -> list[str]:
    return [
        path.replace("{comparison_id}", comparison_id).replace("{cluster_id}", cluster)
        for _, path in sorted(UI_COMPARISON_ROUTES)
    ]


def test_another_tenant_never_sees_the_comparison(suite: Any, ui_comparison: dict[str, Any]) -> None:
    cluster = ui_comparison["hierarchy"]["clusters"][0]["id"]
    with httpx.Client(base_url=suite.url, timeout=60) as client:
        for path in _paths(ui_comparison["id"], cluster):
            mine = client.get(path, headers=suite.headers("tenant-a"))
            assert mine.status_code == 200, (path, mine.text)
            assert mine.headers["content-security-policy"] == EXPLORER_CSP
            other = client.get(path, headers=suite.headers("tenant-b"))
            assert other.status_code == 404 and ui_comparison["job"] not in other.text, path
            assert client.get(path).status_code == 401, path
        # another tenant's comparison answers exactly as one that never existed
        never = client.get(f"/ui/api/comparisons/{'0' * 32}/summary", headers=suite.headers("tenant-b"))
        theirs = client.get(
            f"/ui/api/comparisons/{ui_comparison['id']}/summary", headers=suite.headers("tenant-b")
        )
        assert never.json()["title"].replace("0" * 32, "ID") == theirs.json()["title"].replace(
            ui_comparison["id"], "ID"
        )
        assert (
            client.get(
                f"/ui/api/comparisons/{ui_comparison['id']}/summary", headers=suite.headers("tenant-a")
            ).json()["models"]["a"]["job"]
            == ui_comparison["job"]
        )
        # the page's address holds no data: it sends the browser to the explorer's route
        page = client.get(f"/ui/comparisons/{ui_comparison['id']}", follow_redirects=False)
        assert (
            page.status_code == 307 and page.headers["location"] == f"/ui/#/comparison/{ui_comparison['id']}"
        )
        assert client.get("/ui/comparisons/not-an-id").status_code == 422


def _sign_in(browser: Any, url: str, key: str) -> None:
    browser.get(url + "/ui/")
    wait_rendered(browser, "key")
    browser.find_element("id", "api-key").send_keys(key, "\n")
    wait_rendered(browser, "jobs")


def test_the_comparison_page_on_the_gateway_marks_nothing_changed_for_the_same_job(
    suite: Any, ui_comparison: dict[str, Any], browser: Any
) -> None:
    hierarchy = ui_comparison["hierarchy"]
    _sign_in(browser, suite.url, suite.keys["tenant-a"])
    browser.find_element("id", "comparison-id").send_keys(ui_comparison["id"], "\n")  # the jobs page's form
    wait_rendered(browser, "comparison")
    roots = {c["id"] for c in hierarchy["clusters"] if c["parent"] is None}
    rows = browser.find_elements("css selector", "ul.tree > li[data-concept]")
    assert {r.get_attribute("data-concept") for r in rows} == roots
    assert {r.get_attribute("data-marker") for r in rows} <= {"unchanged", "untested", "no_group"}
    browser.find_element("id", "changed-only").click()
    wait_for(browser, "document.getElementById('cmp-concepts').textContent.includes('No concept changed')")
    screenshot(browser, "ui-comparison")
    # a concept with a group: both columns are its group, nothing gained or lost
    concept = max(hierarchy["clusters"], key=lambda c: len(c["neurons"]))
    assert concept["neurons"]
    browser.get(suite.url + f"/ui/comparisons/{ui_comparison['id']}")  # the page's own address
    wait_rendered(browser, "comparison")
    browser.execute_script(f"location.hash = '#/comparison/{ui_comparison['id']}/concept/{concept['id']}'")
    wait_rendered(browser, "comparison-concept")
    group = sorted(n["channel"] for n in concept["neurons"])
    for column in browser.find_elements("css selector", ".cmp-layer .compare > section"):
        cells = column.find_elements("css selector", "[data-channel]")
        assert sorted(int(c.get_attribute("data-channel")) for c in cells) == group
    assert not browser.find_elements("css selector", ".cmp-strip .lost, .cmp-strip .gained")
    screenshot(browser, "ui-comparison-concept")
    # the concept in model A's own explorer
    browser.find_element("link text", "model A").click()
    wait_rendered(browser, "concept")
    assert browser.find_element("tag name", "h1").text == concept["label"]
    assert console_errors(browser) == []


def test_another_tenant_in_the_browser_gets_not_found(
    suite: Any, ui_comparison: dict[str, Any], browser: Any
) -> None:
    browser.execute_script("sessionStorage.clear()")
    _sign_in(browser, suite.url, suite.keys["tenant-b"])
    browser.get(suite.url + f"/ui/#/comparison/{ui_comparison['id']}")
    wait_for(browser, "document.body.dataset.rendered === 'error'")
    assert "Not found" in browser.find_element("id", "main").text
    browser.execute_script("sessionStorage.clear()")
