"""The prior training gives a process (``--prior auto``): sampling from it must reach the data's law.

The former demo preset started the samplers from N(0, σ_1² I) with σ_1 = 5 while the DC coefficient of x_1 on
its data spreads about 12.7: with an exact denoiser the samples' relative W2 to the data was 0.36. The test uses
the Gaussian law fitted to that data (mean and per-coefficient variances in the DCT basis), whose exact
posterior mean is known, so the only errors left are the prior's and the sampler's discretisation.
"""

import pytest
import torch

import softdiff as sd
import softdiff_kernels as sk
from softdiff.data.loaders import load_images
from softdiff.images import to_model_range
from softdiff.prior import ISOTROPIC_TOLERANCE, DCTGaussianPrior, GaussianPrior, choose_prior, isotropic_prior_error
from softdiff.training.build import build_process
from softdiff.training.config import PRESETS, TrainConfig


@pytest.fixture(scope="module")
def shapes_law():
    """(the shapes preset's process, a GaussianDenoiser fitted to its data: 1024 images at 32×32)."""
    config = TrainConfig(**PRESETS["shapes"])
    x0 = to_model_range(load_images("shapes:1024", size=32)).double()
    z = sk.dct2(x0)
    process = build_process(config)
    return process, sd.oracle.GaussianDenoiser(z.var(dim=0), process, mean=x0.mean(dim=0))


def draws(law, n, seed):
    return law.sample_data(n, generator=torch.Generator().manual_seed(seed))


def test_auto_picks_the_fitted_prior_where_the_isotropic_one_is_off(shapes_law):
    process, law = shapes_law
    prior, error, note = choose_prior(process, [draws(law, 2048, 0)], "auto")
    assert isinstance(prior, DCTGaussianPrior) and error > 0.5 and note.startswith("prior fit")
    forced, _, warning = choose_prior(process, [draws(law, 2048, 0)], "gaussian")
    assert isinstance(forced, GaussianPrior) and warning.startswith("warning:") and "--prior fit" in warning
    # The paper's σ_1 = 100 (CIFAR-10) is far above every coefficient: the isotropic prior is kept.
    paper = build_process(TrainConfig(**{**PRESETS["shapes"], "sigma_max": 100.0}))
    kept, paper_error, kept_note = choose_prior(paper, [draws(law, 2048, 0)], "auto")
    assert isinstance(kept, GaussianPrior) and paper_error < ISOTROPIC_TOLERANCE and kept_note.startswith("prior gau")


def test_isotropic_prior_error_is_the_worst_coefficient_w2_over_its_spread(shapes_law):
    """By hand for one coefficient: N(0, σ_1²) against N(m, s²) is √(m² + (s − σ_1)²) / s."""
    process, law = shapes_law
    fitted = DCTGaussianPrior.fit(draws(law, 4096, 1), process)
    variance = torch.diagonal(fitted.covariance, dim1=-2, dim2=-1).permute(2, 0, 1) + fitted.sigma_1**2
    by_hand = ((fitted.mean.square() + (variance.sqrt() - fitted.sigma_1).square()).sqrt() / variance.sqrt()).max()
    assert isotropic_prior_error(fitted, process) == pytest.approx(float(by_hand), rel=1e-12)
    assert isotropic_prior_error(fitted, process, mean=fitted.mean.new_zeros(3, 32, 32)) == pytest.approx(
        float(by_hand), rel=1e-12
    )


@pytest.mark.parametrize("sampler", ["momentum", "heun"])
def test_samples_from_the_chosen_prior_reach_the_data_law(shapes_law, sampler):
    """512 samples, 50 NFE, the exact denoiser: relative W2 under 0.08 from the prior --prior auto picks (0.03
    measured with 1024), where the isotropic prior of the old default gives over 0.25 (0.36 momentum, 0.47 heun)."""
    process, law = shapes_law
    priors = {name: choose_prior(process, [draws(law, 4096, 2)], name)[0] for name in ("auto", "gaussian")}
    results = {}
    for name in ("auto", "gaussian") if sampler == "momentum" else ("auto",):  # heun from the isotropic: > 0.4
        process.prior = priors[name]
        samples = sd.sample(law, process, (512, 3, 32, 32), steps=50, sampler=sampler, seeds=range(512),
                            dtype=torch.float64)  # fmt: skip
        results[name] = law.relative_w2(samples)
    assert results["auto"] < 0.08, results
    assert results.get("gaussian", 1.0) > 0.25, results
