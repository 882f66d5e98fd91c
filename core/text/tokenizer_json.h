// Internal: reading tokenizer.json components with errors that name the file and JSON path.
#pragma once

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace moeatlas::tok {

using Json = nlohmann::json;

// The location of a component inside a tokenizer.json, e.g. "pre_tokenizer.pretokenizers[1]".
class JsonPath {
public:
    JsonPath(const std::string& file, std::string path)
        : m_file(&file)
        , m_path(std::move(path))
    {
    }

    JsonPath operator/(std::string_view key) const
    {
        return JsonPath(*m_file, m_path.empty() ? std::string(key) : m_path + "." + std::string(key));
    }
    JsonPath operator[](std::size_t index) const
    {
        return JsonPath(*m_file, m_path + "[" + std::to_string(index) + "]");
    }
    const std::string& file() const { return *m_file; }
    const std::string& path() const { return m_path; }

    [[noreturn]] void fail(const std::string& what) const
    {
        throw InputError(*m_file + ": " + (m_path.empty() ? std::string("<root>") : m_path) + ": " + what);
    }

private:
    const std::string* m_file;
    std::string m_path;
};

// A member of an object node; fails when the node is not an object or the member is missing.
inline const Json& member(const Json& node, std::string_view key, const JsonPath& path)
{
    if (!node.is_object())
        path.fail("expected an object");
    auto it = node.find(key);
    if (it == node.end())
        path.fail("missing field \"" + std::string(key) + "\"");
    return *it;
}

inline std::string getString(const Json& node, std::string_view key, const JsonPath& path)
{
    const Json& v = member(node, key, path);
    if (!v.is_string())
        (path / key).fail("expected a string");
    return v.get<std::string>();
}

inline std::string getStringOr(
    const Json& node, std::string_view key, const std::string& fallback, const JsonPath& path)
{
    if (!node.is_object() || !node.contains(key) || node[std::string(key)].is_null())
        return fallback;
    return getString(node, key, path);
}

inline bool getBoolOr(const Json& node, std::string_view key, bool fallback, const JsonPath& path)
{
    if (!node.is_object() || !node.contains(key) || node[std::string(key)].is_null())
        return fallback;
    const Json& v = node[std::string(key)];
    if (!v.is_boolean())
        (path / key).fail("expected true or false");
    return v.get<bool>();
}

inline int64_t getIntOr(const Json& node, std::string_view key, int64_t fallback, const JsonPath& path)
{
    if (!node.is_object() || !node.contains(key) || node[std::string(key)].is_null())
        return fallback;
    const Json& v = node[std::string(key)];
    if (!v.is_number_integer())
        (path / key).fail("expected an integer");
    return v.get<int64_t>();
}

inline const Json& getArray(const Json& node, std::string_view key, const JsonPath& path)
{
    const Json& v = member(node, key, path);
    if (!v.is_array())
        (path / key).fail("expected an array");
    return v;
}

// The "type" tag of a component object.
inline std::string componentType(const Json& node, const JsonPath& path)
{
    if (!node.is_object())
        path.fail("expected a component object");
    return getString(node, "type", path);
}

// A single character field ("replacement": "▁"), as a UTF-8 string of exactly one code point.
std::string getSingleChar(const Json& node, std::string_view key, const JsonPath& path);

} // namespace moeatlas::tok

#include "tokenizer_regex.h"

namespace moeatlas::tok {

// {"String": "..."} or {"Regex": "..."}; a regex that does not compile is an InputError.
Pattern parsePattern(const Json& node, const JsonPath& path);

} // namespace moeatlas::tok
