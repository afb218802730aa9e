"""The light contract stays light and the worker cannot reach the hub."""
from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_job_settings_and_catalog_import_without_torch():
    loaded = _modules_after("import openpik.job, openpik.settings, models_registry.catalog, worker.samplers")
    assert not {"torch", "diffusers", "transformers"} & loaded


def test_importing_the_worker_switches_the_hub_offline():
    code = "import os, worker; print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'])"
    env_free = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_free)
    assert out.stdout.split() == ["1", "1"]
