"""The diffusers engine on the tiny models: each test asserts a property of the pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openpik.job import round_dimension
from openpik.samplers import SAMPLERS, UnknownSamplerError
from tests.engine_helpers import first_unet_inputs, pixels, run

pytestmark = pytest.mark.models

# --- seeds and batches -------------------------------------------------------------------


def test_same_job_gives_identical_pixels_and_another_seed_differs(engine, make_job):
    first, again = run(engine, make_job()), run(engine, make_job())
    other = run(engine, make_job(seed=1235))
    assert np.array_equal(pixels(first)[0], pixels(again)[0])
    assert np.abs(pixels(first)[0] - pixels(other)[0]).max() > 10


def test_batch_image_i_starts_from_the_noise_of_seed_plus_i(engine, make_job):
    batch_job = make_job(batch_size=3, seed=500, cfg_scale=1.0)
    batch_noise = first_unet_inputs(engine, batch_job)
    batch = run(engine, batch_job)
    assert batch.seeds == [500, 501, 502]
    for i in range(3):
        single_job = make_job(seed=500 + i, cfg_scale=1.0)
        assert torch.equal(batch_noise[i], first_unet_inputs(engine, single_job)[0])
        single = pixels(run(engine, single_job))[0]
        # Batched float32 matmuls round differently from single ones; after 8 steps and the
        # VAE the difference stays a few grey levels at most (measured: <= 2 of 255).
        assert np.abs(pixels(batch)[i] - single).max() <= 8


def test_seed_minus_one_reports_a_seed_that_reproduces_the_image(engine, make_job):
    drawn = run(engine, make_job(seed=-1))
    assert 0 <= drawn.seeds[0] < 2**32
    replay = run(engine, make_job(seed=drawn.seeds[0]))
    assert np.array_equal(pixels(drawn)[0], pixels(replay)[0])


@pytest.mark.parametrize(("width", "height"), [(100, 75), (64, 64), (16, 40)])
def test_output_count_and_rounded_size(engine, make_job, width, height):
    job = make_job(width=round_dimension(width), height=round_dimension(height), batch_size=2, steps=2)
    result = run(engine, job)
    assert len(result.images) == 2
    assert {image.size for image in result.images} == {(round_dimension(width), round_dimension(height))}


def test_round_dimension_is_nearest_multiple_of_8_and_at_least_16():
    assert [round_dimension(v) for v in (100, 75, 16, 1, 1440, 1443, 1444)] == [104, 72, 16, 16, 1440, 1440, 1448]


# --- samplers ----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_and_is_reproducible(engine, make_job, sampler):
    job = make_job(sampler=sampler, steps=3)
    first, again = run(engine, job), run(engine, job)
    assert first.images[0].size == (64, 64)
    assert np.array_equal(pixels(first)[0], pixels(again)[0])


@pytest.mark.parametrize(
    "name",
    ["DPM fast", "DPM adaptive", "DPM++ 3M SDE Karras", "Restart", "Nonsense Sampler", "euler_ancestral exponential"],
)
def test_rejected_sampler_names_raise_naming_them(engine, make_job, name):
    with pytest.raises(UnknownSamplerError) as caught:
        run(engine, make_job(sampler=name))
    assert repr(name) in str(caught.value)


def test_samplers_differ_from_each_other(engine, make_job):
    euler, ddim = run(engine, make_job(sampler="Euler")), run(engine, make_job(sampler="DDIM"))
    assert not np.array_equal(pixels(euler)[0], pixels(ddim)[0])


# --- prompts and clip skip ---------------------------------------------------------------


def test_clip_skip_2_differs_from_clip_skip_1(engine, make_job):
    one, two = run(engine, make_job(clip_skip=1)), run(engine, make_job(clip_skip=2))
    assert np.abs(pixels(one)[0] - pixels(two)[0]).max() > 5


def test_cfg_at_most_one_disables_guidance_so_the_negative_prompt_is_unused(engine, make_job):
    a = run(engine, make_job(cfg_scale=1.0, negative_prompt="blurry"))
    b = run(engine, make_job(cfg_scale=1.0, negative_prompt="something else entirely"))
    assert np.array_equal(pixels(a)[0], pixels(b)[0])


# --- img2img -----------------------------------------------------------------------------


def test_img2img_strength_changes_the_output(engine, make_job, reference_image):
    images = {"ref": reference_image}
    weak = run(engine, make_job(init_image="ref", strength=0.3), images)
    strong = run(engine, make_job(init_image="ref", strength=0.8), images)
    assert np.abs(pixels(weak)[0] - pixels(strong)[0]).max() > 5


def test_reference_scale_one_runs_exactly_one_step(engine, make_job, reference_image):
    steps: list[tuple[int, int]] = []
    engine.run(
        make_job(init_image="ref", strength=0.0, steps=20),
        {"ref": reference_image},
        on_progress=lambda done, total: steps.append((done, total)),
    )
    assert steps == [(1, 1)]


def test_txt2img_and_img2img_share_the_loaded_components(engine, make_job, reference_image):
    run(engine, make_job())
    loads = engine.cache.stats.model_loads
    unet = engine.cache.model(make_job().model).pipe.unet
    seen = []
    handle = unet.register_forward_pre_hook(lambda module, args: seen.append(module))
    try:
        run(engine, make_job(init_image="ref", strength=0.5), {"ref": reference_image})
    finally:
        handle.remove()
    assert seen and all(module is unet for module in seen)
    assert engine.cache.stats.model_loads == loads


def test_img2img_output_has_the_requested_size_whatever_the_reference(engine, make_job, reference_image):
    wide = reference_image.resize((96, 40))
    result = run(engine, make_job(init_image="ref", strength=0.6, width=64, height=48), {"ref": wide})
    assert result.images[0].size == (64, 48)


# --- VAE and tiling ----------------------------------------------------------------------


def test_catalog_default_vae_differs_from_the_checkpoints_own(engine, make_job, catalog):
    with_default = run(engine, make_job())
    own = run(engine, make_job(vae=None))
    assert catalog.main_model(1).vae is not None
    assert np.abs(pixels(with_default)[0] - pixels(own)[0]).max() > 5


def test_tileable_changes_the_image_and_is_restored_after(engine, make_job):
    plain = run(engine, make_job())
    tiled = run(engine, make_job(tileable=True))
    after = run(engine, make_job())
    assert not np.array_equal(pixels(plain)[0], pixels(tiled)[0])
    assert np.array_equal(pixels(plain)[0], pixels(after)[0])


# --- micro-batches --------------------------------------------------------------------------


def test_micro_batches_keep_each_images_seed_and_equal_the_same_chunks_run_alone(catalog, make_job):
    from openpik.settings import Settings
    from worker.engine import Engine, micro_batches

    assert micro_batches([5, 6, 7, 8, 9], 64 * 64, 2 * 64 * 64) == [[5, 6], [7, 8], [9]]
    assert micro_batches([5, 6, 7], 64 * 64, 0) == [[5, 6, 7]]
    assert micro_batches([5, 6], 512 * 512, 64 * 64) == [[5], [6]]
    chunked = Engine(Settings(device="cpu", micro_batch_pixels=2 * 64 * 64), annotators_dir=catalog.annotators_dir)
    whole = Engine(Settings(device="cpu", micro_batch_pixels=0), annotators_dir=catalog.annotators_dir)
    progress: list[tuple[int, int]] = []
    four = chunked.run(make_job(batch_size=4, seed=40), {}, on_progress=lambda d, t: progress.append((d, t)))
    assert four.seeds == [40, 41, 42, 43] and len(four.images) == 4
    assert progress[-1] == (16, 16) and progress[7] == (8, 16)
    for start in (40, 42):
        pair = run(whole, make_job(batch_size=2, seed=start))
        assert np.array_equal(pixels(pair)[0], pixels(four)[start - 40])
        assert np.array_equal(pixels(pair)[1], pixels(four)[start - 40 + 1])


@pytest.mark.parametrize("model_id", [1, 11])  # SD1.5 and SDXL
def test_large_images_decode_tile_by_tile(catalog, make_job, model_id):
    from openpik.settings import Settings
    from worker.engine import Engine

    tiled = Engine(Settings(device="cpu", vae_tiling_pixels=32 * 32), annotators_dir=catalog.annotators_dir)
    result = tiled.run(make_job(model_id=model_id, steps=2, vae=None), {})
    assert result.images[0].size == (64, 64)
    assert tiled.cache.model(make_job(model_id=model_id).model).pipe.vae.use_tiling
