"""Model-affinity routing: send a task to an idle worker that already holds its model.

Loading a main model costs seconds; a worker whose model cache already holds it runs the
task at once. So each worker keeps a heartbeat in Redis (``heartbeat_key``, a few seconds'
TTL): the group queues it serves with its own direct queue for each, the main models and
LoRAs its model cache holds, and whether it is running a task. Gateways read every
heartbeat in the background (``AffinityRouter``, every OPENPIK_AFFINITY_HEARTBEAT_S) and
route each submission in memory, with no Redis round trip (``choose_queue``): to the direct
queue of a live worker serving the task's group queue that holds its model and has fewer
than OPENPIK_AFFINITY_DEPTH_LIMIT tasks running or waiting there (1: only an idle one),
least loaded first; else to the group queue, which every worker of the group consumes after
its direct queue. A busy holder is never sent more, so no task waits behind it while
another worker is idle; the gateway counts its own sends until the next read, so a burst
does not pile onto one idle worker either.

Between two reads a heartbeat may be stale (a worker that just took a task from the group
queue still looks idle). So each read also moves tasks back to their group queue
(``stranded``) from the direct queues of workers that are gone (heartbeat expired: also
what a dead worker's unacknowledged tasks come back to) and of busy workers while another
worker of the group is idle. A task so waits behind a busy worker for one read interval
at most, and never stays in the direct queue of a worker that does not come back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import redis

from openpik.job import Job, QueuedJob

log = logging.getLogger("openpik.affinity")

PREFIX = "openpik:affinity:"
DIRECT_QUEUES_KEY = f"{PREFIX}direct-queues"
"""A hash: every direct queue ever announced -> its DirectQueue entry (group queue, worker, last seen),
so a gone worker's direct queue is still known, and emptied, after its heartbeat expired."""


def heartbeat_key(worker: str) -> str:
    """A worker's latest Heartbeat (JSON), expiring OPENPIK_AFFINITY_HEARTBEAT_TTL_S after it was written."""
    return f"{PREFIX}heartbeat:{worker}"


