// libFuzzer target for plan files (moeatlas export/eval --plan): the input is a plan JSON read by
// readPlan. Only InputError may escape; a plan that reads must write back (planToJson) to a document
// that reads again to the same JSON.
#include "fuzz_support.h"
#include "plan/plan.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto path = moeatlas::fuzz::writeFile("fuzz.plan.json", moeatlas::fuzz::asText(data, size));
    moeatlas::Plan plan;
    try {
        plan = moeatlas::readPlan(path.string());
    } catch (const moeatlas::InputError&) {
        return 0;
    }
    const nlohmann::json written = moeatlas::planToJson(plan);
    try {
        const moeatlas::Plan again = moeatlas::planFromJson(written, "fuzz/rewritten.plan.json");
        if (moeatlas::planToJson(again) != written) {
            std::fprintf(stderr, "plan changed in a write/read round trip:\n%s\n", written.dump(1).c_str());
            std::abort();
        }
    } catch (const moeatlas::InputError& e) {
        std::fprintf(stderr, "a plan that read does not read back once written: %s\n", e.what());
        std::abort();
    }
    return 0;
}
