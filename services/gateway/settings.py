"""Settings of the REST gateway (`GATEWAY_` + name)."""

from __future__ import annotations

import json
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import InfraSettings


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
    max_file_bytes: int = Field(
        160 * 1024**2,
        ge=1024,
        description="Largest single image file, sent or unpacked; larger ones are skipped unread "
        "(a 50-megapixel BMP is 150 MB).",
    )
    max_model_bytes: int = Field(
        1024**3, ge=1024, description="Largest model weights file (POST /v1/models); 1 GiB holds a ViT-L."
    )
    model_check_timeout_s: float = Field(
        300.0, gt=0, description="How long POST /v1/models waits for a worker to check the model."
    )
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
