"""The operator's catalog: ids and codes the API exposes -> files and defaults.

Loaded from one YAML file (``OPENPIK_CATALOG``). Relative paths are relative to that
file. Errors name the file, the entry and the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from openpik import vocabulary as vocab
from openpik.families import FAMILIES, Architecture
from openpik.routing import DEFAULT_GROUP
from openpik.samplers import UnknownSamplerError, canonical_sampler


class CatalogError(ValueError):
    """The catalog file is unreadable or breaks a rule; the message says where."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Owned(_Entry):
    """An entry the operator installed for everyone (no owner) or for one PublicKey."""

    owner: str | None = Field(default=None, description="PublicKey that alone may list and use it")

    def usable_by(self, public_key: str) -> bool:
        return self.owner is None or self.owner == public_key


class InferenceDefaults(_Entry):
    steps: vocab.Steps = vocab.DEFAULT_STEPS
    sampler: str = vocab.DEFAULT_SAMPLER
    cfg_scale: vocab.CfgScale = vocab.DEFAULT_CFG_SCALE
    clip_skip: vocab.ClipSkip = vocab.DEFAULT_CLIP_SKIP
    width: int | None = Field(default=None, ge=16, description="default: the family's native size")
    height: int | None = Field(default=None, ge=16, description="default: the family's native size")

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        """Checked here, at start-up: a client asking for the default must not get the blame."""
        try:
            return canonical_sampler(name)
        except UnknownSamplerError as exc:
            raise ValueError(str(exc)) from None


