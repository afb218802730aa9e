"""Loaded models, kept per worker process: main models, VAEs and LoRA adapters.

Loading a checkpoint costs seconds; running one costs milliseconds per step. So each main
model is loaded once and reused, least recently used first out when the memory budget is
exceeded. LoRAs stay loaded as named adapters of the model they were loaded into and are
selected per request (``set_adapters``), never fused: fusing is not bit-exact to undo.
Compiled models instead hold one slot that a request's LoRAs are merged into (compiled.py).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, DiffusionPipeline

from openpik.job import LoraRef, ModelRef, VaeRef
from worker.compiled import CompileOptions, MergedLoras, prepare_pipeline
from worker.errors import ModelLoadError
from worker.families import RUNTIMES

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A main model's components and the LoRA adapters loaded into them (LRU order)."""

    pipe: DiffusionPipeline
    nbytes: int
    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)
    merged: tuple[LoraRef, ...] | None = ()
    """The LoRAs in a compiled model's slot (None: unknown, after a failed swap)."""


@dataclass
class CacheStats:
    model_loads: int = 0
    model_hits: int = 0
    vae_loads: int = 0
    lora_loads: int = 0
    evictions: int = 0


class PipelineCache:
    def __init__(
        self,
        device: torch.device,
        dtype: torch.dtype,
        budget_bytes: int,
        lora_slots: int,
        compile_options: CompileOptions | None = None,
    ):
        self.device = device
        self.dtype = dtype
        self.budget_bytes = budget_bytes
        self.lora_slots = lora_slots
        self.compile_options = compile_options
        self.merged_loras = MergedLoras(compile_options.lora_rank, lora_slots) if compile_options else None
        self.stats = CacheStats()
        self._models: OrderedDict[ModelRef, LoadedModel] = OrderedDict()
        self._vaes: OrderedDict[VaeRef, AutoencoderKL] = OrderedDict()

    def model(self, ref: ModelRef) -> LoadedModel:
        """The loaded model for ``ref``, loading it (and evicting others) when needed."""
        if ref in self._models:
            self._models.move_to_end(ref)
            self.stats.model_hits += 1
            return self._models[ref]
        pipe = self._load(ref)
        loaded = LoadedModel(pipe=pipe, nbytes=_module_bytes(*pipe.components.values()))
        self._evict_to_fit(loaded.nbytes)
        self._models[ref] = loaded
        self.stats.model_loads += 1
        return loaded

    def vae(self, ref: VaeRef) -> AutoencoderKL:
        if ref not in self._vaes:
            try:
                vae = AutoencoderKL.from_pretrained(ref.path, dtype=self.dtype, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"VAE {ref.vae_id} could not be loaded from {ref.path}: {exc}") from exc
            self._vaes[ref] = vae.to(self.device)
            self.stats.vae_loads += 1
        self._vaes.move_to_end(ref)
        return self._vaes[ref]

    def select_loras(self, loaded: LoadedModel, loras: tuple[LoraRef, ...]) -> None:
        """Activate exactly ``loras`` with their weights; no LoRA at all when empty."""
        if self.merged_loras:
            current, loaded.merged = loaded.merged, None
            self.merged_loras.select(loaded.pipe, current, loras)
            loaded.merged = loras
            return
        pipe = loaded.pipe
        if not loras:
            if loaded.adapters:
                pipe.disable_lora()
            return
        for lora in loras:
            self._ensure_adapter(loaded, lora)
        pipe.enable_lora()
        pipe.set_adapters([lo.adapter_name for lo in loras], [lo.weight for lo in loras])

    def _ensure_adapter(self, loaded: LoadedModel, lora: LoraRef) -> None:
        name = lora.adapter_name
        if name in loaded.adapters:
            loaded.adapters.move_to_end(name)
            return
        while len(loaded.adapters) >= self.lora_slots:
            oldest, _ = loaded.adapters.popitem(last=False)
            loaded.pipe.delete_adapters(oldest)
        try:
            loaded.pipe.load_lora_weights(lora.path, adapter_name=name)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"LoRA {lora.lora_id} could not be loaded from {lora.path}: {exc}") from exc
        loaded.adapters[name] = lora.path
        self.stats.lora_loads += 1

    def _load(self, ref: ModelRef) -> DiffusionPipeline:
        log.info("loading %s main model %s from %s", ref.architecture, ref.model_id, ref.path)
        runtime = RUNTIMES[ref.architecture]
        options = dict(dtype=self.dtype, local_files_only=True) | runtime.fixed
        try:
            if ref.format == "single_file":
                pipe = runtime.loader.from_single_file(ref.path, config=ref.config_dir, **options)
            else:
                pipe = runtime.loader.from_pretrained(ref.path, **options)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"main model {ref.model_id} could not be loaded from {ref.path}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to(self.device)
        if self.device.type == "cuda":
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.compile_options:
            prepare_pipeline(pipe, self.compile_options)
        return pipe

    def _evict_to_fit(self, incoming: int) -> None:
        while self._models and self._resident_bytes() + incoming > self.budget_bytes:
            ref, _ = self._models.popitem(last=False)
            log.info("evicting main model %s", ref.model_id)
            self.stats.evictions += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def evict_all_except(self, keep: ModelRef) -> int:
        """Drop every main model but ``keep``: after an out-of-memory error, the task about to be
        retried needs the room more than the cache does (worker/oom.py). How many were dropped."""
        others = [ref for ref in self._models if ref != keep]
        for ref in others:
            log.info("evicting main model %s to free GPU memory", ref.model_id)
            del self._models[ref]
        self.stats.evictions += len(others)
        return len(others)

    def held(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The main model ids loaded, and the LoRA ids loaded into them: what the worker's heartbeat
        tells the gateways (model-affinity routing, worker/affinity.py)."""
        adapters = {int(name.removeprefix("lora_")) for model in self._models.values() for name in model.adapters}
        merged = {lora.lora_id for model in self._models.values() for lora in model.merged or ()}
        loras = adapters | merged
        return tuple(sorted({ref.model_id for ref in self._models})), tuple(sorted(loras))

    def _resident_bytes(self) -> int:
        return sum(m.nbytes for m in self._models.values())


def default_budget_bytes(device: torch.device) -> int:
    """3/4 of the GPU's memory (the rest for activations), or half the RAM on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory * 3 // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _module_bytes(*components: object) -> int:
    """The weights' bytes of a pipeline's modules (tokenizers and schedulers weigh nothing)."""
    modules = [c for c in components if isinstance(c, torch.nn.Module)]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
