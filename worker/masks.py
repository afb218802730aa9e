"""Inpainting's image rules, as pure functions of PIL images and numpy arrays (no torch).

A masked Job is painted on a canvas: the init image fitted to the result's size. The mask is
resized to its image, fitted the same way, optionally inverted and blurred, and becomes a
soft mask in 0..1. The pipeline repaints every pixel the soft mask touches; the result is
then composited, so where the soft mask is 0 the result is the canvas exactly, whatever the
VAE's round trip did to those pixels. A mask with nothing to repaint skips the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from openpik.images import has_alpha
from openpik.job import Job
from openpik.vocabulary import MaskSource, ResizeMode
from worker.control_images import fit

BACKDROP_GREY = (128, 128, 128)
"""What shows through a transparent init image when no background image is given."""
MASKED_CONTROL_VALUE = -1.0
"""An inpaint ControlNet's marker for "to be painted" in its control map (ControlNet 1.1 inpaint)."""


def _luminance(image: Image.Image) -> Image.Image:
    """Brightness; where the mask image is transparent, nothing (white strokes on a transparent
    layer, as some editors save a mask, mean the strokes)."""
    if not has_alpha(image):
        return image.convert("L")
    rgba = image.convert("RGBA")
    return ImageChops.multiply(rgba.convert("L"), rgba.getchannel("A"))


MASK_PLANES = {
    "luminance": _luminance,
    "transparency": lambda image: Image.eval(image.convert("RGBA").getchannel("A"), lambda a: 255 - a),
}
"""How each MaskSource reads its image into a plane where 255 means "repaint"."""


def mask_plane(image: Image.Image, source: MaskSource) -> Image.Image:
    """The mask image as an L image, 255 = repaint."""
    return MASK_PLANES[source](image)


def flatten(image: Image.Image, background: Image.Image | None, resize_mode: ResizeMode) -> Image.Image:
    """``image`` in RGB, its transparent pixels showing ``background`` (fitted to it) or grey.

    Computed in numpy so that an opaque pixel is the image's exactly."""
    if not has_alpha(image):
        return image.convert("RGB")
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    backdrop = fit(background, image.size, resize_mode) if background else Image.new("RGB", image.size, BACKDROP_GREY)
    alpha = rgba[..., 3:] / 255.0
    mixed = rgba[..., :3] * alpha + np.asarray(backdrop, dtype=np.float32) * (1.0 - alpha)
    return Image.fromarray(np.rint(mixed).clip(0, 255).astype(np.uint8))


def soft_mask(
    plane: Image.Image,
    image_size: tuple[int, int],
    canvas_size: tuple[int, int],
    resize_mode: ResizeMode,
    invert: bool,
    blur: int,
) -> np.ndarray:
    """The mask on the canvas, float32 in 0..1 (1 = repaint).

    Resized to its image first (a mask of another size is stretched to it), then fitted to
    the canvas exactly as the image is, inverted, then blurred."""
    if plane.size != image_size:
        plane = plane.resize(image_size, Image.Resampling.BILINEAR)
    plane = fit(plane, canvas_size, resize_mode).convert("L")
    if invert:
        plane = Image.eval(plane, lambda value: 255 - value)
    if blur:
        plane = plane.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(plane, dtype=np.float32) / 255.0


def repaint_area(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """What the pipeline repaints, at its size: every pixel the soft mask touches (L, 0 or 255).

    Binary because the pipelines binarize anyway; from ``> 0`` so that the whole blurred edge
    is generated, not kept from the VAE's round trip of the original."""
    plane = Image.fromarray(np.rint(mask * 255).astype(np.uint8))
    if plane.size != size:
        plane = plane.resize(size, Image.Resampling.BILINEAR)
    return Image.fromarray(np.where(np.asarray(plane) > 0, 255, 0).astype(np.uint8))


def composite(canvas: Image.Image, generated: Image.Image, mask: np.ndarray) -> Image.Image:
    """``generated`` where the soft mask is 1, ``canvas`` where it is 0 (exactly), mixed between."""
    if generated.size != canvas.size:
        generated = generated.resize(canvas.size, Image.Resampling.LANCZOS)
    base = np.asarray(canvas.convert("RGB"), dtype=np.float32)
    painted = np.asarray(generated.convert("RGB"), dtype=np.float32)
    mixed = base + (painted - base) * mask[..., None]
    return Image.fromarray(np.rint(mixed).clip(0, 255).astype(np.uint8))


def masked_control_map(image: Image.Image, area: np.ndarray) -> np.ndarray:
    """An inpaint ControlNet's control map: ``image`` as float32 HxWx3 in 0..1, -1 in ``area``
    (a boolean HxW array: what is repainted)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    pixels[area] = MASKED_CONTROL_VALUE
    return pixels


@dataclass(frozen=True)
class Inpainting:
    """A masked Job's canvas and soft mask, and what the pipeline is given of them."""

    canvas: Image.Image
    """The init image, flattened and fitted to the result's size."""
    mask: np.ndarray
    """The soft mask on the canvas, 0..1."""

    @property
    def empty(self) -> bool:
        """Nothing to repaint: the result is the canvas, and no pipeline runs."""
        return not self.mask.any()

    def pipeline_image(self, size: tuple[int, int]) -> Image.Image:
        return self.canvas if self.canvas.size == size else self.canvas.resize(size, Image.Resampling.LANCZOS)

    def pipeline_mask(self, size: tuple[int, int]) -> Image.Image:
        return repaint_area(self.mask, size)

    def composite(self, generated: Image.Image) -> Image.Image:
        return composite(self.canvas, generated, self.mask)

    def control_map(self, image: Image.Image) -> np.ndarray:
        """An inpaint ControlNet's map of ``image`` (already at the pipeline's size)."""
        return masked_control_map(image, np.asarray(self.pipeline_mask(image.size)) > 0)


def inpainting(job: Job, init: Image.Image, mask: Image.Image, background: Image.Image | None) -> Inpainting:
    """A masked Job's canvas (its result's size) and soft mask, from its stored images."""
    size = job.output_size or (job.width, job.height)
    canvas = fit(flatten(init, background, job.init_resize_mode), size, job.init_resize_mode)
    plane = mask_plane(mask, job.mask_source)
    return Inpainting(canvas, soft_mask(plane, init.size, size, job.init_resize_mode, job.invert_mask, job.mask_blur))
