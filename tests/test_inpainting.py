"""Inpainting (spec 9): masked Jobs on the tiny models, then RemoveContents, GenerateBackgrounds
and GenerateImages' MaskIndex through a real gateway and worker on a redis-server of their own.

The rule every test checks: pixels outside the blurred mask are the input's, exactly; pixels
inside are generated. Which pixels are outside is what worker/masks.py computes (its own
unit tests pin it down), asserted to be a large part of the image so the check means something.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import redis
from PIL import Image

from models_registry.resolve import control_unit
from openpik.job import ModelRef
from openpik.routing import DEFAULT_QUEUE
from openpik.task_records import record_key
from tests import mask_images
from tests.stack import download_image, own_redis_stack, wait_for
from worker.masks import soft_mask

SIZE = (64, 64)
SD15, SDXL, SD15_INPAINTING, SDXL_INPAINTING = 1, 11, 4, 14
INPAINT_CONTROLNET, SDXL_CONTROLNET, NO_PREPROCESSOR = 14, 21, 1


def square_mask(size=SIZE, box=(4, 4, 28, 28)) -> Image.Image:
    return mask_images.square_mask(size, box)


def noise(size=SIZE, seed=7) -> Image.Image:
    return mask_images.noise(size, seed)


def foreground(size=SIZE) -> Image.Image:
    return mask_images.foreground(size, opaque=(16, 16, 48, 48), half=(12, 12, 52, 52), seed=11)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def outside(mask: Image.Image, image_size=SIZE, canvas=SIZE, invert=False, blur=0, mode="JustResize") -> np.ndarray:
    """Where the blurred mask is 0: the pixels that must be the input's."""
    region = soft_mask(mask, image_size, canvas, mode, invert, blur) == 0
    assert 0.2 < region.mean() < 0.95
    return region


def assert_inpainted(result: Image.Image, original: Image.Image, kept: np.ndarray) -> None:
    out, source = pixels(result), pixels(original)
    assert out.shape == source.shape
    assert np.array_equal(out[kept], source[kept])
    assert np.abs(out[~kept] - source[~kept]).mean() > 10


# --- the engine, in process ----------------------------------------------------------------


def run(engine, job, **images) -> list[Image.Image]:
    return engine.run(job, images).images


@pytest.mark.models
@pytest.mark.parametrize("model_id", [SD15, SDXL, SD15_INPAINTING, SDXL_INPAINTING])
def test_the_masked_area_is_repainted_and_the_rest_kept_exactly(engine, make_job, model_id):
    """Both families, ordinary checkpoints (latent blending) and 9-channel inpainting ones."""
    job = make_job(model_id, steps=4, init_image="ref", mask_image="mask", mask_blur=4, strength=1.0)
    (result,) = run(engine, job, ref=noise(), mask=square_mask())
    assert result.size == SIZE
    assert_inpainted(result, noise(), outside(square_mask(), blur=4))


@pytest.mark.models
def test_invert_mask_swaps_the_regions(engine, make_job):
    mask = square_mask(box=(16, 16, 48, 48))
    job = make_job(SD15, steps=4, init_image="ref", mask_image="mask", invert_mask=True, strength=1.0)
    (result,) = run(engine, job, ref=noise(), mask=mask)
    inside = np.asarray(mask) > 0
    assert np.array_equal(pixels(result)[inside], pixels(noise())[inside])
    assert np.abs(pixels(result)[~inside] - pixels(noise())[~inside]).mean() > 10


@pytest.mark.models
def test_a_mask_of_another_size_is_resized_to_its_image(engine, make_job):
    small = square_mask((32, 32), (2, 2, 14, 14))
    job = make_job(SDXL, steps=4, init_image="ref", mask_image="mask", strength=1.0)
    (result,) = run(engine, job, ref=noise(), mask=small)
    assert_inpainted(result, noise(), outside(small))


