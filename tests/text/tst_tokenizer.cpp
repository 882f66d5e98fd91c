// Hand-checked cases for each tokenizer component: normalizers, pre-tokenizer split behaviors,
// BPE merging, byte_fallback/unk, added-token matching rules, post-processor, decoders, errors.
#include "text/tokenizer.h"
#include "text/tokenizer_decoders.h"
#include "text/tokenizer_normalizers.h"
#include "text/tokenizer_pretokenizers.h"
#include "util/error.h"

#include <QtTest>

#include <nlohmann/json.hpp>

using moeatlas::InputError;
using moeatlas::Tokenizer;
using Json = nlohmann::json;
using Strings = std::vector<std::string>;
using Ids = std::vector<int32_t>;

Q_DECLARE_METATYPE(Strings)

namespace {

const std::string kFile = "unit.json";

std::string normalize(const Json& j, std::string text)
{
    auto n = moeatlas::tok::makeNormalizer(j, moeatlas::tok::JsonPath(kFile, "normalizer"));
    n->normalize(text);
    return text;
}

Strings preTokenize(const Json& j, const std::string& text)
{
    auto p = moeatlas::tok::makePreTokenizer(j, moeatlas::tok::JsonPath(kFile, "pre_tokenizer"));
    std::vector<moeatlas::tok::Piece> pieces { { text, true } };
    p->apply(pieces);
    Strings out;
    for (auto& piece : pieces)
        out.push_back(piece.text);
    return out;
}

std::string decodeWith(const Json& j, Strings tokens)
{
    auto d = moeatlas::tok::makeDecoder(j, moeatlas::tok::JsonPath(kFile, "decoder"));
    d->decodeChain(tokens);
    std::string out;
    for (const auto& t : tokens)
        out += t;
    return out;
}

Json split(const std::string& behavior, bool invert, const char* kind = "String", const char* pattern = "-")
{
    return { { "type", "Split" }, { "pattern", { { kind, pattern } } }, { "behavior", behavior },
        { "invert", invert } };
}

// A character-level BPE over a..e with a few merges, no pre-tokenizer unless given.
Json smallTokenizer()
{
    return Json::parse(R"({
      "version": "1.0", "added_tokens": [
        {"id": 100, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 101, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
      "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false,
        "vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, " ": 5, "ab": 6, "bc": 7, "abc": 8, "cd": 9, "abcd": 10, "<s>": 100, "</s>": 101},
        "merges": ["b c", "a b", "c d", "ab cd"]}})");
}

Tokenizer load(const Json& j)
{
    return Tokenizer::fromJson(j.dump(), kFile);
}

} // namespace

class TstTokenizer : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void normalizers();
    void splitBehaviors_data();
    void splitBehaviors();
    void digitsAndPunctuation();
    void byteLevel();
    void metaspace();
    void bpeMergeOrder();
    void byteFallbackAndUnk();
    void addedTokenRules();
    void templateProcessing();
    void decoders();
    void invalidUtf8Input();
    void errors_data();
    void errors();
};

void TstTokenizer::normalizers()
{
    QCOMPARE(normalize({ { "type", "NFC" } }, "e\u0301"), std::string("\u00e9"));
    QCOMPARE(normalize({ { "type", "NFD" } }, "\u00e9"), std::string("e\u0301"));
    QCOMPARE(normalize({ { "type", "NFKC" } }, "\ufb01 \u2460 \uff21"), std::string("fi 1 A"));
    QCOMPARE(normalize({ { "type", "NFKD" } }, "\u00e9\ufb01"), std::string("e\u0301fi"));
    // per character: final sigma is not applied, dotted I keeps its combining dot
    QCOMPARE(normalize({ { "type", "Lowercase" } }, "\u03a3\u0391\u03a3 \u0130X"),
        std::string("\u03c3\u03b1\u03c3 i\u0307x"));
    QCOMPARE(normalize({ { "type", "Replace" }, { "pattern", { { "String", "  " } } }, { "content", "_" } }, "a     b"),
        std::string("a__ b"));
    QCOMPARE(normalize({ { "type", "Replace" }, { "pattern", { { "Regex", "\\s+" } } }, { "content", " " } },
                 "a \t\n b\u00a0c"),
        std::string("a b c"));
    QCOMPARE(normalize({ { "type", "Prepend" }, { "prepend", "\u2581" } }, "ab"), std::string("\u2581ab"));
    QCOMPARE(normalize({ { "type", "Prepend" }, { "prepend", "\u2581" } }, ""), std::string());
    QCOMPARE(normalize({ { "type", "Strip" }, { "strip_left", true }, { "strip_right", false } }, " \t a \u3000"),
        std::string("a \u3000"));
    QCOMPARE(normalize({ { "type", "Strip" }, { "strip_left", true }, { "strip_right", true } }, " \t a \u3000"),
        std::string("a"));
    QCOMPARE(
        normalize({ { "type", "Sequence" },
                      { "normalizers",
                          { { { "type", "NFD" } }, { { "type", "StripAccents" } }, { { "type", "Lowercase" } } } } },
            "\u00c9t\u00e9"),
        std::string("ete"));
}

