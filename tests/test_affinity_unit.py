"""Model-affinity routing's pure choices: which queue a task goes to, which direct queues are
emptied back into their group queue, and the order a worker consumes its queues in."""

from __future__ import annotations

import pytest

from openpik.affinity import Cluster, DirectQueue, Heartbeat, WorkerLoad, choose_queue, stranded
from openpik.job import BackgroundJob, Job, LoraRef, ModelRef, RemoverRef
from openpik.routing import CALLBACK_QUEUE, DEFAULT_QUEUE, direct_queue, queue_name
from worker.affinity import consumed_queues

OTHER = queue_name("anime")


def job(model_id: int, *lora_ids: int) -> Job:
    loras = tuple(LoraRef(lora_id=i, path=f"l{i}", weight=1.0) for i in lora_ids)
    return Job(model=ModelRef(model_id=model_id, path=f"m{model_id}", format="diffusers"), loras=loras)


def worker(name: str, models=(), busy=False, waiting=0, loras=(), groups=(DEFAULT_QUEUE,)) -> WorkerLoad:
    queues = {group: direct_queue(group, name) for group in groups}
    return WorkerLoad(Heartbeat(name, queues, tuple(models), tuple(loras), busy), waiting)


def to(name: str, group: str = DEFAULT_QUEUE) -> str:
    return direct_queue(group, name)


CASES = [
    # (workers, the task, depth limit, expected queue, why)
    ([], job(1), 1, DEFAULT_QUEUE, "no live worker: the group queue"),
    ([worker("a", [1])], job(1), 1, to("a"), "an idle holder gets it"),
    ([worker("a", [2])], job(1), 1, DEFAULT_QUEUE, "nobody holds the model"),
    ([worker("a", [1], busy=True), worker("b")], job(1), 1, DEFAULT_QUEUE, "the holder is busy: not behind it"),
    ([worker("a", [1], waiting=1), worker("b")], job(1), 1, DEFAULT_QUEUE, "the holder has one waiting already"),
    ([worker("a", [1], busy=True)], job(1), 2, to("a"), "a deeper limit queues behind a busy holder"),
    ([worker("a", [1], busy=True, waiting=1)], job(1), 2, DEFAULT_QUEUE, "but only up to the limit"),
    ([worker("a", [1], busy=True), worker("b", [1])], job(1), 2, to("b"), "the least loaded holder first"),
    ([worker("b", [1]), worker("a", [1])], job(1), 1, to("a"), "equal load: by name, alike on every gateway"),
    ([worker("a", [1], loras=[5]), worker("b", [1], loras=[7])], job(1, 7), 1, to("b"), "the one with its LoRA"),
    ([worker("a", [1], groups=(OTHER,))], job(1), 1, DEFAULT_QUEUE, "a holder serving another group only"),
    ([worker("a", [1], groups=(OTHER, DEFAULT_QUEUE))], job(1), 1, to("a"), "a holder serving both groups"),
]


@pytest.mark.parametrize(("workers", "task", "limit", "expected", "why"), CASES, ids=[case[-1] for case in CASES])
def test_choose_queue(workers, task, limit, expected, why):
    assert choose_queue(workers, DEFAULT_QUEUE, task, limit) == expected, why


def test_a_job_without_a_main_model_goes_to_its_group_queue():
    removal = BackgroundJob(remover=RemoverRef(remover_id=1, path="u2net.onnx"), images=("image0",))
    assert choose_queue([worker("a", [1])], DEFAULT_QUEUE, removal, 1) == DEFAULT_QUEUE


def beat(name: str, busy: bool = False, groups=(DEFAULT_QUEUE,)) -> Heartbeat:
    return Heartbeat(name, {group: direct_queue(group, name) for group in groups}, (1,), (), busy)


def waiting(name: str, count: int, group: str = DEFAULT_QUEUE) -> DirectQueue:
    return DirectQueue(direct_queue(group, name), group, name, waiting=count)


STRANDED = [
    # (live heartbeats, direct queues, the ones emptied back into their group queue, why)
    ([], [waiting("gone", 2)], ["gone"], "a gone worker's tasks go back"),
    ([], [waiting("gone", 0)], [], "an empty queue needs nothing"),
    ([beat("a")], [waiting("a", 1)], [], "an idle worker is about to take its own task"),
    ([beat("a", busy=True)], [waiting("a", 1)], [], "busy, but nobody else could take it"),
    ([beat("a", busy=True), beat("b")], [waiting("a", 1)], ["a"], "busy while b idles: back to the group"),
    ([beat("a", busy=True), beat("b", busy=True)], [waiting("a", 1)], [], "everyone busy: it stays"),
    ([beat("a", busy=True), beat("b")], [waiting("a", 1), waiting("b", 1)], [], "b has a task waiting: not idle"),
    ([beat("a", busy=True), beat("b", groups=(OTHER,))], [waiting("a", 1)], [], "the idle one serves another group"),
]


@pytest.mark.parametrize(("beats", "direct", "expected", "why"), STRANDED, ids=[case[-1] for case in STRANDED])
def test_stranded(beats, direct, expected, why):
    cluster = Cluster({b.worker: b for b in beats}, direct)
    assert [queue.worker for queue in stranded(cluster)] == expected, why


def test_the_workers_view_counts_each_ones_waiting_tasks_and_drops_emptied_queues():
    cluster = Cluster(
        {"a": beat("a", groups=(DEFAULT_QUEUE, OTHER)), "b": beat("b")},
        [waiting("a", 2), waiting("a", 1, OTHER), waiting("b", 3), waiting("gone", 4)],
    )
    assert [(w.heartbeat.worker, w.waiting) for w in cluster.workers()] == [("a", 3), ("b", 3)]
    assert [w.waiting for w in cluster.workers(emptied=[direct_queue(DEFAULT_QUEUE, "b")])] == [3, 0]


def test_heartbeats_and_registry_entries_survive_their_encoding():
    heartbeat = Heartbeat("w@host", {DEFAULT_QUEUE: to("w@host")}, (1, 3), (2,), True)
    assert Heartbeat.decode(heartbeat.encode().encode()) == heartbeat
    queue = DirectQueue(to("w@host"), DEFAULT_QUEUE, "w@host", seen=12.5)
    assert DirectQueue.from_entry(queue.name.encode(), queue.entry()) == queue


def test_a_worker_consumes_its_direct_queues_first_then_callbacks_then_its_groups():
    queues = consumed_queues([DEFAULT_QUEUE, CALLBACK_QUEUE, OTHER], "w@host")
    assert queues == [to("w@host"), to("w@host", OTHER), CALLBACK_QUEUE, DEFAULT_QUEUE, OTHER]
    assert consumed_queues([CALLBACK_QUEUE], "cb@host") == [CALLBACK_QUEUE]  # a callbacks-only worker: no direct queue
