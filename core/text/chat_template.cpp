// The one translation unit that includes the Jinja engine (minja, third_party/minja).
#include "text/chat_template.h"

#include "util/error.h"
#include "util/sha256.h"

#include <minja/minja.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>

namespace fs = std::filesystem;

namespace moeatlas {

using ojson = nlohmann::ordered_json;

struct NamedTemplate {
    std::string name;
    std::string text;
    std::shared_ptr<minja::TemplateNode> root;
};

struct ChatTemplateImpl {
    std::string source;
    std::vector<NamedTemplate> templates;
    std::map<std::string, std::string> specialTokens;
};

namespace {

// transformers' SPECIAL_TOKENS_ATTRIBUTES: the named special tokens every template sees.
constexpr const char* kSpecialTokenNames[]
    = { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token" };

std::string readFile(const fs::path& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw InputError(path.string() + ": cannot open the file");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

ojson readJsonFile(const fs::path& path)
{
    try {
        return ojson::parse(readFile(path));
    } catch (const ojson::parse_error& e) {
        throw InputError(path.string() + ": invalid JSON (" + e.what() + ")");
    }
}

// A special token in tokenizer_config.json: a string or an AddedToken object {"content": ...}.
std::map<std::string, std::string> specialTokensOf(const ojson& config)
{
    std::map<std::string, std::string> tokens;
    for (const char* name : kSpecialTokenNames) {
        const auto it = config.find(name);
        if (it == config.end())
            continue;
        if (it->is_string())
            tokens[name] = it->get<std::string>();
        else if (it->is_object() && it->contains("content") && it->at("content").is_string())
            tokens[name] = it->at("content").get<std::string>();
    }
    return tokens;
}

// Jinja statements the engine implements (minja's block keywords); the others (include, import,
// extends, with, call, raw, do, autoescape, ...) are refused by name before parsing.
bool isSupportedStatement(std::string_view keyword)
{
    static constexpr std::string_view kSupported[]
        = { "if", "else", "elif", "endif", "for", "endfor", "generation", "endgeneration", "set", "endset", "block",
              "endblock", "macro", "endmacro", "filter", "endfilter", "break", "continue" };
    return std::find(std::begin(kSupported), std::end(kSupported), keyword) != std::end(kSupported);
}

// Throws InputError naming the first statement ("{% include %}") the engine does not implement,
// with its line; comments ({# ... #}) are skipped.
void refuseUnsupportedStatements(const std::string& text, const std::string& where)
{
    std::size_t line = 1;
    for (std::size_t i = 0; i + 1 < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            continue;
        }
        if (text[i] != '{')
            continue;
        if (text[i + 1] == '#') {
            const std::size_t end = text.find("#}", i + 2);
            const std::size_t stop = end == std::string::npos ? text.size() : end;
            line += static_cast<std::size_t>(std::count(
                text.begin() + static_cast<std::ptrdiff_t>(i), text.begin() + static_cast<std::ptrdiff_t>(stop), '\n'));
            i = stop;
            continue;
        }
        if (text[i + 1] != '%')
            continue;
        std::size_t k = i + 2;
        if (k < text.size() && (text[k] == '-' || text[k] == '+'))
            ++k;
        while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k])))
            ++k;
        std::size_t e = k;
        while (e < text.size() && (std::isalnum(static_cast<unsigned char>(text[e])) || text[e] == '_'))
            ++e;
        const std::string keyword = text.substr(k, e - k);
        if (!keyword.empty() && !isSupportedStatement(keyword))
            throw InputError(where + ": the chat template uses the Jinja statement {% " + keyword + " %} (line "
                + std::to_string(line) + "), which the template engine (minja) does not support");
    }
}

std::shared_ptr<minja::TemplateNode> parseTemplate(const std::string& text, const std::string& where)
{
    refuseUnsupportedStatements(text, where);
    try {
        // transformers' environment: trim_blocks, lstrip_blocks, no trailing newline kept.
        return minja::Parser::parse(
            text, minja::Options { .trim_blocks = true, .lstrip_blocks = true, .keep_trailing_newline = false });
    } catch (const std::exception& e) {
        throw InputError(where + ": the chat template cannot be used (unsupported or invalid Jinja): " + e.what());
    }
}

