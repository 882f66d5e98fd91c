#include "commands.h"

#include <CLI/CLI.hpp>

namespace moeatlas::cli {

// Placeholder until the tokenizer lands (issue 5).
Command addTokenizeCommand(CLI::App& app)
{
    (void)app;
    return {};
}

} // namespace moeatlas::cli
