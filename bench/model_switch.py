"""Model switching: a model the worker holds against one it must load first.

A worker keeps main models loaded (``PipelineCache``, least recently used out first when
``OPENPIK_MODEL_CACHE_BYTES`` is exceeded). A hit is a dictionary lookup; a miss reads the
files and builds the pipeline. Files come from the OS page cache here (they were read just
before), the best case for a cold load; from a disk it only gets slower.

Two views, in-process with the engine's own classes: the cache call alone (hit against load,
tiny and full size; full-size SDXL in bfloat16, as the stack benchmark runs it), and whole
tiny tasks alternating two models, two SD1.5 ones or an SD1.5 and an SDXL one, with a cache
that holds both against one that holds only one (so every task loads its model).
"""

from __future__ import annotations

import gc
import itertools
from pathlib import Path

from bench.common import Context, Row, median, ms, seconds
from bench.full_size import SETS
from models_registry.catalog import Catalog, MainModel, load_catalog
from models_registry.resolve import default_vae_ref, model_ref

HITS = 100
TASK_STEPS = 8


def run(context: Context) -> list[Row]:
    rows = []
    tiny = load_catalog(context.tiny_catalog)
    sd15_models = [m for m in tiny.main_models if m.architecture == "sd15"]
    if context.wants("sd15"):
        rows.append(_load_against_hit("tiny", context.tiny_catalog, context.pick(full=10, quick=3)))
    if full := context.full_catalog("sd15"):
        rows.append(_load_against_hit("full-size SD1.5", full, 2))
    if full := context.full_catalog("sdxl"):
        rows.append(_load_against_hit("full-size SDXL", full, 2, dtype=SETS["sdxl"].run_dtype))
    if context.wants("sd15"):
        rows.append(_alternating_tasks(tiny, sd15_models[:2], "2 models", context.pick(full=10, quick=3)))
    if context.wants("sdxl"):  # the SD1.5 model is tiny and always there
        sdxl = next(m for m in tiny.main_models if m.architecture == "sdxl")
        pair = [sd15_models[0], sdxl]
        rows.append(_alternating_tasks(tiny, pair, "an SD1.5 and an SDXL model", context.pick(full=10, quick=3)))
    return rows


def _cache(dtype: str):
    import torch

    from worker.pipeline_cache import PipelineCache

    return PipelineCache(torch.device("cpu"), getattr(torch, dtype), budget_bytes=16000 * 2**20, lora_slots=8)


def _load_against_hit(name: str, catalog_path: Path, repeats: int, dtype: str = "float32") -> Row:
    ref = model_ref(load_catalog(catalog_path).main_model(1))
    loads, hits = [], []
    for _ in range(repeats):
        load, some_hits = _load_then_hits(ref, dtype)
        loads.append(load)
        hits += some_hits
        gc.collect()  # this model goes before the next one loads
    load, hit = median(loads), median(hits)
    return Row(
        benchmark="models",
        case=f"{name}: cache.model() of a resident model vs a cold load, {dtype}",
        measured=f"cold load {ms(load)}",
        baseline=f"cache hit {ms(hit)}",
        ratio=load / hit,
        numbers={"load_s": load, "hit_s": hit, "repeats": repeats},
    )


def _load_then_hits(ref, dtype: str) -> tuple[float, list[float]]:
    cache = _cache(dtype)
    load = seconds(lambda: cache.model(ref))
    return load, [seconds(lambda: cache.model(ref)) for _ in range(HITS)]


def _alternating_tasks(catalog: Catalog, models: list[MainModel], what: str, switches: int) -> Row:
    """Tiny 64x64 tasks alternating two models: a cache that holds both, or one (budget 0: every task loads)."""
    from openpik.job import Job
    from openpik.settings import Settings
    from worker.engine import Engine

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
        for m in models
    ]
    warm_engine = Engine(Settings(device="cpu", model_cache_bytes=16 * 2**30))
    cold_engine = Engine(Settings(device="cpu", model_cache_bytes=0))
    for job in jobs:
        warm_engine.run(job, {})
    warm_times, cold_times = [], []
    for job in itertools.islice(itertools.cycle(jobs), 2 * switches):  # interleaved: load hits both alike
        warm_times.append(seconds(lambda j=job: warm_engine.run(j, {})))
        cold_times.append(seconds(lambda j=job: cold_engine.run(j, {})))
    # Per model, then summed over the pair: the two models' tasks need not cost alike (an SDXL load is the dearer).
    colds = {m.id: median(cold_times[i::2]) for i, m in enumerate(models)}
    warms = {m.id: median(warm_times[i::2]) for i, m in enumerate(models)}
    cold, warm = sum(colds.values()), sum(warms.values())
    return Row(
        benchmark="models",
        case=f"tiny: tasks alternating {what} (ids {', '.join(map(str, colds))}), 64x64, {TASK_STEPS} steps",
        measured=f"tasks with a load {_per_model(colds)}",
        baseline=f"tasks on a resident model {_per_model(warms)}",
        ratio=cold / warm,
        numbers={
            "switches": 2 * switches,
            **{f"task_cold_model_{model_id}_s": value for model_id, value in colds.items()},
            **{f"task_warm_model_{model_id}_s": value for model_id, value in warms.items()},
        },
    )


def _per_model(times: dict[int, float]) -> str:
    return " + ".join(f"{ms(value)} (id {model_id})" for model_id, value in times.items())
