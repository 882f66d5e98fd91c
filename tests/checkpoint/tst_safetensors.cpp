// SafetensorsFile / SafetensorsWriter: round trips for every dtype, and every header defect the
// reader must reject with an InputError that names the file and the offending tensor or field.
#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_writer.h"
#include "util/error.h"

#include "test_io.h"

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cstring>
#include <functional>
#include <unistd.h>

using namespace moeatlas;
using namespace moeatlas::test;
namespace fs = std::filesystem;

namespace {

bool throwsError(const std::function<void()>& f)
{
    try {
        f();
    } catch (const Error&) {
        return true;
    }
    return false;
}

QByteArray lengthPrefix(uint64_t n)
{
    QByteArray out(8, '\0');
    for (int i = 0; i < 8; ++i)
        out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out;
}

// A file with the given header text followed by `dataBytes` zero bytes.
QByteArray rawFile(const QByteArray& header, int dataBytes)
{
    return lengthPrefix(static_cast<uint64_t>(header.size())) + header + QByteArray(dataBytes, '\0');
}

void writeBytes(const QString& path, const QByteArray& bytes)
{
    QFile f(path);
    QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
    QCOMPARE(f.write(bytes), bytes.size());
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed)
{
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::byte>((i * 131 + seed * 17 + (i >> 8)) & 0xff);
    return v;
}

bool sameBytes(std::span<const std::byte> a, const std::vector<std::byte>& b)
{
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

} // namespace

Q_DECLARE_METATYPE(std::vector<int64_t>)

class TstSafetensors : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void roundTrip_data();
    void roundTrip();
    void allDTypesInOneFile();
    void dtypeTable();
    void rejectsInvalid_data();
    void rejectsInvalid();
    void missingFile();
    void unknownTensorNamesFileAndTensor();
    void releaseKeepsDataReadable();
    void writerRejectsMisuse();
    void writerWithoutFinishLeavesNothing();
    void writesInChunks();
};

void TstSafetensors::roundTrip_data()
{
    QTest::addColumn<int>("dtype");
    QTest::addColumn<std::vector<int64_t>>("shape");
    const DType all[] = { DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2, DType::I64,
        DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL };
    for (DType t : all) {
        const QByteArray name(dtypeName(t).data(), static_cast<qsizetype>(dtypeName(t).size()));
        QTest::newRow(QByteArray(name + " [3,5]").constData()) << static_cast<int>(t) << std::vector<int64_t> { 3, 5 };
        QTest::newRow(QByteArray(name + " scalar").constData()) << static_cast<int>(t) << std::vector<int64_t> {};
        QTest::newRow(QByteArray(name + " empty").constData()) << static_cast<int>(t) << std::vector<int64_t> { 4, 0 };
    }
}

void TstSafetensors::roundTrip()
{
    QFETCH(int, dtype);
    QFETCH(std::vector<int64_t>, shape);
    const auto t = static_cast<DType>(dtype);
    QTemporaryDir tmp;
    const fs::path path = tmp.filePath(QStringLiteral("rt.safetensors")).toStdString();

    int64_t numel = 1;
    for (int64_t d : shape)
        numel *= d;
    const auto main = pattern(static_cast<std::size_t>(numel) * dtypeSize(t), 1);
    const auto tail = pattern(7, 2); // an odd-sized U8 tensor after it
    uint64_t expectedSize = 0;
    {
        SafetensorsWriter w(path);
        w.setMetadata({ { "format", "pt" }, { "note", "round trip" } });
        w.declare("model.layers.0.weight", t, shape);
        w.declare("tail", DType::U8, { 7 });
        expectedSize = w.fileSize();
        w.write("model.layers.0.weight", main);
        w.write("tail", tail);
        w.finish();
    }
    QCOMPARE(fs::file_size(path), expectedSize);
    QVERIFY(!fs::exists(fs::path(path.string() + ".partial")));

    SafetensorsFile f(path);
    QCOMPARE(f.names(), (std::vector<std::string> { "model.layers.0.weight", "tail" }));
    const TensorInfo& info = f.info("model.layers.0.weight");
    QCOMPARE(static_cast<int>(info.dtype), dtype);
    QCOMPARE(info.shape, shape);
    QCOMPARE(info.numel(), numel);
    QCOMPARE(info.byteSize(), main.size());
    QVERIFY(sameBytes(f.bytes("model.layers.0.weight"), main));
    QVERIFY(sameBytes(f.bytes("tail"), tail));
    QCOMPARE(f.metadata().at("note"), std::string("round trip"));
    QCOMPARE(f.metadata().at("format"), std::string("pt"));

    // Header padded with spaces so the data region starts 8-byte aligned, as the reference writer does.
    QFile raw(QString::fromStdString(path.string()));
    QVERIFY(raw.open(QIODevice::ReadOnly));
    const QByteArray all = raw.readAll();
    uint64_t n = 0;
    std::memcpy(&n, all.constData(), 8);
    QCOMPARE(n % 8, uint64_t(0));
    QVERIFY(all.mid(8, 1) == "{");
}