// _normalize_chat_messages + _alias_reasoning_fields of transformers: keys holding null are
// dropped; a reasoning text under reasoning_content, thinking or reasoning is also given as
// "thinking" (first, unless present) and "reasoning_content" (last, unless present).
ojson normalizeMessages(const ojson& messages)
{
    if (!messages.is_array())
        throw InputError("chat messages: expected an array of objects, got " + std::string(messages.type_name()));
    ojson out = ojson::array();
    for (const ojson& m : messages) {
        if (!m.is_object())
            throw InputError("chat messages: expected objects, got " + m.dump());
        ojson message = ojson::object();
        for (const auto& [key, value] : m.items())
            if (!value.is_null())
                message[key] = value;
        const ojson* reasoning = nullptr;
        for (const char* key : { "reasoning_content", "thinking", "reasoning" })
            if (message.contains(key)) {
                reasoning = &message[key];
                break;
            }
        if (reasoning != nullptr) {
            const ojson text = *reasoning;
            ojson aliased = ojson::object();
            if (!message.contains("thinking"))
                aliased["thinking"] = text;
            for (const auto& [key, value] : message.items())
                aliased[key] = key == "reasoning_content" ? text : value;
            aliased["reasoning_content"] = text;
            message = std::move(aliased);
        }
        out.push_back(std::move(message));
    }
    return out;
}

// Python's repr of a float as json.dumps writes it: the shortest round-trip digits, "1.0" for
// integral values, exponent form ("1e-05", "1e+16") where repr uses it.
std::string pythonFloat(double v)
{
    if (std::isnan(v))
        return "NaN";
    if (std::isinf(v))
        return v > 0 ? "Infinity" : "-Infinity";
    std::array<char, 64> buf {};
    // Shortest digits in scientific form, then laid out as repr does (exponent < -4 or >= 16).
    const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::scientific);
    const std::string sci(buf.data(), r.ptr);
    const auto e = sci.find('e');
    std::string mantissa = sci.substr(0, e);
    const int exponent = std::stoi(sci.substr(e + 1));
    const bool negative = !mantissa.empty() && mantissa[0] == '-';
    if (negative)
        mantissa.erase(0, 1);
    std::string digits;
    for (char c : mantissa)
        if (c != '.')
            digits.push_back(c);
    std::string out;
    if (exponent < -4 || exponent >= 16) {
        out = digits.substr(0, 1);
        if (digits.size() > 1)
            out += "." + digits.substr(1);
        out += exponent < 0 ? "e-" : "e+";
        const int a = exponent < 0 ? -exponent : exponent;
        out += (a < 10 ? "0" : "") + std::to_string(a);
    } else if (exponent < 0) {
        out = "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    } else {
        const auto intDigits = static_cast<std::size_t>(exponent) + 1;
        if (digits.size() <= intDigits)
            out = digits + std::string(intDigits - digits.size(), '0') + ".0";
        else
            out = digits.substr(0, intDigits) + "." + digits.substr(intDigits);
    }
    return negative ? "-" + out : out;
}

// A JSON string as Python's json.dumps writes it (ensure_ascii: non-ASCII as \uXXXX, with
// surrogate pairs above U+FFFF).
void pythonJsonString(const std::string& s, bool ensureAscii, std::string& out)
{
    static constexpr char kHex[] = "0123456789abcdef";
    auto u16 = [&](uint32_t u) {
        out += "\\u";
        for (int shift = 12; shift >= 0; shift -= 4)
            out.push_back(kHex[(u >> static_cast<unsigned>(shift)) & 0xFU]);
    };
    out.push_back('"');
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        switch (c) {
        case '"':
            out += "\\\"";
            continue;
        case '\\':
            out += "\\\\";
            continue;
        case '\n':
            out += "\\n";
            continue;
        case '\r':
            out += "\\r";
            continue;
        case '\t':
            out += "\\t";
            continue;
        case '\b':
            out += "\\b";
            continue;
        case '\f':
            out += "\\f";
            continue;
        default:
            break;
        }
        if (c < 0x20 || (ensureAscii && c == 0x7F)) {
            u16(c);
        } else if (c < 0x80 || !ensureAscii) {
            out.push_back(static_cast<char>(c));
        } else {
            // Decode one UTF-8 sequence (the JSON parser has already validated it).
            const int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
            uint32_t cp = c & (0x3FU >> static_cast<unsigned>(extra));
            for (int k = 0; k < extra && i + 1 < s.size(); ++k)
                cp = (cp << 6U) | (static_cast<unsigned char>(s[++i]) & 0x3FU);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                u16(0xD800 + (cp >> 10U));
                u16(0xDC00 + (cp & 0x3FFU));
            } else {
                u16(cp);
            }
        }
    }
    out.push_back('"');
}

