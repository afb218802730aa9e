"""RemoveBackground and RemoveBackgroundsInBatch: the wire rules, the removal itself, and the stack.

The removal's properties (thresholds, Box, matting, OnlyMask) are checked in this process on
the tiny remover (models_registry/tiny_segmentation.py: a bright subject on a dark ground is
the foreground, with a soft band at its outline); a few requests then go through a real
gateway and worker. pymatting is compiled by numba once per checkout, into the setting's
default cache (var/numba-cache), which the worker processes read too.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from pydantic import ValidationError

from api.api_router import describe_validation_error
from api.backgrounds.protocol import RemoveBackgroundRequest, RemoveBackgroundsInBatchRequest
from api.backgrounds.serving import translate_batch, translate_remove_background
from api.errors import InvalidParameter, UnsupportedAction
from models_registry.catalog import Catalog
from openpik.job import BackgroundJob, RemoverRef
from openpik.routing import DEFAULT_QUEUE, REMOVE_BACKGROUND_TASK
from openpik.settings import Settings
from openpik.task_records import TASK_ID_LENGTH, record_key
from tests.stack import KEY_A, REPO, RedisServer, download_image, own_redis_stack, wait_for
from worker.backgrounds import _outline, band_is_wide, outside_box_cleared, remove_background, thresholded

DARK, BRIGHT = (20, 30, 25), (230, 220, 200)
FIELDS = {"PublicKey": KEY_A.public, "Signature": "x"}


def subject(size: tuple[int, int], ellipse: tuple[int, int, int, int]) -> Image.Image:
    """A bright ellipse (the subject) on a dark ground."""
    image = Image.new("RGB", size, DARK)
    ImageDraw.Draw(image).ellipse(ellipse, fill=BRIGHT)
    return image


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def job(**fields) -> BackgroundJob:
    base = {"remover": RemoverRef(remover_id=1, path="tiny.onnx"), "images": ("image0",)}
    return BackgroundJob(**(base | fields))


def alpha(image: Image.Image) -> np.ndarray:
    return np.asarray(image)[..., 3] if image.mode == "RGBA" else np.asarray(image)


# --- pure rules -----------------------------------------------------------------------------


def test_thresholds_make_sure_regions_and_keep_the_band():
    mask = np.array([[0, 14, 15, 128, 240, 241, 255]], dtype=np.uint8)
    assert thresholded(mask, 240, 15).tolist() == [[0, 0, 15, 128, 240, 255, 255]]
    assert thresholded(mask, 0, 15).tolist() == [[0, 255, 255, 255, 255, 255, 255]]  # the foreground rule first


def test_outside_the_box_is_cleared():
    cleared = outside_box_cleared(np.full((4, 5), 200, dtype=np.uint8), (1, 1, 3, 4))
    assert cleared.sum() == 200 * 2 * 3 and cleared[1:4, 1:3].min() == 200


def test_outline_is_the_subjects_border_not_the_pictures_edge():
    subject_pixels = np.zeros((6, 6), dtype=bool)
    subject_pixels[1:5, 1:5] = True
    assert _outline(subject_pixels).sum() == 12
    assert _outline(np.ones((6, 6), dtype=bool)).sum() == 0


def test_auto_mats_a_wide_band_and_not_a_crisp_edge():
    crisp = np.zeros((100, 100), dtype=np.uint8)
    crisp[30:70, 30:70] = 255
    soft = np.asarray(Image.fromarray(crisp).filter(ImageFilter.GaussianBlur(4)))
    assert not band_is_wide(crisp, job())
    assert band_is_wide(soft, job())


# --- the wire models and their translation ---------------------------------------------------


def wire_error(model, body: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(FIELDS | body)
    return describe_validation_error(caught.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Box": [1, 2, 3]}, "Box"),
        ({"Box": [5, 0, 2, 8]}, "Box"),
        ({"Box": [0, 9, 4, 9]}, "Box"),
        ({"ErodeSize": 41}, "ErodeSize"),
        ({"ForegroundThreshold": 256}, "ForegroundThreshold"),
        ({"BackgroundThreshold": -1}, "BackgroundThreshold"),
        ({"HairOptimization": "sometimes"}, "HairOptimization"),
        ({"OnlyMask": "yes"}, "OnlyMask"),
    ],
)
def test_remove_background_fields_are_checked(body, field):
    message = wire_error(RemoveBackgroundRequest, {"Action": "RemoveBackground", "RawImage": "x"} | body)
    assert message.startswith(f"{field}:"), message


@pytest.mark.parametrize("images", [[], ["x"] * 17])
def test_batch_takes_1_to_16_images(images):
    message = wire_error(RemoveBackgroundsInBatchRequest, {"Action": "RemoveBackgroundsInBatch", "RawImages": images})
    assert message.startswith("RawImages:"), message


def test_typed_clients_unset_values_and_any_case_are_read():
    request = RemoveBackgroundRequest.model_validate(
        FIELDS
        | {"Action": "RemoveBackground", "RawImage": "x", "Box": [0, 0, 0, 0], "HairOptimization": "OFF"}
        | {"ErodeSize": 0, "ForegroundThreshold": 0, "OnlyMask": None}
    )
    assert (request.Box, request.HairOptimization, request.ErodeSize, request.ForegroundThreshold) == (
        None,
        "off",
        0,
        0,
    )
    assert RemoveBackgroundRequest.model_validate(FIELDS | {"Action": "RemoveBackground", "RawImage": "x"}).Box is None


def catalog_with(removers: list[dict]) -> Catalog:
    return Catalog.model_validate(
        {
            "main_models": [{"id": 1, "model_code": "m", "name": "m", "path": "m"}],
            "background_removers": removers,
        }
    )


def test_the_job_carries_the_default_remover_its_group_and_the_options():
    catalog = catalog_with(
        [
            {"id": 1, "name": "a", "path": "/a.onnx"},
            {"id": 2, "name": "b", "path": "/b.onnx", "group": "editing", "default": True},
        ]
    )
    request = RemoveBackgroundRequest.model_validate(
        FIELDS
        | {"Action": "RemoveBackground", "RawImage": png_base64(subject((40, 30), (5, 5, 30, 25)))}
        | {"Box": [2, 3, 40, 30], "HairOptimization": "On", "OnlyMask": True}
    )
    submission = translate_remove_background(request, catalog, KEY_A.public, Settings())
    assert (submission.queue, submission.task_name, list(submission.images)) == (
        "openpik.editing",
        REMOVE_BACKGROUND_TASK,
        ["image0"],
    )
    assert submission.job == job(
        remover=RemoverRef(remover_id=2, path="/b.onnx"), box=(2, 3, 40, 30), hair_optimization="on", only_mask=True
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"RawImage": base64.b64encode(b"not an image at all").decode()}, "RawImage"),
        ({"RawImage": ""}, "RawImage"),
        ({"Box": [0, 0, 41, 30]}, "Box"),
    ],
)
def test_images_and_boxes_are_checked_against_the_decoded_image(body, field):
    request = RemoveBackgroundRequest.model_validate(
        FIELDS | {"Action": "RemoveBackground", "RawImage": png_base64(subject((40, 30), (5, 5, 30, 25)))} | body
    )
    with pytest.raises(InvalidParameter) as caught:
        translate_remove_background(request, catalog_with([{"id": 1, "name": "a", "path": "/a.onnx"}]), "k", Settings())
    assert caught.value.message.startswith(f"{field}:"), caught.value.message


def test_a_batch_names_the_image_that_is_not_one_and_no_remover_is_161():
    request = RemoveBackgroundsInBatchRequest.model_validate(
        FIELDS
        | {"Action": "RemoveBackgroundsInBatch", "RawImages": [png_base64(subject((8, 8), (1, 1, 6, 6))), "QUJD"]}
    )
    with pytest.raises(InvalidParameter, match=r"^RawImages\[1\]:"):
        translate_batch(request, catalog_with([{"id": 1, "name": "a", "path": "/a.onnx"}]), "k", Settings())
    with pytest.raises(UnsupportedAction):
        translate_batch(request, catalog_with([]), "k", Settings())


def test_the_catalog_refuses_two_default_removers():
    with pytest.raises(ValidationError, match=r"background_removers\[1\]\.default"):
        catalog_with(
            [
                {"id": 1, "name": "a", "path": "/a", "default": True},
                {"id": 2, "name": "b", "path": "/b", "default": True},
            ]
        )


# --- the removal on the tiny remover --------------------------------------------------------


@pytest.fixture(scope="module")
def segment(catalog):
    from worker.backgrounds import Removers

    return Removers(REPO / Settings().numba_cache_dir).segmenter(str(catalog.background_remover.path))


PICTURE = subject((96, 80), (20, 15, 70, 65))


@pytest.mark.models
def test_a_cut_out_is_rgba_of_the_inputs_size_with_the_subject_opaque(segment):
    cut = remove_background(PICTURE, segment, job())
    assert (cut.mode, cut.size) == ("RGBA", PICTURE.size)
    assert alpha(cut)[40, 45] == 255 and alpha(cut)[2, 2] == 0 and alpha(cut)[78, 94] == 0
    assert np.abs(np.asarray(cut)[40, 45, :3].astype(int) - BRIGHT).max() <= 2  # matted: estimated colours


@pytest.mark.models
def test_only_mask_is_the_cut_outs_alpha_as_an_l_image(segment):
    mask = remove_background(PICTURE, segment, job(only_mask=True))
    assert (mask.mode, mask.size) == ("L", PICTURE.size)
    assert np.array_equal(alpha(mask), alpha(remove_background(PICTURE, segment, job())))


@pytest.mark.models
def test_a_lower_foreground_threshold_makes_more_pixels_opaque(segment):
    low, high = (
        (alpha(remove_background(PICTURE, segment, job(hair_optimization="off", foreground_threshold=t))) == 255).sum()
        for t in (0, 255)
    )
    assert low > high and low > 0


@pytest.mark.models
def test_nothing_outside_the_box_is_opaque(segment):
    two = subject((120, 60), (10, 10, 50, 50))
    ImageDraw.Draw(two).ellipse((70, 10, 110, 50), fill=BRIGHT)
    box = (60, 0, 120, 60)
    for mode in ("on", "off"):
        cut = alpha(remove_background(two, segment, job(box=box, hair_optimization=mode)))
        assert cut[:, :60].max() == 0, mode
        assert cut[30, 90] == 255, mode  # the subject inside the box is kept


@pytest.mark.models
def test_matting_really_runs_and_follows_the_picture(segment):
    """on: the band's alpha comes from the picture (here a hard-edged ellipse), not the model's
    blurred outline, so it differs from off's soft band; auto mats this soft band too."""
    off = alpha(remove_background(PICTURE, segment, job(hair_optimization="off")))
    on = alpha(remove_background(PICTURE, segment, job(hair_optimization="on")))
    band = (off > 0) & (off < 255)
    assert band.sum() > 50
    assert (on[band] != off[band]).mean() > 0.5
    assert np.array_equal(alpha(remove_background(PICTURE, segment, job(hair_optimization="auto"))), on)


