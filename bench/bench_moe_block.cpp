// bench_moe_block: how fast is our MoE block compared with what this machine's sgemm can do?
//
//   bench_moe_block [--threads 2] [--tokens 4096] [--experts 64] [--top-k 8] [--hidden 1024]
//                   [--width 512] [--repeats 3] [--sgemm 2048,4096] [--naive-tokens 512] [--no-dense]
//                   [--layer] [--blas-threads auto|N] [--json FILE]
//
// (a) sgemm peak: at::mm_out on n^3 fp32 matrices (and at the shapes one expert sees), GFLOP/s;
// (b) moeatlas::moeForward on one layer of the benchmark model (random weights in memory),
//     useful FLOPs = N*K*6*H*I + router 2*N*E*H, as GFLOP/s and % of the sgemm peak;
// (c) the same expert math as a naive per-token loop (GEMVs) and as every expert on every token
//     (dense, then masked by the routing weights), to show why grouping tokens by expert matters;
// (d) with --layer: time of one whole decoder layer split into its parts (norms, attention, MoE),
//     on N/seqLen sequences of 512 tokens.
// (e) with --checkpoint DIR: time WeightLoader::loadLayer for every layer of that checkpoint (what the
//     streaming executor does once per layer), as seconds and GB/s.
// Best of --repeats for every number; the machine may be shared.
// --blas-threads: OpenBLAS' own thread count. "auto" does what the executor does: 1 when ATen has several
// threads (the blocks then split their products across ATen's threads); N > 1 gives the blocks'
// single-pool-free path (OpenBLAS threads next to ATen's). With OpenBLAS, the split and unsplit paths of
// moeForward and attention are also compared element by element (they must agree exactly).
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/model_spec.h"
#include "model/blocks.h"
#include "model/layer_weights.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using namespace moeatlas;

namespace {

struct Args {
    int threads = 2;
    int64_t tokens = 4096;
    int64_t experts = 64;
    int64_t topK = 8;
    int64_t hidden = 1024;
    int64_t width = 512;
    int repeats = 3;
    std::vector<int64_t> sgemm = { 2048, 4096 };
    int64_t naiveTokens = 512;
    bool dense = true;
    bool layer = false;
    int64_t seqLen = 512;
    std::string json;
    int blasThreads = 0; // 0 = auto
    std::string checkpoint;
    std::string only; // comma list of sections to run (moe,parts,naive,dense,layer); empty = all
    bool want(const std::string& section) const
    {
        return only.empty() || ("," + only + ",").find("," + section + ",") != std::string::npos;
    }
};

int openblasGet()
{
    static const auto get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    return get ? get() : 0;
}

void openblasSet(int n)
{
    static const auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (set && n > 0)
        set(n);
}

double now()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best wall time of `repeats` calls after one warm-up call.
double bestOf(int repeats, const std::function<void()>& fn, bool warmup = true)
{
    if (warmup)
        fn();
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < repeats; ++r) {
        const double t0 = now();
        fn();
        best = std::min(best, now() - t0);
    }
    return best;
}

std::vector<int64_t> parseList(const std::string& s)
{
    std::vector<int64_t> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ','))
        if (!item.empty())
            out.push_back(std::stoll(item));
    return out;
}

Args parseArgs(int argc, char** argv)
{
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", k.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (k == "--threads")
            a.threads = std::stoi(next());
        else if (k == "--tokens")
            a.tokens = std::stoll(next());
        else if (k == "--experts")
            a.experts = std::stoll(next());
        else if (k == "--top-k")
            a.topK = std::stoll(next());
        else if (k == "--hidden")
            a.hidden = std::stoll(next());
        else if (k == "--width")
            a.width = std::stoll(next());
        else if (k == "--repeats")
            a.repeats = std::stoi(next());
        else if (k == "--sgemm")
            a.sgemm = parseList(next());
        else if (k == "--naive-tokens")
            a.naiveTokens = std::stoll(next());
        else if (k == "--no-dense")
            a.dense = false;
        else if (k == "--layer")
            a.layer = true;
        else if (k == "--seq-len")
            a.seqLen = std::stoll(next());
        else if (k == "--json")
            a.json = next();
        else if (k == "--only")
            a.only = next();
        else if (k == "--checkpoint")
            a.checkpoint = next();
        else if (k == "--blas-threads") {
            const std::string v = next();
            a.blasThreads = v == "auto" ? 0 : std::stoi(v);
        } else {
            std::fprintf(stderr,
                "usage: bench_moe_block [--threads T] [--tokens N] [--experts E] [--top-k K] [--hidden H]\n"
                "       [--width I] [--repeats R] [--sgemm 2048,4096] [--naive-tokens n] [--no-dense]\n"
                "       [--layer] [--seq-len S] [--blas-threads auto|N] [--only moe,parts,naive,dense,layer,load]\n"
                "       [--checkpoint DIR] [--json FILE]\n");
            std::exit(k == "--help" || k == "-h" ? 0 : 2);
        }
    }
    return a;
}