struct PyJsonOptions {
    bool ensureAscii = false;
    std::optional<int64_t> indent;
    std::string itemSeparator = ", ";
    std::string keySeparator = ": ";
    bool sortKeys = false;
};

void pythonJson(const minja::Value& v, const PyJsonOptions& o, int level, std::string& out)
{
    const auto newline = [&](int depth) {
        if (!o.indent)
            return;
        out.push_back('\n');
        out.append(static_cast<std::size_t>(*o.indent) * static_cast<std::size_t>(depth), ' ');
    };
    if (v.is_null()) {
        out += "null";
    } else if (v.is_boolean()) {
        out += v.get<bool>() ? "true" : "false";
    } else if (v.is_number_integer()) {
        out += std::to_string(v.get<int64_t>());
    } else if (v.is_number_float()) {
        out += pythonFloat(v.get<double>());
    } else if (v.is_string()) {
        pythonJsonString(v.get<std::string>(), o.ensureAscii, out);
    } else if (v.is_array()) {
        if (v.empty()) {
            out += "[]";
            return;
        }
        out.push_back('[');
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (i > 0)
                out += o.itemSeparator;
            newline(level + 1);
            pythonJson(v.at(i), o, level + 1, out);
        }
        newline(level);
        out.push_back(']');
    } else if (v.is_object() && !v.is_callable()) {
        minja::Value copy = v;
        std::vector<minja::Value> keys = copy.keys();
        if (keys.empty()) {
            out += "{}";
            return;
        }
        if (o.sortKeys)
            std::sort(keys.begin(), keys.end(),
                [](const minja::Value& a, const minja::Value& b) { return a.to_str() < b.to_str(); });
        out.push_back('{');
        for (std::size_t i = 0; i < keys.size(); ++i) {
            if (i > 0)
                out += o.itemSeparator;
            newline(level + 1);
            pythonJsonString(keys[i].is_string() ? keys[i].get<std::string>() : keys[i].dump(), o.ensureAscii, out);
            out += o.keySeparator;
            pythonJson(copy.at(keys[i]), o, level + 1, out);
        }
        newline(level);
        out.push_back('}');
    } else {
        throw std::runtime_error("tojson: cannot serialize a function");
    }
}

// transformers' tojson filter: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False), replacing minja's own (which knows only `indent`).
minja::Value pythonTojson()
{
    return minja::Value::callable([](const std::shared_ptr<minja::Context>&, minja::ArgumentsValue& args) {
        if (args.args.empty() || args.args.size() > 5)
            throw std::runtime_error(
                "tojson: expected a value and at most indent, ensure_ascii, separators, sort_keys");
        PyJsonOptions o;
        std::vector<std::pair<std::string, minja::Value>> named;
        static const char* const kPositional[] = { "indent", "ensure_ascii", "separators", "sort_keys" };
        for (std::size_t i = 1; i < args.args.size(); ++i)
            named.emplace_back(kPositional[i - 1], args.args[i]);
        for (const auto& kv : args.kwargs)
            named.push_back(kv);
        for (const auto& [key, value] : named) {
            if (key == "indent") {
                if (!value.is_null())
                    o.indent = value.get<int64_t>();
            } else if (key == "ensure_ascii") {
                o.ensureAscii = value.to_bool();
            } else if (key == "sort_keys") {
                o.sortKeys = value.to_bool();
            } else if (key == "separators") {
                if (!value.is_null()) {
                    if (!value.is_array() || value.size() != 2)
                        throw std::runtime_error("tojson: separators must be a pair of strings");
                    o.itemSeparator = value.at(std::size_t { 0 }).get<std::string>();
                    o.keySeparator = value.at(std::size_t { 1 }).get<std::string>();
                }
            } else {
                throw std::runtime_error("tojson: unknown argument " + key);
            }
        }
        // json.dumps: with an indent and no separators, items are separated by "," alone.
        const bool separatorsGiven = std::any_of(named.begin(), named.end(),
            [](const auto& kv) { return kv.first == "separators" && !kv.second.is_null(); });
        if (o.indent && !separatorsGiven)
            o.itemSeparator = ",";
        std::string out;
        pythonJson(args.args[0], o, 0, out);
        return minja::Value(out);
    });
}

