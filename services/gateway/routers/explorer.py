"""`/ui`: the explorer's page and assets (public: they hold no data), and `/ui/api/jobs/...`, the
small answers each page draws from, behind the same API keys and tenancy as `/v1` (another
tenant's job or thumbnail is a 404)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from services.gateway.deps import JobDep, StoreDep
from services.gateway.explorer.atlas import Atlas, read_top_images
from services.gateway.explorer.page import ASSETS, asset, index_html
from services.gateway.explorer.recent import Recent
from services.gateway.problems import Problem
from services.gateway.results import job_result, model_keys
from shared.jobs.jobstore import JobRecord
from shared.pipeline.model_view import model_store
from shared.storage import artifacts
from shared.storage.stores import PrefixedStore, S3Store, Store, get_npy
from shared.storage.thumbnails import ThumbnailIndex

router = APIRouter(tags=["explorer"])
_MEDIA = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


@router.get("/ui", include_in_schema=False)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/", response_class=HTMLResponse, summary="The explorer (web page)")
def ui_page() -> HTMLResponse:
    return HTMLResponse(index_html("api"), headers={"Cache-Control": "no-cache"})


@router.get("/ui/assets/{name}", include_in_schema=False)
def ui_asset(name: str) -> Response:
    if name not in ASSETS:
        raise Problem(404, "not-found", f"No asset {name}.")
    return Response(asset(name), media_type=_MEDIA[name], headers={"Cache-Control": "no-cache"})


class _AtlasCache:
    """Explorer indexes of finished jobs, a few at a time, keyed like the hierarchy cache (by
    when the job finished), so a relabelled job is indexed afresh. A hit costs nothing: the
    hierarchy is read and parsed on a miss only (it was parsed on every answer, 1.4 s each at
    16,000 images). The explorer reads hierarchy.json as plain JSON and skips the typed results
    cache, whose validation it does not need (several seconds for a large job). A page asks for
    two answers at once: the second waits for the first's parse instead of parsing again."""

    def __init__(self) -> None:
        self._atlases: Recent[str, Atlas] = Recent()
        self._thumbnails: Recent[str, ThumbnailIndex] = Recent()

    def get(self, job: JobRecord, store: S3Store) -> Atlas:
        if job.status != "succeeded":
            job_result(job, store)  # answers the 409 problem
        return self._atlases.get_or_make(f"{job.id}@{job.finished_at}", lambda: self._load(job, store))

    def thumbnails(self, job: JobRecord, store: S3Store) -> ThumbnailIndex:
        """Where the job's thumbnails lie in its packs, read on the first thumbnail asked for and
        kept once the job has finished (a running job's shards are still writing theirs)."""

        def make() -> ThumbnailIndex:
            return ThumbnailIndex(store, artifacts.job_prefix(job.id))

        if job.finished_at is None:
            return make()
        return self._thumbnails.get_or_make(f"{job.id}@{job.finished_at}", make)

    @staticmethod
    def _load(job: JobRecord, store: S3Store) -> Atlas:
        root = PrefixedStore(store, artifacts.job_prefix(job.id))
        # one listing request, not one per thousand thumbnails: the shard step writes every
        # decoded image's thumbnail, so a job has all of them or (made before them) none
        thumbs = next(iter(store.list(root.prefix + "thumbs/")), None) is not None
        keys = model_keys(root)
        # a multi-model job's pages are its baseline's, as its plain /v1 routes answer
        view: Store = root if len(keys) < 2 else model_store(root, keys[0])
        hierarchy = json.loads(view.get_bytes(artifacts.HIERARCHY))
        return Atlas(
            hierarchy,
            thumbs,
            lambda: read_top_images(view),
            title=f"Job {job.id[:12]}",
            embeddings=lambda: (
                get_npy(view, artifacts.EMBEDDINGS) if view.exists(artifacts.EMBEDDINGS) else None
            ),
            comparisons=[{"baseline": keys[0], "key": key} for key in keys[1:]],
        )


_atlases = _AtlasCache()


@router.get("/ui/api/jobs/{job_id}/summary")
def ui_summary(job: JobDep, store: StoreDep) -> dict[str, Any]:
    """Counts, levels, layers and models of a finished job; a multi-model job's also lists its
    comparisons (the baseline against each other model: /ui/api/jobs/{id}/comparisons/{key})."""
    return _atlases.get(job, store).summary()  # the comparisons read once, with the hierarchy


@router.get("/ui/api/jobs/{job_id}/children")
def ui_children(
    job: JobDep,
    store: StoreDep,
    parent: str | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=500),
) -> dict[str, Any]:
    """A page of the concepts under `parent` (the top level without it)."""
    atlas = _atlases.get(job, store)
    try:
        return atlas.children(parent, offset, limit)
    except KeyError:
        raise Problem(404, "not-found", f"No concept {parent} in job {job.id}.") from None


@router.get("/ui/api/jobs/{job_id}/search")
def ui_search(job: JobDep, store: StoreDep, q: str = Query("", max_length=200)) -> dict[str, Any]:
    """Concepts whose label holds every word of `q`."""
    return _atlases.get(job, store).search(q)


@router.get("/ui/api/jobs/{job_id}/concepts/{cluster_id}")
def ui_concept(job: JobDep, store: StoreDep, cluster_id: str) -> dict[str, Any]:
    """One concept's page: its first image page, neuron strips, statistics and relatives."""
    try:
        return _atlases.get(job, store).concept(cluster_id)
    except KeyError:
        raise Problem(404, "not-found", f"No concept {cluster_id} in job {job.id}.") from None


@router.get("/ui/api/jobs/{job_id}/concepts/{cluster_id}/images")
def ui_images(job: JobDep, store: StoreDep, cluster_id: str, page: int = Query(0, ge=0)) -> dict[str, Any]:
    """A page of a concept's images (ids and captions)."""
    try:
        return _atlases.get(job, store).images_page(cluster_id, page)
    except KeyError:
        raise Problem(404, "not-found", f"No concept {cluster_id} in job {job.id}.") from None


@router.get("/ui/api/jobs/{job_id}/neurons/{layer}/{channel}")
def ui_neuron(job: JobDep, store: StoreDep, layer: str, channel: int) -> dict[str, Any]:
    """The concepts holding a neuron and its most strongly activating images."""
    try:
        return _atlases.get(job, store).neuron(layer, channel)
    except KeyError:
        raise Problem(404, "not-found", f"No neuron {layer}/{channel} in job {job.id}.") from None


@router.get(
    "/ui/api/jobs/{job_id}/thumbs/{image_id}",
    response_class=Response,
    responses={200: {"description": "The thumbnail", "content": {"image/webp": {}}}},
)
def ui_thumbnail(job: JobDep, store: StoreDep, image_id: str) -> Response:
    """An image's thumbnail (WebP), for the key's own jobs only."""
    try:
        data = _atlases.thumbnails(job, store).read(image_id)
    except (ValueError, FileNotFoundError):
        raise Problem(404, "not-found", f"No thumbnail {image_id} in job {job.id}.") from None
    return Response(data, media_type="image/webp", headers={"Cache-Control": "private, max-age=3600"})
