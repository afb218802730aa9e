"""GPU throughput of the standard requests: plain diffusers against our worker path, one run.

The worker path runs as deployed by default and with OPENPIK_COMPILE (after its warm-up,
whose duration is reported).

    python bench/gpu.py [--repeats 5] [--family sdxl]   (on a machine with CUDA; writes var/bench/gpu.json)

Not part of `make bench` or the tests: it exits at once without CUDA. float16, on the
full-size random-weight sets (bench/full_size.py, built on first use). Per family:

- SD1.5: 512x512, 20 steps, img2img at strength 0.75 (15 steps run), one ControlNet, CFG 7,
  batch 1 and 8. About 36 TFLOP per image, so an H100 (989 dense bf16/fp16 TFLOP/s) has a
  floor near 37 ms per image.
- SDXL: 1024x1024, 20 steps, txt2img, CFG 7, batch 1 and 2 (2 x 1024x1024 is the worker's
  micro-batch, OPENPIK_MICRO_BATCH_PIXELS: a larger batch runs in chunks there but not in
  plain diffusers). About 281 TFLOP per image (13.5 per CFG step, 10.5 for the VAE decode,
  counted with torch's FlopCounterMode), a floor near 0.28 s per image on an H100. The VAE
  runs in float32 while decoding on both paths (its config's force_upcast).

Achieved TFLOP/s = TFLOP per image x images/s.

The `batching` step (`--step batching`) runs the standard request at batch 1 as 16 concurrent
tasks (16 threads, different seeds) on one Engine: one after another (batching off, the
default worker), and through the cross-request batcher (worker/batching.py, OPENPIK_BATCH_MAX=16,
within the micro-batch budget: 8 images per call at 512x512, 2 at 1024x1024); images/s,
achieved TFLOP/s, and the largest pixel difference between the two.

The `oom` step (`--step oom`) provokes real CUDA out-of-memory errors on the SD1.5 set, through
the policy the generate task calls (worker/oom.py) on one Engine: a huge batch denoised whole
and decoded untiled runs out of memory, is retried with half the micro-batch and VAE tiling;
the same request with the GPU filled by a ballast tensor fails twice and ends as 1002; after
each, the next (standard) task runs on the same engine at its own settings and gives the same
pixels as before the errors: the worker serves on without a restart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CFG = 7.0
STEPS = 20
STEPS_RUN = ("throughput", "batching", "oom")
CONCURRENT = 16
"""Tasks submitted at once in the `batching` step."""


@dataclass(frozen=True)
class Standard:
    """A family's standard request."""

    family: str
    size: int
    strength: float | None
    """img2img strength; None: txt2img."""
    controlnet: bool
    batches: tuple[int, ...]
    tflop_per_image: float
    plain_pipeline: str
    """The diffusers pipeline a script would use for it."""
    load_options: dict

    @property
    def steps_run(self) -> int:
        return int(STEPS * self.strength) if self.strength else STEPS


STANDARDS = {
    "sd15": Standard(
        "sd15",
        size=512,
        strength=0.75,
        controlnet=True,
        batches=(1, 8),
        tflop_per_image=36.0,
        plain_pipeline="StableDiffusionControlNetImg2ImgPipeline",
        load_options={"safety_checker": None, "requires_safety_checker": False},
    ),
    "sdxl": Standard(
        "sdxl",
        size=1024,
        strength=None,
        controlnet=False,
        batches=(1, 2),
        tflop_per_image=281.0,
        plain_pipeline="StableDiffusionXLPipeline",
        load_options={"add_watermarker": False},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--family", action="append", choices=sorted(STANDARDS), help="default: every family")
    parser.add_argument("--step", action="append", choices=STEPS_RUN, help="default: every step")
    args = parser.parse_args()
    steps = args.step or list(STEPS_RUN)

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU; the CPU benchmarks are `make bench`")
    from bench.full_size import ensure_full_size_models
    from models_registry.catalog import load_catalog

    paths = (
        ("plain diffusers", _plain, {}),
        ("OpenPik worker", _worker, {}),
        ("OpenPik compiled", _worker, {"compile": True}),
    )
    rows = []
    families = (args.family or list(STANDARDS)) if "throughput" in steps else []
    for family in families:
        standard = STANDARDS[family]
        catalog = load_catalog(ensure_full_size_models(family))
        images = _inputs(standard.size)
        for batch in standard.batches:
            for path, make, options in paths:
                run = make(standard, catalog, images, batch, **options)
                rows.append(_row(standard, path, batch, _time(run, args.repeats)))
                del run  # the next path loads its own copy of the model
                torch.cuda.empty_cache()
    for family in (args.family or list(STANDARDS)) if "batching" in steps else []:
        standard = STANDARDS[family]
        rows += _batching(standard, load_catalog(ensure_full_size_models(family)), _inputs(standard.size), args.repeats)
        torch.cuda.empty_cache()
    oom = _out_of_memory(load_catalog(ensure_full_size_models("sd15"))) if "oom" in steps else []
    out = REPO / "var" / "bench" / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows, "oom": oom}, indent=2))
    for case in oom:
        print(
            f"oom: {case['case']:44} {case['outcome']:18} out-of-memory errors {case['out_of_memory']}  "
            f"{case['seconds']:6.1f} s  peak {case['peak_gib']:6.1f} GiB  "
            f"held after {case['held_after_gib']:5.1f} GiB  settings restored {case['settings_restored']}  "
            f"pixels vs before the errors: max difference {case['max_pixel_difference_from_before']}"
        )
    print(f"{'family':6} {'path':26} {'batch':>5} {'s/task':>8} {'images/s':>9} {'ms/step':>8} {'TFLOP/s':>8}")
    for row in rows:
        print(
            f"{row['family']:6} {row['path']:26} {row['batch']:5} {row['seconds']:8.3f} {row['images_per_s']:9.2f} "
            f"{row['ms_per_step']:8.1f} {row['tflops']:8.1f}"
        )
    print(f"written to {out}")


