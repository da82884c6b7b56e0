"""Build script. Metadata lives in pyproject.toml; this file adds the optional CUDA extension
``softdiff_kernels._C`` built from csrc/ (the compiled backend of the fused ops).

    SOFTDIFF_CUDA_BUILD unset  build when the build environment's torch sees a CUDA GPU and a CUDA toolkit;
                               if that build fails, warn and install pure Python (the Triton/PyTorch backends)
    SOFTDIFF_CUDA_BUILD=1      always build, and fail loudly if it cannot (needs torch in the build
                               environment: pip install --no-build-isolation .)
    SOFTDIFF_CUDA_BUILD=0      never build
    TORCH_CUDA_ARCH_LIST, MAX_JOBS, CUDA_HOME   honoured as by torch.utils.cpp_extension
"""

import os
import warnings

from setuptools import setup

SOURCES = ["csrc/fused_filter.cu", "csrc/module.cpp"]


def cuda_build_options() -> dict:
    flag = os.environ.get("SOFTDIFF_CUDA_BUILD", "")
    if flag not in ("", "0", "1"):
        raise RuntimeError(f"SOFTDIFF_CUDA_BUILD must be 0, 1 or unset; got {flag!r}")
    if flag == "0":
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as error:
        if flag == "1":
            raise RuntimeError(
                "SOFTDIFF_CUDA_BUILD=1 needs torch in the build environment: pip install --no-build-isolation ."
            ) from error
        return {}
    if flag != "1" and not (torch.version.cuda and torch.cuda.is_available() and CUDA_HOME):
        return {}
    if CUDA_HOME is None:
        raise RuntimeError("SOFTDIFF_CUDA_BUILD=1 but no CUDA toolkit was found: set CUDA_HOME")
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # torch picks the architectures from the visible GPUs; with none it fails with an IndexError.
        raise RuntimeError(
            "SOFTDIFF_CUDA_BUILD=1 on a machine without a visible GPU: say which GPUs to compile for, e.g. "
            "TORCH_CUDA_ARCH_LIST='8.0;9.0' (A100, H100), and point CUDA_HOME at the toolkit folder if torch "
            f"guessed wrong (it uses {CUDA_HOME})"
        )

    class OptionalBuildExtension(BuildExtension):
        """Fails loudly when the build was asked for; otherwise warns and installs pure Python."""

        def run(self):
            try:
                super().run()
            except Exception as error:
                if flag == "1":
                    raise
                warnings.warn(
                    f"softdiff: the CUDA extension did not build ({error}); installing without it "
                    "(the Triton and PyTorch backends still work)",
                    stacklevel=1,
                )

    extension = CUDAExtension(
        "softdiff_kernels._C",
        sources=SOURCES,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},  # the C++ standard is torch's choice
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": OptionalBuildExtension}}


setup(**cuda_build_options())