@pytest.mark.models
def test_an_empty_mask_returns_the_input_without_running_a_pipeline(engine, make_job):
    nowhere = ModelRef(model_id=99, path="/no/such/model", format="diffusers")  # loading it would fail
    for mask, invert in ((Image.new("L", SIZE, 0), False), (Image.new("L", SIZE, 255), True)):
        job = make_job(SD15, model=nowhere, batch_size=2, init_image="ref", mask_image="mask", invert_mask=invert)
        results = run(engine, job, ref=noise(), mask=mask)
        assert [pixels(r).tolist() for r in results] == [pixels(noise()).tolist()] * 2


@pytest.mark.models
def test_a_result_of_an_exact_size_is_composited_at_that_size(engine, make_job):
    size = (60, 62)
    job = make_job(SD15_INPAINTING, steps=4, init_image="ref", mask_image="mask", output_size=size, strength=1.0)
    (result,) = run(engine, job, ref=noise(size), mask=square_mask(size))
    assert result.size == size
    assert_inpainted(result, noise(size), outside(square_mask(size), size, size))


@pytest.mark.models
def test_the_inpaint_controlnet_takes_the_masked_image(engine, make_job, catalog):
    """The same unit with and without the inpaint marker: only its control map differs (the masked
    image, -1 where repainted, against the plain image), and the result inside follows it."""
    plain = control_unit(catalog, INPAINT_CONTROLNET, NO_PREPROCESSOR, "ref")
    masked = control_unit(catalog, INPAINT_CONTROLNET, NO_PREPROCESSOR, "ref", masked_control=True)
    assert catalog.controlnet(INPAINT_CONTROLNET).inpaint
    fields = dict(steps=4, init_image="ref", mask_image="mask", strength=1.0)
    images = dict(ref=noise(), mask=square_mask())
    (with_map,) = run(engine, make_job(SD15, controlnets=(masked,), **fields), **images)
    (without,) = run(engine, make_job(SD15, controlnets=(plain,), **fields), **images)
    kept = outside(square_mask())
    assert_inpainted(with_map, noise(), kept)
    assert np.abs(pixels(with_map)[~kept] - pixels(without)[~kept]).mean() > 1
    sdxl_unit = control_unit(catalog, SDXL_CONTROLNET, NO_PREPROCESSOR, "ref", masked_control=True)
    (sdxl,) = run(engine, make_job(SDXL_INPAINTING, controlnets=(sdxl_unit,), **fields), **images)
    assert_inpainted(sdxl, noise(), kept)


@pytest.mark.models
def test_a_transparent_area_is_repainted_over_its_background_and_opaque_pixels_kept(engine, make_job):
    fg = foreground()
    job = make_job(
        SDXL,
        steps=4,
        init_image="fg",
        mask_image="fg",
        mask_source="transparency",
        background_image="bg",
        strength=0.6,
    )
    (result,) = run(engine, job, fg=fg, bg=noise(seed=3))
    opaque = np.asarray(fg)[..., 3] == 255
    assert result.mode == "RGB"
    assert np.array_equal(pixels(result)[opaque], np.asarray(fg)[..., :3][opaque])
    assert np.abs(pixels(result)[~opaque] - np.asarray(fg)[..., :3][~opaque]).mean() > 10


# --- through the stack ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tiny_catalog_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inpainting")
    with own_redis_stack(tiny_catalog_path, tmp, worker="inpainting", progress_interval_s="0") as (running, server):
        yield running.gateway, redis.Redis.from_url(server.url)


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def result(gateway, body: dict) -> Image.Image:
    answer = gateway.call(body)
    assert answer["RetCode"] == 0, answer

    def ended() -> dict | None:
        item = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [answer["TaskUID"]]})["TaskDetailList"][0]
        return item if item["Status"] in ("Finished", "Error") else None

    item = wait_for(ended, 120, message=f"the {body['Action']} task to end")
    assert (item["Status"], item["Action"], len(item["ImgList"])) == ("Finished", body["Action"], 1), item
    return download_image(item["ImgList"][0])


@pytest.mark.stack
@pytest.mark.models
def test_remove_contents_erases_the_mask_at_the_inputs_exact_size(stack):
    gateway, _ = stack
    size = (60, 62)
    body = {"Action": "RemoveContents", "RawImage": png(noise(size)), "Mask": png(square_mask(size)), "MaskBlur": 4}
    erased = result(gateway, body)
    assert (erased.format, erased.size) == ("PNG", size)
    assert_inpainted(erased, noise(size), outside(square_mask(size), size, size, blur=4))


