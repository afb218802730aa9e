"""Which Jobs one pipeline call can serve (worker/batching.py): the grouping rules, as tables."""

from __future__ import annotations

import pytest

from openpik.job import ControlUnit, Job, LoraRef, ModelRef, VaeRef
from worker.batching import batch_key, group_with_first, images_per_call, is_full
from worker.celery_app import pool_settings

BUDGET = 8 * 64 * 64
"""A micro-batch budget of eight 64x64 images."""

MODEL = ModelRef(model_id=1, path="/m/1", format="diffusers")
UNIT = ControlUnit(controlnet_id=1, path="/c/1", image="ctl")


def job(**fields) -> Job:
    base = dict(model=MODEL, prompt="an apple", sampler="Euler a", steps=8, seed=1, width=64, height=64)
    return Job(**(base | fields))


# Pairs that one call serves: what differs is taken per image or shapes only one task's inputs.
COMPATIBLE = {
    "prompts": (job(prompt="an apple"), job(prompt="a pear")),
    "negative prompts": (job(negative_prompt="blurry"), job(negative_prompt="")),
    "seeds": (job(seed=1), job(seed=-1)),
    "batch sizes": (job(batch_size=1), job(batch_size=3)),
    "task ids": (job(task_id="a"), job(task_id="b")),
    "translation asked, nothing to translate": (job(translate_prompts=True), job()),
    "txt2img strength is unused": (job(strength=0.3), job(strength=0.9)),
    "init images and their resize modes": (
        job(init_image="a", strength=0.5),
        job(init_image="b", strength=0.5, init_resize_mode="CropAndResize"),
    ),
    "control images, preprocessors, resize modes": (
        job(controlnets=(UNIT,)),
        job(
            controlnets=(
                UNIT.model_copy(update={"image": "other", "preprocessor": "canny", "resize_mode": "ResizeAndFill"}),
            )
        ),
    ),
}

# Pairs that need two calls: the difference is in the shared denoising.
INCOMPATIBLE = {
    "main model": (job(), job(model=MODEL.model_copy(update={"model_id": 2, "path": "/m/2"}))),
    "VAE": (job(), job(vae=VaeRef(vae_id=1, path="/v/1"))),
    "LoRA set": (job(), job(loras=(LoraRef(lora_id=1, path="/l/1", weight=0.5),))),
    "LoRA weight": (
        job(loras=(LoraRef(lora_id=1, path="/l/1", weight=0.5),)),
        job(loras=(LoraRef(lora_id=1, path="/l/1", weight=0.6),)),
    ),
    "width": (job(), job(width=72)),
    "height": (job(), job(height=72)),
    "steps": (job(), job(steps=9)),
    "sampler": (job(), job(sampler="Euler")),
    "CFG": (job(cfg_scale=7), job(cfg_scale=5)),
    "clip skip": (job(clip_skip=1), job(clip_skip=2)),
    "img2img strength": (job(init_image="a", strength=0.5), job(init_image="a", strength=0.6)),
    "txt2img and img2img": (job(), job(init_image="a")),
    "ControlNet or none": (job(), job(controlnets=(UNIT,))),
    "ControlNet model": (
        job(controlnets=(UNIT,)),
        job(controlnets=(UNIT.model_copy(update={"controlnet_id": 2, "path": "/c/2"}),)),
    ),
    "control weight": (job(controlnets=(UNIT,)), job(controlnets=(UNIT.model_copy(update={"weight": 0.5}),))),
    "control mode": (
        job(controlnets=(UNIT,)),
        job(controlnets=(UNIT.model_copy(update={"mode": "ControlNetIsMoreImportant"}),)),
    ),
    "control window": (job(controlnets=(UNIT,)), job(controlnets=(UNIT.model_copy(update={"end": 0.5}),))),
    "number of units": (job(controlnets=(UNIT,)), job(controlnets=(UNIT, UNIT))),
    "Tileable": (job(), job(tileable=True)),
}

# Jobs that always run alone.
NEVER = {
    "a prompt to translate": job(translate_prompts=True, prompt="une pomme rôtie"),
    "a negative prompt to translate": job(translate_prompts=True, negative_prompt="flou, déformé"),
    "a sampler seeded per call (DPM++ SDE)": job(sampler="DPM++ SDE"),
    "a sampler nobody knows": job(sampler="no such sampler"),
    "a task that fills the budget": job(batch_size=8),
    "a task larger than the budget": job(width=512, height=512),
    "inpainting (a mask)": job(init_image="a", mask_image="m"),
}


@pytest.mark.parametrize("a, b", COMPATIBLE.values(), ids=COMPATIBLE.keys())
def test_compatible_jobs_share_a_key(a, b):
    assert batch_key(a, BUDGET) is not None
    assert batch_key(a, BUDGET) == batch_key(b, BUDGET)


