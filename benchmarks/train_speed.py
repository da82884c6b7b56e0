"""Training-step speed: images per second of one optimizer step for each network size, and where the time goes.

For every size (tiny, small, paper) and variant (the fused ops or the PyTorch reference; AMP bf16; channels-last;
torch.compile; all three together, the configuration to train with on a GPU; each where asked) it times a full
training step of softdiff.train (batch build + flips, corruption, network forward, soft loss, backward, clip, Adam,
EMA) and, separately, each phase:

    data      indexing the in-memory uint8 set, flips, scaling to [-1, 1], copy to the device
    corrupt   x_t = C_t x_0 + σ_t η (fused op)
    network   F_θ forward + backward (what a plain denoising step would cost)
    loss      the soft residual C_t(D − x_0), its reduction and backward through the op
    optimizer gradient clip + Adam
    ema       the EMA update

and reports the share of the step spent outside the network and the optimizer (data, corrupt, loss, EMA).
Target on a GPU: ≤ 5% for the paper network. Writes markdown and JSON under ``--out``.

    python benchmarks/train_speed.py --sizes tiny small --batch 32 --repeats 5          # CPU
    python benchmarks/train_speed.py --amp --channels-last --compile --combined          # a GPU (--amp: bf16)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import softdiff_kernels as sk
from softdiff.data import make_shapes
from softdiff.denoiser import Denoiser
from softdiff.images import from_model_range, to_model_range
from softdiff.losses import soft_score_matching_loss
from softdiff.networks import AutocastNetwork
from softdiff.training.build import build_network, build_process
from softdiff.training.config import TrainConfig
from softdiff.training.state import ema_decay, update_ema


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, device, repeats):
    run()  # warm-up (compilation, allocator)
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(size, args, device, *, backend, amp, channels_last, compile_net):
    os.environ["SOFTDIFF_BACKEND"] = backend
    config = TrainConfig(net=size, resolution=args.resolution, batch=args.batch, amp=amp)
    images = from_model_range(make_shapes(max(args.batch * 4, 64), size=args.resolution))
    process = build_process(config)
    net = build_network(config, 3).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = build_network(config, 3).to(device).requires_grad_(False)
    model = torch.compile(net) if compile_net else net
    if amp == "bf16":  # the network alone, as softdiff.train --amp does
        model = AutocastNetwork(model, torch.bfloat16)
    denoiser = Denoiser(model, process)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    state = {}

    def data():
        index = torch.randint(0, len(images), (args.batch,), generator=generator)
        x0 = to_model_range(images[index])
        x0 = torch.where(torch.rand(args.batch, 1, 1, 1, generator=generator) < 0.5, x0.flip(-1), x0).to(device)
        state["x0"] = x0.contiguous(memory_format=torch.channels_last) if channels_last else x0
        state["t"] = torch.rand(args.batch, generator=generator).to(device) * 0.999 + 1e-3

    def corrupt():
        state["x_t"] = process.corrupt(state["x0"], state["t"])

    def network():
        out = model(state["x_t"], 1000 * state["t"])
        out.float().square().mean().backward()

    def loss():
        x0_hat = state["x0"].detach().clone().requires_grad_(True)
        level = process.level(state["t"])
        residual = process.operator.combine(x0_hat, [level], [torch.ones_like(level)], a2=state["x0"])
        residual.float().square().mean().backward()

    def optimize():
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()

    def ema_update():
        update_ema(ema, net, ema_decay(0.999, 1000))

    def full_step():
        data()
        value = soft_score_matching_loss(denoiser, state["x0"], process, t=state["t"])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimize()
        ema_update()

    data()
    corrupt()
    phases = {"data": data, "corrupt": corrupt, "network": network, "loss": loss, "optimizer": optimize,
              "ema": ema_update}  # fmt: skip
    seconds = {name: timed(run, device, args.repeats) for name, run in phases.items()}
    step = timed(full_step, device, args.repeats)
    outside = seconds["data"] + seconds["corrupt"] + seconds["loss"] + seconds["ema"]
    return {"size": size, "backend": backend, "amp": amp, "channels_last": channels_last, "compile": compile_net,
            "batch": args.batch, "resolution": args.resolution, "step_s": step, "img_per_s": args.batch / step,
            "phases_s": seconds, "outside_share": outside / sum(seconds.values())}  # fmt: skip


def variants(args, backends: list[str]) -> list[tuple[str, str, bool, bool]]:
    """(backend, amp, channels_last, compile) to time: each backend plain, then the asked-for options on the first
    (fused) backend, each alone and, with ``--combined``, all together."""
    fused = backends[0]
    rows = [(backend, "off", False, False) for backend in backends]
    rows += [(fused, "bf16", False, False)] if args.amp else []
    rows += [(fused, "off", True, False)] if args.channels_last else []
    rows += [(fused, "off", False, True)] if args.compile else []
    rows += [(fused, "bf16", True, True)] if args.combined else []
    return rows


def planned_rows(args, backends: list[str]) -> list[tuple[str, str, str, bool, bool]]:
    """(size, backend, amp, channels_last, compile) in the order timed: every size without torch.compile first, in the
    order asked, then the compiled rows (each compiles for a minute or more)."""
    rows = [(size, *variant) for size in args.sizes for variant in variants(args, backends)]
    return sorted(rows, key=lambda row: row[4])  # stable


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "paper"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--amp", action="store_true", help="also time AMP bf16")
    parser.add_argument("--channels-last", action="store_true", help="also time channels-last")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--combined", action="store_true", help="also time AMP bf16 + channels-last + torch.compile")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fused = sk.backend(device)
    backends = [fused] + (["torch"] if fused != "torch" else [])
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in info["device"].lower()).strip("-")
    stem = out / f"train-speed-{slug}-{info['date'][:16].replace(':', '')}"
    records = []  # the tables are rewritten after every row: a run stopped at a time limit keeps what it measured
    for size, backend, amp, channels_last, compile_net in planned_rows(args, backends):
        record = measure(size, args, device, backend=backend, amp=amp, channels_last=channels_last,
                         compile_net=compile_net)  # fmt: skip
        records.append(record)
        print(f"{size:>6} {backend:>6} amp={amp:<4} cl={channels_last!s:<5} compile={compile_net!s:<5} "
              f"{record['img_per_s']:8.1f} img/s  outside the network {100 * record['outside_share']:5.1f}%",
              flush=True)  # fmt: skip
        write_tables(stem, info, args, records)
    os.environ.pop("SOFTDIFF_BACKEND", None)
    print(f"wrote {stem}.md and .json")


def write_tables(stem: Path, info: dict, args, records: list[dict]) -> None:
    stem.with_suffix(".json").write_text(json.dumps({"environment": info, "records": records}, indent=2))
    lines = [f"# Training-step speed: {info['device']}, {info['date']}", "",
             f"torch {info['torch']}, {info['threads']} threads, batch {args.batch}, {args.resolution}x"
             f"{args.resolution}. Phases in ms; 'outside' = (data + corrupt + loss + EMA) / sum of phases.", "",
             "| net | backend | amp | channels-last | compile | img/s | data | corrupt | network | loss | optimizer "
             "| ema | outside |", "|" + " --- |" * 13]  # fmt: skip
    for r in records:
        p = {k: 1e3 * v for k, v in r["phases_s"].items()}
        lines.append(f"| {r['size']} | {r['backend']} | {r['amp']} | {r['channels_last']} | {r['compile']} | "
                     f"{r['img_per_s']:.1f} | {p['data']:.2f} | {p['corrupt']:.2f} | {p['network']:.1f} | "
                     f"{p['loss']:.2f} | {p['optimizer']:.2f} | {p['ema']:.2f} | "
                     f"{100 * r['outside_share']:.1f}% |")  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
