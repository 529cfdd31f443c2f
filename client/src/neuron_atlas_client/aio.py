"""The asynchronous client: the same calls as `Client`, awaited (for asyncio pipelines).

The source of both clients: `sync.py` is generated from this file by unasync
(`python -m neuron_atlas_client._generate`), so an edit here is an edit to both."""

from __future__ import annotations

import os
import tempfile
import time
from asyncio import sleep  # time.sleep, once generated into sync.py
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from neuron_atlas_client._core import (
    ClientConfig,
    JobFailed,
    Model,
    ProgressCallback,
    RetryCallback,
    RetryPolicy,
    Submission,
    TransportError,
    WaitTimeout,
    artifact_target,
    build_submission,
    error_of,
    is_terminal,
    job_spec,
    model_fields,
    model_import_body,
    notify_retry,
    parse,
    retry_notice,
    wanted_artifact,
)
from neuron_atlas_client.contracts.api import (
    ArtifactsPublic,
    Callback,
    DeliveriesPublic,
    JobPublic,
    JobsPublic,
    ModelsPublic,
    NeuronPublic,
    WebhookSecretPublic,
)
from neuron_atlas_client.contracts.comparison import Comparison, ComparisonPublic
from neuron_atlas_client.contracts.hierarchy import Cluster, Hierarchy
from neuron_atlas_client.contracts.models import ModelLayers, ModelRecord
from neuron_atlas_client.contracts.multi_model import MultiModelResult
from neuron_atlas_client.mlflow_log import job_tags, log_result, report_artifacts, require_mlflow
from neuron_atlas_client.options import PipelineOptions


