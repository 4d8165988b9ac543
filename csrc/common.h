// Shared helpers for onerl's C++ / CUDA sources.
//
// Conventions (see the package docs): Python validates dtype, device and contiguity and passes raw
// data_ptr() integers, sizes and the CUDA stream as integers; nothing here allocates device memory,
// synchronises, or touches the GIL while computing.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define ONERL_HD __host__ __device__
#else
#define ONERL_HD
#endif

namespace onerl {

template <typename T>
inline T* as_ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

}  // namespace onerl
