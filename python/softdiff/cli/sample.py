"""``python -m softdiff.sample``: draw samples (or restore images) with a trained checkpoint.

    python -m softdiff.sample --ckpt runs/demo --n 64 --steps 100 --sampler momentum --out samples/
    python -m softdiff.sample --ckpt runs/demo --n 64 --steps 20 --sampler heun --time-grid optimized --out fast/
    python -m softdiff.sample --ckpt runs/demo/checkpoints/ckpt-00001200.pt --seeds 0-49999 --out samples.npz
    python -m softdiff.sample --ckpt runs/demo --restore photo.png --t-start 0.3 --out restored/
    python -m softdiff.sample --ckpt runs/pixelate --restore blocky.png --t-start auto --out restored/
    python -m softdiff.sample --ckpt runs/demo-cond --labels 0-9 --guidance 2 --n 100 --out digits.npz

``--ckpt`` is a checkpoint file or a run folder (its newest readable checkpoint). The EMA weights are used
unless ``--weights model``. Image b is a function of its seed alone, whatever batch or rank it falls in.
Output: a folder of one PNG per seed, ``seed-000123.png``, and nothing else (what ``softdiff.fid`` and other FID
tools read), with a grid of the first 100 beside it as ``<folder>-grid.png``; or the uint8 NHWC images in the order
the seeds are listed, as a ``.npy`` array or under ``arr_0`` of a ``.npz`` (with ``--labels`` the label of each
image under ``labels``: a ``.npy`` cannot hold them). Under ``torchrun`` the
seeds are split over the ranks and gathered on rank 0 through the process group (write ``--num-samples`` for
``--n`` there: torchrun reads ``--n`` as one of its own options).

Class-conditional checkpoints (``--cond class``): ``--labels 0-9`` (or ``3``, ``1,7``) gives sample k the
k-th listed label, cycling through the list (``-1``: the unconditional branch ∅; without ``--labels``, every
class in turn: 0, 1, ..., 9, 0, ... for the digits, and ∅ for ``--restore``); ``--guidance W`` mixes
x̂_0 = x̂_0(∅) + W (x̂_0(y) − x̂_0(∅)) at every network evaluation (1, the default: plain conditional). The grid
then has a column per listed label.

Restoration (``--restore IMAGE``), for every operator (deblurring, super-resolution from a pixelated image,
colourisation from a grey one, inpainting from a masked one): the image, centre-cropped and resized to the model's
resolution, is taken as x_T at ``--t-start`` T (``--add-noise`` first adds σ_T noise, for a clean but corrupted
input) and the sampler runs from T to 0. ``--t-start auto`` estimates the image's corruption level and noise by
maximum likelihood under the data spectrum stored in the checkpoint, prints them, and brings the image to the
process's state at the first T that is at least that corrupted (:mod:`softdiff.restoration`). Writes
``restore-seed-N.png``: input | restored.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from softdiff_kernels import seeded_normal

from ..compute import DEVICE_HELP, THREADS_HELP, command_device
from ..conditioning import NO_LABEL
from ..images import save_image_grid, to_model_range, to_uint8
from ..loading import cycled, labels_to_draw, load_model, parse_seeds
from ..restoration import estimate_corruption, start_at_estimate
from ..samplers import SAMPLERS, sample
from ..time_grids import GRIDS
from ..wording import plural

COMMAND = "softdiff.sample"
RESTORE_NOISE_STREAM = 2**32 - 1  # --add-noise's η; the sampler uses streams 0 (prior) and 1..steps
GRID_IMAGES = 100  # the grid beside a folder of samples: 10 x 10 (a column per digit when the labels 0-9 cycle)
ARRAYS = (".npz", ".npy")


def output_kind(out: str) -> str:
    """What ``--out`` names: ``.npz`` or ``.npy`` (an array file), ``folder``, or another suffix (refused). A name
    ending in a slash, or an existing folder, is a folder whatever dots it holds."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        return "folder"
    return path.suffix


def grid_path(folder: Path) -> Path:
    """Where a folder output's grid goes: beside the folder, as ``<folder>-grid.png``, so that the folder holds only
    the samples."""
    if folder.name in ("", ".", ".."):  # --out . or ..: name the grid after the folder they stand for
        folder = folder.resolve()
    return folder.with_name(f"{folder.name}-grid.png")


def load_restore_image(path: Path, resolution: int, channels: int = 3) -> torch.Tensor:
    """The image at ``path``, centre-cropped and resized to the model's side (grey for a one-channel model):
    ``[1, channels, resolution, resolution]`` in [-1, 1]."""
    from ..data.errors import DataError
    from ..data.pictures import decode_image, square_resize

    if not path.is_file():
        raise SystemExit(f"{COMMAND}: --restore {path}: image not found")
    try:
        image = square_resize(decode_image(path.read_bytes(), str(path)), resolution)
    except DataError as error:
        raise SystemExit(f"{COMMAND}: --restore: {error}") from error
    if channels == 1:
        image = image.convert("L")
    array = torch.from_numpy(np.array(image, dtype=np.uint8)).reshape(resolution, resolution, -1)  # writable copy
    return to_model_range(array.permute(2, 0, 1)[None])


