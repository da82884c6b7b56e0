"""Wasserstein schedule design: both W2 estimators against float64 closed forms (scipy DCT and sqrtm), the
ε-graph search against brute force, the path property, equal arc length, determinism, the schedule files
(shipped ones reproduced by their recorded command), the CLI, and training's --schedule-file."""

import itertools
import json
import math
import shlex

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import torch

import softdiff as sd
import softdiff.cli.schedule as schedule_cli
from softdiff.schedule_design import (
    CoupledW2,
    FrechetW2,
    ScheduleFileError,
    balanced_path,
    data_sha256,
    equal_arc_levels,
    fewest_hops,
    level_schedule_from_file,
    load_schedule_file,
    resolve_schedule_file,
    shipped_schedules,
    shortest_path_design,
)
from softdiff.training.build import build_process
from softdiff.training.config import TrainConfig


def dct_coefficients(x: torch.Tensor) -> np.ndarray:
    """scipy's orthonormal DCT-II of images [N, C, H, W] -> float64 [N, C, H, W] (independent of softdiff)."""
    return scipy.fft.dctn(x.double().numpy(), type=2, norm="ortho", axes=(-2, -1))


def blur_spectrum(level: float, height: int, width: int) -> np.ndarray:
    omega_h = np.pi * np.arange(height) / height
    omega_w = np.pi * np.arange(width) / width
    return np.exp(-0.5 * level**2 * (omega_h[:, None] ** 2 + omega_w[None, :] ** 2))


def random_images(generator, shape=(24, 2, 6, 5)) -> torch.Tensor:
    """Non-Gaussian, non-zero-mean images in [-1, 1] (uniform noise plus a bright corner)."""
    x = torch.rand(*shape, generator=generator, dtype=torch.float64) * 1.6 - 0.9
    x[..., :2, :2] += 0.1
    return x


def gaussian_images(generator, count, shape):
    """x_0 ~ N(μ, Σ) with Σ diagonal in the DCT basis: (variances λ [C, H, W], DCT mean m, samples)."""
    channels, height, width = shape
    k = torch.arange(height, dtype=torch.float64)[:, None]
    l = torch.arange(width, dtype=torch.float64)[None, :]  # noqa: E741
    variance = (0.3 / (1 + k**2 + l**2)).expand(channels, height, width) * torch.linspace(0.5, 1.5, channels)[
        :, None, None
    ]
    mean = 0.2 * torch.randn(shape, generator=generator, dtype=torch.float64)
    z = mean + variance.sqrt() * torch.randn(count, *shape, generator=generator, dtype=torch.float64)
    images = scipy.fft.idctn(z.numpy(), type=2, norm="ortho", axes=(-2, -1))
    return variance.numpy(), mean.numpy(), torch.from_numpy(images)


# --- estimators -----------------------------------------------------------------------------------------------


def test_coupled_blur_is_the_synchronous_coupling_cost(generator):
    """Σ (d_a − d_b)² E[z²], with z from scipy's DCT and d from the closed form."""
    x = random_images(generator)
    estimator = CoupledW2.from_data(x, sd.DCTBlur())
    levels_a = torch.tensor([0.0, 0.4, 1.3, 2.9], dtype=torch.float64)
    levels_b = torch.tensor([0.7, 0.4, 2.2, 0.05], dtype=torch.float64)
    second = (dct_coefficients(x) ** 2).mean(axis=0)  # [C, H, W]
    expected = []
    for a, b in zip(levels_a.tolist(), levels_b.tolist(), strict=True):
        squared = ((blur_spectrum(a, 6, 5) - blur_spectrum(b, 6, 5)) ** 2 * second).sum()
        expected.append(math.sqrt(squared))
    np.testing.assert_allclose(estimator.distances(levels_a, levels_b).numpy(), expected, rtol=1e-10, atol=1e-12)
    matrix = estimator.matrix(levels_a)
    for i, j in itertools.combinations(range(4), 2):
        pair = estimator.distances(levels_a[[i]], levels_a[[j]])
        torch.testing.assert_close(matrix[i, j], pair[0], rtol=1e-12, atol=1e-12)
    assert bool(torch.isinf(matrix[torch.ones(4, 4).tril() > 0]).all())


