"""ListModels, ListControlNets and ListControlNetProcessor in PICPIK's documented shapes (spec 6).

The shapes are checked field by field, in-process, on the tiny catalog (read without its
files: listing needs none), against expectations written from the spec's text; then one
signed call per action goes through a real gateway and must answer the same.
"""

from __future__ import annotations

import pytest

from api.catalog import serving
from api.generate.protocol import GenerateImagesRequest
from api.generate.serving import translate_images
from api.protocol_base import unknown_fields
from models_registry.catalog import Catalog, ControlNet, Lora, MainModel, Preprocessor, load_catalog
from models_registry.tiny import DEFAULT_CATALOG, tiny_catalog_dict
from openpik import vocabulary as vocab
from openpik.settings import Settings
from tests.requests import PNG
from tests.stack import KEY_A, KEY_B

ENVELOPE = {"RetCode", "Action", "Message", "request_uuid"}
MODEL_FIELDS = ["Name", "ModelCode", "IsOfficial", "TriggerWordList", "InferenceParams", "Id", "BaseModel"]
CONTROL_DEFAULTS = {
    "ControlWeight": 1.0,
    "StartingStep": 0.0,
    "EndingStep": 1.0,
    "ControlMode": "Balanced",
    "ResizeMode": "ResizeAndFill",
}


@pytest.fixture(scope="module")
def tiny() -> Catalog:
    return Catalog.model_validate(tiny_catalog_dict(load_catalog(DEFAULT_CATALOG)))


@pytest.fixture(scope="module")
def owned(tiny) -> Catalog:
    """The tiny catalog plus a main model, a LoRA and a ControlNet that only KEY_A may use."""
    mine = {"owner": KEY_A.public}
    return tiny.model_copy(
        update={
            "main_models": [*tiny.main_models, tiny.main_models[0].model_copy(update=mine | _entry(10, "my-model"))],
            "loras": [*tiny.loras, tiny.loras[0].model_copy(update=mine | _entry(10, "my-lora"))],
            "controlnets": [*tiny.controlnets, tiny.controlnets[0].model_copy(update=mine | _entry(50, "my-cn"))],
        }
    )


def _entry(entry_id: int, code: str) -> dict[str, object]:
    return {"id": entry_id, "model_code": code, "name": code.title()}


def dump(response) -> dict:
    """What the gateway sends: the response as JSON values, without the envelope."""
    return {k: v for k, v in response.model_dump(mode="json").items() if k not in ENVELOPE}


# --- ListModels -----------------------------------------------------------------------------


def expected_main(model: MainModel) -> dict:
    d = model.defaults
    return {
        "Name": model.name,
        "ModelCode": model.model_code,
        "IsOfficial": model.owner is None,
        "TriggerWordList": [],
        "InferenceParams": {"Steps": d.steps, "Sampler": d.sampler, "CFGScale": d.cfg_scale, "ClipSkip": d.clip_skip},
        "Id": model.id,
        "BaseModel": model.architecture,
        "Width": d.width,
        "Height": d.height,
    }


def expected_lora(lora: Lora) -> dict:
    return {
        "Name": lora.name,
        "ModelCode": lora.model_code,
        "IsOfficial": lora.owner is None,
        "TriggerWordList": lora.trigger_words,
        "InferenceParams": {"LoraWeight": lora.default_weight},
        "Id": lora.id,
        "BaseModel": lora.architecture,
    }


def test_list_models_has_the_four_maps_keyed_by_model_code(tiny):
    answer = dump(serving.list_models(tiny, KEY_A.public))
    assert list(answer) == ["MainModels", "LoraModels", "EmbeddingModels", "HypernetworkModels"]
    assert answer["MainModels"] == {m.model_code: expected_main(m) for m in tiny.main_models}
    assert answer["LoraModels"] == {lo.model_code: expected_lora(lo) for lo in tiny.loras}
    assert answer["EmbeddingModels"] == answer["HypernetworkModels"] == {}


def test_a_main_model_and_a_lora_carry_exactly_the_documented_fields_and_types(tiny):
    answer = dump(serving.list_models(tiny, KEY_A.public))
    main = answer["MainModels"]["tiny-sd15-a"]
    assert list(main) == [*MODEL_FIELDS, "Width", "Height"]
    assert main == {
        "Name": "Tiny SD1.5 A",
        "ModelCode": "tiny-sd15-a",
        "IsOfficial": True,
        "TriggerWordList": [],
        "InferenceParams": {"Steps": 20, "Sampler": "Euler a", "CFGScale": 7.0, "ClipSkip": 1},
        "Id": 1,
        "BaseModel": "sd15",
        "Width": 64,
        "Height": 64,
    }
    params = main["InferenceParams"]
    assert [type(params[k]) for k in ("Steps", "Sampler", "CFGScale", "ClipSkip")] == [int, str, float, int]
    lora = answer["LoraModels"]["tiny-lora-style"]
    assert list(lora) == MODEL_FIELDS
    assert lora["TriggerWordList"] == ["style"] and lora["InferenceParams"] == {"LoraWeight": 1.0}
    assert (lora["Id"], lora["IsOfficial"], lora["BaseModel"]) == (1, True, "sd15")


