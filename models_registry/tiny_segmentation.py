"""A tiny background remover: an ONNX file with u2net's inputs and outputs, built offline.

The real removers (u2net, isnet) are ONNX files an operator installs from rembg's releases;
the tests and `make run` need one that loads the same way (rembg's u2net session) and whose
mask really depends on the picture, or no test of thresholds, boxes or matting could fail.
So this one is no random network: it reads brightness (a bright subject on a dark ground is
the foreground), blurs it so that the subject's outline is a soft band a few pixels wide, as a
real model's is around hair, and adds a small seeded random texture so the weights are a
network's, deterministic from build to build.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

INPUT_SIZE = 320
"""u2net's input and mask side: rembg resizes every image to it."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""How rembg's u2net session normalizes the input; the model undoes it to see brightness."""
LUMA = (0.299, 0.587, 0.114)
BLUR_SIDE = 9
"""Side of each of the two box blurs, in 320-pixel input space: the soft band's width."""
STEEPNESS = 8.0
"""Slope of the sigmoid around mid-grey: the band between sure ground and sure subject."""
TEXTURE_STD = 0.02
SEED = 17
OPSET = 17


def build_tiny_segmentation(out_file: Path) -> Path:
    """Write the tiny remover to ``out_file`` (ONNX: input 1x3x320x320, first output 1x1x320x320 in 0..1)."""
    import torch

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    model = _tiny_segmenter().eval()
    example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the exporter's constant-folding notes on the padding
        torch.onnx.export(
            model,
            (example,),
            str(out_file),
            input_names=["input.1"],
            output_names=["d0"],
            opset_version=OPSET,
            dynamo=False,  # the exporter that needs no onnxscript and writes one self-contained file
        )
    return out_file


def _tiny_segmenter() -> nn.Module:
    import torch
    from torch import nn

    class TinySegmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(SEED)
            self.luma = nn.Conv2d(3, 1, 1)
            self.texture = nn.Conv2d(3, 1, 3, padding=1, padding_mode="replicate", bias=False)
            self.blur = nn.Conv2d(1, 1, BLUR_SIDE, padding=BLUR_SIDE // 2, padding_mode="replicate", bias=False)
            with torch.no_grad():
                # luma of the un-normalized pixel: sum_c w_c * (x_c * std_c + mean_c)
                weights = torch.tensor([w * s for w, s in zip(LUMA, IMAGENET_STD)])
                self.luma.weight.copy_(weights.view(1, 3, 1, 1))
                assert self.luma.bias is not None
                nn.init.constant_(self.luma.bias, sum(w * m for w, m in zip(LUMA, IMAGENET_MEAN)) - 0.5)
                # zero-sum kernels: flat areas read as their brightness alone, edges get a seeded wobble
                self.texture.weight.sub_(self.texture.weight.mean(dim=(2, 3), keepdim=True))
                self.texture.weight.mul_(TEXTURE_STD / self.texture.weight.std())
                self.blur.weight.fill_(1.0 / BLUR_SIDE**2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            centred = self.luma(x) + self.texture(x)
            return torch.sigmoid(STEEPNESS * self.blur(self.blur(centred)))

    return TinySegmenter()
