"""torch.compile for the UNet and ControlNets, with LoRAs that never change the compiled graph.

A compiled graph is specialised to the modules it traced: adding, removing or re-weighting
PEFT adapters would recompile it. So a compiled model carries exactly one adapter, ``SLOT``,
on a fixed set of layers at a fixed rank, installed before compiling (``enable_lora_hotswap``).
A request's LoRAs are merged into that slot: their ranks concatenated, each LoRA's weight and
alpha/rank folded into its up-projection, since

    sum_i w_i s_i B_i A_i x = [w_1 s_1 B_1 | w_2 s_2 B_2 | ...] [A_1; A_2; ...] x

and the merge is copied into the slot in place (peft's hot swap). No LoRA is a slot of zeros.
The text encoders (SDXL's two, SD1.5's one) are not compiled but get the same slot, so all
components follow one rule. Shapes are compiled dynamic, and worker/warmup.py traces the
graphs before the first task.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline, StableDiffusionXLPipeline
from diffusers.configuration_utils import FrozenDict
from diffusers.utils.peft_utils import _create_lora_config
from diffusers.utils.state_dict_utils import (
    convert_state_dict_to_diffusers,
    convert_state_dict_to_peft,
    convert_unet_state_dict_to_peft,
)
from peft import LoraConfig
from peft.utils.hotswap import hotswap_adapter_from_state_dict
from peft.utils.other import get_pattern_key

from openpik.job import LoraRef
from openpik.settings import Settings
from worker.errors import ModelLoadError

SLOT = "openpik_merged"
# Regional compilation: the blocks that repeat (diffusers' UNet ``_repeated_blocks``; ControlNets
# are built of the same) are compiled once and shared, the convolutions around them run eager.
COMPILED_BLOCKS = ("BasicTransformerBlock",)
# Graphs kept per compiled block function before dynamo silently falls back to eager. All
# families' blocks share that one function. An SD1.5 model needs up to 24: 3 channel widths
# x UNet or ControlNet blocks x CFG batch or batch 1 x 2 memory layouts; an SDXL model up to
# 16 more (2 widths, 640 and 1280, whose text width, 2048, is not SD1.5's), other models of
# a family none. So a worker serving both needs up to 40 (the tiny models trace 12 + 8);
# torch's default, 8, would leave most of them eager, and 64 leaves room for a third family.
RECOMPILE_LIMIT = 64
# The layers the slot covers: those SD1.5 and SDXL LoRAs (diffusers, kohya, LyCORIS' plain
# LoRA) train, per component a pipeline may have; a pipeline's slot is on those it has.
UNET_LAYERS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_ENCODER_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
SLOT_TARGETS = {"unet": UNET_LAYERS, "text_encoder": TEXT_ENCODER_LAYERS, "text_encoder_2": TEXT_ENCODER_LAYERS}

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Module name -> (down, up with alpha/rank folded in), for one component."""


@dataclass(frozen=True)
class CompileOptions:
    backend: str
    mode: str | None
    lora_rank: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CompileOptions | None:
        if not settings.compile:
            return None
        mode = None if settings.compile_mode == "default" else settings.compile_mode
        return cls(backend=settings.compile_backend, mode=mode, lora_rank=settings.compile_lora_rank)

    def compile(self, model: torch.nn.Module) -> None:
        """Compile ``model``'s repeated blocks in place, every dimension symbolic.

        Symbolic shapes let new sizes and batch sizes reuse the graphs; compiling blocks, not
        the whole forward, keeps the UNet's size-dependent branches out of the graphs' guards.
        """
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        for module in model.modules():
            if type(module).__name__ in COMPILED_BLOCKS:
                module.compile(backend=self.backend, mode=self.mode, dynamic=True)


def prepare_pipeline(pipe: DiffusionPipeline, options: CompileOptions) -> None:
    """Install the zero LoRA slot, then compile the UNet (in this order: see the module doc)."""
    pipe.enable_lora_hotswap(target_rank=options.lora_rank)
    pipe.load_lora_weights(_zero_slot(pipe, options.lora_rank), adapter_name=SLOT)
    options.compile(pipe.unet)


class MergedLoras:
    """Puts a request's LoRAs into a compiled model's slot; LoRA files are read once (LRU)."""

    def __init__(self, lora_rank: int, files_kept: int):
        self.lora_rank = lora_rank
        self.files_kept = files_kept
        self.file_reads = 0
        self._factors: OrderedDict[str, dict[str, Factors]] = OrderedDict()

    def select(self, pipe: DiffusionPipeline, current: tuple[LoraRef, ...], loras: tuple[LoraRef, ...]) -> None:
        """Swap the merge of ``loras`` into ``pipe`` unless ``current`` (what it holds) is the same."""
        if loras == current:
            return
        chosen = [(self._read(lora, pipe.unet.config), lora) for lora in loras]
        for component in slot_components(pipe):
            state = merge([(factors[component], lora.weight) for factors, lora in chosen])
            self._check_rank(state, loras)
            try:
                hotswap_adapter_from_state_dict(getattr(pipe, component), state, SLOT, _slot_config(self.lora_rank))
            except RuntimeError as exc:
                names = ", ".join(str(lora.lora_id) for lora in loras)
                raise ModelLoadError(
                    f"LoRA {names} trains layers outside the compiled LoRA slot "
                    f"(OPENPIK_COMPILE=false serves it): {exc}"
                ) from exc

    def _read(self, lora: LoraRef, unet_config: FrozenDict) -> dict[str, Factors]:
        if lora.path not in self._factors:
            try:
                self._factors[lora.path] = read_factors(lora.path, unet_config)
            except (OSError, ValueError, KeyError) as exc:
                raise ModelLoadError(f"LoRA {lora.lora_id} could not be loaded from {lora.path}: {exc}") from exc
            self.file_reads += 1
            while len(self._factors) > self.files_kept:
                self._factors.popitem(last=False)
        self._factors.move_to_end(lora.path)
        return self._factors[lora.path]

    def _check_rank(self, state: dict[str, torch.Tensor], loras: tuple[LoraRef, ...]) -> None:
        rank = max((t.shape[0] for k, t in state.items() if ".lora_A." in k), default=0)
        if rank > self.lora_rank:
            raise ModelLoadError(
                f"the LoRAs of this request add up to rank {rank}, above the compiled slot's "
                f"{self.lora_rank} (OPENPIK_COMPILE_LORA_RANK)"
            )


