"""The fused op family on every backend (Triton runs in its interpreter without a GPU) against the float64
reference: shapes, dtypes, strides, in-kernel noise, gradients, torch.library registration, dispatch."""

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch

import softdiff as sd
import softdiff_kernels as sk
import softdiff_kernels.ops as ops_module
from softdiff_kernels.dispatch import can_run, notice_fallback
from softdiff_kernels.ops import MAX_FUSED_SIZE
from softdiff_kernels.reference import _flush_tiny, dct_filter_reference, pixel_filter_reference
from tests.conftest import requires_cuda

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [name for name in ("cuda", "triton", "torch") if can_run(name, torch.device(DEVICE))[0]]
TOLERANCE = {torch.float32: 3e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-12}
# Shapes: odd batch and channel counts, non-square, sizes 8..128.
SHAPES = [(3, 3, 8, 8), (1, 5, 7, 12), (2, 1, 33, 17), (2, 3, 64, 40), (1, 2, 128, 96)]


def fits(name, shape):
    """Whether backend ``name`` runs a dct_filter of this shape itself (larger planes fall back to the reference)."""
    return name == "torch" or max(shape[-2:]) <= MAX_FUSED_SIZE[name]


# (backend, shape) pairs each backend really runs: (1, 2, 128, 96) is above Triton's 64, so it is paired with the
# torch (and cuda) backends only; test_planes_above_the_triton_limit_fall_back_explicitly covers it under Triton.
BACKEND_SHAPES = [
    pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")
    for name in BACKENDS
    for shape in SHAPES
    if fits(name, shape)
]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("SOFTDIFF_BACKEND", request.param)
    return request.param


@pytest.fixture
def reference_calls(monkeypatch):
    """The ops ("dct", "pixel") whose call went to the PyTorch reference, in order: empty when a fused kernel ran."""
    calls = []
    for name, tag in (("dct_filter_reference", "dct"), ("pixel_filter_reference", "pixel")):
        original = getattr(ops_module, name)
        monkeypatch.setattr(
            ops_module, name, lambda *args, _f=original, _tag=tag, **kwargs: calls.append(_tag) or _f(*args, **kwargs)
        )
    return calls


def random_terms(shape, dtype, generator, *, filter_kind, affine, noise_kind):
    batch, _, height, width = shape
    tensors = {"a": torch.randn(shape, generator=generator)}
    if filter_kind == "table":
        tensors["table"] = torch.rand(batch, height, width, generator=generator)
    else:
        terms = 1 if filter_kind == "separable" else 2
        tensors["rows"] = torch.rand(batch, terms, height, generator=generator) * 2 - 0.5
        tensors["cols"] = torch.rand(batch, terms, width, generator=generator)
    if affine:
        tensors |= {"a2": torch.randn(shape, generator=generator), "c": torch.randn(shape, generator=generator),
                    "alpha": torch.rand(batch, generator=generator)}  # fmt: skip
    if noise_kind != "none":
        tensors["beta"] = torch.rand(batch, generator=generator) + 0.5
    if noise_kind == "tensor":
        tensors["noise"] = torch.randn(shape, generator=generator)
    if noise_kind == "seeds":
        tensors["seeds"] = torch.randint(0, 2**62, (batch,), generator=generator)
    image_keys = ("a", "a2", "c", "noise")
    out = {k: (v.to(dtype) if k in image_keys else v).to(DEVICE) for k, v in tensors.items()}
    return out | ({"stream": 7} if noise_kind == "seeds" else {})


def float64_reference(op_reference, terms):
    """The op on the rounded inputs, in float64 (same seeded noise: the generator is shared)."""
    terms64 = {k: (v.double().cpu() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
               for k, v in terms.items()}  # fmt: skip
    terms64 = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in terms64.items()}
    return op_reference(terms64.pop("a"), **terms64)


