"""The suite's Celery app, its queues and routes, and the canvas of one job
(docs/architecture.md, 'The service suite').

Defined once here: the gateway builds canvases from task *names* (it imports no worker code),
and each worker entry (`services/<svc>/worker.py`) imports this app plus its own tasks.

Redis is the broker. Celery's result backend (the same Redis) serves only to join chords; job
state lives in the job store (`shared.jobs.jobstore`) and is never read from Celery's results.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
from celery import Celery, bootsteps, chain, chord, group, signature
from celery.canvas import Signature
from celery.signals import worker_init

from shared.jobs import comparisons, heartbeat, queue_settings_check
from shared.jobs.reconciler import make_reconciler
from shared.observability import worker_signals as observability
from shared.pipeline import stages
from shared.settings import InfraSettings, get_infra_settings

# Task names are `domain.action`. The pipeline's come from the stage table (shared/pipeline/stages.py),
# with their queues, the order of the canvas and the stage each task reports; the tasks below
# are the ones outside a job's canvas.
LABELLING_RELABEL = "labelling.relabel"
WEBHOOKS_DELIVER = "webhooks.deliver"
# The model registry's checks: the gateway waits for their answer (Celery's result backend).
MODEL_CHECK = "activation.model_check"
MODEL_IMPORT = "activation.model_import"

QUEUES: tuple[str, ...] = stages.SERVICES
ROUTES: dict[str, dict[str, str]] = {
    **{stage.task: {"queue": stage.service} for stage in stages.PIPELINE if stage.queued},
    LABELLING_RELABEL: {"queue": "labelling"},
    MODEL_CHECK: {"queue": "activation"},
    MODEL_IMPORT: {"queue": "activation"},
    comparisons.COMPARE: {"queue": comparisons.COMPARE_QUEUE},
    WEBHOOKS_DELIVER: {
        "queue": "labelling"
    },  # light, and the labelling workers have egress (shared.webhooks.delivery)
}

# Tasks of a job (shared.jobs.tasks.job_task) and the stage each runs: each holds a lock while it
# runs, which the reconciler reads, and one that stalls for good fails its job at its stage.
# Webhook deliveries are not among them: they are short, and retried by their own rules.
TASK_STAGES: dict[str, str] = {
    **{stage.task: stage.name for stage in stages.PIPELINE if stage.queued},
    LABELLING_RELABEL: "labelling",
}
JOB_TASKS = frozenset(TASK_STAGES)


class Heartbeat(bootsteps.StartStopStep):
    """Touches WORKER_HEARTBEAT_FILE from the worker's event loop (the Kubernetes liveness probe
    reads it). The loop's timer, not a thread, so that a blocked loop stops the heartbeat. Meant
    for the prefork pool (Kubernetes runs it): with `--pool solo` a task blocks the loop itself."""

    requires = ("celery.worker.components:Hub",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.path: Path | None = worker.app.conf.get("neuron_atlas_heartbeat_file")
        self.interval_s: float = worker.app.conf.get("neuron_atlas_heartbeat_interval_s", 10.0)
        self.timer_entry: Any = None

    def start(self, worker: Any) -> None:
        if self.path is None:
            return
        heartbeat.touch(self.path)
        self.timer_entry = worker.timer.call_repeatedly(self.interval_s, heartbeat.touch, (self.path,))

    def stop(self, worker: Any) -> None:
        # Warm shutdown (SIGTERM) stops the loop, then waits for the running task: keep the file
        # fresh meanwhile, so the probe does not kill a pod that is finishing its work.
        if self.path is not None and self.timer_entry is not None:
            self.timer_entry.cancel()
            heartbeat.keep_touching(self.path, self.interval_s)


class VisibilityTimeoutCheck(bootsteps.StartStopStep):
    """Refuses to start a worker whose visibility timeout differs from the running ones'
    (`shared.jobs.queue_settings_check`), and keeps its registration fresh from the event loop."""

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        seconds = int(worker.app.conf.broker_transport_options["visibility_timeout"])
        client = redis.Redis.from_url(worker.app.conf.broker_url)
        # Redis away while the worker starts (restarted, failing over) is waited out like any
        # other outage, for DEPENDENCY_RETRY_WINDOW_S: failing here killed the worker, and its
        # shard with it, when Redis blinked during a slow start.
        deadline = time.monotonic() + get_infra_settings().dependency_retry_window_s
        pause = 0.5
        while True:
            try:
                queue_settings_check.register_visibility_timeout(client, seconds)
                break
            except queue_settings_check.SettingMismatch as exc:
                raise SystemExit(f"neuron-atlas worker refused to start: {exc}") from None
            except redis.ConnectionError:
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 5.0)
        interval = queue_settings_check.REGISTRATION_TTL_S / 5
        worker.timer.call_repeatedly(interval, queue_settings_check.refresh, (client, seconds))


class Reconciler(bootsteps.StartStopStep):
    """Hands out again the messages of tasks that nobody runs any more (shared.jobs.reconciler, which
    says why every worker runs it), from the event loop's timer every TASK_STALL_S / 4."""

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        # A connection of its own (the consumer's is busy consuming); its channel knows kombu's
        # keys and puts a message back the way kombu does.
        self.connection = worker.app.connection_for_write()
        channel = self.connection.default_channel
        reconciler = make_reconciler(channel, get_infra_settings(), TASK_STAGES, QUEUES)
        worker.timer.call_repeatedly(reconciler.interval_s, reconciler.sweep_quietly)

    def stop(self, worker: Any) -> None:
        if getattr(self, "connection", None) is not None:
            self.connection.release()


