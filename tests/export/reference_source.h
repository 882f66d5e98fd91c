// Tests of exports in transformers: a tiny source checkpoint built by transformers
// (tests/reference/make_reference.py) and the token ids both sides evaluate.
#pragma once

#include "checkpoint/checkpoint.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QString>
#include <QTemporaryDir>

#include <cstdint>
#include <fstream>
#include <vector>

namespace moeatlas::test {

// A source checkpoint built by transformers and the token ids both sides evaluate.
struct Source {
    QString dir;
    std::vector<int> moeLayers;
    std::vector<std::vector<int32_t>> ids; // three sequences of 24 tokens
    QString idsPath;
};

// make_reference.py's model of `arch`/`variant` in `layout` under dir/src, and the ids file.
inline bool makeSource(
    const QTemporaryDir& dir, const QString& arch, const QString& variant, const QString& layout, Source& s)
{
    s.dir = dir.filePath(QStringLiteral("src"));
    const auto made = runPython(QStringLiteral("tests/reference/make_reference.py"),
        { QStringLiteral("--arch"), arch, QStringLiteral("--variant"), variant, QStringLiteral("--layout"), layout,
            QStringLiteral("--skip-layout-check"), QStringLiteral("--out"), s.dir });
    if (made.exitCode != 0) {
        qWarning("make_reference.py: %s", qPrintable(made.stdErr));
        return false;
    }
    std::ifstream refIn(QString(s.dir + QStringLiteral("/reference.json")).toStdString());
    const nlohmann::json reference = nlohmann::json::parse(refIn);
    s.moeLayers = reference["moe_layers"].get<std::vector<int>>();
    s.ids.assign(3, {});
    const int64_t vocab = Checkpoint(s.dir.toStdString()).config()["vocab_size"].get<int64_t>();
    for (std::size_t b = 0; b < s.ids.size(); ++b)
        for (int64_t t = 0; t < 24; ++t)
            s.ids[b].push_back(static_cast<int32_t>(
                (b * 7919 + static_cast<std::size_t>(t) * 104729 + 13) % static_cast<std::size_t>(vocab)));
    s.idsPath = dir.filePath(QStringLiteral("ids.json"));
    std::ofstream(s.idsPath.toStdString()) << nlohmann::json(s.ids).dump();
    return true;
}

} // namespace moeatlas::test
