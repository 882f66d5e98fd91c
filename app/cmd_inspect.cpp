#include "commands.h"

#include <CLI/CLI.hpp>

namespace moeatlas::cli {

Command addInspectCommand(CLI::App& app)
{
    (void)app;
    return {};
}

} // namespace moeatlas::cli
