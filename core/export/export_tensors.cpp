#include "export/export_tensors.h"

#include "checkpoint/fp8.h"
#include "util/error.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <numeric>
#include <sys/mman.h>
#include <unistd.h>

namespace moeatlas {

namespace {

// Pieces at least this long are written from the mapping directly; shorter ones are batched.
constexpr std::size_t kDirectPiece = 64 << 10;
constexpr std::size_t kBatchBytes = 4 << 20;

bool startsWith(const std::string& s, const std::string& prefix)
{
    return s.compare(0, prefix.size(), prefix) == 0;
}

// Faults the source pages of a piece in with one call instead of one page fault per 4-64 KiB
// during the copy; measurably faster on a warm page cache (see docs/performance.md). Best effort.
void prefault(std::span<const std::byte> bytes)
{
#ifdef MADV_POPULATE_READ
    static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<uintptr_t>(bytes.data()) & ~(page - 1);
    const auto end = reinterpret_cast<uintptr_t>(bytes.data() + bytes.size());
    // madvise wants a page-aligned address, which only the integer gives (no pointer of ours points there).
    if (end > begin) // NOLINTNEXTLINE(performance-no-int-to-ptr)
        (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
#else
    (void)bytes;
#endif
}

int64_t numel(const std::vector<int64_t>& shape)
{
    return std::accumulate(shape.begin(), shape.end(), int64_t { 1 }, std::multiplies<>());
}

// The shape a slab selects.
std::vector<int64_t> selectedShape(const Slab& s)
{
    std::vector<int64_t> out = s.shape;
    for (std::size_t d = 0; d < out.size(); ++d)
        if (s.select[d])
            out[d] = static_cast<int64_t>(s.select[d]->size());
    return out;
}

// A slab over one dimension-0 entry (an expert) of a fused [E, ...] tensor.
Slab expertSlab(const TensorInfo& info, int expert, std::vector<std::optional<std::vector<int>>> select)
{
    const std::vector<int64_t> inner(info.shape.begin() + 1, info.shape.end());
    const uint64_t bytes = info.byteSize() / static_cast<uint64_t>(info.shape[0]);
    return { static_cast<uint64_t>(expert) * bytes, inner, std::move(select) };
}

// gpt_oss: the gate/up columns (or rows, for MXFP4 blocks) of units u, interleaved as stored: 2u, 2u + 1.
std::vector<int> interleavedPairs(const std::vector<int>& units)
{
    std::vector<int> out;
    out.reserve(2 * units.size());
    for (const int u : units) {
        out.push_back(2 * u);
        out.push_back(2 * u + 1);
    }
    return out;
}

// gpt_oss' fused expert tensors (dimension 0 = expert), plain or MXFP4, cut to the kept experts and, for a
// uniform dimension plan, their kept units: gate_up_proj [E, H, 2I] columns and gate_up_proj_bias [E, 2I]
// entries in (gate, up) pairs, gate_up_proj_blocks/_scales rows in pairs (one row = one output), down_proj
// [E, I, H] rows, down_proj_bias [E, H] whole. MXFP4 down_proj packs 32 units per scale: not cut.
OutTensor gptOssExpertTensor(
    const Checkpoint& ckpt, OutTensor t, const std::string& suffix, const LayerKeep& lk, ExportKind kind)
{
    const TensorInfo& info = ckpt.info(t.source);
    const std::vector<int>& k = lk.experts;
    const auto fail = [&](const std::string& why) {
        return InputError(ckpt.fileOf(t.source).path().string() + ": tensor '" + t.source + "' " + why);
    };
    if (kind == ExportKind::Ragged)
        throw fail("cannot go into a ragged export: gpt_oss exports keep one expert width (uniform dimension plans)");
    if (kind == ExportKind::Experts) {
        std::vector<std::optional<std::vector<int>>> select(info.shape.size());
        select[0] = k;
        t.slabs = { Slab { 0, info.shape, select } };
        t.shape[0] = static_cast<int64_t>(k.size());
        return t;
    }
    t.slabs.clear();
    for (std::size_t j = 0; j < k.size(); ++j) {
        const std::vector<int>& u = lk.units[j];
        std::vector<std::optional<std::vector<int>>> select(info.shape.size() - 1);
        if (suffix == "gate_up_proj")
            select[1] = interleavedPairs(u);
        else if (suffix == "gate_up_proj_bias" || suffix == "gate_up_proj_blocks" || suffix == "gate_up_proj_scales")
            select[0] = interleavedPairs(u);
        else if (suffix == "down_proj")
            select[0] = u;
        else if (suffix != "down_proj_bias")
            throw fail("cannot be cut to intermediate units (MXFP4 down_proj packs 32 units per scale): export "
                       "expert pruning only, or a dequantized checkpoint");
        t.slabs.push_back(expertSlab(info, k[j], std::move(select)));
    }
    t.shape = selectedShape(t.slabs.front());
    t.shape.insert(t.shape.begin(), static_cast<int64_t>(k.size()));
    return t;
}

std::vector<int> shifted(const std::vector<int>& ids, int by)
{
    std::vector<int> out;
    out.reserve(ids.size());
    for (const int i : ids)
        out.push_back(i + by);
    return out;
}

enum class Role { Gate, Up, Down };

// "w1.weight" / "gate_proj.weight" -> Gate, ...; nullopt for anything else.
std::optional<Role> roleOf(const std::string& suffix)
{
    if (suffix == "w1.weight" || suffix == "gate_proj.weight")
        return Role::Gate;
    if (suffix == "w3.weight" || suffix == "up_proj.weight")
        return Role::Up;
    if (suffix == "w2.weight" || suffix == "down_proj.weight")
        return Role::Down;
    return std::nullopt;
}

// The ragged format's per-expert name (docs/plans.md, "Ragged checkpoints").
std::string raggedExpertName(int layer, std::size_t k, Role role)
{
    static const char* const names[] = { "gate_proj", "up_proj", "down_proj" };
    return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(k) + "."
        + names[static_cast<std::size_t>(role)] + ".weight";
}

// Gate/up rows [I, H] or down columns [H, I] of one expert, sliced to `units` (rows offset by
// `rowOffset` inside a fused [2I, H] slab).
Slab unitSlab(uint64_t offset, std::vector<int64_t> shape, Role role, const std::vector<int>& units, int rowOffset)
{
    if (role == Role::Down)
        return { offset, std::move(shape), { std::nullopt, units } };
    return { offset, std::move(shape), { shifted(units, rowOffset), std::nullopt } };
}

class PieceWriter {
public:
    PieceWriter(CheckpointWriter& writer, std::string name)
        : m_writer(writer)
        , m_name(std::move(name))
    {
    }
    void piece(std::span<const std::byte> bytes)
    {
        if (bytes.size() >= kDirectPiece) {
            flush();
            prefault(bytes);
            m_writer.writeChunk(m_name, bytes);
        } else {
            m_buffer.insert(m_buffer.end(), bytes.begin(), bytes.end());
            if (m_buffer.size() >= kBatchBytes)
                flush();
        }
        m_total += bytes.size();
    }
    uint64_t finish()
    {
        flush();
        if (m_total == 0)
            m_writer.writeChunk(m_name, {}); // an empty tensor (zero-width expert) still has to be passed
        return m_total;
    }

private:
    void flush()
    {
        if (!m_buffer.empty())
            m_writer.writeChunk(m_name, m_buffer);
        m_buffer.clear();
    }
    CheckpointWriter& m_writer;
    std::string m_name;
    std::vector<std::byte> m_buffer;
    uint64_t m_total = 0;
};

// Emits the selected bytes of `slab` in row-major order, merging consecutive indices of the last
// selected dimension (and everything after it) into one piece.
void emitSlab(PieceWriter& out, std::span<const std::byte> src, const Slab& slab, std::size_t elem)
{
    const std::size_t dims = slab.shape.size();
    std::vector<uint64_t> stride(dims, elem);
    for (std::size_t d = dims; d-- > 1;)
        stride[d - 1] = stride[d] * static_cast<uint64_t>(slab.shape[d]);
    std::size_t last = 0;
    bool any = false;
    for (std::size_t d = 0; d < dims; ++d)
        if (slab.select[d]) {
            last = d;
            any = true;
        }
    if (!any) {
        out.piece(src.subspan(slab.offset, stride[0] * static_cast<uint64_t>(slab.shape[0])));
        return;
    }
    std::function<void(std::size_t, uint64_t)> walk = [&](std::size_t d, uint64_t base) {
        if (d == last) {
            const std::vector<int>& ids = *slab.select[d];
            for (std::size_t r = 0; r < ids.size();) {
                std::size_t end = r + 1;
                while (end < ids.size() && ids[end] == ids[end - 1] + 1)
                    ++end;
                out.piece(src.subspan(base + static_cast<uint64_t>(ids[r]) * stride[d], (end - r) * stride[d]));
                r = end;
            }
            return;
        }
        if (slab.select[d])
            for (const int i : *slab.select[d])
                walk(d + 1, base + static_cast<uint64_t>(i) * stride[d]);
        else
            for (int64_t i = 0; i < slab.shape[d]; ++i)
                walk(d + 1, base + static_cast<uint64_t>(i) * stride[d]);
    };
    walk(0, slab.offset);
}

bool mtpLayerTensor(const ModelSpec& spec, const std::string& name)
{
    const std::string layers = spec.tensorPrefix + "layers.";
    if (!startsWith(name, layers))
        return false;
    std::size_t end = layers.size();
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end])))
        ++end;
    return end > layers.size() && end < name.size() && name[end] == '.'
        && std::stoll(name.substr(layers.size(), end - layers.size())) >= spec.numLayers;
}

} // namespace

