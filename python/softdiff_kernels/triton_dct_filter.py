"""Triton kernel of the fused op (DESIGN §2.1), one program per (sample b, group of PLANES channels):

    y_b = IDCT2( F_b ⊙ DCT2(a_b − a2_b) ) + α_b c_b + β_b η_b

Each plane is one padded [BH, BW] tile (BH, BW powers of two ≥ 16, so every tl.dot is GPU-legal) and the
orthonormal DCT matrices M_H, M_W are loaded once per program, zero-padded. Filter forms:

    SEPARABLE1  F = r ⊗ c:           y = A x B   with A = M_Hᵀ diag(r) M_H, B = M_Wᵀ diag(c) M_W built once
                                       per program (2 matmuls per plane instead of 4)
    SEPARABLE2  F = r1 ⊗ c1 + r2 ⊗ c2: y = M_Hᵀ (F ⊙ (M_H x M_Wᵀ)) M_W
    TABLE       F a full [H, W] table: likewise

Compute is float32 with pinned matmul precision whatever the storage dtype. η is drawn in the kernel by
Philox4x32-10 exactly as :func:`softdiff_kernels.random.seeded_normal` documents (one call per 4-pixel quad,
two Box–Muller pairs), so it never travels through memory and does not depend on the tiling.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dct import dct_matrix
from .triton_common import (
    NOISE_NONE,
    NOISE_SEEDS,
    NOISE_TENSOR,
    absent_as,
    launch_device,
    per_sample,
    seeded_normal_tile,
    stream_word,
    strides_or_zeros,
)

# Filter forms, read by the kernel as a tl.constexpr global (see triton_common for why constexpr).
SEPARABLE1, SEPARABLE2, TABLE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)


@triton.jit
def _dct_filter_kernel(
    out_ptr, a_ptr, a2_ptr, c_ptr, noise_ptr,
    rows_ptr, cols_ptr, table_ptr, alpha_ptr, beta_ptr, seeds_ptr, mh_ptr, mw_ptr,
    stream, C, H, W,
    s_ab, s_ac, s_ah, s_aw,
    s_a2b, s_a2c, s_a2h, s_a2w,
    s_cb, s_cc, s_ch, s_cw,
    s_nb, s_nc, s_nh, s_nw,
    s_ob, s_oc, s_oh, s_ow,
    s_rb, s_rj, s_rk,
    s_kb, s_kj, s_kl,
    s_tb, s_tk, s_tl,
    FILTER: tl.constexpr, HAS_A2: tl.constexpr, HAS_C: tl.constexpr, NOISE: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr, PLANES: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)  # int64 offsets: b · C·H·W passes 2^31 in batches of large images
    first_plane = tl.program_id(1).to(tl.int64) * PLANES
    h = tl.arange(0, BH)
    w = tl.arange(0, BW)
    hh, ww = h[:, None], w[None, :]
    in_plane = (hh < H) & (ww < W)
    # Orthonormal DCT matrices, zero-padded: M_H [BH, BH] (k, i), M_W [BW, BW] (l, j).
    m_h = tl.load(mh_ptr + hh * H + h[None, :], mask=(hh < H) & (h[None, :] < H), other=0.0)
    m_w = tl.load(mw_ptr + w[:, None] * W + ww, mask=(w[:, None] < W) & (ww < W), other=0.0)
    if FILTER == SEPARABLE1:
        r = tl.load(rows_ptr + b * s_rb + h * s_rk, mask=h < H, other=0.0)
        k = tl.load(cols_ptr + b * s_kb + w * s_kl, mask=w < W, other=0.0)
        left = tl.dot(tl.trans(m_h), m_h * r[:, None], input_precision=PRECISION)  # A = M_Hᵀ diag(r) M_H
        right = tl.dot(tl.trans(m_w * k[:, None]), m_w, input_precision=PRECISION)  # B = M_Wᵀ diag(c) M_W
    elif FILTER == SEPARABLE2:
        r1 = tl.load(rows_ptr + b * s_rb + h * s_rk, mask=h < H, other=0.0)
        k1 = tl.load(cols_ptr + b * s_kb + w * s_kl, mask=w < W, other=0.0)
        r2 = tl.load(rows_ptr + b * s_rb + s_rj + h * s_rk, mask=h < H, other=0.0)
        k2 = tl.load(cols_ptr + b * s_kb + s_kj + w * s_kl, mask=w < W, other=0.0)
        spectral = r1[:, None] * k1[None, :] + r2[:, None] * k2[None, :]
    else:
        spectral = tl.load(table_ptr + b * s_tb + hh * s_tk + ww * s_tl, mask=in_plane, other=0.0)
    if HAS_C:
        alpha = tl.load(alpha_ptr + b)
    if NOISE != NOISE_NONE:
        beta = tl.load(beta_ptr + b)
    if NOISE == NOISE_SEEDS:
        seed = tl.load(seeds_ptr + b)

    for p in range(PLANES):  # a loop, not unrolled: unrolled planes spill (benchmarks/gpu_static.py)
        plane = first_plane + p
        mask = in_plane & (plane < C)
        x = tl.load(a_ptr + b * s_ab + plane * s_ac + hh * s_ah + ww * s_aw, mask=mask, other=0.0).to(tl.float32)
        if HAS_A2:
            x -= tl.load(a2_ptr + b * s_a2b + plane * s_a2c + hh * s_a2h + ww * s_a2w, mask=mask, other=0.0).to(
                tl.float32
            )
        if FILTER == SEPARABLE1:
            y = tl.dot(tl.dot(left, x, input_precision=PRECISION), right, input_precision=PRECISION)
        else:
            z = tl.dot(tl.dot(m_h, x, input_precision=PRECISION), tl.trans(m_w), input_precision=PRECISION)
            z = z * spectral
            y = tl.dot(tl.dot(tl.trans(m_h), z, input_precision=PRECISION), m_w, input_precision=PRECISION)
        if HAS_C:
            y += alpha * tl.load(c_ptr + b * s_cb + plane * s_cc + hh * s_ch + ww * s_cw, mask=mask, other=0.0).to(
                tl.float32
            )
        if NOISE == NOISE_TENSOR:
            y += beta * tl.load(noise_ptr + b * s_nb + plane * s_nc + hh * s_nh + ww * s_nw, mask=mask, other=0.0).to(
                tl.float32
            )
        elif NOISE == NOISE_SEEDS:
            y += beta * seeded_normal_tile(seed, stream, plane, 0, H, W, BH, BW)
        tl.store(out_ptr + b * s_ob + plane * s_oc + hh * s_oh + ww * s_ow, y.to(out_ptr.dtype.element_ty), mask=mask)


def tile_size(n: int) -> int:
    """Padded tile side: the next power of two, at least 16 (the smallest tl.dot)."""
    return max(16, triton.next_power_of_2(n))


def launch_config(channels: int, height: int, width: int, planes_per_program: int | None = None) -> dict:
    """The compile-time shape of a launch for ``[B, channels, height, width]``: tile sides BH, BW, planes per
    program and warps per program (what the launcher uses, and what the static GPU report compiles)."""
    bh, bw = tile_size(height), tile_size(width)
    planes = planes_per_program or min(channels, 4)
    # 4 warps hold a 32x32 program's tiles in registers; a 64x64 one spills far less with 8 (the static sm_90 report)
    return {"BH": bh, "BW": bw, "PLANES": planes, "num_warps": 4 if max(bh, bw) <= 32 else 8}


def dct_filter_triton(
    a,
    *,
    rows=None,
    cols=None,
    table=None,
    a2=None,
    alpha=None,
    c=None,
    beta=None,
    noise=None,
    seeds=None,
    stream=0,
    planes_per_program=None,
):
    """Launch the kernel; arguments as :func:`softdiff_kernels.dct_filter` (already validated), H, W ≤ 128 (the
    dispatcher sends it planes up to 64×64: see ``ops.MAX_FUSED_SIZE``)."""
    batch, channels, height, width = a.shape
    out = torch.empty_like(a)  # a's layout when dense (channels-last stays so), as every backend
    if out.numel() == 0:
        return out
    if table is not None:
        mode, table = TABLE, table.to(torch.float32)
    else:
        mode = SEPARABLE1 if rows.shape[1] == 1 else SEPARABLE2
        rows, cols = rows.to(torch.float32), cols.to(torch.float32)
    noise_mode = NOISE_NONE if beta is None else (NOISE_TENSOR if noise is not None else NOISE_SEEDS)
    m_h = dct_matrix(height, dtype=torch.float32, device=a.device)
    m_w = dct_matrix(width, dtype=torch.float32, device=a.device)
    config = launch_config(channels, height, width, planes_per_program)
    planes = config["PLANES"]
    alpha, beta, seeds = (per_sample(x) for x in (alpha, beta, seeds))
    grid = (batch, triton.cdiv(channels, planes))
    given = absent_as(out)
    with launch_device(a):
        _dct_filter_kernel[grid](
            out, a, given(a2), given(c), given(noise), given(rows), given(cols), given(table),
            given(alpha), given(beta), given(seeds), m_h, m_w,
            stream_word(stream), channels, height, width,
            *a.stride(), *strides_or_zeros(a2, 4), *strides_or_zeros(c, 4), *strides_or_zeros(noise, 4), *out.stride(),
            *strides_or_zeros(rows, 3), *strides_or_zeros(cols, 3), *strides_or_zeros(table, 3),
            FILTER=mode.value, HAS_A2=a2 is not None, HAS_C=c is not None, NOISE=noise_mode.value,
            PRECISION="ieee", **config,
        )  # fmt: skip
    return out
