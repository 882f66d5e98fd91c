// libFuzzer target for scores files (moeatlas plan --scores): the input is a scores JSON read by
// readScores; when it reads, the specialist, generalist and union plans of its tables are compiled
// (1 expert per layer, top-1 router), as `moeatlas plan` does. Only InputError may escape.
#include "fuzz_support.h"
#include "plan/plan.h"
#include "util/error.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto path = moeatlas::fuzz::writeFile("fuzz.scores.json", moeatlas::fuzz::asText(data, size));
    try {
        const std::vector<moeatlas::ScoreTable> domains = moeatlas::readScores(path.string());
        moeatlas::Budget budget;
        budget.amount = 1;
        moeatlas::PlanContext ctx;
        (void)moeatlas::compileSpecialist(domains, domains.front().domain, budget, ctx);
        (void)moeatlas::compileGeneralist(domains, {}, budget, ctx);
        moeatlas::Budget global = budget;
        global.scope = moeatlas::BudgetScope::Global;
        global.unit = moeatlas::BudgetUnit::Fraction;
        global.amount = 0.5;
        (void)moeatlas::compileGeneralist(domains, {}, global, ctx);
        (void)moeatlas::compileUnion(domains, 1, ctx);
    } catch (const moeatlas::InputError&) {
    }
    return 0;
}
