// The CLI given broken input. Every case starts from a small valid checkpoint and calibration
// file, breaks exactly one thing and runs `moeatlas capture` (and, where the checkpoint itself is
// unreadable, `moeatlas inspect`). Each must: exit non-zero without crashing, print a message
// naming the file and the tensor/field at fault, and leave nothing under the final output name
// (a ".partial" may remain when the failure comes after the atlas was started; it is never
// mistaken for a finished atlas, so only the final name is checked unless a case says otherwise).
// `moeatlas score` with a bad option must leave the atlas it was given byte for byte as it was.
#include "atlas/atlas_file.h"
#include "export/exporter.h"
#include "metrics/routing_rule_stats.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QTemporaryDir>
#include <QTest>
#include <QtEndian>

#include <future>
#include <string>

using namespace Qt::StringLiterals;
using moeatlas::test::cliExecutable;
using moeatlas::test::ProcessResult;
using moeatlas::test::runProcess;

namespace {

constexpr int kTimeoutMs = 120000;
constexpr int kVocab = 128;
constexpr int kSeqLen = 16;
const char* const kShard = "model.safetensors";

// --- files ---------------------------------------------------------------------------------

bool readAll(const QString& path, QByteArray& out)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly))
        return false;
    out = f.readAll();
    return true;
}

bool writeAll(const QString& path, const QByteArray& bytes)
{
    QFile f(path);
    if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate))
        return false;
    return f.write(bytes) == bytes.size() && f.flush();
}

bool copyDir(const QString& from, const QString& to)
{
    if (!QDir().mkpath(to))
        return false;
    const QDir src(from);
    for (const QString& name : src.entryList(QDir::Files))
        if (!QFile::copy(src.filePath(name), QDir(to).filePath(name)))
            return false;
    return true;
}

// A safetensors file split into its header JSON and data region, so a case can edit the header
// and write the file back with a correct length prefix (the data region is left as it was).
struct RawSafetensors {
    nlohmann::json header;
    QByteArray data;
};

bool readRaw(const QString& path, RawSafetensors& raw)
{
    QByteArray all;
    if (!readAll(path, all) || all.size() < 8)
        return false;
    const auto n = qFromLittleEndian<quint64>(all.constData());
    if (n > static_cast<quint64>(all.size() - 8))
        return false;
    const char* begin = all.constData() + 8;
    raw.header = nlohmann::json::parse(begin, begin + n, nullptr, false);
    raw.data = all.mid(static_cast<qsizetype>(8 + n));
    return !raw.header.is_discarded();
}

bool writeRaw(const QString& path, const RawSafetensors& raw)
{
    std::string h = raw.header.dump();
    while (h.size() % 8 != 0) // the reference writer pads with spaces to 8 bytes
        h += ' ';
    QByteArray out(8, '\0');
    qToLittleEndian<quint64>(h.size(), out.data());
    out += QByteArray::fromStdString(h);
    out += raw.data;
    return writeAll(path, out);
}

template <typename Edit> bool editHeader(const QString& path, Edit edit)
{
    RawSafetensors raw;
    if (!readRaw(path, raw))
        return false;
    edit(raw);
    return writeRaw(path, raw);
}

template <typename Edit> bool editConfig(const QString& dir, Edit edit)
{
    const QString path = QDir(dir).filePath(u"config.json"_s);
    QByteArray text;
    if (!readAll(path, text))
        return false;
    nlohmann::json config = nlohmann::json::parse(text.toStdString(), nullptr, false);
    if (config.is_discarded())
        return false;
    edit(config);
    return writeAll(path, QByteArray::fromStdString(config.dump(2)));
}

QString q(const std::string& s)
{
    return QString::fromStdString(s);
}

// "model.safetensors" header entries are offsets relative to the data region.
uint64_t beginOf(const RawSafetensors& raw, const std::string& name)
{
    return raw.header.at(name).at("data_offsets").at(0).get<uint64_t>();
}
uint64_t endOf(const RawSafetensors& raw, const std::string& name)
{
    return raw.header.at(name).at("data_offsets").at(1).get<uint64_t>();
}

// --- runs ----------------------------------------------------------------------------------

ProcessResult cli(const QStringList& args)
{
    return runProcess(cliExecutable(), args, kTimeoutMs);
}

// Exit code != 0 and not a crash, the engine's error line, every keyword in stderr, and no file
// under finalOutput (when given).
void checkCleanFailure(const ProcessResult& r, const QStringList& keywords, const QString& finalOutput)
{
    const QString context = u"\nexit code %1\nstderr: %2\nstdout: %3"_s.arg(r.exitCode).arg(r.stdErr, r.stdOut);
    QVERIFY2(r.exitCode != -1, qPrintable(u"crashed or timed out"_s + context));
    QVERIFY2(r.exitCode != 0, qPrintable(u"succeeded on broken input"_s + context));
    QVERIFY2(r.stdErr.contains(u"moeatlas: error: "_s), qPrintable(u"no error message"_s + context));
    for (const QString& kw : keywords)
        QVERIFY2(r.stdErr.contains(kw), qPrintable(u"message lacks '"_s + kw + u"'"_s + context));
    if (!finalOutput.isEmpty())
        QVERIFY2(!QFileInfo::exists(finalOutput), qPrintable(finalOutput + u" exists after a failure"_s + context));
}

#define CHECK_CLEAN_FAILURE(result, keywords, output)                                                                  \
    do {                                                                                                               \
        checkCleanFailure(result, keywords, output);                                                                   \
        if (QTest::currentTestFailed())                                                                                \
            return;                                                                                                    \
    } while (false)

} // namespace

