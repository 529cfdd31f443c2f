"""What the sync and async clients share: settings, the retry policy, how a submission becomes a
request, and how an answer becomes a typed object or an error. No I/O of its own beyond reading
the files a submission names."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel

from neuron_atlas_client.contracts.api import Callback, JobPublic
from neuron_atlas_client.contracts.problem import ProblemDetails
from neuron_atlas_client.options import PipelineOptions

URL_ENV, KEY_ENV = "NEURON_ATLAS_URL", "NEURON_ATLAS_API_KEY"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
USER_AGENT = "neuron-atlas-client/1"

Model = TypeVar("Model", bound=BaseModel)
ProgressCallback = Callable[[JobPublic], None]
# The logger's name from before the client had a distribution of its own: setups that name it work.
log = logging.getLogger("neuron_atlas.client")


class ClientError(Exception):
    """Base of every error the client raises."""


class ConfigError(ClientError):
    """No URL or no key: nothing was sent."""


class ApiError(ClientError):
    """The API answered with an error (problem+json, RFC 9457)."""

    def __init__(self, status: int, problem: ProblemDetails) -> None:
        self.status, self.problem = status, problem
        text = problem.title + (f": {problem.detail}" if problem.detail else "")
        super().__init__(f"{status} {text}" + (f" (what to do: {problem.fix})" if problem.fix else ""))

    @property
    def kind(self) -> str:
        """The problem's kind: the end of its `type` URN, e.g. `not-found`."""
        return self.problem.type.rsplit(":", 1)[-1]


class TransportError(ClientError):
    """The gateway could not be reached, after every retry."""


class JobFailed(ClientError):
    """`wait()` saw the job end as failed or cancelled."""

    def __init__(self, job: JobPublic) -> None:
        self.job = job
        reason = (
            f": {job.error.title}" + (f" ({job.error.detail})" if job.error.detail else "")
            if job.error
            else ""
        )
        super().__init__(f"job {job.id} {job.status}{reason}")