def test_coupled_masking_is_the_pixel_coupling_cost(generator):
    """Masking: E‖(M_a − M_b) x‖² with the masks read off the operator's action on ones."""
    x = random_images(generator)
    operator = sd.Masking(seed=4)
    estimator = CoupledW2.from_data(x, operator)
    levels_a = torch.tensor([0.0, 0.2, 0.55], dtype=torch.float64)
    levels_b = torch.tensor([0.9, 0.5, 0.56], dtype=torch.float64)
    ones = torch.ones(1, *x.shape[1:], dtype=torch.float64)
    expected = [
        ((operator.apply(ones, a) - operator.apply(ones, b)) * x).square().sum(dim=(1, 2, 3)).mean().sqrt().item()
        for a, b in zip(levels_a.tolist(), levels_b.tolist(), strict=True)
    ]
    np.testing.assert_allclose(estimator.distances(levels_a, levels_b).numpy(), expected, rtol=1e-10)


def test_coupled_is_the_exact_w2_of_dct_diagonal_gaussian_data(generator):
    """For x_0 ~ N(μ, Σ), Σ DCT-diagonal: W2²(C_a x_0, C_b x_0) = Σ (d_a − d_b)² (m² + λ) (commuting Gaussians);
    the estimate from 4000 samples must be within Monte Carlo error of it."""
    variance, mean, x = gaussian_images(generator, 4000, (2, 6, 5))
    estimator = CoupledW2.from_data(x, sd.DCTBlur())
    for a, b in [(0.0, 0.5), (0.5, 1.5), (1.0, 3.0)]:
        exact = math.sqrt(((blur_spectrum(a, 6, 5) - blur_spectrum(b, 6, 5)) ** 2 * (mean**2 + variance)).sum())
        estimate = estimator.distances(torch.tensor([a]), torch.tensor([b])).item()
        assert abs(estimate - exact) <= 0.03 * exact, (a, b, estimate, exact)


def frechet_reference(x, level_a, level_b):
    """Fréchet distance between Gaussian fits of C_a x_0 and C_b x_0, in pixel space, with scipy's sqrtm: blur
    matrices built from scipy's DCT, covariance with 1/N."""
    n, channels, height, width = x.shape
    flat = x.double().numpy().reshape(n, -1)
    mean, covariance = flat.mean(axis=0), np.cov(flat, rowvar=False, bias=True)
    dimension = flat.shape[1]

    def blur_matrix(level):
        basis = np.eye(dimension).reshape(dimension, channels, height, width)
        coefficients = scipy.fft.dctn(basis, type=2, norm="ortho", axes=(-2, -1)) * blur_spectrum(level, height, width)
        return scipy.fft.idctn(coefficients, type=2, norm="ortho", axes=(-2, -1)).reshape(dimension, dimension).T

    c_a, c_b = blur_matrix(level_a), blur_matrix(level_b)
    cov_a = c_a @ covariance @ c_a.T
    cov_b = c_b @ covariance @ c_b.T
    root_a = scipy.linalg.sqrtm(cov_a).real
    cross = scipy.linalg.sqrtm(root_a @ cov_b @ root_a).real
    squared = np.sum((c_a @ mean - c_b @ mean) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    return math.sqrt(max(squared, 0.0))


def test_frechet_matches_scipy_closed_form(generator):
    """softdiff's Fréchet distance (DCT basis, eigh) against the pixel-space formula with scipy's sqrtm."""
    x = random_images(generator, (40, 2, 4, 3))
    estimator = FrechetW2.from_data(x, sd.DCTBlur())
    pairs = [(0.0, 0.6), (0.3, 1.7), (1.2, 2.0)]
    actual = estimator.distances(torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs]))
    expected = [frechet_reference(x, a, b) for a, b in pairs]
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-7)


