"""One visibility timeout for every process on a broker, or a refusal at start.

Redis hands an unacknowledged message to another worker once it has been out for the visibility
timeout, as that worker counts it. A worker started with a shorter timeout than the others
therefore takes back tasks that are still running elsewhere, and the same shard or job step runs
twice at once. So each worker registers its timeout in Redis when it starts and keeps the entry
fresh while it runs (the entry expires `REGISTRATION_TTL_S` after the last process stops), and a
process whose timeout differs from the registered one refuses to start, saying what to do."""

from __future__ import annotations

from typing import Any

KEY = "neuron_atlas:settings:queue_visibility_timeout_s"
REGISTRATION_TTL_S = 300


class SettingMismatch(RuntimeError):
    pass


def register_visibility_timeout(redis: Any, seconds: int) -> None:
    """Register this process's visibility timeout, or raise SettingMismatch."""
    ours = str(int(seconds))
    if redis.set(KEY, ours, nx=True, ex=REGISTRATION_TTL_S):
        return
    theirs = redis.get(KEY)
    theirs = theirs.decode() if isinstance(theirs, bytes) else theirs
    if theirs is not None and theirs != ours:
        raise SettingMismatch(
            f"QUEUE_VISIBILITY_TIMEOUT_S is {ours} here but {theirs} in the processes already "
            "running on this Redis; a worker with another value would take over tasks that are "
            "still running. Start every process with the same value (to change it, stop them "
            f"all; their registration expires {REGISTRATION_TTL_S} s after the last one stops)."
        )
    redis.set(KEY, ours, ex=REGISTRATION_TTL_S)  # ours, or it expired just now


def refresh(redis: Any, seconds: int) -> None:
    redis.set(KEY, str(int(seconds)), ex=REGISTRATION_TTL_S)
