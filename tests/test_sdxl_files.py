"""SDXL files: the tiny SDXL models, their single-file twin, and family detection in the tools.

The single file is loaded with a config folder that holds no weights, strictly offline, so
every weight of the loaded pipeline can only have come from the file.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from safetensors.torch import load_file, save_file

from models_registry.catalog import load_catalog
from models_registry.cli import main
from models_registry.importer import ModelImportError, detect_architecture, detect_kind
from models_registry.ldm_format import SDXL_TEXT_ENCODER_2_PREFIX, SDXL_TEXT_ENCODER_PREFIX, UNET_PREFIX
from models_registry.tiny import TINY_SIZE, write_lora
from models_registry.tiny_sdxl import (
    SDXL_LORA_TARGETS,
    SDXL_SINGLE_FILE,
    SDXL_SINGLE_FILE_CONFIG,
    TINY_SDXL_CONTROLNETS,
    TINY_SDXL_LORAS,
    build_sdxl_main_model,
)
from tests.stack import REPO

pytestmark = pytest.mark.models

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
# Every tiny file with an architecture: (catalog section, id) -> the family it must be detected as.
TINY_ARCHITECTURES = {
    ("main_models", 1): "sd15",
    ("main_models", 2): "sd15",
    ("main_models", 3): "sd15",
    ("main_models", 11): "sdxl",
    ("main_models", 12): "sdxl",
    ("main_models", 13): "sdxl",
    ("loras", 1): "sd15",
    ("loras", 2): "sd15",
    ("loras", 3): "sd15",
    ("loras", 11): "sdxl",
    ("loras", 12): "sdxl",
    ("controlnets", 1): "sd15",
    ("controlnets", 21): "sdxl",
    ("controlnets", 22): "sdxl",
    ("controlnets", 23): "sdxl",
}
KINDS = {"main_models": "main", "loras": "lora", "controlnets": "controlnet"}


@pytest.fixture(scope="module")
def tiny_dir(tiny_catalog_path):
    return tiny_catalog_path.parent


@pytest.fixture(scope="module")
def sdxl_pipe(tiny_dir):
    return StableDiffusionXLPipeline.from_pretrained(tiny_dir / "main" / "tiny-sdxl-a")


def _image(pipe, seed: int = 7, **kwargs) -> np.ndarray:
    return pipe(
        "a red apple",
        num_inference_steps=4,
        height=TINY_SIZE,
        width=TINY_SIZE,
        output_type="np",
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    ).images[0]


# --- the tiny SDXL main model ------------------------------------------------------------


def test_tiny_sdxl_model_has_sdxls_shape(sdxl_pipe):
    assert sdxl_pipe.unet.config.addition_embed_type == "text_time"
    assert type(sdxl_pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert (sdxl_pipe.tokenizer.pad_token, sdxl_pipe.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert (sdxl_pipe.vae.config.scaling_factor, sdxl_pipe.vae.config.force_upcast) == (0.13025, True)
    assert type(sdxl_pipe.scheduler).__name__ == "EulerDiscreteScheduler"


def test_tiny_sdxl_build_is_seeded(tmp_path, tiny_dir, sdxl_pipe):
    rebuilt = build_sdxl_main_model(tmp_path / "again", seed=1)
    unet_file = "unet/diffusion_pytorch_model.safetensors"
    original = tiny_dir / "main" / "tiny-sdxl-a" / unet_file

    assert (rebuilt / unet_file).read_bytes() == original.read_bytes()
    assert np.array_equal(_image(sdxl_pipe), _image(sdxl_pipe))
    assert not np.array_equal(_image(sdxl_pipe), _image(sdxl_pipe, seed=8))


def test_other_seed_gives_another_model(tiny_dir, sdxl_pipe):
    other = StableDiffusionXLPipeline.from_pretrained(tiny_dir / "main" / "tiny-sdxl-b")
    assert not np.array_equal(_image(sdxl_pipe), _image(other))


# --- single file (LDM layout) ------------------------------------------------------------


@pytest.fixture(scope="module")
def single_file_pipe(tiny_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        return StableDiffusionXLPipeline.from_single_file(
            str(tiny_dir / SDXL_SINGLE_FILE), config=str(tiny_dir / SDXL_SINGLE_FILE_CONFIG), local_files_only=True
        )


def test_single_file_uses_the_sdxl_ldm_layout(tiny_dir):
    tensors = load_file(str(tiny_dir / SDXL_SINGLE_FILE))

    assert infer_diffusers_model_type(tensors) == "xl_base"
    assert f"{UNET_PREFIX}label_emb.0.0.weight" in tensors
    assert f"{SDXL_TEXT_ENCODER_PREFIX}text_model.embeddings.position_embedding.weight" in tensors
    fused = tensors[f"{SDXL_TEXT_ENCODER_2_PREFIX}transformer.resblocks.0.attn.in_proj_weight"]
    width = tensors[f"{SDXL_TEXT_ENCODER_2_PREFIX}positional_embedding"].shape[-1]
    assert fused.shape == (3 * width, width)
    assert f"{SDXL_TEXT_ENCODER_2_PREFIX}text_projection" in tensors
    assert not list((tiny_dir / SDXL_SINGLE_FILE_CONFIG).rglob("*.safetensors"))


@pytest.mark.parametrize("component", COMPONENTS)
def test_single_file_weights_are_identical(sdxl_pipe, single_file_pipe, component):
    expected, loaded = (getattr(pipe, component).state_dict() for pipe in (sdxl_pipe, single_file_pipe))

    assert loaded.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(loaded[key], expected[key])] == []


def test_single_file_generates_identical_pixels(sdxl_pipe, single_file_pipe):
    assert np.array_equal(_image(sdxl_pipe), _image(single_file_pipe))


# --- LoRAs and ControlNets ---------------------------------------------------------------


@pytest.mark.parametrize(("lora_id", "code", "layout"), TINY_SDXL_LORAS)
def test_sdxl_lora_reaches_all_three_models_and_changes_the_image(tiny_dir, sdxl_pipe, lora_id, code, layout):
    base = _image(sdxl_pipe)
    sdxl_pipe.load_lora_weights(str(tiny_dir / "lora" / f"{code}.safetensors"), adapter_name="tested")
    try:
        adapted = {
            c: any("tested" in n for n, _ in getattr(sdxl_pipe, c).named_parameters()) for c in SDXL_LORA_TARGETS
        }
        sdxl_pipe.set_adapters(["tested"], [1.0])
        full = _image(sdxl_pipe)
        sdxl_pipe.set_adapters(["tested"], [0.0])
        off = _image(sdxl_pipe)
    finally:
        sdxl_pipe.unload_lora_weights()

    assert adapted == dict.fromkeys(SDXL_LORA_TARGETS, True)
    assert np.abs(full - base).mean() > 0.02
    assert np.array_equal(off, base)


def test_kohya_sdxl_lora_uses_kohyas_sdxl_names(tiny_dir):
    keys = load_file(str(tiny_dir / "lora" / "tiny-sdxl-lora-kohya.safetensors")).keys()
    prefixes = {key.split("_")[1] for key in keys}

    assert prefixes == {"unet", "te1", "te2"}
    assert any(key.startswith("lora_unet_input_blocks_") for key in keys)


def test_sdxl_controlnets_make_the_control_image_matter(tiny_dir, sdxl_pipe):
    rng = np.random.default_rng(0)
    controls = [torch.tensor(rng.random((1, 3, TINY_SIZE, TINY_SIZE)), dtype=torch.float32) for _ in range(2)]
    components = {k: v for k, v in sdxl_pipe.components.items() if k not in ("image_encoder", "feature_extractor")}
    outputs = []
    for _, code in TINY_SDXL_CONTROLNETS:
        pipe = StableDiffusionXLControlNetPipeline(
            **components, controlnet=ControlNetModel.from_pretrained(tiny_dir / "controlnet" / code)
        )
        first, second = (_image(pipe, image=control) for control in controls)
        assert np.abs(first - second).max() > 0.05
        assert np.array_equal(_image(pipe, image=controls[0], controlnet_conditioning_scale=0.0), _image(sdxl_pipe))
        outputs.append(first)
    assert not np.array_equal(outputs[0], outputs[1])


# --- family detection, add and check -----------------------------------------------------


@pytest.mark.parametrize(("entry", "architecture"), TINY_ARCHITECTURES.items(), ids=str)
def test_every_tiny_file_is_detected_as_its_family(tiny_catalog_path, entry, architecture):
    section, entry_id = entry
    model = next(e for e in getattr(load_catalog(tiny_catalog_path), section) if e.id == entry_id)

    assert detect_kind(model.path) == KINDS[section]
    assert detect_architecture(model.path, KINDS[section]) == architecture == model.architecture


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_unet_only_sdxl_lora_is_detected_by_its_unet(tiny_dir, tmp_path, layout):
    lora = write_lora(tiny_dir / "main" / "tiny-sdxl-a", tmp_path / "unet.safetensors", 1, layout, ("unet",), "sdxl")
    assert detect_architecture(lora, "lora") == "sdxl"


@pytest.mark.parametrize(("width", "architecture"), [(768, "sd15"), (2048, "sdxl")])
def test_lora_without_markers_is_detected_by_its_cross_attention_width(tmp_path, width, architecture):
    """A LoRA on the mid block's cross-attention only: its input width tells the family."""
    key = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    file = tmp_path / "mid.safetensors"
    save_file({f"{key}.lora_down.weight": torch.zeros(4, width), f"{key}.lora_up.weight": torch.zeros(320, 4)}, file)

    assert detect_architecture(file, "lora") == architecture


