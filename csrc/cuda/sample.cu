// CUDA sample (math in csrc/sample.h, algorithm in onerl_kernels/sample.py): three launches, no
// host sync, no allocation (the workspaces come from Python).
//
//  threshold_kernel  grid B, 512 threads: rows that truncate find tau by radix select over the
//                    logits' order-preserving keys, 8 bits per pass (4 passes with counts for
//                    top-k, then a max, a sum and 4 passes with softmax mass for top-p); other
//                    rows write -inf and leave.
//  chunk_kernel      grid (B, chunks), 256 threads = 256 lanes of 16 tokens (four coalesced
//                    vector loads each): block max / sum-exp over all and over kept tokens, a
//                    block scan of the lanes' kept mass and the inverse-CDF pick in lane order.
//  merge_kernel      one thread per row: merge_row() over the row's chunk partials.
// The logits are read once by chunk_kernel (plus the select passes for truncating rows).
#include <cuda_runtime.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "sample.h"

namespace onerl {
namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr int kSelectThreads = 512;

struct MaxF { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } };
struct SumF { __device__ float operator()(float a, float b) const { return a + b; } };
struct MinI { __device__ int operator()(int a, int b) const { return a < b ? a : b; } };
struct MaxI { __device__ int operator()(int a, int b) const { return a > b ? a : b; } };

// Reduce v over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T smem[32];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T x = lane < warps ? smem[lane] : identity;
    for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(kFull, x, o));
    if (lane == 0) smem[0] = x;
  }
  __syncthreads();
  const T r = smem[0];
  __syncthreads();
  return r;
}

// Exclusive prefix sum of v over the block in thread order, and the block total.
__device__ void block_scan(float v, float* exclusive, float* total) {
  __shared__ float warp_sum[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_up_sync(kFull, x, o);
    if (lane >= o) x += y;
  }
  float before = __shfl_up_sync(kFull, x, 1);
  if (lane == 0) before = 0.0f;
  if (lane == 31) warp_sum[warp] = x;
  __syncthreads();
  if (warp == 0) {
    float s = lane < warps ? warp_sum[lane] : 0.0f;
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(kFull, s, o);
      if (lane >= o) s += y;
    }
    if (lane < warps) warp_sum[lane] = s;  // inclusive over warps
  }
  __syncthreads();
  *exclusive = (warp > 0 ? warp_sum[warp - 1] : 0.0f) + before;
  *total = warp_sum[warps - 1];
  __syncthreads();
}

__device__ __forceinline__ const void* row_ptr(const SampleArgs& a, int64_t row) {
  const int64_t esize = a.dtype == kF32 ? 4 : 2;
  return reinterpret_cast<const char*>(a.logits) + row * a.row_stride * esize;
}

__global__ void __launch_bounds__(kSelectThreads) threshold_kernel(SampleArgs a) {
  const int64_t row = blockIdx.x;
  const float temp = reinterpret_cast<const float*>(a.temperature)[row];
  const int64_t top_k = reinterpret_cast<const int64_t*>(a.top_k)[row];
  const float top_p = reinterpret_cast<const float*>(a.top_p)[row];
  float* tau_out = reinterpret_cast<float*>(a.tau) + row;
  if (!truncates(temp, top_k, top_p, a.vocab)) {
    if (threadIdx.x == 0) *tau_out = -INFINITY;
    return;
  }
  const void* z = row_ptr(a, row);
  const int64_t V = a.vocab;
  __shared__ uint32_t count[256];
  __shared__ float mass[256];
  __shared__ uint32_t s_prefix;
  __shared__ int64_t s_rank;
  __shared__ float s_target;
  float tau = -INFINITY;
  if (top_k > 0 && top_k < V) {
    uint32_t prefix = 0, mask = 0;
    int64_t rank = top_k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = threadIdx.x; i < 256; i += blockDim.x) count[i] = 0;
      __syncthreads();
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        const uint32_t key = float_key(load_logit(z, i, a.dtype));
        if ((key & mask) == prefix) atomicAdd(&count[(key >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        int64_t r = rank;
        const int bin = pick_count_bin(count, &r);
        s_prefix = prefix | (static_cast<uint32_t>(bin) << shift);
        s_rank = r;
      }
      __syncthreads();
      prefix = s_prefix;
      rank = s_rank;
      mask |= 255u << shift;
    }
    tau = key_float(prefix);
  }
  if (top_p < 1.0f) {
    const float inv_t = inv_temperature(temp);
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, load_logit(z, i, a.dtype));
    m = block_reduce(m, MaxF(), -INFINITY);
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float x = load_logit(z, i, a.dtype);
      if (x >= tau) s += expf((x - m) * inv_t);
    }
    s = block_reduce(s, SumF(), 0.0f);
    float target = top_p * s;
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = threadIdx.x; i < 256; i += blockDim.x) mass[i] = 0.0f;
      __syncthreads();
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        const float x = load_logit(z, i, a.dtype);
        const uint32_t key = float_key(x);
        if (x >= tau && (key & mask) == prefix)
          atomicAdd(&mass[(key >> shift) & 255u], expf((x - m) * inv_t));
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        float above;
        const int bin = pick_mass_bin(mass, target, &above);
        s_prefix = prefix | (static_cast<uint32_t>(bin) << shift);
        s_target = target - above;
      }
      __syncthreads();
      prefix = s_prefix;
      target = s_target;
      mask |= 255u << shift;
    }
    tau = key_float(prefix);
  }
  if (threadIdx.x == 0) *tau_out = tau;
}

