"""Redis with Sentinel: the master killed with -9 in the middle of a stream of submissions.

The test runs its own Redis master, replica and three Sentinels (redis-server --sentinel) on
free ports, from the shipped configs/sentinel files, so it uses no RedisDb of the shared test
Redis. The gateway and the worker only know the Sentinels: OPENPIK_REDIS_URL points at a port
where nothing listens and gives only the database number. Submissions wait for one replica
(OPENPIK_REDIS_WAIT_REPLICAS=1), so after the failover the gateway accepts tasks again once the
old master, restarted as the new master's replica, has synced. Asserted: every answer is 0 with
a TaskUID or 150 (HTTP 503, never 500) without one, every TaskUID returned ends Finished, and
the gateway, the worker and its pool child are the processes started before the kill.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.requests import txt2img
from tests.stack import REPO, Gateway, RedisServer, running_stack, signed, stack_settings, wait_for

pytestmark = pytest.mark.stack

MASTER_NAME = "mymaster"  # the shipped sentinel.conf's
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
ACCEPTED_BEFORE_KILL = 4
ACCEPTED_AFTER_REJOIN = 4
NO_SYNC_DELAY = ("--repl-diskless-sync-delay", "0")  # as configs/sentinel/replica.conf: a replica syncs at once


@dataclass
class Cluster:
    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers names it now."""
        for sentinel in self.sentinels:
            try:
                _, port = redis.Redis(port=sentinel.port).sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
            except (redis.ConnectionError, TypeError):
                continue
        return None


def config_copy(shipped: str, path: Path, text: str | None = None) -> Path:
    """A copy of a shipped config (or ``text``): Sentinel rewrites the files of every server it
    reconfigures (CONFIG REWRITE), so none of them may be the repository's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((REPO / "configs" / shipped).read_text() if text is None else text)
    return path


def sentinel_config(path: Path, master_port: int) -> Path:
    """configs/sentinel/sentinel.conf watching our master, with the test's short timings."""
    text = (REPO / "configs" / "sentinel" / "sentinel.conf").read_text()
    for pattern, line in (
        (r"sentinel monitor mymaster \S+ \d+ 2", f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2"),
        (
            r"sentinel down-after-milliseconds mymaster \d+",
            f"sentinel down-after-milliseconds mymaster {DOWN_AFTER_MS}",
        ),
        (r"sentinel failover-timeout mymaster \d+", f"sentinel failover-timeout mymaster {FAILOVER_TIMEOUT_MS}"),
    ):
        text, found = re.subn(pattern, line, text)
        assert found == 1, pattern
    return config_copy("sentinel/sentinel.conf", path, text)


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    master = RedisServer(
        tmp_path / "master", config=config_copy("redis.conf", tmp_path / "master" / "redis.conf"), args=NO_SYNC_DELAY
    )
    replica = RedisServer(
        tmp_path / "replica",
        config=config_copy("sentinel/replica.conf", tmp_path / "replica" / "redis.conf"),
        args=("--replicaof", "127.0.0.1", str(master.port)),
    )
    sentinels = [
        RedisServer(
            tmp_path / f"sentinel-{i}",
            config=sentinel_config(tmp_path / f"sentinel-{i}" / "sentinel.conf", master.port),
            args=("--sentinel",),
        )
        for i in range(3)
    ]
    started = Cluster(master, replica, sentinels)
    try:
        master.start()
        replica.start()
        wait_for(lambda: _link_up(replica), 20, message="the replica to sync")
        for sentinel in sentinels:
            sentinel.start()
        wait_for(lambda: all(_sees_everyone(s) for s in sentinels), 30, message="the Sentinels to find each other")
        yield started
    finally:
        for server in [*sentinels, replica, master]:
            server.stop()


def _link_up(server: RedisServer) -> bool:
    return redis.Redis(port=server.port).info("replication").get("master_link_status") == "up"


def _sees_everyone(sentinel: RedisServer) -> bool:
    state = redis.Redis(port=sentinel.port, decode_responses=True).sentinel_master(MASTER_NAME)
    return int(state["num-slaves"]) == 1 and int(state["num-other-sentinels"]) == 2


@dataclass
class Answer:
    at: float
    http_status: int
    retcode: int
    task: str | None
    message: str


def submit(gateway: Gateway, seed: int) -> Answer:
    response = httpx.post(f"{gateway.url}/", json=signed(txt2img(Seed=seed)), timeout=30)
    body = response.json()
    return Answer(time.monotonic(), response.status_code, body["RetCode"], body.get("TaskUID"), body["Message"])


def task_status(gateway: Gateway, task: str) -> str:
    return gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task})["TaskStatus"]


