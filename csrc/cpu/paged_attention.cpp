// CPU twin of paged_attention (decode; math in onerl_kernels/paged_attention.py): reads K/V rows
// straight from the paged cache through the block table, no gather copy.
//
// For each (sequence b, kv head h): the G = Hq / Hkv query heads of h are scaled and turned to
// fp32; pass 1 computes the scores of all seq_len positions (G per K row read), the softmax is
// taken per query head in fp32, pass 2 accumulates the V rows. Caches contiguous
// [num_blocks, block_size, Hkv, D] of fp32 / bf16 / fp16; q [B, Hq, D] with strides; out
// contiguous [B, Hq, D] in q's dtype. Block ids outside the cache raise.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "sample.h"  // LogitDtype codes and the bf16 / fp16 converters

namespace py = pybind11;

namespace onerl {
namespace {

inline void load_row(const void* base, int64_t offset, int64_t n, int dtype, float* dst) {
  if (dtype == kF32) {
    const float* p = static_cast<const float*>(base) + offset;
    for (int64_t i = 0; i < n; ++i) dst[i] = p[i];
    return;
  }
  const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
  if (dtype == kBF16)
    for (int64_t i = 0; i < n; ++i) dst[i] = bits_to_float(static_cast<uint32_t>(p[i]) << 16);
  else
    for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(p[i]);
}

// A row as fp32: in place for fp32 caches, converted into buf otherwise.
inline const float* row_at(const void* base, int64_t offset, int64_t n, int dtype, float* buf) {
  if (dtype == kF32) return static_cast<const float*>(base) + offset;
  load_row(base, offset, n, dtype, buf);
  return buf;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even
  uint32_t b = float_to_bits(f);
  if ((b & 0x7F800000u) == 0x7F800000u)  // inf stays inf, NaN stays NaN
    return static_cast<uint16_t>((b >> 16) | ((b & 0xFFFF) ? 0x40 : 0));
  b += 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}

inline uint16_t float_to_half(float f) {  // round to nearest even, saturating to inf
  const uint32_t b = float_to_bits(f);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((b >> 23) & 0xFF) - 127 + 15;
  uint32_t man = b & 0x7FFFFFu;
  if (((b >> 23) & 0xFF) == 0xFF) return static_cast<uint16_t>(sign | 0x7C00u | (man ? 0x200u : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    man |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t h = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (man >> 13);
  const uint32_t rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

inline void store_row(void* base, int64_t offset, int64_t n, int dtype, const float* src) {
  if (dtype == kF32) {
    float* p = static_cast<float*>(base) + offset;
    for (int64_t i = 0; i < n; ++i) p[i] = src[i];
    return;
  }
  uint16_t* p = static_cast<uint16_t*>(base) + offset;
  for (int64_t i = 0; i < n; ++i)
    p[i] = dtype == kBF16 ? float_to_bf16(src[i]) : float_to_half(src[i]);
}

// Dot product with eight independent partial sums (vectorises without reassociation).
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void paged_attention_cpu(std::uintptr_t q, int64_t q_stride_b, int64_t q_stride_h,
                         std::uintptr_t k_cache, std::uintptr_t v_cache,
                         std::uintptr_t block_tables, int64_t table_stride,
                         std::uintptr_t seq_lens, std::uintptr_t out, int64_t batch,
                         int64_t q_heads,
                         int64_t kv_heads, int64_t head_dim, int64_t block_size,
                         int64_t num_blocks, int64_t max_blocks, double scale, int dtype) {
  check(dtype == kF32 || dtype == kBF16 || dtype == kF16, "paged_attention: unsupported dtype");
  const int64_t G = q_heads / kv_heads, D = head_dim;
  const int32_t* tables = as_ptr<const int32_t>(block_tables);
  const int32_t* lens = as_ptr<const int32_t>(seq_lens);
  const void* qp = as_ptr<const void>(q);
  const void* kc = as_ptr<const void>(k_cache);
  const void* vc = as_ptr<const void>(v_cache);
  void* op = as_ptr<void>(out);
  std::vector<float> qf(G * D), row(D), acc(G * D), scores;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = lens[b];
    check(n >= 0 && n <= max_blocks * block_size,
          "paged_attention: seq_lens[" + std::to_string(b) + "] = " + std::to_string(n) +
              " does not fit its block table (" + std::to_string(max_blocks) + " blocks of " +
              std::to_string(block_size) + ")");
    const int32_t* table = tables + b * table_stride;
    scores.resize(static_cast<size_t>(G * (n > 0 ? n : 1)));
    for (int64_t h = 0; h < kv_heads; ++h) {
      for (int64_t g = 0; g < G; ++g) {
        load_row(qp, b * q_stride_b + (h * G + g) * q_stride_h, D, dtype, &qf[g * D]);
        for (int64_t d = 0; d < D; ++d) qf[g * D + d] *= static_cast<float>(scale);
      }
      for (int64_t p = 0; p < n; ++p) {  // pass 1: scores
        const int64_t blk = table[p / block_size];
        if (blk < 0 || blk >= num_blocks)  // (the message is built only on failure)
          check(false, "paged_attention: block_tables[" + std::to_string(b) + ", " +
                           std::to_string(p / block_size) + "] = " + std::to_string(blk) +
                           " is outside the cache");
        const float* k = row_at(kc, ((blk * block_size + p % block_size) * kv_heads + h) * D, D,
                                dtype, row.data());
        for (int64_t g = 0; g < G; ++g) scores[g * n + p] = dot(&qf[g * D], k, D);
      }
      std::vector<float> inv(G, 0.0f);
      for (int64_t g = 0; g < G; ++g) {  // softmax per query head
        float* s = &scores[g * n];
        float m = -INFINITY;
        for (int64_t p = 0; p < n; ++p) m = fmaxf(m, s[p]);
        float sum = 0.0f;
        for (int64_t p = 0; p < n; ++p) {
          s[p] = expf(s[p] - m);
          sum += s[p];
        }
        inv[g] = sum > 0.0f ? 1.0f / sum : 0.0f;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t p = 0; p < n; ++p) {  // pass 2: weighted V rows
        const int64_t blk = table[p / block_size];
        const float* v = row_at(vc, ((blk * block_size + p % block_size) * kv_heads + h) * D, D,
                                dtype, row.data());
        for (int64_t g = 0; g < G; ++g) {
          const float w = scores[g * n + p];
          float* a = &acc[g * D];
          for (int64_t d = 0; d < D; ++d) a[d] += w * v[d];
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        for (int64_t d = 0; d < D; ++d) acc[g * D + d] *= inv[g];
        store_row(op, (b * q_heads + h * G + g) * D, D, dtype, &acc[g * D]);
      }
    }
  }
}

}  // namespace onerl

void register_paged_attention(py::module_& m) {
  m.def("paged_attention_cpu", &onerl::paged_attention_cpu,
        py::call_guard<py::gil_scoped_release>(), py::arg("q"), py::arg("q_stride_b"),
        py::arg("q_stride_h"), py::arg("k_cache"), py::arg("v_cache"), py::arg("block_tables"),
        py::arg("table_stride"), py::arg("seq_lens"), py::arg("out"), py::arg("batch"),
        py::arg("q_heads"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("block_size"),
        py::arg("num_blocks"), py::arg("max_blocks"), py::arg("scale"), py::arg("dtype"));
}
