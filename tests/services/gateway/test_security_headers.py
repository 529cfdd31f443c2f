"""Security headers on the gateway's pages: the explorer (where the API key sits in
`sessionStorage`) gets a Content-Security-Policy that allows only its own script, style and data,
and no page may be framed, sniffed or leak its URL in a Referer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

EXPLORER = ["/ui/", "/ui/assets/app.js", "/ui/assets/style.css", "/ui/api/jobs/" + "0" * 32 + "/summary"]


@pytest.mark.parametrize("path", EXPLORER)
def test_the_explorer_sends_a_content_security_policy(suite: Any, path: str) -> None:
    with httpx.Client(base_url=suite.url, timeout=30) as anonymous:
        answer = anonymous.get(path)  # the API answers 401 without a key: its headers count too
    csp = {
        d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in answer.headers["content-security-policy"].split("; ")
    }
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert "unsafe-inline" not in answer.headers["content-security-policy"]
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert csp["connect-src"] == "'self'"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/v1/jobs", "/healthz", "/openapi.json"])
def test_every_answer_refuses_framing_and_sniffing(suite: Any, path: str) -> None:
    with httpx.Client(base_url=suite.url, timeout=30) as anonymous:
        answer = anonymous.get(path)
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_the_explorer_page_has_no_inline_script_or_style() -> None:
    """The policy allows no inline code, so the page must not need any."""
    import re

    from services.gateway.explorer.page import asset, index_html

    page = index_html("api")
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page
    assert not re.search(r"\son[a-z]+=", page) and " style=" not in page
    script = asset("app.js").decode()
    assert 'setAttribute("style"' not in script and "innerHTML" not in script


@pytest.mark.parametrize("name", ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"])
def test_the_docs_pages_load_their_scripts_from_the_gateway(suite: Any, name: str) -> None:
    with httpx.Client(base_url=suite.url, timeout=30) as anonymous:
        page = anonymous.get("/redoc" if name.startswith("redoc") else "/docs").text
        assert f'"/docs/assets/{name}"' in page and "cdn" not in page.lower()
        asset = anonymous.get(f"/docs/assets/{name}")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert anonymous is not None and asset.headers["x-content-type-options"] == "nosniff"
