// moeatlas: the command-line client of the MoE Atlas engine.
#include "commands.h"

#include "runtime/runtime_policy.h"
#include "util/error.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv)
try {
    // Threads and allocator settings are the program's to choose (runtime/runtime_policy.h); commands
    // with --threads scope their own for the job.
    moeatlas::applyRuntimePolicy({});
    CLI::App app { "MoE Atlas: analyse and compress Mixture-of-Experts LLMs" };
    app.require_subcommand(1);
    app.set_version_flag("--version", [] {
        return std::string("moeatlas " MOEATLAS_VERSION "\n") + moeatlas::describeRuntime(moeatlas::runtimeInfo());
    });
    // Each add*Command registers one subcommand; remember which callback belongs to which.
    std::vector<std::pair<CLI::App*, moeatlas::cli::Command>> commands;
    const auto registerCommand = [&](moeatlas::cli::Command cmd) {
        auto subs = app.get_subcommands([](CLI::App*) { return true; });
        if (cmd && !subs.empty())
            commands.emplace_back(subs.back(), std::move(cmd));
    };
    registerCommand(moeatlas::cli::addInspectCommand(app));
    registerCommand(moeatlas::cli::addCaptureCommand(app));
    registerCommand(moeatlas::cli::addTokenizeCommand(app));
    registerCommand(moeatlas::cli::addGenerateCommand(app));
    registerCommand(moeatlas::cli::addScoreCommand(app));
    registerCommand(moeatlas::cli::addMergeCommand(app));
    registerCommand(moeatlas::cli::addPlanCommand(app));
    registerCommand(moeatlas::cli::addExportCommand(app));
    registerCommand(moeatlas::cli::addEvalCommand(app));
    registerCommand(moeatlas::cli::addFisherCommand(app));
    registerCommand(moeatlas::cli::addDemoDataCommand(app));
    registerCommand(moeatlas::cli::addTrainCommand(app));
    registerCommand(moeatlas::cli::addPrefetchCommand(app));
    registerCommand(moeatlas::cli::addSimulateCommand(app));

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    for (const auto& [sub, run] : commands)
        if (sub->parsed())
            return run();
    return 2;
} catch (const moeatlas::Cancelled&) {
    std::fprintf(stderr, "moeatlas: cancelled\n");
    return 130;
} catch (const std::exception& e) { // also what setting up the commands throws
    std::fprintf(stderr, "moeatlas: error: %s\n", e.what());
    return 1;
}
