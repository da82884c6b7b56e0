// Counter-based normal noise, identical to softdiff_kernels/random.py and Triton's tl.randint4x:
// Philox4x32-10, Triton's uint32 -> uniform mapping, Box-Muller. Each 4-pixel quad of an image row takes one
// Philox call (key = seed, counter = (quad index, stream, 0, 0)) and yields the normals of its 4 pixels.
#pragma once
#include <cstdint>

namespace softdiff {

struct Quad {
  float value[4];
};

__device__ __forceinline__ void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t a = c[0], b = c[2];
    c[0] = __umulhi(0xCD9E8D57u, b) ^ c[1] ^ k0;
    c[2] = __umulhi(0xD2511F53u, a) ^ c[3] ^ k1;
    c[1] = 0xCD9E8D57u * b;
    c[3] = 0xD2511F53u * a;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

__device__ __forceinline__ float uint32_to_uniform(uint32_t word) {
  int32_t value = static_cast<int32_t>(word);
  value = value < 0 ? ~value : value;
  return static_cast<float>(value) * 4.6566127342e-10f;
}

// The normals of quad `quad` (pixels 4*quad .. 4*quad+3 of its row, rows numbered c*H + h).
__device__ __forceinline__ Quad normal_quad(int64_t seed, uint32_t stream, uint32_t quad) {
  uint32_t c[4] = {quad, stream, 0u, 0u};
  philox4x32_10(c, static_cast<uint32_t>(seed & 0xFFFFFFFFll), static_cast<uint32_t>((seed >> 32) & 0xFFFFFFFFll));
  Quad out;
#pragma unroll
  for (int pair = 0; pair < 2; ++pair) {
    const float u_radius = fmaxf(1.0e-7f, uint32_to_uniform(c[2 * pair]));
    const float angle = 6.283185307179586f * uint32_to_uniform(c[2 * pair + 1]);
    const float radius = sqrtf(-2.0f * logf(u_radius));
    out.value[2 * pair] = radius * cosf(angle);
    out.value[2 * pair + 1] = radius * sinf(angle);
  }
  return out;
}

}  // namespace softdiff
