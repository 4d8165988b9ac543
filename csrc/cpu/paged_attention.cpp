// CPU twin of paged_attention (decode; math in onerl_kernels/paged_attention.py): reads K/V rows
// straight from the paged cache through the block table, no gather copy.
//
// For each (sequence b, kv head h), in parallel (OpenMP when the build has it): the G = Hq / Hkv
// query heads of h are scaled and turned to fp32; pass 1 computes the scores of all seq_len
// positions (each K row read once for the G heads), the softmax is taken per query head in fp32,
// pass 2 accumulates the V rows (each read once). Inner loops run over head_dim with fixed
// partial sums, so the compiler vectorises them and results do not depend on the thread count;
// x86-64 builds also carry an AVX2 clone picked at load time. Caches contiguous
// [num_blocks, block_size, Hkv, D] of fp32 / bf16 / fp16; q [B, Hq, D] with strides; out
// contiguous [B, Hq, D] in q's dtype. Sequence lengths and block ids are checked before any
// work (bad ones raise).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "sample.h"  // LogitDtype codes, the bf16 / fp16 converters and exp_vec

namespace py = pybind11;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define ONERL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ONERL_CLONES
#endif

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
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

struct Problem {
  const void *q, *k, *v;
  void* out;
  const int32_t *tables, *lens;
  int64_t q_stride_b, q_stride_h, table_stride, q_heads, kv_heads, head_dim, block_size;
  float scale;
  int dtype;
};

// Scratch floats one (b, h) item needs: q, accumulators, a converted row, G x n scores.
inline size_t scratch_size(const Problem& P, int64_t max_len) {
  const int64_t G = P.q_heads / P.kv_heads, D = P.head_dim;
  return static_cast<size_t>(2 * G * D + D + G * std::max<int64_t>(max_len, 1));
}

// Attention of sequence b's query heads h*G .. h*G+G-1 over its kv head h.
ONERL_CLONES void attend(const Problem& P, int64_t b, int64_t h, float* scratch) {
  const int64_t G = P.q_heads / P.kv_heads, D = P.head_dim, bs = P.block_size;
  const int64_t n = P.lens[b], Hkv = P.kv_heads;
  const int32_t* table = P.tables + b * P.table_stride;
  float* __restrict qf = scratch;
  float* __restrict acc = qf + G * D;
  float* __restrict row = acc + G * D;
  float* __restrict scores = row + D;
  for (int64_t g = 0; g < G; ++g) {
    load_row(P.q, b * P.q_stride_b + (h * G + g) * P.q_stride_h, D, P.dtype, qf + g * D);
    for (int64_t d = 0; d < D; ++d) qf[g * D + d] *= P.scale;
  }
  // Positions block by block (no division per position): block j holds p = j*bs .. +bs-1.
  for (int64_t p0 = 0, j = 0; p0 < n; p0 += bs, ++j) {  // pass 1: scores
    const int64_t first = static_cast<int64_t>(table[j]) * bs, m = std::min(bs, n - p0);
    for (int64_t o = 0; o < m; ++o) {
      const float* k = row_at(P.k, ((first + o) * Hkv + h) * D, D, P.dtype, row);
      for (int64_t g = 0; g < G; ++g) scores[g * n + p0 + o] = dot(qf + g * D, k, D);
    }
  }
  for (int64_t g = 0; g < G; ++g) {  // softmax per query head (fixed partial sums)
    float* __restrict s = scores + g * n;
    float mx[8], sm[8];
    for (int u = 0; u < 8; ++u) mx[u] = -INFINITY, sm[u] = 0.0f;
    int64_t p = 0;
    for (; p + 8 <= n; p += 8)
      for (int u = 0; u < 8; ++u) mx[u] = s[p + u] > mx[u] ? s[p + u] : mx[u];
    float m = -INFINITY;
    for (int u = 0; u < 8; ++u) m = mx[u] > m ? mx[u] : m;
    for (; p < n; ++p) m = s[p] > m ? s[p] : m;
    for (p = 0; p + 8 <= n; p += 8)
      for (int u = 0; u < 8; ++u) {
        s[p + u] = exp_vec(s[p + u] - m);
        sm[u] += s[p + u];
      }
    float sum = ((sm[0] + sm[1]) + (sm[2] + sm[3])) + ((sm[4] + sm[5]) + (sm[6] + sm[7]));
    for (; p < n; ++p) {
      s[p] = exp_vec(s[p] - m);
      sum += s[p];
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (p = 0; p < n; ++p) s[p] *= inv;
  }
  for (int64_t i = 0; i < G * D; ++i) acc[i] = 0.0f;
  for (int64_t p0 = 0, j = 0; p0 < n; p0 += bs, ++j) {  // pass 2: weighted V rows
    const int64_t first = static_cast<int64_t>(table[j]) * bs, m = std::min(bs, n - p0);
    for (int64_t o = 0; o < m; ++o) {
      const float* __restrict v = row_at(P.v, ((first + o) * Hkv + h) * D, D, P.dtype, row);
      for (int64_t g = 0; g < G; ++g) {
        const float w = scores[g * n + p0 + o];
        float* __restrict a = acc + g * D;
        for (int64_t d = 0; d < D; ++d) a[d] += w * v[d];
      }
    }
  }
  for (int64_t g = 0; g < G; ++g)
    store_row(P.out, (b * P.q_heads + h * G + g) * D, D, P.dtype, acc + g * D);
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
  const Problem P{as_ptr<const void>(q), as_ptr<const void>(k_cache),
                  as_ptr<const void>(v_cache), as_ptr<void>(out),
                  as_ptr<const int32_t>(block_tables), as_ptr<const int32_t>(seq_lens),
                  q_stride_b, q_stride_h, table_stride, q_heads, kv_heads, head_dim, block_size,
                  static_cast<float>(scale), dtype};
  int64_t max_len = 0, work = 0;
  for (int64_t b = 0; b < batch; ++b) {  // validate everything before the (parallel) work
    const int64_t n = P.lens[b];
    check(n >= 0 && n <= max_blocks * block_size,
          "paged_attention: seq_lens[" + std::to_string(b) + "] = " + std::to_string(n) +
              " does not fit its block table (" + std::to_string(max_blocks) + " blocks of " +
              std::to_string(block_size) + ")");
    const int32_t* table = P.tables + b * table_stride;
    for (int64_t j = 0; j * block_size < n; ++j)
      if (table[j] < 0 || table[j] >= num_blocks)  // (the message is built only on failure)
        check(false, "paged_attention: block_tables[" + std::to_string(b) + ", " +
                         std::to_string(j) + "] = " + std::to_string(table[j]) +
                         " is outside the cache");
    max_len = std::max(max_len, n);
    work += n;
  }
  const int64_t items = batch * kv_heads;
  const size_t scratch = scratch_size(P, max_len);
  // Threads only when there is enough work to pay for waking them (~1M multiply-adds).
  const bool parallel = 2 * work * q_heads * head_dim >= (int64_t(1) << 20) && items > 1;
  (void)parallel;
#pragma omp parallel if (parallel)
  {
    std::vector<float> buf(scratch);
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < items; ++i) attend(P, i / kv_heads, i % kv_heads, buf.data());
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
