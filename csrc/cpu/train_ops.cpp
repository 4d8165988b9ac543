// CPU backward passes of the fused fp32 row ops (onerl/models/fused_grad.py); the forwards are
// decode_ops.cpp's rms_norm_cpu and silu_mul_cpu. One pass per row instead of the eight to
// twelve torch ops (and their [rows, n] temporaries) autograd runs for the same math.
//
//   rms_norm_bwd_cpu:  x [R, n], w [n], dy [R, n]; r = 1 / sqrt(mean(x^2) + eps), xh = x r,
//                      g = dy w:   dx = r (g - xh mean(g xh)),   dw = sum over rows of dy xh
//   silu_mul_bwd_cpu:  gu [R, 2n] = [gate | up], dout [R, n]; s = sigmoid(gate):
//                      dgate = dout up s (1 + gate (1 - s)),   dup = dout gate s   -> dgu [R, 2n]
//   rope_cpu:          x [T, H, D] (row stride given), cos / sin [T, D] per token, halves a | b:
//                      forward  y_a = x_a c_a - x_b s_a,   y_b = x_b c_b + x_a s_b
//                      backward dx_a = dy_a c_a + dy_b s_b,   dx_b = dy_b c_b - dy_a s_a
//                      (the transpose: the same pass with the roles of the sines swapped)
//
// r is recomputed with the forward's reduction (rows.h dot), so it is bitwise the
// forward's. dw sums fixed 64-row chunks, then the chunks in order: the result does not depend
// on the thread count. fp32, contiguous rows (the Python side checks).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/rows.h"
#include "sample.h"  // exp_vec

namespace py = pybind11;

namespace onerl {
namespace {

constexpr int64_t kParallelElems = int64_t(1) << 16;  // below this, one thread
constexpr int64_t kDwRows = 64;                        // rows per dw partial sum

// dx of rows [r0, r1) and their dw contribution added to dw_part [n].
ONERL_CLONES void rms_bwd_rows(const float* x, const float* w, const float* dy, float* dx,
                               float* dw_part, int64_t r0, int64_t r1, int64_t n, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict xr = x + r * n;
    const float* __restrict dyr = dy + r * n;
    float* __restrict dxr = dx + r * n;
    const float inv = 1.0f / std::sqrt(dot(xr, xr, n) / static_cast<float>(n) + eps);
    float dot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int u = 0; u < 8; ++u) dot[u] += dyr[i + u] * w[i + u] * (xr[i + u] * inv);
    float c = sum_lanes(dot);
    for (; i < n; ++i) c += dyr[i] * w[i] * (xr[i] * inv);
    c /= static_cast<float>(n);
    for (i = 0; i < n; ++i) {
      const float xh = xr[i] * inv;
      dxr[i] = inv * (dyr[i] * w[i] - xh * c);
      dw_part[i] += dyr[i] * xh;
    }
  }
}

ONERL_CLONES void silu_bwd_rows(const float* gu, const float* dout, float* dgu, int64_t r0,
                                int64_t r1, int64_t n) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict g = gu + r * 2 * n;
    const float* __restrict u = g + n;
    const float* __restrict d = dout + r * n;
    float* __restrict dg = dgu + r * 2 * n;
    float* __restrict du = dg + n;
    for (int64_t i = 0; i < n; ++i) {
      const float s = 1.0f / (1.0f + exp_vec(-g[i]));
      dg[i] = d[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
      du[i] = d[i] * (g[i] * s);
    }
  }
}

