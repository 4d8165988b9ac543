// CPU twin of paged_attention (decode; math in onerl_kernels/paged_attention.py): reads K/V rows
// straight from the paged cache through the block table, no gather copy.
//
// For each (sequence b, kv head h), in parallel (OpenMP when the build has it): the G = Hq / Hkv
// query heads of h are scaled and turned to fp32; pass 1 computes the scores of all seq_len
// positions (each K row read once for the G heads), the softmax is taken per query head in fp32,
// pass 2 accumulates the V rows (each read once). Inner loops run over head_dim with fixed
// partial sums, so the compiler vectorises them and results do not depend on the thread count;
// x86-64 builds also carry an AVX2 clone and an AVX2+FMA build picked at run time. fp32 caches
// with head_dim % 8 == 0 take explicit 8-float vector loops: 8 (then 4) positions' scores at
// once, reduced in dot's order; the V sum with its accumulators in registers (two query heads
// per read of a V row); the next K block and the current V block prefetched (blocks are
// scattered through the cache). Caches contiguous
// [num_blocks, block_size, Hkv, D] of fp32 / bf16 / fp16; q [B, Hq, D] with strides; out
// contiguous [B, Hq, D] in q's dtype. Sequence lengths and block ids are checked before any
// work (bad ones raise).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu/rows.h"  // dot, row_max, sum_lanes
#include "sample.h"    // LogitDtype codes, the bf16 / fp16 converters and exp_vec

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

// Eight floats with no alignment requirement (GCC / Clang vector extension; lowered to SSE
// pairs in the default clone, one AVX register in the avx2 clone).
typedef float v8f __attribute__((vector_size(32), aligned(4)));

