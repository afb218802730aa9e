"""A1111 prompt syntax and long prompts on real pipelines, both families (tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.prompts import LayerEmbeddings, prompt_arguments

pytestmark = pytest.mark.models

PROMPT = "an apple on a table"
APPLE_15 = "an (apple:1.5) on a table"


@pytest.fixture(scope="module")
def sd15(engine, make_job):
    return engine.cache.model(make_job().model).pipe, "sd15"


@pytest.fixture(scope="module")
def sdxl(engine, make_job):
    return engine.cache.model(make_job(model_id=11).model).pipe, "sdxl"


@pytest.fixture(params=["sd15", "sdxl"])
def family(request):
    return request.getfixturevalue(request.param)


def render(family, prompt: str, negative: str = "blurry", clip_skip: int = 1, enabled: bool = True) -> np.ndarray:
    pipe, architecture = family
    arguments = prompt_arguments(pipe, architecture, prompt, negative, clip_skip, enabled)
    generator = torch.Generator("cpu").manual_seed(7)
    return pipe(
        **arguments,
        num_inference_steps=2,
        guidance_scale=7.0,
        width=64,
        height=64,
        generator=generator,
        output_type="np",
    ).images


def long_prompt(tokenizer, tokens: int) -> str:
    """At least ``tokens`` tokens of varied words, no commas."""
    words = ["red", "apple", "green", "tree", "blue", "sky", "small", "house", "old", "road", "tall", "hill"]
    text = ""
    for i in range(10 * tokens):
        text += f"{words[i % len(words)]} "
        if len(tokenizer(text).input_ids) - 2 >= tokens:
            return text.strip()
    raise AssertionError("tokenizer never reached the length")


def test_plain_prompts_go_to_diffusers_as_text(family) -> None:
    pipe, architecture = family
    expected = {"prompt": PROMPT, "negative_prompt": "blurry", "clip_skip": 1}
    assert prompt_arguments(pipe, architecture, PROMPT, "blurry", 2, True) == expected
    assert prompt_arguments(pipe, architecture, "an (apple:1.0) on a table", "(blurry:1.0)", 2, True) == expected
    assert prompt_arguments(pipe, architecture, APPLE_15, "", 1, False) == {
        "prompt": APPLE_15,
        "negative_prompt": None,
        "clip_skip": None,
    }


def test_plain_prompt_with_weighting_on_equals_off(family) -> None:
    assert np.array_equal(render(family, PROMPT, enabled=True), render(family, PROMPT, enabled=False))


def test_unit_weight_equals_plain_word(family) -> None:
    plain = render(family, PROMPT)
    assert np.array_equal(render(family, "an (apple:1.0) on a table"), plain)
    assert np.array_equal(
        render(family, r"an \(apple\) on a table"), render(family, "an (apple) on a table", enabled=False)
    )


@pytest.mark.parametrize(
    "weighted", [APPLE_15, "an (apple) on a table", "an [apple] on a table", "an (apple:0.5) on a table"]
)
def test_weights_change_the_image(family, weighted: str) -> None:
    assert not np.array_equal(render(family, weighted), render(family, PROMPT))


def test_long_prompt_is_encoded_whole(family) -> None:
    pipe, architecture = family
    prompt = long_prompt(pipe.tokenizer, 200)
    arguments = prompt_arguments(pipe, architecture, prompt, "blurry", 1, True)
    assert arguments["prompt_embeds"].shape[1] == 3 * 77
    assert arguments["negative_prompt_embeds"].shape == arguments["prompt_embeds"].shape
    # enabled=False: diffusers truncates to the first 77 tokens
    assert not np.array_equal(render(family, prompt), render(family, prompt, enabled=False))


def test_break_starts_a_new_chunk(family) -> None:
    pipe, architecture = family
    arguments = prompt_arguments(pipe, architecture, "an apple BREAK on a table", "", 1, True)
    assert arguments["prompt_embeds"].shape[1] == 2 * 77
    assert arguments["negative_prompt_embeds"].shape[1] == 2 * 77


@pytest.mark.parametrize("clip_skip", [1, 2, 3])
def test_compel_reads_the_layers_diffusers_reads(family, clip_skip: int) -> None:
    """A long prompt's first chunk is diffusers' own (truncated) encoding, at every clip skip."""
    pipe, architecture = family
    prompt = long_prompt(pipe.tokenizer, 100)
    ours = prompt_arguments(pipe, architecture, prompt, "blurry", clip_skip, True)
    skip = clip_skip - 1 or None
    with torch.no_grad():
        if architecture == "sd15":
            theirs = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt="blurry", clip_skip=skip)
        else:
            theirs = pipe.encode_prompt(prompt, negative_prompt="blurry", device="cpu", clip_skip=skip)
            assert torch.equal(ours["pooled_prompt_embeds"], theirs[2])
            assert torch.equal(ours["negative_pooled_prompt_embeds"], theirs[3])
    assert torch.equal(ours["prompt_embeds"][:, :77], theirs[0])
    assert torch.equal(ours["negative_prompt_embeds"][:, :77], theirs[1])


def test_clip_skip_acts_on_weighted_prompts(family) -> None:
    assert not np.array_equal(render(family, APPLE_15, clip_skip=2), render(family, APPLE_15, clip_skip=1))
    unit = render(family, "an (apple:1.0) on a table", clip_skip=2)
    assert np.array_equal(unit, render(family, PROMPT, clip_skip=2))


def test_negative_prompt_weighting(family) -> None:
    plain = render(family, PROMPT, negative="blurry dark")
    assert np.array_equal(render(family, PROMPT, negative="(blurry:1.0) dark"), plain)
    assert not np.array_equal(render(family, PROMPT, negative="(blurry:1.5) dark"), plain)
    assert not np.array_equal(render(family, PROMPT, negative="[blurry] dark"), plain)


def test_empty_negative_on_a_weighted_prompt_is_as_diffusers(family) -> None:
    """SDXL zeros it (force_zeros_for_empty_prompt); SD1.5 encodes the empty prompt."""
    pipe, architecture = family
    ours = prompt_arguments(pipe, architecture, APPLE_15, "", 1, True)
    with torch.no_grad():
        if architecture == "sd15":
            theirs = pipe.encode_prompt(PROMPT, "cpu", 1, True)
        else:
            theirs = pipe.encode_prompt(PROMPT, device="cpu")
            assert pipe.config.force_zeros_for_empty_prompt
            assert torch.equal(ours["negative_pooled_prompt_embeds"], theirs[3])
    assert torch.equal(ours["negative_prompt_embeds"], theirs[1])


@pytest.mark.parametrize(("comma_at", "first_chunk"), [(60, 61), (30, 75)])
def test_long_prompts_chunk_after_a_late_comma(family, comma_at: int, first_chunk: int) -> None:
    """As A1111: a full chunk ends after its last comma when that is among its last 20 tokens."""
    pipe, _ = family
    tokenizer = pipe.tokenizer
    words = tokenizer(long_prompt(tokenizer, 150), add_special_tokens=False).input_ids
    comma = tokenizer(",", add_special_tokens=False).input_ids
    provider = LayerEmbeddings(tokenizer, pipe.text_encoder, layer=-1, normalized=True)
    text = tokenizer.decode([*words[:comma_at], *comma, *words[comma_at:]])
    tokens, _, _ = provider.get_token_ids_and_expand_weights([text], [1.0], device="cpu")
    chunk = tokens[:77].tolist()
    assert chunk.index(tokenizer.eos_token_id) == 1 + first_chunk
    assert (
        tokens[78 : 78 + 3].tolist() == [*comma, *words[comma_at:]][first_chunk - comma_at : first_chunk - comma_at + 3]
    )


@pytest.mark.parametrize("model_id", [1, 11])
def test_the_engine_weights_prompts_unless_the_setting_is_off(engine, make_job, model_id):
    from openpik.settings import Settings
    from worker.engine import Engine

    def image(prompt: str, on: Engine = engine) -> np.ndarray:
        return np.asarray(on.run(make_job(model_id=model_id, prompt=prompt, steps=2), {}).images[0], dtype=np.int16)

    plain = image("an apple")
    assert np.array_equal(plain, image("an (apple:1.0)"))
    assert not np.array_equal(plain, image("an (apple:1.5)"))
    literal = Engine(Settings(device="cpu", prompt_weighting=False))
    assert np.array_equal(plain, image("an apple", literal))
    assert not np.array_equal(plain, image("an (apple:1.0)", literal))  # brackets are words then
