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

#include "sample.h"

namespace py = pybind11;

namespace onerl {
namespace {

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

void chunk_partial(const void* row, int dtype, int64_t vocab, int64_t c, float temperature,
                   float tau, int64_t seed, int64_t position, float* part, int32_t* part_token,
                   float* z, float* w, int32_t* tok) {
  const int64_t base = c * kChunk;
  int n = 0;  // the chunk's tokens in lane order (positions past the vocabulary left out)
  for (int t = 0; t < kLanes; ++t)
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t i = base + lane_offset(t, j);
      if (i >= vocab) continue;
      z[n] = load_logit(row, i, dtype);
      tok[n++] = static_cast<int32_t>(i);
    }
  float mf = -INFINITY, mk = -INFINITY;
  for (int o = 0; o < n; ++o) {
    mf = fmaxf(mf, z[o]);
    if (z[o] >= tau) mk = fmaxf(mk, z[o]);
  }
  const float inv_t = inv_temperature(temperature);
  const bool same = tau == -INFINITY && temperature > 0.0f;  // kept weights = full weights
  float sf = 0.0f;
  if (mf > -INFINITY)
    for (int o = 0; o < n; ++o) {
      const float e = expf((z[o] - mf) * inv_t);
      if (same) w[o] = e;
      sf += e;
    }
  if (!(temperature > 0.0f)) {  // argmax: lowest token index holding the chunk maximum
    int32_t best = INT32_MAX;
    for (int o = 0; o < n; ++o)
      if (z[o] == mf && tok[o] < best) best = tok[o];
    part[0] = mf; part[1] = sf; part[2] = mf; part[3] = 1.0f; part[4] = mf;
    *part_token = best == INT32_MAX ? static_cast<int32_t>(base) : best;
    return;
  }
  float sk = 0.0f;
  if (same && mf > -INFINITY) {
    sk = sf;
  } else {
    for (int o = 0; o < n; ++o) {
      w[o] = (z[o] >= tau && mk > -INFINITY) ? expf((z[o] - mk) * inv_t) : 0.0f;
      sk += w[o];
    }
  }
  const float target = philox_uniform(seed, position, static_cast<uint32_t>(c)) * sk;
  int chosen = -1, last = -1;
  float cum = 0.0f;
  for (int o = 0; o < n; ++o) {
    if (!(w[o] > 0.0f)) continue;
    last = o;
    cum += w[o];
    if (cum > target) { chosen = o; break; }
  }
  if (chosen < 0) chosen = last;
  part[0] = mf; part[1] = sf; part[2] = mk;
  part[3] = chosen < 0 ? 0.0f : sk;
  part[4] = chosen < 0 ? -INFINITY : z[chosen];
  *part_token = chosen < 0 ? static_cast<int32_t>(base) : tok[chosen];
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
  std::vector<float> buf, z(kChunk), w(kChunk);
  std::vector<int32_t> tok(kChunk);
  for (int64_t b = 0; b < batch; ++b) {
    const void* row = as_ptr<const char>(logits) + b * row_stride * esize;
    taus[b] = row_threshold(row, dtype, vocab, temp[b], k[b], p[b], buf);
    for (int64_t c = 0; c < chunks; ++c)
      chunk_partial(row, dtype, vocab, c, temp[b], taus[b], seed[b], pos[b],
                    parts + (b * chunks + c) * kPartFields, ptok + b * chunks + c, z.data(),
                    w.data(), tok.data());
    merge_row(parts + b * chunks * kPartFields, ptok + b * chunks, chunks, temp[b], seed[b],
              pos[b], as_ptr<int64_t>(tokens) + b, as_ptr<float>(logp) + b);
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
