"""API contract of the gateway, against the real suite (uvicorn, Redis, SeaweedFS, workers)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.helpers import LIGHT_OPTIONS, wait_for

PROBLEM = "application/problem+json"
LIGHT = {"options": LIGHT_OPTIONS}


@pytest.fixture
def client(suite: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=60) as c:
        yield c


@pytest.fixture
def other(suite: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as c:
        yield c


def images(sample_dir: Path, count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """`count` sample images and the sample's metadata.csv (captions, so BLIP is not needed)."""
    paths = sorted(sample_dir.glob("*.png"))[:count]
    metadata = ("files", ("metadata.csv", (sample_dir / "metadata.csv").read_bytes(), "text/csv"))
    return [*(("files", (p.name, p.read_bytes(), "image/png")) for p in paths), metadata]


def submit(client: httpx.Client, files: Any, spec: Any = LIGHT, **kwargs: Any) -> httpx.Response:
    return client.post("/v1/jobs", files=files, data={"spec": json.dumps(spec)}, **kwargs)


def job_ids(client: httpx.Client) -> set[str]:
    return {j["id"] for j in client.get("/v1/jobs", params={"page_size": 100}).json()["jobs"]}


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"].endswith(":" + kind), body
    assert body["title"]
    return body


def test_health_readiness_and_openapi_answer(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["redis"] == "ok" and ready["storage"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}:cancel",
        "/v1/jobs/{job_id}/hierarchy",
    } <= set(paths)
    assert client.get("/docs").status_code == 200


def test_requests_without_a_valid_key_get_401(suite: Any, sample_dir: Path) -> None:
    with httpx.Client(base_url=suite.url, timeout=30) as anonymous:
        body = assert_problem(anonymous.get("/v1/jobs"), 401, "unauthorized")
        assert "Bearer" in body["fix"]
        assert_problem(
            anonymous.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized"
        )
        assert_problem(submit(anonymous, images(sample_dir, 1)), 401, "unauthorized")


def test_submission_answers_202_with_location_and_the_job(client: httpx.Client, sample_dir: Path) -> None:
    response = submit(client, images(sample_dir, 3))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["images"] == 3 and job["skipped"] == 0
    assert client.get(response.headers["location"]).json()["id"] == job["id"]


def test_another_tenants_job_is_not_found(
    client: httpx.Client, other: httpx.Client, sample_dir: Path
) -> None:
    job = submit(client, images(sample_dir, 2)).json()
    for path in ("", "/hierarchy", "/artifacts", "/clusters/L1-0"):
        assert_problem(other.get(f"/v1/jobs/{job['id']}{path}"), 404, "not-found")
    assert_problem(other.post(f"/v1/jobs/{job['id']}:cancel"), 404, "not-found")
    assert_problem(other.delete(f"/v1/jobs/{job['id']}"), 404, "not-found")
    assert job["id"] not in {j["id"] for j in other.get("/v1/jobs", params={"page_size": 100}).json()["jobs"]}


def test_idempotency_key_replays_the_first_answer(client: httpx.Client, sample_dir: Path) -> None:
    headers = {"Idempotency-Key": "submit-once-1"}
    first = submit(client, images(sample_dir, 2), headers=headers)
    again = submit(client, images(sample_dir, 2), headers=headers)  # new multipart boundary
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers.get("idempotent-replayed") == "true"


def test_idempotency_key_with_another_body_is_refused(client: httpx.Client, sample_dir: Path) -> None:
    headers = {"Idempotency-Key": "submit-once-2"}
    assert submit(client, images(sample_dir, 2), headers=headers).status_code == 202
    assert_problem(submit(client, images(sample_dir, 3), headers=headers), 422, "idempotency-key-reused")


def test_idempotency_keys_belong_to_one_tenant(
    client: httpx.Client, other: httpx.Client, sample_dir: Path
) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    mine = submit(client, images(sample_dir, 2), headers=headers).json()
    theirs = submit(other, images(sample_dir, 2), headers=headers).json()
    assert mine["id"] != theirs["id"]


def test_pages_list_each_job_once_newest_first(suite: Any, sample_dir: Path) -> None:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as c:
        made = [submit(c, images(sample_dir, 2)).json()["id"] for _ in range(3)]
        seen: list[str] = []
        token = None
        while True:
            params: dict[str, Any] = {"page_size": 2, **({"page_token": token} if token else {})}
            page = c.get("/v1/jobs", params=params).json()
            assert len(page["jobs"]) <= 2
            seen += [j["id"] for j in page["jobs"]]
            token = page["next_page_token"]
            if not token:
                break
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in made] == made[::-1]
    assert_problem(c_get(suite, "/v1/jobs", {"page_token": "bogus"}), 422, "invalid-request")
    assert_problem(c_get(suite, "/v1/jobs", {"page_size": 0}), 422, "invalid-request")