void TstSafetensors::allDTypesInOneFile()
{
    QTemporaryDir tmp;
    const fs::path path = tmp.filePath(QStringLiteral("all.safetensors")).toStdString();
    const DType all[] = { DType::BOOL, DType::F64, DType::U8, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3,
        DType::F8_E5M2, DType::I64, DType::I32, DType::I16, DType::I8 };
    std::vector<std::vector<std::byte>> data;
    {
        SafetensorsWriter w(path);
        unsigned i = 0;
        for (DType t : all)
            w.declare("t" + std::to_string(i++), t, { 3, 3 });
        i = 0;
        for (DType t : all) {
            data.push_back(pattern(9 * dtypeSize(t), i));
            w.write("t" + std::to_string(i), data.back());
            ++i;
        }
        w.finish();
    }
    SafetensorsFile f(path);
    QCOMPARE(f.names().size(), std::size(all));
    for (std::size_t i = 0; i < std::size(all); ++i) {
        const std::string name = "t" + std::to_string(i);
        QCOMPARE(f.info(name).dtype, all[i]);
        QVERIFY(sameBytes(f.bytes(name), data[i]));
    }
    QVERIFY(f.metadata().empty());
}

void TstSafetensors::dtypeTable()
{
    QCOMPARE(dtypeSize(DType::BF16), std::size_t(2));
    QCOMPARE(dtypeSize(DType::F8_E5M2), std::size_t(1));
    QCOMPARE(dtypeSize(DType::I64), std::size_t(8));
    QCOMPARE(parseDType("F8_E4M3"), std::optional<DType>(DType::F8_E4M3));
    QCOMPARE(parseDType("bf16"), std::optional<DType>());
    QVERIFY(isFloatingPoint(DType::BF16));
    QVERIFY(!isFloatingPoint(DType::BOOL));
    QCOMPARE(dtypeName(DType::BOOL), std::string_view("BOOL"));
}