def test_frechet_on_gaussian_data_matches_the_population_closed_form(generator):
    """Gaussian data, DCT-diagonal Σ: per coefficient W2² = (d_a − d_b)² (m² + λ), within Monte Carlo error."""
    variance, mean, x = gaussian_images(generator, 3000, (1, 4, 4))
    estimator = FrechetW2.from_data(x, sd.DCTBlur())
    for a, b in [(0.0, 0.8), (0.8, 2.5)]:
        d_a, d_b = blur_spectrum(a, 4, 4), blur_spectrum(b, 4, 4)
        exact = math.sqrt(((d_a - d_b) ** 2 * (mean**2 + variance)).sum())
        estimate = estimator.distances(torch.tensor([a]), torch.tensor([b])).item()
        assert abs(estimate - exact) <= 0.04 * exact, (a, b, estimate, exact)


@pytest.mark.parametrize("operator", [sd.DCTBlur(), sd.Masking(seed=2)], ids=["dct_blur", "masking"])
def test_frechet_equals_coupled(operator, generator):
    """Commuting PSD operators: the synchronous coupling is optimal, so both estimators agree."""
    x = random_images(generator, (30, 2, 4, 5))
    top = 2.5 if isinstance(operator, sd.DCTBlur) else 1.0
    levels_a = torch.tensor([0.0, 0.1, 0.45, 0.3]) * top
    levels_b = torch.tensor([0.2, 0.8, 0.5, 1.0]) * top
    frechet = FrechetW2.from_data(x, operator).distances(levels_a, levels_b)
    torch.testing.assert_close(
        frechet, CoupledW2.from_data(x, operator).distances(levels_a, levels_b), rtol=1e-7, atol=1e-9
    )


def test_frechet_size_guard_names_the_alternative():
    with pytest.raises(ValueError, match=r"D = C·H·W = 3072 > max_dimension = 1024.*estimator='coupled'"):
        FrechetW2.from_data(torch.zeros(2, 3, 32, 32), sd.DCTBlur())  # the default refuses days of work
    with pytest.raises(ValueError, match="max_dimension"):
        sd.design_schedule(torch.zeros(4, 3, 8, 8), sd.DCTBlur(), estimator="frechet", max_dimension=100)


# --- graph search ---------------------------------------------------------------------------------------------


def brute_force(distances: torch.Tensor, keep: int):
    """By enumerating every path 0 → M−1: ε = min over paths with ≤ keep levels of their largest hop; the fewest
    hops with every hop ≤ ε; the least Σ hop² path among those with exactly keep levels and every hop ≤ ε."""
    count = distances.shape[0]

    def paths(levels):
        for middle in itertools.combinations(range(1, count - 1), levels - 2):
            yield [0, *middle, count - 1]

    def hops(path):
        return [float(distances[i, j]) for i, j in itertools.pairwise(path)]

    epsilon = min(max(hops(p)) for n in range(2, keep + 1) for p in paths(n))
    fewest = min(n - 1 for n in range(2, count + 1) for p in paths(n) if max(hops(p)) <= epsilon)
    feasible = [p for p in paths(keep) if max(hops(p)) <= epsilon]
    best = min(feasible, key=lambda p: sum(h * h for h in hops(p))) if feasible else None
    return epsilon, fewest, best


@pytest.mark.parametrize("trial", range(6))
def test_shortest_path_design_equals_brute_force_on_random_graphs(trial):
    """Arbitrary (non-metric) edge weights, M = 9: ε, the fewest-hop count and the chosen path."""
    generator = torch.Generator().manual_seed(trial)
    count = 9
    distances = torch.rand(count, count, generator=generator, dtype=torch.float64)
    distances[torch.ones(count, count).tril() > 0] = math.inf
    for keep in (2, 3, 4, 6, 9):
        epsilon, fewest, best = brute_force(distances, keep)
        if best is None:  # no path with exactly keep levels fits under ε: a clear error
            with pytest.raises(ValueError, match=f"no path with exactly {keep} levels"):
                shortest_path_design(distances, keep)
            continue
        assert shortest_path_design(distances, keep) == (best, epsilon, fewest)


