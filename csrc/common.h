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

// CPU loops built twice, for AVX2 and baseline x86-64, picked at load time by the CPU's features.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define ONERL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ONERL_CLONES
#endif

namespace onerl {

template <typename T>
inline T* as_ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

}  // namespace onerl
