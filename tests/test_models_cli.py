"""`openpik-models add` and `pull`: local files into the catalog, a clear error offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from models_registry.catalog import load_catalog
from models_registry.cli import main
from tests.stack import REPO


@pytest.fixture
def catalog_copy(tmp_path):
    """The shipped default catalog (with its comments), in a scratch folder."""
    target = tmp_path / "catalog.yaml"
    shutil.copy(REPO / "configs" / "catalog.yaml", target)
    return target


@pytest.mark.models
@pytest.mark.parametrize(
    ("source", "kind", "section"),
    [
        ("main/tiny-sd15-a", "main", "main_models"),
        ("main/tiny-sd15-a.safetensors", "main", "main_models"),
        ("lora/tiny-lora-style.safetensors", "lora", "loras"),
        ("lora/tiny-lora-detail.safetensors", "lora", "loras"),
        ("controlnet/control_v11p_sd15_canny", "controlnet", "controlnets"),
        ("vae/tiny-vae", "vae", "vaes"),
    ],
)
def test_add_detects_the_kind_and_appends_with_the_next_id(
    tiny_catalog_path, catalog_copy, capsys, source, kind, section
):
    before = getattr(load_catalog(catalog_copy), section)
    assert main(["--catalog", str(catalog_copy), "add", str(tiny_catalog_path.parent / source)]) == 0
    after = getattr(load_catalog(catalog_copy), section)
    assert len(after) == len(before) + 1
    added = after[-1]
    assert added.id == max((e.id for e in before), default=0) + 1
    assert added.path == (tiny_catalog_path.parent / source).resolve()
    assert f"added id {added.id}" in capsys.readouterr().out
    assert "# The shipped default catalog" in catalog_copy.read_text()  # comments survive


@pytest.mark.models
def test_add_keeps_model_codes_unique_and_takes_group_and_owner(tiny_catalog_path, catalog_copy):
    folder = str(tiny_catalog_path.parent / "main" / "tiny-sd15-b")
    assert main(["--catalog", str(catalog_copy), "add", folder, "--group", "anime", "--owner", "pk-1"]) == 0
    assert main(["--catalog", str(catalog_copy), "add", folder]) == 0
    models = load_catalog(catalog_copy).main_models
    assert [m.model_code for m in models[-2:]] == ["tiny-sd15-b", "tiny-sd15-b-2"]
    assert (models[-2].group, models[-2].owner) == ("anime", "pk-1")


def test_add_refuses_what_it_cannot_serve(tmp_path, catalog_copy, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["--catalog", str(catalog_copy), "add", str(tmp_path / "notes.txt")]) == 2
    assert "only .safetensors files and diffusers folders" in capsys.readouterr().err
    assert main(["--catalog", str(catalog_copy), "add", str(tmp_path / "missing")]) == 2


def test_pull_without_internet_says_so_clearly(tmp_path):
    env = os.environ | {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "models_registry.cli",
            "--catalog",
            str(tmp_path / "c.yaml"),
            "pull",
            "example-org/example-model",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot download 'example-org/example-model'" in result.stderr and "offline" in result.stderr
