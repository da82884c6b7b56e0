"""Wasserstein schedule design (DESIGN §1.5): choose the corruption levels so that neighbouring levels are close
in Wasserstein-2 distance, then place them at uniform t (``LevelSchedule.from_levels``).

Candidates: M levels ℓ_0 = 0 < ℓ_1 < … < ℓ_{M−1} = ℓ_max, evenly spaced. p_ℓ is the law of C(ℓ) x_0, the
corrupted data without its noise. Noise is not part of the design: the designed levels are placed at uniform t
afterwards, so the noise a level will carry, σ(t_k), depends on its position k on the path, unknown while
candidates are compared; and under the synchronous coupling the noise adds (σ(t_{k+1}) − σ(t_k))² C·H·W to hop k
whatever levels are chosen. (Designing with the noise of a level tied to ℓ / ℓ_max instead scored a process that is
never trained and sampled worse on the exact Gaussian denoiser.)

Two estimators of W2(p_a, p_b), both in float64 and in the operator's orthonormal basis (z = DCT2(x) for the
blur, the Haar coefficients for pixelation, z = x for masking), with d(ℓ) = ``operator.spectrum(ℓ)``:

- ``coupled``: the synchronous coupling (the same x_0 at both levels),
      W2²(a, b) = E‖(C_a − C_b) x_0‖² = Σ_{c,k,l} (d_a − d_b)²_{kl} E[z_{ckl}²].
  It is the exact W2 of the data's own corrupted laws, for any data: C_b C_a⁻¹ is symmetric positive
  semi-definite (a gradient of a convex function), so by Brenier's theorem the coupling is optimal.
- ``frechet`` (the paper's): W2 between Gaussian fits N(μ_a, Σ_a) of p_a, μ_a = d_a ⊙ μ, Σ_a = D_a S D_a, with μ,
  S the mean and (1/N) covariance of z over the data (full D × D, D = C·H·W):
      W2²(a, b) = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}.
  The same argument makes it equal to ``coupled`` in exact arithmetic (Σ_a, Σ_b are images of one Gaussian under
  commuting PSD maps), so it serves as the paper's cross-check; in floating point its eigen-square-roots of nearly
  singular covariances drift from ``coupled`` by up to ~1e-3 relative at strong blur. Costs one D × D
  eigendecomposition per candidate and per edge tried (about 3 s per edge at D = 768 on two CPU cores: a design
  with 256 candidates takes hours; ``candidates=24, keep=6`` about a minute).

Methods:

- ``shortest_path`` (the paper's): link candidates i < j when W2(ℓ_i, ℓ_j) ≤ ε; ε is the smallest pairwise
  distance, found by bisection over the sorted distances, for which the fewest-hop path from ℓ_0 to ℓ_{M−1}
  has at most ``keep`` − 1 hops. Among the paths with exactly ``keep`` levels and every hop ≤ ε, the one with
  the smallest Σ hop² is returned (dynamic programming), so hops are balanced and the result deterministic.
- ``equal_arc``: equal W2 arc length between neighbours: s(ℓ) = Σ of W2 between consecutive candidates up to
  ℓ, and level k is s⁻¹(k s(ℓ_max) / (keep − 1)) (linear interpolation between candidates).

Files: :meth:`DesignedSchedule.save` writes JSON (``levels`` increasing from 0, ``t``, operator, estimator,
method, ε, W2 between neighbours for the designed and the default sin² schedules, data spec and SHA-256);
:func:`load_schedule_file` reads and checks one, or a schedule shipped with the package by name
(:func:`shipped_schedules`: ``shapes-32``, ``shapes-16``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from ._checks import check_choice
from .operators import (
    Identity,
    Operator,
    basis_second_moment,
    model_range_float64,
    operator_from_dict,
    require_basis,
)
from .schedules import LevelSchedule

ESTIMATORS = ("coupled", "frechet")
METHODS = ("shortest_path", "equal_arc")
FORMAT = "softdiff.schedule/1"
SHIPPED_FOLDER = "designed"


class ScheduleFileError(ValueError):
    """A schedule file is missing, not JSON, or holds invalid levels; the message names the file."""


# --- estimators -----------------------------------------------------------------------------------------------


def _channel_spectra(operator: Operator, levels: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Eigenvalues d(ℓ) of C(ℓ) for every coefficient: levels ``[K]`` -> float64 ``[K, C·H·W]`` (channel-major)."""
    channels, height, width = image_shape
    require_basis(operator, "schedule design")
    spectrum = operator.spectrum(levels.to(torch.float64), height, width)  # [K, 1 or C, H, W]
    return spectrum.expand(-1, channels, -1, -1).reshape(levels.shape[0], -1)


