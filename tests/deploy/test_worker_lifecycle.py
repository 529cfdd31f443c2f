"""A real Celery worker (prefork, concurrency 1, as k8s/ runs it) on a real Redis: the liveness
probe of the manifests fails when the worker hangs, a SIGTERM lets the running task finish while
the probe stays green, and a killed worker's task runs again on another worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.deploy.manifests import ROOT, named, pod_spec, render
from tests.servers import RedisServer

QUEUE = "lifecycle"


def probe_command(heartbeat: Path, max_age: float) -> list[str]:
    """The caption worker's liveness probe from the rendered manifests, run here with this
    interpreter and test-sized numbers."""
    command = list(
        pod_spec(named(render("k8s"), "Deployment")["caption"])["containers"][0]["livenessProbe"]["exec"][
            "command"
        ]
    )
    assert command[0] == "python"
    command[0] = sys.executable
    command[command.index("/tmp/heartbeat")] = str(heartbeat)
    command[command.index("--max-age") + 1] = str(max_age)
    return command


def probe_passes(heartbeat: Path, max_age: float) -> bool:
    return subprocess.run(probe_command(heartbeat, max_age), capture_output=True, cwd=ROOT).returncode == 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Workers:
    """Starts workers of tests/deploy/worker_app.py, each in its own process group (a pod)."""

    def __init__(self, redis_url: str, folder: Path) -> None:
        self.redis_url, self.folder, self.started = redis_url, folder, []  # type: ignore[var-annotated]

    def start(self, name: str, heartbeat: Path, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "ENVIRONMENT": "development",
            "REDIS_URL": self.redis_url,
            "WORKER_HEARTBEAT_FILE": str(heartbeat),
            "WORKER_HEARTBEAT_INTERVAL_S": "0.3",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        command = [sys.executable, "-m", "celery", "-A", "tests.deploy.worker_app", "worker", "-Q", QUEUE]
        command += ["-n", f"{name}@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"]
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        wait_for(heartbeat.exists, 60, f"{name}'s first heartbeat (log: {log.name})")
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def forget_registered_visibility_timeout(redis_url: str) -> None:
    """Earlier tests' workers, now stopped, registered the default timeout; it would expire
    REGISTRATION_TTL_S after they stopped. A test that needs another value starts clean."""
    import redis

    from shared.jobs.queue_settings_check import KEY

    redis.Redis.from_url(redis_url).delete(KEY)


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(redis_server.url, tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[Celery]:
    app = Celery("lifecycle-client", broker=redis_server.url)
    app.conf.task_routes = {"lifecycle.*": {"queue": QUEUE}}
    yield app
    app.close()


def test_the_liveness_probe_fails_when_the_worker_hangs(workers: Workers, tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    worker = workers.start("hang", heartbeat)
    # max-age = 3 missed beats of 0.3 s, as the manifests use 60 s for 10 s beats (plus slack here).
    time.sleep(1.5)
    assert probe_passes(heartbeat, max_age=1.5)
    os.kill(worker.pid, signal.SIGSTOP)  # the main process hangs; its pool child is untouched
    try:
        wait_for(lambda: not probe_passes(heartbeat, max_age=1.5), 10, "the probe to fail")
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_for(lambda: probe_passes(heartbeat, max_age=1.5), 10, "the probe to pass again")


def test_sigterm_lets_the_running_task_finish_and_the_probe_stays_green(
    workers: Workers, client: Celery, tmp_path: Path
) -> None:
    heartbeat, log = tmp_path / "heartbeat", tmp_path / "work.log"
    worker = workers.start("drain", heartbeat)
    client.send_task("lifecycle.work", args=(str(log), 4.0))
    wait_for(lambda: log.exists(), 30, "the task to start")
    worker.send_signal(signal.SIGTERM)  # what the kubelet sends; Celery's warm shutdown
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # while the pool finishes the task
        assert worker.poll() is None, "the worker left its task"
        assert probe_passes(heartbeat, max_age=1.5), "the probe would kill a draining pod"
        time.sleep(0.3)
    assert worker.wait(20) == 0
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "done"]


def test_a_killed_workers_task_runs_again_elsewhere(workers: Workers, client: Celery, tmp_path: Path) -> None:
    """acks_late and the visibility timeout: a pod killed mid-task (OOM, node lost, or the grace
    period spent) leaves its message unacknowledged, and another worker runs it."""
    log = tmp_path / "work.log"
    short = {"TEST_VISIBILITY_TIMEOUT_S": "2"}
    forget_registered_visibility_timeout(workers.redis_url)
    first = workers.start("first", tmp_path / "heartbeat-1", **short)
    client.send_task("lifecycle.work", args=(str(log), 600.0))
    wait_for(lambda: log.exists(), 30, "the first delivery to start")
    os.killpg(first.pid, signal.SIGKILL)  # the whole pod, no warm shutdown
    first.wait(10)
    workers.start("second", tmp_path / "heartbeat-2", **short)
    # Celery restores unacknowledged messages older than the visibility timeout every 10 s.
    wait_for(lambda: log.read_text().count("done") == 1, 40, "the task to run again and finish")
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 2 and starts[0] != starts[1]


def test_a_suite_task_redelivered_while_it_runs_is_not_run_twice_at_once(
    workers: Workers, client: Celery, tmp_path: Path
) -> None:
    """Two workers with a 2 s visibility timeout: Redis hands the running task to the second one
    (as a worker with a shorter timeout did, issue 12 item 6). The copy finds the task's lock
    held and skips; the first finishes, and the task ran once. Before, both ran it at once."""
    import uuid

    from shared.jobs.jobstore import JobStore

    jobs = JobStore.from_url(workers.redis_url)
    job_id = uuid.uuid4().hex
    jobs.create(job_id, "tenant-a", images=1, skipped=0, shards=1, totals={})
    log = tmp_path / "work.log"
    short = {"TEST_VISIBILITY_TIMEOUT_S": "2"}
    forget_registered_visibility_timeout(workers.redis_url)
    workers.start("first", tmp_path / "heartbeat-1", **short)
    client.send_task("lifecycle.job_work", args=(job_id, str(log), 16.0))
    wait_for(lambda: log.exists(), 30, "the task to start")
    workers.start("second", tmp_path / "heartbeat-2", **short)
    # kombu hands out unacknowledged messages past the visibility timeout every 10 s.
    wait_for(lambda: "done" in log.read_text(), 40, "the task to finish")
    time.sleep(1)
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "done"]
    second = (tmp_path / "second.log").read_text()
    assert "running elsewhere; this copy skips" in second, second[-3000:]
    jobs.delete(job_id)
    jobs.redis.close()


def pool_children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_suite_task_whose_pool_process_died_runs_again_once_its_lock_lapses(
    workers: Workers, client: Celery, tmp_path: Path
) -> None:
    """The pool process running a task is killed (the OOM killer's usual victim): Celery requeues
    the message at once, while the dead process's lock still stands. The copy must not be lost:
    it comes back after TASK_STALL_S, finds the lock lapsed, and runs the task."""
    import uuid

    from shared.jobs.jobstore import JobStore

    jobs = JobStore.from_url(workers.redis_url)
    job_id = uuid.uuid4().hex
    jobs.create(job_id, "tenant-a", images=1, skipped=0, shards=1, totals={})
    log = tmp_path / "work.log"
    forget_registered_visibility_timeout(workers.redis_url)
    worker = workers.start("oom", tmp_path / "heartbeat", TASK_STALL_S="10")
    client.send_task("lifecycle.job_work", args=(job_id, str(log), 2.0))
    wait_for(lambda: log.exists(), 30, "the task to start")
    os.kill(pool_children(worker.pid)[0], signal.SIGKILL)
    wait_for(lambda: "done" in log.read_text(), 40, "the task to run again and finish")
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "start", "done"]
    jobs.delete(job_id)
    jobs.redis.close()


def test_a_worker_with_another_visibility_timeout_refuses_to_start(workers: Workers, tmp_path: Path) -> None:
    """A shorter timeout in one worker would take over tasks still running in the others."""
    forget_registered_visibility_timeout(workers.redis_url)
    workers.start("default", tmp_path / "heartbeat-1")
    log = tmp_path / "odd.log"
    environment = {
        **os.environ,
        "ENVIRONMENT": "development",
        "REDIS_URL": workers.redis_url,
        "PYTHONPATH": str(ROOT),
        "TEST_VISIBILITY_TIMEOUT_S": "2",
    }
    command = [sys.executable, "-m", "celery", "-A", "tests.deploy.worker_app", "worker", "-Q", QUEUE]
    command += ["-n", "odd@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"]
    with log.open("wb") as out:
        odd = subprocess.run(
            command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT, timeout=60
        )
    assert odd.returncode != 0
    text = log.read_text()
    assert "refused to start" in text and "QUEUE_VISIBILITY_TIMEOUT_S is 2 here but 7200" in text, text[
        -2000:
    ]
