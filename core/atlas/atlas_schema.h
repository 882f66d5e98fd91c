// Private to core/atlas: the names of the atlas schema (docs/atlas-format.md) and the reading
// and writing of its metadata groups (/model, /calibration, the options on /layers).
#pragma once

#include "atlas/atlas_file.h"
#include "atlas/h5.h"

#include <cstdint>
#include <string>

namespace moeatlas::schema {

inline constexpr const char* kFormat = "moeatlas";
inline constexpr const char* kProducer = "moeatlas 0.1.0";
// Rows (tokens) per chunk of every per-token layer dataset.
inline constexpr hsize_t kChunkTokens = 1024;
// Elements per chunk of the 1-D token datasets.
inline constexpr hsize_t kTokenChunk = 65536;

std::string isoTimeNow();
std::string layerGroupName(int layer);

// Checks what create() is given before anything touches the disk; throws InputError naming
// `finalPath`.
void validateCreateArguments(const std::string& finalPath, const AtlasModelInfo& model,
    const AtlasCalibration& calibration, std::span<const int32_t> tokens, std::span<const int16_t> domainIds,
    std::span<const int64_t> seqOffsets, const AtlasCreateOptions& options);

void writeRootAttributes(hid_t file);
// Checks format and schema_version; throws InputError naming the file.
void checkRootAttributes(hid_t file);

void writeModel(hid_t file, const AtlasModelInfo& model);
AtlasModelInfo readModel(hid_t file);

void writeCalibration(hid_t file, const AtlasCalibration& calibration);
AtlasCalibration readCalibration(hid_t file);

void writeTokens(hid_t file, std::span<const int32_t> tokens, std::span<const int16_t> domainIds,
    std::span<const int64_t> seqOffsets, int compressionLevel);

void writeOptions(hid_t layersGroup, const AtlasCreateOptions& options);
AtlasCreateOptions readOptions(hid_t layersGroup);

// Creates /layers/<layer> with its datasets sized for numTokens and complete = 0.
void createLayer(
    hid_t layersGroup, int layer, int64_t numTokens, const AtlasModelInfo& model, const AtlasCreateOptions& options);

} // namespace moeatlas::schema
