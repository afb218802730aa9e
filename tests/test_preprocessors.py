"""The ControlNet preprocessors on the tiny catalog's random-weight annotator files."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from billiard.exceptions import SoftTimeLimitExceeded
from PIL import Image, ImageDraw

from models_registry.catalog import load_catalog
from models_registry.tiny import DEFAULT_CATALOG
from models_registry.tiny_annotators import ANNOTATOR_FILES
from openpik.job import ControlUnit
from openpik.vocabulary import DETECTOR_PARAMS
from worker import preprocessors
from worker.engine import control_map
from worker.errors import GpuOutOfMemoryError, TimeLimitError, task_error
from worker.preprocessors import (
    DETECTORS,
    Preprocessors,
    PreprocessorSetupError,
    UnreadableImageError,
)

SIZE = 64
SHIPPED = {p.detector: p for p in load_catalog(DEFAULT_CATALOG).preprocessors}
TARGET = (48, 80)


@pytest.fixture(scope="module")
def shapes() -> Image.Image:
    """A picture with strong and faint edges, a line and flat areas, so every detector has
    something to find and a threshold has something to decide."""
    image = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((36, 2, 62, 16), fill=(235, 235, 235))
    draw.rectangle((6, 8, 30, 40), fill="red", outline="black")
    draw.ellipse((28, 20, 60, 56), fill="blue")
    draw.line((0, SIZE - 1, SIZE - 1, 0), fill="black", width=3)
    return image


def defaults(key: str) -> dict[str, float]:
    return {param.name: param.default for param in SHIPPED[key].params}


@pytest.fixture(scope="module")
def runner(catalog) -> Preprocessors:
    return Preprocessors(catalog.annotators_dir)


@pytest.mark.models
@pytest.mark.parametrize("key", sorted(SHIPPED))
def test_every_shipped_detector_runs_offline_deterministically_to_a_map_of_the_target_size(runner, shapes, key):
    """ZoeDepth alone takes ~20 s here (a 345M-parameter network at 384x512 whatever the input)."""
    unit = ControlUnit(
        controlnet_id=1,
        path="-",
        image="ctl",
        preprocessor=key,
        preprocessor_params=defaults(key),
        detect_resolution=SIZE,
        resize_mode="CropAndResize",
    )
    first = control_map(runner, unit, shapes, TARGET)
    assert first.mode == "RGB" and first.size == TARGET
    if key != "depth_zoe":
        assert np.array_equal(np.asarray(first), np.asarray(control_map(runner, unit, shapes, TARGET)))


@pytest.mark.models
@pytest.mark.parametrize(
    ("key", "params", "other"),
    [
        ("canny", {"low_threshold": 100, "high_threshold": 200}, {"low_threshold": 10, "high_threshold": 30}),
        ("scribble_xdog", {"threshold": 32}, {"threshold": 4}),
        ("recolor_luminance", {"gamma_correction": 1.0}, {"gamma_correction": 0.5}),
        ("recolor_intensity", {"gamma_correction": 1.0}, {"gamma_correction": 2.0}),
        ("normal_midas", {"bg_threshold": 0.4}, {"bg_threshold": 0.9}),
        ("tile_resample", {"down_sampling_rate": 1.0}, {"down_sampling_rate": 2.0}),
    ],
)
def test_catalog_params_reach_the_detector(catalog, shapes, key, params, other):
    runner = Preprocessors(catalog.annotators_dir)
    assert not np.array_equal(
        np.asarray(runner.run(key, shapes, params, SIZE)), np.asarray(runner.run(key, shapes, other, SIZE))
    )


def test_a_missing_annotator_file_names_the_file_and_the_detector(tmp_path, shapes):
    with pytest.raises(PreprocessorSetupError) as error:
        Preprocessors(tmp_path).run("softedge_hed", shapes, {}, SIZE)
    assert str(tmp_path / "ControlNetHED.pth") in str(error.value) and "softedge_hed" in str(error.value)


def test_no_annotators_dir_names_the_file_and_the_detector(shapes):
    with pytest.raises(PreprocessorSetupError, match=r"'depth_midas'.*dpt_hybrid-midas-501f0c75\.pt"):
        Preprocessors(None).run("depth_midas", shapes, {}, SIZE)


def test_an_unknown_detector_or_param_is_refused(tmp_path, shapes):
    with pytest.raises(PreprocessorSetupError, match="'sharpen'"):
        Preprocessors(tmp_path).run("sharpen", shapes, {}, SIZE)
    with pytest.raises(PreprocessorSetupError, match="'canny' has no param blur"):
        Preprocessors(tmp_path).run("canny", shapes, {"blur": 1.0}, SIZE)


def test_a_detector_is_built_once_and_reused(monkeypatch, tmp_path, shapes):
    spec = DETECTORS["canny"]
    builds = []

    def counting_build(folder, device):
        builds.append(folder)
        return spec.build(folder, device)

    monkeypatch.setitem(DETECTORS, "canny", dataclasses.replace(spec, build=counting_build))
    runner = Preprocessors(tmp_path)
    runner.run("canny", shapes, {}, SIZE)
    runner.run("canny", shapes, {"low_threshold": 1}, SIZE)
    assert len(builds) == 1


@pytest.mark.models
def test_the_openpose_variants_share_one_network_and_draw_different_parts(monkeypatch, catalog, shapes):
    """Five keys, one OpenposeDetector: loaded once (about 0.5 GB of weights), called with
    each variant's include_body/include_hand/include_face."""
    variants = ["openpose", "openpose_face", "openpose_faceonly", "openpose_hand", "openpose_full"]
    shared = DETECTORS["openpose"].build
    assert all(DETECTORS[key].build is shared for key in variants)
    builds, calls = [], []

    def counting_build(folder, device):
        builds.append(folder)
        detector = shared(folder, device)
        return lambda image, **keywords: calls.append(keywords) or detector(image, **keywords)

    for key in variants:
        monkeypatch.setitem(DETECTORS, key, dataclasses.replace(DETECTORS[key], build=counting_build))
    runner = Preprocessors(catalog.annotators_dir)
    for key in variants:
        assert runner.run(key, shapes, {}, SIZE).size == (SIZE, SIZE)
    assert len(builds) == 1
    drawn = [(c["include_body"], c["include_hand"], c["include_face"]) for c in calls]
    assert drawn == [
        (True, False, False),
        (True, False, True),
        (False, False, True),
        (True, True, False),
        (True, True, True),
    ]


