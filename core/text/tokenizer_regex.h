// Internal: the regex engine of the pre-tokenizers and normalizers (PCRE2, UTF + UCP + JIT),
// iterating matches the way HF `tokenizers` does with Oniguruma.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moeatlas::tok {

// A run of the input: a match of the pattern, or the text between two matches.
struct Span {
    std::size_t start = 0;
    std::size_t end = 0;
    bool isMatch = false;
};

class Regex {
public:
    // Throws std::invalid_argument with PCRE2's message when the pattern does not compile.
    explicit Regex(const std::string& pattern);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Appends (start, end) of every match, left to right. An empty match right where the previous
    // match ended is skipped by advancing one character, as Oniguruma's find_iter does.
    void findAll(std::string_view subject, std::vector<std::pair<std::size_t, std::size_t>>& out) const;
    // The whole of `subject` as alternating non-match/match spans (HF Pattern::find_matches).
    void findSpans(std::string_view subject, std::vector<Span>& out) const;

    // Oniguruma's \s also matches U+0085, PCRE2's (with UCP) does not: add it, in and out of classes.
    static std::string translate(const std::string& pattern);

private:
    void* m_code = nullptr; // pcre2_code_8*, kept out of this header
    bool m_jit = false;
};

// A regex that matches `literal` exactly.
std::string escapeRegex(std::string_view literal);

// HF's pattern of Split, Replace: {"String": literal} or {"Regex": pattern}.
class Pattern {
public:
    static Pattern literal(std::string text);
    static Pattern regex(const std::string& pattern);

    void findAll(std::string_view subject, std::vector<std::pair<std::size_t, std::size_t>>& out) const;
    void findSpans(std::string_view subject, std::vector<Span>& out) const;
    // Every match replaced by `content`.
    std::string replaceAll(std::string_view subject, std::string_view content) const;

private:
    std::string m_literal;
    std::shared_ptr<const Regex> m_regex;
};

} // namespace moeatlas::tok
