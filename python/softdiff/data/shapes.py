"""The built-in procedural ``shapes`` data set: RGB images of anti-aliased circles, rotated squares and
triangles over smooth two-colour gradients, so that both low frequencies (backgrounds) and high frequencies
(edges) matter. Image i is a pure function of (seed, i): its parameters come from Philox at counter (i, j),
so the first n images are the same whatever the size of the set asked for.
"""

from __future__ import annotations

import math

import torch

from softdiff_kernels import philox4x32
from softdiff_kernels.random import uint32_to_uniform

SHAPE_SLOTS = 3
_PARAMS_PER_SLOT = 9  # present, kind, cx, cy, size, angle, r, g, b
_BACKGROUND_PARAMS = 7  # 2 colours + gradient angle
_PARAMS = _BACKGROUND_PARAMS + SHAPE_SLOTS * _PARAMS_PER_SLOT


def _uniforms(seed: int, start: int, count: int) -> torch.Tensor:
    """U(0, 1) parameters of images start .. start+count-1: float64 ``[count, _PARAMS]``."""
    index = torch.arange(start, start + count, dtype=torch.int64)[:, None]
    column = torch.arange(_PARAMS, dtype=torch.int64)[None, :]
    zero = torch.zeros((), dtype=torch.int64)
    key = torch.tensor(seed, dtype=torch.int64)
    words = philox4x32(index, column, zero + 0x5A4E, zero, key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF)
    return uint32_to_uniform(words[0]).to(torch.float64)


def _signed_distance(
    kind: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: torch.Tensor, angle: torch.Tensor
) -> torch.Tensor:
    """Signed distance (pixels, < 0 inside) to a circle (kind 0), square (1) or triangle (2).
    kind, size, angle: ``[N, 1, 1]``; x, y: offsets from the centre ``[N, H, W]``."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    u, v = cos * x + sin * y, -sin * x + cos * y
    circle = torch.sqrt(x.square() + y.square()) - size
    half = 0.8 * size
    qu, qv = u.abs() - half, v.abs() - half
    square = torch.sqrt(qu.clamp_min(0).square() + qv.clamp_min(0).square()) + torch.maximum(qu, qv).clamp_max(0)
    edges = [
        (-(u * math.cos(a) + v * math.sin(a)) - 0.5 * size) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)
    ]
    triangle = torch.maximum(torch.maximum(edges[0], edges[1]), edges[2])  # exact inside, close outside
    return torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))


def make_shapes(n: int, *, size: int = 32, seed: int = 0, start: int = 0) -> torch.Tensor:
    """Images ``start .. start+n-1`` of the shapes set: float32 ``[n, 3, size, size]`` in [-1, 1]."""
    if n < 0 or size < 4:
        raise ValueError(f"need n >= 0 and size >= 4; got n={n}, size={size}")
    p = _uniforms(seed, start, n)[:, :, None, None]  # [n, P, 1, 1]
    coords = torch.arange(size, dtype=torch.float64) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    # Background: linear gradient between two colours along a random direction, s ∈ [0, 1].
    theta = 2 * math.pi * p[:, 6]
    s = ((x - size / 2) * torch.cos(theta) + (y - size / 2) * torch.sin(theta)) / (size * math.sqrt(2)) + 0.5
    image = p[:, 0:3] + (p[:, 3:6] - p[:, 0:3]) * s[:, None]  # [n, 3, H, W]
    for slot in range(SHAPE_SLOTS):
        q = p[:, _BACKGROUND_PARAMS + slot * _PARAMS_PER_SLOT :][:, :_PARAMS_PER_SLOT]
        present = (q[:, 0] < 0.65) | (slot == 0)
        kind = torch.floor(3 * q[:, 1]).clamp(max=2)
        centre_x, centre_y = size * (0.15 + 0.7 * q[:, 2]), size * (0.15 + 0.7 * q[:, 3])
        radius = size * (0.08 + 0.17 * q[:, 4])
        distance = _signed_distance(kind, x - centre_x, y - centre_y, radius, 2 * math.pi * q[:, 5])
        coverage = ((0.5 - distance).clamp(0, 1) * present)[:, None]  # one-pixel anti-aliasing ramp
        image = image * (1 - coverage) + q[:, 6:9] * coverage
    return (2 * image - 1).to(torch.float32)
