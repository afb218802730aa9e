"""Model-affinity routing on the real stack: a Redis of our own, a gateway, two Celery workers,
four tiny SD1.5 models, each worker's cache holding two (tests/affinity_scenario.py).

The mixed stream is 20 tasks here, to keep the suite fast (`make bench` runs 100)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from openpik.affinity import (
    DIRECT_QUEUES_KEY,
    AffinityRouter,
    DirectQueue,
    Heartbeat,
    heartbeat_key,
    read_cluster,
    write_heartbeat,
)
from openpik.routing import DEFAULT_QUEUE, direct_queue
from openpik.task_records import TaskStore
from openpik.vocabulary import TaskStatus
from tests.affinity_scenario import (
    HEARTBEAT_S,
    cache_bytes_for_two,
    ended,
    finished,
    mixed_stream,
    run_stream,
    start_workers,
    submit,
    warm_up,
    write_affinity_catalog,
)
from tests.requests import txt2img
from tests.stack import RedisDb, RedisServer, own_redis_fixtures, running_stack, stack_settings, wait_for

STREAM = 20


server, client = own_redis_fixtures("affinity")


def env_for(tiny_catalog: Path, tmp: Path, server: RedisServer, routing: bool) -> dict[str, str]:
    env = stack_settings(
        write_affinity_catalog(tiny_catalog),
        tmp,
        RedisDb.BENCH,  # replaced: this suite's own Redis
        affinity_routing=str(routing).lower(),
        affinity_heartbeat_s=HEARTBEAT_S,
        model_cache_bytes=str(cache_bytes_for_two(tiny_catalog)),
        progress_interval_s="0",
    )
    # One torch thread per worker: two workers on a small machine would otherwise wait on each other's threads.
    return env | {"OPENPIK_REDIS_URL": server.url, "OMP_NUM_THREADS": "1"}


@pytest.mark.stack
@pytest.mark.models
def test_routing_on_loads_fewer_models_than_off_on_the_same_mixed_stream(tiny_catalog_path, tmp_path, server):
    stream = mixed_stream(STREAM)
    outcomes = {}
    for routing in (True, False):
        work = tmp_path / f"routing-{routing}"
        work.mkdir()
        outcomes[routing] = run_stream(env_for(tiny_catalog_path, work, server, routing), work, stream)
    on, off = outcomes[True], outcomes[False]
    print(f"\nmain model loads per {STREAM} tasks: routing on {on.loads}, off {off.loads}")
    assert on.total_loads < off.total_loads
    assert len(on.ran_on) == 2, on.ran_on  # both workers took part: routing did not serialize the stream


@pytest.mark.stack
@pytest.mark.models
def test_no_task_waits_for_a_busy_worker_nor_stays_with_a_stopped_one(tiny_catalog_path, tmp_path, server, client):
    """A holder busy with a long task: the next tasks for its model run on the other, idle worker.
    Then w1 stops (SIGSTOP: no consuming, no heartbeat) while the gateway still sees it idle with the
    model: the task sent to its direct queue goes back to the group queue once its heartbeat expires."""
    env = env_for(tiny_catalog_path, tmp_path, server, routing=True) | {"OPENPIK_AFFINITY_HEARTBEAT_TTL_S": "6"}
    store = TaskStore(client, ttl_s=3600)
    with running_stack(env, tmp_path) as stack:
        start_workers(stack)
        warm_up(stack, store)
        holder = finished(store, submit(stack, 1, seed=0)).worker  # the first worker to hold model 1
        wait_for(lambda: heartbeat_holds(client, holder, 1), 10, message="the holder's heartbeat")
        time.sleep(10 * float(HEARTBEAT_S))  # the gateway reads the heartbeats every HEARTBEAT_S

        long = stack.gateway.call(txt2img(MainModelId=1, Steps=150, Width=384, Height=384))["TaskUID"]
        running = wait_for(lambda: started(store, long), 60, message="the long task to start")
        assert running.worker == holder  # the idle holder got it, through its own queue
        assert running.queue == direct_queue(DEFAULT_QUEUE, holder)

        others = [finished(store, submit(stack, 1, seed=seed)) for seed in range(1, 4)]
        assert {record.worker for record in others} == {"w1@test", "w2@test"} - {holder}
        assert store.get(long).status == TaskStatus.RUNNING  # none of them waited for the busy holder

        stack.gateway.call({"Action": "CancelTask", "TaskUID": long})
        wait_for(lambda: ended(store, long), 60, message="the long task to end")
        for name in ("w1@test", "w2@test"):  # both idle, both holding model 1
            wait_for(lambda name=name: heartbeat_holds(client, name, 1), 10, message=f"{name}'s heartbeat")
        stopped = stack.workers[0]
        signal_worker(stopped, signal.SIGSTOP)
        time.sleep(1.5)  # its pending BRPOP (1 s) runs out, so Redis hands it nothing more; its heartbeat lives on

        record = finished(store, submit(stack, 1, seed=4))  # w1 first by name among equal holders
        assert record.queue == direct_queue(DEFAULT_QUEUE, "w1@test")
        assert record.worker == "w2@test"
        signal_worker(stopped, signal.SIGCONT)


def signal_worker(worker, signum: int) -> None:
    for pid in [worker.process.pid, *worker.child_pids()]:
        os.kill(pid, signum)


def heartbeat_holds(client: redis.Redis, worker: str, model_id: int) -> bool:
    cluster = read_cluster(client)
    beat = cluster.heartbeats.get(worker)
    return beat is not None and model_id in beat.models and not beat.busy


def started(store: TaskStore, task: str):
    record = store.get(task)
    return record if record is not None and record.status == TaskStatus.RUNNING else None


def test_a_gone_workers_waiting_tasks_go_back_to_their_group_queue_in_order(client):
    gone = DirectQueue(direct_queue(DEFAULT_QUEUE, "gone@host"), DEFAULT_QUEUE, "gone@host", seen=0.0)
    client.hset(DIRECT_QUEUES_KEY, gone.name, gone.entry())
    client.lpush(gone.name, "m1", "m2")  # Celery's Redis transport pushes left, pops right: m1 is next
    client.lpush(DEFAULT_QUEUE, "g1")
    router = AffinityRouter(client, depth_limit=1, interval_s=1, ttl_s=3, forget_after_s=3600)
    assert router.refresh() == 2
    assert client.lrange(DEFAULT_QUEUE, 0, -1) == [b"g1", b"m2", b"m1"]  # theirs next, in their order
    assert client.llen(gone.name) == 0
    assert client.hexists(DIRECT_QUEUES_KEY, gone.name)  # seen recently enough: an unacknowledged task may return

    AffinityRouter(client, depth_limit=1, interval_s=1, ttl_s=3, forget_after_s=0).refresh()
    assert not client.hexists(DIRECT_QUEUES_KEY, gone.name)  # gone long enough, empty: forgotten


def test_a_live_workers_heartbeat_routes_until_it_expires(client):
    beat = Heartbeat("w@host", {DEFAULT_QUEUE: direct_queue(DEFAULT_QUEUE, "w@host")}, models=(1,))
    write_heartbeat(client, beat, ttl_s=0.3)
    router = AffinityRouter(client, depth_limit=1, interval_s=1, ttl_s=3, forget_after_s=3600)
    router.refresh()
    job = _job(1)
    assert router.route(DEFAULT_QUEUE, job) == beat.queues[DEFAULT_QUEUE]
    assert router.route(DEFAULT_QUEUE, job) == DEFAULT_QUEUE  # the first is counted until the next read
    assert json.loads(client.hget(DIRECT_QUEUES_KEY, beat.queues[DEFAULT_QUEUE]))["worker"] == "w@host"
    wait_for(lambda: client.get(heartbeat_key(beat.worker)) is None, 5, message="the heartbeat's TTL")
    router.refresh()
    assert router.route(DEFAULT_QUEUE, job) == DEFAULT_QUEUE  # gone: nothing is sent to it


def _job(model_id: int):
    from openpik.job import Job, ModelRef

    return Job(model=ModelRef(model_id=model_id, path="m", format="diffusers"))
