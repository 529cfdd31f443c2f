"""The gateway's `/ui` in a real browser, on the shared suite (one start per session): live job
progress, the key kept for the session, thumbnails from the bucket through authenticated routes,
and another tenant's job and thumbnails never shown."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.explorer.browser import (
    chromium,
    console_errors,
    region_is_picture,
    screenshot,
    thumbs_loaded,
    typical_loaded,
    wait_for,
    wait_rendered,
)
from tests.services.gateway.helpers import wait_for as wait_for_job
from tests.services.gateway.helpers import zip_folder

OPTIONS = {
    "allow_random_weights": True,
    "shard_size": 8,
    "batch_size": 8,
    "device": "cpu",
    "layers": ["layer3", "layer4"],
    "bootstrap_resamples": 20,
    "mc_samples": 2,
    "tta_samples": 1,
    "pruning_thresholds": [0.05],
    "ablation_random_sets": 2,
    "ablation_max_images": 2,
    "pruning_random_sets": 1,
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _sign_in(browser: Any, url: str, key: str) -> None:
    browser.get(url + "/ui")
    wait_rendered(browser, "key")
    browser.find_element("id", "api-key").send_keys(key, "\n")
    wait_rendered(browser, "jobs")


@pytest.fixture(scope="module")
def ui_job(suite: Any, sample_dir: Path, browser: Any) -> dict[str, Any]:
    """A job submitted while the jobs page is open: the page must follow it to `succeeded` on
    its own (live progress), without a reload."""
    _sign_in(browser, suite.url, suite.keys["tenant-a"])
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        response = client.post(
            "/v1/jobs",
            files=[("files", ("images.zip", zip_folder(sample_dir), "application/zip"))],
            data={"spec": json.dumps({"options": OPTIONS})},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        row = f"document.querySelector('tr[data-job=\"{job_id}\"]')"
        wait_for(browser, row, 15)
        progressed = wait_for(browser, f"{row} && {row}.querySelector('progress') !== null", 120)
        job = wait_for_job(client, response.headers["location"], {"succeeded", "failed", "cancelled"})
        assert job["status"] == "succeeded", job["error"]
        hierarchy = client.get(f"/v1/jobs/{job_id}/hierarchy").json()
    wait_for(browser, f"{row}.querySelector('.status-succeeded')", 15)
    assert progressed
    return {"id": job_id, "hierarchy": hierarchy}


def test_jobs_page_follows_a_job_live_and_keeps_the_key_for_the_session(
    suite: Any, ui_job: dict[str, Any], browser: Any
) -> None:
    text = browser.find_element("css selector", f'tr[data-job="{ui_job["id"]}"]').text
    assert "succeeded" in text and "activation" in text and "24/24" in text
    screenshot(browser, "ui-jobs")
    assert (
        browser.execute_script("return sessionStorage.getItem('neuron-atlas-api-key')")
        == suite.keys["tenant-a"]
    )
    browser.get(suite.url + "/ui/")  # a reload in the same session does not ask again
    wait_rendered(browser, "jobs")
    assert console_errors(browser) == []


def test_overview_concept_neuron_and_back_with_thumbnails_from_the_bucket(
    suite: Any, ui_job: dict[str, Any], browser: Any
) -> None:
    """The report's pages on the gateway: the overview (typical thumbnails through the
    authenticated route, the plots, under the page's CSP: a refused inline style would be a
    console error), a concept, a neuron."""
    hierarchy, job_id = ui_job["hierarchy"], ui_job["id"]
    browser.get(suite.url + "/ui/")
    wait_rendered(browser, "jobs")
    browser.find_element("css selector", f'tr[data-job="{job_id}"] a').click()
    wait_rendered(browser, "overview")
    top = [c for c in hierarchy["clusters"] if c["parent"] is None]
    assert typical_loaded(browser) == sum(min(5, c["size"]) for c in top)
    assert all(
        src.startswith("blob:")
        for src in browser.execute_script(
            "return [...document.querySelectorAll('.typical img')].map(i => i.src)"
        )
    )
    levels = browser.execute_script(
        "return [...document.querySelectorAll('svg[data-plot=summary] [data-bar=level]')]"
        ".map(e => +e.dataset.value)"
    )
    assert levels == [lv["clusters"] for lv in hierarchy["levels"]]
    shot = screenshot(browser, "ui-overview")
    assert region_is_picture(shot, browser, ".typical img")
    top = next(c for c in hierarchy["clusters"] if c["parent"] is None and c["children"])
    browser.find_element("css selector", f'li[data-concept="{top["id"]}"] button.toggle').click()
    child = top["children"][0]
    wait_for(browser, f"document.querySelector('li[data-concept=\"{child}\"] > .row a.concept-link')")
    browser.find_element("css selector", f'li[data-concept="{child}"] > .row a.concept-link').click()
    wait_rendered(browser, "concept")
    cluster = next(c for c in hierarchy["clusters"] if c["id"] == child)
    assert browser.find_element("tag name", "h1").text == cluster["label"]
    assert thumbs_loaded(browser) == cluster["size"]
    browser.execute_script("document.getElementById('images').scrollIntoView()")
    shot = screenshot(browser, "ui-concept")
    assert region_is_picture(shot, browser, ".grid .thumb img")
    assert all(
        src.startswith("blob:")
        for src in browser.execute_script(
            "return [...document.querySelectorAll('.grid img')].map(i => i.src)"
        )
    )
    neuron = cluster["neurons"][0]
    browser.find_element(
        "css selector", f'.strip a[href$="/neuron/{neuron["layer"]}/{neuron["channel"]}"]'
    ).click()
    wait_rendered(browser, "neuron")
    held = {
        c["id"]
        for c in hierarchy["clusters"]
        if any((n["layer"], n["channel"]) == (neuron["layer"], neuron["channel"]) for n in c["neurons"])
    }
    rows = browser.find_elements("css selector", "table.neuron-concepts tbody tr")
    assert {r.get_attribute("data-concept") for r in rows} == held
    assert thumbs_loaded(browser) == 24
    screenshot(browser, "ui-neuron")
    browser.back()
    wait_rendered(browser, "concept")
    assert browser.find_element("tag name", "h1").text == cluster["label"]
    assert console_errors(browser) == []


def test_search_and_siblings_side_by_side(suite: Any, ui_job: dict[str, Any], browser: Any) -> None:
    hierarchy, job_id = ui_job["hierarchy"], ui_job["id"]
    parent = next(c for c in hierarchy["clusters"] if len(c["children"]) >= 2)
    a, b = parent["children"][:2]
    label = next(c["label"] for c in hierarchy["clusters"] if c["id"] == a)
    browser.get(suite.url + f"/ui/#/job/{job_id}")
    wait_rendered(browser, "overview")
    browser.find_element("id", "search").send_keys(label, "\n")
    wait_for(browser, "document.querySelector('#results ol > li > a')")
    found = [x.text for x in browser.find_elements("css selector", "#results ol > li > a")]
    assert label in found
    screenshot(browser, "ui-search")
    browser.find_element("link text", label).click()
    wait_rendered(browser, "concept")
    browser.find_element("css selector", f'a[href$="/compare/{a}/{b}"]').click()
    wait_rendered(browser, "compare")
    screenshot(browser, "ui-compare")
    assert "Shared neurons" in browser.find_element("id", "main").text
    assert console_errors(browser) == []


def test_another_tenant_never_sees_the_job_or_its_thumbnails(suite: Any, ui_job: dict[str, Any]) -> None:
    job_id = ui_job["id"]
    cluster = ui_job["hierarchy"]["clusters"][0]
    image = cluster["images"][0]
    neuron = next(n for c in ui_job["hierarchy"]["clusters"] for n in c["neurons"])
    paths = [
        f"/ui/api/jobs/{job_id}/summary",
        f"/ui/api/jobs/{job_id}/children",
        f"/ui/api/jobs/{job_id}/concepts/{cluster['id']}",
        f"/ui/api/jobs/{job_id}/neurons/{neuron['layer']}/{neuron['channel']}",
        f"/ui/api/jobs/{job_id}/thumbs/{image}",
    ]
    with httpx.Client(base_url=suite.url, timeout=30) as client:
        for path in paths:
            assert client.get(path, headers=suite.headers("tenant-a")).status_code == 200, path
            assert client.get(path, headers=suite.headers("tenant-b")).status_code == 404, path
            assert client.get(path).status_code == 401, path
        assert (
            client.get(f"/ui/api/jobs/{job_id}/thumbs/..%2Fspec.json", headers=suite.headers()).status_code
            == 404
        )
        page = client.get("/ui/")
        assert page.status_code == 200 and "atlas-mode" in page.text and job_id not in page.text


def test_another_tenant_in_the_browser_gets_not_found(
    suite: Any, ui_job: dict[str, Any], browser: Any
) -> None:
    browser.execute_script("sessionStorage.clear()")
    _sign_in(browser, suite.url, suite.keys["tenant-b"])
    assert ui_job["id"] not in browser.page_source
    browser.get(suite.url + f"/ui/#/job/{ui_job['id']}")
    wait_for(browser, "document.body.dataset.rendered === 'error'")
    assert "Not found" in browser.find_element("id", "main").text
    browser.execute_script("sessionStorage.clear()")


def test_the_bucket_holds_a_webp_thumbnail_per_image_in_a_pack_per_shard(
    suite: Any, ui_job: dict[str, Any]
) -> None:
    from PIL import Image

    from shared.storage.stores import S3Store, make_s3_client
    from shared.storage.thumbnails import ThumbnailIndex

    env = suite.env
    client = make_s3_client(env["S3_ENDPOINT"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"], "us-east-1")
    store = S3Store(client, suite.bucket)
    prefix = f"jobs/{ui_job['id']}/"
    images = [image["id"] for image in ui_job["hierarchy"]["images"]]
    packs = list(store.list(prefix + "thumbs/"))
    assert packs and all(key.endswith(".zip") for key in packs) and len(packs) < len(images)
    index = ThumbnailIndex(store, prefix)
    assert set(index.spans) == set(images)
    thumb = Image.open(io.BytesIO(index.read(images[0])))
    assert thumb.format == "WEBP" and max(thumb.size) <= 160
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=30) as http:
        served = http.get(f"/ui/api/jobs/{ui_job['id']}/thumbs/{images[-1]}")
        assert served.headers["content-type"] == "image/webp" and served.content == index.read(images[-1])
        names = {a["name"] for a in http.get(f"/v1/jobs/{ui_job['id']}/artifacts").json()["artifacts"]}
    assert "hierarchy.json" in names and not any(n.startswith("thumbs/") for n in names)  # no link per image
