"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, "Progressive Growing of GANs",
their ``metrics/sliced_wasserstein.py``), a proxy for image-distribution distance that needs no pretrained
network. It is **not FID** and is always reported as ``SWD-proxy``.

Recipe (ProGAN's, with two deliberate changes marked *):
1. Laplacian pyramid of each image (values 0..255) with the 5×5 binomial kernel and mirror boundaries
   (``cv2.pyrDown`` / ``cv2.pyrUp``), from the full resolution down to the last level of side ≥ 16; the last
   level is the low-pass residual.
2. At every level, 7×7×C patches at random positions (a fixed number per image, positions a function of the
   image's index and the level), flattened to descriptors of length 49 C.
3. Descriptors normalised per channel to zero mean and unit variance, * with the **reference** set's mean
   and standard deviation (ProGAN normalises each set by its own, which hides colour and contrast shifts).
4. Projections on fixed random unit directions; the 1-D Wasserstein-1 distance per direction is
   W1 = ∫_0^1 |F_a^{-1}(q) − F_b^{-1}(q)| dq, * evaluated on the means of the sorted projections over
   ``blocks`` equal quantile blocks (with one descriptor per block this is ProGAN's mean |sort(a) − sort(b)|;
   the block summary lets a statistics file hold the reference in a few MB and lets the sets differ in size).
5. SWD of a level = mean of W1 over directions, × 10³; the score is the mean over levels.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import MetricsError

PATCH = 7
SMALLEST_LEVEL = 16
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16


def _blur(images: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """5×5 binomial filter (outer product of [1 4 6 4 1] / 16, times ``gain``) with mirror boundaries."""
    channels = images.shape[1]
    kernel = (torch.outer(_BINOMIAL, _BINOMIAL) * gain).to(images.dtype).to(images.device)
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel.expand(channels, 1, 5, 5), groups=channels)


def pyramid_down(images: torch.Tensor) -> torch.Tensor:
    """``cv2.pyrDown``: blur then keep every second pixel. ``[N, C, H, W]`` -> ``[N, C, ⌈H/2⌉, ⌈W/2⌉]``."""
    return _blur(images)[:, :, ::2, ::2]


def pyramid_up(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``cv2.pyrUp``: insert zeros between pixels, blur with gain 4; cropped to ``height × width``."""
    batch, channels, rows, columns = images.shape
    spread = images.new_zeros(batch, channels, 2 * rows, 2 * columns)
    spread[:, :, ::2, ::2] = images
    return _blur(spread, gain=4.0)[:, :, :height, :width]


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Sizes of the pyramid levels: halving from (H, W) while the smaller side stays ≥ 16."""
    if min(height, width) < SMALLEST_LEVEL:
        raise MetricsError(f"SWD needs images of at least {SMALLEST_LEVEL}×{SMALLEST_LEVEL}; got {height}×{width}")
    sizes = [(height, width)]
    while min(sizes[-1]) // 2 >= SMALLEST_LEVEL:
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    return sizes


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Levels of the Laplacian pyramid of float ``[N, C, H, W]``: band-pass ``G_k − up(G_{k+1})`` for
    k < levels − 1, then the low-pass ``G_{levels−1}``."""
    gaussians = [images]
    for _ in range(levels - 1):
        gaussians.append(pyramid_down(gaussians[-1]))
    bands = [fine - pyramid_up(coarse, *fine.shape[-2:]) for fine, coarse in itertools.pairwise(gaussians)]
    return [*bands, gaussians[-1]]


def patch_descriptors(level: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """7×7 patches of ``level`` ``[N, C, h, w]`` with top-left ``corners`` int64 ``[N, P, 2]`` (row, column):
    descriptors ``[N·P, C·49]`` (image-major, then patch)."""
    batch, channels, height, width = level.shape
    offsets = torch.arange(PATCH, device=level.device)
    rows = (corners[..., 0, None] + offsets).view(batch, -1, 1, PATCH, 1)  # [N, P, 1, 7, 1]
    columns = (corners[..., 1, None] + offsets).view(batch, -1, 1, 1, PATCH)
    image = torch.arange(batch, device=level.device).view(batch, 1, 1, 1, 1)
    channel = torch.arange(channels, device=level.device).view(1, 1, channels, 1, 1)
    flat = ((image * channels + channel) * height + rows) * width + columns  # [N, P, C, 7, 7]
    return level.reshape(-1)[flat].reshape(-1, channels * PATCH * PATCH)


def patch_corners(indices: np.ndarray, sizes: list[tuple[int, int]], per_image: int, seed: int) -> list[torch.Tensor]:
    """Top-left corners, per level, of ``per_image`` patches of each image: int64 ``[N, P, 2]``; image i's
    positions depend only on (seed, i), whatever batch or rank it is processed in. Corners are uniform over
    every position where the patch fits, [0, side − 7], as ProGAN's patch centres are."""
    corners = [np.empty((len(indices), per_image, 2), dtype=np.int64) for _ in sizes]
    for row, index in enumerate(indices):
        generator = np.random.default_rng([seed, int(index)])
        for level, (height, width) in enumerate(sizes):
            corners[level][row, :, 0] = generator.integers(0, height - PATCH + 1, per_image)
            corners[level][row, :, 1] = generator.integers(0, width - PATCH + 1, per_image)
    return [torch.from_numpy(c) for c in corners]


def random_directions(dimension: int, count: int, seed: int) -> torch.Tensor:
    """``count`` fixed unit directions in R^dimension (columns of float64 ``[dimension, count]``)."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(dimension, count, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=0, keepdim=True)


@dataclass
class LevelSummary:
    """One pyramid level of a set: per-channel normalisation (``mean``, ``std`` ``[C]``) and the block means
    of the sorted normalised projections, ``quantiles`` float32 ``[directions, blocks]``."""

    mean: np.ndarray
    std: np.ndarray
    quantiles: np.ndarray


def channel_normalisation(descriptors: torch.Tensor, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation ``[C]`` (float64) of descriptors ``[M, C·49]``."""
    values = descriptors.float().view(descriptors.shape[0], channels, -1)
    count = values.shape[0] * values.shape[2]
    mean = values.sum(dim=(0, 2), dtype=torch.float64) / count
    variance = ((values - mean.float()[None, :, None]) ** 2).sum(dim=(0, 2), dtype=torch.float64) / count
    if bool((variance == 0).any()):
        raise MetricsError("SWD: a channel is constant over every patch; the descriptors cannot be normalised")
    return mean.cpu().numpy(), variance.sqrt().cpu().numpy()


def summarise_level(
    descriptors: torch.Tensor,
    directions: torch.Tensor,
    blocks: int,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    chunk: int = 128,
) -> LevelSummary:
    """Block-mean quantiles of the projections of ((descriptor − mean_c) / std_c) on each direction.

    descriptors ``[M, C·49]`` (M ≥ blocks), directions ``[C·49, K]``, mean/std ``[C]`` -> ``[K, blocks]``.
    """
    count, dimension = descriptors.shape
    if count < blocks:
        raise MetricsError(
            f"SWD: {count} patch descriptors are fewer than the {blocks} quantile blocks; use more images"
        )
    channels = len(mean)
    repeat = dimension // channels
    shift = torch.from_numpy(mean).repeat_interleave(repeat).to(descriptors.device, torch.float32)  # [C·49]
    scale = torch.from_numpy(1 / std).repeat_interleave(repeat).to(descriptors.device, torch.float32)
    normalised = (descriptors.float() - shift) * scale
    edges = torch.div(torch.arange(blocks + 1) * count, blocks, rounding_mode="floor").to(descriptors.device)
    widths = (edges[1:] - edges[:-1]).double()
    quantiles = []
    for start in range(0, directions.shape[1], chunk):
        projections = directions[:, start : start + chunk].T.to(normalised) @ normalised.T  # [k, M]
        ordered = torch.sort(projections, dim=1).values
        cumulative = torch.cat([ordered.new_zeros(ordered.shape[0], 1, dtype=torch.float64),
                                ordered.cumsum(dim=1, dtype=torch.float64)], dim=1)  # fmt: skip
        quantiles.append((cumulative[:, edges[1:]] - cumulative[:, edges[:-1]]) / widths)  # block means [k, blocks]
    return LevelSummary(mean, std, torch.cat(quantiles).float().cpu().numpy())


def sliced_wasserstein(quantiles_a: np.ndarray, quantiles_b: np.ndarray) -> float:
    """Mean over directions and blocks of |Q_a − Q_b| (``[K, blocks]`` each), × 10³ (ProGAN's scale)."""
    if quantiles_a.shape != quantiles_b.shape:
        raise ValueError(f"SWD summaries differ in shape: {quantiles_a.shape} and {quantiles_b.shape}")
    difference = np.abs(quantiles_a.astype(np.float64) - quantiles_b.astype(np.float64))
    return float(difference.mean() * 1e3)


def directions_fingerprint(directions: torch.Tensor) -> str:
    """sha256 of the directions (float64 bytes): two summaries are comparable only when these agree."""
    return hashlib.sha256(directions.contiguous().numpy().tobytes()).hexdigest()
