// Calibration "messages" records: the plain "<role>: <content>" lines, or the model's chat template
// (text/chat_template.h) applied as transformers' apply_chat_template applies it.
#include "text/calibration.h"

#include "text/chat_template.h"
#include "text/jsonl_records.h"
#include "util/error.h"

#include <filesystem>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

std::string plainLines(const nlohmann::ordered_json& messages, const std::string& where)
{
    std::string text;
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (!m.is_object() || !m.contains("role") || !m.at("role").is_string() || !m.contains("content")
            || !m.at("content").is_string())
            throw InputError(where + ": messages[" + std::to_string(i)
                + "]: expected an object with string \"role\" and \"content\", got " + m.dump());
        if (i > 0)
            text.push_back('\n');
        text += m.at("role").get<std::string>() + ": " + m.at("content").get<std::string>();
    }
    return text;
}

nlohmann::ordered_json chatKwargs(const TextOptions& options)
{
    nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
    for (const auto& [name, value] : options.chatKwargs) {
        if (name.empty())
            throw RequestError("chatKwargs", "a chat template argument has an empty name");
        // JSON when it reads as JSON (false, 3, "text", [..]), else the text itself; Python's
        // spellings are refused, since the string "False" would be true in the template.
        if (value == "True" || value == "False" || value == "None")
            throw RequestError("chatKwargs",
                "chat template argument " + name + "=" + value + ": write JSON's true, false or null (the text \""
                    + value + "\" would be a string)");
        kwargs[name] = nlohmann::ordered_json::accept(value) ? nlohmann::ordered_json::parse(value)
                                                             : nlohmann::ordered_json(value);
    }
    return kwargs;
}

} // namespace

std::unique_ptr<ChatTemplate> resolveChatTemplate(const TextOptions& options, const std::string& tokenizerPath)
{
    const std::string& choice = options.chatTemplate;
    if (choice == "none")
        return nullptr;
    if (choice == "auto" || choice.empty()) {
        if (tokenizerPath.empty() || !ChatTemplate::modelHasChatTemplate(tokenizerPath))
            return nullptr;
        return std::make_unique<ChatTemplate>(ChatTemplate::fromModelFiles(tokenizerPath));
    }
    std::error_code ec;
    if (choice.ends_with(".jinja") || fs::is_regular_file(choice, ec)) {
        if (!fs::is_regular_file(choice, ec))
            throw RequestError("chatTemplate", choice + ": no such chat template file");
        return std::make_unique<ChatTemplate>(ChatTemplate::fromFile(choice, tokenizerPath));
    }
    if (tokenizerPath.empty())
        throw RequestError("chatTemplate", "chat template '" + choice + "': no tokenizer whose templates to use");
    auto chat = std::make_unique<ChatTemplate>(ChatTemplate::fromModelFiles(tokenizerPath));
    chat->select(choice);
    return chat;
}

std::vector<TextDocument> readMessagesJsonl(
    const std::string& path, const ChatTemplate* chat, const TextOptions& options)
{
    std::vector<TextDocument> docs;
    const nlohmann::ordered_json kwargs = chat ? chatKwargs(options) : nlohmann::ordered_json::object();
    const std::string expected = chat
        ? "an object with a \"messages\" array of {\"role\", ...} (and optional \"tools\", "
          "\"documents\")"
        : "an object with a \"messages\" array of {\"role\", \"content\"}";
    detail::forEachJsonlRecord<nlohmann::ordered_json>(
        path, expected, [&](const nlohmann::ordered_json& j, const std::string& where) {
            const auto it = j.find("messages");
            if (it == j.end() || !it->is_array())
                throw InputError(where + ": expected " + expected);
            if (it->empty())
                return true;
            std::string text;
            if (!chat) {
                text = plainLines(*it, where);
            } else {
                for (std::size_t i = 0; i < it->size(); ++i)
                    if (!(*it)[i].is_object() || !(*it)[i].contains("role") || !(*it)[i].at("role").is_string())
                        throw InputError(where + ": messages[" + std::to_string(i)
                            + "]: expected an object with a string \"role\", got " + (*it)[i].dump());
                ChatInput input;
                input.messages = *it;
                for (const char* field : { "tools", "documents" }) {
                    const auto f = j.find(field);
                    if (f != j.end() && !f->is_null() && !f->is_array())
                        throw InputError(where + ": \"" + field + "\" must be an array, got " + f->type_name());
                }
                if (j.contains("tools"))
                    input.tools = j.at("tools");
                if (j.contains("documents"))
                    input.documents = j.at("documents");
                input.addGenerationPrompt = options.addGenerationPrompt;
                input.kwargs = kwargs;
                try {
                    text = chat->render(input);
                } catch (const InputError& e) {
                    throw InputError(where + ": " + e.what());
                }
            }
            if (!text.empty())
                docs.push_back({ std::move(text), where });
            return true;
        });
    if (docs.empty())
        throw InputError(path + ": no documents (the file is empty or every \"messages\" list is empty)");
    return docs;
}

} // namespace moeatlas
