// Chat templates without Python: hand-written templates whose output is known by construction,
// Python's json.dumps spellings written out by hand, the model-file lookup, the refusal of
// unsupported constructs by name, and messages calibration records rendered through
// buildCalibrationSet with the CLI's options. Parity with transformers itself:
// tst_chat_template_parity.
#include "test_io.h"
#include "text/calibration.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QtTest>

#include <nlohmann/json.hpp>

#include <set>

using namespace moeatlas;
using moeatlas::test::inputErrorOf;
using ojson = nlohmann::ordered_json;

namespace {

const char* const kSimple = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                            "{% if add_generation_prompt %}<|assistant|>{% endif %}";

ChatInput conversation(bool generationPrompt)
{
    ChatInput in;
    in.messages = ojson::parse(R"([{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}])");
    in.addGenerationPrompt = generationPrompt;
    return in;
}

std::string render(const std::string& tpl, const ChatInput& in, const std::map<std::string, std::string>& tokens = {})
{
    return ChatTemplate::fromSource(tpl, "t.jinja", tokens).render(in);
}

// Character tokenizer (ids = ASCII codes) with "<|user|>" = 1 and "<|end|>" = 2 as special
// tokens, written as a file so that a tokenizer_config.json can lie beside it.
void writeAsciiTokenizer(const std::filesystem::path& file)
{
    nlohmann::json vocab = nlohmann::json::object();
    vocab["<|user|>"] = 1;
    vocab["<|end|>"] = 2;
    vocab["\n"] = 10;
    for (int c = 32; c < 127; ++c)
        vocab[std::string(1, static_cast<char>(c))] = c;
    nlohmann::json j = nlohmann::json::parse(R"({
      "version": "1.0",
      "added_tokens": [
        {"id": 1, "content": "<|user|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 2, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
      "normalizer": null, "pre_tokenizer": null, "decoder": null, "post_processor": null,
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false,
                "merges": []}})");
    j["model"]["vocab"] = vocab;
    moeatlas::test::writeText(file, j.dump());
}

} // namespace

