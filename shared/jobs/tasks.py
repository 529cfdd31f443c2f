"""The shell every suite task shares: open the job's store view, stop when the job is cancelled
or failed, record progress, and turn an exception into the job's error.

Task bodies stay plain functions `(job: JobContext, *ids) -> None` over a store; this module
registers them on the shared Celery app under their `domain.action` name. The pipeline's tasks
are not written by hand: `register_stage_tasks` registers one per row of the stage table
(shared/pipeline/stages.py) that the service runs, calling the stage's entry over a `SuiteJob`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from celery.exceptions import Ignore, SoftTimeLimitExceeded

from neuron_atlas_client.contracts.input_check import RunWarning
from neuron_atlas_client.contracts.problem import ProblemDetails
from neuron_atlas_client.errors import NeuronAtlasError
from neuron_atlas_client.options import PipelineOptions
from shared.jobs.dependencies import dependency_errors, unavailable_dependency
from shared.jobs.job_public import INPUT_CHECK_REPORT
from shared.jobs.jobstore import JobStore
from shared.jobs.queue import get_app
from shared.jobs.task_heartbeat import TaskHeartbeat, new_token
from shared.models.registered_model import RegisteredWeights, job_model, local_weights
from shared.observability import metrics
from shared.pipeline import stages
from shared.pipeline.ingest import DecodedShard
from shared.pipeline.model_view import ModelJob, stage_jobs
from shared.pipeline.stage_job import ShardDecoder
from shared.public_text import public_text, redact
from shared.settings import get_infra_settings
from shared.storage import artifacts
from shared.storage.stored_images import StoredImages
from shared.storage.stores import PrefixedStore, S3Store, Store, get_json, make_s3_client
from shared.webhooks.announce import announce

log = logging.getLogger(__name__)
T = TypeVar("T")
ERROR_DETAIL_CHARS = 500  # a job error's detail: enough for what went wrong; the log has the rest


@dataclass(frozen=True)
class JobContext:
    job_id: str
    store: Store  # the job's artifacts, keys relative to jobs/{job_id}/
    jobs: JobStore
    stage: str


@lru_cache(maxsize=1)
def object_store() -> S3Store:
    settings = get_infra_settings()
    client = make_s3_client(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key,
        settings.s3_region,
        settings.s3_connect_timeout_s,
        settings.s3_read_timeout_s,
        settings.s3_retries,
    )
    return S3Store(client, settings.s3_bucket)


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    return JobStore.from_url(get_infra_settings().redis_url, on_end=announce)


@lru_cache(maxsize=4)
def _job_inputs(job_id: str) -> tuple[dict[str, Any], PipelineOptions]:
    store = PrefixedStore(object_store(), artifacts.job_prefix(job_id))
    return get_json(store, artifacts.MANIFEST), artifacts.read_options(store)


def job_inputs(job: JobContext) -> tuple[dict[str, Any], PipelineOptions]:
    """The job's manifest and options: written once at ingest, so a worker reads them once per job."""
    return _job_inputs(job.job_id)


def registered_weights(store: Store, folder: Path) -> RegisteredWeights | None:
    """A job's registered model (`model_id`) with its weights on this worker's disk; None for a
    job that names none. `store`: the job's, or one model's view of a multi-model job's, where
    that model's `registered_model.json` is."""
    model = job_model(store)
    if model is None:
        return None
    path = local_weights(object_store(), model, folder)
    return RegisteredWeights(model.record, path)


