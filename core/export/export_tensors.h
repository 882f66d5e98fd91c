// Internal to the exporter: which output tensor comes from which bytes of which source tensor
// (experts renumbered, router rows, intermediate units sliced), and the byte-level copy of those
// pieces into a CheckpointWriter. No LibTorch: rows and columns are addressed in the mapping.
#pragma once

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/model_spec.h"
#include "checkpoint/tensor_layout.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

enum class ExportKind {
    Experts, // expert pruning only: stock layout (per-layer counts via modeling_moeatlas.py)
    StockDims, // every kept expert of every layer has the same width: stock layout, smaller width key
    Ragged, // per-expert widths: per-expert tensors under mlp.experts.<k>, modeling_moeatlas.py
};

// What one decoder layer keeps: sorted expert ids (empty for a dense layer) and, with dims, the
// sorted unit ids of each kept expert.
struct LayerKeep {
    std::vector<int> experts;
    std::vector<std::vector<int>> units; // [experts.size()] or empty (every unit)
};

// A row-major block of the source tensor (starting `offset` bytes in, of `shape`) with, per
// dimension, the kept indices (nullopt = all of them).
struct Slab {
    uint64_t offset = 0;
    std::vector<int64_t> shape;
    std::vector<std::optional<std::vector<int>>> select;
};

struct OutTensor {
    std::string name;
    std::string source;
    std::vector<Slab> slabs; // concatenated in order; empty = the whole source tensor verbatim
    std::vector<int64_t> shape;
    std::size_t shard = 0; // source shard and offset, so reads stay sequential
    uint64_t offset = 0;
};

// Every output tensor of the export, in source-file order. Throws InputError on a routed-expert
// tensor this kind of export cannot slice.
std::vector<OutTensor> mapTensors(const Checkpoint& checkpoint, const ModelSpec& spec, const TensorLayout& layout,
    const std::vector<LayerKeep>& keep, ExportKind kind);

// Writes one mapped tensor (declared before) and returns its bytes. Large contiguous pieces go
// straight from the mapping to the file; small ones (columns) are batched in a bounded buffer.
uint64_t writeTensor(CheckpointWriter& writer, const Checkpoint& checkpoint, const OutTensor& tensor);

} // namespace moeatlas
