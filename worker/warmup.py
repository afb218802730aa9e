"""Warm-up requests: a compiled worker traces its graphs before it takes its first task.

The compiled blocks see a different graph for each channel width, with and without a CFG
batch (batch size 1 is specialised), for UNet and ControlNet blocks, and for each memory
layout of the latents (a reference image's differs from noise's on the CPU), but not for
other image sizes, batch sizes or LoRAs (worker/compiled.py). So two-step requests at one
size, with and without a reference image, CFG on and off, with and without the catalog's
first ControlNet, cover steady state. Under 128 px the UNet's middle block sees a single
token, which is specialised too: keep the warm-up size at 128 or more.
"""

from __future__ import annotations

from itertools import product

from PIL import Image

from models_registry.catalog import Catalog, CatalogError
from models_registry.resolve import default_vae_ref, model_ref
from openpik.job import ControlUnit, Job
from openpik.settings import Settings

IMAGE_KEY = "warm-up"
CFG_SCALES = (7.0, 1.0)
INIT_IMAGES = (None, IMAGE_KEY)


def warmup_requests(catalog: Catalog, settings: Settings) -> list[tuple[Job, dict[str, Image.Image]]]:
    model_ids = settings.compile_warmup_models or [catalog.main_models[0].id]
    size = settings.compile_warmup_size
    units = [()] + [
        (ControlUnit(controlnet_id=c.id, path=str(c.path), image=IMAGE_KEY),) for c in catalog.controlnets[:1]
    ]
    images = {IMAGE_KEY: Image.new("RGB", (size, size), "gray")}
    requests = []
    for model_id in model_ids:
        model = catalog.main_model(model_id)
        if model is None:
            raise CatalogError(f"OPENPIK_COMPILE_WARMUP_MODELS names main model {model_id}, not in the catalog")
        for controlnets, cfg_scale, init_image in product(units, CFG_SCALES, INIT_IMAGES):
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