def test_tile_resample_shrinks_by_the_rate_and_invert_negates(shapes):
    runner = Preprocessors(None)
    same = runner.run("tile_resample", shapes, {"down_sampling_rate": 1.0}, None)
    assert np.array_equal(np.asarray(same), np.asarray(shapes))
    assert runner.run("tile_resample", shapes, {"down_sampling_rate": 2.5}, None).size == (25, 25)
    assert np.array_equal(np.asarray(runner.run("invert", shapes, {}, SIZE)), 255 - np.asarray(shapes))


@pytest.mark.models
@pytest.mark.parametrize("key", ["openpose", "openpose_full", "openpose_faceonly"])
def test_an_image_a_detector_cannot_read_is_the_clients_error_naming_detector_and_size(catalog, key):
    """A real failure: openpose on a strip 32 times taller than wide (its body network's
    output loses a dimension; controlnet-aux raises ValueError)."""
    with pytest.raises(UnreadableImageError) as error:
        Preprocessors(catalog.annotators_dir).run(key, Image.new("RGB", (2, 64), "red"), {}, SIZE)
    assert f"preprocessor {key!r} cannot read this control image (2x64 pixels" in str(error.value)
    assert isinstance(error.value.__cause__, ValueError)


def _failing(raised: BaseException):
    """A detector build whose detector raises ``raised`` on any image."""

    def fail(image, **keywords):
        raise raised

    return lambda folder, device: fail


@pytest.mark.parametrize(
    ("raised", "seen"),
    [
        (ValueError("axes don't match array"), UnreadableImageError),
        (ZeroDivisionError("division by zero"), UnreadableImageError),
        (IndexError("index 0 is out of bounds"), UnreadableImageError),
        (RuntimeError("Kernel size can't be greater than actual input size"), UnreadableImageError),
        (cv2.error("(-215:Assertion failed) !ssize.empty() in function 'resize'"), UnreadableImageError),
        (TypeError("unexpected keyword argument 'thr_v'"), TypeError),
    ],
)
def test_what_a_detector_raises_is_the_images_fault_only_for_data_errors(monkeypatch, shapes, raised, seen):
    """Data errors from a loaded detector are the image's; a TypeError is ours (internal)."""
    monkeypatch.setitem(DETECTORS, "none", dataclasses.replace(DETECTORS["none"], build=_failing(raised)))
    with pytest.raises(seen) as error:
        Preprocessors(None).run("none", shapes, {}, None)
    assert error.value is raised or error.value.__cause__ is raised


@pytest.mark.parametrize(
    ("raised", "task_error_type", "code"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), GpuOutOfMemoryError, 1002),
        (SoftTimeLimitExceeded(), TimeLimitError, 1003),
    ],
)
def test_resource_errors_pass_through_untouched_to_their_task_errors(
    monkeypatch, shapes, raised, task_error_type, code
):
    """Out of memory and time limits are RuntimeError/Exception too, but the task error table
    knows them: they keep their own codes instead of blaming the image."""
    monkeypatch.setitem(DETECTORS, "none", dataclasses.replace(DETECTORS["none"], build=_failing(raised)))
    with pytest.raises(type(raised)) as error:
        Preprocessors(None).run("none", shapes, {}, None)
    assert error.value is raised
    assert isinstance(task_error(error.value), task_error_type) and task_error(error.value).code == code


def test_detect_resolution_defaults_to_512(shapes):
    assert Preprocessors(None).run("canny", shapes, {}, None).size == (512, 512)


def test_the_table_runs_every_detector_of_the_vocabulary_and_the_tiny_files_cover_it():
    assert set(SHIPPED) <= set(DETECTORS) == set(DETECTOR_PARAMS)
    assert all(set(spec.keywords) <= set(DETECTOR_PARAMS[key]) for key, spec in DETECTORS.items())
    assert {name for spec in DETECTORS.values() for name in spec.files} == set(ANNOTATOR_FILES)


def test_importing_the_table_loads_neither_torch_nor_controlnet_aux():
    code = (
        "import sys, worker.preprocessors as p; "
        "assert p.DETECTORS; "
        "loaded = {'torch', 'controlnet_aux'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(preprocessors.__file__))
    )
