"""Job records in Redis: status, current stage, per-stage progress, timestamps, error.

The suite's only source of job state (Celery's result backend is never read for it). Keys:

- `job:{id}` (hash): id, tenant, status, stage, timestamps, error (JSON), images, skipped, shards
- `job:{id}:progress:{stage}` (hash): shard -> items done, so a task that runs twice counts once;
  `job:{id}:totals` (hash): stage -> total items
- `tenant:{tenant}:jobs` (sorted set, all scores 0): `{created_us}:{id}`, newest last, for
  keyset pagination by lexical range
- `tenant:{tenant}:active` (set): ids of the tenant's jobs that count against its concurrent-jobs
  quota, from submission until they end or are deleted
- `tenant:{tenant}:llm_tokens:{window}` (string, with a TTL): LLM tokens the tenant's labelling
  runs spent in that spend window (`llm_spend_window_s`)
- `idempotency:{tenant}:{key}` (string, JSON, with a TTL): the first answer for a key
- `job:{id}:deliveries` (list, JSON): the job's webhook delivery log, one entry per attempt
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from neuron_atlas_client.contracts.api import Status
from shared.pipeline.stages import STAGE_NAMES

ACTIVE: tuple[Status, ...] = ("queued", "running", "cancelling")
TERMINAL: tuple[Status, ...] = ("succeeded", "failed", "cancelled")

# Stages in the order a job reaches them: the stage table's (shared/pipeline/stages.py).
STAGES: tuple[str, ...] = STAGE_NAMES

# Set `status` to ARGV[2] when it is one of the space-separated ARGV[1]; then set the fields in
# ARGV[3..]. Returns the status found. Atomic, so two workers cannot both win a transition.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
for allowed in string.gmatch(ARGV[1], '%S+') do
  if allowed == current then
    redis.call('HSET', KEYS[1], 'status', ARGV[2])
    for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    return current
  end
end
return current
"""

# Advance `stage` only forwards (parallel branches report in any order).
_ADVANCE_STAGE = """
local current = redis.call('HGET', KEYS[1], 'stage')
local order = cjson.decode(ARGV[2])
local rank = {}
for i, name in ipairs(order) do rank[name] = i end
if (rank[ARGV[1]] or 0) > (rank[current] or 0) then
  redis.call('HSET', KEYS[1], 'stage', ARGV[1])
end
return redis.call('HGET', KEYS[1], 'stage')
"""


# Add ARGV[1] to the set KEYS[1] unless it already holds ARGV[2] members; 1 when added. Atomic,
# so two submissions at once cannot both take the last slot.
_TAKE_SLOT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

log = logging.getLogger(__name__)

REPORT = "report:"  # prefix of the job hash's fields that hold stage summaries


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class JobRecord:
    id: str
    tenant: str
    status: Status
    stage: str
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    error: dict[str, Any] | None
    images: int
    skipped: int
    shards: int
    progress: dict[str, dict[str, int]] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)  # per-stage summaries, e.g. labelling