class AsyncClient:
    """Neuron Atlas over HTTP. Every call retries 429/5xx and lost connections (honouring
    `Retry-After`); errors come back as `ApiError` with the API's problem document."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_retry: RetryCallback | None = None,
    ) -> None:
        """`on_retry(notice)` is called before each wait to retry (a quota's Retry-After, a 5xx,
        a lost connection), so a caller can say why nothing seems to happen."""
        self.config = ClientConfig.resolve(url, api_key, timeout_s, retry)
        self.on_retry = on_retry
        self._http = httpx.AsyncClient(
            base_url=self.config.url,
            headers=self.config.headers(),
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            transport=transport,
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the request loop ----------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with the retry policy; the answer as is (errors included)."""
        retry, attempt = self.config.retry, 0
        while True:
            answer: httpx.Response | None = None
            try:
                answer = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                delay = retry.delay(attempt, None)
                if delay is None:
                    raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            else:
                delay = retry.delay(attempt, answer) if answer.is_error else None
                if delay is None:
                    return answer
            notify_retry(self.on_retry, retry_notice(method, path, attempt, delay, answer))
            await sleep(delay)
            attempt += 1
            if "files" in kwargs:  # rewind the upload for the next attempt
                kwargs = {**kwargs, "files": _rewound(kwargs["files"])}

    async def _get(self, path: str, model: type[Model], **params: Any) -> Model:
        return parse(await self.request("GET", path, params=params or None), model)

    # --- jobs ----------------------------------------------------------------------------------

    async def submit(
        self,
        source: str | os.PathLike[str],
        options: PipelineOptions | Mapping[str, Any] | None = None,
        *,
        captions: Mapping[str, str] | None = None,
        callbacks: Sequence[Callback | Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
    ) -> JobPublic:
        """Submit a folder, an archive or image, or a bucket prefix (`imports/TENANT/...`).
        One Idempotency-Key per call, reused by its retries: a retry never makes a second job."""
        with build_submission(source, job_spec(options, captions, callbacks), idempotency_key) as sub:
            return await self.submit_prepared(sub)

    async def submit_prepared(self, submission: Submission) -> JobPublic:
        return parse(await self.request("POST", "/v1/jobs", **submission.request_kwargs()), JobPublic)

    async def job(self, job_id: str) -> JobPublic:
        return await self._get(f"/v1/jobs/{job_id}", JobPublic)

    async def list_page(self, page_size: int = 20, page_token: str | None = None) -> JobsPublic:
        params: dict[str, Any] = {"page_size": page_size}
        if page_token:
            params["page_token"] = page_token
        return await self._get("/v1/jobs", JobsPublic, **params)

    async def jobs(self, page_size: int = 50, limit: int | None = None) -> AsyncIterator[JobPublic]:
        """The tenant's jobs, newest first, page after page."""
        token: str | None = None
        seen = 0
        while True:
            page = await self.list_page(page_size, token)
            for job in page.jobs:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield job
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def cancel(self, job_id: str) -> JobPublic:
        return parse(await self.request("POST", f"/v1/jobs/{job_id}:cancel"), JobPublic)

    async def delete(self, job_id: str) -> None:
        response = await self.request("DELETE", f"/v1/jobs/{job_id}")
        if response.is_error:
            raise error_of(response)

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_interval_s: float = 2.0,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> JobPublic:
        """Poll until the job ends; `on_progress(job)` after every poll. Raises `WaitTimeout`
        after `timeout_s`, and `JobFailed` when it failed or was cancelled (unless told not to)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = await self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if is_terminal(job):
                if raise_on_failure and job.status != "succeeded":
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout_s or 0.0)
            pause = poll_interval_s if deadline is None else min(poll_interval_s, deadline - time.monotonic())
            await sleep(max(0.0, pause))

    # --- models ----------------------------------------------------------------------------------

    async def upload_model(
        self,
        weights: str | os.PathLike[str],
        architecture: str,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Register a model from its .safetensors state dict (checked before it is recorded)."""
        path = Path(weights)
        with path.open("rb") as handle:
            return parse(
                await self.request(
                    "POST",
                    "/v1/models",
                    files=[("weights", (path.name, handle, "application/octet-stream"))],
                    data=model_fields(architecture, num_classes, class_names, preprocessing),
                ),
                ModelRecord,
            )

    async def import_model(self, architecture: str, kind: str, uri: str, **fields: Any) -> ModelRecord:
        """Register a model from `kind` "bucket" (a prefix under imports/TENANT/), "mlflow"
        (models:/NAME/VERSION, runs:/ID/PATH) or "hub" (a repository id)."""
        body = model_import_body(architecture, kind, uri, **fields)
        return parse(await self.request("POST", "/v1/models", json=body), ModelRecord)

    async def models(self, page_size: int = 100) -> AsyncIterator[ModelRecord]:
        """The tenant's models, page after page."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"page_size": page_size, **({"page_token": token} if token else {})}
            page = await self._get("/v1/models", ModelsPublic, **params)
            for item in page.items:
                yield item
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def model(self, model_id: str) -> ModelRecord:
        return await self._get(f"/v1/models/{model_id}", ModelRecord)

    async def model_layers(self, model_id: str) -> ModelLayers:
        return await self._get(f"/v1/models/{model_id}/layers", ModelLayers)

    async def delete_model(self, model_id: str) -> None:
        response = await self.request("DELETE", f"/v1/models/{model_id}")
        if response.is_error:
            raise error_of(response)

    # --- comparisons (docs/comparison.md) -------------------------------------------------------

    async def compare(self, a: str, b: str, alpha: float | None = None) -> ComparisonPublic:
        """Compare finished job `a` (the reference) with job `b` over the same images."""
        body = {"a": a, "b": b} | ({} if alpha is None else {"alpha": alpha})
        return parse(await self.request("POST", "/v1/comparisons", json=body), ComparisonPublic)

    async def comparison(self, comparison_id: str) -> Comparison:
        """The whole comparison.json of a comparison."""
        return await self._get(f"/v1/comparisons/{comparison_id}/comparison", Comparison)

    # --- a job of several models (docs/comparison.md, 'One job, several models') ---------------

    async def job_models(self, job_id: str) -> MultiModelResult:
        """A multi-model job's models.json: one concept tree, each model's group per concept."""
        return await self._get(f"/v1/jobs/{job_id}/models", MultiModelResult)

    async def job_comparison(self, job_id: str, model: str | None = None) -> Comparison:
        """A multi-model job's comparison of its baseline with model `model` (default: the second)."""
        params = None if model is None else {"model": model}
        return parse(await self.request("GET", f"/v1/jobs/{job_id}/comparison", params=params), Comparison)

    # --- results -------------------------------------------------------------------------------

    async def hierarchy(self, job_id: str, model: str | None = None) -> Hierarchy:
        """The job's hierarchy.json; in a multi-model job, model `model`'s (default: the baseline's)."""
        if model is not None:
            return await self._get(f"/v1/jobs/{job_id}/models/{model}/hierarchy", Hierarchy)
        return await self._get(f"/v1/jobs/{job_id}/hierarchy", Hierarchy)

    async def concepts(self, job_id: str, level: int | None = None) -> list[Cluster]:
        """The hierarchy's concepts (clusters), all or one level's."""
        hierarchy = await self.hierarchy(job_id)
        return [c for c in hierarchy.clusters if level is None or c.level == level]

    async def concept(self, job_id: str, cluster_id: str) -> Cluster:
        return await self._get(f"/v1/jobs/{job_id}/clusters/{cluster_id}", Cluster)

    async def neuron(self, job_id: str, layer: str, channel: int) -> NeuronPublic:
        return await self._get(f"/v1/jobs/{job_id}/neurons/{layer}/{channel}", NeuronPublic)

    async def artifacts(self, job_id: str, *, thumbs: bool = False) -> ArtifactsPublic:
        """Presigned links to the job's artifacts; `thumbs`: the explorer's thumbnails too."""
        params = {"thumbs": "true"} if thumbs else {}
        return await self._get(f"/v1/jobs/{job_id}/artifacts", ArtifactsPublic, **params)

    async def download_artifacts(
        self,
        job_id: str,
        dest: str | os.PathLike[str],
        names: Sequence[str] | None = None,
        *,
        thumbs: bool | None = None,
    ) -> list[Path]:
        """Stream the job's artifacts (all, or those named) into `dest`, under their names.
        `thumbs` (default: when all are downloaded) adds `thumbs/`, so `neuron-atlas report` on
        `dest` shows pictures."""
        folder = Path(dest)
        with_thumbs = names is None if thumbs is None else thumbs
        written = []
        # Presigned: each link is its own authorisation, so the API key is not sent to S3. One
        # connection for all of them (a job has a thumbnail per image).
        async with httpx.AsyncClient(timeout=self.config.timeout_s) as plain:
            found = await self.artifacts(job_id, thumbs=with_thumbs)
            for artifact in found.artifacts:
                if not wanted_artifact(artifact.name, names, with_thumbs):
                    continue
                target = artifact_target(folder, artifact.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                async with plain.stream("GET", artifact.url) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_of(response)
                    with target.open("wb") as out:
                        async for chunk in response.aiter_bytes(1 << 20):
                            out.write(chunk)
                written.append(target)
        return written

    async def deliveries(self, job_id: str) -> DeliveriesPublic:
        return await self._get(f"/v1/jobs/{job_id}/deliveries", DeliveriesPublic)

    async def log_to_mlflow(self, job_id: str, **kwargs: Any) -> str:
        """Log the finished job to an MLflow run; the run id. Its artifacts are downloaded
        (hierarchy.json and what the explorer report needs), then logged like a result folder,
        tagged with the job id. Keyword arguments: `neuron_atlas_client.mlflow_log.log_result`'s
        (tracking_uri, experiment, run_id, run_name, model_sha256, tags). MLflow's own client is
        synchronous, so the logging itself blocks (an async caller's event loop too)."""
        require_mlflow()  # before anything is downloaded
        with tempfile.TemporaryDirectory(prefix="neuron-atlas-mlflow-") as tmp:
            found = await self.artifacts(job_id)
            await self.download_artifacts(job_id, tmp, report_artifacts(found), thumbs=False)
            kwargs["tags"] = job_tags(kwargs.get("tags"), job_id, self.config.url)
            return log_result(tmp, **kwargs)

    async def webhook_secret(self) -> str:
        """The tenant's webhook signing secret (`whsec_...`), for verifying deliveries."""
        secret = await self._get("/v1/webhooks/secret", WebhookSecretPublic)
        return secret.secret


def _rewound(files: list[Any]) -> list[Any]:
    for _, (_, handle, _) in files:
        handle.seek(0)
    return files
