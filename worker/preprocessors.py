"""ControlNet preprocessors ("annotators"): a detector key and an image -> a control map.

The detectors' names and parameter names are shared vocabulary (openpik.vocabulary.
DETECTOR_PARAMS: the catalog is checked against it when it loads). One table here, DETECTORS,
holds how to run each: how to build it (a controlnet-aux class loaded from the operator's
annotators folder, or a small function here), which weight files it reads there, and which
call keyword a parameter goes to. A network is loaded on first use and kept for the process
lifetime (loading one takes seconds, running it far less), once for all the detectors that
share it (the five openpose variants, the HED and PiDiNet edge variants).

Two kinds of failure, two types: the worker cannot run a preprocessor (its files, an unknown
key or param: the operator's to fix), or a loaded detector fails on this image (the client's).

torch and controlnet-aux are imported only when a detector is built.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
from PIL import Image

from openpik.vocabulary import DEFAULT_DETECT_RESOLUTION, DETECTOR_PARAMS
from worker.errors import foreign_error

if TYPE_CHECKING:
    import torch

BOTH_RESOLUTIONS = ("detect_resolution", "image_resolution")
SHUFFLE_SEED = 0
# sd-webui-controlnet's XDoG: two Gaussian blurs whose difference marks strokes.
XDOG_SIGMAS = (0.5, 5.0)
# Edge-preserving smoothing before the anime lineart network (see _denoised).
BILATERAL_DIAMETER, BILATERAL_SIGMA = 9, 75

Detector = Callable[..., Any]
"""Called with an RGB image and keywords; returns a PIL image or an HxW(x3) uint8 array."""
Builder = Callable[[Path | None, "torch.device"], Detector]
Wrapper = Callable[[Detector], Detector]

# Exceptions a loaded detector raises on an image it cannot read (shapes its network or numpy
# cannot handle, empty arrays, division by zero): the image's fault. Others (TypeError, ...)
# are ours, and the resource errors the task error table knows (out of memory, time limits)
# pass through untouched. OpenCV's ``cv2.error`` joins these when a detector fails.
INPUT_FAILURES: tuple[type[Exception], ...] = (ValueError, ArithmeticError, IndexError, RuntimeError, AssertionError)


class PreprocessorError(Exception):
    """A preprocessor failed; the message names the detector key. Raised as one of the two
    subclasses, so that the engine maps each to the task error it is."""


class PreprocessorSetupError(PreprocessorError):
    """This worker cannot run the preprocessor: an unknown key or param, or an annotator file
    that is missing or does not load (the message names its path)."""


class UnreadableImageError(PreprocessorError):
    """The detector loaded but fails on this image (e.g. openpose on a strip 21 or more times
    taller than wide: its body network's output loses a dimension)."""


@dataclass(frozen=True)
class DetectorSpec:
    """How to build one detector and how to call it."""

    build: Builder
    files: tuple[str, ...] = ()
    """Annotator weight files it reads from the annotators folder."""
    keywords: Mapping[str, str] = field(default_factory=dict)
    """Param name (openpik.vocabulary.DETECTOR_PARAMS) -> the detector's call keyword, where
    they differ."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Keywords every call passes (the variant of a shared class)."""
    wrap: Wrapper | None = None
    """Turns the built (possibly shared) detector into this key's: seeding, pre-filtering, or
    picking one output."""
    resolution_keywords: tuple[str, ...] = BOTH_RESOLUTIONS
    """Keywords that receive the detect resolution; the output stays at that size."""


# --- builders ----------------------------------------------------------------------------


def _controlnet_aux():
    import controlnet_aux

    return controlnet_aux


@functools.cache
def _loaded(class_name: str) -> Builder:
    """controlnet-aux's class loaded from the annotators folder: given a local folder, its
    ``from_pretrained`` reads the files there by their usual names and never asks the hub.
    One builder per class (cached), so every detector of that class shares one network."""

    def build(folder: Path | None, device: torch.device) -> Detector:
        with bare_argv():
            return getattr(_controlnet_aux(), class_name).from_pretrained(str(folder)).to(device)

    return build


@functools.cache
def _weightless(class_name: str) -> Builder:
    """A controlnet-aux class that needs no weights (plain OpenCV/numpy)."""
    return lambda folder, device: getattr(_controlnet_aux(), class_name)()


def _function(function: Detector) -> Builder:
    """One of this module's own detectors."""
    return lambda folder, device: function


@contextlib.contextmanager
def bare_argv() -> Iterator[None]:
    """LeReS's loader parses ``sys.argv`` (argparse, abbreviations allowed); a bare argv keeps
    the host program's arguments from leaking into its options or aborting the parse."""
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        yield


# --- wrappers: one key's use of a built detector ----------------------------------------


def _seeded(detector: Detector) -> Detector:
    """Content shuffle draws its flow field from numpy's global RNG: seed it per call (and
    restore it after) so the same input gives the same map."""

    def run(image: Image.Image, **kwargs: Any) -> Any:
        state = np.random.get_state()
        np.random.seed(SHUFFLE_SEED)
        try:
            return detector(image, **kwargs)
        finally:
            np.random.set_state(state)

    return run


def _denoised(detector: Detector) -> Detector:
    """sd-webui-controlnet's lineart_anime_denoise runs MangaLineExtraction (erika.pth), which
    controlnet-aux 0.0.10 does not ship. The stand-in: the anime lineart network on a
    bilateral-filtered input, which smooths screentone and noise but keeps edges."""

    def run(image: Image.Image, **kwargs: Any) -> Any:
        import cv2

        smooth = cv2.bilateralFilter(np.asarray(image), BILATERAL_DIAMETER, BILATERAL_SIGMA, BILATERAL_SIGMA)
        return detector(Image.fromarray(smooth), **kwargs)

    return run


def _normal_map(detector: Detector) -> Detector:
    """normal_midas: MiDaS asked for depth and normals returns both; the normal map is this
    key's."""

    def run(image: Image.Image, **kwargs: Any) -> Any:
        _depth, normal = detector(image, depth_and_normal=True, **kwargs)
        return normal

    return run


# --- own detectors -----------------------------------------------------------------------


def _identity(image: Image.Image) -> Image.Image:
    """``none``: the uploaded image is already the control map."""
    return image


def _scribble_xdog(image: Image.Image, detect_resolution: int, threshold: float = 32) -> np.ndarray:
    """XDoG scribble as sd-webui-controlnet computes it: where the difference of a fine and a
    coarse Gaussian blur (darkest channel) exceeds ``threshold`` / 2, a white stroke. Doubled
    in int32: its uint8 arithmetic wraps and drops a band of strong strokes."""
    import cv2
    from controlnet_aux.util import HWC3, resize_image

    pixels = resize_image(HWC3(np.asarray(image)), detect_resolution).astype(np.float32)
    fine, coarse = (cv2.GaussianBlur(pixels, (0, 0), sigma) for sigma in XDOG_SIGMAS)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    strokes = 2 * (255 - dog.astype(np.int32)) > threshold
    return np.where(strokes, 255, 0).astype(np.uint8)


def _tile_resample(image: Image.Image, down_sampling_rate: float = 1.0) -> np.ndarray:
    """sd-webui-controlnet's tile_resample: the image shrunk by ``down_sampling_rate`` (area
    interpolation); the tile ControlNet adds the detail back. No detect resolution, as there."""
    import cv2

    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    size = (max(1, int(width / down_sampling_rate)), max(1, int(height / down_sampling_rate)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _invert(image: Image.Image, detect_resolution: int) -> np.ndarray:
    """sd-webui-controlnet's invert ("from white bg & black line"): a drawing in black on white
    becomes the white-on-black map the line and edge ControlNets expect."""
    from controlnet_aux.util import HWC3, resize_image

    return 255 - resize_image(HWC3(np.asarray(image)), detect_resolution)


def _recolor(conversion_name: str, channel: int) -> Detector:
    """Recolor: one brightness channel of the image as grey, raised to ``gamma_correction``."""

    def recolor(image: Image.Image, gamma_correction: float = 1.0) -> np.ndarray:
        import cv2

        grey = cv2.cvtColor(np.asarray(image), getattr(cv2, conversion_name))[:, :, channel]
        return ((grey.astype(np.float32) / 255.0) ** gamma_correction * 255.0).clip(0, 255).astype(np.uint8)

    return recolor


# --- the table ---------------------------------------------------------------------------

_NO_RESOLUTION: tuple[str, ...] = ()
_DETECT_ONLY = ("detect_resolution",)
_HED = ("ControlNetHED.pth",)
_PIDINET = ("table5_pidinet.pth",)
_LINEART = ("sk_model.pth", "sk_model2.pth")  # the loader reads the fine and the coarse model
_LINEART_ANIME = ("netG.pth",)
_OPENPOSE = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")  # the loader reads all three
_MIDAS = ("dpt_hybrid-midas-501f0c75.pt",)


def _openpose(body: bool, hand: bool, face: bool) -> DetectorSpec:
    """One openpose variant (sd-webui-controlnet's): which of body, hands and face it draws."""
    return DetectorSpec(
        _loaded("OpenposeDetector"),
        _OPENPOSE,
        fixed={"include_body": body, "include_hand": hand, "include_face": face},
    )


DETECTORS: dict[str, DetectorSpec] = {
    "none": DetectorSpec(_function(_identity), resolution_keywords=_NO_RESOLUTION),
    "canny": DetectorSpec(_weightless("CannyDetector")),
    "scribble_xdog": DetectorSpec(_function(_scribble_xdog), resolution_keywords=_DETECT_ONLY),
    "scribble_hed": DetectorSpec(_loaded("HEDdetector"), _HED, fixed={"scribble": True}),
    "scribble_pidinet": DetectorSpec(_loaded("PidiNetDetector"), _PIDINET, fixed={"scribble": True}),
    "softedge_hed": DetectorSpec(_loaded("HEDdetector"), _HED),
    "softedge_hedsafe": DetectorSpec(_loaded("HEDdetector"), _HED, fixed={"safe": True}),
    "softedge_pidinet": DetectorSpec(_loaded("PidiNetDetector"), _PIDINET),
    "softedge_pidisafe": DetectorSpec(_loaded("PidiNetDetector"), _PIDINET, fixed={"safe": True}),
    "lineart": DetectorSpec(_loaded("LineartDetector"), _LINEART, fixed={"coarse": False}),
    "lineart_coarse": DetectorSpec(_loaded("LineartDetector"), _LINEART, fixed={"coarse": True}),
    "lineart_anime": DetectorSpec(_loaded("LineartAnimeDetector"), _LINEART_ANIME),
    "lineart_anime_denoise": DetectorSpec(_loaded("LineartAnimeDetector"), _LINEART_ANIME, wrap=_denoised),
    "mlsd": DetectorSpec(
        _loaded("MLSDdetector"),
        ("mlsd_large_512_fp32.pth",),
        keywords={"value_threshold": "thr_v", "distance_threshold": "thr_d"},
    ),
    "openpose": _openpose(body=True, hand=False, face=False),
    "openpose_face": _openpose(body=True, hand=False, face=True),
    "openpose_faceonly": _openpose(body=False, hand=False, face=True),
    "openpose_hand": _openpose(body=True, hand=True, face=False),
    "openpose_full": _openpose(body=True, hand=True, face=True),
    "depth_midas": DetectorSpec(_loaded("MidasDetector"), _MIDAS),
    "depth_leres": DetectorSpec(_loaded("LeresDetector"), ("res101.pth", "latest_net_G.pth")),
    "depth_zoe": DetectorSpec(_loaded("ZoeDetector"), ("ZoeD_M12_N.pt",)),
    "normal_bae": DetectorSpec(_loaded("NormalBaeDetector"), ("scannet.pt",)),
    "normal_midas": DetectorSpec(
        _loaded("MidasDetector"), _MIDAS, keywords={"bg_threshold": "bg_th"}, wrap=_normal_map
    ),
    "shuffle": DetectorSpec(_weightless("ContentShuffleDetector"), wrap=_seeded),
    "tile_resample": DetectorSpec(_function(_tile_resample), resolution_keywords=_NO_RESOLUTION),
    "invert": DetectorSpec(_function(_invert), resolution_keywords=_DETECT_ONLY),
    "recolor_luminance": DetectorSpec(_function(_recolor("COLOR_RGB2LAB", 0)), resolution_keywords=_NO_RESOLUTION),
    "recolor_intensity": DetectorSpec(_function(_recolor("COLOR_RGB2HSV", 2)), resolution_keywords=_NO_RESOLUTION),
    "lineart_standard": DetectorSpec(_weightless("LineartStandardDetector"), resolution_keywords=_DETECT_ONLY),
}


# --- running -----------------------------------------------------------------------------


class Preprocessors:
    """Builds detectors on first use, keeps them, and runs them."""

    def __init__(self, annotators_dir: Path | None, device: torch.device | None = None):
        self.annotators_dir = Path(annotators_dir) if annotators_dir is not None else None
        self.device = device if device is not None else _cpu()
        self._built: dict[Builder, Detector] = {}
        self._detectors: dict[str, Detector] = {}

    def run(
        self, detector: str, image: Image.Image, params: Mapping[str, float], detect_resolution: int | None
    ) -> Image.Image:
        """The RGB control map of ``image``, at the size the detector gives."""
        spec = _spec(detector)
        resolution = DEFAULT_DETECT_RESOLUTION if detect_resolution is None else detect_resolution
        keywords = {name: resolution for name in spec.resolution_keywords}
        keywords |= spec.fixed
        keywords |= _call_params(detector, spec, params)
        return _detect(detector, self._detector(detector, spec), image.convert("RGB"), keywords)

    def _detector(self, key: str, spec: DetectorSpec) -> Detector:
        if key not in self._detectors:
            folder = self._folder_with(key, spec.files)
            if spec.build not in self._built:
                self._built[spec.build] = _build(key, spec, folder, self.device)
            built = self._built[spec.build]
            self._detectors[key] = spec.wrap(built) if spec.wrap else built
        return self._detectors[key]

    def _folder_with(self, key: str, files: tuple[str, ...]) -> Path | None:
        """The annotators folder, once every file the detector reads is known to be there:
        checked here because controlnet-aux would fall back to the hub for a missing one."""
        for name in files:
            if self.annotators_dir is None:
                raise PreprocessorSetupError(
                    f"preprocessor {key!r} needs the annotator file {name}, but the catalog sets no annotators_dir"
                )
            path = self.annotators_dir / name
            if not path.is_file():
                raise PreprocessorSetupError(
                    f"preprocessor {key!r} needs the annotator file {path}, which does not exist"
                )
        return self.annotators_dir


def _spec(key: str) -> DetectorSpec:
    try:
        return DETECTORS[key]
    except KeyError:
        raise PreprocessorSetupError(f"unknown preprocessor {key!r}; known: {', '.join(sorted(DETECTORS))}") from None


def _call_params(key: str, spec: DetectorSpec, params: Mapping[str, float]) -> dict[str, float]:
    takes = DETECTOR_PARAMS[key]
    unknown = sorted(set(params) - set(takes))
    if unknown:
        known = ", ".join(takes) or "none"
        raise PreprocessorSetupError(f"preprocessor {key!r} has no param {', '.join(unknown)} (it takes: {known})")
    return {spec.keywords.get(name, name): value for name, value in params.items()}


def _build(key: str, spec: DetectorSpec, folder: Path | None, device: torch.device) -> Detector:
    """Build the detector; a file that is there but does not load is the operator's to fix,
    so it is reported like a missing one."""
    try:
        return spec.build(folder, device)
    except Exception as exc:
        raise PreprocessorSetupError(
            f"preprocessor {key!r}: cannot load its annotator files from {folder}: {exc}"
        ) from exc


def _detect(key: str, detector: Detector, image: Image.Image, keywords: Mapping[str, Any]) -> Image.Image:
    """Run a loaded detector; what it raises on this image (INPUT_FAILURES) is the client's to
    fix, and says so."""
    try:
        return _as_rgb(detector(image, **keywords))
    except Exception as exc:
        if not _is_input_failure(exc):
            raise
        raise UnreadableImageError(
            f"preprocessor {key!r} cannot read this control image ({image.width}x{image.height} pixels: "
            f"{type(exc).__name__}: {exc}); send another image, or no preprocessor with a ready-made control map"
        ) from exc


def _is_input_failure(exc: Exception) -> bool:
    import cv2

    return isinstance(exc, (*INPUT_FAILURES, cv2.error)) and foreign_error(exc) is None


def _as_rgb(result: Any) -> Image.Image:
    image = result if isinstance(result, Image.Image) else Image.fromarray(np.asarray(result))
    return image.convert("RGB")


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")
