"""Translation of wire requests into Jobs: the mapping rules, without HTTP or Redis."""

from __future__ import annotations

import re

import pytest

from api.generate.protocol import GenerateImagesRequest, GenerateImg2ImgRequest
from api.generate.serving import translate_images, translate_legacy
from openpik.routing import DEFAULT_QUEUE
from openpik.settings import Settings
from openpik.translation import UNTRANSLATED_NOTE
from tests.requests import PNG, img2img

pytestmark = pytest.mark.models


def legacy(**fields) -> GenerateImg2ImgRequest:
    return GenerateImg2ImgRequest.model_validate(img2img(PublicKey="k", Signature="s") | fields)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def test_legacy_mapping(catalog, settings):
    job = translate_legacy(
        legacy(
            Width=100,
            Height=75,
            ReferenceScale=0.25,
            ClipSkip=2,
            Sampler="k_euler_a",
            PositivePrompts=["a", "b"],
            NegativePrompts=["c"],
        ),
        catalog,
        "k",
        settings,
    ).job
    assert (job.width, job.height, job.strength, job.clip_skip, job.sampler) == (104, 72, 0.75, 2, "Euler a")
    assert (job.prompt, job.negative_prompt, job.init_image) == ("a, b", "c", "init")
    assert job.vae is not None and job.vae.vae_id == catalog.main_model(1).vae
    assert translate_legacy(legacy(UseCustomMainModelVae=True), catalog, "k", settings).job.vae is None
    assert translate_legacy(legacy(ReferenceImage=""), catalog, "k", settings).job.init_image is None


def test_translation_is_asked_for_only_when_the_catalog_has_a_translator(catalog, settings):
    asked = translate_legacy(legacy(TranslatePrompt=True), catalog, "k", settings)
    assert asked.job.translate_prompts and asked.note == ""
    assert not translate_legacy(legacy(TranslatePrompt=False), catalog, "k", settings).job.translate_prompts
    without = catalog.model_copy(update={"translator": None})
    english = translate_legacy(legacy(TranslatePrompt=True), without, "k", settings)
    assert not english.job.translate_prompts and english.note == ""
    chinese = translate_legacy(legacy(TranslatePrompt=True, PositivePrompts=["一个苹果"]), without, "k", settings)
    assert not chinese.job.translate_prompts and chinese.note == UNTRANSLATED_NOTE


def test_generate_images_uses_catalog_defaults_and_image_indexes(catalog, settings):
    request = GenerateImagesRequest.model_validate(
        {
            "Action": "GenerateImages",
            "PublicKey": "k",
            "Signature": "s",
            "MainModel": {"ModelCode": "tiny-sd15-b"},
            "ImageAndMaskList": [PNG],
            "Image2Image": {"ImageIndex": 0, "ReferStrength": 0.3, "ResizeMode": "CropAndResize"},
            "Width": 64,
            "Height": 64,
            "Tileable": True,
        }
    )
    submission = translate_images(request, catalog, "k", settings)
    job, defaults = submission.job, catalog.main_model(2).defaults
    assert (job.steps, job.sampler, job.cfg_scale) == (defaults.steps, defaults.sampler, defaults.cfg_scale)
    assert job.init_image == "image0" and job.init_resize_mode == "CropAndResize" and job.tileable
    assert job.strength == pytest.approx(0.7) and job.seed == -1 and job.translate_prompts
    assert set(submission.images) == {"image0"} and submission.queue == DEFAULT_QUEUE


def test_the_cost_cap_is_off_by_default_and_refuses_expensive_tasks_when_set(catalog):
    from api.errors import InvalidParameter

    big = legacy(Width=1440, Height=1440, Steps=150, BatchSize=16)
    assert translate_legacy(big, catalog, "k", Settings()).job.batch_size == 16
    capped = Settings(max_task_cost=64 * 64 * 20 * 4)
    assert translate_legacy(legacy(Steps=20, BatchSize=4), catalog, "k", capped).job.steps == 20
    with pytest.raises(InvalidParameter, match=r"^Width x Height x Steps x BatchSize: .* exceeds"):
        translate_legacy(legacy(Steps=21, BatchSize=4), catalog, "k", capped)


@pytest.mark.parametrize("kind", ["loras", "controlnets"])
def test_an_owned_lora_or_controlnet_is_usable_by_its_owner_only(catalog, settings, kind):
    from api.errors import InvalidParameter

    owned = [
        entry.model_copy(update={"owner": "owner-key"}) if entry.id == 1 else entry for entry in getattr(catalog, kind)
    ]
    private = catalog.model_copy(update={kind: owned})
    unit = {"ControlPreSetId": 0, "ControlNetImg": PNG, "ModelId": 1, "PreProcessorId": "none"}
    fields = {"SubModelIds": [1]} if kind == "loras" else {"ControlNetParams": [unit]}
    mine = translate_legacy(legacy(**fields), private, "owner-key", settings).job
    assert (mine.loras if kind == "loras" else mine.controlnets)[0].path == str(getattr(catalog, kind)[0].path)
    where = "SubModelIds[0]: no LoRA with id 1" if kind == "loras" else "ControlNetParams[0].ModelId"
    with pytest.raises(InvalidParameter, match=rf"^{re.escape(where)}"):
        translate_legacy(legacy(**fields), private, "another-key", settings)
