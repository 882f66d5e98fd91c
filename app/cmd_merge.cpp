// moeatlas merge A B... -o OUT: one atlas from several recorded separately on the same model.
#include "cli_progress.h"
#include "commands.h"

#include "metrics/merge.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace moeatlas::cli {

namespace {

struct MergeArgs {
    std::vector<std::string> inputs;
    std::string output;
};

int runMerge(const MergeArgs& a)
{
    std::vector<std::filesystem::path> inputs(a.inputs.begin(), a.inputs.end());
    StopToken& stop = installStopHandler();
    ProgressBar bar("merge", "token-layers");
    const MergeReport r = mergeAtlases(
        inputs, a.output, [&](const Progress& p) { return bar.update(p); }, &stop);
    bar.finish("merge: " + std::to_string(r.numTokens) + " tokens, " + std::to_string(r.numDomains) + " domains -> "
        + a.output);
    std::printf("run `moeatlas score %s` to compute its scores\n", a.output.c_str());
    return 0;
}

} // namespace

Command addMergeCommand(CLI::App& app)
{
    auto args = std::make_shared<MergeArgs>();
    CLI::App* sub = app.add_subcommand("merge", "Concatenate atlases recorded separately from the same model");
    sub->add_option("atlases", args->inputs, "Complete atlases to merge (two or more)")->required()->expected(2, -1);
    sub->add_option("-o,--output", args->output, "Merged atlas to write")->required();
    return [args] { return runMerge(*args); };
}

} // namespace moeatlas::cli
