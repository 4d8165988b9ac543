// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011): a counter-based generator, so any draw is a pure function of (key, counter) and CPU
// and CUDA code produce the same bits. Checked against the paper's known-answer vectors by the
// tests (through reference.philox4x32, which implements the same rounds with torch ops).
//
// onerl's uniform for (seed, position, stream): key = (seed lo, seed hi), counter =
// (position lo, position hi, stream, kPhiloxTag); u = (first word >> 8) * 2^-24 in [0, 1).
#pragma once
#include <cstdint>

#include "common.h"

namespace onerl {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
constexpr uint32_t kPhiloxTag = 0x6F6E6572u;  // "oner"

ONERL_HD inline uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Ten rounds on counter c[4] with key (k0, k1); the result replaces c.
ONERL_HD inline void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    const uint32_t hi0 = mulhi32(kPhiloxM0, c[0]), lo0 = kPhiloxM0 * c[0];
    const uint32_t hi1 = mulhi32(kPhiloxM1, c[2]), lo1 = kPhiloxM1 * c[2];
    const uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// The uniform in [0, 1) (24 random bits, exact in fp32) of (seed, position, stream).
ONERL_HD inline float philox_uniform(int64_t seed, int64_t position, uint32_t stream) {
  const uint64_t s = static_cast<uint64_t>(seed), p = static_cast<uint64_t>(position);
  uint32_t c[4] = {static_cast<uint32_t>(p), static_cast<uint32_t>(p >> 32), stream, kPhiloxTag};
  philox4x32_10(c, static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32));
  return static_cast<float>(c[0] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace onerl
