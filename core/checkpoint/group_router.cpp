#include "checkpoint/group_router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace moeatlas {

TokenRoute sigmoidRoute(const RouterSpec& router, const float* logits, const float* bias, const bool* kept, int k)
{
    const int E = router.numExperts, G = router.numGroups, size = router.groupSize();
    constexpr float minusInf = -std::numeric_limits<float>::infinity();
    std::vector<float> score(static_cast<std::size_t>(E)), choice(static_cast<std::size_t>(E));
    for (int i = 0; i < E; ++i) {
        const auto u = static_cast<std::size_t>(i);
        score[u] = 1.0f / (1.0f + std::exp(-logits[i]));
        choice[u] = (kept && !kept[i]) ? minusInf : score[u] + (bias ? bias[i] : 0.0f);
    }
    if (G > 1) {
        std::vector<float> groupScore(static_cast<std::size_t>(G));
        for (int g = 0; g < G; ++g) {
            std::vector<float> c(choice.begin() + static_cast<std::ptrdiff_t>(g) * size,
                choice.begin() + static_cast<std::ptrdiff_t>(g + 1) * size);
            std::partial_sort(c.begin(), c.begin() + 2, c.end(), std::greater<>());
            groupScore[static_cast<std::size_t>(g)] = c[0] + c[1];
        }
        std::vector<int> order(static_cast<std::size_t>(G));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
            return groupScore[static_cast<std::size_t>(a)] > groupScore[static_cast<std::size_t>(b)];
        });
        for (std::size_t r = static_cast<std::size_t>(router.topkGroup); r < order.size(); ++r)
            std::fill_n(choice.begin() + static_cast<std::ptrdiff_t>(order[r]) * size, size, minusInf);
    }
    std::vector<int> ids(static_cast<std::size_t>(E));
    std::iota(ids.begin(), ids.end(), 0);
    std::stable_sort(ids.begin(), ids.end(),
        [&](int a, int b) { return choice[static_cast<std::size_t>(a)] > choice[static_cast<std::size_t>(b)]; });
    ids.resize(static_cast<std::size_t>(k));
    if (std::any_of(ids.begin(), ids.end(), [&](int i) { return choice[static_cast<std::size_t>(i)] == minusInf; }))
        throw std::invalid_argument("sigmoidRoute: fewer than " + std::to_string(k)
            + " experts are selectable (kept experts in the kept groups)");
    TokenRoute out;
    out.ids = ids;
    float sum = 0.0f;
    for (const int i : ids) {
        out.weights.push_back(score[static_cast<std::size_t>(i)]);
        sum += score[static_cast<std::size_t>(i)];
    }
    for (float& w : out.weights) {
        if (router.normTopkProb)
            w /= sum + 1e-20f;
        w = static_cast<float>(w * router.scalingFactor);
    }
    return out;
}

} // namespace moeatlas
