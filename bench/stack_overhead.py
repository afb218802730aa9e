"""Stack overhead: one image through the whole deployed stack against one diffusers call.

The stack is a signed GenerateTxt2Img over HTTP, the gateway, Redis, the Celery worker, the
result file and the Finished task record. The baseline is the call a script would make in
one process with the same model files, sampler, steps, seed, size and ControlNet (the
control image is used as is: preprocessor "none"). Stack and baseline runs alternate, so
load from other processes on the machine falls on both alike.

The stack is timed from the client's clock just before the POST to the worker's
``finished_at`` in the task record (one machine, one clock). The client still polls
GetGenerateTaskDetail until it sees Finished, but only every 200 ms: polling every few
milliseconds would take CPU from the worker and measure the poller. The record's
``created_at`` and ``started_at`` split the time into accepting, queueing and the worker.
CPU times (psutil for the stack's processes, getrusage for the direct call) tell a worker
that did more work from one that waited for a core; both images are compared pixel by pixel.

Cases: tiny and full-size SD1.5 with one ControlNet in float32; full-size SDXL txt2img in
bfloat16 (OPENPIK_DTYPE for the worker, the same dtype for the direct call): in float32 the
model weighs 14 GB and the two processes would hold it twice.
"""

from __future__ import annotations

import base64
import io
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from bench.common import Context, Row, median, ms, running_stack
from bench.full_size import SETS
from openpik.routing import result_url
from openpik.task_records import TaskRecord, TaskStore
from tests.requests import custom_unit, png_base64, txt2img
from tests.stack import signed

MODEL_ID = 1
CONTROLNET_ID = 1
PROMPT = "an apple on a table"
SEED = 7
CFG_SCALE = 7.5
POLL_S = 0.2


@dataclass(frozen=True)
class Case:
    name: str
    catalog: Path
    architecture: str
    size: int
    steps: int
    repeats: int
    controlnet: bool = True
    dtype: str = "float32"
    """Of the worker (OPENPIK_DTYPE) and the direct call alike."""

    @property
    def label(self) -> str:
        parts = [f"{self.name} {self.size}x{self.size}", f"{self.steps} steps", "Euler a", "CFG"]
        parts += ["1 ControlNet"] if self.controlnet else ["txt2img"]
        return ", ".join([*parts, self.dtype])


def run(context: Context) -> list[Row]:
    cases = []
    if context.wants("sd15"):
        cases.append(Case("tiny", context.tiny_catalog, "sd15", 64, 20, context.pick(full=10, quick=3)))
    if full := context.full_catalog("sd15"):
        # About 25 s per 2-step image on one CPU thread: few, short runs.
        cases.append(Case("full-size SD1.5", full, "sd15", 256, 2, 3))
    if full := context.full_catalog("sdxl"):
        # Without a ControlNet: the SDXL one (2.5 GB in bfloat16) held twice would not fit beside the model.
        sdxl = SETS["sdxl"]
        cases.append(Case("full-size SDXL", full, "sdxl", 256, 2, 3, controlnet=False, dtype=sdxl.run_dtype))
    return [_measure(case, context.work / "stack") for case in cases]


def _measure(case: Case, work: Path) -> Row:
    control_png = png_base64((case.size, case.size), seed=3)
    control = Image.open(io.BytesIO(base64.b64decode(control_png))) if case.controlnet else None
    direct = DirectPipeline(case, control)
    with running_stack(case.catalog, work, "bench", dtype=case.dtype) as (gateway, worker, store):
        (child,) = worker.child_pids()
        processes = StackProcesses(
            psutil.Process(child), (psutil.Process(gateway.process.pid), psutil.Process(worker.process.pid))
        )
        with httpx.Client(base_url=gateway.url, timeout=600) as client:
            # One-step warm-ups: the worker loads its model, both sides create their kernels.
            _through_stack(client, store, _request(case, control_png, steps=1), processes)
            direct.generate(case.size, steps=1)
            body = _request(case, control_png, case.steps)
            stack_runs, direct_runs = [], []
            for i in range(case.repeats):  # stack first, then direct first: a drift in load evens out
                if i % 2 == 0:
                    stack_runs.append(_through_stack(client, store, body, processes))
                direct_image, direct_run = direct.timed(case.size, case.steps)
                direct_runs.append(direct_run)
                if i % 2 == 1:
                    stack_runs.append(_through_stack(client, store, body, processes))
            difference = _max_difference(client, stack_runs[-1], direct_image)
    return _row(case, stack_runs, direct_runs, difference)


