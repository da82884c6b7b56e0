"""The image sets the metrics read: a folder of image files, an .npz/.npy array or a data spec (``shapes:N``,
``cifar10:PATH``, ...), as an :class:`ImageSource` read batch by batch, and ``--ref`` resolved to statistics or to
such a source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.loaders import CELEBA_CROP_RECIPES, DATA_KINDS, load_array, load_images
from ..data.pictures import IMAGE_SUFFIXES, decode_image, image_size, list_images
from .errors import MetricsError
from .statistics import clean_fid_statistics, load_statistics, npz_kind, plain_statistics


@dataclass
class ImageSource:
    """A set of images read batch by batch: ``batches(size)`` yields (indices ``[B]``, uint8 ``[B, H, W, C]``).

    ``description`` says what the set is (kind, data, split, crop); ``label`` is the short form for printing.
    """

    description: dict
    label: str
    count: int
    height: int
    width: int
    array: np.ndarray | None = None
    files: list[Path] | None = None

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.count, size):
            indices = np.arange(start, min(start + size, self.count))
            if self.array is not None:
                yield indices, self.array[start : start + size]
            else:
                yield indices, np.stack([_read_image(self.files[i], self.files[0], self.height, self.width)
                                         for i in indices])  # fmt: skip


def _read_image(path: Path, first: Path, height: int, width: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` of an image file (converted to RGB, as clean-fid reads files)."""
    array = np.asarray(decode_image(path.read_bytes(), str(path)))
    if array.shape[:2] != (height, width):
        raise MetricsError(f"{path}: size {array.shape[1]}x{array.shape[0]} differs from {first} ({width}x{height})")
    return array


def _folder_source(path: Path, limit: int | None) -> ImageSource:
    files = list_images(path)
    if not files:
        raise MetricsError(f"{path}: empty folder: no images ({', '.join(IMAGE_SUFFIXES)})")
    files = _limited(files, limit, str(path))
    height, width = image_size(files[0])
    description = {"kind": "folder", "data": str(path), "split": "all", "crop": "none"}
    return ImageSource(description, str(path), len(files), height, width, files=files)


def _limited(items, limit: int | None, name: str):
    if limit is not None and limit > len(items):
        raise MetricsError(f"{name} holds {len(items)} images; --n {limit} asks for more")
    return items[:limit] if limit is not None else items


def _array_source(images: torch.Tensor, description: dict, label: str, limit: int | None) -> ImageSource:
    """From uint8 ``[N, C, H, W]`` (what softdiff.data returns)."""
    if images.shape[1] not in (1, 3):
        raise MetricsError(f"{label}: expected uint8 images [N, H, W, C] with 1 or 3 channels; got "
                           f"{tuple(images.permute(0, 2, 3, 1).shape)}")  # fmt: skip
    if images.shape[0] == 0:
        raise MetricsError(f"{label}: holds no images")
    array = _limited(images.permute(0, 2, 3, 1).numpy(), limit, label)
    return ImageSource(description, label, len(array), array.shape[1], array.shape[2], array=array)


def _crop_recipe(kind: str, spec_rest: str, size: int | None) -> str:
    if kind == "celeba":
        crop = CELEBA_CROP_RECIPES.get(int(spec_rest.partition(":crop=")[2] or 140), "unknown crop")
        return f"{crop}, resize to {size or 64}x{size or 64} (PIL bicubic)"
    if kind == "folder" and size:
        return f"centre square crop, resize to {size}x{size} (PIL bicubic)"
    return f"resize to {size}x{size} (bicubic, antialiased) when not already that size" if size else "none"


def is_data_spec(text: str) -> bool:
    """``shapes[:N]``, ``mnist[:...]`` or ``KIND:PATH`` for a data kind softdiff.data reads."""
    kind, _, rest = text.partition(":")
    return kind in DATA_KINDS and (kind in ("shapes", "mnist") or bool(rest))


def open_images(text: str, *, split: str | None, size: int | None, limit: int | None) -> ImageSource:
    """Images from a data spec (``shapes:N``, ``cifar10:PATH``, ``celeba:PATH[:crop=140]``, ``folder:PATH``,
    ``npz:PATH``), a folder or an .npz/.npy file; ``limit`` keeps the first images."""
    kind, _, rest = text.partition(":")
    if is_data_spec(text):
        if split is not None and kind not in ("cifar10", "mnist"):
            raise MetricsError(f"--split applies to cifar10 and mnist only; {text} has no splits")
        if kind in ("npz", "npy") and size is not None:
            raise MetricsError(f"--size does not apply to arrays ({text}); resize the array itself")
        images = load_images(text, size=size, split=split or "train")
        has_splits = kind in ("cifar10", "mnist")
        description = {"kind": "data", "data": text, "split": (split or "train") if has_splits else "all",
                       "crop": _crop_recipe(kind, rest, size)}  # fmt: skip
        return _array_source(images, description, text, limit)
    path = Path(text)
    if not path.exists():
        raise MetricsError(f"images not found: {text} (a folder, an .npz/.npy file or a data spec "
                           f"{'|'.join(DATA_KINDS)}:PATH)")  # fmt: skip
    if size is not None:
        raise MetricsError(f"--size applies to data specs only; {text} is used as it is")
    if path.is_dir():
        return _folder_source(path, limit)
    if path.suffix not in (".npz", ".npy"):
        raise MetricsError(f"{path}: expected a folder of images or an .npz/.npy array")
    if path.suffix == ".npz" and npz_kind(path) != "images":
        raise MetricsError(f"{path}: holds statistics, not images; give it as --ref")
    description = {"kind": "array", "data": str(path), "split": "all", "crop": "none"}
    return _array_source(load_array(path), description, str(path), limit)


def open_reference(text: str, *, mode: str, split: str | None, resolution: int, stats_dir: str | None):
    """``--ref``: :class:`Statistics` (a statistics file or clean-fid's named statistics) or an
    :class:`ImageSource` whose statistics are computed like the samples' (a data spec is loaded at the samples'
    ``resolution``; a folder or array is taken as it is)."""
    path = Path(text)
    if path.is_file() and path.suffix == ".npz":
        kind = npz_kind(path)
        if kind == "softdiff":
            return load_statistics(path)
        if kind == "clean-fid":
            return plain_statistics(path, mode)
    if is_data_spec(text) and text.partition(":")[0] not in ("npz", "npy"):  # made at the samples' resolution
        return open_images(text, split=split, size=resolution, limit=None)
    if path.exists() or is_data_spec(text) or any(sep in text for sep in "/\\") or path.suffix:
        return open_images(text, split=split, size=None, limit=None)
    return clean_fid_statistics(text, mode=mode, split=split or "train", resolution=resolution, stats_dir=stats_dir)
