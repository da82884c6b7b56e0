"""Counter-based normal noise: η[b, c, h, w] is a pure function of (seed_b, stream, c, h, w).

Noise is drawn with Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
the generator behind Triton's ``tl.randint4x``, with Triton's uint32 → uniform mapping and the Box–Muller
transform. The PyTorch reference here and the fused kernels therefore draw the same noise from the same seeds,
and a sample's noise does not depend on the batch it is drawn in, on block sizes or on the device.

Layout. Each image row (plane c, row h; r = c*H + h) is cut into quads of 4 pixels; one Philox call per quad
gives four uint32 words and so two Box–Muller pairs:
    key     = (seed_b mod 2^32, seed_b >> 32)                     0 <= seed_b < 2^63
    counter = (r * ceil(W / 4) + w // 4, stream, 0, 0)
    u_i     = uniform(word_i),  uniform(x) = x' * 2^-31 with x' = x, or ~x when x >= 2^31 (Triton's mapping)
    ρ_1 = sqrt(-2 ln max(u_0, 1e-7)),  θ_1 = 2π u_1;   ρ_2, θ_2 likewise from u_2, u_3
    η[w % 4 = 0, 1, 2, 3] = ρ_1 cos θ_1, ρ_1 sin θ_1, ρ_2 cos θ_2, ρ_2 sin θ_2
"""

from __future__ import annotations

import torch

PHILOX_ROUNDS = 10
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57
_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF
_UNIFORM_SCALE = 4.6566127342e-10  # Triton's: the largest scale with (2^31 - 1) * scale < 1 in float32
_TWO_PI = 6.283185307179586
_QUADS_PER_CHUNK = 1 << 16  # keeps the int64 temporaries of one Philox pass in cache (measured: ~20x faster)


def _mul_hi_lo(constant: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``constant * x`` for uint32 values held in int64, without overflow."""
    p_low = x * (constant & _MASK16)  # < 2^48
    carry = x * (constant >> 16) + (p_low >> 16)  # constant * x = (p_low & 0xFFFF) + carry * 2^16
    return carry >> 16, (p_low & _MASK16) | ((carry & _MASK16) << 16)


def philox4x32(
    c0: torch.Tensor,
    c1: torch.Tensor,
    c2: torch.Tensor,
    c3: torch.Tensor,
    k0: torch.Tensor,
    k1: torch.Tensor,
    rounds: int = PHILOX_ROUNDS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32 on broadcastable int64 tensors holding uint32 values; returns the four output words."""
    for _ in range(rounds):
        hi_a, lo_a = _mul_hi_lo(_PHILOX_ROUND_A, c0)
        hi_b, lo_b = _mul_hi_lo(_PHILOX_ROUND_B, c2)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_A) & _MASK32
        k1 = (k1 + _PHILOX_KEY_B) & _MASK32
    return c0, c1, c2, c3


def uint32_to_uniform(x: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` for uint32 words held in int64: float32 in [0, 1)."""
    folded = torch.where(x >= (1 << 31), _MASK32 - x, x)  # ~x of the int32 reading when that is negative
    return folded.to(torch.float32) * _UNIFORM_SCALE


def _box_muller(u_radius: torch.Tensor, u_angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    radius = torch.sqrt(-2.0 * torch.log(u_radius.clamp_min(1.0e-7)))
    angle = _TWO_PI * u_angle
    return radius * torch.cos(angle), radius * torch.sin(angle)


def seeded_normal(seeds: torch.Tensor, shape: tuple[int, int, int], stream: int = 0) -> torch.Tensor:
    """Standard normal noise, one image per seed.

    Args:
        seeds: int64 ``[B]``, each in [0, 2^63).
        shape: ``(C, H, W)`` of one image.
        stream: index of an independent stream in [0, 2^32) (a sampler uses its step index): same seed and
            another stream give independent noise.
    Returns:
        float32 ``[B, C, H, W]`` on ``seeds.device``; image b depends only on (seeds[b], stream).
    """
    if seeds.dtype != torch.int64 or seeds.dim() != 1:
        raise ValueError(f"seeds must be an int64 tensor of shape [B]; got {seeds.dtype} {tuple(seeds.shape)}")
    if not 0 <= stream <= _MASK32:
        raise ValueError(f"stream must lie in [0, 2^32); got {stream}")
    channels, height, width = shape
    quads_per_row = -(-width // 4)
    quads = channels * height * quads_per_row
    device = seeds.device
    out = torch.empty(seeds.shape[0], quads, 4, dtype=torch.float32, device=device)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    rows_per_chunk = max(1, _QUADS_PER_CHUNK // max(quads, 1))
    cols_per_chunk = min(quads, _QUADS_PER_CHUNK)
    for r0 in range(0, seeds.shape[0], rows_per_chunk):
        key = seeds[r0 : r0 + rows_per_chunk, None]
        k0, k1 = key & _MASK32, (key >> 32) & _MASK32
        for q0 in range(0, quads, cols_per_chunk):
            counter = torch.arange(q0, min(quads, q0 + cols_per_chunk), dtype=torch.int64, device=device)
            w0, w1, w2, w3 = philox4x32(counter[None, :], zero + stream, zero, zero, k0, k1)
            first = _box_muller(uint32_to_uniform(w0), uint32_to_uniform(w1))
            second = _box_muller(uint32_to_uniform(w2), uint32_to_uniform(w3))
            out[r0 : r0 + rows_per_chunk, q0 : q0 + cols_per_chunk] = torch.stack(first + second, dim=-1)
    out = out.view(seeds.shape[0], channels, height, quads_per_row * 4)
    return out[..., :width] if width % 4 else out
