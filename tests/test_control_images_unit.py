"""Resize modes: exact geometry on images whose layout is known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from worker.control_images import crop_and_resize, fit, just_resize, resize_and_fill

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def three_bands(width: int = 200, height: int = 100) -> Image.Image:
    """Left quarter red, middle half green, right quarter blue."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 4] = RED
    array[:, width // 4 : 3 * width // 4] = GREEN
    array[:, 3 * width // 4 :] = BLUE
    return Image.fromarray(array)


@pytest.mark.parametrize("mode", [just_resize, crop_and_resize, resize_and_fill])
@pytest.mark.parametrize("size", [(64, 64), (96, 40), (40, 96), (17, 23)])
def test_every_mode_gives_exactly_the_target_size(mode, size):
    assert mode(three_bands(), size).size == size


def test_just_resize_stretches_keeping_all_three_bands():
    out = np.asarray(just_resize(three_bands(), (64, 64)))
    assert tuple(out[32, 2]) == RED and tuple(out[32, 32]) == GREEN and tuple(out[32, 61]) == BLUE


def test_crop_and_resize_keeps_the_centre_square_only():
    out = np.asarray(crop_and_resize(three_bands(), (64, 64)))
    assert (out == GREEN).all()


def test_crop_and_resize_crops_height_of_a_tall_image():
    tall = three_bands().rotate(90, expand=True)  # 100 x 200, bands now top to bottom
    out = np.asarray(crop_and_resize(tall, (64, 64)))
    assert (out == GREEN).all()


def test_resize_and_fill_fits_inside_and_repeats_the_edge_rows():
    out = np.asarray(resize_and_fill(three_bands(), (64, 64)))
    # 200x100 fits as 64x32, centred: rows 16..47 are the image, the rest repeat its edge rows.
    assert (out[:16] == out[16]).all() and (out[48:] == out[47]).all()
    assert tuple(out[32, 1]) == RED and tuple(out[32, 32]) == GREEN and tuple(out[32, 62]) == BLUE


def test_resize_and_fill_pads_columns_of_a_tall_image():
    tall = three_bands().rotate(90, expand=True)
    out = np.asarray(resize_and_fill(tall, (64, 64)))
    assert (out[:, :16] == out[:, 16:17]).all() and (out[:, 48:] == out[:, 47:48]).all()


def test_fit_leaves_an_image_of_the_right_size_untouched_and_makes_it_rgb():
    grey = Image.new("L", (64, 48), 128)
    out = fit(grey, (64, 48), "CropAndResize")
    assert out.mode == "RGB" and out.size == (64, 48) and np.asarray(out)[0, 0].tolist() == [128, 128, 128]


def test_landscape_into_portrait_and_back():
    landscape = three_bands(200, 100)
    portrait_crop = np.asarray(crop_and_resize(landscape, (40, 96)))
    assert portrait_crop.shape == (96, 40, 3) and (portrait_crop == GREEN).all()  # only the middle fits
    portrait_fill = np.asarray(resize_and_fill(landscape, (40, 96)))
    # 200x100 fits as 40x20, centred at rows 38..57; rows above and below repeat its edge rows.
    assert (portrait_fill[:38] == portrait_fill[38]).all() and (portrait_fill[58:] == portrait_fill[57]).all()
    assert tuple(portrait_fill[48, 0]) == RED and tuple(portrait_fill[48, 39]) == BLUE

    tall = three_bands().rotate(90, expand=True)  # 100 x 200, bands top to bottom
    back_crop = np.asarray(crop_and_resize(tall, (96, 40)))
    assert back_crop.shape == (40, 96, 3) and (back_crop == GREEN).all()
    back_fill = np.asarray(resize_and_fill(tall, (96, 40)))
    assert (back_fill[:, :38] == back_fill[:, 38:39]).all() and (back_fill[:, 58:] == back_fill[:, 57:58]).all()