def test_vaes_are_not_listed(tiny):
    assert tiny.vaes, "the tiny catalog has a VAE"
    answer = serving.list_models(tiny, KEY_A.public).model_dump_json()
    assert all(v.model_code not in answer for v in tiny.vaes)


def test_a_key_sees_its_own_custom_models_and_loras_and_no_one_elses(owned):
    mine = dump(serving.list_models(owned, KEY_A.public))
    assert mine["MainModels"]["my-model"]["IsOfficial"] is False and mine["MainModels"]["my-model"]["Id"] == 10
    assert mine["LoraModels"]["my-lora"] == expected_lora(owned.lora(10))
    assert mine["LoraModels"]["my-lora"]["IsOfficial"] is False
    theirs = dump(serving.list_models(owned, KEY_B.public))
    assert "my-model" not in theirs["MainModels"] and "my-lora" not in theirs["LoraModels"]
    assert set(theirs["MainModels"]) == {m.model_code for m in owned.main_models if m.owner is None}
    assert set(theirs["LoraModels"]) == {lo.model_code for lo in owned.loras if lo.owner is None}


# --- ListControlNets ------------------------------------------------------------------------


def expected_preprocessor_params(preprocessor: Preprocessor) -> dict:
    resolution = {"Resolution": preprocessor.default_resolution} if preprocessor.has_resolution else {}
    return resolution | {
        _camel(preprocessor.model_code) + _camel(p.name): _integral(p.default) for p in preprocessor.params
    }