class TstCliErrors : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase();
    void validInputsSucceed();
    void brokenCheckpoint_data();
    void brokenCheckpoint();
    void laterLayerValidatedUpFront();
    void brokenCalibration_data();
    void brokenCalibration();
    void badDomainArgument_data();
    void badDomainArgument();
    void badOption_data();
    void badOption();
    void unwritableOutput_data();
    void unwritableOutput();
    void existingOutputKept();
    void badScoreOption_data();
    void badScoreOption();
    void badEvalRouting_data();
    void badEvalRouting();
    void memoryPlanRefused();
    void badExportRouting_data();
    void badExportRouting();
    void thresholdCalibratedOnAtlas();

private:
    QString capture(const QString& checkpoint, const QString& out, const QStringList& extra, ProcessResult& r) const;
    // Applies one named break to a checkpoint copy in dir; returns the keywords its message must hold.
    QStringList breakCheckpoint(const QString& kind, const QString& dir) const;

    QTemporaryDir m_root;
    QString m_model; // the valid checkpoint; cases copy it before breaking anything
    QString m_calib; // the valid calibration file
};

QString TstCliErrors::capture(
    const QString& checkpoint, const QString& out, const QStringList& extra, ProcessResult& r) const
{
    QStringList args { u"capture"_s, checkpoint, u"-o"_s, out };
    if (!extra.contains(u"--seq-len"_s))
        args << u"--seq-len"_s << QString::number(kSeqLen);
    if (!extra.contains(u"--domain"_s))
        args << u"--domain"_s << u"web="_s + m_calib;
    r = cli(args + extra);
    return out;
}

void TstCliErrors::initTestCase()
{
    QVERIFY2(!cliExecutable().isEmpty(), "MOEATLAS_CLI is not set (run through ctest)");
    QVERIFY(QFileInfo(cliExecutable()).isExecutable());
    QVERIFY(m_root.isValid());
    m_model = m_root.filePath(u"model"_s);
    m_calib = m_root.filePath(u"calib.jsonl"_s);
    // One shard: --shard-mib is MiB granularity and the model is ~360 KiB.
    const ProcessResult r = cli({ u"generate"_s, u"-o"_s, m_model, u"--arch"_s, u"qwen3_moe"_s, u"--layers"_s, u"2"_s,
        u"--hidden"_s, u"64"_s, u"--head-dim"_s, u"16"_s, u"--heads"_s, u"4"_s, u"--kv-heads"_s, u"2"_s, u"--experts"_s,
        u"4"_s, u"--top-k"_s, u"2"_s, u"--expert-width"_s, u"32"_s, u"--vocab"_s, QString::number(kVocab),
        u"--shard-mib"_s, u"1"_s, u"--calibration"_s, m_calib, u"--calibration-docs"_s, u"4"_s,
        u"--calibration-doc-tokens"_s, u"64"_s });
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    QVERIFY(QFileInfo::exists(QDir(m_model).filePath(QString::fromLatin1(kShard))));
    QVERIFY(QFileInfo::exists(QDir(m_model).filePath(u"config.json"_s)));
    QVERIFY(QFileInfo::exists(m_calib));
}

// The baseline: without the break, the same commands succeed, so every failure below is the break's.
void TstCliErrors::validInputsSucceed()
{
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    ProcessResult r;
    const QString out = capture(m_model, tmp.filePath(u"ok.atlas.h5"_s), {}, r);
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    QVERIFY(QFileInfo::exists(out));
    QVERIFY(!QFileInfo::exists(out + u".partial"_s));
    const ProcessResult inspect = cli({ u"inspect"_s, m_model });
    QVERIFY2(inspect.exitCode == 0, qPrintable(inspect.stdErr));
}

void TstCliErrors::brokenCheckpoint_data()
{
    QTest::addColumn<QString>("kind");
    // Also run `inspect` ("text" or "json" output) on the broken copy. Every break fails it as
    // well (it validates tensors against the architecture like capture); a few are run here to
    // keep the suite fast.
    QTest::addColumn<QString>("inspect");

    // safetensors container
    QTest::newRow("truncated shard (data region)") << u"truncate-data"_s << u"json"_s;
    QTest::newRow("shard shorter than 8 bytes") << u"truncate-8"_s << QString();
    QTest::newRow("header length beyond file") << u"header-length"_s << u"text"_s;
    QTest::newRow("malformed header JSON") << u"header-json"_s << u"text"_s;
    QTest::newRow("overlapping tensor offsets") << u"overlap"_s << u"text"_s;
    QTest::newRow("offsets out of range") << u"out-of-range"_s << QString();
    QTest::newRow("offsets begin > end") << u"begin-after-end"_s << QString();
    QTest::newRow("shape x dtype != byte size (shape)") << u"size-shape"_s << u"text"_s;
    QTest::newRow("shape x dtype != byte size (dtype)") << u"size-dtype"_s << QString();
    QTest::newRow("unknown dtype") << u"unknown-dtype"_s << QString();
    QTest::newRow("no weights file") << u"no-shard"_s << QString();
    // tensors vs config.json
    QTest::newRow("shape vs config (hidden_size)") << u"config-hidden"_s << u"text"_s;
    QTest::newRow("shape vs config (moe_intermediate_size)") << u"config-expert-width"_s << QString();
    QTest::newRow("missing expert tensor") << u"missing-expert"_s << QString();
    QTest::newRow("missing final norm") << u"missing-norm"_s << QString();
    QTest::newRow("integer router weight") << u"int-router"_s << u"json"_s;
    // config.json
    QTest::newRow("unknown model_type") << u"model-type"_s << u"json"_s;
    QTest::newRow("config.json not JSON") << u"config-not-json"_s << QString();
    QTest::newRow("config.json missing") << u"config-missing"_s << u"text"_s;
    QTest::newRow("config.json not an object") << u"config-array"_s << QString();
    QTest::newRow("missing num_experts_per_tok") << u"missing-topk"_s << u"text"_s;
    QTest::newRow("num_experts_per_tok not an integer") << u"topk-string"_s << QString();
    QTest::newRow("partial rotary factor") << u"partial-rotary"_s << u"text"_s;
}

