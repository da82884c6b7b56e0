"""Compile every Triton kernel variant for an sm_90 GPU without one (run by tests/test_kernels.py in a process
without TRITON_INTERPRET): the interpreter that runs the kernels on the CPU skips checks the GPU compiler makes,
such as Triton >= 3.0 refusing globals that are not tl.constexpr. Prints one line per variant."""

import itertools
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from softdiff_kernels import triton_common, triton_dct_filter, triton_pixel_filter

TARGET = GPUTarget("cuda", 90, 32)
IMAGE_POINTERS = ("out_ptr", "a_ptr", "a2_ptr", "c_ptr", "noise_ptr")


def compile_variant(kernel, constants: dict, image_type: str) -> None:
    signature, constexprs = {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name], constexprs[(index,)] = "constexpr", constants[name]
        elif name.endswith("_ptr"):
            signature[name] = image_type if name in IMAGE_POINTERS else ("*i64" if name == "seeds_ptr" else "*fp32")
        else:
            signature[name] = "i32"
    triton.compile(ASTSource(kernel, signature, constexprs), target=TARGET, options={"num_warps": 4})
    print(kernel.__name__, constants, image_type, "ok", flush=True)


def value_of(constant) -> int:
    return int(getattr(constant, "value", constant))


def main() -> int:
    dct, pixel = triton_dct_filter, triton_pixel_filter
    filters = tuple(value_of(x) for x in (dct.SEPARABLE1, dct.SEPARABLE2, dct.TABLE))
    common = triton_common
    noises = tuple(value_of(x) for x in (common.NOISE_NONE, common.NOISE_TENSOR, common.NOISE_SEEDS))
    for form, noise in itertools.product(filters, noises):
        constants = dict(FILTER=form, HAS_A2=True, HAS_C=True, NOISE=noise, BH=16, BW=32, PLANES=2, PRECISION="ieee")
        compile_variant(dct._dct_filter_kernel, constants, "*fp32")
    compile_variant(dct._dct_filter_kernel, dict(FILTER=filters[0], HAS_A2=False, HAS_C=False, NOISE=noises[2], BH=16,
                                                 BW=16, PLANES=1, PRECISION="ieee"), "*bf16")  # fmt: skip
    for noise in noises:
        compile_variant(pixel._pixel_filter_kernel, dict(HAS_A2=True, HAS_C=True, NOISE=noise, BH=4, BW=32), "*fp16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