@pytest.mark.stack
@pytest.mark.models
def test_generate_backgrounds_keeps_the_foreground_and_is_opaque(stack):
    gateway, _ = stack
    fg = foreground()
    body = {
        "Action": "GenerateBackgrounds",
        "MainModel": {"ModelCode": "tiny-sd15-a", "InferenceParams": {"Steps": 4}},
        "PositivePrompts": ["a beach"],
        "ImageList": [png(fg)],
        "TransparentForeground": {"ImageIndex": 0},
    }
    background = result(gateway, body)
    assert background.size == SIZE
    assert (np.asarray(background.convert("RGBA"))[..., 3] == 255).all()
    opaque = np.asarray(fg)[..., 3] == 255
    assert np.array_equal(pixels(background)[opaque], np.asarray(fg)[..., :3][opaque])
    assert np.abs(pixels(background)[~opaque] - np.asarray(fg)[..., :3][~opaque]).mean() > 10


@pytest.mark.stack
@pytest.mark.models
def test_generate_images_with_a_mask_index_inpaints(stack):
    gateway, _ = stack
    body = {
        "Action": "GenerateImages",
        "MainModel": {"ModelCode": "tiny-sdxl-inpainting", "InferenceParams": {"Steps": 4}},
        "Width": 64,
        "Height": 64,
        "ImageAndMaskList": [png(noise()), png(square_mask())],
        "Image2Image": {"ImageIndex": 0, "MaskIndex": 1, "ReferStrength": 0},
    }
    assert_inpainted(result(gateway, body), noise(), outside(square_mask(), blur=4))


RGB_ONLY = png(noise())
BAD_REQUESTS = [
    (
        {"Action": "GenerateImages", "ImageAndMaskList": [RGB_ONLY], "Image2Image": {"ImageIndex": 0, "MaskIndex": 1}},
        "Image2Image.MaskIndex: 1 is outside ImageAndMaskList",
    ),
    (
        {
            "Action": "GenerateImages",
            "ImageAndMaskList": [RGB_ONLY, "bm90IGFuIGltYWdl"],
            "Image2Image": {"ImageIndex": 0, "MaskIndex": 1},
        },
        "ImageAndMaskList[1]: not a",
    ),
    ({"Action": "GenerateImages", "MainModel": {"ModelCode": "tiny-sd15-inpainting"}}, "MainModel.ModelCode:"),
    ({"Action": "RemoveContents", "RawImage": RGB_ONLY, "Mask": "bm90IGFuIGltYWdl"}, "Mask: not a"),
    ({"Action": "RemoveContents", "RawImage": RGB_ONLY, "Mask": RGB_ONLY, "MaskBlur": 65}, "MaskBlur"),
    (
        {"Action": "GenerateBackgrounds", "ImageList": [RGB_ONLY], "TransparentForeground": {"ImageIndex": 0}},
        "TransparentForeground.ImageIndex: ImageList[0] has no alpha channel",
    ),
    (
        {"Action": "GenerateBackgrounds", "ImageList": [RGB_ONLY], "TransparentForeground": {"ImageIndex": 2}},
        "TransparentForeground.ImageIndex: 2 is outside ImageList",
    ),
]


@pytest.mark.stack
@pytest.mark.models
@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
def test_bad_inputs_are_230_naming_the_field_and_queue_nothing(stack, body, message):
    gateway, client = stack
    body = {"MainModel": {"ModelCode": "tiny-sd15-a"}} | body
    if body["Action"] == "RemoveContents":
        body.pop("MainModel")
    stored = len(list(client.scan_iter(record_key("*"))))
    answer = gateway.call(body)
    assert answer["RetCode"] == 230, answer
    assert message in answer["Message"], answer
    assert len(list(client.scan_iter(record_key("*")))) == stored
    assert client.llen(DEFAULT_QUEUE) == 0
