"""Shared test helpers: independent float64 references built on scipy (not on softdiff's own DCT code).

Without a GPU the Triton kernels run in Triton's interpreter; it must be switched on before any kernel is
defined, hence here, before softdiff_kernels is imported.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Decoded data sets are cached (softdiff.data.cache): the tests' go to a temporary folder, not the user's ~/.cache,
# removed when the session ends (the subprocesses the tests start inherit the variable and share the folder).
if "SOFTDIFF_CACHE" not in os.environ:
    os.environ["SOFTDIFF_CACHE"] = tempfile.mkdtemp(prefix="softdiff-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SOFTDIFF_CACHE"], ignore_errors=True)

import numpy as np
import pytest
import scipy.fft

# Tolerances for results computed in a given storage dtype against a float64 reference, relative to the
# scale of the data (fp16/bf16 inputs are computed in float32 and rounded once on output).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def blur_reference(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """C(σ_B) x with scipy's orthonormal DCT: x [B, C, H, W], levels [B] (pixels) -> [B, C, H, W] float64."""
    height, width = x.shape[-2:]
    omega_h = np.pi * np.arange(height) / height
    omega_w = np.pi * np.arange(width) / width
    out = np.empty(x.shape, dtype=np.float64)
    for b, level in enumerate(levels):
        d = np.exp(-0.5 * level**2 * (omega_h[:, None] ** 2 + omega_w[None, :] ** 2))
        coefficients = scipy.fft.dctn(x[b].astype(np.float64), type=2, norm="ortho", axes=(-2, -1))
        out[b] = scipy.fft.idctn(d * coefficients, type=2, norm="ortho", axes=(-2, -1))
    return out


def dense_operator(apply, height: int, width: int) -> np.ndarray:
    """The matrix [H*W, H*W] of a linear map on one plane, from its action on the standard basis."""
    basis = torch.eye(height * width, dtype=torch.float64).view(height * width, 1, height, width)
    return apply(basis).reshape(height * width, height * width).T.numpy()


def assert_close(actual: torch.Tensor, expected, dtype: torch.dtype, scale: float = 1.0) -> None:
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    error = (actual.double().cpu() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"max error {error:.3g} > {TOLERANCE[dtype] * scale:.3g} ({dtype})"


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Every test ends with torch's thread count as it found it: the commands' ``--threads`` sets it process-wide,
    and a test that left it at 1 would run every later test on one core."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread for the test: many small ops run faster without a second thread, which only
    contends on a shared 2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """``tmp_path/ckpt.pt``: a softdiff checkpoint of the smoke preset's untrained network (seeded, 16x16 RGB),
    written in no time, for the commands that read one."""
    from softdiff.training.build import build_network, build_process
    from softdiff.training.config import PRESETS, TrainConfig

    config = TrainConfig(**PRESETS["smoke"])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_network(config, 3)
    state = {"config": asdict(config), "process": build_process(config).to_dict(), "model": net.state_dict(),
             "ema": net.state_dict(), "step": 0}  # fmt: skip
    torch.save(state, tmp_path / "ckpt.pt")
    return tmp_path / "ckpt.pt"


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
