"""The compiled extension softdiff_kernels._C (csrc/), wherever it was built: it loads without a GPU, registers
the same op schemas as the Python ops, and on a GPU matches the reference."""

import pytest
import torch

import softdiff_kernels as sk
from softdiff_kernels.dispatch import cuda_extension_status
from softdiff_kernels.reference import dct_filter_reference, pixel_filter_reference

built = pytest.mark.skipif(not cuda_extension_status()[0], reason="softdiff_kernels._C is not built here")


@built
def test_extension_registers_the_python_schemas():
    for name in ("dct_filter", "pixel_filter"):
        compiled = str(getattr(torch.ops.softdiff_C, name).default._schema).split("::", 1)[1]
        python = str(getattr(torch.ops.softdiff, name).default._schema).split("::", 1)[1]
        assert compiled == python


@built
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (2, 5, 33, 17), (1, 2, 128, 96)])
def test_compiled_ops_match_the_reference(shape, dtype):
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