def test_fewest_hops_on_a_line():
    """Points 0, 1, ..., 9 on a line, edges of length ≤ ε: ⌈9 / ⌊ε⌋⌉ hops."""
    positions = torch.arange(10, dtype=torch.float64)
    distances = (positions[None] - positions[:, None]).abs()
    distances[torch.ones(10, 10).tril() > 0] = math.inf
    for reach in range(1, 10):
        assert fewest_hops(distances <= reach) == math.ceil(9 / reach)
    assert fewest_hops(distances <= 0.5) is None
    assert balanced_path(distances, 3.0, 3) == [0, 3, 6, 9]
    assert balanced_path(distances, 3.0, 2) is None
    uneven = torch.tensor([0.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    gaps = (uneven[None] - uneven[:, None]).abs() + torch.full((4, 4), math.inf, dtype=torch.float64).tril()
    assert balanced_path(gaps, 10.0, 2) == [0, 2, 3]  # hops 3 + 3 beat 2 + 4 (least Σ hop², not Σ hop)


@pytest.mark.parametrize(
    ("operator", "estimator", "keep"),
    [
        (sd.DCTBlur(), "coupled", 8),
        (sd.DCTBlur(), "coupled", 2),
        (sd.Masking(seed=1), "coupled", 10),
        (sd.DCTBlur(), "frechet", 6),
    ],
)
def test_designed_path_property(operator, estimator, keep, generator):
    """Exactly keep levels from 0 to level_max, taken from the candidates, every hop ≤ ε, ε the smallest value at
    which the fewest-hop path is that short, and a fewest-hop path at ε."""
    x = random_images(generator, (32, 2, 6, 5))
    candidates = 16 if estimator == "frechet" else 40  # Fréchet: every pair is checked below
    result = sd.design_schedule(x, operator, candidates=candidates, keep=keep, estimator=estimator)
    level_max = 1.0 if isinstance(operator, sd.Masking) else 0.36 * 5
    grid = torch.linspace(0, level_max, candidates, dtype=torch.float64)
    assert len(result.levels) == keep and result.levels[0] == 0 and result.levels[-1] == pytest.approx(level_max)
    assert all(b > a for a, b in itertools.pairwise(result.levels))
    assert all(
        bool(torch.isclose(grid, torch.tensor(v, dtype=torch.float64), rtol=0, atol=1e-12).any()) for v in result.levels
    )
    assert max(result.w2_between_neighbours) <= result.epsilon * (1 + 1e-12)
    assert result.fewest_hops == keep - 1
    measure = (FrechetW2 if estimator == "frechet" else CoupledW2).from_data(x, operator)
    # ε is minimal: below it no path with ≤ keep levels exists (all pairwise distances, computed directly).
    pairs = torch.tensor(list(itertools.combinations(range(candidates), 2)))
    if estimator == "frechet":  # the design computed a band of the matrix; here every pair
        distances = torch.full((candidates, candidates), math.inf, dtype=torch.float64)
        distances[pairs[:, 0], pairs[:, 1]] = measure.distances(grid[pairs[:, 0]], grid[pairs[:, 1]])
    else:
        distances = measure.matrix(grid)
    below = distances < result.epsilon * (1 - 1e-9)
    assert (fewest_hops(below) or math.inf) > keep - 1
    assert fewest_hops(distances <= result.epsilon * (1 + 1e-9)) == keep - 1


def test_equal_arc_gives_equal_neighbour_distances(generator):
    x = random_images(generator)
    result = sd.design_schedule(x, sd.DCTBlur(), candidates=400, keep=7, method="equal_arc")
    hops = torch.tensor(result.w2_between_neighbours, dtype=torch.float64)
    assert len(result.levels) == 7 and result.levels[0] == 0 and result.levels[-1] == pytest.approx(0.36 * 5)
    # Each hop spans 1/6 of the W2 arc length along the candidates; a chord is at most its arc (up to the
    # interpolation between candidates) and, the path being smooth, not much shorter.
    grid = torch.linspace(0, 0.36 * 5, 400, dtype=torch.float64)
    measure = CoupledW2.from_data(x, sd.DCTBlur())
    share = float(measure.distances(grid[:-1], grid[1:]).sum()) / 6
    assert bool((hops <= share * (1 + 1e-4)).all()) and bool((hops >= 0.95 * share).all())
    assert result.epsilon == float(hops.max()) and result.fewest_hops is None
    # Known arc: constant neighbour distances give evenly spaced levels; a flat stretch is skipped.
    grid = torch.linspace(0, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(
        equal_arc_levels(grid, torch.ones(4, dtype=torch.float64), 3), torch.tensor([0.0, 2, 4], dtype=torch.float64)
    )
    flat = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(equal_arc_levels(grid, flat, 3), torch.tensor([0.0, 1, 4], dtype=torch.float64))


def test_design_is_deterministic_and_round_trips_through_json(generator, tmp_path):
    x = (random_images(generator, (16, 3, 8, 8)) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    first = sd.design_schedule(x, sd.DCTBlur(), candidates=64, keep=9, data_spec="test:data")
    second = sd.design_schedule(x.clone(), sd.DCTBlur(), candidates=64, keep=9, data_spec="test:data")
    assert first.to_dict() == second.to_dict()
    as_float = sd.design_schedule(x.double() / 127.5 - 1, sd.DCTBlur(), candidates=64, keep=9)
    assert as_float.levels == first.levels and as_float.epsilon == first.epsilon  # uint8 is read as [-1, 1]
    path = first.save(tmp_path / "s.json", command="python -m softdiff.schedule --data test:data")
    record = load_schedule_file(path)
    assert record["levels"] == first.levels and record["t"] == [k / 8 for k in range(9)]
    assert record["data"] == {"spec": "test:data", "sha256": data_sha256(x), "count": 16, "shape": [3, 8, 8]}
    assert record["operator"] == {"name": "dct_blur"} and record["estimator"] == "coupled"
    assert record["method"] == "shortest_path" and record["epsilon"] == first.epsilon
    assert record["default_sin2"]["max_w2"] >= first.epsilon  # the designed ε is the minimax over such paths
    schedule = level_schedule_from_file(path, operator=sd.DCTBlur(), image_size=(8, 8))
    t = torch.tensor(record["t"], dtype=torch.float64)
    torch.testing.assert_close(schedule(t), torch.tensor(first.levels, dtype=torch.float64))
    assert data_sha256(x) != data_sha256(x.flip(0))


def test_design_schedule_rejects_bad_inputs(generator):
    x = random_images(generator)
    cases = [
        (dict(data=torch.zeros(3, 8, 8)), ValueError, r"data must be an image tensor \[N, C, H, W\]"),
        (dict(data=torch.full((2, 1, 4, 4), math.nan)), ValueError, "data contains NaN"),
        (dict(data=torch.zeros(2, 1, 4, 4, dtype=torch.int32)), TypeError, "uint8 or floating"),
        (dict(operator=sd.Identity()), ValueError, "Identity"),
        (dict(operator="blur"), TypeError, "operator must be"),
        (dict(keep=50, candidates=40), ValueError, r"keep \(50\) must not exceed candidates \(40\)"),
        (dict(keep=1), ValueError, "keep must be an int >= 2"),
        (dict(candidates=2.5), ValueError, "candidates must be an int"),
        (dict(estimator="sliced"), ValueError, "estimator must be one of"),
        (dict(method="greedy"), ValueError, "method must be one of"),
        (dict(level_max=-1.0), ValueError, "level_max must be a finite number > 0"),
        (dict(operator=sd.Masking(), level_max=2.0), ValueError, r"must lie in \[0, 1\]"),
    ]
    for overrides, error, message in cases:
        arguments = dict(data=x, operator=sd.DCTBlur(), candidates=40, keep=5) | overrides
        with pytest.raises(error, match=message):
            sd.design_schedule(**arguments)


# --- schedule files, CLI and training -------------------------------------------------------------------------


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_schedule_files_are_checked(tmp_path):
    cases = [
        (tmp_path / "absent.json", "does not exist and is not a shipped schedule"),
        ("no-such-name", "does not exist and is not a shipped schedule .*shapes-32"),
        (write(tmp_path, "cut.json", '{"levels": [0.0, 1.'), "is not readable JSON"),
        (write(tmp_path, "other.json", {"t": [0, 1]}), "has no 'levels' list"),
        (write(tmp_path, "one.json", {"levels": [0.0]}), "at least 2 finite numbers"),
        (write(tmp_path, "nan.json", '{"levels": [0.0, NaN, 2.0]}'), "at least 2 finite numbers"),
        (write(tmp_path, "text.json", {"levels": [0.0, "1"]}), "at least 2 finite numbers"),
        (write(tmp_path, "start.json", {"levels": [0.5, 1.0]}), "the first level must be 0"),
        (write(tmp_path, "down.json", {"levels": [0.0, 2.0, 1.0]}), "strictly increasing"),
        (write(tmp_path, "flat.json", {"levels": [0.0, 1.0, 1.0]}), "strictly increasing"),
        (write(tmp_path, "huge.json", '{"levels": [0, 1, ' + "9" * 400 + "]}"), "at least 2 finite numbers"),
        (write(tmp_path, "v99.json", {"format": "softdiff.schedule/99", "levels": [0.0, 1.0]}), "reads 'softdiff.sc"),
        (write(tmp_path, "t.json", {"levels": [0.0, 1.0, 3.0], "t": [0, 0.25, 1]}), "'t' must be the uniform grid"),
        (write(tmp_path, "t2.json", {"levels": [0.0, 1.0, 3.0], "t": [0, 1]}), "'t' must be the uniform grid"),
        (write(tmp_path, "keep.json", {"levels": [0.0, 1.0, 3.0], "keep": 4}), "'keep' is 4 but it lists 3"),
        (write(tmp_path, "max.json", {"levels": [0.0, 1.0, 3.0], "level_max": 2}), "'level_max' is 2 but the last"),
    ]
    for source, message in cases:
        with pytest.raises(ScheduleFileError, match=message):
            load_schedule_file(source)
    masked = write(tmp_path, "m.json", {"levels": [0.0, 0.5], "operator": {"name": "masking", "seed": 0}})
    with pytest.raises(ScheduleFileError, match="designed for Masking"):
        level_schedule_from_file(masked, operator=sd.DCTBlur())
    with pytest.raises(ScheduleFileError, match="designed for 32x32 images, not 16x16"):
        level_schedule_from_file("shapes-32", operator=sd.DCTBlur(), image_size=(16, 16))
    for shape in (32, [32], [3, 0, 32], "3x32x32"):
        odd = write(tmp_path, "shape.json", {"levels": [0.0, 1.0], "data": {"shape": shape}})
        with pytest.raises(ScheduleFileError, match=r"'data.shape' must be a list like \[C, H, W\]"):
            level_schedule_from_file(odd, operator=sd.DCTBlur(), image_size=(16, 16))
    written = load_schedule_file("shapes-16")  # what the designer writes passes every check
    assert written["format"] == "softdiff.schedule/1" and len(written["t"]) == written["keep"]
    plain = write(tmp_path, "plain.json", {"levels": [0.0, 1.0, 3.0]})  # a hand-written file is fine
    assert level_schedule_from_file(plain, operator=sd.DCTBlur(), image_size=(16, 16)).levels == [0.0, 1.0, 3.0]


def test_training_reads_the_schedule_file_into_the_checkpointed_process(tmp_path):
    """train.build_process takes the levels of a shipped name or a path; the checkpoint stores
    process.to_dict(), whose 'levels' entry already holds them, so a resumed or sampled run uses the same ones."""
    shipped = load_schedule_file("shapes-16")["levels"]
    process = build_process(TrainConfig(resolution=16, schedule_file="shapes-16"))
    assert process.to_dict()["levels"] == {"kind": "piecewise_linear", "levels": shipped}
    rebuilt = sd.SoftDiffusionProcess.from_dict(process.to_dict())
    assert rebuilt.levels.levels == shipped
    for config, message in [
        (TrainConfig(resolution=16, schedule_file=str(tmp_path / "nothing.json")), "does not exist"),
        (TrainConfig(resolution=16, schedule_file="shapes-32"), "designed for 32x32 images, not 16x16"),
        (TrainConfig(resolution=16, schedule_file=str(write(tmp_path, "b.json", "[]"))), "no 'levels'"),
    ]:
        with pytest.raises(SystemExit, match=f"softdiff.train: --schedule-file: .*{message}"):
            build_process(config)


def test_shipped_schedules_are_valid_and_reproduced_by_their_command(tmp_path):
    assert {"shapes-16", "shapes-32", "mnist-16", "mnist-32"} <= set(shipped_schedules())
    for name in shipped_schedules():
        record = load_schedule_file(name)
        assert record["operator"] == {"name": "dct_blur"} and len(record["levels"]) == record["keep"] == 32
        assert max(record["w2_between_neighbours"]) <= record["epsilon"] < record["default_sin2"]["max_w2"]
        assert record["command"].startswith(f"python -m softdiff.schedule --data {record['data']['spec']} ")
    record = load_schedule_file("shapes-16")
    argv = shlex.split(record["command"])[3:]
    out = argv.index("--out") + 1
    argv[out] = str(tmp_path / "again.json")
    assert schedule_cli.main(argv) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["levels"] == record["levels"] and again["data"] == record["data"]
    assert resolve_schedule_file("shapes-16").name == "shapes-16.json"


def test_cli_writes_schedule_and_plot(tmp_path, capsys):
    out, plot = tmp_path / "s.json", tmp_path / "s.png"
    argv = ["--data", "shapes:32", "--size", "8", "--keep", "5", "--candidates", "24", "--out", str(out)]
    assert schedule_cli.main([*argv, "--plot", str(plot), "--method", "equal_arc"]) == 0
    record = load_schedule_file(out)
    assert len(record["levels"]) == 5 and record["method"] == "equal_arc"
    assert record["command"].startswith("python -m softdiff.schedule --data shapes:32")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot load --data"):
        schedule_cli.main(["--data", f"folder:{tmp_path / 'none'}", "--out", str(out)])
    with pytest.raises(SystemExit, match="keep"):
        schedule_cli.main([*argv[:4], "--keep", "30", "--candidates", "24", "--out", str(out)])
    with pytest.raises(SystemExit, match="level_max must be a finite number > 0"):
        schedule_cli.main([*argv, "--level-max", "-1"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda, but PyTorch sees no CUDA GPU"):
            schedule_cli.main([*argv, "--device", "cuda"])
    with pytest.raises(SystemExit, match="--device 'tpu' is not a device torch knows; devices here: cpu"):
        schedule_cli.main([*argv, "--device", "tpu"])
    with pytest.raises(SystemExit, match="--size must be >= 4 pixels; got 0"):  # not silently the data set's side
        schedule_cli.main([*argv[:2], "--size", "0", *argv[4:]])
    with pytest.raises(SystemExit, match="--threads must be >= 1; got 0"):
        schedule_cli.main([*argv, "--threads", "0"])
    before = torch.get_num_threads()
    try:
        assert schedule_cli.main([*argv, "--threads", "1"]) == 0
        assert "softdiff.schedule: device cpu, 1 CPU thread" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
