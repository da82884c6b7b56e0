"""Orthonormal DCT-II matrices and the 2-D transform built from them.

    M[k, i] = s_k cos(π (2i + 1) k / (2n)),   s_0 = sqrt(1/n),  s_k = sqrt(2/n) for k > 0

M is orthogonal (M Mᵀ = I), so DCT2(x) = M_H x M_Wᵀ and IDCT2(z) = M_Hᵀ z M_W. This is
``scipy.fft.dctn(x, type=2, norm="ortho")``: the DCT of the mirror-extended (Neumann boundary) signal.

Float32 products here keep float32 precision whatever torch's global matmul setting: where TF32 is enabled for
CUDA matmuls (``torch.backends.cuda.matmul.allow_tf32 = True``, ``fp32_precision = "tf32"`` or
``torch.set_float32_matmul_precision("high")``), :func:`matmul_fp32` computes each product as three TF32 products
of split operands, so the reference kernels' precision is pinned as the Triton and CUDA kernels' is.
"""

from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=64)
def _dct_matrix(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2.0 * i + 1.0) * k / (2.0 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(dtype=dtype, device=device)


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The orthonormal DCT-II matrix ``[n, n]`` (rows: frequencies), built in float64 and cached.

    The returned tensor is shared between callers: do not modify it in place.
    """
    if n < 1:
        raise ValueError(f"DCT size must be >= 1; got {n}")
    return _dct_matrix(int(n), dtype, torch.device(device))


def tf32_matmul_enabled() -> bool:
    """Whether torch rounds the inputs of float32 CUDA matmuls to TF32 (legacy or new precision API)."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)  # torch >= 2.9; reading allow_tf32 there may raise
    if precision is None:
        return bool(matmul.allow_tf32)
    if precision == "none":  # inherits the generic setting
        precision = getattr(torch.backends, "fp32_precision", "ieee")
    return precision == "tf32"


def split_tf32(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``x`` = high + low, with high's mantissa cut to TF32's 10 explicit bits (exact in TF32) and low the
    exact remainder (|low| < 2⁻¹⁰ |x|)."""
    high = (x.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)
    return high, x - high


def three_pass_product(a: torch.Tensor, b: torch.Tensor, product=torch.matmul) -> torch.Tensor:
    """a @ b as a_hi b_hi + (a_hi b_lo + a_lo b_hi) ("3xTF32"): with TF32 products, relative error ~2⁻²⁰ instead of
    ~2⁻¹¹ for one product (the dropped a_lo b_lo is below 2⁻²⁰ of |a| |b|). ``product`` is the matmul to use."""
    a_high, a_low = split_tf32(a)
    b_high, b_low = split_tf32(b)
    return product(a_high, b_high) + (product(a_high, b_low) + product(a_low, b_high))


def matmul_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (broadcasting as ``@``) at float32 precision also where TF32 is enabled for CUDA matmuls."""
    if a.is_cuda and a.dtype == torch.float32 and tf32_matmul_enabled():
        return three_pass_product(a, b)
    return a @ b


def separable_transform(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ colsᵀ`` over the last two axes of ``x`` ``[..., H, W]`` (``rows`` ``[H, H]``, ``cols`` ``[W, W]``,
    cast to the dtype and device of ``x``): a separable change of basis, in the dtype of ``x`` (also inside
    ``torch.autocast``, which would otherwise round the matmuls to bfloat16/float16) at pinned float32 precision."""
    rows, cols = (m.to(dtype=x.dtype, device=x.device) for m in (rows, cols))
    with torch.autocast(x.device.type, enabled=False):
        return matmul_fp32(matmul_fp32(rows, x), cols.T)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two axes: ``[..., H, W] -> [..., H, W]``, in the dtype of ``x``."""
    m_h = dct_matrix(x.shape[-2], dtype=x.dtype, device=x.device)
    m_w = dct_matrix(x.shape[-1], dtype=x.dtype, device=x.device)
    return separable_transform(x, m_h, m_w)


def idct2(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (its transpose): ``[..., H, W] -> [..., H, W]``, in the dtype of ``z``."""
    m_h = dct_matrix(z.shape[-2], dtype=z.dtype, device=z.device)
    m_w = dct_matrix(z.shape[-1], dtype=z.dtype, device=z.device)
    return separable_transform(z, m_h.T, m_w.T)
