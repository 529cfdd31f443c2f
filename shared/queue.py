"""The suite's Celery app, its queues and routes, and the canvas of one job
(docs/architecture.md, 'The service suite').

Defined once here: the gateway builds canvases from task *names* (it imports no worker code),
and each worker entry (`services/<svc>/worker.py`) imports this app plus its own tasks.

Redis is the broker. Celery's result backend (the same Redis) serves only to join chords; job
state lives in the job store (`shared.jobstore`) and is never read from Celery's results.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
from celery import Celery, bootsteps, chord, group, signature
from celery.canvas import Signature
from celery.signals import worker_init

from shared import heartbeat, observability, queue_settings_check
from shared.reconciler import make_reconciler
from shared.settings import InfraSettings, get_infra_settings

# Task names: `domain.action`; the domain is the queue, except the light final step, which runs
# on the labelling workers (no service of its own: it only reads and writes JSON).
CAPTION_SHARD = "caption.shard"
ACTIVATION_SHARD = "activation.shard"
EMBED_CLUSTER_RUN = "embed_cluster.run"
ACTIVATION_GROUPS = "activation.groups"
LABELLING_LABEL = "labelling.label"
LABELLING_RELABEL = "labelling.relabel"
UNCERTAINTY_RUN = "uncertainty.run"
PIPELINE_ASSEMBLE = "pipeline.assemble"
WEBHOOKS_DELIVER = "webhooks.deliver"
# The model registry's checks: the gateway waits for their answer (Celery's result backend).
MODEL_CHECK = "activation.model_check"
MODEL_IMPORT = "activation.model_import"

QUEUES = ("caption", "embed_cluster", "activation", "labelling", "uncertainty")
ROUTES = {
    "caption.*": {"queue": "caption"},
    "embed_cluster.*": {"queue": "embed_cluster"},
    "activation.*": {"queue": "activation"},
    "labelling.*": {"queue": "labelling"},
    "uncertainty.*": {"queue": "uncertainty"},
    "pipeline.*": {"queue": "labelling"},
    "webhooks.*": {"queue": "labelling"},  # light, and the labelling workers have egress (shared.webhooks)
}


# Tasks of a job (shared.tasks.job_task) and the stage each runs: each holds a lock while it
# runs, which the reconciler reads, and one that stalls for good fails its job at its stage.
# Webhook deliveries are not among them: they are short, and retried by their own rules.
TASK_STAGES = {
    CAPTION_SHARD: "caption",
    ACTIVATION_SHARD: "activation",
    EMBED_CLUSTER_RUN: "embed_cluster",
    ACTIVATION_GROUPS: "groups",
    LABELLING_LABEL: "labelling",
    LABELLING_RELABEL: "labelling",
    UNCERTAINTY_RUN: "uncertainty",
    PIPELINE_ASSEMBLE: "assemble",
}
JOB_TASKS = frozenset(TASK_STAGES)

# Steps after the neuron groups, in order, before the assembly of hierarchy.json
# (docs/architecture.md, 'Stages and their artifacts').
STEPS_AFTER_GROUPS: list[str] = [LABELLING_LABEL, UNCERTAINTY_RUN]


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
    (`shared.queue_settings_check`), and keeps its registration fresh from the event loop."""

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        seconds = int(worker.app.conf.broker_transport_options["visibility_timeout"])
        client = redis.Redis.from_url(worker.app.conf.broker_url)
        try:
            queue_settings_check.register_visibility_timeout(client, seconds)
        except queue_settings_check.SettingMismatch as exc:
            raise SystemExit(f"neuron-atlas worker refused to start: {exc}") from None
        interval = queue_settings_check.REGISTRATION_TTL_S / 5
        worker.timer.call_repeatedly(interval, queue_settings_check.refresh, (client, seconds))


class Reconciler(bootsteps.StartStopStep):
    """Hands out again the messages of tasks that nobody runs any more (shared.reconciler, which
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


def job_canvas(job_id: str, shards: int) -> Signature:
    """Caption and activation shards side by side; then embed+cluster, groups, labels, ...,
    assemble. Messages carry the job id and a shard index, nothing else.

    Embedding waits for the activation shards too: they decide which images decode (a caption
    shard whose captions were all provided decodes nothing), and clustering must see only
    those. The activation shards are the long part of a job whose captions were provided, and
    the caption shards that of one whose were not, so little runs later for it."""
    shard_tasks = [_sig(CAPTION_SHARD, job_id, s) for s in range(shards)]
    shard_tasks += [_sig(ACTIVATION_SHARD, job_id, s) for s in range(shards)]
    steps = [
        _sig(EMBED_CLUSTER_RUN, job_id),
        _sig(ACTIVATION_GROUPS, job_id),
        *(_sig(n, job_id) for n in STEPS_AFTER_GROUPS),
    ]
    canvas: Signature = chord(group(shard_tasks), steps[0])
    for step in [*steps[1:], _sig(PIPELINE_ASSEMBLE, job_id)]:
        canvas = canvas | step
    return canvas
