"""``python -m softdiff.schedule``: design the corruption levels of a data set (DESIGN §1.5, the paper's
Wasserstein schedule) and write them as a schedule file that ``python -m softdiff.train --schedule-file`` reads.

    python -m softdiff.schedule --data shapes:4096 --keep 32 --out schedule.json --plot schedule.png

Writes OUT (JSON: ``levels`` increasing from 0 at ``t`` = k / (keep − 1), operator, estimator, method, ε, the W2
between neighbours of the designed and of the default sin² schedule, the data spec and its SHA-256, the
command) and, with ``--plot``, a PNG of level(t) and of the W2 between neighbours for both schedules.
Not to be confused with :mod:`softdiff.schedules` (the schedule classes).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from ..compute import DEVICE_HELP, THREADS_HELP, command_device
from ..data import DataError, load_images
from ..operators import OPERATOR_NAMES, operator_from_name
from ..schedule_design import ESTIMATORS, METHODS, DesignedSchedule, design_schedule


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m softdiff.schedule", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="data spec: mnist, shapes[:N], cifar10:PATH, celeba:PATH, "
                        "folder:PATH (centre-cropped and resized to --size), npz:PATH, npy:PATH")  # fmt: skip
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the data set's)")
    parser.add_argument("--out", required=True, help="schedule JSON to write")
    parser.add_argument("--plot", default=None, help="also write a PNG of the schedule (needs matplotlib)")
    parser.add_argument("--keep", type=int, default=32, help="levels in the schedule, 0 and the maximum included")
    parser.add_argument("--candidates", type=int, default=256, help="candidate levels from 0 to the maximum")
    parser.add_argument("--operator", default="dct_blur",
                        help=f"corruption: {'|'.join(OPERATOR_NAMES)}, or commuting ones joined by + "
                             "(dct_blur+desaturate: levels are then the share s of each one's largest "
                             "level)")  # fmt: skip
    parser.add_argument("--estimator", default="coupled", choices=ESTIMATORS, help="W2 estimator")
    parser.add_argument("--method", default="shortest_path", choices=METHODS, help="level selection")
    parser.add_argument("--level-max", type=float, default=None,
                        help="largest level (default 0.36 x side pixels of blur, the coarsest Haar scale of "
                             "pixelate, 1 for masking, desaturate and composites)")  # fmt: skip
    parser.add_argument("--max-dimension", type=int, default=1024,
                        help="largest C·H·W for --estimator frechet (cost: D³ per pair of levels)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help=f"where the statistics are computed: {DEVICE_HELP}")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    return parser.parse_args(argv)


def plot_schedule(schedule: DesignedSchedule, path: str | Path) -> Path:
    """Two panels: level(t) of the designed and the default sin² schedules, and the W2 between their
    neighbouring levels (with ε). Needs matplotlib (imported here, not with softdiff)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise SystemExit("softdiff.schedule: --plot needs matplotlib: pip install 'softdiff[plot]'") from error

    from ..schedules import LevelSchedule

    fine_t = torch.linspace(0, 1, 401, dtype=torch.float64)
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    unit = schedule.operator.level_unit
    left.plot(fine_t, LevelSchedule.sin2(schedule.level_max)(fine_t), color="tab:gray", label="default sin²")
    left.plot(schedule.t, schedule.levels, "o-", markersize=3, color="tab:blue", label=f"designed ({schedule.method})")
    left.set(xlabel="t", ylabel=unit, title="corruption level")
    left.legend()
    hops = range(1, len(schedule.levels))
    right.plot(hops, schedule.default_sin2["w2_between_neighbours"], "s-", markersize=3, color="tab:gray",
               label="default sin²")  # fmt: skip
    right.plot(hops, schedule.w2_between_neighbours, "o-", markersize=3, color="tab:blue", label="designed")
    right.axhline(schedule.epsilon, linestyle="--", linewidth=0.8, label=f"ε = {schedule.epsilon:.3g}")
    right.set(xlabel="neighbours k−1 → k", ylabel=f"W2 ({schedule.estimator})", title="W2 between neighbouring levels")
    right.legend()
    figure.suptitle(f"{schedule.data.get('spec') or 'data'}: {len(schedule.levels)} levels, {schedule.estimator} W2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    device = command_device(args.device, args.threads, "softdiff.schedule")
    if args.size is not None and args.size < 4:
        raise SystemExit(f"softdiff.schedule: --size must be >= 4 pixels; got {args.size}")
    command = "python -m softdiff.schedule " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        images = load_images(args.data, size=args.size)
    except (DataError, OSError, ValueError) as error:
        raise SystemExit(f"softdiff.schedule: cannot load --data {args.data!r}: {error}") from error
    try:
        operator = operator_from_name(args.operator, *images.shape[-2:])
        schedule = design_schedule(
            images.to(device),
            operator,
            candidates=args.candidates,
            keep=args.keep,
            estimator=args.estimator,
            method=args.method,
            level_max=args.level_max,
            max_dimension=args.max_dimension,
            data_spec=args.data,
            progress=True,
        )
    except (ValueError, TypeError) as error:
        raise SystemExit(f"softdiff.schedule: {error}") from error
    out = schedule.save(args.out, command=command)
    print(f"softdiff.schedule: {len(images)} images {tuple(images.shape[1:])}, {args.candidates} candidates")
    print("levels: " + " ".join(f"{level:.3f}" for level in schedule.levels))
    print(
        f"W2 between neighbours ({schedule.estimator}): max {schedule.epsilon:.4g} designed ({schedule.method}), "
        f"{schedule.default_sin2['max_w2']:.4g} default sin²({schedule.level_max:g})"
    )
    print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot_schedule(schedule, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
