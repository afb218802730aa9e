"""TranslatePrompt: English untouched, other text through the local (tiny, random) MarianMT; without
a translator, the record of a task whose prompt needed one says so (Note) and the operator is told."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis

from api.generate.protocol import GenerateImagesRequest
from api.generate.serving import translate_images
from api.queries.serving import legacy_detail, task_detail
from openpik.settings import Settings
from openpik.task_records import TaskRecord, TaskStore
from openpik.translation import UNTRANSLATED_NOTE, needs_translation, untranslated_note
from openpik.vocabulary import TaskStatus
from tests.engine_helpers import pixels, run
from tests.stack import KEY_A
from worker.translation import Translator

CAT = "一只可爱的猫"


@pytest.fixture(scope="module")
def translator(catalog) -> Translator:
    return Translator(catalog.translator)


@pytest.mark.parametrize(
    ("text", "translate"),
    [
        ("a red apple, studio light", False),
        ("8k, (masterpiece:1.2), 1girl", False),
        ("", False),
        ("一只可爱的猫", True),
        ("красивый закат", True),
        ("café au lait", True),
        ("桜 and Fuji", True),
    ],
)
def test_which_prompts_are_translated(text, translate):
    assert needs_translation(text) is translate


@pytest.mark.models
def test_english_is_untouched_and_other_text_is_translated(translator, make_job):
    english = make_job(prompt="a red apple", negative_prompt="blurry", translate_prompts=True)
    assert translator.translate_job(english) is english
    mixed = translator.translate_job(make_job(prompt="一只可爱的猫", negative_prompt="blurry", translate_prompts=True))
    assert mixed.prompt != "一只可爱的猫" and mixed.prompt == translator.translate("一只可爱的猫")
    assert mixed.negative_prompt == "blurry"


@pytest.mark.models
def test_the_engine_generates_from_the_translated_prompt(engine, make_job, translator):
    asked = run(engine, make_job(prompt="一只可爱的猫", translate_prompts=True))
    direct = run(engine, make_job(prompt=translator.translate("一只可爱的猫")))
    untranslated = run(engine, make_job(prompt="一只可爱的猫"))
    assert np.array_equal(pixels(asked)[0], pixels(direct)[0])
    assert not np.array_equal(pixels(asked)[0], pixels(untranslated)[0])
    english = run(engine, make_job(prompt="a red apple", translate_prompts=True))
    assert np.array_equal(pixels(english)[0], pixels(run(engine, make_job(prompt="a red apple")))[0])


def generate_images(**fields) -> GenerateImagesRequest:
    """A small GenerateImages on tiny model 1, TranslatePrompts left to its default."""
    body = {
        "Action": "GenerateImages",
        "PublicKey": KEY_A.public,
        "Signature": "s",
        "MainModel": {"ModelCode": "tiny-sd15-a", "InferenceParams": {"Steps": 4}},
        "Width": 64,
        "Height": 64,
        "Seed": 1234,
    }
    return GenerateImagesRequest.model_validate(body | fields)


@pytest.mark.models
def test_generate_images_translates_by_default(catalog, engine, translator):
    submission = translate_images(generate_images(PositivePrompts=[CAT]), catalog, KEY_A.public, Settings())
    job = submission.job
    assert job.translate_prompts and job.prompt == CAT and submission.note == ""
    translated = job.model_copy(update={"prompt": translator.translate(CAT), "translate_prompts": False})
    untranslated = job.model_copy(update={"translate_prompts": False})
    asked = pixels(run(engine, job))[0]
    assert np.array_equal(asked, pixels(run(engine, translated))[0])
    assert not np.array_equal(asked, pixels(run(engine, untranslated))[0])


@pytest.mark.models
@pytest.mark.parametrize(
    ("fields", "note"),
    [
        ({"PositivePrompts": [CAT]}, UNTRANSLATED_NOTE),
        ({"PositivePrompts": ["an apple"], "NegativePrompts": ["размытый"]}, UNTRANSLATED_NOTE),
        ({"PositivePrompts": ["an apple"], "NegativePrompts": ["blurry"]}, ""),
        ({"PositivePrompts": [CAT], "TranslatePrompts": False}, ""),
    ],
    ids=["chinese prompt", "russian negative prompt", "english", "translation not asked"],
)
def test_without_a_translator_the_task_record_notes_a_prompt_that_needed_one(catalog, fields, note):
    without = catalog.model_copy(update={"translator": None})
    submission = translate_images(generate_images(**fields), without, KEY_A.public, Settings())
    assert submission.note == note and not submission.job.translate_prompts
    stored = TaskRecord(
        task_id="t" * 20,
        owner=KEY_A.public,
        action="GenerateImages",
        queue=submission.queue,
        status=TaskStatus.FINISHED,
        note=submission.note,
    )
    record = TaskRecord.from_hash(stored.to_hash())
    tasks = TaskStore(redis.Redis(), ttl_s=3600)  # a finished record needs no Redis call to describe
    assert task_detail(tasks, record, "http://gw").model_dump()["Note"] == note  # ListTasksDetails
    assert legacy_detail(tasks, record, "http://gw")["Note"] == note  # GetGenerateTaskDetail, ListGenerateTaskDetail


def test_the_operator_is_told_once_per_model_when_prompts_go_untranslated(caplog):
    with caplog.at_level(logging.WARNING, logger="openpik.translation"):
        assert untranslated_note("model-x", "an apple", "blurry") == ""
        assert untranslated_note("model-x", CAT, "") == UNTRANSLATED_NOTE
        assert untranslated_note("model-x", "", "café") == UNTRANSLATED_NOTE
        assert untranslated_note("model-y", CAT, "") == UNTRANSLATED_NOTE
    assert [r.model_code for r in caplog.records] == ["model-x", "model-y"]
    assert all("need translation but the catalog names no translator" in r.message for r in caplog.records)
