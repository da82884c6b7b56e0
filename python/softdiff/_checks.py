"""Argument checks shared by the public functions: every error names the argument and what was expected.

Shape, dtype and device checks are free. Value checks (NaN/Inf, t in [0, 1]) read a value back from the
device; set ``SOFTDIFF_CHECK_VALUES=0`` to skip them in tight GPU loops once a pipeline is known to be sound.
They are skipped inside ``torch.compile`` (a data-dependent branch would break the graph).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MAX_SEED = 2**63 - 1


def check_values_enabled() -> bool:
    return os.environ.get("SOFTDIFF_CHECK_VALUES", "1") != "0" and not torch.compiler.is_compiling()


def check_images(name: str, x: object, *, like: torch.Tensor | None = None, like_name: str = "x") -> torch.Tensor:
    """``x`` must be a finite floating ``[B, C, H, W]`` tensor (with the shape and device of ``like``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, C, H, W]; got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D tensor [B, C, H, W]; got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16; got {x.dtype}")
    if like is not None:
        if x.shape != like.shape:
            raise ValueError(f"{name} must have the shape of {like_name}, {tuple(like.shape)}; got {tuple(x.shape)}")
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but {like_name} is on {like.device}")
    check_finite(name, x)
    return x


def check_finite(name: str, x: torch.Tensor) -> None:
    if check_values_enabled() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def as_times(
    name: str,
    t: object,
    batch: int | None = None,
    *,
    device: torch.device | None = None,
    images_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Times t in [0, 1] as a floating tensor ``[B]`` (a float or 0-d tensor is broadcast when ``batch`` is
    given, and stays 0-d otherwise). Keeps float32 and float64 tensors; float16/bfloat16 tensors become float32
    (bfloat16 cannot tell t = 0.999 from 1); Python numbers become float64 when ``images_dtype`` is float64 (a
    float64 pipeline keeps every digit of t = 0.3) and float32 otherwise."""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        dtype = torch.float64 if images_dtype == torch.float64 else torch.float32
        t = torch.tensor(float(t), dtype=dtype, device=device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a float or a float tensor of shape [B]; got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor; got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the images are on {device}")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    if t.dim() == 0 and batch is not None:
        t = t.expand(batch)
    if t.dim() > 1 or (batch is not None and t.shape[0] != batch):
        expected = f"[{batch}]" if batch is not None else "[B]"
        raise ValueError(f"{name} must have shape {expected} (one time per sample); got {tuple(t.shape)}")
    if check_values_enabled() and t.numel() > 0:
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf")
        low, high = float(t.min()), float(t.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"{name} must lie in [0, 1]; got values in [{low:g}, {high:g}]")
    return t


def as_seeds(name: str, seeds: object, batch: int, *, device: torch.device) -> torch.Tensor:
    """One seed per sample, each an int in [0, 2^63), as int64 ``[batch]`` on ``device``."""
    if hasattr(seeds, "__array__") and not isinstance(seeds, torch.Tensor):  # a NumPy array
        seeds = torch.as_tensor(seeds)
    if isinstance(seeds, torch.Tensor):
        if seeds.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"{name} must hold integers; got {seeds.dtype}")
        values = seeds.to(device=device, dtype=torch.int64)
    elif (isinstance(seeds, Sequence) and not isinstance(seeds, (str, bytes))) or isinstance(seeds, range):
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
            raise TypeError(f"{name} must be a sequence of ints")
        if any(s < 0 or s > MAX_SEED for s in seeds):
            raise ValueError(f"{name} must lie in [0, 2^63)")
        values = torch.tensor([int(s) for s in seeds], dtype=torch.int64, device=device)
    else:
        raise TypeError(f"{name} must be a sequence of ints or an integer tensor; got {type(seeds).__name__}")
    if values.shape != (batch,):
        raise ValueError(f"{name} must hold one seed per sample ({batch}); got shape {tuple(values.shape)}")
    if values.numel() and bool((values < 0).any()):
        raise ValueError(f"{name} must lie in [0, 2^63)")
    return values


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
