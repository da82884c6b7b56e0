"""Triton kernel of the pixel-basis member of the fused op family, one program per (sample, plane, row block):

    y_b = F_b ⊙ (a_b − a2_b) + α_b c_b + β_b η_b        (F a [H, W] table, or one scale per sample)

η is the same in-kernel Philox noise as in :mod:`.triton_dct_filter` (:mod:`.triton_common`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

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


@triton.jit
def _pixel_filter_kernel(
    out_ptr, a_ptr, a2_ptr, c_ptr, noise_ptr, table_ptr, alpha_ptr, beta_ptr, seeds_ptr,
    stream, C, H, W,
    s_ab, s_ac, s_ah, s_aw,
    s_a2b, s_a2c, s_a2h, s_a2w,
    s_cb, s_cc, s_ch, s_cw,
    s_nb, s_nc, s_nh, s_nw,
    s_ob, s_oc, s_oh, s_ow,
    s_tb, s_tk, s_tl,
    HAS_A2: tl.constexpr, HAS_C: tl.constexpr, NOISE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    program = tl.program_id(0).to(tl.int64)  # int64 offsets: b · C·H·W passes 2^31 in large batches
    b = program // C
    plane = program % C
    row_start = tl.program_id(1).to(tl.int64) * BH
    hh = row_start + tl.arange(0, BH)[:, None]
    ww = tl.arange(0, BW)[None, :]
    mask = (hh < H) & (ww < W)
    x = tl.load(a_ptr + b * s_ab + plane * s_ac + hh * s_ah + ww * s_aw, mask=mask, other=0.0).to(tl.float32)
    if HAS_A2:
        x -= tl.load(a2_ptr + b * s_a2b + plane * s_a2c + hh * s_a2h + ww * s_a2w, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.load(table_ptr + b * s_tb + hh * s_tk + ww * s_tl, mask=mask, other=0.0)
    if HAS_C:
        y += tl.load(alpha_ptr + b) * tl.load(
            c_ptr + b * s_cb + plane * s_cc + hh * s_ch + ww * s_cw, mask=mask, other=0.0
        ).to(tl.float32)
    if NOISE == NOISE_TENSOR:
        y += tl.load(beta_ptr + b) * tl.load(
            noise_ptr + b * s_nb + plane * s_nc + hh * s_nh + ww * s_nw, mask=mask, other=0.0
        ).to(tl.float32)
    elif NOISE == NOISE_SEEDS:
        y += tl.load(beta_ptr + b) * seeded_normal_tile(tl.load(seeds_ptr + b), stream, plane, row_start, H, W, BH, BW)
    tl.store(out_ptr + b * s_ob + plane * s_oc + hh * s_oh + ww * s_ow, y.to(out_ptr.dtype.element_ty), mask=mask)


def launch_config(height: int, width: int, rows_per_program: int | None = None) -> dict:
    """The compile-time shape of a launch: a block of BH rows × BW columns (BW the row padded to a power of two,
    at least 4 for the noise quads; about 4096 elements per program) and the warps per program."""
    block_w = max(4, triton.next_power_of_2(width))
    block_h = rows_per_program or max(1, min(triton.next_power_of_2(height), 4096 // block_w))
    return {"BH": block_h, "BW": block_w, "num_warps": 4}


def pixel_filter_triton(
    a, *, table, a2=None, alpha=None, c=None, beta=None, noise=None, seeds=None, stream=0, rows_per_program=None
):
    """Launch the kernel; arguments as :func:`softdiff_kernels.pixel_filter` (already validated)."""
    batch, channels, height, width = a.shape
    out = torch.empty_like(a)  # a's layout when dense (channels-last stays so), as every backend
    if out.numel() == 0:
        return out
    table = table.to(torch.float32).expand(batch, height, width)  # a [B, 1, 1] table broadcasts by stride 0
    noise_mode = NOISE_NONE if beta is None else (NOISE_TENSOR if noise is not None else NOISE_SEEDS)
    config = launch_config(height, width, rows_per_program)
    alpha, beta, seeds = (per_sample(x) for x in (alpha, beta, seeds))
    grid = (batch * channels, triton.cdiv(height, config["BH"]))
    given = absent_as(out)
    with launch_device(a):
        _pixel_filter_kernel[grid](
            out, a, given(a2), given(c), given(noise), table, given(alpha), given(beta), given(seeds),
            stream_word(stream), channels, height, width,
            *a.stride(), *strides_or_zeros(a2, 4), *strides_or_zeros(c, 4), *strides_or_zeros(noise, 4),
            *out.stride(), *table.stride(),
            HAS_A2=a2 is not None, HAS_C=c is not None, NOISE=noise_mode.value, **config,
        )  # fmt: skip
    return out
