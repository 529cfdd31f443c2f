"""Settings of the REST gateway (`GATEWAY_` + name)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import InfraSettings


class TenantQuota(BaseModel):
    """One tenant's own quotas (`GATEWAY_TENANT_QUOTAS`); a field left out keeps the default."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: int | None = Field(None, ge=1)
    max_images_per_job: int | None = Field(None, ge=1)
    max_llm_tokens_per_job: int | None = Field(None, ge=0)
    max_llm_tokens_per_window: int | None = Field(None, ge=1)
    max_model_parameters: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class Quota:
    """What one tenant may use, resolved from the defaults and its overrides."""

    max_concurrent_jobs: int
    max_images_per_job: int
    max_llm_tokens_per_job: int
    max_llm_tokens_per_window: int
    max_model_parameters: int


class GatewaySettings(BaseSettings):
    """The REST gateway: authentication, input limits and per-tenant quotas."""

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
    max_model_parameters: int = Field(
        150_000_000,
        ge=1,
        description="Largest model (parameters) a tenant may register; a tenant's own quota may "
        "lower or raise it. Keep it within what the activation workers' memory and their "
        "ACTIVATION_MAX_MODEL_PARAMETERS allow (150 M: a ViT-B or ConvNeXt-B).",
    )
    model_check_timeout_s: float = Field(
        300.0, gt=0, description="How long POST /v1/models waits for a worker to check the model."
    )
    # Quotas: generous by default, so they only bite where a deployment sets them.
    max_concurrent_jobs: int = Field(
        20, ge=1, description="Jobs a tenant may have queued, running or cancelling at once (429)."
    )
    max_llm_tokens_per_job: int = Field(
        10_000_000,
        ge=0,
        description="Prompt + completion tokens one labelling run of a job may spend at the LLM "
        "endpoint (the run fails once the next request would pass it); 0: offline labels only.",
    )
    max_llm_tokens_per_window: int = Field(
        200_000_000,
        ge=1,
        description="LLM tokens a tenant's labelling runs may spend in one spend window "
        "(LLM_SPEND_WINDOW_S, a day by default); once spent, new jobs and relabels answer 429 "
        "until the window ends.",
    )
    quota_retry_after_s: int = Field(30, ge=1, description="`Retry-After` of a concurrent-jobs 429.")
    tenant_quotas: dict[str, TenantQuota] = Field(
        default_factory=dict,
        description="tenant -> its own quotas (JSON), e.g. "
        '{"acme": {"max_concurrent_jobs": 2, "max_images_per_job": 1000}}.',
    )
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)

    def quota(self, tenant: str) -> Quota:
        """The tenant's quotas: its overrides, else the defaults. A tenant's images per job
        never exceed `max_images_per_job`, the deployment's hard limit."""
        own = self.tenant_quotas.get(tenant, TenantQuota())
        return Quota(
            max_concurrent_jobs=own.max_concurrent_jobs or self.max_concurrent_jobs,
            max_images_per_job=min(
                own.max_images_per_job or self.max_images_per_job, self.max_images_per_job
            ),
            max_llm_tokens_per_job=(
                self.max_llm_tokens_per_job
                if own.max_llm_tokens_per_job is None
                else own.max_llm_tokens_per_job
            ),
            max_llm_tokens_per_window=own.max_llm_tokens_per_window or self.max_llm_tokens_per_window,
            max_model_parameters=own.max_model_parameters or self.max_model_parameters,
        )

    @field_validator("api_keys", "tenant_quotas", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
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
