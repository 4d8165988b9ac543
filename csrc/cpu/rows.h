// Shared pieces of the CPU row ops (decode_ops.cpp, logprobs_ops.cpp, train_ops.cpp): the
// row-parallel driver and the fixed-order 8-lane reductions.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace onerl {

// The eight lanes of a partial-sum array added in one fixed tree order.
__attribute__((always_inline)) inline float sum_lanes(const float* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Dot product with eight fixed partial sums (vectorises without reassociation; the same order
// wherever it is used, so e.g. RMSNorm's backward recomputes the forward's scale bitwise).
__attribute__((always_inline)) inline float dot(const float* __restrict a,
                                                const float* __restrict b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  float s = sum_lanes(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// max of x[0..n) in eight lanes (-inf for n = 0; NaN entries are skipped).
__attribute__((always_inline)) inline float row_max(const float* __restrict x, int64_t n) {
  float mx[8];
  for (int u = 0; u < 8; ++u) mx[u] = -INFINITY;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) mx[u] = x[i + u] > mx[u] ? x[i + u] : mx[u];
  float m = -INFINITY;
  for (int u = 0; u < 8; ++u) m = mx[u] > m ? mx[u] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Runs f(r0, r1) over [0, rows) in contiguous row ranges: one range per OpenMP thread when
// rows * row_elems reaches min_elems (enough work to pay for waking the threads), else one call.
// Callers compute each row alone, so results do not depend on the split.
template <typename F>
void for_rows(int64_t rows, int64_t row_elems, int64_t min_elems, F f) {
#ifdef _OPENMP
  if (rows > 1 && rows * row_elems >= min_elems) {
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
      if (r0 < r1) f(r0, r1);
    }
    return;
  }
#endif
  f(0, rows);
}

}  // namespace onerl
