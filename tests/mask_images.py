"""Images the mask and inpainting tests build: a white box on black, seeded noise, an RGBA foreground."""

from __future__ import annotations

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]


def square_mask(size: tuple[int, int], box: Box) -> Image.Image:
    """An L mask of ``size``, white (repaint) inside ``box``, black elsewhere."""
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def foreground(size: tuple[int, int], opaque: Box, half: Box, seed: int) -> Image.Image:
    """RGBA noise: alpha 255 inside ``opaque``, 128 in the rest of ``half``, 0 elsewhere."""
    rgba = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    rgba[..., :3] = np.asarray(noise(size, seed))
    for box, alpha in ((half, 128), (opaque, 255)):
        x1, y1, x2, y2 = box
        rgba[y1:y2, x1:x2, 3] = alpha
    return Image.fromarray(rgba)
