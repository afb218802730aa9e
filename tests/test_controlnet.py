"""ControlNet units on the tiny models: weights, windows, modes, presets, against diffusers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, EulerAncestralDiscreteScheduler, StableDiffusionControlNetPipeline
from PIL import Image

from models_registry.resolve import control_unit, preset_unit
from openpik.settings import Settings
from tests.engine_helpers import pixels, run
from worker.control_images import fit
from worker.engine import Engine
from worker.errors import InvalidInputError, ModelLoadError, task_error

pytestmark = pytest.mark.models

CANNY_CN, NONE_PRE = 1, 1
OPENPOSE_CN, OPENPOSE_FULL_PRE, SCRIBBLE_CN, SCRIBBLE_HED_PRE = 4, 10, 9, 4


@pytest.fixture(scope="module")
def unit(catalog):
    def make(image: str = "ctl", controlnet_id: int = CANNY_CN, preprocessor_id: int = NONE_PRE, **fields):
        return control_unit(catalog, controlnet_id, preprocessor_id, image, **fields)

    return make


def differ(a, b, by: int = 3) -> bool:
    return np.abs(pixels(a)[0] - pixels(b)[0]).max() > by


def test_weight_zero_gives_exactly_the_job_without_controlnet(engine, make_job, unit, images):
    plain = run(engine, make_job(), images)
    zero = run(engine, make_job(controlnets=(unit(weight=0.0),)), images)
    assert np.array_equal(pixels(plain)[0], pixels(zero)[0])


def test_control_image_weight_and_window_each_change_the_output(engine, make_job, unit, images):
    full = run(engine, make_job(controlnets=(unit(weight=1.0),)), images)
    assert differ(full, run(engine, make_job(), images))
    assert differ(full, run(engine, make_job(controlnets=(unit(weight=0.5),)), images))
    assert differ(full, run(engine, make_job(controlnets=(unit(weight=1.0, end=0.5),)), images))
    assert differ(full, run(engine, make_job(controlnets=(unit(image="ctl2"),)), images))


def test_three_units_run_and_zero_weighted_units_add_nothing(engine, make_job, unit, images):
    first = unit(weight=1.0)
    others = (unit(image="ctl2", controlnet_id=6), unit(controlnet_id=9, mode="MyPromptIsMoreImportant"))
    alone = run(engine, make_job(controlnets=(first,)), images)
    three_zeroed = run(
        engine, make_job(controlnets=(first, *(u.model_copy(update={"weight": 0.0}) for u in others))), images
    )
    three = run(engine, make_job(controlnets=(first, *others)), images)
    assert np.array_equal(pixels(alone)[0], pixels(three_zeroed)[0])
    assert differ(three, alone)


def test_the_three_control_modes_give_three_different_images(engine, make_job, unit, images):
    modes = ["Balanced", "MyPromptIsMoreImportant", "ControlNetIsMoreImportant"]
    results = [run(engine, make_job(controlnets=(unit(mode=m),)), images) for m in modes]
    assert differ(results[0], results[1]) and differ(results[0], results[2]) and differ(results[1], results[2])


def test_mixed_modes_across_units_run(engine, make_job, unit, images):
    mixed = (
        unit(mode="ControlNetIsMoreImportant"),
        unit(image="ctl2", controlnet_id=6, mode="MyPromptIsMoreImportant"),
    )
    balanced = tuple(u.model_copy(update={"mode": "Balanced"}) for u in mixed)
    assert differ(run(engine, make_job(controlnets=mixed), images), run(engine, make_job(controlnets=balanced), images))


@pytest.mark.parametrize(("mode", "guess_mode"), [("Balanced", False), ("ControlNetIsMoreImportant", True)])
def test_a_single_unit_equals_plain_diffusers(engine, make_job, unit, images, catalog, mode, guess_mode):
    """Balanced is diffusers' plain ControlNet; ControlNetIsMoreImportant is its guess mode."""
    job = make_job(model_id=2, vae=None, controlnets=(unit(mode=mode, weight=0.8),))
    ours = run(engine, job, images)
    model_dir = catalog.main_model(2).path
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        model_dir,
        controlnet=ControlNetModel.from_pretrained(catalog.controlnet(CANNY_CN).path),
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    with torch.inference_mode():
        theirs = pipe(
            job.prompt,
            negative_prompt=job.negative_prompt,
            image=fit(images["ctl"], (64, 64), "JustResize"),
            num_inference_steps=job.steps,
            guidance_scale=job.cfg_scale,
            width=64,
            height=64,
            controlnet_conditioning_scale=0.8,
            guess_mode=guess_mode,
            generator=[torch.Generator().manual_seed(job.seed)],
        ).images
    assert np.array_equal(pixels(ours)[0], np.asarray(theirs[0], dtype=np.int16))


