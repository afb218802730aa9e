"""ControlNet units: cached models, and the per-unit control modes diffusers lacks.

diffusers has one global switch (``guess_mode``) for the whole request. PICPIK sets a control
mode per unit, so each unit's ControlNet is wrapped in a ``ModedControlNet`` that shapes its
own residuals; the pipeline itself runs with ``guess_mode=False`` and sums the units.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from diffusers import ControlNetModel

from openpik.vocabulary import ControlMode
from worker.compiled import CompileOptions
from worker.errors import ModelLoadError


class ModedControlNet(torch.nn.Module):
    """One ControlNet unit whose residuals follow its PICPIK control mode.

    - Balanced: the ControlNet as is.
    - MyPromptIsMoreImportant: residual i scaled by 0.825^(n-1-i) (diffusers' guess-mode
      scales, 0.1 -> 1.0 on a log scale; n = 13 on SD1.5), on both halves of the CFG batch.
    - ControlNetIsMoreImportant: the same scaling, run on the conditional half only with zeros
      for the unconditional half: exactly diffusers' guess mode, but for this unit alone.
    """

    def __init__(self, controlnet: ControlNetModel, mode: ControlMode, cfg_batch: bool):
        super().__init__()
        self.controlnet = controlnet
        self.mode = mode
        self.cfg_batch = cfg_batch

    @property
    def config(self):
        return self.controlnet.config

    def forward(
        self,
        sample,
        timestep,
        encoder_hidden_states,
        controlnet_cond,
        conditioning_scale=1.0,
        guess_mode=False,
        **kwargs,
    ):
        if self.mode == "Balanced":
            return self.controlnet(
                sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, guess_mode=False, **kwargs
            )
        if self.mode == "MyPromptIsMoreImportant" or not self.cfg_batch:
            return self.controlnet(
                sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, guess_mode=True, **kwargs
            )
        return self._conditional_half_only(
            sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, **kwargs
        )

    def _conditional_half_only(self, sample, timestep, encoder_hidden_states, controlnet_cond, scale, **kwargs):
        half = sample.shape[0] // 2
        added = kwargs.pop("added_cond_kwargs", None)  # SDXL's pooled text and size embeddings
        if added is not None:
            kwargs["added_cond_kwargs"] = {name: value[half:] for name, value in added.items()}
        down, mid = self.controlnet(
            sample[half:],
            timestep,
            encoder_hidden_states[half:],
            controlnet_cond[half:],
            scale,
            guess_mode=True,
            **kwargs,
        )
        down = tuple(torch.cat([torch.zeros_like(d), d]) for d in down)
        return down, torch.cat([torch.zeros_like(mid), mid])


class ControlNetCache:
    """ControlNet models, loaded once per process and combined per request."""

    def __init__(
        self, device: torch.device, dtype: torch.dtype, capacity: int = 8, compile_options: CompileOptions | None = None
    ):
        self.device = device
        self.dtype = dtype
        self.compile_options = compile_options
        self.capacity = capacity
        self.loads = 0
        self._models: OrderedDict[str, ControlNetModel] = OrderedDict()

    def get(self, controlnet_id: int, path: str) -> ControlNetModel:
        if path not in self._models:
            try:
                model = ControlNetModel.from_pretrained(path, dtype=self.dtype, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"ControlNet {controlnet_id} could not be loaded from {path}: {exc}") from exc
            while len(self._models) >= self.capacity:
                self._models.popitem(last=False)
            model = model.to(self.device)
            if self.device.type == "cuda":
                model.to(memory_format=torch.channels_last)
            if self.compile_options:
                self.compile_options.compile(model)
            self._models[path] = model
            self.loads += 1
        self._models.move_to_end(path)
        return self._models[path]
