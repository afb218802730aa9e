"""`make bench`: run the benchmarks, print their ratios as a table and write them as JSON.

    python bench/run.py                # all of them (builds the full-size models once, ~1 min + ~2 min)
    python bench/run.py stack lora     # some of them, by name
    python bench/run.py stack models --family sdxl   # only their SDXL cases
    python bench/run.py --quick        # a smoke run: few repetitions, tiny models only

Needs Redis on 127.0.0.1:6379 and uses only its database 9 (flushed). The tiny models are
the ones `make run` uses (var/tiny, built when missing); results go to var/bench.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on the path, not the repo
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # bit-identical CPU results, as in tests/conftest.py

BENCHMARKS = {
    "stack": "bench.stack_overhead",
    "models": "bench.model_switch",
    "lora": "bench.lora_switch",
    "gateway": "bench.gateway",
    "memory": "bench.memory",
    "batching": "bench.batching",
    "affinity": "bench.affinity",
}
# The families whose full-size sets (bench/full_size.py) each benchmark uses.
USE_FULL_SIZE = {"stack": ("sd15", "sdxl"), "models": ("sd15", "sdxl"), "lora": ("sd15",)}


def main(argv: list[str] | None = None) -> None:
    from openpik.families import FAMILIES

    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="few repetitions and no full-size models")
    parser.add_argument(
        "--family",
        action="append",
        choices=sorted(FAMILIES),
        help="run only the cases of this model family (repeatable; default: all families)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads in this process and in the worker it starts (default 1)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    families = tuple(args.family or FAMILIES)

    _use_threads(args.threads)
    _quiet_libraries()
    from bench.common import VAR, Context

    started, load_before = time.monotonic(), os.getloadavg()[0]
    context = Context(
        tiny_catalog=_tiny_catalog(),
        full_catalogs={} if args.quick else _full_catalogs(names, families),
        families=families,
        work=VAR / "work",
        quick=args.quick,
    )
    shutil.rmtree(context.work, ignore_errors=True)
    rows = []
    for name in names:
        began = time.monotonic()
        rows += importlib.import_module(BENCHMARKS[name]).run(context)
        print(f"{name}: done in {time.monotonic() - began:.0f} s", flush=True)
    total = time.monotonic() - started

    print()
    print(table(rows))
    results = VAR / "results.json"
    results.write_text(
        json.dumps(
            {
                "machine": _machine(),
                "quick": args.quick,
                "total_s": round(total, 1),
                "load_average": [load_before, os.getloadavg()[0]],
                "rows": [asdict(row) for row in rows],
            },
            indent=2,
        )
    )
    print(f"\n{len(rows)} results in {total / 60:.1f} min, written to {results}")


def _use_threads(threads: int) -> None:
    """The same torch thread count on both sides of every comparison, workers included.

    One by default: on a 2-core machine shared with other work, two OpenMP threads per
    process wait on each other at every operator; a tiny 20-step image took 8 to 19 s with
    two threads and 1 s with one while test runs shared the cores.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch at import; worker processes inherit it
    import torch

    torch.set_num_threads(threads)


def _quiet_libraries() -> None:
    """Loading bars and library advice would bury the table (the worker's own log keeps them)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message=".*peft_config.*multiple adapters")
    from diffusers.utils import logging

    logging.disable_progress_bar()


def _tiny_catalog() -> Path:
    """var/tiny's catalog, (re)built when missing or when it lacks a family (built before SDXL came)."""
    from models_registry.catalog import load_catalog
    from models_registry.tiny import build_tiny_models
    from openpik.families import FAMILIES

    catalog = REPO / "var" / "tiny" / "catalog.yaml"
    if catalog.exists() and {m.architecture for m in load_catalog(catalog).main_models} >= set(FAMILIES):
        return catalog
    return build_tiny_models(catalog.parent)


def _full_catalogs(names: list[str], families: tuple[str, ...]) -> dict[str, Path]:
    """The full-size sets the chosen benchmarks use, built once each."""
    from bench.full_size import ensure_full_size_models
    from openpik.families import FAMILIES

    wanted = {f for name in names for f in USE_FULL_SIZE.get(name, ()) if f in families}
    return {family: ensure_full_size_models(family) for family in sorted(wanted, key=list(FAMILIES).index)}


def table(rows) -> str:
    """The rows as a Markdown table (what the README's Benchmarks section shows).

    The ratio is of times, or of costs per request where the numbers are rates.
    """
    lines = ["| benchmark | case | measured | baseline | measured / baseline |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.benchmark} | {row.case} | {row.measured} | {row.baseline} | {_ratio(row.ratio)} |")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


def _machine() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


if __name__ == "__main__":
    main()