ONERL_CLONES void rope_rows_out(const float* x, int64_t x_stride, const float* cos,
                                const float* sin, float* out, int64_t r0, int64_t r1, int64_t h,
                                int64_t d, bool backward) {
  const int64_t half = d / 2;
  for (int64_t t = r0; t < r1; ++t) {
    const float* __restrict c = cos + t * d;
    const float* __restrict s = sin + t * d;
    for (int64_t j = 0; j < h; ++j) {
      const float* __restrict a = x + t * x_stride + j * d;
      float* __restrict o = out + (t * h + j) * d;
      if (!backward) {
        for (int64_t i = 0; i < half; ++i) o[i] = a[i] * c[i] - a[i + half] * s[i];
        for (int64_t i = half; i < d; ++i) o[i] = a[i] * c[i] + a[i - half] * s[i];
      } else {
        for (int64_t i = 0; i < half; ++i) o[i] = a[i] * c[i] + a[i + half] * s[i + half];
        for (int64_t i = half; i < d; ++i) o[i] = a[i] * c[i] - a[i - half] * s[i - half];
      }
    }
  }
}

}  // namespace

void rms_norm_bwd_cpu(std::uintptr_t x, std::uintptr_t weight, std::uintptr_t dy,
                      std::uintptr_t dx, std::uintptr_t dw, int64_t rows, int64_t n, double eps) {
  const float* xp = as_ptr<const float>(x);
  const float* wp = as_ptr<const float>(weight);
  const float* dyp = as_ptr<const float>(dy);
  float* dxp = as_ptr<float>(dx);
  const int64_t chunks = (rows + kDwRows - 1) / kDwRows;
  std::vector<float> part(static_cast<size_t>(chunks * n), 0.0f);
  const bool parallel = chunks > 1 && rows * n >= kParallelElems;
  (void)parallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < chunks; ++c)
    rms_bwd_rows(xp, wp, dyp, dxp, part.data() + c * n, c * kDwRows,
                 std::min(rows, (c + 1) * kDwRows), n, static_cast<float>(eps));
  float* dwp = as_ptr<float>(dw);
  for (int64_t i = 0; i < n; ++i) dwp[i] = 0.0f;
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < n; ++i) dwp[i] += part[c * n + i];
}

void silu_mul_bwd_cpu(std::uintptr_t gu, std::uintptr_t dout, std::uintptr_t dgu, int64_t rows,
                      int64_t n) {
  const float* g = as_ptr<const float>(gu);
  const float* d = as_ptr<const float>(dout);
  float* o = as_ptr<float>(dgu);
  for_rows(rows, 2 * n, kParallelElems,
           [&](int64_t r0, int64_t r1) { silu_bwd_rows(g, d, o, r0, r1, n); });
}

void rope_cpu(std::uintptr_t x, int64_t x_stride, std::uintptr_t cos, std::uintptr_t sin,
              std::uintptr_t out, int64_t rows, int64_t heads, int64_t head_dim, bool backward) {
  check(head_dim % 2 == 0, "rope: head_dim must be even");
  const float* xp = as_ptr<const float>(x);
  const float* c = as_ptr<const float>(cos);
  const float* s = as_ptr<const float>(sin);
  float* o = as_ptr<float>(out);
  for_rows(rows, heads * head_dim, kParallelElems, [&](int64_t r0, int64_t r1) {
    rope_rows_out(xp, x_stride, c, s, o, r0, r1, heads, head_dim, backward);
  });
}

}  // namespace onerl

void register_train_ops(py::module_& m) {
  m.def("rms_norm_bwd_cpu", &onerl::rms_norm_bwd_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("x"), py::arg("weight"), py::arg("dy"), py::arg("dx"), py::arg("dw"),
        py::arg("rows"), py::arg("n"), py::arg("eps"));
  m.def("silu_mul_bwd_cpu", &onerl::silu_mul_bwd_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("gu"), py::arg("dout"), py::arg("dgu"), py::arg("rows"), py::arg("n"));
  m.def("rope_cpu", &onerl::rope_cpu, py::call_guard<py::gil_scoped_release>(), py::arg("x"),
        py::arg("x_stride"), py::arg("cos"), py::arg("sin"), py::arg("out"), py::arg("rows"),
        py::arg("heads"), py::arg("head_dim"), py::arg("backward"));
}