class JobStore:
    """Job records over one Redis client (decode_responses=True)."""

    def __init__(
        self,
        client: redis.Redis,
        stages: Sequence[str] = STAGES,
        on_end: Callable[[JobStore, str, str], None] | None = None,
    ) -> None:
        self.redis = client
        self.stages = tuple(stages)
        # Told (store, job id, end status) after a job reaches an end status: webhooks.
        self.on_end = on_end
        self._transition = client.register_script(_TRANSITION)
        self._advance = client.register_script(_ADVANCE_STAGE)
        self._take_slot = client.register_script(_TAKE_SLOT)

    @classmethod
    def from_url(cls, url: str, on_end: Callable[[JobStore, str, str], None] | None = None) -> JobStore:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        return cls(client, on_end=on_end)

    # --- records -------------------------------------------------------------------------------

    def create(
        self,
        job_id: str,
        tenant: str,
        images: int,
        skipped: int,
        shards: int,
        totals: Mapping[str, int],
        callbacks: Sequence[Mapping[str, Any]] = (),
        llm_token_budget: int | None = None,
    ) -> JobRecord:
        created = now()
        member = f"{time.time_ns() // 1000:020d}:{job_id}"
        with self.redis.pipeline() as pipe:
            if callbacks:
                pipe.hset(f"job:{job_id}", "callbacks", json.dumps([dict(c) for c in callbacks]))
            pipe.hset(
                f"job:{job_id}",
                mapping={
                    "id": job_id,
                    "tenant": tenant,
                    "status": "queued",
                    "stage": "ingest",
                    "created_at": created,
                    "updated_at": created,
                    "images": images,
                    "skipped": skipped,
                    "shards": shards,
                    "member": member,
                },
            )
            if llm_token_budget is not None:
                pipe.hset(f"job:{job_id}", "llm_token_budget", llm_token_budget)
            if totals:
                pipe.hset(f"job:{job_id}:totals", mapping=cast(Any, dict(totals)))
            pipe.zadd(f"tenant:{tenant}:jobs", {member: 0})
            pipe.execute()
        record = self.get(job_id)
        assert record is not None
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self.redis.pipeline() as pipe:
            pipe.hgetall(f"job:{job_id}")
            pipe.hgetall(f"job:{job_id}:totals")
            pipe.hvals(f"job:{job_id}:undecodable")
            for stage in self.stages:
                pipe.hvals(f"job:{job_id}:progress:{stage}")
            raw, totals, undecodable, *done = pipe.execute()
        if not raw:
            return None
        progress = {
            stage: {"done": sum(int(v) for v in values), "total": int(totals.get(stage, 0))}
            for stage, values in zip(self.stages, done, strict=True)
            if stage in totals or values
        }
        return JobRecord(
            id=raw["id"],
            tenant=raw["tenant"],
            status=cast(Status, raw["status"]),
            stage=raw["stage"],
            created_at=raw["created_at"],
            updated_at=raw["updated_at"],
            started_at=raw.get("started_at"),
            finished_at=raw.get("finished_at") or None,
            error=json.loads(raw["error"]) if raw.get("error") else None,
            # images that passed the header check at submission but failed to decode in a
            # worker are skipped files too, as the hierarchy lists them
            images=int(raw.get("images", 0)) - sum(int(v) for v in undecodable),
            skipped=int(raw.get("skipped", 0)) + sum(int(v) for v in undecodable),
            shards=int(raw.get("shards", 0)),
            progress=progress,
            reports={
                name.removeprefix(REPORT): json.loads(value)
                for name, value in raw.items()
                if name.startswith(REPORT)
            },
        )

    def page(self, tenant: str, size: int, after: str | None = None) -> tuple[list[JobRecord], str | None]:
        """Newest first; `after` is the cursor the previous page returned."""
        upper = f"({after}" if after else "+"
        found = self.redis.zrevrangebylex(f"tenant:{tenant}:jobs", upper, "-", start=0, num=size + 1)
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in found]
        more = len(members) > size
        members = members[:size]
        records = [r for m in members if (r := self.get(m.split(":", 1)[1])) is not None]
        return records, (members[-1] if more and members else None)

    def delete(self, job_id: str) -> None:
        raw = cast(dict[str, str], self.redis.hgetall(f"job:{job_id}"))
        if not raw:
            return
        keys = [
            f"job:{job_id}",
            f"job:{job_id}:totals",
            f"job:{job_id}:undecodable",
            f"job:{job_id}:deliveries",
            *(f"job:{job_id}:progress:{s}" for s in self.stages),
        ]
        with self.redis.pipeline() as pipe:
            pipe.zrem(f"tenant:{raw['tenant']}:jobs", raw.get("member", ""))
            pipe.srem(f"tenant:{raw['tenant']}:active", job_id)
            pipe.delete(*keys)
            pipe.execute()

    def delete_quietly(self, job_id: str) -> None:
        """`delete`, where Redis may be down (cleanup after a failed submission)."""
        try:
            self.delete(job_id)
        except Exception:  # Redis unreachable: then the record was never written either
            log.warning("could not remove the record of job %s", job_id)

    # --- transitions ---------------------------------------------------------------------------

    def transition(self, job_id: str, allowed: Sequence[Status], to: Status, **fields: str) -> str | None:
        """Move to `to` if the status is one of `allowed`; return the status found (None: no job)."""
        args: list[str] = [" ".join(allowed), to, "updated_at", now()]
        for name, value in fields.items():
            args += [name, value]
        found = cast(str | None, self._transition(keys=[f"job:{job_id}"], args=args))
        if to in TERMINAL and found in allowed:
            self._release_slot_of(job_id)
        if to in TERMINAL and found in allowed and self.on_end is not None:
            try:
                self.on_end(self, job_id, to)
            except Exception:  # a notification never undoes or blocks the transition
                log.exception("could not announce the end of job %s", job_id)
        return found

    # --- the concurrent-jobs quota ----------------------------------------------------------------

    def take_slot(self, tenant: str, job_id: str, limit: int) -> bool:
        """Count `job_id` among the tenant's active jobs if fewer than `limit` are; False when
        the quota is full. Taken before the upload is stored, so a refused job costs nothing."""
        return bool(self._take_slot(keys=[f"tenant:{tenant}:active"], args=[job_id, limit]))

    def release_slot(self, tenant: str, job_id: str) -> None:
        self.redis.srem(f"tenant:{tenant}:active", job_id)

    def active_jobs(self, tenant: str) -> int:
        return int(cast(int, self.redis.scard(f"tenant:{tenant}:active")))

    def _release_slot_of(self, job_id: str) -> None:
        tenant = self.redis.hget(f"job:{job_id}", "tenant")
        if tenant:
            self.release_slot(str(tenant), job_id)

    # --- the LLM spend of a tenant, per window ---------------------------------------------------

    def llm_spend(self, tenant: str, window_s: int) -> tuple[int, int]:
        """Tokens the tenant spent in the current window, and seconds until the window ends."""
        now_s = time.time()
        window = int(now_s // window_s)
        spent = self.redis.get(f"tenant:{tenant}:llm_tokens:{window}")
        return int(cast(str, spent or 0)), max(1, int((window + 1) * window_s - now_s + 0.999))

    def add_llm_spend(self, job_id: str, tokens: int, window_s: int) -> None:
        """Count a labelling run's tokens against its tenant's current window."""
        tenant = cast(str | None, self.redis.hget(f"job:{job_id}", "tenant"))
        if not tenant or tokens <= 0:
            return
        key = f"tenant:{tenant}:llm_tokens:{int(time.time() // window_s)}"
        with self.redis.pipeline() as pipe:
            pipe.incrby(key, tokens)
            pipe.expire(key, 2 * window_s)
            pipe.execute()

    def llm_token_budget(self, job_id: str) -> int | None:
        """The tokens one labelling run of the job may spend (its tenant's quota at submission)."""
        raw = self.redis.hget(f"job:{job_id}", "llm_token_budget")
        return int(cast(str, raw)) if raw is not None else None

    def begin(self, job_id: str, stage: str) -> bool:
        """A task of `stage` starts: True to go on; False when the job is cancelled, cancelling
        (it becomes cancelled: work stops at the next shard), failed, or gone."""
        found = self.transition(job_id, ["queued"], "running", started_at=now())
        if found in ("queued", "running"):
            self._advance(keys=[f"job:{job_id}"], args=[stage, json.dumps(self.stages)])
            return True
        if found == "cancelling":
            self.end_cancelling(job_id)
        return False

    def end_cancelling(self, job_id: str) -> None:
        """End a cancelling job (its work stopped). A reopened job (a relabel of a succeeded one) goes back to
        `succeeded`: its result from before still stands, and a cancel must not take it away."""
        reopened = self.redis.hget(f"job:{job_id}", "reopened")
        self.transition(job_id, ["cancelling"], "succeeded" if reopened else "cancelled", finished_at=now())
        self.redis.hdel(f"job:{job_id}", "reopened")

    def set_report(self, job_id: str, stage: str, report: Mapping[str, Any]) -> None:
        """A stage's summary for the job's status (small: accounting, counts, scores)."""
        self.redis.hset(f"job:{job_id}", f"{REPORT}{stage}", json.dumps(dict(report)))

    def reopen(self, job_id: str, stage: str) -> str | None:
        """A succeeded job runs `stage` (and what follows) again, e.g. a relabel; returns the
        status found, and reopens only from `succeeded`."""
        found = self.transition(job_id, ["succeeded"], "running", stage=stage, finished_at="", reopened=stage)
        if found == "succeeded":
            self.redis.delete(
                *(f"job:{job_id}:progress:{s}" for s in self.stages[self.stages.index(stage) :])
            )
        return found

    def set_total(self, job_id: str, stage: str, total: int) -> None:
        self.redis.hset(f"job:{job_id}:totals", stage, total)

    def shard_done(self, job_id: str, stage: str, shard: int, count: int) -> None:
        """Record a finished shard (idempotent: a shard that runs twice counts once)."""
        with self.redis.pipeline() as pipe:
            pipe.hset(f"job:{job_id}:progress:{stage}", str(shard), count)
            pipe.hset(f"job:{job_id}", "updated_at", now())
            pipe.execute()

    def shard_undecodable(self, job_id: str, shard: int, count: int) -> None:
        """How many of a shard's images failed to decode (idempotent per shard, like progress)."""
        self.redis.hset(f"job:{job_id}:undecodable", str(shard), count)

    def succeed(self, job_id: str) -> str | None:
        found = self.transition(job_id, ["queued", "running"], "succeeded", finished_at=now())
        if found == "cancelling":  # the user asked to stop; honour it even though it finished
            self.end_cancelling(job_id)
        self.redis.hdel(f"job:{job_id}", "reopened")
        return found

    def fail(self, job_id: str, error: Mapping[str, Any], stage: str | None = None) -> str | None:
        """Failed with `error` (problem-details fields), unless already terminal. `stage`: the
        stage that failed, which becomes the job's stage. The stage field only moves forward
        while the job runs (caption and activation run side by side), so without this a failed
        caption shard would leave the job at `activation`."""
        fields = {"finished_at": now(), "error": json.dumps(dict(error))}
        if stage is not None:
            fields["stage"] = stage
        found = self.transition(job_id, ["queued", "running"], "failed", **fields)
        if found == "cancelling":
            self.end_cancelling(job_id)
        self.redis.hdel(f"job:{job_id}", "reopened")
        return found

    def request_cancel(self, job_id: str) -> str | None:
        """Queued jobs are cancelled at once; running ones become cancelling until a task notices."""
        found = self.transition(job_id, ["queued"], "cancelled", finished_at=now())
        if found == "running":
            found = self.transition(job_id, ["running"], "cancelling")
        return found

    def status(self, job_id: str) -> str | None:
        return cast(str | None, self.redis.hget(f"job:{job_id}", "status"))

    # --- idempotency ---------------------------------------------------------------------------

    def reserve_idempotency(
        self, tenant: str, key: str, fingerprint: str, ttl_s: int
    ) -> dict[str, Any] | None:
        """Claim `key` for this request; None when claimed, else what the first request left:
        {"fingerprint", "state": "pending"|"done", "response"?}."""
        name = f"idempotency:{tenant}:{key}"
        claim = json.dumps({"fingerprint": fingerprint, "state": "pending"})
        if self.redis.set(name, claim, nx=True, ex=ttl_s):
            return None
        found = self.redis.get(name)
        if found is None:  # expired between the two calls: claim again
            return self.reserve_idempotency(tenant, key, fingerprint, ttl_s)
        return cast(dict[str, Any], json.loads(found))

    def complete_idempotency(
        self, tenant: str, key: str, fingerprint: str, response: Mapping[str, Any], ttl_s: int
    ) -> None:
        value = {"fingerprint": fingerprint, "state": "done", "response": dict(response)}
        self.redis.set(f"idempotency:{tenant}:{key}", json.dumps(value), ex=ttl_s)

    def release_idempotency(self, tenant: str, key: str) -> None:
        self.redis.delete(f"idempotency:{tenant}:{key}")

    # --- webhooks --------------------------------------------------------------------------------

    def callbacks(self, job_id: str) -> list[dict[str, Any]]:
        raw = self.redis.hget(f"job:{job_id}", "callbacks")
        return cast(list[dict[str, Any]], json.loads(raw)) if raw else []

    def add_delivery(self, job_id: str, entry: Mapping[str, Any], keep: int = 200) -> None:
        """One webhook attempt, appended to the job's delivery log (the newest `keep` are kept)."""
        name = f"job:{job_id}:deliveries"
        with self.redis.pipeline() as pipe:
            pipe.rpush(name, json.dumps(dict(entry)))
            pipe.ltrim(name, -keep, -1)
            pipe.execute()

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in cast(list[str], self.redis.lrange(f"job:{job_id}:deliveries", 0, -1))]

    def ping(self) -> None:
        self.redis.ping()