def c_get(suite: Any, path: str, params: dict[str, Any]) -> httpx.Response:
    return httpx.get(suite.url + path, params=params, headers=suite.headers("tenant-b"), timeout=30)


def test_cancel_stops_running_work_at_the_next_shard(client: httpx.Client, sample_dir: Path) -> None:
    spec = {"options": {**LIGHT["options"], "shard_size": 1}}
    job = submit(client, images(sample_dir, 24), spec).json()
    running = wait_for(client, f"/v1/jobs/{job['id']}", {"running", "succeeded", "failed"}, timeout=60)
    assert running["status"] == "running", running
    answer = client.post(f"/v1/jobs/{job['id']}:cancel")
    assert answer.status_code == 202 and answer.json()["status"] in ("cancelling", "cancelled")
    done = wait_for(client, f"/v1/jobs/{job['id']}", {"cancelled", "succeeded", "failed"}, timeout=60)
    assert done["status"] == "cancelled"
    assert done["progress"]["activation"]["done"] < 24 or done["progress"]["caption"]["done"] < 24
    assert_problem(client.get(f"/v1/jobs/{job['id']}/hierarchy"), 409, "job-not-finished")
    assert_problem(client.post(f"/v1/jobs/{job['id']}:cancel"), 409, "conflict")


def test_delete_removes_the_job_and_its_objects(
    client: httpx.Client, suite: Any, s3_server: Any, sample_dir: Path
) -> None:
    job = submit(client, images(sample_dir, 2)).json()
    answer = client.delete(f"/v1/jobs/{job['id']}")
    if answer.status_code == 409:  # still active: cancel, wait, then delete
        client.post(f"/v1/jobs/{job['id']}:cancel")
        wait_for(client, f"/v1/jobs/{job['id']}", {"cancelled", "succeeded", "failed"}, timeout=60)
        answer = client.delete(f"/v1/jobs/{job['id']}")
    assert answer.status_code == 204
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404, "not-found")
    objects = list(s3_server.client().list_objects(suite.bucket, prefix=f"jobs/{job['id']}/", recursive=True))
    assert objects == []


def test_deleting_an_active_job_is_refused(client: httpx.Client, sample_dir: Path) -> None:
    spec = {"options": {**LIGHT["options"], "shard_size": 1}}
    job = submit(client, images(sample_dir, 12), spec).json()
    answer = client.delete(f"/v1/jobs/{job['id']}")
    client.post(f"/v1/jobs/{job['id']}:cancel")
    if answer.status_code != 204:  # it may, rarely, have finished already
        assert_problem(answer, 409, "conflict")


def test_oversized_bodies_get_413(client: httpx.Client) -> None:
    big = b"\0" * (5 * 1024 * 1024)
    body = assert_problem(
        submit(client, [("files", ("big.png", big, "image/png"))]), 413, "content-too-large"
    )
    assert "bytes" in body["detail"]

    def stream() -> Iterator[bytes]:  # no Content-Length: the limit is counted as bytes arrive
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    answer = client.post("/v1/jobs", content=stream(), headers={"Content-Type": "application/json"})
    assert_problem(answer, 413, "content-too-large")


