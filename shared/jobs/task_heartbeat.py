"""Each running suite task holds a lock in Redis and refreshes it from a thread (its heartbeat):
a copy of the task that arrives while it runs skips, and a task whose lock lapsed is known not to
run anywhere, so the reconciler (shared.jobs.reconciler) may hand its message out again.

Keys are by Celery task id: a task keeps its id when Celery retries or redelivers it, so every
copy of one piece of work meets the same keys.

- `task:{id}:lock` (string, expires TASK_STALL_S after the last beat): the running copy's token.
- `task:{id}:done` (string, with an expiry): the task finished; a late copy (its message handed
  out again after it finished, e.g. when the worker died before acknowledging it) skips.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

log = logging.getLogger(__name__)


def job_alive_key(job_id: str) -> str:
    """Present while some task of the job runs (refreshed with its lock): the job watchdog of
    shared.jobs.reconciler leaves such a job alone, however long since its last progress."""
    return f"job:{job_id}:alive"


def lock_key(task_id: str) -> str:
    return f"task:{task_id}:lock"


def done_key(task_id: str) -> str:
    return f"task:{task_id}:done"


# Refresh the lock when it is ours, or take it back when it lapsed (Redis was away for a while)
# and nobody else took it. Returns 1, or 0 when another copy holds it.
_BEAT = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# Delete the lock only when it is ours (a lapsed lock may be another copy's by now).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Claim = Literal["claimed", "running-elsewhere", "done"]


class TaskHeartbeat:
    """Locks and beats of suite tasks over one Redis client."""

    def __init__(self, redis: Any, stall_s: float, done_ttl_s: int) -> None:
        self.redis = redis
        self.stall_s = stall_s
        self.done_ttl_s = done_ttl_s
        self._beat = redis.register_script(_BEAT)
        self._unlock = redis.register_script(_UNLOCK)

    @property
    def lock_ttl_s(self) -> int:
        return max(1, round(self.stall_s))

    def claim(self, task_id: str, token: str) -> Claim:
        """Take the task's lock, or say why this copy must not run."""
        if self.redis.exists(done_key(task_id)):
            return "done"
        if not self.redis.set(lock_key(task_id), token, nx=True, ex=self.lock_ttl_s):
            return "running-elsewhere"
        return "claimed"

    def beat(self, task_id: str, token: str) -> bool:
        """The task is alive; False when another copy holds its lock."""
        return bool(self._beat(keys=[lock_key(task_id)], args=[token, self.lock_ttl_s]))

    def release(self, task_id: str, token: str, done: bool) -> None:
        """The task stopped: for good (`done`: late copies skip), or until Celery retries it."""
        self._unlock(keys=[lock_key(task_id)], args=[token])
        if done:
            self.redis.set(done_key(task_id), 1, ex=self.done_ttl_s)

    def running(self, task_id: str) -> bool:
        return bool(self.redis.exists(lock_key(task_id)))

    def finished(self, task_id: str) -> bool:
        return bool(self.redis.exists(done_key(task_id)))

    def job_alive(self, job_id: str) -> None:
        self.redis.set(job_alive_key(job_id), 1, ex=self.lock_ttl_s)

    @contextmanager
    def beating(self, task_id: str, token: str, job_id: str | None = None) -> Iterator[None]:
        """Beat from a thread while the body runs (a body may spend minutes in one torch call),
        four times per stall limit, so a late beat or two never lets the lock lapse. With
        `job_id`, each beat also says that the job is alive."""
        stop = threading.Event()
        if job_id is not None:
            self.job_alive(job_id)

        def run() -> None:
            while not stop.wait(self.stall_s / 4):
                try:
                    if job_id is not None:
                        self.job_alive(job_id)
                    if not self.beat(task_id, token):
                        log.warning("task %s: another copy holds its lock", task_id)
                except Exception:  # Redis away: the next beat tries again
                    log.warning("task %s: could not beat", task_id, exc_info=True)

        thread = threading.Thread(target=run, name=f"task-heartbeat-{task_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)


def new_token() -> str:
    return uuid.uuid4().hex
