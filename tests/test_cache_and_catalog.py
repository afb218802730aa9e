"""Model loading: once per process, LRU eviction, offline single files, catalog errors."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.catalog import Catalog, CatalogError, load_catalog
from models_registry.resolve import model_ref
from models_registry.tiny import DEFAULT_CATALOG, tiny_catalog_dict
from openpik.settings import Settings
from tests.engine_helpers import pixels, run
from worker.engine import Engine


@pytest.mark.models
def test_a_second_job_on_the_same_model_does_not_load_it_again(engine, make_job):
    run(engine, make_job(model_id=2, vae=None))
    loads = engine.cache.stats.model_loads
    run(engine, make_job(model_id=2, vae=None, seed=99))
    assert engine.cache.stats.model_loads == loads


@pytest.mark.models
def test_an_evicted_model_loads_again(make_job):
    engine = Engine(Settings(device="cpu", model_cache_bytes=2**20))  # room for one tiny model only
    run(engine, make_job(model_id=1, steps=2))
    run(engine, make_job(model_id=1, steps=2))
    assert engine.cache.stats.model_loads == 1
    run(engine, make_job(model_id=2, steps=2))
    run(engine, make_job(model_id=1, steps=2))
    assert engine.cache.stats.model_loads == 3
    assert engine.cache.stats.evictions == 2


@pytest.mark.models
def test_the_two_tiny_main_models_differ(engine, make_job):
    a = run(engine, make_job(model_id=1, vae=None))
    b = run(engine, make_job(model_id=2, vae=None))
    assert np.abs(pixels(a)[0] - pixels(b)[0]).max() > 5


@pytest.mark.models
def test_single_file_checkpoint_loads_offline_and_matches_its_diffusers_twin(engine, make_job, catalog):
    single = catalog.main_model(3)
    assert model_ref(single).format == "single_file"
    twin = run(engine, make_job(model_id=1, vae=None))
    from_file = run(engine, make_job(model_id=3, vae=None))
    assert np.array_equal(pixels(twin)[0], pixels(from_file)[0])


@pytest.mark.models
def test_tiny_catalog_has_the_default_catalogs_ids(catalog):
    default = load_catalog("configs/catalog.yaml")
    assert catalog.main_models[0].id == 1
    sd15_controlnets = [c for c in catalog.controlnets if c.architecture == "sd15"]  # the tiny SDXL ones are extra
    assert [c.id for c in sd15_controlnets] == [c.id for c in default.controlnets]
    assert [c.model_code for c in sd15_controlnets] == [c.model_code for c in default.controlnets]
    assert [c.path.name for c in sd15_controlnets] == [c.model_code for c in default.controlnets]
    assert catalog.preprocessor(2).detector == "canny"
    assert [p.model_dump() for p in catalog.presets] == [p.model_dump() for p in default.presets]
    for preset in catalog.presets:
        assert catalog.controlnet(preset.controlnet).path.exists()
    assert all(path.exists() for _, path in catalog.referenced_files())


# Spec section 6: PICPIK's ControlNet codes, with the ids clients already use (1..10) and the
# new ones after them.
SPEC_CONTROLNETS = {
    1: "control_v11p_sd15_canny",
    2: "control_v11f1p_sd15_depth",
    3: "control_v11p_sd15_normalbae",
    4: "control_v11p_sd15_openpose",
    5: "control_v11p_sd15_mlsd",
    6: "control_v11p_sd15_lineart",
    7: "control_v11p_sd15s2_lineart_anime",
    8: "control_v11p_sd15_softedge",
    9: "control_v11p_sd15_scribble",
    10: "control_v11e_sd15_shuffle",
    11: "control_v11p_sd15_seg",
    12: "control_v11e_sd15_ip2p",
    13: "control_v11f1e_sd15_tile",
    14: "control_v11p_sd15_inpaint",
    15: "ioclab_sd15_recolor",
}
# The preprocessors the spec names (canny is id 2, the one id PICPIK documents) ...
SPEC_NAMED_PREPROCESSORS = {
    "canny",
    "depth",
    "depth_leres",
    "depth_zoe",
    "lineart",
    "lineart_standard",
    "lineart_anime",
    "lineart_anime_denoise",
    "normal_bae",
    "openpose_full",
    "recolor_intensity",
    "recolor_luminance",
    "scribble_xdog",
    "scribble_hed",
}
# ... and every preprocessor shipped: id -> (code, the worker's detector).
SHIPPED_PREPROCESSORS = {
    1: ("none", "none"),
    2: ("canny", "canny"),
    3: ("scribble_xdog", "scribble_xdog"),
    4: ("scribble_hed", "scribble_hed"),
    5: ("softedge_hed", "softedge_hed"),
    6: ("lineart", "lineart"),
    7: ("lineart_anime", "lineart_anime"),
    8: ("lineart_anime_denoise", "lineart_anime_denoise"),
    9: ("mlsd", "mlsd"),
    10: ("openpose_full", "openpose_full"),
    11: ("depth", "depth_midas"),
    12: ("depth_leres", "depth_leres"),
    13: ("depth_zoe", "depth_zoe"),
    14: ("normal_bae", "normal_bae"),
    15: ("shuffle", "shuffle"),
    16: ("recolor_luminance", "recolor_luminance"),
    17: ("recolor_intensity", "recolor_intensity"),
    18: ("lineart_standard", "lineart_standard"),
    19: ("openpose", "openpose"),
    20: ("openpose_face", "openpose_face"),
    21: ("openpose_faceonly", "openpose_faceonly"),
    22: ("openpose_hand", "openpose_hand"),
    23: ("lineart_coarse", "lineart_coarse"),
    24: ("softedge_hedsafe", "softedge_hedsafe"),
    25: ("softedge_pidinet", "softedge_pidinet"),
    26: ("softedge_pidisafe", "softedge_pidisafe"),
    27: ("scribble_pidinet", "scribble_pidinet"),
    28: ("normal_midas", "normal_midas"),
    29: ("tile_resample", "tile_resample"),
    30: ("invert", "invert"),
}
# Presets 1..4: (ControlNet code, preprocessor code).
SPEC_PRESETS = {
    1: ("control_v11p_sd15_scribble", "scribble_hed"),
    2: ("control_v11p_sd15_openpose", "openpose_full"),
    3: ("control_v11p_sd15s2_lineart_anime", "lineart_anime"),
    4: ("control_v11p_sd15_mlsd", "mlsd"),
}


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_the_shipped_and_tiny_catalogs_carry_exactly_picpiks_codes_and_presets(which):
    shipped = load_catalog(DEFAULT_CATALOG)
    catalog = shipped if which == "shipped" else Catalog.model_validate(tiny_catalog_dict(shipped))
    assert {c.id: c.model_code for c in catalog.controlnets if c.architecture == "sd15"} == SPEC_CONTROLNETS
    assert {p.id: (p.model_code, p.detector) for p in catalog.preprocessors} == SHIPPED_PREPROCESSORS
    assert {p.model_code for p in catalog.preprocessors} >= SPEC_NAMED_PREPROCESSORS
    presets = {}
    for preset in catalog.presets:
        controlnet, preprocessor = catalog.controlnet(preset.controlnet), catalog.preprocessor(preset.preprocessor)
        assert controlnet is not None and preprocessor is not None
        presets[preset.id] = (controlnet.model_code, preprocessor.model_code)
    assert presets == SPEC_PRESETS


MODEL = "main_models:\n  - {id: 1, model_code: a, name: A, path: x}\n"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "main_models:\n  - {id: 1, model_code: a, name: A, path: x, defaults: {steps: 500}}\n",
            r"main_models\[0\]\.defaults\.steps \(entry id 1\)",
        ),
        (
            MODEL + "  - {id: 1, model_code: b, name: B, path: y}\n",
            r"main_models\[1\]\.id: 1 already used",
        ),
        (
            "main_models:\n  - {id: 1, model_code: a, name: A, path: x, colour: red}\n",
            r"main_models\[0\]\.colour \(entry id 1\): Extra inputs",
        ),
        ("main_models:\n  - {id: 1, model_code: a, name: A, path: x, vae: 4}\n", r"\.vae: no VAE with id 4"),
        ("main_models: [\n", r"not valid YAML"),
        (
            "main_models:\n  - {id: 1, model_code: a, name: A, path: x, defaults: {sampler: Euler z}}\n",
            r"main_models\[0\]\.defaults\.sampler \(entry id 1\): Unknown sampler 'Euler z'",
        ),
        (
            MODEL + "preprocessors:\n  - {id: 4, model_code: p, name: P, detector: sharpen}\n",
            r"preprocessors\[0\]\.detector \(entry id 4\): unknown detector 'sharpen'",
        ),
        (
            MODEL + "preprocessors:\n  - {id: 4, model_code: p, name: P, detector: canny, "
            "params: [{name: low, default: 1, min: 0, max: 2, step: 1}]}\n",
            r"preprocessors\[0\]\.params\[0\]\.name \(entry id 4\): detector 'canny' has no parameter 'low'",
        ),
        (
            MODEL + "controlnets: [{id: 1, model_code: c, name: C, path: c}]\n"
            "preprocessors:\n  - {id: 2, model_code: p, name: P, detector: scribble_xdog, "
            "params: [{name: threshold, default: 32, min: 1, max: 64, step: 1}]}\n"
            "presets: [{id: 1, name: S, controlnet: 1, preprocessor: 2, params: [99]}]\n",
            r"presets\[0\] \(id 1\)\.params\[0\]: threshold must be within \[1, 64\]; got 99",
        ),
    ],
)
def test_a_broken_catalog_names_the_file_entry_and_field(tmp_path, yaml_text, expected):
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml_text)
    with pytest.raises(CatalogError, match=expected) as error:
        load_catalog(broken)
    assert str(broken) in str(error.value)


def test_models_check_reports_a_missing_file(tmp_path, capsys):
    from models_registry.cli import main

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("main_models:\n  - {id: 1, model_code: a, name: A, path: gone.safetensors}\n")
    assert main(["--catalog", str(catalog), "check"]) == 1
    assert "missing: main_models id 1" in capsys.readouterr().out


@pytest.mark.models
def test_models_check_reports_an_unreadable_file_and_passes_the_tiny_catalog(tmp_path, capsys, tiny_catalog_path):
    from models_registry.cli import main

    assert main(["--catalog", str(tiny_catalog_path), "check"]) == 0
    (tmp_path / "broken.safetensors").write_bytes(b"\x05")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("main_models:\n  - {id: 1, model_code: a, name: A, path: broken.safetensors}\n")
    assert main(["--catalog", str(catalog), "check"]) == 1
    assert "unreadable" in capsys.readouterr().out
