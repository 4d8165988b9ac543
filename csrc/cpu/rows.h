// Shared pieces of the CPU row ops (decode_ops.cpp, logprobs_ops.cpp, train_ops.cpp): the
// row-parallel driver and a fixed-order reduction.
#pragma once
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace onerl {

// Dot product with eight fixed partial sums (vectorises without reassociation; the same order
// wherever it is used, so e.g. RMSNorm's backward recomputes the forward's scale bitwise).
__attribute__((always_inline)) inline float dot(const float* __restrict a,
                                                const float* __restrict b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
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
