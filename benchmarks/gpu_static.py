"""What can be learnt about the GPU kernels without a GPU: every Triton and CUDA kernel variant compiled for sm_90
(H100/H200) with its resource usage, the theoretical occupancy that follows, and a roofline estimate of each op.

    python benchmarks/gpu_static.py --out benchmarks/results/gpu_static-DATE

1. Triton: each variant of ``_dct_filter_kernel`` and ``_pixel_filter_kernel``, with the compile-time shape the
   launchers choose (``launch_config``) for the image sizes softdiff trains on, is compiled by ``triton.compile``
   for ``GPUTarget("cuda", 90, 32)``; its PTX is assembled again by ptxas with ``-v`` (Triton's bundled ptxas, for
   sm_90a as Triton does), which reports registers per thread, spill stores and loads, and the stack frame. The
   shared memory is Triton's compiled metadata.
2. CUDA: ``csrc/fused_filter.cu`` compiled by nvcc for sm_90 with ``-Xptxas -v`` (every instantiation); the dct
   kernel's dynamic shared memory is 2·H·W·sizeof(acc) (the launcher's rule, csrc/fused_filter.cu).
3. Occupancy on sm_90: 65 536 registers per SM allocated per warp in units of 256, at most 64 warps, 32 blocks and
   228 KiB of shared memory per SM with 1 KiB reserved per block. Active warps = the smallest of the register,
   shared-memory, warp and block limits; occupancy = active warps / 64.
4. Roofline: the minimal bytes (each image-sized operand read once, the output written once; the per-sample
   coefficients are negligible) and the floating-point operations the kernel executes on its padded tiles
   (the DCT is done as dense matrix products: 2·(BH²·BW + BH·BW²) per pair of products), against 4.3 TB/s (a
   device-to-device copy measured on an H200 here, read + write) and 67 TFLOP/s (the datasheet's plain FP32: an
   fp32 ``tl.dot`` with ``input_precision="ieee"`` runs on the FMA units, not the tensor cores). The estimate is
   max(bytes / bandwidth, FLOPs / FP32 rate) for a batch of 128; it ignores launch latency (a few µs).

A spill or an occupancy below 25% is flagged in the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# sm_90 (H100 / H200) limits, from the CUDA occupancy tables for compute capability 9.0.
REGISTERS_PER_SM, REGISTER_UNIT, MAX_WARPS, MAX_BLOCKS = 65_536, 256, 64, 32
SHARED_PER_SM, SHARED_RESERVED_PER_BLOCK = 228 * 1024, 1024
SMS = 132  # H200 SXM (and H100 SXM): what PyTorch reported on the lent machine
BANDWIDTH = 4.3e12  # bytes/s, device-to-device copy measured on an H200 here (KINDS.md)
FP32_RATE = 67e12  # FLOP/s, datasheet plain FP32
BATCH = 128

# (channels, height, width) of the image sizes softdiff runs: MNIST, CIFAR-10 / shapes, CelebA-64, a small test.
SHAPES = ((1, 32, 32), (3, 32, 32), (3, 64, 64), (3, 16, 16))
STORAGE = {"fp32": ("*fp32", 4), "bf16": ("*bf16", 2)}


def occupancy(registers: int, shared: int, warps_per_block: int) -> dict:
    """Theoretical occupancy on sm_90 of a kernel using ``registers`` per thread and ``shared`` bytes per block."""
    per_warp = math.ceil(registers * 32 / REGISTER_UNIT) * REGISTER_UNIT
    limits = {
        "registers": (REGISTERS_PER_SM // per_warp) // warps_per_block if per_warp else MAX_BLOCKS,
        "shared": SHARED_PER_SM // (shared + SHARED_RESERVED_PER_BLOCK),
        "warps": MAX_WARPS // warps_per_block,
        "blocks": MAX_BLOCKS,
    }
    blocks = min(limits.values())
    limiter = min(limits, key=limits.get)
    return {"blocks_per_sm": blocks, "active_warps": blocks * warps_per_block,
            "occupancy": blocks * warps_per_block / MAX_WARPS, "limited_by": limiter}  # fmt: skip


def parse_ptxas(text: str) -> list[dict]:
    """Per function in ``ptxas -v`` output: name, registers, spill stores/loads and stack bytes."""
    functions, current = [], None
    for line in text.splitlines():
        if match := re.search(r"Compiling entry function '([^']+)'", line):
            current = {"function": match.group(1), "registers": 0, "spill_stores": 0, "spill_loads": 0, "stack": 0,
                       "static_shared": 0}  # fmt: skip
            functions.append(current)
        elif current is None:
            continue
        elif match := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, match.groups())
        elif match := re.search(r"Used (\d+) registers", line):
            current["registers"] = int(match.group(1))
            if smem := re.search(r"(\d+) bytes smem", line):
                current["static_shared"] = int(smem.group(1))
    return functions


def triton_ptxas() -> str:
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    found = os.environ.get("TRITON_PTXAS_PATH") or (str(bundled) if bundled.exists() else shutil.which("ptxas"))
    if not found:
        raise SystemExit("gpu_static: no ptxas (Triton's bundled one, TRITON_PTXAS_PATH or PATH)")
    return found


def compile_triton(kernel, constants: dict, num_warps: int, image_type: str, ptxas: str, work: Path) -> dict:
    """Compile one variant for sm_90 and read its resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs = {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name], constexprs[(index,)] = "constexpr", constants[name]
        elif name.endswith("_ptr"):
            image = name in ("out_ptr", "a_ptr", "a2_ptr", "c_ptr", "noise_ptr")
            signature[name] = image_type if image else ("*i64" if name == "seeds_ptr" else "*fp32")
        else:
            signature[name] = "i32"
    compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps})  # fmt: skip
    ptx = work / "kernel.ptx"
    ptx.write_text(compiled.asm["ptx"])
    arch = re.search(r"\.target (sm_\w+)", compiled.asm["ptx"]).group(1)
    result = subprocess.run([ptxas, "-v", f"-arch={arch}", str(ptx), "-o", str(work / "kernel.cubin")],
                            capture_output=True, text=True, check=True)  # fmt: skip
    (usage,) = parse_ptxas(result.stdout + result.stderr)
    return {**usage, "shared": int(compiled.metadata.shared), "arch": arch}