void TstTokenizer::splitBehaviors_data()
{
    QTest::addColumn<QString>("behavior");
    QTest::addColumn<bool>("invert");
    QTest::addColumn<Strings>("pieces");
    QTest::newRow("isolated") << "Isolated" << false << Strings { "a", "-", "b", "-", "-", "c" };
    QTest::newRow("removed") << "Removed" << false << Strings { "a", "b", "c" };
    QTest::newRow("merged-prev") << "MergedWithPrevious" << false << Strings { "a-", "b-", "-", "c" };
    QTest::newRow("merged-next") << "MergedWithNext" << false << Strings { "a", "-b", "-", "-c" };
    QTest::newRow("contiguous") << "Contiguous" << false << Strings { "a", "-", "b", "--", "c" };
    QTest::newRow("removed-invert") << "Removed" << true << Strings { "-", "-", "-" };
    QTest::newRow("merged-prev-invert") << "MergedWithPrevious" << true << Strings { "a", "-b", "-", "-c" };
}

void TstTokenizer::splitBehaviors()
{
    QFETCH(QString, behavior);
    QFETCH(bool, invert);
    QFETCH(Strings, pieces);
    QCOMPARE(preTokenize(split(behavior.toStdString(), invert), "a-b--c"), pieces);
    // a regex finds "--" as one match
    QCOMPARE(preTokenize(split("Removed", true, "Regex", "-+"), "a-b--c"), (Strings { "-", "--" }));
}

void TstTokenizer::digitsAndPunctuation()
{
    QCOMPARE(preTokenize({ { "type", "Digits" }, { "individual_digits", true } }, "ab123c45"),
        (Strings { "ab", "1", "2", "3", "c", "4", "5" }));
    QCOMPARE(preTokenize({ { "type", "Digits" }, { "individual_digits", false } }, "ab123c45\u0663"),
        (Strings { "ab", "123", "c", "45\u0663" }));
    QCOMPARE(preTokenize({ { "type", "Punctuation" }, { "behavior", "Isolated" } }, "hi, you!?"),
        (Strings { "hi", ",", " you", "!", "?" }));
    QCOMPARE(preTokenize({ { "type", "WhitespaceSplit" } }, " a\tb \u3000c "), (Strings { "a", "b", "c" }));
}

void TstTokenizer::byteLevel()
{
    const Json bl = { { "type", "ByteLevel" }, { "add_prefix_space", true }, { "use_regex", true } };
    QCOMPARE(preTokenize(bl, "Hello world's 42"), (Strings { "\u0120Hello", "\u0120world", "'s", "\u012042" }));
    const Json noRegex = { { "type", "ByteLevel" }, { "add_prefix_space", false }, { "use_regex", false } };
    // bytes C3 A9 map to U+00C3 U+00A9; space to U+0120, newline to U+010A
    QCOMPARE(preTokenize(noRegex, "\u00e9 \n"), (Strings { "\u00c3\u00a9\u0120\u010a" }));
    // Qwen2's regex: numbers one digit at a time, whitespace runs keep their last space for the word
    const Json qwen = { { "type", "Split" },
        { "pattern",
            { { "Regex",
                "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" } } },
        { "behavior", "Isolated" }, { "invert", false } };
    QCOMPARE(preTokenize(qwen, "I'LL pay 123   now\n\n"),
        (Strings { "I", "'LL", " pay", " ", "1", "2", "3", "  ", " now", "\n\n" }));
}

void TstTokenizer::metaspace()
{
    const Json first
        = { { "type", "Metaspace" }, { "replacement", "\u2581" }, { "prepend_scheme", "first" }, { "split", true } };
    QCOMPARE(preTokenize(first, "Hello  world"), (Strings { "\u2581Hello", "\u2581", "\u2581world" }));
    const Json noSplit
        = { { "type", "Metaspace" }, { "replacement", "\u2581" }, { "prepend_scheme", "always" }, { "split", false } };
    QCOMPARE(preTokenize(noSplit, "a b"), (Strings { "\u2581a\u2581b" }));
    const Json never
        = { { "type", "Metaspace" }, { "replacement", "\u2581" }, { "prepend_scheme", "never" }, { "split", false } };
    QCOMPARE(preTokenize(never, "a b"), (Strings { "a\u2581b" }));
    // "first" only prepends at the very start of the input, not after an added token
    Json j = smallTokenizer();
    j["model"]["vocab"]["\u2581"] = 20;
    j["pre_tokenizer"]
        = { { "type", "Metaspace" }, { "replacement", "\u2581" }, { "prepend_scheme", "first" }, { "split", false } };
    const Tokenizer t = load(j);
    QCOMPARE(t.encode("ab", false), (Ids { 20, 6 }));
    QCOMPARE(t.encode("<s>ab", false), (Ids { 100, 6 }));
}