minja::Value strftimeNow()
{
    return minja::Value::callable([](const std::shared_ptr<minja::Context>&, minja::ArgumentsValue& args) {
        args.expectArgs("strftime_now", { 1, 1 }, { 0, 0 });
        const std::string format = args.args[0].get<std::string>();
        // datetime.now() of transformers: the local time.
        const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
        std::tm local {};
        localtime_r(&now, &local);
        std::ostringstream s;
        s << std::put_time(&local, format.c_str());
        return minja::Value(s.str());
    });
}

} // namespace

ChatTemplate::ChatTemplate(std::unique_ptr<ChatTemplateImpl> impl)
    : m_impl(std::move(impl))
{
}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

ChatTemplate ChatTemplate::fromSource(
    const std::string& source, const std::string& sourceName, const std::map<std::string, std::string>& specialTokens)
{
    auto impl = std::make_unique<ChatTemplateImpl>();
    impl->source = sourceName;
    impl->specialTokens = specialTokens;
    impl->templates.push_back({ "default", source, parseTemplate(source, sourceName) });
    return ChatTemplate(std::move(impl));
}

ChatTemplate ChatTemplate::fromFile(const std::string& path, const std::string& specialTokensFrom)
{
    std::map<std::string, std::string> tokens;
    if (!specialTokensFrom.empty()) {
        fs::path dir(specialTokensFrom);
        std::error_code ec;
        if (!fs::is_directory(dir, ec))
            dir = dir.parent_path();
        const fs::path config = dir / "tokenizer_config.json";
        if (fs::exists(config, ec))
            tokens = specialTokensOf(readJsonFile(config));
    }
    return fromSource(readFile(path), path, tokens);
}

ChatTemplate ChatTemplate::fromModelFiles(const std::string& dirOrFile)
{
    fs::path dir(dirOrFile);
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        dir = dir.parent_path();
    const fs::path config = dir / "tokenizer_config.json";
    const fs::path jinja = dir / "chat_template.jinja";
    auto impl = std::make_unique<ChatTemplateImpl>();
    ojson cfg = ojson::object();
    if (fs::exists(config, ec)) {
        cfg = readJsonFile(config);
        if (!cfg.is_object())
            throw InputError(config.string() + ": expected a JSON object");
        impl->specialTokens = specialTokensOf(cfg);
    }
    if (fs::exists(jinja, ec)) {
        impl->source = jinja.string();
        std::string text = readFile(jinja);
        auto root = parseTemplate(text, impl->source);
        impl->templates.push_back({ "default", std::move(text), std::move(root) });
        return ChatTemplate(std::move(impl));
    }
    const auto it = cfg.find("chat_template");
    if (it == cfg.end() || it->is_null())
        throw InputError(dir.string()
            + ": the model has no chat template (neither chat_template.jinja nor \"chat_template\" in "
              "tokenizer_config.json); give one with --chat-template FILE.jinja or render without "
              "(--chat-template none)");
    impl->source = config.string();
    if (it->is_string()) {
        impl->templates.push_back(
            { "default", it->get<std::string>(), parseTemplate(it->get<std::string>(), impl->source) });
    } else if (it->is_array()) {
        for (std::size_t i = 0; i < it->size(); ++i) {
            const ojson& t = (*it)[i];
            if (!t.is_object() || !t.contains("name") || !t.at("name").is_string() || !t.contains("template")
                || !t.at("template").is_string())
                throw InputError(impl->source + ": chat_template[" + std::to_string(i)
                    + "]: expected an object with string \"name\" and \"template\"");
            const std::string name = t.at("name").get<std::string>();
            const std::string text = t.at("template").get<std::string>();
            impl->templates.push_back({ name, text, parseTemplate(text, impl->source + " (template " + name + ")") });
        }
        if (impl->templates.empty())
            throw InputError(impl->source + ": \"chat_template\" is an empty list");
    } else {
        throw InputError(impl->source
            + ": \"chat_template\" must be a string or a list of {\"name\", \"template\"}, got " + it->type_name());
    }
    return ChatTemplate(std::move(impl));
}

