// Calibration data: domain arguments, format detection, each reader (with the file:line of its
// errors), tokenization, packing (seed determinism, BOS placement, caps) and domain separation.
#include "test_io.h"
#include "text/calibration.h"
#include "text/tokenizer.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QtTest>

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>
#include <set>

using namespace moeatlas;
using Ids = std::vector<int32_t>;
using Docs = std::vector<std::vector<int32_t>>;

namespace {

void writeFile(const std::string& path, const std::string& bytes)
{
    std::ofstream out(path, std::ios::binary);
    out << bytes;
}

// The InputError message of fn, or "" when it does not throw one.
std::string errorOf(const std::function<void()>& fn)
{
    try {
        fn();
    } catch (const InputError& e) {
        return e.what();
    }
    return {};
}

#define EXPECT_ERROR(expr, fragment)                                                                                   \
    do {                                                                                                               \
        const std::string what_ = errorOf([&] { (void)(expr); });                                                      \
        QVERIFY2(!what_.empty(), "no InputError from " #expr);                                                         \
        QVERIFY2(what_.find(fragment) != std::string::npos,                                                            \
            qPrintable(QStringLiteral("'%1' lacks '%2'")                                                               \
                           .arg(QString::fromStdString(what_), QString::fromStdString(fragment))));                    \
    } while (false)

// expr throws a RequestError of `field_` whose message contains `fragment` and names no CLI flag
// (the workbench shows it as it is; the CLI puts the flag in front, app/request_flags.h).
#define EXPECT_REQUEST_ERROR(expr, field_, fragment)                                                                   \
    do {                                                                                                               \
        const moeatlas::test::CaughtRequestError e_ = moeatlas::test::requestErrorOf([&] { (void)(expr); });           \
        QCOMPARE(e_.field, std::string(field_));                                                                       \
        QVERIFY2(e_.message.contains(QString::fromStdString(fragment)), qPrintable(e_.message));                       \
        QVERIFY2(!e_.message.contains(QLatin1String("--")), qPrintable(e_.message));                                   \
    } while (false)

std::vector<std::string> texts(const std::vector<TextDocument>& docs)
{
    std::vector<std::string> out;
    for (const auto& d : docs)
        out.push_back(d.text);
    return out;
}

std::vector<std::string> origins(const std::vector<TextDocument>& docs)
{
    std::vector<std::string> out;
    for (const auto& d : docs)
        out.push_back(d.origin);
    return out;
}

// Character-level tokenizer whose ids are the ASCII codes of printable characters and "\n";
// "<s>" = 1. No merges, so the ids of a text are readable by eye.
Tokenizer asciiTokenizer()
{
    nlohmann::json vocab = nlohmann::json::object();
    vocab["<s>"] = 1;
    vocab["\n"] = 10;
    for (int c = 32; c < 127; ++c)
        vocab[std::string(1, static_cast<char>(c))] = c;
    nlohmann::json j = nlohmann::json::parse(R"({
      "version": "1.0",
      "added_tokens": [{"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                        "normalized": false, "special": true}],
      "normalizer": null, "pre_tokenizer": null, "decoder": null,
      "post_processor": {"type": "TemplateProcessing",
                         "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                         "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false,
                "merges": []}})");
    j["model"]["vocab"] = vocab;
    return Tokenizer::fromJson(j.dump(), "ascii.json");
}

Ids ascii(const std::string& s)
{
    return Ids(s.begin(), s.end());
}

// Documents whose ids say where they come from: document d of domain base holds base + d, len times.
Docs taggedDocs(int32_t base, int count, int len)
{
    Docs docs;
    for (int d = 0; d < count; ++d)
        docs.push_back(Ids(static_cast<std::size_t>(len), base + d));
    return docs;
}

} // namespace

class TstCalibration : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;
    std::string path(const char* name) const { return m_dir.filePath(QString::fromUtf8(name)).toStdString(); }

private Q_SLOTS:
    void initTestCase() { QVERIFY(m_dir.isValid()); }

    void domainArgument()
    {
        DomainSource d = parseDomainArgument("code=/data/code.jsonl:64");
        QCOMPARE(d.name, std::string("code"));
        QCOMPARE(d.path, std::string("/data/code.jsonl"));
        QCOMPARE(d.maxSamples.value_or(-1), int64_t(64));
        d = parseDomainArgument("web=C:/x:y/prose.txt");
        QCOMPARE(d.path, std::string("C:/x:y/prose.txt"));
        QVERIFY(!d.maxSamples);
        EXPECT_REQUEST_ERROR(
            parseDomainArgument("nopath"), "domains", std::string("domain 'nopath': expected NAME=PATH"));
        EXPECT_REQUEST_ERROR(parseDomainArgument("a=b:0"), "domains", std::string("sample cap must be > 0"));
        EXPECT_REQUEST_ERROR(parseDomainArgument("a b=x"), "domains", std::string("domain names use"));
    }

    void detectFormats()
    {
        const TextOptions defaults;
        TextOptions body;
        body.textField = "body";
        writeFile(path("ids.jsonl"), "\n{\"input_ids\": [1, 2], \"text\": \"x\"}\n");
        writeFile(path("text.jsonl"), "{\"text\": \"a\", \"messages\": []}\n");
        writeFile(path("body.ndjson"), "{\"body\": \"a\"}\n");
        writeFile(path("chat.JSONL"), "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
        writeFile(path("plain.md"), "{\"input_ids\": [1]}\n"); // not JSONL by name: plain text
        writeFile(path("odd.jsonl"), "\n\n{\"prompt\": \"a\"}\n");
        writeFile(path("empty.jsonl"), "\n  \n");
        writeFile(path("array.json"), "[1, 2]\n");
        QCOMPARE(detectFormat(path("ids.jsonl"), defaults), std::string("input_ids-jsonl"));
        QCOMPARE(detectFormat(path("text.jsonl"), defaults), std::string("text-jsonl:text"));
        QCOMPARE(detectFormat(path("text.jsonl"), body), std::string("messages-jsonl"));
        QCOMPARE(detectFormat(path("body.ndjson"), body), std::string("text-jsonl:body"));
        QCOMPARE(detectFormat(path("chat.JSONL"), defaults), std::string("messages-jsonl"));
        QCOMPARE(detectFormat(path("plain.md"), defaults), std::string("text"));
        QCOMPARE(detectFormat(m_dir.path().toStdString(), defaults), std::string("text"));
        QVERIFY(isTextFormat("text") && isTextFormat("text-jsonl:body") && isTextFormat("messages-jsonl"));
        QVERIFY(!isTextFormat("input_ids-jsonl"));
        EXPECT_ERROR(detectFormat(path("odd.jsonl"), body),
            path("odd.jsonl") + ":3: expected an object with \"input_ids\", \"messages\" or the text field \"body\"");
        EXPECT_ERROR(detectFormat(path("empty.jsonl"), defaults), path("empty.jsonl") + ": no documents");
        EXPECT_ERROR(detectFormat(path("array.json"), defaults),
            path("array.json")
                + ":1: expected an object with \"input_ids\", \"messages\" or the text field \"text\", got array");
        EXPECT_ERROR(detectFormat(path("missing.txt"), defaults), path("missing.txt") + ": cannot open");
    }

    void plainTextBlocks()
    {
        // BOM, CRLF, leading blank lines, whitespace-only separators, multi-line blocks, no final newline.
        writeFile(path("prose.txt"),
            "\xEF\xBB\xBF\r\n\r\nfirst line\r\n  second line\r\n\r\n \t\n\nnext\n\n\nlast\n  indented");
        const auto docs = readTextFile(path("prose.txt"), false);
        QCOMPARE(texts(docs), (std::vector<std::string> { "first line\n  second line", "next", "last\n  indented" }));
        const std::string p = path("prose.txt");
        QCOMPARE(origins(docs), (std::vector<std::string> { p + ":3", p + ":8", p + ":11" }));

        const auto whole = readTextFile(path("prose.txt"), true);
        QCOMPARE(whole.size(), std::size_t(1));
        QCOMPARE(whole[0].text, std::string("\n\nfirst line\n  second line\n\n \t\n\nnext\n\n\nlast\n  indented"));
        QCOMPARE(whole[0].origin, p);

        writeFile(path("blank.txt"), "\n \n\t\n");
        EXPECT_ERROR(readTextFile(path("blank.txt"), false), path("blank.txt") + ": no documents");
        EXPECT_ERROR(readTextFile(path("blank.txt"), true), path("blank.txt") + ": no documents");
        EXPECT_ERROR(readTextFile(path("nope.txt"), false), path("nope.txt") + ": cannot open");
    }

    void textDirectory()
    {
        QTemporaryDir dir;
        const std::string d = dir.path().toStdString();
        writeFile(d + "/b.txt", "second\n\nsame document\n");
        writeFile(d + "/a.txt", "first");
        writeFile(d + "/c.txt", " \n"); // blank: no document
        writeFile(d + "/d.md", "not read");
        QVERIFY(QDir(dir.path()).mkdir(QStringLiteral("sub.txt"))); // a directory: not read
        const auto docs = readTextDirectory(d);
        QCOMPARE(texts(docs), (std::vector<std::string> { "first", "second\n\nsame document\n" }));
        QCOMPARE(origins(docs), (std::vector<std::string> { d + "/a.txt", d + "/b.txt" }));
        QCOMPARE(texts(readTextDocuments(d, "text", {})), texts(docs));

        QTemporaryDir empty;
        writeFile(empty.path().toStdString() + "/x.md", "x");
        EXPECT_ERROR(readTextDirectory(empty.path().toStdString()), std::string("no .txt files"));
    }

    void textJsonl()
    {
        const std::string p = path("notes.jsonl");
        writeFile(p, "{\"body\": \"one\\ntwo\", \"id\": 1}\n\n{\"body\": \"\"}\n{\"body\": \"caf\\u00e9\"}\n");
        const auto docs = readTextJsonl(p, "body");
        QCOMPARE(texts(docs), (std::vector<std::string> { "one\ntwo", "caf\xC3\xA9" }));
        QCOMPARE(origins(docs), (std::vector<std::string> { p + ":1", p + ":4" }));
        TextOptions body;
        body.textField = "body";
        QCOMPARE(texts(readTextDocuments(p, "text-jsonl:body", body)), texts(docs));

        writeFile(p, "{\"body\": \"ok\"}\n{\"body\": 3}\n");
        EXPECT_ERROR(readTextJsonl(p, "body"), p + ":2: expected an object with a string field \"body\", got number");
        writeFile(p, "{\"body\": \"ok\"}\n{\"text\": \"x\"}\n");
        EXPECT_ERROR(readTextJsonl(p, "body"), p + ":2: expected an object with a string field \"body\"");
        writeFile(p, "{\"body\": \"ok\"}\n{\"body\": \"x\"\n");
        EXPECT_ERROR(readTextJsonl(p, "body"), p + ":2: invalid JSON");
        writeFile(p, "{\"body\": \"\"}\n");
        EXPECT_ERROR(readTextJsonl(p, "body"), p + ": no documents");
    }

    void messagesJsonl()
    {
        const std::string p = path("chat.jsonl");
        writeFile(p,
            "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
            "{\"role\": \"user\", \"content\": \"Hi\\nthere\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}]}\n"
            "{\"messages\": []}\n"
            "{\"messages\": [{\"role\": \"user\", \"content\": \"\"}], \"meta\": 1}\n");
        const auto docs = readMessagesJsonl(p);
        QCOMPARE(texts(docs),
            (std::vector<std::string> { "system: Be brief.\nuser: Hi\nthere\nassistant: Hello.", "user: " }));
        QCOMPARE(origins(docs), (std::vector<std::string> { p + ":1", p + ":3" }));

        writeFile(p,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n"
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": "
            "null}]}\n");
        EXPECT_ERROR(
            readMessagesJsonl(p), p + ":2: messages[1]: expected an object with string \"role\" and \"content\"");
        writeFile(p, "{\"messages\": \"hi\"}\n");
        EXPECT_ERROR(readMessagesJsonl(p), p + ":1: expected an object with a \"messages\" array");
    }

    // A number JSON cannot hold (out of double range) is invalid JSON naming file:line, in every JSONL
    // reader; nlohmann reports it as out_of_range, not parse_error (found by fuzz_calibration:
    // tests/fuzz/corpus/calibration/regression-number-overflow.bin).
    void jsonlNumberOverflow()
    {
        const std::string p = path("overflow.jsonl");
        writeFile(p, "{\"messages\": [], \"n\": 1e999}\n");
        EXPECT_ERROR(readMessagesJsonl(p), p + ":1: invalid JSON");
        EXPECT_ERROR(readTextJsonl(p, "text"), p + ":1: invalid JSON");
        EXPECT_ERROR(readInputIdsJsonl(p, 0), p + ":1: invalid JSON");
        EXPECT_ERROR(detectFormat(p, TextOptions {}), p + ":1: invalid JSON");
    }

    void inputIdsJsonl()
    {
        const std::string p = path("ids.jsonl");
        writeFile(p, "{\"input_ids\": [5, 6, 7]}\n{\"input_ids\": []}\n\n{\"input_ids\": [9]}\n");
        QCOMPARE(readInputIdsJsonl(p, 10), (Docs { { 5, 6, 7 }, { 9 } }));
        EXPECT_ERROR(readInputIdsJsonl(p, 9), p + ":4: token id 9 is outside the vocabulary [0, 9)");
        writeFile(p, "{\"input_ids\": [1]}\n{\"input_ids\": [1, \"2\"]}\n");
        EXPECT_ERROR(readInputIdsJsonl(p, 0), p + ":2: \"input_ids\" holds \"2\", expected integers");
        writeFile(p, "{\"ids\": [1]}\n");
        EXPECT_ERROR(readInputIdsJsonl(p, 0), p + ":1: expected an object with an \"input_ids\" array");
    }

    void tokenize()
    {
        const Tokenizer tok = asciiTokenizer();
        // The template would add <s>: calibration text is encoded without it.
        QCOMPARE(tok.encode("ab", true), (Ids { 1, 'a', 'b' }));
        // Added tokens written in the text (a pre-rendered chat template) are still matched.
        QCOMPARE(tokenizeDocuments({ { "a<s>b", "f:0" } }, tok, 128), (Docs { { 'a', 1, 'b' } }));
        const std::vector<TextDocument> docs { { "ab c", "f:1" }, { "", "f:2" }, { "x\ny", "f:3" } };
        QCOMPARE(tokenizeDocuments(docs, tok, 128), (Docs { ascii("ab c"), ascii("x\ny") }));
        EXPECT_ERROR(tokenizeDocuments(docs, tok, 100),
            std::string(
                "f:3: ascii.json encodes this document to token id 120, outside the model vocabulary [0, 100)"));
    }

    void packingDeterministicBySeed()
    {
        PackingOptions o;
        o.seqLen = 4;
        o.seed = 11;
        const Docs docs = taggedDocs(10, 20, 3);
        const auto a = packDocuments(docs, o, std::nullopt);
        QCOMPARE(packDocuments(docs, o, std::nullopt), a);
        QCOMPARE(a.size(), std::size_t(15)); // 60 tokens / 4
        for (const auto& s : a)
            QCOMPARE(s.size(), std::size_t(4));
        o.seed = 12;
        const auto b = packDocuments(docs, o, std::nullopt);
        QVERIFY(a != b);
        // Same tokens, another order: the seed only shuffles whole documents.
        std::multiset<int32_t> ta, tb;
        for (const auto& s : a)
            ta.insert(s.begin(), s.end());
        for (const auto& s : b)
            tb.insert(s.begin(), s.end());
        QCOMPARE(ta, tb);
        // Documents stay contiguous: the stream is runs of 3 equal ids.
        std::vector<int32_t> stream;
        for (const auto& s : b)
            stream.insert(stream.end(), s.begin(), s.end());
        for (std::size_t i = 0; i < stream.size(); i += 3)
            QVERIFY(stream[i] == stream[i + 1] && stream[i] == stream[i + 2]);
    }

    void packingBosAndRemainder()
    {
        PackingOptions o;
        o.seqLen = 5;
        o.bosToken = 1;
        const Docs docs = taggedDocs(10, 3, 3); // 3 docs of 3 tokens -> 12 tokens with BOS
        const auto seqs = packDocuments(docs, o, std::nullopt);
        QCOMPARE(seqs.size(), std::size_t(2)); // the last 2 tokens are dropped
        std::vector<int32_t> stream;
        for (const auto& s : seqs)
            stream.insert(stream.end(), s.begin(), s.end());
        for (std::size_t i = 0; i < stream.size(); ++i)
            QCOMPARE(stream[i] == 1, i % 4 == 0); // BOS before every document, nowhere else
        QCOMPARE(stream[0], 1);
        o.dropRemainder = false;
        const auto kept = packDocuments(docs, o, std::nullopt);
        QCOMPARE(kept.size(), std::size_t(3));
        QCOMPARE(kept.back().size(), std::size_t(2));
        o.seqLen = 0;
        EXPECT_REQUEST_ERROR(packDocuments(docs, o, std::nullopt), "seqLen",
            std::string("0 tokens per sequence (expected a count > 0)"));
    }

    void packingCaps()
    {
        PackingOptions o;
        o.seqLen = 4;
        const Docs docs = taggedDocs(10, 10, 6);
        QCOMPARE(packDocuments(docs, o, 3).size(), std::size_t(3));
        QCOMPARE(packDocuments(docs, o, 100).size(), std::size_t(15));
        // A cap keeps the first sequences of the uncapped packing.
        const auto all = packDocuments(docs, o, std::nullopt);
        const auto capped = packDocuments(docs, o, 3);
        QVERIFY(std::equal(capped.begin(), capped.end(), all.begin()));
    }

    void calibrationSet()
    {
        // Two input_ids domains with disjoint ids, one text domain, caps, BOS.
        const std::string a = path("set_a.jsonl"), b = path("set_b.jsonl"), t = path("set_t.txt");
        std::string la, lb;
        for (int d = 0; d < 8; ++d) {
            la += "{\"input_ids\": [" + std::to_string(20 + d) + ", " + std::to_string(20 + d) + ", 20]}\n";
            lb += "{\"input_ids\": [" + std::to_string(40 + d) + ", 40, 40, 40, 40]}\n";
        }
        writeFile(a, la);
        writeFile(b, lb);
        writeFile(t, "abc\n\nde\nf\n\nxyz xyz\n");
        const Tokenizer tok = asciiTokenizer();
        PackingOptions o;
        o.seqLen = 4;
        o.seed = 5;
        o.bosToken = 1;
        o.maxSamplesPerDomain = 5;
        const std::vector<DomainSource> domains { { "a", a, std::nullopt }, { "b", b, 2 }, { "t", t, std::nullopt } };
        const CalibrationSet set = buildCalibrationSet(domains, o, {}, &tok, "ascii.json (sha256 x)", 128);
        QCOMPARE(set.domains.size(), std::size_t(3));
        QCOMPARE(set.domains[0].format, std::string("input_ids-jsonl"));
        QCOMPARE(set.domains[2].format, std::string("text"));
        QCOMPARE(set.domains[0].sequences.size(), std::size_t(5)); // global cap (32 tokens -> 8)
        QCOMPARE(set.domains[1].sequences.size(), std::size_t(2)); // the per-domain :2 wins
        QCOMPARE(set.domains[2].numDocuments, int64_t(3));
        QCOMPARE(set.domains[2].sequences.size(), std::size_t(4)); // 3 + 4 + 7 tokens + 3 BOS = 17 -> 4
        // No sequence mixes domains: every id belongs to its domain's range (or is BOS).
        for (const auto& s : set.domains[0].sequences)
            for (int32_t id : s)
                QVERIFY(id == 1 || (id >= 20 && id < 28));
        for (const auto& s : set.domains[1].sequences)
            for (int32_t id : s)
                QVERIFY(id == 1 || (id >= 40 && id < 48));
        for (const auto& s : set.domains[2].sequences)
            for (int32_t id : s)
                QVERIFY(id == 1 || id == '\n' || id == ' ' || (id >= 'a' && id <= 'z'));
        QCOMPARE(set.totalTokens(), int64_t(4 * 11));
        const std::string desc = set.describePacking();
        QVERIFY2(desc.find("seed 5") != std::string::npos
                && desc.find("BOS 1 before each document") != std::string::npos
                && desc.find("ascii.json (sha256 x) without its special-token template") != std::string::npos
                && desc.find("one document per blank-line-separated block") != std::string::npos,
            desc.c_str());
        QCOMPARE(set.tokenizer, std::string("ascii.json (sha256 x)"));
        // Same inputs, same set.
        const CalibrationSet again = buildCalibrationSet(domains, o, {}, &tok, "ascii.json (sha256 x)", 128);
        for (std::size_t d = 0; d < 3; ++d)
            QCOMPARE(again.domains[d].sequences, set.domains[d].sequences);

        // input_ids only: no tokenizer needed, no tokenizer in the description.
        const CalibrationSet ids = buildCalibrationSet({ { "a", a, std::nullopt } }, o, {}, nullptr, {}, 128);
        QVERIFY(ids.describePacking().find("tokenizer") == std::string::npos);
        QVERIFY(ids.describePacking().find("text encoded") == std::string::npos);

        TextOptions whole;
        whole.wholeFile = true;
        const CalibrationSet wholeSet = buildCalibrationSet({ { "t", t, std::nullopt } }, o, whole, &tok, "tok", 128);
        QCOMPARE(wholeSet.domains[0].numDocuments, int64_t(1));
        QVERIFY(wholeSet.describePacking().find("one document each (whole files)") != std::string::npos);

        EXPECT_REQUEST_ERROR(buildCalibrationSet({ { "t", t, std::nullopt } }, o, {}, nullptr, {}, 128), "tokenizer",
            std::string("domain 't': " + t + " is text and needs a tokenizer"));
        EXPECT_REQUEST_ERROR(
            buildCalibrationSet({ { "a", a, std::nullopt }, { "a", b, std::nullopt } }, o, {}, nullptr, {}, 128),
            "domains", std::string("domain 'a': the domain name is given twice"));
        EXPECT_REQUEST_ERROR(
            buildCalibrationSet({}, o, {}, nullptr, {}, 128), "domains", std::string("no calibration data"));
        PackingOptions badBos = o;
        badBos.bosToken = 200;
        EXPECT_ERROR(buildCalibrationSet({ { "a", a, std::nullopt } }, badBos, {}, nullptr, {}, 128),
            std::string("BOS token 200 is outside the model vocabulary [0, 128)"));
        PackingOptions longSeq = o;
        longSeq.seqLen = 1000;
        EXPECT_REQUEST_ERROR(buildCalibrationSet({ { "a", a, std::nullopt } }, longSeq, {}, nullptr, {}, 128), "seqLen",
            a + ": domain 'a' has fewer tokens than one sequence of 1000 tokens");
        EXPECT_ERROR(buildCalibrationSet({ { "t", t, std::nullopt } }, o, {}, &tok, "tok", 110),
            t + ":6: ascii.json encodes this document to token id 120"); // 'x' of "xyz"
    }
};

QTEST_GUILESS_MAIN(TstCalibration)
#include "tst_calibration.moc"