// Four logits at off..off+3 of a row (vector load when aligned and in range; -inf past V).
template <int DT>
__device__ __forceinline__ float4 load4(const void* row, int64_t off, int64_t vocab) {
  if (off + 4 <= vocab) {
    if (DT == kF32) {
      const float* p = static_cast<const float*>(row) + off;
      if ((reinterpret_cast<std::uintptr_t>(p) & 15) == 0) return *reinterpret_cast<const float4*>(p);
    } else {
      const uint16_t* p = static_cast<const uint16_t*>(row) + off;
      if ((reinterpret_cast<std::uintptr_t>(p) & 7) == 0) {
        const uint2 v = *reinterpret_cast<const uint2*>(p);
        if (DT == kBF16)
          return make_float4(bits_to_float(v.x << 16), bits_to_float(v.x & 0xFFFF0000u),
                             bits_to_float(v.y << 16), bits_to_float(v.y & 0xFFFF0000u));
        return make_float4(half_to_float(static_cast<uint16_t>(v.x & 0xFFFFu)),
                           half_to_float(static_cast<uint16_t>(v.x >> 16)),
                           half_to_float(static_cast<uint16_t>(v.y & 0xFFFFu)),
                           half_to_float(static_cast<uint16_t>(v.y >> 16)));
      }
    }
  }
  auto at = [&](int e) { return off + e < vocab ? load_logit(row, off + e, DT) : -INFINITY; };
  return make_float4(at(0), at(1), at(2), at(3));
}

template <int DT>
__global__ void __launch_bounds__(kLanes) chunk_kernel(SampleArgs a, int64_t chunks) {
  const int64_t row = blockIdx.x, c = blockIdx.y;
  const int t = threadIdx.x;
  const float temp = reinterpret_cast<const float*>(a.temperature)[row];
  const float tau = reinterpret_cast<const float*>(a.tau)[row];
  const float inv_t = inv_temperature(temp);
  const int64_t base = c * kChunk;
  const void* rp = row_ptr(a, row);
  float z[kPerLane];
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    const float4 v = load4<DT>(rp, base + lane_offset(t, s * 4), a.vocab);
    z[s * 4 + 0] = v.x;
    z[s * 4 + 1] = v.y;
    z[s * 4 + 2] = v.z;
    z[s * 4 + 3] = v.w;
  }
  float mf = -INFINITY, mk = -INFINITY;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    mf = fmaxf(mf, z[j]);
    if (z[j] >= tau) mk = fmaxf(mk, z[j]);
  }
  mf = block_reduce(mf, MaxF(), -INFINITY);
  mk = block_reduce(mk, MaxF(), -INFINITY);
  float* part = reinterpret_cast<float*>(a.part) + (row * chunks + c) * kPartFields;
  int32_t* ptok = reinterpret_cast<int32_t*>(a.part_token) + row * chunks + c;
  const bool finite = mf > -INFINITY;
  if (!(temp > 0.0f)) {  // argmax: lowest token index holding the chunk maximum
    int idx = INT_MAX;
    float sf = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      if (z[j] == mf) idx = min(idx, lane_offset(t, j));
      sf += finite ? expf(z[j] - mf) : 0.0f;
    }
    idx = block_reduce(idx, MinI(), INT_MAX);
    sf = block_reduce(sf, SumF(), 0.0f);
    if (t == 0) {
      part[0] = mf; part[1] = sf; part[2] = mf; part[3] = 1.0f; part[4] = mf;
      *ptok = static_cast<int32_t>(base + (idx == INT_MAX ? 0 : idx));
    }
    return;
  }
  const bool same = tau == -INFINITY;  // nothing truncated: kept weights are the full ones
  float w[kPerLane];
  float sf = 0.0f, sk = 0.0f;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const float e = finite ? expf((z[j] - mf) * inv_t) : 0.0f;
    sf += e;
    w[j] = same ? e : ((z[j] >= tau && mk > -INFINITY) ? expf((z[j] - mk) * inv_t) : 0.0f);
    sk += w[j];
  }
  sf = block_reduce(sf, SumF(), 0.0f);
  float before, total;
  block_scan(sk, &before, &total);
  const int64_t seed = reinterpret_cast<const int64_t*>(a.seeds)[row];
  const int64_t pos = reinterpret_cast<const int64_t*>(a.positions)[row];
  const float target = philox_uniform(seed, pos, static_cast<uint32_t>(c)) * total;
  int my_cand = INT_MAX, my_last = -1;  // lane-order indices; z of each kept aside (no
  float cand_z = -INFINITY, last_z = -INFINITY;  // dynamic indexing: z stays in registers)
  float cum = before;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    if (w[j] > 0.0f) {
      my_last = t * kPerLane + j;
      last_z = z[j];
      if (my_cand == INT_MAX) {
        cum += w[j];
        if (cum > target) {
          my_cand = t * kPerLane + j;
          cand_z = z[j];
        }
      }
    }
  }
  const int cand = block_reduce(my_cand, MinI(), INT_MAX);
  const int last = block_reduce(my_last, MaxI(), -1);
  const int chosen = cand != INT_MAX ? cand : last;
  if (chosen >= 0 && (chosen == my_cand || chosen == my_last)) {
    part[4] = chosen == my_cand ? cand_z : last_z;
    *ptok = static_cast<int32_t>(base + lane_offset(t, chosen % kPerLane));
  }
  if (t == 0) {
    part[0] = mf; part[1] = sf; part[2] = mk;
    part[3] = chosen < 0 ? 0.0f : total;
    if (chosen < 0) {
      part[4] = -INFINITY;
      *ptok = static_cast<int32_t>(base);
    }
  }
}

