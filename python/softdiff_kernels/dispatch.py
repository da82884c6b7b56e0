"""Which implementation runs an op: compiled CUDA → Triton → PyTorch reference (DESIGN §2).

Chosen per call from the tensors' device and what is available; ``SOFTDIFF_BACKEND=cuda|triton|torch`` forces
one (and fails loudly if it cannot run on that device). A missing backend is never an import error.
On the CPU the reference runs, except that ``SOFTDIFF_BACKEND=triton`` with ``TRITON_INTERPRET=1`` runs the
Triton kernels in Triton's interpreter (how CI tests them).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import warnings

import torch

BACKENDS = ("cuda", "triton", "torch")
logger = logging.getLogger("softdiff_kernels")


@functools.lru_cache(maxsize=1)
def triton_status() -> tuple[bool, str]:
    """(importable, why) for Triton and our kernels."""
    try:
        importlib.import_module("softdiff_kernels.triton_dct_filter")
        importlib.import_module("softdiff_kernels.triton_pixel_filter")
    except Exception as error:  # ImportError, or a Triton that cannot compile our kernels
        return False, f"Triton kernels unavailable: {type(error).__name__}: {error}"
    import triton

    return True, f"Triton {triton.__version__}"


@functools.lru_cache(maxsize=1)
def cuda_extension_status() -> tuple[bool, str]:
    """(loaded, why) for the compiled extension ``softdiff_kernels._C``."""
    try:
        importlib.import_module("softdiff_kernels._C")
    except Exception as error:  # not built, ABI mismatch, no driver
        return False, f"compiled CUDA extension unavailable: {type(error).__name__}: {error}"
    return True, "compiled CUDA extension softdiff_kernels._C"


def triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def can_run(name: str, device: torch.device) -> tuple[bool, str]:
    """Whether backend ``name`` can run on ``device``, and why (not)."""
    if name == "torch":
        return True, "PyTorch reference"
    if name == "cuda":
        if device.type != "cuda":
            return False, f"the CUDA extension needs CUDA tensors, not {device.type}"
        return cuda_extension_status()
    ok, why = triton_status()
    if ok and device.type != "cuda" and not triton_interpreter():
        return False, f"Triton runs {device.type} tensors only under TRITON_INTERPRET=1"
    return ok, why


def backend(device: torch.device | str | None = None) -> str:
    """The backend the next call on ``device`` (default: CUDA if present, else CPU) will use."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    forced = os.environ.get("SOFTDIFF_BACKEND")
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"SOFTDIFF_BACKEND must be one of {', '.join(BACKENDS)}; got {forced!r}")
        ok, why = can_run(forced, device)
        if not ok:
            raise RuntimeError(f"SOFTDIFF_BACKEND={forced} cannot run on {device}: {why}")
        return forced
    if device.type != "cuda":
        return "torch"
    for name in BACKENDS:
        ok, why = can_run(name, device)
        if ok:
            _say_once(name, device.type)
            return name
    raise AssertionError("unreachable: the torch backend always runs")


def global_noise(a: torch.Tensor) -> dict[str, torch.Tensor]:
    """η for the ops from torch's global generator, in the form the backend of ``a`` draws best: ``{"noise": η}``
    for the reference (``torch.randn_like``), ``{"seeds": int64 [B]}`` for the fused kernels, which then draw η in
    the kernel (no noise tensor travels through memory)."""
    if backend(a.device) == "torch":
        return {"noise": torch.randn_like(a)}
    return {"seeds": torch.randint(0, 2**62, (a.shape[0],), dtype=torch.int64, device=a.device)}


@functools.cache
def _say_once(name: str, device_type: str) -> None:
    reasons = "; ".join(can_run(other, torch.device(device_type))[1] for other in BACKENDS[: BACKENDS.index(name)])
    message = f"softdiff_kernels: {device_type} tensors use the {name} backend" + (f" ({reasons})" if reasons else "")
    if name == "torch":
        warnings.warn(message + ": slower than the fused kernels", RuntimeWarning, stacklevel=3)
    else:
        logger.info(message)


@functools.cache
def notice_fallback(op: str, reason: str) -> None:
    """One warning per (op, reason) when a call falls back to the reference."""
    warnings.warn(f"softdiff_kernels.{op}: {reason}; using the PyTorch reference", RuntimeWarning, stacklevel=3)


def report() -> str:
    """What is available, what each device would use, and why: ``python -m softdiff_kernels``."""
    lines = [
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
        f"CUDA device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
        f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}, "
        f"SOFTDIFF_BACKEND={os.environ.get('SOFTDIFF_BACKEND', '(unset)')}",
    ]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for name in BACKENDS:
            ok, why = can_run(name, torch.device(device))
            lines.append(f"  {device:>4} {name:>6}: {'yes' if ok else 'no '}  {why}")
        try:
            lines.append(f"  {device:>4} uses: {backend(device)}")
        except (RuntimeError, ValueError) as error:
            lines.append(f"  {device:>4} uses: error: {error}")
    return "\n".join(lines)
