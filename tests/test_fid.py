"""python -m softdiff.fid and softdiff.metrics: Fréchet distance and KID against closed forms and clean-fid, the
SWD proxy against ProGAN's recipe, the whole clean-fid path end to end with a small stand-in for the Inception
file, make-stats provenance, generator mode, and the errors (missing weights above all)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

import softdiff.cli.fid as fid
import softdiff.metrics.sources as sources
from softdiff.data import load_images
from softdiff.metrics import (
    InceptionFeatures,
    RandomFeatureNet,
    frechet_distance,
    gaussian_statistics,
    kernel_distance,
    laplacian_pyramid,
    sliced_wasserstein,
    swd,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- Fréchet distance and KID ----------------------------------------------------------------------------------


def random_rotation(rng: np.random.Generator, dimension: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dimension, dimension)))
    return q * np.sign(np.diag(r))


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(1)
    # Commuting covariances Q diag(a) Qᵀ, Q diag(b) Qᵀ: d² = ‖μ1 − μ2‖² + Σ (√a − √b)², also singular ones.
    for dimension, zeros in ((1, 0), (7, 0), (40, 0), (40, 13)):
        q = random_rotation(rng, dimension)
        a, b = rng.uniform(0.1, 3, dimension), rng.uniform(0.1, 3, dimension)
        a[:zeros] = 0.0
        mu1, mu2 = rng.standard_normal(dimension), rng.standard_normal(dimension)
        expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
        value = frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-10)
    # Identical Gaussians are at distance 0, also with rank-deficient covariances; a pure shift costs ‖δ‖².
    for samples in (100, 15):
        sigma = np.cov(rng.uniform(0, 3, (samples, 30)), rowvar=False)
        mu = rng.standard_normal(30)
        assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-10
        assert frechet_distance(mu, sigma, mu + 0.5, sigma) == pytest.approx(30 * 0.25, rel=1e-10)


def test_frechet_distance_matches_clean_fid_on_general_covariances():
    from cleanfid.fid import frechet_distance as clean_fid_frechet

    rng = np.random.default_rng(2)
    dimension = 32
    stats = []
    for _ in range(2):
        factor = rng.standard_normal((dimension, dimension)) / np.sqrt(dimension)
        stats.append((rng.standard_normal(dimension), factor @ factor.T + 0.1 * np.eye(dimension)))
    ours = frechet_distance(*stats[0], *stats[1])
    assert ours == pytest.approx(float(clean_fid_frechet(*stats[0], *stats[1])), rel=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_statistics_equal_numpy_cov(dtype):
    rng = np.random.default_rng(3)
    features = (rng.standard_normal((5000, 6)) @ rng.standard_normal((6, 6)) + 3.0).astype(dtype)
    mu, sigma = gaussian_statistics(features)
    reference = features.astype(np.float64)
    tolerance = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(mu, reference.mean(axis=0), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(sigma, np.cov(reference, rowvar=False), rtol=tolerance, atol=tolerance)


def polynomial_mmd2(mean_x, cov_x, mean_y, cov_y) -> float:
    """Population MMD² of the kernel (xᵀy/d + 1)³ between two Gaussians, from their moments.

    For independent X ~ N(μa, Σa), Y ~ N(μb, Σb) and s = XᵀY: E s = μaᵀμb, E s² = tr((Σa + μaμaᵀ)(Σb + μbμbᵀ)),
    E s³ = m³ + 3 m v + 3 m (μbᵀΣaμb + tr ΣaΣb) + 6 μaᵀΣbΣaμb with m = μaᵀμb, v = μaᵀΣbμa.
    """
    d = len(mean_x)

    def expected_kernel(ma, ca, mb, cb):
        m, v = ma @ mb, ma @ cb @ ma
        s1 = m
        s2 = np.trace((ca + np.outer(ma, ma)) @ (cb + np.outer(mb, mb)))
        s3 = m**3 + 3 * m * v + 3 * m * (mb @ ca @ mb + np.trace(ca @ cb)) + 6 * ma @ cb @ ca @ mb
        return s3 / d**3 + 3 * s2 / d**2 + 3 * s1 / d + 1

    return (expected_kernel(mean_x, cov_x, mean_x, cov_x) + expected_kernel(mean_y, cov_y, mean_y, cov_y)
            - 2 * expected_kernel(mean_x, cov_x, mean_y, cov_y))  # fmt: skip


def test_kid_is_unbiased_for_the_closed_form_mmd():
    rng = np.random.default_rng(4)
    d = 4
    mean_x, mean_y = rng.uniform(-1, 1, d), rng.uniform(-1, 1, d)
    ax, ay = rng.standard_normal((d, d)) * 0.6, rng.standard_normal((d, d)) * 0.6
    expected = polynomial_mmd2(mean_x, ax @ ax.T, mean_y, ay @ ay.T)
    estimates = []
    for _ in range(24):  # independent data sets; one subset holding all of each: the plain unbiased MMD²_u
        x = mean_x + rng.standard_normal((600, d)) @ ax.T
        y = mean_y + rng.standard_normal((600, d)) @ ay.T
        estimates.append(kernel_distance(x, y, subsets=1, max_subset_size=600).value)
    error = abs(np.mean(estimates) - expected)
    assert error < 4 * np.std(estimates) / np.sqrt(len(estimates)) + 1e-12, (np.mean(estimates), expected)


def test_kid_equals_the_direct_formula_and_clean_fid():
    from cleanfid.fid import kernel_distance as clean_fid_kid

    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((60, 5)), rng.standard_normal((45, 5)) + 0.3
    # One subset with every row: Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + same for y − 2 Σ k(x_i, y_j)/m², m = 45.
    single = kernel_distance(x, y, subsets=1, max_subset_size=1000, seed=3)
    picked = np.random.RandomState(3)
    ys = y[picked.choice(45, 45, replace=False)]
    xs = x[picked.choice(60, 45, replace=False)]
    k = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    direct = sum((k(s, s).sum() - np.trace(k(s, s))) / (45 * 44) for s in (xs, ys)) - 2 * k(xs, ys).mean()
    assert single.value == pytest.approx(direct, rel=1e-12)
    np.random.seed(7)  # noqa: NPY002 (clean-fid draws its subsets from the legacy global generator)
    assert kernel_distance(x, y, subsets=10, max_subset_size=30, seed=7).value == pytest.approx(
        clean_fid_kid(x, y, num_subsets=10, max_subset_size=30), rel=1e-12
    )


# --- SWD proxy ---------------------------------------------------------------------------------------------------

PROGAN_KERNEL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def progan_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """ProGAN's generate_laplacian_pyramid (scipy.ndimage, mode='mirror'), in float64."""

    def down(x):
        return scipy.ndimage.convolve(x, PROGAN_KERNEL[None, None], mode="mirror")[:, :, ::2, ::2]

    def up(x):
        spread = np.zeros((*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3]))
        spread[:, :, ::2, ::2] = x
        return scipy.ndimage.convolve(spread, 4 * PROGAN_KERNEL[None, None], mode="mirror")

    pyramid = [images]
    for _ in range(1, levels):
        pyramid.append(down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - up(pyramid[-1])
    return pyramid


def test_laplacian_pyramid_matches_progan_and_reconstructs():
    images = np.random.default_rng(6).uniform(0, 255, (2, 3, 32, 32))
    ours = laplacian_pyramid(torch.from_numpy(images), 3)
    for level, reference in zip(ours, progan_pyramid(images, 3), strict=True):
        np.testing.assert_allclose(level.numpy(), reference, atol=1e-9)
    rebuilt = ours[-1]
    for band in reversed(ours[:-1]):
        rebuilt = band + swd.pyramid_up(rebuilt, *band.shape[-2:])
    np.testing.assert_allclose(rebuilt.numpy(), images, atol=1e-9)
    assert swd.pyramid_sizes(64, 48) == [(64, 48), (32, 24)]


def test_patch_descriptors_are_the_patches_and_positions_follow_the_index(generator):
    level = torch.randn(3, 2, 16, 20, generator=generator)
    corners = swd.patch_corners(np.array([5, 9, 11]), [(16, 20)], per_image=4, seed=1)[0]
    assert corners[..., 0].max() <= 16 - 7 and corners[..., 1].max() <= 20 - 7 and corners.min() >= 0
    descriptors = swd.patch_descriptors(level, corners)
    for image in range(3):
        for patch in range(4):
            row, column = corners[image, patch].tolist()
            expected = level[image, :, row : row + 7, column : column + 7].reshape(-1)
            assert torch.equal(descriptors[image * 4 + patch], expected)
    alone = swd.patch_corners(np.array([9]), [(16, 20)], per_image=4, seed=1)[0]
    assert torch.equal(alone[0], corners[1])  # image 9's patches do not depend on its batch


def test_sliced_wasserstein_equals_progan_with_one_descriptor_per_block():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((300, 12)), 1.5 * rng.standard_normal((300, 12)) + 0.2
    directions = swd.random_directions(12, 16, seed=4)
    unit = dict(mean=np.zeros(3), std=np.ones(3))
    qa = swd.summarise_level(torch.from_numpy(a), directions, 300, **unit).quantiles
    qb = swd.summarise_level(torch.from_numpy(b), directions, 300, **unit).quantiles
    theta = directions.numpy()
    progan = np.mean(np.abs(np.sort(a @ theta, axis=0) - np.sort(b @ theta, axis=0))) * 1e3
    assert sliced_wasserstein(qa, qb) == pytest.approx(progan, rel=1e-5)


def test_sliced_wasserstein_gaussian_closed_form():
    # Projections of N(0, I) and N(0, s² I) on unit directions are N(0, 1) and N(0, s²): W1 = |1 − s| √(2/π).
    rng = np.random.default_rng(8)
    scale = 1.6
    directions = swd.random_directions(20, 64, seed=0)
    unit = dict(mean=np.zeros(1), std=np.ones(1))
    qa = swd.summarise_level(torch.from_numpy(rng.standard_normal((40000, 20))), directions, 256, **unit)
    qb = swd.summarise_level(torch.from_numpy(scale * rng.standard_normal((40000, 20))), directions, 256, **unit)
    expected = abs(1 - scale) * math.sqrt(2 / math.pi) * 1e3
    assert sliced_wasserstein(qa.quantiles, qb.quantiles) == pytest.approx(expected, rel=0.015)  # ~6 std


def test_random_feature_net_is_fixed_by_its_seed(generator):
    images = torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8, generator=generator)
    one, two = RandomFeatureNet(seed=0), RandomFeatureNet(seed=0)
    assert torch.equal(one(images), two(images)) and one(images).shape == (4, one.feature_width)
    assert one.identity() == two.identity() != RandomFeatureNet(seed=1).identity()
    gray = images[:, :1]
    assert torch.equal(one(gray), one(gray.expand(-1, 3, -1, -1)))


