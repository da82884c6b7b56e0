"""Every public function, given a bad argument, raises an error naming the argument and what was expected."""

import math

import pytest
import torch

import softdiff as sd
import softdiff_kernels as sk

B, SHAPE = 2, (2, 3, 6, 5)
PROC = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 10.0), levels=sd.LevelSchedule.sin2(2.0))
X = torch.rand(SHAPE) + 0.1
T = torch.tensor([0.3, 0.6])
NAN_X = X.clone()
NAN_X[1, 2, 3, 4] = float("nan")
META_T = torch.empty(B, device="meta")
ORACLE = sd.oracle.EmpiricalDenoiser(torch.rand(4, 3, 6, 5), PROC)
GAUSSIAN = sd.oracle.GaussianDenoiser.power_law(PROC, (3, 6, 5))
DENOISER = sd.Denoiser(lambda x, c: x, PROC)


def nan_denoiser(x, t):
    return x * float("nan")


CASES = {
    # operators
    "apply rank": (lambda: sd.DCTBlur().apply(X[0], 1.0), ValueError, r"x must be a 4-D tensor \[B, C, H, W\]"),
    "apply dtype": (lambda: sd.DCTBlur().apply(X.int(), 1.0), TypeError, "x must be float32, float64"),
    "apply NaN": (lambda: sd.Masking().apply(NAN_X, 0.5), ValueError, "x contains NaN"),
    "apply level batch": (lambda: sd.DCTBlur().apply(X, torch.ones(3)), ValueError, r"level must have shape \[2\]"),
    "apply level device": (lambda: sd.DCTBlur().apply(X, META_T), ValueError, "level is on meta but x is on cpu"),
    "apply negative blur": (lambda: sd.DCTBlur().apply(X, -1.0), ValueError, "level .blur std in pixels. must be >= 0"),
    "apply masking level": (lambda: sd.Masking().apply(X, 1.5), ValueError, r"must lie in \[0, 1\]"),
    "apply NaN level": (lambda: sd.Identity().apply(X, float("nan")), ValueError, "level contains NaN"),
    # process
    "sigma t range": (lambda: PROC.sigma(torch.tensor([0.5, 1.2])), ValueError, r"t must lie in \[0, 1\]"),
    "level t type": (lambda: PROC.level("0.5"), TypeError, "t must be a float or a float tensor"),
    "apply t batch": (lambda: PROC.apply(X, torch.ones(3) * 0.5), ValueError, r"t must have shape \[2\]"),
    "corrupt x0 rank": (lambda: PROC.corrupt(X[0], T), ValueError, "x0 must be a 4-D tensor"),
    "corrupt x0 NaN": (lambda: PROC.corrupt(NAN_X, T), ValueError, "x0 contains NaN"),
    "corrupt x0 pixels": (lambda: PROC.corrupt(X * 0 + 255, T), ValueError, r"x0 holds values in \[255, 255\]: clean"),
    "corrupt t range": (lambda: PROC.corrupt(X, torch.tensor([-0.1, 0.5])), ValueError, r"t must lie in \[0, 1\]"),
    "corrupt t NaN": (lambda: PROC.corrupt(X, torch.tensor([float("nan"), 0.5])), ValueError, "t contains NaN"),
    "corrupt t int": (lambda: PROC.corrupt(X, torch.tensor([0, 1])), TypeError, "t must be a floating tensor"),
    "corrupt t device": (lambda: PROC.corrupt(X, META_T), ValueError, "t is on meta but the images are on cpu"),
    "corrupt noise shape": (lambda: PROC.corrupt(X, T, noise=X[:1]), ValueError, "noise must have the shape of x0"),
    "corrupt noise device": (
        lambda: PROC.corrupt(X, T, noise=torch.empty(SHAPE, device="meta")),
        ValueError,
        "noise is on meta but x0 is on cpu",
    ),
    "corrupt noise and seed": (lambda: PROC.corrupt(X, T, noise=X, seed=1), ValueError, "noise or seed, not both"),
    "corrupt seed count": (lambda: PROC.corrupt(X, T, seed=[1, 2, 3]), ValueError, "seed must hold one seed per"),
    "corrupt seed negative": (lambda: PROC.corrupt(X, T, seed=[1, -2]), ValueError, r"seed must lie in \[0, 2\^63\)"),
    "corrupt seed float": (lambda: PROC.corrupt(X, T, seed=[1.0, 2.0]), TypeError, "seed must be a sequence of ints"),
    "prior shape": (lambda: PROC.sample_prior((3, 6), [0]), ValueError, r"shape must be \(C, H, W\)"),
    "prior seeds": (lambda: PROC.sample_prior((3, 6, 5), 5), TypeError, "seeds must be a sequence of ints or an"),
    # loss and denoiser
    "loss x0 rank": (lambda: sd.soft_score_matching_loss(DENOISER, X[0], PROC), ValueError, "x0 must be a 4-D"),
    "loss x0 NaN": (lambda: sd.soft_score_matching_loss(DENOISER, NAN_X, PROC), ValueError, "x0 contains NaN"),
    "loss x0 pixels": (
        lambda: sd.soft_score_matching_loss(DENOISER, (X + 1) * 127.5, PROC),
        ValueError,
        r"x0 holds values in \[.*\]: clean images are taken in \[-1, 1\] \(uint8 pixels: softdiff.data.to_model_range",
    ),
    "loss weighting": (
        lambda: sd.soft_score_matching_loss(DENOISER, X, PROC, weighting="snr"),
        ValueError,
        "weighting must be one of 'edm', 'sigma2', 'none'",
    ),
    "loss kind": (
        lambda: sd.soft_score_matching_loss(DENOISER, X, PROC, loss="l1"),
        ValueError,
        "loss must be one of 'soft', 'cold'",
    ),
    "loss t range": (
        lambda: sd.soft_score_matching_loss(DENOISER, X, PROC, t=torch.tensor([0.5, 2.0])),
        ValueError,
        r"t must lie in \[0, 1\]",
    ),
    "loss denoiser NaN": (
        lambda: sd.soft_score_matching_loss(nan_denoiser, X, PROC),
        ValueError,
        "denoiser output contains NaN",
    ),
    "denoiser t batch": (lambda: DENOISER(X, torch.ones(5) * 0.5), ValueError, r"t must have shape \[2\]"),
    "denoiser x rank": (lambda: DENOISER(X[0], T), ValueError, "x_t must be a 4-D tensor"),
    # steps
    "step x0_hat shape": (
        lambda: sd.momentum_step(PROC, X, X[:1], T, T / 2, X),
        ValueError,
        "x0_hat must have the shape of x_t",
    ),
    "step t order": (lambda: sd.momentum_step(PROC, X, X, T / 2, T, X), ValueError, "t_next must be <= t"),
    "step t_next range": (lambda: sd.naive_step(PROC, X, X, T, T - 0.5, X), ValueError, r"t_next must lie in \[0, 1\]"),
    "step no noise": (lambda: sd.momentum_step(PROC, X, X, T, T / 2), ValueError, "exactly one of noise"),
    "step noise NaN": (lambda: sd.naive_step(PROC, X, X, T, T / 2, NAN_X), ValueError, "noise contains NaN"),
    "step x_t NaN": (lambda: sd.momentum_ode_step(PROC, NAN_X, X, T, T / 2), ValueError, "x_t contains NaN"),
    # sample
    "sample sampler": (
        lambda: sd.sample(ORACLE, PROC, SHAPE, sampler="ddpm"),
        ValueError,
        "sampler must be one of 'momentum', 'naive', 'momentum_ode'",
    ),
    "sample shape": (lambda: sd.sample(ORACLE, PROC, (2, 3, 6)), ValueError, r"shape must be \(B, C, H, W\)"),
    "sample steps": (lambda: sd.sample(ORACLE, PROC, SHAPE, steps=0), ValueError, "steps must be an int >= 1"),
    "sample seeds": (lambda: sd.sample(ORACLE, PROC, SHAPE, seeds=[1]), ValueError, "seeds must hold one seed per"),
    "sample t_start": (
        lambda: sd.sample(ORACLE, PROC, SHAPE, x_start=X, t_start=1.5),
        ValueError,
        r"t_start must lie in \(0, 1\]",
    ),
    "sample t_start type": (
        lambda: sd.sample(ORACLE, PROC, SHAPE, x_start=X, t_start="0.5"),
        TypeError,
        r"t_start must be a float in \(0, 1\]; got str",
    ),
    "sample x_start shape": (
        lambda: sd.sample(ORACLE, PROC, SHAPE, x_start=X[:1], t_start=0.5),
        ValueError,
        "x_start must have shape",
    ),
    "sample x_start NaN": (lambda: sd.sample(ORACLE, PROC, SHAPE, x_start=NAN_X), ValueError, "x_start contains NaN"),
    "sample denoiser NaN": (
        lambda: sd.sample(nan_denoiser, PROC, SHAPE, steps=3),
        ValueError,
        r"denoiser output at step 0 \(t=1\) contains NaN",
    ),
    "sample denoiser shape": (
        lambda: sd.sample(lambda x, t: x[:, :1], PROC, SHAPE, steps=3),
        ValueError,
        "the denoiser must return x0_hat of shape",
    ),
    # oracles
    "empirical image shape": (
        lambda: ORACLE(torch.rand(2, 3, 6, 6), T),
        ValueError,
        r"x_t must hold images of shape \(3, 6, 5\)",
    ),
    "empirical t range": (lambda: ORACLE(X, torch.tensor([0.1, 1.1])), ValueError, r"t must lie in \[0, 1\]"),
    "gaussian NaN": (lambda: GAUSSIAN(NAN_X, T), ValueError, "x_t contains NaN"),
    "gaussian variance": (
        lambda: sd.oracle.GaussianDenoiser(-torch.ones(3, 6, 5), PROC),
        ValueError,
        "variance must be finite and >= 0",
    ),
    "gaussian mean NaN": (
        lambda: sd.oracle.GaussianDenoiser(torch.ones(3, 6, 5), PROC, mean=torch.full((3, 6, 5), math.nan)),
        ValueError,
        "mean contains NaN or Inf",
    ),
    # kernels
    "kernel filter": (lambda: sk.dct_filter(X), ValueError, "dct_filter needs a filter"),
    "kernel rows shape": (
        lambda: sk.dct_filter(X, rows=torch.ones(B, 1, 5), cols=torch.ones(B, 1, 5)),
        ValueError,
        r"rows must have shape \[2, \*, 6\]",
    ),
    "kernel terms": (
        lambda: sk.dct_filter(X, rows=torch.ones(B, 3, 6), cols=torch.ones(B, 3, 5)),
        ValueError,
        r"J ∈ \{1, 2\}",
    ),
    "kernel alpha without c": (
        lambda: sk.pixel_filter(X, table=torch.ones(B, 1, 1), alpha=T),
        ValueError,
        "alpha and c come together",
    ),
    "kernel beta without noise": (
        lambda: sk.pixel_filter(X, table=torch.ones(B, 1, 1), beta=T),
        ValueError,
        "beta needs exactly one source of noise",
    ),
    "kernel seeds dtype": (
        lambda: sk.pixel_filter(X, table=torch.ones(B, 1, 1), beta=T, seeds=T),
        ValueError,
        "seeds must be an int64 tensor",
    ),
    "kernel table shape": (
        lambda: sk.pixel_filter(X, table=torch.ones(B, 6, 4)),
        ValueError,
        r"table must have shape \[2, 6, 5\] or \[2, 1, 1\]",
    ),
    "kernel c dtype": (
        lambda: sk.dct_filter(X, table=torch.ones(B, 6, 5), alpha=T, c=X.int()),
        TypeError,
        "c must be a floating tensor",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_clear_error(case):
    call, error, message = CASES[case]
    with pytest.raises(error, match=message):
        call()


def test_value_checks_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("SOFTDIFF_CHECK_VALUES", "0")
    out = sd.DCTBlur().apply(NAN_X, 1.0)  # no read-back from the device: NaN passes through
    assert torch.isnan(out).any()