def _zip(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symbolic link
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _tar_with_link() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo("evil.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "archive",
    [
        _zip({"../escape.png": b"x"}),
        _zip({"/etc/absolute.png": b"x"}),
        _zip({"ok.txt": b"x"}, links=("link.png",)),
        _tar_with_link(),
    ],
    ids=["dotdot", "absolute", "zip-symlink", "tar-symlink"],
)
def test_archives_with_path_tricks_or_links_are_refused(
    client: httpx.Client, suite: Any, s3_server: Any, archive: bytes
) -> None:
    before = {o.object_name for o in s3_server.client().list_objects(suite.bucket, prefix="jobs/")}
    body = assert_problem(
        submit(client, [("files", ("a.zip", archive, "application/zip"))]), 422, "unsafe-archive"
    )
    assert body["detail"] and body["fix"]
    after = {o.object_name for o in s3_server.client().list_objects(suite.bucket, prefix="jobs/")}
    assert after == before  # nothing of the refused job stays behind


def test_a_submission_without_images_is_refused(client: httpx.Client) -> None:
    body = assert_problem(
        submit(client, [("files", ("notes.txt", b"hello", "text/plain"))]), 422, "invalid-input"
    )
    assert "notes.txt: not an image" in body["detail"]


def test_non_images_among_images_are_skipped_and_counted(client: httpx.Client, sample_dir: Path) -> None:
    files = [*images(sample_dir, 2), ("files", ("notes.txt", b"hello", "text/plain"))]
    job = submit(client, files).json()
    assert job["images"] == 2 and job["skipped"] == 1


def test_limits_on_images_and_archive_entries(client: httpx.Client, sample_dir: Path) -> None:
    png = (sorted(sample_dir.glob("*.png"))[0]).read_bytes()
    many_images = _zip({f"{i:03d}/{i}.png": png for i in range(41)})  # the suite allows 40
    assert_problem(
        submit(client, [("files", ("a.zip", many_images, "application/zip"))]), 422, "limit-exceeded"
    )
    many_entries = _zip({f"{i}.txt": b"x" for i in range(51)})  # and 50 entries
    assert_problem(
        submit(client, [("files", ("b.zip", many_entries, "application/zip"))]), 422, "limit-exceeded"
    )


def test_invalid_spec_gets_a_problem_naming_the_field(client: httpx.Client, sample_dir: Path) -> None:
    body = assert_problem(
        submit(client, images(sample_dir, 1), {"options": {"top_fraction": 7}}), 422, "invalid-spec"
    )
    assert "top_fraction" in body["detail"]
    assert_problem(client.post("/v1/jobs", files=images(sample_dir, 1)), 422, "invalid-spec")
    assert_problem(
        client.post("/v1/jobs", content=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported-media-type",
    )


def test_json_submission_takes_images_from_the_tenants_prefix(
    client: httpx.Client, suite: Any, s3_server: Any, sample_dir: Path
) -> None:
    s3 = s3_server.client()
    for path in [*sorted(sample_dir.glob("*.png"))[:3], sample_dir / "metadata.csv"]:
        data = path.read_bytes()
        s3.put_object(suite.bucket, f"imports/tenant-a/set1/{path.name}", io.BytesIO(data), len(data))
    spec = {**LIGHT, "source": {"prefix": "imports/tenant-a/set1/"}}
    answer = client.post("/v1/jobs", json=spec)
    assert answer.status_code == 202, answer.text
    assert answer.json()["images"] == 3
    outside = {**LIGHT, "source": {"prefix": "imports/tenant-b/set1/"}}
    assert_problem(client.post("/v1/jobs", json=outside), 422, "invalid-input")


def test_a_failed_stage_fails_the_job_with_a_clear_error(client: httpx.Client, sample_dir: Path) -> None:
    spec = {"options": {**LIGHT["options"], "layers": ["no_such_layer"]}}
    job = submit(client, images(sample_dir, 3), spec).json()
    done = wait_for(client, f"/v1/jobs/{job['id']}", {"failed", "succeeded", "cancelled"}, timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["type"].endswith(":invalid-input") and "no_such_layer" in done["error"]["detail"]
    assert "activation" in done["error"]["title"] and done["error"]["fix"]


def test_a_failed_stage_keeps_what_was_computed_before_it(client: httpx.Client, sample_dir: Path) -> None:
    spec = {"options": {**LIGHT["options"], "embed_model": "no-such-embedder", "shard_size": 2}}
    job = submit(client, images(sample_dir, 3), spec).json()
    done = wait_for(client, f"/v1/jobs/{job['id']}", {"failed", "succeeded", "cancelled"}, timeout=120)
    assert done["status"] == "failed" and done["stage"] in ("embed_cluster", "activation")
    assert (
        done["error"]["type"].endswith(":model-unavailable") and "no-such-embedder" in done["error"]["detail"]
    )
    assert done["progress"]["caption"] == {
        "done": 3,
        "total": 3,
    }  # embed+cluster runs after every caption shard
    names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]}
    assert {"spec.json", "manifest.json", "captions/00000.json", "captions/00001.json"} <= names
    assert "hierarchy.json" not in names


def test_images_without_captions_need_the_captioner_and_say_so(
    client: httpx.Client, sample_dir: Path
) -> None:
    png = sorted(sample_dir.glob("*.png"))[0]
    job = submit(client, [("files", (png.name, png.read_bytes(), "image/png"))]).json()
    done = wait_for(client, f"/v1/jobs/{job['id']}", {"failed", "succeeded", "cancelled"}, timeout=120)
    assert done["status"] == "failed" and done["error"]["type"].endswith(":model-unavailable")
    assert "captioning model" in done["error"]["detail"] and "bring captions" in done["error"]["fix"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"seed": 2**64}, "seed"),
        ({"device": "meta"}, "device"),
        ({"device": "cuda:x"}, "device"),
        ({"layers": []}, "layers"),
        ({"layers": ["layer4", " "]}, "layers"),
    ],
)
def test_options_a_worker_would_fail_on_are_refused_at_submission(
    client: httpx.Client, sample_dir: Path, options: dict[str, Any], field: str
) -> None:
    before = job_ids(client)
    body = assert_problem(
        submit(client, images(sample_dir, 1), {"options": {**LIGHT["options"], **options}}),
        422,
        "invalid-spec",
    )
    assert field in body["detail"]
    assert job_ids(client) == before  # no job left behind