def assert_matches(out, expected, dtype):
    scale = 1 + expected.abs().max().item()
    error = (out.double().cpu() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"error {error:.3g} > {TOLERANCE[dtype] * scale:.3g}"


def scipy_dct_filter(terms):
    """The op built independently of softdiff_kernels, in float64: scipy's orthonormal DCT-II of each plane of
    a − a2, times the filter from its definition (``table``, or F[b, k, l] = Σ_j rows[b, j, k] cols[b, j, l]),
    scipy's inverse, plus α c + β η (explicit noise only) -> float64 ``[B, C, H, W]`` on the CPU."""
    f64 = {k: v.detach().cpu().double().numpy() for k, v in terms.items() if k != "stream" and v.is_floating_point()}
    assert "seeds" not in terms, "seeded noise has no independent construction here"
    x = f64["a"] - f64["a2"] if "a2" in f64 else f64["a"]
    if "table" in f64:
        spectrum = f64["table"]
    else:
        spectrum = np.einsum("bjk,bjl->bkl", f64["rows"], f64["cols"])
    coefficients = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    y = scipy.fft.idctn(spectrum[:, None] * coefficients, type=2, norm="ortho", axes=(-2, -1))
    if "c" in f64:
        y = y + f64["alpha"][:, None, None, None] * f64["c"]
    if "noise" in f64:
        y = y + f64["beta"][:, None, None, None] * f64["noise"]
    return torch.from_numpy(y)


def assert_ran(name, dtype, reference_calls):
    """The backend ``name`` itself ran the op, not a silent fallback to the reference (float64 always runs it)."""
    expected = ["dct"] if name == "torch" or dtype == torch.float64 else []
    assert reference_calls == expected, f"backend {name}: reference calls {reference_calls}, expected {expected}"


@pytest.mark.parametrize(("backend", "shape"), BACKEND_SHAPES, indirect=["backend"])
@pytest.mark.parametrize("filter_kind", ["separable", "separable2", "table"])
@pytest.mark.parametrize(("affine", "noise_kind"), [(False, "none"), (True, "tensor"), (True, "seeds")])
def test_dct_filter_matches_float64_reference(
    backend, shape, filter_kind, affine, noise_kind, generator, reference_calls
):
    terms = random_terms(shape, torch.float32, generator, filter_kind=filter_kind, affine=affine, noise_kind=noise_kind)
    out = sk.dct_filter(**terms)
    assert_ran(backend, torch.float32, reference_calls)
    assert out.shape == shape and out.dtype == torch.float32 and out.is_contiguous()
    assert_matches(out, float64_reference(dct_filter_reference, terms), torch.float32)


@pytest.mark.parametrize(("backend", "shape"), BACKEND_SHAPES, indirect=["backend"])
@pytest.mark.parametrize("filter_kind", ["separable", "separable2", "table"])
@pytest.mark.parametrize("affine", [False, True])
def test_dct_filter_matches_an_independent_scipy_construction(
    backend, shape, filter_kind, affine, generator, reference_calls
):
    """Against scipy's DCT and the filter's definition, not against the reference (which the other tests trust):
    a reference that mis-builds or mis-orients its spectrum fails here, and so does every backend."""
    terms = random_terms(shape, torch.float32, generator, filter_kind=filter_kind, affine=affine,
                         noise_kind="tensor" if affine else "none")  # fmt: skip
    expected = scipy_dct_filter(terms)
    assert_matches(sk.dct_filter(**terms), expected, torch.float32)
    assert_ran(backend, torch.float32, reference_calls)
    assert_matches(dct_filter_reference(**terms), expected, torch.float32)  # the reference itself, undispatched


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("filter_kind", ["separable", "separable2", "table"])
def test_dct_filter_storage_dtypes_match_the_scipy_construction(
    backend, dtype, filter_kind, generator, reference_calls
):
    terms = random_terms((3, 3, 24, 20), dtype, generator, filter_kind=filter_kind, affine=True, noise_kind="tensor")
    out = sk.dct_filter(**terms)
    assert out.dtype == dtype
    assert_ran(backend, dtype, reference_calls)
    assert_matches(out, scipy_dct_filter(terms), dtype)


def test_planes_above_the_triton_limit_fall_back_explicitly(monkeypatch, generator, reference_calls):
    """SHAPES' (1, 2, 128, 96) is above the Triton kernel's 64: with the Triton backend chosen, the dispatch runs the
    reference for it (and warns), never the Triton launcher, while a 64x40 plane does reach the launcher. A stand-in
    launcher, so that this runs without Triton too."""
    launched = []
    stand_in = types.ModuleType("softdiff_kernels.triton_dct_filter")
    stand_in.dct_filter_triton = lambda a, **terms: launched.append(tuple(a.shape)) or dct_filter_reference(a, **terms)
    monkeypatch.setitem(sys.modules, "softdiff_kernels.triton_dct_filter", stand_in)
    monkeypatch.setattr(ops_module, "fused_backend", lambda a: "triton")
    notice_fallback.cache_clear()  # the warning comes once per process; other tests may have had it
    assert MAX_FUSED_SIZE["triton"] == 64 and not fits("triton", SHAPES[-1]) and fits("triton", SHAPES[-2])
    large = random_terms(SHAPES[-1], torch.float32, generator, filter_kind="separable2", affine=True,
                         noise_kind="tensor")  # fmt: skip
    with pytest.warns(RuntimeWarning, match="planes larger than 64x64 have no fused triton kernel"):
        out = sk.dct_filter(**large)
    assert launched == [] and reference_calls == ["dct"]
    assert_matches(out, scipy_dct_filter(large), torch.float32)
    small = random_terms(SHAPES[-2], torch.float32, generator, filter_kind="separable2", affine=True,
                         noise_kind="tensor")  # fmt: skip
    assert_matches(sk.dct_filter(**small), scipy_dct_filter(small), torch.float32)
    assert launched == [SHAPES[-2]] and reference_calls == ["dct"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("affine", "noise_kind"), [(True, "tensor"), (False, "seeds")])
def test_dct_filter_storage_dtypes(backend, dtype, affine, noise_kind, generator):
    terms = random_terms((3, 3, 24, 20), dtype, generator, filter_kind="separable2", affine=affine,
                         noise_kind=noise_kind)  # fmt: skip
    out = sk.dct_filter(**terms)
    assert out.dtype == dtype
    assert_matches(out, float64_reference(dct_filter_reference, terms), dtype)


@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (2, 1, 33, 17), (1, 2, 7, 130)])
@pytest.mark.parametrize(("affine", "noise_kind"), [(False, "none"), (True, "tensor"), (True, "seeds")])
@pytest.mark.parametrize("broadcast", [False, True])
def test_pixel_filter_matches_float64_reference(backend, shape, affine, noise_kind, broadcast, generator):
    terms = random_terms(shape, torch.float32, generator, filter_kind="table", affine=affine, noise_kind=noise_kind)
    if broadcast:
        terms["table"] = terms["table"][:, :1, :1].contiguous()
    out = sk.pixel_filter(**terms)
    assert_matches(out, float64_reference(pixel_filter_reference, terms), torch.float32)


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
def test_ops_stay_float32_inside_autocast(backend, autocast_dtype, generator):
    """An enclosing torch.autocast (as around a network under AMP) must not round the ops' matmuls: float32 in,
    float32 accuracy out, on every backend, and dct2/idct2 likewise."""
    terms = random_terms((3, 3, 24, 20), torch.float32, generator, filter_kind="separable2", affine=True,
                         noise_kind="seeds")  # fmt: skip
    pixel_terms = random_terms((3, 3, 24, 20), torch.float32, generator, filter_kind="table", affine=True,
                               noise_kind="tensor")  # fmt: skip
    x = torch.randn(3, 3, 24, 20, generator=generator).to(DEVICE)
    with torch.autocast(torch.device(DEVICE).type, dtype=autocast_dtype):
        outs = (sk.dct_filter(**terms), sk.pixel_filter(**pixel_terms), sk.dct2(x), sk.idct2(x))
    assert all(out.dtype == torch.float32 for out in outs)
    assert_matches(outs[0], float64_reference(dct_filter_reference, terms), torch.float32)
    assert_matches(outs[1], float64_reference(pixel_filter_reference, pixel_terms), torch.float32)
    assert_matches(outs[2], sk.dct2(x.double().cpu()), torch.float32)
    assert_matches(outs[3], sk.idct2(x.double().cpu()), torch.float32)


