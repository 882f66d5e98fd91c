// The GPU expert cache of the offload simulator: which experts are resident (or in flight), which are
// pinned, and the eviction order. Private to core/sim (simulator.cpp drives it).
#pragma once

#include "sim/simulator.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace moeatlas::detail {

// Eviction order: the entry with the smallest key goes first.
using EvictionKey = std::pair<int64_t, int64_t>;

// A binary min-heap over ids [0, ids) with removal of any member (positions tracked per id); keys are
// stored in the nodes so that sifting reads one array.
class IndexedHeap {
public:
    explicit IndexedHeap(std::size_t ids = 0)
        : m_pos(ids, -1)
    {
    }
    bool empty() const { return m_heap.empty(); }
    bool contains(int id) const { return m_pos[static_cast<std::size_t>(id)] >= 0; }
    void push(int id, EvictionKey key);
    void remove(int id);
    int popMin();

private:
    bool less(std::size_t a, std::size_t b) const;
    void swapAt(std::size_t a, std::size_t b);
    void up(std::size_t i);
    void down(std::size_t i);

    struct Node {
        EvictionKey key;
        int id;
    };
    std::vector<Node> m_heap;
    std::vector<int> m_pos; // per id: index in m_heap, -1 when absent
};

enum class Pin : uint8_t {
    None, // evictable (in its pool's heap)
    Need, // run by the layer being computed
    Prefetch, // prefetched (or predicted and resident) for a later layer of this step
};

struct CacheEntry {
    bool resident = false; // resident or in flight (arrival in the future)
    bool prefetchedUnused = false; // brought by a prefetch, not used since
    Pin pin = Pin::None;
    double arrival = 0; // when its last transfer ends
    int64_t lastUse = -1; // position (step * L + layer) of its last use, or of the prefetch that brought it
    int64_t uses = 0; // uses since the start of the trace (LFU)
};

// Entries are (layer, expert) as id = layer * E + expert. Pools: one per layer (slots) or one (bytes).
class ExpertCache {
public:
    ExpertCache(const CacheSpec& spec, const ModelCosts& costs, int numLayers);

    CacheEntry& entry(int id) { return m_entries[static_cast<std::size_t>(id)]; }
    const CacheEntry& entry(int id) const { return m_entries[static_cast<std::size_t>(id)]; }
    // Takes an entry out of the eviction order (if it was in it) and pins it.
    void pin(int id, Pin pin);
    // Unpins an entry and puts it in the eviction order under `key`.
    void release(int id, EvictionKey key);
    // Evicts unpinned entries, smallest key first, until `id` fits in its pool. False if it cannot.
    bool makeRoom(int id);
    // Marks `id` resident (the caller pins it and sets its arrival); counts its size in its pool.
    void admit(int id);
    // Removes a resident entry, pinned or not.
    void evict(int id);
    int poolOf(int id) const { return m_perLayer ? id / m_numExperts : 0; }

private:
    // Heaps are indexed within their pool: the expert (per-layer pools) or the id (one global pool).
    int localOf(int id) const { return m_perLayer ? id % m_numExperts : id; }
    int idOf(std::size_t pool, int local) const
    {
        return m_perLayer ? static_cast<int>(pool) * m_numExperts + local : local;
    }
    double costOf(int id) const { return m_perLayer ? 1.0 : m_bytes[static_cast<std::size_t>(id)]; }

    bool m_perLayer = true;
    int m_numExperts = 0;
    double m_capacity = 0;
    std::vector<double> m_bytes; // per id
    std::vector<double> m_used; // per pool
    std::vector<IndexedHeap> m_heaps; // per pool
    std::vector<CacheEntry> m_entries;
};

} // namespace moeatlas::detail
