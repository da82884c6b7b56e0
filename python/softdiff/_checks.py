"""Argument checks shared by the public functions: every error names the argument and what was expected.

Shape, dtype and device checks are free. Value checks (NaN/Inf, t in [0, 1]) read a value back from the
device, a host synchronisation on a GPU. So each public call checks its inputs once, at the boundary, with the
checks gathered in a :class:`ValueChecks` and read back together (one sync), and runs its body inside
:func:`trusted_values`: the values the library computes from checked inputs (grid times, σ, levels, x_t) are not
checked again at every step. ``SOFTDIFF_CHECK_VALUES=0`` skips the value checks altogether; they are also skipped
inside ``torch.compile`` (a data-dependent branch would break the graph).
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import os
from collections.abc import Callable, Iterator, Sequence

import torch

from softdiff_kernels import compute_dtype

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Clean images are taken in the model range [-1, 1] (DESIGN §1). |x0| beyond this bound is refused: pixels in
# [0, 255] (the common mistake) exceed it at once, while images in [-1, 1] after resizing or augmentation, and test
# data drawn from N(0, 1), never come near it.
MODEL_RANGE_LIMIT = 8.0
MAX_SEED = 2**63 - 1


_TRUSTED = contextvars.ContextVar("softdiff_trusted_values", default=False)


def check_values_enabled() -> bool:
    """Whether value checks run here: not inside :func:`trusted_values`, ``torch.compile`` or with
    ``SOFTDIFF_CHECK_VALUES=0``."""
    return (not _TRUSTED.get() and os.environ.get("SOFTDIFF_CHECK_VALUES", "1") != "0"
            and not torch.compiler.is_compiling())  # fmt: skip


@contextlib.contextmanager
def trusted_values() -> Iterator[None]:
    """Skip the value checks inside: the body of a public call whose inputs were checked at its boundary, where
    every value is either one of those inputs or computed by the library from them. Shape, dtype and device checks
    still run."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


class ValueChecks:
    """Value checks read back from the device in one host synchronisation.

    Each check records a 0-d boolean tensor computed on the device and the call that raises its error;
    :meth:`verify` reads all of them at once and, only if one failed, runs the calls in order, so the first
    failing check raises its usual message. Nothing is recorded where value checks are off."""

    def __init__(self):
        self.enabled = check_values_enabled()
        self._pending: list[tuple[torch.Tensor, Callable[[], None]]] = []

    def add(self, ok: Callable[[], torch.Tensor], explain: Callable[[], None]) -> None:
        """``ok()``: a boolean tensor, all true when the check passes; ``explain()``: raises the check's error."""
        if self.enabled:
            self._pending.append((ok().all(), explain))

    def finite(self, name: str, x: torch.Tensor) -> None:
        self.add(lambda: torch.isfinite(x), lambda: check_finite(name, x))

    def model_range(self, name: str, x: torch.Tensor) -> None:
        """Clean images ``x``: no value beyond ±MODEL_RANGE_LIMIT (after :meth:`finite`, whose error comes first)."""
        self.add(lambda: x.abs() <= MODEL_RANGE_LIMIT, lambda: check_model_range(name, x))

    def times(self, name: str, t: torch.Tensor) -> None:
        """t from :func:`as_times` (checked for shape): finite and in [0, 1]."""
        self.add(lambda: (t >= 0) & (t <= 1), lambda: as_times(name, t))  # NaN fails both comparisons

    def seeds(self, name: str, seeds: torch.Tensor) -> None:
        self.add(lambda: seeds >= 0, lambda: as_seeds(name, seeds, seeds.shape[0], device=seeds.device))

    def images(self, name: str, x: object, *, like: torch.Tensor | None = None, like_name: str = "x") -> torch.Tensor:
        """:func:`check_images` now for shape, dtype and device, its finiteness check deferred to :meth:`verify`."""
        with trusted_values():
            check_images(name, x, like=like, like_name=like_name)
        self.finite(name, x)
        return x

    def as_times(self, name: str, t: object, batch: int, *, device: torch.device,
                 images_dtype: torch.dtype | None = None) -> torch.Tensor:  # fmt: skip
        """:func:`as_times` now for type and shape, its range check deferred to :meth:`verify`."""
        with trusted_values():
            t = as_times(name, t, batch, device=device, images_dtype=images_dtype)
        self.times(name, t)
        return t

    def as_seeds(self, name: str, seeds: object, batch: int, *, device: torch.device) -> torch.Tensor:
        """:func:`as_seeds` now for type and shape, its range check deferred to :meth:`verify`."""
        with trusted_values():
            values = as_seeds(name, seeds, batch, device=device)
        self.seeds(name, values)
        return values

    def verify(self) -> None:
        """Raise the first failing check's error (one host sync for all of them); clears the checks."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        device = pending[0][0].device
        if bool(torch.stack([ok.to(device) for ok, _ in pending]).all()):
            return
        token = _TRUSTED.set(False)  # the explanations are the ordinary checks, which raise
        try:
            for _, explain in pending:
                explain()
        finally:
            _TRUSTED.reset(token)
        raise AssertionError("a value check failed on the device but its explanation passed")


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


def check_model_range(name: str, x: torch.Tensor) -> None:
    """Clean images must lie in the model range [-1, 1]; refused beyond ±MODEL_RANGE_LIMIT, naming the range found."""
    if check_values_enabled() and not bool((x.abs() <= MODEL_RANGE_LIMIT).all()):
        low, high = float(x.min()), float(x.max())
        raise ValueError(f"{name} holds values in [{low:g}, {high:g}]: clean images are taken in [-1, 1] (uint8 "
                         "pixels: softdiff.data.to_model_range(x), i.e. x / 127.5 - 1)")  # fmt: skip


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
        dtype = compute_dtype(images_dtype)
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
        low, high = float(t.detach().min()), float(t.detach().max())
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
    if check_values_enabled() and values.numel() and bool((values < 0).any()):
        raise ValueError(f"{name} must lie in [0, 2^63)")
    return values


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
