// Row-parallel driver of the CPU row ops (decode_ops.cpp, logprobs_ops.cpp).
#pragma once
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace onerl {

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
