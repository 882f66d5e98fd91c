// Shared by the chart and job suites: a tiny scored and evaluated atlas built with the moeatlas CLI
// exactly as a user would (generate a qwen3_moe model and two calibration domains, capture, score,
// eval --sparsity 0.25,0.5 --random-plans 2), so the charts are checked against a real table.
#pragma once

#include "test_support.h"

#include <QDir>
#include <QString>
#include <QStringList>
#include <QTest>

namespace moeatlas::test {

inline ProcessResult runMoeatlas(const QStringList& args)
{
    const ProcessResult r = runProcess(cliExecutable(), args);
    if (r.exitCode != 0)
        qWarning("moeatlas %s: exit %d\n%s", qPrintable(args.join(QLatin1Char(' '))), r.exitCode, qPrintable(r.stdErr));
    return r;
}

struct AtlasFixture {
    QString model; // checkpoint directory
    QString atlas; // captured, scored and evaluated (label "default")
    QString plan; // specialist plan for "math" at keep-fraction 0.5 (peu), from the atlas
    QStringList domainFiles; // math.jsonl, code.jsonl
};

// Generates the model (`layers` decoder layers, 8 experts of width `expertWidth`, top-2) and `docs`
// documents of 64 tokens per domain under `dir`. False (the reason logged) on any CLI failure.
inline bool generateModel(const QString& dir, AtlasFixture& f, int layers = 2, int docs = 6, int expertWidth = 32)
{
    f.model = QDir(dir).filePath(QStringLiteral("model"));
    if (runMoeatlas(
            { QStringLiteral("generate"), QStringLiteral("-o"), f.model, QStringLiteral("--arch"),
                QStringLiteral("qwen3_moe"), QStringLiteral("--layers"), QString::number(layers),
                QStringLiteral("--hidden"), QStringLiteral("64"), QStringLiteral("--heads"), QStringLiteral("4"),
                QStringLiteral("--kv-heads"), QStringLiteral("2"), QStringLiteral("--head-dim"), QStringLiteral("16"),
                QStringLiteral("--experts"), QStringLiteral("8"), QStringLiteral("--top-k"), QStringLiteral("2"),
                QStringLiteral("--expert-width"), QString::number(expertWidth), QStringLiteral("--vocab"),
                QStringLiteral("256"), QStringLiteral("--seed"), QStringLiteral("7") })
            .exitCode
        != 0)
        return false;
    f.domainFiles.clear();
    int seed = 11;
    for (const QString& name : { QStringLiteral("math"), QStringLiteral("code") }) {
        const QString file = QDir(dir).filePath(name + QStringLiteral(".jsonl"));
        if (runMoeatlas({ QStringLiteral("generate"), QStringLiteral("--vocab"), QStringLiteral("256"),
                            QStringLiteral("--seed"), QString::number(seed++), QStringLiteral("--calibration"), file,
                            QStringLiteral("--calibration-docs"), QString::number(docs),
                            QStringLiteral("--calibration-doc-tokens"), QStringLiteral("64") })
                .exitCode
            != 0)
            return false;
        f.domainFiles << file;
    }
    return true;
}

// The capture arguments for the fixture's model and domains into `atlas`.
inline QStringList captureArgs(const AtlasFixture& f, const QString& atlas)
{
    return { QStringLiteral("capture"), f.model, QStringLiteral("-d"), QStringLiteral("math=") + f.domainFiles[0],
        QStringLiteral("-d"), QStringLiteral("code=") + f.domainFiles[1], QStringLiteral("--seq-len"),
        QStringLiteral("64"), QStringLiteral("-o"), atlas };
}

// generateModel + capture + score + plan (+ eval when `evaluate`).
inline bool buildAtlas(const QString& dir, AtlasFixture& f, bool evaluate = true, int expertWidth = 32)
{
    if (!generateModel(dir, f, 2, 6, expertWidth))
        return false;
    f.atlas = QDir(dir).filePath(QStringLiteral("run.atlas.h5"));
    if (runMoeatlas(captureArgs(f, f.atlas)).exitCode != 0
        || runMoeatlas({ QStringLiteral("score"), f.atlas }).exitCode != 0)
        return false;
    f.plan = QDir(dir).filePath(QStringLiteral("math.plan.json"));
    if (runMoeatlas({ QStringLiteral("plan"), QStringLiteral("--atlas"), f.atlas, QStringLiteral("--criterion"),
                        QStringLiteral("peu"), QStringLiteral("--domain"), QStringLiteral("math"),
                        QStringLiteral("--keep-fraction"), QStringLiteral("0.5"), QStringLiteral("-o"), f.plan })
            .exitCode
        != 0)
        return false;
    if (evaluate
        && runMoeatlas({ QStringLiteral("eval"), QStringLiteral("--atlas"), f.atlas, QStringLiteral("--sparsity"),
                           QStringLiteral("0.25,0.5"), QStringLiteral("--random-plans"), QStringLiteral("2"),
                           QStringLiteral("--plan"), f.plan })
                .exitCode
            != 0)
        return false;
    return true;
}

} // namespace moeatlas::test
