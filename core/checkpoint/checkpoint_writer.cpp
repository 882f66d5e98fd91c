#include "checkpoint/checkpoint_writer.h"

#include "checkpoint/checkpoint_manifest.h"
#include "checkpoint/safetensors_writer.h"
#include "util/atomic_file.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <optional>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

std::string shardFileName(std::size_t index, std::size_t count)
{
    if (count == 1)
        return "model.safetensors";
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
    return buf;
}

bool isEmptyDirectory(const fs::path& dir)
{
    std::error_code ec;
    return fs::is_directory(dir, ec) && fs::directory_iterator(dir, ec) == fs::directory_iterator();
}

// Extra file names must stay inside the output directory.
void checkRelativeName(const fs::path& dir, const std::string& name)
{
    const fs::path p(name);
    bool ok = !name.empty() && !p.is_absolute();
    for (const fs::path& part : p)
        ok = ok && part != "..";
    if (!ok)
        throw InputError(
            dir.string() + ": extra file name '" + name + "' must be a relative path inside the checkpoint directory");
}

// transformers writes its JSON files with indent=2, sort_keys=True and a trailing newline.
std::string prettyJson(const nlohmann::json& j)
{
    return j.dump(2) + "\n";
}

void writeFile(const fs::path& path, const std::string& contents)
{
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    errno = 0;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.flush();
    if (!out) {
        const int err = errno; // ofstream sets no error of its own; write(2)'s errno is what is left
        throw Error(path.string() + ": write failed" + (err != 0 ? std::string(" (") + std::strerror(err) + ")" : ""));
    }
}

} // namespace

struct CheckpointWriter::Impl {
    struct Tensor {
        std::string name;
        DType dtype;
        std::vector<int64_t> shape;
        uint64_t bytes = 0;
        std::size_t shard = 0;
    };

    fs::path dir;
    fs::path partial;
    CheckpointWriterOptions options;
    std::string cardName, card; // setCard()
    std::vector<Tensor> tensors;
    std::map<std::string, std::size_t> indexOf;
    std::size_t shardCount = 0; // 0 until shards are assigned
    std::size_t next = 0; // next tensor to write
    uint64_t writtenInNext = 0; // bytes of tensors[next] already written (chunked writes)
    std::size_t openShard = 0;
    std::optional<SafetensorsWriter> writer;
    std::vector<std::pair<std::string, std::string>> files; // relative name, contents
    std::vector<std::pair<fs::path, std::string>> copies; // source, relative name
    bool finished = false;

    // Greedy in declaration order, as huggingface_hub's split_torch_state_dict_into_shards:
    // start a new shard when the next tensor would overflow a non-empty one, so a tensor larger
    // than maxShardBytes ends up alone in its shard.
    void assignShards()
    {
        std::size_t shard = 0;
        uint64_t size = 0;
        bool any = false;
        for (Tensor& t : tensors) {
            if (any && size + t.bytes > options.maxShardBytes) {
                ++shard;
                size = 0;
            }
            t.shard = shard;
            size += t.bytes;
            any = true;
        }
        shardCount = shard + 1;
    }

    void openWriter(std::size_t shard)
    {
        writer.emplace(partial / shardFileName(shard, shardCount));
        for (const Tensor& t : tensors)
            if (t.shard == shard)
                writer->declare(t.name, t.dtype, t.shape);
        // transformers marks its shards this way; some loaders check it.
        writer->setMetadata({ { "format", "pt" } });
        openShard = shard;
    }
};

