"""SDXL end to end on the tiny SDXL models: the engine, the gateway's family rules, the stack.

The tiny catalog's SDXL entries: main models 11 and 12, LoRAs 11 (kohya) and 12 (peft), ControlNets 21-23.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from api.errors import InvalidParameter
from api.generate.protocol import GenerateImagesRequest, GenerateTxt2ImgRequest
from api.generate.serving import translate_images, translate_legacy
from models_registry.resolve import control_unit, model_ref
from openpik.families import FAMILIES
from openpik.settings import Settings
from openpik.vocabulary import ENDED_STATUSES
from tests.engine_helpers import pixels, run
from tests.requests import PNG, custom_unit, img2img, txt2img
from tests.stack import wait_for

pytestmark = pytest.mark.models

SDXL, SDXL_B = 11, 12
KOHYA, PEFT = 11, 12
CONTROLNETS = (21, 22, 23)
NONE_PRE = 1
SD15_LORA, SD15_CONTROLNET = 3, 1


def differ(a, b) -> bool:
    return bool(np.abs(pixels(a)[0] - pixels(b)[0]).max() > 3)


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(pixels(a), pixels(b), strict=True))


@pytest.fixture(scope="module")
def sdxl_job(make_job):
    def make(**fields):
        return make_job(**({"model_id": SDXL, "steps": 4} | fields))

    return make


@pytest.fixture(scope="module")
def units(catalog):
    def make(*controlnet_ids: int, **fields):
        return tuple(control_unit(catalog, cid, NONE_PRE, "ctl", **fields) for cid in controlnet_ids)

    return make


# --- the engine ----------------------------------------------------------------------------


def test_same_seed_same_pixels_another_seed_and_another_model_differ(engine, sdxl_job):
    first = run(engine, sdxl_job())
    assert same(first, run(engine, sdxl_job()))
    assert differ(first, run(engine, sdxl_job(seed=99)))
    assert differ(first, run(engine, sdxl_job(model_id=SDXL_B)))


@pytest.mark.parametrize(("width", "height", "batch"), [(96, 64, 1), (64, 80, 2)])
def test_exact_sizes_and_batch(engine, sdxl_job, width, height, batch):
    result = run(engine, sdxl_job(width=width, height=height, batch_size=batch))
    assert [image.size for image in result.images] == [(width, height)] * batch


def test_clip_skip_and_tileable_change_the_image(engine, sdxl_job):
    baseline = run(engine, sdxl_job())
    assert differ(baseline, run(engine, sdxl_job(clip_skip=2)))
    assert differ(baseline, run(engine, sdxl_job(tileable=True)))
    assert same(baseline, run(engine, sdxl_job()))  # the circular padding was undone


def test_img2img_follows_the_reference_and_keeps_the_size(engine, sdxl_job, images):
    job = sdxl_job(init_image="ref", strength=0.5, width=96, height=64)
    result = run(engine, job, images)
    assert result.images[0].size == (96, 64)
    assert same(result, run(engine, job, images))
    assert differ(result, run(engine, sdxl_job(init_image="ref", strength=0.9, width=96, height=64), images))


def test_one_controlnet_acts_and_weight_zero_equals_none(engine, sdxl_job, units, images):
    baseline = run(engine, sdxl_job(), images)
    assert differ(baseline, run(engine, sdxl_job(controlnets=units(21)), images))
    assert same(baseline, run(engine, sdxl_job(controlnets=units(21, weight=0.0)), images))


def test_three_controlnets_with_img2img_and_per_unit_modes(engine, sdxl_job, units, images):
    one = run(engine, sdxl_job(init_image="ref", controlnets=units(21)), images)
    three = sdxl_job(init_image="ref", controlnets=units(*CONTROLNETS))
    assert differ(one, run(engine, three, images))
    modes = {
        mode: run(engine, sdxl_job(controlnets=units(21, mode=mode)), images)
        for mode in ("Balanced", "MyPromptIsMoreImportant", "ControlNetIsMoreImportant")
    }
    balanced, prompt, control = modes.values()
    assert differ(balanced, prompt) and differ(balanced, control) and differ(prompt, control)


@pytest.mark.parametrize("lora_id", [KOHYA, PEFT])
def test_lora_weight_zero_is_no_lora_one_changes_and_nothing_leaks(engine, sdxl_job, lora_id):
    baseline = run(engine, sdxl_job())
    assert same(baseline, run(engine, sdxl_job(loras={lora_id: 0.0})))
    assert differ(baseline, run(engine, sdxl_job(loras={lora_id: 1.0})))
    assert same(baseline, run(engine, sdxl_job()))


def test_micro_batches_equal_the_whole_batch(catalog, sdxl_job):
    from worker.engine import Engine

    job = sdxl_job(batch_size=3)
    whole = Engine(Settings(device="cpu", micro_batch_pixels=0)).run(job, {})
    chunked = Engine(Settings(device="cpu", micro_batch_pixels=64 * 64)).run(job, {})
    assert [np.abs(a - b).max() <= 1 for a, b in zip(pixels(whole), pixels(chunked), strict=True)] == [True] * 3


def test_the_loaded_sdxl_model_is_budgeted_with_both_text_encoders(catalog):
    from worker.engine import Engine

    loaded = Engine(Settings(device="cpu")).cache.model(model_ref(catalog.main_model(SDXL)))
    pipe = loaded.pipe
    parts = (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
    assert loaded.nbytes == sum(p.numel() * p.element_size() for m in parts for p in m.parameters())


# --- the gateway: one family per request, the family's native size ------------------------


def sdxl_legacy(**fields) -> GenerateTxt2ImgRequest:
    return GenerateTxt2ImgRequest.model_validate(txt2img(PublicKey="k", Signature="s", MainModelId=SDXL) | fields)


def sdxl_images(**fields) -> GenerateImagesRequest:
    body = {
        "Action": "GenerateImages",
        "PublicKey": "k",
        "Signature": "s",
        "PositivePrompts": ["an apple"],
        "ImageAndMaskList": [PNG],
    }
    return GenerateImagesRequest.model_validate(body | {"MainModel": {"ModelCode": "tiny-sdxl-a"}} | fields)


MIXED = [
    (lambda: sdxl_legacy(SubModelIds=[SD15_LORA]), "SubModelIds[0]"),
    (lambda: sdxl_legacy(ControlNetParams=[custom_unit(ModelId=SD15_CONTROLNET)]), "ControlNetParams[0].ModelId"),
    (lambda: sdxl_legacy(ControlNetParams=[custom_unit(ControlPreSetId=1)]), "ControlNetParams[0].ControlPreSetId"),
    (lambda: sdxl_images(SubModelList=[{"ModelCode": "tiny-lora-ink"}]), "SubModelList[0].ModelCode"),
    (
        lambda: sdxl_images(
            ControlNetList=[
                {
                    "ControlModel": {"ModelCode": "control_v11p_sd15_canny"},
                    "PreProcessor": {"ModelCode": "none"},
                    "ImageIndex": 0,
                }
            ]
        ),
        "ControlNetList[0].ControlModel.ModelCode",
    ),
]


@pytest.mark.parametrize(("request_of", "field"), MIXED)
def test_an_sd15_lora_or_controlnet_on_an_sdxl_model_is_refused_naming_the_field(catalog, request_of, field):
    request = request_of()
    translate = translate_legacy if isinstance(request, GenerateTxt2ImgRequest) else translate_images
    with pytest.raises(InvalidParameter) as refused:
        translate(request, catalog, "k", Settings())
    assert refused.value.message.startswith(f"{field}: ") and "sdxl main model" in refused.value.message


def test_sdxl_loras_and_controlnets_are_accepted_on_sdxl_and_refused_on_sd15(catalog):
    job = translate_legacy(
        sdxl_legacy(SubModelIds=[KOHYA], ControlNetParams=[custom_unit(ModelId=21)]), catalog, "k", Settings()
    ).job
    assert (job.model.architecture, [lo.lora_id for lo in job.loras], job.controlnets[0].controlnet_id) == (
        "sdxl",
        [KOHYA],
        21,
    )
    with pytest.raises(InvalidParameter, match=r"^SubModelIds\[0\]: tiny-sdxl-lora-kohya is an sdxl model"):
        translate_legacy(sdxl_legacy(MainModelId=1, SubModelIds=[KOHYA]), catalog, "k", Settings())


def test_generate_images_without_a_size_gets_the_models_size_else_the_familys(catalog):
    assert (translate_images(sdxl_images(), catalog, "k", Settings()).job.width,) == (catalog.main_model(SDXL).size[0],)
    model = catalog.main_model(SDXL)
    bare = model.model_copy(update={"defaults": model.defaults.model_copy(update={"width": None, "height": None})})
    assert bare.size == (FAMILIES["sdxl"].native_size,) * 2 == (1024, 1024)
    catalog_without_sizes = catalog.model_copy(
        update={"main_models": [bare if m.id == SDXL else m for m in catalog.main_models]}
    )
    job = translate_images(sdxl_images(), catalog_without_sizes, "k", Settings()).job
    assert (job.width, job.height) == (1024, 1024)


# --- through the real stack ------------------------------------------------------------------

SDXL_BODY = {
    "Action": "GenerateImages",
    "MainModel": {"ModelCode": "tiny-sdxl-a", "InferenceParams": {"Steps": 4}},
    "SubModelList": [{"ModelCode": "tiny-sdxl-lora-kohya"}],
    "PositivePrompts": ["an apple"],
    "Seed": 7,
}


def finished_images(gateway, tasks: list[str]) -> list[Image.Image]:
    query = {"Action": "ListTasksDetails", "TaskUIDList": tasks}

    def ended() -> list[dict] | None:
        details = gateway.call(query)["TaskDetailList"]
        return details if all(d["Status"] in ENDED_STATUSES for d in details) else None

    details = wait_for(ended, 180, message="the SDXL tasks")
    assert [d["Status"] for d in details] == ["Finished"] * len(tasks), details
    return [Image.open(io.BytesIO(httpx.get(d["ImgList"][0]).content)) for d in details]


@pytest.mark.stack
def test_sdxl_through_a_real_worker_lora_native_size_same_seed_img2img_and_three_controlnets(live_stack, catalog):
    units = [custom_unit(ModelId=controlnet, PreProcessorId=NONE_PRE) for controlnet in CONTROLNETS]
    legacy = img2img(MainModelId=SDXL, Width=96, Height=64, Seed=7, ControlNetParams=units, EnableControlNet=True)
    tasks = [live_stack.call(body)["TaskUID"] for body in (SDXL_BODY, SDXL_BODY, legacy)]
    first, again, controlled = finished_images(live_stack, tasks)
    assert first.size == catalog.main_model(SDXL).size
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert controlled.size == (96, 64)