def test_strided_inputs(backend, generator):
    """Non-contiguous a, a2, c, noise and filters are read through their strides."""
    base = torch.randn(4, 10, 9, 3, generator=generator).to(DEVICE)
    a = base.permute(0, 3, 1, 2)  # [4, 3, 10, 9], channels last in memory
    c = torch.randn(4, 3, 20, 9, generator=generator).to(DEVICE)[:, :, ::2]
    rows = torch.rand(4, 1, 20, generator=generator).to(DEVICE)[..., ::2]
    cols = torch.rand(4, 1, 18, generator=generator).to(DEVICE)[..., ::2]
    alpha, beta = (torch.rand(4, generator=generator).to(DEVICE) for _ in range(2))
    terms = dict(a=a, rows=rows, cols=cols, a2=a.flip(0), alpha=alpha, c=c, beta=beta,
                 noise=c.transpose(2, 3).contiguous().transpose(2, 3))  # fmt: skip
    assert not any(t.is_contiguous() for t in (a, c, rows, cols, terms["noise"]))
    assert_matches(sk.dct_filter(**terms), float64_reference(dct_filter_reference, terms), torch.float32)
    table = torch.rand(4, 9, 10, generator=generator).to(DEVICE).transpose(1, 2)
    terms = dict(a=a, table=table, c=c, alpha=torch.rand(4, generator=generator).to(DEVICE))
    assert_matches(sk.pixel_filter(**terms), float64_reference(pixel_filter_reference, terms), torch.float32)


