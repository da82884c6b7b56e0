"""Statistics of an image set (what FID/KID and the proxies compare against), their files, and the scores.

A :class:`Statistics` holds, per kind of feature: Gaussian fits (mean, covariance) of Inception features per
clean-fid mode, with an optional set of raw features for KID; a Gaussian fit of the random network's features;
and the SWD summary (per pyramid level: normalisation and quantile blocks). It comes from

- images (:func:`summarise`), or a file written by :func:`save_statistics` (``make-stats``), which records
  what the set was (data spec, split, crop recipe, resolution, count, sha256 of the uint8 images) and what
  made each feature (weights' sha256, seeds), so a comparison with other features is refused;
- clean-fid's named statistics ``{name}_{mode}_{split}_{res}.npz`` found locally (:func:`clean_fid_statistics`),
  or any ``.npz`` holding ``mu`` and ``sigma`` (clean-fid's custom statistics).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import swd
from .errors import MetricsError
from .features import SetFeatures
from .frechet import frechet_distance, gaussian_statistics, kernel_distance

FORMAT = "softdiff-fid-stats"
VERSION = 1
CLEAN_FID_STATS_URL = "https://www.cs.cmu.edu/~clean-fid/stats/"


@dataclass
class GaussianFit:
    """mean ``[D]``, covariance ``[D, D]`` (float64), what made the features, optional raw features for KID."""

    mu: np.ndarray
    sigma: np.ndarray
    identity: dict
    kid_features: np.ndarray | None = None


@dataclass
class SWDSummary:
    levels: list[swd.LevelSummary]
    identity: dict
    images: int


@dataclass
class Statistics:
    """What a reference set offers to compare against. ``description``: what the set is (keys among kind,
    data, name, split, crop, resolution [H, W], channels, count, content_sha256, file); ``source``: where it
    came from, for messages."""

    description: dict
    source: str
    inception: dict[str, GaussianFit] = field(default_factory=dict)
    randnet: GaussianFit | None = None
    swd: SWDSummary | None = None


@dataclass
class Score:
    """One number: ``metric`` (FID, KID, SWD-proxy, RandFD-proxy), ``value`` (None when skipped, with the
    reason in ``note``), the sample count ``n`` and the details a JSON record keeps."""

    metric: str
    value: float | None
    n: int
    details: dict = field(default_factory=dict)
    note: str = ""


# --- summaries ------------------------------------------------------------------------------------------------


def _swd_summary(features: SetFeatures, normalisation: list | None, device: torch.device | str) -> list:
    """Per-level summaries of the SWD descriptors, normalised by ``normalisation`` ([(mean, std)] per level)
    or, when None, by their own statistics."""
    settings = features.swd_settings
    directions = settings.directions_for(features.channels)
    levels = []
    for index, descriptors in enumerate(features.swd_levels):
        descriptors = descriptors.to(device)
        mean, std = normalisation[index] if normalisation else swd.channel_normalisation(descriptors, features.channels)
        levels.append(swd.summarise_level(descriptors, directions, settings.blocks, mean=mean, std=std))
    return levels


def summarise(
    features: SetFeatures,
    description: dict,
    source: str,
    *,
    kid_features: int | None = None,
    device: torch.device | str = "cpu",
) -> Statistics:
    """Statistics of a set from its features. ``kid_features``: keep at most this many raw Inception feature
    rows for KID (a seeded random subset; None keeps all, 0 none). ``device``: where SWD sorts."""
    description = {**description, "resolution": [features.height, features.width], "channels": features.channels,
                   "count": features.count, "content_sha256": features.content_sha256}  # fmt: skip
    statistics = Statistics(description, source)
    for mode, rows in features.inception.items():
        mu, sigma = gaussian_statistics(rows)
        kept = rows
        if kid_features is not None and kid_features < len(rows):
            kept = rows[np.sort(np.random.default_rng(0).choice(len(rows), kid_features, replace=False))]
        statistics.inception[mode] = GaussianFit(mu, sigma, features.identities[f"inception_{mode}"],
                                                 kept if len(kept) else None)  # fmt: skip
    if features.randnet is not None:
        statistics.randnet = GaussianFit(*gaussian_statistics(features.randnet), features.identities["randnet"])
    if features.swd_levels is not None:
        statistics.swd = SWDSummary(_swd_summary(features, None, device), features.identities["swd"],
                                    len(features.swd_indices))  # fmt: skip
    return statistics


# --- files ----------------------------------------------------------------------------------------------------


def save_statistics(path: str | os.PathLike, statistics: Statistics) -> Path:
    """Write ``statistics`` as an .npz (atomically): arrays plus a JSON ``provenance`` entry."""
    from .._version import __version__

    path = Path(path)
    extractors = {f"inception_{mode}": fit.identity for mode, fit in statistics.inception.items()}
    arrays = {}
    for mode, fit in statistics.inception.items():
        arrays[f"inception_{mode}_mu"], arrays[f"inception_{mode}_sigma"] = fit.mu, fit.sigma
        if fit.kid_features is not None:
            arrays[f"inception_{mode}_kid_features"] = fit.kid_features
    if statistics.randnet is not None:
        arrays["randnet_mu"], arrays["randnet_sigma"] = statistics.randnet.mu, statistics.randnet.sigma
        extractors["randnet"] = statistics.randnet.identity
    if statistics.swd is not None:
        arrays["swd_mean"] = np.stack([level.mean for level in statistics.swd.levels])
        arrays["swd_std"] = np.stack([level.std for level in statistics.swd.levels])
        arrays["swd_quantiles"] = np.stack([level.quantiles for level in statistics.swd.levels])
        extractors["swd"] = {**statistics.swd.identity, "images": statistics.swd.images}
    provenance = {"format": FORMAT, "version": VERSION, "softdiff": __version__,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "set": statistics.description, "extractors": extractors}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        np.savez(file, provenance=np.array(json.dumps(provenance)), **arrays)
    os.replace(temporary, path)
    return path


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise MetricsError(f"statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise MetricsError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from error


def npz_kind(path: Path) -> str:
    """'softdiff' (our statistics), 'clean-fid' (mu and sigma), or 'images' (anything else) for an .npz."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile) as error:
        raise MetricsError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from error
    if "provenance" in names:
        return "softdiff"
    return "clean-fid" if {"mu", "sigma"} <= names else "images"


