// sample: the math shared by the CPU twin (cpu/sample.cpp) and the CUDA kernels
// (cuda/sample.cu). The algorithm is documented in onerl_kernels/sample.py and specified,
// step by step, by reference.sample:
//
//   tau_b      truncation threshold (top-k then top-p, tie-inclusive; -inf when off)
//   chunk c    of kChunk tokens: m_full, s_full = max and sum exp((z - m_full)/T) over all tokens;
//              m_keep, s_keep over kept tokens (z >= tau); one inverse-CDF draw among the kept
//              tokens in lane order with u = philox_uniform(seed, position, c)
//   merge      pick chunk c with probability ∝ s_keep_c exp((m_keep_c - max m_keep)/T) with
//              u = philox_uniform(seed, position, kPickStream); logp = (z_tok - M)/T - log S
//
// Lane order: chunk position s*1024 + t*4 + e (s, e < 4, t < 256 lanes) is visited at
// t*16 + s*4 + e, i.e. lane t owns four coalesced groups of four tokens. T == 0 is argmax (lowest
// index on ties) with logp at T = 1.
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"
#include "philox.h"

namespace onerl {

constexpr int kChunk = 4096;
constexpr int kLanes = 256;
constexpr int kPerLane = 16;
constexpr uint32_t kPickStream = 0xFFFFFFFFu;
constexpr int kPartFields = 5;  // m_full, s_full, m_keep, s_keep, z of the chunk's token

enum LogitDtype : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

struct SampleArgs {
  std::uintptr_t logits;
  int64_t row_stride;  // elements
  int dtype;
  int64_t batch, vocab;
  std::uintptr_t temperature, top_k, top_p, seeds, positions;  // [B] each
  std::uintptr_t tau;                                          // fp32 [B] workspace
  std::uintptr_t part;                                         // fp32 [B, chunks, 5] workspace
  std::uintptr_t part_token;                                   // int32 [B, chunks] workspace
  std::uintptr_t tokens, logp;                                 // int64 [B], fp32 [B] outputs
};

ONERL_HD inline int64_t num_chunks(int64_t vocab) { return (vocab + kChunk - 1) / kChunk; }

// Chunk position of lane t's j-th token (j = s*4 + e).
ONERL_HD inline int lane_offset(int t, int j) { return (j >> 2) * (kLanes * 4) + t * 4 + (j & 3); }

ONERL_HD inline float inv_temperature(float t) { return t > 0.0f ? 1.0f / t : 1.0f; }

ONERL_HD inline float bits_to_float(uint32_t b) {
  union { uint32_t u; float f; } x;
  x.u = b;
  return x.f;
}

ONERL_HD inline uint32_t float_to_bits(float f) {
  union { uint32_t u; float f; } x;
  x.f = f;
  return x.u;
}

ONERL_HD inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (man << 13));  // inf / nan
  if (exp == 0) {                                                              // zero / subnormal
    const float v = static_cast<float>(man) * (1.0f / 16777216.0f);            // man * 2^-24
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// e^x within about 1 ulp (the accuracy of torch's own fp32 exp) for x <= 88; the CPU callers
// pass x <= 0. Branch-free so that loops over it vectorise: Cody-Waite reduction x = k ln2 + r
// (|r| <= ln2 / 2), a degree-7 Taylor polynomial (truncation error < 1e-8), then 2^k applied as
// two normal factors so that subnormal results still round correctly. 0 below -104 (-inf
// included), NaN stays NaN.
ONERL_HD inline float exp_vec(float x) {
  float xc = x > -104.0f ? x : -104.0f;  // (NaN -> -104: no undefined int conversion below)
  xc = xc < 88.0f ? xc : 88.0f;
  const float k = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (xc - k * 0.693145751953125f) - k * 1.428606765330187e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t ki = static_cast<int32_t>(k), k1 = ki >> 1, k2 = ki - k1;
  const float y = p * bits_to_float(static_cast<uint32_t>(k1 + 127) << 23) *
                  bits_to_float(static_cast<uint32_t>(k2 + 127) << 23);
  return x != x ? x : (x < -104.0f ? 0.0f : y);
}

// Logit i of a row, as fp32.
ONERL_HD inline float load_logit(const void* row, int64_t i, int dtype) {
  if (dtype == kF32) return static_cast<const float*>(row)[i];
  const uint16_t h = static_cast<const uint16_t*>(row)[i];
  return dtype == kBF16 ? bits_to_float(static_cast<uint32_t>(h) << 16) : half_to_float(h);
}

// Order-preserving map float -> uint32 (larger float, larger key) and back.
ONERL_HD inline uint32_t float_key(float f) {
  const uint32_t b = float_to_bits(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
ONERL_HD inline float key_float(uint32_t k) {
  return bits_to_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

ONERL_HD inline bool truncates(float temperature, int64_t top_k, float top_p, int64_t vocab) {
  return temperature > 0.0f && ((top_k > 0 && top_k < vocab) || top_p < 1.0f);
}

// Radix-select bin choice for top-p: walking bins from the top, the lowest non-empty bin whose
// mass above it is < target (the highest non-empty bin when none is). Writes the mass above it.
ONERL_HD inline int pick_mass_bin(const float* mass, float target, float* above) {
  float cum = 0.0f;
  int chosen = -1;
  float chosen_above = 0.0f;
  for (int b = 255; b >= 0; --b) {
    if (!(mass[b] > 0.0f)) continue;
    if (chosen >= 0 && !(cum < target)) break;
    chosen = b;
    chosen_above = cum;
    cum += mass[b];
  }
  *above = chosen_above;
  return chosen < 0 ? 0 : chosen;
}

// Radix-select bin choice for top-k: the bin holding the k-th largest key; k becomes its rank
// inside that bin.
ONERL_HD inline int pick_count_bin(const uint32_t* count, int64_t* k) {
  int64_t cum = 0;
  int b = 255;
  for (; b > 0; --b) {
    if (cum + static_cast<int64_t>(count[b]) >= *k) break;
    cum += count[b];
  }
  *k -= cum;
  return b;
}

// Merge the chunk partials of one row into (token, logp).
ONERL_HD inline void merge_row(const float* part, const int32_t* part_token, int64_t chunks,
                               float temperature, int64_t seed, int64_t position,
                               int64_t* token, float* logp) {
  const float inv_t = inv_temperature(temperature);
  float m = -INFINITY, mk = -INFINITY;
  for (int64_t c = 0; c < chunks; ++c) {
    m = fmaxf(m, part[c * kPartFields + 0]);
    if (part[c * kPartFields + 3] > 0.0f) mk = fmaxf(mk, part[c * kPartFields + 2]);
  }
  float s = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) {
    const float* p = part + c * kPartFields;
    if (p[1] > 0.0f) s += p[1] * expf((p[0] - m) * inv_t);
  }
  int64_t pick = -1;
  if (!(temperature > 0.0f)) {  // argmax: the first chunk holding the maximum
    for (int64_t c = 0; c < chunks && pick < 0; ++c)
      if (part[c * kPartFields + 2] == mk) pick = c;
  } else {
    float total = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) {
      const float* p = part + c * kPartFields;
      if (p[3] > 0.0f) total += p[3] * expf((p[2] - mk) * inv_t);
    }
    const float target = philox_uniform(seed, position, kPickStream) * total;
    float cum = 0.0f;
    int64_t last = -1;
    for (int64_t c = 0; c < chunks; ++c) {
      const float* p = part + c * kPartFields;
      if (!(p[3] > 0.0f)) continue;
      const float w = p[3] * expf((p[2] - mk) * inv_t);
      if (!(w > 0.0f)) continue;
      last = c;
      cum += w;
      if (cum > target) {
        pick = c;
        break;
      }
    }
    if (pick < 0) pick = last;
  }
  if (pick < 0) pick = 0;  // only when every logit is -inf or NaN
  *token = part_token[pick];
  *logp = (part[pick * kPartFields + 4] - m) * inv_t - logf(s);
}

}  // namespace onerl
