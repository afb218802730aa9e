"""The gateway through a real uvicorn server and a real Redis: RetCodes, ranges, queries."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import httpx
import pytest
from PIL import ExifTags, Image

from openpik.images import open_stored_image
from openpik.routing import DEFAULT_QUEUE
from openpik.task_records import idempotency_key, image_key, record_key
from tests.requests import PNG, custom_unit, img2img, txt2img
from tests.stack import (
    DISABLED,
    KEY_A,
    KEY_B,
    REPO,
    RedisDb,
    redis_fixture,
    redis_url,
    running_stack,
    signed,
    stack_settings,
    write_catalog_with_custom_model,
    write_keys_file,
)

pytestmark = [pytest.mark.stack, pytest.mark.models]

redis_client = redis_fixture(RedisDb.GATEWAY)


@pytest.fixture(scope="module")
def gateway(tiny_catalog_path, tmp_path_factory, redis_client):
    tmp = tmp_path_factory.mktemp("gateway")
    catalog = write_catalog_with_custom_model(tiny_catalog_path, tmp / "catalog.yaml", KEY_A.public)
    with running_stack(stack_settings(catalog, tmp, RedisDb.GATEWAY, max_body_bytes=str(2 * 2**20)), tmp) as stack:
        yield stack.gateway


def queue_state(redis_client) -> tuple[int, int]:
    """(messages in the Celery queue, task records): what must not move on a rejected request."""
    return redis_client.llen(DEFAULT_QUEUE), len(redis_client.keys(record_key("*")))


# --- import and envelope -----------------------------------------------------------------


def test_the_app_imports_without_torch():
    code = "import sys, api.app; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "OPENPIK_KEYS_FILE": "/nonexistent"},
    )
    assert out.stdout.split() == ["False", "False"]


def test_accepted_generate_returns_a_task_uid_and_echoes_the_envelope(gateway, redis_client):
    answer = gateway.call(txt2img(request_uuid="echo-1"))
    assert answer["RetCode"] == 0 and answer["Message"] == "" and answer["Action"] == "GenerateTxt2Img"
    assert answer["request_uuid"] == "echo-1"
    assert len(answer["TaskUID"]) == 20 and set(answer["TaskUID"]) <= set("0123456789abcdefghijklmnopqrstuv")
    assert redis_client.exists(record_key(answer["TaskUID"]))


@pytest.mark.parametrize(
    ("body", "retcode"),
    [
        ({"PublicKey": KEY_A.public}, 160),
        ({"Action": "", "PublicKey": KEY_A.public}, 160),
        ({"Action": "RemoveWatermark"}, 161),
        ({"Action": "StartPicpikApp"}, 161),
    ],
)
def test_missing_and_unsupported_actions(gateway, body, retcode):
    assert gateway.call(body)["RetCode"] == retcode


@pytest.mark.parametrize(
    ("mutate", "retcode"),
    [
        (lambda b: {k: v for k, v in b.items() if k != "Signature"}, 170),
        (lambda b: b | {"Signature": "0" * 40}, 171),
        (lambda b: b | {"Steps": 5}, 171),  # any change after signing
        (lambda b: {k: v for k, v in b.items() if k != "PublicKey"}, 172),
        (lambda b: b | {"PublicKey": "nobody"}, 173),
    ],
)
def test_signature_retcodes(gateway, redis_client, mutate, retcode):
    before = queue_state(redis_client)
    assert gateway.post(mutate(signed(txt2img()))).json()["RetCode"] == retcode
    assert queue_state(redis_client) == before


def test_a_disabled_key_is_refused(gateway):
    assert gateway.call(txt2img(), key=DISABLED)["RetCode"] == 173


def test_a_signed_timestamp_outside_the_window_is_refused(gateway):
    import time

    assert gateway.call(txt2img(Timestamp=int(time.time())))["RetCode"] == 0
    assert gateway.call(txt2img(Timestamp=int(time.time()) - 301))["RetCode"] == 174


# --- ranges: just inside is accepted, just outside names the field -------------------------

BOUNDS = [
    ("BatchSize", 1, 0),
    ("BatchSize", 16, 17),
    ("Steps", 1, 0),
    ("Steps", 150, 151),
    ("CfgScale", 0, -0.5),
    ("CfgScale", 30, 30.5),
    ("Seed", -1, -2),
    ("Seed", 2**32 - 1, 2**32),
    ("Width", 16, 15),
    ("Width", 1440, 1441),
    ("Height", 16, 15),
    ("Height", 1440, 1441),
    ("ClipSkip", 1, -1),
    ("ClipSkip", 12, 13),
    ("ReferenceScale", 0, -0.01),
    ("ReferenceScale", 1, 1.01),
]


@pytest.mark.parametrize(("field", "inside", "outside"), BOUNDS)
def test_range_bounds(gateway, redis_client, field, inside, outside):
    assert gateway.call(img2img(**{field: inside}))["RetCode"] == 0
    before = queue_state(redis_client)
    answer = gateway.call(img2img(**{field: outside}))
    assert answer["RetCode"] == 230 and answer["Message"].startswith(f"{field}:")
    assert queue_state(redis_client) == before


@pytest.mark.parametrize(
    ("unit_fields", "where"),
    [
        ({"ControlWeight": 2.01}, "ControlNetParams[0].ControlWeight"),
        ({"ControlWeight": -0.01}, "ControlNetParams[0].ControlWeight"),
        ({"StartingControlStep": 1.01}, "ControlNetParams[0].StartingControlStep"),
        ({"EndingControlStep": -0.1}, "ControlNetParams[0].EndingControlStep"),
        ({"StartingControlStep": 0.6, "EndingControlStep": 0.5}, "ControlNetParams[0].StartingControlStep"),
        ({"ControlMode": "Loud"}, "ControlNetParams[0].ControlMode"),
        ({"ResizeMode": "Squash"}, "ControlNetParams[0].ResizeMode"),
        ({"ControlPreSetId": 5}, "ControlNetParams[0].ControlPreSetId"),
        ({"Param1Value": 0}, "ControlNetParams[0].Param1Value"),
        ({"Param2Value": 256}, "ControlNetParams[0].Param2Value"),
        ({"ModelId": 99}, "ControlNetParams[0].ModelId"),
        ({"PreProcessorId": 99}, "ControlNetParams[0].PreProcessorId"),
        ({"ControlNetImg": ""}, "ControlNetParams[0].ControlNetImg"),
    ],
)
def test_controlnet_unit_rules_name_the_field(gateway, unit_fields, where):
    answer = gateway.call(txt2img(EnableControlNet=True, ControlNetParams=[custom_unit(**unit_fields)]))
    assert answer["RetCode"] == 230 and answer["Message"].startswith(where), answer["Message"]


def test_three_units_are_accepted_and_four_refused(gateway):
    assert gateway.call(txt2img(EnableControlNet=True, ControlNetParams=[custom_unit()] * 3))["RetCode"] == 0
    answer = gateway.call(txt2img(EnableControlNet=True, ControlNetParams=[custom_unit()] * 4))
    assert answer["RetCode"] == 230 and answer["Message"].startswith("ControlNetParams:")


def test_a_preset_needs_only_image_and_weight(gateway):
    preset = {"ControlPreSetId": 2, "ControlWeight": 1.5, "ControlNetImg": PNG}
    assert gateway.call(img2img(EnableControlNet=True, ControlNetParams=[preset]))["RetCode"] == 0
    as_string = preset | {"ControlPreSetId": "3"}
    assert gateway.call(img2img(EnableControlNet=True, ControlNetParams=[as_string]))["RetCode"] == 0


def test_a_custom_unit_needs_its_model_and_preprocessor(gateway):
    unit = {"ControlPreSetId": 0, "ControlWeight": 1, "ControlNetImg": PNG}
    answer = gateway.call(txt2img(EnableControlNet=True, ControlNetParams=[unit]))
    assert answer["RetCode"] == 230 and answer["Message"].startswith("ControlNetParams[0].ModelId")
    answer = gateway.call(txt2img(EnableControlNet=True, ControlNetParams=[unit | {"ModelId": 1}]))
    assert answer["RetCode"] == 230 and answer["Message"].startswith("ControlNetParams[0].PreProcessorId")
    none = unit | {"ModelId": 1, "PreProcessorId": "none"}
    assert gateway.call(txt2img(EnableControlNet=True, ControlNetParams=[none]))["RetCode"] == 0


def test_controlnet_params_are_ignored_when_not_enabled(gateway):
    broken = custom_unit(ModelId=99)
    assert gateway.call(txt2img(EnableControlNet=False, ControlNetParams=[broken]))["RetCode"] == 0


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"Steps": "20"}, "Steps:"),
        ({"Steps": 20.5}, "Steps:"),
        ({"TranslatePrompt": "yes"}, "TranslatePrompt:"),
        ({"Sampler": "DPM fast"}, "Sampler: Sampler 'DPM fast'"),
        ({"Sampler": "Nope"}, "Sampler: Unknown sampler 'Nope'"),
        ({"MainModelId": 42}, "MainModelId: no combined_model with id 42"),
        ({"SubModelIds": [99]}, "SubModelIds[0]: no LoRA with id 99"),
        (
            {"SubModelIds": [1], "SubModelParams": [{"SubModelId": 1, "ControlWeight": 2.5}]},
            "SubModelParams[0].ControlWeight:",
        ),
        (
            {"SubModelIds": [1], "SubModelParams": [{"SubModelId": 2, "ControlWeight": 1}]},
            "SubModelParams[0].SubModelId: 2 is not in SubModelIds",
        ),
        ({"ModelType": "public_model"}, "ModelType:"),
    ],
)
def test_bad_fields_get_230_naming_the_field(gateway, redis_client, fields, where):
    before = queue_state(redis_client)
    answer = gateway.call(txt2img(**fields))
    assert answer["RetCode"] == 230 and answer["Message"].startswith(where), answer["Message"]
    assert queue_state(redis_client) == before


def test_lora_weights_within_range_are_accepted(gateway):
    for weight in (-1, 2):
        params = [{"SubModelId": 1, "ControlWeight": weight}]
        assert gateway.call(txt2img(SubModelIds=[1, 2], SubModelParams=params))["RetCode"] == 0


# --- ModelType scoping --------------------------------------------------------------------


def test_custom_models_are_visible_to_their_owner_only(gateway):
    assert gateway.call(txt2img(ModelType="custom_model", MainModelId=10), key=KEY_A)["RetCode"] == 0
    assert gateway.call(txt2img(ModelType="custom_model", MainModelId=10), key=KEY_B)["RetCode"] == 230
    assert gateway.call(txt2img(ModelType="combined_model", MainModelId=10), key=KEY_A)["RetCode"] == 230
    assert gateway.call(txt2img(ModelType="custom_model", MainModelId=1), key=KEY_A)["RetCode"] == 230
    ids_a = {m["Id"] for m in gateway.call({"Action": "ListModels"}, key=KEY_A)["MainModels"].values()}
    ids_b = {m["Id"] for m in gateway.call({"Action": "ListModels"}, key=KEY_B)["MainModels"].values()}
    assert 10 in ids_a and 10 not in ids_b and 1 in ids_b


# --- idempotency --------------------------------------------------------------------------


def test_request_uuid_replays_return_the_same_task(gateway, redis_client):
    first = gateway.call(txt2img(request_uuid="idem-1"))
    records = len(redis_client.keys(record_key("*")))
    again = gateway.call(txt2img(request_uuid="idem-1"))
    assert first["RetCode"] == again["RetCode"] == 0 and first["TaskUID"] == again["TaskUID"]
    assert len(redis_client.keys(record_key("*"))) == records
    assert redis_client.exists(idempotency_key(KEY_A.public, "idem-1"))
    assert gateway.call(txt2img(request_uuid="idem-1"), key=KEY_B)["TaskUID"] != first["TaskUID"]


def test_a_reused_request_uuid_with_other_parameters_is_a_new_task(gateway, redis_client):
    first = gateway.call(txt2img(request_uuid="constant"))
    other = gateway.call(txt2img(request_uuid="constant", Steps=5))
    assert other["RetCode"] == 0 and other["TaskUID"] != first["TaskUID"]
    assert gateway.call(txt2img(request_uuid="constant", Steps=5))["TaskUID"] == other["TaskUID"]
    assert redis_client.exists(record_key(first["TaskUID"])) and redis_client.exists(record_key(other["TaskUID"]))


def test_the_envelope_echoes_request_uuid_only_when_one_was_sent(gateway):
    assert "request_uuid" not in gateway.call(txt2img())
    assert "request_uuid" not in gateway.call({"Action": "NoSuchAction"})


# --- queries ------------------------------------------------------------------------------


def test_queries_show_a_queued_task_in_each_documented_shape(gateway):
    task = gateway.call(txt2img(Seed=77))["TaskUID"]
    detail = gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task})
    assert detail["RetCode"] == 0 and detail["TaskType"] == "TaskGeneratePicture"
    assert detail["TaskStatus"] == "Queuing" and detail["FinalPictureUrls"] == [] and detail["TaskErrorCode"] == 0
    assert detail["QueuePosition"] >= 1 and detail["Progress"] == 0
    legacy = gateway.call({"Action": "ListGenerateTaskDetail", "TaskUIDs": [task]})["TaskDetailList"]
    assert legacy[0]["TaskUid"] == task and legacy[0]["TaskStatus"] == "Queuing"
    current = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [task]})["TaskDetailList"][0]
    assert current["TaskUID"] == task and current["Status"] == "Queuing" and current["Action"] == "GenerateTxt2Img"
    assert current["ErrorMassage"] == current["ErrorMessage"] == "" and current["TxtList"] == []


def test_foreign_and_unknown_task_ids_answer_the_same_250(gateway):
    task = gateway.call(txt2img())["TaskUID"]
    foreign = gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task}, key=KEY_B)
    unknown = gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": "0" * 20}, key=KEY_B)
    assert foreign["RetCode"] == unknown["RetCode"] == 250
    assert gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [task]}, key=KEY_B)["RetCode"] == 250


# --- catalog actions ----------------------------------------------------------------------


def test_catalog_actions(gateway):
    models = gateway.call({"Action": "ListModels"})
    assert 1 in {m["Id"] for m in models["MainModels"].values()}
    assert {1, 2} <= {m["Id"] for m in models["LoraModels"].values()}
    controlnets = gateway.call({"Action": "ListControlNets"})["ControlModels"]
    assert [c["Id"] for c in controlnets.values()][:2] == [1, 2]
    processors = gateway.call({"Action": "ListControlNetProcessor"})
    assert processors["ControlNetProcessorList"] == processors["ControlNetPreProcessorList"]
    canny = next(p for p in processors["ControlNetProcessorList"] if p["Id"] == 2)
    assert canny["ModelCode"] == "canny" and canny["HasResolution"] and len(canny["Params"]) == 2
    assert {"ParamName", "ParamDefaultValue", "MiniMum", "MaxiMum", "Step"} == set(canny["Params"][0])
    assert [p["Id"] for p in processors["PresetList"]] == [1, 2, 3, 4]


# --- the current action -------------------------------------------------------------------


def test_generate_images_with_lora_controlnet_and_img2img(gateway):
    body = {
        "Action": "GenerateImages",
        "MainModel": {"ModelCode": "tiny-sd15-a", "InferenceParams": {"Steps": 4, "Sampler": "DPM++ 2M Karras"}},
        "SubModelList": [{"ModelCode": "tiny-lora-style", "InferenceParams": {"LoraWeight": 0.7}}],
        "PositivePrompts": ["an apple"],
        "Width": 64,
        "Height": 64,
        "ImageAndMaskList": [PNG, PNG],
        "ControlNetList": [
            {
                "ControlModel": {"ModelCode": "control_v11p_sd15_canny"},
                "PreProcessor": {"ModelCode": "canny", "InferenceParams": {"CannyLowThreshold": 50}},
                "ImageIndex": 1,
            }
        ],
        "Image2Image": {"ImageIndex": 0, "ReferStrength": 0.4},
    }
    assert gateway.call(body)["RetCode"] == 0
    bad = body | {"ControlNetList": [body["ControlNetList"][0] | {"ImageIndex": 5}]}
    assert gateway.call(bad)["Message"].startswith("ControlNetList[0].ImageIndex: 5 is outside ImageAndMaskList")
    unknown_param = json.loads(json.dumps(body))
    unknown_param["ControlNetList"][0]["PreProcessor"]["InferenceParams"]["Loudness"] = 3
    assert gateway.call(unknown_param)["RetCode"] == 0  # another preprocessor's parameter: not read


# --- results and health -------------------------------------------------------------------


def test_result_files_are_served_as_png_with_nosniff(gateway, redis_client):
    task = "a" * 20
    folder = gateway.env["OPENPIK_RESULTS_DIR"]
    import pathlib

    path = pathlib.Path(folder) / task
    path.mkdir(parents=True, exist_ok=True)
    (path / "0.png").write_bytes(base64.b64decode(PNG))
    redis_client.hset(record_key(task), "results", json.dumps([f"{task}/0.png"]))  # served while a record lists it
    found = httpx.get(f"{gateway.url}/results/{task}/0.png")
    assert found.status_code == 200 and found.headers["content-type"] == "image/png"
    assert found.headers["x-content-type-options"] == "nosniff" and found.content == base64.b64decode(PNG)
    for missing in (f"/results/{task}/1.png", "/results/unknown/0.png", f"/results/{task}/..%2F..%2Fkeys.yaml"):
        assert httpx.get(f"{gateway.url}{missing}").status_code == 404


def test_health_and_readiness(gateway):
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200


def test_redis_unreachable_answers_503_with_150(tiny_catalog_path, tmp_path):
    env = {
        "OPENPIK_REDIS_URL": redis_url(0, port=1),
        "OPENPIK_CATALOG": str(tiny_catalog_path),  # nothing on port 1
        "OPENPIK_KEYS_FILE": str(write_keys_file(tmp_path / "keys.yaml")),
    }
    with running_stack(env, tmp_path, flush=False) as stack:
        server = stack.gateway
        response = server.post(signed(txt2img()))
        assert response.status_code == 503 and response.json()["RetCode"] == 150
        query = server.post(signed({"Action": "GetGenerateTaskDetail", "TaskUID": "0" * 20}))
        assert query.status_code == 503 and query.json()["RetCode"] == 150
        assert httpx.get(f"{server.url}/readyz").status_code == 503


# --- OpenAPI ------------------------------------------------------------------------------


def test_openapi_describes_every_action_body(gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    schema = spec["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["discriminator"]["mapping"]) == {
        "GenerateImg2Img",
        "GenerateTxt2Img",
        "GenerateImages",
        "RemoveBackground",
        "RemoveBackgroundsInBatch",
        "RemoveContents",
        "GenerateBackgrounds",
        "GetGenerateTaskDetail",
        "ListGenerateTaskDetail",
        "ListTasksDetails",
        "CancelTask",
        "ListModels",
        "ListControlNets",
        "ListControlNetProcessor",
    }
    img2img_schema = spec["components"]["schemas"]["GenerateImg2ImgRequest"]
    assert img2img_schema["properties"]["Steps"]["maximum"] == 150
    assert img2img_schema["additionalProperties"] is True  # unknown fields are ignored (spec section 0)


# --- malformed bodies: a 4xx or a RetCode, never a 5xx, nothing queued ------------------------


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode()


BAD_IMAGES = {
    "bad base64": "not*base64!",
    "base64 with non-ASCII": PNG[:20] + "é" + PNG[21:],
    "non-image bytes": base64.b64encode(b"hello, this is text").decode(),
    "PNG header claiming 100000x100000": base64.b64encode(_png_header(100_000, 100_000)).decode(),
    "URL": "https://example.com/photo.png",
    "TIFF disguised as PNG": "data:image/png;base64," + _encoded(Image.new("RGB", (8, 8)), "TIFF"),
    "EPS disguised as PNG": "data:image/png;base64,"
    + base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n").decode(),
}

RAW_BODIES = {
    "invalid JSON": b'{"Action": "GenerateTxt2Img",',
    "invalid UTF-8": b'{"Action": "GenerateTxt2Img", "X": "\xff\xfe"}',
    "top level array": b'[{"Action": "ListModels"}]',
    "NaN": b'{"Action": "GenerateTxt2Img", "CfgScale": NaN}',
    "Infinity": b'{"Action": "GenerateTxt2Img", "CfgScale": Infinity}',
    "1e309": b'{"Action": "GenerateTxt2Img", "CfgScale": 1e309}',
    "deep nesting": b'{"Action": "ListModels", "X": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "duplicate keys": b'{"Action": "ListModels", "Action": "GenerateTxt2Img"}',
    "oversize body": b'{"Action": "ListModels", "X": "' + b"a" * (3 * 2**20) + b'"}',
}


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_malformed_bodies_are_refused_without_queueing(gateway, redis_client, name):
    before = queue_state(redis_client)
    response = gateway.post(RAW_BODIES[name])
    assert 400 <= response.status_code < 500, response.status_code
    assert response.json()["RetCode"] == 230
    assert queue_state(redis_client) == before


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_are_refused_naming_the_field(gateway, redis_client, name):
    before = queue_state(redis_client)
    for body, field in (
        (img2img(ReferenceImage=BAD_IMAGES[name]), "ReferenceImage"),
        (txt2img(ControlNetParams=[custom_unit(ControlNetImg=BAD_IMAGES[name])]), "ControlNetParams[0].ControlNetImg"),
    ):
        response = gateway.post(signed(body))
        assert response.status_code == 200
        assert response.json()["RetCode"] == 230 and response.json()["Message"].startswith(field)
    assert queue_state(redis_client) == before


def _animated_gif() -> bytes:
    """Two frames, red then blue: accepted, and the worker uses the red one."""
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _phone_photo() -> bytes:
    """A 48x32 JPEG whose EXIF orientation (6) says: turn it 90 degrees clockwise to view it."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), "gray").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_images_as_real_clients_send_them_are_accepted_and_stored_as_sent(gateway, redis_client):
    """A phone photo in MIME-wrapped (CRLF) base64 behind a data: URL; an animated GIF in unpadded base64url."""
    photo, gif = _phone_photo(), _animated_gif()
    wrapped = base64.encodebytes(photo).decode().replace("\n", "\r\n")
    body = img2img(
        ReferenceImage="data:image/jpeg;base64,\r\n" + wrapped,
        EnableControlNet=True,
        ControlNetParams=[custom_unit(ControlNetImg=base64.urlsafe_b64encode(gif).decode().rstrip("="))],
    )
    answer = gateway.call(body)
    assert answer["RetCode"] == 0, answer["Message"]
    stored = redis_client.mget(redis_client.keys(image_key(answer["TaskUID"], "*")))
    assert sorted(stored) == sorted([photo, gif])
    assert open_stored_image(photo).size == (32, 48)
    assert open_stored_image(gif).convert("RGB").getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("example", ["picpik_img2img_example.json", "picpik_img2img_controlnet_example.json"])