CheckpointWriter::CheckpointWriter(fs::path dir, CheckpointWriterOptions options)
    : m_impl(std::make_unique<Impl>())
{
    // "out/" and "out" must both name the directory, not an empty last component.
    dir = dir.lexically_normal();
    if (dir.has_filename() == false && dir.has_parent_path())
        dir = dir.parent_path();
    m_impl->dir = dir;
    m_impl->partial = partialPathFor(dir);
    m_impl->options = options;
    if (options.maxShardBytes == 0)
        throw InputError(dir.string() + ": maximum shard size must be positive");

    std::error_code ec;
    if (fs::exists(dir, ec)) {
        if (!fs::is_directory(dir, ec))
            throw InputError(dir.string() + ": output exists and is not a directory");
        if (!isEmptyDirectory(dir) && !options.overwrite)
            throw RequestError("overwrite", dir.string() + ": output directory is not empty and is not replaced");
    }
    ensureWritableDirectory(dir);
    // A leftover from an interrupted run: it is ours by name and never a finished output.
    fs::remove_all(m_impl->partial, ec);
    if (!fs::create_directory(m_impl->partial, ec))
        throw Error(m_impl->partial.string() + ": cannot create directory (" + ec.message() + ")");
}

CheckpointWriter::~CheckpointWriter()
{
    if (!m_impl || m_impl->finished)
        return;
    m_impl->writer.reset();
    std::error_code ec;
    fs::remove_all(m_impl->partial, ec);
}

void CheckpointWriter::declare(const std::string& name, DType dtype, std::vector<int64_t> shape)
{
    Impl& d = *m_impl;
    if (d.shardCount != 0)
        throw Error(d.dir.string() + ": tensor '" + name + "' declared after the first write");
    if (d.indexOf.count(name))
        throw InputError(d.dir.string() + ": tensor '" + name + "' declared twice");
    uint64_t bytes = dtypeSize(dtype);
    for (int64_t dim : shape) {
        if (dim < 0)
            throw InputError(
                d.dir.string() + ": tensor '" + name + "': negative shape dimension " + std::to_string(dim));
        if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes))
            throw InputError(d.dir.string() + ": tensor '" + name + "': byte size overflows 64 bits");
    }
    d.indexOf.emplace(name, d.tensors.size());
    d.tensors.push_back({ name, dtype, std::move(shape), bytes, 0 });
}

void CheckpointWriter::write(const std::string& name, std::span<const std::byte> bytes)
{
    Impl& d = *m_impl;
    // A whole write must not land in the middle of a tensor begun with writeChunk().
    if (d.writtenInNext != 0)
        throw Error(d.dir.string() + ": whole write of '" + name + "' while tensor '" + d.tensors[d.next].name
            + "' is partly written");
    if (!d.finished && d.next < d.tensors.size() && d.tensors[d.next].name == name
        && bytes.size() != d.tensors[d.next].bytes)
        throw Error(d.dir.string() + ": tensor '" + name + "': got " + std::to_string(bytes.size())
            + " bytes, declared " + std::to_string(d.tensors[d.next].bytes));
    writeChunk(name, bytes);
}

void CheckpointWriter::writeChunk(const std::string& name, std::span<const std::byte> bytes)
{
    Impl& d = *m_impl;
    if (d.finished)
        throw Error(d.dir.string() + ": write of '" + name + "' after finish()");
    if (d.shardCount == 0)
        d.assignShards();
    if (d.next >= d.tensors.size())
        throw Error(d.dir.string() + ": write of tensor '" + name + "' after every declared tensor");
    const Impl::Tensor& t = d.tensors[d.next];
    if (t.name != name)
        throw Error(d.dir.string() + ": write of tensor '" + name + "' out of order; expected '" + t.name + "'");
    if (bytes.size() > t.bytes - d.writtenInNext)
        throw Error(d.dir.string() + ": tensor '" + name + "': " + std::to_string(d.writtenInNext + bytes.size())
            + " bytes written, declared " + std::to_string(t.bytes));
    if (!d.writer || d.openShard != t.shard) {
        if (d.writer)
            d.writer->finish();
        d.openWriter(t.shard);
    }
    d.writer->write(name, bytes);
    d.writtenInNext += bytes.size();
    if (d.writtenInNext == t.bytes) {
        ++d.next;
        d.writtenInNext = 0;
    }
}