def test_unrecognisable_lora_asks_for_the_architecture(tmp_path):
    file = tmp_path / "odd.safetensors"
    save_file({"lora_unet_conv_in.lora_down.weight": torch.zeros(4, 4)}, file)
    with pytest.raises(ModelImportError, match="--architecture"):
        detect_architecture(file, "lora")


@pytest.fixture
def catalog_copy(tmp_path):
    target = tmp_path / "catalog.yaml"
    shutil.copy(REPO / "configs" / "catalog.yaml", target)
    return target


@pytest.mark.parametrize(
    ("source", "section"),
    [
        (SDXL_SINGLE_FILE, "main_models"),
        ("main/tiny-sdxl-b", "main_models"),
        ("lora/tiny-sdxl-lora-kohya.safetensors", "loras"),
        ("controlnet/tiny-sdxl-controlnet-a", "controlnets"),
    ],
)
def test_add_writes_the_detected_architecture(tiny_dir, catalog_copy, source, section):
    assert main(["--catalog", str(catalog_copy), "add", str(tiny_dir / source)]) == 0

    added = getattr(load_catalog(catalog_copy), section)[-1]
    raw = yaml.safe_load(catalog_copy.read_text())[section][-1]
    assert added.path == (tiny_dir / source).resolve()
    assert added.architecture == raw["architecture"] == "sdxl"


