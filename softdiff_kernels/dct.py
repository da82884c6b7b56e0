"""Orthonormal DCT-II matrices and the 2-D transform built from them.

    M[k, i] = s_k cos(π (2i + 1) k / (2n)),   s_0 = sqrt(1/n),  s_k = sqrt(2/n) for k > 0

M is orthogonal (M Mᵀ = I), so DCT2(x) = M_H x M_Wᵀ and IDCT2(z) = M_Hᵀ z M_W. This is
``scipy.fft.dctn(x, type=2, norm="ortho")``: the DCT of the mirror-extended (Neumann boundary) signal.
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


def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two axes: ``[..., H, W] -> [..., H, W]``, in the dtype of ``x`` (also
    inside ``torch.autocast``, which would otherwise round the matmuls to bfloat16/float16)."""
    m_h = dct_matrix(x.shape[-2], dtype=x.dtype, device=x.device)
    m_w = dct_matrix(x.shape[-1], dtype=x.dtype, device=x.device)
    with torch.autocast(x.device.type, enabled=False):
        return m_h @ x @ m_w.T


def idct2(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (its transpose): ``[..., H, W] -> [..., H, W]``, in the dtype of ``z``."""
    m_h = dct_matrix(z.shape[-2], dtype=z.dtype, device=z.device)
    m_w = dct_matrix(z.shape[-1], dtype=z.dtype, device=z.device)
    with torch.autocast(z.device.type, enabled=False):
        return m_h.T @ z @ m_w
