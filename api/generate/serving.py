"""Translation of the generate actions into a Job, once.

Every catalog reference and range is checked here, before anything is queued; the Job that
leaves this module speaks only our internal names. Storing and queueing it is submission.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from api.errors import InvalidParameter
from api.generate.protocol import (
    ControlNetItem,
    ControlNetParam,
    GenerateImagesRequest,
    GenerateImg2ImgRequest,
    GenerateTxt2ImgRequest,
)
from api.images import decode_image
from api.protocol_base import wire_param_name
from models_registry.catalog import Catalog, ControlNet, Lora, MainModel, Preprocessor
from models_registry.resolve import control_unit, default_vae_ref, lora_ref, model_ref, preset_unit
from openpik import vocabulary as vocab
from openpik.callbacks import CallbackUrlError, normalized_url
from openpik.job import ControlUnit, Job, LoraRef, QueuedJob, round_dimension
from openpik.routing import GENERATE_TASK, queue_name
from openpik.samplers import UnknownSamplerError, canonical_sampler
from openpik.settings import Settings
from openpik.translation import untranslated_note

LegacyRequest = GenerateImg2ImgRequest | GenerateTxt2ImgRequest
PROMPT_SEPARATOR = ", "


@dataclass
class Submission:
    """A validated request: the Job (or BackgroundJob), its decoded input images, and where it queues."""

    job: QueuedJob
    queue: str
    images: dict[str, bytes] = field(default_factory=dict)
    task_name: str = GENERATE_TASK
    """The Celery task that runs the Job (openpik.routing)."""
    note: str = ""
    callback_url: str = ""
    """The CallbackUrl, normalized (openpik.callbacks); the submitter checks it against the key's prefixes."""


class _Images:
    """Collects decoded input images under the names the Job refers to."""

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels
        self.stored: dict[str, bytes] = {}

    def add(self, name: str, value: str, field_name: str) -> str:
        if not value:
            raise InvalidParameter(f"{field_name}: an image is required here")
        self.stored[name] = decode_image(value, field_name, self.max_pixels).data
        return name


# --- legacy ------------------------------------------------------------------------------


def translate_legacy(request: LegacyRequest, catalog: Catalog, owner: str, settings: Settings) -> Submission:
    model = _main_model(catalog, request.MainModelId, request.ModelType, owner)
    images = _Images(settings.max_image_pixels)
    fields = _shared_fields(
        catalog,
        model,
        use_model_vae=request.UseCustomMainModelVae,
        positive=request.PositivePrompts,
        negative=request.NegativePrompts,
        sampler=(request.Sampler, "Sampler"),
        width=request.Width,
        height=request.Height,
        translate=request.TranslatePrompt,
    ) | dict(
        steps=request.Steps,
        cfg_scale=request.CfgScale,
        seed=request.Seed,
        batch_size=request.BatchSize,
        clip_skip=request.ClipSkip,
        loras=_legacy_loras(request, catalog, model, owner),
    )
    if model.inpainting:
        raise InvalidParameter(
            f"MainModelId: {model.id} is an inpainting checkpoint; use it through GenerateImages with a mask"
        )
    if isinstance(request, GenerateImg2ImgRequest) and request.ReferenceImage:
        fields |= dict(
            init_image=images.add("init", request.ReferenceImage, "ReferenceImage"),
            strength=1.0 - request.ReferenceScale,
        )
    if request.EnableControlNet is not False:
        fields["controlnets"] = tuple(
            _legacy_unit(catalog, model, param, f"ControlNetParams[{i}]", images, owner)
            for i, param in enumerate(request.ControlNetParams)
        )
    submission = _submission(fields, model, images, request.TranslatePrompt, catalog, settings)
    submission.callback_url = callback_url(request.CallbackUrl)
    return submission


def _legacy_loras(request: LegacyRequest, catalog: Catalog, model: MainModel, owner: str) -> tuple[LoraRef, ...]:
    if len(set(request.SubModelIds)) != len(request.SubModelIds):
        raise InvalidParameter("SubModelIds: each LoRA id may appear once")
    weights: dict[int, float] = {}
    for i, param in enumerate(request.SubModelParams):
        if param.SubModelId not in request.SubModelIds:
            raise InvalidParameter(f"SubModelParams[{i}].SubModelId: {param.SubModelId} is not in SubModelIds")
        weights[param.SubModelId] = param.ControlWeight
    refs = []
    for i, lora_id in enumerate(request.SubModelIds):
        lora = catalog.lora(lora_id)
        if lora is None or not lora.usable_by(owner):
            raise InvalidParameter(f"SubModelIds[{i}]: no LoRA with id {lora_id} (see ListModels)")
        _require_family(model, lora, f"SubModelIds[{i}]")
        refs.append(lora_ref(lora, weights.get(lora_id)))
    return tuple(refs)


