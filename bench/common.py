"""What the benchmarks share: where things live, the run's context, result rows, statistics.

Every benchmark reports ratios of two things measured in the same run on the same machine,
so a loaded or slow machine shifts both sides alike; absolute numbers are kept in ``numbers``
for the JSON file but are only comparable within one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VAR = REPO / "var" / "bench"


@dataclass(frozen=True)
class Context:
    """What a benchmark gets: the model catalogs, a scratch folder, and the run's mode."""

    tiny_catalog: Path
    full_catalogs: dict[str, Path]
    """The full-size sets by architecture, of the selected families only; none with --quick."""
    families: tuple[str, ...]
    """The families whose cases run (``--family``); cases of no family (gateway, memory) always run."""
    work: Path
    quick: bool

    def pick(self, full: int, quick: int) -> int:
        """A repetition count: ``quick`` for the smoke run, ``full`` otherwise."""
        return quick if self.quick else full

    def wants(self, family: str) -> bool:
        """Whether the cases of ``family`` run (a case that mixes families belongs to the newer one)."""
        return family in self.families

    def full_catalog(self, family: str) -> Path | None:
        """The family's full-size set, or None when its full-size cases are skipped."""
        return self.full_catalogs.get(family)


@dataclass
class Row:
    """One line of the results table; ``ratio`` is measured / baseline (time, or cost)."""

    benchmark: str
    case: str
    measured: str
    baseline: str
    ratio: float | None
    numbers: dict[str, float | list[float]] = field(default_factory=dict)


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank: an observed value, never interpolated."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(value_s: float) -> str:
    """Seconds as a readable duration: 0.0042 -> '4.2 ms', 3.456 -> '3.46 s'."""
    if value_s >= 1:
        return f"{value_s:.2f} s"
    if value_s >= 0.01:
        return f"{value_s * 1000:.0f} ms"
    if value_s >= 0.0001:
        return f"{value_s * 1000:.2f} ms"
    return f"{value_s * 1e6:.1f} µs"


def stack_env(catalog: Path, work: Path, **settings: str) -> dict[str, str]:
    """Settings of a gateway and workers on RedisDb.BENCH, with the backpressure limits off.

    The limits would answer TooManyQueued/LoadShedding once a benchmark has queued a few hundred tasks, and then
    the benchmark would measure refusals. ``settings`` add OPENPIK_ variables: ``dtype="bfloat16"``.
    """
    from tests.stack import RedisDb, stack_settings

    work.mkdir(parents=True, exist_ok=True)
    return stack_settings(catalog, work, RedisDb.BENCH, max_queue_depth="0", max_queued_per_key="0", **settings)


@contextmanager
def running_stack(catalog: Path, work: Path, worker_name: str, **settings: str):
    """(gateway, worker, task store) on a flushed RedisDb.BENCH; both processes stopped on the way out."""
    from openpik.task_records import TaskStore
    from tests.stack import RedisDb, open_redis
    from tests.stack import running_stack as start_stack

    env = stack_env(catalog, work, **settings)
    with start_stack(env, work, worker=worker_name, gateway_log=work / "gateway.log") as stack:
        yield stack.gateway, stack.worker, TaskStore(open_redis(RedisDb.BENCH), ttl_s=3600)