def _entry(arrays: dict, key: str, path: Path) -> np.ndarray:
    if key not in arrays:
        raise MetricsError(f"{path}: entry {key!r} is missing; the statistics file is incomplete or corrupt")
    return arrays[key]


def load_statistics(path: str | os.PathLike) -> Statistics:
    """Statistics from a file written by :func:`save_statistics`; errors name the file and the entry."""
    path = Path(path)
    arrays = _open_npz(path)
    try:
        provenance = json.loads(str(_entry(arrays, "provenance", path)))
    except json.JSONDecodeError as error:
        raise MetricsError(f"{path}: the provenance entry is not valid JSON ({error})") from error
    if provenance.get("format") != FORMAT or provenance.get("version") != VERSION:
        raise MetricsError(f"{path}: not a {FORMAT} version {VERSION} file (found {provenance.get('format')!r} "
                           f"version {provenance.get('version')!r})")  # fmt: skip
    if not isinstance(provenance.get("extractors"), dict) or not isinstance(provenance.get("set"), dict):
        raise MetricsError(f"{path}: the provenance entry lacks 'set' or 'extractors'; the file is corrupt")
    extractors = provenance["extractors"]
    statistics = Statistics({**provenance["set"], "file": str(path)}, str(path))
    for key, identity in extractors.items():
        if key.startswith("inception_"):
            mode = key.removeprefix("inception_")
            statistics.inception[mode] = GaussianFit(
                _entry(arrays, f"{key}_mu", path), _entry(arrays, f"{key}_sigma", path), identity,
                arrays.get(f"{key}_kid_features"))  # fmt: skip
    if "randnet" in extractors:
        statistics.randnet = GaussianFit(_entry(arrays, "randnet_mu", path), _entry(arrays, "randnet_sigma", path),
                                         extractors["randnet"])  # fmt: skip
    if "swd" in extractors:
        means, stds = _entry(arrays, "swd_mean", path), _entry(arrays, "swd_std", path)
        quantiles = _entry(arrays, "swd_quantiles", path)
        levels = [swd.LevelSummary(m, s, q) for m, s, q in zip(means, stds, quantiles, strict=True)]
        identity = dict(extractors["swd"])
        statistics.swd = SWDSummary(levels, identity, identity.pop("images"))
    return statistics


def _clean_fid_fit(mu: np.ndarray, sigma: np.ndarray, mode: str, path: Path, kid_path: Path) -> GaussianFit:
    kid = _entry(_open_npz(kid_path), "feats", kid_path) if kid_path.is_file() else None
    return GaussianFit(mu, sigma, {"name": "inception-2015-12-05.pt", "mode": mode, "file": str(path)}, kid)