@pytest.mark.parametrize("a, b", INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_incompatible_jobs_have_different_keys(a, b):
    assert None not in (batch_key(a, BUDGET), batch_key(b, BUDGET))
    assert batch_key(a, BUDGET) != batch_key(b, BUDGET)


@pytest.mark.parametrize("single", NEVER.values(), ids=NEVER.keys())
def test_some_jobs_always_run_alone(single):
    assert batch_key(single, BUDGET) is None
    assert group_with_first([single, single], 8, BUDGET) == [0]


def test_a_job_field_batching_does_not_know_keeps_its_job_alone_unless_at_its_default():
    class Later(Job):
        mask: str | None = None

    base = dict(model=MODEL, sampler="Euler a", width=64, height=64)
    assert batch_key(Later(**base), BUDGET) == batch_key(Job(**base), BUDGET)
    assert batch_key(Later(**base, mask="m"), BUDGET) is None


def test_without_a_budget_any_batch_size_batches():
    assert images_per_call(job(), 0) > 10**6
    assert batch_key(job(batch_size=8, width=1024, height=1024), 0) is not None


# (jobs, batch_max) -> the group of the first job: order kept, the cap and the budget respected.
GROUPS = [
    ([job(), job(prompt="b"), job(steps=9), job(seed=4)], 8, [0, 1, 3]),
    ([job() for _ in range(10)], 8, list(range(8))),
    ([job() for _ in range(5)], 3, [0, 1, 2]),
    ([job(batch_size=4), job(batch_size=5), job(batch_size=4), job()], 8, [0, 2]),
    ([job(batch_size=3), job(batch_size=5), job(batch_size=1)], 8, [0, 1]),
    ([job(steps=9), job(), job()], 8, [0]),
    ([job(sampler="DPM++ SDE"), job(sampler="DPM++ SDE")], 8, [0]),
]


@pytest.mark.parametrize("jobs, batch_max, expected", GROUPS)
def test_group_with_first(jobs, batch_max, expected):
    assert group_with_first(jobs, batch_max, BUDGET) == expected


def test_a_group_is_full_at_the_task_cap_or_the_image_budget():
    assert is_full([job()] * 3, 3, BUDGET)
    assert not is_full([job()] * 3, 4, BUDGET)
    assert is_full([job(batch_size=5), job(batch_size=3)], 8, BUDGET)
    assert not is_full([job(batch_size=5), job(batch_size=2)], 8, BUDGET)


def test_batching_off_keeps_the_prefork_pool_and_on_runs_one_thread_per_task():
    assert pool_settings(1) == {"worker_pool": "prefork", "worker_concurrency": 1, "worker_prefetch_multiplier": 1}
    assert pool_settings(8) == {"worker_pool": "threads", "worker_concurrency": 8, "worker_prefetch_multiplier": 1}


# --- the batcher: task threads in, one GPU thread (on the stub engine) ---------------------------


def run_in_threads(batcher, jobs: list[Job], hooks=None) -> list:
    """Each Job submitted from its own thread at once; each one's result or error, in order."""
    import threading

    outcomes: list = [None] * len(jobs)

    def task(index: int) -> None:
        hook = (hooks or {}).get(index, lambda done, total: None)
        try:
            outcomes[index] = batcher.run(jobs[index], {}, hook)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=task, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def stub_batcher(batch_max: int, run_together=None):
    from worker.batching import Batcher
    from worker.stub_engine import StubEngine

    engine = StubEngine()
    return Batcher(lambda: engine, batch_max, 30, BUDGET, soft_limit_s=600, run_together=run_together)


def test_the_batcher_runs_a_full_group_as_one_call_and_hands_each_task_its_own_images():
    from worker.batching import _alone

    calls: list[list[str]] = []

    def together(engine, group):
        calls.append(sorted(s.job.task_id for s in group))
        return [_alone(engine, s) for s in group]

    jobs = [job(task_id=str(i), seed=i) for i in range(4)]
    outcomes = run_in_threads(stub_batcher(4, together), jobs)
    assert calls == [["0", "1", "2", "3"]]  # full at 4 tasks: no waiting out the 30 s
    assert [o.seeds for o in outcomes] == [[0], [1], [2], [3]]


def test_a_failed_shared_call_runs_each_task_alone_and_a_cancelled_task_fails_alone():
    from worker.errors import TaskCancelledError

    def failing(engine, group):
        raise RuntimeError("the shared call failed")

    def cancel(done: int, total: int) -> None:
        raise TaskCancelledError()

    jobs = [job(task_id=str(i), seed=i) for i in range(3)]
    outcomes = run_in_threads(stub_batcher(3, failing), jobs, hooks={1: cancel})
    assert isinstance(outcomes[1], TaskCancelledError)
    assert [outcomes[0].seeds, outcomes[2].seeds] == [[0], [2]]
