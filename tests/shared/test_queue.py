"""The Celery app, its routes and one job's canvas."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from celery import Celery

from shared.jobs import queue
from shared.pipeline import stages
from shared.settings import InfraSettings, get_infra_settings


@pytest.fixture(autouse=True)
def development_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`job_canvas` signs with the process-wide app, built from the environment."""
    monkeypatch.setenv("ENVIRONMENT", "development")
    get_infra_settings.cache_clear()
    queue.get_app.cache_clear()
    yield
    get_infra_settings.cache_clear()
    queue.get_app.cache_clear()


@pytest.fixture
def app() -> Celery:
    app = Celery("test")
    queue.configure(app, InfraSettings(environment="development"))
    return app


def test_every_task_name_routes_to_its_services_queue(app: Celery) -> None:
    router = app.amqp.router
    expected = {
        "caption.shard": "caption",
        "activation.shard": "activation",
        "embed_cluster.run": "embed_cluster",
        "activation.groups": "activation",
        "labelling.label": "labelling",
        "uncertainty.run": "uncertainty",
        "pipeline.assemble": "labelling",
        queue.LABELLING_RELABEL: "labelling",
        queue.MODEL_IMPORT: "activation",
        queue.WEBHOOKS_DELIVER: "labelling",
    }
    for name, expected_queue in expected.items():
        assert router.route({}, name)["queue"].name == expected_queue, name


def test_workers_ack_late_take_one_message_and_stop_before_redelivery(app: Celery) -> None:
    conf = app.conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert (
        conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
    )


def _flatten(node: dict) -> list[dict]:  # type: ignore[type-arg]
    found = [node] if node.get("task") not in (None, "celery.chord", "celery.group", "celery.chain") else []
    kwargs = node.get("kwargs", {})
    for child in [
        *kwargs.get("tasks", []),
        *([kwargs["body"]] if "body" in kwargs else []),
        *kwargs.get("header", []),
    ]:
        found += _flatten(child)
    return found


def test_canvas_runs_both_branches_in_shards_and_carries_only_ids() -> None:
    canvas = queue.job_canvas("0" * 32, shards=100)
    document = json.loads(json.dumps(canvas))  # JSON-serialisable, as the broker needs
    tasks = _flatten(document)
    names = [t["task"] for t in tasks]
    assert names.count("caption.shard") == 100 and names.count("activation.shard") == 100
    for stage in stages.active(1):
        if stage.queued and stage.per == "job":
            assert names.count(stage.task) == 1, stage.task
    assert "pipeline.compare" not in names  # a job of one model has no comparison of its own
    assert all(t["args"][0] == "0" * 32 and len(t["args"]) <= 2 for t in tasks)
    # several models: the same tasks (each per-model task runs every model), then the comparison
    several = [t["task"] for t in _flatten(json.loads(json.dumps(queue.job_canvas("0" * 32, 100, 3))))]
    assert sorted(several) == sorted([*names, "pipeline.compare"])
    assert all(t["immutable"] for t in tasks)
    assert len(json.dumps(document)) < 64 * 1024 * 2  # the whole job, 200 shard tasks: ids only


def test_canvas_follows_the_stage_tables_waves() -> None:
    """Shards of both branches, then embedding (it waits for the activation shards: they decide
    which images decode when the caption shards decode nothing), groups, labelling beside
    uncertainty, and the assembly once both are done."""
    canvas = json.loads(json.dumps(queue.job_canvas("1" * 32, shards=2)))
    assert canvas["task"] == "celery.chain"
    first, last = canvas["kwargs"]["tasks"]  # Celery folds the steps after a chord into its body
    assert first["task"] == "celery.chord" and last["task"] == "celery.chord"
    assert sorted(t["task"] for t in first["kwargs"]["header"]) == sorted(
        ["caption.shard", "activation.shard"] * 2
    )
    after_shards = [t["task"] for t in first["kwargs"]["body"]["kwargs"]["tasks"]]
    assert after_shards == ["embed_cluster.run", "activation.groups"]
    assert sorted(t["task"] for t in last["kwargs"]["header"]) == ["labelling.label", "uncertainty.run"]
    assert last["kwargs"]["body"]["task"] == "pipeline.assemble"