void TstTokenizer::bpeMergeOrder()
{
    const Tokenizer t = load(smallTokenizer());
    // "b c" has rank 0: a|bc, then no merge "a bc" exists
    QCOMPARE(t.encode("abc", false), (Ids { 0, 7 }));
    // b c first, then "c d" cannot apply any more since c is gone
    QCOMPARE(t.encode("abcd", false), (Ids { 0, 7, 3 }));
    // two "a b" merges of equal rank resolve left to right
    QCOMPARE(t.encode("abab", false), (Ids { 6, 6 }));
    QCOMPARE(t.encode("e", false), (Ids { 4 }));
    QCOMPARE(t.vocabSize(), int64_t(102));
    QCOMPARE(t.tokenToId("abcd"), std::optional<int32_t>(10));
    QCOMPARE(t.idToToken(7), std::optional<std::string>("bc"));
    QVERIFY(!t.idToToken(50));
}

void TstTokenizer::byteFallbackAndUnk()
{
    Json j = smallTokenizer();
    j["model"]["unk_token"] = "<unk>";
    j["model"]["vocab"]["<unk>"] = 30;
    j["model"]["vocab"]["<0xE4>"] = 31;
    j["model"]["vocab"]["<0xB8>"] = 32;
    j["model"]["vocab"]["<0xAD>"] = 33;
    j["model"]["byte_fallback"] = true;
    // 中 = E4 B8 AD has byte tokens; 文 does not and becomes <unk>
    QCOMPARE(load(j).encode("a\u4e2d\u6587b", false), (Ids { 0, 31, 32, 33, 30, 1 }));
    j["model"]["byte_fallback"] = false;
    j["model"]["fuse_unk"] = true;
    QCOMPARE(load(j).encode("a\u4e2d\u6587b", false), (Ids { 0, 30, 1 }));
    j["model"]["fuse_unk"] = false;
    QCOMPARE(load(j).encode("a\u4e2d\u6587b", false), (Ids { 0, 30, 30, 1 }));
    j["model"]["unk_token"] = nullptr; // no unk: unknown characters vanish, and a, b then merge
    QCOMPARE(load(j).encode("a\u4e2d\u6587b", false), (Ids { 6 }));
}

void TstTokenizer::addedTokenRules()
{
    Json j = smallTokenizer();
    auto add = [&](int id, const char* content, bool singleWord, bool lstrip, bool rstrip, bool normalized) {
        j["added_tokens"].push_back({ { "id", id }, { "content", content }, { "single_word", singleWord },
            { "lstrip", lstrip }, { "rstrip", rstrip }, { "normalized", normalized }, { "special", false } });
    };
    add(102, "ea", true, false, false, false);
    add(103, "[L]", false, true, false, false);
    add(104, "[R]", false, false, true, false);
    add(105, "dd", false, false, false, true);
    j["normalizer"] = { { "type", "Lowercase" } };
    const Tokenizer t = load(j);
    QCOMPARE(t.encode("ea", false), (Ids { 102 }));
    QCOMPARE(t.encode("ea c", false), (Ids { 102, 5, 2 }));
    QCOMPARE(t.encode("eab", false), (Ids { 4, 6 })); // not a single word: plain BPE
    QCOMPARE(t.encode("c  [L]", false), (Ids { 2, 103 })); // spaces left of [L] are swallowed
    QCOMPARE(t.encode("[R]  c", false), (Ids { 104, 2 })); // spaces right of [R] are swallowed
    QCOMPARE(t.encode("DD", false), (Ids { 105 })); // normalized token matches after Lowercase
    QCOMPARE(t.encode("<S>", false), (Ids {})); // raw tokens match before it: "<s>" is no match
    QCOMPARE(t.encode("a<s>b", false), (Ids { 0, 100, 1 }));
    QVERIFY(t.isSpecialToken(100));
    QVERIFY(!t.isSpecialToken(102));
    QCOMPARE(t.decode(Ids { 100, 0, 101 }, false), std::string("<s> a </s>")); // no decoder: joined by spaces
    QCOMPARE(t.decode(Ids { 100, 0, 101 }, true), std::string("a"));
}

void TstTokenizer::templateProcessing()
{
    Json j = smallTokenizer();
    j["post_processor"] = Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [100], "tokens": ["<s>"]},
                                     "</s>": {"id": "</s>", "ids": [101], "tokens": ["</s>"]}}})");
    const Tokenizer t = load(j);
    QCOMPARE(t.encode("ab", true), (Ids { 100, 6, 101 }));
    QCOMPARE(t.encode("ab", false), (Ids { 6 }));
    QCOMPARE(t.encode("", true), (Ids { 100, 101 }));
    QCOMPARE(t.bosTokenId(), std::optional<int32_t>(100));
    QCOMPARE(t.eosTokenId(), std::optional<int32_t>(101));
}

