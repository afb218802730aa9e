"""The deployment files say what the README promises."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.stack import REPO


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services_and_gpu_reservation(compose):
    services = compose["services"]
    assert {"redis", "api", "worker", "minio", "flower"} <= set(services)
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["minio"]["profiles"] == ["minio"] and services["flower"]["profiles"] == ["flower"]
    assert "ports" not in services["worker"]  # so --scale worker=N works


def test_redis_keeps_every_accepted_task():
    settings = dict(
        line.split(None, 1)
        for line in (REPO / "configs" / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["appendonly"] == "yes" and settings["appendfsync"] == "always"
    assert settings["maxmemory-policy"] == "noeviction"


def test_dockerfile_runs_as_a_non_root_user_on_a_cuda_base():
    text = (REPO / "Dockerfile.gpu").read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:" in text and "\nUSER openpik" in text
    assert "openpik-api" in text


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_validates():
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("the docker client has no compose plugin")
    subprocess.run(["docker", "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"], check=True)
