"""LoRA switching: selecting a loaded adapter against loading it, and against reloading the base.

The worker keeps LoRAs as named adapters of the loaded model and picks each request's with
``set_adapters``, never fusing them. The two other designs pay what is measured here:
reading the LoRA file for every request (``load_lora_weights``: a cache with one adapter
slot, so each switch evicts the other adapter and loads this one), or fusing and reloading
the base model to undo it (a fresh cache: base model load plus the adapter). A compiled
worker (OPENPIK_COMPILE) instead hot-swaps the merge of a request's LoRAs into its one slot
(worker/compiled.py): that switch is measured against ``set_adapters`` too.

In-process with the engine's ``PipelineCache``; two LoRAs of the same model, alternating.
"""

from __future__ import annotations

import gc
import itertools
from pathlib import Path

from bench.common import Context, Row, median, ms, seconds
from models_registry.catalog import load_catalog
from models_registry.resolve import lora_ref, model_ref


def run(context: Context) -> list[Row]:
    if not context.wants("sd15"):
        return []
    rows = _measure(
        "tiny", context.tiny_catalog, switches=context.pick(full=10, quick=4), reloads=context.pick(full=5, quick=2)
    )
    if full := context.full_catalog("sd15"):
        rows += _measure("full-size SD1.5", full, switches=4, reloads=1)
    return rows


def _switch_times(ref, first, alternating, slots: int, compiled: bool = False) -> tuple[float, list[float]]:
    """A fresh cache: how long loading the base model with ``first`` took, then each switch."""
    import torch

    from worker.compiled import CompileOptions
    from worker.pipeline_cache import PipelineCache

    gc.collect()  # the previous cache's model goes before this one loads
    options = CompileOptions(backend="eager", mode=None, lora_rank=64) if compiled else None  # nothing runs: no trace
    cache = PipelineCache(
        torch.device("cpu"), torch.float32, budget_bytes=16000 * 2**20, lora_slots=slots, compile_options=options
    )
    reload = seconds(lambda: cache.select_loras(cache.model(ref), (first,)))
    loaded = cache.model(ref)
    return reload, [seconds(lambda lo=lora: cache.select_loras(loaded, (lo,))) for lora in alternating]


def _measure(name: str, catalog_path: Path, switches: int, reloads: int) -> list[Row]:
    catalog = load_catalog(catalog_path)
    ref = model_ref(catalog.main_model(1))
    first, second = lora_ref(catalog.lora(1)), lora_ref(catalog.lora(2))
    alternating = list(itertools.islice(itertools.cycle([second, first]), switches + 1))

    reload_times, load_times = [], []
    for _ in range(reloads):
        reload, loads = _switch_times(ref, first, alternating, slots=1)  # one slot: every switch loads
        reload_times.append(reload)
        load_times += loads
    reload, switches_made = _switch_times(ref, first, alternating, slots=8)
    reload_times.append(reload)
    select_times = switches_made[1:]  # the first switch loads the second LoRA; then both are resident
    _, swaps_made = _switch_times(ref, first, alternating, slots=8, compiled=True)
    swap_times = swaps_made[1:]  # the first switch reads the second LoRA's file
    gc.collect()

    select, load, reload, swap = median(select_times), median(load_times), median(reload_times), median(swap_times)
    numbers = {
        "select_s": select,
        "load_s": load,
        "reload_base_s": reload,
        "compiled_swap_s": swap,
        "switches": switches,
        "reloads": len(reload_times),
    }
    baseline = f"set_adapters {ms(select)}"
    return [
        Row(
            benchmark="lora",
            case=f"{name}: switch to a resident LoRA vs loading it",
            measured=f"load_lora_weights {ms(load)}",
            baseline=baseline,
            ratio=load / select,
            numbers=numbers,
        ),
        Row(
            benchmark="lora",
            case=f"{name}: switch to a resident LoRA vs reloading the base model",
            measured=f"base model + LoRA load {ms(reload)}",
            baseline=baseline,
            ratio=reload / select,
            numbers=numbers,
        ),
        Row(
            benchmark="lora",
            case=f"{name}: compiled slot, hot swap of the merged LoRA vs a resident adapter",
            measured=f"merge + hot swap {ms(swap)}",
            baseline=baseline,
            ratio=swap / select,
            numbers=numbers,
        ),
    ]