void TstTokenizer::decoders()
{
    QCOMPARE(decodeWith({ { "type", "ByteFallback" } }, { "<0xE4>", "<0xB8>", "<0xAD>", "a" }), std::string("\u4e2da"));
    QCOMPARE(decodeWith({ { "type", "ByteFallback" } }, { "<0xE4>", "<0xB8>", "a" }), std::string("\ufffd\ufffda"));
    QCOMPARE(decodeWith({ { "type", "Strip" }, { "content", " " }, { "start", 1 }, { "stop", 1 } }, { "  a  " }),
        std::string(" a "));
    QCOMPARE(decodeWith({ { "type", "Metaspace" }, { "replacement", "\u2581" }, { "prepend_scheme", "always" } },
                 { "\u2581Hello", "\u2581world" }),
        std::string("Hello world"));
    QCOMPARE(decodeWith({ { "type", "ByteLevel" } }, { "\u0120Hello", "\u00c3\u00a9" }), std::string(" Hello\u00e9"));
    // a lone continuation byte becomes U+FFFD
    QCOMPARE(decodeWith({ { "type", "ByteLevel" } }, { "\u00c3" }), std::string("\ufffd"));
    const Json llama = Json::parse(R"({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})");
    QCOMPARE(decodeWith(llama, { "\u2581Hi", "\u2581", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>" }),
        std::string("Hi \U0001F600"));
}

void TstTokenizer::invalidUtf8Input()
{
    const Tokenizer t = load(smallTokenizer());
    // invalid bytes are read as U+FFFD, which this vocabulary lacks: they vanish
    QCOMPARE(t.encode(std::string("a\xff\xc3", 3), false), (Ids { 0 }));
}

void TstTokenizer::errors_data()
{
    QTest::addColumn<QString>("json");
    QTest::addColumn<QString>("expected");
    Json j = smallTokenizer();
    j["model"]["type"] = "WordPiece";
    QTest::newRow("model") << QString::fromStdString(j.dump())
                           << "unit.json: model.type: unsupported model type \"WordPiece\"";
    j = smallTokenizer();
    j["normalizer"]
        = { { "type", "Sequence" }, { "normalizers", { { { "type", "NFC" } }, { { "type", "BertNormalizer" } } } } };
    QTest::newRow("normalizer") << QString::fromStdString(
        j.dump()) << "unit.json: normalizer.normalizers[1].type: unsupported normalizer type \"BertNormalizer\"";
    j = smallTokenizer();
    j["pre_tokenizer"]
        = { { "type", "Sequence" }, { "pretokenizers", { split("Isolated", false, "Regex", "(unclosed") } } };
    QTest::newRow("regex") << QString::fromStdString(j.dump())
                           << "unit.json: pre_tokenizer.pretokenizers[0].pattern.Regex: invalid regex";
    j = smallTokenizer();
    j["pre_tokenizer"] = { { "type", "Whitespace" } };
    QTest::newRow("pretok") << QString::fromStdString(j.dump())
                            << "unit.json: pre_tokenizer.type: unsupported pre-tokenizer type \"Whitespace\"";
    j = smallTokenizer();
    j["decoder"] = { { "type", "WordPiece" } };
    QTest::newRow("decoder") << QString::fromStdString(j.dump())
                             << "unit.json: decoder.type: unsupported decoder type \"WordPiece\"";
    j = smallTokenizer();
    j["model"]["merges"].push_back("a zz");
    QTest::newRow("merge") << QString::fromStdString(j.dump())
                           << "unit.json: model.merges[4]: merge token \"zz\" is not in the vocabulary";
    QTest::newRow("json") << "{\"model\": "
                          << "unit.json: invalid JSON";
}

void TstTokenizer::errors()
{
    QFETCH(QString, json);
    QFETCH(QString, expected);
    try {
        (void)Tokenizer::fromJson(json.toStdString(), kFile);
        QFAIL("no InputError");
    } catch (const InputError& e) {
        const QString what = QString::fromUtf8(e.what());
        QVERIFY2(what.startsWith(expected), qPrintable(what));
    }
    try {
        (void)Tokenizer::fromFile("/nonexistent/tokenizer.json");
        QFAIL("no InputError");
    } catch (const InputError& e) {
        QVERIFY(QString::fromUtf8(e.what()).contains(QStringLiteral("/nonexistent/tokenizer.json")));
    }
}

QTEST_GUILESS_MAIN(TstTokenizer)
#include "tst_tokenizer.moc"
