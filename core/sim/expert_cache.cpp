#include "sim/expert_cache.h"

#include <stdexcept>

namespace moeatlas::detail {

bool IndexedHeap::less(std::size_t a, std::size_t b) const
{
    return m_heap[a].key < m_heap[b].key;
}

void IndexedHeap::swapAt(std::size_t a, std::size_t b)
{
    std::swap(m_heap[a], m_heap[b]);
    m_pos[static_cast<std::size_t>(m_heap[a].id)] = static_cast<int>(a);
    m_pos[static_cast<std::size_t>(m_heap[b].id)] = static_cast<int>(b);
}

void IndexedHeap::up(std::size_t i)
{
    while (i > 0) {
        const std::size_t parent = (i - 1) / 2;
        if (!less(i, parent))
            break;
        swapAt(i, parent);
        i = parent;
    }
}

void IndexedHeap::down(std::size_t i)
{
    const std::size_t n = m_heap.size();
    for (;;) {
        std::size_t best = i;
        const std::size_t l = 2 * i + 1;
        const std::size_t r = l + 1;
        if (l < n && less(l, best))
            best = l;
        if (r < n && less(r, best))
            best = r;
        if (best == i)
            return;
        swapAt(i, best);
        i = best;
    }
}

void IndexedHeap::push(int id, EvictionKey key)
{
    m_heap.push_back(Node { key, id });
    m_pos[static_cast<std::size_t>(id)] = static_cast<int>(m_heap.size() - 1);
    up(m_heap.size() - 1);
}

void IndexedHeap::remove(int id)
{
    const int at = m_pos[static_cast<std::size_t>(id)];
    if (at < 0)
        return;
    const std::size_t i = static_cast<std::size_t>(at);
    const std::size_t last = m_heap.size() - 1;
    if (i != last) {
        swapAt(i, last);
        m_heap.pop_back();
        m_pos[static_cast<std::size_t>(id)] = -1;
        up(i);
        down(i);
    } else {
        m_heap.pop_back();
        m_pos[static_cast<std::size_t>(id)] = -1;
    }
}

int IndexedHeap::popMin()
{
    const int id = m_heap.front().id;
    remove(id);
    return id;
}

ExpertCache::ExpertCache(const CacheSpec& spec, const ModelCosts& costs, int numLayers)
    : m_perLayer(spec.kind == CacheSpec::Kind::PerLayerSlots)
    , m_numExperts(costs.numExperts)
    , m_capacity(m_perLayer ? static_cast<double>(spec.slots) : spec.bytes)
    , m_bytes(costs.expertBytes)
{
    const std::size_t ids = static_cast<std::size_t>(numLayers) * static_cast<std::size_t>(m_numExperts);
    const std::size_t pools = m_perLayer ? static_cast<std::size_t>(numLayers) : 1;
    m_used.assign(pools, 0.0);
    m_heaps.assign(pools, IndexedHeap(m_perLayer ? static_cast<std::size_t>(m_numExperts) : ids));
    m_entries.assign(ids, CacheEntry {});
}

void ExpertCache::pin(int id, Pin pin)
{
    m_heaps[static_cast<std::size_t>(poolOf(id))].remove(localOf(id));
    entry(id).pin = pin;
}

void ExpertCache::release(int id, EvictionKey key)
{
    entry(id).pin = Pin::None;
    m_heaps[static_cast<std::size_t>(poolOf(id))].push(localOf(id), key);
}

bool ExpertCache::makeRoom(int id)
{
    const std::size_t pool = static_cast<std::size_t>(poolOf(id));
    const double cost = costOf(id);
    while (m_used[pool] + cost > m_capacity) {
        if (m_heaps[pool].empty())
            return false;
        evict(idOf(pool, m_heaps[pool].popMin()));
    }
    return true;
}

void ExpertCache::admit(int id)
{
    CacheEntry& e = entry(id);
    if (e.resident)
        throw std::logic_error("ExpertCache::admit: already resident");
    e.resident = true;
    m_used[static_cast<std::size_t>(poolOf(id))] += costOf(id);
}

void ExpertCache::evict(int id)
{
    CacheEntry& e = entry(id);
    m_heaps[static_cast<std::size_t>(poolOf(id))].remove(localOf(id));
    e.resident = false;
    e.prefetchedUnused = false;
    e.pin = Pin::None;
    m_used[static_cast<std::size_t>(poolOf(id))] -= costOf(id);
}

} // namespace moeatlas::detail