struct Row {
    std::string section, name;
    double seconds = 0, gflop = 0; // useful GFLOP of the measured work
    double gflops() const { return seconds > 0 ? gflop / seconds : 0; }
    std::string note;
};

} // namespace

int main(int argc, char** argv)
{
    const Args a = parseArgs(argc, argv);
    at::set_num_threads(a.threads);
    const int blasDefault = openblasGet();
    const int blasThreads = a.blasThreads > 0 ? a.blasThreads : (a.threads > 1 ? 1 : blasDefault);
    openblasSet(blasThreads);
    c10::InferenceMode inferenceMode;
    at::manual_seed(0);
    const int64_t N = a.tokens, E = a.experts, K = a.topK, H = a.hidden, I = a.width;
    std::vector<Row> rows;
    std::printf(
        "bench_moe_block: threads %d (at::get_num_threads %d), N=%lld E=%lld K=%lld H=%lld I=%lld, best of %d\n",
        a.threads, at::get_num_threads(), static_cast<long long>(N), static_cast<long long>(E),
        static_cast<long long>(K), static_cast<long long>(H), static_cast<long long>(I), a.repeats);
    std::printf("OpenBLAS threads: %d (process default %d)%s\n", openblasGet(), blasDefault,
        blasDefault ? "" : " -- OpenBLAS not found");
    std::fflush(stdout);

    // (a) sgemm peak: BLAS with as many threads as ATen has
    openblasSet(a.threads);
    double peak = 0;
    for (int64_t n : a.sgemm) {
        if (n <= 0)
            continue;
        at::Tensor x = at::randn({ n, n }), y = at::randn({ n, n }), out = at::empty({ n, n });
        const double s = bestOf(a.repeats, [&] { at::mm_out(out, x, y); });
        Row r { "sgemm", "at::mm " + std::to_string(n) + "^3", s, 2.0 * n * n * n / 1e9, "" };
        peak = std::max(peak, r.gflops());
        rows.push_back(r);
    }
    // The shapes one expert sees at N*K/E tokens (x @ W^T as at::linear does it).
    const int64_t avg = std::max<int64_t>(1, N * K / E);
    {
        at::Tensor x = at::randn({ avg, H }), wgu = at::randn({ 2 * I, H }), wd = at::randn({ H, I });
        at::Tensor h = at::randn({ avg, I });
        const double s1 = bestOf(a.repeats, [&] {
            for (int i = 0; i < 8; ++i)
                (void)at::linear(x, wgu);
        });
        rows.push_back({ "sgemm",
            "linear [" + std::to_string(avg) + "x" + std::to_string(H) + "]x[" + std::to_string(2 * I) + "x"
                + std::to_string(H) + "]^T",
            s1 / 8, 2.0 * avg * H * 2 * I / 1e9, "gate_up of one expert" });
        const double s2 = bestOf(a.repeats, [&] {
            for (int i = 0; i < 8; ++i)
                (void)at::linear(h, wd);
        });
        rows.push_back({ "sgemm",
            "linear [" + std::to_string(avg) + "x" + std::to_string(I) + "]x[" + std::to_string(H) + "x"
                + std::to_string(I) + "]^T",
            s2 / 8, 2.0 * avg * I * H / 1e9, "down of one expert" });
    }

    // (e) weight streaming
    if (!a.checkpoint.empty() && a.want("load")) {
        const Checkpoint ckpt(a.checkpoint);
        const ModelSpec ms = parseModelSpec(ckpt.config(), a.checkpoint + "/config.json");
        const WeightLoader loader(ckpt, ms, WeightLoadOptions {});
        double total = 0, bytes = 0;
        for (int l = 0; l < ms.numLayers; ++l) {
            const double t0 = now();
            const LayerWeights lw = loader.loadLayer(l);
            total += now() - t0;
            bytes += static_cast<double>(lw.sourceBytes);
        }
        char note[96];
        std::snprintf(note, sizeof note, "%d layers, %.2f GB/s, %.3f s per layer", ms.numLayers, bytes / total / 1e9,
            total / ms.numLayers);
        rows.push_back({ "load", "WeightLoader::loadLayer, every layer once", total, 0, note });
    }

    openblasSet(blasThreads);

    auto printReport = [&] {
        std::printf("\n| section | measurement | seconds | GFLOP | GFLOP/s | %% of sgemm peak | note |\n");
        std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
        for (const Row& r : rows)
            std::printf("| %s | %s | %.4f | %.2f | %.1f | %.0f%% | %s |\n", r.section.c_str(), r.name.c_str(),
                r.seconds, r.gflop, r.gflops(), peak > 0 ? 100.0 * r.gflops() / peak : 0.0, r.note.c_str());
        std::printf("\nsgemm peak (best of at::mm n^3): %.1f GFLOP/s\n", peak);

        if (!a.json.empty()) {
            std::ofstream out(a.json);
            out << "{\"threads\": " << a.threads << ", \"tokens\": " << N << ", \"experts\": " << E
                << ", \"top_k\": " << K << ", \"hidden\": " << H << ", \"width\": " << I
                << ", \"sgemm_peak_gflops\": " << peak << ", \"rows\": [";
            for (std::size_t i = 0; i < rows.size(); ++i) {
                const Row& r = rows[i];
                out << (i ? ", " : "") << "{\"section\": \"" << r.section << "\", \"name\": \"" << r.name
                    << "\", \"seconds\": " << r.seconds << ", \"gflop\": " << r.gflop << ", \"gflops\": " << r.gflops()
                    << ", \"pct_peak\": " << (peak > 0 ? 100.0 * r.gflops() / peak : 0.0) << ", \"note\": \"" << r.note
                    << "\"}";
            }
            out << "]}\n";
        }
    };
    if (a.only == "load") {
        printReport();
        return 0;
    }

    // (b) our MoE block
    ModelSpec spec;
    spec.arch = Architecture::Qwen3Moe;
    spec.modelType = "qwen3_moe";
    spec.hiddenSize = H;
    spec.numLayers = 1;
    spec.numHeads = 16;
    spec.numKvHeads = 4;
    spec.headDim = 64;
    spec.rmsNormEps = 1e-6;
    spec.qkNorm = QkNorm::PerHead;
    spec.rope.theta = 1e6;
    spec.maxPositionEmbeddings = 4096;
    spec.router = RouterSpec { static_cast<int>(E), static_cast<int>(K), true };
    spec.moeIntermediate = I;
    spec.layers = { LayerSpec {} };

    LayerWeights w;
    w.moe = true;
    w.router = at::randn({ E, H }) * 0.5; // as `moeatlas generate` (router std 0.5)
    w.gateUp = at::randn({ E, 2 * I, H }) * 0.02;
    w.down = at::randn({ E, H, I }) * 0.02;
    at::Tensor x = at::randn({ N, H });

    const double expertGflop = static_cast<double>(N) * K * 6 * H * I / 1e9;
    const double routerGflop = 2.0 * N * E * H / 1e9;
    at::Tensor ref;
    RoutingRecord rec;
    {
        MoeOptions opt;
        const double s = bestOf(a.repeats, [&] { ref = moeForward(spec, w, x, opt, &rec); });
        rows.push_back({ "moe", "moeForward (grouped by expert)", s, expertGflop + routerGflop, "the engine" });
    }
    if (blasDefault > 0) {
        // The other path (OpenBLAS multi-threaded when the blocks split, single-threaded otherwise).
        openblasSet(blasThreads == 1 ? a.threads : 1);
        RoutingRecord rec2;
        const at::Tensor other = moeForward(spec, w, x, MoeOptions {}, &rec2);
        openblasSet(blasThreads);
        const double diff = (other - ref).abs().max().item<double>();
        const double diffLogits = (rec2.logits - rec.logits).abs().max().item<double>();
        std::printf("split vs unsplit moeForward: max |diff| output %.3g, router logits %.3g%s\n", diff, diffLogits,
            diff == 0 && diffLogits == 0 ? " (identical)" : "");
    }
    at::Tensor counts = at::bincount(rec.topkIds.reshape({ -1 }).to(at::kLong), {}, E);
    const double cmin = counts.min().item<double>(), cmax = counts.max().item<double>();
    std::printf("routing: tokens per expert min %.0f mean %.0f max %.0f\n", cmin, static_cast<double>(N * K) / E, cmax);

    // Parts of the expert math alone (grouping, GEMMs, scatter), to separate overheads.
    at::Tensor topIdx = rec.topkIds.to(at::kLong), topW = rec.topkWeights;
    if (a.want("parts")) {
        at::Tensor flat = topIdx.reshape({ -1 });
        at::Tensor order = at::argsort(flat);
        at::Tensor tokenOf = at::div(order, K, "floor");
        at::Tensor cnt = at::bincount(flat, {}, E);
        const int64_t* c = cnt.data_ptr<int64_t>();
        // One expert after the other with OpenBLAS on all threads (the engine's path before it split
        // experts across threads). gather: rows picked with index_select (else the first c rows);
        // silu: the SwiGLU in between.
        auto expertLoop = [&](bool gather, bool silu) {
            openblasSet(a.threads);
            const double t = bestOf(a.repeats, [&] {
                int64_t off = 0;
                for (int64_t e = 0; e < E; ++e) {
                    at::Tensor xe = gather ? x.index_select(0, tokenOf.narrow(0, off, c[e])) : x.narrow(0, 0, c[e]);
                    at::Tensor gu = at::linear(xe, w.gateUp[e]);
                    at::Tensor h = silu ? at::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I) : gu.narrow(1, 0, I);
                    (void)at::linear(h, w.down[e]);
                    off += c[e];
                }
            });
            openblasSet(blasThreads);
            return t;
        };
        rows.push_back({ "moe", "experts in turn, BLAS threaded: GEMMs + gather + SiLU", expertLoop(true, true),
            expertGflop, "no router, no scatter" });
        rows.push_back({ "moe", "experts in turn, BLAS threaded: GEMMs only", expertLoop(false, false), expertGflop,
            "contiguous rows, no SiLU" });
    }

    // (c1) naive per-token loop: one GEMV pair per (token, k); OpenBLAS on all threads
    openblasSet(a.threads);
    if (a.want("naive")) {
        const int64_t n = std::min(a.naiveTokens, N);
        at::Tensor out = at::zeros({ n, H });
        const int64_t* ids = topIdx.data_ptr<int64_t>();
        const float* tw = topW.data_ptr<float>();
        const double s = bestOf(std::min(a.repeats, 2), [&] {
            out.zero_();
            for (int64_t t = 0; t < n; ++t) {
                at::Tensor xt = x.narrow(0, t, 1);
                for (int64_t k = 0; k < K; ++k) {
                    const int64_t e = ids[t * K + k];
                    at::Tensor gu = at::linear(xt, w.gateUp[e]);
                    at::Tensor h = at::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I);
                    out.narrow(0, t, 1).add_(at::linear(h, w.down[e]), tw[t * K + k]);
                }
            }
        });
        const double diff = (out - ref.narrow(0, 0, n)).abs().max().item<double>();
        char note[96];
        std::snprintf(note, sizeof note, "%lld tokens, max |diff| vs engine %.2e", static_cast<long long>(n), diff);
        rows.push_back({ "moe", "naive per-token loop (GEMV)", s, static_cast<double>(n) * K * 6 * H * I / 1e9, note });
    }

    // (c2) every expert on every token, masked by the routing weights (8x the useful FLOPs when K/E = 1/8)
    if (a.dense && a.want("dense")) {
        at::Tensor dense = at::zeros({ N, E }).scatter_(1, topIdx, topW); // [N, E] routing weights, 0 = not chosen
        at::Tensor out = at::zeros({ N, H });
        const double s = bestOf(
            1,
            [&] {
                out.zero_();
                for (int64_t e = 0; e < E; ++e) {
                    at::Tensor gu = at::linear(x, w.gateUp[e]);
                    at::Tensor h = at::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I);
                    out.addcmul_(at::linear(h, w.down[e]), dense.narrow(1, e, 1));
                }
            },
            /*warmup=*/false);
        const double diff = (out - ref).abs().max().item<double>();
        char note[96];
        std::snprintf(note, sizeof note, "executes %.0f GFLOP (%lldx), max |diff| %.2e",
            static_cast<double>(N) * E * 6 * H * I / 1e9, static_cast<long long>(E / K), diff);
        rows.push_back({ "moe", "all experts on all tokens (dense, masked)", s, expertGflop, note });
    }

    // (d) one whole decoder layer
    openblasSet(blasThreads);
    if (a.layer && a.want("layer")) {
        const int64_t S = a.seqLen, B = N / S;
        const int64_t nh = spec.numHeads, nkv = spec.numKvHeads, hd = spec.headDim;
        w.inputNorm = at::ones({ H });
        w.postAttentionNorm = at::ones({ H });
        w.q.weight = at::randn({ nh * hd, H }) * 0.02;
        w.k.weight = at::randn({ nkv * hd, H }) * 0.02;
        w.v.weight = at::randn({ nkv * hd, H }) * 0.02;
        w.o.weight = at::randn({ H, nh * hd }) * 0.02;
        w.qNorm = at::ones({ hd });
        w.kNorm = at::ones({ hd });
        const RotaryCache rope = buildRotaryCache(spec, S, x.options());
        at::Tensor xl = x.narrow(0, 0, B * S);
        at::Tensor hn, h;
        const double tNorm = bestOf(a.repeats, [&] { hn = rmsNorm(xl, w.inputNorm, spec.rmsNormEps); });
        const double tAttn = bestOf(a.repeats, [&] { h = xl + attention(spec, w, hn, B, rope, false); });
        if (blasDefault > 0) {
            openblasSet(blasThreads == 1 ? a.threads : 1);
            const at::Tensor other = xl + attention(spec, w, hn, B, rope, false);
            const at::Tensor one = xl.narrow(0, 0, S) + attention(spec, w, hn.narrow(0, 0, S), 1, rope, false);
            openblasSet(blasThreads);
            const at::Tensor oneSplit = xl.narrow(0, 0, S) + attention(spec, w, hn.narrow(0, 0, S), 1, rope, false);
            std::printf("split vs unsplit attention: max |diff| %lld seqs %.3g, 1 seq (heads split) %.3g\n",
                static_cast<long long>(B), (other - h).abs().max().item<double>(),
                (one - oneSplit).abs().max().item<double>());
        }
        const double tMoe = bestOf(a.repeats, [&] {
            at::Tensor hn2 = rmsNorm(h, w.postAttentionNorm, spec.rmsNormEps);
            RoutingRecord r;
            (void)(h + moeForward(spec, w, hn2, MoeOptions {}, &r));
        });
        const double tok = static_cast<double>(B * S);
        const double projGflop = tok * 2.0 * H * (2 * nh * hd + 2 * nkv * hd) / 1e9;
        const double sdpaGflop = static_cast<double>(B) * nh * 2.0 * 2.0 * S * S * hd / 1e9; // full S x S as computed
        rows.push_back({ "layer", "input rmsNorm", tNorm, 0, "" });
        rows.push_back({ "layer", "attention (proj + rope + scores + out)", tAttn, projGflop + sdpaGflop,
            "FLOPs count the full SxS score matrix" });
        rows.push_back(
            { "layer", "post norm + MoE + residual", tMoe, expertGflop * tok / N + routerGflop * tok / N, "" });
        const double total = tNorm + tAttn + tMoe;
        char note[64];
        std::snprintf(note, sizeof note, "%.0f tokens/s for 1 layer", tok / total);
        rows.push_back({ "layer", "sum", total, projGflop + sdpaGflop + (expertGflop + routerGflop) * tok / N, note });
    }

    printReport();
    return 0;
}
