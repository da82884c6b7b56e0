"""A decoded data set kept on disk, so that a resumed run and the other ranks of a torchrun job read one uint8
array instead of decoding every image again (CelebA: 202 599 JPEGs, minutes per process).

The cache lives in ``$SOFTDIFF_CACHE/data`` (default ``~/.cache/softdiff/data``), one ``.npz`` (images, labels
where the data has them, and how the images were fitted to the side) per (data spec, image side, fingerprint of
the files: their count, total size and newest modification time), so editing the data makes a new entry rather
than reading a stale one. An entry written before the fitting note existed is decoded again. The built-in ``shapes``
set is generated, never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .loaders import DATA_KINDS, ImageData, load_data
from .mnist import mnist_5k_path


def cache_folder() -> Path:
    return Path(os.environ.get("SOFTDIFF_CACHE", Path.home() / ".cache" / "softdiff")) / "data"


def data_path(spec: str) -> Path | None:
    """The file or folder a spec reads (None for ``shapes`` and for specs of no known kind)."""
    kind, _, rest = spec.partition(":")
    if kind == "shapes" or kind not in DATA_KINDS or (kind != "mnist" and not rest):
        return None
    if kind == "mnist":
        return mnist_5k_path() if rest in ("", "5k") else Path(rest.partition(":split=")[0])
    return Path(rest.partition(":crop=")[0])


def fingerprint(path: Path) -> list[int]:
    """[file count, total bytes, newest mtime in ns] of a file or of every file below a folder."""
    files = [path] if path.is_file() else [Path(root, name) for root, _, names in os.walk(path) for name in names]
    stats = [file.stat() for file in files]
    return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]


def cache_path(spec: str, size: int) -> Path | None:
    """Where ``load_data(spec, size=size)`` is cached, or None when it is not (``shapes``, missing data)."""
    path = data_path(spec)
    if path is None or not path.exists():
        return None
    key = json.dumps([spec, size, fingerprint(path)])
    return cache_folder() / f"{path.name}-{size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _read(path: Path) -> ImageData | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            labels = torch.from_numpy(stored["labels"]) if "labels" in stored.files else None
            classes = int(stored["classes"]) if "classes" in stored.files else None
            fitting = str(stored["fitting"])
            return ImageData(torch.from_numpy(stored["images"]), labels, classes, bool(stored["flips"]), fitting)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # absent, or torn by a kill while written: decode again


def _write(path: Path, data: ImageData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"images": data.images.numpy(), "flips": np.array(data.flips), "fitting": np.array(data.fitting)}
    if data.labels is not None:
        arrays |= {"labels": data.labels.numpy(), "classes": np.array(data.classes)}
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)
    os.replace(temporary, path)


def load_data_cached(spec: str, *, size: int, is_main: bool = True, wait: Callable[[], None] = lambda: None):
    """``load_data(spec, size=size)`` through the cache: the main process decodes and writes it (atomically) if it
    is missing; ``wait`` (a barrier) then lets the others read it. A process that cannot see the file (another
    node's disk) decodes for itself. Returns :class:`~softdiff.data.loaders.ImageData`."""
    path = cache_path(spec, size)
    if path is None:
        return load_data(spec, size=size)
    data, failure = _read(path), None
    if data is None and is_main:
        try:
            data = load_data(spec, size=size)
            _write(path, data)
        except Exception as error:  # raised after the barrier: the others must not wait for a cache never written
            failure = error
    wait()
    if failure is not None:
        raise failure
    if data is None:
        data = _read(path)
    return data if data is not None else load_data(spec, size=size)
