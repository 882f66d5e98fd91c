// The committed demo model (resources/demo): transformers loads it with no missing/unexpected keys
// and gives our engine's (and our trainer's) logits; its experts specialise by domain
// (demo.atlas.h5 statistics); and at 50% sparsity a PEU specialist keeps its domain's held-out
// loss far better than random plans (moeatlas eval run here, so the test can fail).
#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/safetensors.h"
#include "runtime/executor.h"
#include "test_io.h"
#include "test_support.h"
#include "train/moe_trainer.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

using namespace moeatlas;

using moeatlas::test::kReorderRtol;
using moeatlas::test::maxAbs;
using moeatlas::test::relDiff;

namespace {

const std::vector<std::string> kDomains = { "arith", "code", "json", "prose" };

std::string demoPath(const std::string& rel)
{
    return test::sourcePath(QStringLiteral("resources/demo/") + QString::fromStdString(rel)).toStdString();
}

} // namespace

class TstDemoModel : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(std::filesystem::exists(demoPath("model/model.safetensors")), "resources/demo/model is missing");
    }

    void transformersLoadsAndMatchesEngine()
    {
        if (test::pythonExecutable().isEmpty())
            QFAIL("MOEATLAS_PYTHON is unset: the reference tests need the venv");
        const QString out = m_dir.filePath(QStringLiteral("hf.safetensors"));
        const auto r = test::runPython(QStringLiteral("tests/train/check_demo_model.py"),
            { QString::fromStdString(demoPath("model")), QString::fromStdString(demoPath("heldout")), out });
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr + r.stdOut));
        qInfo("transformers: %s", qPrintable(r.stdOut.trimmed()));
        const SafetensorsFile ref(out.toStdString());
        const auto idBytes = ref.bytes("input_ids");
        std::vector<int64_t> ids64(idBytes.size() / 8);
        std::memcpy(ids64.data(), idBytes.data(), idBytes.size());
        const auto lb = ref.bytes("logits");
        std::vector<float> hfLogits(lb.size() / 4);
        std::memcpy(hfLogits.data(), lb.data(), lb.size());
        const int64_t B = ref.info("input_ids").shape[0], S = ref.info("input_ids").shape[1];
        std::vector<int32_t> tokens(ids64.begin(), ids64.end());
        std::vector<int64_t> offsets;
        for (int64_t b = 0; b <= B; ++b)
            offsets.push_back(b * S);

        const Checkpoint ckpt(demoPath("model"));
        const ModelSpec spec = parseModelSpec(ckpt.config(), demoPath("model/config.json"));
        ExecutorOptions eo;
        eo.computeLogits = true;
        Executor ex(ckpt, spec, eo);
        ExecutionObserver none;
        const ExecutionResult engine = ex.run(tokens, offsets, none);
        // Three fp32 implementations of one model (transformers, our engine, our trainer), whose sums run
        // in other orders and on kernels each picks for this CPU: within kReorderRtol of transformers'
        // largest |logit| (~18 on this text; test_io.h).
        const double scale = maxAbs(hfLogits);
        const double engineDiff = relDiff(engine.logits, hfLogits, scale);
        const double trainerDiff = relDiff(demoModelLogits(demoPath("model"), tokens, S), hfLogits, scale);
        qInfo("demo model logits vs transformers (%lld x %lld tokens), relative to max |logit| %.3g: engine %.3g, "
              "trainer %.3g",
            static_cast<long long>(B), static_cast<long long>(S), scale, engineDiff, trainerDiff);
        QVERIFY(engineDiff <= kReorderRtol);
        QVERIFY(trainerDiff <= kReorderRtol);
    }

    void expertsSpecialise()
    {
        const AtlasFile atlas = AtlasFile::openReadOnly(demoPath("demo.atlas.h5"));
        const auto stats = atlas.readResults("statistics");
        QVERIFY(stats.has_value());
        const AtlasArray* special = stats->find("specialisation");
        const AtlasArray* share = stats->find("load_share");
        QVERIFY(special && share);
        const std::size_t D = special->dims[0], L = special->dims[1], E = special->dims[2];
        QCOMPARE(D, kDomains.size());
        // Per (layer, expert): its most favoured domain's specialisation (1 = no preference, D = only
        // that domain). A random router gives ~1 everywhere.
        double sumMax = 0;
        int strong = 0;
        std::map<std::size_t, int> owners;
        for (std::size_t l = 0; l < L; ++l)
            for (std::size_t e = 0; e < E; ++e) {
                double best = 0;
                std::size_t bestD = 0;
                for (std::size_t d = 0; d < D; ++d)
                    if (special->values[(d * L + l) * E + e] > best) {
                        best = special->values[(d * L + l) * E + e];
                        bestD = d;
                    }
                sumMax += best;
                if (best >= 2.0) { // more than half of its load from one domain
                    ++strong;
                    ++owners[bestD];
                }
            }
        const double meanMax = sumMax / static_cast<double>(L * E);
        qInfo("specialisation: mean over (layer, expert) of max-domain specialisation %.2f (1 = none, %zu = "
              "exclusive); %d of %zu experts take > 50%% of their load from one domain",
            meanMax, D, strong, L * E);
        for (const auto& [d, n] : owners)
            qInfo("  %s: %d specialist experts", kDomains[d].c_str(), n);
        QVERIFY(meanMax >= 1.8);
        QVERIFY(strong >= static_cast<int>(L * E / 4));
        QCOMPARE(owners.size(), D); // every domain has specialists
    }

    void peuSpecialistBeatsRandom()
    {
        // Work on a copy: eval stores its table in the atlas.
        const QString atlas = m_dir.filePath(QStringLiteral("demo.atlas.h5"));
        std::filesystem::copy_file(demoPath("demo.atlas.h5"), atlas.toStdString());
        const QString csv = m_dir.filePath(QStringLiteral("sweep.csv"));
        QStringList args = { QStringLiteral("eval"), QStringLiteral("--atlas"), atlas, QStringLiteral("--sparsity"),
            QStringLiteral("0.5"), QStringLiteral("--criteria"), QStringLiteral("peu"),
            QStringLiteral("--random-plans"), QStringLiteral("4"), QStringLiteral("--seq-len"), QStringLiteral("128"),
            QStringLiteral("--add-bos"), QStringLiteral("--no-save"), QStringLiteral("--csv"), csv };
        for (const std::string& d : kDomains)
            args << QStringLiteral("-d") << QString::fromStdString(d + "=" + demoPath("heldout/" + d + ".txt"));
        const auto r = test::runCli(args);
        QCOMPARE(r.exitCode, 0);
        std::map<std::pair<std::string, std::string>, double> nll;
        std::ifstream in(csv.toStdString());
        std::string line;
        std::getline(in, line);
        while (std::getline(in, line)) {
            std::vector<std::string> f;
            std::stringstream s(line);
            for (std::string cell; std::getline(s, cell, ',');)
                f.push_back(cell);
            if (f.size() >= 9)
                nll[{ f[0], f[6] }] = std::stod(f[8]);
        }
        for (const std::string& d : kDomains) {
            const double full = nll.at({ "full", d });
            const double peu = nll.at({ "specialist:" + d + "/peu@0.50", d });
            double randomSum = 0;
            for (int i = 0; i < 4; ++i)
                randomSum += nll.at({ "random#" + std::to_string(i) + "@0.50", d });
            const double randomMean = randomSum / 4;
            qInfo("%s at 50%%: full %.3f, PEU specialist %.3f (%+.3f), random mean %.3f (%+.3f)", d.c_str(), full, peu,
                peu - full, randomMean, randomMean - full);
            QVERIFY(peu - full < 0.5 * (randomMean - full));
            QVERIFY(randomMean - peu >= 0.1);
        }
    }
};

QTEST_GUILESS_MAIN(TstDemoModel)
#include "tst_demo_model.moc"
