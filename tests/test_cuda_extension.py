"""The compiled extension softdiff_kernels._C (csrc/), wherever it was built: it loads without a GPU, registers
the same op schemas as the Python ops, and on a GPU matches the reference.

Where it is missing these tests skip, except with SOFTDIFF_EXPECT_CUDA_EXTENSION=1 (benchmarks/gpu_check.sh sets it
after building csrc/): then a missing extension fails them, so that a broken build cannot pass as "skipped"."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import softdiff_kernels as sk
from softdiff_kernels.dispatch import cuda_extension_status
from softdiff_kernels.reference import dct_filter_reference, pixel_filter_reference

EXPECT_VARIABLE = "SOFTDIFF_EXPECT_CUDA_EXTENSION"


def extension_expected() -> bool:
    value = os.environ.get(EXPECT_VARIABLE, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{EXPECT_VARIABLE} must be 0, 1 or unset; got {value!r}")
    return value == "1"


def require_extension() -> None:
    """Skip where softdiff_kernels._C is not built, or fail where its build was requested."""
    loaded, why = cuda_extension_status()
    if not loaded:
        if extension_expected():
            pytest.fail(f"{EXPECT_VARIABLE}=1: the build of the CUDA extension was requested, but softdiff_kernels._C "
                        f"is missing ({why})", pytrace=False)  # fmt: skip
        pytest.skip("softdiff_kernels._C is not built here")


@pytest.fixture
def extension():
    require_extension()


def test_extension_loads_where_its_build_was_requested():
    require_extension()
    assert cuda_extension_status()[0]
    assert hasattr(torch.ops.softdiff_C, "dct_filter") and hasattr(torch.ops.softdiff_C, "pixel_filter")


def run_expectation_test(**env: str) -> subprocess.CompletedProcess:
    """test_extension_loads_where_its_build_was_requested in a fresh interpreter where softdiff_kernels._C cannot be
    imported (a None entry in sys.modules), with ``env`` on top of ours."""
    root = Path(__file__).resolve().parents[1]
    script = (
        "import sys\n"
        "sys.modules['softdiff_kernels._C'] = None  # import softdiff_kernels._C raises ImportError\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', "
        f"{__file__ + '::test_extension_loads_where_its_build_was_requested'!r}]))\n"
    )
    full_env = {k: v for k, v in os.environ.items() if k != EXPECT_VARIABLE} | env
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=root,
                          env=full_env)  # fmt: skip


def test_a_requested_but_missing_extension_fails_instead_of_skipping():
    result = run_expectation_test(**{EXPECT_VARIABLE: "1"})
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 failed" in result.stdout and "skipped" not in result.stdout
    assert f"{EXPECT_VARIABLE}=1: the build of the CUDA extension was requested" in result.stdout
    assert "softdiff_kernels._C is missing" in result.stdout
    for unset in ({}, {EXPECT_VARIABLE: "0"}):
        result = run_expectation_test(**unset)
        assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
        assert "softdiff_kernels._C is not built here" in result.stdout


def test_extension_registers_the_python_schemas(extension):
    for name in ("dct_filter", "pixel_filter"):
        compiled = str(getattr(torch.ops.softdiff_C, name).default._schema).split("::", 1)[1]
        python = str(getattr(torch.ops.softdiff, name).default._schema).split("::", 1)[1]
        assert compiled == python


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (2, 5, 33, 17), (1, 2, 128, 96)])
def test_compiled_ops_match_the_reference(extension, shape, dtype):
    generator = torch.Generator().manual_seed(0)
    batch, _, height, width = shape
    a, a2, c = (torch.randn(shape, generator=generator).to(dtype) for _ in range(3))
    terms = dict(rows=torch.rand(batch, 2, height, generator=generator), cols=torch.rand(batch, 2, width,
                 generator=generator), a2=a2, alpha=torch.rand(batch, generator=generator), c=c,
                 beta=torch.rand(batch, generator=generator), seeds=torch.arange(batch, dtype=torch.int64) + 7,
                 stream=3)  # fmt: skip
    expected = dct_filter_reference(
        a.double(), **{k: (v.double() if k in ("a2", "c") else v) for k, v in terms.items()}
    )
    out = torch.ops.softdiff_C.dct_filter(a.cuda(), *(terms[k].cuda() if k in terms else None for k in (
        "rows", "cols", "table", "a2", "alpha", "c", "beta", "noise", "seeds")), 3)  # fmt: skip
    tolerance = 3e-5 if dtype == torch.float32 else 1.6e-2
    assert (out.cpu().double() - expected).abs().max() <= tolerance * (1 + expected.abs().max())
    table = torch.rand(batch, height, width, generator=generator)
    expected = pixel_filter_reference(a.double(), table=table, beta=terms["beta"], seeds=terms["seeds"], stream=3)
    out = torch.ops.softdiff_C.pixel_filter(a.cuda(), table.cuda(), None, None, None, terms["beta"].cuda(), None,
                                            terms["seeds"].cuda(), 3)  # fmt: skip
    assert (out.cpu().double() - expected).abs().max() <= tolerance * (1 + expected.abs().max())
    assert sk.backend("cuda") == "cuda"
