"""torch.compile (OPENPIK_COMPILE): after the warm-up, LoRAs, sizes and batch sizes never recompile.

Most tests compile with the "eager" backend: dynamo traces and guards exactly as it does for
inductor, so recompiles are counted the same, without generating code. One test runs
inductor. Images are compared with the uncompiled engine's: same seed, same pixels within 1.
The tests that depend on a family's shapes or LoRA layouts run for SD1.5 and SDXL, in one
compiled engine warmed up as a worker serving both is.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from worker.compiled import SLOT, MergedLoras, merge, read_factors
from worker.engine import Engine
from worker.errors import ModelLoadError
from worker.warmup import warmup_requests

pytestmark = pytest.mark.models

SIZE = 128  # the least warm-up size (worker/warmup.py)


@dataclass(frozen=True)
class Family:
    """A family's tiny main model and LoRAs by role (ids of the tiny catalog)."""

    model_id: int
    loras: dict[str, int]


FAMILIES = {
    # peft: UNet only; kohya: UNet and text encoder, alpha = rank / 2; other: peft, both.
    "sd15": Family(model_id=1, loras={"peft": 1, "kohya": 2, "other": 3}),
    # kohya: SGM UNet names, lora_te1_/lora_te2_, alpha = rank / 2; peft: UNet and both encoders.
    "sdxl": Family(model_id=11, loras={"peft": 12, "kohya": 11, "other": 12}),
}


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def compiled_engine(catalog, backend: str) -> tuple[Engine, Settings]:
    settings = Settings(device="cpu", compile=True, compile_backend=backend, compile_warmup_size=SIZE)
    return Engine(settings, annotators_dir=catalog.annotators_dir, translator_dir=catalog.translator), settings


@pytest.fixture(scope="module")
def compiled(catalog):
    """Warmed up as a worker is by default: the catalog's first model of each family."""
    engine, settings = compiled_engine(catalog, "eager")
    for job, images in warmup_requests(catalog, settings):
        engine.run(job, images)
    return engine


@pytest.fixture(scope="module")
def images(control_image, reference_image):
    return {"control": control_image, "init": reference_image}


@pytest.fixture(scope="module", params=FAMILIES.keys())
def family_job(request, make_job, catalog):
    """Jobs on one family's model, LoRAs named by role and ControlNet modes by name."""
    family = FAMILIES[request.param]
    architecture = catalog.main_model(family.model_id).architecture

    def make(loras: dict[str, float] | None = None, controlnets: str | None = None, **fields):
        if controlnets:
            fields["controlnets"] = unit(catalog, architecture, controlnets)
        by_id = {family.loras[role]: weight for role, weight in (loras or {}).items()}
        return make_job(model_id=family.model_id, loras=by_id, **({"width": SIZE, "height": SIZE, "steps": 4} | fields))

    return make


def unit(catalog, architecture: str, mode: str = "Balanced") -> tuple[ControlUnit, ...]:
    controlnet = next(c for c in catalog.controlnets if c.architecture == architecture)
    return (ControlUnit(controlnet_id=controlnet.id, path=str(controlnet.path), image="control", mode=mode),)


STEADY_STATE = {
    "no LoRA": dict(),
    "a peft LoRA": dict(loras={"peft": 1.0}),
    "a kohya LoRA with text encoder layers and alpha = rank / 2": dict(loras={"kohya": 1.0}),
    "two LoRAs at other weights": dict(loras={"other": 0.7, "kohya": 0.5}),
    "another size": dict(width=192),
    "a non-square batch of 3": dict(height=136, batch_size=3, loras={"kohya": 1.0}),
    "CFG off": dict(cfg_scale=1.0),
    "a ControlNet in another mode and size": dict(
        controlnets="ControlNetIsMoreImportant", width=136, loras={"peft": 0.5}
    ),
    "img2img with a ControlNet and CFG off": dict(
        controlnets="Balanced", init_image="init", strength=0.5, cfg_scale=1.0, loras={"kohya": 0.3}
    ),
    "an img2img batch of 2": dict(init_image="init", strength=0.8, batch_size=2),
}


@pytest.mark.parametrize("fields", STEADY_STATE.values(), ids=STEADY_STATE.keys())
def test_after_the_warm_up_nothing_recompiles_and_pixels_match_the_uncompiled_engine(
    compiled, engine, family_job, images, fields
):
    job = family_job(**fields)
    before = graphs()
    got = pixels(run(compiled, job, images))
    assert graphs() == before
    expected = pixels(run(engine, job, images))
    assert [image.shape for image in got] == [(job.height, job.width, 3)] * job.batch_size
    assert max(np.abs(a - b).max() for a, b in zip(got, expected)) <= 1


def test_weight_zero_equals_no_lora_and_a_lora_changes_the_image(compiled, family_job):
    baseline, zero, full = (
        pixels(run(compiled, family_job(loras=w)))[0] for w in (None, {"kohya": 0.0}, {"kohya": 1.0})
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


def test_sdxl_lora_files_of_both_layouts_cover_the_unet_and_both_text_encoders(compiled, catalog, make_job):
    sdxl = FAMILIES["sdxl"]
    unet_config = compiled.cache.model(make_job(model_id=sdxl.model_id).model).pipe.unet.config
    kohya, peft = (read_factors(str(catalog.lora(sdxl.loras[role]).path), unet_config) for role in ("kohya", "peft"))
    assert {component: sorted(factors) for component, factors in kohya.items()} == {
        component: sorted(factors) for component, factors in peft.items()
    }
    assert all(kohya[component] for component in ("unet", "text_encoder", "text_encoder_2"))


def test_each_family_warms_up_with_a_controlnet_of_its_own(catalog):
    requests = warmup_requests(catalog, Settings(compile_warmup_size=SIZE))
    models = {job.model.model_id: job.model.architecture for job, _ in requests}
    assert models == {1: "sd15", 11: "sdxl"}
    units = {(job.model.architecture, unit.controlnet_id) for job, _ in requests for unit in job.controlnets}
    assert {(arch, catalog.controlnet(cid).architecture) for arch, cid in units} == {("sd15", "sd15"), ("sdxl", "sdxl")}
    assert len(requests) == 16


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
        compile_warmup_models="[1]",  # one family: the in-process tests cover warming both
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