class CoupledW2:
    """W2 under the synchronous coupling: Σ (d_a − d_b)² E[z²] (see the module docstring).

    Args:
        second_moments: E[z²] of the data's basis coefficients ``[C, H, W]``.
        operator: the corruption operator.
    """

    def __init__(self, second_moments: torch.Tensor, operator: Operator):
        self.second_moments = second_moments.to(torch.float64).cpu()
        self.image_shape = tuple(second_moments.shape)
        self.operator = operator

    @classmethod
    def from_data(cls, data: torch.Tensor, operator: Operator, *, batch_size: int = 1024):
        """E[z²] over ``data`` ``[N, C, H, W]`` (uint8 or float in [-1, 1]), accumulated in float64 on its device."""
        return cls(basis_second_moment(operator, data, batch_size=batch_size), operator)

    def _spectra(self, levels: torch.Tensor) -> torch.Tensor:
        """d(ℓ) ``[K, C·H·W]`` (channel-major, as the flattened E[z²])."""
        return _channel_spectra(self.operator, levels, self.image_shape)

    def distances(self, levels_a: torch.Tensor, levels_b: torch.Tensor) -> torch.Tensor:
        """W2(ℓ_a[k], ℓ_b[k]) for level pairs ``[K]``, ``[K]`` -> float64 ``[K]``."""
        weights = self.second_moments.flatten()
        squared = (self._spectra(levels_a) - self._spectra(levels_b)).square() @ weights
        return squared.clamp(min=0).sqrt()

    def matrix(self, levels: torch.Tensor) -> torch.Tensor:
        """W2 between every pair of ``levels`` ``[M]``: float64 ``[M, M]``, entry (i, j) for i < j, +inf elsewhere."""
        count = levels.shape[0]
        weights = self.second_moments.flatten()
        spectra = self._spectra(levels)
        result = torch.full((count, count), math.inf, dtype=torch.float64)
        for i in range(count - 1):
            squared = (spectra[i + 1 :] - spectra[i]).square() @ weights
            result[i, i + 1 :] = squared.clamp(min=0).sqrt()
        return result