def describe_error(stage: str, exc: BaseException) -> dict[str, Any]:
    """The job's `error`, as problem details; users see it on GET /v1/jobs/{id}."""
    if isinstance(exc, NeuronAtlasError):
        # Written for users, but where a worker looked (its model cache, a temp folder) or which
        # host it called is the deployment's, not the tenant's.
        problem = ProblemDetails.of(
            exc.kind,
            f"The {stage} stage failed",
            public_text(exc.problem, ERROR_DETAIL_CHARS),
            redact(exc.fix),
        )
    elif isinstance(exc, SoftTimeLimitExceeded):
        problem = ProblemDetails.of(
            "timeout",
            f"The {stage} stage ran out of time",
            "A task passed the time limit; what was computed before it is kept.",
            "Submit fewer images per job or raise TASK_TIME_LIMIT_S.",
        )
    elif (dependency := unavailable_dependency(exc)) is not None:
        # Never the exception's text: it names hosts, ports, buckets and object keys.
        problem = ProblemDetails.of(
            f"{dependency.kind}-unavailable",
            f"The {stage} stage could not reach {dependency.name}",
            f"{dependency.name.capitalize()} did not answer ({type(exc).__name__}).",
            dependency.fix
            or f"Check that {dependency.name} is up and reachable from the workers, then submit the "
            "job again; artifacts computed so far are kept.",
        )
    else:
        # The message, without the worker's paths, hosts and addresses (the log has them all),
        # cut at a word.
        problem = ProblemDetails.of(
            "internal",
            f"The {stage} stage failed",
            public_text(f"{type(exc).__name__}: {exc}", ERROR_DETAIL_CHARS),
            "Artifacts computed so far are kept; see the worker logs for details.",
        )
    return problem.body()


def _remove_if_deleted(job_id: str, jobs: JobStore) -> bool:
    """A job deleted while its task ran (DELETE of a cancelling job): remove what the task wrote,
    so nothing is left behind. Never raises: it must not hide the task's own outcome."""
    try:
        if jobs.status(job_id) is not None:
            return False
        log.info("job %s was deleted while a task ran; removing its objects", job_id)
        object_store().delete_prefix(artifacts.job_prefix(job_id))
        return True
    except Exception:  # Redis or S3 down: the task's own error (or retry) says so
        log.warning("could not check whether job %s was deleted", job_id, exc_info=True)
        return False


def retry_pause(retries: int, window_s: float) -> int | None:
    """The pause before try `retries + 1` (5, 10, 20, 30, 30 ... s), or None once the pauses
    so far and this one would pass `window_s`."""
    pauses = [min(5 * 2**n, 30) for n in range(retries + 1)]
    return pauses[-1] if sum(pauses) <= window_s else None


@lru_cache(maxsize=1)
def task_heartbeat() -> TaskHeartbeat:
    settings = get_infra_settings()
    # A finished task's id is remembered past the visibility timeout: a copy of it that Celery
    # hands out that late then skips.
    return TaskHeartbeat(job_store().redis, settings.task_stall_s, 2 * settings.queue_visibility_timeout_s)


