"""Model switching: a model the worker holds against one it must load first.

A worker keeps main models loaded (``PipelineCache``, least recently used out first when
``OPENPIK_PIPELINE_CACHE_MB`` is exceeded). A hit is a dictionary lookup; a miss reads the
files and builds the pipeline. Files come from the OS page cache here (they were read just
before), the best case for a cold load; from a disk it only gets slower.

Two views, in-process with the engine's own classes: the cache call alone (hit against load,
tiny and full size), and whole tiny tasks alternating two models, with a cache that holds
both against one that holds only one (so every task loads its model).
"""

from __future__ import annotations

import gc
import itertools
from pathlib import Path

from bench.common import Context, Row, median, ms, seconds
from models_registry.catalog import load_catalog
from models_registry.resolve import default_vae_ref, model_ref

HITS = 100
TASK_STEPS = 8


def run(context: Context) -> list[Row]:
    rows = [_load_against_hit("tiny", context.tiny_catalog, context.pick(full=10, quick=3))]
    if context.full_catalog:
        rows.append(_load_against_hit("full-size SD1.5", context.full_catalog, 2))
    rows.append(_alternating_tasks(context.tiny_catalog, context.pick(full=10, quick=3)))
    return rows


def _cache():
    import torch

    from worker.pipeline_cache import PipelineCache

    return PipelineCache(torch.device("cpu"), torch.float32, budget_bytes=16000 * 2**20, lora_slots=8)


def _load_against_hit(name: str, catalog_path: Path, repeats: int) -> Row:
    ref = model_ref(load_catalog(catalog_path).main_model(1))
    loads, hits = [], []
    for _ in range(repeats):
        load, some_hits = _load_then_hits(ref)
        loads.append(load)
        hits += some_hits
        gc.collect()  # this model goes before the next one loads
    load, hit = median(loads), median(hits)
    return Row(
        benchmark="models",
        case=f"{name}: cache.model() of a resident model vs a cold load",
        measured=f"cold load {ms(load)}",
        baseline=f"cache hit {ms(hit)}",
        ratio=load / hit,
        numbers={"load_s": load, "hit_s": hit, "repeats": repeats},
    )


def _load_then_hits(ref) -> tuple[float, list[float]]:
    cache = _cache()
    load = seconds(lambda: cache.model(ref))
    return load, [seconds(lambda: cache.model(ref)) for _ in range(HITS)]


def _alternating_tasks(catalog_path: Path, switches: int) -> Row:
    """Tasks alternating models 1 and 2 (tiny, 64x64): a cache that holds both, or one (budget 0)."""
    from openpik.job import Job
    from openpik.settings import Settings
    from worker.engine import Engine

    catalog = load_catalog(catalog_path)
    jobs = [
        Job(
            model=model_ref(m),
            vae=default_vae_ref(catalog, m),
            prompt="an apple",
            steps=TASK_STEPS,
            seed=1,
            width=64,
            height=64,
        )
        for m in (catalog.main_model(1), catalog.main_model(2))
    ]
    warm_engine = Engine(Settings(device="cpu", pipeline_cache_mb=16000))
    cold_engine = Engine(Settings(device="cpu", pipeline_cache_mb=0))
    for job in jobs:
        warm_engine.run(job, {})
    warm_times, cold_times = [], []
    for job in itertools.islice(itertools.cycle(jobs), 2 * switches):  # interleaved: load hits both alike
        warm_times.append(seconds(lambda j=job: warm_engine.run(j, {})))
        cold_times.append(seconds(lambda j=job: cold_engine.run(j, {})))
    cold, warm = median(cold_times), median(warm_times)
    return Row(
        benchmark="models",
        case=f"tiny: tasks alternating 2 models, 64x64, {TASK_STEPS} steps",
        measured=f"task with a load {ms(cold)}",
        baseline=f"task on a resident model {ms(warm)}",
        ratio=cold / warm,
        numbers={"task_cold_s": cold, "task_warm_s": warm, "switches": 2 * switches},
    )
