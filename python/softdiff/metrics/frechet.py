"""Fréchet distance and kernel (KID) distance between feature sets, in float64 (no scipy).

The Fréchet distance between N(μ_1, Σ_1) and N(μ_2, Σ_2) (Dowson & Landau 1982; FID, Heusel et al. 2017):

    d² = ‖μ_1 − μ_2‖² + Tr(Σ_1 + Σ_2 − 2 (Σ_1^{1/2} Σ_2 Σ_1^{1/2})^{1/2})

computed without any matrix square root of a product: with Σ_k = F_k F_kᵀ (F_k = V_k diag(√w_k) from the
symmetric eigendecomposition, eigenvalues below round-off dropped), Σ_1^{1/2} Σ_2 Σ_1^{1/2} has the eigenvalues
σ_i² of the singular values σ_i of F_2ᵀ F_1, so Tr (Σ_1 Σ_2)^{1/2} = Σ_i σ_i (the nuclear norm of F_2ᵀ F_1).
Unlike scipy's sqrtm of the non-symmetric Σ_1 Σ_2 (clean-fid's route) it needs no scipy, never turns complex,
and stays accurate for singular covariances (fewer samples than feature dimensions): the round-off in a null
space is never passed through a square root, so identical statistics are at distance ~1e-12, not ~1e-5.

KID (Bińkowski et al. 2018) is the unbiased estimate of MMD² with the cubic polynomial kernel
k(x, y) = (xᵀy / d + 1)³, averaged over random subsets exactly as clean-fid's ``kernel_distance`` draws them
(same subset size rule, same order of draws from a ``RandomState``), so a seed reproduces clean-fid's number.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch

_CHUNK_ROWS = 4096


def _as_features(name: str, features: object) -> np.ndarray:
    if not isinstance(features, np.ndarray) or features.ndim != 2:
        shape = getattr(features, "shape", None)
        raise ValueError(f"{name} must be a 2-D array [N, D] of features; got {type(features).__name__} {shape}")
    if not np.issubdtype(features.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point features; got {features.dtype}")
    if features.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 feature vectors; got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return features


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64, as ``np.cov(rowvar=False)``) of ``[N, D]``
    features, accumulated in row chunks so that no float64 copy of the whole set is made."""
    features = _as_features("features", features)
    count = features.shape[0]
    mean = np.zeros(features.shape[1])
    for start in range(0, count, _CHUNK_ROWS):
        mean += features[start : start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean /= count
    scatter = np.zeros((features.shape[1], features.shape[1]))
    for start in range(0, count, _CHUNK_ROWS):
        centred = features[start : start + _CHUNK_ROWS].astype(np.float64) - mean
        scatter += centred.T @ centred
    return mean, scatter / (count - 1)


def _check_gaussian(name: str, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, covariance = np.asarray(mean, dtype=np.float64), np.asarray(covariance, dtype=np.float64)
    if mean.ndim != 1 or covariance.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"{name}: mean must be [D] and covariance [D, D]; got {mean.shape} and {covariance.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(covariance).all()):
        raise ValueError(f"{name}: mean or covariance contains NaN or Inf")
    scale = max(np.abs(covariance).max(), np.finfo(np.float64).tiny)
    if np.abs(covariance - covariance.T).max() > 1e-6 * scale:
        raise ValueError(f"{name}: the covariance is not symmetric")
    return mean, covariance


@contextlib.contextmanager
def _one_thread():
    """LAPACK's symmetric eigensolver gains little from threads at these sizes and, on a busy shared CPU, its
    spinning threads slow it a hundredfold (measured: D = 480 in 0.1 s on one thread, 10 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _root_factor(covariance: torch.Tensor) -> torch.Tensor:
    """F ``[D, r]`` with F Fᵀ = covariance, from the eigenvalues above round-off (D · ε · the largest)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    keep = eigenvalues > max(float(eigenvalues[-1]), 0.0) * len(eigenvalues) * torch.finfo(torch.float64).eps
    return eigenvectors[:, keep] * eigenvalues[keep].sqrt()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² between N(mu1, sigma1) and N(mu2, sigma2): means ``[D]``, covariances ``[D, D]`` (see module doc)."""
    mu1, sigma1 = _check_gaussian("first statistics", mu1, sigma1)
    mu2, sigma2 = _check_gaussian("second statistics", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"the statistics have different feature widths: {mu1.shape[0]} and {mu2.shape[0]}")
    with _one_thread():
        cross = _root_factor(torch.from_numpy(sigma2)).T @ _root_factor(torch.from_numpy(sigma1))  # F_2ᵀ F_1
        trace_root = float(torch.linalg.svdvals(cross).sum()) if cross.numel() else 0.0  # Tr (Σ_1 Σ_2)^{1/2}
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


class KernelDistance(NamedTuple):
    """KID: the mean over subsets of the unbiased MMD² estimate, its standard deviation over subsets, and the
    subset scheme used."""

    value: float
    std: float
    subsets: int
    subset_size: int


def kernel_distance(
    features1: np.ndarray, features2: np.ndarray, *, subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> KernelDistance:
    """KID between ``features1`` ``[N1, D]`` and ``features2`` ``[N2, D]``.

    Each of ``subsets`` rounds draws m = min(N1, N2, max_subset_size) rows without replacement from each set
    (features2 first, as clean-fid) and evaluates, with k(x, y) = (xᵀy / D + 1)³,

        MMD²_u = Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m − 1)) − 2 Σ_{i,j} k(x_i, y_j) / m²
    """
    features1 = _as_features("features1", features1)
    features2 = _as_features("features2", features2)
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(f"features1 and features2 have different widths: {features1.shape[1]}, {features2.shape[1]}")
    if subsets < 1 or max_subset_size < 2:
        raise ValueError(f"need subsets >= 1 and max_subset_size >= 2; got {subsets} and {max_subset_size}")
    width = features1.shape[1]
    size = min(features1.shape[0], features2.shape[0], max_subset_size)
    random = np.random.RandomState(seed)
    estimates = np.empty(subsets)
    for index in range(subsets):
        x = features2[random.choice(features2.shape[0], size, replace=False)].astype(np.float64)
        y = features1[random.choice(features1.shape[0], size, replace=False)].astype(np.float64)
        within = (x @ x.T / width + 1) ** 3 + (y @ y.T / width + 1) ** 3
        across = (x @ y.T / width + 1) ** 3
        within_sum = within.sum() - np.trace(within)
        estimates[index] = within_sum / (size * (size - 1)) - 2 * across.sum() / size**2
    return KernelDistance(float(estimates.mean()), float(estimates.std()), subsets, size)