class FrechetW2:
    """W2 between Gaussian fits of the corrupted laws, full covariance, float64 (see the module docstring).

    Args:
        mean: μ, the mean of the basis coefficients ``[D]`` (D = C·H·W, channel-major).
        covariance: S, their (1/N) covariance ``[D, D]``.
        image_shape: (C, H, W).
        operator: the corruption operator.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        covariance: torch.Tensor,
        image_shape: tuple[int, int, int],
        operator: Operator,
    ):
        self.mean = mean.to(torch.float64)
        self.covariance = covariance.to(torch.float64)
        self.image_shape = tuple(image_shape)
        self.operator = operator

    @classmethod
    def from_data(cls, data, operator: Operator, *, max_dimension: int = 1024, batch_size=1024):
        """Mean and covariance of the basis coefficients of ``data`` ``[N, C, H, W]`` (two passes, float64, on
        the data's device). Raises when D = C·H·W exceeds ``max_dimension``."""
        dimension = math.prod(data.shape[1:])
        if dimension > max_dimension:
            raise ValueError(
                f"estimator='frechet' needs a D x D covariance and eigendecompositions of it; D = C·H·W = "
                f"{dimension} > max_dimension = {max_dimension}. It costs D³ per pair of candidate levels (about "
                f"3 s at D = 768 on two CPU cores: hours for a full design) and gives the levels of "
                f"estimator='coupled' (equal in exact arithmetic): use that (any size, seconds), smaller images, "
                f"or raise max_dimension"
            )
        if data.shape[0] < 2:
            raise ValueError(f"estimator='frechet' needs at least 2 images to fit a covariance; got {data.shape[0]}")
        total = torch.zeros(dimension, dtype=torch.float64, device=data.device)
        for part in data.split(batch_size):
            total += operator.to_basis(model_range_float64(part)).flatten(1).sum(dim=0)
        mean = total / data.shape[0]
        covariance = torch.zeros(dimension, dimension, dtype=torch.float64, device=data.device)
        for part in data.split(batch_size):
            centred = operator.to_basis(model_range_float64(part)).flatten(1) - mean
            covariance += centred.T @ centred
        return cls(mean, covariance / data.shape[0], data.shape[1:], operator)

    def second_moments(self) -> torch.Tensor:
        """E[z²] = diag(S) + μ² ``[C, H, W]`` (what :class:`CoupledW2` needs)."""
        return (self.covariance.diagonal() + self.mean.square()).view(self.image_shape)

    def _fit(self, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_ℓ ``[D]``, Σ_ℓ ``[D, D]``) of the corrupted law at one level."""
        level_tensor = torch.tensor([level], dtype=torch.float64)
        d = _channel_spectra(self.operator, level_tensor, self.image_shape)[0].to(self.mean.device)
        return d * self.mean, d[:, None] * self.covariance * d[None, :]

    @staticmethod
    def _sqrt(covariance: torch.Tensor) -> torch.Tensor:
        """Σ^{1/2} of a symmetric positive semi-definite matrix (negative round-off eigenvalues set to 0)."""
        eigenvalues, vectors = torch.linalg.eigh(covariance)
        return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T

    @staticmethod
    def _distance(fit_a, root_a: torch.Tensor, fit_b) -> float:
        mean_a, cov_a = fit_a
        mean_b, cov_b = fit_b
        cross = root_a @ cov_b @ root_a
        cross_root_trace = torch.linalg.eigvalsh(0.5 * (cross + cross.T)).clamp(min=0).sqrt().sum()
        squared = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross_root_trace
        return float(squared.clamp(min=0).sqrt())

    def distances(self, levels_a: torch.Tensor, levels_b: torch.Tensor) -> torch.Tensor:
        """W2 between the Gaussian fits at level pairs ``[K]``, ``[K]`` -> float64 ``[K]``."""
        values = []
        for a, b in zip(levels_a.tolist(), levels_b.tolist(), strict=True):
            fit_a = self._fit(a)
            values.append(self._distance(fit_a, self._sqrt(fit_a[1]), self._fit(b)))
        return torch.tensor(values, dtype=torch.float64)

    def band_matrix(self, levels: torch.Tensor, limit: float, required_until: torch.Tensor, *, progress=False):
        """W2 between pairs (i, j), i < j, of ``levels`` ``[M]`` for j up to ``required_until[i]`` and then on until
        the first distance above ``limit``; +inf elsewhere (float64 ``[M, M]``). Skipping the rest assumes W2
        grows with the level gap, as it does for blur and masking (exactly so for ``coupled``)."""
        from tqdm.auto import tqdm

        count = levels.shape[0]
        result = torch.full((count, count), math.inf, dtype=torch.float64)
        for i in tqdm(range(count - 1), desc="frechet W2", unit="level", disable=not progress):
            fit_i = self._fit(float(levels[i]))
            root_i = self._sqrt(fit_i[1])
            for j in range(i + 1, count):
                result[i, j] = self._distance(fit_i, root_i, self._fit(float(levels[j])))
                if j >= int(required_until[i]) and result[i, j] > limit:
                    break
        return result


# --- graph search and arc length ------------------------------------------------------------------------------


def fewest_hops(adjacency: torch.Tensor) -> int | None:
    """Fewest forward hops from node 0 to node M−1 in a graph given by a boolean ``[M, M]`` adjacency (BFS);
    None when unreachable."""
    count = adjacency.shape[0]
    if count == 1:
        return 0
    links = adjacency.to(torch.float64)
    reached = torch.zeros(count, dtype=torch.bool)
    reached[0] = True
    frontier = reached.clone()
    for hops in range(1, count):
        frontier = ((frontier.to(torch.float64) @ links) > 0) & ~reached
        if not bool(frontier.any()):
            return None
        if bool(frontier[-1]):
            return hops
        reached |= frontier
    return None


def balanced_path(distances: torch.Tensor, epsilon: float, hops: int) -> list[int] | None:
    """The path 0 → M−1 with exactly ``hops`` hops, each of W2 ≤ ``epsilon``, of least Σ W2² (dynamic
    programming over ``distances`` ``[M, M]``, +inf = no edge); None when there is none. Ties go to the lowest
    index, so the result is deterministic."""
    count = distances.shape[0]
    edge_cost = torch.where(distances <= epsilon, distances.square(), torch.full_like(distances, math.inf))
    cost = torch.full((count,), math.inf, dtype=torch.float64)
    cost[0] = 0.0
    parents = []
    for _ in range(hops):
        cost, parent = (cost[:, None] + edge_cost).min(dim=0)
        parents.append(parent)
    if not math.isfinite(float(cost[-1])):
        return None
    path = [count - 1]
    for parent in reversed(parents):
        path.append(int(parent[path[-1]]))
    return path[::-1]


def shortest_path_design(distances: torch.Tensor, keep: int) -> tuple[list[int], float, int]:
    """The paper's search over candidate distances ``[M, M]`` (i < j, +inf = unknown/no edge).

    Returns (indices of the ``keep`` levels, ε, fewest hops at ε). ε is the smallest pairwise distance at which
    the fewest-hop path has ≤ keep − 1 hops (bisection over the sorted distances); the path is
    :func:`balanced_path` at that ε. When ties make the fewest-hop count jump past keep − 1 at ε, the path
    still has exactly ``keep`` levels with every hop ≤ ε and the returned fewest-hop count says so.
    """
    hops = keep - 1
    values = torch.unique(distances[torch.isfinite(distances)])  # sorted
    if values.numel() == 0:
        raise ValueError("no finite distance between candidate levels")
    low, high = 0, values.numel() - 1
    if (fewest_hops(distances <= values[high]) or math.inf) > hops:
        raise ValueError(f"no path with at most {keep} levels links the clean and the most corrupted level")
    while low < high:  # smallest index with fewest_hops ≤ hops (fewest_hops falls as ε grows)
        middle = (low + high) // 2
        if (fewest_hops(distances <= values[middle]) or math.inf) <= hops:
            high = middle
        else:
            low = middle + 1
    epsilon = float(values[low])
    path = balanced_path(distances, epsilon, hops)
    if path is None:
        raise ValueError(
            f"no path with exactly {keep} levels has every hop <= epsilon = {epsilon:.6g} (tied distances: the "
            f"fewest-hop path has {fewest_hops(distances <= epsilon)} hops); try another keep or more candidates"
        )
    return path, epsilon, int(fewest_hops(distances <= epsilon))


def equal_arc_levels(levels: torch.Tensor, neighbour_w2: torch.Tensor, keep: int) -> torch.Tensor:
    """``keep`` levels at equal W2 arc length: s_i = Σ_{m<i} W2(ℓ_m, ℓ_{m+1}) over the candidates ``levels``
    ``[M]`` (``neighbour_w2`` ``[M−1]``) and s⁻¹ interpolated linearly -> float64 ``[keep]``."""
    arc = torch.cat([torch.zeros(1, dtype=torch.float64), neighbour_w2.to(torch.float64).cumsum(0)])
    if not float(arc[-1]) > 0:
        raise ValueError("the candidate levels are all at W2 distance 0: the operator does not change the data")
    targets = torch.linspace(0.0, float(arc[-1]), keep, dtype=torch.float64)
    # Segment m holds targets with arc[m] < s ≤ arc[m+1] (flat segments are skipped).
    segment = (torch.searchsorted(arc, targets, side="left") - 1).clamp(0, levels.numel() - 2)
    start, end = arc[segment], arc[segment + 1]
    fraction = torch.where(end > start, (targets - start) / (end - start).clamp(min=1e-300), torch.ones_like(start))
    designed = torch.lerp(levels[segment].to(torch.float64), levels[segment + 1].to(torch.float64), fraction)
    designed[0], designed[-1] = levels[0], levels[-1]
    return designed


# --- the designed schedule ------------------------------------------------------------------------------------


@dataclass
class DesignedSchedule:
    """A designed level schedule and how it was made. ``levels[k]`` sits at t_k = k / (keep − 1)."""

    levels: list[float]
    operator: Operator
    estimator: str
    method: str
    epsilon: float
    w2_between_neighbours: list[float]
    candidates: int
    level_max: float
    data: dict
    fewest_hops: int | None = None
    default_sin2: dict = field(default_factory=dict)

    @property
    def t(self) -> list[float]:
        return uniform_times(len(self.levels))

    def level_schedule(self) -> LevelSchedule:
        """The schedule as a :class:`LevelSchedule` (piecewise linear through the levels at uniform t)."""
        return LevelSchedule.from_levels(self.levels)

    def to_dict(self, *, command: str | None = None) -> dict:
        from ._version import __version__

        record = {
            "format": FORMAT,
            "levels": self.levels,
            "t": self.t,
            "operator": self.operator.to_dict(),
            "estimator": self.estimator,
            "method": self.method,
            "epsilon": self.epsilon,
            "w2_between_neighbours": self.w2_between_neighbours,
            "fewest_hops": self.fewest_hops,
            "candidates": self.candidates,
            "keep": len(self.levels),
            "level_max": self.level_max,
            "data": self.data,
            "default_sin2": self.default_sin2,
            "softdiff_version": __version__,
        }
        if command is not None:
            record["command"] = command
        return record

    def save(self, path: str | Path, *, command: str | None = None) -> Path:
        """Write the schedule as JSON (see the module docstring)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(command=command), indent=1) + "\n")
        return path


