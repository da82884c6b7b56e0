// CUDA implementation of the fused op family (DESIGN §2.1), same schema as the Python ops softdiff::dct_filter
// and softdiff::pixel_filter, registered as softdiff_C::dct_filter and softdiff_C::pixel_filter:
//
//   dct_filter    y_b = IDCT2( F_b ⊙ DCT2(a_b − a2_b) ) + α_b c_b + β_b η_b
//   pixel_filter  y_b =        F_b ⊙     (a_b − a2_b)   + α_b c_b + β_b η_b
//
// F_b = Σ_j rows[b, j] ⊗ cols[b, j] (J ≤ 2) or a table [H, W]; η from (seeds[b], stream) as in philox.cuh.
// dct_filter: one block per (sample, plane); the plane and one intermediate live in shared memory and the
// four passes X M_Wᵀ, M_H ·, M_Hᵀ ·, · M_W run over them. Computes in float for float, half and bfloat16
// storage (float64 runs the PyTorch reference, see softdiff_kernels/ops.py); a2, c and noise in another dtype
// than a are read as float, never rounded to a's dtype first; strided inputs are read through their strides.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <initializer_list>
#include <optional>

#include "philox.cuh"

namespace softdiff {
namespace {

constexpr int kMaxSize = 128;
constexpr int kThreads = 256;

struct Strides4 {
  int64_t b, c, h, w;
};

Strides4 strides_of(const std::optional<at::Tensor>& x) {
  if (!x.has_value()) return {0, 0, 0, 0};
  return {x->stride(0), x->stride(1), x->stride(2), x->stride(3)};
}

template <typename scalar_t, typename acc_t>
struct Params {
  scalar_t* out;
  const scalar_t *a, *a2, *c, *noise;
  const acc_t *rows, *cols, *table, *alpha, *beta, *m_h, *m_w;
  const int64_t* seeds;
  Strides4 s_a, s_a2, s_c, s_noise, s_out;
  int64_t terms, channels, height, width, stream;
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t load(const scalar_t* base, const Strides4& s, int64_t b, int64_t c, int64_t h,
                                      int64_t w) {
  return static_cast<acc_t>(base[b * s.b + c * s.c + h * s.h + w * s.w]);
}

// Adds α c + β η to the output values of one quad and stores them.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void finish_quad(const Params<scalar_t, acc_t>& p, int64_t b, int64_t plane, int64_t h,
                                            int64_t q, acc_t value[4]) {
  const int64_t quads_per_row = (p.width + 3) / 4;
  Quad eta{};
  if (p.beta != nullptr && p.noise == nullptr) {
    eta = normal_quad(p.seeds[b], static_cast<uint32_t>(p.stream),
                      static_cast<uint32_t>((plane * p.height + h) * quads_per_row + q));
  }
  for (int k = 0; k < 4; ++k) {
    const int64_t w = 4 * q + k;
    if (w >= p.width) break;
    acc_t y = value[k];
    if (p.c != nullptr) y += p.alpha[b] * load<scalar_t, acc_t>(p.c, p.s_c, b, plane, h, w);
    if (p.beta != nullptr) {
      const acc_t n = p.noise != nullptr ? load<scalar_t, acc_t>(p.noise, p.s_noise, b, plane, h, w)
                                         : static_cast<acc_t>(eta.value[k]);
      y += p.beta[b] * n;
    }
    p.out[b * p.s_out.b + plane * p.s_out.c + h * p.s_out.h + w * p.s_out.w] = static_cast<scalar_t>(y);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void dct_filter_kernel(Params<scalar_t, acc_t> p) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* x = reinterpret_cast<acc_t*>(shared_bytes);  // [H, W]
  acc_t* t = x + p.height * p.width;                    // [H, W]
  const int64_t b = blockIdx.x / p.channels, plane = blockIdx.x % p.channels;
  const int64_t H = p.height, W = p.width, n = H * W;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t h = i / W, w = i % W;
    acc_t v = load<scalar_t, acc_t>(p.a, p.s_a, b, plane, h, w);
    if (p.a2 != nullptr) v -= load<scalar_t, acc_t>(p.a2, p.s_a2, b, plane, h, w);
    x[i] = v;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {  // t = x M_Wᵀ
    const int64_t h = i / W, l = i % W;
    acc_t sum = 0;
    for (int64_t w = 0; w < W; ++w) sum += x[h * W + w] * p.m_w[l * W + w];
    t[i] = sum;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {  // x = F ⊙ (M_H t)
    const int64_t k = i / W, l = i % W;
    acc_t sum = 0;
    for (int64_t h = 0; h < H; ++h) sum += p.m_h[k * H + h] * t[h * W + l];
    acc_t filter = 0;
    if (p.table != nullptr) {
      filter = p.table[(b * H + k) * W + l];
    } else {
      for (int64_t j = 0; j < p.terms; ++j) {
        filter += p.rows[(b * p.terms + j) * H + k] * p.cols[(b * p.terms + j) * W + l];
      }
    }
    x[i] = filter * sum;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {  // t = M_Hᵀ x
    const int64_t h = i / W, l = i % W;
    acc_t sum = 0;
    for (int64_t k = 0; k < H; ++k) sum += p.m_h[k * H + h] * x[k * W + l];
    t[i] = sum;
  }
  __syncthreads();
  const int64_t quads_per_row = (W + 3) / 4;
  for (int64_t i = threadIdx.x; i < H * quads_per_row; i += blockDim.x) {  // y = t M_W, one quad per thread
    const int64_t h = i / quads_per_row, q = i % quads_per_row;
    acc_t value[4] = {0, 0, 0, 0};
    for (int k = 0; k < 4 && 4 * q + k < W; ++k) {
      const int64_t w = 4 * q + k;
      acc_t sum = 0;
      for (int64_t l = 0; l < W; ++l) sum += t[h * W + l] * p.m_w[l * W + w];
      value[k] = sum;
    }
    finish_quad(p, b, plane, h, q, value);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void pixel_filter_kernel(Params<scalar_t, acc_t> p, int64_t table_sb, int64_t table_sh,
                                    int64_t table_sw) {
  const int64_t quads_per_row = (p.width + 3) / 4;
  const int64_t rows_total = p.terms;  // B * C * H rows, passed in `terms` for this kernel
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= rows_total * quads_per_row) return;
  const int64_t row = index / quads_per_row, q = index % quads_per_row;
  const int64_t h = row % p.height, plane = (row / p.height) % p.channels, b = row / (p.height * p.channels);
  acc_t value[4] = {0, 0, 0, 0};
  for (int k = 0; k < 4 && 4 * q + k < p.width; ++k) {
    const int64_t w = 4 * q + k;
    acc_t v = load<scalar_t, acc_t>(p.a, p.s_a, b, plane, h, w);
    if (p.a2 != nullptr) v -= load<scalar_t, acc_t>(p.a2, p.s_a2, b, plane, h, w);
    value[k] = p.table[b * table_sb + h * table_sh + w * table_sw] * v;
  }
  finish_quad(p, b, plane, h, q, value);
}

// ------------------------------------------------------------------------------------------------------------
// Host side: checks, DCT matrices, launch.

void check_image(const char* name, const std::optional<at::Tensor>& x, const at::Tensor& a) {
  if (!x.has_value()) return;
  TORCH_CHECK(x->sizes() == a.sizes(), name, " must have the shape of a ", a.sizes(), "; got ", x->sizes());
  TORCH_CHECK(x->device() == a.device(), name, " is on ", x->device(), " but a is on ", a.device());
  TORCH_CHECK(at::isFloatingType(x->scalar_type()), name, " must be a floating tensor; got ", x->scalar_type());
}

void check_vector(const char* name, const std::optional<at::Tensor>& x, const at::Tensor& a) {
  if (!x.has_value()) return;
  TORCH_CHECK(x->dim() == 1 && x->size(0) == a.size(0), name, " must have shape [", a.size(0), "]; got ",
              x->sizes());
  TORCH_CHECK(x->device() == a.device(), name, " is on ", x->device(), " but a is on ", a.device());
}

void check_terms(const at::Tensor& a, const std::optional<at::Tensor>& a2, const std::optional<at::Tensor>& alpha,
                 const std::optional<at::Tensor>& c, const std::optional<at::Tensor>& beta,
                 const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& seeds, int64_t stream) {
  TORCH_CHECK(a.is_cuda(), "a must be a CUDA tensor; got ", a.device());
  TORCH_CHECK(a.dim() == 4, "a must be a 4-D tensor [B, C, H, W]; got ", a.sizes());
  TORCH_CHECK(at::isFloatingType(a.scalar_type()) && a.scalar_type() != at::kDouble,
              "a must be float32, float16 or bfloat16 (float64 runs the PyTorch reference); got ", a.scalar_type());
  check_image("a2", a2, a);
  check_image("c", c, a);
  check_image("noise", noise, a);
  check_vector("alpha", alpha, a);
  check_vector("beta", beta, a);
  check_vector("seeds", seeds, a);
  TORCH_CHECK(alpha.has_value() == c.has_value(), "alpha and c come together: pass both or neither");
  TORCH_CHECK(!beta.has_value() || noise.has_value() != seeds.has_value(),
              "beta needs exactly one source of noise: noise or seeds");
  TORCH_CHECK(beta.has_value() || (!noise.has_value() && !seeds.has_value()), "noise or seeds given without beta");
  TORCH_CHECK(!seeds.has_value() || seeds->scalar_type() == at::kLong, "seeds must be int64");
  TORCH_CHECK(stream >= 0 && stream < (int64_t(1) << 32), "stream must lie in [0, 2^32); got ", stream);
}

// Orthonormal DCT-II matrix [n, n] (rows: frequencies), built in float64 on the device.
at::Tensor dct_matrix(int64_t n, at::ScalarType dtype, const at::Device& device) {
  auto options = at::TensorOptions().dtype(at::kDouble).device(device);
  auto k = at::arange(n, options).unsqueeze(1);
  auto i = at::arange(n, options).unsqueeze(0);
  auto matrix = at::cos(M_PI * (2.0 * i + 1.0) * k / (2.0 * n)) * std::sqrt(2.0 / n);
  matrix.select(0, 0).div_(std::sqrt(2.0));
  return matrix.to(dtype).contiguous();
}

template <typename scalar_t, typename acc_t>
Params<scalar_t, acc_t> make_params(const at::Tensor& out, const at::Tensor& a, const std::optional<at::Tensor>& a2,
                                    const std::optional<at::Tensor>& c, const std::optional<at::Tensor>& noise,
                                    const std::optional<at::Tensor>& alpha, const std::optional<at::Tensor>& beta,
                                    const std::optional<at::Tensor>& seeds, int64_t stream) {
  Params<scalar_t, acc_t> p{};
  auto data = [](const std::optional<at::Tensor>& x) -> const scalar_t* {
    return x.has_value() ? x->data_ptr<scalar_t>() : nullptr;
  };
  auto coefficients = [](const std::optional<at::Tensor>& x) -> const acc_t* {
    return x.has_value() ? x->data_ptr<acc_t>() : nullptr;
  };
  p.out = out.data_ptr<scalar_t>();
  p.a = a.data_ptr<scalar_t>();
  p.a2 = data(a2);
  p.c = data(c);
  p.noise = data(noise);
  p.alpha = coefficients(alpha);
  p.beta = coefficients(beta);
  p.seeds = seeds.has_value() ? seeds->data_ptr<int64_t>() : nullptr;
  p.s_a = strides_of(a);
  p.s_a2 = strides_of(a2);
  p.s_c = strides_of(c);
  p.s_noise = strides_of(noise);
  p.s_out = strides_of(out);
  p.channels = a.size(1);
  p.height = a.size(2);
  p.width = a.size(3);
  p.stream = stream;
  return p;
}

std::optional<at::Tensor> as_type(const std::optional<at::Tensor>& x, at::ScalarType dtype) {
  if (!x.has_value()) return x;
  return x->to(dtype);
}

// The storage dtype the kernel reads the image-like terms in: a's, or float when a2, c or noise has another dtype
// (converting them to a's dtype would round, e.g., a float32 x_0 to bfloat16 before x̂_0 − x_0 is formed).
at::ScalarType storage_type(const at::Tensor& a, std::initializer_list<const std::optional<at::Tensor>*> terms) {
  for (const auto* x : terms) {
    if (x->has_value() && (*x)->scalar_type() != a.scalar_type()) return at::kFloat;
  }
  return a.scalar_type();
}

// float, half and bfloat16 storage, each computed in float.
#define SOFTDIFF_DISPATCH(TYPE, NAME, ...)                    \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

at::Tensor dct_filter(const at::Tensor& a, const std::optional<at::Tensor>& rows,
                      const std::optional<at::Tensor>& cols, const std::optional<at::Tensor>& table,
                      const std::optional<at::Tensor>& a2, const std::optional<at::Tensor>& alpha,
                      const std::optional<at::Tensor>& c, const std::optional<at::Tensor>& beta,
                      const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& seeds, int64_t stream) {
  check_terms(a, a2, alpha, c, beta, noise, seeds, stream);
  const int64_t batch = a.size(0), height = a.size(2), width = a.size(3);
  TORCH_CHECK(height <= kMaxSize && width <= kMaxSize, "dct_filter: planes up to ", kMaxSize, "x", kMaxSize,
              "; got ", height, "x", width);
  TORCH_CHECK(table.has_value() != (rows.has_value() && cols.has_value()), "pass either table or rows and cols");
  if (table.has_value()) {
    TORCH_CHECK(table->sizes() == at::IntArrayRef({batch, height, width}), "table must have shape [", batch, ", ",
                height, ", ", width, "]; got ", table->sizes());
  } else {
    TORCH_CHECK(rows->dim() == 3 && rows->size(0) == batch && rows->size(2) == height, "rows must be [", batch,
                ", J, ", height, "]; got ", rows->sizes());
    TORCH_CHECK(cols->dim() == 3 && cols->size(0) == batch && cols->size(2) == width, "cols must be [", batch,
                ", J, ", width, "]; got ", cols->sizes());
    TORCH_CHECK(rows->size(1) == cols->size(1) && rows->size(1) >= 1 && rows->size(1) <= 2,
                "rows and cols must hold the same number J in {1, 2} of terms");
  }
  const c10::cuda::CUDAGuard guard(a.device());
  if (a.numel() == 0) return at::empty_like(a);
  const auto dtype = storage_type(a, {&a2, &c, &noise});
  const auto a_t = a.to(dtype);
  auto out = at::empty_like(a_t);  // a's layout when dense, as every backend
  auto contiguous_float = [&](const std::optional<at::Tensor>& x) -> std::optional<at::Tensor> {
    if (!x.has_value()) return x;
    return x->to(at::kFloat).contiguous();
  };
  const auto rows_f = contiguous_float(rows), cols_f = contiguous_float(cols), table_f = contiguous_float(table);
  const auto alpha_f = contiguous_float(alpha), beta_f = contiguous_float(beta);
  const auto seeds_c = seeds.has_value() ? std::optional<at::Tensor>(seeds->contiguous()) : std::nullopt;
  const auto a2_t = as_type(a2, dtype), c_t = as_type(c, dtype), noise_t = as_type(noise, dtype);
  const auto m_h = dct_matrix(height, at::kFloat, a.device()), m_w = dct_matrix(width, at::kFloat, a.device());
  SOFTDIFF_DISPATCH(dtype, "softdiff_dct_filter", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto p = make_params<scalar_t, acc_t>(out, a_t, a2_t, c_t, noise_t, alpha_f, beta_f, seeds_c, stream);
    p.rows = rows_f.has_value() ? rows_f->data_ptr<acc_t>() : nullptr;
    p.cols = cols_f.has_value() ? cols_f->data_ptr<acc_t>() : nullptr;
    p.table = table_f.has_value() ? table_f->data_ptr<acc_t>() : nullptr;
    p.terms = rows.has_value() ? rows->size(1) : 0;
    p.m_h = m_h.data_ptr<acc_t>();
    p.m_w = m_w.data_ptr<acc_t>();
    const size_t shared = 2 * height * width * sizeof(acc_t);
    auto kernel = dct_filter_kernel<scalar_t, acc_t>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared)));
    kernel<<<static_cast<unsigned>(batch * a.size(1)), kThreads, shared, c10::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.to(a.scalar_type());
}

at::Tensor pixel_filter(const at::Tensor& a, const at::Tensor& table, const std::optional<at::Tensor>& a2,
                        const std::optional<at::Tensor>& alpha, const std::optional<at::Tensor>& c,
                        const std::optional<at::Tensor>& beta, const std::optional<at::Tensor>& noise,
                        const std::optional<at::Tensor>& seeds, int64_t stream) {
  check_terms(a, a2, alpha, c, beta, noise, seeds, stream);
  const int64_t batch = a.size(0), height = a.size(2), width = a.size(3);
  TORCH_CHECK(table.dim() == 3 && table.size(0) == batch &&
                  ((table.size(1) == height && table.size(2) == width) || (table.size(1) == 1 && table.size(2) == 1)),
              "table must have shape [", batch, ", ", height, ", ", width, "] or [", batch, ", 1, 1]; got ",
              table.sizes());
  const c10::cuda::CUDAGuard guard(a.device());
  if (a.numel() == 0) return at::empty_like(a);
  const auto dtype = storage_type(a, {&a2, &c, &noise});
  const auto a_t = a.to(dtype);
  auto out = at::empty_like(a_t);  // a's layout when dense, as every backend
  const auto table_f = table.to(at::kFloat).expand({batch, height, width});
  auto contiguous_float = [](const std::optional<at::Tensor>& x) -> std::optional<at::Tensor> {
    if (!x.has_value()) return x;
    return x->to(at::kFloat).contiguous();
  };
  const auto alpha_f = contiguous_float(alpha), beta_f = contiguous_float(beta);
  const auto seeds_c = seeds.has_value() ? std::optional<at::Tensor>(seeds->contiguous()) : std::nullopt;
  const auto a2_t = as_type(a2, dtype), c_t = as_type(c, dtype), noise_t = as_type(noise, dtype);
  SOFTDIFF_DISPATCH(dtype, "softdiff_pixel_filter", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto p = make_params<scalar_t, acc_t>(out, a_t, a2_t, c_t, noise_t, alpha_f, beta_f, seeds_c, stream);
    p.table = table_f.data_ptr<acc_t>();
    p.terms = batch * a.size(1) * height;  // rows of the launch
    const int64_t quads = p.terms * ((width + 3) / 4);
    const unsigned blocks = static_cast<unsigned>((quads + kThreads - 1) / kThreads);
    pixel_filter_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        p, table_f.stride(0), table_f.stride(1), table_f.stride(2));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.to(a.scalar_type());
}

}  // namespace
}  // namespace softdiff

TORCH_LIBRARY(softdiff_C, m) {
  m.def("dct_filter(Tensor a, Tensor? rows, Tensor? cols, Tensor? table, Tensor? a2, Tensor? alpha, Tensor? c, "
        "Tensor? beta, Tensor? noise, Tensor? seeds, int stream) -> Tensor");
  m.def("pixel_filter(Tensor a, Tensor table, Tensor? a2, Tensor? alpha, Tensor? c, Tensor? beta, Tensor? noise, "
        "Tensor? seeds, int stream) -> Tensor");
}

TORCH_LIBRARY_IMPL(softdiff_C, CUDA, m) {
  m.impl("dct_filter", &softdiff::dct_filter);
  m.impl("pixel_filter", &softdiff::pixel_filter);
}
