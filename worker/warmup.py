"""Warm-up requests: a compiled worker traces its graphs before it takes its first task.

The compiled blocks see a different graph for each channel width and text-encoder width (so
per family: SDXL's blocks are not SD1.5's), with and without a CFG batch (batch size 1 is
specialised), for UNet and ControlNet blocks, and for each memory layout of the latents (a
reference image's differs from noise's on the CPU), but not for other image sizes, batch
sizes, LoRAs or other models of the same family (worker/compiled.py). So per warmed model,
two-step requests at one size, with and without a reference image, CFG on and off, with and
without the catalog's first ControlNet of the model's family, cover steady state. Under 128
px the UNet's middle block sees a single token, which is specialised too: keep the warm-up
size at 128 or more.
"""

from __future__ import annotations

from itertools import product

from PIL import Image

from models_registry.catalog import Catalog, CatalogError, MainModel
from models_registry.resolve import default_vae_ref, model_ref
from openpik.job import ControlUnit, Job
from openpik.settings import Settings

IMAGE_KEY = "warm-up"
CFG_SCALES = (7.0, 1.0)
INIT_IMAGES = (None, IMAGE_KEY)


def warmup_requests(catalog: Catalog, settings: Settings) -> list[tuple[Job, dict[str, Image.Image]]]:
    size = settings.compile_warmup_size
    images = {IMAGE_KEY: Image.new("RGB", (size, size), "gray")}
    requests = []
    for model in warmup_models(catalog, settings.compile_warmup_models):
        for controlnets, cfg_scale, init_image in product(_control_units(catalog, model), CFG_SCALES, INIT_IMAGES):
            job = Job(
                model=model_ref(model),
                vae=default_vae_ref(catalog, model),
                prompt="warm-up",
                sampler="Euler",
                steps=2,
                cfg_scale=cfg_scale,
                seed=0,
                width=size,
                height=size,
                controlnets=controlnets,
                init_image=init_image,
                strength=1.0,
            )
            requests.append((job, images))
    return requests


def warmup_models(catalog: Catalog, model_ids: list[int]) -> list[MainModel]:
    """The models named, or else the catalog's first of each family: its graphs serve the rest."""
    if not model_ids:
        firsts: dict[str, MainModel] = {}
        for model in catalog.main_models:
            firsts.setdefault(model.architecture, model)
        return list(firsts.values())
    models = []
    for model_id in model_ids:
        model = catalog.main_model(model_id)
        if model is None:
            raise CatalogError(f"OPENPIK_COMPILE_WARMUP_MODELS names main model {model_id}, not in the catalog")
        models.append(model)
    return models


def _control_units(catalog: Catalog, model: MainModel) -> list[tuple[ControlUnit, ...]]:
    """No ControlNet, and the catalog's first ControlNet of the model's family if it has one."""
    own = [c for c in catalog.controlnets if c.architecture == model.architecture][:1]
    return [()] + [(ControlUnit(controlnet_id=c.id, path=str(c.path), image=IMAGE_KEY),) for c in own]
