"""Where a command computes: the device it names and the CPU threads torch may use, checked once for every
command (``--device`` and ``--threads`` of train, sample, fid, schedule and demo).

Threads matter on shared machines: torch starts one OpenMP thread per core, and two busy processes on the same
cores each spinning that many threads run many times slower than either alone. ``--threads 1`` per process (or
``OMP_NUM_THREADS=1`` in the environment) avoids it.
"""

from __future__ import annotations

import torch

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


def describe_compute(device: torch.device, threads: int) -> str:
    """``device cpu (2 CPU threads)``: what a command's first line says of where it computes."""
    return f"device {device} ({threads} CPU thread{'s' * (threads != 1)})"
