"""PyTorch reference implementation of the fused op family (DESIGN §2.1).

Per sample b:
    y_b = IDCT2( F_b ⊙ DCT2(a_b − a2_b) ) + α_b c_b + β_b η_b           (dct_filter)
    y_b =        F_b ⊙     (a_b − a2_b)   + α_b c_b + β_b η_b           (pixel_filter)

The DCT-domain filter F_b is a sum of J ≤ 2 separable terms, F_b[k, l] = Σ_j rows[b, j, k] · cols[b, j, l],
or a full table [H, W]. One separable term is applied in the pixel domain as A x B with
A = M_Hᵀ diag(rows) M_H and B = M_Wᵀ diag(cols) M_W (both symmetric), since
IDCT2(r ⊗ c ⊙ DCT2(x)) = M_Hᵀ diag(r) M_H x M_Wᵀ diag(c) M_W; other filters go through the DCT domain.

These are the float64-checkable references the Triton and CUDA kernels are tested against. They compute in
float32 (float64 for float64 inputs), whatever torch's TF32 setting (:func:`.dct.matmul_fp32`), and return the
dtype of ``a``. Validation lives in :mod:`.ops`.
"""

from __future__ import annotations

import torch

from .dct import dct2, dct_matrix, idct2, matmul_fp32
from .dtypes import compute_dtype
from .random import seeded_normal


def _difference(a: torch.Tensor, a2: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    x = a.to(dtype)
    return x if a2 is None else x - a2.to(dtype)


def _add_affine_terms(
    y: torch.Tensor,
    alpha: torch.Tensor | None,
    c: torch.Tensor | None,
    beta: torch.Tensor | None,
    noise: torch.Tensor | None,
    seeds: torch.Tensor | None,
    stream: int,
) -> torch.Tensor:
    """y + α c + β η with η explicit (``noise``) or drawn from ``seeds`` (see :mod:`.random`)."""
    per_sample = (-1, 1, 1, 1)
    if c is not None:
        y = y + alpha.to(y.dtype).view(per_sample) * c.to(y.dtype)
    if beta is not None:
        eta = noise if noise is not None else seeded_normal(seeds, tuple(y.shape[1:]), stream)
        y = y + beta.to(y.dtype).view(per_sample) * eta.to(y.dtype)
    return y


def _flush_tiny(filters: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Filter entries smaller than √(smallest normal number) times the largest entry (over ``dims``) set to 0.

    A blur's factors exp(−σ_B² ω² / 2) span hundreds of orders of magnitude; multiplied by a coefficient, the tiny
    ones give subnormal numbers, which x86 CPUs process many times slower (measured here: the momentum step at
    128×3×64×64 took 35 ms instead of 14). What they contribute is below 1e-19 of the filter's largest term in
    float32 (1e-154 in float64), far under rounding.
    """
    magnitude = filters.abs()
    limit = magnitude.amax(dim=dims, keepdim=True) * torch.finfo(filters.dtype).tiny ** 0.5
    return filters.masked_fill(magnitude < limit, 0)


def _axis_operator(factors: torch.Tensor, n: int) -> torch.Tensor:
    """Mᵀ diag(f) M for every row of ``factors`` ``[..., n]`` -> ``[..., n, n]`` (symmetric)."""
    m = dct_matrix(n, dtype=factors.dtype, device=factors.device)
    return matmul_fp32(m.T * _flush_tiny(factors, (-1,))[..., None, :], m)


def dct_filter_reference(
    a: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    table: torch.Tensor | None = None,
    a2: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    stream: int = 0,
) -> torch.Tensor:
    """See the module docstring. Shapes: a, a2, c, noise ``[B, C, H, W]``; rows ``[B, J, H]``, cols
    ``[B, J, W]`` or table ``[B, H, W]``; alpha, beta ``[B]``; seeds int64 ``[B]``. Returns ``[B, C, H, W]``."""
    dtype = compute_dtype(a.dtype)
    x = _difference(a, a2, dtype)
    height, width = x.shape[-2:]
    if table is None and rows.shape[1] == 1:  # one separable term: A x B, two small matmuls per plane
        row_op = _axis_operator(rows[:, 0].to(dtype), height)  # [B, H, H]
        col_op = _axis_operator(cols[:, 0].to(dtype), width)  # [B, W, W]
        y = matmul_fp32(matmul_fp32(row_op[:, None], x), col_op[:, None])
    else:  # through the DCT domain, whose matrices all samples share (large matmuls)
        if table is not None:
            spectrum = table.to(dtype)
        else:  # Σ_j rows[b, j, k] cols[b, j, l] as products, not a (TF32-prone) batched matmul over j ≤ 2
            spectrum = (rows.to(dtype)[:, :, :, None] * cols.to(dtype)[:, :, None, :]).sum(dim=1)
        y = idct2(_flush_tiny(spectrum, (-2, -1))[:, None] * dct2(x))
    return _add_affine_terms(y, alpha, c, beta, noise, seeds, stream).to(a.dtype)


def pixel_filter_reference(
    a: torch.Tensor,
    *,
    table: torch.Tensor,
    a2: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    stream: int = 0,
) -> torch.Tensor:
    """The pixel-basis member: ``table`` ``[B, H, W]`` (or ``[B, 1, 1]``) multiplies each plane."""
    dtype = compute_dtype(a.dtype)
    y = table.to(dtype)[:, None] * _difference(a, a2, dtype)
    return _add_affine_terms(y, alpha, c, beta, noise, seeds, stream).to(a.dtype)
