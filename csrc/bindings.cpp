// The pybind11 module onerl_kernels._C. Each op's source file defines a register_<op>() that
// binds its CPU twin (and its CUDA launcher when built with CUDA); this file only lists them.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_group_advantages(py::module_& m);
void register_paged_kv(py::module_& m);
void register_sample(py::module_& m);
void register_paged_attention(py::module_& m);
void register_decode_ops(py::module_& m);
void register_logprobs_ops(py::module_& m);
void register_train_ops(py::module_& m);

#ifndef ONERL_CUDA_ARCHS_STR
#define ONERL_CUDA_ARCHS_STR ""
#endif
#ifndef ONERL_CUDA_VERSION_STR
#define ONERL_CUDA_VERSION_STR ""
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "onerl C++/CUDA kernels (CPU twins always; CUDA when built with nvcc)";
  py::dict info;
#ifdef ONERL_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["cuda_archs"] = ONERL_CUDA_ARCHS_STR;
  info["cuda_version"] = ONERL_CUDA_VERSION_STR;
  m.attr("BUILD_INFO") = info;
  register_group_advantages(m);
  register_paged_kv(m);
  register_sample(m);
  register_paged_attention(m);
  register_decode_ops(m);
  register_logprobs_ops(m);
  register_train_ops(m);
}