bool ChatTemplate::modelHasChatTemplate(const std::string& dirOrFile)
{
    fs::path dir(dirOrFile);
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        dir = dir.parent_path();
    if (fs::exists(dir / "chat_template.jinja", ec))
        return true;
    const fs::path config = dir / "tokenizer_config.json";
    if (!fs::exists(config, ec))
        return false;
    const ojson cfg = readJsonFile(config);
    return cfg.is_object() && cfg.contains("chat_template") && !cfg.at("chat_template").is_null();
}

void ChatTemplate::select(const std::string& name)
{
    auto& all = m_impl->templates;
    const auto it = std::find_if(all.begin(), all.end(), [&](const NamedTemplate& t) { return t.name == name; });
    if (it == all.end()) {
        std::string known;
        for (const auto& t : all)
            known += (known.empty() ? "" : ", ") + t.name;
        throw InputError(m_impl->source + ": no chat template named '" + name + "' (it has: " + known + ")");
    }
    NamedTemplate kept = std::move(*it);
    all.clear();
    all.push_back(std::move(kept));
}

std::string ChatTemplate::describe() const
{
    std::string out = m_impl->source;
    for (const auto& t : m_impl->templates)
        out += ", template " + t.name + " (sha256 " + sha256Hex(t.text).substr(0, 16) + ")";
    return out;
}

std::vector<std::string> ChatTemplate::names() const
{
    std::vector<std::string> names;
    names.reserve(m_impl->templates.size());
    for (const auto& t : m_impl->templates)
        names.push_back(t.name);
    return names;
}

const std::string& ChatTemplate::source() const
{
    return m_impl->source;
}

std::string ChatTemplate::render(const ChatInput& input, const std::string& name) const
{
    const auto& all = m_impl->templates;
    const NamedTemplate* chosen = nullptr;
    auto find = [&](const std::string& n) -> const NamedTemplate* {
        for (const auto& t : all)
            if (t.name == n)
                return &t;
        return nullptr;
    };
    if (!name.empty()) {
        chosen = find(name);
        if (chosen == nullptr) {
            std::string known;
            for (const auto& t : all)
                known += (known.empty() ? "" : ", ") + t.name;
            throw InputError(m_impl->source + ": no chat template named '" + name + "' (it has: " + known + ")");
        }
    } else {
        if (input.tools.is_array() && !input.tools.empty())
            chosen = find("tool_use");
        if (chosen == nullptr)
            chosen = all.size() == 1 ? all.data() : find("default");
        if (chosen == nullptr)
            throw InputError(m_impl->source + ": several chat templates and none named 'default'; choose one by name");
    }
    if (!input.kwargs.is_object())
        throw InputError("chat template arguments: expected a JSON object");
    try {
        ojson vars = ojson::object();
        for (const auto& [key, value] : m_impl->specialTokens)
            vars[key] = value;
        for (const auto& [key, value] : input.kwargs.items())
            vars[key] = value;
        vars["messages"] = normalizeMessages(input.messages);
        vars["tools"] = input.tools;
        vars["documents"] = input.documents;
        vars["add_generation_prompt"] = input.addGenerationPrompt;
        auto context = minja::Context::make(minja::Value(vars));
        context->set("strftime_now", strftimeNow());
        context->set("tojson", pythonTojson());
        return chosen->root->render(context);
    } catch (const InputError&) {
        throw;
    } catch (const std::exception& e) {
        throw InputError(m_impl->source + ": rendering the chat template '" + chosen->name + "' failed: " + e.what());
    }
}

} // namespace moeatlas