QStringList TstCliErrors::breakCheckpoint(const QString& kind, const QString& dir) const
{
    const QString shard = QDir(dir).filePath(QString::fromLatin1(kShard));
    const QString config = QDir(dir).filePath(u"config.json"_s);
    RawSafetensors raw;
    if (!readRaw(shard, raw))
        return {};
    const auto dataSize = static_cast<uint64_t>(raw.data.size());
    const std::string norm = "model.norm.weight";

    if (kind == u"truncate-data") {
        // Cut half-way through the data region; the first tensor (in name order, which is the
        // order the reader checks) that no longer fits is the one named.
        const uint64_t keep = dataSize / 2;
        std::string first;
        for (const auto& [name, entry] : raw.header.items())
            if (name != "__metadata__" && endOf(raw, name) > keep) {
                first = name;
                break;
            }
        QByteArray all;
        if (first.empty() || !readAll(shard, all))
            return {};
        all.truncate(all.size() - static_cast<qsizetype>(dataSize - keep));
        if (!writeAll(shard, all))
            return {};
        return { shard, u"tensor '"_s + q(first) + u"'"_s, u"data_offsets"_s, u"outside the data region"_s };
    }
    if (kind == u"truncate-8") {
        if (!writeAll(shard, QByteArray(4, '\0')))
            return {};
        return { shard, u"8-byte header length"_s };
    }
    if (kind == u"header-length") {
        QByteArray all;
        if (!readAll(shard, all))
            return {};
        qToLittleEndian<quint64>(static_cast<quint64>(all.size()), all.data());
        if (!writeAll(shard, all))
            return {};
        return { shard, u"header length "_s + QString::number(all.size()), u"exceeds the file"_s };
    }
    if (kind == u"header-json") {
        // Drop the closing brace of the header object: the JSON ends early.
        QByteArray all;
        if (!readAll(shard, all))
            return {};
        const auto n = static_cast<qsizetype>(qFromLittleEndian<quint64>(all.constData()));
        const qsizetype brace = all.lastIndexOf('}', 8 + n - 1);
        if (brace < 8)
            return {};
        all[brace] = ' ';
        if (!writeAll(shard, all))
            return {};
        return { shard, u"header is not valid JSON"_s };
    }
    if (kind == u"overlap") {
        // Slide the final norm back by its own size, onto the tensor that ends where it began.
        const uint64_t b = beginOf(raw, norm), e = endOf(raw, norm);
        std::string before;
        for (const auto& [name, entry] : raw.header.items())
            if (name != "__metadata__" && endOf(raw, name) == b)
                before = name;
        if (before.empty())
            return {};
        raw.header[norm]["data_offsets"] = nlohmann::json::array({ b - (e - b), b });
        if (!writeRaw(shard, raw))
            return {};
        return { shard, u"tensor '"_s + q(norm) + u"'"_s, u"overlap"_s, u"'"_s + q(before) + u"'"_s };
    }
    if (kind == u"out-of-range") {
        const std::string name = "lm_head.weight";
        const uint64_t size = endOf(raw, name) - beginOf(raw, name);
        raw.header[name]["data_offsets"] = nlohmann::json::array({ dataSize, dataSize + size });
        if (!writeRaw(shard, raw))
            return {};
        return { shard, u"tensor 'lm_head.weight'"_s, u"data_offsets"_s,
            u"outside the data region of "_s + QString::number(dataSize) };
    }
    if (kind == u"begin-after-end") {
        const uint64_t b = beginOf(raw, norm), e = endOf(raw, norm);
        raw.header[norm]["data_offsets"] = nlohmann::json::array({ e, b });
        if (!writeRaw(shard, raw))
            return {};
        return { shard, u"tensor 'model.norm.weight'"_s, u"begin > end"_s };
    }
    if (kind == u"size-shape") {
        raw.header[norm]["shape"] = nlohmann::json::array({ 65 });
        if (!writeRaw(shard, raw))
            return {};
        return { shard, u"tensor 'model.norm.weight'"_s, u"hold 256 bytes"_s, u"shape [65] x F32 needs 260"_s };
    }
    if (kind == u"size-dtype") {
        raw.header[norm]["dtype"] = "F16";
        if (!writeRaw(shard, raw))
            return {};
        return { shard, u"tensor 'model.norm.weight'"_s, u"hold 256 bytes"_s, u"shape [64] x F16 needs 128"_s };
    }
    if (kind == u"unknown-dtype") {
        raw.header[norm]["dtype"] = "F31";
        if (!writeRaw(shard, raw))
            return {};
        return { shard, u"tensor 'model.norm.weight'"_s, u"unknown dtype 'F31'"_s, u"BF16"_s };
    }
    if (kind == u"no-shard") {
        if (!QFile::remove(shard))
            return {};
        return { dir, u"model.safetensors"_s, u"model.safetensors.index.json"_s };
    }
    if (kind == u"config-hidden") {
        // Caught before any layer runs: the embedding is checked when the executor is built.
        if (!editConfig(dir, [](nlohmann::json& c) { c["hidden_size"] = 96; }))
            return {};
        return { shard, u"tensor 'model.embed_tokens.weight'"_s, u"has shape [128, 64]"_s, u"expected [128, 96]"_s,
            u"config.json"_s };
    }
    if (kind == u"config-expert-width") {
        // Only expert tensors depend on moe_intermediate_size; layer 0's first expert is named.
        if (!editConfig(dir, [](nlohmann::json& c) { c["moe_intermediate_size"] = 48; }))
            return {};
        return { shard, u"tensor 'model.layers.0.mlp.experts.0.gate_proj.weight'"_s, u"has shape [32, 64]"_s,
            u"expected [48, 64]"_s, u"config.json"_s };
    }
    if (kind == u"missing-expert" || kind == u"missing-norm") {
        // Renamed in the header: the file stays valid, the name the architecture needs is gone.
        const std::string name = kind == u"missing-norm" ? norm : "model.layers.1.mlp.experts.2.up_proj.weight";
        nlohmann::json entry = raw.header.at(name);
        raw.header.erase(name);
        raw.header[name + "_renamed"] = entry;
        if (!writeRaw(shard, raw))
            return {};
        return { dir, u"missing tensor '"_s + q(name) + u"'"_s };
    }
    if (kind == u"int-router") {
        // I32 has the size of F32, so the header stays consistent; only the type is wrong.
        raw.header["model.layers.0.mlp.gate.weight"]["dtype"] = "I32";
        if (!writeRaw(shard, raw))
            return {};
        return { shard, u"tensor 'model.layers.0.mlp.gate.weight'"_s, u"I32"_s, u"floating-point"_s };
    }
    if (kind == u"model-type") {
        if (!editConfig(dir, [](nlohmann::json& c) { c["model_type"] = "gpt2"; }))
            return {};
        return { config, u"model_type"_s, u"'gpt2'"_s, u"mixtral"_s, u"qwen2_moe"_s, u"qwen3_moe"_s, u"olmoe"_s };
    }
    if (kind == u"config-not-json") {
        if (!writeAll(config, "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64,,}\n"))
            return {};
        return { config, u"config.json is not valid JSON"_s };
    }
    if (kind == u"config-missing") {
        if (!QFile::remove(config))
            return {};
        return { dir, u"missing config.json"_s };
    }
    if (kind == u"config-array") {
        if (!writeAll(config, "[1, 2, 3]\n"))
            return {};
        return { config, u"expected a JSON object"_s };
    }
    if (kind == u"missing-topk") {
        if (!editConfig(dir, [](nlohmann::json& c) { c.erase("num_experts_per_tok"); }))
            return {};
        return { config, u"field 'num_experts_per_tok'"_s, u"missing"_s };
    }
    if (kind == u"topk-string") {
        if (!editConfig(dir, [](nlohmann::json& c) { c["num_experts_per_tok"] = "two"; }))
            return {};
        return { config, u"field 'num_experts_per_tok'"_s, u"integer"_s };
    }
    if (kind == u"partial-rotary") {
        // Attention rotates whole heads; a smaller rotary width used to fail mid-run in a broadcast.
        if (!editConfig(dir, [](nlohmann::json& c) {
                c["rope_parameters"]
                    = { { "rope_type", "default" }, { "rope_theta", 10000.0 }, { "partial_rotary_factor", 0.5 } };
            }))
            return {};
        return { config, u"field 'rope_parameters.partial_rotary_factor'"_s, u"is 0.5"_s, u"expected 1.0"_s };
    }
    return {};
}