void TstSafetensors::rejectsInvalid_data()
{
    QTest::addColumn<QByteArray>("contents");
    QTest::addColumn<QStringList>("expected"); // fragments the message must contain besides the file name

    const QByteArray w = "model.layers.0.mlp.gate.weight";
    const auto one = [&](const QByteArray& body) -> QByteArray { return "{\"" + w + "\":" + body + "}"; };

    QTest::newRow("truncated file") << QByteArray("\x10\0\0", 3) << QStringList { QStringLiteral("3 bytes") };
    QTest::newRow("empty file") << QByteArray() << QStringList { QStringLiteral("0 bytes") };
    QTest::newRow("header length beyond file")
        << QByteArray(lengthPrefix(1000) + "{}") << QStringList { QStringLiteral("header length 1000") };
    QTest::newRow("header length over 100 MB")
        << QByteArray(lengthPrefix(200'000'000) + "{}") << QStringList { QStringLiteral("200000000") };
    QTest::newRow("malformed JSON") << rawFile("{\"" + w + "\": {\"dtype\": ", 0)
                                    << QStringList { QStringLiteral("not valid JSON") };
    QTest::newRow("header not an object")
        << rawFile("[1, 2, 3]", 0) << QStringList { QStringLiteral("expected an object") };
    QTest::newRow("tensor entry not an object") << rawFile(one("42"), 0) << QStringList { QString::fromUtf8(w) };
    QTest::newRow("unknown dtype") << rawFile(one(R"({"dtype":"Q7","shape":[2],"data_offsets":[0,2]})"), 2)
                                   << QStringList { QString::fromUtf8(w), QStringLiteral("unknown dtype 'Q7'") };
    QTest::newRow("missing dtype") << rawFile(one(R"({"shape":[2],"data_offsets":[0,2]})"), 2)
                                   << QStringList { QString::fromUtf8(w), QStringLiteral("dtype") };
    QTest::newRow("negative dim") << rawFile(one(R"({"dtype":"U8","shape":[2,-1],"data_offsets":[0,2]})"), 2)
                                  << QStringList { QString::fromUtf8(w), QStringLiteral("-1") };
    QTest::newRow("fractional dim") << rawFile(one(R"({"dtype":"U8","shape":[2.5],"data_offsets":[0,2]})"), 2)
                                    << QStringList { QString::fromUtf8(w), QStringLiteral("shape dimension 0") };
    QTest::newRow("missing shape") << rawFile(one(R"({"dtype":"U8","data_offsets":[0,2]})"), 2)
                                   << QStringList { QString::fromUtf8(w), QStringLiteral("shape") };
    QTest::newRow("data_offsets begin > end") << rawFile(one(R"({"dtype":"U8","shape":[2],"data_offsets":[4,2]})"), 8)
                                              << QStringList { QString::fromUtf8(w), QStringLiteral("begin <= end") };
    QTest::newRow("data_offsets wrong arity") << rawFile(one(R"({"dtype":"U8","shape":[2],"data_offsets":[0,2,4]})"), 8)
                                              << QStringList { QString::fromUtf8(w), QStringLiteral("data_offsets") };
    QTest::newRow("data_offsets negative") << rawFile(one(R"({"dtype":"U8","shape":[2],"data_offsets":[-2,0]})"), 8)
                                           << QStringList { QString::fromUtf8(w), QStringLiteral("data_offsets") };
    QTest::newRow("data_offsets missing") << rawFile(one(R"({"dtype":"U8","shape":[2]})"), 8)
                                          << QStringList { QString::fromUtf8(w), QStringLiteral("data_offsets") };
    QTest::newRow("offsets outside data region")
        << rawFile(one(R"({"dtype":"F32","shape":[8,16],"data_offsets":[0,512]})"), 100)
        << QStringList { QString::fromUtf8(w), QStringLiteral("outside the data region of 100 bytes") };
    QTest::newRow("overlapping tensors") << rawFile(R"({"a.weight":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                                    R"("b.weight":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
        8) << QStringList { QStringLiteral("b.weight"), QStringLiteral("a.weight"), QStringLiteral("overlap") };
    QTest::newRow("dtype/shape mismatch")
        << rawFile(one(R"({"dtype":"F32","shape":[8,16],"data_offsets":[0,100]})"), 100)
        << QStringList { QString::fromUtf8(w),
               QStringLiteral("data_offsets [0, 100] hold 100 bytes but shape [8, 16] x F32 needs 512") };
    QTest::newRow("shape product overflow")
        << rawFile(one(R"({"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]})"), 0)
        << QStringList { QString::fromUtf8(w), QStringLiteral("overflow") };
    QTest::newRow("dim beyond int64") << rawFile(
        one(R"({"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]})"), 0)
                                      << QStringList { QString::fromUtf8(w), QStringLiteral("too large") };
    QTest::newRow("metadata value not a string") << rawFile(R"({"__metadata__":{"format":1}})",
        0) << QStringList { QStringLiteral("__metadata__"), QStringLiteral("format") };
    QTest::newRow("metadata not an object")
        << rawFile(R"({"__metadata__":[1]})", 0) << QStringList { QStringLiteral("__metadata__") };
}

void TstSafetensors::rejectsInvalid()
{
    QFETCH(QByteArray, contents);
    QFETCH(QStringList, expected);
    QTemporaryDir tmp;
    const QString path = tmp.filePath(QStringLiteral("bad.safetensors"));
    writeBytes(path, contents);

    const QString message = inputErrorOf([&] { SafetensorsFile f(path.toStdString()); });
    QVERIFY2(!message.isNull(), "no InputError thrown");
    QVERIFY2(message.contains(QStringLiteral("bad.safetensors")), qPrintable(message));
    for (const QString& fragment : expected)
        QVERIFY2(message.contains(fragment),
            qPrintable(QStringLiteral("missing '") + fragment + QStringLiteral("' in: ") + message));
}

void TstSafetensors::missingFile()
{
    QTemporaryDir tmp;
    const QString path = tmp.filePath(QStringLiteral("absent.safetensors"));
    const QString message = inputErrorOf([&] { SafetensorsFile f(path.toStdString()); });
    QVERIFY2(message.contains(QStringLiteral("absent.safetensors")), qPrintable(message));
}

void TstSafetensors::unknownTensorNamesFileAndTensor()
{
    QTemporaryDir tmp;
    const fs::path path = tmp.filePath(QStringLiteral("one.safetensors")).toStdString();
    {
        SafetensorsWriter w(path);
        w.declare("x", DType::U8, { 1 });
        w.write("x", pattern(1, 0));
        w.finish();
    }
    SafetensorsFile f(path);
    QVERIFY(f.contains("x"));
    QVERIFY(!f.contains("y"));
    const QString message = inputErrorOf([&] { (void)f.bytes("lm_head.weight"); });
    QVERIFY2(
        message.contains(QStringLiteral("one.safetensors")) && message.contains(QStringLiteral("'lm_head.weight'")),
        qPrintable(message));

    // Moves hand over the mapping.
    SafetensorsFile moved(std::move(f));
    QVERIFY(sameBytes(moved.bytes("x"), pattern(1, 0)));
}