def merge(weighted: Iterable[tuple[Factors, float]]) -> dict[str, torch.Tensor]:
    """One component's LoRAs as one adapter state dict in the slot's keys (see the module doc)."""
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for factors, weight in weighted:
        for module, (down, up) in factors.items():
            parts.setdefault(module, []).append((down, up * weight))
    state = {}
    for module, pairs in parts.items():
        state[f"{module}.lora_A.{SLOT}.weight"] = torch.cat([down for down, _ in pairs])
        state[f"{module}.lora_B.{SLOT}.weight"] = torch.cat([up for _, up in pairs], dim=1)
    return state


def slot_components(pipe: DiffusionPipeline) -> list[str]:
    """The components of ``pipe`` the slot covers (SD1.5 has no second text encoder)."""
    return [component for component in SLOT_TARGETS if getattr(pipe, component, None) is not None]


def read_factors(path: str, unet_config: FrozenDict) -> dict[str, Factors]:
    """A LoRA file, any layout diffusers reads, as factors per component (all of SLOT_TARGETS).

    Keys and alphas go through the same conversions and LoraConfig as diffusers' own loading,
    and each module's scale is looked up the way peft does, so a merge equals the adapters.
    The UNet's config maps kohya's SDXL names (the original UNet's input_blocks_4_1_...) to
    diffusers', as SDXL's loader does; SD1.5 kohya files use diffusers' names, left alone.
    """
    state_dict, alphas = StableDiffusionXLPipeline.lora_state_dict(path, unet_config=unet_config)
    factors = {}
    for component in SLOT_TARGETS:
        prefix = f"{component}."
        own = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
        own_alphas = {k.removeprefix(prefix): v for k, v in (alphas or {}).items() if k.startswith(prefix)}
        is_unet = component == "unet"
        to_peft = _unet_to_peft if is_unet else _text_encoder_to_peft
        factors[component] = _scaled_factors(to_peft(own), own_alphas or None, is_unet=is_unet)
    return factors


def _unet_to_peft(state: dict) -> dict:
    return convert_unet_state_dict_to_peft(state) if state and "lora_A" not in next(iter(state)) else state


def _text_encoder_to_peft(state: dict) -> dict:
    return convert_state_dict_to_peft(convert_state_dict_to_diffusers(state)) if state else state


def _scaled_factors(state: dict, alphas: dict | None, is_unet: bool) -> Factors:
    if not state:
        return {}
    if any("lora_magnitude_vector" in k or k.endswith("lora_B.bias") for k in state):
        raise ValueError("DoRA and LoRA biases cannot be merged into the compiled slot")
    rank_key = "^{}".format if is_unet else "{}".format  # the keys diffusers builds for each
    ranks = {rank_key(k): v.shape[1] for k, v in state.items() if "lora_B" in k and v.ndim > 1}
    config = _create_lora_config(state, alphas, None, ranks, is_unet=is_unet)
    factors = {}
    for key, down in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), module), config.r)
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), config.lora_alpha)
        factors[module] = (down.float(), state[f"{module}.lora_B.weight"].float() * (alpha / rank))
    return factors


def _slot_config(rank: int) -> LoraConfig:
    """alpha = rank: the slot's scale is 1, weights and alphas live in the merged factors."""
    return LoraConfig(r=rank, lora_alpha=rank)


def _zero_slot(pipe: DiffusionPipeline, rank: int) -> dict[str, torch.Tensor]:
    """A rank-``rank`` LoRA of zeros on every slot layer, in the layout ``load_lora_weights`` reads."""
    state = {}
    for component in slot_components(pipe):
        for name, module in getattr(pipe, component).named_modules():
            if not name.endswith(SLOT_TARGETS[component]):
                continue
            down, up = _zero_factor_shapes(module, rank)
            state[f"{component}.{name}.lora_A.weight"] = torch.zeros(down)
            state[f"{component}.{name}.lora_B.weight"] = torch.zeros(up)
    return state


def _zero_factor_shapes(module: torch.nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(module, torch.nn.Linear):
        return (rank, module.in_features), (module.out_features, rank)
    if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1):
        return (rank, module.in_channels, 1, 1), (module.out_channels, rank, 1, 1)
    raise ModelLoadError(f"LoRA slot layer {type(module).__name__} is neither Linear nor a 1x1 Conv2d")
