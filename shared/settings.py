"""Settings of the service suite, from the environment (pydantic-settings).

One class for the infrastructure every service shares (Redis, object storage, queue limits), with
unprefixed names (`REDIS_URL`, `S3_ENDPOINT`, ...), and one class per service with its own prefix
(`GATEWAY_`, `CAPTION_`, ...) and `__` nesting. The embedded CLI reads none of them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    # A task that outlives the visibility timeout is handed to a second worker while the first
    # still runs; hard limit < visibility timeout rules that out.
    queue_visibility_timeout_s: int = Field(7200, ge=60)
    task_time_limit_s: int = Field(3600, ge=10)
    task_soft_time_limit_s: int = Field(3540, ge=5)
    # Liveness (shared/heartbeat.py): a worker touches this file from its event loop; unset, off.
    worker_heartbeat_file: Path | None = None
    worker_heartbeat_interval_s: float = Field(10.0, gt=0)

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


class GatewaySettings(BaseSettings):
    """The REST gateway: authentication and input limits."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore")

    auth_disabled: bool = Field(
        False, description="No API keys: every caller is tenant `local`. Development only."
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 hex digest of an API key -> its tenant (JSON object). "
        "Make one with `python -m services.gateway.keys TENANT`.",
    )
    max_request_bytes: int = Field(2 * 1024**3, ge=1024, description="Counted while the body streams in.")
    max_images_per_job: int = Field(100_000, ge=1)
    max_image_pixels: int = Field(50_000_000, ge=1)
    max_archive_entries: int = Field(200_000, ge=1)
    max_expanded_bytes: int = Field(8 * 1024**3, ge=1, description="Total size of unpacked archives.")
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_are_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for digest in value:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    "GATEWAY_API_KEYS maps sha256 hex digests of keys to tenants, never plain keys"
                )
        return value


class ModelWorkerSettings(BaseSettings):
    """A worker that loads models: where their weights are cached, and its default device.
    Each service reads these under its own prefix (`CAPTION_`, `ACTIVATION_`, `UNCERTAINTY_`)."""

    model_cache_dir: Path | None = Field(
        None, description="Model cache (HF cache, or torchvision checkpoints)."
    )
    device: str | None = Field(None, description="torch device when the job names none.")


class CaptionSettings(ModelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="CAPTION_", env_nested_delimiter="__", extra="ignore")


class ActivationSettings(ModelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="ACTIVATION_", env_nested_delimiter="__", extra="ignore")


class UncertaintySettings(ModelWorkerSettings):
    """The uncertainty workers load the job's target model too (MC dropout, ablations)."""

    model_config = SettingsConfigDict(env_prefix="UNCERTAINTY_", env_nested_delimiter="__", extra="ignore")


class EmbedClusterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBED_CLUSTER_", env_nested_delimiter="__", extra="ignore")

    device: str | None = Field(None, description="torch device when the job names none.")


@lru_cache(maxsize=1)
def get_infra_settings() -> InfraSettings:
    return InfraSettings()


@lru_cache(maxsize=1)
def get_gateway_settings() -> GatewaySettings:
    return GatewaySettings()


def check_auth_setting(infra: InfraSettings, gateway: GatewaySettings) -> None:
    """Auth may be off only in development; on, it needs at least one key."""
    if gateway.auth_disabled and infra.environment != "development":
        raise ValueError("GATEWAY_AUTH_DISABLED needs ENVIRONMENT=development")
    if not gateway.auth_disabled and not gateway.api_keys:
        raise ValueError(
            "No API keys: set GATEWAY_API_KEYS (python -m services.gateway.keys TENANT makes one), "
            "or GATEWAY_AUTH_DISABLED=true with ENVIRONMENT=development"
        )