def _when_redis_answers(what: str, call: Callable[[], T]) -> T:
    """`call()`, tried again while Redis does not answer, for DEPENDENCY_RETRY_WINDOW_S. Used at
    a task's start and end, where a Celery retry cannot help: it needs Redis to publish."""
    window_s = get_infra_settings().dependency_retry_window_s
    deadline = time.monotonic() + window_s
    pause = 0.5
    while True:
        try:
            return call()
        except dependency_errors() as exc:
            if unavailable_dependency(exc) is None or time.monotonic() + pause > deadline:
                raise
            log.warning("%s: Redis unavailable; again in %.1f s", what, pause)
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def job_task(name: str, stage: str) -> Callable[[Callable[..., None]], Any]:
    """Register `body(job, *args)` as Celery task `name`; the first task argument is the job id.

    A failure because object storage or Redis stopped answering is retried with growing pauses
    for `dependency_retry_window_s`; a job fails only after that, or at once for other errors.
    While the body runs the task holds its lock and beats (shared.jobs.task_heartbeat): a copy of it
    that arrives meanwhile skips, and one that stops beating is sent again (shared.jobs.reconciler)."""

    def register(body: Callable[..., None]) -> Any:
        @functools.wraps(body)
        def run(task: Any, job_id: str, *args: Any) -> None:
            jobs, watch, token = job_store(), task_heartbeat(), new_token()
            task_id = task.request.id
            claim = _when_redis_answers(name, lambda: watch.claim(task_id, token))
            if claim == "running-elsewhere":
                # The broker handed the task out twice (a redelivery, or a pool process that died
                # with its lock). Not dropped: sent again for after TASK_STALL_S, the copy finds
                # the task done and skips, or its lock lapsed (its runner died) and runs it.
                log.warning(
                    "%s %s for job %s: running elsewhere; this copy skips and comes back in %.0f s",
                    name,
                    args,
                    job_id,
                    watch.stall_s,
                )
                task.signature_from_request(countdown=watch.stall_s).apply_async()
            if claim != "claimed":
                if claim == "done":
                    log.info("%s %s for job %s: done already; this copy skips", name, args, job_id)
                # Neither a result nor a chord part: the copy that runs (or ran) counts.
                raise Ignore()
            if not _when_redis_answers(name, lambda: jobs.begin(job_id, stage)):
                log.info("%s %s: job %s is no longer running; skipped", name, args, job_id)
                watch.release(task_id, token, done=True)
                return
            job = JobContext(job_id, PrefixedStore(object_store(), artifacts.job_prefix(job_id)), jobs, stage)
            started = time.monotonic()
            try:
                with watch.beating(task_id, token, job_id):
                    body(job, *args)
            except Exception as exc:
                dependency = unavailable_dependency(exc)
                window_s: float = get_infra_settings().dependency_retry_window_s
                if dependency is not None and dependency.window_s is not None:
                    window_s = dependency.window_s
                pause = retry_pause(task.request.retries, window_s)
                if pause is not None and dependency is not None:
                    log.warning(
                        "%s %s for job %s: %s unavailable; again in %d s",
                        name,
                        args,
                        job_id,
                        dependency.name,
                        pause,
                    )
                    metrics.TASK_RETRIES.labels(name).inc()
                    _when_redis_answers(name, lambda: watch.release(task_id, token, done=False))
                    raise task.retry(exc=exc, countdown=pause) from None
                log.exception("%s %s failed for job %s", name, args, job_id)
                metrics.TASK_FAILURES.labels(name).inc()
                error = describe_error(stage, exc)
                _when_redis_answers(name, lambda: jobs.fail(job_id, error, stage=stage))
                _when_redis_answers(name, lambda: watch.release(task_id, token, done=True))
                raise
            finally:
                deleted = _remove_if_deleted(job_id, jobs)
            _when_redis_answers(name, lambda: watch.release(task_id, token, done=True))
            if not deleted:
                metrics.observe_task(stage, time.monotonic() - started, _images_of(job, stage, args))

        return get_app().task(name=name, bind=True, max_retries=None)(run)

    return register


def _images_of(job: JobContext, stage: str, args: tuple[Any, ...]) -> int:
    """Images the task covered: its shard's for the shard stages, else the job's."""
    try:
        manifest, options = job_inputs(job)
    except Exception:  # metrics never fail a task
        return 0
    total = len(manifest.get("images", []))
    if stages.BY_NAME[stage].per == "shard" and args and isinstance(args[0], int):
        start = args[0] * options.shard_size
        return max(0, min(total, start + options.shard_size) - start)
    return total


class JobProgress:
    """`shared.pipeline.progress.Progress` onto the job store. Only `step`, the one step that spans the
    whole stage (the stage table's `Stage.step`), is the stage's progress there: a step within
    it (say the uncertainty stage's specificity tests) would show the stage done too early."""

    def __init__(self, job: JobContext, step: str = "") -> None:
        self.job = job
        self.step = step
        self._done = 0
        self._total: int | None = None

    def start(self, stage: str, total: int) -> None:
        if stage == self.step:
            self._done, self._total = 0, total
            self.job.jobs.set_total(self.job.job_id, self.job.stage, total)

    def advance(self, stage: str, amount: int = 1) -> None:
        if stage == self.step:
            self._done += amount
            self.job.jobs.shard_done(self.job.job_id, self.job.stage, 0, self._done)

    def finish(self, stage: str) -> None:
        """Done: steps that were never reported one by one (e.g. offline labels) count too."""
        if stage == self.step and self._total is not None:
            self.job.jobs.shard_done(self.job.job_id, self.job.stage, 0, self._total)

    def complete(self) -> None:
        """The job stage has finished: all of it done (no step reported: 1 of 1)."""
        self.job.jobs.shard_done(
            self.job.job_id, self.job.stage, 0, 1 if self._total is None else self._total
        )


# A service's resources by name (`StageJob.resource`): each made from the job (or, for a model's
# own resource, that model's view of it) on first use.
Resources = Mapping[str, Callable[[Any], Any]]
# Around a stage's entry, for what only the suite does (e.g. counting a tenant's LLM spend).
Around = Callable[[JobContext], AbstractContextManager[Any]]