__global__ void merge_kernel(SampleArgs a, int64_t chunks) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= a.batch) return;
  merge_row(reinterpret_cast<const float*>(a.part) + row * chunks * kPartFields,
            reinterpret_cast<const int32_t*>(a.part_token) + row * chunks, chunks,
            reinterpret_cast<const float*>(a.temperature)[row],
            reinterpret_cast<const int64_t*>(a.seeds)[row],
            reinterpret_cast<const int64_t*>(a.positions)[row],
            reinterpret_cast<int64_t*>(a.tokens) + row, reinterpret_cast<float*>(a.logp) + row);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("sample_cuda: ") + what +
                             " launch failed: " + cudaGetErrorString(err));
}

}  // namespace

void sample_cuda(std::uintptr_t logits, int64_t row_stride, int dtype, int64_t batch,
                 int64_t vocab, std::uintptr_t temperature, std::uintptr_t top_k,
                 std::uintptr_t top_p, std::uintptr_t seeds, std::uintptr_t positions,
                 std::uintptr_t tau, std::uintptr_t part, std::uintptr_t part_token,
                 std::uintptr_t tokens, std::uintptr_t logp, std::uintptr_t stream) {
  check(dtype == kF32 || dtype == kBF16 || dtype == kF16, "sample: unsupported logits dtype");
  check(vocab > 0 && vocab < (int64_t(1) << 31), "sample: vocab must be in [1, 2^31)");
  check(batch >= 0 && batch < (int64_t(1) << 31), "sample: batch too large");
  const int64_t chunks = num_chunks(vocab);
  check(chunks <= 65535, "sample: vocab too large (more than 65535 chunks)");
  if (batch == 0) return;
  const SampleArgs a{logits, row_stride, dtype, batch, vocab, temperature, top_k, top_p,
                     seeds, positions, tau, part, part_token, tokens, logp};
  auto s = reinterpret_cast<cudaStream_t>(stream);
  threshold_kernel<<<static_cast<unsigned>(batch), kSelectThreads, 0, s>>>(a);
  check_launch("threshold_kernel");
  const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>(chunks));
  if (dtype == kF32)
    chunk_kernel<kF32><<<grid, kLanes, 0, s>>>(a, chunks);
  else if (dtype == kBF16)
    chunk_kernel<kBF16><<<grid, kLanes, 0, s>>>(a, chunks);
  else
    chunk_kernel<kF16><<<grid, kLanes, 0, s>>>(a, chunks);
  check_launch("chunk_kernel");
  merge_kernel<<<static_cast<unsigned>((batch + 127) / 128), 128, 0, s>>>(a, chunks);
  check_launch("merge_kernel");
}

}  // namespace onerl