void TstCliErrors::brokenCheckpoint()
{
    QFETCH(QString, kind);
    QFETCH(QString, inspect);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString dir = tmp.filePath(u"model"_s);
    QVERIFY(copyDir(m_model, dir));
    const QStringList keywords = breakCheckpoint(kind, dir);
    QVERIFY2(!keywords.isEmpty(), qPrintable(u"could not apply break "_s + kind));

    // inspect runs beside capture: each CLI start costs ~0.5 s of LibTorch loading.
    std::future<ProcessResult> inspected;
    if (!inspect.isEmpty())
        inspected = std::async(std::launch::async, [&] {
            return cli(inspect == u"json"_s ? QStringList { u"inspect"_s, u"--json"_s, dir }
                                            : QStringList { u"inspect"_s, dir });
        });
    ProcessResult r;
    const QString out = capture(dir, tmp.filePath(u"run.atlas.h5"_s), {}, r);
    const ProcessResult i = inspected.valid() ? inspected.get() : ProcessResult {};
    CHECK_CLEAN_FAILURE(r, keywords, out);

    if (!inspect.isEmpty()) {
        CHECK_CLEAN_FAILURE(i, keywords, QString());
        QVERIFY2(i.stdOut.trimmed().isEmpty(), qPrintable(u"inspect printed a report on failure: "_s + i.stdOut));
    }
}

// executor.h promises that the executor validates every tensor of every layer (shapes, dtypes)
// before anything runs: a checkpoint broken in its last layer must fail before layer 0 is
// computed, so no atlas, not even a .partial, is started.
void TstCliErrors::laterLayerValidatedUpFront()
{
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString dir = tmp.filePath(u"model"_s);
    QVERIFY(copyDir(m_model, dir));
    const QString shard = QDir(dir).filePath(QString::fromLatin1(kShard));
    const std::string router = "model.layers.1.mlp.gate.weight";
    QVERIFY(editHeader(shard, [&](RawSafetensors& raw) { raw.header[router]["dtype"] = "I32"; }));

    ProcessResult r;
    const QString out = capture(dir, tmp.filePath(u"run.atlas.h5"_s), {}, r);
    CHECK_CLEAN_FAILURE(r, (QStringList { shard, u"tensor '"_s + q(router) + u"'"_s, u"floating-point"_s }), out);
    QVERIFY2(!QFileInfo::exists(out + u".partial"_s), "a .partial atlas was started before validation failed");
}

