// The simulate workflow (workflows/simulate_workflow.h): a request validated up front (bad hardware, config,
// lookahead, budget, bandwidth, outputs refused naming the field, nothing written), a run on an in-memory trace
// whose CSV rows carry the simulator's numbers, and sweeps over cache and bandwidth.
#include "sim_fixture.h"
#include "util/error.h"
#include "workflows/simulate_workflow.h"

#include <QTemporaryDir>
#include <QTest>

#include <fstream>
#include <sstream>

using namespace moeatlas;
using namespace moeatlas::test;

namespace {

// Qwen3-MoE, 3 MoE layers of 8 experts (top-2), bf16.
const char* kConfig = R"({
    "model_type": "qwen3_moe", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "num_experts": 8,
    "num_experts_per_tok": 2, "moe_intermediate_size": 16, "intermediate_size": 64,
    "torch_dtype": "bfloat16", "rope_theta": 10000.0
})";

std::string readText(const QString& path)
{
    std::ifstream in(path.toStdString());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> lines(const std::string& text)
{
    std::vector<std::string> out;
    std::stringstream s(text);
    for (std::string l; std::getline(s, l);)
        out.push_back(l);
    return out;
}

} // namespace

class TstSimulateWorkflow : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    RoutingTrace m_trace;
    std::vector<PredictionSet> m_oracle; // lookahead 1, budget 2

    SimulateRequest request() const
    {
        SimulateRequest r;
        r.config = m_dir.filePath(QStringLiteral("model")).toStdString();
        r.cache.slots = 4;
        return r;
    }

    void expectRefused(const SimulateRequest& r, const char* field)
    {
        try {
            prepareSimulation(r);
            QFAIL(qPrintable(QStringLiteral("accepted; expected a refusal of ") + QLatin1String(field)));
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QString::fromLatin1(field));
        }
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(QDir(m_dir.path()).mkpath(QStringLiteral("model")));
        std::ofstream(m_dir.filePath(QStringLiteral("model/config.json")).toStdString()) << kConfig;
        std::mt19937_64 rng(3);
        m_trace = randomTrace(rng, 3, 8, 2, 64, 1.0);
        for (int s = 0; s < 2; ++s) {
            PredictionSet p;
            p.predictor = Predictor::NextRouter;
            p.source = s;
            p.lookahead = 1;
            p.budget = 2;
            p.ids = m_trace.routed[s + 1];
            m_oracle.push_back(p);
        }
    }

    void refusals()
    {
        SimulateRequest r = request();
        r.hardware = "no-such-gpu";
        expectRefused(r, "hardware");
        r = request();
        r.linkBandwidth = 0.0;
        expectRefused(r, "hardware.linkBandwidth");
        r = request();
        r.config.clear();
        expectRefused(r, "config");
        r = request();
        r.policy = SimPolicy::Prefetch;
        r.lookahead = 3; // 3 MoE layers: lookahead 1..2
        expectRefused(r, "lookahead");
        r.lookahead = 1;
        r.policy = SimPolicy::Speculative;
        r.budget = 1; // < top-2
        expectRefused(r, "budget");
        r = request();
        r.cache.slots = 0;
        expectRefused(r, "cache");
        r = request();
        r.store = true; // no atlas to store the table in
        expectRefused(r, "store");
        r = request();
        r.sweepBandwidth = { 1e9, 0 };
        expectRefused(r, "sweepBandwidth");
        r = request();
        r.dtype = "int4";
        expectRefused(r, "dtype");
        r = request();
        r.csv = m_dir.filePath(QStringLiteral("missing/out.csv")).toStdString();
        expectRefused(r, "csv");
        // A config file that is not there: the file's InputError.
        r = request();
        r.config = m_dir.filePath(QStringLiteral("nowhere/config.json")).toStdString();
        QVERIFY_THROWS_EXCEPTION(InputError, prepareSimulation(r));
    }

    void predictionsMustMatch()
    {
        SimulateRequest r = request();
        r.policy = SimPolicy::Prefetch;
        r.predictor = Predictor::QuasiHidden;
        r.csv = m_dir.filePath(QStringLiteral("never.csv")).toStdString();
        const PreparedSimulation job = prepareSimulation(r);
        QCOMPARE(job.predictionSources(), (std::vector<int> { 0, 1 }));
        try {
            runSimulation(job, m_trace, m_oracle); // next-router predictions for a quasi-hidden job
            QFAIL("mismatched predictions accepted");
        } catch (const RequestError& e) {
            QCOMPARE(QString::fromStdString(e.field()), QStringLiteral("predictions"));
        }
        QVERIFY(!QFile::exists(m_dir.filePath(QStringLiteral("never.csv"))));
    }

    void singleRunCsv()
    {
        SimulateRequest r = request();
        r.policy = SimPolicy::Prefetch;
        r.csv = m_dir.filePath(QStringLiteral("run.csv")).toStdString();
        r.layersCsv = m_dir.filePath(QStringLiteral("layers.csv")).toStdString();
        const PreparedSimulation job = prepareSimulation(r);
        QCOMPARE(job.budget, 2); // 0: the model's top-k
        const SimulationReport rep = runSimulation(job, m_trace, m_oracle);
        QVERIFY(rep.detail.has_value());
        // The same simulation run directly gives the same numbers.
        const SimResult direct = simulate(m_trace, m_oracle, job.compute, job.config);
        QCOMPARE(rep.detail->tpotMean, direct.tpotMean);
        QCOMPARE(rep.detail->total.misses, direct.total.misses);
        const auto summary = lines(readText(m_dir.filePath(QStringLiteral("run.csv"))));
        QCOMPARE(summary.size(), std::size_t(2));
        QVERIFY(summary[0].starts_with("cache_kind,cache_slots,cache_bytes,link_bytes_per_s,policy"));
        char tpot[32];
        std::snprintf(tpot, sizeof tpot, "%.9g", direct.tpotMean);
        QVERIFY2(summary[1].find(std::string(",") + tpot + ",") != std::string::npos, summary[1].c_str());
        QVERIFY2(
            summary[1].starts_with("per-layer,4,,3.15e+10,prefetch,lru,next-router,1,2,1,64,64,"), summary[1].c_str());
        const auto layers = lines(readText(m_dir.filePath(QStringLiteral("layers.csv"))));
        QCOMPARE(layers.size(), std::size_t(4)); // header + 3 MoE layers
        QVERIFY(layers[3].starts_with("2,2,"));
    }

    void sweep()
    {
        SimulateRequest r = request();
        r.sweepCache = { CacheSpec { CacheSpec::Kind::PerLayerSlots, 2, 0 },
            CacheSpec { CacheSpec::Kind::PerLayerSlots, 8, 0 } };
        r.sweepBandwidth = { 1e9, 32e9 };
        r.csv = m_dir.filePath(QStringLiteral("sweep.csv")).toStdString();
        const PreparedSimulation job = prepareSimulation(r);
        const SimulationReport rep = runSimulation(job, m_trace, {});
        QCOMPARE(rep.points.size(), std::size_t(4));
        QVERIFY(!rep.detail.has_value());
        // Cache-major order; more slots never miss more under Belady... LRU is not monotone in general, so
        // check the facts that always hold: the same cache moves the same bytes at any bandwidth, and a
        // faster link is never slower.
        QCOMPARE(rep.points[0].cache.slots, 2);
        QCOMPARE(rep.points[1].linkBandwidth, 32e9);
        QCOMPARE(rep.points[0].result.total.bytes, rep.points[1].result.total.bytes);
        QVERIFY(rep.points[1].result.tpotMean <= rep.points[0].result.tpotMean);
        QVERIFY(rep.points[3].result.tpotMean <= rep.points[2].result.tpotMean);
        // 8 slots hold every expert: only cold misses, 8 per layer.
        QCOMPARE(rep.points[2].result.total.misses, 24);
        QCOMPARE(lines(readText(m_dir.filePath(QStringLiteral("sweep.csv")))).size(), std::size_t(5));
    }
};

QTEST_GUILESS_MAIN(TstSimulateWorkflow)
#include "tst_simulate_workflow.moc"