std::vector<OutTensor> mapTensors(const Checkpoint& ckpt, const ModelSpec& spec, const TensorLayout& layout,
    const std::vector<LayerKeep>& keep, ExportKind kind)
{
    const std::vector<std::filesystem::path> shards = ckpt.shardPaths();
    const int64_t E = spec.router.numExperts, I = spec.moeIntermediate;
    std::vector<OutTensor> out;
    for (const std::string& name : ckpt.names()) {
        const TensorInfo& info = ckpt.info(name);
        OutTensor t { name, name, {}, info.shape, 0, info.begin };
        const auto shardIt = std::find(shards.begin(), shards.end(), ckpt.fileOf(name).path());
        t.shard = static_cast<std::size_t>(shardIt - shards.begin());
        // A layer past num_hidden_layers (an MTP module, hub layer index 61 of DeepSeek-V3): never run, not
        // exported, so that no layer with the source's expert count survives in the pruned checkpoint.
        if (mtpLayerTensor(spec, name))
            continue;
        std::vector<OutTensor> made;
        bool handled = false;
        for (const int l : spec.moeLayerIndices()) {
            const std::string moe = layout.moePrefix(l);
            if (!startsWith(name, moe))
                continue;
            handled = true;
            const LayerKeep& lk = keep[static_cast<std::size_t>(l)];
            const std::vector<int>& k = lk.experts;
            const auto K = static_cast<int64_t>(k.size());
            const std::string experts = moe + "experts.";
            const bool perExpert = startsWith(name, experts) && name.size() > experts.size()
                && std::isdigit(static_cast<unsigned char>(name[experts.size()]));
            auto unsliceable = [&] {
                return InputError(ckpt.fileOf(name).path().string() + ": tensor '" + name
                    + "' of the routed experts cannot be sliced to intermediate units");
            };
            if (kind != ExportKind::Experts && startsWith(name, experts)
                && (isFp8Scaled(ckpt, spec, name) || (spec.fp8.enabled && isFp8ScaleName(name))))
                // Kept units rarely fill whole scale blocks, and re-quantizing would change the model (decision 55).
                throw InputError(ckpt.fileOf(name).path().string() + ": tensor '" + name
                    + "' is FP8 block-scaled (quantization_config.weight_block_size ["
                    + std::to_string(spec.fp8.blockRows) + ", " + std::to_string(spec.fp8.blockCols)
                    + "]): cutting experts to intermediate units would split its scale blocks; export expert "
                      "pruning only, or dequantize the checkpoint first");
            if (perExpert) {
                const std::size_t dot = name.find('.', experts.size());
                const int e = std::stoi(name.substr(experts.size(), dot - experts.size()));
                const auto it = std::lower_bound(k.begin(), k.end(), e);
                if (it == k.end() || *it != e)
                    break; // dropped expert
                const auto j = static_cast<std::size_t>(it - k.begin());
                const std::string suffix = name.substr(dot + 1);
                if (kind == ExportKind::Experts) {
                    t.name = experts + std::to_string(j) + "." + suffix;
                    made.push_back(t);
                    break;
                }
                const std::optional<Role> role = roleOf(suffix);
                if (!role)
                    throw unsliceable();
                const Slab slab = unitSlab(0, info.shape, *role, lk.units[j], 0);
                t.slabs = { slab };
                t.shape = selectedShape(slab);
                t.name = kind == ExportKind::Ragged ? raggedExpertName(l, j, *role)
                                                    : experts + std::to_string(j) + "." + suffix;
                made.push_back(t);
            } else if (spec.arch == Architecture::GptOss && startsWith(name, experts)) {
                made.push_back(gptOssExpertTensor(ckpt, t, name.substr(experts.size()), lk, kind));
            } else if (name == layout.fusedGateUpName(l) || name == layout.fusedDownName(l)) {
                const bool down = name == layout.fusedDownName(l);
                if (kind == ExportKind::Experts) {
                    t.slabs = { Slab { 0, info.shape, { k, std::nullopt, std::nullopt } } };
                    t.shape[0] = K;
                    made.push_back(t);
                    break;
                }
                for (std::size_t j = 0; j < k.size(); ++j) {
                    const std::vector<int>& u = lk.units[j];
                    if (kind == ExportKind::StockDims) {
                        std::vector<int> rows = u;
                        if (!down) {
                            const std::vector<int> up = shifted(u, static_cast<int>(I));
                            rows.insert(rows.end(), up.begin(), up.end());
                        }
                        t.slabs.push_back(down ? expertSlab(info, k[j], { std::nullopt, u })
                                               : expertSlab(info, k[j], { rows, std::nullopt }));
                        continue;
                    }
                    for (const Role role :
                        down ? std::vector<Role> { Role::Down } : std::vector { Role::Gate, Role::Up }) {
                        OutTensor r = t;
                        const Slab whole = expertSlab(info, k[j], {});
                        const Slab slab
                            = unitSlab(whole.offset, whole.shape, role, u, role == Role::Up ? static_cast<int>(I) : 0);
                        r.slabs = { slab };
                        r.shape = selectedShape(slab);
                        r.name = raggedExpertName(l, j, role);
                        made.push_back(std::move(r));
                    }
                }
                if (kind == ExportKind::StockDims) {
                    t.shape = { K, selectedShape(t.slabs.front())[0], selectedShape(t.slabs.front())[1] };
                    made.push_back(t);
                }
            } else if ((startsWith(name, moe + "gate.") || startsWith(name, moe + "router.")) && !info.shape.empty()
                && info.shape[0] == E) {
                // Router rows [E, H] and a correction bias [E] (gpt_oss: mlp.router.weight and .bias); the ragged
                // format names the block "mlp.".
                std::vector<std::optional<std::vector<int>>> select(info.shape.size());
                select[0] = k;
                t.slabs = { Slab { 0, info.shape, select } };
                t.shape[0] = K;
                if (kind == ExportKind::Ragged)
                    t.name = layout.layerPrefix(l) + "mlp." + name.substr(moe.size());
                made.push_back(t);
            } else if (startsWith(name, experts)) {
                if (kind != ExportKind::Experts || info.shape.empty() || info.shape[0] != E)
                    throw unsliceable();
                std::vector<std::optional<std::vector<int>>> select(info.shape.size());
                select[0] = k;
                t.slabs = { Slab { 0, info.shape, select } };
                t.shape[0] = K;
                made.push_back(t);
            } else {
                made.push_back(t); // shared expert and its gate: never pruned
            }
            break;
        }
        if (!handled)
            made.push_back(t);
        out.insert(out.end(), made.begin(), made.end());
    }
    std::stable_sort(out.begin(), out.end(), [](const OutTensor& a, const OutTensor& b) {
        return a.shard != b.shard ? a.shard < b.shard : a.offset < b.offset;
    });
    return out;
}

uint64_t writeTensor(CheckpointWriter& writer, const Checkpoint& ckpt, const OutTensor& t)
{
    const std::span<const std::byte> src = ckpt.bytes(t.source);
    PieceWriter out(writer, t.name);
    if (t.slabs.empty()) {
        out.piece(src);
        return out.finish();
    }
    const int64_t n = numel(ckpt.info(t.source).shape);
    const std::size_t elem = n > 0 ? src.size() / static_cast<std::size_t>(n) : 1;
    for (const Slab& s : t.slabs)
        emitSlab(out, src, s, elem);
    return out.finish();
}

} // namespace moeatlas
