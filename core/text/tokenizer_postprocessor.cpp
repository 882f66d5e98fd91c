#include "tokenizer_postprocessor.h"

#include <map>
#include <string>

namespace moeatlas::tok {

namespace {

// The single-sequence template: special tokens (by their id lists) around "$A".
class TemplateProcessor final : public PostProcessor {
public:
    struct Item {
        bool isSequence = false;
        std::vector<int32_t> ids; // for a special token
    };
    explicit TemplateProcessor(std::vector<Item> items)
        : m_items(std::move(items))
    {
    }

    void process(std::vector<int32_t>& ids, bool addSpecialTokens) const override
    {
        std::vector<int32_t> out;
        out.reserve(ids.size() + 4);
        for (const auto& item : m_items) {
            if (item.isSequence)
                out.insert(out.end(), ids.begin(), ids.end());
            else if (addSpecialTokens)
                out.insert(out.end(), item.ids.begin(), item.ids.end());
        }
        ids = std::move(out);
    }
    void specialIds(std::vector<int32_t>& before, std::vector<int32_t>& after) const override
    {
        bool seenSequence = false;
        for (const auto& item : m_items) {
            if (item.isSequence)
                seenSequence = true;
            else
                (seenSequence ? after : before)
                    .insert((seenSequence ? after : before).end(), item.ids.begin(), item.ids.end());
        }
    }

private:
    std::vector<Item> m_items;
};

class NoOpProcessor final : public PostProcessor {
public:
    void process(std::vector<int32_t>&, bool) const override { }
    void specialIds(std::vector<int32_t>&, std::vector<int32_t>&) const override { }
};

class SequenceProcessor final : public PostProcessor {
public:
    explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
        : m_parts(std::move(parts))
    {
    }
    void process(std::vector<int32_t>& ids, bool addSpecialTokens) const override
    {
        for (const auto& p : m_parts)
            p->process(ids, addSpecialTokens);
    }
    void specialIds(std::vector<int32_t>& before, std::vector<int32_t>& after) const override
    {
        for (const auto& p : m_parts)
            p->specialIds(before, after);
    }

private:
    std::vector<std::unique_ptr<PostProcessor>> m_parts;
};

int32_t tokenPairId(const Json& node, std::string_view key, const JsonPath& path)
{
    const Json& v = member(node, key, path);
    if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
        (path / key).fail("expected [token, id]");
    return v[1].get<int32_t>();
}

std::unique_ptr<PostProcessor> makeTemplate(const Json& node, const JsonPath& path)
{
    const JsonPath spPath = path / "special_tokens";
    std::map<std::string, std::vector<int32_t>> specials;
    if (node.contains("special_tokens") && !node["special_tokens"].is_null()) {
        const Json& sp = node["special_tokens"];
        if (!sp.is_object())
            spPath.fail("expected an object");
        for (auto it = sp.begin(); it != sp.end(); ++it) {
            const JsonPath here = spPath / it.key();
            const Json& ids = getArray(it.value(), "ids", here);
            std::vector<int32_t> list;
            for (const auto& id : ids) {
                if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
                    (here / "ids").fail("expected non-negative integer ids");
                list.push_back(id.get<int32_t>());
            }
            specials[it.key()] = std::move(list);
        }
    }
    const JsonPath singlePath = path / "single";
    const Json& single = getArray(node, "single", path);
    std::vector<TemplateProcessor::Item> items;
    for (std::size_t i = 0; i < single.size(); ++i) {
        const Json& piece = single[i];
        const JsonPath here = singlePath[i];
        if (piece.is_object() && piece.contains("Sequence")) {
            const std::string id = getString(piece["Sequence"], "id", here / "Sequence");
            if (id != "A")
                (here / "Sequence").fail("the single template may only hold sequence A");
            items.push_back({ true, {} });
        } else if (piece.is_object() && piece.contains("SpecialToken")) {
            const std::string id = getString(piece["SpecialToken"], "id", here / "SpecialToken");
            auto it = specials.find(id);
            if (it == specials.end())
                (here / "SpecialToken").fail("special token \"" + id + "\" is not in special_tokens");
            items.push_back({ false, it->second });
        } else {
            here.fail("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
        }
    }
    return std::make_unique<TemplateProcessor>(std::move(items));
}

} // namespace

std::unique_ptr<PostProcessor> makePostProcessor(const Json& node, const JsonPath& path)
{
    if (node.is_null())
        return nullptr;
    const std::string type = componentType(node, path);
    if (type == "TemplateProcessing")
        return makeTemplate(node, path);
    if (type == "ByteLevel") // only trims offsets, which ids do not carry
        return std::make_unique<NoOpProcessor>();
    if (type == "RobertaProcessing" || type == "BertProcessing") {
        std::vector<TemplateProcessor::Item> items;
        items.push_back({ false, { tokenPairId(node, "cls", path) } });
        items.push_back({ true, {} });
        items.push_back({ false, { tokenPairId(node, "sep", path) } });
        return std::make_unique<TemplateProcessor>(std::move(items));
    }
    if (type == "Sequence") {
        const Json& list = getArray(node, "processors", path);
        std::vector<std::unique_ptr<PostProcessor>> parts;
        for (std::size_t i = 0; i < list.size(); ++i) {
            auto part = makePostProcessor(list[i], (path / "processors")[i]);
            if (!part)
                (path / "processors")[i].fail("expected a post-processor, got null");
            parts.push_back(std::move(part));
        }
        return std::make_unique<SequenceProcessor>(std::move(parts));
    }
    (path / "type").fail("unsupported post-processor type \"" + type + "\"");
}

} // namespace moeatlas::tok
