"""The stage table (shared/pipeline/stages.py) is the pipeline's one definition: these tests hold every
place that runs or describes the pipeline to it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.jobs.jobstore import STAGES
from shared.jobs.queue import QUEUES, ROUTES, TASK_STAGES
from shared.pipeline import stages
from tests.deploy.manifests import is_worker, render, worker_queue, workloads

ROOT = Path(__file__).resolve().parents[2]


def test_every_entry_exists_and_takes_a_job_and_a_shard() -> None:
    for stage in stages.PIPELINE:
        if stage.queued:
            entry = stages.entry_function(stage)
            assert callable(entry), stage.entry
            assert list(entry.__code__.co_varnames[:2]) == ["job", "shard"], stage.entry


def test_names_queues_routes_and_task_stages_come_from_the_table() -> None:
    assert STAGES == stages.STAGE_NAMES
    assert QUEUES == stages.SERVICES
    for stage in stages.PIPELINE:
        if stage.queued:
            assert ROUTES[stage.task] == {"queue": stage.service}
            assert TASK_STAGES[stage.task] == stage.name


def test_waves_respect_after_and_reject_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    for models in (1, 2):
        waves = stages.waves(models)
        seen: set[str] = {"ingest"}
        for wave in waves:
            assert all(set(stage.after) <= seen for stage in wave)
            seen |= {stage.name for stage in wave}
        assert seen == {stage.name for stage in stages.active(models)}
    assert seen == set(stages.STAGE_NAMES)
    assert [s.name for s in waves[0]] == ["caption", "activation"]
    looped = (
        stages.Stage("a", "x", "job", "m:a", "x.a", (), (), after=("b",)),
        stages.Stage("b", "x", "job", "m:b", "x.b", (), (), after=("a",)),
    )
    monkeypatch.setattr(stages, "PIPELINE", looped)
    with pytest.raises(ValueError, match="wait for each other"):
        stages.waves()


def test_each_service_registers_a_task_for_each_of_its_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker runs its service's tasks module: every stage the table gives the service is
    registered there, under the table's task name."""
    import importlib

    from shared.jobs.queue import get_app
    from shared.settings import get_infra_settings

    monkeypatch.setenv("ENVIRONMENT", "development")  # the Celery app is built from the environment
    get_infra_settings.cache_clear()
    get_app.cache_clear()

    for service in stages.SERVICES:
        module = importlib.import_module(f"services.{service}.tasks")
        mine = {stage.name for stage in stages.PIPELINE if stage.service == service}
        assert set(module.TASKS) == mine, service
        for name, task in module.TASKS.items():
            assert task.name == stages.BY_NAME[name].task
    get_infra_settings.cache_clear()
    get_app.cache_clear()


def test_docker_compose_runs_a_worker_for_every_service_of_the_table() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    queues = set()
    for service in compose["services"].values():
        command = service.get("command") or []
        if command[:1] == ["celery"]:
            app = command[command.index("-A") + 1]
            queue = command[command.index("-Q") + 1]
            assert app == f"services.{queue}.worker", (app, queue)
            queues.add(queue)
    assert queues == set(stages.SERVICES)


@pytest.mark.parametrize("overlay", ["k8s", "k8s/gpu"])
def test_kubernetes_runs_a_worker_for_every_service_of_the_table(overlay: str) -> None:
    queues = {worker_queue(w) for w in workloads(render(overlay)) if is_worker(w)}
    assert queues == set(stages.SERVICES)


def test_architecture_doc_has_the_tables_current_picture_and_table() -> None:
    path = ROOT / "docs" / "architecture.md"
    text = path.read_text()
    assert stages.architecture_text(text) == text, (
        "run `python -m shared.pipeline.stages` and commit docs/architecture.md"
    )


def test_per_model_stages_and_the_comparison_stage_of_a_multi_model_job() -> None:
    per_model = [s.name for s in stages.PIPELINE if s.per_model]
    assert per_model == ["activation", "groups", "uncertainty", "assemble"]
    # one model: today's stages, waves and totals, the comparison stage absent
    assert "compare" not in [s.name for s in stages.active(1)]
    assert [[s.name for s in wave] for wave in stages.waves(1)][-1] == ["assemble"]
    assert stages.totals(10) == {
        "ingest": 10,
        "caption": 10,
        "activation": 10,
        "embed_cluster": 1,
        "groups": 1,
        "labelling": 1,
        "uncertainty": 1,
        "assemble": 1,
    }
    # several: the comparison last, and the activation images counted once per model
    assert [[s.name for s in wave] for wave in stages.waves(3)][-2:] == [["assemble"], ["compare"]]
    totals = stages.totals(10, 3)
    assert totals["activation"] == 30 and totals["caption"] == 10 and totals["compare"] == 1


def test_a_models_view_writes_under_its_folder_and_reads_the_shared_artifacts(tmp_path: Path) -> None:
    from shared.pipeline.model_view import model_store
    from shared.storage.stores import LocalStore

    root = LocalStore(tmp_path)
    root.put_bytes("partitions.npy", b"shared")
    root.put_bytes("models/other/groups.json", b"other model")
    view = model_store(root, "mine")
    view.put_bytes("groups.json", b"mine")
    view.put_bytes("undecodable/00000.json", b"{}")  # about the images: at the root
    assert (tmp_path / "models/mine/groups.json").read_bytes() == b"mine"
    assert (tmp_path / "undecodable/00000.json").exists()
    assert view.get_bytes("partitions.npy") == b"shared" and view.get_bytes("groups.json") == b"mine"
    assert list(view.list("")) == ["groups.json", "partitions.npy", "undecodable/00000.json"]
