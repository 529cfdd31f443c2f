"""Settings the whole service suite shares, from the environment (pydantic-settings).

One class for the infrastructure every service shares (Redis, object storage, queue limits), with
unprefixed names (`REDIS_URL`, `S3_ENDPOINT`, ...), and the base of the model-loading workers'
settings. Each service keeps its own class, with its own prefix (`GATEWAY_`, `CAPTION_`, ...) and
`__` nesting, in its folder (`services/<service>/settings.py`). The embedded CLI reads none.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from neuron_atlas_client.options import DEFAULT_CAPTION_MODEL, DEFAULT_EMBED_MODEL

Environment = Literal["development", "production"]

# Secrets that ship in examples and docs; a deployment that still uses one is misconfigured.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "changethis", "minioadmin", "password", "secret"})


class InfraSettings(BaseSettings):
    """Redis, object storage and queue limits: the same for every service of one deployment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Environment = Field(
        "production", description="`development` allows placeholder secrets and turning auth off."
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint: str = Field("http://127.0.0.1:9000", description="URL the services reach S3 at.")
    s3_public_endpoint: str | None = Field(
        None, description="URL that users reach S3 at, for presigned links; default: s3_endpoint."
    )
    s3_bucket: str = "neuron-atlas"
    s3_access_key: str = "changeme"
    s3_secret_key: str = "changeme"
    s3_region: str = Field("us-east-1", description="Fixed, so presigning never asks the server.")
    s3_connect_timeout_s: float = Field(5.0, gt=0)
    s3_read_timeout_s: float = Field(60.0, gt=0)
    s3_retries: int = Field(3, ge=0, le=10)
    # A task that fails because object storage or Redis stopped answering is tried again, with
    # growing pauses (5, 10, 20, 30, 30 ... s), for this long before the job fails (shared.jobs.tasks).
    dependency_retry_window_s: int = Field(120, ge=0)
    # A task that outlives the visibility timeout is handed to a second worker while the first
    # still runs; hard limit < visibility timeout rules that out.
    queue_visibility_timeout_s: int = Field(7200, ge=60)
    # A running task beats in Redis; one silent for this long (its worker killed, or cut off from
    # Redis) is sent again, at most TASK_MAX_RESENDS times, then its job fails (shared.jobs.reconciler).
    task_stall_s: float = Field(120.0, ge=1)
    task_max_resends: int = Field(2, ge=0)
    task_time_limit_s: int = Field(3600, ge=10)
    task_soft_time_limit_s: int = Field(3540, ge=5)
    # Liveness (shared/jobs/heartbeat.py): a worker touches this file from its event loop; unset, off.
    worker_heartbeat_file: Path | None = None
    worker_heartbeat_interval_s: float = Field(10.0, gt=0)
    # Prometheus: a worker serves /metrics on this port (unset: off); see shared/observability/metrics.py.
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    # A tenant's LLM spend is counted in fixed windows of this length (UTC-aligned; a day by
    # default): the gateway refuses new labelling work once the window's tokens are used up.
    llm_spend_window_s: int = Field(86_400, ge=60)
    # An image worker decodes at most this many pixels at once, over all its decoding threads
    # (the manifest's width x height; about 3 bytes each before an image is reduced).
    decode_pixel_budget: int = Field(100_000_000, ge=1)
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server that model imports (models:/..., runs:/...) read. Every "
        "tenant can import any model it holds: give it one a tenant may see in whole.",
    )
    allowed_hub_models: tuple[str, ...] = Field(
        (DEFAULT_CAPTION_MODEL, DEFAULT_EMBED_MODEL),
        description="Hub model ids that API callers may name: options.caption_model, "
        "options.embed_model and hub imports (POST /v1/models). Anything else, and any path, is "
        "refused: a name is the operator's to allow, since a worker loads what it names. JSON "
        'list, e.g. ["Salesforce/blip-image-captioning-large", "timm/resnet50.a1_in1k"].',
    )
    log_format: Literal["json", "text"] = Field("json", description="json: one object a line, with job_id.")

    @field_validator("s3_endpoint", "s3_public_endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. http://minio:9000")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.task_soft_time_limit_s < self.task_time_limit_s < self.queue_visibility_timeout_s:
            raise ValueError(
                "need TASK_SOFT_TIME_LIMIT_S < TASK_TIME_LIMIT_S < QUEUE_VISIBILITY_TIMEOUT_S "
                "so a running task is never delivered twice"
            )
        if self.environment != "development":
            for name in ("s3_access_key", "s3_secret_key"):
                if getattr(self, name) in PLACEHOLDER_SECRETS:
                    raise ValueError(
                        f"{name.upper()} is a placeholder; set a real secret, or "
                        "ENVIRONMENT=development for local use"
                    )
        return self

    @property
    def public_endpoint(self) -> str:
        return self.s3_public_endpoint or self.s3_endpoint


class ModelWorkerSettings(BaseSettings):
    """A worker that loads models: where their weights are cached, and its default device.
    Each service reads these under its own prefix (`CAPTION_`, `ACTIVATION_`, `UNCERTAINTY_`)."""

    model_cache_dir: Path | None = Field(
        None, description="Model cache (HF cache, or torchvision checkpoints)."
    )
    device: str | None = Field(None, description="torch device when the job names none.")
    max_model_parameters: int | None = Field(
        150_000_000,
        ge=1,
        description="Models with more parameters are refused before they are built (meta device). "
        "A float32 model takes 4 bytes a parameter, twice while its weights load, on top of the "
        "worker's own 1.6 GB: 150 M (a ViT-B or ConvNeXt-B fits) peaks near 2.8 GB, under the "
        "activation pods' 3 Gi limit. Raise it with the limit (a ViT-L, 304 M, needs about 4.5 Gi).",
    )
    registered_model_dir: Path = Field(
        Path(tempfile.gettempdir()) / "neuron-atlas-models",
        description="Where registered models' weights are kept once fetched (writable; the model "
        "cache may be baked into a read-only image).",
    )


@lru_cache(maxsize=1)
def get_infra_settings() -> InfraSettings:
    return InfraSettings()
