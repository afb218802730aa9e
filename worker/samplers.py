"""The worker's half of the sampler table: each canonical sampler name -> a diffusers scheduler.

The names themselves (aliases, canonical_sampler) live in openpik/samplers.py, which the
gateway reads; this table says how to build each one. Scheduler classes are named by strings
and imported only in ``make_scheduler``.

The mapping follows the A1111/k-diffusion table of diffusers' scheduler overview
(docs/source/en/api/schedulers/overview.md), with one deliberate difference: that table maps
"DPM++ SDE" to DPMSolverSinglestepScheduler, but DPMSolverSDEScheduler is the actual port of
k-diffusion's ``sample_dpmpp_sde`` (Brownian-tree noise, midpoint step) that A1111 runs.

Beyond that table: the overview's schedule-type table maps Karras to ``use_karras_sigmas``; an
"Exponential" name is k-diffusion's ``get_sigmas_exponential`` (log-uniform sigmas between the
model's extremes), which is what ``use_exponential_sigmas`` computes. "DPM++ 2M SDE Heun" is
k-diffusion's ``sample_dpmpp_2m_sde(solver_type="heun")``, i.e. DPMSolverMultistepScheduler's
``solver_type="heun"``; tests/test_samplers_unit.py checks both 2M SDE solvers step for step
against a restatement of k-diffusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from openpik.samplers import canonical_sampler

if TYPE_CHECKING:
    from diffusers import SchedulerMixin


@dataclass(frozen=True)
class SamplerSpec:
    """How to build one sampler: a diffusers scheduler class plus config overrides."""

    scheduler_class: str
    """Name of the class in the ``diffusers`` namespace (a string: nothing heavy at import)."""
    config: Mapping[str, Any]
    """Overrides applied on top of the model's own scheduler config (read-only)."""
    needs_generator_seed: bool = False
    """The scheduler ignores the pipeline's generator; seed it through ``make_scheduler(seed=)``."""
    note: str = ""


def _spec(scheduler_class: str, note: str = "", **config: Any) -> SamplerSpec:
    return SamplerSpec(
        scheduler_class,
        MappingProxyType(config),
        # DPMSolverSDEScheduler draws its noise from a torchsde Brownian tree seeded by
        # noise_sampler_seed; its step() takes no generator.
        needs_generator_seed=scheduler_class == "DPMSolverSDEScheduler",
        note=note,
    )