# --- the clean-fid path with a stand-in for inception-2015-12-05.pt ------------------------------------------------


class StandInInception(torch.nn.Module):
    """Called like NVIDIA's TorchScript Inception: ``.layers`` on normalised 299×299 input (clean), or
    ``forward(x, return_features=True)`` on raw [0, 255] images resized inside (legacy_tensorflow)."""

    def __init__(self, width: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.AvgPool2d(23), torch.nn.Flatten(), torch.nn.Linear(3 * 13 * 13, width), torch.nn.Tanh()
        )
        generator = torch.Generator().manual_seed(width)  # fixed weights, the global generator untouched
        with torch.no_grad():
            for parameter in self.layers.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


def stand_in_file(folder: Path, width: int) -> Path:
    path = folder / "inception-2015-12-05.pt"
    torch.jit.script(StandInInception(width)).save(str(path))
    return path


def write_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    return folder


def nhwc(spec: str, size: int | None = None) -> np.ndarray:
    return load_images(spec, size=size).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_inception_features_are_clean_fids(tmp_path, mode):
    from cleanfid.fid import get_folder_features
    from cleanfid.inception_torchscript import InceptionV3W

    path = stand_in_file(tmp_path, 2048)  # InceptionV3W insists on 2048 features
    images = np.random.default_rng(9).integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    model = InceptionV3W(str(tmp_path), download=False, resize_inside=mode == "legacy_tensorflow")
    theirs = get_folder_features(str(write_pngs(tmp_path / "png", images)), model, num_workers=0, batch_size=4,
                                 device=torch.device("cpu"), mode=mode, verbose=False)  # fmt: skip
    ours = InceptionFeatures(path, mode=mode)(images)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    code = fid.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fid_and_kid_end_to_end_equal_clean_fid(tmp_path, capsys):
    from cleanfid.fid import frechet_distance as clean_fid_frechet
    from cleanfid.fid import get_folder_features
    from cleanfid.fid import kernel_distance as clean_fid_kid

    weights = stand_in_file(tmp_path, 24)
    # Overlapping but different sets, of different sizes: KID's subsets of the reference are then a random choice
    # whose order (reference first, as clean-fid's compute_kid) decides the value.
    samples, reference = nhwc("shapes:60"), nhwc("shapes:120")[40:]
    samples[:, :4] = 0  # a visible flaw
    np.savez(tmp_path / "samples.npz", samples)
    folder = write_pngs(tmp_path / "reference", reference)
    code, out, _ = run_cli("score", tmp_path / "samples.npz", "--ref", folder, "--inception", weights, "--json",
                           tmp_path / "r.json", "--no-progress", capsys=capsys)  # fmt: skip
    assert code == 0
    record = json.loads((tmp_path / "r.json").read_text())
    fid_record, kid_record = record["results"]
    # clean-fid's own pipeline on the same images (PNG folders), the stand-in called through clean-fid.
    model = torch.jit.load(str(weights))

    def features(folder):
        return get_folder_features(str(folder), lambda x: model.layers((x - 128) / 128), num_workers=0,
                                   batch_size=16, device=torch.device("cpu"), mode="clean", verbose=False)  # fmt: skip

    ours_samples, ours_reference = features(write_pngs(tmp_path / "samples", samples)), features(folder)
    expected = clean_fid_frechet(ours_samples.mean(0), np.cov(ours_samples, rowvar=False),
                                 ours_reference.mean(0), np.cov(ours_reference, rowvar=False))  # fmt: skip
    assert fid_record["value"] == pytest.approx(expected, rel=1e-5) and fid_record["value"] > 0.01
    np.random.seed(0)  # noqa: NPY002 (clean-fid draws its subsets from the legacy global generator)
    assert kid_record["value"] == pytest.approx(clean_fid_kid(ours_reference, ours_samples), rel=1e-4, abs=1e-7)
    assert fid_record["n"] == 60 and fid_record["mode"] == "clean"
    assert fid_record["weights"] == {"path": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert f"FID {fid_record['value']:.2f} (n=60 samples vs {folder} clean, 80)" in out
    assert "KID " in out and "(n=60 samples" in out
    # The same reference as clean-fid's named statistics (found locally, never downloaded), and as a bare
    # mu/sigma file: the same numbers.
    stats_dir = tmp_path / "stats"
    stats_dir.mkdir()
    np.savez(stats_dir / "cifar10_clean_train_32.npz", mu=ours_reference.mean(0),
             sigma=np.cov(ours_reference, rowvar=False))  # fmt: skip
    np.savez(stats_dir / "cifar10_clean_train_32_kid.npz", feats=ours_reference)
    for reference, label in (("cifar10", "cifar10 train"), (stats_dir / "cifar10_clean_train_32.npz", None)):
        code, out, _ = run_cli(tmp_path / "samples.npz", "--ref", reference, "--stats-dir", stats_dir, "--inception",
                               weights, "--json", tmp_path / "named.json", "--no-progress", capsys=capsys)  # fmt: skip
        named = json.loads((tmp_path / "named.json").read_text())["results"]
        assert code == 0 and [r["metric"] for r in named] == ["FID", "KID"]
        assert named[0]["value"] == pytest.approx(fid_record["value"], rel=1e-6)
        assert named[1]["value"] == pytest.approx(kid_record["value"], rel=1e-5, abs=1e-8)
        assert f"(n=60 samples vs {label or 'cifar10_clean_train_32.npz'} clean)" in out


def test_bare_statistics_files_are_checked_by_their_clean_fid_names(tmp_path, capsys):
    weights = stand_in_file(tmp_path, 24)
    np.savez(tmp_path / "samples.npz", nhwc("shapes:20"))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 24))
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)

    def score(name, **arrays):
        np.savez(tmp_path / name, **({"mu": mu, "sigma": sigma} | arrays))
        return run_cli(tmp_path / "samples.npz", "--ref", tmp_path / name, "--inception", weights, "--metrics", "fid",
                       "--no-progress", capsys=capsys)  # fmt: skip

    code, _, err = score("cifar10_legacy_tensorflow_train_32.npz")
    assert code == 2 and "holds statistics of mode legacy_tensorflow" in err and "--mode legacy_tensorflow" in err
    code, _, err = score("celeba_clean_train_64.npz")
    assert code == 2 and "the samples are 32x32" in err and "64x64" in err
    code, out, _ = score("mine.npz")
    assert code == 0 and "mine.npz; mode and resolution (not a clean-fid file name) unverified" in out
    code, _, err = score("wide_clean_custom_na.npz", mu=np.zeros(30), sigma=np.eye(30))
    assert code == 2 and "cannot compare the samples with" in err and "different feature widths: 24 and 30" in err
    code, _, err = run_cli(tmp_path / "samples.npz", "--ref", "wide", "--split", "custom", "--stats-dir", tmp_path,
                           "--inception", weights, "--metrics", "fid", "--no-progress", capsys=capsys)  # fmt: skip
    assert code == 2 and "different feature widths" in err  # found under clean-fid's custom name, ..._custom_na.npz
    assert "row 121, column 89" in sources._crop_recipe("celeba", "/data/celeba.zip:crop=128", 64)


