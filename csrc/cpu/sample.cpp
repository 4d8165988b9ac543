// CPU twin of sample (math in csrc/sample.h, algorithm in onerl_kernels/sample.py) and its
// Python bindings. Row by row: the truncation threshold by selection and sorting (the CUDA
// kernel uses radix select; both implement reference.sample_keep_mask), then each chunk's
// partial in lane order, then the shared merge.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <vector>

#include "cpu/rows.h"  // sum_lanes
#include "sample.h"

namespace py = pybind11;

namespace onerl {
namespace {

// sum over i < n of e_i = exp((z_i - m) * inv_t), counting only z_i >= keep unless all (which
// also counts NaN logits, as a plain sum does); e_i (0 where not counted) is stored to w when w
// is given. Eight fixed partial sums.
template <bool all>
inline float exp_sum(const float* __restrict z, int n, float m, float inv_t, float* __restrict w,
                     float keep) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) {
      const float e = (all || z[i + u] >= keep) ? exp_vec((z[i + u] - m) * inv_t) : 0.0f;
      if (w) w[i + u] = e;
      acc[u] += e;
    }
  float s = sum_lanes(acc);
  for (; i < n; ++i) {
    const float e = (all || z[i] >= keep) ? exp_vec((z[i] - m) * inv_t) : 0.0f;
    if (w) w[i] = e;
    s += e;
  }
  return s;
}

float row_threshold(const void* row, int dtype, int64_t vocab, float temperature, int64_t top_k,
                    float top_p, std::vector<float>& buf) {
  if (!truncates(temperature, top_k, top_p, vocab)) return -INFINITY;
  buf.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) buf[i] = load_logit(row, i, dtype);
  float tau = -INFINITY;
  auto end = buf.end();
  if (top_k > 0 && top_k < vocab) {
    std::nth_element(buf.begin(), buf.begin() + (top_k - 1), buf.end(), std::greater<float>());
    tau = buf[top_k - 1];
    end = std::partition(buf.begin(), buf.end(), [tau](float z) { return z >= tau; });
  }
  if (!(top_p < 1.0f)) return tau;
  std::sort(buf.begin(), end, std::greater<float>());
  const float inv_t = inv_temperature(temperature), m = buf[0];
  const int64_t n = end - buf.begin();
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += expf((buf[i] - m) * inv_t);
  const float target = top_p * total;
  float above = 0.0f;
  tau = buf[0];
  for (int64_t i = 0; i < n;) {  // groups of equal logits, largest first
    int64_t j = i;
    float group = 0.0f;
    for (; j < n && buf[j] == buf[i]; ++j) group += expf((buf[j] - m) * inv_t);
    if (!(above < target)) break;
    tau = buf[i];
    above += group;
    i = j;
  }
  return tau;
}

// Chunk c of a row: the partial (m_full, s_full, m_keep, s_keep, z of the drawn token). Max
// and sums run over the chunk in memory order with eight fixed partial sums (they vectorise;
// the CUDA kernel reduces in yet another order: both are within float rounding); only the
// inverse-CDF walk follows the lane order, sequentially. z: the chunk as fp32 when the logits
// are 16-bit (fp32 rows are read in place); w: the kept weights.
ONERL_CLONES void chunk_partial(const void* row, int dtype, int64_t vocab, int64_t c,
                                float temperature, float tau, int64_t seed, int64_t position,
                                float* part, int32_t* part_token, float* zbuf, float* wbuf) {
  const int64_t base = c * kChunk;
  const int lim = static_cast<int>(std::min<int64_t>(kChunk, vocab - base));  // chunk length
  const float* __restrict z = static_cast<const float*>(row) + base;
  if (dtype != kF32) {
    for (int i = 0; i < lim; ++i) zbuf[i] = load_logit(row, base + i, dtype);
    z = zbuf;
  }
  float* __restrict w = wbuf;
  float mf8[8], mk8[8];
  for (int u = 0; u < 8; ++u) mf8[u] = mk8[u] = -INFINITY;
  int i = 0;
  for (; i + 8 <= lim; i += 8)
    for (int u = 0; u < 8; ++u) {
      const float x = z[i + u];
      mf8[u] = x > mf8[u] ? x : mf8[u];  // (NaN logits are skipped, as fmaxf does)
      mk8[u] = (x >= tau && x > mk8[u]) ? x : mk8[u];
    }
  float mf = -INFINITY, mk = -INFINITY;
  for (int u = 0; u < 8; ++u) {
    mf = mf8[u] > mf ? mf8[u] : mf;
    mk = mk8[u] > mk ? mk8[u] : mk;
  }
  for (; i < lim; ++i) {
    mf = z[i] > mf ? z[i] : mf;
    mk = (z[i] >= tau && z[i] > mk) ? z[i] : mk;
  }
  const float inv_t = inv_temperature(temperature);
  const bool same = tau == -INFINITY && temperature > 0.0f;  // kept weights = full weights
  float sf = 0.0f;
  if (mf > -INFINITY) sf = exp_sum<true>(z, lim, mf, inv_t, same ? w : nullptr, -INFINITY);
  if (!(temperature > 0.0f)) {  // argmax: lowest token index holding the chunk maximum
    int best = -1;
    for (int o = 0; o < lim && best < 0; ++o)
      if (z[o] == mf) best = o;
    part[0] = mf; part[1] = sf; part[2] = mf; part[3] = 1.0f; part[4] = mf;
    *part_token = static_cast<int32_t>(base + (best < 0 ? 0 : best));
    return;
  }
  float sk = 0.0f;
  if (same && mf > -INFINITY) {
    sk = sf;
  } else if (mk > -INFINITY) {
    sk = exp_sum<false>(z, lim, mk, inv_t, w, tau);
  } else {
    for (int o = 0; o < lim; ++o) w[o] = 0.0f;
  }
  const float target = philox_uniform(seed, position, static_cast<uint32_t>(c)) * sk;
  int chosen = -1, last = -1;  // chunk offsets, visited in lane order
  float cum = 0.0f;
  for (int t = 0; t < kLanes && chosen < 0; ++t)  // lane t: groups s of 4 at s*1024 + t*4
    for (int s = 0; s < 4 && chosen < 0; ++s) {
      const int o0 = lane_offset(t, s * 4);
      if (o0 >= lim) break;
      for (int o = o0; o < o0 + 4 && o < lim; ++o) {
        if (!(w[o] > 0.0f)) continue;
        last = o;
        cum += w[o];
        if (cum > target) { chosen = o; break; }
      }
    }
  if (chosen < 0) chosen = last;
  part[0] = mf; part[1] = sf; part[2] = mk;
  part[3] = chosen < 0 ? 0.0f : sk;
  part[4] = chosen < 0 ? -INFINITY : z[chosen];
  *part_token = static_cast<int32_t>(base + (chosen < 0 ? 0 : chosen));
}

}  // namespace

