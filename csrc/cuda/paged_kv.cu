// CUDA paged-KV ops (layout and semantics in csrc/paged_kv.h): one launch each, no host sync.
//
// write_kv: one block per token, its threads copy the token's K row then its V row in the
// widest unit (16, 8, 4, 2 or 1 bytes) that every pointer, stride and row size allows.
// copy_blocks: grid (pairs, slices); each block copies a slice of one K block and one V block.
// Slots and block ids outside the cache are skipped (a kernel cannot raise).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "paged_kv.h"

namespace onerl {
namespace {

constexpr int kThreads = 128;

template <typename U>
__device__ __forceinline__ void copy_units(char* dst, const char* src, int64_t bytes, int64_t from,
                                           int64_t step) {
  U* d = reinterpret_cast<U*>(dst);
  const U* s = reinterpret_cast<const U*>(src);
  for (int64_t i = from; i < bytes / static_cast<int64_t>(sizeof(U)); i += step) d[i] = s[i];
}

template <typename U>
__global__ void write_kv_kernel(WriteKVArgs a) {
  const int64_t i = blockIdx.x;
  const int64_t slot = reinterpret_cast<const int64_t*>(a.slots)[i];
  if (slot < 0 || slot >= a.num_slots) return;
  copy_units<U>(reinterpret_cast<char*>(a.k_cache) + slot * a.row_bytes,
                reinterpret_cast<const char*>(a.k) + i * a.k_stride_bytes, a.row_bytes,
                threadIdx.x, blockDim.x);
  copy_units<U>(reinterpret_cast<char*>(a.v_cache) + slot * a.row_bytes,
                reinterpret_cast<const char*>(a.v) + i * a.v_stride_bytes, a.row_bytes,
                threadIdx.x, blockDim.x);
}

template <typename U>
__global__ void copy_blocks_kernel(CopyBlocksArgs a) {
  const int64_t p = blockIdx.x;
  const int64_t s = reinterpret_cast<const int64_t*>(a.src)[p];
  const int64_t d = reinterpret_cast<const int64_t*>(a.dst)[p];
  if (s < 0 || s >= a.num_blocks || d < 0 || d >= a.num_blocks || s == d) return;
  const int64_t from = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.x;
  copy_units<U>(reinterpret_cast<char*>(a.k_cache) + d * a.block_bytes,
                reinterpret_cast<const char*>(a.k_cache) + s * a.block_bytes, a.block_bytes, from,
                step);
  copy_units<U>(reinterpret_cast<char*>(a.v_cache) + d * a.block_bytes,
                reinterpret_cast<const char*>(a.v_cache) + s * a.block_bytes, a.block_bytes, from,
                step);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + " launch failed: " + cudaGetErrorString(err));
}

}  // namespace

void write_kv_cuda(std::uintptr_t k, std::uintptr_t v, std::uintptr_t k_cache,
                   std::uintptr_t v_cache, std::uintptr_t slots, int64_t n_tokens,
                   int64_t row_bytes, int64_t k_stride_bytes, int64_t v_stride_bytes,
                   int64_t num_slots, std::uintptr_t stream) {
  check(n_tokens >= 0 && n_tokens < (int64_t(1) << 31), "write_kv: too many tokens");
  if (n_tokens == 0 || row_bytes == 0) return;
  const WriteKVArgs a{k, v, k_cache, v_cache, slots, n_tokens, row_bytes, k_stride_bytes,
                      v_stride_bytes, num_slots};
  const int unit = common_alignment({k, v, k_cache, v_cache,
                                     static_cast<std::uintptr_t>(row_bytes),
                                     static_cast<std::uintptr_t>(k_stride_bytes),
                                     static_cast<std::uintptr_t>(v_stride_bytes)});
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(n_tokens));
  switch (unit) {
    case 16: write_kv_kernel<uint4><<<grid, kThreads, 0, s>>>(a); break;
    case 8: write_kv_kernel<uint2><<<grid, kThreads, 0, s>>>(a); break;
    case 4: write_kv_kernel<unsigned int><<<grid, kThreads, 0, s>>>(a); break;
    case 2: write_kv_kernel<unsigned short><<<grid, kThreads, 0, s>>>(a); break;
    default: write_kv_kernel<unsigned char><<<grid, kThreads, 0, s>>>(a); break;
  }
  check_launch("write_kv_cuda");
}

void copy_blocks_cuda(std::uintptr_t k_cache, std::uintptr_t v_cache, std::uintptr_t src,
                      std::uintptr_t dst, int64_t n_pairs, int64_t block_bytes, int64_t num_blocks,
                      std::uintptr_t stream) {
  check(n_pairs >= 0 && n_pairs < (int64_t(1) << 31), "copy_blocks: too many pairs");
  if (n_pairs == 0 || block_bytes == 0) return;
  const CopyBlocksArgs a{k_cache, v_cache, src, dst, n_pairs, block_bytes, num_blocks};
  const int unit = common_alignment({k_cache, v_cache, static_cast<std::uintptr_t>(block_bytes)});
  const int64_t units = block_bytes / unit;
  int64_t slices = (units + kThreads * 4 - 1) / (kThreads * 4);
  if (slices > 64) slices = 64;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(n_pairs), static_cast<unsigned>(slices));
  switch (unit) {
    case 16: copy_blocks_kernel<uint4><<<grid, kThreads, 0, s>>>(a); break;
    case 8: copy_blocks_kernel<uint2><<<grid, kThreads, 0, s>>>(a); break;
    case 4: copy_blocks_kernel<unsigned int><<<grid, kThreads, 0, s>>>(a); break;
    case 2: copy_blocks_kernel<unsigned short><<<grid, kThreads, 0, s>>>(a); break;
    default: copy_blocks_kernel<unsigned char><<<grid, kThreads, 0, s>>>(a); break;
  }
  check_launch("copy_blocks_cuda");
}

}  // namespace onerl