def _request(case: Case, control_png: str, steps: int) -> dict:
    control = {}
    if case.controlnet:
        unit = custom_unit(ControlNetImg=control_png, ModelId=CONTROLNET_ID, PreProcessorId="none")
        control = {"EnableControlNet": True, "ControlNetParams": [unit]}
    return signed(
        txt2img(
            MainModelId=MODEL_ID,
            Width=case.size,
            Height=case.size,
            Steps=steps,
            Seed=SEED,
            CfgScale=CFG_SCALE,
            Sampler="Euler a",
            PositivePrompts=[PROMPT],
            **control,
        )
    )


@dataclass(frozen=True)
class StackProcesses:
    """The stack's processes, whose CPU time tells extra work apart from waiting for a core."""

    worker: psutil.Process
    """The pool child that runs the engine."""
    others: tuple[psutil.Process, ...]
    """The gateway and Celery's main process."""

    def cpu_seconds(self) -> tuple[float, float, float]:
        """The worker's CPU time and its part in the kernel, and the others' CPU time."""
        worker = self.worker.cpu_times()
        others = sum(t.user + t.system for t in (p.cpu_times() for p in self.others))
        return worker.user + worker.system, worker.system, others


@dataclass(frozen=True)
class StackRun:
    started: float
    seen: float
    record: TaskRecord
    worker_cpu: float
    worker_system: float
    others_cpu: float

    @property
    def total(self) -> float:
        return self.record.finished_at - self.started


def _through_stack(client: httpx.Client, store: TaskStore, body: dict, processes: StackProcesses) -> StackRun:
    before = processes.cpu_seconds()
    started = time.time()
    answer = client.post("/", json=body).json()
    if answer["RetCode"] != 0:
        raise RuntimeError(f"the gateway refused the benchmark request: {answer}")
    task = answer["TaskUID"]
    while (detail := _detail(client, task))["TaskStatus"] not in ("Finished", "Error"):
        time.sleep(POLL_S)
    seen = time.time()
    if detail["TaskStatus"] == "Error":
        raise RuntimeError(f"the benchmark task failed: {detail['TaskErrorMsg']}")
    worker_cpu, worker_system, others_cpu = (a - b for a, b in zip(processes.cpu_seconds(), before))
    return StackRun(
        started=started,
        seen=seen,
        record=store.get(task),
        worker_cpu=worker_cpu,
        worker_system=worker_system,
        others_cpu=others_cpu,
    )


def _detail(client: httpx.Client, task: str) -> dict:
    return client.post("/", json=signed({"Action": "GetGenerateTaskDetail", "TaskUID": task})).json()


def _max_difference(client: httpx.Client, run: StackRun, direct_image: Image.Image) -> int:
    """Largest per-pixel difference between the stack's result and the direct call's image."""
    stacked = Image.open(io.BytesIO(client.get(result_url("", run.record.results[0])).content))
    return int(np.abs(np.asarray(stacked, dtype=np.int16) - np.asarray(direct_image, dtype=np.int16)).max())


