"""Model families (architectures): what the gateway, the catalog and the tools know of each.

Light on purpose: the gateway imports it. How a worker runs a family (its diffusers
pipelines, text encoders, VAE precision) is the worker's half of the table, in
worker/families.py; adding a family is one entry here and one there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Architecture = Literal["sd15", "sdxl"]
"""A catalog entry's ``architecture`` and the catalog actions' ``BaseModel``."""

VENDORED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Family:
    name: str
    native_size: int
    """The side a model of the family was trained at: GenerateImages' default Width/Height."""
    text_encoders: int

    @property
    def configs(self) -> Path:
        """The vendored diffusers configs and tokenizers a single-file checkpoint loads with."""
        return VENDORED_CONFIGS / self.name


FAMILIES: dict[Architecture, Family] = {
    "sd15": Family(name="sd15", native_size=512, text_encoders=1),
    "sdxl": Family(name="sdxl", native_size=1024, text_encoders=2),
}
