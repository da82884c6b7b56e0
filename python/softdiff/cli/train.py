"""``python -m softdiff.train``: train a Soft Diffusion model (DESIGN §2.3).

With no arguments it trains the ``demo`` preset (MNIST digits, the tiny network) on whatever device is there and
writes, under ``--out`` (default ``runs/<preset>``), the log, sample grids and checkpoints
(:mod:`softdiff.training.loop` lists them).

Running the same command again with the same ``--out`` resumes from the newest readable checkpoint (a larger
``--steps`` extends the run). Every step is a pure function of (seed, step): the batch order, flips, times and
noise are drawn from per-step generators, so a run killed at any point and resumed reaches the same weights
as an uninterrupted one (bit for bit on the CPU). A NaN/Inf loss stops the run before anything is saved.
Ctrl-C (SIGINT) or SIGTERM stops it after the step in flight, which it checkpoints, with exit status 130 or 143;
a second one exits at once.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m softdiff.train ...`` (NCCL on GPUs, gloo on CPUs);
``--batch`` is the global batch, sharded over ranks; only rank 0 writes.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import fields
from pathlib import Path

from ..training.config import PRESETS, TrainConfig, check_config, flag, setting_types
from ..training.interrupt import Interrupted, exit_code
from ..training.loop import NonFiniteLoss, train


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--preset``, ``--out`` and one flag per setting of :class:`TrainConfig`, its type, help
    and choices taken from the setting's declaration."""
    listed = {"defaults": {f.name: f.default for f in fields(TrainConfig)}, **PRESETS}
    epilog = "Values: the defaults, then what each preset sets; a flag overrides either.\n" + "\n".join(
        f"  {name}: " + ", ".join(f"{key}={value}" for key, value in values.items()) for name, values in listed.items()
    )
    parser = argparse.ArgumentParser(prog="python -m softdiff.train", description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="starting values (default demo)")
    parser.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    types = setting_types()
    for f in fields(TrainConfig):
        choices = f.metadata["choices"]
        options = dict(default=None, help=f.metadata["help"])  # None: not given, the preset's value stands
        if choices is not None:  # shown in the usage; checked by check_config like every limit
            options["metavar"] = "{" + ",".join(map(str, choices)) + "}"
        if types[f.name] is bool:
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **options)
        else:
            parser.add_argument(flag(f.name), type=types[f.name], **options)
    return parser


def parse_args(argv=None) -> tuple[TrainConfig, str, Path]:
    """(the checked config, the preset's name, the run folder) of a command line."""
    args = build_parser().parse_args(argv)
    values = {**PRESETS[args.preset]}
    values |= {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    config = TrainConfig(**values)
    check_config(config)
    return config, args.preset, Path(args.out or f"runs/{args.preset}")


def finished_message(out: Path, start_step: int, steps: int, seconds: float, grid: Path | None,
                     checkpoint: Path | None) -> str:  # fmt: skip
    """What a finished run wrote (the last grid and checkpoint; None when the run was already at ``steps``) and how
    to go on, for the user at the terminal."""
    sample_more = f"python -m softdiff.sample --ckpt {out} --n 64 --out {out / 'more_samples'}"
    if grid is None or checkpoint is None:
        return f"softdiff.train: {out} is already at step {start_step}; raise --steps to train on, or run {sample_more}"
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return "\n".join([f"softdiff.train: steps {start_step} -> {steps} in {took}", f"  samples     {grid}",
                      f"  checkpoint  {checkpoint}", f"  log         {out / 'log.jsonl'}",
                      f"  more        {sample_more}"])  # fmt: skip


def main(argv=None) -> int:
    config, preset, out = parse_args(argv)
    try:
        summary = train(config, out, preset=preset)
    except NonFiniteLoss as error:
        print(f"softdiff.train: {error}", file=sys.stderr)
        return 3
    except Interrupted as stopped:  # train() printed where the checkpoint is
        return stopped.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside the steps (loading data, resuming): no step to save, no traceback
        print("softdiff.train: interrupted (SIGINT) before or after the training steps; the checkpoints on disk are "
              "intact; run the same command to resume", file=sys.stderr)  # fmt: skip
        return exit_code(signal.SIGINT)
    if summary["is_main"]:
        print(finished_message(out, summary["start_step"], summary["step"], summary["seconds"], summary["grid"],
                               summary["checkpoint"]), flush=True)  # fmt: skip
    return 0
