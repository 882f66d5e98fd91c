// The byte-level BPE trainer (core/train/bpe_trainer): the tokenizer.json it writes loads in our
// Tokenizer, reaches the asked vocabulary, compresses the corpus, decodes back to the exact text,
// is deterministic, and (reference) encodes exactly as HF `tokenizers` does (bpe_parity.py).
#include "test_support.h"
#include "text/tokenizer.h"
#include "train/bpe_trainer.h"
#include "train/demo_corpus.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <fstream>

using namespace moeatlas;

class TstBpeTrainer : public QObject {
    Q_OBJECT

    std::vector<std::vector<std::vector<std::string>>> m_docs;
    BpeVocabulary m_vocab;

    std::vector<std::string> split(std::size_t s) const
    {
        std::vector<std::string> out;
        for (const auto& domain : m_docs[s])
            out.insert(out.end(), domain.begin(), domain.end());
        return out;
    }

private Q_SLOTS:
    void initTestCase()
    {
        DemoCorpusOptions o;
        o.trainDocs = 300;
        o.calibrationDocs = 10;
        o.heldoutDocs = 40;
        m_docs = generateDemoCorpus(o);
        m_vocab = trainBpe(split(0));
    }

    void reachesVocabularyAndLoads()
    {
        QCOMPARE(m_vocab.tokens.size(), std::size_t(512));
        QCOMPARE(m_vocab.merges.size(), std::size_t(512 - 258));
        const Tokenizer tok = Tokenizer::fromJson(bpeTokenizerJson(m_vocab));
        QCOMPARE(tok.vocabSize(), int64_t(512));
        QCOMPARE(*tok.tokenToId("<|bos|>"), 256);
        QCOMPARE(*tok.tokenToId("<|eos|>"), 257);
        QVERIFY(tok.isSpecialToken(256));
    }

    void roundTripAndCompression()
    {
        const Tokenizer tok = Tokenizer::fromJson(bpeTokenizerJson(m_vocab));
        std::size_t bytes = 0, tokens = 0;
        for (const std::string& doc : split(2)) {
            const auto ids = tok.encode(doc, false);
            QCOMPARE(tok.decode(ids), doc);
            bytes += doc.size();
            tokens += ids.size();
        }
        // 254 merges on a narrow synthetic corpus: well over 2 bytes per token.
        QVERIFY2(static_cast<double>(bytes) / static_cast<double>(tokens) > 2.0,
            qPrintable(QString::number(static_cast<double>(bytes) / static_cast<double>(tokens))));
        // Special tokens in text are matched as added tokens.
        const auto ids = tok.encode("<|bos|>1+1=2", false);
        QCOMPARE(ids.front(), 256);
    }

    void deterministic()
    {
        const BpeVocabulary again = trainBpe(split(0));
        QVERIFY(again.tokens == m_vocab.tokens);
        QVERIFY(again.merges == m_vocab.merges);
        BpeTrainerOptions small;
        small.vocabSize = 300;
        const BpeVocabulary fewer = trainBpe(split(0), small);
        QCOMPARE(fewer.tokens.size(), std::size_t(300));
        // The first merges are the same whatever the target size.
        QVERIFY(std::equal(fewer.merges.begin(), fewer.merges.end(), m_vocab.merges.begin()));
    }

    void rejectsTooSmallVocabulary()
    {
        BpeTrainerOptions o;
        o.vocabSize = 100;
        QVERIFY_THROWS_EXCEPTION(InputError, trainBpe(split(0), o));
    }

    // Reference: HF tokenizers loads the written files and gives our ids on every held-out document.
    void parityWithHfTokenizers()
    {
        // Run by the reference entry tst_bpe_parity (ctest), which sets MOEATLAS_BPE_PARITY; there
        // a missing venv is a failure, not a skip.
        if (qEnvironmentVariable("MOEATLAS_BPE_PARITY") != QLatin1String("1"))
            QSKIP("HF tokenizers parity runs as the reference test tst_bpe_parity");
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
        QTemporaryDir dir;
        writeBpeTokenizer(m_vocab, dir.path().toStdString());
        const Tokenizer tok = Tokenizer::fromFile(dir.filePath(QStringLiteral("tokenizer.json")).toStdString());
        nlohmann::json cases = nlohmann::json::array();
        std::size_t n = 0;
        for (std::size_t s = 0; s < m_docs.size(); ++s)
            for (const std::string& doc : split(s)) {
                if (s == 0 && (n++ % 10) != 0)
                    continue; // every 10th training document, every calibration/held-out one
                cases.push_back({ { "text", doc }, { "ids", tok.encode(doc, false) } });
            }
        cases.push_back({ { "text", "<|bos|>12+30=42\n  print x;\t\"é ü ∑\"" },
            { "ids", tok.encode("<|bos|>12+30=42\n  print x;\t\"é ü ∑\"", false) } });
        const QString casesPath = dir.filePath(QStringLiteral("cases.json"));
        std::ofstream(casesPath.toStdString()) << cases.dump();
        const auto r = test::runPython(QStringLiteral("tests/train/bpe_parity.py"), { dir.path(), casesPath });
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr + r.stdOut));
        qInfo().noquote() << r.stdOut.trimmed();
    }
};

QTEST_GUILESS_MAIN(TstBpeTrainer)
#include "tst_bpe_trainer.moc"