def test_make_stats_round_trip_with_provenance(tmp_path, capsys):
    weights = stand_in_file(tmp_path, 24)
    stats = tmp_path / "stats" / "shapes.npz"
    code, out, _ = run_cli("make-stats", "--data", "shapes:64", "--out", stats, "--inception", weights,
                           "--swd-images", 24, "--kid-features", 40, "--no-progress", capsys=capsys)  # fmt: skip
    assert code == 0 and "wrote" in out and "64 images 32x32" in out
    with np.load(stats) as loaded:
        provenance = json.loads(str(loaded["provenance"]))
        assert loaded["inception_clean_kid_features"].shape == (40, 24)
    images = nhwc("shapes:64")
    assert provenance["set"] == {"kind": "data", "data": "shapes:64", "split": "all", "crop": "none",
                                 "resolution": [32, 32], "channels": 3, "count": 64,
                                 "content_sha256": hashlib.sha256(images.tobytes()).hexdigest()}  # fmt: skip
    extractors = provenance["extractors"]
    assert extractors["inception_clean"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert extractors["randnet"] == RandomFeatureNet().identity()
    assert extractors["swd"]["images"] == 24 and extractors["swd"]["levels"] == [[32, 32], [16, 16]]
    # The same set scored against its statistics: every distance is (numerically) zero.
    results = {}
    fresh = nhwc("shapes:112")[64:]
    blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(fresh).permute(0, 3, 1, 2).float(), 5, 1, 2)
    sets = {"same": images, "fresh": fresh, "blurred": blurred.round().byte().permute(0, 2, 3, 1).numpy()}
    for name, array in sets.items():
        np.save(tmp_path / f"{name}.npy", array)
        code, out, _ = run_cli(tmp_path / f"{name}.npy", "--ref", stats, "--inception", weights, "--metrics",
                               "fid,kid,swd,randfd", "--swd-images", 24, "--json", tmp_path / f"{name}.json",
                               "--no-progress", capsys=capsys)  # fmt: skip
        assert code == 0
        results[name] = {r["metric"]: r for r in json.loads((tmp_path / f"{name}.json").read_text())["results"]}
        if name == "same":
            assert "(n=64 samples vs shapes:64 [shapes.npz] clean, 64)" in out
            assert "SWD-proxy (not FID)" in out and "RandFD-proxy (not FID)" in out
    for metric in ("FID", "SWD-proxy", "RandFD-proxy"):
        assert abs(results["same"][metric]["value"]) < 1e-9, metric
        # Blurred images are further away by every measure than a fresh draw of the same data set (the sets are
        # small, so the fresh draw's distances are far from zero: a modest margin).
        assert results["blurred"][metric]["value"] > 1.1 * results["fresh"][metric]["value"], metric
    assert results["blurred"]["KID"]["value"] > results["fresh"]["KID"]["value"]
    assert results["fresh"]["KID"]["reference_features"] == 40 and results["fresh"]["KID"]["subset_size"] == 40