void TstSafetensors::releaseKeepsDataReadable()
{
    QTemporaryDir tmp;
    const fs::path path = tmp.filePath(QStringLiteral("big.safetensors")).toStdString();
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    // Sizes that straddle page boundaries, so neighbours share pages with the released tensor.
    const auto a = pattern(3 * page + 123, 1);
    const auto b = pattern(5 * page + 7, 2);
    const auto c = pattern(page / 2, 3);
    {
        SafetensorsWriter w(path);
        w.declare("a", DType::U8, { static_cast<int64_t>(a.size()) });
        w.declare("b", DType::U8, { static_cast<int64_t>(b.size()) });
        w.declare("c", DType::U8, { static_cast<int64_t>(c.size()) });
        w.write("a", a);
        w.write("b", b);
        w.write("c", c);
        w.finish();
    }
    SafetensorsFile f(path);
    const auto spanB = f.bytes("b");
    QVERIFY(sameBytes(spanB, b));
    f.release("b");
    QVERIFY(sameBytes(spanB, b)); // the same span, re-faulted from the file
    QVERIFY(sameBytes(f.bytes("a"), a));
    QVERIFY(sameBytes(f.bytes("c"), c));
    f.release("a");
    f.release("c");
    QVERIFY(sameBytes(f.bytes("a"), a));
    QVERIFY(sameBytes(f.bytes("c"), c));
}

void TstSafetensors::writerRejectsMisuse()
{
    QTemporaryDir tmp;
    const fs::path path = tmp.filePath(QStringLiteral("w.safetensors")).toStdString();
    const auto four = pattern(4, 0);
    {
        SafetensorsWriter w(path);
        w.declare("a", DType::U8, { 4 });
        w.declare("b", DType::U8, { 4 });
        QVERIFY(throwsError([&] { w.declare("a", DType::U8, { 1 }); })); // duplicate
        QVERIFY(throwsError([&] { w.declare("n", DType::U8, { -1 }); })); // negative dim
        QVERIFY(throwsError([&] { w.write("b", four); })); // out of order
        w.write("a", four);
        QVERIFY(throwsError([&] { w.declare("c", DType::U8, { 1 }); })); // declare after write
        QVERIFY(throwsError([&] { w.write("a", pattern(1, 0)); })); // more than declared
        QVERIFY(throwsError([&] { w.finish(); })); // b not written
    }
    QVERIFY(!fs::exists(path));
    QVERIFY(!fs::exists(fs::path(path.string() + ".partial")));

    const QString message = inputErrorOf(
        [&] { SafetensorsWriter w(tmp.filePath(QStringLiteral("no/such/dir/x.safetensors")).toStdString()); });
    QVERIFY2(message.contains(QStringLiteral("no/such/dir")), qPrintable(message));
}

void TstSafetensors::writerWithoutFinishLeavesNothing()
{
    QTemporaryDir tmp;
    const fs::path path = tmp.filePath(QStringLiteral("partial.safetensors")).toStdString();
    {
        SafetensorsWriter w(path);
        w.declare("a", DType::F32, { 2 });
        w.write("a", pattern(8, 0));
        QVERIFY(fs::exists(fs::path(path.string() + ".partial")));
        QVERIFY(!fs::exists(path));
    }
    QVERIFY(!fs::exists(path));
    QVERIFY(!fs::exists(fs::path(path.string() + ".partial")));
}

void TstSafetensors::writesInChunks()
{
    QTemporaryDir tmp;
    const fs::path path = tmp.filePath(QStringLiteral("chunks.safetensors")).toStdString();
    const auto data = pattern(4000, 9);
    {
        SafetensorsWriter w(path);
        w.declare("empty", DType::F32, { 0 }); // never written: zero bytes are complete already
        w.declare("x", DType::F32, { 1000 });
        for (std::size_t off = 0; off < data.size(); off += 999)
            w.write("x", std::span(data).subspan(off, std::min<std::size_t>(999, data.size() - off)));
        w.finish();
    }
    SafetensorsFile f(path);
    QVERIFY(sameBytes(f.bytes("x"), data));
    QCOMPARE(f.info("empty").byteSize(), uint64_t(0));
}

QTEST_GUILESS_MAIN(TstSafetensors)
#include "tst_safetensors.moc"
