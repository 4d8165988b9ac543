// Paged KV cache bookkeeping shared by the CPU twin (cpu/paged_kv.cpp) and the CUDA kernels
// (cuda/paged_kv.cu).
//
// Layout: a cache is [num_blocks, block_size, kv_heads, head_dim], contiguous, any element type.
// A token's slot is block_id * block_size + offset, so its row of kv_heads * head_dim elements
// starts at cache + slot * row_bytes: the ops below move rows and blocks as raw bytes and never
// look at the element type.
//
//   write_kv:    cache[slot_mapping[i]] <- src[i]  for both K and V; slot -1 means "skip"
//                (padding of a CUDA-graph batch). The source token stride is free (K and V may
//                be views into a fused QKV projection); a token's row itself is contiguous.
//   copy_blocks: cache[dst[i]] <- cache[src[i]] for whole blocks of both caches (copy-on-write
//                of the partially filled last block when a sequence forks).
#pragma once
#include <cstdint>
#include <initializer_list>

#include "common.h"

namespace onerl {

struct WriteKVArgs {
  std::uintptr_t k, v, k_cache, v_cache, slots;  // data pointers
  int64_t n_tokens;        // N
  int64_t row_bytes;       // kv_heads * head_dim * element size
  int64_t k_stride_bytes;  // bytes between tokens of k
  int64_t v_stride_bytes;  // bytes between tokens of v
  int64_t num_slots;       // num_blocks * block_size
};

struct CopyBlocksArgs {
  std::uintptr_t k_cache, v_cache, src, dst;  // data pointers; src/dst int64 [n]
  int64_t n_pairs;
  int64_t block_bytes;  // block_size * row_bytes
  int64_t num_blocks;
};

// Largest power-of-two unit (<= 16 bytes) that divides every address and size in the list.
inline int common_alignment(std::initializer_list<std::uintptr_t> values) {
  std::uintptr_t acc = 16;
  for (std::uintptr_t v : values) acc |= v;
  return static_cast<int>(acc & (~acc + 1));  // lowest set bit
}

}  // namespace onerl