@pytest.mark.parametrize("op", ["dct", "pixel"])
def test_outputs_keep_a_channels_last_layout(backend, op, generator):
    """Every backend returns torch.empty_like(a)'s layout (so does the fake kernel torch.compile plans with): a
    channels-last batch stays channels-last for the network that reads it."""
    kind = "separable" if op == "dct" else "table"
    terms = random_terms((3, 4, 12, 10), torch.float32, generator, filter_kind=kind, affine=True, noise_kind="seeds")
    terms["a"] = terms["a"].contiguous(memory_format=torch.channels_last)
    op_fn, reference = (
        (sk.dct_filter, dct_filter_reference) if op == "dct" else (sk.pixel_filter, pixel_filter_reference)
    )
    out = op_fn(**terms)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.stride() == terms["a"].stride()
    assert_matches(out, float64_reference(reference, terms), torch.float32)
    torch.library.opcheck(torch.ops.softdiff.dct_filter if op == "dct" else torch.ops.softdiff.pixel_filter,
                          (terms["a"], *([terms["rows"], terms["cols"], None] if op == "dct" else [terms["table"]]),
                           terms["a2"], terms["alpha"], terms["c"], terms["beta"], None, terms["seeds"], 7),
                          test_utils=("test_schema", "test_faketensor"))  # fmt: skip


@pytest.mark.parametrize(("op", "filter_kind"), [("dct", "separable"), ("dct", "table"), ("pixel", "table")])
def test_per_sample_vectors_are_read_through_their_strides(backend, op, filter_kind, generator):
    """alpha, beta and seeds may be views: a broadcast scalar (stride 0) or every other entry of a longer vector."""
    terms = random_terms((4, 3, 12, 10), torch.float32, generator, filter_kind=filter_kind, affine=True,
                         noise_kind="seeds")  # fmt: skip
    views = dict(alpha=torch.rand(1, generator=generator).to(DEVICE).expand(4),
                 beta=torch.rand(8, generator=generator).to(DEVICE)[::2],
                 seeds=torch.randint(0, 2**62, (8,), generator=generator).to(DEVICE)[1::2])  # fmt: skip
    assert not any(v.is_contiguous() for v in views.values())
    op_fn, reference = (
        (sk.dct_filter, dct_filter_reference) if op == "dct" else (sk.pixel_filter, pixel_filter_reference)
    )
    expected = float64_reference(reference, terms | {k: v.contiguous() for k, v in views.items()})
    assert_matches(op_fn(**(terms | views)), expected, torch.float32)


def test_float64_input_is_computed_in_float64_on_every_backend(backend, generator):
    terms = random_terms((2, 3, 20, 12), torch.float64, generator, filter_kind="separable2", affine=True,
                         noise_kind="tensor")  # fmt: skip
    assert_matches(sk.dct_filter(**terms), float64_reference(dct_filter_reference, terms), torch.float64)
    terms = random_terms((2, 3, 20, 12), torch.float64, generator, filter_kind="table", affine=True,
                         noise_kind="tensor")  # fmt: skip
    assert_matches(sk.pixel_filter(**terms), float64_reference(pixel_filter_reference, terms), torch.float64)


@pytest.mark.parametrize("op", ["dct", "pixel"])
def test_mixed_storage_dtypes_are_not_rounded_to_the_dtype_of_a(backend, op, generator):
    """A bfloat16 x̂_0 minus a float32 x_0 close to it (the soft loss under AMP): the difference is formed in float32,
    so the result is right to bfloat16's rounding of the (small) result, not of the inputs."""
    shape = (3, 3, 16, 12)
    a = torch.randn(shape, generator=generator).to(DEVICE).bfloat16()
    a2 = a.float() + 1e-3 * torch.randn(shape, generator=generator).to(DEVICE)  # bfloat16 rounding of a2: ~4e-3
    c = torch.randn(shape, generator=generator).to(DEVICE)
    alpha = 1e-3 * torch.rand(3, generator=generator).to(DEVICE)
    if op == "dct":
        filters = dict(rows=torch.rand(3, 1, 16, generator=generator).to(DEVICE),
                       cols=torch.rand(3, 1, 12, generator=generator).to(DEVICE))  # fmt: skip
        op_fn, reference = sk.dct_filter, dct_filter_reference
    else:
        filters = dict(table=torch.rand(3, 16, 12, generator=generator).to(DEVICE))
        op_fn, reference = sk.pixel_filter, pixel_filter_reference
    out = op_fn(a, a2=a2, alpha=alpha, c=c, **filters)
    assert out.dtype == torch.bfloat16
    expected = reference(a.double().cpu(), a2=a2.double().cpu(), alpha=alpha.double().cpu(), c=c.double().cpu(),
                         **{k: v.double().cpu() for k, v in filters.items()})  # fmt: skip
    error = (out.double().cpu() - expected).abs().max().item()
    assert error <= 1e-2 * expected.abs().max().item(), (
        f"error {error:.3g} against a result of size {expected.abs().max():.3g}"
    )


