"""torch.compile (OPENPIK_COMPILE): after the warm-up, LoRAs, sizes and batch sizes never recompile.

Most tests compile with the "eager" backend: dynamo traces and guards exactly as it does for
inductor, so recompiles are counted the same, without generating code. One test runs
inductor. Images are compared with the uncompiled engine's: same seed, same pixels within 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch._dynamo.utils import counters

from openpik.job import ControlUnit, LoraRef
from openpik.settings import Settings
from tests.engine_helpers import pixels, run
from tests.requests import txt2img
from tests.stack import RedisDb, fresh_redis, running_stack, stack_settings, wait_for
from worker.compiled import SLOT, MergedLoras, merge
from worker.engine import Engine
from worker.errors import ModelLoadError
from worker.warmup import warmup_requests

pytestmark = pytest.mark.models

SIZE = 128  # the least warm-up size (worker/warmup.py)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def compiled_engine(catalog, backend: str) -> tuple[Engine, Settings]:
    settings = Settings(device="cpu", compile=True, compile_backend=backend, compile_warmup_size=SIZE)
    return Engine(settings, annotators_dir=catalog.annotators_dir, translator_dir=catalog.translator), settings


@pytest.fixture(scope="module")
def compiled(catalog):
    engine, settings = compiled_engine(catalog, "eager")
    for job, images in warmup_requests(catalog, settings):
        engine.run(job, images)
    return engine


@pytest.fixture(scope="module")
def images(control_image, reference_image):
    return {"control": control_image, "init": reference_image}


def unit(catalog, mode: str = "Balanced") -> tuple[ControlUnit, ...]:
    controlnet = catalog.controlnets[0]
    return (ControlUnit(controlnet_id=controlnet.id, path=str(controlnet.path), image="control", mode=mode),)


STEADY_STATE = {
    "no LoRA": dict(),
    "a peft LoRA": dict(loras={1: 1.0}),
    "a kohya LoRA with text encoder layers and alpha = rank / 2": dict(loras={2: 1.0}),
    "two LoRAs at other weights": dict(loras={3: 0.7, 2: 0.5}),
    "another size": dict(width=192),
    "a non-square batch of 3": dict(height=136, batch_size=3, loras={2: 1.0}),
    "CFG off": dict(cfg_scale=1.0),
    "a ControlNet in another mode and size": dict(controlnets="ControlNetIsMoreImportant", width=136, loras={1: 0.5}),
    "img2img with a ControlNet and CFG off": dict(
        controlnets="Balanced", init_image="init", strength=0.5, cfg_scale=1.0, loras={2: 0.3}
    ),
    "an img2img batch of 2": dict(init_image="init", strength=0.8, batch_size=2),
}


@pytest.mark.parametrize("fields", STEADY_STATE.values(), ids=STEADY_STATE.keys())
def test_after_the_warm_up_nothing_recompiles_and_pixels_match_the_uncompiled_engine(
    compiled, engine, make_job, catalog, images, fields
):
    fields = dict(fields)
    if "controlnets" in fields:
        fields["controlnets"] = unit(catalog, fields["controlnets"])
    job = make_job(**({"width": SIZE, "height": SIZE} | fields))
    before = graphs()
    got = pixels(run(compiled, job, images))
    assert graphs() == before
    expected = pixels(run(engine, job, images))
    assert [image.shape for image in got] == [(job.height, job.width, 3)] * job.batch_size
    assert max(np.abs(a - b).max() for a, b in zip(got, expected)) <= 1


def test_weight_zero_equals_no_lora_and_a_lora_changes_the_image(compiled, make_job):
    baseline, zero, full = (
        pixels(run(compiled, make_job(width=SIZE, height=SIZE, loras=w)))[0] for w in (None, {1: 0.0}, {1: 1.0})
    )
    assert np.array_equal(baseline, zero)
    assert np.abs(full - baseline).max() > 5


def test_lora_files_are_read_once_however_they_are_combined(compiled, make_job):
    run(compiled, make_job(width=SIZE, height=SIZE, loras={1: 1.0, 3: 0.5}))
    reads = compiled.cache.merged_loras.file_reads
    for loras in ({3: 1.0}, {1: 0.2, 3: 0.9}, {1: 1.0}):
        run(compiled, make_job(width=SIZE, height=SIZE, loras=loras))
    assert compiled.cache.merged_loras.file_reads == reads


def test_loras_adding_up_above_the_slot_rank_are_refused_naming_the_setting(compiled, make_job, catalog):
    job = make_job(loras={1: 1.0, 3: 1.0})  # rank 4 + 4 on the same UNet layers
    pipe = compiled.cache.model(job.model).pipe
    with pytest.raises(ModelLoadError, match=r"rank 8, above the compiled slot's 4 .OPENPIK_COMPILE_LORA_RANK"):
        MergedLoras(lora_rank=4, files_kept=4).select(pipe, (), job.loras)


def test_a_lora_outside_the_slot_fails_its_task_and_the_next_task_is_served(compiled, engine, make_job, tmp_path):
    conv = "unet.down_blocks.0.resnets.0.conv1"
    path = tmp_path / "locon.safetensors"
    save_file(
        {f"{conv}.lora_A.weight": torch.ones(4, 32, 3, 3), f"{conv}.lora_B.weight": torch.ones(32, 4, 1, 1)}, str(path)
    )
    outside = make_job(width=SIZE, height=SIZE).model_copy(
        update={"loras": (LoraRef(lora_id=99, path=str(path), weight=1.0),)}
    )
    with pytest.raises(ModelLoadError, match="LoRA 99 trains layers outside the compiled LoRA slot"):
        run(compiled, outside)
    job = make_job(width=SIZE, height=SIZE, loras={1: 1.0})
    assert np.abs(pixels(run(compiled, job))[0] - pixels(run(engine, job))[0]).max() <= 1


def test_merging_concatenates_ranks_and_folds_in_the_weights():
    generator = torch.Generator().manual_seed(0)
    a1, b1, a2, b2 = (torch.randn(shape, generator=generator) for shape in ((2, 6), (5, 2), (3, 6), (5, 3)))
    state = merge([({"attn.to_q": (a1, b1)}, 0.5), ({"attn.to_q": (a2, b2), "attn.to_k": (a2, b2)}, 2.0)])
    down, up = state[f"attn.to_q.lora_A.{SLOT}.weight"], state[f"attn.to_q.lora_B.{SLOT}.weight"]
    assert down.shape == (5, 6) and up.shape == (5, 5)
    assert torch.allclose(up @ down, 0.5 * b1 @ a1 + 2.0 * b2 @ a2, atol=1e-6)
    assert state[f"attn.to_k.lora_A.{SLOT}.weight"].shape == (3, 6)


def test_inductor_swaps_loras_and_sizes_without_recompiling(catalog, engine, make_job):
    compiled, _ = compiled_engine(catalog, "inductor")
    run(compiled, make_job(width=SIZE, height=SIZE, loras={1: 1.0}))
    before = graphs()
    job = make_job(width=192, height=SIZE, batch_size=2, loras={2: 0.6, 3: 1.0})
    got = pixels(run(compiled, job))
    assert graphs() == before
    assert max(np.abs(a - b).max() for a, b in zip(got, pixels(run(engine, job)))) <= 1


@pytest.mark.stack
def test_a_compiled_worker_warms_up_before_its_first_task(tiny_catalog_path, tmp_path):
    env = stack_settings(
        tiny_catalog_path,
        tmp_path,
        RedisDb.COMPILE,
        compile="true",
        compile_backend="eager",
        compile_warmup_size=str(SIZE),
    )
    try:
        with running_stack(env, tmp_path, worker="compiled") as stack:
            gateway, worker = stack.gateway, stack.worker
            wait_for(lambda: "warmed up with 8 requests" in worker.log.read_text(), 180, message="the warm-up")
            answer = gateway.call(txt2img(Width=SIZE, Height=SIZE, SubModelIds=[1]))
            assert answer["RetCode"] == 0, answer
            detail = {"Action": "GetGenerateTaskDetail", "TaskUID": answer["TaskUID"]}
            wait_for(lambda: gateway.call(detail)["TaskStatus"] == "Finished", 120, message="the task")
            log = worker.log.read_text()
            assert "warm-up failed" not in log
            assert log.index("warmed up with 8 requests") < log.index(answer["TaskUID"])
    finally:
        fresh_redis(RedisDb.COMPILE)