void TstCliErrors::brokenCalibration_data()
{
    QTest::addColumn<QByteArray>("contents");
    QTest::addColumn<QStringList>("keywords"); // besides the file name

    const QByteArray good = "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]}\n";
    QTest::newRow("empty file") << QByteArray("\n  \n") << QStringList { u"no documents"_s };
    QTest::newRow("only empty documents") << QByteArray("{\"input_ids\": []}\n") << QStringList { u"no documents"_s };
    QTest::newRow("invalid JSON on line 3") << QByteArray(good + good + "{\"input_ids\": [1, 2,\n" + good)
                                            << QStringList { u"calib.jsonl:3:"_s, u"invalid JSON"_s };
    QTest::newRow("token id == vocab") << QByteArray(good + "{\"input_ids\": [5, 128, 7]}\n")
                                       << QStringList { u"calib.jsonl:2:"_s, u"token id 128"_s, u"[0, 128)"_s };
    QTest::newRow("negative token id") << QByteArray("{\"input_ids\": [5, -1]}\n" + good)
                                       << QStringList { u"calib.jsonl:1:"_s, u"token id -1"_s };
    QTest::newRow("no input_ids field") << QByteArray(good + "{\"text\": \"hello\"}\n")
                                        << QStringList { u"calib.jsonl:2:"_s, u"\"input_ids\""_s };
    QTest::newRow("input_ids not integers") << QByteArray(good + good + good + "{\"input_ids\": [1, \"two\"]}\n")
                                            << QStringList { u"calib.jsonl:4:"_s, u"\"input_ids\""_s, u"\"two\""_s };
    QTest::newRow("line is not an object")
        << QByteArray("[1, 2, 3]\n" + good) << QStringList { u"calib.jsonl:1:"_s, u"input_ids"_s };
    QTest::newRow("fewer tokens than --seq-len")
        << QByteArray("{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n")
        << QStringList { u"--seq-len: "_s, u"domain 'web'"_s, u"fewer tokens"_s,
               u"one sequence of "_s + QString::number(kSeqLen) + u" tokens"_s };
}

void TstCliErrors::brokenCalibration()
{
    QFETCH(QByteArray, contents);
    QFETCH(QStringList, keywords);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString calib = tmp.filePath(u"calib.jsonl"_s);
    QVERIFY(writeAll(calib, contents));
    ProcessResult r;
    const QString out = capture(m_model, tmp.filePath(u"run.atlas.h5"_s), { u"--domain"_s, u"web="_s + calib }, r);
    CHECK_CLEAN_FAILURE(r, QStringList { calib } + keywords, out);
    // Calibration is read before the atlas is started: nothing at all is left behind.
    QVERIFY(!QFileInfo::exists(out + u".partial"_s));
}

void TstCliErrors::badDomainArgument_data()
{
    QTest::addColumn<QStringList>("domains"); // "%1" is the valid calibration file
    QTest::addColumn<QStringList>("keywords"); // "%1" likewise

    QTest::newRow("no '='") << QStringList { u"%1"_s } << QStringList { u"--domain: domain '%1'"_s, u"NAME=PATH"_s };
    QTest::newRow("empty path") << QStringList { u"web="_s }
                                << QStringList { u"--domain: domain 'web='"_s, u"NAME=PATH"_s };
    QTest::newRow("duplicate names") << QStringList { u"web=%1"_s, u"web=%1"_s }
                                     << QStringList { u"--domain: domain 'web'"_s, u"twice"_s };
    QTest::newRow("bad name characters") << QStringList { u"we/b=%1"_s }
                                         << QStringList { u"--domain: domain 'we/b=%1'"_s, u"domain names"_s };
    QTest::newRow("sample cap 0") << QStringList { u"web=%1:0"_s }
                                  << QStringList { u"--domain: domain 'web=%1:0'"_s, u"> 0"_s };
    QTest::newRow("file does not exist") << QStringList { u"web=%1.missing"_s }
                                         << QStringList { u"%1.missing"_s, u"cannot open calibration file"_s };
}

void TstCliErrors::badDomainArgument()
{
    QFETCH(QStringList, domains);
    QFETCH(QStringList, keywords);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    QStringList extra;
    for (QString d : domains)
        extra << u"--domain"_s << d.replace(u"%1"_s, m_calib);
    QStringList expected;
    for (QString k : keywords)
        expected << k.replace(u"%1"_s, m_calib);
    ProcessResult r;
    const QString out = capture(m_model, tmp.filePath(u"run.atlas.h5"_s), extra, r);
    CHECK_CLEAN_FAILURE(r, expected, out);
    QVERIFY(!QFileInfo::exists(out + u".partial"_s));
}

