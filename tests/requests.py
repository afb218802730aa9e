"""Request bodies for the tests, in PICPIK's field names (unsigned; tests.stack signs them)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_base64(size=(64, 64), seed=0) -> str:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = png_base64()


def txt2img(**fields) -> dict:
    return {
        "Action": "GenerateTxt2Img",
        "ModelType": "combined_model",
        "MainModelId": 1,
        "BatchSize": 1,
        "Steps": 4,
        "CfgScale": 7.5,
        "Seed": 1,
        "Sampler": "Euler a",
        "Width": 64,
        "Height": 64,
        "ClipSkip": 1,
        "TranslatePrompt": False,
        "PositivePrompts": ["an apple"],
    } | fields


def img2img(**fields) -> dict:
    return txt2img(Action="GenerateImg2Img", ReferenceImage=PNG, ReferenceScale=0.5) | fields


def custom_unit(**fields) -> dict:
    return {
        "ControlNetImg": PNG,
        "ControlPreSetId": 0,
        "ControlWeight": 1,
        "ModelId": 1,
        "PreProcessorId": 2,
        "StartingControlStep": 0,
        "EndingControlStep": 1,
        "ControlMode": "Balanced",
        "ResizeMode": "JustResize",
        "PreProcessorResolution": 512,
        "Param1Value": 100,
        "Param2Value": 200,
    } | fields
