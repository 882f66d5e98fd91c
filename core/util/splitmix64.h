// splitmix64 (Steele, Lea, Flood 2014) with integer-to-range mappings written out: the same seed
// gives the same numbers on every platform and standard library (<random> distributions and
// std::shuffle are implementation-defined). Used for random baselines, random plans and the demo
// corpus, whose outputs are named by their seeds.
#pragma once

#include <cstdint>

namespace moeatlas {

class SplitMix64 {
public:
    static constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

    explicit SplitMix64(uint64_t seed)
        : m_state(seed)
    {
    }
    uint64_t next()
    {
        uint64_t z = (m_state += kGolden);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // Uniform in [0, n) by the high half of the 128-bit product next() * n (n > 0).
    uint64_t below(uint64_t n)
    {
        // From 32-bit halves (no __int128 in ISO C++).
        const uint64_t x = next();
        const uint64_t xl = x & 0xffffffffu, xh = x >> 32, nl = n & 0xffffffffu, nh = n >> 32;
        const uint64_t ll = xl * nl, lh = xl * nh, hl = xh * nl, hh = xh * nh;
        const uint64_t mid = (ll >> 32) + (lh & 0xffffffffu) + (hl & 0xffffffffu);
        return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
    }
    // Uniform in [lo, hi] (inclusive).
    int64_t range(int64_t lo, int64_t hi)
    {
        return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo + 1)));
    }
    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

private:
    uint64_t m_state;
};

} // namespace moeatlas