void sample_cpu(std::uintptr_t logits, int64_t row_stride, int dtype, int64_t batch, int64_t vocab,
                std::uintptr_t temperature, std::uintptr_t top_k, std::uintptr_t top_p,
                std::uintptr_t seeds, std::uintptr_t positions, std::uintptr_t tau,
                std::uintptr_t part, std::uintptr_t part_token, std::uintptr_t tokens,
                std::uintptr_t logp) {
  check(dtype == kF32 || dtype == kBF16 || dtype == kF16, "sample: unsupported logits dtype");
  check(vocab > 0 && vocab < (int64_t(1) << 31), "sample: vocab must be in [1, 2^31)");
  const int64_t chunks = num_chunks(vocab);
  const int64_t esize = dtype == kF32 ? 4 : 2;
  const float* temp = as_ptr<const float>(temperature);
  const int64_t* k = as_ptr<const int64_t>(top_k);
  const float* p = as_ptr<const float>(top_p);
  const int64_t* seed = as_ptr<const int64_t>(seeds);
  const int64_t* pos = as_ptr<const int64_t>(positions);
  float* taus = as_ptr<float>(tau);
  float* parts = as_ptr<float>(part);
  int32_t* ptok = as_ptr<int32_t>(part_token);
  // Rows in parallel (OpenMP builds); each row's result depends only on that row.
#pragma omp parallel if (batch * vocab >= (int64_t(1) << 16) && batch > 1)
  {
    std::vector<float> buf, z(dtype == kF32 ? 0 : kChunk), w(kChunk);
#pragma omp for schedule(dynamic, 2)
    for (int64_t b = 0; b < batch; ++b) {
      const void* row = as_ptr<const char>(logits) + b * row_stride * esize;
      taus[b] = row_threshold(row, dtype, vocab, temp[b], k[b], p[b], buf);
      for (int64_t c = 0; c < chunks; ++c)
        chunk_partial(row, dtype, vocab, c, temp[b], taus[b], seed[b], pos[b],
                      parts + (b * chunks + c) * kPartFields, ptok + b * chunks + c, z.data(),
                      w.data());
      merge_row(parts + b * chunks * kPartFields, ptok + b * chunks, chunks, temp[b], seed[b],
                pos[b], as_ptr<int64_t>(tokens) + b, as_ptr<float>(logp) + b);
    }
  }
}

#ifdef ONERL_WITH_CUDA
void sample_cuda(std::uintptr_t logits, int64_t row_stride, int dtype, int64_t batch,
                 int64_t vocab, std::uintptr_t temperature, std::uintptr_t top_k,
                 std::uintptr_t top_p, std::uintptr_t seeds, std::uintptr_t positions,
                 std::uintptr_t tau, std::uintptr_t part, std::uintptr_t part_token,
                 std::uintptr_t tokens, std::uintptr_t logp, std::uintptr_t stream);
#endif

}  // namespace onerl

void register_sample(py::module_& m) {
  m.def("sample_cpu", &onerl::sample_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("logits"), py::arg("row_stride"), py::arg("dtype"), py::arg("batch"),
        py::arg("vocab"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"),
        py::arg("seeds"), py::arg("positions"), py::arg("tau"), py::arg("part"),
        py::arg("part_token"), py::arg("tokens"), py::arg("logp"));
  m.def("philox_uniform", &onerl::philox_uniform, py::arg("seed"), py::arg("position"),
        py::arg("stream"));
#ifdef ONERL_WITH_CUDA
  m.def("sample_cuda", &onerl::sample_cuda, py::call_guard<py::gil_scoped_release>(),
        py::arg("logits"), py::arg("row_stride"), py::arg("dtype"), py::arg("batch"),
        py::arg("vocab"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"),
        py::arg("seeds"), py::arg("positions"), py::arg("tau"), py::arg("part"),
        py::arg("part_token"), py::arg("tokens"), py::arg("logp"), py::arg("stream"));
#endif
}