class SuiteJob:
    """The suite's `shared.pipeline.stage_job.StageJob`: the job's S3 prefix, this worker's models (its
    `resources`), progress and reports to the job store."""

    def __init__(self, context: JobContext, resources: Resources, step: str = "") -> None:
        self.context = context
        self._resources = resources
        self._made: dict[str, Any] = {}
        self._progress = JobProgress(context, step)
        self._warnings: list[RunWarning] = []
        self._images: StoredImages | None = None

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def options(self) -> PipelineOptions:
        return job_inputs(self.context)[1]

    @property
    def progress(self) -> JobProgress:
        return self._progress

    def manifest(self) -> dict[str, Any]:
        return job_inputs(self.context)[0]

    @property
    def images(self) -> StoredImages:
        if self._images is None:
            self._images = StoredImages(self.store, self.manifest(), self.options.shard_size)
        return self._images

    def read_image(self, entry: dict[str, Any]) -> bytes:
        return self.images.read(entry)

    def shard(self, index: int, decoder: ShardDecoder) -> DecodedShard:
        budget = get_infra_settings().decode_pixel_budget
        read = self.images.shard_reader(index)
        return decoder(self.manifest(), index, self.options.shard_size, read, budget)

    def model_resource(self, name: str, view: ModelJob) -> Any:
        """A multi-model job's resource `name` for one of its models: made from that model's view
        (its options and registered model), once per model."""
        made = f"{name}:{view.key}"
        if made not in self._made:
            if name not in self._resources:
                raise KeyError(
                    f"the {self.context.stage} stage needs {name!r}, which this worker does not provide"
                )
            self._made[made] = self._resources[name](view)
        return self._made[made]

    def resource(self, name: str) -> Any:
        if name not in self._made:
            if name not in self._resources:
                raise KeyError(
                    f"the {self.context.stage} stage needs {name!r}, which this worker does not provide"
                )
            self._made[name] = self._resources[name](self)
        return self._made[name]

    def report(self, name: str, document: dict[str, Any]) -> None:
        self.context.jobs.set_report(self.context.job_id, name, document)

    def warn(self, warnings: Sequence[RunWarning]) -> None:
        # On the job (GET /v1/jobs/{id}) at once, whether or not `strict` then fails it; every
        # model's of a multi-model job (its task checks them in turn), each message naming its model.
        self._warnings.extend(warnings)
        self.report(INPUT_CHECK_REPORT, {"warnings": [w.document() for w in self._warnings]})

    def count_undecodable(self, shard: int, count: int) -> None:
        self.context.jobs.shard_undecodable(self.context.job_id, shard, count)


def register_stage_tasks(
    service: str, resources: Resources, around: Mapping[str, Around] | None = None
) -> dict[str, Any]:
    """Register the Celery task of each stage of the table that `service` runs: its entry over a
    `SuiteJob`, then the stage marked done (a shard's images, or the whole stage), and the job
    succeeded after the table's last stage. `around[stage]` wraps the entry. Returns the tasks
    by stage name."""
    registered: dict[str, Any] = {}
    for stage in stages.PIPELINE:
        if stage.service == service:
            registered[stage.name] = job_task(stage.task, stage.name)(
                _stage_body(stage, resources, (around or {}).get(stage.name))
            )
    return registered


def _stage_body(stage: stages.Stage, resources: Resources, around: Around | None) -> Callable[..., None]:
    entry = stages.entry_function(stage)

    def body(context: JobContext, shard: int | None = None) -> None:
        job = SuiteJob(context, resources, stage.step)
        # A per-model stage of a multi-model job: one task, each model in turn over its view
        # (shared.pipeline.model_view), so the canvas is the same for any number of models.
        with around(context) if around else nullcontext():
            done = [entry(view, shard) for view in stage_jobs(stage, job, job.model_resource)]
        if shard is not None:
            context.jobs.shard_done(context.job_id, stage.name, shard, sum(done))
        else:
            job.progress.complete()
        if stage is stages.active(len(job.options.target_models()))[-1]:
            context.jobs.succeed(context.job_id)

    body.__name__ = body.__qualname__ = stage.task.replace(".", "_")
    body.__doc__ = f"The {stage.name} stage's task: `{stage.entry}` over the job (shared/pipeline/stages.py)."
    return body
