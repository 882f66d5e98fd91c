#include "checkpoint/routing_rule.h"

#include "util/error.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>
#include <vector>

namespace moeatlas {

namespace {

std::vector<std::string> splitFields(const std::string& text)
{
    std::vector<std::string> out;
    std::string::size_type begin = 0;
    while (true) {
        const auto colon = text.find(':', begin);
        out.push_back(text.substr(begin, colon == std::string::npos ? std::string::npos : colon - begin));
        if (colon == std::string::npos)
            return out;
        begin = colon + 1;
    }
}

[[noreturn]] void refuse(const std::string& text, const std::string& what)
{
    throw RequestError("routing", "routing rule '" + text + "': " + what);
}

int intField(const std::string& text, const std::string& field, const char* name)
{
    int value = 0;
    const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
    if (ec != std::errc() || end != field.data() + field.size())
        refuse(text, std::string(name) + " '" + field + "' is not an integer");
    return value;
}

double doubleField(const std::string& text, const std::string& field, const char* name)
{
    std::istringstream in(field);
    in.imbue(std::locale::classic());
    double value = 0.0;
    in >> value;
    if (field.empty() || in.fail() || !in.eof() || !std::isfinite(value))
        refuse(text, std::string(name) + " '" + field + "' is not a number");
    return value;
}

// A canonical number: the shortest text that reads back as the same double.
std::string number(double v)
{
    std::string text;
    for (int digits = 1; digits <= 17; ++digits) {
        std::ostringstream o;
        o.imbue(std::locale::classic());
        o.precision(digits);
        o << v;
        text = o.str();
        std::istringstream back(text);
        back.imbue(std::locale::classic());
        double read = 0.0;
        back >> read;
        if (read == v)
            break;
    }
    return text;
}

} // namespace

int RoutingRule::maxK(int modelTopK) const
{
    switch (kind) {
    case Kind::Model:
        return modelTopK;
    case Kind::TopK:
        return k;
    default:
        return kMax;
    }
}

int RoutingRule::minK(int modelTopK) const
{
    switch (kind) {
    case Kind::Model:
        return modelTopK;
    case Kind::TopK:
        return k;
    default:
        return kMin;
    }
}

std::string RoutingRule::name() const
{
    const std::string band = ":" + std::to_string(kMin) + ":" + std::to_string(kMax);
    switch (kind) {
    case Kind::Model:
        return "model";
    case Kind::TopK:
        return "top-k:" + std::to_string(k);
    case Kind::ProbMoe:
        return "probmoe" + band;
    case Kind::TopP:
        return "top-p:" + number(p) + band;
    case Kind::Threshold:
        return "threshold:" + number(meanK) + band;
    }
    return "model";
}

bool operator==(const RoutingRule& a, const RoutingRule& b)
{
    return a.kind == b.kind && a.k == b.k && a.kMin == b.kMin && a.kMax == b.kMax && a.p == b.p && a.meanK == b.meanK
        && a.thresholds == b.thresholds;
}

RoutingRule parseRoutingRule(const std::string& text, int numExperts, int modelTopK)
{
    const std::vector<std::string> f = splitFields(text);
    const std::string range = "[1, " + std::to_string(numExperts) + "] (the router's experts)";
    RoutingRule rule;
    const auto band = [&](std::size_t first, bool optional) {
        if (f.size() == first && optional) {
            rule.kMin = 1;
            rule.kMax = modelTopK;
            return;
        }
        if (f.size() != first + 2)
            refuse(text, "expected " + std::string(optional ? "an optional band :KMIN:KMAX" : "a band KMIN:KMAX"));
        rule.kMin = intField(text, f[first], "KMIN");
        rule.kMax = intField(text, f[first + 1], "KMAX");
        if (rule.kMin < 1 || rule.kMax > numExperts)
            refuse(text, "the band [" + f[first] + ", " + f[first + 1] + "] must lie in " + range);
        if (rule.kMin > rule.kMax)
            refuse(text, "KMIN " + f[first] + " is greater than KMAX " + f[first + 1]);
    };
    const std::string& head = f[0];
    if (head == "model" && f.size() == 1) {
        return rule;
    } else if (head == "top-k") {
        if (f.size() != 2)
            refuse(text, "expected top-k:K");
        rule.kind = RoutingRule::Kind::TopK;
        rule.k = intField(text, f[1], "K");
        if (rule.k < 1 || rule.k > numExperts)
            refuse(text, "K " + f[1] + " must lie in " + range);
    } else if (head == "probmoe") {
        rule.kind = RoutingRule::Kind::ProbMoe;
        band(1, false);
    } else if (head == "top-p") {
        if (f.size() < 2)
            refuse(text, "expected top-p:P[:KMIN:KMAX]");
        rule.kind = RoutingRule::Kind::TopP;
        rule.p = doubleField(text, f[1], "P");
        if (!(rule.p > 0.0 && rule.p <= 1.0))
            refuse(text, "P " + f[1] + " must lie in (0, 1]");
        band(2, true);
    } else if (head == "threshold") {
        if (f.size() < 2)
            refuse(text, "expected threshold:M[:KMIN:KMAX] (M: the target mean k)");
        rule.kind = RoutingRule::Kind::Threshold;
        rule.meanK = doubleField(text, f[1], "M");
        band(2, true);
        if (rule.meanK < rule.kMin || rule.meanK > rule.kMax)
            refuse(text, "the target mean k " + f[1] + " must lie in the band [" + std::to_string(rule.kMin) + ", "
                    + std::to_string(rule.kMax) + "]");
    } else {
        refuse(text,
            "expected model, top-k:K, probmoe:KMIN:KMAX, top-p:P[:KMIN:KMAX] or threshold:M[:KMIN:KMAX]");
    }
    if (rule.kind != RoutingRule::Kind::TopK && rule.kMax > numExperts)
        refuse(text, "the band must lie in " + range);
    return rule;
}

int ruleTokenK(const RoutingRule& rule, int modelTopK, const float* sorted, int positiveLogits, double threshold)
{
    switch (rule.kind) {
    case RoutingRule::Kind::Model:
        return modelTopK;
    case RoutingRule::Kind::TopK:
        return rule.k;
    case RoutingRule::Kind::ProbMoe:
        return std::clamp(positiveLogits, rule.kMin, rule.kMax);
    case RoutingRule::Kind::TopP: {
        // Smallest k with mass >= P: the number of slots whose mass before them is < P (in double, as
        // the engine's cumulative sum is).
        double before = 0.0;
        int k = 0;
        for (int j = 0; j < rule.kMax && before < rule.p; ++j) {
            before += static_cast<double>(sorted[j]);
            ++k;
        }
        return std::clamp(k, rule.kMin, rule.kMax);
    }
    case RoutingRule::Kind::Threshold: {
        int k = 0;
        while (k < rule.kMax && static_cast<double>(sorted[k]) >= threshold)
            ++k;
        return std::clamp(k, rule.kMin, rule.kMax);
    }
    }
    return modelTopK;
}

} // namespace moeatlas
