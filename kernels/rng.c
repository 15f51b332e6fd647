/* kernels/rng.c — the sampler's random numbers (declared in kernels/ops.h).
 *
 * One 64-bit state per sequence: vidi_rng_seed spreads a user seed with
 * splitmix64, vidi_rng_next advances it with xorshift64* and vidi_rng_uniform
 * turns the top 24 bits into a float in [0, 1). The same few lines run on
 * every backend, so a seed gives the same draws everywhere.
 */
#include "kernels/ops.h"

/* xorshift64* has one fixed point, zero; a zero state is moved off it. */
#define RNG_ZERO_REPLACEMENT 0x9E3779B97F4A7C15ull

uint64_t vidi_rng_seed(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : RNG_ZERO_REPLACEMENT;
}

uint64_t vidi_rng_next(uint64_t *state) {
    uint64_t x = *state ? *state : RNG_ZERO_REPLACEMENT;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float vidi_rng_uniform(uint64_t *state) {
    return (float)(vidi_rng_next(state) >> 40) * (1.0f / 16777216.0f);
}
