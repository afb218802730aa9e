"""Bodies as real PICPIK clients send them (spec section 0): each is accepted, and the Job it
queues is checked field by field.

The gateway runs without a worker, so every accepted Job waits in its queue, where the
test reads it back: what a worker would run, exactly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time

import httpx
import pytest
from PIL import Image

from openpik.images import open_stored_image
from openpik.routing import DEFAULT_QUEUE
from openpik.signing import SIGNATURE_FIELD, string_to_sign
from openpik.task_records import image_key, record_key
from openpik.vocabulary import ENDED_STATUSES
from tests.requests import PNG, img2img, png_base64, txt2img
from tests.stack import KEY_A, RedisDb, open_redis, redis_fixture, running_stack, stack_settings, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.models]

redis_client = redis_fixture(RedisDb.DROP_IN)
WINDOW_S = 2


@pytest.fixture(scope="module")
def gateway(tiny_catalog_path, tmp_path_factory, redis_client):
    tmp = tmp_path_factory.mktemp("drop-in")
    env = stack_settings(tiny_catalog_path, tmp, RedisDb.DROP_IN, idempotency_window_s=str(WINDOW_S))
    with running_stack(env, tmp) as stack:
        yield stack.gateway


def queued_job(redis_client, task_uid: str) -> dict:
    """The Job of ``task_uid`` as the Celery message in the queue carries it."""
    for raw in redis_client.lrange(DEFAULT_QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["id"] == task_uid:
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            return args[0]
    raise AssertionError(f"no queued message for {task_uid}")


def accepted_job(gateway, redis_client, body: dict, **signing) -> dict:
    answer = gateway.call(body, **signing)
    assert answer["RetCode"] == 0, answer
    return queued_job(redis_client, answer["TaskUID"])


# --- typed clients: every field present, zero values and nulls ---------------------------

GO_TXT2IMG = {
    "Action": "GenerateTxt2Img", "ModelType": "combined_model", "MainModelId": 1, "SubModelIds": None,
    "SubModelParams": None, "BatchSize": 1, "Steps": 4, "CfgScale": 0, "Seed": 0, "Sampler": "Euler a",
    "Width": 64, "Height": 64, "ClipSkip": 0, "TranslatePrompt": False, "PositivePrompts": ["an apple"],
    "NegativePrompts": None, "ReferenceImage": "", "ReferenceScale": 0, "EnableControlNet": False,
    "ControlNetParams": None, "UseCustomMainModelVae": False, "request_uuid": "",
}  # fmt: skip

GO_UNIT = {
    "ControlNetImg": PNG, "ControlPreSetId": "0", "ControlWeight": 0, "ModelId": 1, "PreProcessorId": 0,
    "StartingControlStep": 0, "EndingControlStep": 0, "ControlMode": "", "ResizeMode": "",
    "PreProcessorResolution": 0, "Param1Value": 0, "Param2Value": 0,
}  # fmt: skip

GO_IMAGES = {
    "Action": "GenerateImages",
    "MainModel": {"ModelCode": "tiny-sd15-b", "InferenceParams": {"Steps": 0, "Sampler": "", "CFGScale": 0,
                                                                   "ClipSkip": 0}},
    "SubModelList": None, "PositivePrompts": ["an apple"], "NegativePrompts": [], "TranslatePrompts": False,
    "Seed": 0, "Width": 0, "Height": 0, "BatchSize": 0, "UseMainModelVAE": False, "ControlNetList": None,
    "Image2Image": None, "ImageAndMaskList": None, "Tileable": False,
}  # fmt: skip


def test_a_go_struct_with_zero_values_and_nulls_is_the_default_request(gateway, redis_client):
    job = accepted_job(gateway, redis_client, GO_TXT2IMG)
    assert (job["clip_skip"], job["seed"], job["cfg_scale"], job["steps"]) == (1, 0, 0, 4)
    assert job["controlnets"] == [] and job["loras"] == [] and job["init_image"] is None
    assert (job["width"], job["height"], job["negative_prompt"]) == (64, 64, "")


def test_zero_valued_unit_fields_take_their_defaults(gateway, redis_client, catalog):
    body = img2img(ControlNetParams=[GO_UNIT], EnableControlNet=True, ClipSkip=0)
    (unit,) = accepted_job(gateway, redis_client, body)["controlnets"]
    assert (unit["start"], unit["end"], unit["weight"]) == (0.0, 1.0, 0.0)  # a 0/0 window is the whole run
    assert (unit["mode"], unit["resize_mode"], unit["preprocessor"]) == ("Balanced", "JustResize", "none")
    assert unit["detect_resolution"] == catalog.preprocessor(1).default_resolution


def test_a_preset_unit_reads_only_its_image_and_weight(gateway, redis_client, catalog):
    preset = GO_UNIT | {"ControlPreSetId": 2, "ControlWeight": 1.5, "ModelId": 999, "ControlMode": "Sideways",
                        "StartingControlStep": 7, "Param1Value": -5}  # fmt: skip
    (unit,) = accepted_job(gateway, redis_client, img2img(ControlNetParams=[preset]))["controlnets"]
    expected = catalog.preset(2)
    assert unit["controlnet_id"] == expected.controlnet and unit["weight"] == 1.5
    assert unit["preprocessor"] == catalog.preprocessor(expected.preprocessor).detector


def test_units_are_not_read_when_controlnet_is_disabled(gateway, redis_client):
    broken = {"ControlNetImg": "not base64 at all", "ControlPreSetId": "9", "ModelId": "x"}
    job = accepted_job(gateway, redis_client, txt2img(EnableControlNet=False, ControlNetParams=[broken]))
    assert job["controlnets"] == []


def test_java_clients_extra_fields_are_ignored_and_counted(gateway, redis_client):
    body = txt2img(ClientVersion="3.1.4", Extra={"trace": 1}, SubModelParams=[{"SubModelId": 1, "Note": "x"}],
                   SubModelIds=[1])  # fmt: skip
    job = accepted_job(gateway, redis_client, body)
    assert [lora["lora_id"] for lora in job["loras"]] == [1]
    scrape = httpx.get(f"{gateway.url}/metrics").text
    for field in ("ClientVersion", "Extra", "SubModelParams.Note"):
        assert f'openpik_ignored_fields_total{{action="GenerateTxt2Img",field="{field}"}}' in scrape


def test_integral_floats_are_integers(gateway, redis_client):
    job = accepted_job(gateway, redis_client, txt2img(Steps=4.0, MainModelId=1.0, BatchSize=2.0, Width=64.0))
    assert (job["steps"], job["batch_size"], job["width"]) == (4, 2, 64)
    refused = gateway.call(txt2img(Steps=4.5))
    assert refused["RetCode"] == 230 and refused["Message"].startswith("Steps:")


def test_reference_fields_on_txt2img_are_not_read(gateway, redis_client):
    job = accepted_job(gateway, redis_client, txt2img(ReferenceImage="garbage", ReferenceScale=7))
    assert job["init_image"] is None


def test_generate_images_zero_values_take_the_models_defaults(gateway, redis_client, catalog):
    job = accepted_job(gateway, redis_client, GO_IMAGES)
    model = catalog.main_model(2)
    assert (job["width"], job["height"]) == model.size
    assert (job["steps"], job["sampler"], job["cfg_scale"]) == (
        model.defaults.steps, model.defaults.sampler, model.defaults.cfg_scale
    )  # fmt: skip
    assert (job["batch_size"], job["seed"], job["clip_skip"]) == (1, 0, model.defaults.clip_skip)


def test_generate_images_units_default_to_resize_and_fill_and_no_preprocessor(gateway, redis_client, catalog):
    body = GO_IMAGES | {
        "ImageAndMaskList": [PNG, PNG],
        "Image2Image": {"ImageIndex": 1, "ReferStrength": 0.25, "ResizeMode": ""},
        "ControlNetList": [{"ControlModel": {"ModelCode": catalog.controlnet(1).model_code}, "ImageIndex": 0}],
    }
    job = accepted_job(gateway, redis_client, body)
    (unit,) = job["controlnets"]
    assert (unit["resize_mode"], unit["preprocessor"], unit["start"], unit["end"]) == (
        "ResizeAndFill", "none", 0.0, 1.0
    )  # fmt: skip
    assert job["init_resize_mode"] == "ResizeAndFill" and job["strength"] == pytest.approx(0.75)


# --- bodies built from the catalog actions' answers ---------------------------------------


def test_objects_from_list_models_and_list_controlnets_are_sent_back_as_they_are(gateway, redis_client, catalog):
    models = gateway.call({"Action": "ListModels"})
    controlnets = gateway.call({"Action": "ListControlNets"})
    main = models["MainModels"]["tiny-sd15-a"]
    lora = models["LoraModels"]["tiny-lora-style"]
    control = controlnets["ControlModels"][catalog.controlnet(1).model_code]
    canny = controlnets["PreProcessors"]["canny"]
    body = {
        "Action": "GenerateImages", "MainModel": main, "SubModelList": [lora], "PositivePrompts": ["an apple"],
        "TranslatePrompts": False, "ImageAndMaskList": [PNG],
        "ControlNetList": [{"ControlModel": control, "PreProcessor": canny, "ImageIndex": 0}],
    }  # fmt: skip
    job = accepted_job(gateway, redis_client, body)
    (unit,) = job["controlnets"]
    assert unit["preprocessor"] == "canny" and unit["preprocessor_params"] == {
        "low_threshold": canny["InferenceParams"]["CannyLowThreshold"],
        "high_threshold": canny["InferenceParams"]["CannyHighThreshold"],
    }
    assert job["model"]["model_id"] == main["Id"] and job["steps"] == main["InferenceParams"]["Steps"]
    assert [(r["lora_id"], r["weight"]) for r in job["loras"]] == [(lora["Id"], lora["InferenceParams"]["LoraWeight"])]


def test_inference_params_of_another_parent_type_are_not_read(gateway, redis_client):
    shared = {"Steps": 3, "LoraWeight": 0.5, "ControlWeight": 9, "Resolution": 1}  # one struct for every parent
    body = GO_IMAGES | {"MainModel": {"ModelCode": "tiny-sd15-a", "InferenceParams": shared}}
    assert accepted_job(gateway, redis_client, body)["steps"] == 3


# --- images and signatures as clients produce them ----------------------------------------


def wrapped(data: str, width: int = 76, newline: str = "\n") -> str:
    return newline.join(data[i : i + width] for i in range(0, len(data), width))


@pytest.mark.parametrize(
    "encode",
    [
        lambda b64: wrapped(b64),
        lambda b64: wrapped(b64, 64, "\r\n"),
        lambda b64: b64.rstrip("="),
        lambda b64: b64.replace("+", "-").replace("/", "_"),
        lambda b64: "data:image/png;base64," + wrapped(b64),
    ],
    ids=["base64-76", "openssl-crlf", "unpadded", "url-safe", "data-url-wrapped"],
)
def test_base64_as_tools_write_it_stores_the_same_image(gateway, redis_client, encode):
    image = png_base64((40, 24), seed=3)
    answer = gateway.call(img2img(ReferenceImage=encode(image)))
    assert answer["RetCode"] == 0, answer
    stored = redis_client.get(image_key(answer["TaskUID"], "init"))
    assert stored == base64.b64decode(image)


def test_an_exif_rotated_jpeg_reaches_the_worker_upright(gateway, redis_client):
    pixels = Image.new("RGB", (48, 16), "white")
    pixels.paste((255, 0, 0), (0, 0, 16, 16))  # red on the left, as the camera sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    pixels.save(buffer, "JPEG", exif=exif, quality=95)
    answer = gateway.call(img2img(ReferenceImage=base64.b64encode(buffer.getvalue()).decode()))
    assert answer["RetCode"] == 0, answer
    upright = open_stored_image(redis_client.get(image_key(answer["TaskUID"], "init"))).convert("RGB")
    assert upright.size == (16, 48)
    top, bottom = upright.getpixel((8, 4)), upright.getpixel((8, 44))
    assert top[0] > 200 > top[1] and bottom == pytest.approx((255, 255, 255), abs=20)


def signature_over(body: dict, rendering: str) -> str:
    """SHA1 of the string to sign with ReferenceScale written as an SDK writes it."""
    canonical = string_to_sign(body, KEY_A.private)
    text = canonical.replace("ReferenceScale0.00005", f"ReferenceScale{rendering}")
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.mark.parametrize("rendering", ["0.00005", "5e-05"], ids=["canonical", "python-and-go-sdk"])
def test_sdk_float_renderings_and_upper_case_hex_verify(gateway, redis_client, rendering):
    body = {"PublicKey": KEY_A.public} | img2img(ReferenceScale=0.00005)
    body[SIGNATURE_FIELD] = signature_over(body, rendering).upper()
    answer = gateway.post(body).json()
    assert answer["RetCode"] == 0, answer


# --- request_uuid -------------------------------------------------------------------------


def test_a_retry_within_the_window_is_one_task_and_anything_else_a_new_one(gateway, redis_client):
    first = gateway.call(txt2img(request_uuid="u-1"))["TaskUID"]
    assert gateway.call(txt2img(request_uuid="u-1"))["TaskUID"] == first
    changed = gateway.call(txt2img(request_uuid="u-1", Seed=2))["TaskUID"]
    assert changed != first and redis_client.exists(record_key(changed))
    time.sleep(WINDOW_S + 0.5)
    later = gateway.call(txt2img(request_uuid="u-1", Seed=2))["TaskUID"]
    assert later not in (first, changed) and redis_client.exists(record_key(later))


# --- the strict setting --------------------------------------------------------------------


def test_strict_fields_restores_230_naming_the_field(tiny_catalog_path, tmp_path):
    env = stack_settings(tiny_catalog_path, tmp_path, RedisDb.DROP_IN, strict_fields="true")
    with running_stack(env, tmp_path, flush=False) as stack:
        depth = open_redis(RedisDb.DROP_IN).llen(DEFAULT_QUEUE)
        answer = stack.gateway.call(txt2img(ControlNetParams=[GO_UNIT | {"Colour": "red"}]))
        assert answer["RetCode"] == 230
        assert answer["Message"].startswith("ControlNetParams[0].Colour: unknown field")
        assert open_redis(RedisDb.DROP_IN).llen(DEFAULT_QUEUE) == depth


def test_a_request_mixing_model_families_is_230_and_queues_nothing(gateway, redis_client):
    body = {
        "Action": "GenerateImages",
        "MainModel": {"ModelCode": "tiny-sdxl-a"},
        "SubModelList": [{"ModelCode": "tiny-lora-ink"}],
        "PositivePrompts": ["an apple"],
    }
    queued, stored = redis_client.llen(DEFAULT_QUEUE), redis_client.dbsize()
    refused = gateway.call(body)
    assert refused["RetCode"] == 230
    assert refused["Message"].startswith("SubModelList[0].ModelCode: tiny-lora-ink is an sd15 model")
    assert (redis_client.llen(DEFAULT_QUEUE), redis_client.dbsize()) == (queued, stored)
    assert (
        accepted_job(gateway, redis_client, body | {"SubModelList": [{"ModelCode": "tiny-sdxl-lora-kohya"}]})["model"][
            "architecture"
        ]
        == "sdxl"
    )


# --- the round trip through a real worker ------------------------------------------------


def test_list_models_then_generate_images_finishes_with_the_models_native_size(live_stack, catalog):
    main = live_stack.call({"Action": "ListModels"})["MainModels"]["tiny-sd15-a"]
    body = {"Action": "GenerateImages", "MainModel": main, "PositivePrompts": ["an apple"], "TranslatePrompts": False}
    task = live_stack.call(body)["TaskUID"]
    query = {"Action": "ListTasksDetails", "TaskUIDList": [task]}
    detail = wait_for(lambda: (d := live_stack.call(query)["TaskDetailList"][0])["Status"] in ENDED_STATUSES and d,
                      120, message="the task")  # fmt: skip
    assert detail["Status"] == "Finished" and len(detail["ImgList"]) == 1
    image = Image.open(io.BytesIO(httpx.get(detail["ImgList"][0]).content))
    assert image.size == (main["Width"], main["Height"]) == catalog.main_model(1).size