def t_start_value(text: str) -> float | str:
    """``--t-start``: a float, or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float in (0, 1] or auto; got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m softdiff.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=None,
                        help="number of samples, seeds 0..n-1 unless --seeds (default 64; with --restore 8, each a "
                             "different draw of the restoration); under torchrun write --num-samples (torchrun "
                             "takes --n for its own --nnodes/--nproc-per-node)")  # fmt: skip
    parser.add_argument("--seeds", default=None, help="seeds, e.g. 0-63 or 1,5,9 (inclusive ranges)")
    parser.add_argument("--steps", type=int, default=100, help="network evaluations per sample (default 100)")
    parser.add_argument("--sampler", default="momentum", choices=SAMPLERS, help="sampler (default momentum)")
    parser.add_argument("--time-grid", default="uniform", choices=GRIDS,
                        help="time grid (default uniform); optimized: fitted to --sampler and --steps on the "
                             "checkpoint's data spectrum (seconds to a minute, once per process)")  # fmt: skip
    parser.add_argument("--out", required=True,
                        help="output folder (the grid goes beside it, as <folder>-grid.png), or a .npz or .npy file "
                             "of uint8 NHWC images")  # fmt: skip
    parser.add_argument("--batch", type=int, default=64, help="samples per batch (default 64)")
    parser.add_argument("--weights", default="ema", choices=("ema", "model"), help="EMA (default) or raw weights")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    parser.add_argument("--labels", default=None,
                        help="class labels of a --cond class checkpoint, e.g. 0-9 or 3 or 1,7, cycled over the "
                             "samples (-1: unconditional)")  # fmt: skip
    parser.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance weight W with --labels (default 1: no guidance)",
    )
    parser.add_argument("--restore", default=None,
                        help="an image to restore (deblur, depixelate, colourise, inpaint: as the checkpoint's "
                             "operator corrupts)")  # fmt: skip
    parser.add_argument("--t-start", type=t_start_value, default=None,
                        help="the corruption of --restore's image: t in (0, 1], or auto (estimated from "
                             "it)")  # fmt: skip
    parser.add_argument("--add-noise", action="store_true", help="add σ(t_start) noise to --restore's image first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    kind = output_kind(args.out)
    problems = [
        (args.n is not None and args.n < 1, f"--n must be >= 1; got {args.n}"),
        (args.steps < 1 or args.batch < 1, "--steps and --batch must be >= 1"),
        (args.restore is not None and args.t_start is None,
         "--restore needs --t-start (the corruption level of the image)"),
        (args.restore is None and (args.t_start is not None or args.add_noise),
         "--t-start and --add-noise apply to --restore's image; sampling from noise starts at t = 1"),
        (kind not in ("folder", *ARRAYS),
         f"--out must be a folder, .npz or .npy; got {args.out} (end a folder's name with / when it has a dot)"),
        (args.restore is not None and kind in ARRAYS,
         f"--restore writes an input | restored PNG per seed: give --out a folder, not a {kind}"),
        (args.labels is not None and kind == ".npy",
         "--out .npy holds the images alone: use a .npz to keep each image's --labels with it (under labels)"),
        (args.t_start not in (None, "auto") and not 0 < args.t_start <= 1,
         f"--t-start must lie in (0, 1] or be auto; got {args.t_start}"),
        (args.t_start == "auto" and args.add_noise, "--t-start auto adds the noise it needs: drop --add-noise"),
        (args.guidance < 0 or not np.isfinite(args.guidance), f"--guidance must be >= 0; got {args.guidance}"),
    ]  # fmt: skip
    for bad, message in problems:
        if bad:
            raise SystemExit(f"{COMMAND}: {message}")
    return args


def gather_in_listed_order(items: torch.Tensor, rank: int, world: int) -> torch.Tensor | None:
    """Rank r holds the items at positions r, r + world, r + 2·world, ... of the seed list: on rank 0, all of them
    in list order (None on the other ranks). Through the process group, so no shared file system is needed."""
    if world == 1:
        return items
    parts = [None] * world if rank == 0 else None
    dist.gather_object(items, parts, dst=0)
    if rank != 0:
        return None
    merged = torch.empty(sum(len(p) for p in parts), *items.shape[1:], dtype=items.dtype)
    for r, part in enumerate(parts):
        merged[r::world] = part
    return merged


def save_array(out: Path, images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """uint8 NHWC ``images`` as ``out``: a .npy holds the array alone, a .npz it under ``arr_0`` (what FID tools
    read) and ``labels`` (when given) under ``labels``."""
    if out.suffix == ".npy":
        np.save(out, images.numpy())
    else:
        np.savez(out, arr_0=images.numpy(), **({} if labels is None else {"labels": labels.numpy()}))


def main(argv=None) -> int:
    args = parse_args(argv)
    device = command_device(args.device, args.threads, COMMAND)  # --threads applied and both stated first
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    # Every input is read and checked before anything is written: a bad one leaves no empty output behind.
    default_count = 8 if args.restore else 64
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.n if args.n is not None else default_count))
    if args.n is not None and args.seeds and args.n != len(seeds):
        raise SystemExit(f"{COMMAND}: --n {args.n} but --seeds lists {len(seeds)} seeds")
    denoiser, process, config = load_model(args.ckpt, weights=args.weights, device=device, command=COMMAND)
    shape = (denoiser.net.config.image_channels, config.resolution, config.resolution)
    restore = load_restore_image(Path(args.restore), config.resolution, shape[0]) if args.restore else None
    label_list = labels_to_draw(args.labels, denoiser.net.config.label_classes, args.guidance)
    if restore is not None and args.labels is None and label_list is not None:
        label_list = [NO_LABEL]  # the class of an image to restore is unknown: the unconditional branch ∅
    labels = cycled(label_list, len(seeds))
    t_start, estimate = args.t_start, None
    if restore is not None and t_start == "auto":
        try:
            estimate = estimate_corruption(process, restore)
        except (TypeError, ValueError) as error:
            raise SystemExit(f"{COMMAND}: --t-start auto: {error}") from error
        t_start = estimate.t_start
        if rank == 0:
            print(f"{COMMAND}: --t-start auto: {estimate.describe(process.operator.level_unit)}", file=sys.stderr)
    out = Path(args.out)
    to_array = output_kind(args.out) in ARRAYS
    folder = out.parent if to_array else out
    folder.mkdir(parents=True, exist_ok=True)
    mine = seeds[rank::world]
    my_labels = None if labels is None else labels[rank::world]
    results = []
    for start in range(0, len(mine), args.batch):
        batch_seeds = mine[start : start + args.batch]
        x_start = None
        if restore is not None:  # each image's noise from its own seed, like everything else it depends on
            eta = seeded_normal(torch.tensor(batch_seeds, device=device), shape, RESTORE_NOISE_STREAM)
            x_start = restore.expand(len(batch_seeds), -1, -1, -1).to(device)
            if estimate is not None:
                x_start = start_at_estimate(process, restore.to(device), estimate, eta)
            elif args.add_noise:
                t = torch.full((len(batch_seeds),), t_start, device=device)
                x_start = x_start + process.sigma(t).view(-1, 1, 1, 1) * eta
        images = sample(denoiser, process, (len(batch_seeds), *shape), steps=args.steps, sampler=args.sampler,
                        grid=args.time_grid, seeds=batch_seeds, x_start=x_start, t_start=t_start or 1.0, device=device,
                        labels=None if my_labels is None else my_labels[start : start + args.batch].to(device),
                        guidance=args.guidance, progress=not args.no_progress and rank == 0)  # fmt: skip
        images = images.clamp(-1, 1).cpu()
        for seed, image in zip(batch_seeds, images, strict=True):
            if restore is not None:
                save_image_grid(torch.stack([restore[0], image]), folder / f"restore-seed-{seed:06d}.png", scale=2)
            elif not to_array:
                save_image_grid(image[None], folder / f"seed-{seed:06d}.png", padding=0)
        results.append(images)
    images = torch.cat(results) if results else torch.empty(0, *shape)
    if to_array:
        everything = gather_in_listed_order(to_uint8(images), rank, world)
        if rank == 0:
            save_array(out, everything, labels)
            print(f"{COMMAND}: wrote {plural(len(seeds), 'image')} to {out}", file=sys.stderr)
    elif restore is None:
        first = gather_in_listed_order(images[: -(-GRID_IMAGES // world)], rank, world)  # the first ones listed
        if rank == 0:
            columns = len(label_list) if label_list is not None and 1 < len(label_list) <= 16 else None
            grid = grid_path(folder)
            save_image_grid(first[:GRID_IMAGES], grid, scale=2, columns=columns)
            print(f"{COMMAND}: wrote {plural(len(seeds), 'image')} to {folder} and the grid to {grid}",
                  file=sys.stderr)  # fmt: skip
    elif rank == 0:
        print(f"{COMMAND}: wrote {plural(len(seeds), 'restoration')} to {folder}", file=sys.stderr)
    if world > 1:
        dist.barrier()  # rank 0 may still be writing: a peer that exits first can abort its gloo connection
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
