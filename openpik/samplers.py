"""The sampler names a client may send, and how each resolves to one canonical name.

The gateway checks names with this table before anything is queued; the worker's
worker/samplers.py builds a diffusers scheduler for each canonical name. Light on purpose.

Canonical names are A1111's. A1111 (modules/sd_samplers.py, get_sampler_and_scheduler) reads a
trailing schedule label off a sampler name, so "Euler Karras" or "DPM++ 2M Exponential" are
A1111 spellings as much as its older fixed list ("DPM++ 2M Karras", ...). Every k-diffusion
sampler that diffusers runs with Karras or exponential sigmas therefore has those two variants
here; DDIM, PLMS, UniPC and LCM take no schedule type in A1111, and diffusers'
EulerAncestralDiscreteScheduler takes no sigma schedule, so they have none.
"""

from __future__ import annotations

from types import MappingProxyType

SAMPLERS: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "Euler Karras",
    "Euler Exponential",
    "LMS",
    "LMS Karras",
    "LMS Exponential",
    "Heun",
    "Heun Karras",
    "Heun Exponential",
    "DPM2",
    "DPM2 Karras",
    "DPM2 Exponential",
    "DPM2 a",
    "DPM2 a Karras",
    "DPM2 a Exponential",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ 2M Exponential",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ SDE Exponential",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM++ 2M SDE Exponential",
    "DPM++ 2M SDE Heun",
    "DPM++ 2M SDE Heun Karras",
    "DPM++ 2M SDE Heun Exponential",
    "DPM++ 2S a",
    "DPM++ 2S a Karras",
    "DPM++ 2S a Exponential",
    "DDIM",
    "PLMS",
    "UniPC",
    "LCM",
)
"""The canonical (A1111) names this backend runs, in the order lists show them."""

# k-diffusion's sample_dpmpp_3m_sde adds phi_3 = phi_2/(2h) - 1/2 times the second divided
# difference with a minus sign; diffusers 0.42's third-order "sde-dpmsolver++" update
# (DPMSolverMultistepScheduler.multistep_dpm_solver_third_order_update) has the 1/2 with the
# other sign, so every step differs by a whole second difference (tests/test_samplers_unit.py
# shows it against a restatement of k-diffusion). A1111 also drops the next-to-last sigma for
# 3M SDE, which no diffusers config does.
_3M_SDE = "diffusers' third-order SDE DPM-Solver++ step is not k-diffusion's DPM++ 3M SDE step"

NO_DIFFUSERS_EQUIVALENT = MappingProxyType(
    {
        "DPM fast": "diffusers has no DPM-Solver-Fast scheduler",
        "DPM adaptive": "diffusers has no adaptive-step DPM-Solver scheduler",
        "DPM++ 3M SDE": _3M_SDE,
        "DPM++ 3M SDE Karras": _3M_SDE,
        "DPM++ 3M SDE Exponential": _3M_SDE,
        "Restart": "diffusers has no Restart sampler",
    }
)
"""A1111 names that diffusers cannot run as A1111 does -> why; rejected, not approximated."""

# AI Horde's sampler names (KNOWN_SAMPLERS). Horde asks for Karras sigmas with a separate
# `karras` flag, so every alias names the non-Karras sampler; its "lcm" and "DDIM" already match
# canonical names. "dpmsolver" is CompVis' DPM-Solver sampler: multistep DPM-Solver++, order 2.
HORDE_ALIASES = MappingProxyType(
    {
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
        "k_dpm_fast": "DPM fast",
        "k_dpm_adaptive": "DPM adaptive",
    }
)

