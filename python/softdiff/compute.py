"""Where a command computes: the device it names and the CPU threads torch may use, checked once for every
command (``--device`` and ``--threads`` of train, sample, fid, schedule and demo).

Threads matter on shared machines: torch starts one OpenMP thread per core, and two busy processes on the same
cores each spinning that many threads run many times slower than either alone. ``--threads 1`` per process (or
``OMP_NUM_THREADS=1`` in the environment) avoids it.
"""

from __future__ import annotations

import os
import sys

import torch

from .wording import plural

DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda if present)"
THREADS_HELP = (
    "CPU threads torch may use (default: its own choice, one per core, or OMP_NUM_THREADS); on a machine shared "
    "with other busy processes give each a share, e.g. --threads 1"
)


def available_devices() -> list[str]:
    """The devices torch can compute on here: ``cpu``, then ``cuda:0`` ... and ``mps`` where present."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | None, command: str) -> torch.device:
    """The device ``name`` names (None: ``cuda`` if a GPU is there, else ``cpu``); exits with a message listing
    the devices that exist when it names none of them (``tpu``, ``cuda`` on a machine without a GPU, ``cuda:3`` of
    two GPUs). ``command`` prefixes the message (``softdiff.train``)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    there = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SystemExit(f"{command}: --device {name!r} is not a device torch knows; devices here: {there}") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        seen = "sees no CUDA GPU" if not torch.cuda.is_available() else f"sees {torch.cuda.device_count()} GPU(s)"
        raise SystemExit(f"{command}: --device {name}, but PyTorch {seen} here; devices here: {there}")
    if device.type not in ("cpu", "cuda") and name not in available_devices():
        raise SystemExit(f"{command}: --device {name} is not available here; devices here: {there}")
    return device


def use_threads(count: int | None, command: str) -> int:
    """Let torch use ``count`` CPU threads (None: leave its choice); returns the count in force. ``command``
    prefixes the message when ``count`` is below 1."""
    if count is not None:
        if count < 1:
            raise SystemExit(f"{command}: --threads must be >= 1; got {count}")
        torch.set_num_threads(count)
    return torch.get_num_threads()


def rank_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun (WORLD_SIZE > 1) a CUDA ``device`` becomes the rank's own GPU,
    ``cuda:LOCAL_RANK``; otherwise ``device`` itself. A CUDA one is made the current device."""
    if device.type != "cuda":
        return device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    torch.cuda.set_device(device)
    return device


def compute_summary(device: torch.device, threads: int) -> str:
    """'device cpu, 1 CPU thread': where a command computes, as its start line states it."""
    return f"device {device}, {plural(threads, 'CPU thread')}"


def command_device(name: str | None, threads: int | None, command: str) -> torch.device:
    """What a command's ``--device name --threads threads`` ask for, checked and applied (:func:`use_threads`,
    :func:`resolve_device`, :func:`rank_device`) and stated on stderr by rank 0 as ``command: device cpu, 1 CPU
    thread``: this process's device."""
    count = use_threads(threads, command)
    device = rank_device(resolve_device(name, command))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{command}: {compute_summary(device, count)}", file=sys.stderr, flush=True)
    return device
