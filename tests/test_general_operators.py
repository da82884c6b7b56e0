"""The general corruptions (pixelation, desaturation, composites, a user's apply-only operator) against float64
references written here from their definitions: the Haar and colour bases, block averages, grey images, dense
matrices of C, and the operator protocol's refusals."""

import logging
import math

import numpy as np
import pytest
import scipy.fft
import torch

import softdiff as sd
from softdiff import closed_form
from softdiff.bases import OPPONENT, Basis, haar_depth, haar_matrix, haar_scales
from softdiff_kernels import seeded_normal

pytestmark = pytest.mark.usefixtures("one_thread")


def haar_reference(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the orthonormal Haar basis of n = 2^J m from their definition: the m block averages over 2^J
    pixels, then for j = J..1 the details of the blocks of 2^j (+ on the first half, − on the second), each
    normalised, blocks in order; with the scale of each row."""
    depth = 0
    while n % 2 ** (depth + 1) == 0:
        depth += 1
    rows, scales = [], []
    block = 2**depth
    for start in range(0, n, block):
        row = np.zeros(n)
        row[start : start + block] = 1 / math.sqrt(block)
        rows.append(row)
        scales.append(0)
    for j in range(depth, 0, -1):
        block = 2**j
        for start in range(0, n, block):
            row = np.zeros(n)
            row[start : start + block // 2] = 1 / math.sqrt(block)
            row[start + block // 2 : start + block] = -1 / math.sqrt(block)
            rows.append(row)
            scales.append(j)
    return np.array(rows), np.array(scales, dtype=float)


def block_average(x: np.ndarray, block: int) -> np.ndarray:
    """Each block × block tile of x [..., H, W] replaced by its mean."""
    *lead, height, width = x.shape
    tiles = x.reshape(*lead, height // block, block, width // block, block).mean(axis=(-3, -1), keepdims=True)
    return np.broadcast_to(tiles, (*lead, height // block, block, width // block, block)).reshape(x.shape)


def dense_matrix(operator, level: float, shape) -> np.ndarray:
    """C(level) as a dense matrix over the flattened [C, H, W] image, by applying it to every unit image."""
    dimension = math.prod(shape)
    units = torch.eye(dimension, dtype=torch.float64).view(dimension, *shape)
    return operator.apply(units, level).reshape(dimension, dimension).T.numpy()


def reference_basis(operator, shape) -> np.ndarray:
    """The operator's basis as a dense orthonormal matrix (rows: basis vectors), from the references above."""
    channels, height, width = shape
    spatial = {
        "dct": lambda n: scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0),
        "haar": lambda n: haar_reference(n)[0],
        "pixel": np.eye,
    }[operator.basis.spatial]
    channel = OPPONENT.numpy() if operator.channel_basis == "opponent" else np.eye(channels)
    return np.kron(channel, np.kron(spatial(height), spatial(width)))


OPERATORS = {
    "dct_blur": (sd.DCTBlur(), 1.3, (1, 6, 5)),
    "pixelate": (sd.Pixelate(), 1.4, (1, 8, 12)),
    "pixelate_28": (sd.Pixelate(), 1.7, (1, 28, 4)),
    "desaturate": (sd.Desaturate(), 0.7, (3, 4, 3)),
    "masking": (sd.Masking(seed=3), 0.4, (2, 4, 5)),
    "identity": (sd.Identity(), 0.0, (2, 3, 3)),
    "blur+desaturate": (sd.Composite([sd.DCTBlur(), sd.Desaturate()], [2.0, 1.0]), 0.6, (3, 5, 4)),
    "pixelate+desaturate": (sd.Composite([sd.Pixelate(), sd.Desaturate()], [2.0, 1.0]), 0.8, (3, 8, 4)),
    "masking+desaturate": (sd.Composite([sd.Masking(1), sd.Desaturate()], [1.0, 1.0]), 0.5, (3, 4, 4)),
}


@pytest.mark.parametrize("n", [1, 2, 7, 8, 12, 28, 32])
def test_haar_matrix_is_the_orthonormal_haar_basis(n):
    rows, scales = haar_reference(n)
    matrix = haar_matrix(n).numpy()
    np.testing.assert_allclose(matrix, rows, rtol=0, atol=1e-15)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(n), rtol=0, atol=1e-14)
    np.testing.assert_array_equal(haar_scales(n).numpy(), scales)
    assert haar_depth(n) == int(scales.max())


