"""TranslatePrompt: English untouched, other text through the local (tiny, random) MarianMT."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine_helpers import pixels, run
from worker.translation import Translator, needs_translation


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