def _legacy_unit(
    catalog: Catalog, model: MainModel, param: ControlNetParam, where: str, images: _Images, owner: str
) -> ControlUnit:
    image = images.add(f"control{len(images.stored)}", param.ControlNetImg, f"{where}.ControlNetImg")
    if param.preset_id:
        if catalog.preset(param.preset_id) is None:
            raise InvalidParameter(f"{where}.ControlPreSetId: preset {param.preset_id} is not configured")
        _require_family(model, catalog.preset_controlnet(param.preset_id), f"{where}.ControlPreSetId")
        return preset_unit(catalog, param.preset_id, image, weight=param.ControlWeight)
    controlnet = catalog.controlnet(param.ModelId) if param.ModelId is not None else None
    if controlnet is None or not controlnet.usable_by(owner):
        raise InvalidParameter(
            f"{where}.ModelId: a custom unit (ControlPreSetId 0) needs an existing ControlNet "
            f"model id (see ListControlNetProcessor ModelList); got {param.ModelId}"
        )
    _require_family(model, controlnet, f"{where}.ModelId")
    preprocessor = _legacy_preprocessor(catalog, param.PreProcessorId, f"{where}.PreProcessorId")
    values = [param.Param1Value, param.Param2Value][: len(preprocessor.params)]
    params = [spec.default if v is None else v for spec, v in zip(preprocessor.params, values)]
    _check_params(preprocessor, params, [f"{where}.Param1Value", f"{where}.Param2Value"])
    return control_unit(
        catalog,
        controlnet.id,
        preprocessor.id,
        image,
        params=params,
        weight=param.ControlWeight,
        start=param.StartingControlStep,
        end=param.EndingControlStep,
        mode=param.ControlMode,
        resize_mode=param.ResizeMode,
        detect_resolution=param.PreProcessorResolution or preprocessor.default_resolution,
    )


def _legacy_preprocessor(catalog: Catalog, preprocessor_id: int | str | None, where: str) -> Preprocessor:
    """An id from ListControlNetProcessor; 0 or "none": the image is the control map."""
    if preprocessor_id in (0, "none"):
        found = next((p for p in catalog.preprocessors if p.detector == "none"), None)
    elif isinstance(preprocessor_id, int):
        found = catalog.preprocessor(preprocessor_id)
    else:
        found = None
    if found is None:
        raise InvalidParameter(
            f"{where}: a custom unit needs an existing preprocessor id "
            f'(see ListControlNetProcessor), or 0 or "none"; got {preprocessor_id}'
        )
    return found


# --- current -----------------------------------------------------------------------------


def translate_images(request: GenerateImagesRequest, catalog: Catalog, owner: str, settings: Settings) -> Submission:
    model, fields, images = images_fields(request, catalog, owner, settings)
    return images_submission(request, model, fields, images, catalog, settings)


def images_fields(
    request: GenerateImagesRequest,
    catalog: Catalog,
    owner: str,
    settings: Settings,
    default_size: tuple[int, int] | None = None,
) -> tuple[MainModel, dict[str, Any], _Images]:
    """GenerateImages' Job fields and images (GenerateBackgrounds adds its own to them);
    ``default_size``: Width x Height when the request sends none (else the model's native size)."""
    model = _model_by_code(catalog, request.MainModel.ModelCode, owner)
    params = request.MainModel.InferenceParams
    defaults = model.defaults
    images = _Images(settings.max_image_pixels)
    width, height = default_size or model.size
    fields = _shared_fields(
        catalog,
        model,
        use_model_vae=request.UseMainModelVAE,
        positive=request.PositivePrompts,
        negative=request.NegativePrompts,
        sampler=(params.Sampler or defaults.sampler, "MainModel.InferenceParams.Sampler"),
        width=request.Width or width,
        height=request.Height or height,
        translate=request.TranslatePrompts,
    ) | dict(
        steps=params.Steps or defaults.steps,
        cfg_scale=defaults.cfg_scale if params.CFGScale is None else params.CFGScale,
        clip_skip=params.ClipSkip or defaults.clip_skip,
        seed=request.Seed,
        batch_size=request.BatchSize,
        tileable=request.Tileable,
        loras=_current_loras(request, catalog, model, owner),
    )
    if request.Image2Image is not None:
        init = request.Image2Image
        fields |= dict(
            init_image=_indexed_image(request, init.ImageIndex, "Image2Image.ImageIndex", images),
            strength=1.0 - init.ReferStrength,
            init_resize_mode=init.ResizeMode,
        )
        if init.MaskIndex is not None:
            mask = _indexed_image(request, init.MaskIndex, "Image2Image.MaskIndex", images)
            fields |= dict(mask_image=mask, mask_blur=vocab.IMAGE2IMAGE_MASK_BLUR)
    fields["controlnets"] = tuple(
        _current_unit(catalog, model, item, f"ControlNetList[{i}]", request, images, owner, settings.strict_fields)
        for i, item in enumerate(request.ControlNetList)
    )
    return model, fields, images