def _ride_out_redis_outages(sender: Any = None, **_: Any) -> None:
    """In workers only (the gateway answers 503 at once instead): publishing the next step of a
    job and storing a result wait for Redis through DEPENDENCY_RETRY_WINDOW_S, rather than fail
    after a second and lose the job's next message (a job stuck `running` with nothing to run)."""
    app = getattr(sender, "app", None) or get_app()
    window_s = get_infra_settings().dependency_retry_window_s
    app.conf.task_publish_retry_policy = {
        "max_retries": int(window_s / 5) + 4,  # pauses 0.5, 1.5, ... then 5 s: about the window
        "interval_start": 0.5,
        "interval_step": 1.0,
        "interval_max": 5.0,
    }
    app.conf.result_backend_always_retry = True
    app.conf.result_backend_max_sleep_between_retries_ms = 5000
    app.conf.result_backend_max_retries = int(window_s / 2.5) + 4


def configure(app: Celery, settings: InfraSettings) -> None:
    app.conf.update(
        broker_url=settings.redis_url,
        result_backend=settings.redis_url,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_routes=ROUTES,
        # A task is acknowledged when it has finished, so a worker that dies mid-shard leaves it
        # for another; with prefetch 1 a busy worker holds no idle messages hostage.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.queue_visibility_timeout_s,
            # kombu sweeps for unacknowledged messages past the visibility timeout every
            # interval x throttle seconds (10 x 10 by default): a throttle of 1 makes that 10 s,
            # so a killed worker's task is back on its queue soon after the timeout.
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": settings.queue_visibility_timeout_s},
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # Ours, read by the Heartbeat step (Celery keeps unknown keys).
        neuron_atlas_heartbeat_file=settings.worker_heartbeat_file,
        neuron_atlas_heartbeat_interval_s=settings.worker_heartbeat_interval_s,
    )
    worker_init.connect(_ride_out_redis_outages, weak=False)
    app.steps["worker"].add(Heartbeat)
    app.steps["worker"].add(VisibilityTimeoutCheck)
    app.steps["worker"].add(Reconciler)
    observability.install(app, settings, QUEUES)


@lru_cache(maxsize=1)
def get_app() -> Celery:
    app = Celery("neuron_atlas")
    configure(app, get_infra_settings())
    return app


def _sig(name: str, *args: object) -> Signature:
    # Immutable: a step never receives the previous step's return value, only ids.
    return signature(name, args=args, immutable=True, app=get_app())


def job_canvas(job_id: str, shards: int, models: int = 1) -> Signature:
    """The stage table's waves (shared/pipeline/stages.py) for a job of `models` target models as
    one canvas: a wave's tasks side by side (a per-shard stage as one task per shard), each wave
    after the one before. Messages carry the job id and a shard index, nothing else: a per-model
    stage's task runs each model of the job in turn (shared.jobs.tasks), so only the several-model
    stages (the job's comparison) make a multi-model job's canvas differ.

    Embedding waits for the activation shards too: they decide which images decode (a caption
    shard whose captions were all provided decodes nothing), and clustering must see only
    those."""
    steps: list[list[Signature]] = [
        [
            _sig(stage.task, job_id, *([shard] if stage.per == "shard" else []))
            for stage in wave
            for shard in (range(shards) if stage.per == "shard" else [None])
        ]
        for wave in stages.waves(models)
    ]
    parts: list[Signature] = []
    while steps:
        tasks = steps.pop(0)
        if len(tasks) == 1:
            parts.append(tasks[0])
            continue
        # Parallel tasks, then the next wave once they have all finished: a chord, whose body
        # must be one task (the table ends in one, `assemble`; two parallel waves in a row would
        # need a joining stage between them).
        if not steps or len(steps[0]) != 1:
            raise ValueError("after a wave of parallel stages the table needs a single stage")
        parts.append(chord(group(tasks), steps.pop(0)[0]))
    return chain(*parts) if len(parts) > 1 else parts[0]