def noise_of(op, shape, seeds, stream=0):
    """η alone: the op with a zero filter and β = 1."""
    batch, _, height, width = shape
    a = torch.ones(shape, device=DEVICE)
    beta = torch.ones(batch, device=DEVICE)
    seeds = torch.as_tensor(seeds, device=DEVICE)
    if op == "dct":
        zeros_h, zeros_w = torch.zeros(batch, 1, height, device=DEVICE), torch.zeros(batch, 1, width, device=DEVICE)
        return sk.dct_filter(a, rows=zeros_h, cols=zeros_w, beta=beta, seeds=seeds, stream=stream)
    return sk.pixel_filter(a, table=torch.zeros(batch, 1, 1, device=DEVICE), beta=beta, seeds=seeds, stream=stream)


@pytest.mark.parametrize("op", ["dct", "pixel"])
def test_in_kernel_noise(backend, op):
    shape = (64, 3, 16, 13)
    eta = noise_of(op, shape, list(range(100, 164)), stream=3)
    assert torch.equal(eta, noise_of(op, shape, list(range(100, 164)), stream=3))  # bit-identical
    torch.testing.assert_close(eta.cpu(), sk.seeded_normal(torch.arange(100, 164), shape[1:], 3), rtol=0, atol=2e-6)
    assert not torch.equal(eta[:1], noise_of(op, shape[1:] and (1, *shape[1:]), [99], stream=3))
    flat = eta.double().flatten()
    assert abs(flat.mean().item()) < 4 / flat.numel() ** 0.5 and abs(flat.std().item() - 1) < 0.01
    planes = eta.double().flatten(2)  # [B, C, H*W]: correlation between planes of the same sample
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert abs(torch.corrcoef(torch.stack([planes[:, i].flatten(), planes[:, j].flatten()]))[0, 1]) < 0.03


@pytest.mark.parametrize("op", ["dct", "pixel"])
@pytest.mark.parametrize("stream", [2**31 - 1, 2**31, 2**32 - 1])
def test_in_kernel_noise_at_the_top_of_the_stream_range(backend, op, stream):
    shape, seeds = (2, 2, 8, 9), [11, 12]
    eta = noise_of(op, shape, seeds, stream=stream)
    torch.testing.assert_close(eta.cpu(), sk.seeded_normal(torch.tensor(seeds), shape[1:], stream), rtol=0, atol=2e-6)


def test_in_kernel_noise_does_not_depend_on_the_tiling(generator):
    if "triton" not in BACKENDS:
        pytest.skip("no Triton backend here")
    from softdiff_kernels.triton_dct_filter import dct_filter_triton
    from softdiff_kernels.triton_pixel_filter import pixel_filter_triton

    shape = (2, 5, 12, 11)
    a = torch.randn(shape, generator=generator).to(DEVICE)
    seeds, beta = torch.tensor([5, 6], device=DEVICE), torch.ones(2, device=DEVICE)
    rows, cols = (
        torch.rand(2, 1, 12, generator=generator).to(DEVICE),
        torch.rand(2, 1, 11, generator=generator).to(DEVICE),
    )
    outs = [dct_filter_triton(a, rows=rows, cols=cols, beta=beta, seeds=seeds, stream=2, planes_per_program=p)
            for p in (1, 2, 4)]  # fmt: skip
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    table = torch.rand(2, 12, 11, generator=generator).to(DEVICE)
    outs = [
        pixel_filter_triton(a, table=table, beta=beta, seeds=seeds, stream=2, rows_per_program=r) for r in (1, 4, 16)
    ]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@requires_cuda
@pytest.mark.parametrize("op", ["dct", "pixel"])
def test_batches_past_2_to_the_31_elements(backend, op):
    """Offsets b · C·H·W pass 2^31 in the last samples: the kernels must index in 64 bits (about 9 GB of GPU memory)."""
    if backend == "torch":
        pytest.skip("the reference indexes through PyTorch")
    batch = 2**31 // (3 * 64 * 64) + 2
    generator = torch.Generator(DEVICE).manual_seed(5)
    a = torch.randn(batch, 3, 64, 64, generator=generator, device=DEVICE, dtype=torch.float16)
    terms = dict(beta=torch.rand(batch, device=DEVICE, generator=generator),
                 seeds=torch.randint(0, 2**62, (batch,), device=DEVICE, generator=generator), stream=1)  # fmt: skip
    if op == "dct":
        terms |= dict(rows=torch.rand(batch, 1, 64, device=DEVICE, generator=generator),
                      cols=torch.rand(batch, 1, 64, device=DEVICE, generator=generator))  # fmt: skip
        op_fn, reference = sk.dct_filter, dct_filter_reference
    else:
        terms["table"] = torch.rand(batch, 64, 64, device=DEVICE, generator=generator)
        op_fn, reference = sk.pixel_filter, pixel_filter_reference
    out = op_fn(a, **terms)
    tail = slice(batch - 2, batch)
    expected = float64_reference(reference, {"a": a[tail]} | {k: (v[tail] if isinstance(v, torch.Tensor) else v)
                                                                for k, v in terms.items()})  # fmt: skip
    assert_matches(out[tail], expected, torch.float16)


