"""Several compatible Jobs -> one diffusers call (cross-request batching, worker/batching.py).

The Jobs share everything ``worker.batching.batch_key`` compares (model, LoRAs, size, steps,
sampler, CFG, ControlNet units...); what is left differs per image and diffusers takes it per
image: one prompt (or prompt embedding) per image, one generator per image seeded as the Job
alone seeds it, one init image and one control image per unit per image. The pipeline is built
as ``Engine.run`` builds it for the first Job, so each image is computed as it would be alone,
up to the last bits of batched kernels (README, "Cross-request batching").

Each member keeps its own fate: a member whose inputs fail (an unreadable control image) gets
that error and stays out of the call; a member whose progress hook raises (cancelled, past its
time limit) is dropped at that step while the others go on; the call stops early only when no
member is left. What the shared call itself raises goes to the caller, which runs the members
alone (worker/batching.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from openpik.job import Job
from worker.engine import Engine, _convolution_models, _kind
from worker.families import CONTROL_IMAGE_ARGUMENT
from worker.interface import GenerationResult, ProgressHook, image_seeds
from worker.prompts import prompt_arguments
from worker.tiling import circular_padding

Outcome = GenerationResult | Exception
"""What one member of a batched call ends with: its images, or the error that ended it."""

PLAIN_PROMPT_KEYS = frozenset({"prompt", "negative_prompt", "clip_skip"})
"""prompt_arguments' keys for prompts diffusers encodes itself (worker/prompts.py plain_arguments)."""


@dataclass
class Member:
    """One task's part of a batched call."""

    job: Job
    images: Mapping[str, Image.Image]
    on_progress: ProgressHook | None = None


@dataclass
class _Prepared:
    index: int
    member: Member
    seeds: list[int]
    prompts: dict
    control: dict
    call: dict
    dropped: Exception | None = field(default=None)


class _NoMemberLeft(Exception):
    """Every member of the call was dropped: no step is worth running."""


def run_batch(engine: Engine, members: list[Member]) -> list[Outcome]:
    """Each member's outcome, in order. All members must share one ``batch_key``."""
    first = members[0].job
    loaded = engine.cache.model(first.model)
    engine.cache.select_loras(loaded, first.loras)
    outcomes: list[Outcome | None] = [None] * len(members)
    prepared: list[_Prepared] = []
    for index, member in enumerate(members):
        try:
            prepared.append(_prepare(engine, loaded, index, member))
        except Exception as exc:  # this member's input: the others still run
            outcomes[index] = exc
    for group in _prompt_groups(prepared).values():
        for item, outcome in zip(group, _call(engine, loaded, group), strict=True):
            outcomes[item.index] = outcome
    assert all(outcome is not None for outcome in outcomes)  # each member prepared and called, or failed
    return cast(list[Outcome], outcomes)


def _prepare(engine: Engine, loaded, index: int, member: Member) -> _Prepared:
    """What the member's images need, computed as ``Engine.run`` computes it for the Job alone."""
    job = member.job
    seeds = image_seeds(job.seed, job.batch_size)
    prompts = prompt_arguments(
        loaded.pipe, job.model.architecture, job.prompt, job.negative_prompt, job.clip_skip, engine.prompt_weighting
    )
    control = engine._control_arguments(job, member.images)
    call = engine._call_arguments(job, member.images, seeds)
    return _Prepared(index, member, seeds, prompts, control, call)


def _prompt_signature(prompts: dict) -> tuple:
    """Prompt arguments that can share one call: plain text with or without a negative prompt,
    or embeddings of the same shapes (long or weighted prompts)."""
    if set(prompts) <= PLAIN_PROMPT_KEYS:
        return ("plain", prompts["negative_prompt"] is None, prompts["clip_skip"])
    return tuple(sorted((k, tuple(v.shape) if isinstance(v, torch.Tensor) else v) for k, v in prompts.items()))


def _prompt_groups(prepared: list[_Prepared]) -> dict[tuple, list[_Prepared]]:
    groups: dict[tuple, list[_Prepared]] = {}
    for item in prepared:
        groups.setdefault(_prompt_signature(item.prompts), []).append(item)
    return groups


def _call(engine: Engine, loaded, group: list[_Prepared]) -> list[Outcome]:
    """One pipeline call for ``group``'s images, split back per member."""
    first = group[0].member.job
    pipe = engine._pipeline(first, loaded, group[0].seeds[0])
    arguments = _merged_call(group) | _merged_prompts(group) | _merged_control(group, first)
    arguments["callback_on_step_end"] = _progress(group)
    try:
        with torch.inference_mode(), circular_padding(_convolution_models(pipe), enabled=first.tileable):
            images = pipe(**arguments).images
    except _NoMemberLeft:
        images = []
    outcomes: list[Outcome] = []
    start = 0
    for item in group:
        count = len(item.seeds)
        if item.dropped is not None:
            outcomes.append(item.dropped)
        else:
            outcomes.append(GenerationResult(images=images[start : start + count], seeds=item.seeds))
        start += count
    return outcomes


def _per_image(group: list[_Prepared], value) -> list:
    """``value(item)`` repeated for each of the item's images, over the group."""
    return [value(item) for item in group for _ in item.seeds]


def _merged_call(group: list[_Prepared]) -> dict:
    """The first member's call arguments with one generator (and init image) per image."""
    call = dict(group[0].call)
    call["generator"] = [generator for item in group for generator in item.call["generator"]]
    call["num_images_per_prompt"] = 1
    if "image" in call and "strength" in call:  # img2img: the init image is per member
        call["image"] = _per_image(group, lambda item: item.call["image"])
    return call


def _merged_prompts(group: list[_Prepared]) -> dict:
    """Per-image prompts: text lists for plain prompts, stacked embeddings otherwise."""
    first = group[0].prompts
    if set(first) <= PLAIN_PROMPT_KEYS:
        negative = (
            None if first["negative_prompt"] is None else _per_image(group, lambda i: i.prompts["negative_prompt"])
        )
        return {
            "prompt": _per_image(group, lambda item: item.prompts["prompt"]),
            "negative_prompt": negative,
            "clip_skip": first["clip_skip"],
        }
    return {
        key: torch.cat(_per_image(group, lambda item, key=key: item.prompts[key]))
        if isinstance(value, torch.Tensor)
        else value
        for key, value in first.items()
    }


def _merged_control(group: list[_Prepared], first: Job) -> dict:
    """Per unit, one control image per image (a batch tensor); weights and windows are shared (batch_key)."""
    control = dict(group[0].control)
    if not control:
        return control
    argument = CONTROL_IMAGE_ARGUMENT[_kind(first)]
    units = len(control[argument])
    control[argument] = [
        _as_tensor(_per_image(group, lambda item, u=u: item.control[argument][u])) for u in range(units)
    ]
    return control


def _as_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Several images for one ControlNet unit: diffusers refuses a list per unit with several
    units, but takes a batch tensor, made here exactly as its image processor makes one from PIL."""
    return VaeImageProcessor.numpy_to_pt(VaeImageProcessor.pil_to_numpy(images))


def _progress(group: list[_Prepared]):
    """Each member's progress from the shared steps; a hook that raises drops its member there."""

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        total = max(getattr(pipe, "num_timesteps", 0) or 0, step + 1)
        for item in group:
            if item.dropped is None and item.member.on_progress is not None:
                try:
                    item.member.on_progress(step + 1, total)
                except Exception as exc:
                    item.dropped = exc
        if all(item.dropped is not None for item in group):
            raise _NoMemberLeft()
        return callback_kwargs

    return callback
