"""``python -m softdiff.fid``: FID and KID through clean-fid, offline-first, and two labelled proxies.

    python -m softdiff.fid samples.npz --ref cifar10 --inception PATH/inception-2015-12-05.pt
    python -m softdiff.fid samples/ --ref celeba64.npz                   # weights from $SOFTDIFF_INCEPTION
    python -m softdiff.fid --ckpt runs/cifar10 --n 50000 --steps 300 --ref cifar10
    torchrun --nproc_per_node 8 -m softdiff.fid --ckpt runs/cifar10 --ref cifar10
    python -m softdiff.fid make-stats --data celeba:/data/img_align_celeba --out celeba64.npz --size 64 --crop 140
    python -m softdiff.fid samples.npz --ref shapes --metrics swd,randfd    # proxies: no weights, NOT FID
    python -m softdiff.fid digits.npz --metrics digits                    # MNIST digit metric, NOT FID
    python -m softdiff.fid --ckpt runs/demo --n 1000 --steps 50 --metrics digits --labels 0-9 --guidance 2

Samples: a folder of images, an .npz/.npy of uint8 NHWC images, a data spec (``shapes:N``, ``cifar10:PATH``, ...)
or, with ``--ckpt``, images drawn from a checkpoint batch by batch and fed straight to the feature network
(never written to disk; 50 000 by default; under torchrun every rank draws its share of the seeds and rank 0
gathers the features).

Reference (``--ref``): clean-fid's named statistics (``cifar10``, ``ffhq``, ...: the file
``{name}_{mode}_{split}_{res}.npz`` is looked up in ``--stats-dir`` and in clean-fid's statistics folder, never
downloaded), a statistics file written by ``make-stats`` (which records the data set, split, crop recipe,
resolution, count and a content hash; CelebA-64 has no official clean-fid statistics), a clean-fid ``mu``/``sigma``
.npz, or images (folder, array, data spec).

Metrics (``--metrics``, default fid,kid): ``fid`` and ``kid`` need the Inception weights file
``inception-2015-12-05.pt`` (``--inception PATH`` or ``SOFTDIFF_INCEPTION``; modes ``clean`` and
``legacy_tensorflow`` as clean-fid); ``swd`` (sliced Wasserstein distance on Laplacian-pyramid patches) and
``randfd`` (Fréchet distance of a fixed random network's features) need nothing and are printed as
``SWD-proxy (not FID)`` and ``RandFD-proxy (not FID)``. The sample count is printed beside every score;
``--json FILE`` writes a machine-readable record.

``--metrics digits`` (on its own; ``--ref`` is then the MNIST spec its classifier is trained on, default
``mnist``) scores one-channel digits with :mod:`softdiff.metrics.digits`: the confident share, the class
balance and a Fréchet distance in the digit classifier's features with its floor, printed as the *digit metric
(not FID)*. The labels the samples were asked to be (an .npz's ``labels``, or in generator mode ``--labels``, by
default every class in turn for a class-conditional checkpoint) add the share classified as asked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..compute import DEVICE_HELP, THREADS_HELP, command_device
from ..data import DataError
from ..metrics import (
    FeatureExtractor,
    InceptionFeatures,
    MetricsError,
    RandomFeatureNet,
    Statistics,
    SWDSettings,
    compare,
    gather_to_first_rank,
    save_statistics,
    summarise,
)
from ..metrics.inception import MODES
from ..metrics.sources import ImageSource, open_images, open_reference
from ..samplers import SAMPLERS
from ..time_grids import GRIDS
from ..wording import plural

COMMAND = "softdiff.fid"
METRICS = ("fid", "kid", "swd", "randfd", "digits")
DEFAULT_GENERATED = 50_000


# --- feature networks -----------------------------------------------------------------------------------------


def feature_networks(metrics, *, inception: str | None, modes, swd: SWDSettings | None, device) -> dict:
    """The feature networks ``metrics`` need, as :class:`FeatureExtractor` arguments (Inception per mode for
    fid/kid: raises :class:`MissingInceptionWeights`, with the download instructions, when the file is absent;
    ``swd``: the SWD settings, or None to fill in later)."""
    wants_inception = "fid" in metrics or "kid" in metrics
    inception_networks = [InceptionFeatures(inception, mode=m, device=device) for m in modes] if wants_inception else []
    return {
        "inception": inception_networks,
        "randnet": RandomFeatureNet() if "randfd" in metrics else None,
        "swd_settings": swd if "swd" in metrics else None,
        "device": device,
    }


def swd_settings_for(reference, max_images: int) -> SWDSettings:
    """SWD settings matching a reference summary (a statistics file), else the defaults."""
    if isinstance(reference, Statistics) and reference.swd is not None:
        identity = reference.swd.identity
        return SWDSettings(patches_per_image=identity["patches_per_image"], max_images=max_images,
                           directions=identity["directions"], blocks=identity["blocks"],
                           seed=identity["seed"])  # fmt: skip
    return SWDSettings(max_images=max_images)


def extract(source: ImageSource, extractor: FeatureExtractor, batch: int, progress: bool):
    from tqdm import tqdm

    batches = source.batches(batch)
    if progress:
        batches = tqdm(batches, total=-(-source.count // batch), desc=f"features {source.label}", file=sys.stderr)
    for indices, images in batches:
        extractor.add(indices, images, source=source.label)
    return extractor.result()


# --- generator mode -------------------------------------------------------------------------------------------


def generated_features(args, extractor: FeatureExtractor, model, seeds: list[int], rank: int, world: int, device):
    """Features of the images of ``seeds`` drawn from the checkpoint: this rank's share (positions
    rank, rank + world, ...), gathered on rank 0 (None on the other ranks)."""
    from tqdm import tqdm

    from ..images import to_uint8
    from ..loading import cycled, labels_to_draw
    from ..samplers import sample

    denoiser, process, config = model
    shape = (denoiser.net.config.image_channels, config.resolution, config.resolution)
    labels = cycled(labels_to_draw(args.labels, denoiser.net.config.label_classes, args.guidance), len(seeds))
    mine = np.arange(len(seeds))[rank::world]
    starts = range(0, len(mine), args.batch)
    if rank == 0 and not args.no_progress:
        starts = tqdm(starts, desc=f"sampling and features ({plural(world, 'rank')})", file=sys.stderr)
    for start in starts:
        positions = mine[start : start + args.batch]
        images = sample(denoiser, process, (len(positions), *shape), steps=args.steps, sampler=args.sampler,
                        grid=args.time_grid, seeds=[seeds[p] for p in positions], device=device, guidance=args.guidance,
                        labels=None if labels is None else labels[positions].to(device))  # fmt: skip
        extractor.add(positions, to_uint8(images.clamp(-1, 1)).numpy(), source=f"samples of {args.ckpt}")
    features = extractor.result()
    if world == 1:
        return features
    return gather_to_first_rank(features, device if device.type == "cuda" else torch.device("cpu"))


# --- output ---------------------------------------------------------------------------------------------------


def reference_label(reference: Statistics) -> tuple[str, int | None]:
    """(what the reference is, its image count when known) for the printed line."""
    description = reference.description
    if description.get("kind") == "clean-fid":
        return f"{description['name']} {description['split']}", description.get("count")
    if description.get("kind") == "clean-fid file" or "data" not in description:
        unverified = f"; {description['unverified']} unverified" if "unverified" in description else ""
        return Path(reference.source).name + unverified, description.get("count")
    if "file" not in description:  # computed from images
        return reference.source, description.get("count")
    split = f" {description['split']}" if description.get("split") not in (None, "all") else ""
    return f"{description['data']}{split} [{Path(description['file']).name}]", description.get("count")


def format_score(score, label: str, count: int | None) -> str:
    versus = f"vs {label}"
    if score.metric in ("FID", "KID"):
        versus += f" {score.details['mode']}"
    versus += f", {count}" if count is not None else ""
    if score.value is None:
        return f"{score.metric} skipped: {score.note}"
    if score.metric == "FID":
        return f"FID {score.value:.2f} (n={score.n} samples {versus})"
    if score.metric == "KID":
        d = score.details
        return (f"KID {score.value:.5f} ± {d['std']:.5f} (n={score.n} samples {versus}; {d['subsets']} subsets "
                f"of {d['subset_size']})")  # fmt: skip
    if score.metric == "SWD-proxy":
        d = score.details
        levels = ", ".join(f"{h}x{w} {value:.2f}" for (h, w), value in zip(d["levels"], d["per_level"], strict=True))
        return (f"SWD-proxy (not FID) {score.value:.2f} ×1e-3 (levels {levels}; n={score.n} samples {versus}; "
                f"patches of the first {d['images']} vs {d['reference_images']} images)")  # fmt: skip
    return f"RandFD-proxy (not FID) {score.value:.4g} (n={score.n} samples {versus})"


def write_json(path: str, scores, samples: dict, reference: Statistics, argv) -> None:
    description = reference.description
    label, count = reference_label(reference)
    record = {
        "command": "python -m softdiff.fid " + " ".join(argv),
        "samples": samples,
        "reference": {**description, "label": label, "count": count},
        "results": [
            {"metric": s.metric, "value": s.value, "n": s.n, "reference": label, "reference_count": count}
            | ({"note": s.note} if s.note else {})
            | s.details
            for s in scores
        ],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2, default=float) + "\n")


# --- commands -------------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> tuple[str, ...]:
    metrics = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise MetricsError(f"--metrics takes a comma list of {', '.join(METRICS)}; got {text!r}")
    return metrics


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inception", default=None, help="inception-2015-12-05.pt (default $SOFTDIFF_INCEPTION)")
    parser.add_argument("--split", default=None, help="split of cifar10 specs and clean-fid names (default train)")
    parser.add_argument(
        "--swd-images",
        type=int,
        default=SWDSettings.max_images,
        help=f"images used by the SWD proxy (the first ones; default {SWDSettings.max_images})",
    )
    parser.add_argument("--batch", type=int, default=250, help="images per batch (default 250)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")  # fmt: skip


def score_command(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m softdiff.fid [score]", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("samples", nargs="?", help="folder, .npz/.npy (uint8 NHWC) or data spec; or use --ckpt")
    parser.add_argument(
        "--ref",
        default=None,
        help="clean-fid name (cifar10), make-stats file, mu/sigma .npz or "
        "images; with --metrics digits an MNIST spec (default mnist)",
    )
    parser.add_argument(
        "--metrics", default=None, help="comma list of fid, kid, swd, randfd (default fid,kid), or digits alone"
    )
    parser.add_argument("--mode", default="clean", choices=MODES, help="clean-fid mode (default clean)")
    parser.add_argument("--stats-dir", default=None, help="folder holding clean-fid statistics files")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=None,
                        help=f"samples to score (default: all; {DEFAULT_GENERATED} with --ckpt); under torchrun "
                             "write --num-samples (torchrun takes --n for one of its own options)")  # fmt: skip
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--ckpt", default=None, help="generator mode: checkpoint file or run folder")
    parser.add_argument("--seeds", default=None, help="generator seeds, e.g. 0-49999 (default 0..n-1)")
    parser.add_argument("--steps", type=int, default=100, help="network evaluations per sample (default 100)")
    parser.add_argument("--sampler", default="momentum", choices=SAMPLERS, help="sampler (default momentum)")
    parser.add_argument(
        "--time-grid",
        default="uniform",
        choices=GRIDS,
        help="time grid of the sampler (default uniform; see python -m softdiff.sample --help)",
    )
    parser.add_argument("--weights", default="ema", choices=("ema", "model"), help="EMA (default) or raw weights")
    parser.add_argument(
        "--labels",
        default=None,
        help="generator mode, class-conditional checkpoint: labels to cycle over the seeds, e.g. 0-9 (default: "
        "every class in turn; -1: unconditional)",
    )
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance W with --labels")
    common_arguments(parser)
    args = parser.parse_args(argv)
    metrics = parse_metrics(args.metrics or "fid,kid")
    if args.samples is None and args.ckpt is None:
        raise MetricsError("no samples given: pass a folder, .npz/.npy or data spec of samples, or --ckpt to draw them")
    if args.samples is not None and args.ckpt is not None:
        raise MetricsError("give the samples (a folder, an .npz/.npy or a data spec) or --ckpt, not both")
    if args.n is not None and args.n < 2:
        raise MetricsError(f"--n must be at least 2; got {args.n}")
    if "digits" in metrics and metrics != ("digits",):
        raise MetricsError("--metrics digits runs on its own (its reference is MNIST, not --ref statistics); "
                           "score the other metrics in a second command")  # fmt: skip
    device = command_device(args.device, args.threads, COMMAND)  # --threads applied and both stated first
    if "digits" in metrics:
        return digits_command(args, argv, device)
    if args.ref is None:
        raise MetricsError("--ref is required (clean-fid name, make-stats file, mu/sigma .npz or images)")
    if args.ckpt is None and (args.labels is not None or args.guidance != 1):
        raise MetricsError("--labels and --guidance draw samples: they need --ckpt")

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1 and args.ckpt is None:
        raise MetricsError("torchrun is for generator mode (--ckpt); score files with a single process")
    if world > 1:  # rank 0 reads the reference while the others wait to gather: allow it an hour, not NCCL's 10 min
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    try:
        return _score(args, argv, metrics, world, rank, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _score(args, argv, metrics, world: int, rank: int, device: torch.device) -> int:
    networks = feature_networks(metrics, inception=args.inception, modes=[args.mode], swd=None, device=device)
    model = source = None
    if args.ckpt is not None:
        from ..loading import load_model, parse_seeds

        seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.n or DEFAULT_GENERATED))
        if args.n is not None and args.seeds and args.n != len(seeds):
            raise MetricsError(f"--n {args.n} but --seeds lists {len(seeds)} seeds")
        if len(seeds) < max(2, world):
            raise MetricsError(f"{len(seeds)} seeds are too few for {world} rank(s) (at least 2 and one per rank)")
        model = load_model(args.ckpt, weights=args.weights, device=device, command=COMMAND)
        height = model[2].resolution
        samples_description = {"kind": "generator", "ckpt": args.ckpt, "weights": args.weights, "steps": args.steps,
                               "sampler": args.sampler, "time_grid": args.time_grid,
                               "seeds": args.seeds or f"0-{len(seeds) - 1}",
                               "count": len(seeds)}  # fmt: skip
    else:
        source = open_images(args.samples, split=None, size=None, limit=args.n)
        height = source.height
        samples_description = {**source.description, "count": source.count}
    # Rank 0 alone reads the reference (a CelebA folder is 2.5 GB) and tells the others its SWD settings, or its
    # error: every rank stops on a bad reference before any sampling.
    reference, shared = None, [None, None]
    if rank == 0:
        try:
            reference = open_reference(args.ref, mode=args.mode, split=args.split, resolution=height,
                                       stats_dir=args.stats_dir)  # fmt: skip
            shared[1] = swd_settings_for(reference, args.swd_images)  # the reference's when it has an SWD summary
        except (MetricsError, DataError, FileNotFoundError) as error:
            shared[0] = str(error)
            if world == 1:
                raise
    if world > 1:
        dist.broadcast_object_list(shared, src=0)
    if shared[0] is not None:
        raise MetricsError(shared[0])
    if "swd" in metrics:
        networks["swd_settings"] = shared[1]
    reference_statistics = reference
    if isinstance(reference, ImageSource):  # rank 0, while the other ranks sample
        reference_features = extract(reference, FeatureExtractor(**networks), args.batch, not args.no_progress)
        reference_statistics = summarise(reference_features, reference.description, reference.label, device=device)
    if model is not None:
        features = generated_features(args, FeatureExtractor(**networks), model, seeds, rank, world, device)
        if features is None:
            return 0
    else:
        features = extract(source, FeatureExtractor(**networks), args.batch, not args.no_progress)
        samples_description["content_sha256"] = features.content_sha256
    scores = compare(features, reference_statistics, metrics=metrics, mode=args.mode, device=device,
                     kid_required=args.metrics is not None)  # fmt: skip
    label, count = reference_label(reference_statistics)
    for score in scores:
        print(format_score(score, label, count), flush=True)
    if args.json:
        write_json(args.json, scores, samples_description, reference_statistics, argv)
    return 0


def digits_command(args, argv, device: torch.device) -> int:
    """``--metrics digits``: the digit metric of samples (a file, folder or spec) or of a checkpoint's draws."""
    from ..images import to_uint8
    from ..metrics.digits import digit_reference, digit_scores

    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise MetricsError("--metrics digits runs in a single process (a few thousand 32x32 digits)")
    reference = digit_reference(args.ref or "mnist", progress=lambda line: print(line, file=sys.stderr))
    labels = None
    if args.ckpt is not None:
        from ..loading import cycled, labels_to_draw, load_model, parse_seeds
        from ..samplers import sample

        seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.n or 1000))
        if len(seeds) < 2:
            raise MetricsError(f"the digit metric needs at least 2 samples; --seeds lists {len(seeds)}")
        denoiser, process, config = load_model(args.ckpt, weights=args.weights, device=device, command=COMMAND)
        labels = cycled(labels_to_draw(args.labels, denoiser.net.config.label_classes, args.guidance), len(seeds))
        shape = (denoiser.net.config.image_channels, config.resolution, config.resolution)
        parts = []
        for start in range(0, len(seeds), args.batch):
            chunk = seeds[start : start + args.batch]
            part_labels = None if labels is None else labels[start : start + args.batch].to(device)
            images = sample(denoiser, process, (len(chunk), *shape), steps=args.steps, sampler=args.sampler,
                            grid=args.time_grid, seeds=chunk, device=device, labels=part_labels,
                            guidance=args.guidance)  # fmt: skip
            parts.append(to_uint8(images.clamp(-1, 1)).cpu())  # quantised as a saved sample file is
        images = torch.cat(parts).permute(0, 3, 1, 2)  # NHWC -> [N, C, H, W], as the file branch below
        samples_description = {"kind": "generator", "ckpt": args.ckpt, "weights": args.weights, "steps": args.steps,
                               "sampler": args.sampler, "time_grid": args.time_grid,
                               "seeds": args.seeds or f"0-{len(seeds) - 1}",
                               "labels": args.labels, "guidance": args.guidance}  # fmt: skip
    else:
        if args.labels is not None or args.guidance != 1:
            raise MetricsError("--labels and --guidance draw samples: they need --ckpt")
        source = open_images(args.samples, split=None, size=None, limit=args.n)
        images = torch.from_numpy(np.concatenate([batch for _, batch in source.batches(args.batch)]))
        images = images.permute(0, 3, 1, 2)
        if images.shape[1] == 3:  # grey PNGs come back as RGB; a colour sample set is not digits
            if not bool((images == images[:, :1]).all()):
                raise MetricsError(f"{args.samples}: colour images; the digit metric takes grey digits")
            images = images[:, :1]
        labels = _sample_labels(Path(args.samples), len(images))
        samples_description = {**source.description}
    scores = digit_scores(images, reference, labels=labels)
    print(scores.line(), flush=True)
    if args.json:
        record = {"command": "python -m softdiff.fid " + " ".join(argv), "samples": samples_description,
                  "reference": args.ref or "mnist", "results": [scores.to_dict()]}  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2, default=float) + "\n")
    return 0


