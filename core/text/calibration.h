// Domain-labelled calibration data: reading a domain's source (plain text, JSONL with a text
// field, chat messages or input_ids), tokenizing it and packing its documents into fixed-length
// token sequences. Sequences never mix domains. Formats and rules: docs/calibration.md.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moeatlas {

class Tokenizer;
class ChatTemplate;

// "--domain NAME=PATH[:N]" parsed: N caps the number of packed sequences of this domain.
struct DomainSource {
    std::string name;
    std::string path;
    std::optional<int64_t> maxSamples;
};

// Parses "NAME=PATH[:N]"; throws InputError naming the argument when malformed.
DomainSource parseDomainArgument(const std::string& arg);

struct PackingOptions {
    int64_t seqLen = 512;
    std::optional<int64_t> maxSamplesPerDomain; // global cap, the per-domain :N wins
    uint64_t seed = 0; // order of documents before packing
    std::optional<int32_t> bosToken; // prepended to every document when set
    bool dropRemainder = true; // a last, short sequence is dropped
};

// How text sources are read into documents.
struct TextOptions {
    std::string textField = "text"; // field of a text JSONL record holding the document
    bool wholeFile = false; // a plain text file is one document, not blank-line blocks
    // How "messages" records are rendered (docs/calibration.md, "Chat templates"):
    //   "auto"  the model's chat template (chat_template.jinja or tokenizer_config.json beside the
    //           tokenizer) when it has one, else the "<role>: <content>" lines;
    //   "none"  the "<role>: <content>" lines;
    //   a name  that template of the model's list ("default", "tool_use", ...), which must exist;
    //   a path  a .jinja file (the special tokens still come from the model's tokenizer_config.json).
    std::string chatTemplate = "auto";
    bool addGenerationPrompt = false; // apply_chat_template's add_generation_prompt
    // Extra template variables as NAME -> JSON value text (enable_thinking -> "false"), given to
    // every record; apply_chat_template's **kwargs.
    std::vector<std::pair<std::string, std::string>> chatKwargs;
};

// Format names, as recorded in the atlas (AtlasDomain.format).
inline constexpr const char* kFormatText = "text"; // plain text file or directory of .txt
inline constexpr const char* kFormatTextJsonlPrefix = "text-jsonl:"; // + the field name
inline constexpr const char* kFormatMessagesJsonl = "messages-jsonl";
inline constexpr const char* kFormatInputIdsJsonl = "input_ids-jsonl";

struct PackedDomain {
    std::string name;
    std::string source;
    std::string format; // one of the format names above
    int64_t numDocuments = 0;
    std::vector<std::vector<int32_t>> sequences; // each exactly seqLen tokens
};

struct CalibrationSet {
    std::vector<PackedDomain> domains;
    PackingOptions packing;
    TextOptions text;
    // The tokenizer that encoded the text domains ("path (sha256 ...)"); empty when none did.
    std::string tokenizer;
    // How messages domains were rendered (ChatTemplate::describe(), or "none"); empty without one.
    std::string chatTemplate;
    int64_t totalTokens() const;
    bool hasTextDomain() const;
    // Human-readable description of the packing choices, recorded in the atlas provenance.
    std::string describePacking() const;
};

// One document of a text source before tokenization.
struct TextDocument {
    std::string text;
    std::string origin; // "file:line" where it starts, or the file of a whole-file document
};

// The format of a domain source: a directory -> "text" (its .txt files); a file ending in
// .jsonl/.ndjson/.json -> decided by its first record: "input_ids" -> "input_ids-jsonl", else
// the text field -> "text-jsonl:FIELD", else "messages" -> "messages-jsonl"; any other file ->
// "text". Throws InputError naming file:line when a JSONL's first record fits none of them.
std::string detectFormat(const std::string& path, const TextOptions& options);
// True for the formats whose documents are text and need a tokenizer.
bool isTextFormat(const std::string& format);

// Plain text: one document per block of lines separated by blank (whitespace-only) lines, or
// the whole file as one document. A UTF-8 BOM is dropped and "\r\n" read as "\n".
std::vector<TextDocument> readTextFile(const std::string& path, bool wholeFile);
// Every regular file ending in .txt directly inside `path`, in byte order of the names, one
// document per file (read as readTextFile(..., true)).
std::vector<TextDocument> readTextDirectory(const std::string& path);
// JSONL whose records hold the document as a string in `field`.
std::vector<TextDocument> readTextJsonl(const std::string& path, const std::string& field);
// JSONL whose records hold "messages": [{"role": R, "content": C}, ...]. Without a template they
// are rendered as the lines "R: C" joined by "\n"; with one, each record (its "messages", and its
// "tools" and "documents" when present) is rendered by the template as apply_chat_template does,
// with options.addGenerationPrompt and options.chatKwargs. Throws InputError naming file:line.
std::vector<TextDocument> readMessagesJsonl(
    const std::string& path, const ChatTemplate* chat = nullptr, const TextOptions& options = {});
// The chat template options.chatTemplate selects for the tokenizer at `tokenizerPath` (see
// TextOptions::chatTemplate); null for "none" and for "auto" when the model has none. Throws
// InputError for a missing named template or .jinja file, and for a template that does not parse.
std::unique_ptr<ChatTemplate> resolveChatTemplate(const TextOptions& options, const std::string& tokenizerPath);
// The documents of a text format source (any format for which isTextFormat() is true); `chat`
// renders messages records (see readMessagesJsonl).
std::vector<TextDocument> readTextDocuments(
    const std::string& path, const std::string& format, const TextOptions& options, const ChatTemplate* chat = nullptr);

// Documents of a JSONL file whose lines are objects with an "input_ids" array of integers.
// Throws InputError naming file and line for: unreadable file, invalid JSON, missing or
// non-integer "input_ids", ids outside [0, vocabSize) when vocabSize > 0, and a file with no documents.
std::vector<std::vector<int32_t>> readInputIdsJsonl(const std::string& path, int64_t vocabSize);

// Encodes each document without the tokenizer's special-token template (BOS is the packer's
// job). Documents that encode to no token are dropped. Throws InputError naming the document's
// origin when an id is outside [0, vocabSize) (vocabSize > 0): tokenizer and model disagree.
std::vector<std::vector<int32_t>> tokenizeDocuments(
    const std::vector<TextDocument>& documents, const Tokenizer& tokenizer, int64_t vocabSize);

// Packs documents into sequences of exactly seqLen tokens (documents concatenated in an order
// shuffled by seed, optional BOS per document). Deterministic for a given seed.
std::vector<std::vector<int32_t>> packDocuments(
    std::vector<std::vector<int32_t>> documents, const PackingOptions& options, std::optional<int64_t> maxSequences);

// Reads, tokenizes and packs every domain, each on its own. `tokenizer` may be null when no
// domain is text; `tokenizerDescription` is recorded as CalibrationSet::tokenizer. Throws
// InputError for a repeated domain name, a text domain without tokenizer, a BOS outside the
// vocabulary, a domain with fewer tokens than one sequence, and any reader error.
CalibrationSet buildCalibrationSet(const std::vector<DomainSource>& domains, const PackingOptions& packing,
    const TextOptions& text, const Tokenizer* tokenizer, const std::string& tokenizerDescription, int64_t vocabSize);

} // namespace moeatlas