_KARRAS = {"use_karras_sigmas": True}
_EXPONENTIAL = {"use_exponential_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}
_HEUN = {"solver_type": "heun"}
# DPMSolverSinglestepScheduler defaults to lower_order_final=False, which does not go with its
# default final_sigmas_type="zero": every set_timesteps() logs a warning and sets the flag anyway.
_SINGLESTEP = {"lower_order_final": True}
_2S_A_NOTE = (
    "No exact port in diffusers: DPMSolverSinglestepScheduler is the closest (the docs call it"
    " 'very similar'), and unlike A1111's ancestral sampler it adds no fresh noise per step."
)
_LMS_NOTE = "Needs scipy (coefficients are integrated with scipy.integrate)."
_SDE_NOTE = "Seeded through noise_sampler_seed, not the pipeline generator."

SCHEDULERS: dict[str, SamplerSpec] = {
    "Euler a": _spec("EulerAncestralDiscreteScheduler"),
    "Euler": _spec("EulerDiscreteScheduler"),
    "Euler Karras": _spec("EulerDiscreteScheduler", **_KARRAS),
    "Euler Exponential": _spec("EulerDiscreteScheduler", **_EXPONENTIAL),
    "LMS": _spec("LMSDiscreteScheduler", _LMS_NOTE),
    "LMS Karras": _spec("LMSDiscreteScheduler", _LMS_NOTE, **_KARRAS),
    "LMS Exponential": _spec("LMSDiscreteScheduler", _LMS_NOTE, **_EXPONENTIAL),
    "Heun": _spec("HeunDiscreteScheduler"),
    "Heun Karras": _spec("HeunDiscreteScheduler", **_KARRAS),
    "Heun Exponential": _spec("HeunDiscreteScheduler", **_EXPONENTIAL),
    "DPM2": _spec("KDPM2DiscreteScheduler"),
    "DPM2 Karras": _spec("KDPM2DiscreteScheduler", **_KARRAS),
    "DPM2 Exponential": _spec("KDPM2DiscreteScheduler", **_EXPONENTIAL),
    "DPM2 a": _spec("KDPM2AncestralDiscreteScheduler"),
    "DPM2 a Karras": _spec("KDPM2AncestralDiscreteScheduler", **_KARRAS),
    "DPM2 a Exponential": _spec("KDPM2AncestralDiscreteScheduler", **_EXPONENTIAL),
    "DPM++ 2M": _spec("DPMSolverMultistepScheduler"),
    "DPM++ 2M Karras": _spec("DPMSolverMultistepScheduler", **_KARRAS),
    "DPM++ 2M Exponential": _spec("DPMSolverMultistepScheduler", **_EXPONENTIAL),
    "DPM++ SDE": _spec("DPMSolverSDEScheduler", _SDE_NOTE),
    "DPM++ SDE Karras": _spec("DPMSolverSDEScheduler", _SDE_NOTE, **_KARRAS),
    "DPM++ SDE Exponential": _spec("DPMSolverSDEScheduler", _SDE_NOTE, **_EXPONENTIAL),
    "DPM++ 2M SDE": _spec("DPMSolverMultistepScheduler", **_SDE),
    "DPM++ 2M SDE Karras": _spec("DPMSolverMultistepScheduler", **_SDE, **_KARRAS),
    "DPM++ 2M SDE Exponential": _spec("DPMSolverMultistepScheduler", **_SDE, **_EXPONENTIAL),
    "DPM++ 2M SDE Heun": _spec("DPMSolverMultistepScheduler", **_SDE, **_HEUN),
    "DPM++ 2M SDE Heun Karras": _spec("DPMSolverMultistepScheduler", **_SDE, **_HEUN, **_KARRAS),
    "DPM++ 2M SDE Heun Exponential": _spec("DPMSolverMultistepScheduler", **_SDE, **_HEUN, **_EXPONENTIAL),
    "DPM++ 2S a": _spec("DPMSolverSinglestepScheduler", _2S_A_NOTE, **_SINGLESTEP),
    "DPM++ 2S a Karras": _spec("DPMSolverSinglestepScheduler", _2S_A_NOTE, **_SINGLESTEP, **_KARRAS),
    "DPM++ 2S a Exponential": _spec("DPMSolverSinglestepScheduler", _2S_A_NOTE, **_SINGLESTEP, **_EXPONENTIAL),
    "DDIM": _spec("DDIMScheduler"),
    # PLMS is PNDM without its Runge-Kutta warm-up steps.
    "PLMS": _spec("PNDMScheduler", skip_prk_steps=True),
    "UniPC": _spec("UniPCMultistepScheduler"),
    "LCM": _spec("LCMScheduler", "Only useful with LCM-distilled weights or an LCM LoRA."),
}

# Config keys a sampler choice owns. They are dropped from the base config before building, so a
# config taken from the previous job's scheduler (say DPM++ 2M SDE Heun Karras, or a seeded DPM++
# SDE) cannot leak its flags into the next sampler. Beta sigmas go too, should a model's own config
# set them: diffusers refuses more than one sigma schedule at once.
_SAMPLER_KEYS = frozenset(
    {key for spec in SCHEDULERS.values() for key in spec.config} | {"noise_sampler_seed", "use_beta_sigmas"}
)


def make_scheduler(name: str, base_config: Mapping[str, Any], *, seed: int | None = None) -> SchedulerMixin:
    """Build the scheduler for sampler ``name`` on a model's scheduler config.

    ``base_config`` is usually ``pipe.scheduler.config``: it carries the model's noise schedule
    (betas, prediction type, ...). ``seed`` matters only for specs with ``needs_generator_seed``;
    the other schedulers draw their noise from the pipeline's generator.
    """
    spec = SCHEDULERS[canonical_sampler(name)]
    import diffusers  # here, not at the top: see the module docstring

    config = {key: value for key, value in base_config.items() if key not in _SAMPLER_KEYS}
    overrides = dict(spec.config)
    if spec.needs_generator_seed:
        overrides["noise_sampler_seed"] = seed
    return getattr(diffusers, spec.scheduler_class).from_config(config, **overrides)
