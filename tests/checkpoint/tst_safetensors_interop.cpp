// Reference suite: our safetensors reader/writer and CheckpointWriter against the python
// `safetensors` package (tests/checkpoint/safetensors_interop.py) in the project venv.
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_writer.h"
#include "test_io.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

using namespace moeatlas;
using namespace moeatlas::test;
namespace fs = std::filesystem;

namespace {

const QString kScript = QStringLiteral("tests/checkpoint/safetensors_interop.py");

QString describe(const test::ProcessResult& r)
{
    return QStringLiteral("exit ") + QString::number(r.exitCode) + QStringLiteral("\nstdout: ") + r.stdOut
        + QStringLiteral("\nstderr: ") + r.stdErr;
}

// Bits of `v` in a binary float format with `ebits` exponent and `mbits` mantissa bits. Only for
// zero and normal numbers exactly representable in the format, which is all the test writes.
uint32_t encodeFloat(double v, int ebits, int mbits, int bias)
{
    if (v == 0.0)
        return 0;
    const uint32_t sign = v < 0 ? 1u : 0u;
    int exp2 = 0;
    const double frac = std::frexp(std::fabs(v), &exp2); // |v| = frac * 2^exp2, frac in [0.5, 1)
    const int e = exp2 - 1;
    const auto mant = static_cast<uint32_t>(std::ldexp(frac * 2.0 - 1.0, mbits));
    return sign << (ebits + mbits) | static_cast<uint32_t>(e + bias) << mbits | mant;
}

template <typename T> void append(std::vector<std::byte>& out, T value)
{
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    out.insert(out.end(), p, p + sizeof(T));
}

// The values safetensors_interop.py's expected_values() recomputes, as little-endian bytes.
std::vector<std::byte> expectedBytes(DType t, int64_t numel)
{
    std::vector<std::byte> out;
    for (int64_t i = 0; i < numel; ++i) {
        const double f = static_cast<double>(i % 16) * 0.5 - 4;
        const int64_t s = (i * 7) % 100 - 50;
        switch (t) {
        case DType::F64:
            append(out, f);
            break;
        case DType::F32:
            append(out, static_cast<float>(f));
            break;
        case DType::F16:
            append(out, static_cast<uint16_t>(encodeFloat(f, 5, 10, 15)));
            break;
        case DType::BF16:
            append(out, static_cast<uint16_t>(encodeFloat(f, 8, 7, 127)));
            break;
        case DType::F8_E4M3:
            append(out, static_cast<uint8_t>(encodeFloat(f, 4, 3, 7)));
            break;
        case DType::F8_E5M2:
            append(out, static_cast<uint8_t>(encodeFloat(f, 5, 2, 15)));
            break;
        case DType::I64:
            append(out, s);
            break;
        case DType::I32:
            append(out, static_cast<int32_t>(s));
            break;
        case DType::I16:
            append(out, static_cast<int16_t>(s));
            break;
        case DType::I8:
            append(out, static_cast<int8_t>(s));
            break;
        case DType::U8:
            append(out, static_cast<uint8_t>((i * 7) % 256));
            break;
        case DType::BOOL:
            append(out, static_cast<uint8_t>(i % 3 == 0));
            break;
        }
    }
    return out;
}

struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    int64_t numel() const
    {
        int64_t n = 1;
        for (int64_t d : shape)
            n *= d;
        return n;
    }
};

std::vector<Spec> allDTypeSpecs()
{
    return {
        { "model.embed_tokens.weight", DType::BF16, { 7, 5 } },
        { "model.layers.0.mlp.gate.weight", DType::F32, { 4, 8 } },
        { "model.layers.0.mlp.experts.0.w1.weight", DType::F16, { 3, 16 } },
        { "model.layers.0.mlp.experts.0.w1.fp8", DType::F8_E4M3, { 5, 7 } },
        { "model.layers.0.mlp.experts.0.w2.fp8", DType::F8_E5M2, { 33 } },
        { "model.norm.weight", DType::F64, { 3 } },
        { "position_ids", DType::I64, { 2, 9 } },
        { "ids.i32", DType::I32, { 11 } },
        { "ids.i16", DType::I16, { 3, 3 } },
        { "ids.i8", DType::I8, { 17 } },
        { "codes", DType::U8, { 300 } },
        { "mask", DType::BOOL, { 4, 5 } },
        { "scalar", DType::F32, {} },
        { "empty", DType::F16, { 0, 4 } },
    };
}

nlohmann::json manifestOf(const std::vector<Spec>& specs)
{
    nlohmann::json m = nlohmann::json::object();
    for (const Spec& s : specs)
        m[s.name] = { { "dtype", std::string(dtypeName(s.dtype)) }, { "shape", s.shape } };
    return m;
}

} // namespace

class TstSafetensorsInterop : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase();
    void readsPythonFiles();
    void rewriteIsByteIdentical();
    void pythonReadsOurFile();
    void pythonReadsOurShardedCheckpoint();

private:
    QTemporaryDir m_tmp;
    fs::path m_reference; // python-written files, shared by the first two tests
};