def images_submission(
    request: GenerateImagesRequest,
    model: MainModel,
    fields: dict[str, Any],
    images: _Images,
    catalog: Catalog,
    settings: Settings,
) -> Submission:
    """The Submission of GenerateImages' (or GenerateBackgrounds') Job fields."""
    if model.inpainting and "mask_image" not in fields:
        raise InvalidParameter(
            f"MainModel.ModelCode: {model.model_code} is an inpainting checkpoint; it only repaints masked "
            "areas (Image2Image.MaskIndex)"
        )
    submission = _submission(fields, model, images, request.TranslatePrompts, catalog, settings)
    submission.callback_url = callback_url(request.CallbackUrl)
    return submission


def _current_loras(
    request: GenerateImagesRequest, catalog: Catalog, model: MainModel, owner: str
) -> tuple[LoraRef, ...]:
    refs = []
    for i, sub in enumerate(request.SubModelList):
        lora = next((lo for lo in catalog.loras if lo.model_code == sub.ModelCode), None)
        if lora is None or not lora.usable_by(owner):
            raise InvalidParameter(f"SubModelList[{i}].ModelCode: no LoRA {sub.ModelCode!r} (see ListModels)")
        _require_family(model, lora, f"SubModelList[{i}].ModelCode")
        refs.append(lora_ref(lora, sub.InferenceParams.LoraWeight))
    if len({r.lora_id for r in refs}) != len(refs):
        raise InvalidParameter("SubModelList: each LoRA may appear once")
    return tuple(refs)


def _current_unit(
    catalog: Catalog,
    model: MainModel,
    item: ControlNetItem,
    where: str,
    request: GenerateImagesRequest,
    images: _Images,
    owner: str,
    strict_fields: bool,
) -> ControlUnit:
    controlnet = next((c for c in catalog.controlnets if c.model_code == item.ControlModel.ModelCode), None)
    if controlnet is None or not controlnet.usable_by(owner):
        raise InvalidParameter(
            f"{where}.ControlModel.ModelCode: no ControlNet {item.ControlModel.ModelCode!r} (see ListControlNets)"
        )
    _require_family(model, controlnet, f"{where}.ControlModel.ModelCode")
    preprocessor = next((p for p in catalog.preprocessors if p.model_code == item.PreProcessor.ModelCode), None)
    if preprocessor is None:
        raise InvalidParameter(
            f"{where}.PreProcessor.ModelCode: no preprocessor {item.PreProcessor.ModelCode!r} "
            "(see ListControlNetProcessor)"
        )
    params = _preprocessor_params(
        preprocessor, item.PreProcessor.InferenceParams.model_extra or {}, f"{where}.PreProcessor", strict_fields
    )
    image = _indexed_image(request, item.ImageIndex, f"{where}.ImageIndex", images)
    control = item.ControlModel.InferenceParams
    return control_unit(
        catalog,
        controlnet.id,
        preprocessor.id,
        image,
        params=params,
        weight=control.ControlWeight,
        start=control.StartingStep,
        end=control.EndingStep,
        mode=control.ControlMode,
        resize_mode=control.ResizeMode,
        detect_resolution=item.PreProcessor.InferenceParams.Resolution or preprocessor.default_resolution,
        masked_control=controlnet.inpaint,
    )


def _preprocessor_params(
    preprocessor: Preprocessor, given: dict[str, Any], where: str, strict_fields: bool
) -> list[float]:
    """The preprocessor's parameters in catalog order, from the InferenceParams keys that
    ListControlNets lists for it (CannyLowThreshold); other keys belong to other
    preprocessors and are not read (refused with OPENPIK_STRICT_FIELDS)."""
    wire_names = [wire_param_name(preprocessor.model_code, spec.name) for spec in preprocessor.params]
    unknown = sorted(set(given) - set(wire_names))
    if strict_fields and unknown:
        raise InvalidParameter(
            f"{where}.InferenceParams.{unknown[0]}: not a parameter of {preprocessor.model_code} "
            f"(accepted: {', '.join(wire_names) or 'none'})"
        )
    for name in wire_names:
        value = given.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidParameter(f"{where}.InferenceParams.{name}: must be a number")
    params = [
        spec.default if given.get(name) is None else given[name] for spec, name in zip(preprocessor.params, wire_names)
    ]
    _check_params(preprocessor, params, [f"{where}.InferenceParams.{name}" for name in wire_names])
    return params


