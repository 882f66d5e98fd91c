#include "tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>

namespace moeatlas::tok {

namespace {

// One match-data block per thread, shared by every pattern: only the whole-match pair is read.
pcre2_match_data* threadMatchData()
{
    struct Holder {
        pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
        ~Holder() { pcre2_match_data_free(data); }
    };
    thread_local Holder holder;
    return holder.data;
}

} // namespace

std::string Regex::translate(const std::string& p)
{
    std::string out;
    out.reserve(p.size() + 16);
    bool inClass = false;
    for (std::size_t i = 0; i < p.size(); ++i) {
        const char c = p[i];
        if (c == '\\' && i + 1 < p.size() && p[i + 1] == 'Q') {
            // \Q...\E quotes a literal: copy it untouched
            const auto close = p.find("\\E", i + 2);
            const std::size_t stop = close == std::string::npos ? p.size() : close + 2;
            out.append(p, i, stop - i);
            i = stop - 1;
            continue;
        }
        if (c == '\\' && i + 1 < p.size()) {
            const char n = p[i + 1];
            if (n == 's') {
                out += inClass ? "\\s\\x{85}" : "[\\s\\x{85}]";
            } else if (n == 'S' && !inClass) {
                out += "[^\\s\\x{85}]";
            } else {
                out += c;
                out += n;
            }
            ++i;
            continue;
        }
        if (inClass && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
            // POSIX class [:name:] inside a bracket expression
            const auto close = p.find(":]", i + 2);
            if (close != std::string::npos) {
                out.append(p, i, close + 2 - i);
                i = close + 1;
                continue;
            }
        }
        if (!inClass && c == '[') {
            inClass = true;
            out += c;
            // a ']' (or '^]') right after the opening bracket is a literal
            if (i + 1 < p.size() && p[i + 1] == '^') {
                out += '^';
                ++i;
            }
            if (i + 1 < p.size() && p[i + 1] == ']') {
                out += ']';
                ++i;
            }
            continue;
        }
        if (inClass && c == ']')
            inClass = false;
        out += c;
    }
    return out;
}

Regex::Regex(const std::string& pattern)
{
    const std::string translated = translate(pattern);
    int errorCode = 0;
    PCRE2_SIZE errorOffset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
        PCRE2_UTF | PCRE2_UCP, &errorCode, &errorOffset, nullptr);
    if (!code) {
        PCRE2_UCHAR buffer[256];
        pcre2_get_error_message(errorCode, buffer, sizeof buffer);
        throw std::invalid_argument(
            "invalid regex at offset " + std::to_string(errorOffset) + ": " + reinterpret_cast<const char*>(buffer));
    }
    m_code = code;
    m_jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex()
{
    pcre2_code_free(static_cast<pcre2_code*>(m_code));
}

void Regex::findAll(std::string_view subject, std::vector<std::pair<std::size_t, std::size_t>>& out) const
{
    auto* code = static_cast<pcre2_code*>(m_code);
    pcre2_match_data* md = threadMatchData();
    const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
    std::size_t searchFrom = 0;
    std::size_t lastMatchEnd = static_cast<std::size_t>(-1);
    while (searchFrom <= subject.size()) {
        int rc = m_jit ? pcre2_jit_match(code, data, subject.size(), searchFrom, 0, md, nullptr)
                       : pcre2_match(code, data, subject.size(), searchFrom, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(code, data, subject.size(), searchFrom, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH)
            return;
        if (rc < 0 && rc != 0) {
            PCRE2_UCHAR buffer[256];
            pcre2_get_error_message(rc, buffer, sizeof buffer);
            throw std::runtime_error(std::string("regex match failed: ") + reinterpret_cast<const char*>(buffer));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const std::size_t s = ov[0], e = ov[1];
        if (s == e && e == lastMatchEnd) {
            // skip one character so an empty match cannot repeat forever
            if (searchFrom >= subject.size())
                return;
            std::size_t step = 1;
            while (searchFrom + step < subject.size()
                && (static_cast<unsigned char>(subject[searchFrom + step]) & 0xC0) == 0x80)
                ++step;
            searchFrom += step;
            continue;
        }
        out.emplace_back(s, e);
        searchFrom = e;
        lastMatchEnd = e;
    }
}

void Regex::findSpans(std::string_view subject, std::vector<Span>& out) const
{
    if (subject.empty()) {
        out.push_back({ 0, 0, false });
        return;
    }
    thread_local std::vector<std::pair<std::size_t, std::size_t>> matches;
    matches.clear();
    findAll(subject, matches);
    std::size_t prev = 0;
    for (const auto& [s, e] : matches) {
        if (prev != s)
            out.push_back({ prev, s, false });
        out.push_back({ s, e, true });
        prev = e;
    }
    if (prev != subject.size())
        out.push_back({ prev, subject.size(), false });
}

std::string escapeRegex(std::string_view literal)
{
    // \Q..\E quotes everything except a literal "\E", which is split out of the quoted run.
    std::string out = "\\Q";
    for (std::size_t i = 0; i < literal.size(); ++i) {
        if (literal[i] == '\\' && i + 1 < literal.size() && literal[i + 1] == 'E') {
            out += "\\E\\\\E\\Q";
            ++i;
        } else {
            out += literal[i];
        }
    }
    out += "\\E";
    return out;
}

Pattern Pattern::literal(std::string text)
{
    Pattern p;
    p.m_literal = std::move(text);
    return p;
}

Pattern Pattern::regex(const std::string& pattern)
{
    Pattern p;
    p.m_regex = std::make_shared<const Regex>(pattern);
    return p;
}

void Pattern::findAll(std::string_view subject, std::vector<std::pair<std::size_t, std::size_t>>& out) const
{
    if (m_regex) {
        m_regex->findAll(subject, out);
        return;
    }
    if (m_literal.empty())
        return;
    // Non-overlapping, left to right: what a regex of the escaped literal finds.
    std::size_t pos = 0;
    while ((pos = subject.find(m_literal, pos)) != std::string_view::npos) {
        out.emplace_back(pos, pos + m_literal.size());
        pos += m_literal.size();
    }
}

void Pattern::findSpans(std::string_view subject, std::vector<Span>& out) const
{
    if (m_regex) {
        m_regex->findSpans(subject, out);
        return;
    }
    if (subject.empty() || m_literal.empty()) {
        out.push_back({ 0, subject.size(), false });
        return;
    }
    std::size_t prev = 0, pos = 0;
    while ((pos = subject.find(m_literal, prev)) != std::string_view::npos) {
        if (pos != prev)
            out.push_back({ prev, pos, false });
        out.push_back({ pos, pos + m_literal.size(), true });
        prev = pos + m_literal.size();
    }
    if (prev != subject.size())
        out.push_back({ prev, subject.size(), false });
}

std::string Pattern::replaceAll(std::string_view subject, std::string_view content) const
{
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    findAll(subject, matches);
    if (matches.empty())
        return std::string(subject);
    std::string out;
    out.reserve(subject.size());
    std::size_t prev = 0;
    for (const auto& [s, e] : matches) {
        out.append(subject.substr(prev, s - prev));
        out.append(content);
        prev = e;
    }
    out.append(subject.substr(prev));
    return out;
}

} // namespace moeatlas::tok