GENERATOR = ["--n", 8, "--steps", 1, "--batch", 3, "--ref", "shapes:40", "--metrics", "randfd", "--no-progress"]


def test_generator_mode_scores_the_samples_sample_py_draws(tmp_path, capsys, tiny_checkpoint):
    from softdiff.images import to_uint8
    from softdiff.loading import load_model
    from softdiff.samplers import sample

    ckpt = tiny_checkpoint
    code, out, _ = run_cli("--ckpt", ckpt, *GENERATOR, "--json", tmp_path / "gen.json", capsys=capsys)
    assert code == 0 and "RandFD-proxy (not FID)" in out and "(n=8 samples vs shapes:40, 40)" in out
    denoiser, process, _ = load_model(str(ckpt), weights="ema", device=torch.device("cpu"))
    images = sample(denoiser, process, (8, 3, 16, 16), steps=1, seeds=range(8))
    np.save(tmp_path / "drawn.npy", to_uint8(images.clamp(-1, 1)).numpy())
    run_cli(tmp_path / "drawn.npy", *GENERATOR[6:], "--json", tmp_path / "file.json", capsys=capsys)
    generated = json.loads((tmp_path / "gen.json").read_text())
    from_file = json.loads((tmp_path / "file.json").read_text())
    assert generated["samples"]["kind"] == "generator" and generated["samples"]["seeds"] == "0-7"
    assert generated["results"][0]["value"] == pytest.approx(from_file["results"][0]["value"], rel=1e-9)
    import softdiff

    assert softdiff.sample is sample  # generator mode leaves the public sd.sample in place