void TstCliErrors::badOption_data()
{
    QTest::addColumn<QStringList>("options");
    QTest::addColumn<QStringList>("keywords");

    // This build's LibTorch is CPU-only (a CUDA build is skipped in the test body).
    QTest::newRow("--device cuda") << QStringList { u"--device"_s, u"cuda"_s }
                                   << QStringList { u"--device: cannot run on 'cuda'"_s, u"CUDA"_s };
    QTest::newRow("--device tpu") << QStringList { u"--device"_s, u"tpu"_s }
                                  << QStringList { u"--device: 'tpu' is not a device"_s, u"cpu, cuda or cuda:N"_s };
    QTest::newRow("--dtype int8") << QStringList { u"--dtype"_s, u"int8"_s }
                                  << QStringList { u"--dtype: 'int8'"_s, u"float32, bfloat16 or float16"_s };
    QTest::newRow("--logits-dtype int8") << QStringList { u"--logits-dtype"_s, u"int8"_s }
                                         << QStringList { u"--logits-dtype"_s, u"'int8'"_s, u"float16"_s };
    QTest::newRow("--seq-len 0") << QStringList { u"--seq-len"_s, u"0"_s }
                                 << QStringList { u"--seq-len: 0 tokens per sequence (expected a count > 0)"_s };
    QTest::newRow("--batch-tokens 0") << QStringList { u"--batch-tokens"_s,
        u"0"_s } << QStringList { u"--batch-tokens: 0 tokens per micro-batch (expected a count > 0)"_s };
    QTest::newRow("--tokenizer missing") << QStringList {
        u"--add-bos"_s, u"--tokenizer"_s, u"/no/such/tokenizer.json"_s
    } << QStringList { u"/no/such/tokenizer.json: no such file"_s, u"(--tokenizer PATH)"_s };
}

void TstCliErrors::badOption()
{
    QFETCH(QStringList, options);
    QFETCH(QStringList, keywords);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    ProcessResult r;
    const QString out = capture(m_model, tmp.filePath(u"run.atlas.h5"_s), options, r);
    if (options.contains(u"cuda"_s) && r.exitCode == 0)
        QSKIP("this LibTorch build has a usable CUDA device");
    CHECK_CLEAN_FAILURE(r, keywords, out);
    QVERIFY(!QFileInfo::exists(out + u".partial"_s));
}

void TstCliErrors::unwritableOutput_data()
{
    QTest::addColumn<bool>("parentIsFile");
    QTest::newRow("parent directory does not exist") << false;
    // The tests run as root, so permission bits (chmod 0555) would not stop a write; a regular
    // file where the directory should be does.
    QTest::newRow("parent path is a regular file") << true;
}

void TstCliErrors::unwritableOutput()
{
    QFETCH(bool, parentIsFile);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString parent = tmp.filePath(u"not-a-dir"_s);
    if (parentIsFile)
        QVERIFY(writeAll(parent, "plain file\n"));
    const QString out = parent + u"/run.atlas.h5"_s;
    ProcessResult r;
    capture(m_model, out, {}, r);
    CHECK_CLEAN_FAILURE(r, (QStringList { out, u"output directory '"_s + parent + u"'"_s }), out);
    // Nothing was created on the way: the parent is as it was.
    QCOMPARE(QFileInfo(parent).exists(), parentIsFile);
    if (parentIsFile) {
        QByteArray bytes;
        QVERIFY(readAll(parent, bytes));
        QCOMPARE(bytes, QByteArray("plain file\n"));
    }
}

void TstCliErrors::existingOutputKept()
{
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString out = tmp.filePath(u"run.atlas.h5"_s);
    QByteArray precious("an earlier atlas\n");
    for (int i = 0; i < 256; ++i)
        precious.append(static_cast<char>(i));
    QVERIFY(writeAll(out, precious));
    ProcessResult r;
    capture(m_model, out, {}, r);
    // The final name exists (it is the user's file), so the existence check is replaced by a
    // byte-for-byte comparison.
    CHECK_CLEAN_FAILURE(r, (QStringList { out, u"already exists"_s, u"(use --force to replace it)"_s }), QString());
    QByteArray after;
    QVERIFY(readAll(out, after));
    QCOMPARE(after, precious);
    QVERIFY(!QFileInfo::exists(out + u".partial"_s));
}

// The executor refuses plans above ExecutorOptions::memoryBudgetBytes (0 = MemAvailable), but the
// CLI has no flag or environment variable to set the budget, and the tiny model cannot exceed the
// real MemAvailable; the refusal is not reachable from the CLI.
// A budget below the plan's peak is refused before any work, with the numbers, and nothing is written.
void TstCliErrors::memoryPlanRefused()
{
    const QString out = m_root.filePath(u"over-budget.atlas.h5"_s);
    ProcessResult r;
    capture(m_model, out, { u"--memory-budget-mib"_s, u"1"_s }, r);
    QVERIFY(r.exitCode != 0 && r.exitCode != -1);
    QVERIFY2(r.stdErr.contains(u"memory plan"_s) && r.stdErr.contains(u"1.00 MiB"_s), qPrintable(r.stdErr));
    // The engine says what to lower in words; the CLI names its flags for it.
    QVERIFY2(r.stdErr.contains(u"(lower --max-samples, --seq-len or --batch-tokens)"_s), qPrintable(r.stdErr));
    QVERIFY(!QFileInfo::exists(out));
    QVERIFY(!QFileInfo::exists(out + u".partial"_s));

    // Evaluation plans its memory too (the held-out set on the same model).
    const ProcessResult e = cli({ u"eval"_s, m_model, u"--domain"_s, u"web="_s + m_calib, u"--seq-len"_s,
        QString::number(kSeqLen), u"--memory-budget-mib"_s, u"1"_s });
    QVERIFY(e.exitCode != 0 && e.exitCode != -1);
    QVERIFY2(e.stdErr.contains(u"memory plan"_s) && e.stdErr.contains(u"--batch-tokens)"_s), qPrintable(e.stdErr));

    // The same runs with room succeed (the refusal is the budget's doing, not the input's).
    capture(m_model, out, { u"--memory-budget-mib"_s, u"4096"_s }, r);
    QCOMPARE(r.exitCode, 0);
}

