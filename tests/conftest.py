"""Shared fixtures: the tiny offline models, built once per test session, and a stack on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# MKL's conditional numerical reproducibility (before torch loads MKL; the workers the tests start
# inherit it): bit-identical results whatever the alignment of the buffers. Without it, on CPUs
# with AVX-512 (a Xeon here), the tiny SDXL model gave 1e-6 differences between runs of one
# computation, and the tests compare pixels exactly.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


@pytest.fixture(scope="session")
def tiny_catalog_path(tmp_path_factory) -> Path:
    from models_registry.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def live_stack(tiny_catalog_path, tmp_path_factory):
    """A gateway and one real worker on the tiny models, on RedisDb.LIVE_STACK: the users' view.

    Session-wide so the client and playground tests share one worker start-up; the suites
    that kill processes run their own stacks on other databases.
    """
    from tests.stack import RedisDb, running_stack, stack_settings

    tmp = tmp_path_factory.mktemp("live-stack")
    env = stack_settings(tiny_catalog_path, tmp, RedisDb.LIVE_STACK, progress_interval_s="0")
    with running_stack(env, tmp, worker="live") as stack:
        yield stack.gateway


@pytest.fixture(scope="session")
def catalog(tiny_catalog_path):
    from models_registry.catalog import load_catalog

    return load_catalog(tiny_catalog_path)


@pytest.fixture(scope="session")
def engine(catalog):
    import torch

    from openpik.settings import Settings
    from worker.engine import Engine

    torch.set_num_threads(2)
    return Engine(Settings(device="cpu"), annotators_dir=catalog.annotators_dir, translator_dir=catalog.translator)


@pytest.fixture(scope="session")
def make_job(catalog):
    """A small Job on the tiny models; keyword arguments override any field."""
    from models_registry.resolve import default_vae_ref, lora_ref, model_ref
    from openpik.job import Job

    def make(model_id: int = 1, loras: dict[int, float] | None = None, **fields) -> Job:
        model = catalog.main_model(model_id)
        refs = tuple(lora_ref(catalog.lora(i), w) for i, w in (loras or {}).items())
        base = dict(
            model=model_ref(model),
            vae=default_vae_ref(catalog, model),
            prompt="an apple",
            negative_prompt="blurry",
            sampler="Euler a",
            steps=8,
            cfg_scale=7.0,
            seed=1234,
            width=64,
            height=64,
            loras=refs,
        )
        return Job(**(base | fields))

    return make


@pytest.fixture(scope="session")
def reference_image():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def control_image():
    """A drawing with clear edges: what a sketch or an edge map looks like."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), "black")
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 40, 40), outline="white", width=3)
    draw.ellipse((30, 30, 60, 60), fill="white")
    draw.line((0, 63, 63, 0), fill="white", width=2)
    return image


@pytest.fixture(scope="session")
def images(control_image, reference_image):
    """Input images under the names the engine tests' Jobs use: control maps and a reference."""
    from PIL import Image

    return {
        "ctl": control_image,
        "ctl2": control_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "ref": reference_image,
    }


@pytest.fixture
def keys_redis():
    """The shared test Redis's key-store database: test_keys.py and test_webhooks.py keep
    their keys under public keys of their own (uuid) and delete only those."""
    import redis

    from tests.stack import RedisDb, open_redis

    client = open_redis(RedisDb.KEYS, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield client
    client.close()