CLEAN_FID_MODES = ("clean", "legacy_tensorflow", "legacy_pytorch")
_CLEAN_FID_NAME = re.compile(rf"^.+_({'|'.join(CLEAN_FID_MODES)})_.*?_?(\d+|na)$")


def plain_statistics(path: Path, mode: str) -> Statistics:
    """A clean-fid style .npz holding only ``mu`` and ``sigma`` (e.g. from ``cleanfid.fid.make_custom_stats``),
    taken as Inception statistics of ``mode``; a sibling ``*_kid.npz`` with ``feats`` adds KID.

    A name in clean-fid's pattern ``{name}_{mode}_{split}_{resolution|na}.npz`` is checked against ``mode`` and
    (through the description) the samples' resolution; any other name is marked unverified."""
    arrays = _open_npz(path)
    description = {"kind": "clean-fid file", "file": str(path), "mode": mode}
    named = _CLEAN_FID_NAME.match(path.stem.lower())
    if named is None:
        description["unverified"] = "mode and resolution (not a clean-fid file name)"
    else:
        if named.group(1) != mode:
            found = named.group(1)
            raise MetricsError(f"{path} holds statistics of mode {found} (by its name); these samples are scored "
                               f"in mode {mode} (--mode {found} compares like with like)")  # fmt: skip
        if named.group(2) != "na":
            description["resolution"] = [int(named.group(2))] * 2
    mu, sigma = _entry(arrays, "mu", path), _entry(arrays, "sigma", path)
    fit = _clean_fid_fit(mu, sigma, mode, path, path.with_name(f"{path.stem}_kid.npz"))
    return Statistics(description, str(path), {mode: fit})


def clean_fid_statistics_folder() -> Path:
    """Where clean-fid keeps (downloads) its named statistics: ``<cleanfid package>/stats``."""
    import cleanfid

    return Path(cleanfid.__file__).parent / "stats"


def clean_fid_statistics(
    name: str, *, mode: str, split: str, resolution: int, stats_dir: str | os.PathLike | None = None
) -> Statistics:
    """clean-fid's named statistics ``{name}_{mode}_{split}_{resolution}.npz`` from ``stats_dir`` or clean-fid's
    statistics folder (never downloaded); with ``..._kid.npz`` beside it, KID too."""
    file_name = f"{name}_{mode}_{split}_{'na' if split == 'custom' else resolution}.npz".lower()  # clean-fid's names
    folders = [Path(stats_dir)] if stats_dir is not None else []
    folders.append(clean_fid_statistics_folder())
    for folder in folders:
        path = folder / file_name
        if path.is_file():
            arrays = _open_npz(path)
            fit = _clean_fid_fit(_entry(arrays, "mu", path), _entry(arrays, "sigma", path), mode, path,
                                 path.with_name(f"{path.stem}_kid.npz"))  # fmt: skip
            description = {"kind": "clean-fid", "name": name, "split": split, "mode": mode,
                           "resolution": [resolution, resolution], "file": str(path)}  # fmt: skip
            return Statistics(description, str(path), {mode: fit})
    raise MetricsError(
        f"clean-fid statistics {file_name} not found in {' or '.join(str(f) for f in folders)}.\n"
        f"  Download {CLEAN_FID_STATS_URL}{file_name} (and {file_name[:-4]}_kid.npz for KID) into one of these "
        "folders (--stats-dir DIR), or give the reference as images or a make-stats file."
    )


# --- comparison -----------------------------------------------------------------------------------------------


def _require_same(what: str, ours: dict, theirs: dict, keys: tuple[str, ...], source: str) -> None:
    for key in keys:
        if key in ours and key in theirs and ours[key] != theirs[key]:
            raise MetricsError(f"{source} holds {what} made with {key}={theirs[key]!r}; these samples' use "
                               f"{ours[key]!r}, so they cannot be compared")  # fmt: skip


def check_resolution(features: SetFeatures, reference: Statistics) -> None:
    resolution = reference.description.get("resolution")
    if resolution is not None and list(resolution) != [features.height, features.width]:
        raise MetricsError(f"mismatched resolutions: the samples are {features.height}x{features.width} but "
                           f"{reference.source} describes {resolution[0]}x{resolution[1]} images")  # fmt: skip


