"""GPU throughput of the standard request: plain diffusers against our worker path, one run.

The worker path runs as deployed by default and with OPENPIK_COMPILE (after its warm-up,
whose duration is reported).

    python bench/gpu.py [--repeats 5]        (on a machine with CUDA; writes var/bench/gpu.json)

The standard request: 512x512, 20 steps, img2img at strength 0.75 (15 steps run), one
ControlNet, CFG 7, batch 1 and batch 8, float16, on the full-size random-weight SD1.5 set
(bench/full_size.py). About 36 TFLOP per image, so an H100 (989 dense bf16/fp16 TFLOP/s)
has a floor near 37 ms per image; achieved TFLOP/s = 36 x images/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TFLOP_PER_IMAGE = 36.0
SIZE, STEPS, STRENGTH, CFG = 512, 20, 0.75, 7.0
STEPS_RUN = int(STEPS * STRENGTH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU; the CPU benchmarks are `make bench`")
    from bench.full_size import ensure_full_size_models
    from models_registry.catalog import load_catalog

    catalog = load_catalog(ensure_full_size_models(REPO / "var" / "bench" / "full-sd15"))
    images = _inputs()
    rows = []
    for batch in (1, 8):
        rows.append(_row("plain diffusers", batch, _time(_plain(catalog, images, batch), args.repeats), batch))
        rows.append(_row("OpenPik worker", batch, _time(_worker(catalog, images, batch), args.repeats), batch))
        rows.append(
            _row("OpenPik compiled", batch, _time(_worker(catalog, images, batch, compile=True), args.repeats), batch)
        )
    out = REPO / "var" / "bench" / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))
    print(f"{'path':17} {'batch':>5} {'s/task':>8} {'images/s':>9} {'ms/step':>8} {'TFLOP/s':>8}")
    for row in rows:
        print(
            f"{row['path']:17} {row['batch']:5} {row['seconds']:8.3f} {row['images_per_s']:9.2f} "
            f"{row['ms_per_step']:8.1f} {row['tflops']:8.1f}"
        )
    print(f"written to {out}")


def _inputs():
    from PIL import Image, ImageDraw

    reference = Image.new("RGB", (SIZE, SIZE), "white")
    ImageDraw.Draw(reference).ellipse((96, 96, 416, 416), fill="red")
    control = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(control).rectangle((64, 64, 448, 448), outline="white", width=8)
    return {"ref": reference, "ctl": control}


def _plain(catalog, images, batch: int):
    import torch
    from diffusers import ControlNetModel, EulerAncestralDiscreteScheduler, StableDiffusionControlNetImg2ImgPipeline

    model, controlnet = catalog.main_models[0], catalog.controlnets[0]
    pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
        model.path,
        controlnet=ControlNetModel.from_pretrained(controlnet.path, dtype=torch.float16),
        dtype=torch.float16,
        safety_checker=None,
        requires_safety_checker=False,
    ).to("cuda")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def run():
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
        pipe(
            "an apple",
            image=images["ref"],
            control_image=images["ctl"],
            num_inference_steps=STEPS,
            strength=STRENGTH,
            guidance_scale=CFG,
            num_images_per_prompt=batch,
            generator=generators,
        )

    return run


def _worker(catalog, images, batch: int, compile: bool = False):
    from models_registry.resolve import control_unit, model_ref
    from openpik.job import Job
    from openpik.settings import Settings
    from worker.engine import Engine
    from worker.warmup import warmup_requests

    settings = Settings(device="cuda", compile=compile, compile_warmup_size=SIZE)
    engine = Engine(settings, annotators_dir=catalog.annotators_dir)
    if compile:
        started = time.perf_counter()
        for warmup_job, warmup_images in warmup_requests(catalog, settings):
            engine.run(warmup_job, warmup_images)
        print(f"compiled warm-up: {time.perf_counter() - started:.1f} s", flush=True)
    none = next(p for p in catalog.preprocessors if p.detector == "none")
    job = Job(
        model=model_ref(catalog.main_models[0]),
        prompt="an apple",
        sampler="Euler a",
        steps=STEPS,
        cfg_scale=CFG,
        seed=0,
        width=SIZE,
        height=SIZE,
        batch_size=batch,
        init_image="ref",
        strength=STRENGTH,
        controlnets=(control_unit(catalog, catalog.controlnets[0].id, none.id, "ctl"),),
    )
    return lambda: engine.run(job, images)


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


def _row(path: str, batch: int, seconds: float, images: int) -> dict:
    per_second = images / seconds
    return {
        "path": path,
        "batch": batch,
        "seconds": seconds,
        "images_per_s": per_second,
        "ms_per_step": 1000 * seconds / STEPS_RUN,
        "tflops": TFLOP_PER_IMAGE * per_second,
    }


if __name__ == "__main__":
    main()