class MainModel(_Owned):
    id: int = Field(ge=1)
    model_code: str
    name: str
    path: Path = Field(description="A diffusers folder or a single-file .safetensors checkpoint")
    architecture: Architecture = "sd15"
    config: Path | None = Field(
        default=None,
        description="Diffusers folder with the configs of a single-file checkpoint "
        "(default: the family's vendored configs, configs/<architecture>)",
    )
    defaults: InferenceDefaults = InferenceDefaults()
    vae: int | None = Field(default=None, description="Id of the default VAE")
    group: str = DEFAULT_GROUP
    inpainting: bool = Field(
        default=False,
        description="An inpainting checkpoint (a 9-channel UNet): it serves only masked requests "
        "(RemoveContents, GenerateBackgrounds, GenerateImages with Image2Image.MaskIndex)",
    )

    @property
    def format(self) -> Literal["diffusers", "single_file"]:
        return "single_file" if self.path.suffix in {".safetensors", ".ckpt"} else "diffusers"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of an image when a request names none: the catalog's, else the family's."""
        native = FAMILIES[self.architecture].native_size
        return self.defaults.width or native, self.defaults.height or native

    @property
    def config_dir(self) -> Path:
        """The configs a single-file checkpoint loads with."""
        return self.config or FAMILIES[self.architecture].configs


class Vae(_Entry):
    id: int = Field(ge=1)
    model_code: str
    name: str = ""
    path: Path


class Lora(_Owned):
    id: int = Field(ge=1)
    model_code: str
    name: str
    path: Path
    architecture: Architecture = "sd15"
    trigger_words: list[str] = []
    default_weight: vocab.LoraWeight = vocab.DEFAULT_LORA_WEIGHT


class ControlNet(_Owned):
    id: int = Field(ge=1)
    model_code: str
    name: str
    path: Path
    architecture: Architecture = "sd15"
    inpaint: bool = Field(
        default=False, description="An inpaint ControlNet: in a masked request its control map is the masked image"
    )


class PreprocessorParam(_Entry):
    name: str
    default: float
    min: float
    max: float
    step: float

    @model_validator(mode="after")
    def _default_in_range(self) -> PreprocessorParam:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"default {self.default} outside [{self.min}, {self.max}]")
        return self


class Preprocessor(_Entry):
    id: int = Field(ge=1)
    model_code: str
    name: str
    detector: str = Field(description="A detector the workers run (openpik.vocabulary.DETECTOR_PARAMS), e.g. canny")
    has_resolution: bool = False
    default_resolution: vocab.DetectResolution = vocab.DEFAULT_DETECT_RESOLUTION
    params: list[PreprocessorParam] = Field(default=[], max_length=2)

    @model_validator(mode="after")
    def _detector_takes_the_params(self) -> Preprocessor:
        if self.detector not in vocab.DETECTOR_PARAMS:
            raise ValueError(f"detector: unknown detector {self.detector!r}; known: {', '.join(vocab.DETECTOR_PARAMS)}")
        takes = vocab.DETECTOR_PARAMS[self.detector]
        for i, param in enumerate(self.params):
            if param.name not in takes:
                raise ValueError(
                    f"params[{i}].name: detector {self.detector!r} has no parameter {param.name!r} "
                    f"(it takes: {', '.join(takes) or 'none'})"
                )
        return self


class Preset(_Entry):
    id: int = Field(ge=1, le=4)
    name: str
    controlnet: int = Field(description="ControlNet model id")
    preprocessor: int = Field(description="Preprocessor id")
    resolution: vocab.DetectResolution = vocab.DEFAULT_DETECT_RESOLUTION
    params: list[float] = Field(default=[], max_length=2)
    start: vocab.Fraction = 0.0
    end: vocab.Fraction = 1.0
    mode: vocab.ControlMode = "Balanced"
    resize_mode: vocab.ResizeMode = "CropAndResize"


class BackgroundRemover(_Entry):
    """A segmentation model for RemoveBackground: an ONNX file with u2net's inputs and outputs
    (rembg's u2net, u2netp, silueta or isnet-general-use releases)."""

    id: int = Field(ge=1)
    name: str
    path: Path = Field(description="The .onnx file")
    group: str = Field(default=DEFAULT_GROUP, description="Its tasks queue on openpik.<group> (e.g. editing)")
    default: bool = Field(default=False, description="The remover the actions use (default: the first)")


class Catalog(_Entry):
    version: Literal[1] = 1
    annotators_dir: Path | None = None
    translator: Path | None = Field(default=None, description="A MarianMT folder translating prompts to English")
    main_models: list[MainModel] = Field(min_length=1)
    vaes: list[Vae] = []
    loras: list[Lora] = []
    controlnets: list[ControlNet] = []
    preprocessors: list[Preprocessor] = []
    presets: list[Preset] = []
    remove_contents_model: int | None = Field(
        default=None, description="Id of the main model RemoveContents paints with (None: RemoveContents is off)"
    )
    background_removers: list[BackgroundRemover] = []

    @model_validator(mode="after")
    def _references_resolve(self) -> Catalog:
        _require_unique("background_removers", self.background_removers, "id")
        defaults = [i for i, remover in enumerate(self.background_removers) if remover.default]
        if len(defaults) > 1:
            raise ValueError(f"background_removers[{defaults[1]}].default: only one remover may be the default")
        for kind in ("main_models", "vaes", "loras", "controlnets", "preprocessors", "presets"):
            _require_unique(kind, getattr(self, kind), "id")
            if kind != "presets":
                _require_unique(kind, getattr(self, kind), "model_code")
        vae_ids = {v.id for v in self.vaes}
        for i, model in enumerate(self.main_models):
            if model.vae is not None and model.vae not in vae_ids:
                raise ValueError(f"main_models[{i}] (id {model.id}).vae: no VAE with id {model.vae}")
        wanted = self.remove_contents_model
        painter = self.main_model(wanted) if wanted is not None else None
        if wanted is not None and (painter is None or painter.owner is not None):
            raise ValueError(f"remove_contents_model: no operator main model (one without owner) with id {wanted}")
        controlnet_ids = {c.id for c in self.controlnets}
        for i, preset in enumerate(self.presets):
            where = f"presets[{i}] (id {preset.id})"
            if preset.controlnet not in controlnet_ids:
                raise ValueError(f"{where}.controlnet: no ControlNet with id {preset.controlnet}")
            preprocessor = self.preprocessor(preset.preprocessor)
            if preprocessor is None:
                raise ValueError(f"{where}.preprocessor: no preprocessor with id {preset.preprocessor}")
            _check_preset_params(where, preset, preprocessor)
        return self

    def main_model(self, model_id: int) -> MainModel | None:
        return next((m for m in self.main_models if m.id == model_id), None)

    def vae(self, vae_id: int) -> Vae | None:
        return next((v for v in self.vaes if v.id == vae_id), None)

    def lora(self, lora_id: int) -> Lora | None:
        return next((lo for lo in self.loras if lo.id == lora_id), None)

    def controlnet(self, controlnet_id: int) -> ControlNet | None:
        return next((c for c in self.controlnets if c.id == controlnet_id), None)

    def preprocessor(self, preprocessor_id: int) -> Preprocessor | None:
        return next((p for p in self.preprocessors if p.id == preprocessor_id), None)

    def preset(self, preset_id: int) -> Preset | None:
        return next((p for p in self.presets if p.id == preset_id), None)

    def preset_controlnet(self, preset_id: int) -> ControlNet:
        """The ControlNet of a configured preset (checked to exist when the catalog loaded)."""
        preset = self.preset(preset_id)
        found = self.controlnet(preset.controlnet) if preset else None
        if found is None:
            raise LookupError(f"no preset with id {preset_id} in the catalog")
        return found

    @property
    def background_remover(self) -> BackgroundRemover | None:
        """The remover RemoveBackground uses: the one marked default, else the first; None: none installed."""
        return next((r for r in self.background_removers if r.default), None) or next(
            iter(self.background_removers), None
        )

    def referenced_files(self) -> list[tuple[str, Path]]:
        """(entry label, path) for every file or folder the catalog points to."""
        files = [(f"main_models id {m.id}", m.path) for m in self.main_models]
        files += [(f"main_models id {m.id} config", m.config) for m in self.main_models if m.config]
        files += [(f"vaes id {v.id}", v.path) for v in self.vaes]
        files += [(f"loras id {lo.id}", lo.path) for lo in self.loras]
        files += [(f"controlnets id {c.id}", c.path) for c in self.controlnets]
        files += [(f"background_removers id {r.id}", r.path) for r in self.background_removers]
        files += [("translator", self.translator)] if self.translator else []
        return files


def _check_preset_params(where: str, preset: Preset, preprocessor: Preprocessor) -> None:
    """A preset's params are its preprocessor's, in order, within their ranges."""
    if len(preset.params) > len(preprocessor.params):
        raise ValueError(
            f"{where}.params: {len(preset.params)} values, but preprocessor {preprocessor.id} takes "
            f"{len(preprocessor.params)}"
        )
    for i, (value, spec) in enumerate(zip(preset.params, preprocessor.params)):
        if not spec.min <= value <= spec.max:
            raise ValueError(
                f"{where}.params[{i}]: {spec.name} must be within [{spec.min:g}, {spec.max:g}]; got {value:g}"
            )


def _require_unique(kind: str, entries: Sequence[BaseModel], field: str) -> None:
    seen: dict[object, int] = {}
    for i, entry in enumerate(entries):
        value = getattr(entry, field)
        if value in seen:
            raise ValueError(f"{kind}[{i}].{field}: {value!r} already used by {kind}[{seen[value]}]")
        seen[value] = i


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog; relative paths become absolute against its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: the catalog must be a mapping with main_models, loras, ...")
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{path}: {_describe(exc, raw)}") from None
    return _absolute(catalog, path.resolve().parent)


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    """Each problem as 'entry.field (entry id N): rule'; a validator's own message may name
    the field first ('detector: unknown detector'), which joins the location."""
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        message = error["msg"].removeprefix("Value error, ")
        field, separator, rule = message.partition(": ")
        if separator and loc and re.fullmatch(r"[a-z_]+(\[\d+\])?(\.[a-z_]+)*", field):
            where, message = f"{where}.{field}", rule
        problems.append(f"{where}{_entry_label(raw, loc)}: {message}")
    return "; ".join(problems) if problems else str(exc)


def _entry_label(raw: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
        try:
            entry = raw[loc[0]][loc[1]]
        except (KeyError, IndexError, TypeError):
            return ""
        if isinstance(entry, dict) and "id" in entry:
            return f" (entry id {entry['id']})"
    return ""


def _absolute(catalog: Catalog, base: Path) -> Catalog:
    def fix(entry: BaseModel, *fields: str) -> BaseModel:
        updates = {f: base / getattr(entry, f) for f in fields if getattr(entry, f) is not None}
        return entry.model_copy(update=updates)

    return catalog.model_copy(
        update={
            "annotators_dir": base / catalog.annotators_dir if catalog.annotators_dir else None,
            "translator": base / catalog.translator if catalog.translator else None,
            "main_models": [fix(m, "path", "config") for m in catalog.main_models],
            "vaes": [fix(v, "path") for v in catalog.vaes],
            "loras": [fix(lo, "path") for lo in catalog.loras],
            "controlnets": [fix(c, "path") for c in catalog.controlnets],
            "background_removers": [fix(r, "path") for r in catalog.background_removers],
        }
    )
