"""Cross-request batching (worker/batching.py, worker/batch_call.py): the same pixels as alone
within the batched kernels' last bits, identical for the same composition, each task's own
errors; end to end, a batching worker's tasks and one killed mid-batch."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from tests.requests import txt2img
from tests.stack import RedisDb, RedisServer, download_image, running_stack, stack_settings, wait_for

LEVEL_SHARE = 0.02
"""Batched vs alone: at most this share of pixels more than 1 grey level apart. Measured on the
tiny random-weight models (README, "Cross-request batching"): each batched operator differs by
under 1e-6, but an untrained network amplifies that over the steps, and a few images per
hundred reach several levels in a few pixels."""


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image).astype(int) for image in result.images]


def far_share(batched: list[np.ndarray], alone: list[np.ndarray]) -> float:
    """The share of pixels more than 1 grey level apart."""
    assert [a.shape for a in batched] == [a.shape for a in alone]
    return float(np.mean([np.mean(np.abs(b - a) > 1) for b, a in zip(batched, alone, strict=True)]))


def members(jobs, images=None):
    from worker.batch_call import Member

    return [Member(job, images or {}) for job in jobs]


@pytest.mark.models
def test_batched_images_equal_each_task_alone_within_a_grey_level_and_repeat_exactly(engine, make_job):
    from worker.batch_call import run_batch

    jobs = [
        make_job(prompt="an apple", seed=-1, steps=4),
        make_job(prompt="a pear on a table", seed=2, batch_size=2, steps=4),
        make_job(prompt="a red house", negative_prompt="", seed=3, steps=4),  # no negative: its own call
        make_job(prompt="(an apple:1.3) and a pear", seed=4, steps=4),  # weighted: embeddings
    ]
    batched = run_batch(engine, members(jobs))
    again = run_batch(engine, members([j.model_copy(update={"seed": r.seeds[0]}) for j, r in zip(jobs, batched)]))
    for job, result, repeat in zip(jobs, batched, again, strict=True):
        alone = engine.run(job.model_copy(update={"seed": result.seeds[0]}), {})
        assert result.seeds == alone.seeds and len(result.images) == job.batch_size
        assert far_share(pixels(result), pixels(alone)) <= LEVEL_SHARE
        assert all(np.array_equal(x, y) for x, y in zip(pixels(result), pixels(repeat), strict=True))


@pytest.mark.models
def test_img2img_with_a_controlnet_batches_per_image_inputs_and_a_bad_input_fails_alone(
    engine, make_job, catalog, reference_image, control_image
):
    from models_registry.resolve import control_unit
    from worker.batch_call import run_batch
    from worker.errors import InvalidInputError

    none = next(p for p in catalog.preprocessors if p.detector == "none")

    def job(init: str, control: str, seed: int):
        unit = control_unit(catalog, catalog.controlnets[0].id, none.id, control)
        return make_job(init_image=init, strength=0.6, controlnets=(unit,), seed=seed, steps=4)

    images = {"ref": reference_image, "ctl": control_image, "ref2": control_image, "ctl2": reference_image}
    jobs = [job("ref", "ctl", 1), job("ref2", "ctl2", 2), job("ref", "gone", 3), job("ref", "ctl", 4)]
    outcomes = run_batch(engine, members(jobs, images))
    assert isinstance(outcomes[2], InvalidInputError)
    for index in (0, 1, 3):
        alone = engine.run(jobs[index], images)
        assert far_share(pixels(outcomes[index]), pixels(alone)) <= LEVEL_SHARE
    assert far_share(pixels(outcomes[0]), pixels(outcomes[1])) > 0.5  # their own inputs, not the first's


@pytest.mark.models
def test_a_member_whose_hook_raises_leaves_the_call_and_the_others_keep_their_pixels(engine, make_job):
    from worker.batch_call import Member, run_batch
    from worker.errors import TaskCancelledError

    jobs = [make_job(seed=seed, steps=4) for seed in (1, 2, 3)]
    plain = run_batch(engine, members(jobs))

    def cancel_at_step_3(done: int, total: int) -> None:
        if done == 3:
            raise TaskCancelledError()

    seen: list[int] = []
    outcomes = run_batch(
        engine,
        [
            Member(jobs[0], {}, lambda done, total: seen.append(done)),
            Member(jobs[1], {}, cancel_at_step_3),
            *members(jobs[2:]),
        ],
    )
    assert isinstance(outcomes[1], TaskCancelledError) and seen == list(range(1, 5))
    for index in (0, 2):
        assert all(np.array_equal(x, y) for x, y in zip(pixels(outcomes[index]), pixels(plain[index]), strict=True))


# --- end to end: a worker with OPENPIK_BATCH_MAX=8 ------------------------------------------------

BATCH = 8
VISIBILITY_TIMEOUT_S = 20


@pytest.fixture
def batching_env(tiny_catalog_path, tmp_path):
    """A Redis of our own (every database of the shared one is taken) and batching settings."""
    server = RedisServer(tmp_path / "redis").start()
    env = stack_settings(
        tiny_catalog_path,
        tmp_path,
        RedisDb.BENCH,  # replaced by our own server's URL below
        batch_max=str(BATCH),
        batch_wait_ms="3000",
        progress_interval_s="0",
        visibility_timeout_s=str(VISIBILITY_TIMEOUT_S),
    ) | {"OPENPIK_REDIS_URL": server.url}
    yield env
    server.stop()


def submit_all(gateway, bodies: list[dict]) -> list[str]:
    """The bodies submitted at once, from as many threads; their TaskUIDs in order."""
    answers: list[dict] = [{}] * len(bodies)

    def submit(index: int) -> None:
        answers[index] = gateway.call(bodies[index])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [answer["TaskUID"] for answer in answers]


def details(gateway, tasks: list[str]) -> list[dict]:
    listed = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": tasks})["TaskDetailList"]
    by_task = {item["TaskUID"]: item for item in listed}
    return [by_task[task] for task in tasks]


def all_ended(gateway, tasks: list[str]) -> list[dict] | None:
    items = details(gateway, tasks)
    return items if all(item["Status"] in ("Finished", "Error") for item in items) else None


def batched_calls(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"one call for (\d+) tasks", log)]


def download(url: str) -> np.ndarray:
    return np.asarray(download_image(url)).astype(int)


@pytest.mark.stack
@pytest.mark.models
def test_eight_concurrent_compatible_tasks_run_as_one_call_each_with_its_own_images_and_record(
    batching_env, tmp_path, engine, catalog
):
    from models_registry.resolve import default_vae_ref, model_ref
    from openpik.job import Job

    prompts = ["an apple", "a pear", "a red house", "a cat", "a boat", "a tree", "the sea", "a lamp"]
    bodies = [txt2img(PositivePrompts=[p], Seed=10 + i, Steps=4) for i, p in enumerate(prompts)]
    with running_stack(batching_env, tmp_path) as stack:
        tasks = submit_all(stack.gateway, bodies)  # queued before the worker starts: it takes all 8 at once
        worker = stack.start_worker("batching")
        ended = wait_for(lambda: all_ended(stack.gateway, tasks), 120, message="the tasks to end")
        assert [item["Status"] for item in ended] == ["Finished"] * BATCH
        assert [item["Seeds"] for item in ended] == [[10 + i] for i in range(BATCH)]
        images = [download(item["ImgList"][0]) for item in ended]
        assert batched_calls(worker.log.read_text()) == [BATCH]
    model = catalog.main_model(1)
    for prompt, seed, image in zip(prompts, range(10, 18), images, strict=True):
        alone = Job(
            model=model_ref(model),
            vae=default_vae_ref(catalog, model),
            prompt=prompt,
            sampler="Euler a",
            steps=4,
            cfg_scale=7.5,
            seed=seed,
            width=64,
            height=64,
        )
        assert far_share([image], pixels(engine.run(alone, {}))) <= LEVEL_SHARE


@pytest.mark.stack
@pytest.mark.models
def test_a_worker_killed_mid_batch_gets_every_task_of_the_batch_redelivered(batching_env, tmp_path):
    bodies = [txt2img(PositivePrompts=[f"an apple {i}"], Seed=i, Steps=50) for i in range(BATCH)]
    with running_stack(batching_env, tmp_path) as stack:
        tasks = submit_all(stack.gateway, bodies)
        first = stack.start_worker("first")

        def all_running_with_progress() -> bool:
            items = details(stack.gateway, tasks)
            return all(item["Status"] == "Running" for item in items) and any(item["Progress"] > 0 for item in items)

        wait_for(all_running_with_progress, 120, interval=0.2, message="the batch to be running")
        assert batched_calls(first.log.read_text()) == [BATCH]
        first.kill()
        stack.start_worker("second")
        ended = wait_for(lambda: all_ended(stack.gateway, tasks), 240, message="the redelivered tasks to end")
        assert [item["Status"] for item in ended] == ["Finished"] * BATCH
        redis_records = [stack_record(batching_env, task) for task in tasks]
        assert all(r["worker"].startswith("second@") and r["attempts"] == "2" for r in redis_records), redis_records


def stack_record(env: dict[str, str], task: str) -> dict:
    import redis

    from openpik.task_records import record_key

    raw = redis.Redis.from_url(env["OPENPIK_REDIS_URL"]).hgetall(record_key(task))
    return {k.decode(): v.decode() for k, v in raw.items()}
