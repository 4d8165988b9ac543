// CUDA group_advantages (math in csrc/group_advantages.h): one launch, no host sync.
//
// scale=group: one thread per group, groups spread over blocks of 256 threads.
// scale=batch: a single block first reduces the batch std (fp32 tree reduction over the block,
// two passes), then its threads walk the groups. N is the number of responses (~1e3-1e5), so
// one block is enough.
#include <cuda_runtime.h>

#include "group_advantages.h"

namespace onerl {
namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float v, float* smem) {
  smem[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) smem[threadIdx.x] += smem[threadIdx.x + s];
    __syncthreads();
  }
  const float total = smem[0];
  __syncthreads();
  return total;
}

__global__ void advantages_kernel(const float* __restrict__ r, float* __restrict__ out, int64_t n,
                                  int64_t group_size, float eps, int std_mode, int scale_mode) {
  float batch_std = 1.0f;
  if (scale_mode == kScaleBatch && n > 1) {  // launched with a single block
    __shared__ float smem[kThreads];
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += r[i];
    const float mean = block_sum(s, smem) / static_cast<float>(n);
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += (r[i] - mean) * (r[i] - mean);
    ss = block_sum(ss, smem);
    batch_std = sqrtf(ss / static_cast<float>(std_mode == kStdPopulation ? n : n - 1));
  }
  const int64_t groups = n / group_size;
  for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < groups;
       g += (int64_t)gridDim.x * blockDim.x)
    advantages_of_group(r + g * group_size, out + g * group_size, group_size, std_mode, scale_mode,
                        batch_std, eps);
}

}  // namespace

void group_advantages_cuda(std::uintptr_t rewards, std::uintptr_t out, int64_t n,
                           int64_t group_size, double eps, int std_mode, int scale_mode,
                           std::uintptr_t stream) {
  check(n >= 0 && group_size >= 1 && n % group_size == 0,
        "group_advantages: n must be a multiple of group_size >= 1");
  if (n == 0) return;
  const int64_t groups = n / group_size;
  int blocks = scale_mode == kScaleBatch ? 1 : static_cast<int>((groups + kThreads - 1) / kThreads);
  if (blocks > 65535) blocks = 65535;
  advantages_kernel<<<blocks, kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      as_ptr<const float>(rewards), as_ptr<float>(out), n, group_size, static_cast<float>(eps),
      std_mode, scale_mode);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("group_advantages_cuda launch failed: ") +
                             cudaGetErrorString(err));
}

}  // namespace onerl
