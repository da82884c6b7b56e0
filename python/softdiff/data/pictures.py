"""Image files and image resizing, the one place softdiff decodes a picture: PNG/JPEG/WebP bytes to an RGB image,
a centred square crop and resize, and the resize of a uint8 batch. Errors name the file (:class:`DataError`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(path: Path) -> list[Path]:
    """The image files below the folder ``path`` (recursive, by suffix, in sorted path order): the one listing that
    training, class labels and the metrics share, so that all three see the same images in the same order."""
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def decode_image(blob: bytes, name: str):
    """The image file ``blob`` (named ``name`` in errors) as an RGB ``PIL.Image``."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(blob))
        image.load()
        return image.convert("RGB")
    except Exception as error:
        raise DataError(f"{name}: cannot decode image ({type(error).__name__}: {error})") from error


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception as error:
        raise DataError(f"{path}: cannot decode image ({type(error).__name__}: {error})") from error


def square_resize(image, size: int, crop: int | None = None, *, centre_offset: int = 0):
    """Crop a square (``crop`` pixels, else the largest) centred ``centre_offset`` pixels below the image centre and
    resize it to size×size (bicubic, antialiased)."""
    from PIL import Image

    width, height = image.size
    side = crop or min(width, height)
    left, top = (width - side) // 2, (height - side) // 2 + centre_offset
    if side > width or top < 0 or top + side > height:
        raise DataError(f"crop {side} is larger than the image ({width}x{height})")
    image = image.crop((left, top, left + side, top + side))
    return image if side == size else image.resize((size, size), Image.BICUBIC)


def images_to_tensor(images: list) -> torch.Tensor:
    """RGB images of one size -> uint8 ``[N, 3, H, W]``."""
    return torch.from_numpy(np.stack([np.asarray(image, dtype=np.uint8) for image in images])).permute(0, 3, 1, 2)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` (square) to size×size with antialiased bicubic interpolation."""
    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True,
                                              align_corners=False)  # fmt: skip
    return resized.round().clamp(0, 255).to(torch.uint8)