def test_master_killed_mid_stream_every_accepted_task_finishes(cluster, tiny_catalog_path, tmp_path):
    env = stack_settings(
        tiny_catalog_path,
        tmp_path,
        0,
        redis_sentinels=cluster.addresses,
        redis_master=MASTER_NAME,
        redis_wait_replicas="1",
        redis_wait_timeout_ms="500",
        visibility_timeout_s="15",
        progress_interval_s="0",
    ) | {"OPENPIK_REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens there: only the Sentinels are used
    old_master = cluster.master.port
    with running_stack(env, tmp_path, worker="ha", flush=False) as stack:
        gateway, worker = stack.gateway, stack.worker
        pids = (gateway.process.pid, worker.process.pid, worker.child_pids())
        answers: list[Answer] = []
        killed_at = rejoined_at = 0.0

        def accepted_since(moment: float) -> int:
            return sum(1 for a in answers if a.retcode == 0 and moment and a.at > moment)

        seed = 0
        deadline = time.monotonic() + 60
        while not rejoined_at or accepted_since(rejoined_at) < ACCEPTED_AFTER_REJOIN:
            assert time.monotonic() < deadline, "the stream did not recover"
            answers.append(submit(gateway, seed))
            seed += 1
            if not killed_at and len(answers) == ACCEPTED_BEFORE_KILL:
                cluster.master.kill()
                killed_at = time.monotonic()
            new_master = cluster.master_port() if killed_at and not rejoined_at else None
            if new_master not in (None, old_master):
                # Restarted as the new master's replica, as a start script that asks the Sentinels does
                # (left alone, Sentinel converts a returning old master only after several seconds).
                cluster.master.args = (*NO_SYNC_DELAY, "--replicaof", "127.0.0.1", str(new_master))
                cluster.master.start()
                rejoined_at = time.monotonic()

        for answer in answers:
            assert (answer.retcode, answer.http_status) in ((0, 200), (150, 503)), answer
            assert (answer.task is not None) == (answer.retcode == 0)
        accepted = [a.task for a in answers if a.task]
        refused = [a for a in answers if a.retcode == 150]
        assert refused and all(a.at > killed_at for a in refused)
        for task in accepted:
            wait_for(lambda task=task: task_status(gateway, task) == "Finished", 60, message=f"task {task} to finish")
        # The failover itself is what the loop waited for (a new master, the old one back as its
        # replica); a second one later on this loaded machine would be Sentinel's business, not ours.
        assert (gateway.process.pid, worker.process.pid, worker.child_pids()) == pids
        assert gateway.process.poll() is None and worker.process.poll() is None
        _report(answers, killed_at, rejoined_at)


def _report(answers: list[Answer], killed_at: float, rejoined_at: float) -> None:
    """The failover as the clients saw it (pytest -s shows it): each answer after the kill."""
    print(
        f"\nmaster killed at 0 s; a new master elected, the old one restarted as its replica, at "
        f"{rejoined_at - killed_at:.2f} s"
    )
    for answer in answers:
        if answer.at > killed_at:
            print(f"{answer.at - killed_at:6.2f} s  {answer.retcode}  {answer.message or answer.task}")