# --- through the stack ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tiny_catalog_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backgrounds")
    with own_redis_stack(tiny_catalog_path, tmp, worker="editing", progress_interval_s="0") as (running, server):
        yield running.gateway, server


def submit(gateway, body: dict) -> str:
    answer = gateway.call(body)
    assert answer["RetCode"] == 0, answer
    return answer["TaskUID"]


def finished(gateway, task_id: str) -> dict:
    def ended() -> dict | None:
        answer = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [task_id]})
        item = answer["TaskDetailList"][0]
        return item if item["Status"] in ("Finished", "Error") else None

    return wait_for(ended, 120, message=f"task {task_id} to end")


@pytest.mark.stack
@pytest.mark.models
def test_remove_background_end_to_end(stack):
    gateway, _ = stack
    task_id = submit(gateway, {"Action": "RemoveBackground", "RawImage": png_base64(PICTURE), "OnlyMask": True})
    item = finished(gateway, task_id)
    assert (item["Action"], item["Status"], item["ErrorCode"], len(item["ImgList"])) == (
        "RemoveBackground",
        "Finished",
        0,
        1,
    )
    mask = download_image(item["ImgList"][0])
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", PICTURE.size)
    assert mask.getpixel((45, 40)) == 255 and mask.getpixel((2, 2)) == 0


