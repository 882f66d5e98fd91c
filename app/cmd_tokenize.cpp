// `moeatlas tokenize <tokenizer.json> FILE [--ids-only] [--no-special]`: encodes a text file with a
// Hugging Face tokenizer.json and prints the ids (and tokens).
#include "commands.h"

#include "text/tokenizer.h"
#include "util/error.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>

namespace moeatlas::cli {

namespace {

struct TokenizeOptions {
    std::string tokenizerPath;
    std::string inputPath;
    bool idsOnly = false;
    bool noSpecial = false;
};

std::string readInput(const std::string& path)
{
    if (path == "-")
        return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw InputError(path + ": cannot open input file");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

int runTokenize(const TokenizeOptions& opt)
{
    const Tokenizer tokenizer = Tokenizer::fromFile(opt.tokenizerPath);
    const std::string text = readInput(opt.inputPath);
    const std::vector<int32_t> ids = tokenizer.encode(text, !opt.noSpecial);
    std::string out;
    if (opt.idsOnly) {
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (i)
                out += ' ';
            out += std::to_string(ids[i]);
        }
        out += '\n';
    } else {
        // one token per line: id, then the token string as a JSON string (it may hold spaces/controls)
        for (int32_t id : ids) {
            out += std::to_string(id);
            out += '\t';
            out += nlohmann::json(tokenizer.idToToken(id).value_or(""))
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            out += '\n';
        }
        out += "# " + std::to_string(ids.size()) + " tokens, " + std::to_string(text.size()) + " bytes\n";
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
}

} // namespace

Command addTokenizeCommand(CLI::App& app)
{
    auto opt = std::make_shared<TokenizeOptions>();
    CLI::App* sub = app.add_subcommand("tokenize", "Encode a text file with a Hugging Face tokenizer.json");
    sub->add_option("tokenizer", opt->tokenizerPath, "tokenizer.json")->required();
    sub->add_option("file", opt->inputPath, "UTF-8 text file to encode ('-' for standard input)")->required();
    sub->add_flag("--ids-only", opt->idsOnly, "Print only the ids, space-separated, on one line");
    sub->add_flag("--no-special", opt->noSpecial, "Do not add the post-processor's special tokens (BOS/EOS)");
    return [opt, sub]() -> int {
        if (!sub->parsed())
            return 0;
        return runTokenize(*opt);
    };
}

} // namespace moeatlas::cli
