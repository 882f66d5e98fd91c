// The Gated DeltaNet's delta rule (model/gated_delta.h) against transformers' own torch implementations
// (torch_chunk_gated_delta_rule and torch_recurrent_gated_delta_rule, tests/reference/delta_rule_reference.py)
// on sequences shorter than one 64-token chunk, a multiple of it and longer but not a multiple; and the
// chunked form against our token-by-token recurrence at other chunk sizes.
#include "checkpoint/safetensors.h"
#include "model/gated_delta.h"
#include "test_io.h"
#include "test_support.h"
#include "test_tensors.h"

#include <ATen/ATen.h>
#include <QTemporaryDir>
#include <QTest>

using namespace moeatlas;
using moeatlas::test::kReorderRtol;
using moeatlas::test::maxAbs;
using moeatlas::test::relDiff;

namespace {

at::Tensor tensorOf(const SafetensorsFile& f, const std::string& name)
{
    std::vector<float> v = test::tensorValues<float>(f, name);
    return at::tensor(at::ArrayRef<float>(v)).view(f.info(name).shape);
}

std::vector<float> floats(const at::Tensor& t)
{
    const at::Tensor c = t.to(at::kFloat).contiguous();
    return { c.data_ptr<float>(), c.data_ptr<float>() + c.numel() };
}

// Max |a - b| relative to the largest |b| (test_io.h, relDiff).
double err(const at::Tensor& a, const at::Tensor& b)
{
    const std::vector<float> want = floats(b);
    return relDiff(floats(a), want, maxAbs(want));
}

} // namespace

class TestGatedDelta : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void matchesTransformers_data()
    {
        QTest::addColumn<QString>("name");
        for (const char* c : { "s150", "s40", "s128" })
            QTest::newRow(c) << QString::fromLatin1(c);
    }
    void matchesTransformers()
    {
        QFETCH(QString, name);
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset");
        static QTemporaryDir dir;
        const QString path = dir.filePath(QStringLiteral("delta.safetensors"));
        if (!QFile::exists(path)) {
            const auto made = test::runPython(
                QStringLiteral("tests/reference/delta_rule_reference.py"), { QStringLiteral("--out"), path });
            QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr));
        }
        const SafetensorsFile f(path.toStdString());
        const std::string c = name.toStdString() + ".";
        const at::Tensor q = tensorOf(f, c + "q"), k = tensorOf(f, c + "k"), v = tensorOf(f, c + "v");
        const at::Tensor g = tensorOf(f, c + "g"), beta = tensorOf(f, c + "beta");
        const at::Tensor refChunk = tensorOf(f, c + "chunk"), refRecurrent = tensorOf(f, c + "recurrent");
        const at::Tensor chunk = chunkGatedDeltaRule(q, k, v, g, beta);
        const at::Tensor recurrent = recurrentGatedDeltaRule(q, k, v, g, beta);
        QCOMPARE(chunk.sizes().vec(), refChunk.sizes().vec());
        const double eChunk = err(chunk, refChunk), eRec = err(recurrent, refRecurrent);
        const double eCross = err(chunk, refRecurrent);
        qInfo("  %s: chunked vs transformers' chunked %.3g, recurrent vs recurrent %.3g, chunked vs recurrent %.3g",
            qPrintable(name), eChunk, eRec, eCross);
        QVERIFY(eChunk <= kReorderRtol);
        QVERIFY(eRec <= kReorderRtol);
        QVERIFY(eCross <= kReorderRtol);
        // The chunk size changes only the order of the sums: chunks of 16 and one chunk of 256 agree too.
        for (const int64_t size : { 16, 256 })
            QVERIFY(err(chunkGatedDeltaRule(q, k, v, g, beta, size), recurrent) <= kReorderRtol);
        // bf16 inputs: computed in fp32, returned in bf16.
        const at::Tensor half
            = chunkGatedDeltaRule(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), g, beta);
        QCOMPARE(half.scalar_type(), at::kBFloat16);
        QVERIFY(err(half, refChunk) <= 0.05);
    }
    void rejectsMismatchedHeads()
    {
        const at::Tensor q = at::randn({ 1, 4, 3, 8 }), v = at::randn({ 1, 4, 4, 8 }), g = at::zeros({ 1, 4, 4 });
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, chunkGatedDeltaRule(q, q, v, g, g));
    }
};

QTEST_GUILESS_MAIN(TestGatedDelta)
#include "tst_gated_delta.moc"