void TstCliErrors::badScoreOption_data()
{
    QTest::addColumn<QStringList>("options");
    QTest::addColumn<QStringList>("keywords");

    // The test model has 4 experts.
    QTest::newRow("--dynamic-k-band 3:2")
        << QStringList { u"--dynamic-k-band"_s, u"3:2"_s }
        << QStringList { u"--dynamic-k-band: dynamic-k band 3:2"_s, u"1 <= min <= max <= 4 (the number of experts)"_s };
    QTest::newRow("--dynamic-k-band 1:5") << QStringList { u"--dynamic-k-band"_s, u"1:5"_s }
                                          << QStringList { u"--dynamic-k-band: dynamic-k band 1:5"_s, u"<= 4"_s };
    QTest::newRow("--dynamic-k-band 0:2") << QStringList { u"--dynamic-k-band"_s, u"0:2"_s }
                                          << QStringList { u"--dynamic-k-band: band 0:2"_s, u"1 <= min"_s };
    QTest::newRow("--dynamic-k-band 2") << QStringList { u"--dynamic-k-band"_s, u"2"_s }
                                        << QStringList { u"--dynamic-k-band: '2'"_s, u"MIN:MAX"_s };
    QTest::newRow("--peu-pool-k 5") << QStringList { u"--peu-pool-k"_s, u"5"_s }
                                    << QStringList { u"--peu-pool-k: PEU pool size K_a = 5 is outside [1, 4]"_s };
    QTest::newRow("--criteria nonsense") << QStringList { u"--criteria"_s, u"nonsense"_s }
                                         << QStringList { u"unknown criterion \"nonsense\""_s };
}

// `moeatlas score` with a bad option fails before it touches the atlas: same bytes, nothing beside it.
void TstCliErrors::badScoreOption()
{
    QFETCH(QStringList, options);
    QFETCH(QStringList, keywords);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    ProcessResult r;
    const QString atlas = capture(m_model, tmp.filePath(u"run.atlas.h5"_s), {}, r);
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    QByteArray before, after;
    QVERIFY(readAll(atlas, before));
    const ProcessResult s = cli(QStringList { u"score"_s, atlas } + options);
    CHECK_CLEAN_FAILURE(s, keywords, QString());
    QVERIFY(readAll(atlas, after));
    QVERIFY2(before == after, "the atlas changed");
    QCOMPARE(QDir(tmp.path()).entryList(QDir::Files | QDir::NoDotAndDotDot), QStringList { u"run.atlas.h5"_s });
}

void TstCliErrors::badEvalRouting_data()
{
    QTest::addColumn<QStringList>("options");
    QTest::addColumn<QStringList>("keywords");
    // The test model has 4 experts.
    QTest::newRow("P above 1") << QStringList { u"--routing"_s, u"top-p:1.5"_s }
                               << QStringList { u"--routing: routing rule 'top-p:1.5': P 1.5 must lie in (0, 1]"_s };
    QTest::newRow("KMIN > KMAX") << QStringList { u"--routing"_s, u"probmoe:3:2"_s }
                                 << QStringList { u"--routing: routing rule 'probmoe:3:2'"_s, u"KMIN 3 is greater"_s };
    QTest::newRow("band below 1") << QStringList { u"--routing"_s, u"probmoe:0:2"_s }
                                  << QStringList { u"'probmoe:0:2'"_s, u"must lie in [1, 4]"_s };
    QTest::newRow("band above E") << QStringList { u"--routing"_s, u"top-k:1"_s, u"--routing"_s, u"probmoe:1:5"_s }
                                  << QStringList { u"'probmoe:1:5'"_s, u"must lie in [1, 4]"_s };
    QTest::newRow("unknown rule") << QStringList { u"--routing"_s, u"top-q:2"_s }
                                  << QStringList { u"'top-q:2'"_s, u"expected model, top-k:K"_s };
    QTest::newRow("threshold without an atlas") << QStringList { u"--routing"_s,
        u"threshold:1.5"_s } << QStringList { u"--routing: routing rule 'threshold:1.5'"_s, u"give an atlas"_s };
    // Speculative execution (--speculative), refused the same way.
    QTest::newRow("unknown predictor") << QStringList { u"--speculative"_s, u"psychic"_s }
                                       << QStringList { u"--speculative: speculative 'psychic'"_s,
                                              u"unknown predictor 'psychic'"_s, u"next-router"_s };
    QTest::newRow("lookahead beyond") << QStringList { u"--speculative"_s, u"next-router:9"_s }
                                      << QStringList { u"--speculative: speculative 'next-router:9'"_s,
                                             u"beyond the last MoE layer"_s };
    QTest::newRow("frequency without an atlas") << QStringList { u"--speculative"_s, u"frequency"_s }
                                                << QStringList { u"--speculative: "_s, u"give --atlas"_s };
}

// `moeatlas eval --routing` with a bad rule fails before any evaluation and writes no CSV.
void TstCliErrors::badEvalRouting()
{
    QFETCH(QStringList, options);
    QFETCH(QStringList, keywords);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString csv = tmp.filePath(u"routing.csv"_s);
    const ProcessResult e = cli(QStringList { u"eval"_s, m_model, u"--domain"_s, u"web="_s + m_calib, u"--seq-len"_s,
                                    QString::number(kSeqLen), u"--csv"_s, csv }
        + options);
    CHECK_CLEAN_FAILURE(e, keywords, QString());
    QVERIFY(QDir(tmp.path()).isEmpty());
}

