"""The light contract stays light, the gateway stays off the worker, and the worker cannot reach the hub."""

from __future__ import annotations

import subprocess
import sys

LIGHT_MODULES = (
    "openpik.job",
    "openpik.settings",
    "openpik.vocabulary",
    "openpik.samplers",
    "openpik.routing",
    "openpik.task_records",
    "openpik.signing",
    "models_registry.catalog",
    "worker.samplers",
    "worker.interface",
)
HEAVY = {"torch", "diffusers", "transformers"}


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_shared_contract_imports_without_torch():
    assert not HEAVY & _modules_after(f"import {', '.join(LIGHT_MODULES)}")


def test_the_gateway_imports_nothing_from_the_worker_nor_torch():
    loaded = _modules_after("import api.app, api.keys_cli, api.cli")
    assert not HEAVY & loaded
    assert not {name for name in loaded if name == "worker" or name.startswith("worker.")}


def test_importing_the_worker_switches_the_hub_offline():
    code = "import os, worker; print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'])"
    env_free = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_free)
    assert out.stdout.split() == ["1", "1"]