// The lanes of a summed in dot's order.
inline float hsum(v8f a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define ONERL_HAVE_SHUFFLE 1
// Lane pairs of a and b summed: [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7].
inline v8f pair_sums(v8f a, v8f b) {
  return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}
// [hsum(a[0]), ..., hsum(a[7])] with hsum's exact order of additions.
inline v8f hsum8(const v8f* a) {
  const v8f lo = pair_sums(pair_sums(a[0], a[1]), pair_sums(a[2], a[3]));
  const v8f hi = pair_sums(pair_sums(a[4], a[5]), pair_sums(a[6], a[7]));
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(lo, hi, 4, 5, 6, 7, 12, 13, 14, 15);
}
#else
#define ONERL_HAVE_SHUFFLE 0
#endif

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

// Prefetch the (fp32) rows of kv head h at slots first .. first + m - 1 into the caches.
inline void prefetch_rows(const Problem& P, const void* cache, int64_t first, int64_t m,
                          int64_t h) {
  const int64_t D = P.head_dim, st = P.kv_heads * D;
  const char* base = reinterpret_cast<const char*>(static_cast<const float*>(cache) +
                                                   (first * P.kv_heads + h) * D);
  for (int64_t o = 0; o < m; ++o)
    for (int64_t off = 0; off < D * 4; off += 64) __builtin_prefetch(base + o * st * 4 + off);
}

// Pass 2 of fp32 caches for columns [d0, d0 + 8 * NV * reps) of every query head of kv head h:
// acc[g, d] = sum over positions p (in order) of w[g, p] * v[p, d], the same sums as the scalar
// loop, with the NV accumulators of one 8-column group in registers. reps repeats NV = 1.
template <int NV, int GG = 1>
__attribute__((always_inline)) inline void weighted_rows(const Problem& P, const int32_t* table,
                                                         int64_t n, int64_t h, int64_t d0,
                                                         const float* scores, float* acc,
                                                         int64_t reps = 1) {
  const int64_t G = P.q_heads / P.kv_heads, D = P.head_dim, bs = P.block_size;
  const int64_t st = P.kv_heads * D;
  for (int64_t r = 0; r < reps; ++r, d0 += 8 * NV)
    for (int64_t g = 0; g < G; g += GG) {  // GG query heads per read of the V rows
      v8f a[GG][NV];
      for (int e = 0; e < GG; ++e)
        for (int k = 0; k < NV; ++k) a[e][k] = v8f{};
      const float* sg = scores + g * n;
      for (int64_t p0 = 0, j = 0; p0 < n; p0 += bs, ++j) {
        const int64_t m = std::min(bs, n - p0);
        const float* v = static_cast<const float*>(P.v) +
                         (static_cast<int64_t>(table[j]) * bs * P.kv_heads + h) * D + d0;
        for (int64_t o = 0; o < m; ++o, v += st)
          for (int e = 0; e < GG; ++e) {
            const float w = sg[e * n + p0 + o];
            for (int k = 0; k < NV; ++k) a[e][k] += w * *reinterpret_cast<const v8f*>(v + 8 * k);
          }
      }
      for (int e = 0; e < GG; ++e)
        for (int k = 0; k < NV; ++k)
          *reinterpret_cast<v8f*>(acc + (g + e) * D + d0 + 8 * k) = a[e][k];
    }
}

// Attention of sequence b's query heads h*G .. h*G+G-1 over its kv head h.
__attribute__((always_inline)) inline void attend_impl(const Problem& P, int64_t b, int64_t h,
                                                      float* scratch) {
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
  const bool wide = P.dtype == kF32 && D % 8 == 0;  // fp32 rows in place, whole vectors
  for (int64_t p0 = 0, j = 0; p0 < n; p0 += bs, ++j) {  // pass 1: scores
    const int64_t first = static_cast<int64_t>(table[j]) * bs, m = std::min(bs, n - p0);
    if (wide) {  // blocks are scattered: fetch the next K block and this V block ahead
      if (p0 + bs < n)
        prefetch_rows(P, P.k, static_cast<int64_t>(table[j + 1]) * bs, std::min(bs, n - p0 - bs), h);
      prefetch_rows(P, P.v, first, m, h);
    }
    int64_t o = 0;
#if ONERL_HAVE_SHUFFLE
    if (wide)  // eight positions at a time, reduced together (the same sums as dot)
      for (; o + 8 <= m; o += 8) {
        const float* k0 = static_cast<const float*>(P.k) + ((first + o) * Hkv + h) * D;
        const int64_t st = Hkv * D;
        for (int64_t g = 0; g < G; ++g) {
          const float* qg = qf + g * D;
          v8f a[8];
          for (int u = 0; u < 8; ++u) a[u] = v8f{};
          for (int64_t i = 0; i < D; i += 8) {
            const v8f qv = *reinterpret_cast<const v8f*>(qg + i);
            for (int u = 0; u < 8; ++u) a[u] += qv * *reinterpret_cast<const v8f*>(k0 + u * st + i);
          }
          *reinterpret_cast<v8f*>(scores + g * n + p0 + o) = hsum8(a);
        }
      }
#endif
    if (wide)  // four positions at a time: four independent chains (same sums as dot)
      for (; o + 4 <= m; o += 4) {
        const float* k0 = static_cast<const float*>(P.k) + ((first + o) * Hkv + h) * D;
        const int64_t st = Hkv * D;
        for (int64_t g = 0; g < G; ++g) {
          const float* qg = qf + g * D;
          v8f a0 = {}, a1 = {}, a2 = {}, a3 = {};
          for (int64_t i = 0; i < D; i += 8) {
            const v8f qv = *reinterpret_cast<const v8f*>(qg + i);
            a0 += qv * *reinterpret_cast<const v8f*>(k0 + i);
            a1 += qv * *reinterpret_cast<const v8f*>(k0 + st + i);
            a2 += qv * *reinterpret_cast<const v8f*>(k0 + 2 * st + i);
            a3 += qv * *reinterpret_cast<const v8f*>(k0 + 3 * st + i);
          }
          float* sc = scores + g * n + p0 + o;
          sc[0] = hsum(a0), sc[1] = hsum(a1), sc[2] = hsum(a2), sc[3] = hsum(a3);
        }
      }
    for (; o < m; ++o) {
      const float* k = row_at(P.k, ((first + o) * Hkv + h) * D, D, P.dtype, row);
      for (int64_t g = 0; g < G; ++g) scores[g * n + p0 + o] = dot(qf + g * D, k, D);
    }
  }
  for (int64_t g = 0; g < G; ++g) {  // softmax per query head (fixed partial sums)
    float* __restrict s = scores + g * n;
    float sm[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float m = row_max(s, n);
    int64_t p = 0;
    for (; p + 8 <= n; p += 8)
      for (int u = 0; u < 8; ++u) {
        s[p + u] = exp_vec(s[p + u] - m);
        sm[u] += s[p + u];
      }
    float sum = sum_lanes(sm);
    for (; p < n; ++p) {
      s[p] = exp_vec(s[p] - m);
      sum += s[p];
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (p = 0; p < n; ++p) s[p] *= inv;
  }
  if (wide && G % 2 == 0) {  // pass 2, two query heads x 32 columns at a time
    for (int64_t d0 = 0; d0 < D; d0 += 32) {
      const int64_t nv = std::min<int64_t>(4, (D - d0) / 8);
      if (nv == 4) weighted_rows<4, 2>(P, table, n, h, d0, scores, acc);
      else weighted_rows<1, 2>(P, table, n, h, d0, scores, acc, nv);
    }
  } else if (wide) {  // pass 2, 64 columns at a time: accumulators stay in registers
    for (int64_t d0 = 0; d0 < D; d0 += 64) {
      const int64_t nv = std::min<int64_t>(8, (D - d0) / 8);
      if (nv == 8) weighted_rows<8>(P, table, n, h, d0, scores, acc);
      else if (nv >= 4) weighted_rows<4>(P, table, n, h, d0, scores, acc);
      else weighted_rows<1>(P, table, n, h, d0, scores, acc);
      if (nv > 4 && nv < 8) weighted_rows<1>(P, table, n, h, d0 + 32, scores, acc, nv - 4);
      else if (nv > 1 && nv < 4) weighted_rows<1>(P, table, n, h, d0 + 8, scores, acc, nv - 1);
    }
  }
  if (wide) {
    for (int64_t g = 0; g < G; ++g)
      store_row(P.out, (b * P.q_heads + h * G + g) * D, D, P.dtype, acc + g * D);
    return;
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

ONERL_CLONES void attend_generic(const Problem& P, int64_t b, int64_t h, float* scratch) {
  attend_impl(P, b, h, scratch);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
// AVX2 + FMA build of the same loops (fused multiply-adds: within rounding of the others).
__attribute__((target("avx2,fma"))) void attend_fma(const Problem& P, int64_t b, int64_t h,
                                                    float* scratch) {
  attend_impl(P, b, h, scratch);
}
inline bool has_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
inline void attend(const Problem& P, int64_t b, int64_t h, float* scratch) {
  if (has_fma()) attend_fma(P, b, h, scratch);
  else attend_generic(P, b, h, scratch);
}
#else
inline void attend(const Problem& P, int64_t b, int64_t h, float* scratch) {
  attend_generic(P, b, h, scratch);
}
#endif

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
