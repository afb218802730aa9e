"""Inpainting's image rules (worker/masks.py) and the Job's mask fields: pure, no model, no process."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from openpik.images import has_alpha
from openpik.job import Job, ModelRef
from tests import mask_images
from worker.masks import (
    BACKDROP_GREY,
    MASKED_CONTROL_VALUE,
    Inpainting,
    composite,
    flatten,
    inpainting,
    mask_plane,
    masked_control_map,
    repaint_area,
    soft_mask,
)

SIZE = (64, 64)
MODEL = ModelRef(model_id=1, path="/nowhere", format="diffusers")


def square_mask(size=SIZE, box=(16, 16, 48, 48)) -> Image.Image:
    return mask_images.square_mask(size, box)


def noise(size=SIZE, seed=3) -> Image.Image:
    return mask_images.noise(size, seed)


def foreground(size=SIZE) -> Image.Image:
    return mask_images.foreground(size, opaque=(20, 20, 44, 44), half=(20, 44, 44, 48), seed=3)


def test_mask_planes_read_brightness_or_transparency():
    assert np.array_equal(np.asarray(mask_plane(square_mask().convert("RGB"), "luminance")), np.asarray(square_mask()))
    plane = np.asarray(mask_plane(foreground(), "transparency"))
    assert plane[30, 30] == 0 and plane[0, 0] == 255 and plane[45, 30] == 127
    strokes = Image.new("RGBA", SIZE, (255, 255, 255, 0))  # white strokes on a transparent layer
    strokes.paste((255, 255, 255, 255), (16, 16, 48, 48))
    assert np.array_equal(np.asarray(mask_plane(strokes, "luminance")), np.asarray(square_mask()))


def test_soft_mask_inverts_and_blurs_only_near_the_edge():
    plain = soft_mask(square_mask(), SIZE, SIZE, "JustResize", invert=False, blur=0)
    assert set(np.unique(plain)) == {0.0, 1.0} and plain[30, 30] == 1 and plain[0, 0] == 0
    inverted = soft_mask(square_mask(), SIZE, SIZE, "JustResize", invert=True, blur=0)
    assert np.array_equal(inverted, 1 - plain)
    blurred = soft_mask(square_mask(), SIZE, SIZE, "JustResize", invert=False, blur=4)
    assert 0 < blurred[30, 14] < 1  # the edge softened outwards
    assert blurred[0, 0] == 0 and blurred[32, 32] == pytest.approx(1, abs=0.01)


def test_a_mask_of_another_size_is_stretched_to_its_image_then_fitted_like_it():
    small = square_mask((32, 32), (8, 8, 24, 24))
    mask = soft_mask(small, SIZE, SIZE, "JustResize", invert=False, blur=0)
    assert mask[32, 32] == 1 and mask[4, 4] == 0 and mask[60, 60] == 0
    assert mask[16:48, 16:48].mean() > 0.9
    # a 64x32 image and its 32x16 mask, fitted to a square canvas by cropping: the mask follows the image
    wide = square_mask((32, 16), (0, 0, 8, 16))
    cropped = soft_mask(wide, (64, 32), (32, 32), "CropAndResize", invert=False, blur=0)
    assert cropped[:, :6].max() < 0.5  # the mask's left strip lay in the cropped-away part


def test_flatten_keeps_opaque_pixels_exactly_and_shows_the_background_elsewhere():
    fg = foreground()
    grey = np.asarray(flatten(fg, None, "JustResize"))
    rgb = np.asarray(fg)[..., :3]
    assert np.array_equal(grey[20:44, 20:44], rgb[20:44, 20:44])
    assert tuple(grey[0, 0]) == BACKDROP_GREY
    background = Image.new("RGB", (16, 16), (0, 0, 255))
    blue = np.asarray(flatten(fg, background, "JustResize"))
    assert tuple(blue[0, 0]) == (0, 0, 255) and np.array_equal(blue[20:44, 20:44], rgb[20:44, 20:44])
    assert flatten(noise(), None, "JustResize").mode == "RGB"
    assert has_alpha(fg) and not has_alpha(noise())


def test_composite_is_exact_where_the_mask_is_zero_and_mixes_elsewhere():
    canvas, generated = noise(seed=1), noise(seed=2)
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[:, 32:] = 1
    mask[:, 40] = 0.5
    out = np.asarray(composite(canvas, generated, mask)).astype(int)
    assert np.array_equal(out[:, :32], np.asarray(canvas)[:, :32])
    assert np.array_equal(out[:, 41:], np.asarray(generated)[:, 41:])
    expected = (np.asarray(canvas)[:, 40].astype(float) + np.asarray(generated)[:, 40]) / 2
    assert np.abs(out[:, 40] - expected).max() <= 0.5
    # generated at another size (the rounded one): resized to the canvas first
    assert composite(noise((60, 62)), noise((64, 64)), np.zeros((62, 60), np.float32)).size == (60, 62)


def test_the_repainted_area_covers_every_pixel_the_soft_mask_touches():
    mask = soft_mask(square_mask(), SIZE, SIZE, "JustResize", invert=False, blur=4)
    area = np.asarray(repaint_area(mask, SIZE))
    assert set(np.unique(area)) == {0, 255}
    assert np.array_equal(area > 0, mask > 0)
    assert repaint_area(mask, (32, 32)).size == (32, 32)


def test_the_inpaint_controlnet_map_is_the_image_with_the_repainted_pixels_at_minus_one():
    image = noise()
    area = np.asarray(square_mask()) > 0
    control = masked_control_map(image, area)
    assert control.shape == (64, 64, 3) and control.dtype == np.float32
    assert (control[area] == MASKED_CONTROL_VALUE).all()
    assert np.allclose(control[~area], np.asarray(image)[~area] / 255.0)
    painting = Inpainting(image, soft_mask(square_mask(), SIZE, SIZE, "JustResize", False, 0))
    assert np.array_equal(painting.control_map(image), control)


def test_an_empty_mask_has_nothing_to_repaint():
    empty = Inpainting(noise(), np.zeros((64, 64), np.float32))
    assert empty.empty
    assert not Inpainting(noise(), soft_mask(square_mask(), SIZE, SIZE, "JustResize", False, 0)).empty


def test_inpainting_builds_the_canvas_at_the_output_size():
    job = Job(model=MODEL, width=64, height=64, init_image="i", mask_image="m", output_size=(60, 62))
    painting = inpainting(job, noise((60, 62)), square_mask((60, 62)), None)
    assert painting.canvas.size == (60, 62) and painting.mask.shape == (62, 60)
    assert np.array_equal(np.asarray(painting.canvas), np.asarray(noise((60, 62))))
    assert painting.pipeline_image((64, 64)).size == (64, 64)


def test_the_job_carries_its_mask_and_background_among_its_images():
    job = Job(model=MODEL, init_image="fg", mask_image="fg", background_image="bg", mask_source="transparency")
    assert job.image_keys == ["fg", "bg"]
    with pytest.raises(ValidationError, match="need init_image"):
        Job(model=MODEL, mask_image="m")
    with pytest.raises(ValidationError):
        Job(model=MODEL, init_image="i", mask_image="m", mask_blur=65)
