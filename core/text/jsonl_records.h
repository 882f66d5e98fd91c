// Reading JSONL calibration files record by record (calibration.cpp, calibration_chat.cpp).
#pragma once

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>

namespace moeatlas::detail {

// Calls fn(json, "file:line") for every non-blank line of a JSONL file until fn returns false,
// after checking that the line is a JSON object; `expected` describes a record for the errors.
template <typename Json = nlohmann::json, typename Fn>
void forEachJsonlRecord(const std::string& path, const std::string& expected, Fn&& fn)
{
    std::ifstream in(path);
    if (!in)
        throw InputError(path + ": cannot open calibration file");
    std::string line;
    int64_t lineNo = 0;
    while (std::getline(in, line)) {
        ++lineNo;
        if (line.find_first_not_of(" \t\n\r\f\v") == std::string::npos)
            continue;
        const std::string where = path + ":" + std::to_string(lineNo);
        Json j;
        try {
            j = Json::parse(line);
        } catch (const typename Json::exception& e) { // parse_error, or out_of_range for a number overflow
            throw InputError(where + ": invalid JSON (" + e.what() + "); expected " + expected);
        }
        if (!j.is_object())
            throw InputError(where + ": expected " + expected + ", got " + std::string(j.type_name()));
        if (!fn(j, where))
            return;
    }
}

} // namespace moeatlas::detail