def expected_control_model(controlnet: ControlNet) -> dict:
    return {
        "Name": controlnet.name,
        "ModelCode": controlnet.model_code,
        "InferenceParams": CONTROL_DEFAULTS,
        "Id": controlnet.id,
        "BaseModel": controlnet.architecture,
    }


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _integral(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def test_list_controlnets_has_preprocessors_and_control_models_keyed_by_model_code(tiny):
    answer = dump(serving.list_controlnets(tiny, KEY_A.public))
    assert list(answer) == ["PreProcessors", "ControlModels"]
    assert answer["PreProcessors"] == {
        p.model_code: {"Name": p.name, "ModelCode": p.model_code, "InferenceParams": expected_preprocessor_params(p)}
        for p in tiny.preprocessors
    }
    assert answer["ControlModels"] == {c.model_code: expected_control_model(c) for c in tiny.controlnets}


def test_canny_lists_its_resolution_and_thresholds_as_integers(tiny):
    canny = dump(serving.list_controlnets(tiny, KEY_A.public))["PreProcessors"]["canny"]
    assert canny == {
        "Name": "canny",
        "ModelCode": "canny",
        "InferenceParams": {"Resolution": 512, "CannyLowThreshold": 100, "CannyHighThreshold": 200},
    }
    assert all(type(v) is int for v in canny["InferenceParams"].values())


def test_a_preprocessor_without_resolution_lists_none_and_fractions_stay_fractions(tiny):
    preprocessors = dump(serving.list_controlnets(tiny, KEY_A.public))["PreProcessors"]
    assert preprocessors["none"]["InferenceParams"] == {}
    assert preprocessors["recolor_luminance"]["InferenceParams"] == {"RecolorLuminanceGammaCorrection": 1}
    assert preprocessors["mlsd"]["InferenceParams"] == {
        "Resolution": 512,
        "MlsdValueThreshold": 0.1,
        "MlsdDistanceThreshold": 0.1,
    }


def test_control_model_defaults_come_from_the_shared_vocabulary():
    assert CONTROL_DEFAULTS == {
        "ControlWeight": vocab.DEFAULT_CONTROL_WEIGHT,
        "StartingStep": vocab.DEFAULT_CONTROL_START,
        "EndingStep": vocab.DEFAULT_CONTROL_END,
        "ControlMode": vocab.DEFAULT_CONTROL_MODE,
        "ResizeMode": vocab.DEFAULT_RESIZE_MODE,
    }


def test_another_keys_controlnet_is_not_listed(owned):
    assert dump(serving.list_controlnets(owned, KEY_A.public))["ControlModels"]["my-cn"]["Id"] == 50
    assert "my-cn" not in dump(serving.list_controlnets(owned, KEY_B.public))["ControlModels"]
    assert 50 in {c["Id"] for c in dump(serving.list_processors(owned, KEY_A.public))["ModelList"]}
    assert 50 not in {c["Id"] for c in dump(serving.list_processors(owned, KEY_B.public))["ModelList"]}


# --- ListControlNetProcessor ----------------------------------------------------------------


def test_list_controlnet_processor_lists_under_both_names(tiny):
    answer = dump(serving.list_processors(tiny, KEY_A.public))
    assert list(answer) == ["ControlNetProcessorList", "ControlNetPreProcessorList", "ModelList", "PresetList"]
    assert answer["ControlNetProcessorList"] == answer["ControlNetPreProcessorList"]
    assert [p["Id"] for p in answer["ControlNetProcessorList"]] == [p.id for p in tiny.preprocessors]
    assert answer["ModelList"] == [
        {"Id": c.id, "Name": c.name, "ModelCode": c.model_code, "BaseModel": c.architecture} for c in tiny.controlnets
    ]
    assert answer["PresetList"] == [
        {"Id": p.id, "Name": p.name, "ModelId": p.controlnet, "PreProcessorId": p.preprocessor} for p in tiny.presets
    ]


def test_canny_processor_params_use_picpiks_spellings(tiny):
    processors = dump(serving.list_processors(tiny, KEY_A.public))["ControlNetProcessorList"]
    canny = next(p for p in processors if p["Id"] == 2)
    assert canny == {
        "Id": 2,
        "Name": "canny",
        "HasResolution": True,
        "Params": [
            {"ParamName": "Canny Low Threshold", "ParamDefaultValue": 100, "MiniMum": 1, "MaxiMum": 255, "Step": 1},
            {"ParamName": "Canny High Threshold", "ParamDefaultValue": 200, "MiniMum": 1, "MaxiMum": 255, "Step": 1},
        ],
        "ModelCode": "canny",
    }
    assert all(type(v) is int for param in canny["Params"] for k, v in param.items() if k != "ParamName")
    mlsd = next(p for p in processors if p["ModelCode"] == "mlsd")
    assert mlsd["Params"][0] == {
        "ParamName": "Mlsd Value Threshold",
        "ParamDefaultValue": 0.1,
        "MiniMum": 0.01,
        "MaxiMum": 2,
        "Step": 0.01,
    }


# --- the round trip: listed objects go back into GenerateImages as they are ----------------


def test_listed_objects_sent_back_in_generate_images_give_the_catalog_defaults(tiny):
    models = dump(serving.list_models(tiny, KEY_A.public))
    controlnets = dump(serving.list_controlnets(tiny, KEY_A.public))
    control_model = next(iter(controlnets["ControlModels"].values()))
    body = {
        "Action": "GenerateImages",
        "PublicKey": KEY_A.public,
        "Signature": "s",
        "MainModel": models["MainModels"]["tiny-sd15-b"],
        "SubModelList": [models["LoraModels"]["tiny-lora-ink"]],
        "ControlNetList": [
            {"ControlModel": control_model, "PreProcessor": controlnets["PreProcessors"]["canny"], "ImageIndex": 0}
        ],
        "ImageAndMaskList": [PNG],
    }
    request = GenerateImagesRequest.model_validate(body)
    assert unknown_fields(request) == []  # nothing listed counts as unknown, even with OPENPIK_STRICT_FIELDS
    job = translate_images(request, tiny, KEY_A.public, Settings()).job
    defaults = tiny.main_model(2).defaults
    assert (job.steps, job.sampler, job.cfg_scale, job.clip_skip) == (
        defaults.steps,
        defaults.sampler,
        defaults.cfg_scale,
        defaults.clip_skip,
    )
    assert (job.width, job.height) == tiny.main_model(2).size
    assert [(lo.lora_id, lo.weight) for lo in job.loras] == [(3, 1.0)]
    (unit,) = job.controlnets
    assert (unit.controlnet_id, unit.preprocessor, unit.detect_resolution) == (control_model["Id"], "canny", 512)
    assert unit.preprocessor_params == {"low_threshold": 100, "high_threshold": 200}
    assert (unit.weight, unit.start, unit.end, unit.mode, unit.resize_mode) == (
        1.0,
        0.0,
        1.0,
        "Balanced",
        "ResizeAndFill",
    )


# --- over HTTP ------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.models
@pytest.mark.parametrize(
    ("action", "list_"),
    [
        ("ListModels", serving.list_models),
        ("ListControlNets", serving.list_controlnets),
        ("ListControlNetProcessor", serving.list_processors),
    ],
)
def test_one_signed_call_answers_retcode_0_and_the_documented_shape(live_stack, catalog, action, list_):
    answer = live_stack.call({"Action": action}, key=KEY_A)
    assert (answer["RetCode"], answer["Action"], answer["Message"]) == (0, action, "")
    assert {k: v for k, v in answer.items() if k not in ENVELOPE} == dump(list_(catalog, KEY_A.public))
    if action == "ListControlNets":
        low = answer["PreProcessors"]["canny"]["InferenceParams"]["CannyLowThreshold"]
        assert type(low) is int and low == 100  # "100", not "100.0", in the JSON text
