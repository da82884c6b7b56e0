"""What a run is made of, from its settings: the corruption process, the network and its precision."""

from __future__ import annotations

import torch

from ..networks import build_unet
from ..operators import Identity, default_levels_max, operator_from_name
from ..process import SoftDiffusionProcess
from ..schedule_design import ScheduleFileError, level_schedule_from_file
from ..schedules import GeometricNoise, LevelSchedule
from .config import TrainConfig


def build_process(config: TrainConfig, channels: int | None = None) -> SoftDiffusionProcess:
    """x_t = C_t x_0 + σ_t η for the run: ``--operator`` with sin² levels up to its largest (``--blur-max`` for a
    blur) or the levels of ``--schedule-file``, and geometric noise. With ``channels``, checked on images of that
    many channels (desaturation needs RGB)."""
    noise = GeometricNoise(config.sigma_min, config.sigma_max)
    side = config.resolution
    operator = operator_from_name(config.operator, side, side, blur_max=config.blur_max)
    if isinstance(operator, Identity):
        return SoftDiffusionProcess(operator, noise=noise, levels=LevelSchedule.zero())
    if config.schedule_file:
        try:
            levels = level_schedule_from_file(config.schedule_file, operator=operator, image_size=(side, side))
        except ScheduleFileError as error:
            raise SystemExit(f"softdiff.train: --schedule-file: {error}") from error
    else:
        levels = LevelSchedule.sin2(default_levels_max(operator, side, side, blur_max=config.blur_max))
    process = SoftDiffusionProcess(operator, noise=noise, levels=levels)
    try:
        process.check_image_size(side, side)
        if channels is not None:  # one corruption of a blank image: what the operator says of these images
            process.apply(torch.zeros(1, channels, side, side), 1.0)
    except ValueError as error:
        raise SystemExit(f"softdiff.train: --operator {config.operator}: {error}") from error
    return process


def build_network(config: TrainConfig, channels: int, label_classes: int = 0):
    """The run's U-Net for images of ``channels`` channels; class-conditional on ``label_classes`` > 0 classes."""
    net = build_unet(config.net, resolution=config.resolution, image_channels=channels, label_classes=label_classes)
    if config.dropout is not None:
        for module in net.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = config.dropout
    return net


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (faster than float32): a CUDA GPU with bf16 support, or
    a CPU with AMX tiles (measured 1.6x for the tiny net's training step)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent in some versions
        return bool(has_amx and has_amx())
    return False


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The network's autocast dtype for ``--amp`` on ``device`` (None: float32)."""
    if amp == "auto":
        amp = "bf16" if native_bf16(device) else "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
