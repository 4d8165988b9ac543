// CPU twin of the paged-KV ops (layout and semantics in csrc/paged_kv.h) and their bindings.
// Rows and blocks are copied with memcpy; out-of-range slots or block ids raise (the CUDA
// kernels cannot raise and skip them instead).
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "paged_kv.h"

namespace py = pybind11;

namespace onerl {

void write_kv_cpu(std::uintptr_t k, std::uintptr_t v, std::uintptr_t k_cache,
                  std::uintptr_t v_cache, std::uintptr_t slots, int64_t n_tokens,
                  int64_t row_bytes, int64_t k_stride_bytes, int64_t v_stride_bytes,
                  int64_t num_slots) {
  const int64_t* slot = as_ptr<const int64_t>(slots);
  const char* ks = as_ptr<const char>(k);
  const char* vs = as_ptr<const char>(v);
  char* kc = as_ptr<char>(k_cache);
  char* vc = as_ptr<char>(v_cache);
  for (int64_t i = 0; i < n_tokens; ++i) {
    const int64_t s = slot[i];
    if (s < 0) continue;
    if (s >= num_slots)
      check(false, "write_kv: slot_mapping[" + std::to_string(i) + "] = " + std::to_string(s) +
                       " is outside the cache's " + std::to_string(num_slots) + " slots");
    std::memcpy(kc + s * row_bytes, ks + i * k_stride_bytes, static_cast<size_t>(row_bytes));
    std::memcpy(vc + s * row_bytes, vs + i * v_stride_bytes, static_cast<size_t>(row_bytes));
  }
}

void copy_blocks_cpu(std::uintptr_t k_cache, std::uintptr_t v_cache, std::uintptr_t src,
                     std::uintptr_t dst, int64_t n_pairs, int64_t block_bytes,
                     int64_t num_blocks) {
  const int64_t* s = as_ptr<const int64_t>(src);
  const int64_t* d = as_ptr<const int64_t>(dst);
  char* kc = as_ptr<char>(k_cache);
  char* vc = as_ptr<char>(v_cache);
  for (int64_t i = 0; i < n_pairs; ++i) {
    if (s[i] < 0 || s[i] >= num_blocks || d[i] < 0 || d[i] >= num_blocks)
      check(false, "copy_blocks: pair " + std::to_string(i) + " (" + std::to_string(s[i]) + " -> " +
              std::to_string(d[i]) + ") is outside the cache's " + std::to_string(num_blocks) +
              " blocks");
    if (s[i] == d[i]) continue;
    std::memcpy(kc + d[i] * block_bytes, kc + s[i] * block_bytes, static_cast<size_t>(block_bytes));
    std::memcpy(vc + d[i] * block_bytes, vc + s[i] * block_bytes, static_cast<size_t>(block_bytes));
  }
}

#ifdef ONERL_WITH_CUDA
void write_kv_cuda(std::uintptr_t k, std::uintptr_t v, std::uintptr_t k_cache,
                   std::uintptr_t v_cache, std::uintptr_t slots, int64_t n_tokens,
                   int64_t row_bytes, int64_t k_stride_bytes, int64_t v_stride_bytes,
                   int64_t num_slots, std::uintptr_t stream);
void copy_blocks_cuda(std::uintptr_t k_cache, std::uintptr_t v_cache, std::uintptr_t src,
                      std::uintptr_t dst, int64_t n_pairs, int64_t block_bytes, int64_t num_blocks,
                      std::uintptr_t stream);
#endif

}  // namespace onerl

void register_paged_kv(py::module_& m) {
  m.def("write_kv_cpu", &onerl::write_kv_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("k"), py::arg("v"), py::arg("k_cache"), py::arg("v_cache"), py::arg("slots"),
        py::arg("n_tokens"), py::arg("row_bytes"), py::arg("k_stride_bytes"),
        py::arg("v_stride_bytes"), py::arg("num_slots"));
  m.def("copy_blocks_cpu", &onerl::copy_blocks_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("src"), py::arg("dst"),
        py::arg("n_pairs"), py::arg("block_bytes"), py::arg("num_blocks"));
#ifdef ONERL_WITH_CUDA
  m.def("write_kv_cuda", &onerl::write_kv_cuda, py::call_guard<py::gil_scoped_release>(),
        py::arg("k"), py::arg("v"), py::arg("k_cache"), py::arg("v_cache"), py::arg("slots"),
        py::arg("n_tokens"), py::arg("row_bytes"), py::arg("k_stride_bytes"),
        py::arg("v_stride_bytes"), py::arg("num_slots"), py::arg("stream"));
  m.def("copy_blocks_cuda", &onerl::copy_blocks_cuda, py::call_guard<py::gil_scoped_release>(),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("src"), py::arg("dst"),
        py::arg("n_pairs"), py::arg("block_bytes"), py::arg("num_blocks"), py::arg("stream"));
#endif
}