void CheckpointWriter::addFile(const std::string& relativeName, std::string contents)
{
    checkRelativeName(m_impl->dir, relativeName);
    m_impl->files.emplace_back(relativeName, std::move(contents));
}

void CheckpointWriter::setCard(const std::string& relativeName, std::string contents)
{
    checkRelativeName(m_impl->dir, relativeName);
    m_impl->cardName = relativeName;
    m_impl->card = std::move(contents);
}

void CheckpointWriter::copyFile(const fs::path& source, const std::string& relativeName)
{
    checkRelativeName(m_impl->dir, relativeName);
    std::error_code ec;
    if (!fs::is_regular_file(source, ec))
        throw InputError(source.string() + ": file to copy into " + m_impl->dir.string() + " does not exist");
    m_impl->copies.emplace_back(source, relativeName);
}

void CheckpointWriter::setConfig(const nlohmann::json& config)
{
    addFile("config.json", prettyJson(config));
}

void CheckpointWriter::finish()
{
    Impl& d = *m_impl;
    if (d.finished)
        throw Error(d.dir.string() + ": finish() called twice");
    if (d.shardCount == 0)
        d.assignShards();
    if (d.next < d.tensors.size())
        throw Error(d.dir.string() + ": tensor '" + d.tensors[d.next].name + "' was declared but "
            + (d.writtenInNext ? "only " + std::to_string(d.writtenInNext) + " of "
                        + std::to_string(d.tensors[d.next].bytes) + " bytes were written"
                               : std::string("never written")));
    if (!d.writer)
        d.openWriter(0); // no tensors at all: still a valid (empty) model.safetensors
    d.writer->finish();
    d.writer.reset();

    if (d.shardCount > 1) {
        uint64_t total = 0;
        nlohmann::json weightMap = nlohmann::json::object();
        for (const Impl::Tensor& t : d.tensors) {
            total += t.bytes;
            weightMap[t.name] = shardFileName(t.shard, d.shardCount);
        }
        const nlohmann::json index = { { "metadata", { { "total_size", total } } }, { "weight_map", weightMap } };
        writeFile(d.partial / "model.safetensors.index.json", prettyJson(index));
    }
    for (const auto& [name, contents] : d.files)
        writeFile(d.partial / name, contents);
    for (const auto& [source, name] : d.copies) {
        std::error_code ec;
        fs::create_directories((d.partial / name).parent_path(), ec);
        if (!fs::copy_file(source, d.partial / name, fs::copy_options::overwrite_existing, ec))
            throw Error("cannot copy " + source.string() + " to " + (d.partial / name).string() + ": " + ec.message());
    }
    if (!d.cardName.empty())
        writeFile(d.partial / d.cardName, d.card + manifestSection(takeManifest(d.partial, d.cardName)));

    // rename(2) replaces a missing or empty directory atomically. A non-empty one (overwrite)
    // is swapped in with RENAME_EXCHANGE, so readers never see a half-replaced directory; the
    // old contents end up under the partial name and are removed afterwards.
    std::error_code ec;
    const bool replacing = fs::exists(d.dir, ec) && !isEmptyDirectory(d.dir);
    if (replacing && !d.options.overwrite)
        throw InputError(d.dir.string() + ": output directory became non-empty while writing");
    if (!replacing) {
        commitFile(d.partial, d.dir);
    } else if (::renameat2(AT_FDCWD, d.partial.c_str(), AT_FDCWD, d.dir.c_str(), RENAME_EXCHANGE) != 0) {
        // Filesystems without RENAME_EXCHANGE: move the old directory aside first.
        fs::path old = d.dir;
        old += ".old";
        fs::remove_all(old, ec);
        commitFile(d.dir, old);
        try {
            commitFile(d.partial, d.dir);
        } catch (...) {
            std::rename(old.c_str(), d.dir.c_str()); // put the previous output back
            throw;
        }
        fs::remove_all(old, ec);
        d.finished = true;
        return;
    }
    d.finished = true;
    fs::remove_all(d.partial, ec);
}

} // namespace moeatlas
