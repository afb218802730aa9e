"""Fitting an image to the target Width x Height: PICPIK's three resize modes.

Pure image functions, used for control maps and img2img reference images alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from openpik.vocabulary import ResizeMode

RESAMPLE = Image.Resampling.LANCZOS


def just_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Stretch to the target size, aspect ratio ignored."""
    return image.resize(size, RESAMPLE)


def crop_and_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the target aspect ratio, then resize: nothing stretched, edges lost."""
    width, height = image.size
    target_w, target_h = size
    if width * target_h > height * target_w:
        crop_w, crop_h = round(height * target_w / target_h), height
    else:
        crop_w, crop_h = width, round(width * target_h / target_w)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h)).resize(size, RESAMPLE)


def resize_and_fill(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Fit inside the target, centred, then fill the borders by repeating the edge pixels."""
    width, height = image.size
    target_w, target_h = size
    scale = min(target_w / width, target_h / height)
    inner_w, inner_h = max(1, round(width * scale)), max(1, round(height * scale))
    inner = np.asarray(image.resize((inner_w, inner_h), RESAMPLE))
    left, top = (target_w - inner_w) // 2, (target_h - inner_h) // 2
    padding = ((top, target_h - inner_h - top), (left, target_w - inner_w - left)) + ((0, 0),) * (inner.ndim - 2)
    return Image.fromarray(np.pad(inner, padding, mode="edge"))


RESIZE_MODES: dict[ResizeMode, Callable[[Image.Image, tuple[int, int]], Image.Image]] = {
    "JustResize": just_resize,
    "CropAndResize": crop_and_resize,
    "ResizeAndFill": resize_and_fill,
}


def fit(image: Image.Image, size: tuple[int, int], mode: ResizeMode) -> Image.Image:
    """``image`` in RGB at exactly ``size``, by ``mode``; untouched when it already fits."""
    image = image.convert("RGB")
    return image if image.size == size else RESIZE_MODES[mode](image, size)
