// moeatlas: the command-line client of the MoE Atlas engine.
#include "commands.h"

#include "util/error.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <vector>

int main(int argc, char** argv)
{
    CLI::App app{"MoE Atlas: analyse and compress Mixture-of-Experts LLMs"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "moeatlas 0.1.0");
    std::vector<moeatlas::cli::Command> commands;
    commands.push_back(moeatlas::cli::addInspectCommand(app));
    commands.push_back(moeatlas::cli::addCaptureCommand(app));
    commands.push_back(moeatlas::cli::addTokenizeCommand(app));

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (std::size_t i = 0; i < app.get_subcommands().size(); ++i) {
            (void)i;
        }
        for (auto* sub : app.get_subcommands()) {
            (void)sub;
        }
        for (const auto& cmd : commands) {
            if (cmd)
                (void)0;
        }
        return 0;
    } catch (const moeatlas::Cancelled&) {
        std::fprintf(stderr, "moeatlas: cancelled\n");
        return 130;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moeatlas: error: %s\n", e.what());
        return 1;
    }
}
