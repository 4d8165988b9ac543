// CPU twin of group_advantages (math in csrc/group_advantages.h) and its Python bindings.
#include <cmath>
#include <pybind11/pybind11.h>

#include "group_advantages.h"

namespace py = pybind11;

namespace onerl {

void group_advantages_cpu(std::uintptr_t rewards, std::uintptr_t out, int64_t n, int64_t group_size,
                          double eps, int std_mode, int scale_mode) {
  check(n >= 0 && group_size >= 1 && n % group_size == 0,
        "group_advantages: n must be a multiple of group_size >= 1");
  const float* r = as_ptr<const float>(rewards);
  float* a = as_ptr<float>(out);
  const float batch_std = scale_mode == kScaleBatch ? moments(r, n, std_mode).std : 1.0f;
  for (int64_t g = 0; g < n; g += group_size)
    advantages_of_group(r + g, a + g, group_size, std_mode, scale_mode, batch_std,
                        static_cast<float>(eps));
}

#ifdef ONERL_WITH_CUDA
void group_advantages_cuda(std::uintptr_t rewards, std::uintptr_t out, int64_t n,
                           int64_t group_size, double eps, int std_mode, int scale_mode,
                           std::uintptr_t stream);
#endif

}  // namespace onerl

void register_group_advantages(py::module_& m) {
  m.def("group_advantages_cpu", &onerl::group_advantages_cpu,
        py::call_guard<py::gil_scoped_release>(), py::arg("rewards"), py::arg("out"),
        py::arg("n"), py::arg("group_size"), py::arg("eps"), py::arg("std_mode"),
        py::arg("scale_mode"));
#ifdef ONERL_WITH_CUDA
  m.def("group_advantages_cuda", &onerl::group_advantages_cuda,
        py::call_guard<py::gil_scoped_release>(), py::arg("rewards"), py::arg("out"),
        py::arg("n"), py::arg("group_size"), py::arg("eps"), py::arg("std_mode"),
        py::arg("scale_mode"), py::arg("stream"));
#endif
}