def _sample_labels(path: Path, count: int) -> torch.Tensor | None:
    """The ``labels`` array of a samples .npz (``softdiff.sample --labels``), checked against the image count."""
    if path.suffix != ".npz" or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as loaded:
        if "labels" not in loaded.files:
            return None
        labels = loaded["labels"]
    if labels.shape[:1] != (count,) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise MetricsError(f"{path}: labels {labels.dtype} {labels.shape} do not match its {count} images")
    return torch.from_numpy(labels.astype(np.int64))


def make_stats_command(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m softdiff.fid make-stats",
        description="Reference statistics of a data set, with its provenance: Inception (when --inception is given; "
        "per --mode), RandFD-proxy and SWD-proxy.",
    )
    parser.add_argument("--data", required=True, help="data spec (celeba:PATH, cifar10:PATH, ...), folder or array")
    parser.add_argument("--out", required=True, help="the statistics file to write (.npz)")
    parser.add_argument("--size", type=int, default=None, help="resize to size x size (data specs; celeba: 64)")
    parser.add_argument("--crop", type=int, default=None, help="CelebA centre crop: 140 (default) or 128")
    parser.add_argument("--mode", default="clean", help="clean-fid modes, comma list of clean, legacy_tensorflow")
    parser.add_argument("--kid-features", type=int, default=10_000,
                        help="Inception feature rows kept for KID (a seeded random subset; default 10000)")  # fmt: skip
    common_arguments(parser)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise MetricsError(f"--mode takes a comma list of {', '.join(MODES)}; got {args.mode!r}")
    data = args.data
    if args.crop is not None:
        if not data.startswith("celeba:"):
            raise MetricsError(f"--crop applies to celeba:PATH only; got --data {data}")
        if ":crop=" in data and not data.endswith(f":crop={args.crop}"):
            raise MetricsError(f"--crop {args.crop} contradicts --data {data}")
        data = data if ":crop=" in data else f"{data}:crop={args.crop}"
    device = command_device(args.device, args.threads, COMMAND)
    metrics = ("fid", "swd", "randfd") if args.inception or os.environ.get("SOFTDIFF_INCEPTION") else ("swd", "randfd")
    networks = feature_networks(metrics, inception=args.inception, modes=modes,
                                swd=SWDSettings(max_images=args.swd_images), device=device)  # fmt: skip
    source = open_images(data, split=args.split, size=args.size, limit=None)
    features = extract(source, FeatureExtractor(**networks), args.batch, not args.no_progress)
    statistics = summarise(features, source.description, source.label, kid_features=args.kid_features, device=device)
    path = save_statistics(args.out, statistics)
    kinds = [f"Inception {mode}" for mode in statistics.inception] + ["RandFD-proxy", "SWD-proxy"]
    print(f"wrote {path}: {plural(features.count, 'image')} {features.height}x{features.width} of {data} "
          f"({', '.join(kinds)}; sha256 {features.content_sha256[:16]}...)")  # fmt: skip
    if not statistics.inception:
        print("  no Inception statistics (no --inception): this file serves the proxies only, not FID/KID")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = make_stats_command if argv[:1] == ["make-stats"] else score_command
    if argv[:1] in (["make-stats"], ["score"]):
        argv = argv[1:]
    try:
        return command(argv)
    except (MetricsError, DataError, FileNotFoundError) as error:
        print(f"softdiff.fid: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