def test_added_sdxl_main_model_defaults_to_the_native_size(tiny_dir, catalog_copy):
    assert main(["--catalog", str(catalog_copy), "add", str(tiny_dir / SDXL_SINGLE_FILE)]) == 0

    added = load_catalog(catalog_copy).main_models[-1]
    assert "width" not in yaml.safe_load(catalog_copy.read_text())["main_models"][-1]["defaults"]
    assert added.size == (1024, 1024)
    assert added.config_dir == REPO / "configs" / "sdxl"


def test_an_added_sdxl_single_file_is_served_like_its_diffusers_twin(tiny_dir, catalog_copy, engine, make_job):
    from models_registry.resolve import model_ref

    config = tiny_dir / SDXL_SINGLE_FILE_CONFIG
    assert main(["--catalog", str(catalog_copy), "add", str(tiny_dir / SDXL_SINGLE_FILE), "--config", str(config)]) == 0
    added = load_catalog(catalog_copy).main_models[-1]
    assert (added.architecture, added.format, added.config_dir) == ("sdxl", "single_file", config.resolve())
    twin = make_job(model_id=11, steps=4)
    served = engine.run(twin.model_copy(update={"model": model_ref(added)}), {})
    assert [np.asarray(i).tolist() for i in served.images] == [
        np.asarray(i).tolist() for i in engine.run(twin, {}).images
    ]


def test_add_takes_an_explicit_architecture(tiny_dir, catalog_copy):
    lora = str(tiny_dir / "lora" / "tiny-sdxl-lora-peft.safetensors")
    assert main(["--catalog", str(catalog_copy), "add", lora, "--architecture", "sd15"]) == 0
    assert load_catalog(catalog_copy).loras[-1].architecture == "sd15"


def test_check_flags_an_entry_of_the_wrong_family(tiny_catalog_path, capsys):
    wrong = yaml.safe_load(tiny_catalog_path.read_text())
    single_file = next(m for m in wrong["main_models"] if m["id"] == 13)
    single_file["architecture"] = "sd15"
    wrong_file = tiny_catalog_path.with_name("wrong-family.yaml")
    wrong_file.write_text(yaml.safe_dump(wrong, sort_keys=False))

    assert main(["--catalog", str(tiny_catalog_path), "check"]) == 0
    capsys.readouterr()
    assert main(["--catalog", str(wrong_file), "check"]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if "mismatch" in line]
    assert len(problems) == 1
    assert "main_models id 13" in problems[0] and "field architecture says sd15" in problems[0]
    assert str(tiny_catalog_path.parent / SDXL_SINGLE_FILE) in problems[0]
