"""Time to an interactive overview, and to a concept page, for a large job, in headless Chromium.

    PYTHONPATH=. .venv/bin/python benchmarks/explorer.py                 # 16,000 images
    PYTHONPATH=. .venv/bin/python benchmarks/explorer.py --images 25000 --concepts 5000

Writes a synthetic finished job of the schema-2 contract (hierarchy.json, caption embeddings,
pooled activations with active bitsets, a WebP thumbnail per image; tests/explorer/synthetic.py)
and measures, from navigation start:
  - the overview (what a report opens on): first complete render (heading, facts, the tree's
    top level with its rows' typical-image strips and evidence badges, the summary and pruning
    plots, the plan, every button and link live: app.js records it; the page is interactive from
    then, as nothing runs after it but thumbnail loads), the visible rows' thumbnails painted, and
    one level expanded on demand (a click on the first row's + until its sub-concepts are drawn);
  - a top-level concept (the most images) and a level-1 concept: first complete render (heading,
    statistics, plots, neuron strips, relatives and the first grid page laid out) and every
    thumbnail of the first grid page painted;
each from
  - the static report (`neuron-atlas report`), opened from disk;
  - the gateway's `/ui` (uvicorn, real redis-server and SeaweedFS on 127.0.0.1, the artifacts in
    the bucket): the first open after the gateway started (it reads and indexes hierarchy.json)
    and warm opens after it.
Each warm number is the median of --repeats fresh page loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.gateway.explorer.atlas import Atlas  # noqa: E402
from services.gateway.explorer.report import write_report  # noqa: E402
from shared.storage.stores import LocalStore, get_npy  # noqa: E402
from tests.explorer.browser import chromium, thumbs_loaded, wait_for, wait_rendered  # noqa: E402
from tests.explorer.synthetic import make_job  # noqa: E402
from tests.servers import ProcessGroup, start_gateway, start_redis, start_seaweedfs  # noqa: E402

KEY = "benchmark-key"


def measure(driver: Any, url: str) -> tuple[float, float]:
    """(ms to first render, ms until the first page's thumbnails have painted) of one fresh load."""
    driver.get("about:blank")
    start = time.perf_counter()
    driver.get(url)
    wait_rendered(driver, "concept", timeout=120)
    thumbs_loaded(driver, timeout=120)
    painted = (time.perf_counter() - start) * 1000
    first = driver.execute_script("return window.atlasTimings.find(t => t.page === 'concept').ms")
    return float(first), painted


VISIBLE_THUMBS = (
    "(() => { const h = innerHeight; const i = [...document.querySelectorAll('.typical img')]"
    ".filter(x => { const r = x.getBoundingClientRect(); return r.bottom > 0 && r.top < h; });"
    " return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0); })()"
)


def measure_overview(driver: Any, url: str) -> tuple[float, float, float]:
    """(ms to the overview's first render, ms until the visible rows' thumbnails have painted,
    ms from a click on the first + to its sub-concepts drawn) of one fresh load."""
    driver.get("about:blank")
    start = time.perf_counter()
    driver.get(url)
    wait_rendered(driver, "overview", timeout=120)
    wait_for(driver, VISIBLE_THUMBS, timeout=120)
    painted = (time.perf_counter() - start) * 1000
    first = driver.execute_script("return window.atlasTimings.find(t => t.page === 'overview').ms")
    expand = driver.execute_script(
        "const b = document.querySelector('ul.tree > li > .row button.toggle');"
        "window.__t0 = performance.now(); b.click(); return !!b;"
    )
    assert expand, "the top level has no branch to open"
    wait_for(driver, "document.querySelector('ul.tree > li [role=group] li[data-concept]')", timeout=60)
    opened = driver.execute_script("return performance.now() - window.__t0")
    return float(first), painted, float(opened)


def report(name: str, samples: list[tuple[float, float]]) -> None:
    render = statistics.median(s[0] for s in samples)
    painted = statistics.median(s[1] for s in samples)
    print(f"  {name:<44} first render {render:7.0f} ms   thumbnails painted {painted:7.0f} ms", flush=True)


def report_overview(name: str, samples: list[tuple[float, float, float]]) -> None:
    render, painted, opened = (statistics.median(s[i] for s in samples) for i in range(3))
    print(
        f"  {name:<44} interactive {render:7.0f} ms   visible thumbnails {painted:7.0f} ms   "
        f"a level opened in {opened:5.0f} ms",
        flush=True,
    )


def upload(folder: Path, store: Any, prefix: str) -> int:
    local = LocalStore(folder)
    keys = [k for k in local.list("") if not k.startswith("explorer/")]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put_bytes(prefix + k, local.get_bytes(k)), keys))
    return len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=16_000)
    parser.add_argument("--concepts", type=int, default=None, help="default: images / 5")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-gateway", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="explorer-bench-") as tmp:
        out = Path(tmp) / "out"
        start = time.perf_counter()
        hierarchy = make_job(out, args.images, args.concepts or max(1, args.images // 5))
        size = (out / "hierarchy.json").stat().st_size
        print(
            f"synthetic job: {args.images} images, {len(hierarchy['clusters'])} concepts, "
            f"{len(hierarchy['levels'])} levels, hierarchy.json {size / 1e6:.1f} MB "
            f"({time.perf_counter() - start:.0f} s to make)",
            flush=True,
        )
        top = max(hierarchy["clusters"], key=lambda c: c["size"])
        leaf = next(c for c in hierarchy["clusters"] if c["level"] == 1)
        concepts = {
            f"top-level concept ({top['size']} images)": top["id"],
            f"level-1 concept ({leaf['size']} images)": leaf["id"],
        }
        del hierarchy

        start = time.perf_counter()
        index = write_report(out)
        files = sum(1 for p in (out / "explorer").rglob("*") if p.is_file())
        largest = max(p.stat().st_size for p in (out / "explorer" / "data" / "concept").glob("*.js"))
        print(
            f"static report: {files} files in {time.perf_counter() - start:.0f} s; largest concept file "
            f"{largest / 1e3:.0f} kB",
            flush=True,
        )
        with chromium() as driver:
            print("static report from disk (median of repeats):", flush=True)
            report_overview(
                "overview", [measure_overview(driver, index.as_uri()) for _ in range(args.repeats)]
            )
            for name, cid in concepts.items():
                report(
                    name,
                    [
                        measure(driver, f"{index.as_uri()}#/job/report/concept/{cid}")
                        for _ in range(args.repeats)
                    ],
                )
            if not args.no_gateway:
                gateway(driver, out, concepts, args.repeats, Path(tmp))


def concepts_first(concepts: dict[str, str]) -> str:
    return next(iter(concepts.values()))


def gateway(driver: Any, out: Path, concepts: dict[str, str], repeats: int, tmp: Path) -> None:
    from shared.jobs.jobstore import JobStore, now
    from shared.storage.stores import S3Store

    for name in ("logs", "redis", "s3"):
        (tmp / name).mkdir()
    group = ProcessGroup(tmp / "logs")
    redis_server = start_redis(tmp / "redis")
    s3 = start_seaweedfs(tmp / "s3", "bench-access", "bench-secret-123")
    try:
        s3.make_bucket("bench")
        job_id = hashlib.sha256(b"explorer-benchmark").hexdigest()[:32]
        store = S3Store(s3.client(), "bench")
        start = time.perf_counter()
        count = upload(out, store, f"jobs/{job_id}/")
        print(
            f"gateway: {count} artifacts uploaded to SeaweedFS in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        start = time.perf_counter()
        raw = store.get_bytes(f"jobs/{job_id}/hierarchy.json")
        read = time.perf_counter() - start
        document = json.loads(raw)
        parsed = time.perf_counter() - start - read
        atlas = Atlas(document, True, embeddings=lambda: get_npy(store, f"jobs/{job_id}/embeddings.npy"))
        atlas.summary()
        atlas.children(None)
        overview = time.perf_counter() - start - read - parsed
        atlas.concept(concepts_first(concepts))
        concept = time.perf_counter() - start - read - parsed - overview
        del raw, document, atlas
        print(
            f"gateway's first open, in process: read hierarchy.json {read:.1f} s, parse {parsed:.1f} s, "
            f"index + overview (embeddings read, plots drawn) {overview:.1f} s, a concept {concept:.2f} s",
            flush=True,
        )
        jobs = JobStore.from_url(redis_server.url)
        jobs.create(job_id, "bench", 0, 0, 1, {})
        jobs.redis.hset(
            f"job:{job_id}", mapping={"status": "succeeded", "stage": "assemble", "finished_at": now()}
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "development",
            "REDIS_URL": redis_server.url,
            "S3_ENDPOINT": s3.endpoint,
            "S3_PUBLIC_ENDPOINT": s3.endpoint,
            "S3_BUCKET": "bench",
            "S3_ACCESS_KEY": "bench-access",
            "S3_SECRET_KEY": "bench-secret-123",
            "GATEWAY_API_KEYS": json.dumps({hashlib.sha256(KEY.encode()).hexdigest(): "bench"}),
        }
        url = start_gateway(group, env)
        driver.get(url + "/ui/")
        driver.execute_script("sessionStorage.setItem('neuron-atlas-api-key', arguments[0])", KEY)
        print("gateway /ui:", flush=True)
        overview = f"{url}/ui/#/job/{job_id}"
        report_overview("overview, first open (reads hierarchy)", [measure_overview(driver, overview)])
        report_overview(
            "overview, warm (median)", [measure_overview(driver, overview) for _ in range(repeats)]
        )
        for name, cid in concepts.items():
            page = f"{url}/ui/#/job/{job_id}/concept/{cid}"
            report(f"{name}, warm (median)", [measure(driver, page) for _ in range(repeats)])
    finally:
        group.stop()
        s3.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
