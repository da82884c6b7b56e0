"""Every loader on small files written here in the real formats, and broken files that must be named."""

import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from softdiff.data import DataError, load_images, to_model_range
from softdiff.data.loaders import load_data


def cifar_batch(n, offset):
    data = (np.arange(n * 3072, dtype=np.int64).reshape(n, 3072) + offset) % 251
    return {b"data": data.astype(np.uint8), b"labels": list(range(n))}, data.astype(np.uint8)


def write_cifar_folder(folder):
    folder.mkdir(parents=True)
    expected = []
    for i in range(1, 6):
        batch, data = cifar_batch(2, i)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
        expected.append(data)
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(3, 9)[0], protocol=2))
    return np.concatenate(expected).reshape(-1, 3, 32, 32)


def test_cifar10_from_folder_and_tar_gz(tmp_path):
    expected = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    images = load_images(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    assert images.dtype == torch.uint8 and images.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(images.numpy(), expected)  # channel-major rows: R plane, then G, then B
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert torch.equal(load_images(f"cifar10:{archive}"), images)
    assert load_images(f"cifar10:{archive}", split="test").shape == (3, 3, 32, 32)


def test_cifar10_broken_files_are_named(tmp_path):
    folder = tmp_path / "batches"
    write_cifar_folder(folder)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 pickle batch"):
        load_images(f"cifar10:{folder}")
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_images(f"cifar10:{folder}")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=r"cut\.tar\.gz"):
        load_images(f"cifar10:{truncated}")
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(DataError, match="no member data_batch_1"):
        load_images(f"cifar10:{empty}")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_images("cifar10:/nowhere/cifar.tar.gz")


def jpeg_bytes(seed, size=(178, 218)):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_celeba_folder_and_zip_with_both_crops(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i + 1:06d}.jpg").write_bytes(jpeg_bytes(i))
    images = load_images(f"celeba:{folder}")
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    archive = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, f"img_align_celeba/{file.name}")
    assert torch.equal(load_images(f"celeba:{archive}"), images)
    box = load_images(f"celeba:{archive}:crop=128")
    assert box.shape == (3, 3, 64, 64) and not torch.equal(box, images)
    # The crop-140 recipe: centre 140x140 of the 178x218 image, resized to 64 (bicubic).
    first = Image.open(folder / "000001.jpg").convert("RGB").crop((19, 39, 159, 179)).resize((64, 64), Image.BICUBIC)
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(), np.asarray(first))
    # The 128 box (DDIM): rows 57-185, columns 25-153, centred at row 121, column 89.
    first = Image.open(folder / "000001.jpg").convert("RGB").crop((25, 57, 153, 185)).resize((64, 64), Image.BICUBIC)
    np.testing.assert_array_equal(box[0].permute(1, 2, 0).numpy(), np.asarray(first))


