"""Webhooks end to end: the suite's workers deliver signed Standard Webhooks messages to a
loopback receiver (allowed in development only), retry with back-off up to the bound, keep the
delivery log, and refuse private targets."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from neuron_atlas_client import ApiError, Client
from shared.webhooks.delivery import UnsafeTarget, WebhookSettings, check_url, deliver, next_delay
from tests.integrations.conftest import LIGHT, FinishedJob
from tests.integrations.receiver import Receiver


def deliveries_until(atlas: Client, job_id: str, done: Any, timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        log = atlas.deliveries(job_id).deliveries
        if done(log) or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def test_the_job_end_is_delivered_signed_with_the_tenants_secret(
    atlas: Client, finished_job: FinishedJob, receiver: Receiver
) -> None:
    first, second = receiver.wait_for("/flaky", 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # stable across retries
    assert first.body == second.body
    secret = atlas.webhook_secret()
    payload = Webhook(secret).verify(second.body, second.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == finished_job.job.id and payload["data"]["status"] == "succeeded"
    with Client(atlas.config.url, "key-for-tenant-b") as other:
        other_secret = other.webhook_secret()
    assert other_secret != secret
    with pytest.raises(WebhookVerificationError):  # another tenant's secret does not verify it
        Webhook(other_secret).verify(second.body, second.headers)
    assert not [r for r in receiver.received if r.path == "/failed-only"]  # not its event


def test_the_delivery_log_shows_retries_and_their_bound(atlas: Client, finished_job: FinishedJob) -> None:
    def finished(log: list[Any]) -> bool:
        return sum(1 for d in log if d.outcome in ("delivered", "failed")) >= 2

    log = deliveries_until(atlas, finished_job.job.id, finished)
    flaky = [d for d in log if d.url.endswith("/flaky")]
    assert [(d.attempt, d.outcome, d.status_code) for d in flaky] == [
        (1, "retrying", 503),
        (2, "delivered", 204),
    ]
    assert flaky[0].next_attempt_in_s == 0.5
    down = [d for d in log if d.url.endswith("/down")]
    # WEBHOOK_RETRY_DELAYS_S is [0.5, 1] in the suite: three attempts, then it gives up.
    assert [(d.attempt, d.outcome) for d in down] == [(1, "retrying"), (2, "retrying"), (3, "failed")]
    assert len({d.webhook_id for d in down}) == 1 and all(d.event == "job.succeeded" for d in down)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:192.168.1.1]/hook",
        "http://[fd00:ec2::254]/",
        "http://100.64.0.1/hook",
        # IPv6 forms that reach IPv4 through NAT64 or 6to4, and site-local (issue 26)
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[64:ff9b::a00:1]/hook",
        "http://[2002:a00:1::]/hook",
        "http://[::ffff:0:a00:1]/hook",
        "http://[::a00:1]/hook",
        "http://[fec0::1]/hook",
        "ftp://example.com/hook",
        "http://user:pw@localhost/hook",
    ],
)
def test_private_and_metadata_targets_are_refused_at_submission(suite: Any, url: str) -> None:
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=30) as client:
        spec = {"options": LIGHT, "callbacks": [{"url": url}]}
        answer = client.post("/v1/jobs", json={**spec, "source": {"prefix": "imports/tenant-a/none/"}})
    assert answer.status_code == 422, answer.text
    assert answer.json()["type"].endswith(":invalid-callback")


def test_the_client_reports_a_refused_callback(atlas: Client, sample_dir: Any) -> None:
    with pytest.raises(ApiError) as refused:
        atlas.submit(sample_dir, LIGHT, callbacks=[{"url": "http://192.168.0.10/x"}])
    assert refused.value.kind == "invalid-callback" and "192.168.0.10" in str(refused.value)


def test_outside_development_only_public_https_targets_pass() -> None:
    public = {"hooks.example.com": ["93.184.216.34"], "localhost": ["127.0.0.1"]}

    def resolve(host: str, port: int) -> list[str]:
        return public[host]

    check_url("https://hooks.example.com/x", dev=False, resolver=resolve)
    for url in ("http://hooks.example.com/x", "https://localhost/x"):
        with pytest.raises(UnsafeTarget):
            check_url(url, dev=False, resolver=resolve)


def test_an_address_that_changes_after_the_check_is_refused_on_connect() -> None:
    answers = iter([["93.184.216.34"], ["10.0.0.7"]])  # DNS rebinding: public, then private

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    attempt = deliver("https://rebind.example/x", "whsec_" + "A" * 43, "msg_1", "{}", 2, False, rebinding)
    assert attempt.outcome == "refused"
    # the delivery log says why, but not where the name points (an oracle for internal DNS)
    assert attempt.error == (
        "rebind.example resolves to an address that is not public (loopback, private, link-local, "
        "shared, reserved or metadata)"
    )


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    attempt = deliver(f"{receiver.url}/redirect", "whsec_" + "A" * 43, "msg_r", json.dumps({}), 5, True)
    assert attempt.outcome == "failed" and attempt.status_code == 302
    assert "redirects are not followed" in (attempt.error or "")
    assert not [r for r in receiver.received if r.path == "/ok"]


def test_retries_stop_at_the_count_and_at_the_age_bound() -> None:
    settings = WebhookSettings(retry_delays_s=(5.0, 30.0), max_age_s=20.0)
    assert next_delay(settings, 1, first_at=0.0, now=1.0) == 5.0
    assert next_delay(settings, 2, first_at=0.0, now=7.0) is None  # 7 + 30 s is past the 20 s bound
    assert next_delay(WebhookSettings(retry_delays_s=(5.0,)), 2, first_at=0.0, now=6.0) is None  # count


def test_another_tenant_cannot_read_the_delivery_log(suite: Any, finished_job: FinishedJob) -> None:
    with Client(suite.url, suite.keys["tenant-b"]) as other, pytest.raises(ApiError) as hidden:
        other.deliveries(finished_job.job.id)
    assert hidden.value.status == 404
