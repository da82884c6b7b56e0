"""Evaluation metrics: FID and KID through clean-fid's Inception pipeline (weights from a local file), and two
offline proxies that are never called FID: sliced Wasserstein distance on Laplacian-pyramid patches
(``SWD-proxy``) and the Fréchet distance of a fixed random network's features (``RandFD-proxy``).

``python -m softdiff.fid`` is the command line on top of this package. Nothing here imports clean-fid, scipy
or matplotlib at import time.
"""

from .errors import MetricsError, MissingInceptionWeights
from .features import FeatureExtractor, SetFeatures, SWDSettings, gather_to_first_rank
from .frechet import KernelDistance, frechet_distance, gaussian_statistics, kernel_distance
from .inception import InceptionFeatures
from .random_net import RandomFeatureNet
from .statistics import (
    Score,
    Statistics,
    clean_fid_statistics,
    compare,
    load_statistics,
    plain_statistics,
    save_statistics,
    summarise,
)
from .swd import laplacian_pyramid, sliced_wasserstein

__all__ = [
    "FeatureExtractor",
    "InceptionFeatures",
    "KernelDistance",
    "MetricsError",
    "MissingInceptionWeights",
    "RandomFeatureNet",
    "SWDSettings",
    "Score",
    "SetFeatures",
    "Statistics",
    "clean_fid_statistics",
    "compare",
    "frechet_distance",
    "gather_to_first_rank",
    "gaussian_statistics",
    "kernel_distance",
    "laplacian_pyramid",
    "load_statistics",
    "plain_statistics",
    "save_statistics",
    "sliced_wasserstein",
    "summarise",
]
