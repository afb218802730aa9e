"""Full-size model sets with random weights, one per family, built offline once.

The tiny models make every code path run, but their compute is so small that fixed costs
dominate any ratio. These models have the published shapes of their family: every
component named in the vendored ``configs/<architecture>/model_index.json`` is built from
its vendored config (UNet, VAE, the text encoders, the real tokenizers and scheduler), so a
benchmark on them costs what a real checkpoint costs; only the weights are random.

- SD1.5 (var/bench/full-sd15): stored in float16 (2.9 GB instead of 5.8 GB; the worker
  loads them as float32 on the CPU), with the SD1.5 ControlNet and two LoRAs.
- SDXL (var/bench/full-sdxl): stored and run in bfloat16 (6.9 GB). In float32 the model
  weighs 14 GB, and a stack benchmark holds it twice (the worker and the direct call),
  more than a 24 GiB machine has.

Weights are initialised in the stored dtype, so building never holds a float32 copy.
"""

from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import VAR
from models_registry.catalog import load_catalog
from models_registry.tiny import DEFAULT_CATALOG, write_lora
from openpik.families import FAMILIES, Architecture

SEED = 1515
SIZE = 256
CONTROLNET_DIR = "controlnet/sd15-random"
# (id, file name, layout, targets): the two LoRA layouts the worker reads, as in the tiny set.
LORAS = [(1, "style.safetensors", "peft", ("unet",)), (2, "detail.safetensors", "kohya", ("unet", "text_encoder"))]


@dataclass(frozen=True)
class FullSizeSet:
    architecture: Architecture
    dtype: str
    """The torch dtype the weights are stored in."""
    run_dtype: str
    """The dtype the CPU benchmarks run them in, in the worker (OPENPIK_DTYPE) and the direct call."""
    extras: bool
    """With the family's ControlNet and the LoRAs (SD1.5's stack, lora and gpu benchmarks use them)."""

    @property
    def model_dir(self) -> str:
        return f"main/{self.architecture}-random"

    @property
    def out_dir(self) -> Path:
        return VAR / f"full-{self.architecture}"


SETS: dict[Architecture, FullSizeSet] = {
    "sd15": FullSizeSet("sd15", dtype="float16", run_dtype="float32", extras=True),
    "sdxl": FullSizeSet("sdxl", dtype="bfloat16", run_dtype="bfloat16", extras=False),
}


def ensure_full_size_models(architecture: Architecture = "sd15", out_dir: Path | None = None) -> Path:
    """The catalog of the family's full-size set, building the set first when missing."""
    out = Path(out_dir) if out_dir else SETS[architecture].out_dir
    catalog_file = out / "catalog.yaml"
    if not catalog_file.exists():
        build_full_size_models(architecture, out)
    return catalog_file


def build_full_size_models(architecture: Architecture, out_dir: Path) -> Path:
    import torch

    full = SETS[architecture]
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    with _default_dtype(getattr(torch, full.dtype)):
        _build_main_model(architecture, out_dir / full.model_dir)
        if full.extras:
            _build_controlnet(architecture, out_dir / CONTROLNET_DIR)
    if full.extras:
        for lora_id, name, layout, targets in LORAS:
            write_lora(
                out_dir / full.model_dir,
                out_dir / "lora" / name,
                seed=SEED + lora_id,
                layout=layout,
                targets=targets,
                architecture=architecture,
            )
    catalog_file = out_dir / "catalog.yaml"  # last: its presence says the set is complete
    catalog_file.write_text(yaml.safe_dump(_catalog_dict(full), sort_keys=False))
    return catalog_file


@contextmanager
def _default_dtype(dtype):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _build_main_model(architecture: Architecture, out: Path) -> None:
    """The family's pipeline with every component of its vendored model_index.json."""
    import diffusers

    configs = FAMILIES[architecture].configs
    index = json.loads((configs / "model_index.json").read_text())
    arguments = {
        name: _component(value, configs / name) if isinstance(value, list) else value
        for name, value in index.items()
        if not name.startswith("_")
    }
    getattr(diffusers, index["_class_name"])(**arguments).save_pretrained(out, safe_serialization=True)


def _component(library_and_class: list[str | None], config_dir: Path):
    """A component from its config folder: random weights for models; tokenizers and schedulers as vendored."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    library, class_name = library_and_class
    if library is None or class_name is None:  # a component the family leaves out (SD1.5's safety checker)
        return None
    cls = getattr(importlib.import_module(library), class_name)
    if issubclass(cls, PreTrainedModel):
        return cls(cls.config_class.from_pretrained(config_dir))
    if issubclass(cls, ModelMixin):
        return cls.from_config(cls.load_config(config_dir))
    return cls.from_pretrained(config_dir)


def _build_controlnet(architecture: Architecture, out: Path) -> None:
    """The ControlNet with random zero-convolutions too: a fresh one would add exact zeros."""
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_config(ControlNetModel.load_config(FAMILIES[architecture].configs / "controlnet"))
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(conv.weight, std=0.01)
    controlnet.save_pretrained(out, safe_serialization=True)


def _catalog_dict(full: FullSizeSet) -> dict:
    arch = full.architecture
    defaults = {"steps": 20, "sampler": "Euler a", "cfg_scale": 7.0, "clip_skip": 1, "width": SIZE, "height": SIZE}
    catalog: dict = {
        "version": 1,
        "main_models": [
            {
                "id": 1,
                "model_code": f"{arch}-random",
                "name": f"{arch}-shaped, random weights",
                "path": full.model_dir,
                "architecture": arch,
                "defaults": defaults,
            }
        ],
    }
    if full.extras:
        catalog["loras"] = [
            {
                "id": lora_id,
                "model_code": f"{arch}-random-{Path(name).stem}",
                "name": Path(name).stem,
                "path": f"lora/{name}",
                "architecture": arch,
            }
            for lora_id, name, _, _ in LORAS
        ]
        catalog["controlnets"] = [
            {
                "id": 1,
                "model_code": f"cn-{arch}-random",
                "name": f"{arch} ControlNet, random weights",
                "path": CONTROLNET_DIR,
                "architecture": arch,
            }
        ]
    default = load_catalog(DEFAULT_CATALOG)
    catalog["preprocessors"] = [p.model_dump(mode="json", exclude_defaults=True) for p in default.preprocessors]
    return catalog
