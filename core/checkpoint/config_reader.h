// Typed access to config.json fields with messages that name the file and the field. Internal to the
// config parsers (hf_config.cpp, hf_config_deepseek.cpp).
#pragma once

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace moeatlas {

// Typed access to config fields with messages that name the file and the field.
class ConfigReader {
    using json = nlohmann::json;

public:
    ConfigReader(const json& j, std::string source)
        : m_json(j)
        , m_source(std::move(source))
    {
    }

    bool has(const char* key) const { return m_json.contains(key) && !m_json.at(key).is_null(); }

    int64_t integer(const char* key) const
    {
        if (!has(key))
            fail(key, "is missing (expected an integer)");
        return integerAt(m_json.at(key), key);
    }
    int64_t integer(const char* key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }

    // The first of several spellings that is present (hub configs and transformers v5 differ,
    // e.g. num_experts vs num_local_experts); must be > 0.
    int64_t positiveAnyOf(std::initializer_list<const char*> keys) const
    {
        for (const char* k : keys)
            if (has(k))
                return positive(k);
        std::string names;
        for (const char* k : keys)
            names += (names.empty() ? "'" : " or '") + std::string(k) + "'";
        throw InputError(m_source + ": field " + names + " is missing (expected an integer)");
    }

    int64_t positive(const char* key) const
    {
        const int64_t v = integer(key);
        if (v <= 0)
            fail(key, "must be > 0, got " + std::to_string(v));
        return v;
    }

    double number(const char* key, double fallback) const
    {
        if (!has(key))
            return fallback;
        const json& v = m_json.at(key);
        if (!v.is_number())
            fail(key, "must be a number, got " + v.dump());
        return v.get<double>();
    }

    bool boolean(const char* key, bool fallback) const
    {
        if (!has(key))
            return fallback;
        const json& v = m_json.at(key);
        if (!v.is_boolean())
            fail(key, "must be true or false, got " + v.dump());
        return v.get<bool>();
    }

    std::string string(const char* key, const std::string& fallback) const
    {
        if (!has(key))
            return fallback;
        const json& v = m_json.at(key);
        if (!v.is_string())
            fail(key, "must be a string, got " + v.dump());
        return v.get<std::string>();
    }

    std::vector<int64_t> integerList(const char* key) const
    {
        std::vector<int64_t> out;
        if (!has(key))
            return out;
        const json& v = m_json.at(key);
        if (!v.is_array())
            fail(key, "must be a list of integers, got " + v.dump());
        for (const json& e : v)
            out.push_back(integerAt(e, key));
        return out;
    }

    [[noreturn]] void fail(const std::string& key, const std::string& what) const
    {
        throw InputError(m_source + ": field '" + key + "' " + what);
    }

    const json& raw() const { return m_json; }

private:
    int64_t integerAt(const json& v, const char* key) const
    {
        if (!v.is_number_integer())
            fail(key, "must be an integer, got " + v.dump());
        return v.get<int64_t>();
    }

    const json& m_json;
    std::string m_source;
};

// The DeepSeek family's keys (glm4_moe, deepseek_v3): router, shared experts, dense prefix, attention
// (hf_config_deepseek.cpp). parseDeepseekV3 runs after parseRope (it checks the YaRN factor).
struct ModelSpec;
void parseGlm4Moe(const ConfigReader& cfg, ModelSpec& s);
void parseDeepseekV3(const ConfigReader& cfg, ModelSpec& s);

} // namespace moeatlas
