"""Model-affinity routing: main-model loads and tasks per second, routing on against off.

The scenario of tests/test_affinity.py at full length (tests/affinity_scenario.py): a
gateway and two real workers on the tiny models, four SD1.5 main models, each worker's
cache holding two, and a stream of 100 one-step 64x64 tasks whose models are drawn at
random (the same stream both times). Closed-loop clients send a task, wait for it to end,
pause 0.15 s, and send the next. Each side runs on a fresh stack (workers started with the
same setting as the gateway), after one warm-up task per worker, so both start from the
same state. Loads are the workers' own `openpik_model_loads_total{kind="main"}`.

With one client both workers are idle whenever a task arrives, so routing decides alone
where it goes; with two, one worker is often busy and the other takes what arrives, holder
or not. The tiny models load in a fraction of a second; a full-size model takes seconds
(bench/model_switch.py), so on GPUs the time saved per avoided load is far larger.
"""

from __future__ import annotations

from bench.common import Context, Row, stack_env
from tests.affinity_scenario import HEARTBEAT_S, Outcome, cache_bytes_for_two, mixed_stream, run_stream
from tests.affinity_scenario import write_affinity_catalog as affinity_catalog

TASKS = 100


def run(context: Context) -> list[Row]:
    if not context.wants("sd15"):
        return []
    tasks = context.pick(full=TASKS, quick=20)
    return [row for clients in ((1,) if context.quick else (1, 2)) for row in _case(context, tasks, clients)]


def _case(context: Context, tasks: int, clients: int) -> list[Row]:
    """Two rows: loads per 100 tasks (ratio of loads) and tasks per second (ratio of time per task)."""
    stream = mixed_stream(tasks)
    on, off = (_side(context, stream, clients, routing) for routing in (True, False))
    per = 100 / tasks
    case = f"{tasks} tasks, 4 models, 2 workers holding 2 each, {clients} client{'s' if clients > 1 else ''}"
    numbers: dict[str, float | list[float]] = {
        "tasks": tasks,
        "clients": clients,
        "loads_on": on.total_loads,
        "loads_off": off.total_loads,
        "tasks_per_s_on": on.tasks_per_s,
        "tasks_per_s_off": off.tasks_per_s,
    }
    return [
        Row(
            benchmark="affinity",
            case=f"{case}: main-model loads",
            measured=f"routing on: {on.total_loads * per:.0f} per 100 tasks",
            baseline=f"off: {off.total_loads * per:.0f} per 100 tasks",
            ratio=on.total_loads / max(1, off.total_loads),
            numbers=numbers,
        ),
        Row(
            benchmark="affinity",
            case=f"{case}: throughput",
            measured=f"routing on: {on.tasks_per_s:.2f} tasks/s",
            baseline=f"off: {off.tasks_per_s:.2f} tasks/s",
            ratio=off.tasks_per_s / on.tasks_per_s,
            numbers=numbers,
        ),
    ]


def _side(context: Context, stream: list[int], clients: int, routing: bool) -> Outcome:
    work = context.work / f"affinity-{clients}-{'on' if routing else 'off'}"
    env = stack_env(
        affinity_catalog(context.tiny_catalog),
        work,
        affinity_routing=str(routing).lower(),
        affinity_heartbeat_s=HEARTBEAT_S,
        model_cache_bytes=str(cache_bytes_for_two(context.tiny_catalog)),
        progress_interval_s="0",
    )
    outcome = run_stream(env, work, stream, clients=clients)
    print(f"affinity, {clients} client(s), routing {'on' if routing else 'off'}: {outcome}", flush=True)
    return outcome
