// bench_exact_k: ProbMoE exact-k tables (metrics/exact_k.h) over router logits [L, T, E] read from a raw
// float32 file: per token log Z over the band, marginals for k, the cardinality distribution and its
// entropy (exactKTables, all per-token outputs written), reduced per layer to means. Timed: the
// tables and the reduction, not the file read. bench_exact_k.py runs this next to a vectorised torch
// implementation of the same DP on the same logits and compares the results.
//
//   bench_exact_k --input LOGITS.f32 [--layers 16] [--tokens 65536] [--experts 64] [--k 8]
//                 [--band 6:8] [--threads 2] [--log-space (one thread)] [--dump DIR]
//
// Prints one line of JSON: {"seconds": ..., "log_space_tokens": ...}. --dump writes, as raw float64,
// means.f64 ([L, E] mean marginals, [L, B] mean cardinality, [L, B] mean log Z, [L] mean entropy)
// and layer 0's per-token tables logz0.f64 [T, B], mu0.f64 [T, E], card0.f64 [T, B], ent0.f64 [T].
#include "metrics/exact_k.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

using namespace moeatlas;

namespace {

struct Args {
    std::string input, dump;
    int64_t layers = 16, tokens = 65536;
    int experts = 64, k = 8, kMin = 6, kMax = 8, threads = 2;
    bool logSpace = false;
};

[[noreturn]] void usage(int code)
{
    std::fprintf(stderr,
        "usage: bench_exact_k --input LOGITS.f32 [--layers L] [--tokens T] [--experts E] [--k K]\n"
        "                     [--band MIN:MAX] [--threads N] [--log-space] [--dump DIR]\n");
    std::exit(code);
}

Args parseArgs(int argc, char** argv)
{
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string key = argv[i];
        if (key == "--help" || key == "-h")
            usage(0);
        if (key == "--log-space") {
            a.logSpace = true;
            continue;
        }
        if (i + 1 >= argc)
            usage(2);
        const std::string v = argv[++i];
        if (key == "--input")
            a.input = v;
        else if (key == "--dump")
            a.dump = v;
        else if (key == "--layers")
            a.layers = std::stoll(v);
        else if (key == "--tokens")
            a.tokens = std::stoll(v);
        else if (key == "--experts")
            a.experts = std::stoi(v);
        else if (key == "--k")
            a.k = std::stoi(v);
        else if (key == "--threads")
            a.threads = std::stoi(v);
        else if (key == "--band") {
            const size_t colon = v.find(':');
            if (colon == std::string::npos)
                usage(2);
            a.kMin = std::stoi(v.substr(0, colon));
            a.kMax = std::stoi(v.substr(colon + 1));
        } else {
            std::fprintf(stderr, "bench_exact_k: unknown option %s\n", key.c_str());
            usage(2);
        }
    }
    if (a.input.empty())
        usage(2);
    return a;
}

void writeRaw(const std::string& path, const std::vector<double>& v)
{
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(double)));
}

} // namespace

int main(int argc, char** argv)
{
    const Args a = parseArgs(argc, argv);
    const ExactKParams params { a.kMin, a.kMax, a.k };
    const int64_t e = a.experts, t = a.tokens, b = params.bins();
    std::vector<float> logits(static_cast<size_t>(a.layers * t * e));
    {
        std::ifstream in(a.input, std::ios::binary);
        in.read(reinterpret_cast<char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
        if (in.gcount() != static_cast<std::streamsize>(logits.size() * sizeof(float))) {
            std::fprintf(stderr, "bench_exact_k: %s holds fewer than L x T x E float32 values\n", a.input.c_str());
            return 2;
        }
    }
    // Per-token tables, reused across layers; per-layer means.
    std::vector<double> logZ(static_cast<size_t>(t * b)), mu(static_cast<size_t>(t * e)),
        card(static_cast<size_t>(t * b)), ent(static_cast<size_t>(t));
    std::vector<double> meanMu(static_cast<size_t>(a.layers * e)), meanCard(static_cast<size_t>(a.layers * b)),
        meanLogZ(static_cast<size_t>(a.layers * b)), meanEnt(static_cast<size_t>(a.layers));
    std::vector<double> dump0[4];
    int64_t logSpaceTokens = 0;

    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t l = 0; l < a.layers; ++l) {
        ExactKOutputs out;
        out.logZ = logZ.data();
        out.marginals = mu.data();
        out.cardinality = card.data();
        out.entropy = ent.data();
        const float* layer = logits.data() + l * t * e;
        if (a.logSpace) { // every token by the log-space path, on this thread only (a diagnostic)
            ExactK solver(a.experts, params, ExactK::Path::LogSpace);
            for (int64_t n = 0; n < t; ++n) {
                solver.load(layer + n * e);
                for (int64_t c = 0; c < b; ++c)
                    logZ[static_cast<size_t>(n * b + c)] = solver.logZ(a.kMin + static_cast<int>(c));
                solver.marginals(mu.data() + n * e);
                solver.cardinality(card.data() + n * b);
                ent[static_cast<size_t>(n)] = solver.cardinalityEntropy();
            }
            logSpaceTokens += t;
        } else {
            exactKTables(layer, t, a.experts, params, nullptr, out, a.threads);
            logSpaceTokens += out.logSpaceTokens;
        }
        for (int64_t n = 0; n < t; ++n) {
            for (int64_t i = 0; i < e; ++i)
                meanMu[static_cast<size_t>(l * e + i)] += mu[static_cast<size_t>(n * e + i)];
            for (int64_t c = 0; c < b; ++c) {
                meanCard[static_cast<size_t>(l * b + c)] += card[static_cast<size_t>(n * b + c)];
                meanLogZ[static_cast<size_t>(l * b + c)] += logZ[static_cast<size_t>(n * b + c)];
            }
            meanEnt[static_cast<size_t>(l)] += ent[static_cast<size_t>(n)];
        }
        if (l == 0 && !a.dump.empty()) {
            dump0[0] = logZ;
            dump0[1] = mu;
            dump0[2] = card;
            dump0[3] = ent;
        }
    }
    for (auto* v : { &meanMu, &meanCard, &meanLogZ, &meanEnt })
        for (double& x : *v)
            x /= static_cast<double>(t);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    if (!a.dump.empty()) {
        std::vector<double> means = meanMu;
        means.insert(means.end(), meanCard.begin(), meanCard.end());
        means.insert(means.end(), meanLogZ.begin(), meanLogZ.end());
        means.insert(means.end(), meanEnt.begin(), meanEnt.end());
        writeRaw(a.dump + "/means.f64", means);
        const char* names[4] = { "logz0", "mu0", "card0", "ent0" };
        for (int i = 0; i < 4; ++i)
            writeRaw(a.dump + "/" + names[i] + ".f64", dump0[i]);
    }
    std::printf("{\"seconds\": %.6f, \"log_space_tokens\": %lld}\n", seconds, static_cast<long long>(logSpaceTokens));
    return 0;
}
