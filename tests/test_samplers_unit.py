"""Unit tests of the sampler table: name resolution (openpik.samplers) and scheduler
construction (worker.samplers), with no pipeline.

The expected table is restated here from diffusers' A1111/k-diffusion mapping rather than read
from the modules, so that a wrong entry fails a test instead of agreeing with itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openpik.samplers import SAMPLERS, UnknownSamplerError, canonical_sampler
from worker.samplers import SCHEDULERS, make_scheduler

REPO = Path(__file__).resolve().parents[1]

# diffusers' schedulers mix numpy and torch tensors, which numpy 2 flags thousands of times
# (__array__ / __array_wrap__ deprecations): upstream noise unrelated to the sampler table.
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")

SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}

KARRAS = {"use_karras_sigmas": True}
SDE = {"algorithm_type": "sde-dpmsolver++"}

# canonical name -> (diffusers class, config values the built scheduler must have)
EXPECTED = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "LMS": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "LMS Karras": ("LMSDiscreteScheduler", KARRAS),
    "Heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", KARRAS),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", KARRAS),
    "DPM++ 2M": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
    ),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", **KARRAS}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {"use_karras_sigmas": False}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", KARRAS),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {**SDE, "use_karras_sigmas": False}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {**SDE, **KARRAS}),
    "DPM++ 2S a": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": False}),
    "DPM++ 2S a Karras": ("DPMSolverSinglestepScheduler", KARRAS),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}

HORDE_ALIASES = {
    "k_euler_a": "Euler a",
    "k_euler": "Euler",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_a": "DPM2 a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpmpp_2s_a": "DPM++ 2S a",
    "dpmsolver": "DPM++ 2M",
    "lcm": "LCM",
    "DDIM": "DDIM",
}


@pytest.fixture
def diffusers_warnings():
    """Warnings diffusers logs (its logger does not propagate, so caplog misses them)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_both_halves_of_the_table_hold_exactly_the_picpik_names():
    assert list(SAMPLERS) == list(SCHEDULERS) == list(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_canonical_names_resolve_in_any_case(name):
    for variant in (name, name.lower(), name.upper(), f"  {name}\t"):
        assert canonical_sampler(variant) == name


@pytest.mark.parametrize(("alias", "canonical"), HORDE_ALIASES.items())
def test_horde_aliases_resolve_to_non_karras_names(alias, canonical):
    assert canonical_sampler(alias) == canonical
    assert canonical_sampler(f" {alias.upper()} ") == canonical


@pytest.mark.parametrize(("name", "canonical"), [("ddim", "DDIM"), ("plms", "PLMS"), ("unipc", "UniPC")])
def test_lowercase_names_just_work(name, canonical):
    assert canonical_sampler(name) == canonical


@pytest.mark.parametrize("name", EXPECTED)
def test_make_scheduler_builds_the_mapped_class(name, diffusers_warnings):
    import diffusers

    class_name, flags = EXPECTED[name]
    assert SCHEDULERS[name].scheduler_class == class_name

    scheduler = make_scheduler(name, SD15_SCHEDULER_CONFIG, seed=1)
    assert isinstance(scheduler, getattr(diffusers, class_name))
    for key, value in flags.items():
        assert scheduler.config[key] == value, key
    for key, value in SD15_SCHEDULER_CONFIG.items():
        if key in scheduler.config:  # a class drops the keys it does not take
            assert scheduler.config[key] == value, key

    scheduler.set_timesteps(20)
    assert len(scheduler.timesteps) >= 20
    assert [r.getMessage() for r in diffusers_warnings] == []


def test_only_the_sde_scheduler_takes_the_seed():
    assert [name for name, spec in SCHEDULERS.items() if spec.needs_generator_seed] == [
        "DPM++ SDE",
        "DPM++ SDE Karras",
    ]
    sde = make_scheduler("DPM++ SDE", SD15_SCHEDULER_CONFIG, seed=1234)
    assert sde.config.noise_sampler_seed == 1234
    euler = make_scheduler("Euler a", SD15_SCHEDULER_CONFIG, seed=1234)
    assert "noise_sampler_seed" not in euler.config


def test_flags_of_the_previous_sampler_do_not_leak(diffusers_warnings):
    previous = make_scheduler("DPM++ 2M SDE Karras", SD15_SCHEDULER_CONFIG)
    scheduler = make_scheduler("DPM++ 2M", previous.config)
    assert scheduler.config.algorithm_type == "dpmsolver++"
    assert scheduler.config.use_karras_sigmas is False

    seeded = make_scheduler("DPM++ SDE", SD15_SCHEDULER_CONFIG, seed=7)
    assert make_scheduler("DPM++ SDE", seeded.config).config.noise_sampler_seed is None
    assert [r.getMessage() for r in diffusers_warnings] == []


def test_specs_are_immutable():
    spec = SCHEDULERS["DPM++ 2M Karras"]
    with pytest.raises(TypeError):
        spec.config["use_karras_sigmas"] = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scheduler_class = "EulerDiscreteScheduler"


@pytest.mark.parametrize("name", ["DPM fast", "dpm adaptive", "k_dpm_fast", "K_DPM_ADAPTIVE"])
def test_samplers_without_diffusers_equivalent_are_rejected(name):
    with pytest.raises(UnknownSamplerError, match="no diffusers equivalent") as caught:
        canonical_sampler(name)
    assert repr(name) in str(caught.value)
    assert caught.value.name == name


def test_unknown_sampler_names_the_name_and_lists_accepted():
    with pytest.raises(UnknownSamplerError) as caught:
        make_scheduler("Euler b", SD15_SCHEDULER_CONFIG)
    message = str(caught.value)
    assert "'Euler b'" in message
    assert all(name in message for name in EXPECTED)
    assert isinstance(caught.value, ValueError)


def test_import_pulls_in_neither_torch_nor_diffusers():
    code = "import sys, worker.samplers; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    path = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