def _rank(rank: int, port: int, args: list[str]) -> None:
    """One rank of a 2-process gloo run of generator mode (forked: no re-import, no torchrun start-up)."""
    import os

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    code = fid.main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_two_ranks(args: list) -> list[int | None]:
    """Exit codes of the two ranks of ``python -m softdiff.fid ARGS`` over gloo."""
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")
    ranks = [context.Process(target=_rank, args=(rank, port, [str(a) for a in args])) for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    return [process.exitcode for process in ranks]


def test_generator_mode_under_two_gloo_ranks_equals_one_process(tmp_path, capsys, tiny_checkpoint):
    ckpt = tiny_checkpoint
    # 21 seeds over 2 ranks (11 + 10) in batches of 4, the last ones short; SWD on the first 17 images (9 + 8).
    args = ["--ckpt", ckpt, "--n", 21, "--steps", 1, "--batch", 4, "--ref", "shapes:40", "--metrics",
            "randfd,swd", "--swd-images", 17, "--no-progress"]  # fmt: skip
    assert run_two_ranks([*args, "--json", tmp_path / "two.json"]) == [0, 0]
    run_cli(*args, "--json", tmp_path / "one.json", capsys=capsys)
    one = json.loads((tmp_path / "one.json").read_text())["results"]
    two = json.loads((tmp_path / "two.json").read_text())["results"]
    assert [r["metric"] for r in two] == ["RandFD-proxy", "SWD-proxy"] and two[1]["images"] == 17
    for a, b in zip(one, two, strict=True):
        assert a["n"] == b["n"] == 21 and a["value"] == pytest.approx(b["value"], rel=1e-6)


# --- errors ------------------------------------------------------------------------------------------------------


def test_missing_weights_exit_2_with_instructions_and_no_heavy_imports(tmp_path, monkeypatch):
    # One interpreter for both checks: `import softdiff` (and softdiff.cli.fid, softdiff.metrics) loads none of the
    # optional heavy packages, then `python -m softdiff.fid` without the weights exits 2 with instructions.
    monkeypatch.delenv("SOFTDIFF_INCEPTION", raising=False)
    np.save(tmp_path / "s.npy", np.zeros((4, 16, 16, 3), np.uint8))
    script = ("import runpy, sys, softdiff, softdiff.cli.fid, softdiff.metrics; "
              "print([m for m in ('cleanfid', 'scipy', 'matplotlib', 'torchvision') if m in sys.modules]); "
              f"sys.argv = ['softdiff.fid', {str(tmp_path / 's.npy')!r}, '--ref', 'shapes:40']; "
              "runpy.run_module('softdiff.fid', run_name='__main__')")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert result.returncode == 2, result.stderr
    url = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
    for needed in ("inception-2015-12-05.pt", url, "--inception", "SOFTDIFF_INCEPTION", "--metrics swd,randfd"):
        assert needed in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_inputs_name_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SOFTDIFF_INCEPTION", raising=False)
    samples = tmp_path / "s.npy"
    np.save(samples, nhwc("shapes:20"))

    def error(*args):
        code, _, err = run_cli(*args, "--no-progress", capsys=capsys)
        assert code == 2, err
        return err

    assert str(tmp_path / "nope.pt") in error(samples, "--ref", "shapes:40", "--inception", tmp_path / "nope.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a torchscript file")
    message = error(samples, "--ref", "shapes:40", "--inception", tmp_path / "broken.pt")
    assert "broken.pt" in message and "TorchScript" in message
    monkeypatch.setenv("SOFTDIFF_INCEPTION", str(tmp_path / "elsewhere.pt"))
    assert "elsewhere.pt does not exist" in error(samples, "--ref", "shapes:40")
    monkeypatch.delenv("SOFTDIFF_INCEPTION")
    proxies = ("--metrics", "swd,randfd")
    (tmp_path / "empty").mkdir()
    assert "empty folder" in error(tmp_path / "empty", "--ref", "shapes:40", *proxies)
    np.save(tmp_path / "float.npy", np.zeros((4, 16, 16, 3), np.float32))
    assert "float.npy" in error(tmp_path / "float.npy", "--ref", "shapes:40", *proxies)
    np.save(tmp_path / "flat.npy", np.zeros((4, 16, 16), np.uint8))
    assert "flat.npy" in error(tmp_path / "flat.npy", "--ref", "shapes:40", *proxies)
    small = tmp_path / "small.npy"
    np.save(small, nhwc("shapes:20", size=16))
    run_cli("make-stats", "--data", "shapes:20", "--out", tmp_path / "stats.npz", "--swd-images", 20, capsys=capsys)
    message = error(small, "--ref", tmp_path / "stats.npz", *proxies)
    assert "mismatched resolutions" in message and "stats.npz" in message
    assert "made without --inception" in error(samples, "--ref", tmp_path / "stats.npz", "--inception",
                                                stand_in_file(tmp_path, 8))  # fmt: skip
    (tmp_path / "cut.npz").write_bytes((tmp_path / "stats.npz").read_bytes()[:500])
    assert "cut.npz" in error(samples, "--ref", tmp_path / "cut.npz", *proxies)
    message = error(samples, "--ref", "cifar10", "--stats-dir", tmp_path, "--inception", stand_in_file(tmp_path, 8))
    assert "cifar10_clean_train_32.npz" in message and "https://www.cs.cmu.edu/~clean-fid/stats/" in message
    message = error(samples, "--ref", "cifar10", "--split", "test", "--mode", "legacy_tensorflow", "--inception",
                    stand_in_file(tmp_path, 8))  # fmt: skip
    assert "cifar10_legacy_tensorflow_test_32.npz" in message
    assert "--metrics" in error(samples, "--ref", "shapes:40", "--metrics", "fid,is")
    # --size 0 is refused, not taken as "the data set's side" (celeba: 64)
    message = error("make-stats", "--data", "shapes:20", "--out", tmp_path / "zero.npz", "--size", 0)
    assert "the image side must be >= 1 pixel; got 0" in message and not (tmp_path / "zero.npz").exists()


def test_a_bad_reference_stops_every_rank_before_sampling(tmp_path, tiny_checkpoint):
    ckpt = tiny_checkpoint
    args = ["--ckpt", ckpt, "--n", 4, "--steps", 1, "--ref", f"cifar10:{tmp_path / 'nowhere'}", "--metrics", "randfd",
            "--no-progress"]  # fmt: skip
    assert run_two_ranks(args) == [2, 2]  # rank 1 hears of rank 0's error instead of waiting to gather


def test_missing_samples_and_bad_checkpoints_are_named(tmp_path, capsys, tiny_checkpoint):
    code, _, err = run_cli("--ref", tmp_path / "x.npz", capsys=capsys)
    assert code == 2 and "softdiff.fid: error: no samples given: pass a folder, .npz/.npy" in err
    assert "not both" not in err
    code, _, err = run_cli(tmp_path / "s.npz", "--ckpt", tiny_checkpoint, "--ref", "shapes:40", capsys=capsys)
    assert code == 2 and "or --ckpt, not both" in err
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "notes.txt").write_text("hello\n")
    for name, what in (("other.pt", "it holds a dict of 1 key ('weight')"), ("notes.txt", "not a torch file")):
        with pytest.raises(SystemExit, match=re.escape(f"softdiff.fid: --ckpt {tmp_path / name} is not a softdiff "
                                                       f"checkpoint ({what}")):  # fmt: skip
            fid.main(["--ckpt", str(tmp_path / name), "--n", "4", "--ref", "shapes:40", "--metrics", "randfd"])


@pytest.mark.parametrize("command", ["score", "make-stats"])
def test_device_and_threads_are_checked_and_stated(tmp_path, capsys, command):
    np.save(tmp_path / "s.npy", nhwc("shapes:20"))
    if command == "score":
        args = [tmp_path / "s.npy", "--ref", "shapes:40", "--metrics", "randfd", "--no-progress"]
    else:
        args = ["make-stats", "--data", tmp_path / "s.npy", "--out", tmp_path / "stats.npz", "--swd-images", 20]
    args = [str(arg) for arg in args]
    with pytest.raises(SystemExit, match=r"softdiff\.fid: --device 'tpu' is not a device torch knows; devices here"):
        fid.main([*args, "--device", "tpu"])
    with pytest.raises(SystemExit, match=r"softdiff\.fid: --threads must be >= 1; got 0"):
        fid.main([*args, "--threads", "0"])
    assert fid.main([*args, "--device", "cpu", "--threads", "1"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == "softdiff.fid: device cpu, 1 CPU thread"