// `moeatlas export --routing`: a rule the model cannot take, or one routing more experts than the plan
// keeps (3 of 4 per layer), is refused naming --routing before the output directory exists.
void TstCliErrors::badExportRouting_data()
{
    QTest::addColumn<QString>("rule");
    QTest::addColumn<QStringList>("keywords");
    QTest::newRow("top-p:1.5") << u"top-p:1.5"_s
                               << QStringList { u"--routing: routing rule 'top-p:1.5'"_s,
                                      u"P 1.5 must lie in (0, 1]"_s };
    QTest::newRow("probmoe:5:3") << u"probmoe:5:3"_s
                                 << QStringList { u"--routing: "_s, u"KMIN 5 is greater than KMAX 3"_s };
    QTest::newRow("probmoe:0:2") << u"probmoe:0:2"_s
                                 << QStringList { u"--routing: "_s, u"the band [0, 2] must lie in [1, 4]"_s };
    QTest::newRow("top-k above the kept experts")
        << u"top-k:4"_s << QStringList { u"--routing: routing rule 'top-k:4' routes up to 4 experts"_s, u"keeps 3"_s };
    QTest::newRow("threshold without an atlas")
        << u"threshold:1.5"_s << QStringList { u"--atlas: routing rule 'threshold:1.5:1:2'"_s, u"none was given"_s };
    QTest::newRow("unknown rule") << u"top-q:2"_s << QStringList { u"--routing: "_s, u"expected model, top-k:K"_s };
}

void TstCliErrors::badExportRouting()
{
    QFETCH(QString, rule);
    QFETCH(QStringList, keywords);
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    nlohmann::json layers = nlohmann::json::array();
    for (const int l : { 0, 1 })
        layers.push_back({ { "layer", l }, { "keep", { 0, 1, 3 } } });
    const nlohmann::json plan
        = { { "format", "moeatlas-plan" }, { "version", 1 }, { "source", { { "num_experts", 4 }, { "top_k", 2 } } },
              { "derivation", { { "method", "specialist" }, { "criterion", "test" } } }, { "layers", layers } };
    const QString planPath = tmp.filePath(u"plan.json"_s);
    QVERIFY(writeAll(planPath, QByteArray::fromStdString(plan.dump())));
    const QString out = tmp.filePath(u"pruned"_s);
    const auto run = [&](const QString& r) {
        return cli({ u"export"_s, m_model, u"--plan"_s, planPath, u"-o"_s, out, u"--routing"_s, r });
    };
    CHECK_CLEAN_FAILURE(run(rule), keywords, out);
    QVERIFY(!QFileInfo::exists(out + u".partial"_s));
    // The plan itself is fine: the largest top-k it allows, and a dynamic rule, export.
    for (const QString& ok : { u"top-k:3"_s, u"probmoe:1:3"_s }) {
        const ProcessResult r = run(ok);
        QVERIFY2(r.exitCode == 0, qPrintable(ok + u": "_s + r.stdErr));
        QVERIFY(QDir(out).removeRecursively());
    }
}

namespace {

QString keepAllPlan(const QString& dir)
{
    nlohmann::json layers = nlohmann::json::array();
    for (const int l : { 0, 1 })
        layers.push_back({ { "layer", l }, { "keep", { 0, 1, 2, 3 } } });
    const nlohmann::json plan
        = { { "format", "moeatlas-plan" }, { "version", 1 }, { "source", { { "num_experts", 4 }, { "top_k", 2 } } },
              { "derivation", { { "method", "specialist" }, { "criterion", "test" } } }, { "layers", layers } };
    const QString path = QDir(dir).filePath(u"all.json"_s);
    return writeAll(path, QByteArray::fromStdString(plan.dump())) ? path : QString();
}

} // namespace

// `--routing threshold:M --atlas A`: the thresholds written are calibrateThresholds' on A; an atlas of
// another config.json is refused naming --atlas, before the output exists.
void TstCliErrors::thresholdCalibratedOnAtlas()
{
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    ProcessResult r;
    const QString atlas = capture(m_model, tmp.filePath(u"run.atlas.h5"_s), {}, r);
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    const QString plan = keepAllPlan(tmp.path());
    QVERIFY(!plan.isEmpty());
    const QString out = tmp.filePath(u"pruned"_s);
    r = cli({ u"export"_s, m_model, u"--plan"_s, plan, u"-o"_s, out, u"--routing"_s, u"threshold:1.5"_s, u"--atlas"_s,
        atlas });
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    moeatlas::RoutingRule expected = moeatlas::exportRoutingRule(m_model.toStdString(), "threshold:1.5");
    moeatlas::calibrateThresholds(moeatlas::AtlasFile::openReadOnly(atlas.toStdString()), expected);
    QByteArray config;
    QVERIFY(readAll(QDir(out).filePath(u"config.json"_s), config));
    const nlohmann::json written = nlohmann::json::parse(config.toStdString())["moeatlas_routing"]["thresholds"];
    QCOMPARE(written.size(), std::size_t { 2 });
    for (const auto& [layer, t] : expected.thresholds)
        QCOMPARE(written.at(std::to_string(layer)).get<double>(), t);

    const QString other = tmp.filePath(u"other"_s);
    QVERIFY(copyDir(m_model, other));
    QByteArray otherConfig;
    QVERIFY(readAll(QDir(other).filePath(u"config.json"_s), otherConfig));
    QVERIFY(writeAll(QDir(other).filePath(u"config.json"_s), otherConfig + "\n"));
    const QString out2 = tmp.filePath(u"pruned-other"_s);
    r = cli({ u"export"_s, other, u"--plan"_s, plan, u"-o"_s, out2, u"--routing"_s, u"threshold:1.5"_s, u"--atlas"_s,
        atlas });
    CHECK_CLEAN_FAILURE(r, (QStringList { u"--atlas: "_s + atlas, u"another config.json"_s }), out2);
    QVERIFY(!QFileInfo::exists(out2 + u".partial"_s));
}

QTEST_GUILESS_MAIN(TstCliErrors)
#include "tst_cli_errors.moc"