void TstSafetensorsInterop::initTestCase()
{
    if (test::pythonExecutable().isEmpty())
        QSKIP("MOEATLAS_PYTHON is not set (run through ctest)");
    QVERIFY(m_tmp.isValid());
    m_reference = fs::path(m_tmp.path().toStdString()) / "reference";
    const auto r
        = test::runPython(kScript, { QStringLiteral("write-reference"), QString::fromStdString(m_reference.string()) });
    QVERIFY2(r.exitCode == 0, qPrintable(describe(r)));
}

void TstSafetensorsInterop::readsPythonFiles()
{
    const auto manifest = nlohmann::json::parse(readText(m_reference / "manifest.json"));
    QCOMPARE(manifest.size(), std::size_t(2));
    for (const auto& [file, tensors] : manifest.items()) {
        SafetensorsFile f(m_reference / file);
        QCOMPARE(f.names().size(), tensors.size());
        for (const auto& [name, spec] : tensors.items()) {
            const std::string where = file + ": " + name;
            QVERIFY2(f.contains(name), where.c_str());
            const TensorInfo& info = f.info(name);
            QCOMPARE(std::string(dtypeName(info.dtype)), spec.at("dtype").get<std::string>());
            QCOMPARE(info.shape, spec.at("shape").get<std::vector<int64_t>>());
            const std::string want = readText(m_reference / (file + "." + name + ".bin"));
            const auto got = f.bytes(name);
            QCOMPARE(got.size(), want.size());
            QVERIFY2(std::memcmp(got.data(), want.data(), want.size()) == 0, where.c_str());
        }
    }
    QCOMPARE(SafetensorsFile(m_reference / "torch.safetensors").metadata().at("format"), std::string("pt"));
    QCOMPARE(SafetensorsFile(m_reference / "numpy.safetensors").metadata().at("source"), std::string("numpy"));
}

void TstSafetensorsInterop::rewriteIsByteIdentical()
{
    // Our writer, given the tensors in the reference file's data order and the same metadata,
    // must produce the very same bytes: header JSON, key order, padding and data layout.
    for (const char* file : { "torch.safetensors", "numpy.safetensors" }) {
        SafetensorsFile in(m_reference / file);
        std::vector<const TensorInfo*> order;
        for (const std::string& name : in.names())
            order.push_back(&in.info(name));
        std::stable_sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
            return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
        });
        const fs::path out = fs::path(m_tmp.path().toStdString()) / (std::string("rewritten.") + file);
        SafetensorsWriter w(out);
        w.setMetadata(in.metadata());
        for (const TensorInfo* t : order)
            w.declare(t->name, t->dtype, t->shape);
        for (const TensorInfo* t : order)
            w.write(t->name, in.bytes(t->name));
        w.finish();
        QVERIFY2(readText(out) == readText(m_reference / file), file);
    }
}

void TstSafetensorsInterop::pythonReadsOurFile()
{
    const fs::path dir = m_tmp.path().toStdString();
    const fs::path file = dir / "ours.safetensors";
    const auto specs = allDTypeSpecs();
    {
        SafetensorsWriter w(file);
        w.setMetadata({ { "format", "pt" }, { "producer", "moeatlas" } });
        for (const Spec& s : specs)
            w.declare(s.name, s.dtype, s.shape);
        for (const Spec& s : specs)
            w.write(s.name, expectedBytes(s.dtype, s.numel()));
        w.finish();
    }
    nlohmann::json manifest = manifestOf(specs);
    manifest["__metadata__"] = { { "format", "pt" }, { "producer", "moeatlas" } };
    writeText(dir / "ours.json", manifest.dump());
    const auto r = test::runPython(kScript,
        { QStringLiteral("check-file"), QString::fromStdString(file.string()),
            QString::fromStdString((dir / "ours.json").string()) });
    QVERIFY2(r.exitCode == 0, qPrintable(describe(r)));
}

void TstSafetensorsInterop::pythonReadsOurShardedCheckpoint()
{
    const fs::path root = m_tmp.path().toStdString();
    const fs::path dir = root / "sharded";
    const auto specs = allDTypeSpecs();
    {
        CheckpointWriter w(dir, { .maxShardBytes = 200 });
        for (const Spec& s : specs)
            w.declare(s.name, s.dtype, s.shape);
        for (const Spec& s : specs)
            w.write(s.name, expectedBytes(s.dtype, s.numel()));
        w.setConfig({ { "model_type", "mixtral" }, { "architectures", { "MixtralForCausalLM" } } });
        w.finish();
    }
    QVERIFY(fs::exists(dir / "model.safetensors.index.json"));
    writeText(root / "sharded.json", manifestOf(specs).dump());
    const auto r = test::runPython(kScript,
        { QStringLiteral("check-dir"), QString::fromStdString(dir.string()),
            QString::fromStdString((root / "sharded.json").string()) });
    QVERIFY2(r.exitCode == 0, qPrintable(describe(r)));
}

QTEST_GUILESS_MAIN(TstSafetensorsInterop)
#include "tst_safetensors_interop.moc"
