// The subcommands of the `moeatlas` CLI. Each registers itself on the app and returns the
// callback that runs it; main() maps errors to messages and exit codes.
#pragma once

#include <functional>

namespace CLI { // NOLINT(readability-identifier-naming): CLI11's namespace, not ours
class App;
}

namespace moeatlas::cli {

using Command = std::function<int()>;

Command addInspectCommand(CLI::App& app);
Command addCaptureCommand(CLI::App& app);
Command addTokenizeCommand(CLI::App& app);
Command addGenerateCommand(CLI::App& app);
Command addScoreCommand(CLI::App& app);
Command addMergeCommand(CLI::App& app);
Command addPlanCommand(CLI::App& app);
Command addExportCommand(CLI::App& app);
Command addEvalCommand(CLI::App& app);
Command addFisherCommand(CLI::App& app);
Command addDemoDataCommand(CLI::App& app);
Command addTrainCommand(CLI::App& app);
Command addPrefetchCommand(CLI::App& app);
Command addSimulateCommand(CLI::App& app);

} // namespace moeatlas::cli