class TstChatTemplate : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void rendersMessagesAndGenerationPrompt()
    {
        // trim_blocks drops the newline after "{% endfor %}"; the "\n" inside the loop stays.
        QCOMPARE(render(kSimple, conversation(false)),
            std::string("<|system|>Be brief.\n<|user|>Hi\n<|assistant|>Hello.\n"));
        QCOMPARE(render(kSimple, conversation(true)),
            std::string("<|system|>Be brief.\n<|user|>Hi\n<|assistant|>Hello.\n<|assistant|>"));
    }

    void specialTokensAndKwargs()
    {
        ChatInput in = conversation(false);
        const std::string tpl = "{{ bos_token }}{{ messages | length }}{% if enable_thinking is defined and not "
                                "enable_thinking %}/no_think{% endif %}{{ eos_token }}";
        QCOMPARE(render(tpl, in, { { "bos_token", "<s>" }, { "eos_token", "</s>" } }), std::string("<s>3</s>"));
        in.kwargs["enable_thinking"] = false;
        QCOMPARE(
            render(tpl, in, { { "bos_token", "<s>" }, { "eos_token", "</s>" } }), std::string("<s>3/no_think</s>"));
        // kwargs win over the special tokens of the same name, as in apply_chat_template.
        in.kwargs["bos_token"] = "[B]";
        QCOMPARE(render(tpl, in, { { "bos_token", "<s>" } }), std::string("[B]3/no_think"));
    }

    void reasoningFieldsAreAliased()
    {
        // transformers: {"thinking": r, **message, "reasoning_content": r} for any of the three names;
        // keys holding null are dropped first.
        ChatInput in;
        in.messages = ojson::parse(R"([{"role": "assistant", "reasoning": "R1", "content": "A", "tool_calls": null},
            {"role": "assistant", "thinking": "R2", "content": "B"}])");
        const std::string tpl = "{% for m in messages %}{{ m.reasoning_content }}|{{ m.thinking }}|"
                                "{{ m.tool_calls is defined }}|{% for k in m %}{{ k }},{% endfor %};{% endfor %}";
        QCOMPARE(render(tpl, in),
            std::string("R1|R1|False|thinking,role,reasoning,content,reasoning_content,;"
                        "R2|R2|False|role,thinking,content,reasoning_content,;"));
    }

    void tojsonAsPythonJsonDumps()
    {
        // Expected strings are json.dumps(x, ensure_ascii=False) etc., written out by hand.
        ChatInput in;
        in.tools = ojson::parse(
            "[{\"name\": \"f\", \"z\": [1.5, 2.0, 1e-05, 1e16, 3], \"a\": \"é\\n\\\"\", \"n\": null, \"t\": true}]");
        QCOMPARE(render("{{ tools | tojson }}", in),
            std::string("[{\"name\": \"f\", \"z\": [1.5, 2.0, 1e-05, 1e+16, 3], \"a\": \"é\\n\\\"\", \"n\": null, "
                        "\"t\": true}]"));
        QCOMPARE(render("{{ tools[0].a | tojson(ensure_ascii=True) }}", in), std::string("\"\\u00e9\\n\\\"\""));
        QCOMPARE(render("{{ tools[0].z | tojson(indent=2) }}", in),
            std::string("[\n  1.5,\n  2.0,\n  1e-05,\n  1e+16,\n  3\n]"));
        QCOMPARE(render("{{ tools[0] | tojson(separators=(',', ':'), sort_keys=True) }}", in),
            std::string("{\"a\":\"é\\n\\\"\",\"n\":null,\"name\":\"f\",\"t\":true,\"z\":[1.5,2.0,1e-05,1e+16,3]}"));
    }

    void unsupportedConstructsAreRefusedByName()
    {
        QString e = inputErrorOf([] { (void)ChatTemplate::fromSource("a\n{% include 'other.jinja' %}", "t.jinja"); });
        QVERIFY2(e.contains(QStringLiteral("{% include %} (line 2)")) && e.contains(QStringLiteral("t.jinja")),
            qPrintable(e));
        e = inputErrorOf(
            [] { (void)ChatTemplate::fromSource("{# {% with %} #}{% with x = 1 %}{% endwith %}", "t.jinja"); });
        QVERIFY2(e.contains(QStringLiteral("{% with %} (line 1)")), qPrintable(e));
        // A test the engine lacks fails when rendered, naming it and its place.
        e = inputErrorOf([] { (void)render("{% if messages[0].x is undefined %}u{% endif %}", conversation(false)); });
        QVERIFY2(e.contains(QStringLiteral("'is' operator: undefined")) && e.contains(QStringLiteral("row 1")),
            qPrintable(e));
        // The template's own raise_exception is an InputError with its message.
        e = inputErrorOf([] { (void)render("{{ raise_exception('only user roles') }}", conversation(false)); });
        QVERIFY2(e.contains(QStringLiteral("only user roles")), qPrintable(e));
    }

    // Engine patches (third_party/minja/README.md); each expected string is what Jinja2 renders
    // with transformers' environment (trim_blocks, lstrip_blocks), written out by hand.
    void lstripBlocksOnlyBeforeBlockTags()
    {
        // Patch 1: the indentation before {{ }} stays; before {% %} and {# #} it goes.
        QCOMPARE(render("a\n  {{ 'x' }}\n  {% if true %}y{% endif %}\n  {# c #}z\n\t{%- if true %}\n    {{ 'w' }}{% "
                        "endif %}",
                     conversation(false)),
            std::string("a\n  x\nyz    w"));
        // ByteDance-Seed-OSS's tool docstring: the description keeps its four spaces.
        ChatInput in;
        in.tools = ojson::parse(R"([{"name": "f", "params": ["a", "b"], "description": " Does f. "}])");
        const std::string docstring = "{% for t in tools %}\ndef {{ t.name }}(\n{%- for p in t.params %}\n"
                                      "        {{- p }}{% if not loop.last %},{% endif %}\n{%- endfor %}):\n"
                                      "    \"\"\"\n    {{ t.description | trim }}\n{% endfor %}";
        QCOMPARE(render(docstring, in), std::string("def f(a,b):\n    \"\"\"\n    Does f.\n"));
    }

    void callOnAnyPostfixExpression()
    {
        // Patch 2: a call's result can be called, subscripted or have its methods called (GLM-4.6,
        // StepFun-3.5-Flash: `not visible_text(m.content).endswith("/nothink")`).
        QCOMPARE(
            render("{% macro f(x) %}{{ x }}{% endmacro %}{{ f('ab').endswith('b') }}|{{ 'yes' if (true and not "
                   "f('x/nothink').endswith('/nothink')) else 'no' }}|{{ f('a b').split(' ')[1] }}|{{ f ('c').upper() "
                   "}}",
                conversation(false)),
            std::string("True|no|b|C"));
    }

    void undefinedInStringFiltersIsEmpty()
    {
        // Patch 3: Jinja's Undefined is "" through trim, upper and lower (Hermes-2-Pro / Hermes-3
        // tool_use: `"): " + param_fields.description|trim` for a parameter without a description).
        ChatInput in;
        in.messages = ojson::parse(R"([{"role": "user", "content": "  hi "}])");
        QCOMPARE(render("{% for m in messages %}{{ '(' + m.role + '): ' + m.missing|trim }}|{{ m.missing|upper }}|{{ "
                        "m.missing|lower }}|{{ m.content|trim }};{% endfor %}",
                     in),
            std::string("(user): |||hi;"));
    }

    void subscriptsByCodePoint()
    {
        // Patch 5: a str is indexed and sliced by code point with Python's clamped bounds (minja indexed
        // bytes, gave "" for "xy"[1] and read past the end of an over-long slice). Expected: Jinja2's.
        QCOMPARE(render("{{ \"xy\"[1] }}|{{ \"z\u00fcri\"[1] }}|{{ \"z\u00fcri\"[-1] }}|{{ \"z\u00fcri\"[1:3] }}|"
                        "{{ \"z\u00fcri\"[::-1] }}|{{ \"xy\"[5] }}|{{ [1,2,3][1:10] }}|{{ \"abc\"[-10:2] }}|"
                        "{{ \"abcdef\"[5:1:-2] }}|{{ [1,2,3][::-1] }}",
                     conversation(false)),
            std::string("y|\u00fc|i|\u00fcr|ir\u00fcz||[2, 3]|ab|fd|[3, 2, 1]"));
    }

    void markupConcatenationEscapes()
    {
        // Patch 4: |safe and |escape make a markupsafe.Markup; + escapes the other string operand
        // (meetkai functionary-v3.1's tool list); ~ and printing do not.
        ChatInput in;
        in.tools = ojson::array({ { { "name", "f<'x'>" }, { "description", "A & \"B\"" } } });
        const std::string tpl = "{% for t in tools %}{{ \"Use '\"|safe + t.name + \"' to '\"|safe + t.description + "
                                "\"'\\n\"|safe + t | tojson }}{% endfor %}|{{ tools[0].name|tojson|safe }}|"
                                "{{ '<' ~ ('&'|safe) }}|{{ \"'<\"|e }}|{{ (\"<\"|e)|e + '>' }}|"
                                "{{ ('<'|safe|trim|upper) + '>' }}|{{ 'a<' + ('b'|safe) }}";
        QCOMPARE(render(tpl, in),
            std::string("Use 'f&lt;&#39;x&#39;&gt;' to 'A &amp; &#34;B&#34;'\n{&#34;name&#34;: "
                        "&#34;f&lt;&#39;x&#39;&gt;&#34;, &#34;description&#34;: &#34;A &amp; \\&#34;B\\&#34;&#34;}"
                        "|\"f<'x'>\"|<&|&#39;&lt;|&lt;&gt;|<&gt;|a&lt;b"));
        // Where Markup would keep its type and the engine does not track it, rendering refuses.
        const QString e = inputErrorOf([] { (void)render("{{ ('<'|safe).strip() + '<' }}", conversation(false)); });
        QVERIFY2(e.contains(QStringLiteral("strip() of a markupsafe.Markup value")), qPrintable(e));
    }

    void modelFilesAndTemplateChoice()
    {
        QTemporaryDir dir;
        const std::filesystem::path d = dir.path().toStdString();
        QVERIFY(!ChatTemplate::modelHasChatTemplate(d.string()));
        moeatlas::test::writeText(d / "tokenizer_config.json",
            ojson { { "bos_token", { { "__type", "AddedToken" }, { "content", "<B>" } } },
                { "chat_template",
                    ojson::array({ { { "name", "default" }, { "template", "{{ bos_token }}D" } },
                        { { "name", "tool_use" }, { "template", "{{ bos_token }}T{{ tools | length }}" } } }) } }
                .dump());
        QVERIFY(ChatTemplate::modelHasChatTemplate((d / "tokenizer.json").string()));
        ChatTemplate t = ChatTemplate::fromModelFiles((d / "tokenizer.json").string());
        QCOMPARE(t.names(), (std::vector<std::string> { "default", "tool_use" }));
        ChatInput in = conversation(false);
        QCOMPARE(t.render(in), std::string("<B>D"));
        in.tools = ojson::parse(R"([{"name": "f"}])");
        QCOMPARE(t.render(in), std::string("<B>T1")); // tools given: "tool_use", as transformers picks
        QVERIFY(inputErrorOf([&] { t.select("rag"); }).contains(QStringLiteral("it has: default, tool_use")));
        // chat_template.jinja beside it wins over tokenizer_config.json.
        moeatlas::test::writeText(d / "chat_template.jinja", "J{{ bos_token }}");
        QCOMPARE(ChatTemplate::fromModelFiles(d.string()).render(in), std::string("J<B>"));
    }

    void calibrationRendersMessagesWithTheModelTemplate()
    {
        QTemporaryDir dir;
        const std::filesystem::path d = dir.path().toStdString();
        writeAsciiTokenizer(d / "tokenizer.json");
        moeatlas::test::writeText(d / "tokenizer_config.json",
            ojson { { "eos_token", "<|end|>" },
                { "chat_template",
                    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
                    "{% if tools %}T{% endif %}{% if add_generation_prompt %}G{% endif %}{% if x %}X{{ x }}{% endif "
                    "%}" } }
                .dump());
        const std::string data = (d / "chat.jsonl").string();
        moeatlas::test::writeText(data,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"ab\"}], \"tools\": [{\"name\": \"f\"}]}\n"
            "{\"messages\": [{\"role\": \"user\", \"content\": \"c\"}]}\n");
        const Tokenizer tok = Tokenizer::fromFile((d / "tokenizer.json").string());
        PackingOptions packing;
        packing.seqLen = 6;
        packing.dropRemainder = false;
        TextOptions text; // chatTemplate "auto": the model's
        const CalibrationSet set
            = buildCalibrationSet({ { "chat", data, std::nullopt } }, packing, text, &tok, "tok", 128);
        // Documents "<|user|>ab<|end|>T" and "<|user|>c<|end|>": the special tokens are single ids
        // (1, 2), as transformers' tokenizer reads them in the rendered text.
        std::vector<int32_t> all;
        for (const auto& s : set.domains[0].sequences)
            all.insert(all.end(), s.begin(), s.end());
        std::multiset<int32_t> got(all.begin(), all.end());
        QVERIFY(got == (std::multiset<int32_t> { 1, 'a', 'b', 2, 'T', 1, 'c', 2 }));
        QVERIFY2(
            set.describePacking().find("rendered by the chat template of " + (d / "tokenizer_config.json").string())
                != std::string::npos,
            set.describePacking().c_str());

        // --add-generation-prompt and --chat-arg x=7 reach the template; --chat-template none gives the lines.
        text.addGenerationPrompt = true;
        text.chatKwargs = { { "x", "7" } };
        auto chat = resolveChatTemplate(text, tok.source());
        QVERIFY(chat);
        auto docs = readMessagesJsonl(data, chat.get(), text);
        QCOMPARE(docs[1].text, std::string("<|user|>c<|end|>GX7"));
        text.chatTemplate = "none";
        QVERIFY(!resolveChatTemplate(text, tok.source()));
        QCOMPARE(readMessagesJsonl(data).at(1).text, std::string("user: c"));
        text.chatTemplate = "tool_use";
        QVERIFY(inputErrorOf([&] {
            (void)resolveChatTemplate(text, tok.source());
        }).contains(QStringLiteral("no chat template named 'tool_use'")));
        text.chatTemplate = "auto";
        text.chatKwargs = { { "x", "False" } };
        chat = resolveChatTemplate(text, tok.source());
        QVERIFY(inputErrorOf([&] {
            (void)readMessagesJsonl(data, chat.get(), text);
        }).contains(QStringLiteral("write JSON's true, false or null")));
        // A record the template refuses names its file and line.
        moeatlas::test::writeText(data, "\n{\"messages\": [{\"role\": \"user\", \"content\": \"c\"}], \"tools\": 3}\n");
        text.chatKwargs.clear();
        QVERIFY(inputErrorOf([&] {
            (void)readMessagesJsonl(data, chat.get(), text);
        }).contains(QString::fromStdString(data + ":2: \"tools\" must be an array")));
    }
};

QTEST_GUILESS_MAIN(TstChatTemplate)
#include "tst_chat_template.moc"
