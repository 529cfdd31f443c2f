"""Hands out again the messages of suite tasks that no worker runs any more, so a job never
waits hours for work that stopped; after TASK_MAX_RESENDS times the job fails as `stalled`.

Celery's Redis transport keeps every message a worker took, and has not acknowledged, in the
`unacked` hash (with the time it was taken in `unacked_index`), and hands it out again only after
the visibility timeout: hours, since a shorter one would hand out tasks that still run. The task
lock (shared.jobs.task_heartbeat) tells those apart: a message taken more than TASK_STALL_S ago whose
task holds no lock is not being run by anyone (its worker was SIGKILLed before or during the
task, or lost the message with its connection), so it goes back to the front of its queue.

It runs from every worker's event loop (the `Reconciler` bootstep in shared.jobs.queue), and a Redis
lock lets one process sweep per interval, however many workers there are. Why there: the event
loop of a prefork worker never runs a task, so a busy worker still sweeps; wherever work can be
re-run a worker is up, so nothing needs a process of its own; and the gateway stays a plain web
process that never touches Celery's queues.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from neuron_atlas_client.contracts.problem import ProblemDetails
from shared.jobs.jobstore import JobStore
from shared.jobs.task_heartbeat import TaskHeartbeat, job_alive_key
from shared.settings import InfraSettings

log = logging.getLogger(__name__)

SWEEP_LOCK = "reconciler:sweep"
# A job is lost after this many stall limits without progress (a shard's end, a stage's start)
# while nothing of it runs or waits: generous, since the gap between one task's end and the next
# message is short but a Redis outage may stretch it.
JOB_STALL_FACTOR = 3


def restores_key(task_id: str) -> str:
    return f"task:{task_id}:restores"


@dataclass(frozen=True)
class Taken:
    """A message a worker took and has not acknowledged."""

    tag: str
    task_id: str
    name: str
    args: list[Any]
    eta: float | None  # a retry's countdown: the worker holds it until then


def parse_taken(tag: str, raw: str) -> Taken | None:
    """kombu keeps `[message, exchange, routing_key]` in `unacked`."""
    try:
        return parse_message(tag, json.loads(raw)[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None  # not a Celery task message of ours


def parse_message(tag: str, message: dict[str, Any]) -> Taken | None:
    """A Celery message (as kombu keeps it in a queue's list) has the task in its headers and
    `[args, kwargs, embed]` as its body."""
    try:
        headers = message["headers"]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        eta = datetime.fromisoformat(headers["eta"]).timestamp() if headers.get("eta") else None
        return Taken(tag, str(headers["id"]), str(headers["task"]), list(args), eta)
    except (ValueError, KeyError, IndexError, TypeError):
        return None  # not a Celery task message of ours


def lost_problem(idle_s: float) -> dict[str, Any]:
    return ProblemDetails.of(
        "lost",
        "The job's work was lost",
        f"The job made no progress for {idle_s:.0f} s, no task of it runs, and no message of it "
        "waits in a queue: its next message was lost (Redis lost data, or a worker lost it with "
        "its connection).",
        "Submit the job again; artifacts computed so far are kept. Keep Redis's append-only file "
        "on (docs/deployment.md, 'Running it by hand').",
    ).body()


def stalled_problem(name: str, attempts: int, stall_s: float) -> dict[str, Any]:
    return ProblemDetails.of(
        "stalled",
        "The job's work stopped making progress",
        f"Task {name} stopped, {attempts} times, with no worker running it for {stall_s:.0f} s: "
        "each time the worker that had it was killed or lost its connection.",
        "Check the workers (killed for lack of memory, a node lost, a crash in the logs), then "
        "submit the job again; artifacts computed so far are kept.",
    ).body()


@dataclass
class Reconciler:
    heartbeats: TaskHeartbeat
    jobs: JobStore
    channel: Any  # a kombu Redis channel: its keys, and its own way to put a message back
    # Each task that holds a lock while it runs -> its stage; passed in (from shared.jobs.queue), since
    # the queue module installs the reconciler on every worker.
    task_stages: Mapping[str, str]
    max_resends: int
    interval_s: float
    queues: tuple[str, ...] = ()  # the suite's queues, whose waiting messages keep a job alive

    @property
    def redis(self) -> Any:
        return self.heartbeats.redis

    def sweep(self, now: float | None = None) -> dict[str, str]:
        """Task id -> what was done, for each message taken more than TASK_STALL_S ago."""
        now = time.time() if now is None else now
        # One sweep per interval across every process; the lock lapses before the next one.
        if not self.redis.set(SWEEP_LOCK, "1", nx=True, px=max(1, int(self.interval_s * 900))):
            return {}
        done: dict[str, str] = {}
        taken_before = now - self.heartbeats.stall_s
        for tag in self.redis.zrangebyscore(self.channel.unacked_index_key, "-inf", taken_before):
            raw = self.redis.hget(self.channel.unacked_key, tag)
            message = parse_taken(tag, raw) if raw is not None else None
            if message is not None:
                done[message.task_id] = self._reconcile(message, now)
        done.update({f"job:{job}": what for job, what in self.watch_jobs(now).items()})
        return done

    def watch_jobs(self, now: float) -> dict[str, str]:
        """Active jobs that made no progress for JOB_STALL_FACTOR x TASK_STALL_S while no task
        of theirs runs and no message of theirs is queued or taken: their work was lost outright
        (a message that never reached `unacked`), so they fail as `lost` (or, cancelling, end
        cancelled) instead of showing `running` forever."""
        idle_s = JOB_STALL_FACTOR * self.heartbeats.stall_s
        candidates = [
            job_id
            for key in self.redis.scan_iter(match="tenant:*:active", count=1000)
            for job_id in self.redis.smembers(key)
            if self._idle(job_id, now - idle_s)
        ]
        if not candidates:
            return {}
        waiting = self._jobs_with_messages()  # read only when some job looks lost
        done: dict[str, str] = {}
        for job_id in candidates:
            if job_id in waiting or not self._idle(job_id, now - idle_s):
                continue
            if self.jobs.status(job_id) == "cancelling":
                self.jobs.end_cancelling(job_id)
                done[job_id] = "cancelled"
                continue
            log.error("job %s: no progress for %.0f s and no work of it anywhere; it fails", job_id, idle_s)
            self.jobs.fail(job_id, lost_problem(idle_s))
            done[job_id] = "lost"
        return done

    def _idle(self, job_id: str, before: float) -> bool:
        status, updated = self.redis.hmget(f"job:{job_id}", ["status", "updated_at"])
        if status not in ("queued", "running", "cancelling") or not updated:
            return False
        if self.redis.exists(job_alive_key(job_id)):
            return False
        return datetime.fromisoformat(updated).timestamp() < before

    def _jobs_with_messages(self) -> set[str]:
        """Job ids of every task message in the suite's queues or taken by a worker."""
        found = set()
        for queue in self.queues:
            for raw in self.redis.lrange(queue, 0, -1):
                try:
                    message = parse_message("", json.loads(raw))
                except ValueError:
                    message = None
                if message is not None and message.args:
                    found.add(str(message.args[0]))
        for tag, raw in self.redis.hgetall(self.channel.unacked_key).items():
            taken = parse_taken(tag, raw)
            if taken is not None and taken.args:
                found.add(str(taken.args[0]))
        return found

    def _reconcile(self, message: Taken, now: float) -> str:
        if message.name not in self.task_stages:
            return "not-watched"
        if message.eta is not None and message.eta + self.heartbeats.stall_s > now:
            return "waiting-for-retry"
        if self.heartbeats.running(message.task_id):
            return "running"
        if self.heartbeats.finished(message.task_id):
            self._forget(message)  # it ran; only the acknowledgement was lost
            return "finished"
        job_id = str(message.args[0])
        status = self.jobs.status(job_id)
        if status == "cancelling":  # the user asked to stop, and the work has stopped: done
            self.jobs.end_cancelling(job_id)
        if status not in ("queued", "running"):
            self._forget(message)
            return "job-ended"
        attempts = int(self.redis.incr(restores_key(message.task_id)))
        self.redis.expire(restores_key(message.task_id), self.heartbeats.done_ttl_s)
        if attempts > self.max_resends:
            log.error(
                "job %s: %s %s stalled %d times; the job fails",
                job_id,
                message.name,
                message.task_id,
                attempts,
            )
            stalled = stalled_problem(message.name, attempts, self.heartbeats.stall_s)
            self.jobs.fail(job_id, stalled, stage=self.task_stages.get(message.name))
            self._forget(message)
            return "failed"
        log.warning(
            "job %s: %s %s is taken but nobody runs it; sending it again (%d)",
            job_id,
            message.name,
            message.task_id,
            attempts,
        )
        self.channel.qos.restore_by_tag(message.tag)  # to the front of its queue
        return "resent"

    def _forget(self, message: Taken) -> None:
        with self.redis.pipeline() as pipe:
            pipe.zrem(self.channel.unacked_index_key, message.tag)
            pipe.hdel(self.channel.unacked_key, message.tag)
            pipe.execute()

    def sweep_quietly(self) -> None:
        """`sweep` for a timer: a failure (Redis away) is logged and tried at the next interval."""
        try:
            done = self.sweep()
        except Exception:
            log.warning("reconciler: sweep failed; trying again in %.0f s", self.interval_s, exc_info=True)
            return
        acted = {task: what for task, what in done.items() if what not in ("running", "waiting-for-retry")}
        if acted:
            log.info("reconciler: %s", acted)


def make_reconciler(
    channel: Any, settings: InfraSettings, task_stages: Mapping[str, str], queues: tuple[str, ...] = ()
) -> Reconciler:
    """A worker's reconciler: its own Redis client with short timeouts, so that a sweep while
    Redis is away holds the event loop for seconds at most."""
    client = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=3, socket_connect_timeout=2
    )
    return Reconciler(
        TaskHeartbeat(client, settings.task_stall_s, 2 * settings.queue_visibility_timeout_s),
        JobStore(client),
        channel,
        task_stages,
        settings.task_max_resends,
        interval_s=max(0.5, settings.task_stall_s / 4),
        queues=queues,
    )