def test_controlnet_with_a_reference_image_runs_at_the_requested_size(engine, make_job, unit, images):
    job = make_job(
        init_image="ref", strength=0.7, width=64, height=48, controlnets=(unit(resize_mode="CropAndResize"),)
    )
    with_control = run(engine, job, images)
    assert with_control.images[0].size == (64, 48)
    assert differ(with_control, run(engine, make_job(init_image="ref", strength=0.7, width=64, height=48), images))


def test_controlnet_models_load_once(engine, make_job, unit, images):
    run(engine, make_job(steps=2, controlnets=(unit(),)), images)
    loads = engine.controlnets.loads
    run(engine, make_job(steps=2, seed=5, controlnets=(unit(weight=0.3),)), images)
    assert engine.controlnets.loads == loads


def test_canny_thresholds_change_the_control_map_and_the_image(engine, make_job, catalog, images):
    low = control_unit(catalog, CANNY_CN, 2, "ref", params=[10, 30])
    high = control_unit(catalog, CANNY_CN, 2, "ref", params=[200, 250])
    assert low.preprocessor == "canny" and low.preprocessor_params == {"low_threshold": 10, "high_threshold": 30}
    assert differ(run(engine, make_job(controlnets=(low,)), images), run(engine, make_job(controlnets=(high,)), images))


@pytest.mark.parametrize("preset_id", [1, 2, 3, 4])
def test_presets_resolve_from_the_catalog_and_run(engine, make_job, catalog, images, preset_id):
    preset = preset_unit(catalog, preset_id, "ctl", weight=1.0)
    assert preset.controlnet_id == catalog.preset(preset_id).controlnet
    assert preset.preprocessor == catalog.preprocessor(catalog.preset(preset_id).preprocessor).detector
    result = run(engine, make_job(steps=4, controlnets=(preset,)), images)
    assert result.images[0].size == (64, 64)
    assert np.array_equal(pixels(result)[0], pixels(run(engine, make_job(steps=4, controlnets=(preset,)), images))[0])


def test_every_controlnet_of_the_tiny_catalog_loads_from_its_own_folder_and_acts(engine, make_job, catalog, images):
    """All fifteen SD1.5 ones, ip2p, tile and inpaint included, with preprocessor none (the image is the
    control map): each loads and changes a 2-step image, each differently."""
    plain = pixels(run(engine, make_job(steps=2), images))[0]
    outputs = {}
    for controlnet in (c for c in catalog.controlnets if c.architecture == "sd15"):
        assert controlnet.path.name == controlnet.model_code
        job = make_job(steps=2, controlnets=(control_unit(catalog, controlnet.id, NONE_PRE, "ctl"),))
        result = run(engine, job, images)
        assert result.images[0].size == (64, 64)
        outputs[controlnet.model_code] = pixels(result)[0]
        assert np.abs(outputs[controlnet.model_code] - plain).max() > 3, controlnet.model_code
    codes = list(outputs)
    assert all(not np.array_equal(outputs[a], outputs[b]) for i, a in enumerate(codes) for b in codes[i + 1 :])


def test_an_image_the_preprocessor_cannot_read_ends_the_task_as_invalid_input(engine, make_job, catalog, images):
    """openpose on a strip 32 times taller than wide fails inside controlnet-aux: the client's
    image, so 1005 (InvalidInputError) naming the preprocessor and the size, not 1001 or 1099."""
    strip = {**images, "strip": Image.new("RGB", (2, 64), "red")}
    job = make_job(steps=2, controlnets=(control_unit(catalog, OPENPOSE_CN, OPENPOSE_FULL_PRE, "strip"),))
    with pytest.raises(InvalidInputError) as error:
        run(engine, job, strip)
    assert task_error(error.value).code == 1005
    assert "preprocessor 'openpose_full' cannot read this control image (2x64 pixels" in str(error.value)


def test_a_missing_annotator_file_ends_the_task_as_a_model_load_error(tmp_path, make_job, catalog, images):
    """The operator's setup, not the image: 1001 (ModelLoadError) naming the missing file."""
    engine = Engine(Settings(device="cpu"), annotators_dir=tmp_path)
    job = make_job(steps=2, controlnets=(control_unit(catalog, SCRIBBLE_CN, SCRIBBLE_HED_PRE, "ctl"),))
    with pytest.raises(ModelLoadError) as error:
        run(engine, job, images)
    assert task_error(error.value).code == 1001
    assert str(tmp_path / "ControlNetHED.pth") in str(error.value) and "'scribble_hed'" in str(error.value)
