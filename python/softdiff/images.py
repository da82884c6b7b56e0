"""Image values: the one conversion between uint8 pixels [0, 255] and the model range [-1, 1] (x = u / 127.5 − 1),
and PNG grids (Pillow is imported only when saving)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def to_model_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 pixels [0, 255] (any shape) -> ``dtype`` values in [-1, 1]: u / 127.5 − 1."""
    return images.to(dtype) / 127.5 - 1.0


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """Values in [-1, 1] (any shape, any floating dtype) -> uint8 [0, 255]: (x + 1) · 127.5, rounded, clipped."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` in [-1, 1] -> uint8 ``[N, H, W, C]`` on the CPU (the layout image files and arrays use)."""
    return from_model_range(images.detach().cpu()).permute(0, 2, 3, 1)


def save_image_grid(
    images: torch.Tensor, path: str | os.PathLike, *, columns: int | None = None, scale: int = 1, padding: int = 1
) -> Path:
    """Write images ``[N, C, H, W]`` (C = 1 or 3, in [-1, 1]) as one PNG grid; returns the path.

    ``scale`` enlarges each pixel (nearest neighbour), ``padding`` pixels of white separate the tiles.
    """
    from PIL import Image

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W]; got {tuple(images.shape)}")
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tiles = to_uint8(images).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    th, tw = height * scale, width * scale
    grid = torch.full(
        (rows * (th + padding) + padding, columns * (tw + padding) + padding, channels), 255, dtype=torch.uint8
    )
    for i in range(count):
        r, c = divmod(i, columns)
        top, left = padding + r * (th + padding), padding + c * (tw + padding)
        grid[top : top + th, left : left + tw] = tiles[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = grid.numpy() if channels == 3 else grid[..., 0].numpy()
    Image.fromarray(array).save(path)
    return path
