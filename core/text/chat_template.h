// A model's chat template (Jinja, as in tokenizer_config.json's "chat_template" or
// chat_template.jinja) rendered the way transformers' apply_chat_template renders it: same Jinja
// settings (trim_blocks, lstrip_blocks), same variables (messages, tools, documents,
// add_generation_prompt, the named special tokens, extra keyword arguments such as
// enable_thinking), same message clean-up (keys holding null dropped; reasoning_content /
// thinking / reasoning aliased to each other). The engine is Google's minja (third_party/minja,
// docs/decisions.md "Chat templates"); only chat_template.cpp includes it.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moeatlas {

// What one rendering receives besides the template; mirrors apply_chat_template's arguments.
struct ChatInput {
    nlohmann::ordered_json messages = nlohmann::ordered_json::array(); // [{role, content, ...}, ...]
    nlohmann::ordered_json tools; // null or an array of JSON schemas
    nlohmann::ordered_json documents; // null or an array of {title, text}
    bool addGenerationPrompt = false;
    // Extra template variables (enable_thinking, reasoning_effort, ...); they override the
    // special tokens of the same name, as apply_chat_template's **kwargs do.
    nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
};

struct ChatTemplateImpl;

class ChatTemplate {
public:
    // The templates of the model whose tokenizer files lie in `dir` (or beside the file `dir`
    // names): chat_template.jinja when present (as transformers loads it), else
    // tokenizer_config.json's "chat_template" (a string, or a list of {"name", "template"}).
    // The named special tokens (bos_token, eos_token, unk_token, sep_token, pad_token,
    // cls_token, mask_token) come from tokenizer_config.json. Throws InputError when the model
    // has no chat template or a template does not parse (naming the file and the construct).
    static ChatTemplate fromModelFiles(const std::string& dir);
    // One template from its source; `sourceName` labels error messages.
    static ChatTemplate fromSource(const std::string& source, const std::string& sourceName,
        const std::map<std::string, std::string>& specialTokens = {});
    // Reads a .jinja file as the template, with the special tokens of `specialTokensFrom`'s
    // tokenizer_config.json when that path is not empty.
    static ChatTemplate fromFile(const std::string& path, const std::string& specialTokensFrom = {});

    // True when the model files in `dir` (or beside the file it names) hold a chat template.
    static bool modelHasChatTemplate(const std::string& dir);

    ChatTemplate(ChatTemplate&&) noexcept;
    ChatTemplate& operator=(ChatTemplate&&) noexcept;
    ~ChatTemplate();

    // The names of the templates ("default" for a single template), in file order.
    std::vector<std::string> names() const;
    // Where the templates were read from ("…/tokenizer_config.json", a .jinja path, ...).
    const std::string& source() const;
    // Keeps only the template `name` (render() then always uses it); throws InputError naming
    // the templates there are when it has none of that name.
    void select(const std::string& name);
    // "SOURCE, template NAME (sha256 PREFIX)" for provenance: where it came from and which text.
    std::string describe() const;
    // Renders `input` with the template `name`; an empty name picks as transformers does:
    // "tool_use" when tools are given and such a template exists, else "default" (or the only
    // one). Throws InputError naming the source and the construct when rendering fails,
    // including a template's own raise_exception(...).
    std::string render(const ChatInput& input, const std::string& name = {}) const;

private:
    explicit ChatTemplate(std::unique_ptr<ChatTemplateImpl> impl);
    std::unique_ptr<ChatTemplateImpl> m_impl;
};

} // namespace moeatlas
