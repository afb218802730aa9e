"""Seamless tiling: circular padding in every convolution, for one request only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


@contextmanager
def circular_padding(models: Iterable[torch.nn.Module], enabled: bool = True) -> Iterator[None]:
    """Make every Conv2d of ``models`` wrap around the image edges, then restore them.

    A tiled image's left edge continues its right edge (and top/bottom) because each
    convolution reads its padding from the opposite side.
    """
    changed: list[tuple[torch.nn.Conv2d, str]] = []
    if enabled:
        for model in models:
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d) and module.padding_mode != "circular":
                    changed.append((module, module.padding_mode))
                    module.padding_mode = "circular"
    try:
        yield
    finally:
        for module, mode in changed:
            module.padding_mode = mode
