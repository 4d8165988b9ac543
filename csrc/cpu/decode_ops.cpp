// CPU fused elementwise ops of the engine's fp32 forward (onerl/models/fused.py): each replaces
// several small torch ops (and their temporaries) by one pass over the rows.
//
//   rms_norm_cpu:      [res += x;] out = w * (s * rsqrt(mean(s^2) + eps)), s = res (or x)
//   rope_write_kv_cpu: RoPE in place on the q and k heads of a fused qkv row (rotate-half
//                      form, cos/sin tables [max_pos, D] indexed by position), then the token's
//                      k and v rows copied into its paged-cache slot (slot < 0: skipped)
//   silu_mul_cpu:      out = silu(gate) * up, gate/up the two halves of a fused row
//
// fp32 only (the engine falls back to torch ops for other dtypes). Rows are independent and
// computed in a fixed order, so results do not depend on the batch or the thread count.
// Rows run in parallel (OpenMP builds) only when there is enough work to pay for it.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstring>
#include <string>

#include "cpu/rows.h"
#include "sample.h"  // exp_vec

namespace py = pybind11;

namespace onerl {
namespace {

constexpr int64_t kParallelElems = int64_t(1) << 17;  // below this, one thread

ONERL_CLONES void rms_rows(const float* x, float* res, const float* w, float* out, int64_t r0,
                           int64_t r1, int64_t n, int64_t x_stride, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict xr = x + r * x_stride;
    float* __restrict o = out + r * n;
    const float* __restrict s = xr;
    if (res != nullptr) {
      float* __restrict rr = res + r * n;
      for (int64_t i = 0; i < n; ++i) rr[i] += xr[i];
      s = rr;
    }
    const float inv = 1.0f / std::sqrt(dot(s, s, n) / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) o[i] = w[i] * (s[i] * inv);
  }
}

ONERL_CLONES void rope_rows(float* qkv, int64_t stride, const float* cos, const float* sin,
                            const int64_t* pos, int64_t r0, int64_t r1, int64_t rope_heads,
                            int64_t d) {
  const int64_t half = d / 2;
  float tmp[512];
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict c = cos + pos[r] * d;
    const float* __restrict s = sin + pos[r] * d;
    for (int64_t h = 0; h < rope_heads; ++h) {
      float* __restrict x = qkv + r * stride + h * d;
      for (int64_t i = 0; i < half; ++i) tmp[i] = x[i] * c[i] - x[i + half] * s[i];
      for (int64_t i = half; i < d; ++i) tmp[i] = x[i] * c[i] + x[i - half] * s[i];
      for (int64_t i = 0; i < d; ++i) x[i] = tmp[i];
    }
  }
}

ONERL_CLONES void silu_rows(const float* gu, float* out, int64_t r0, int64_t r1, int64_t n,
                            int64_t stride) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict g = gu + r * stride;
    const float* __restrict u = g + n;
    float* __restrict o = out + r * n;
    for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.0f + exp_vec(-g[i])) * u[i];
  }
}

}  // namespace

void rms_norm_cpu(std::uintptr_t x, int64_t x_stride, std::uintptr_t residual,
                  std::uintptr_t weight, std::uintptr_t out, int64_t rows, int64_t n, double eps) {
  const float* xp = as_ptr<const float>(x);
  float* rp = residual ? as_ptr<float>(residual) : nullptr;
  const float* wp = as_ptr<const float>(weight);
  float* op = as_ptr<float>(out);
  for_rows(rows, n, kParallelElems, [&](int64_t r0, int64_t r1) {
    rms_rows(xp, rp, wp, op, r0, r1, n, x_stride, static_cast<float>(eps));
  });
}

void rope_write_kv_cpu(std::uintptr_t qkv, int64_t stride, std::uintptr_t cos, std::uintptr_t sin,
                       std::uintptr_t positions, int64_t max_pos, int64_t rows, int64_t q_heads,
                       int64_t kv_heads, int64_t head_dim, std::uintptr_t k_cache,
                       std::uintptr_t v_cache, std::uintptr_t slots, int64_t num_slots) {
  check(head_dim % 2 == 0 && head_dim <= 512, "rope_write_kv: head_dim must be even and <= 512");
  const int64_t* pos = as_ptr<const int64_t>(positions);
  const int64_t* slot = slots ? as_ptr<const int64_t>(slots) : nullptr;
  for (int64_t r = 0; r < rows; ++r) {  // validate before any write
    if (pos[r] < 0 || pos[r] >= max_pos)
      check(false, "rope_write_kv: positions[" + std::to_string(r) + "] = " +
                       std::to_string(pos[r]) + " is outside the RoPE table (" +
                       std::to_string(max_pos) + " rows)");
    if (slot != nullptr && slot[r] >= num_slots)
      check(false, "rope_write_kv: slot_mapping[" + std::to_string(r) + "] = " +
                       std::to_string(slot[r]) + " is outside the cache's " +
                       std::to_string(num_slots) + " slots");
  }
  float* base = as_ptr<float>(qkv);
  const float* c = as_ptr<const float>(cos);
  const float* s = as_ptr<const float>(sin);
  const int64_t row_elems = kv_heads * head_dim;
  float* kc = as_ptr<float>(k_cache);
  float* vc = as_ptr<float>(v_cache);
  const int64_t qkv_elems = (q_heads + 2 * kv_heads) * head_dim;
  for_rows(rows, qkv_elems, kParallelElems, [&](int64_t r0, int64_t r1) {
    rope_rows(base, stride, c, s, pos, r0, r1, q_heads + kv_heads, head_dim);
    if (slot == nullptr) return;
    for (int64_t r = r0; r < r1; ++r) {
      if (slot[r] < 0) continue;
      const float* row = base + r * stride + q_heads * head_dim;
      std::memcpy(kc + slot[r] * row_elems, row, sizeof(float) * row_elems);
      std::memcpy(vc + slot[r] * row_elems, row + row_elems, sizeof(float) * row_elems);
    }
  });
}

void silu_mul_cpu(std::uintptr_t gate_up, int64_t stride, std::uintptr_t out, int64_t rows,
                  int64_t n) {
  const float* g = as_ptr<const float>(gate_up);
  float* o = as_ptr<float>(out);
  for_rows(rows, n, kParallelElems,
           [&](int64_t r0, int64_t r1) { silu_rows(g, o, r0, r1, n, stride); });
}

}  // namespace onerl

void register_decode_ops(py::module_& m) {
  m.def("rms_norm_cpu", &onerl::rms_norm_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("x"), py::arg("x_stride"), py::arg("residual"), py::arg("weight"), py::arg("out"),
        py::arg("rows"), py::arg("n"), py::arg("eps"));
  m.def("rope_write_kv_cpu", &onerl::rope_write_kv_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("qkv"), py::arg("stride"), py::arg("cos"), py::arg("sin"), py::arg("positions"),
        py::arg("max_pos"), py::arg("rows"), py::arg("q_heads"), py::arg("kv_heads"),
        py::arg("head_dim"), py::arg("k_cache"), py::arg("v_cache"), py::arg("slots"),
        py::arg("num_slots"));
  m.def("silu_mul_cpu", &onerl::silu_mul_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("gate_up"), py::arg("stride"), py::arg("out"), py::arg("rows"), py::arg("n"));
}