def _inputs(size: int):
    from PIL import Image, ImageDraw

    reference = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(reference).ellipse((size // 5, size // 5, size * 4 // 5, size * 4 // 5), fill="red")
    control = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(control).rectangle((size // 8, size // 8, size * 7 // 8, size * 7 // 8), outline="white", width=8)
    return {"ref": reference, "ctl": control}


def _plain(standard: Standard, catalog, images, batch: int):
    import diffusers
    import torch
    from diffusers import ControlNetModel, EulerAncestralDiscreteScheduler

    model = catalog.main_models[0]
    controlnet = (
        {"controlnet": ControlNetModel.from_pretrained(catalog.controlnets[0].path, dtype=torch.float16)}
        if standard.controlnet
        else {}
    )
    pipe = getattr(diffusers, standard.plain_pipeline).from_pretrained(
        model.path, **controlnet, dtype=torch.float16, **standard.load_options
    )
    pipe = pipe.to("cuda")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    inputs = {}
    if standard.strength:
        inputs |= {"image": images["ref"], "strength": standard.strength}
    else:
        inputs |= {"width": standard.size, "height": standard.size}
    if standard.controlnet:
        inputs["control_image" if standard.strength else "image"] = images["ctl"]

    def run():
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
        pipe(
            "an apple",
            **inputs,
            num_inference_steps=STEPS,
            guidance_scale=CFG,
            num_images_per_prompt=batch,
            generator=generators,
        )

    return run


def _worker(standard: Standard, catalog, images, batch: int, compile: bool = False):
    from openpik.settings import Settings
    from worker.engine import Engine
    from worker.warmup import warmup_requests

    settings = Settings(device="cuda", compile=compile, compile_warmup_size=standard.size)
    engine = Engine(settings, annotators_dir=catalog.annotators_dir)
    if compile:
        started = time.perf_counter()
        for warmup_job, warmup_images in warmup_requests(catalog, settings):
            engine.run(warmup_job, warmup_images)
        print(f"{standard.family} compiled warm-up: {time.perf_counter() - started:.1f} s", flush=True)
    job = _standard_job(standard, catalog, batch)
    return lambda: engine.run(job, images)


def _batching(standard: Standard, catalog, images, repeats: int) -> list[dict]:
    """CONCURRENT batch-1 tasks of the standard request, one after another and batched."""
    import threading

    from openpik.settings import Settings
    from worker.batching import Batcher
    from worker.engine import Engine

    engine = Engine(Settings(device="cuda"), annotators_dir=catalog.annotators_dir)
    batcher = Batcher(lambda: engine, CONCURRENT, 0.05, engine.micro_batch_pixels, soft_limit_s=3600)
    jobs = [_standard_job(standard, catalog, 1).model_copy(update={"seed": seed}) for seed in range(CONCURRENT)]
    outputs: dict[str, list] = {}

    def one_at_a_time():
        outputs["off"] = [engine.run(job, images) for job in jobs]

    def batched():
        results: list = [None] * CONCURRENT

        def task(index: int) -> None:
            results[index] = batcher.run(jobs[index], images, lambda done, total: None)

        threads = [threading.Thread(target=task, args=(i,)) for i in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outputs["on"] = results

    rows = [
        _row(standard, f"{CONCURRENT} tasks, batching off", CONCURRENT, _time(one_at_a_time, repeats)),
        _row(standard, f"{CONCURRENT} tasks, batching on", CONCURRENT, _time(batched, repeats)),
    ]
    difference = max(
        int(np.abs(_pixels(on).astype(int) - _pixels(off)).max())
        for on, off in zip(outputs["on"], outputs["off"], strict=True)
    )
    print(f"{standard.family} batching: max pixel difference batched vs alone {difference}", flush=True)
    rows[1]["max_pixel_difference"] = difference
    return rows


def _standard_job(standard: Standard, catalog, batch: int):
    from models_registry.resolve import control_unit, model_ref
    from openpik.job import Job

    none = next(p for p in catalog.preprocessors if p.detector == "none")
    reference = {"init_image": "ref", "strength": standard.strength} if standard.strength else {}
    controlnets = (control_unit(catalog, catalog.controlnets[0].id, none.id, "ctl"),) if standard.controlnet else ()
    return Job(
        model=model_ref(catalog.main_models[0]),
        prompt="an apple",
        sampler="Euler a",
        steps=STEPS,
        cfg_scale=CFG,
        seed=0,
        width=standard.size,
        height=standard.size,
        batch_size=batch,
        controlnets=controlnets,
        **reference,
    )


OOM_SIZE = 2560
"""16 images of OOM_SIZE^2 denoised at once and decoded untiled need far more than an H200's
139 GiB in the VAE decoder alone (one 256-channel activation at full size: 54 GB in float16);
8 at a time, decoded tile by tile, fit."""
OOM_BALLAST_MARGIN = 256 * 2**20
"""What the ballast leaves free: too little for any request, so the retry fails too (1002)."""


def _out_of_memory(catalog) -> list[dict]:
    import torch

    from models_registry.resolve import model_ref
    from openpik.job import Job
    from openpik.settings import Settings
    from worker.engine import Engine
    from worker.errors import task_error
    from worker.oom import release_gpu_memory, run_with_oom_retry

    # The operator's settings that let a huge request try its luck: the whole batch at once,
    # tiling only above OOM_SIZE^2. The retry overrides both for one run.
    settings = Settings(device="cuda", micro_batch_pixels=0, vae_tiling_pixels=OOM_SIZE * OOM_SIZE)
    engine = Engine(settings, annotators_dir=catalog.annotators_dir)
    base = dict(model=model_ref(catalog.main_models[0]), prompt="an apple", sampler="Euler a", cfg_scale=CFG, seed=0)
    standard = Job(**base, steps=STEPS, width=512, height=512)
    huge = Job(**base, steps=3, width=OOM_SIZE, height=OOM_SIZE, batch_size=16)
    own = (engine.micro_batch_pixels, engine.vae_tiling_pixels)
    baseline = _pixels(engine.run(standard, {}))
    cases = []

    def case(name: str, job: Job) -> None:
        """One task through the policy; the standard one's pixels compared with the baseline's (0 or
        a few levels: cuDNN may pick other kernels with other free memory)."""
        releases = []

        def release(engine_, job_) -> None:
            releases.append(job_.task_id)
            release_gpu_memory(engine_, job_)

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        difference = None
        try:
            result = run_with_oom_retry(engine, job, {}, None, release)
            outcome = f"finished {len(result.images)} images"
            if job == standard:
                difference = int(np.abs(_pixels(result).astype(int) - baseline).max())
        except Exception as exc:  # what the task would record: 1002 expected, anything else shown
            outcome = f"Error {task_error(exc).code} ({type(exc).__name__})"
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**30
        cases.append(
            {
                "case": name,
                "outcome": outcome,
                "out_of_memory": len(releases),
                "seconds": seconds,
                "peak_gib": peak,
                "held_after_gib": torch.cuda.memory_allocated() / 2**30,
                "settings_restored": (engine.micro_batch_pixels, engine.vae_tiling_pixels) == own,
                "max_pixel_difference_from_before": difference,
            }
        )
        print(f"oom: {name}: {outcome} in {seconds:.1f} s", flush=True)

    case(f"16 x {OOM_SIZE}^2 at once, untiled", huge)
    case("next task (standard 512^2)", standard)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(max(0, free - OOM_BALLAST_MARGIN), dtype=torch.uint8, device="cuda")
    case("standard batch 8, GPU filled by a ballast", standard.model_copy(update={"batch_size": 8}))
    del ballast
    torch.cuda.empty_cache()
    case("next task (standard 512^2)", standard)
    return cases


def _pixels(result):
    return np.asarray(result.images[0])


def _time(run, repeats: int) -> float:
    import torch

    run()  # warm-up: loads, cuDNN autotuning
    durations = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def _row(standard: Standard, path: str, batch: int, seconds: float) -> dict:
    per_second = batch / seconds
    return {
        "family": standard.family,
        "size": standard.size,
        "path": path,
        "batch": batch,
        "seconds": seconds,
        "images_per_s": per_second,
        "ms_per_step": 1000 * seconds / standard.steps_run,
        "tflops": standard.tflop_per_image * per_second,
    }


if __name__ == "__main__":
    main()