def uniform_times(count: int) -> list[float]:
    """t_k = k / (count − 1), k = 0 … count − 1: where a schedule's levels are placed (count ≥ 2)."""
    return [k / (count - 1) for k in range(count)]


def data_sha256(data: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (a content hash of the data a schedule was designed on)."""
    digest = hashlib.sha256(f"{data.dtype}|{tuple(data.shape)}|".encode())
    array = data.detach().cpu().contiguous()
    digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def _check_data(data: object) -> torch.Tensor:
    """``data`` must be [N, C, H, W], uint8 [0, 255] or finite float in [-1, 1] units."""
    if not isinstance(data, torch.Tensor) or data.dim() != 4:
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"data must be an image tensor [N, C, H, W] (uint8 or float in [-1, 1]); got {shape}")
    if data.shape[0] < 1 or data.numel() == 0:
        raise ValueError(f"data must hold at least one non-empty image; got shape {tuple(data.shape)}")
    if data.dtype == torch.uint8:
        return data  # converted batch by batch: a float64 copy of CelebA-64 would take 20 GB
    if not data.is_floating_point():
        raise TypeError(f"data must be uint8 or floating point; got {data.dtype}")
    if not bool(torch.isfinite(data).all()):
        raise ValueError("data contains NaN or Inf")
    return data


def _check_count(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return value


def design_schedule(
    data: torch.Tensor,
    operator: Operator,
    candidates: int = 256,
    keep: int = 32,
    estimator: str = "coupled",
    method: str = "shortest_path",
    *,
    level_max: float | None = None,
    max_dimension: int = 1024,
    data_spec: str | None = None,
    progress: bool = False,
) -> DesignedSchedule:
    """Design ``keep`` corruption levels from 0 to ``level_max`` with neighbours close in W2 (DESIGN §1.5).

    Args:
        data: training images ``[N, C, H, W]``, uint8 [0, 255] or float in [-1, 1] (any device; computed in
            float64 there).
        operator: any operator with a basis (``DCTBlur()``, ``Pixelate()``, ``Desaturate()``, ``Masking(seed)``, a
            ``Composite``; ``Identity`` has no levels to design).
        candidates: M, the candidate levels, evenly spaced over [0, level_max].
        keep: levels in the schedule, the clean level 0 and ``level_max`` included (2 ≤ keep ≤ candidates).
        estimator: ``"coupled"`` (per-coefficient synchronous coupling; any size) or ``"frechet"`` (Gaussian
            fits with full covariance; D = C·H·W ≤ ``max_dimension``).
        method: ``"shortest_path"`` (the paper's ε-graph) or ``"equal_arc"`` (equal W2 between neighbours).
        level_max: the most corrupted level (default: the operator's ``default_level_max``: 0.36 · min(H, W) pixels
            of blur, the coarsest Haar scale, 1 for masking, desaturation and composites).
        data_spec: the data set's spec string, recorded in the result.
        progress: show a progress bar (the Fréchet estimator takes seconds per pair of levels: hours).

    Returns:
        A :class:`DesignedSchedule` (``.levels``, ``.epsilon``, ``.level_schedule()``, ``.save(path)``).
    """
    images = _check_data(data)
    if not isinstance(operator, Operator):
        raise TypeError(f"operator must be a softdiff Operator (DCTBlur, Pixelate, Masking, ...); got {operator!r}")
    require_basis(operator, "schedule design")
    if isinstance(operator, Identity):
        raise ValueError("operator Identity() does not depend on its level: there is no level schedule to design")
    candidates = _check_count("candidates", candidates, 2)
    keep = _check_count("keep", keep, 2)
    if keep > candidates:
        raise ValueError(f"keep ({keep}) must not exceed candidates ({candidates})")
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("method", method, METHODS)
    height, width = images.shape[-2:]
    if level_max is None:
        level_max = operator.default_level_max(height, width)
    if isinstance(level_max, bool) or not isinstance(level_max, (int, float)) or not 0 < level_max < math.inf:
        raise ValueError(f"level_max must be a finite number > 0; got {level_max!r}")
    level_max = float(level_max)
    operator.check_levels(torch.tensor([level_max], dtype=torch.float64))
    operator.check_size(level_max, height, width)

    if estimator == "frechet":
        measure = FrechetW2.from_data(images, operator, max_dimension=max_dimension)
        coupled = CoupledW2(measure.second_moments(), operator)
    else:
        coupled = CoupledW2.from_data(images, operator)
        measure = coupled

    grid = torch.linspace(0.0, level_max, candidates, dtype=torch.float64)
    fewest = None
    if method == "shortest_path":
        coupled_distances = coupled.matrix(grid)
        path, epsilon, fewest = shortest_path_design(coupled_distances, keep)
        if isinstance(measure, FrechetW2):
            # Fréchet ≤ coupled, so the coupled design's ε bounds the Fréchet one: every edge with a coupled W2
            # ≤ ε is computed, and beyond that each row stops at its first Fréchet W2 above ε.
            within = (coupled_distances <= epsilon).to(torch.int64) * torch.arange(candidates)
            distances = measure.band_matrix(grid, epsilon, within.max(dim=1).values, progress=progress)
            path, epsilon, fewest = shortest_path_design(distances, keep)
        levels = grid[path]
    else:
        levels = equal_arc_levels(grid, measure.distances(grid[:-1], grid[1:]), keep)
    hops = measure.distances(levels[:-1], levels[1:])
    if method == "equal_arc":
        epsilon = float(hops.max())

    reference = LevelSchedule.sin2(level_max)(torch.linspace(0, 1, keep, dtype=torch.float64))
    reference_hops = measure.distances(reference[:-1], reference[1:])
    return DesignedSchedule(
        levels=levels.tolist(),
        operator=operator,
        estimator=estimator,
        method=method,
        epsilon=epsilon,
        w2_between_neighbours=hops.tolist(),
        candidates=candidates,
        level_max=level_max,
        data={
            "spec": data_spec,
            "sha256": data_sha256(data),
            "count": int(data.shape[0]),
            "shape": list(data.shape[1:]),
        },
        fewest_hops=fewest,
        default_sin2={
            "levels": reference.tolist(),
            "w2_between_neighbours": reference_hops.tolist(),
            "max_w2": float(reference_hops.max()),
        },
    )


# --- schedule files -------------------------------------------------------------------------------------------


def shipped_schedules() -> list[str]:
    """Names of the designed schedules that ship with softdiff (usable wherever a schedule file is)."""
    folder = resources.files("softdiff") / SHIPPED_FOLDER
    return sorted(entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json"))


def resolve_schedule_file(name_or_path: str | Path) -> Path:
    """An existing file path, or the file of a shipped schedule name (``shapes-32``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("softdiff") / SHIPPED_FOLDER / f"{name_or_path}.json"
    if path.suffix != ".json" and len(path.parts) == 1 and shipped.is_file():
        return Path(str(shipped))
    raise ScheduleFileError(
        f"schedule file {str(name_or_path)!r} does not exist and is not a shipped schedule "
        f"({', '.join(shipped_schedules())}); make one with python -m softdiff.schedule --data SPEC --out FILE"
    )


def _read_schedule_file(name_or_path: str | Path) -> tuple[dict, Path]:
    path = resolve_schedule_file(name_or_path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ScheduleFileError(f"schedule file {path} is not readable JSON: {error}") from error
    if not isinstance(record, dict) or "levels" not in record:
        raise ScheduleFileError(f"schedule file {path} has no 'levels' list")
    if record.get("format", FORMAT) != FORMAT:
        raise ScheduleFileError(
            f"schedule file {path} has format {record['format']!r}; this softdiff reads {FORMAT!r} (upgrade "
            "softdiff, or design the schedule again with this version)"
        )
    levels = record["levels"]
    if not isinstance(levels, list) or len(levels) < 2 or not all(_is_finite_number(v) for v in levels):
        raise ScheduleFileError(f"schedule file {path}: 'levels' must be a list of at least 2 finite numbers")
    if levels[0] != 0:
        raise ScheduleFileError(
            f"schedule file {path}: the first level must be 0 (clean data at t = 0); got {levels[0]}"
        )
    if any(b <= a for a, b in itertools.pairwise(levels)):
        raise ScheduleFileError(f"schedule file {path}: 'levels' must be strictly increasing")
    # The levels are placed at t_k = k / (K − 1); a file that says otherwise, or disagrees with itself, is refused
    # rather than read in a way its author did not mean.
    uniform = uniform_times(len(levels))
    times = record.get("t", uniform)
    if (
        not isinstance(times, list)
        or len(times) != len(levels)
        or not all(_is_finite_number(v) and abs(v - u) <= 1e-9 for v, u in zip(times, uniform, strict=False))
    ):
        raise ScheduleFileError(
            f"schedule file {path}: 't' must be the uniform grid k / (K - 1) with K = {len(levels)} levels, where "
            "softdiff places them; give levels only, or resample them onto that grid"
        )
    if record.get("keep", len(levels)) != len(levels):
        raise ScheduleFileError(f"schedule file {path}: 'keep' is {record['keep']!r} but it lists {len(levels)} levels")
    level_max = record.get("level_max", levels[-1])
    if not _is_finite_number(level_max) or abs(level_max - levels[-1]) > 1e-9 * max(1.0, abs(levels[-1])):
        raise ScheduleFileError(
            f"schedule file {path}: 'level_max' is {level_max!r} but the last level is {levels[-1]!r}"
        )
    return record, path


def _is_finite_number(value: object) -> bool:
    """A JSON number (not a bool) that is finite as a float (integers too large for a float are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def load_schedule_file(name_or_path: str | Path) -> dict:
    """Read and check a schedule JSON (a path or a shipped name): ``levels`` must be a list of at least two
    finite numbers, strictly increasing from 0. Returns the whole record."""
    return _read_schedule_file(name_or_path)[0]


def level_schedule_from_file(
    name_or_path: str | Path, *, operator: Operator | None = None, image_size: tuple[int, int] | None = None
) -> LevelSchedule:
    """The :class:`LevelSchedule` of a schedule file or shipped name, checked against the ``operator`` and
    ``image_size`` (H, W) it will be used with when the file records them."""
    record, path = _read_schedule_file(name_or_path)
    if operator is not None:
        if "operator" in record:
            try:
                designed_for = operator_from_dict(record["operator"])
            except (TypeError, ValueError) as error:
                raise ScheduleFileError(f"schedule file {path}: unreadable 'operator': {error}") from error
            if designed_for != operator:
                raise ScheduleFileError(f"schedule file {path} was designed for {designed_for!r}, not {operator!r}")
        try:
            operator.check_levels(torch.tensor(record["levels"], dtype=torch.float64))
        except ValueError as error:
            raise ScheduleFileError(f"schedule file {path}: {error}") from error
    data = record.get("data")
    shape = data.get("shape") if isinstance(data, dict) else None
    if shape is not None and (
        not isinstance(shape, list)
        or len(shape) < 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise ScheduleFileError(f"schedule file {path}: 'data.shape' must be a list like [C, H, W]; got {shape!r}")
    if image_size is not None and shape and tuple(shape[-2:]) != tuple(image_size):
        raise ScheduleFileError(
            f"schedule file {path} was designed for {shape[-2]}x{shape[-1]} images, not "
            f"{image_size[0]}x{image_size[1]} (levels are in pixels); design one for this size"
        )
    return LevelSchedule.from_levels(record["levels"])
