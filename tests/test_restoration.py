"""Blind restoration (softdiff.restoration): the maximum-likelihood corruption estimate on inputs corrupted to known
levels, on a real photograph blurred by a known amount, and the start it hands the sampler."""

import numpy as np
import pytest
import torch
from PIL import Image

import softdiff as sd
from softdiff.restoration import CorruptionEstimate, estimate_corruption, start_at_estimate
from softdiff.spectra import DataSpectrum

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 16, 16)
PROCESSES = {
    "dct_blur": (sd.DCTBlur(), 5.0),
    "pixelate": (sd.Pixelate(), 4.0),
    "desaturate": (sd.Desaturate(), 1.0),
    "masking": (sd.Masking(seed=2), 1.0),
    "dct_blur+desaturate": (sd.Composite([sd.DCTBlur(), sd.Desaturate()], [5.0, 1.0]), 1.0),
}


def gaussian_setup(name):
    """A process whose data spectrum is exactly the law of the Gaussian oracle's draws."""
    operator, level_max = PROCESSES[name]
    process = sd.SoftDiffusionProcess(operator, noise=sd.GeometricNoise(0.01, 5.0),
                                      levels=sd.LevelSchedule.sin2(level_max))  # fmt: skip
    oracle = sd.oracle.GaussianDenoiser.power_law(process, SHAPE)
    assert oracle.basis == operator.basis or operator.spatial_basis is None
    # the data's coefficients in the operator's own basis: draw in the Gaussian basis, fit in the operator's
    process.fit_data_spectrum(oracle.sample_data(4000, generator=torch.Generator().manual_seed(0)))
    return process, oracle


@pytest.mark.parametrize("name", list(PROCESSES))
@pytest.mark.parametrize("t", [0.35, 0.6, 0.85])
def test_estimate_finds_the_level_and_noise_of_an_input_corrupted_to_a_known_t(name, t):
    process, oracle = gaussian_setup(name)
    x0 = oracle.sample_data(1, generator=torch.Generator().manual_seed(int(100 * t)))
    y = process.corrupt(x0, t, seed=7)
    estimate = estimate_corruption(process, y)
    truth = torch.tensor([t], dtype=torch.float64)
    level, sigma = float(process.level(truth)), float(process.sigma(truth))
    # The start errs towards more corruption where the level is uncertain (high noise), not less.
    assert t - 0.04 < estimate.t_start < t + (0.06 if t <= 0.6 else 0.12), (estimate, t)
    assert abs(np.log(estimate.sigma / sigma)) < np.log(1.25), (estimate, sigma)
    assert estimate.level_start >= estimate.level - 1e-9 and estimate.sigma_start >= estimate.sigma
    if t <= 0.6:  # beyond, σ_t ~ 2 drowns most coefficients: the level is barely identifiable (and matters little)
        assert abs(estimate.level - level) <= 0.08 * PROCESSES[name][1], (estimate, level)


def test_the_start_has_the_law_of_the_process_at_its_time():
    """With the estimate exact, e² (d_ℓ² λ + σ̂²) + (σ_T² − e² σ̂²) = d_T² λ + σ_T² per coefficient: 4000 draws."""
    process, oracle = gaussian_setup("dct_blur")
    t_input, t_start = torch.tensor([0.4], dtype=torch.float64), torch.tensor([0.55], dtype=torch.float64)
    estimate = CorruptionEstimate(level=float(process.level(t_input)), sigma=float(process.sigma(t_input)),
                                  t_start=0.55, level_start=float(process.level(t_start)),
                                  sigma_start=float(process.sigma(t_start)))  # fmt: skip
    count = 4000
    x0 = oracle.sample_data(count, generator=torch.Generator().manual_seed(3))
    y = process.corrupt(x0, t_input.expand(count), seed=0)
    starts = torch.cat([start_at_estimate(process, y[i : i + 1], estimate, torch.randn(1, *SHAPE, dtype=torch.float64))
                        for i in range(count)])  # fmt: skip
    d = process.operator.spectrum(t_start.new_tensor([estimate.level_start]), 16, 16)[0]
    expected = d.square() * oracle.variance + estimate.sigma_start**2
    ratio = (sd.oracle.sk.dct2(starts).square().mean(dim=0) / expected).flatten()
    assert 0.88 < float(ratio.min()) and float(ratio.max()) < 1.12, (ratio.min(), ratio.max())


def photograph(name: str, side: int, *, box: tuple[int, int, int, int]) -> torch.Tensor:
    """A crop of one of scikit-learn's sample photographs (china.jpg, flower.jpg), resized to side x side, in
    [-1, 1]: ``[1, 3, side, side]`` float64."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    image = Image.fromarray(sklearn_datasets.load_sample_image(name)).crop(box).resize((side, side), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float64) / 127.5 - 1).permute(2, 0, 1)[None]


def test_estimate_recovers_the_blur_of_a_real_photograph():
    """The data spectrum from 400 crops of one photograph (flower.jpg); china.jpg blurred by σ_B = 1.5 px plus
    σ = 0.02 of noise: the estimate within 25% of the blur."""
    side = 32
    generator = np.random.default_rng(0)
    crops = []
    for _ in range(400):
        size = int(generator.integers(96, 240))
        left, top = int(generator.integers(0, 640 - size)), int(generator.integers(0, 427 - size))
        crops.append(photograph("flower.jpg", side, box=(left, top, left + size, top + size)))
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.005, 5.0),
                                      levels=sd.LevelSchedule.sin2(8.0))  # fmt: skip
    process.fit_data_spectrum(torch.cat(crops))
    clean = photograph("china.jpg", side, box=(150, 100, 350, 300))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    blurred = sd.DCTBlur().apply(clean, 1.5) + 0.02 * noise
    estimate = estimate_corruption(process, blurred)
    assert abs(estimate.level - 1.5) < 0.25 * 1.5, estimate
    assert estimate_corruption(process, clean).level < 0.5


def test_estimate_refuses_what_it_cannot_weigh():
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.01, 5.0), levels=sd.LevelSchedule.sin2(3))
    with pytest.raises(ValueError, match="no data spectrum"):
        estimate_corruption(process, torch.zeros(1, 1, 8, 8))
    process.data_spectrum = DataSpectrum(torch.zeros(1, 8, 8), torch.ones(1, 8, 8), count=10)
    with pytest.raises(ValueError, match=r"image must have shape \[1, 1, 8, 8\]"):
        estimate_corruption(process, torch.zeros(2, 1, 8, 8))
    restored = sd.SoftDiffusionProcess.from_dict(process.to_dict())
    torch.testing.assert_close(restored.data_spectrum.variance, process.data_spectrum.variance)