def test_picpiks_own_request_examples_are_accepted(gateway, redis_client, example):
    """The examples of PICPIK's GenerateImg2Img page, comments removed, images filled in, signed."""
    body = json.loads((REPO / "tests" / "data" / example).read_text())
    body = {k: v for k, v in body.items() if k not in ("PublicKey", "Signature")} | {"ReferenceImage": PNG}
    body["request_uuid"] = f"{body['request_uuid'][:-4]}{len(example):04d}"  # both examples share one uuid
    for unit in body.get("ControlNetParams", []):
        unit["ControlNetImg"] = PNG
    answer = gateway.call(body)
    assert answer["RetCode"] == 0, answer["Message"]
    record = redis_client.hgetall(record_key(answer["TaskUID"]))
    assert record[b"status"] == b"Queuing" and record[b"action"] == b"GenerateImg2Img"


def generate_images(**fields) -> dict:
    return {"Action": "GenerateImages", "MainModel": {"ModelCode": "tiny-sd15-a"}, "Width": 64, "Height": 64} | fields


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"Seed": 2**31 - 1}, None),
        ({"Seed": 2**31}, "Seed:"),
        ({"Width": 64}, None),
        ({"Width": 63}, "Width:"),
        ({"Height": 2560}, None),
        ({"Height": 2561}, "Height:"),
        ({"BatchSize": 16}, None),
        ({"BatchSize": 17}, "BatchSize:"),
        ({"SubModelList": [{"ModelCode": "tiny-lora-ink", "InferenceParams": {"LoraWeight": -1}}]}, None),
        (
            {"SubModelList": [{"ModelCode": "tiny-lora-ink", "InferenceParams": {"LoraWeight": -1.1}}]},
            "SubModelList[0].InferenceParams.LoraWeight:",
        ),
        (
            {"MainModel": {"ModelCode": "tiny-sd15-a", "InferenceParams": {"Steps": 151}}},
            "MainModel.InferenceParams.Steps:",
        ),
        (
            {"ImageAndMaskList": [PNG], "Image2Image": {"ImageIndex": 0, "ReferStrength": 1.01}},
            "Image2Image.ReferStrength:",
        ),
        ({"MainModel": {"ModelCode": "my-own-model"}}, None),
    ],
)
def test_generate_images_bounds(gateway, fields, where):
    answer = gateway.call(generate_images(**fields))
    if where is None:
        assert answer["RetCode"] == 0, answer["Message"]
    else:
        assert answer["RetCode"] == 230 and answer["Message"].startswith(where), answer["Message"]


def test_generate_images_sees_custom_models_of_its_own_key_only(gateway):
    assert gateway.call(generate_images(MainModel={"ModelCode": "my-own-model"}), key=KEY_B)["RetCode"] == 230
