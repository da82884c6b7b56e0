"""The orthonormal bases in which softdiff's operators are diagonal (DESIGN §1.1), each a change of basis z = B x
with Bᵀ B = I, so that C = Bᵀ diag(d) B is symmetric with eigenvalues d.

A :class:`Basis` is the product of a channel basis and a spatial basis acting on different axes of
``[..., C, H, W]`` (so the two commute):

- channel ``"shared"`` (none: a spectrum the same for every channel is diagonal in every channel basis) or
  ``"opponent"``: for RGB, z = O x over the channel axis with the rows of O
      (1, 1, 1)/√3 (luminance: the grey level, the mean of R, G, B, times √3),
      (1, −1, 0)/√2 (red–green), (1, 1, −2)/√6 (yellow–blue);
  zeroing the two opponent channels leaves the grey image with R = G = B = their mean.
- spatial ``"pixel"`` (none), ``"dct"`` (the orthonormal 2-D DCT-II of ``softdiff_kernels``) or ``"haar"``: the
  separable orthonormal Haar basis, z = H_H x H_Wᵀ with, per axis of n = 2^J · m pixels, the rows of H_n
      m rows of block averages over 2^J pixels (scale 0), then the details of scale J, J − 1, ..., 1
      (m · 2^(J−j) rows each: (sum of the first half − sum of the second half) of a block of 2^j, over 2^(j/2)).
  Projecting onto the scale-0 rows of both axes averages the image over blocks of 2^J × 2^J pixels.

Coefficient layouts: z has the shape of x; :func:`haar_scales` gives the scale of each row of H_n.
"""

from __future__ import annotations

import functools
import math

import torch

import softdiff_kernels as sk

CHANNEL_BASES = ("shared", "opponent")
SPATIAL_BASES = ("pixel", "dct", "haar")

# Rows: luminance, red–green, yellow–blue (orthonormal; see the module docstring).
OPPONENT = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
    ],
    dtype=torch.float64,
)


def haar_depth(n: int) -> int:
    """J, the number of times n halves evenly: the coarsest Haar scale of an axis of n pixels (n = 2^J · m)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"an axis must have a positive int size; got {n!r}")
    return (n & -n).bit_length() - 1


@functools.lru_cache(maxsize=32)
def _haar(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    depth = haar_depth(n)
    matrix = torch.eye(n, dtype=torch.float64)
    scales = torch.zeros(n, dtype=torch.float64)
    size = n  # the rows [0, size) still hold block averages (of 2^(depth − log2(size/m)) pixels)
    for scale in range(1, depth + 1):
        averages = matrix[:size]
        half = size // 2
        low = (averages[0::2] + averages[1::2]) / math.sqrt(2)
        high = (averages[0::2] - averages[1::2]) / math.sqrt(2)
        matrix = torch.cat([low, high, matrix[size:]])
        scales = torch.cat([torch.zeros(half, dtype=torch.float64), torch.full((half,), float(scale)), scales[size:]])
        size = half
    return matrix, scales


def haar_matrix(n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The orthonormal Haar matrix H_n ``[n, n]`` (rows: basis vectors, coarsest first), built in float64, cached."""
    return _haar(n)[0].to(dtype=dtype, device=device)


def haar_scales(n: int) -> torch.Tensor:
    """The scale of each row of H_n: float64 ``[n]``, 0 for the block averages, j for the details of blocks of 2^j."""
    return _haar(n)[1].clone()


class Basis:
    """z = B x for images ``[..., C, H, W]``: the channel basis (``"shared"``: none, or ``"opponent"``) then the
    spatial basis (``"pixel"``: none, ``"dct"`` or ``"haar"``). Both act on their own axes; B is orthonormal."""

    def __init__(self, channel: str = "shared", spatial: str = "pixel"):
        if channel not in CHANNEL_BASES:
            raise ValueError(f"channel basis must be one of {CHANNEL_BASES}; got {channel!r}")
        if spatial not in SPATIAL_BASES:
            raise ValueError(f"spatial basis must be one of {SPATIAL_BASES}; got {spatial!r}")
        self.channel, self.spatial = channel, spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients z = B x ``[..., C, H, W]`` in the dtype of ``x``."""
        return self._spatial(self._channels(x, inverse=False), inverse=False)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """x = Bᵀ z ``[..., C, H, W]``."""
        return self._channels(self._spatial(z, inverse=True), inverse=True)

    def _channels(self, x: torch.Tensor, *, inverse: bool) -> torch.Tensor:
        if self.channel == "shared":
            return x
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"the opponent colour basis needs 3 (RGB) channels; got images of shape {tuple(x.shape)}")
        mix = OPPONENT.to(dtype=x.dtype, device=x.device)
        mix = mix.T if inverse else mix
        with torch.autocast(x.device.type, enabled=False):
            return torch.einsum("ij,...jhw->...ihw", mix, x)

    def _spatial(self, x: torch.Tensor, *, inverse: bool) -> torch.Tensor:
        if self.spatial == "pixel":
            return x
        if self.spatial == "dct":
            return sk.idct2(x) if inverse else sk.dct2(x)
        rows, cols = (haar_matrix(n, dtype=x.dtype, device=x.device) for n in x.shape[-2:])
        return sk.separable_transform(x, rows.T, cols.T) if inverse else sk.separable_transform(x, rows, cols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Basis) and (self.channel, self.spatial) == (other.channel, other.spatial)

    def __hash__(self) -> int:
        return hash((self.channel, self.spatial))

    def __repr__(self) -> str:
        return f"Basis(channel={self.channel!r}, spatial={self.spatial!r})"
