"""The labelling stage against a real OpenAI-compatible HTTP server, through the official client."""

from __future__ import annotations

import json
from typing import Any

import pytest

from neuron_atlas_client.errors import LabellingError
from services.labelling.budget import LLMBudgetExceeded
from services.labelling.settings import LabelSettings
from services.labelling.stage import label_clusters, labelling_summary
from shared.jobs.dependencies import DependencyDown, unavailable_dependency
from shared.models.sentence_embedder import Embedder
from shared.storage.stores import LocalStore, get_json
from tests.services.labelling.conftest import CAPTIONS
from tests.services.labelling.fake_llm import FakeLLM

LLM = "llm:fake-model@v1"


def run(store: LocalStore, embedder: Embedder, settings: LabelSettings) -> dict[str, Any]:
    label_clusters(store, CAPTIONS, embedder, settings)
    return {"clusters": get_json(store, "labels.json"), **labelling_summary(store).document()}


def settings_with(base: LabelSettings, **changes: Any) -> LabelSettings:
    return base.model_copy(update=changes)


def test_every_cluster_gets_the_endpoints_label_and_difference(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    result = run(job_store, embedder, llm_settings)
    labels = result["clusters"]
    assert fake_llm.requests == 6  # 4 level-1 clusters, 2 parents; differences come with parents
    assert labels["L1-0"]["label"].startswith("scenes like a ") and "dog" in labels["L1-0"]["label"]
    assert labels["L1-3"]["label"].startswith("scenes like a ") and "boat" in labels["L1-3"]["label"]
    assert labels["L2-0"]["label"] == f"kinds of {labels['L1-0']['label']}"
    assert [labels[f"L1-{i}"]["difference_description"] for i in range(4)] == [
        "detail 1",
        "detail 2",
        "detail 1",
        "detail 2",
    ]
    assert labels["L2-0"]["difference_description"] is None  # the top level has no parent
    for label in labels.values():
        assert (label["source"], label["model"], label["prompt_version"]) == (LLM, "fake-model", "v1")
        assert label["warning"] is None
    assert result["source"] == "llm" and result["endpoint"] == fake_llm.url
    assert result["labels"] == {LLM: 6}


def test_requests_carry_key_organisation_and_structured_output_schema(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    run(job_store, embedder, llm_settings)
    first = fake_llm.seen[0]
    assert first.headers["authorization"] == "Bearer test-key"
    assert first.headers["openai-organization"] == "org-test"
    assert first.body["model"] == "fake-model" and first.body["temperature"] == 0
    formats = {s.body["response_format"]["json_schema"]["name"] for s in fake_llm.seen}
    assert formats == {"cluster_label", "parent_label"}
    assert all(s.body["response_format"]["json_schema"]["strict"] for s in fake_llm.seen)


def test_accounting_is_exact(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    priced = settings_with(llm_settings, prompt_price_per_million=2.0, completion_price_per_million=8.0)
    spent = run(job_store, embedder, priced)["accounting"]
    prompt, completion = fake_llm.tokens()
    assert prompt > 0 and completion > 0
    assert spent == {
        "requests": 6,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cache_hits": 0,
        "retries": 0,
        "malformed_answers": 0,
        "fallbacks": 0,
        "cost_usd": round((prompt * 2.0 + completion * 8.0) / 1e6, 6),
    }


def test_second_run_is_answered_by_the_cache_without_a_request(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    first = run(job_store, embedder, llm_settings)
    second = run(job_store, embedder, llm_settings)
    assert fake_llm.requests == 6
    assert second["clusters"] == first["clusters"]
    assert second["accounting"]["cache_hits"] == 6
    assert second["accounting"]["requests"] == second["accounting"]["prompt_tokens"] == 0


def test_another_model_or_prompt_version_misses_the_cache(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    run(job_store, embedder, llm_settings)
    result = run(job_store, embedder, settings_with(llm_settings, model="other-model"))
    assert fake_llm.requests == 12
    assert result["accounting"]["cache_hits"] == 0
    assert {label["source"] for label in result["clusters"].values()} == {"llm:other-model@v1"}


def test_rate_limit_waits_as_long_as_retry_after_says(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.append(("429", "1"))
    result = run(job_store, embedder, settings_with(llm_settings, concurrency=1))
    refused, retried = fake_llm.seen[0], fake_llm.seen[1]
    assert refused.fault == "429"
    assert retried.at - refused.at >= 1.0  # backoff_base is 0.01 s: only Retry-After explains this
    assert result["accounting"]["retries"] == 1 and result["accounting"]["requests"] == 7
    assert {label["source"] for label in result["clusters"].values()} == {LLM}


def test_server_errors_are_retried_with_backoff(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.extend([("500",), ("500",)])
    result = run(job_store, embedder, settings_with(llm_settings, concurrency=1))
    assert result["accounting"]["retries"] == 2 and result["accounting"]["requests"] == 8
    assert {label["source"] for label in result["clusters"].values()} == {LLM}


def test_answer_slower_than_the_timeout_is_abandoned_and_retried(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.append(("slow",))
    fake_llm.slow_seconds = 1.5  # the client's timeout is 0.5 s
    result = run(job_store, embedder, settings_with(llm_settings, concurrency=1))
    spent = result["accounting"]
    assert spent["retries"] == 1 and spent["requests"] == 7
    assert {label["source"] for label in result["clusters"].values()} == {LLM}
    # The abandoned answer's tokens never reached the client, so they are not counted.
    received = [s.usage for s in fake_llm.seen if s.usage and s.fault != "slow"]
    assert spent["prompt_tokens"] == sum(u[0] for u in received)
    assert spent["completion_tokens"] == sum(u[1] for u in received)


def test_malformed_answer_is_asked_again_once_with_the_problem(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.append(("malformed",))
    result = run(job_store, embedder, settings_with(llm_settings, concurrency=1))
    again = fake_llm.seen[1].body["messages"]
    assert again[2] == {"role": "assistant", "content": '{"label": "unterminated'}
    assert "not valid: not JSON" in again[3]["content"]
    assert result["accounting"]["malformed_answers"] == 1 and result["accounting"]["requests"] == 7
    assert result["clusters"]["L1-0"]["source"] == LLM
    prompt, completion = fake_llm.tokens()  # a malformed answer's tokens are paid for too
    assert (result["accounting"]["prompt_tokens"], result["accounting"]["completion_tokens"]) == (
        prompt,
        completion,
    )


def test_malformed_twice_gives_the_offline_label_marked(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.extend([("malformed",), ("invalid",)])
    result = run(job_store, embedder, settings_with(llm_settings, concurrency=1))
    fallback = result["clusters"]["L1-0"]
    assert fallback["source"] == "offline-fallback"
    assert fallback["label"] in CAPTIONS[:3]  # the offline labeller's representative caption
    assert fallback["model"] is None
    assert "malformed answer twice" in fallback["warning"] and "schema" in fallback["warning"]
    assert result["clusters"]["L1-1"]["source"] == LLM
    assert result["accounting"]["fallbacks"] == 1 and result["accounting"]["malformed_answers"] == 2
    assert any("1 of 6 labels are offline" in w for w in result["warnings"])
    assert result["labels"] == {LLM: 5, "offline-fallback": 1}


def test_failing_endpoint_finishes_with_offline_labels_and_stops_asking(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.extend([("500",)] * 50)
    settings = settings_with(llm_settings, concurrency=1, max_retries=1, max_consecutive_failures=2)
    result = run(job_store, embedder, settings)
    assert fake_llm.requests == 4  # two clusters, two attempts each, then no more asking
    assert {label["source"] for label in result["clusters"].values()} == {"offline-fallback"}
    assert {label["difference_source"] for label in result["clusters"].values()} == {"offline-fallback", None}
    assert result["accounting"]["fallbacks"] == 6
    assert any("stopped asking" in w for w in result["warnings"])
    assert "HTTP 500" in result["clusters"]["L1-0"]["warning"]


def test_rejected_key_stops_asking_at_once(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.append(("401",))
    result = run(job_store, embedder, settings_with(llm_settings, concurrency=1))
    assert fake_llm.requests == 1
    assert result["accounting"]["fallbacks"] == 6


def test_strict_mode_fails_the_job_instead(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.extend([("500",)] * 50)
    with pytest.raises(LabellingError, match="gave no label for cluster L1-0"):
        run(job_store, embedder, settings_with(llm_settings, concurrency=1, max_retries=0, strict=True))
    assert not job_store.exists("labels.json")


def test_requests_in_flight_never_exceed_the_concurrency_limit(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.delay = 0.2
    run(job_store, embedder, settings_with(llm_settings, concurrency=2))
    assert fake_llm.max_in_flight == 2


def test_no_endpoint_means_offline_labels_said_plainly(job_store: LocalStore, embedder: Embedder) -> None:
    result = run(job_store, embedder, LabelSettings(cache=False))
    assert result["source"] == "offline" and result["model"] is None
    assert {label["source"] for label in result["clusters"].values()} == {"offline"}
    assert result["accounting"]["requests"] == 0
    assert result["quality"]["clusters_scored"] == 6


def test_quality_is_scored_per_cluster_and_summarised(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings
) -> None:
    result = run(job_store, embedder, llm_settings)
    scores = {cid: label["quality"] for cid, label in result["clusters"].items()}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert scores["L1-0"] > 0.9  # "scenes like a ... dog ..." against the cat captions
    quality = result["quality"]
    assert quality["clusters_scored"] == 6
    assert quality["mean"] == pytest.approx(sum(scores.values()) / 6, abs=1e-4)
    assert [level["clusters_scored"] for level in quality["per_level"]] == [4, 2]
    json.dumps(result)  # the summary is plain JSON for the job status


def test_json_object_mode_puts_the_schema_in_the_prompt(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    result = run(job_store, embedder, settings_with(llm_settings, response_format="json_object"))
    assert {s.body["response_format"]["type"] for s in fake_llm.seen} == {"json_object"}
    assert all("JSON Schema" in s.body["messages"][1]["content"] for s in fake_llm.seen)
    assert result["labels"] == {LLM: 6}


def test_rerun_after_a_crash_pays_only_for_the_answers_it_lacked(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.script.extend([("ok",)] * 4 + [("500",)])  # level 1 answered, then the job dies
    crashing = settings_with(llm_settings, concurrency=1, max_retries=0, strict=True)
    with pytest.raises(LabellingError):
        run(job_store, embedder, crashing)
    assert fake_llm.requests == 5
    result = run(job_store, embedder, settings_with(llm_settings, concurrency=1))
    assert fake_llm.requests == 7  # only the two parents are asked again
    assert result["accounting"]["cache_hits"] == 4 and result["accounting"]["requests"] == 2


def test_an_endpoint_that_is_down_raises_for_the_suite_to_wait_it_out(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    """Refused connections: the suite's task raises (job_task tries it again within
    outage_window_s), where the embedded run writes offline labels."""
    fake_llm.stop()
    try:
        with pytest.raises(DependencyDown) as raised:
            label_clusters(job_store, CAPTIONS, embedder, llm_settings, fail_when_unreachable=True)
        dependency = unavailable_dependency(raised.value)
        assert dependency is not None and dependency.kind == "llm"
        assert dependency.window_s == llm_settings.outage_window_s
        assert not job_store.exists("labels.json")
        result = run(job_store, embedder, llm_settings)
        assert {label["source"] for label in result["clusters"].values()} == {"offline-fallback"}
    finally:
        fake_llm.restart()


def test_an_endpoint_that_answers_with_errors_is_not_down(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM
) -> None:
    """It answered (HTTP 500): offline labels, marked, even where the suite would wait out an outage."""
    fake_llm.script.extend([("500",)] * 50)
    settings = settings_with(llm_settings, concurrency=1, max_retries=1, max_consecutive_failures=2)
    labels = label_clusters(job_store, CAPTIONS, embedder, settings, fail_when_unreachable=True)
    assert {label.source for label in labels.values()} == {"offline-fallback"}


def test_a_run_stops_before_a_request_that_would_pass_its_token_budget(
    job_store: LocalStore, embedder: Embedder, llm_settings: LabelSettings, fake_llm: FakeLLM, tmp_path: Any
) -> None:
    whole = run(job_store, embedder, settings_with(llm_settings, cache=False))["accounting"]["total_tokens"]
    sent = fake_llm.requests
    with pytest.raises(LLMBudgetExceeded) as refused:
        run(job_store, embedder, settings_with(llm_settings, cache=False, max_tokens_per_job=whole // 2))
    assert f"budget of {whole // 2:,} tokens" in refused.value.problem and "offline" in refused.value.fix
    assert fake_llm.requests - sent < sent  # it stopped part of the way
    ample = settings_with(llm_settings, cache=False, max_tokens_per_job=whole * 10)
    assert run(job_store, embedder, ample)["accounting"]["total_tokens"] == whole