@pytest.mark.stack
@pytest.mark.models
def test_a_batch_answers_one_cut_out_per_image_in_order(stack):
    gateway, _ = stack
    sizes = [(64, 48), (40, 72), (56, 56)]
    pictures = [subject(size, (8, 8, size[0] - 8, size[1] - 8)) for size in sizes]
    task_id = submit(
        gateway,
        {
            "Action": "RemoveBackgroundsInBatch",
            "RawImages": [png_base64(p) for p in pictures],
            "HairOptimization": "off",
        },
    )
    item = finished(gateway, task_id)
    assert (item["Action"], item["Status"]) == ("RemoveBackgroundsInBatch", "Finished"), item
    cuts = [download_image(url) for url in item["ImgList"]]
    assert [(cut.mode, cut.size) for cut in cuts] == [("RGBA", size) for size in sizes]


def queued_and_recorded(server: RedisServer) -> tuple[int, int]:
    import redis

    with redis.Redis.from_url(server.url) as client:
        return client.llen(DEFAULT_QUEUE), len(list(client.scan_iter(record_key("?" * TASK_ID_LENGTH))))


@pytest.mark.stack
@pytest.mark.models
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Action": "RemoveBackground", "RawImage": base64.b64encode(b"GIF89a broken").decode()}, "RawImage"),
        ({"Action": "RemoveBackground", "RawImage": png_base64(PICTURE), "Box": [0, 0, 97, 80]}, "Box"),
        ({"Action": "RemoveBackgroundsInBatch", "RawImages": []}, "RawImages"),
        ({"Action": "RemoveBackgroundsInBatch", "RawImages": [png_base64(PICTURE)] * 17}, "RawImages"),
    ],
)
def test_bad_requests_are_230_naming_the_field_and_queue_nothing(stack, body, field):
    gateway, server = stack
    before = queued_and_recorded(server)
    answer = gateway.call(body)
    assert answer["RetCode"] == 230 and answer["Message"].startswith(f"{field}:"), answer
    assert queued_and_recorded(server) == before


@pytest.mark.models
def test_the_tiny_catalog_names_an_existing_remover(catalog):
    assert catalog.background_remover is not None and Path(catalog.background_remover.path).is_file()


@pytest.mark.models  # imports rembg (pymatting compiled from the numba cache)
def test_a_missing_or_broken_remover_is_a_model_load_error(tmp_path):
    from worker.backgrounds import Removers
    from worker.errors import ModelLoadError

    removers = Removers(REPO / Settings().numba_cache_dir)
    with pytest.raises(ModelLoadError, match="missing"):
        removers.segmenter(str(tmp_path / "absent.onnx"))
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        removers.segmenter(str(tmp_path / "broken.onnx"))
