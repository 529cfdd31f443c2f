"""`/docs` (Swagger UI) and `/redoc` in headless Chromium with no network but the gateway: their
scripts and styles come from the gateway itself (the `fastapi-offline` package), so they render
their operations offline. Before, both loaded from a CDN and stayed blank."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.explorer.browser import NO_NETWORK, chromium, console_errors, screenshot, wait_for


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[Any]:
    with chromium(NO_NETWORK) as driver:
        yield driver


# ReDoc's own "API docs by Redocly" badge, a picture built into its script: offline it stays
# blank, and nothing else depends on it.
REDOC_BADGE = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def resources_from_elsewhere(driver: Any, origin: str) -> list[str]:
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith((origin, "data:", REDOC_BADGE))]


def test_swagger_ui_renders_every_operation_with_no_network(suite: Any, offline_browser: Any) -> None:
    offline_browser.get(suite.url + "/docs")
    operations = wait_for(offline_browser, "document.querySelectorAll('.opblock').length", 30)
    paths = offline_browser.execute_script(
        "return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.dataset.path)"
    )
    assert operations >= 10 and "/v1/jobs" in paths and "/v1/models" in paths, paths
    assert resources_from_elsewhere(offline_browser, suite.url) == []
    assert console_errors(offline_browser) == []
    screenshot(offline_browser, "docs-swagger-ui")


def test_redoc_renders_the_operations_with_no_network(suite: Any, offline_browser: Any) -> None:
    offline_browser.get(suite.url + "/redoc")
    found = wait_for(
        offline_browser, "document.querySelectorAll('[data-section-id^=\"operation/\"]').length", 30
    )
    assert found >= 10
    assert resources_from_elsewhere(offline_browser, suite.url) == []
    screenshot(offline_browser, "docs-redoc")
