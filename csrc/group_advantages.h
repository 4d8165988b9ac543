// group_advantages: GRPO's outcome advantage, shared by the CPU twin and the CUDA kernel.
//
//   A_i = (r_i - mean_g(r)) / (std(r) + eps)            N rewards, contiguous groups of G
//
// std is the group's own (scale=group) or the whole batch's (scale=batch); its estimator is the
// unbiased one (n-1, verl's default) or the population one (n). std="none" or scale="none" skips
// the division (Dr. GRPO). A group of one element has mean 0 and std 1 (verl's rule), so a batch
// of singletons keeps its raw rewards. All-equal groups give exactly 0.
// Accumulation is fp32 in a fixed order (two passes: mean, then squared deviations).
#pragma once
#include <cmath>

#include "common.h"

namespace onerl {

enum StdMode : int { kStdUnbiased = 0, kStdPopulation = 1, kStdNone = 2 };
enum ScaleMode : int { kScaleGroup = 0, kScaleBatch = 1, kScaleNone = 2 };

struct Moments {
  float mean;
  float std;
};

// Mean and std of x[0..n); a single element gives mean 0, std 1.
ONERL_HD inline Moments moments(const float* x, int64_t n, int std_mode) {
  if (n <= 1) return {0.0f, 1.0f};
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const float mean = s / static_cast<float>(n);
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    ss += d * d;
  }
  const float denom = static_cast<float>(std_mode == kStdPopulation ? n : n - 1);
  return {mean, sqrtf(ss / denom)};
}

// Advantages of one group r[0..n) into out[0..n); batch_std is used when scale == batch.
ONERL_HD inline void advantages_of_group(const float* r, float* out, int64_t n, int std_mode,
                                         int scale_mode, float batch_std, float eps) {
  const Moments m = moments(r, n, std_mode);
  const bool divide = std_mode != kStdNone && scale_mode != kScaleNone;
  const float std = scale_mode == kScaleBatch ? batch_std : m.std;
  const float inv = divide ? 1.0f / (std + eps) : 1.0f;
  for (int64_t i = 0; i < n; ++i) out[i] = (r[i] - m.mean) * inv;
}

}  // namespace onerl