@pytest.mark.parametrize("channel", ["shared", "opponent"])
@pytest.mark.parametrize("spatial", ["pixel", "dct", "haar"])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_every_basis_is_orthonormal_and_inverts(channel, spatial, dtype, tolerance, generator):
    basis = Basis(channel, spatial)
    x = torch.randn(4, 3, 12, 8, generator=generator, dtype=torch.float64)
    z = basis.forward(x.to(dtype))
    assert z.dtype == dtype and z.shape == x.shape
    norms = z.double().flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(4, dtype=torch.float64), rtol=0, atol=tolerance)
    torch.testing.assert_close(basis.inverse(z).double(), x, rtol=0, atol=tolerance * 10)


def test_the_opponent_basis_needs_three_channels(generator):
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        Basis("opponent", "pixel").forward(torch.randn(2, 1, 4, 4, generator=generator))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        sd.Desaturate().apply(torch.randn(2, 1, 4, 4, generator=generator), 0.5)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_apply_is_the_basis_round_trip_of_the_spectrum(name):
    """C = Bᵀ diag(d) B with B built from the definitions (scipy's DCT, the Haar rows, the opponent matrix):
    C is symmetric, its eigenvalues the spectrum, in [0, 1]."""
    operator, level, shape = OPERATORS[name]
    matrix = dense_matrix(operator, level, shape)
    basis = reference_basis(operator, shape)
    spectrum = operator.spectrum(torch.tensor([level], dtype=torch.float64), *shape[1:])[0]
    assert spectrum.dim() == 3 and spectrum.shape[0] in (1, shape[0])
    d = spectrum.expand(shape).flatten().numpy()
    np.testing.assert_allclose(matrix, basis.T @ np.diag(d) @ basis, rtol=0, atol=1e-12)
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-12)
    assert d.min() >= 0 and d.max() <= 1
    x = torch.randn(2, *shape, dtype=torch.float64)
    z = operator.to_basis(x).flatten(1).numpy()
    np.testing.assert_allclose(z, x.flatten(1).numpy() @ basis.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(operator.from_basis(torch.from_numpy(z).view_as(x)).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize(("height", "width", "levels"), [(16, 8, [0, 1, 2, 3]), (28, 28, [0, 1, 2]), (12, 20, [1, 2])])
def test_pixelate_at_an_integer_level_averages_blocks(height, width, levels, generator):
    x = torch.randn(3, 2, height, width, generator=generator, dtype=torch.float64)
    for level in levels:
        np.testing.assert_allclose(sd.Pixelate().apply(x, float(level)).numpy(), block_average(x.numpy(), 2**level),
                                   rtol=0, atol=1e-12)  # fmt: skip


def test_pixelate_between_levels_fades_the_next_scale_per_axis(generator):
    """Per axis A(L) = (1 − f) P_i + f P_{i+1} (P_i: averages over 2^i pixels, L = i + f); C = A_H ⊗ A_W."""
    height, width, level = 8, 16, 1.3
    x = torch.randn(2, 1, height, width, generator=generator, dtype=torch.float64)

    def axis(n):
        averages = [np.kron(np.eye(n // 2**i), np.full((2**i, 2**i), 1 / 2**i)) for i in (1, 2)]
        return 0.7 * averages[0] + 0.3 * averages[1]

    expected = np.einsum("hi,bcij,wj->bchw", axis(height), x.numpy(), axis(width))
    np.testing.assert_allclose(sd.Pixelate().apply(x, level).numpy(), expected, rtol=0, atol=1e-12)


def test_pixelate_refuses_levels_beyond_the_coarsest_scale(generator):
    x = torch.randn(1, 1, 28, 28, generator=generator)
    with pytest.raises(ValueError, match="coarsest Haar scale of 28x28 images, 2"):
        sd.Pixelate().apply(x, 2.5)
    proc = sd.SoftDiffusionProcess(sd.Pixelate(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(3))
    with pytest.raises(ValueError, match="coarsest Haar scale"):
        proc.corrupt(x, 0.5)
    with pytest.raises(ValueError, match="coarsest Haar scale"):
        sd.sample(lambda x_t, t: x_t, proc, (1, 1, 28, 28), steps=2)
    with pytest.raises(ValueError, match="a side is odd"):
        sd.Pixelate().default_level_max(27, 28)
    assert sd.Pixelate().default_level_max(32, 16) == 4.0
    with pytest.raises(ValueError, match=">= 0"):
        sd.Pixelate().apply(x, -0.5)


def test_desaturate_moves_each_pixel_towards_its_grey_level(generator):
    x = torch.rand(4, 3, 5, 6, generator=generator, dtype=torch.float64) * 2 - 1
    grey = x.mean(dim=1, keepdim=True)
    levels = torch.tensor([0.0, 0.25, 0.6, 1.0], dtype=torch.float64)
    expected = grey + (1 - levels).view(-1, 1, 1, 1) * (x - grey)
    np.testing.assert_allclose(sd.Desaturate().apply(x, levels).numpy(), expected.numpy(), rtol=0, atol=1e-13)
    at_one = sd.Desaturate().apply(x, 1.0)
    torch.testing.assert_close(at_one[:, 0], at_one[:, 2], rtol=0, atol=1e-13)  # grey: R = G = B
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        sd.Desaturate().apply(x, 1.5)


def test_composite_is_the_product_of_its_components_in_either_order(generator):
    x = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
    s = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)
    for first, scale in ((sd.DCTBlur(), 2.5), (sd.Pixelate(), 3.0), (sd.Masking(4), 1.0)):
        composite = sd.Composite([first, sd.Desaturate()], [scale, 1.0])
        one = first.apply(sd.Desaturate().apply(x, s), s * scale)
        other = sd.Desaturate().apply(first.apply(x, s * scale), s)
        torch.testing.assert_close(composite.apply(x, s), one, rtol=0, atol=1e-12)
        torch.testing.assert_close(one, other, rtol=0, atol=1e-12)
        assert sd.operator_from_dict(composite.to_dict()) == composite
    assert sd.Composite([sd.DCTBlur(), sd.Desaturate()], [2.5, 1.0]).label == "dct_blur+desaturate"


@pytest.mark.parametrize(("operators", "axis"), [((sd.DCTBlur(), sd.Pixelate()), "spatial"),
                                                 ((sd.DCTBlur(), sd.Masking()), "spatial")])  # fmt: skip
def test_composite_refuses_operators_that_do_not_commute(operators, axis):
    with pytest.raises(ValueError, match=f"do not commute: their {axis} bases differ"):
        sd.Composite(list(operators), [1.0, 1.0])
    with pytest.raises(ValueError, match="do not commute"):
        sd.operator_from_name("+".join(op.name for op in operators), 8, 8)


def test_operator_names_of_the_command_lines():
    assert sd.operator_from_name("pixelate", 32, 32) == sd.Pixelate()
    composite = sd.operator_from_name("dct_blur+desaturate", 32, 32, blur_max=5.0)
    assert composite == sd.Composite([sd.DCTBlur(), sd.Desaturate()], [5.0, 1.0])
    assert sd.operator_from_name("pixelate+desaturate", 28, 28).scales == [2.0, 1.0]
    with pytest.raises(ValueError, match="unknown operator 'blur'"):
        sd.operator_from_name("blur", 8, 8)
    with pytest.raises(ValueError, match="twice"):
        sd.operator_from_name("desaturate+desaturate", 8, 8)


@pytest.mark.parametrize("name", ["pixelate", "desaturate", "pixelate+desaturate", "blur+desaturate"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_combine_is_the_sum_of_its_terms(name, dtype, generator):
    """Σ_j w_j C(l_j)(a − a2) + α c + β η with explicit noise, and with seeds the fused op's counter-based η."""
    operator, level, shape = OPERATORS[name]
    batch = 3
    a, a2, c, noise = (torch.randn(batch, *shape, generator=generator, dtype=torch.float64) for _ in range(4))
    levels = [torch.full((batch,), level, dtype=torch.float64),
              torch.rand(batch, generator=generator, dtype=torch.float64) * level]  # fmt: skip
    weights = [torch.randn(batch, generator=generator, dtype=torch.float64) for _ in range(2)]
    alpha, beta = torch.rand(batch, generator=generator), torch.rand(batch, generator=generator)
    expected = sum(w.view(-1, 1, 1, 1) * operator.apply(a - a2, lv) for lv, w in zip(levels, weights, strict=True))
    expected = expected + alpha.double().view(-1, 1, 1, 1) * c + beta.double().view(-1, 1, 1, 1) * noise
    cast = [v.to(dtype) for v in (a, a2, c, noise)]
    out = operator.combine(cast[0], levels, weights, a2=cast[1], alpha=alpha, c=cast[2], beta=beta, noise=cast[3])
    assert out.dtype == dtype
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 0.1}[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=tolerance)
    seeds = torch.arange(batch, dtype=torch.int64) + 11
    drawn = seeded_normal(seeds, shape, 5).double()
    with_seeds = operator.combine(a, levels[:1], weights[:1], beta=beta, seeds=seeds, stream=5)
    torch.testing.assert_close(with_seeds, weights[0].view(-1, 1, 1, 1) * operator.apply(a, levels[0])
                               + beta.double().view(-1, 1, 1, 1) * drawn, rtol=0, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("name", ["pixelate", "desaturate", "pixelate+desaturate", "masking", "blur+desaturate"])
def test_gaussian_oracle_is_the_dense_posterior_mean(name, generator):
    """E[x_0 | x_t] = μ + Σ Cᵀ (C Σ Cᵀ + σ² I)⁻¹ (x_t − C μ), Σ = Bᵀ diag(λ) B in the reference basis."""
    operator, _, shape = OPERATORS[name]
    proc = sd.SoftDiffusionProcess(operator, noise=sd.GeometricNoise(0.05, 2.0),
                                   levels=sd.LevelSchedule.from_levels([0.0, OPERATORS[name][1]]))  # fmt: skip
    if name == "desaturate" or "+" in name:
        proc.levels = sd.LevelSchedule.from_levels([0.0, 0.9])
    variance = torch.rand(*shape, generator=generator, dtype=torch.float64) + 0.1
    mean = torch.randn(*shape, generator=generator, dtype=torch.float64)
    oracle = sd.oracle.GaussianDenoiser(variance, proc, mean=mean)
    basis = reference_basis(operator, shape) if operator.spatial_basis else None
    if basis is None:  # spatially constant spectrum: the Gaussian basis takes the DCT
        dct = scipy.fft.dct(np.eye(shape[1]), type=2, norm="ortho", axis=0)
        dct_w = scipy.fft.dct(np.eye(shape[2]), type=2, norm="ortho", axis=0)
        channel = OPPONENT.numpy() if operator.channel_basis == "opponent" else np.eye(shape[0])
        basis = np.kron(channel, np.kron(dct, dct_w))
    covariance = basis.T @ np.diag(variance.flatten().numpy()) @ basis
    x_t = torch.randn(3, *shape, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    out = oracle(x_t, t)
    dimension = math.prod(shape)
    for b in range(3):
        c = dense_matrix(operator, float(proc.level(t[b : b + 1])), shape)
        sigma2 = float(proc.sigma(t[b : b + 1])) ** 2
        gain = covariance @ c.T @ np.linalg.inv(c @ covariance @ c.T + sigma2 * np.eye(dimension))
        expected = mean.flatten().numpy() + gain @ (x_t[b].flatten().numpy() - c @ mean.flatten().numpy())
        np.testing.assert_allclose(out[b].flatten().numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["pixelate", "desaturate", "blur+desaturate"])
def test_closed_form_matches_monte_carlo_for_the_general_operators(name):
    """The closed form's per-coefficient variances against 600 draws through sd.sample, every sampler: each pooled
    ratio inside generous χ² bounds (a wrong basis or spectrum moves some coefficient by far more)."""
    operator, _, _ = OPERATORS[name]
    shape = (3, 8, 8)
    level_max = {"pixelate": 3.0}.get(name, 1.0)
    proc = sd.SoftDiffusionProcess(operator, noise=sd.GeometricNoise(0.02, 20.0),
                                   levels=sd.LevelSchedule.sin2(level_max))  # fmt: skip
    oracle = sd.oracle.GaussianDenoiser.power_law(proc, shape)
    proc.data_spectrum = oracle.data_spectrum()
    samples = 600
    for sampler in sd.samplers.SAMPLERS:
        x = sd.sample(oracle, proc, (samples, *shape), steps=5, sampler=sampler, seeds=range(samples),
                      dtype=torch.float64)  # fmt: skip
        predicted = closed_form.output_variance(oracle.variance, proc, 5, sampler)
        ratio = oracle.basis.forward(x).square().mean(dim=0) / predicted
        assert 0.75 < float(ratio.min()) and float(ratio.max()) < 1.3, (sampler, ratio.min(), ratio.max())


class BoxBlur(sd.Operator):
    """A matrix-free horizontal box blur: the mean of the pixel and its ``level``-weighted right neighbour."""

    name = "test_box_blur"

    def apply(self, x, level):
        weight = torch.as_tensor(level, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        return (x + weight * torch.roll(x, 1, dims=-1)) / (1 + weight)


def test_an_apply_only_operator_trains_and_samples_with_first_order_samplers(generator):
    proc = sd.SoftDiffusionProcess(BoxBlur(), noise=sd.GeometricNoise(0.05, 3.0), levels=sd.LevelSchedule.sin2(1.0))
    x0 = torch.rand(4, 1, 6, 6, generator=generator) * 2 - 1
    noise = torch.randn(4, 1, 6, 6, generator=generator)
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    expected = BoxBlur().apply(x0, proc.level(t)) + proc.sigma(t).view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(proc.corrupt(x0, t, noise=noise), expected)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    denoiser = sd.Denoiser(lambda x, c: net(x), proc)
    loss = sd.soft_score_matching_loss(denoiser, x0, proc)
    loss.backward()
    assert net.weight.grad is not None and bool(torch.isfinite(net.weight.grad).all())
    for sampler in ("momentum", "naive", "momentum_ode"):
        out = sd.sample(lambda x_t, t: 0.5 * x_t, proc, (2, 1, 6, 6), steps=4, sampler=sampler, seeds=[0, 1])
        assert out.shape == (2, 1, 6, 6) and bool(torch.isfinite(out).all())
    for sampler in ("multistep", "heun"):
        with pytest.raises(TypeError, match=f"the {sampler} sampler needs an operator diagonal.*has only apply"):
            sd.sample(lambda x_t, t: x_t, proc, (2, 1, 6, 6), steps=4, sampler=sampler, seeds=[0, 1])
    with pytest.raises(TypeError, match="closed form needs"):
        closed_form.output_variance(torch.ones(1, 6, 6), proc, 4, "momentum")
    with pytest.raises(TypeError, match='precond="wiener" needs'):
        sd.Denoiser(net, proc, precond="wiener", second_moment=torch.ones(1, 6, 6))


def test_a_registered_user_operator_rebuilds_from_a_saved_process():
    saved_blur = type("SavedBoxBlur", (BoxBlur,), {"name": "test_saved_box_blur"})
    proc = sd.SoftDiffusionProcess(saved_blur(), noise=sd.GeometricNoise(0.05, 3.0), levels=sd.LevelSchedule.sin2(1))
    saved = proc.to_dict()
    with pytest.raises(ValueError, match=r"unknown operator 'test_saved_box_blur'.*register_operator"):
        sd.SoftDiffusionProcess.from_dict(saved)
    sd.register_operator(saved_blur)
    assert isinstance(sd.SoftDiffusionProcess.from_dict(saved).operator, saved_blur)
    with pytest.raises(ValueError, match="already registered"):
        sd.register_operator(type("Other", (saved_blur,), {}))
    with pytest.raises(TypeError, match="Operator subclass"):
        sd.register_operator(int)


def test_the_documented_user_operator_runs(generator):
    """docs/operators.md's example, executed: it corrupts, and samples with momentum."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "operators.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(code, "docs/operators.md", "exec"), namespace)
    proc = namespace["proc"]
    x0 = torch.rand(2, 1, 8, 8, generator=generator) * 2 - 1
    x_t = proc.corrupt(x0, 0.5, seed=0)
    w = float(proc.level(torch.tensor([0.5])))
    expected = (x0 + w * torch.roll(x0, 1, dims=-1)) / (1 + w) + float(proc.sigma(torch.tensor([0.5]))) * \
        seeded_normal(torch.tensor([0, 1]), (1, 8, 8), 0)  # fmt: skip
    torch.testing.assert_close(x_t, expected, rtol=1e-5, atol=1e-5)
    assert sd.sample(lambda x, t: x, proc, (2, 1, 8, 8), steps=3, seeds=[0, 1]).shape == (2, 1, 8, 8)


def test_an_operator_outside_the_fused_ops_says_once_how_it_runs(caplog):
    """The Haar and colour bases and apply-only operators run their filter in PyTorch: one log line per operator and
    device says so; the blur (one fused op) says nothing."""
    sd.operators.say_unfused_once.cache_clear()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with caplog.at_level(logging.INFO, logger="softdiff"):
        for _ in range(2):
            sd.Pixelate().apply(x, torch.full((2,), 1.0, dtype=torch.float64))
            sd.Desaturate().apply(x, torch.full((2,), 0.5, dtype=torch.float64))
            sd.DCTBlur().apply(x, torch.full((2,), 1.0, dtype=torch.float64))
    lines = [r.getMessage() for r in caplog.records if r.name == "softdiff"]
    assert len(lines) == 2 and "pixelate on cpu runs the basis change (Basis(channel='shared', spatial='haar'))" in \
        lines[0] and lines[1].startswith("softdiff: desaturate on cpu runs the basis change")  # fmt: skip
