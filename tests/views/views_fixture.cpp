#include "views_fixture.h"

#include "test_support.h"

#include <QStringList>

#include <cmath>
#include <cstdint>

namespace moeatlas::test {

namespace {

bool run(const QStringList& args, QString* error)
{
    const ProcessResult r = runProcess(cliExecutable(), args);
    if (r.exitCode == 0)
        return true;
    if (error)
        *error
            = QStringLiteral("moeatlas %1: exit %2\n%3").arg(args.join(QLatin1Char(' '))).arg(r.exitCode).arg(r.stdErr);
    return false;
}

// splitmix64: a reproducible stream of doubles in [0, 1).
struct Random {
    uint64_t state;
    double next()
    {
        uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
    }
};

} // namespace

QString buildViewsAtlas(const QString& dir, QString* error)
{
    if (cliExecutable().isEmpty()) {
        *error = QStringLiteral("MOEATLAS_CLI is unset");
        return {};
    }
    const QString model = dir + QStringLiteral("/model");
    const QString atlas = dir + QStringLiteral("/run.atlas.h5");
    if (!run({ QStringLiteral("generate"), QStringLiteral("-o"), model, QStringLiteral("--arch"),
                 QStringLiteral("qwen3_moe"), QStringLiteral("--layers"), QStringLiteral("3"),
                 QStringLiteral("--hidden"), QStringLiteral("64"), QStringLiteral("--heads"), QStringLiteral("4"),
                 QStringLiteral("--kv-heads"), QStringLiteral("2"), QStringLiteral("--head-dim"), QStringLiteral("16"),
                 QStringLiteral("--experts"), QStringLiteral("8"), QStringLiteral("--top-k"), QStringLiteral("2"),
                 QStringLiteral("--expert-width"), QStringLiteral("32"), QStringLiteral("--vocab"),
                 QStringLiteral("256"), QStringLiteral("--seed"), QStringLiteral("5") },
            error))
        return {};
    for (const auto& [name, seed] :
        { std::pair { QStringLiteral("math"), 21 }, std::pair { QStringLiteral("code"), 22 } }) {
        if (!run({ QStringLiteral("generate"), QStringLiteral("--vocab"), QStringLiteral("256"),
                     QStringLiteral("--seed"), QString::number(seed), QStringLiteral("--calibration"),
                     dir + QLatin1Char('/') + name + QStringLiteral(".jsonl"), QStringLiteral("--calibration-docs"),
                     QStringLiteral("6"), QStringLiteral("--calibration-doc-tokens"), QStringLiteral("64") },
                error))
            return {};
    }
    if (!run({ QStringLiteral("capture"), model, QStringLiteral("-d"),
                 QStringLiteral("math=") + dir + QStringLiteral("/math.jsonl"), QStringLiteral("-d"),
                 QStringLiteral("code=") + dir + QStringLiteral("/code.jsonl"), QStringLiteral("--seq-len"),
                 QStringLiteral("64"), QStringLiteral("-o"), atlas },
            error)
        || !run({ QStringLiteral("score"), atlas }, error)
        || !run({ QStringLiteral("eval"), QStringLiteral("--atlas"), atlas, QStringLiteral("--sparsity"),
                    QStringLiteral("0.25,0.5"), QStringLiteral("--random-plans"), QStringLiteral("2") },
            error)
        || !run({ QStringLiteral("eval"), QStringLiteral("--atlas"), atlas, QStringLiteral("--routing"),
                    QStringLiteral("top-p:0.5"), QStringLiteral("--label"), QStringLiteral("routing") },
            error))
        return {};
    return atlas;
}

bool addFisherTables(const QString& atlas, QString* error, const QString& ablate, const QStringList& extra)
{
    if (cliExecutable().isEmpty()) {
        *error = QStringLiteral("MOEATLAS_CLI is unset");
        return false;
    }
    return run(QStringList { QStringLiteral("fisher"), atlas, QStringLiteral("--ablate"), ablate } + extra, error);
}

std::shared_ptr<views::AtlasSnapshot> syntheticSnapshot(int layers, int experts, int topK)
{
    auto s = std::make_shared<views::AtlasSnapshot>();
    s->path = QStringLiteral("synthetic.atlas.h5");
    s->complete = true;
    s->model.modelType = "deepseek_v3";
    s->model.numLayers = layers + 3;
    for (int l = 0; l < layers; ++l)
        s->model.moeLayers.push_back(l + 3);
    s->model.numExperts = experts;
    s->model.topK = topK;
    s->domains = { AtlasDomain { "math", "", "", 100, 60000 }, AtlasDomain { "code", "", "", 100, 40000 } };
    const int D = 2;
    Random rng { 42 };
    AtlasScores peu;
    AtlasScores mass;
    AtlasArray peuValue { "value", { D + 1, static_cast<uint64_t>(layers), static_cast<uint64_t>(experts) }, {} };
    AtlasArray massValue = peuValue;
    AtlasArray loadCounts { "load_counts", { D, static_cast<uint64_t>(layers), static_cast<uint64_t>(experts) }, {} };
    for (int d = 0; d <= D; ++d) {
        ScoreTable peuTable { "peu", d < D ? s->domains[d].name : "pooled", s->model.moeLayers, experts, {},
            d < D ? static_cast<double>(s->domains[d].numTokens) : 0.0 };
        ScoreTable massTable = peuTable;
        massTable.criterion = "soft_mass";
        for (int l = 0; l < layers; ++l) {
            std::vector<double> p(static_cast<std::size_t>(experts));
            std::vector<double> m(static_cast<std::size_t>(experts));
            double sum = 0;
            for (int e = 0; e < experts; ++e) {
                p[e] = rng.next();
                m[e] = std::exp(4.0 * rng.next());
                sum += m[e];
            }
            for (double& v : m)
                v /= sum;
            peuValue.values.insert(peuValue.values.end(), p.begin(), p.end());
            massValue.values.insert(massValue.values.end(), m.begin(), m.end());
            if (d < D) {
                for (int e = 0; e < experts; ++e)
                    loadCounts.values.push_back(std::floor(1000.0 * rng.next()));
            }
            peuTable.values.push_back(std::move(p));
            massTable.values.push_back(std::move(m));
        }
        if (d < D) {
            peu.domains.push_back(std::move(peuTable));
            mass.domains.push_back(std::move(massTable));
        } else {
            peu.pooled = std::move(peuTable);
            mass.pooled = std::move(massTable);
        }
    }
    s->scoreGroups["peu"] = AtlasResults { "{}", "", { peuValue } };
    s->scoreGroups["soft_mass"] = AtlasResults { "{}", "", { massValue } };
    s->scores["peu"] = std::move(peu);
    s->scores["soft_mass"] = std::move(mass);
    s->statistics = AtlasResults { "{}", "", { loadCounts } };
    s->planContext.topK = topK;
    s->planContext.modelType = "deepseek_v3";
    s->planContext.numLayers = layers + 3;
    // DeepSeek-V3-like costs: 3 x 7168 x 2048 weights per expert in FP8, plus a router row.
    s->planContext.costs.fixedBytes = 20'000'000'000ULL;
    s->planContext.costs.fixedParams = 20'000'000'000LL;
    s->planContext.costs.expertBytes.assign(static_cast<std::size_t>(layers), 3ULL * 7168 * 2048 + 7168 * 4);
    s->planContext.costs.expertParams.assign(static_cast<std::size_t>(layers), 3LL * 7168 * 2048 + 7168);
    s->planContext.costs.activeParamsBefore = 37'000'000'000LL;
    s->planContext.costs.routerRowParams = 7168;
    s->hasCosts = true;
    return s;
}

} // namespace moeatlas::test
