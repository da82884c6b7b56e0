"""The training loop (DESIGN §2.3): data, model, EMA and optimiser, resumption from the newest readable
checkpoint, data-parallel ranks, and the step itself.

Writes, under the run folder:

    log.jsonl              one JSON object per logged step: step, loss (mean since the last line), img_per_s, lr,
                           seconds
    samples/step-N.png     sample grids from the EMA network with fixed seeds
    checkpoints/ckpt-N.pt  model, EMA, optimizer, AMP scaler, step, RNG states, data position, the full config
                           and the process (schedules, prior statistics); written atomically, the last k kept

A NaN/Inf loss or gradient norm stops the run before the update is applied, so nothing poisoned is saved.
SIGINT or SIGTERM stops it after the step in flight, checkpointed (:mod:`.interrupt`); all ranks stop at one step.
Multi-GPU / multi-node: under ``torchrun`` (NCCL on GPUs, gloo on CPUs) ``batch`` is the global batch, sharded
over ranks; only rank 0 writes.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .._checks import trusted_values
from ..checkpoints import checkpoint_path, list_checkpoints, load_latest, remove_partial_writes, save_checkpoint
from ..compute import compute_summary, rank_device, resolve_device, use_threads
from ..conditioning import drop_labels
from ..data import DataError, to_model_range
from ..data.cache import load_data_cached
from ..denoiser import Denoiser, data_second_moment
from ..images import save_image_grid
from ..losses import soft_score_matching_loss, stratified_times
from ..networks import AutocastNetwork, count_parameters
from ..prior import choose_prior
from ..process import SoftDiffusionProcess
from ..samplers import sample
from ..wording import plural
from .build import autocast_dtype, build_network, build_process
from .config import TrainConfig, check_resumable
from .interrupt import Interrupted, StopSignals
from .state import (
    batch_indices,
    ema_decay,
    learning_rate,
    restore_rng_states,
    rewrite_log,
    rng_states,
    step_generator,
    update_ema,
)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the run stops before saving anything poisoned."""


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(config: TrainConfig) -> tuple[Distributed, torch.device]:
    """This process's rank and device: one process on ``--device`` (checked against the devices that exist), or
    under torchrun one rank per process, on GPU ``LOCAL_RANK`` when ``--device`` is a CUDA one."""
    chosen = resolve_device(config.device, "softdiff.train")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), chosen
    if chosen.type not in ("cuda", "cpu"):  # torch.distributed has a backend for these two only (nccl, gloo)
        raise SystemExit(f"softdiff.train: --device {chosen} cannot run under torchrun (ranks run on CUDA GPUs "
                         "with nccl or on the CPU with gloo); use --device cuda or --device cpu")  # fmt: skip
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(chosen)
    use_cuda = device.type == "cuda"
    # An hour, not NCCL's 10 minutes: rank 0 alone decodes a data set the first time (CelebA: several minutes).
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=1))
    if config.batch % world:
        raise SystemExit(f"softdiff.train: --batch {config.batch} must be divisible by the {world} ranks")
    return Distributed(rank, world, local_rank), device