def dct_flops(bh: int, bw: int, planes: int, form: str) -> int:
    """FLOPs a dct program executes on padded BH×BW tiles: two (SEPARABLE1: A x B) or four (forward and inverse
    DCT) dense products per plane, and for SEPARABLE1 the building of A and B once per program."""
    pair = 2 * (bh * bh * bw + bh * bw * bw)
    if form == "SEPARABLE1":
        return planes * pair + 2 * (bh**3 + bw**3)
    return planes * 2 * pair


def roofline(bytes_moved: float, flops: float) -> dict:
    memory_s, compute_s = bytes_moved / BANDWIDTH, flops / FP32_RATE
    return {"bytes": bytes_moved, "flops": flops, "intensity": flops / bytes_moved,
            "estimate_us": max(memory_s, compute_s) * 1e6, "bound": "memory" if memory_s >= compute_s else "compute",
            "effective_gbs_at_estimate": bytes_moved / max(memory_s, compute_s) / 1e9}  # fmt: skip


def triton_rows(ptxas: str, work: Path, progress) -> list[dict]:
    from softdiff_kernels import triton_common, triton_dct_filter, triton_pixel_filter

    value = lambda constant: int(getattr(constant, "value", constant))  # noqa: E731 - a one-line accessor
    noises = {"none": value(triton_common.NOISE_NONE), "tensor": value(triton_common.NOISE_TENSOR),
              "seeds": value(triton_common.NOISE_SEEDS)}  # fmt: skip
    forms = {name: value(getattr(triton_dct_filter, name)) for name in ("SEPARABLE1", "SEPARABLE2", "TABLE")}
    # (use, HAS_A2, HAS_C, noise): the loss residual C_t (x̂_0 − x_0); a sampler step with in-kernel noise.
    uses = (("loss residual", True, False, "none"), ("sampler step", True, True, "seeds"))
    rows = []
    for channels, height, width in SHAPES:
        config = triton_dct_filter.launch_config(channels, height, width)
        bh, bw, planes, warps = config["BH"], config["BW"], config["PLANES"], config["num_warps"]
        variants = [(form, use, "fp32") for form in forms for use in uses]
        variants.append(("SEPARABLE1", uses[1], "bf16"))
        for form, (use, has_a2, has_c, noise), storage in variants:
            image_type, size = STORAGE[storage]
            constants = {"FILTER": forms[form], "HAS_A2": has_a2, "HAS_C": has_c, "NOISE": noises[noise], "BH": bh,
                         "BW": bw, "PLANES": planes, "PRECISION": "ieee"}  # fmt: skip
            usage = compile_triton(triton_dct_filter._dct_filter_kernel, constants, warps, image_type, ptxas, work)
            programs = BATCH * math.ceil(channels / planes)
            elements = BATCH * channels * height * width
            operands = 1 + has_a2 + has_c + (noise == "tensor") + 1  # reads and the write
            row = {"kernel": "triton dct_filter", "shape": [channels, height, width], "form": form, "use": use,
                   "noise": noise, "storage": storage, "tile": [bh, bw], "planes_per_program": planes,
                   "warps_per_block": warps, **usage, **occupancy(usage["registers"], usage["shared"], warps),
                   "programs_at_batch": programs, "programs_per_sm_at_batch": programs / SMS,
                   **roofline(elements * size * operands, BATCH * math.ceil(channels / planes)
                              * dct_flops(bh, bw, planes, form))}  # fmt: skip
            rows.append(row)
            progress(row)
    for channels, height, width in ((1, 32, 32), (3, 64, 64)):
        config = triton_pixel_filter.launch_config(height, width)
        for noise in noises:
            constants = {"HAS_A2": True, "HAS_C": True, "NOISE": noises[noise], "BH": config["BH"], "BW": config["BW"]}
            usage = compile_triton(triton_pixel_filter._pixel_filter_kernel, constants, config["num_warps"], "*fp32",
                                   ptxas, work)  # fmt: skip
            elements = BATCH * channels * height * width
            operands = 4 + (noise == "tensor")  # a, a2, c (+ noise) read, y written
            programs = BATCH * channels * math.ceil(height / config["BH"])
            row = {"kernel": "triton pixel_filter", "shape": [channels, height, width], "form": "table",
                   "use": "masking step", "noise": noise, "storage": "fp32", "tile": [config["BH"], config["BW"]],
                   "planes_per_program": 1, "warps_per_block": config["num_warps"], **usage,
                   **occupancy(usage["registers"], usage["shared"], config["num_warps"]),
                   "programs_at_batch": programs, "programs_per_sm_at_batch": programs / SMS,
                   **roofline(elements * 4 * operands, elements * 5)}  # fmt: skip
            rows.append(row)
            progress(row)
    return rows