def _inception_scores(features: SetFeatures, reference: Statistics, metrics, mode: str, kid_required: bool) -> dict:
    if mode not in reference.inception:
        found = ", ".join(reference.inception) or "none (it was made without --inception)"
        raise MetricsError(f"{reference.source} holds no Inception statistics for mode {mode} (found: {found})")
    fit = reference.inception[mode]
    identity = features.identities[f"inception_{mode}"]
    _require_same("Inception statistics", identity, fit.identity, ("weights_sha256",), reference.source)
    details = {"mode": mode, "weights": {"path": identity["path"], "sha256": identity["weights_sha256"]}}
    samples = features.inception[mode]
    scores = {}
    if "fid" in metrics:
        value = frechet_distance(*gaussian_statistics(samples), fit.mu, fit.sigma)
        scores["fid"] = Score("FID", value, features.count, details)
    if "kid" in metrics and fit.kid_features is None:
        if kid_required:
            raise MetricsError(f"{reference.source} holds no Inception features for KID")
        scores["kid"] = Score("KID", None, features.count, details, f"{reference.source} holds no KID features")
    elif "kid" in metrics:
        kid = kernel_distance(fit.kid_features, samples)  # reference first, as clean-fid's compute_kid
        kid_details = {"std": kid.std, "subsets": kid.subsets, "subset_size": kid.subset_size,
                       "reference_features": len(fit.kid_features)}  # fmt: skip
        scores["kid"] = Score("KID", kid.value, features.count, {**details, **kid_details})
    return scores


def _randfd_score(features: SetFeatures, reference: Statistics) -> Score:
    if reference.randnet is None:
        raise MetricsError(f"{reference.source} holds no random-network statistics (RandFD-proxy)")
    identity = features.identities["randnet"]
    _require_same("random-network features", identity, reference.randnet.identity,
                  ("name", "seed", "weights_sha256"), reference.source)  # fmt: skip
    value = frechet_distance(*gaussian_statistics(features.randnet), reference.randnet.mu, reference.randnet.sigma)
    return Score("RandFD-proxy", value, features.count, {"extractor": identity})


def _swd_score(features: SetFeatures, reference: Statistics, device: torch.device | str) -> Score:
    if reference.swd is None:
        raise MetricsError(f"{reference.source} holds no SWD summary (SWD-proxy)")
    channels = reference.description.get("channels", features.channels)
    if channels != features.channels:
        raise MetricsError(f"{reference.source} describes {channels}-channel images; the samples have "
                           f"{features.channels} channels")  # fmt: skip
    identity = features.identities["swd"]
    _require_same("an SWD summary", identity, reference.swd.identity,
                  ("name", "patch", "patches_per_image", "directions", "blocks", "seed", "levels",
                   "directions_sha256"), reference.source)  # fmt: skip
    normalisation = [(level.mean, level.std) for level in reference.swd.levels]
    levels = _swd_summary(features, normalisation, device)
    per_level = [swd.sliced_wasserstein(a.quantiles, b.quantiles) for a, b in
                 zip(levels, reference.swd.levels, strict=True)]  # fmt: skip
    details = {"per_level": per_level, "levels": identity["levels"], "images": len(features.swd_indices),
               "reference_images": reference.swd.images, "extractor": identity}  # fmt: skip
    return Score("SWD-proxy", float(np.mean(per_level)), features.count, details)


def compare(
    features: SetFeatures,
    reference: Statistics,
    *,
    metrics: tuple[str, ...],
    mode: str = "clean",
    kid_required: bool = True,
    device: torch.device | str = "cpu",
) -> list[Score]:
    """Scores of the samples' ``features`` against ``reference``, one per entry of ``metrics`` (fid, kid, swd,
    randfd) in that order. ``kid_required=False`` turns a reference without KID features into a skipped score
    instead of an error; ``device`` is where the SWD projections are sorted."""
    check_resolution(features, reference)
    scores = {}
    try:
        if "fid" in metrics or "kid" in metrics:
            scores.update(_inception_scores(features, reference, metrics, mode, kid_required))
        if "randfd" in metrics:
            scores["randfd"] = _randfd_score(features, reference)
        if "swd" in metrics:
            scores["swd"] = _swd_score(features, reference, device)
    except MetricsError:
        raise
    except ValueError as error:  # statistics of another width, a corrupt covariance, ...
        raise MetricsError(f"cannot compare the samples with {reference.source}: {error}") from error
    return [scores[metric] for metric in metrics]
