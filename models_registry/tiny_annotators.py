"""Random-weight annotator (ControlNet preprocessor) files, built offline.

Each file has the name and on-disk layout that controlnet-aux's ``from_pretrained`` reads
from a local annotators folder, so the worker's preprocessors run their real code paths in
tests and `make run` without downloading anything. The networks are full-size (their
layouts are fixed), initialised by their own constructors under a fixed torch seed, so two
builds give identical files. Floating-point tensors are stored as float16: the loaders'
``load_state_dict`` casts them back into their float32 parameters, and the files are half
the size (about 1.9 GB instead of 3.8 GB; ZoeDepth's BEiT-L alone is 0.7 GB).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SEED = 1234


def _hed():
    from controlnet_aux.hed import ControlNetHED_Apache2

    return ControlNetHED_Apache2().state_dict()


def _pidinet():
    """PiDiNet's file keeps its weights under ``state_dict`` (the loader strips any ``module.``)."""
    from controlnet_aux.pidi.model import pidinet

    return {"state_dict": pidinet().state_dict()}


def _lineart():
    from controlnet_aux.lineart import Generator

    return Generator(3, 1, 3).state_dict()


def _lineart_anime():
    import functools

    from controlnet_aux.lineart_anime import UnetGenerator
    from torch import nn

    norm_layer = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return UnetGenerator(3, 1, 8, 64, norm_layer=norm_layer, use_dropout=False).state_dict()


def _mlsd():
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    return MobileV2_MLSD_Large().state_dict()


def _openpose_body():
    from controlnet_aux.open_pose.model import bodypose_model

    return _without_stage_prefix(bodypose_model().state_dict())


def _openpose_hand():
    from controlnet_aux.open_pose.model import handpose_model

    return _without_stage_prefix(handpose_model().state_dict())


def _without_stage_prefix(state_dict: dict) -> dict:
    """OpenPose files name layers without their stage (``conv1_1.weight`` for
    ``model0.conv1_1.weight``); controlnet-aux's ``util.transfer`` adds the stage back."""
    return {key.split(".", 1)[1]: value for key, value in state_dict.items()}


def _openpose_face():
    from controlnet_aux.open_pose.face import FaceNet

    return FaceNet().state_dict()


def _midas():
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    return DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True).state_dict()


def _leres_depth():
    from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel

    return {"depth_model": RelDepthModel(backbone="resnext101").state_dict()}


def _leres_pix2pix():
    """The boost network LeresDetector always loads (as ``latest_net_G.pth``), even unboosted."""
    from controlnet_aux.leres.pix2pix.models.pix2pix4depth_model import Pix2Pix4DepthModel
    from controlnet_aux.leres.pix2pix.options.test_options import TestOptions

    from worker.preprocessors import bare_argv

    with bare_argv():
        options = TestOptions().parse()
    options.gpu_ids = []
    return Pix2Pix4DepthModel(options).netG.state_dict()


def _normal_bae():
    import types

    from controlnet_aux.normalbae.nets.NNET import NNET

    args = types.SimpleNamespace(
        mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4, importance_ratio=0.7
    )
    return {"model": NNET(args).state_dict()}


def _zoe():
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config

    return {"model": ZoeDepth.build_from_config(get_config("zoedepth", "infer")).state_dict()}


# File name (as the annotators collection spells it) -> what torch.save writes there.
ANNOTATOR_FILES: dict[str, Callable[[], dict]] = {
    "ControlNetHED.pth": _hed,
    "sk_model.pth": _lineart,
    "sk_model2.pth": _lineart,
    "netG.pth": _lineart_anime,
    "mlsd_large_512_fp32.pth": _mlsd,
    "body_pose_model.pth": _openpose_body,
    "hand_pose_model.pth": _openpose_hand,
    "facenet.pth": _openpose_face,
    "dpt_hybrid-midas-501f0c75.pt": _midas,
    "res101.pth": _leres_depth,
    "latest_net_G.pth": _leres_pix2pix,
    "scannet.pt": _normal_bae,
    "ZoeD_M12_N.pt": _zoe,
    "table5_pidinet.pth": _pidinet,  # last: each file's seed is its position, so older files keep theirs
}


def write_tiny_annotators(out_dir: Path) -> None:
    """Write every annotator file under ``out_dir``, each from its own fixed seed."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, (filename, build) in enumerate(ANNOTATOR_FILES.items()):
        torch.manual_seed(SEED + index)
        torch.save(_half(build()), out_dir / filename)


def _half(state: dict) -> dict:
    """The (possibly nested) state dict with float tensors as float16."""
    import torch

    return {
        key: _half(value)
        if isinstance(value, dict)
        else value.half()
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        else value
        for key, value in state.items()
    }
