// CPU row passes of logprobs_entropy's chunked path (onerl_kernels/logprobs_chunked.py): each
// replaces the eight to ten torch ops that path runs over a [R, C] logit chunk s = z / T by
// one or two passes over each row (the chunk stays in cache; no temporaries).
//
//   lpe_online_cpu:  fold chunk s [R, C] into the online row state (m, l, a, t), y relative to
//                    the chunk (outside [0, C): not here):
//                      t += s_y;  m' = max(m, max_j s_j);  d_j = max(s_j - m', floor)
//                      l' = e^(m - m') l + sum_j e^d_j
//                      a' = e^(m - m') (a + l (m - m') [l > 0]) + sum_j e^d_j d_j   (entropy)
//   lpe_dlogits_cpu: dZ of the chunk, in place:  d_j = s_j - m,  p_j = e^max(d_j - log l, floor)
//                      dS_j = -g_lp p_j  (at the target: g_lp (1 - p_y))  - g_H p_j (d_j - a/l)
//                      dZ_j = dS_j / T;  rows not live: 0
//
// Same math and clamping as the torch ops there (the floor keeps exp out of subnormals); exp is
// the shared polynomial exp_vec (relative error ~1e-7, the scalar rescale e^(m - m') uses
// std::exp). fp32 only: other compute dtypes (fp64) keep the torch ops. Each row is computed
// alone, in a fixed order with eight partial sums, so a row's results do not depend on the
// batch or the thread count. Rows run in parallel (OpenMP builds) when the chunk is large.
#include <pybind11/pybind11.h>

#include <cmath>

#include "cpu/rows.h"
#include "sample.h"  // exp_vec

namespace py = pybind11;

namespace onerl {
namespace {

constexpr int64_t kParallelElems = int64_t(1) << 16;  // below this, one thread

struct Online {
  const float* s;
  const int64_t* y;
  float *m, *l, *a, *t;
  int64_t cols;
  float floor;
  bool entropy;
};

ONERL_CLONES void online_rows(const Online& P, int64_t r0, int64_t r1) {
  const int64_t C = P.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict s = P.s + r * C;
    const int64_t y = P.y[r];
    if (y >= 0 && y < C) P.t[r] += s[y];
    const float cm = row_max(s, C), m = P.m[r], mn = m > cm ? m : cm;
    float se[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sd[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float fl = P.floor;
    int64_t i = 0;
    for (; i + 8 <= C; i += 8)
      for (int u = 0; u < 8; ++u) {
        float d = s[i + u] - mn;
        d = d > fl ? d : fl;
        const float e = exp_vec(d);
        se[u] += e;
        sd[u] += e * d;
      }
    float sum_e = sum_lanes(se), sum_d = sum_lanes(sd);
    for (; i < C; ++i) {
      float d = s[i] - mn;
      d = d > fl ? d : fl;
      const float e = exp_vec(d);
      sum_e += e;
      sum_d += e * d;
    }
    const float l = P.l[r], alpha = std::exp(m - mn);
    P.l[r] = alpha * l + sum_e;
    if (P.entropy) P.a[r] = alpha * (P.a[r] + l * (l > 0.0f ? m - mn : 0.0f)) + sum_d;
    P.m[r] = mn;
  }
}

struct Dlogits {
  float* s;
  const int64_t* y;
  const bool* live;
  const float *stats, *omp, *glp, *gh;  // stats [R, 3] = (m, log l, a / l); glp / gh may be null
  int64_t cols;
  float inv_t, floor;
};

ONERL_CLONES void dlogits_rows(const Dlogits& P, int64_t r0, int64_t r1) {
  const int64_t C = P.cols;
  for (int64_t r = r0; r < r1; ++r) {
    float* __restrict s = P.s + r * C;
    if (!P.live[r]) {
      for (int64_t i = 0; i < C; ++i) s[i] = 0.0f;
      continue;
    }
    const float m = P.stats[3 * r], log_l = P.stats[3 * r + 1], mean = P.stats[3 * r + 2];
    const float glp = P.glp ? P.glp[r] : 0.0f, gh = P.gh ? P.gh[r] : 0.0f;
    const float inv_t = P.inv_t, fl = P.floor;
    const int64_t y = P.y[r];
    const bool hit = y >= 0 && y < C;
    const float s_y = hit ? s[y] : 0.0f;
    for (int64_t i = 0; i < C; ++i) {
      const float d = s[i] - m;
      float x = d - log_l;
      x = x > fl ? x : fl;
      const float p = exp_vec(x);
      s[i] = (-glp * p - gh * ((d - mean) * p)) * inv_t;
    }
    if (hit && P.glp) {  // the target's entry: g_lp (1 - p_y) in place of -g_lp p_y
      const float d = s_y - m;
      float x = d - log_l;
      x = x > fl ? x : fl;
      const float p = exp_vec(x);
      s[y] = (glp * P.omp[r] - gh * ((d - mean) * p)) * inv_t;
    }
  }
}

}  // namespace

void lpe_online_cpu(std::uintptr_t s, int64_t rows, int64_t cols, std::uintptr_t y,
                    std::uintptr_t m, std::uintptr_t l, std::uintptr_t a, std::uintptr_t t,
                    bool need_entropy, double floor) {
  const Online P{as_ptr<const float>(s), as_ptr<const int64_t>(y), as_ptr<float>(m),
                 as_ptr<float>(l), as_ptr<float>(a), as_ptr<float>(t), cols,
                 static_cast<float>(floor), need_entropy};
  for_rows(rows, cols, kParallelElems,
           [&](int64_t r0, int64_t r1) { online_rows(P, r0, r1); });
}

void lpe_dlogits_cpu(std::uintptr_t s, int64_t rows, int64_t cols, std::uintptr_t y,
                     std::uintptr_t live, std::uintptr_t stats, std::uintptr_t omp,
                     std::uintptr_t glp, std::uintptr_t gh, double inv_t, double floor) {
  const Dlogits P{as_ptr<float>(s), as_ptr<const int64_t>(y), as_ptr<const bool>(live),
                  as_ptr<const float>(stats), as_ptr<const float>(omp),
                  glp ? as_ptr<const float>(glp) : nullptr, gh ? as_ptr<const float>(gh) : nullptr,
                  cols, static_cast<float>(inv_t), static_cast<float>(floor)};
  for_rows(rows, cols, kParallelElems,
           [&](int64_t r0, int64_t r1) { dlogits_rows(P, r0, r1); });
}

}  // namespace onerl

void register_logprobs_ops(py::module_& m) {
  m.def("lpe_online_cpu", &onerl::lpe_online_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("s"), py::arg("rows"), py::arg("cols"), py::arg("y"), py::arg("m"), py::arg("l"),
        py::arg("a"), py::arg("t"), py::arg("need_entropy"), py::arg("floor"));
  m.def("lpe_dlogits_cpu", &onerl::lpe_dlogits_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("s"), py::arg("rows"), py::arg("cols"), py::arg("y"), py::arg("live"),
        py::arg("stats"), py::arg("omp"), py::arg("glp"), py::arg("gh"), py::arg("inv_t"),
        py::arg("floor"));
}