def _row(case: Case, stack_runs: list[StackRun], direct_runs: list[DirectRun], difference: int) -> Row:
    total = median([r.total for r in stack_runs])
    direct = median([r.wall for r in direct_runs])
    accept = median([r.record.created_at - r.started for r in stack_runs])
    queue = median([r.record.started_at - r.record.created_at for r in stack_runs])
    in_worker = median([r.record.finished_at - r.record.started_at for r in stack_runs])
    # CPU times: on a busy machine the wall times mostly tell how long each side waited for a core.
    worker_cpu, direct_cpu = median([r.worker_cpu for r in stack_runs]), median([r.cpu for r in direct_runs])
    return Row(
        benchmark="stack",
        case=case.label,
        measured=f"stack {ms(total)} (accept {ms(accept)}, queue {ms(queue)}, worker {ms(in_worker)}, "
        f"worker CPU {ms(worker_cpu)})",
        baseline=f"diffusers call {ms(direct)} (CPU {ms(direct_cpu)})",
        ratio=total / direct,
        numbers={
            "stack_s": total,
            "direct_s": direct,
            "accept_s": accept,
            "queue_s": queue,
            "worker_s": in_worker,
            "client_seen_s": median([r.seen - r.started for r in stack_runs]),
            "worker_over_direct": in_worker / direct,
            "max_pixel_difference": difference,
            "worker_cpu_s": worker_cpu,
            "worker_system_s": median([r.worker_system for r in stack_runs]),
            "direct_cpu_s": direct_cpu,
            "direct_system_s": median([r.system for r in direct_runs]),
            "gateway_and_celery_main_cpu_s": median([r.others_cpu for r in stack_runs]),
            "stack_runs_s": [r.total for r in stack_runs],
            "direct_runs_s": [r.wall for r in direct_runs],
        },
    )


@dataclass(frozen=True)
class DirectRun:
    wall: float
    cpu: float
    """CPU time of this process during the call (it does nothing else meanwhile)."""
    system: float
    """The part of ``cpu`` spent in the kernel (page faults of fresh allocations, mostly)."""


# The diffusers pipeline a script would call, by (architecture, with a ControlNet), and what
# it is loaded with so that it runs what the worker runs (no safety checker, no watermark).
DIRECT_PIPELINES = {
    ("sd15", False): "StableDiffusionPipeline",
    ("sd15", True): "StableDiffusionControlNetPipeline",
    ("sdxl", False): "StableDiffusionXLPipeline",
    ("sdxl", True): "StableDiffusionXLControlNetPipeline",
}
LOAD_OPTIONS = {
    "sd15": {"safety_checker": None, "requires_safety_checker": False},
    "sdxl": {"add_watermarker": False},
}


class DirectPipeline:
    """The baseline: the family's diffusers pipeline built from the catalog's files."""

    def __init__(self, case: Case, control: Image.Image | None):
        import diffusers
        import torch
        from diffusers import AutoencoderKL, ControlNetModel, EulerAncestralDiscreteScheduler

        from models_registry.catalog import load_catalog

        catalog = load_catalog(case.catalog)
        model = catalog.main_model(MODEL_ID)
        options = {"dtype": getattr(torch, case.dtype), "local_files_only": True}
        vae = {"vae": AutoencoderKL.from_pretrained(catalog.vae(model.vae).path, **options)} if model.vae else {}
        controlnet = (
            {"controlnet": ControlNetModel.from_pretrained(catalog.controlnet(CONTROLNET_ID).path, **options)}
            if case.controlnet
            else {}
        )
        pipeline = getattr(diffusers, DIRECT_PIPELINES[case.architecture, case.controlnet])
        self.pipe = pipeline.from_pretrained(
            model.path, **controlnet, **vae, **LOAD_OPTIONS[case.architecture], **options
        )
        self.pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        self.control = {"image": control.convert("RGB")} if control else {}

    def timed(self, size: int, steps: int) -> tuple[Image.Image, DirectRun]:
        wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        image = self.generate(size, steps)
        after = resource.getrusage(resource.RUSAGE_SELF)
        system = after.ru_stime - before.ru_stime
        return image, DirectRun(
            wall=time.perf_counter() - wall, cpu=after.ru_utime - before.ru_utime + system, system=system
        )

    def generate(self, size: int, steps: int) -> Image.Image:
        import torch

        return self.pipe(
            PROMPT,
            **self.control,
            num_inference_steps=steps,
            guidance_scale=CFG_SCALE,
            width=size,
            height=size,
            generator=torch.Generator("cpu").manual_seed(SEED),
        ).images[0]