class WaitTimeout(ClientError):
    """`wait()` gave up before the job ended."""

    def __init__(self, job: JobPublic, timeout: float) -> None:
        self.job = job
        super().__init__(f"job {job.id} still {job.status} (stage {job.stage}) after {timeout:g} s")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on 429/5xx and connection errors; a `Retry-After` header wins over the back-off,
    and one longer than `max_wait_s` ends the retries (waiting that long is the caller's call)."""

    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_wait_s: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Full jitter over an exponential ceiling (attempt 0 is the first retry)."""
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retry number `attempt`, or None when not to retry."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if not retryable(response):
                return None
            after = retry_after(response.headers.get("retry-after"))
            if after is not None:
                return after if after <= self.max_wait_s else None
        return self.backoff(attempt)


@dataclass(frozen=True)
class RetryNotice:
    """What the client is about to wait for, told to `on_retry` (and logged) before each retry,
    so a caller can say why nothing seems to happen, e.g. a quota's minute-long Retry-After."""

    method: str
    path: str
    attempt: int  # 1 for the first retry
    delay_s: float
    status: int | None  # the answer's status; None when the connection failed
    retry_after: bool  # the wait is the answer's Retry-After, not the back-off
    kind: str | None = None  # the problem's kind, e.g. quota-exceeded

    def describe(self) -> str:
        if self.status == 429:
            why = "Retry-After" if self.retry_after else "back-off"
            return f"quota: waiting {self.delay_s:.0f} s before retrying ({why})"
        what = f"the gateway answered {self.status}" if self.status else "the gateway could not be reached"
        return f"{what}: retrying in {self.delay_s:.1f} s (retry {self.attempt})"


RetryCallback = Callable[[RetryNotice], None]


def retry_notice(
    method: str, path: str, attempt: int, delay_s: float, response: httpx.Response | None
) -> RetryNotice:
    """The notice of retry number `attempt + 1`, after `response` (None: no connection)."""
    if response is None:
        return RetryNotice(method, path, attempt + 1, delay_s, None, False)
    kind = None
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        try:
            kind = str(response.json().get("type", "")).rsplit(":", 1)[-1] or None
        except ValueError:
            kind = None
    after = retry_after(response.headers.get("retry-after"))
    return RetryNotice(method, path, attempt + 1, delay_s, response.status_code, after == delay_s, kind)


def notify_retry(on_retry: RetryCallback | None, notice: RetryNotice) -> None:
    log.info("%s %s: %s", notice.method, notice.path, notice.describe())
    if on_retry is not None:
        on_retry(notice)


def retryable(response: httpx.Response) -> bool:
    # 409 idempotency-key-in-use: the first attempt of this very submission is still running.
    return response.status_code in RETRY_STATUSES or (
        response.status_code == 409 and "idempotency-key-in-use" in response.text
    )


def retry_after(value: str | None) -> float | None:
    """`Retry-After`: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str | None
    timeout_s: float
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls, url: str | None, api_key: str | None, timeout_s: float, retry: RetryPolicy | None
    ) -> ClientConfig:
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise ConfigError(f"No gateway URL: pass url= or set {URL_ENV}.")
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        return cls(url.rstrip("/"), key or None, timeout_s, retry or RetryPolicy())

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def error_of(response: httpx.Response) -> ApiError:
    """The answer's problem document, or one made from the status when the body is not one."""
    try:
        problem = ProblemDetails.model_validate(response.json())
    except (ValueError, TypeError):
        problem = ProblemDetails.of("http-error", response.reason_phrase or "HTTP error", response.text[:300])
    return ApiError(response.status_code, problem)


def parse(response: httpx.Response, model: type[Model]) -> Model:
    if response.is_error:
        raise error_of(response)
    return model.model_validate_json(response.content)


# --- submissions ---------------------------------------------------------------------------------


@dataclass
class Submission:
    """One POST /v1/jobs, built once and sent as often as retries need: the same Idempotency-Key
    and the same bytes each time (files are rewound, never re-read from the folder)."""

    spec: dict[str, Any]
    files: list[tuple[str, IO[bytes]]] = field(default_factory=list)  # (name, seekable handle)
    prefix: str | None = None
    idempotency_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    _owned: list[IO[bytes]] = field(default_factory=list)

    def request_kwargs(self) -> dict[str, Any]:
        headers = {"Idempotency-Key": self.idempotency_key}
        if self.prefix is not None:
            return {"json": {**self.spec, "source": {"prefix": self.prefix}}, "headers": headers}
        for _, handle in self.files:
            handle.seek(0)
        # httpx streams file parts in chunks: a large archive is never held in memory.
        files = [("files", (name, handle, "application/octet-stream")) for name, handle in self.files]
        return {"data": {"spec": json.dumps(self.spec)}, "files": files, "headers": headers}

    def close(self) -> None:
        for handle in self._owned:
            handle.close()

    def __enter__(self) -> Submission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job_spec(
    options: PipelineOptions | Mapping[str, Any] | None,
    captions: Mapping[str, str] | None,
    callbacks: Sequence[Callback | Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The spec document; options are validated here, so a typo fails before any upload."""
    if isinstance(options, PipelineOptions):
        resolved = options.model_dump(mode="json", exclude_unset=True)
    else:
        resolved = PipelineOptions.model_validate(dict(options or {})).model_dump(
            mode="json", exclude_unset=True
        )
    spec: dict[str, Any] = {"options": resolved}
    if captions:
        spec["captions"] = dict(captions)
    if callbacks:
        spec["callbacks"] = [Callback.model_validate(c).model_dump(mode="json") for c in callbacks]
    return spec


def zip_folder(folder: Path) -> IO[bytes]:
    """Every file below `folder` (hidden ones aside) in a stored zip in a temporary file: one
    upload part however many images, streamed from disk."""
    handle = tempfile.TemporaryFile(prefix="neuron-atlas-upload-")  # noqa: SIM115 (the caller closes it)
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                archive.write(path, relative.as_posix())
    handle.seek(0)
    return handle


def build_submission(
    source: str | os.PathLike[str],
    spec: dict[str, Any],
    idempotency_key: str | None = None,
) -> Submission:
    """From a folder (zipped on the fly), a zip/tar archive or image file, or a bucket prefix
    (`s3://BUCKET/imports/TENANT/...` or `imports/TENANT/...`)."""
    key = idempotency_key or uuid.uuid4().hex
    text = os.fspath(source)
    if text.startswith("s3://") or text.startswith("imports/"):
        prefix = text.split("/", 3)[3] if text.startswith("s3://") and text.count("/") >= 3 else text
        return Submission(spec, prefix=prefix, idempotency_key=key)
    path = Path(text).expanduser()
    if path.is_dir():
        handle = zip_folder(path)
        name = f"{path.resolve().name or 'images'}.zip"
        return Submission(spec, files=[(name, handle)], idempotency_key=key, _owned=[handle])
    if path.is_file():
        handle = path.open("rb")
        return Submission(spec, files=[(path.name, handle)], idempotency_key=key, _owned=[handle])
    raise ConfigError(f"{text} is neither a folder, a file nor a bucket prefix (imports/TENANT/...).")


def artifact_target(folder: Path, name: str) -> Path:
    """Where artifact `name` goes under `folder`; a name that would leave it is refused."""
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ClientError(f"artifact name {name!r} leaves the download folder; not written")
    return target


def wanted_artifact(name: str, names: Sequence[str] | None, thumbs: bool) -> bool:
    """Whether a download of `names` (None: all), with or without thumbnails, takes `name`."""
    if name.startswith("thumbs/"):
        return thumbs
    return names is None or name in names


def is_terminal(job: JobPublic) -> bool:
    return job.status in TERMINAL


# --- models --------------------------------------------------------------------------------------


def model_fields(
    architecture: str,
    num_classes: int | None,
    class_names: Sequence[str] | None,
    preprocessing: Mapping[str, Any] | None,
) -> dict[str, str]:
    """The form fields of a model upload (POST /v1/models, multipart)."""
    fields = {"architecture": architecture}
    if num_classes is not None:
        fields["num_classes"] = str(num_classes)
    if class_names is not None:
        fields["class_names"] = json.dumps(list(class_names))
    if preprocessing is not None:
        fields["preprocessing"] = json.dumps(dict(preprocessing))
    return fields


def model_import_body(architecture: str, kind: str, uri: str, **fields: Any) -> dict[str, Any]:
    """The JSON body of a model import: from the bucket area, an MLflow URI or a hub id."""
    return {"architecture": architecture, "source": {"kind": kind, "uri": uri}, **fields}