@dataclass(frozen=True)
class Heartbeat:
    """What a worker tells the gateways about itself."""

    worker: str
    queues: dict[str, str]
    """Each group queue it serves -> its own direct queue for that group."""
    models: tuple[int, ...] = ()
    """The main model ids its model cache holds."""
    loras: tuple[int, ...] = ()
    """The LoRA ids loaded as adapters into those models."""
    busy: bool = False
    """Running a task now."""

    def encode(self) -> str:
        return json.dumps(
            {
                "worker": self.worker,
                "queues": self.queues,
                "models": self.models,
                "loras": self.loras,
                "busy": self.busy,
            }
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> Heartbeat:
        data = json.loads(raw)
        return cls(
            worker=data["worker"],
            queues=dict(data["queues"]),
            models=tuple(data["models"]),
            loras=tuple(data["loras"]),
            busy=bool(data["busy"]),
        )


@dataclass(frozen=True)
class DirectQueue:
    """A worker's direct queue as the registry (DIRECT_QUEUES_KEY) and a read of its length know it."""

    name: str
    group_queue: str
    worker: str
    seen: float = 0.0
    """When its worker last announced it (that worker's clock; only to forget long-gone workers)."""
    waiting: int = 0

    def entry(self) -> str:
        return json.dumps({"group_queue": self.group_queue, "worker": self.worker, "seen": self.seen})

    @classmethod
    def from_entry(cls, name: str | bytes, raw: str | bytes) -> DirectQueue:
        data = json.loads(raw)
        text = name.decode() if isinstance(name, bytes) else name
        return cls(name=text, group_queue=data["group_queue"], worker=data["worker"], seen=float(data["seen"]))


@dataclass(frozen=True)
class WorkerLoad:
    """A live worker and the tasks waiting in its direct queues."""

    heartbeat: Heartbeat
    waiting: int = 0

    @property
    def load(self) -> int:
        """Tasks it runs or will run before one sent now: the depth limit applies to this."""
        return int(self.heartbeat.busy) + self.waiting

    @property
    def idle(self) -> bool:
        return self.load == 0


def choose_worker(
    workers: Iterable[WorkerLoad], group_queue: str, job: QueuedJob, depth_limit: int
) -> WorkerLoad | None:
    """The worker whose direct queue ``job`` goes to, or None for the group queue.

    Among the live workers serving ``group_queue`` that hold the job's main model and have
    room under ``depth_limit``: the least loaded, then the one holding most of its LoRAs,
    then by name (so every gateway chooses alike). A job of another kind, without a main
    model, always goes to the group queue."""
    if not isinstance(job, Job):
        return None
    model = job.model
    loras = {lora.lora_id for lora in job.loras}
    holders = [
        worker
        for worker in workers
        if group_queue in worker.heartbeat.queues
        and model.model_id in worker.heartbeat.models
        and worker.load < depth_limit
    ]
    if not holders:
        return None
    return min(holders, key=lambda w: (w.load, -len(loras & set(w.heartbeat.loras)), w.heartbeat.worker))


def group_queue_only(group_queue: str, job: QueuedJob) -> str:
    """The Route when affinity routing is off: every task to its group queue."""
    return group_queue


def choose_queue(workers: Iterable[WorkerLoad], group_queue: str, job: QueuedJob, depth_limit: int) -> str:
    """The queue to publish ``job`` to: a holder's direct queue (choose_worker) or ``group_queue``."""
    chosen = choose_worker(workers, group_queue, job, depth_limit)
    return group_queue if chosen is None else chosen.heartbeat.queues[group_queue]


@dataclass(frozen=True)
class Cluster:
    """One read of every heartbeat and every direct queue's length."""

    heartbeats: dict[str, Heartbeat]
    """Live workers by name."""
    direct: list[DirectQueue] = field(default_factory=list)

    def workers(self, emptied: Iterable[str] = ()) -> list[WorkerLoad]:
        """The live workers with their waiting tasks, counting the direct queues ``emptied`` as empty."""
        skip = set(emptied)
        waiting = {name: 0 for name in self.heartbeats}
        for queue in self.direct:
            if queue.worker in waiting and queue.name not in skip:
                waiting[queue.worker] += queue.waiting
        return [WorkerLoad(heartbeat, waiting[name]) for name, heartbeat in sorted(self.heartbeats.items())]


def stranded(cluster: Cluster) -> list[DirectQueue]:
    """Direct queues whose waiting tasks should go back to their group queue: their worker is
    gone, or it is busy while another live worker serving the same group queue is idle."""
    workers = {w.heartbeat.worker: w for w in cluster.workers()}
    idle_groups = {group for w in workers.values() if w.idle for group in w.heartbeat.queues}

    def strands(queue: DirectQueue) -> bool:
        owner = workers.get(queue.worker)
        return owner is None or (owner.heartbeat.busy and queue.group_queue in idle_groups)

    return [queue for queue in cluster.direct if queue.waiting and strands(queue)]


def write_heartbeat(client: redis.Redis, heartbeat: Heartbeat, ttl_s: float) -> None:
    """A worker's beat: its heartbeat with its TTL, and its direct queues announced (one round trip)."""
    now = time.time()
    entries = {
        direct: DirectQueue(direct, group, heartbeat.worker, seen=now).entry()
        for group, direct in heartbeat.queues.items()
    }
    with client.pipeline(transaction=False) as pipe:
        pipe.set(heartbeat_key(heartbeat.worker), heartbeat.encode(), px=max(1, int(ttl_s * 1000)))
        if entries:
            pipe.hset(DIRECT_QUEUES_KEY, mapping=entries)  # type: ignore[arg-type]  # redis-py's mapping type
        pipe.execute()


def read_cluster(client: redis.Redis) -> Cluster:
    """Every live heartbeat and every announced direct queue's length (two round trips)."""
    direct = [DirectQueue.from_entry(name, raw) for name, raw in client.hgetall(DIRECT_QUEUES_KEY).items()]
    names = sorted({queue.worker for queue in direct})
    with client.pipeline(transaction=True) as pipe:
        for name in names:
            pipe.get(heartbeat_key(name))
        for queue in direct:
            pipe.llen(queue.name)
        replies = pipe.execute()
    beats = {name: Heartbeat.decode(raw) for name, raw in zip(names, replies[: len(names)]) if raw is not None}
    lengths = replies[len(names) :]
    return Cluster(beats, [replace(queue, waiting=int(n)) for queue, n in zip(direct, lengths, strict=True)])


def move_back(client: redis.Redis, queue: DirectQueue) -> int:
    """Move every task waiting in ``queue`` to its group queue, oldest next in line there; how many.

    One LMOVE per task: atomic, so a worker taking one meanwhile, or another gateway moving
    the same queue, never loses or doubles one. The message keeps its routing key (the direct
    queue), which is also its task record's queue, so starting it updates the right waiting set.
    """
    moved = 0
    while client.lmove(queue.name, queue.group_queue, "LEFT", "RIGHT") is not None:
        moved += 1
    return moved


def forget_gone(client: redis.Redis, cluster: Cluster, now: float, forget_after_s: float) -> None:
    """Drop the registry entries of empty direct queues whose worker has been gone for
    ``forget_after_s`` (beyond the visibility timeout, so no unacknowledged task can still come back)."""
    gone = [
        queue.name
        for queue in cluster.direct
        if queue.worker not in cluster.heartbeats and not queue.waiting and now - queue.seen > forget_after_s
    ]
    if gone:
        client.hdel(DIRECT_QUEUES_KEY, *gone)


class AffinityRouter:
    """A gateway's view of the workers, read in a thread every ``interval_s``; ``route`` is its Route.

    ``route`` runs in memory: it never waits on Redis, whatever Redis does. When Redis cannot be
    read, the view empties after the heartbeats' TTL and every task goes to its group queue.
    """

    def __init__(
        self, client: redis.Redis, depth_limit: int, interval_s: float, ttl_s: float, forget_after_s: float
    ) -> None:
        self.client = client
        self.depth_limit = depth_limit
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.forget_after_s = forget_after_s
        self._workers: list[WorkerLoad] = []
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openpik-affinity", daemon=True)

    def route(self, group_queue: str, job: QueuedJob) -> str:
        """The queue for ``job`` (choose_queue), counting the send until the next read."""
        with self._lock:
            if time.monotonic() - self._read_at > self.ttl_s:  # no successful read lately: nothing is known
                return group_queue
            chosen = choose_worker(self._workers, group_queue, job, self.depth_limit)
            if chosen is None:
                return group_queue
            self._workers = [replace(w, waiting=w.waiting + 1) if w is chosen else w for w in self._workers]
            return chosen.heartbeat.queues[group_queue]

    def refresh(self) -> int:
        """One read: stranded tasks moved back to their group queues, then the view replaced; how many moved."""
        cluster = read_cluster(self.client)
        stuck = stranded(cluster)
        moved = sum(move_back(self.client, queue) for queue in stuck)
        if moved:
            log.info("moved %d tasks from the direct queues of busy or gone workers to their group queues", moved)
        forget_gone(self.client, cluster, time.time(), self.forget_after_s)
        workers = cluster.workers(emptied=[queue.name for queue in stuck])
        with self._lock:
            self._workers, self._read_at = workers, time.monotonic()
        return moved

    def start(self) -> AffinityRouter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.refresh()
            except Exception as exc:  # Redis away: route to the group queues until it answers again
                log.warning("affinity: workers' heartbeats unreadable (%s)", type(exc).__name__)
            self._stopped.wait(self.interval_s)
