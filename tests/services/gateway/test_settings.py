"""Suite settings refuse what would make a deployment unsafe."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings, check_auth_setting
from shared.settings import InfraSettings
from shared.webhooks.delivery import WebhookSettings, check_signing_key, tenant_secret


def test_placeholder_secrets_are_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_SECRET_KEY", "changeme")
    monkeypatch.setenv("S3_ACCESS_KEY", "real-access-key")
    with pytest.raises(ValidationError, match="S3_SECRET_KEY is a placeholder"):
        InfraSettings(environment="production")
    assert InfraSettings(environment="development").s3_secret_key == "changeme"


def test_time_limits_must_stay_below_the_visibility_timeout() -> None:
    with pytest.raises(ValidationError, match="VISIBILITY"):
        InfraSettings(environment="development", task_time_limit_s=8000, queue_visibility_timeout_s=7200)


def test_api_keys_are_stored_as_hashes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(b"key").hexdigest()
    monkeypatch.setenv("GATEWAY_API_KEYS", f'{{"{digest}": "acme"}}')
    assert GatewaySettings().api_keys == {digest: "acme"}
    monkeypatch.setenv("GATEWAY_API_KEYS", '{"plain-key": "acme"}')
    with pytest.raises(ValidationError, match="sha256"):
        GatewaySettings()


def test_auth_can_be_off_only_in_development() -> None:
    off = GatewaySettings(auth_disabled=True)
    check_auth_setting(InfraSettings(environment="development"), off)
    with pytest.raises(ValueError, match="development"):
        check_auth_setting(
            InfraSettings(
                environment="development", s3_access_key="a-real", s3_secret_key="b-real"
            ).model_copy(update={"environment": "production"}),
            off,
        )
    with pytest.raises(ValueError, match="No API keys"):
        check_auth_setting(InfraSettings(environment="development"), GatewaySettings())


def test_the_webhook_signing_key_must_be_real_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOK_SIGNING_KEY", raising=False)
    placeholder = WebhookSettings()
    check_signing_key("development", placeholder)
    with pytest.raises(ValueError, match="WEBHOOK_SIGNING_KEY is a placeholder"):
        check_signing_key("production", placeholder)
    check_signing_key("production", WebhookSettings(signing_key="a-long-random-key"))


def test_each_tenant_has_its_own_webhook_secret() -> None:
    a, b = tenant_secret("key", "acme"), tenant_secret("key", "globex")
    assert a.startswith("whsec_") and a != b and a == tenant_secret("key", "acme")
    assert tenant_secret("other-key", "acme") != a


def test_quotas_are_generous_by_default_and_a_tenant_may_have_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = GatewaySettings().quota("anyone")
    assert default.max_concurrent_jobs == 20 and default.max_llm_tokens_per_job == 10_000_000
    assert default.max_images_per_job == 100_000
    monkeypatch.setenv("GATEWAY_MAX_IMAGES_PER_JOB", "500")
    monkeypatch.setenv(
        "GATEWAY_TENANT_QUOTAS",
        '{"acme": {"max_concurrent_jobs": 2, "max_images_per_job": 9000, "max_llm_tokens_per_job": 0}}',
    )
    settings = GatewaySettings()
    acme = settings.quota("acme")
    assert (acme.max_concurrent_jobs, acme.max_llm_tokens_per_job) == (2, 0)  # 0: offline labels only
    assert acme.max_images_per_job == 500  # never above the deployment's limit
    assert settings.quota("other").max_concurrent_jobs == 20
    monkeypatch.setenv("GATEWAY_TENANT_QUOTAS", '{"acme": {"max_jobs": 2}}')
    with pytest.raises(ValueError, match="max_jobs"):
        GatewaySettings()
