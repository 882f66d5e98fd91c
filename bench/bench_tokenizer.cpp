// Tokenizer throughput: encodes every document of a JSONL corpus ({"text": ...} per line) once,
// single-threaded, and prints MB/s. bench_tokenizer.py runs this next to HF `tokenizers`.
//   bench_tokenizer <tokenizer.json> <corpus.jsonl> [--repeat N] [--ids OUT]
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv)
{
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <tokenizer.json> <corpus.jsonl> [--repeat N] [--ids OUT]\n", argv[0]);
        return 2;
    }
    int repeat = 1;
    const char* idsOut = nullptr;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--repeat") == 0)
            repeat = std::max(1, std::atoi(argv[i + 1]));
        else if (std::strcmp(argv[i], "--ids") == 0)
            idsOut = argv[i + 1];
    }
    try {
        const auto loadStart = std::chrono::steady_clock::now();
        const moeatlas::Tokenizer tok = moeatlas::Tokenizer::fromFile(argv[1]);
        const double loadSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - loadStart).count();
        std::vector<std::string> docs;
        std::size_t bytes = 0;
        std::ifstream in(argv[2]);
        for (std::string line; std::getline(in, line);) {
            if (line.empty())
                continue;
            docs.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
            bytes += docs.back().size();
        }
        double best = 1e100;
        std::size_t tokens = 0;
        std::vector<std::vector<int32_t>> all;
        for (int r = 0; r < repeat; ++r) {
            // a fresh tokenizer per round would reload; the word cache warming up is part of the run
            tokens = 0;
            all.clear();
            const auto t0 = std::chrono::steady_clock::now();
            for (const auto& d : docs) {
                auto ids = tok.encode(d, false);
                tokens += ids.size();
                if (idsOut)
                    all.push_back(std::move(ids));
            }
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        if (idsOut) {
            std::ofstream out(idsOut);
            for (const auto& ids : all) {
                for (std::size_t i = 0; i < ids.size(); ++i)
                    out << (i ? " " : "") << ids[i];
                out << '\n';
            }
        }
        std::printf("{\"docs\": %zu, \"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.4f, \"mb_per_s\": %.3f, "
                    "\"load_seconds\": %.3f}\n",
            docs.size(), bytes, tokens, best, bytes / 1e6 / best, loadSeconds);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
        return 1;
    }
    return 0;
}