def _indexed_image(request: GenerateImagesRequest, index: int, where: str, images: _Images) -> str:
    """The image at ``index`` of the request's image list, stored under its index."""
    listed, name = request.image_list, request.images_field
    if index >= len(listed):
        raise InvalidParameter(f"{where}: {index} is outside {name} (length {len(listed)})")
    return images.add(f"image{index}", listed[index], f"{name}[{index}]")


# --- shared rules ------------------------------------------------------------------------


def _shared_fields(
    catalog: Catalog,
    model: MainModel,
    *,
    use_model_vae: bool,
    positive: list[str],
    negative: list[str],
    sampler: tuple[str, str],
    width: int,
    height: int,
    translate: bool,
) -> dict[str, Any]:
    """The Job fields both families fill by the same rules; ``sampler`` is (name, its wire field)."""
    return dict(
        model=model_ref(model),
        vae=None if use_model_vae else default_vae_ref(catalog, model),
        prompt=PROMPT_SEPARATOR.join(positive),
        negative_prompt=PROMPT_SEPARATOR.join(negative),
        sampler=_sampler(*sampler),
        width=round_dimension(width),
        height=round_dimension(height),
        translate_prompts=translate and catalog.translator is not None,
    )


def callback_url(url: str | None) -> str:
    """A CallbackUrl's normalized form ("" when absent), or 230 naming the field; whether the key may
    use it is the submitter's check (api.generate.submission)."""
    if url is None:
        return ""
    try:
        return normalized_url(url)
    except CallbackUrlError as exc:
        raise InvalidParameter(f"CallbackUrl: {exc}") from None


def _submission(
    fields: dict[str, Any], model: MainModel, images: _Images, translate: bool, catalog: Catalog, settings: Settings
) -> Submission:
    return Submission(
        job=checked_job(fields, settings),
        queue=queue_name(model.group),
        images=images.stored,
        note=_translation_note(translate, catalog, model, fields),
    )


def _main_model(catalog: Catalog, model_id: int, model_type: str, owner: str) -> MainModel:
    """combined_model: the operator's models; custom_model: only the caller's own."""
    model = catalog.main_model(model_id)
    wanted_owner = owner if model_type == "custom_model" else None
    if model is None or model.owner != wanted_owner:
        raise InvalidParameter(f"MainModelId: no {model_type} with id {model_id} (see ListModels)")
    return model


def _model_by_code(catalog: Catalog, code: str, owner: str) -> MainModel:
    model = next((m for m in catalog.main_models if m.model_code == code), None)
    if model is None or not model.usable_by(owner):
        raise InvalidParameter(f"MainModel.ModelCode: no model {code!r} (see ListModels)")
    return model


def _require_family(model: MainModel, entry: Lora | ControlNet, where: str) -> None:
    """A LoRA or ControlNet runs only on main models of its own architecture."""
    if entry.architecture != model.architecture:
        raise InvalidParameter(
            f"{where}: {entry.model_code} is an {entry.architecture} model and cannot be used with "
            f"{model.model_code}, an {model.architecture} main model (see BaseModel in ListModels / ListControlNets)"
        )


def _sampler(name: str, where: str) -> str:
    try:
        return canonical_sampler(name)
    except UnknownSamplerError as exc:
        raise InvalidParameter(f"{where}: {exc}") from None


def _check_params(preprocessor: Preprocessor, values: list[float], names: list[str]) -> None:
    for spec, value, name in zip(preprocessor.params, values, names):
        if not spec.min <= value <= spec.max:
            raise InvalidParameter(
                f"{name}: {spec.name} of {preprocessor.model_code} must be within "
                f"[{spec.min:g}, {spec.max:g}]; got {value:g}"
            )


def checked_job(fields: dict[str, Any], settings: Settings) -> Job:
    """The Job of ``fields``, within this server's cost limit."""
    job = Job(**fields)
    cost = job.width * job.height * job.steps * job.batch_size
    if settings.max_task_cost and cost > settings.max_task_cost:
        raise InvalidParameter(
            f"Width x Height x Steps x BatchSize: {cost} exceeds this server's limit "
            f"{settings.max_task_cost}; ask for fewer pixels, steps or images"
        )
    return job


def _translation_note(translate: bool, catalog: Catalog, model: MainModel, fields: dict[str, Any]) -> str:
    """What the task record says when a prompt needs a translation this server cannot do."""
    if translate and catalog.translator is None:
        return untranslated_note(model.model_code, fields["prompt"], fields["negative_prompt"])
    return ""
