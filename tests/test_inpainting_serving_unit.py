"""Translation of the inpainting requests into masked Jobs, without HTTP or Redis (the tiny catalog)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from pydantic import ValidationError

from api.errors import InvalidParameter, UnsupportedAction
from api.generate.protocol import GenerateImagesRequest, GenerateImg2ImgRequest
from api.generate.serving import translate_images, translate_legacy
from api.inpainting.protocol import GenerateBackgroundsRequest, RemoveContentsRequest
from api.inpainting.serving import translate_backgrounds, translate_remove_contents
from models_registry.catalog import Catalog
from openpik import vocabulary as vocab
from openpik.settings import Settings
from tests.requests import PNG, img2img

pytestmark = pytest.mark.models
SIGNED = {"PublicKey": "k", "Signature": "s"}


def png(size: tuple[int, int], mode: str = "RGBA") -> str:
    buffer = io.BytesIO()
    Image.new("RGBA", size, (200, 200, 200, 128)).convert(mode).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def test_remove_contents_paints_with_the_catalogs_model_at_the_inputs_exact_size(catalog, settings):
    request = RemoveContentsRequest.model_validate(
        SIGNED | {"Action": "RemoveContents", "RawImage": png((60, 62), "RGB"), "Mask": PNG, "InvertMask": True}
    )
    submission = translate_remove_contents(request, catalog, "k", settings)
    job = submission.job
    assert job.model.model_id == catalog.remove_contents_model
    assert (job.width, job.height, job.output_size) == (64, 64, (60, 62))
    assert (job.prompt, job.strength, job.invert_mask, job.mask_blur) == ("", 1.0, True, vocab.DEFAULT_MASK_BLUR)
    assert sorted(submission.images) == sorted(job.image_keys) == ["mask", "raw"]
    exact = RemoveContentsRequest.model_validate(request.model_dump() | {"RawImage": PNG, "MaskBlur": 0})
    assert translate_remove_contents(exact, catalog, "k", settings).job.output_size is None
    with pytest.raises(UnsupportedAction, match="remove_contents_model"):
        translate_remove_contents(request, catalog.model_copy(update={"remove_contents_model": None}), "k", settings)


def backgrounds(**fields) -> GenerateBackgroundsRequest:
    body = {
        "Action": "GenerateBackgrounds",
        "MainModel": {"ModelCode": "tiny-sdxl-a"},
        "ImageList": [png((60, 62)), PNG],
        "TransparentForeground": {"ImageIndex": 0},
    }
    return GenerateBackgroundsRequest.model_validate(SIGNED | body | fields)


def test_generate_backgrounds_repaints_the_transparent_area_at_the_foregrounds_size(catalog, settings):
    job = translate_backgrounds(backgrounds(), catalog, "k", settings).job
    assert (job.init_image, job.mask_image, job.mask_source, job.mask_blur) == ("image0", "image0", "transparency", 0)
    assert (job.width, job.height, job.output_size, job.strength) == (64, 64, (60, 62), 1.0)
    assert job.background_image is None and job.model.architecture == "sdxl"
    reference = {"ImageIndex": 1, "ReferStrength": 0.25, "ResizeMode": "CropAndResize"}
    sized = translate_backgrounds(backgrounds(Width=96, BackgroundImage2Image=reference), catalog, "k", settings).job
    assert (sized.width, sized.height, sized.output_size) == (96, 64, (96, 62))
    assert (sized.background_image, sized.strength, sized.init_resize_mode) == ("image1", 0.75, "CropAndResize")


def test_generate_backgrounds_reads_neither_image2image_nor_image_and_mask_list(catalog, settings):
    request = backgrounds(ImageAndMaskList=[PNG], Image2Image={"ImageIndex": 0, "MaskIndex": 0})
    assert request.Image2Image is None and request.ImageAndMaskList == []
    units = [{"ControlModel": {"ModelCode": "tiny-sdxl-controlnet-a"}, "ImageIndex": 1}]
    job = translate_backgrounds(backgrounds(ControlNetList=units), catalog, "k", settings).job
    assert job.controlnets[0].image == "image1"
    with pytest.raises(InvalidParameter, match=r"^ControlNetList\[0\].ImageIndex: 2 is outside ImageList"):
        translate_backgrounds(backgrounds(ControlNetList=[units[0] | {"ImageIndex": 2}]), catalog, "k", settings)


def test_a_mask_index_makes_generate_images_inpaint(catalog, settings):
    body = SIGNED | {
        "Action": "GenerateImages",
        "MainModel": {"ModelCode": "tiny-sd15-a"},
        "ImageAndMaskList": [PNG, png((32, 32), "L")],
        "Image2Image": {"ImageIndex": 0, "MaskIndex": 1, "ReferStrength": 0.2},
    }
    job = translate_images(GenerateImagesRequest.model_validate(body), catalog, "k", settings).job
    assert (job.init_image, job.mask_image, job.mask_blur, job.strength) == ("image0", "image1", 4, 0.8)
    assert job.output_size is None and job.mask_source == "luminance"


def test_the_inpaint_controlnet_is_marked_on_its_units(catalog, settings):
    body = SIGNED | {
        "Action": "GenerateImages",
        "MainModel": {"ModelCode": "tiny-sd15-a"},
        "ImageAndMaskList": [PNG],
        "ControlNetList": [
            {"ControlModel": {"ModelCode": "control_v11p_sd15_inpaint"}, "ImageIndex": 0},
            {"ControlModel": {"ModelCode": "control_v11p_sd15_canny"}, "ImageIndex": 0},
        ],
    }
    units = translate_images(GenerateImagesRequest.model_validate(body), catalog, "k", settings).job.controlnets
    assert [unit.masked_control for unit in units] == [True, False]


def test_an_inpainting_checkpoint_needs_a_mask(catalog, settings):
    body = SIGNED | {"Action": "GenerateImages", "MainModel": {"ModelCode": "tiny-sd15-inpainting"}}
    with pytest.raises(InvalidParameter, match=r"^MainModel\.ModelCode: tiny-sd15-inpainting is an inpainting"):
        translate_images(GenerateImagesRequest.model_validate(body), catalog, "k", settings)
    legacy = img2img(PublicKey="k", Signature="s", MainModelId=4)
    with pytest.raises(InvalidParameter, match=r"^MainModelId: 4 is an inpainting"):
        translate_legacy(GenerateImg2ImgRequest.model_validate(legacy), catalog, "k", settings)
    assert catalog.main_model(4).inpainting and catalog.main_model(14).inpainting


def test_the_catalog_names_an_operator_model_for_remove_contents(catalog):
    fields = catalog.model_dump()
    for wanted, owner in ((99, None), (4, "pk")):
        models = [m | {"owner": owner} if m["id"] == 4 else m for m in fields["main_models"]]
        with pytest.raises(ValidationError, match=f"remove_contents_model: no operator main model .* id {wanted}"):
            Catalog.model_validate(fields | {"main_models": models, "remove_contents_model": wanted})
