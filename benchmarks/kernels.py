"""Kernel benchmark: the fused op against the usual ways of writing blur + noise in PyTorch.

For each B×C×H×W and storage dtype it times three hot paths of Soft Diffusion:

    corrupt     x_t = C_t x_0 + σ_t η                                      (minimal bytes: read x_0, write x_t)
    momentum    x' = C' x̂_0 − r C x̂_0 + r x_t + β η                         (read x̂_0 and x_t, write x')
    loss        forward + backward of mean ‖C_t (x̂_0 − x_0)‖²              (read x̂_0 and x_0, write ∂/∂x̂_0)

along four paths: ``fused`` (softdiff_kernels, noise drawn in the kernel where the backend does so, else
torch.randn), ``plain`` (per-sample separable matmuls A x B + torch.randn: the best plain-PyTorch path),
``torch-dct`` (the FFT-based DCT of the torch-dct package, used by IHDM and blurring-diffusion code) and
``dctorch`` (the matmul DCT of dctorch). The last two run when those packages are installed
(``pip install torch-dct`` and ``pip install --no-deps dctorch``).

Reports median milliseconds, GB/s over the minimal byte count (inputs read once, output written once, noise
not counted), the percentage of the device's measured copy bandwidth, the speed-up of ``fused`` over each other
path, and on CUDA the peak extra device memory of each path. Writes markdown and JSON into ``--out``
(default ``benchmarks/results``) named by device and date.

    python benchmarks/kernels.py                              # the issue's shapes, fp32 and bf16
    python benchmarks/kernels.py --configs 128x3x64x64 --dtypes fp32 --repeats 20
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

import softdiff_kernels as sk
from softdiff.operators import DCTBlur

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_CONFIGS = ["256x3x32x32", "256x3x64x64", "64x3x128x128"]
# On a GPU also one whose images (100 MB each in float32) are several times an H100/H200's 50-60 MB L2 cache, so
# that its GB/s are DRAM's.
CUDA_EXTRA_CONFIGS = ["2048x3x64x64"]
OPS = ("corrupt", "momentum", "loss")
MINIMAL_IMAGE_PASSES = {"corrupt": 2, "momentum": 3, "loss": 3}  # images read once + written once


def optional_baselines() -> dict:
    found = {}
    try:
        import torch_dct

        found["torch-dct"] = (lambda x: torch_dct.dct_2d(x, norm="ortho"), lambda z: torch_dct.idct_2d(z, norm="ortho"))
    except ImportError:
        pass
    try:
        import dctorch.functional as dctorch

        found["dctorch"] = (dctorch.dct2, dctorch.idct2)
    except ImportError:
        pass
    return found


class Problem:
    """Random inputs and per-sample filters of one configuration (fresh random data, never zeros)."""

    def __init__(self, shape, dtype, device, generator):
        batch, _, height, width = shape
        self.shape, self.dtype = shape, dtype
        images = [torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(3)]
        self.x0, self.x0_hat, self.x_t = images
        self.x0_hat.requires_grad_(False)
        level = torch.rand(batch, generator=generator, dtype=torch.float64).to(device) * 8
        level_next = level * 0.9
        self.rows = torch.stack([DCTBlur.axis_factors(level, height)], 1).float()  # [B, 1, H]
        self.cols = torch.stack([DCTBlur.axis_factors(level, width)], 1).float()
        ratio = torch.rand(batch, generator=generator).to(device) * 0.5 + 0.25
        self.ratio = ratio
        self.rows2 = torch.stack([DCTBlur.axis_factors(level_next, height), -ratio[:, None].double()
                                  * DCTBlur.axis_factors(level, height)], 1).float()  # fmt: skip
        self.cols2 = torch.stack([DCTBlur.axis_factors(level_next, width), DCTBlur.axis_factors(level, width)],
                                 1).float()  # fmt: skip
        self.sigma = torch.rand(batch, generator=generator).to(device) + 0.5
        self.seeds = torch.randint(0, 2**62, (batch,), generator=generator).to(device)
        self.fused_noise = sk.backend(device) == "torch"  # the reference draws noise with torch.randn


def axis_operators(factors: torch.Tensor, n: int) -> torch.Tensor:
    """Mᵀ diag(f) M per sample: [B, J, n] -> [B, J, n, n]."""
    m = sk.dct_matrix(n, dtype=factors.dtype, device=factors.device)
    return (m.T * factors[..., None, :]) @ m


# --- the paths ---------------------------------------------------------------------------------------------------


def fused(op: str, p: Problem):
    if op == "corrupt":
        noise = dict(noise=torch.randn_like(p.x0)) if p.fused_noise else dict(seeds=p.seeds, stream=1)
        return lambda: sk.dct_filter(p.x0, rows=p.rows, cols=p.cols, beta=p.sigma, **noise)
    if op == "momentum":

        def step():
            noise = dict(noise=torch.randn_like(p.x0)) if p.fused_noise else dict(seeds=p.seeds, stream=1)
            return sk.dct_filter(p.x0_hat, rows=p.rows2, cols=p.cols2, alpha=p.ratio, c=p.x_t, beta=p.sigma, **noise)

        return step
    return loss_runner(lambda x: sk.dct_filter(x, rows=p.rows, cols=p.cols, a2=p.x0), p)


def plain(op: str, p: Problem):
    _, _, height, width = p.shape
    dtype = sk.compute_dtype(p.dtype)

    def blur(x, rows, cols):  # Σ_j A_j x B_j with per-sample matrices built from the filter factors
        a, b = axis_operators(rows.to(dtype), height), axis_operators(cols.to(dtype), width)
        x = x.to(dtype)
        y = a[:, 0, None] @ x @ b[:, 0, None]
        for j in range(1, rows.shape[1]):
            y += a[:, j, None] @ x @ b[:, j, None]
        return y

    return generic_paths(op, p, blur)


def spectral(forward, inverse):
    def make(op: str, p: Problem):
        dtype = sk.compute_dtype(p.dtype)

        def blur(x, rows, cols):
            spectrum = (rows[..., :, None] * cols[..., None, :]).sum(1).to(dtype)  # [B, H, W]
            return inverse(spectrum[:, None] * forward(x.to(dtype)))

        return generic_paths(op, p, blur)

    return make


def gaussian(p: Problem) -> torch.Tensor:
    return torch.randn(p.shape, device=p.x0.device, dtype=sk.compute_dtype(p.dtype))


def generic_paths(op, p, blur):
    per_sample = (-1, 1, 1, 1)
    if op == "corrupt":
        return lambda: (blur(p.x0, p.rows, p.cols) + p.sigma.view(per_sample) * gaussian(p)).to(p.dtype)
    if op == "momentum":
        return lambda: (blur(p.x0_hat, p.rows2, p.cols2) + p.ratio.view(per_sample) * p.x_t
                        + p.sigma.view(per_sample) * gaussian(p)).to(p.dtype)  # fmt: skip
    return loss_runner(lambda x: blur(x - p.x0, p.rows, p.cols).to(p.dtype), p)


def loss_runner(residual_of, p: Problem):
    x0_hat = p.x0_hat.detach().clone().requires_grad_(True)

    def run():
        x0_hat.grad = None
        residual = residual_of(x0_hat)
        residual.float().square().mean().backward()
        return x0_hat.grad

    return run


# --- timing ------------------------------------------------------------------------------------------------------


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_ms(run, calls: int) -> float:
    """Milliseconds per call of ``calls`` back-to-back calls of ``run`` between two CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def median_ms(run, device, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds per call. On a GPU each timing spans enough back-to-back calls for about a millisecond
    (at most 100): one call of a small problem would time the launch and Python dispatch, not the work."""
    for _ in range(warmup):
        run()
    synchronize(device)
    calls = 1 if device.type != "cuda" else max(1, min(100, math.ceil(1.0 / max(cuda_ms(run, 1), 1e-3))))
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            times.append(cuda_ms(run, calls))
        else:
            start = time.perf_counter()
            run()
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def peak_extra_mb(run, device) -> float | None:
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = run()
    synchronize(device)
    del out
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def copy_bandwidth_gbs(device, repeats: int) -> float:
    """Measured copy bandwidth: bytes read + bytes written of a large device-to-device copy."""
    n = (1 << 28) if device.type == "cuda" else (1 << 25)
    source = torch.randn(n // 4, device=device)
    target = torch.empty_like(source)
    ms = median_ms(lambda: target.copy_(source), device, repeats)
    return 2 * source.numel() * 4 / (ms * 1e-3) / 1e9


def environment(device) -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(), "backend": sk.backend(device),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or
            platform.machine(), "threads": torch.get_num_threads()}  # fmt: skip
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def run(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    paths = {"fused": fused, "plain": plain}
    paths |= {name: spectral(*pair) for name, pair in optional_baselines().items()}
    info = environment(device)
    info["copy_gbs"] = copy_bandwidth_gbs(device, args.repeats)
    records = []
    generator = torch.Generator().manual_seed(0)
    configs = args.configs or DEFAULT_CONFIGS + (CUDA_EXTRA_CONFIGS if device.type == "cuda" else [])
    for config in configs:
        shape = tuple(int(v) for v in config.lower().split("x"))
        for dtype_name in args.dtypes:
            problem = Problem(shape, DTYPES[dtype_name], device, generator)
            for op in OPS:
                minimal_bytes = MINIMAL_IMAGE_PASSES[op] * math.prod(shape) * problem.x0.element_size()
                for path, make in paths.items():
                    runner = make(op, problem)
                    ms = median_ms(runner, device, args.repeats)
                    gbs = minimal_bytes / (ms * 1e-3) / 1e9
                    records.append({"shape": config, "dtype": dtype_name, "op": op, "path": path, "ms": ms,
                                    "gbs": gbs, "copy_fraction": gbs / info["copy_gbs"],
                                    "peak_extra_mb": peak_extra_mb(runner, device)})  # fmt: skip
                    print(f"{config:>13} {dtype_name} {op:>8} {path:>9}: {ms:9.3f} ms {gbs:8.1f} GB/s", flush=True)
    for record in records:
        fused_ms = next(r["ms"] for r in records if r["path"] == "fused" and all(
            r[k] == record[k] for k in ("shape", "dtype", "op")))  # fmt: skip
        record["fused_speedup"] = record["ms"] / fused_ms
    return {"environment": info, "records": records}


def markdown(result: dict) -> str:
    info = result["environment"]
    lines = [f"# Kernel benchmark: {info['device']}, {info['date']}", "",
             f"torch {info['torch']}, triton {info['triton']}, python {info['python']}, backend `{info['backend']}`, "
             f"{info['threads']} CPU threads; measured copy bandwidth {info['copy_gbs']:.1f} GB/s "
             "(bytes read + written).", "",
             "GB/s count the minimal bytes (images read once, output written once, noise not counted); "
             "`× fused` is this path's time over the fused path's.", "",
             "| shape | dtype | op | path | ms | GB/s | % copy | × fused | peak extra MB |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in result["records"]:
        peak = "n/a" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.1f}"
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['op']} | {r['path']} | {r['ms']:.3f} | {r['gbs']:.1f} | "
                     f"{100 * r['copy_fraction']:.0f}% | {r['fused_speedup']:.2f} | {peak} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="output folder")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--configs", nargs="+", default=None,
                        help=f"BxCxHxW shapes (default {' '.join(DEFAULT_CONFIGS)}, and on a GPU "
                             f"{' '.join(CUDA_EXTRA_CONFIGS)})")  # fmt: skip
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions (median reported)")
    args = parser.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in result["environment"]["device"].lower()).strip("-")
    stamp = result["environment"]["date"][:16].replace(":", "")
    stem = f"kernels-{slug}-{stamp}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(markdown(result))
    print(f"wrote {out / stem}.md and .json")
    return result


if __name__ == "__main__":
    main()