def test_celeba_truncated_image_is_named(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    (folder / "000001.jpg").write_bytes(jpeg_bytes(0))
    (folder / "000002.jpg").write_bytes(jpeg_bytes(1)[:500])
    with pytest.raises(DataError, match=r"000002\.jpg: cannot decode image"):
        load_images(f"celeba:{folder}")
    with pytest.raises(DataError, match="crop must be one of"):
        load_images(f"celeba:{folder}:crop=100")
    with pytest.raises(DataError, match="'abc' is not a whole number"):
        load_images(f"celeba:{folder}:crop=abc")


def test_image_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "a" / "one.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
        tmp_path / "a" / "b" / "two.webp", lossless=True
    )
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(tmp_path / "three.png")  # grey -> RGB
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images(f"folder:{tmp_path}")
    assert images.shape == (3, 3, 20, 20)
    assert load_images(f"folder:{tmp_path}", size=8).shape == (3, 3, 8, 8)
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(DataError, match=r"odd\.png: size"):
        load_images(f"folder:{tmp_path}")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match=r"bad\.png: cannot decode"):
        load_images(f"folder:{tmp_path}", size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        load_images(f"folder:{tmp_path / 'empty'}")


def test_what_was_done_to_fit_the_side_is_said(tmp_path):
    """Folders of other sizes are cropped and resized, digits padded, arrays resized: ImageData.fitting says which
    (the training start line prints it); nothing is said when the images were read as they are."""
    rng = np.random.default_rng(5)
    for name, (height, width) in {"a.png": (20, 30), "b.png": (20, 30), "c.png": (16, 16)}.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(tmp_path / name)
    fitted = load_data(f"folder:{tmp_path}", size=16)
    assert fitted.fitting == ("images centre-cropped to a square and resized to 16x16 (sizes read: 30x20 (2), "
                              "16x16 (1))")  # fmt: skip
    (tmp_path / "a.png").unlink(), (tmp_path / "b.png").unlink()
    assert load_data(f"folder:{tmp_path}", size=16).fitting == "" == load_data(f"folder:{tmp_path}").fitting
    assert load_data("mnist", size=32).fitting == "28x28 digits zero-padded to 32x32"
    assert load_data("mnist", size=16).fitting == "28x28 digits resized (bicubic, antialiased) to 16x16"
    assert load_data("mnist").fitting == "" == load_data("shapes:4", size=16).fitting
    np.save(tmp_path / "x.npy", rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    assert load_data(f"npy:{tmp_path / 'x.npy'}", size=4).fitting == "resized from 8x8 to 4x4 (bicubic, antialiased)"
    assert load_data(f"npy:{tmp_path / 'x.npy'}", size=8).fitting == ""


def test_a_plain_path_as_data_spec_suggests_the_spec(tmp_path):
    """``--data /path/to/folder`` (no kind) names the spec the user meant."""
    with pytest.raises(DataError, match=f"unknown data spec .*; for a folder of images: folder:{tmp_path}$"):
        load_images(str(tmp_path))
    with pytest.raises(DataError, match=r"; for an array file: npz:/data/x\.npz$"):
        load_images("/data/x.npz")
    with pytest.raises(DataError, match=r"unknown data spec 'imagenet': expected shapes.*npy:PATH$"):
        load_images("imagenet")


def test_labels_of_cifar10_and_of_class_subfolders(tmp_path):
    write_cifar_folder(tmp_path / "cifar")
    cifar = load_data(f"cifar10:{tmp_path / 'cifar'}")
    assert cifar.classes == 10 and cifar.labels.tolist() == [0, 1] * 5 and cifar.flips
    assert load_data(f"cifar10:{tmp_path / 'cifar'}", split="test").labels.tolist() == [0, 1, 2]
    rng = np.random.default_rng(1)
    classes = {"dog": 2, "cat": 3, "emu": 1}  # sorted: cat 0, dog 1, emu 2
    for name, count in classes.items():
        (tmp_path / "pets" / name / "deeper").mkdir(parents=True)
        for i in range(count):
            where = tmp_path / "pets" / name / ("deeper" if i else "")
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(where / f"{name}{i}.png")
    pets = load_data(f"folder:{tmp_path / 'pets'}")
    assert pets.classes == 3 and pets.labels.tolist() == [0, 0, 0, 1, 1, 2]  # the order of the images
    for image, label in zip(pets.images, pets.labels, strict=True):  # each image is from its label's folder
        name = ["cat", "dog", "emu"][label]
        files = sorted((tmp_path / "pets" / name).rglob("*.png"))
        assert any(np.array_equal(np.asarray(Image.open(f)), image.permute(1, 2, 0).numpy()) for f in files)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "pets" / "loose.png")
    assert load_data(f"folder:{tmp_path / 'pets'}").labels is None  # an image outside the class folders


def test_arrays(tmp_path):
    rng = np.random.default_rng(1)
    nhwc = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=nhwc)
    images = load_images(f"npz:{tmp_path / 'samples.npz'}")
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), nhwc)
    np.save(tmp_path / "nchw.npy", nhwc.transpose(0, 3, 1, 2))
    assert torch.equal(load_images(f"npy:{tmp_path / 'nchw.npy'}"), images)
    assert load_images(f"npz:{tmp_path / 'samples.npz'}", size=4).shape == (4, 3, 4, 4)
    np.save(tmp_path / "floats.npy", nhwc.astype(np.float32))
    with pytest.raises(DataError, match="expected uint8 images"):
        load_images(f"npy:{tmp_path / 'floats.npy'}")
    np.save(tmp_path / "rgba.npy", rng.integers(0, 256, (4, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"rgba\.npy: 4 channels"):
        load_images(f"npy:{tmp_path / 'rgba.npy'}")
    np.save(tmp_path / "features.npy", rng.integers(0, 256, (4, 8, 8, 16), dtype=np.uint8))
    with pytest.raises(DataError, match="no channel axis"):
        load_images(f"npy:{tmp_path / 'features.npy'}")
    np.savez(tmp_path / "two.npz", a=nhwc, b=nhwc)
    with pytest.raises(DataError, match="expected arr_0 or a single array"):
        load_images(f"npz:{tmp_path / 'two.npz'}")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match=r"broken\.npz: not a readable"):
        load_images(f"npz:{tmp_path / 'broken.npz'}")


def test_shapes_spec_and_range():
    images = load_images("shapes:10", size=16)
    assert images.shape == (10, 3, 16, 16) and images.dtype == torch.uint8
    x = to_model_range(images)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    with pytest.raises(DataError, match="unknown data spec"):
        load_images("imagenet:/data")
    with pytest.raises(DataError, match="needs a path"):
        load_images("cifar10")
    with pytest.raises(DataError, match="'x' is not a whole number"):
        load_images("shapes:x")
    with pytest.raises(DataError, match="at least one image"):
        load_images("shapes:0")
    with pytest.raises(DataError, match="the image side must be >= 1 pixel; got 0"):
        load_images("shapes:4", size=0)


def test_decoded_data_sets_are_cached_until_the_files_change(tmp_path, monkeypatch):
    from softdiff.data import cache

    monkeypatch.setenv("SOFTDIFF_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    decoded = []
    monkeypatch.setattr(cache, "load_data", lambda spec, size: decoded.append(spec) or load_data(spec, size=size))
    waits = []
    first = cache.load_data_cached(f"folder:{folder}", size=8, wait=lambda: waits.append(1)).images
    again = cache.load_data_cached(f"folder:{folder}", size=8).images
    assert torch.equal(first, again) and len(decoded) == 1 and waits == [1]
    assert cache.load_data_cached(f"folder:{folder}", size=8).fitting.startswith("images centre-cropped")  # kept
    assert torch.equal(first, load_images(f"folder:{folder}", size=8))
    (written,) = (tmp_path / "cache" / "data").glob("images-8-*.npz")
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / "3.png")  # the data changed
    assert len(cache.load_data_cached(f"folder:{folder}", size=8).images) == 4 and len(decoded) == 2
    newest = max((tmp_path / "cache" / "data").glob("images-8-*.npz"), key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(newest.read_bytes()[:100])  # torn by a kill: decoded again, not an error
    assert len(cache.load_data_cached(f"folder:{folder}", size=8).images) == 4 and len(decoded) == 3
    assert written.exists() and cache.cache_path("shapes:8", 8) is None  # generated sets are not cached
    # The main process that fails to decode still releases the others (the barrier) before it raises.
    (folder / "4.png").write_bytes(b"not a png")
    waits.clear()
    with pytest.raises(DataError, match="cannot decode"):
        cache.load_data_cached(f"folder:{folder}", size=8, wait=lambda: waits.append(1))
    assert waits == [1]
