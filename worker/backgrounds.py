"""Background removal: a segmentation model's mask -> the subject's alpha -> a cut-out or the mask.

The model is an ONNX file with u2net's inputs and outputs (catalog ``background_removers``),
run through rembg's u2net session: it resizes the picture to the model's input, and its mask
back to the picture's size. What happens to the mask then is ours (spec section 9):

- Box: the model sees only the box (a small subject gets the model's whole resolution);
  everything outside it is background, alpha 0.
- HairOptimization ``off``: no matting. Mask values above ForegroundThreshold are opaque,
  below BackgroundThreshold transparent (the foreground rule first, where the two overlap);
  the band between keeps the model's soft alpha.
- ``on``: alpha matting (pymatting's closed-form matting, as rembg does it): the sure
  foreground and background, each eroded by ErodeSize, form a trimap, and the band's alpha
  and colours are estimated from the picture itself, so fine hair follows the photo, not the
  model's blurred outline.
- ``auto``: matting when the band is wide: on average over the subject's outline wider than
  AUTO_BAND_SHARE of the picture's longer side (or than AUTO_BAND_MIN_PX). A model that
  already cut a crisp edge gets no matting (it would only cost time); a soft, hairy edge does.
  Matting that has nothing to stand on (no sure foreground or background left after the
  erosion) is skipped: the thresholded alpha is the answer.

The result is the input's size: RGBA, or with OnlyMask the alpha alone as an L image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from openpik.job import BackgroundJob, Box
from openpik.vocabulary import HairOptimization
from worker.errors import ModelLoadError

AUTO_BAND_SHARE = 0.01
AUTO_BAND_MIN_PX = 1.5
SUBJECT_LEVEL = 128
"""Mask values from here up are the subject when its outline is measured (auto)."""
MATTED, SURE_FOREGROUND, SURE_BACKGROUND = 128, 255, 0

Segment = Callable[[Image.Image], Image.Image]
"""An RGB picture -> the model's L mask of the same size (255: subject)."""


def remove_background(image: Image.Image, segment: Segment, job: BackgroundJob) -> Image.Image:
    """One picture of ``job``: its cut-out (RGBA) or, with only_mask, its alpha (L); the input's size."""
    rgb = image.convert("RGB")
    mask = subject_mask(rgb, segment, job.box)
    if MATTING[job.hair_optimization](mask, job) and _has_sure_regions(mask, job):
        colours, alpha = matted(rgb, mask, job)
    else:
        colours, alpha = np.asarray(rgb), thresholded(mask, job.foreground_threshold, job.background_threshold)
    alpha = outside_box_cleared(alpha, job.box)
    if job.only_mask:
        return Image.fromarray(alpha, "L")
    return Image.fromarray(np.dstack([colours, alpha]), "RGBA")


def subject_mask(rgb: Image.Image, segment: Segment, box: Box | None) -> np.ndarray:
    """The model's mask over the whole picture (uint8); outside ``box`` it is 0."""
    if box is None:
        return np.asarray(segment(rgb), dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask = np.zeros((rgb.height, rgb.width), dtype=np.uint8)
    mask[y1:y2, x1:x2] = np.asarray(segment(rgb.crop(box)), dtype=np.uint8)
    return mask


def thresholded(mask: np.ndarray, foreground: int, background: int) -> np.ndarray:
    """HairOptimization off: sure foreground opaque, sure background transparent, the band as the model says."""
    alpha = mask.copy()
    alpha[mask < background] = 0
    alpha[mask > foreground] = 255
    return alpha


def matted(rgb: Image.Image, mask: np.ndarray, job: BackgroundJob) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form alpha matting of the band: (the foreground's estimated colours, the alpha)."""
    from rembg.bg import alpha_matting_cutout

    cutout = alpha_matting_cutout(
        rgb, Image.fromarray(mask, "L"), job.foreground_threshold, job.background_threshold, job.erode_size
    )
    rgba = np.asarray(cutout)
    return rgba[..., :3], rgba[..., 3]


def outside_box_cleared(alpha: np.ndarray, box: Box | None) -> np.ndarray:
    if box is None:
        return alpha
    x1, y1, x2, y2 = box
    inside = np.zeros_like(alpha)
    inside[y1:y2, x1:x2] = alpha[y1:y2, x1:x2]
    return inside


def band_is_wide(mask: np.ndarray, job: BackgroundJob) -> bool:
    """auto: the uncertain band's mean width along the subject's outline, against the picture's size."""
    outline = _outline(mask >= SUBJECT_LEVEL).sum()
    if outline == 0:
        return False
    band = ((mask >= job.background_threshold) & (mask <= job.foreground_threshold)).sum()
    return band / outline > max(AUTO_BAND_MIN_PX, AUTO_BAND_SHARE * max(mask.shape))


MATTING: dict[HairOptimization, Callable[[np.ndarray, BackgroundJob], bool]] = {
    "on": lambda mask, job: True,
    "off": lambda mask, job: False,
    "auto": band_is_wide,
}
"""HairOptimization -> whether a picture with this mask is alpha-matted."""


def _outline(subject: np.ndarray) -> np.ndarray:
    """Subject pixels with a 4-neighbour outside the subject (the picture's edge does not count)."""
    padded = np.pad(subject, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return subject & ~inner


def _has_sure_regions(mask: np.ndarray, job: BackgroundJob) -> bool:
    """Whether the trimap keeps sure foreground and sure background after erosion (else matting has no anchor)."""
    from scipy.ndimage import binary_erosion

    structure = np.ones((job.erode_size, job.erode_size), dtype=bool) if job.erode_size else None
    foreground = binary_erosion(mask > job.foreground_threshold, structure=structure)
    background = binary_erosion(mask < job.background_threshold, structure=structure, border_value=1)
    return bool(foreground.any() and background.any())


class Removers:
    """One rembg session per remover file, loaded on first use and kept for the worker's life."""

    def __init__(self, numba_cache_dir: Path):
        self.numba_cache_dir = numba_cache_dir
        self.sessions: dict[str, Any] = {}

    def segmenter(self, path: str) -> Segment:
        if path not in self.sessions:
            self.sessions[path] = self._load(path)
        session = self.sessions[path]
        return lambda image: session.predict(image)[0]

    def _load(self, path: str) -> Any:
        if not Path(path).is_file():
            raise ModelLoadError(f"background remover {path} is missing; the operator's catalog names it")
        session_type = catalog_session_type(self.numba_cache_dir)
        try:
            return session_type("u2net_custom", _session_options(), model_path=path)
        except Exception as exc:  # onnxruntime's own errors: not an ONNX model, or not u2net's I/O
            raise ModelLoadError(f"background remover {path} could not be loaded ({type(exc).__name__})") from exc


def catalog_session_type(numba_cache_dir: Path) -> type:
    """rembg's u2net session class, for a file the catalog names.

    Imported here, not at module level: rembg pulls in pymatting, which numba compiles on the
    first import (~45 s) unless NUMBA_CACHE_DIR holds it from an earlier run, so the cache is
    set first. rembg's own check (the file must lie under U2NET_HOME, a process-wide variable)
    is replaced by the catalog's: the operator named the file."""
    numba_cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir.resolve())
    from rembg.sessions.u2net_custom import U2netCustomSession

    class CatalogSession(U2netCustomSession):
        @classmethod
        def download_models(cls, *args: Any, **kwargs: Any) -> str:
            return str(kwargs["model_path"])

    return CatalogSession


def _session_options() -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its warnings about unused initializers are not the operator's concern
    return options