def cuda_rows(work: Path, progress) -> list[dict]:
    """Every instantiation in csrc/fused_filter.cu compiled for sm_90 with ptxas -v."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return []
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    includes = [f"-I{p}" for p in [*include_paths(device_type="cuda"), sysconfig.get_paths()["include"]]]
    command = [nvcc, "-O3", "-std=c++20", "-arch=sm_90", "-Xptxas", "-v", "-c", str(ROOT / "csrc" / "fused_filter.cu"),
               "-o", str(work / "fused_filter.o"), *includes, "-DTORCH_EXTENSION_NAME=_C",
               "--expt-relaxed-constexpr"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"gpu_static: nvcc failed:\n{result.stderr[-3000:]}")
    demangle = shutil.which("c++filt")
    rows = []
    for usage in parse_ptxas(result.stdout + result.stderr):
        name = usage["function"]
        if demangle:
            name = subprocess.run([demangle, name], capture_output=True, text=True).stdout.strip()
        if "float" not in name or "double" in name or ("dct_filter" not in name and "pixel_filter" not in name):
            continue  # the float32-accumulating instantiations run on a GPU; float64 ones are the reference's peers
        storage = "bf16" if "BFloat16" in name else ("fp16" if "Half" in name else "fp32")
        for channels, height, width in SHAPES[:3]:
            dct = "dct_filter" in name
            shared = (2 * height * width * 4 if dct else 0) + usage["static_shared"]
            elements = BATCH * channels * height * width
            size = {"fp32": 4, "bf16": 2, "fp16": 2}[storage]
            blocks = BATCH * channels if dct else math.ceil(elements / 4 / 256)
            pair = 2 * (height * height * width + height * width * width)  # X M_Wᵀ then M_H ·, and back
            flops = BATCH * channels * 2 * pair if dct else elements * 5
            row = {"kernel": "cuda " + ("dct_filter" if dct else "pixel_filter"), "shape": [channels, height, width],
                   "form": "any", "use": "sampler step", "noise": "seeds", "storage": storage, "tile": [height, width],
                   "planes_per_program": 1, "warps_per_block": 8, **usage, "function": name, "shared": shared,
                   **occupancy(usage["registers"], shared, 8), "programs_at_batch": blocks,
                   "programs_per_sm_at_batch": blocks / SMS, **roofline(elements * size * 4, flops)}  # fmt: skip
            rows.append(row)
            progress(row)
    return rows


def flags(row: dict) -> str:
    found = []
    if row["spill_stores"] or row["spill_loads"]:
        found.append(f"SPILL {row['spill_stores']}/{row['spill_loads']} B")
    if row["occupancy"] < 0.25:
        found.append("occupancy < 25%")
    return ", ".join(found) or "ok"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Static GPU report (sm_90), {meta['date']}", "",
             f"Compiled on {meta['machine']} without a GPU: Triton {meta['triton']}, ptxas {meta['ptxas']}, nvcc "
             f"{meta['nvcc']}, PyTorch {meta['torch']}. Occupancy and roofline as benchmarks/gpu_static.py states "
             f"(H200: {SMS} SMs, {BANDWIDTH / 1e12:.1f} TB/s, {FP32_RATE / 1e12:.0f} TFLOP/s FP32); batch {BATCH}.",
             "", "| kernel | C×H×W | form | use | storage | tile × planes | warps | regs | spill st/ld B | stack B | "
             "smem KiB | blocks/SM | occupancy (limit) | programs/SM at batch | FLOP/B | estimate µs (bound) | flag |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['kernel']} | {'×'.join(map(str, r['shape']))} | {r['form']} | "
                     f"{r['use']}, noise {r['noise']} | {r['storage']} "
                     f"| {r['tile'][0]}×{r['tile'][1]} × {r['planes_per_program']} | {r['warps_per_block']} | "
                     f"{r['registers']} | {r['spill_stores']}/{r['spill_loads']} | {r['stack']} | "
                     f"{r['shared'] / 1024:.1f} | {r['blocks_per_sm']} | {r['occupancy']:.0%} ({r['limited_by']}) | "
                     f"{r['programs_per_sm_at_batch']:.2f} | {r['intensity']:.1f} | {r['estimate_us']:.1f} "
                     f"({r['bound']}) | {flags(r)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def tool_version(path: str | None) -> str:
    if not path:
        return "absent"
    text = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release ([\d.]+), V([\d.]+)", text)
    return match.group(2) if match else text.strip().splitlines()[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="record folder (report.md, report.json)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the csrc/ compile")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite report.md from OUT/report.json")
    args = parser.parse_args(argv)
    if args.markdown_only:
        record = json.loads((args.out / "report.json").read_text())
        (args.out / "report.md").write_text(markdown(record["rows"], record["meta"]))
        return 0
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU, not the interpreter
    import torch
    import triton

    ptxas = triton_ptxas()
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
            "triton": triton.__version__, "torch": torch.__version__, "ptxas": tool_version(ptxas),
            "nvcc": tool_version(shutil.which("nvcc")), "command": " ".join(sys.argv)}  # fmt: skip
    progress = lambda r: print(f"{r['kernel']:>20} {r['shape']} {r['form']:>10} {r['use']:>13} {r['storage']}: "  # noqa: E731
                               f"{r['registers']} regs, spill {r['spill_stores']}/{r['spill_loads']}, "
                               f"occupancy {r['occupancy']:.0%} -> {flags(r)}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        rows = triton_rows(ptxas, Path(scratch), progress)
        if not args.no_cuda:
            rows += cuda_rows(Path(scratch), progress)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
