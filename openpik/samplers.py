"""The sampler names a client may send, and how each resolves to one canonical name.

The gateway checks names with this table before anything is queued; the worker's
worker/samplers.py builds a diffusers scheduler for each canonical name. Light on purpose.
"""

from __future__ import annotations

SAMPLERS: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "LMS",
    "LMS Karras",
    "Heun",
    "DPM2",
    "DPM2 Karras",
    "DPM2 a",
    "DPM2 a Karras",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM++ 2S a",
    "DPM++ 2S a Karras",
    "DDIM",
    "PLMS",
    "UniPC",
    "LCM",
)
"""The canonical (A1111) names this backend runs, in the order lists show them."""

NO_DIFFUSERS_EQUIVALENT = ("DPM fast", "DPM adaptive")
"""A1111 names that diffusers has no scheduler for; they are rejected, not approximated."""

# AI Horde's sampler names (KNOWN_SAMPLERS). Horde asks for Karras sigmas with a separate
# `karras` flag, so every alias names the non-Karras sampler; its "lcm" and "DDIM" already match
# canonical names. "dpmsolver" is CompVis' DPM-Solver sampler: multistep DPM-Solver++, order 2.
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
    "k_dpm_fast": "DPM fast",
    "k_dpm_adaptive": "DPM adaptive",
}

_LOOKUP = {name.casefold(): name for name in (*SAMPLERS, *NO_DIFFUSERS_EQUIVALENT)} | {
    alias.casefold(): target for alias, target in HORDE_ALIASES.items()
}

_ACCEPTED = ", ".join([*SAMPLERS, *(alias for alias, target in HORDE_ALIASES.items() if target in SAMPLERS)])


class UnknownSamplerError(ValueError):
    """A sampler name this backend cannot run; the message names it and says why."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def canonical_sampler(name: str) -> str:
    """The canonical PICPIK name for ``name`` (any case, surrounding whitespace, Horde aliases)."""
    canonical = _LOOKUP.get(name.strip().casefold())
    if canonical in SAMPLERS:
        return canonical
    if canonical is not None:
        label = repr(name) if name.strip() == canonical else f"{name!r} ({canonical})"
        raise UnknownSamplerError(name, f"Sampler {label} has no diffusers equivalent; accepted: {_ACCEPTED}")
    raise UnknownSamplerError(name, f"Unknown sampler {name!r}; accepted: {_ACCEPTED}")