# ComfyUI's sampler names (comfy/samplers.py, KSAMPLER_NAMES + SAMPLER_NAMES) that are an A1111
# sampler. The *_gpu names only draw their Brownian-tree noise on the GPU. ComfyUI's uni_pc is
# UniPC's bh1 variant and uni_pc_bh2 its bh2; both name our one UniPC (diffusers' default, bh2).
# Names with no A1111 counterpart (ddpm, ipndm, deis, res_multistep, the *_cfg_pp ones, ...)
# stay unknown.
COMFYUI_ALIASES = MappingProxyType(
    {
        "euler": "Euler",
        "euler_ancestral": "Euler a",
        "heun": "Heun",
        "dpm_2": "DPM2",
        "dpm_2_ancestral": "DPM2 a",
        "lms": "LMS",
        "dpm_fast": "DPM fast",
        "dpm_adaptive": "DPM adaptive",
        "dpmpp_2s_ancestral": "DPM++ 2S a",
        "dpmpp_sde": "DPM++ SDE",
        "dpmpp_sde_gpu": "DPM++ SDE",
        "dpmpp_2m": "DPM++ 2M",
        "dpmpp_2m_sde": "DPM++ 2M SDE",
        "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
        "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun",
        "dpmpp_2m_sde_heun_gpu": "DPM++ 2M SDE Heun",
        "dpmpp_3m_sde": "DPM++ 3M SDE",
        "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
        "lcm": "LCM",
        "ddim": "DDIM",
        "uni_pc": "UniPC",
        "uni_pc_bh2": "UniPC",
    }
)

# A ComfyUI sampler name may be followed by one of ComfyUI's schedulers ("dpmpp_2m karras"): the
# scheduler picks the variant of the A1111 name by its suffix. "normal" (evenly spaced timesteps)
# is A1111's default schedule, the plain name. ComfyUI's other schedulers (simple, sgm_uniform,
# ddim_uniform, beta, ...) have no A1111 sampler name and are refused.
COMFYUI_SCHEDULERS = MappingProxyType({"normal": "", "karras": " Karras", "exponential": " Exponential"})


def _folded(name: str) -> str:
    """The lookup key: any case, surrounding and repeated whitespace ignored."""
    return " ".join(name.split()).casefold()


_KNOWN = (*SAMPLERS, *NO_DIFFUSERS_EQUIVALENT)
_LOOKUP = (
    {_folded(name): name for name in _KNOWN}
    | {_folded(alias): target for alias, target in HORDE_ALIASES.items()}
    | {_folded(alias): target for alias, target in COMFYUI_ALIASES.items()}
)
_COMFYUI = {_folded(alias): target for alias, target in COMFYUI_ALIASES.items()}

_ACCEPTED = (
    f"accepted: {', '.join(SAMPLERS)} (any case), AI Horde's k_* names, and ComfyUI's names"
    f" (dpmpp_2m, euler_ancestral, ...), optionally followed by a scheduler ({', '.join(COMFYUI_SCHEDULERS)})"
)


class UnknownSamplerError(ValueError):
    """A sampler name this backend cannot run; the message names it and says why."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _variants(base: str) -> list[str]:
    """The ComfyUI schedulers that select a known variant of ``base``."""
    return [scheduler for scheduler, suffix in COMFYUI_SCHEDULERS.items() if base + suffix in _KNOWN]


def _with_scheduler(name: str, key: str) -> str:
    """Resolve "<ComfyUI sampler> <ComfyUI scheduler>" to its A1111 name, or say what is wrong."""
    sampler, _, scheduler = key.rpartition(" ")
    base = _COMFYUI.get(sampler)
    if base is None:
        raise UnknownSamplerError(name, f"Unknown sampler {name!r}; {_ACCEPTED}")
    if scheduler not in COMFYUI_SCHEDULERS:
        schedulers = ", ".join(COMFYUI_SCHEDULERS)
        raise UnknownSamplerError(
            name, f"Unknown sampler {name!r}: {scheduler!r} is not a scheduler ({schedulers}); {_ACCEPTED}"
        )
    variant = base + COMFYUI_SCHEDULERS[scheduler]
    if variant not in _KNOWN:
        raise UnknownSamplerError(
            name,
            f"Sampler {name!r}: {base} has no {scheduler} variant;"
            f" schedulers accepted after {sampler!r}: {', '.join(_variants(base))}",
        )
    return variant


def canonical_sampler(name: str) -> str:
    """The canonical PICPIK name for ``name``: an A1111 name, a Horde alias or a ComfyUI name
    (with or without a scheduler), in any case. Raises UnknownSamplerError saying why not."""
    key = _folded(name)
    target = _LOOKUP.get(key) or _with_scheduler(name, key)
    reason = NO_DIFFUSERS_EQUIVALENT.get(target)
    if reason is None:
        return target
    label = repr(name) if name.strip() == target else f"{name!r} ({target})"
    raise UnknownSamplerError(name, f"Sampler {label} has no diffusers equivalent ({reason}); {_ACCEPTED}")