def global_mean(value: torch.Tensor, stop_vote: torch.Tensor, ddp: Distributed) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's one collective: the mean of a 0-d tensor over the ranks and the number of ranks that ask to stop
    (``stop_vote`` is 1 or 0 on each), both on the device: no host sync. With one rank, the tensors themselves."""
    if ddp.world == 1:
        return value, stop_vote
    packed = torch.stack([value, stop_vote.to(value.dtype)])
    dist.all_reduce(packed)
    return packed[0] / ddp.world, packed[1]


NON_FINITE, STOP = 1, 2  # the bits of step_verdict


def step_verdict(finite: torch.Tensor, stop_votes: torch.Tensor) -> torch.Tensor:
    """What the step's one host read learns, packed in one integer: NON_FINITE when the loss (or gradient norm) is
    not finite, STOP when some rank asks to stop."""
    return (~finite).int() * NON_FINITE + (stop_votes > 0).int() * STOP


def agreed_signal(signum: int | None, ddp: Distributed, device: torch.device) -> int:
    """The signal the ranks stop on, one for all (so they exit with one code): the highest number any rank
    received (SIGTERM over SIGINT). Read only when stopping, so no step pays for it."""
    if ddp.world == 1:
        return signum
    value = torch.tensor(signum or 0, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value)


def stop_message(what: str, value: float, step: int, on_disk: tuple[int, Path] | None) -> str:
    """Why a non-finite loss or gradient norm at ``step`` (1-based, as checkpoints count) stopped the run, and which
    checkpoint is the last on disk."""
    last = "no checkpoint has been written yet" if on_disk is None else (
        f"the last checkpoint is {on_disk[1]} (step {on_disk[0]})")  # fmt: skip
    return (f"the {what} is {value} at step {step}; nothing of step {step} was saved (the run stopped before "
            f"updating the weights); {last}. Try a lower --lr or --amp off.")  # fmt: skip


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
        grid=config.time_grid,
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


def train(config: TrainConfig, out: Path, *, preset: str = "custom") -> dict:
    """Run (or resume) the training of ``config`` into the run folder ``out``; returns a summary: the final
    ``step``, the ``start_step`` it resumed from, the last step's ``loss``, the ``seconds`` it took, whether this
    process is the main rank, and the last ``grid`` and ``checkpoint`` written (None when the run was already at
    its steps or this is not the main rank).

    SIGINT or SIGTERM (in the main thread) stops the run after the step in flight, checkpointed: it raises
    :class:`Interrupted` (after printing its message on the main rank); the previous handlers are restored on
    return."""
    threads = use_threads(config.threads, "softdiff.train")
    ddp, device = setup_distributed(config)
    torch.manual_seed(config.seed)
    try:  # uint8 [N, C, H, W], decoded once into softdiff's cache and read from there by other ranks and resumes
        data = load_data_cached(config.data, size=config.resolution, is_main=ddp.is_main,
                                wait=dist.barrier if ddp.world > 1 else lambda: None)  # fmt: skip
    except (DataError, FileNotFoundError) as error:
        raise SystemExit(f"softdiff.train: --data {config.data}: {error}") from error
    images, notes = data.images, []
    if data.fitting:
        notes.append(f"data {config.data}: {data.fitting}")
    if config.flips and not data.flips:  # before the resume check: a resumed run resolves it the same way
        config = dataclasses.replace(config, flips=False)
        notes.append(f"no horizontal flips: they do not preserve {config.data.partition(':')[0]} (digits)")
    label_classes = 0
    if config.cond == "class":
        if data.labels is None:
            raise SystemExit(f"softdiff.train: --cond class needs labelled data; {config.data} has no labels")
        label_classes = data.classes
    channels = images.shape[1]
    process = build_process(config, channels)
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
    else:
        prior, _, prior_note = choose_prior(process, (to_model_range(part) for part in images.split(1024)),
                                            config.prior)  # fmt: skip
        process.prior = prior
        notes.append(prior_note)
        if process.operator.has_basis:  # what --t-start auto of softdiff.sample weighs a corrupted input against
            process.fit_data_spectrum(images)
        if config.precond == "wiener":
            second_moment = data_second_moment(process.operator, images)
    on_disk = None if resumed is None else (start_step, resumed[1])  # (step, path) of the newest checkpoint
    if start_step >= config.steps:  # nothing to train: no start line nor progress bar; the caller says so
        if ddp.world > 1:
            dist.destroy_process_group()
        return {"step": config.steps, "start_step": start_step, "loss": float("nan"), "out": str(out),
                "seconds": 0.0, "is_main": ddp.is_main, "grid": None, "checkpoint": None}  # fmt: skip
    if ddp.is_main and resumed is not None:
        print(f"softdiff.train: resuming from {on_disk[1]} (step {start_step})", flush=True)
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
        print(f"softdiff.train: preset {preset}, {plural(len(images), 'image')} {tuple(images.shape[1:])}, "
              f"net {config.net} ({count_parameters(net) / 1e6:.2f}M parameters, {precision}{conditioning}), "
              f"{compute_summary(device, threads)}, {plural(ddp.world, 'rank')}, steps {start_step}->{config.steps}, "
              f"out {out}", flush=True)  # fmt: skip
        print(f"softdiff.train: corruption {process.operator.label} up to level {process.levels.level_max:g} "
              f"({process.operator.level_unit}), noise σ {process.noise.sigma_min:g} -> {process.noise.sigma_max:g}",
              flush=True)  # fmt: skip
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
    # Each rank's vote to stop, chosen on the host and summed with the loss: no transfer, no extra collective.
    go_on, stop_here = torch.zeros((), device=device), torch.ones((), device=device)

    def save(done: int) -> Path:
        """Checkpoint the state after ``done`` steps (rank 0 writes; every rank notes its path)."""
        nonlocal on_disk
        path = checkpoint_path(out / "checkpoints", done)
        if ddp.is_main:
            state = {"step": done, "model": net.state_dict(), "ema": ema.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "config": asdict(config),
                     "process": process.to_dict(), "rng": rng_states(), "data_position": done * config.batch,
                     "preset": preset, "second_moment": second_moment, "label_classes": label_classes}  # fmt: skip
            path = save_checkpoint(state, out / "checkpoints", done, keep=config.keep)
        on_disk = done, path
        return path

    def interrupt(done: int, signum: int) -> Interrupted:
        """Stop after step ``done`` on ``signum``: checkpoint it unless that was just done, and say so."""
        path = on_disk[1] if on_disk is not None and on_disk[0] == done else save(done)
        stopped = Interrupted(done, signum, path)
        if ddp.is_main:
            progress.close()  # before the message, which would otherwise land inside the bar
            print(f"softdiff.train: {stopped}", flush=True)
        if ddp.world > 1:  # no rank exits before the checkpoint is written: torchrun then stops the others
            dist.barrier()
        return stopped

    stop = StopSignals()
    stop.install()  # restored in the finally below
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
                                                ahead=config.loss_ahead, t=t_global[mine].to(device),
                                                seeds=seeds_global[mine].to(device), labels=labels)  # fmt: skip
            # every rank sees the same loss and votes, and stops together
            vote = go_on if stop.signum is None else stop_here
            step_loss, stop_votes = global_mean(loss.detach(), vote, ddp)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            gradient_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip or math.inf)
            # The step's one host sync: a non-finite loss (or gradient norm; fp16's scaler skips such steps itself)
            # stops the run before the update is applied, so nothing poisoned is saved; and the ranks' stop votes.
            finite = torch.isfinite(step_loss) if scaler.is_enabled() else torch.isfinite(step_loss + gradient_norm)
            verdict = int(step_verdict(finite, stop_votes))
            if verdict & NON_FINITE:  # the failure path alone reads which of the two it was
                what = "loss" if not torch.isfinite(step_loss) else "gradient norm"
                value = step_loss.item() if what == "loss" else gradient_norm.item()
                raise NonFiniteLoss(stop_message(what, value, step + 1, on_disk))
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
                last_checkpoint = save(done)
            if ddp.is_main and (done % config.sample_every == 0 or done == config.steps):
                last_grid = save_samples(config, process, ema, out, done, device, channels, second_moment,
                                         label_classes)  # fmt: skip
            window_start += time.perf_counter() - writing_started
            # One rank reads its own flag after the step (a signal during this step's writes counts); several read
            # the votes of the sync above, the same on every rank. The last step ends the run as usual.
            asked = stop.signum is not None if ddp.world == 1 else bool(verdict & STOP)
            if asked and done < config.steps:
                raise interrupt(done, agreed_signal(stop.signum, ddp, device))
        if ddp.world > 1:
            check_ranks_agree(net, ddp)
    finally:
        try:  # a second signal during this clean-up still exits at once
            if progress is not None:
                progress.close()
            if log_file is not None:
                log_file.close()
            if ddp.world > 1:
                dist.destroy_process_group()
        finally:
            stop.restore()
    loss_value = float("nan") if step_loss is None else float(step_loss)  # the last step's loss
    return {"step": config.steps, "start_step": start_step, "loss": loss_value, "out": str(out),
            "seconds": time.perf_counter() - run_start, "is_main": ddp.is_main,
            "grid": last_grid, "checkpoint": last_checkpoint if ddp.is_main else None}  # fmt: skip
