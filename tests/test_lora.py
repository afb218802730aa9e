"""LoRA adapters: loaded once, selected per request, never baked into the base weights."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine_helpers import pixels, run

pytestmark = pytest.mark.models


def test_weight_zero_equals_no_lora(engine, make_job):
    baseline = run(engine, make_job())
    zero = run(engine, make_job(loras={1: 0.0}))
    assert np.array_equal(pixels(baseline)[0], pixels(zero)[0])


def test_weights_half_and_one_differ_from_each_other_and_from_baseline(engine, make_job):
    baseline, half, full = (run(engine, make_job(loras=w)) for w in (None, {1: 0.5}, {1: 1.0}))
    assert np.abs(pixels(half)[0] - pixels(full)[0]).max() > 5
    assert np.abs(pixels(baseline)[0] - pixels(half)[0]).max() > 5


def test_request_without_lora_after_one_with_lora_gives_the_baseline(engine, make_job):
    baseline = run(engine, make_job())
    run(engine, make_job(loras={2: 1.0, 3: 0.7}))
    after = run(engine, make_job())
    assert np.array_equal(pixels(baseline)[0], pixels(after)[0])


def test_two_loras_at_once_differ_from_each_alone(engine, make_job):
    both = run(engine, make_job(loras={1: 1.0, 2: 1.0}))
    for alone in ({1: 1.0}, {2: 1.0}):
        assert np.abs(pixels(both)[0] - pixels(run(engine, make_job(loras=alone)))[0]).max() > 5


def test_kohya_and_peft_files_both_load_and_change_the_output(engine, make_job, catalog):
    baseline = pixels(run(engine, make_job()))[0]
    # Catalog LoRA 1 is in the diffusers/peft layout, 2 in kohya's (text encoder included).
    assert catalog.lora(1).path.name.endswith(".safetensors") and catalog.lora(2).path.exists()
    for lora_id in (1, 2):
        assert np.abs(pixels(run(engine, make_job(loras={lora_id: 1.0})))[0] - baseline).max() > 5


def test_adapters_load_once_and_are_reused(engine, make_job):
    run(engine, make_job(loras={1: 1.0, 2: 0.5}))
    loads = engine.cache.stats.lora_loads
    run(engine, make_job(loras={2: 1.0}))
    run(engine, make_job(loras={1: 0.3, 2: 0.2}))
    assert engine.cache.stats.lora_loads == loads


def test_same_lora_request_is_reproducible_after_other_loras(engine, make_job):
    first = run(engine, make_job(loras={1: 0.8}))
    run(engine, make_job(loras={3: 1.0}))
    again = run(engine, make_job(loras={1: 0.8}))
    assert np.array_equal(pixels(first)[0], pixels(again)[0])