def test_every_triton_kernel_variant_compiles_for_a_gpu():
    """The interpreter runs the kernels here but skips the GPU compiler's checks: compile each variant for sm_90."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_kernels_for_gpu.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count(" ok") == 13


def test_gradients_match_the_reference(backend, generator):
    """The registered backward (C is its own adjoint) on this backend against autograd through the float64
    reference ops."""
    terms = random_terms((3, 2, 10, 12), torch.float32, generator, filter_kind="separable", affine=True,
                         noise_kind="seeds")  # fmt: skip
    weight = torch.randn(3, 2, 10, 12, generator=generator).to(DEVICE)
    leaves = {k: terms[k].clone().requires_grad_(True) for k in ("a", "a2", "c")}
    (sk.dct_filter(**(terms | leaves)) * weight).sum().backward()
    reference = {k: v.detach().double().cpu().requires_grad_(True) for k, v in leaves.items()}
    others = {k: (v.double().cpu() if k not in ("seeds", "stream") else (v.cpu() if k == "seeds" else v))
              for k, v in terms.items() if k not in leaves}  # fmt: skip
    (dct_filter_reference(reference["a"], a2=reference["a2"], c=reference["c"], **others) * weight.double().cpu()
     ).sum().backward()  # fmt: skip
    for k in leaves:
        assert_matches(leaves[k].grad, reference[k].grad, torch.float32)


def test_gradcheck_float64_through_the_ops(generator):
    a = torch.randn(2, 2, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    a2 = torch.randn(2, 2, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 2, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    rows, cols = (
        torch.rand(2, 2, 6, dtype=torch.float64, generator=generator),
        torch.rand(2, 2, 5, dtype=torch.float64, generator=generator),
    )
    alpha = torch.rand(2, dtype=torch.float64, generator=generator)
    assert torch.autograd.gradcheck(lambda a, a2, c: sk.dct_filter(a, rows=rows, cols=cols, a2=a2, alpha=alpha, c=c),
                                    (a, a2, c))  # fmt: skip
    table = torch.rand(2, 6, 5, dtype=torch.float64, generator=generator)
    assert torch.autograd.gradcheck(lambda a, a2, c: sk.pixel_filter(a, table=table, a2=a2, alpha=alpha, c=c),
                                    (a, a2, c))  # fmt: skip
    assert torch.autograd.gradgradcheck(lambda a: sk.dct_filter(a, table=table), (a,))


@pytest.mark.parametrize("leaf", ["a", "a2", "c"])
def test_gradient_of_one_input_alone(leaf, generator):
    """Only the inputs that ask for a gradient get one (the backward skips the rest), and it is the right one:
    ∂/∂a = C w, ∂/∂a2 = −C w, ∂/∂c = α w for a weight w."""
    a, a2, c, weight = (torch.randn(2, 2, 6, 5, generator=generator, dtype=torch.float64) for _ in range(4))
    rows, cols = (
        torch.rand(2, 2, 6, dtype=torch.float64, generator=generator),
        torch.rand(2, 2, 5, dtype=torch.float64, generator=generator),
    )
    alpha = torch.rand(2, dtype=torch.float64, generator=generator) + 0.5
    inputs = {"a": a, "a2": a2, "c": c}
    inputs[leaf] = inputs[leaf].clone().requires_grad_(True)
    out = sk.dct_filter(inputs["a"], rows=rows, cols=cols, a2=inputs["a2"], alpha=alpha, c=inputs["c"])
    (out * weight).sum().backward()
    c_weight = dct_filter_reference(weight, rows=rows, cols=cols)
    expected = {"a": c_weight, "a2": -c_weight, "c": alpha.view(-1, 1, 1, 1) * weight}[leaf]
    assert_matches(inputs[leaf].grad, expected, torch.float64)
    table = torch.rand(2, 6, 5, dtype=torch.float64, generator=generator)
    inputs = {"a": a, "a2": a2, "c": c}
    inputs[leaf] = inputs[leaf].clone().requires_grad_(True)
    (sk.pixel_filter(inputs["a"], table=table, a2=inputs["a2"], alpha=alpha, c=inputs["c"]) * weight).sum().backward()
    expected = {"a": table[:, None] * weight, "a2": -table[:, None] * weight, "c": alpha.view(-1, 1, 1, 1) * weight}
    assert_matches(inputs[leaf].grad, expected[leaf], torch.float64)


def test_subnormal_filter_entries_are_flushed_without_changing_the_result(generator):
    """A blur at a large level has factors down to 1e-40 and below; the reference sets those under √(smallest
    normal) to zero (subnormal arithmetic is slow on CPUs) and still matches the float64 result in float32."""
    x = torch.randn(2, 3, 16, 16, generator=generator)
    levels = torch.tensor([7.0, 12.0], dtype=torch.float64)
    rows = torch.stack([sd.DCTBlur.axis_factors(levels, 16), -0.5 * sd.DCTBlur.axis_factors(0.8 * levels, 16)], 1)
    cols = torch.stack([sd.DCTBlur.axis_factors(levels, 16), sd.DCTBlur.axis_factors(0.8 * levels, 16)], 1)
    spectrum = torch.einsum("bjh,bjw->bhw", rows.float(), cols.float())
    tiny = torch.finfo(torch.float32).tiny
    assert bool(((spectrum != 0) & (spectrum.abs() < tiny**0.5)).any())  # the case: such entries exist
    flushed = _flush_tiny(spectrum, (-2, -1))
    small = spectrum.abs() < tiny**0.5 * spectrum.abs().amax(dim=(-2, -1), keepdim=True)  # per sample's largest
    assert bool((flushed[small] == 0).all()) and torch.equal(flushed[~small], spectrum[~small])
    assert torch.equal(_flush_tiny(spectrum * 2**-20, (-2, -1)), flushed * 2**-20)  # relative, not absolute
    got = dct_filter_reference(x, rows=rows.float(), cols=cols.float())
    assert_matches(got, dct_filter_reference(x.double(), rows=rows, cols=cols), torch.float32)


def test_opcheck(backend, generator):
    terms = random_terms((2, 3, 9, 8), torch.float32, generator, filter_kind="separable2", affine=True,
                         noise_kind="seeds")  # fmt: skip
    terms["a"].requires_grad_(True)
    args = [terms.get(k) for k in ("a", "rows", "cols", "table", "a2", "alpha", "c", "beta", "noise", "seeds")]
    torch.library.opcheck(torch.ops.softdiff.dct_filter.default, (*args, 7))
    table = torch.rand(2, 9, 8, generator=generator).to(DEVICE)
    pixel_args = [terms["a"], table, terms["a2"], terms["alpha"], terms["c"], terms["beta"], None, terms["seeds"], 7]
    torch.library.opcheck(torch.ops.softdiff.pixel_filter.default, tuple(pixel_args))


def test_torch_compile_sees_single_ops(generator):
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(2.0))
    x0 = torch.randn(3, 2, 8, 8, generator=generator)
    x0_hat = torch.randn(3, 2, 8, 8, generator=generator)
    t, t_next = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.8, 0.4, 0.2])
    seeds = torch.tensor([1, 2, 3])

    def step(x_t, x0_hat):
        return sd.samplers.momentum_step(proc, x_t, x0_hat, t, t_next, seeds=seeds, stream=2)

    x_t = proc.corrupt(x0, t, seed=0)
    compiled = torch.compile(step, backend=record, fullgraph=True)
    torch.testing.assert_close(compiled(x_t, x0_hat), step(x_t, x0_hat))
    targets = [node.target for graph in graphs for node in graph.graph.nodes if node.op == "call_function"]
    ops = (torch.ops.softdiff.dct_filter, torch.ops.softdiff.dct_filter.default)
    assert sum(target in ops for target in targets) == 1, targets


def test_large_planes_fall_back_to_the_reference(monkeypatch, generator):
    if "triton" not in BACKENDS:
        pytest.skip("no Triton backend here")
    monkeypatch.setenv("SOFTDIFF_BACKEND", "triton")
    notice_fallback.cache_clear()  # the warning comes once per process; other tests may have had it
    a = torch.randn(1, 1, 8, 130, generator=generator).to(DEVICE)
    rows, cols = (
        torch.rand(1, 1, 8, generator=generator).to(DEVICE),
        torch.rand(1, 1, 130, generator=generator).to(DEVICE),
    )
    with pytest.warns(RuntimeWarning, match="larger than 64x64 have no fused triton kernel"):
        out = sk.dct_filter(a, rows=rows, cols=cols)
    torch.testing.assert_close(out, dct_filter_reference(a, rows=rows, cols=cols))


def test_softdiff_paths_agree_across_backends(monkeypatch):
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(3.0))
    oracle = sd.oracle.GaussianDenoiser.power_law(proc, (2, 12, 10))
    results = {}
    for name in BACKENDS:
        monkeypatch.setenv("SOFTDIFF_BACKEND", name)
        results[name] = sd.sample(oracle, proc, (3, 2, 12, 10), steps=6, seeds=[4, 5, 6], device=DEVICE).cpu()
    for name in BACKENDS:
        torch.testing.assert_close(results[name], results["torch"], rtol=1e-4, atol=1e-4)


def test_dispatch_choice_and_errors(monkeypatch):
    monkeypatch.delenv("SOFTDIFF_BACKEND", raising=False)
    assert sk.backend("cpu") == "torch"
    monkeypatch.setenv("SOFTDIFF_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="SOFTDIFF_BACKEND=cuda cannot run on cpu"):
        sk.backend("cpu")
    monkeypatch.setenv("SOFTDIFF_BACKEND", "fast")
    with pytest.raises(ValueError, match="SOFTDIFF_BACKEND must be one of cuda, triton, torch"):
        sk.backend("cpu")
    monkeypatch.setenv("SOFTDIFF_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="only under TRITON_INTERPRET=1"):
        sk.backend("cpu")


def test_report_command_prints_the_dispatch_report(monkeypatch):
    """``python -m softdiff_kernels`` prints what the dispatch decides: every backend for every device, and on the
    CPU the reference (unforced)."""
    monkeypatch.delenv("SOFTDIFF_BACKEND", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "SOFTDIFF_BACKEND"}
    result = subprocess.run([sys.executable, "-m", "softdiff_kernels"], capture_output=True, text=True, timeout=120,
                            env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines == sk.dispatch.report().splitlines()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for name in sk.dispatch.BACKENDS:
            ok, why = can_run(name, torch.device(device))
            assert f"  {device:>4} {name:>6}: {'yes' if ok else 'no '}  {why}" in lines
    assert "   cpu  torch: yes  PyTorch reference" in lines and "   cpu uses: torch" in lines
    # --help describes the report instead of printing it; an unknown option is refused
    help_text = subprocess.run([sys.executable, "-m", "softdiff_kernels", "--help"], capture_output=True, text=True,
                               timeout=120, env=env)  # fmt: skip
    assert help_text.returncode == 0 and "usage: python -m softdiff_kernels" in help_text.stdout
    assert "SOFTDIFF_BACKEND" in help_text.stdout and "uses:" not in help_text.stdout
    wrong = subprocess.run([sys.executable, "-m", "softdiff_kernels", "--fast"], capture_output=True, text=True,
                           timeout=120, env=env)  # fmt: skip
    assert wrong.returncode == 2 and "unrecognized arguments: --fast" in wrong.stderr


@pytest.mark.parametrize("op", ["dct", "pixel"])
def test_the_chosen_backend_is_the_one_that_runs(monkeypatch, op, generator):
    """SOFTDIFF_BACKEND=triton reaches the Triton launcher, =torch the reference (guards the dispatch itself)."""
    if "triton" not in BACKENDS:
        pytest.skip("no Triton backend here")
    import softdiff_kernels.ops as ops_module
    import softdiff_kernels.triton_dct_filter as triton_dct
    import softdiff_kernels.triton_pixel_filter as triton_pixel

    calls = []
    module, launcher, reference = {
        "dct": (triton_dct, "dct_filter_triton", "dct_filter_reference"),
        "pixel": (triton_pixel, "pixel_filter_triton", "pixel_filter_reference"),
    }[op]
    for owner, name, tag in ((module, launcher, "triton"), (ops_module, reference, "torch")):
        original = getattr(owner, name)
        monkeypatch.setattr(
            owner, name, lambda *args, _f=original, _tag=tag, **kwargs: calls.append(_tag) or _f(*args, **kwargs)
        )
    a = torch.randn(2, 3, 8, 8, generator=generator).to(DEVICE)
    for name in ("triton", "torch"):
        monkeypatch.setenv("SOFTDIFF_BACKEND", name)
        if op == "dct":
            sk.dct_filter(a, rows=torch.ones(2, 1, 8, device=DEVICE), cols=torch.ones(2, 1, 8, device=DEVICE))
        else:
            sk.pixel_filter(a, table=torch.ones(2, 1, 1, device=DEVICE))
    assert calls == ["triton", "torch"]