@pytest.mark.parametrize(
    "spec",
    [b'{"options": {"seed": "\xff\xfe"}}', b"[" * 100_000 + b"]" * 100_000],
    ids=["invalid-utf8", "nested-100000-deep"],
)
def test_hostile_spec_bytes_get_a_422_not_a_500(client: httpx.Client, sample_dir: Path, spec: bytes) -> None:
    before = job_ids(client)
    as_file = ("spec", ("spec.json", spec, "application/json"))
    assert_problem(client.post("/v1/jobs", files=[as_file, *images(sample_dir, 1)]), 422, "invalid-spec")
    as_field = ("spec", (None, spec, "text/plain"))  # a plain form field holding the raw bytes
    assert_problem(client.post("/v1/jobs", files=[as_field, *images(sample_dir, 1)]), 422, "invalid-spec")
    as_json = client.post("/v1/jobs", content=spec, headers={"Content-Type": "application/json"})
    assert_problem(as_json, 422, "invalid-spec")
    assert job_ids(client) == before


def test_a_device_the_workers_lack_fails_the_job_naming_the_device(
    client: httpx.Client, sample_dir: Path
) -> None:
    spec = {"options": {**LIGHT["options"], "device": "cuda"}}
    job = submit(client, images(sample_dir, 3), spec).json()
    done = wait_for(client, f"/v1/jobs/{job['id']}", {"failed", "succeeded", "cancelled"}, timeout=120)
    assert done["status"] == "failed"
    message = json.dumps(done["error"])
    assert "no CUDA GPU" in message and "'cuda'" in message, message
    assert "embedder" not in message.lower(), message


def test_a_huge_json_body_is_refused_while_it_streams_in(client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"options": {}, "pad": "'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}'

    answer = client.post("/v1/jobs", content=body(), headers={"Content-Type": "application/json"})
    assert_problem(answer, 413, "content-too-large")


def test_counts_and_captions_agree_between_the_job_and_its_hierarchy(
    client: httpx.Client, sample_dir: Path
) -> None:
    paths = sorted(sample_dir.glob("*.png"))[:4]
    good = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths[1:]]
    data = paths[0].read_bytes()
    truncated = ("files", ("zz_truncated.png", data[: len(data) // 2], "image/png"))  # header fine
    copy_first = ("files", ("0_copy.png", data, "image/png"))  # sorts first, keeps the image
    original = ("files", ("original.png", data, "image/png"))
    spec = {**LIGHT, "captions": {"original.png": "the caption of the original"}}
    job = submit(client, [*good, truncated, copy_first, original, images(sample_dir, 0)[-1]], spec).json()
    done = wait_for(client, f"/v1/jobs/{job['id']}", {"failed", "succeeded", "cancelled"}, timeout=180)
    assert done["status"] == "succeeded", done
    hierarchy = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
    assert (
        (done["images"], done["skipped"]) == (len(hierarchy["images"]), len(hierarchy["skipped"])) == (4, 2)
    )
    kept = next(i for i in hierarchy["images"] if i["file_name"] == "0_copy.png")
    assert kept["caption"] == "the caption of the original"


def test_an_undecodable_image_among_provided_captions_is_skipped_and_counted(
    client: httpx.Client, sample_dir: Path
) -> None:
    """Every caption provided: the caption worker decodes nothing, and the activation branch
    alone finds the truncated image. It is skipped everywhere, with the reason, and the job's
    counts agree with the hierarchy's."""
    paths = sorted(sample_dir.glob("*.png"))[:4]
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    data = paths[0].read_bytes()
    files.append(("files", ("truncated.png", data[: len(data) // 2], "image/png")))  # header fine
    names = [name for _, (name, *_) in files]
    spec = {**LIGHT, "captions": {name: f"a caption for {name}" for name in names}}
    job = submit(client, files, spec).json()
    done = wait_for(client, f"/v1/jobs/{job['id']}", {"failed", "succeeded", "cancelled"}, timeout=180)
    assert done["status"] == "succeeded", done
    hierarchy = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
    assert (
        (done["images"], done["skipped"]) == (len(hierarchy["images"]), len(hierarchy["skipped"])) == (4, 1)
    )
    assert hierarchy["skipped"][0]["file_name"] == "truncated.png" and hierarchy["skipped"][0]["reason"]
    assert "truncated.png" not in {i["file_name"] for i in hierarchy["images"]}
    assert sum(c["size"] for c in hierarchy["clusters"] if c["level"] == 1) == 4
