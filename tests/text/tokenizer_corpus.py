"""Shared test corpus for the tokenizer parity tests and benchmark: multilingual text, code,
numbers, whitespace runs, special tokens inside text, and seeded random strings."""
import random

BASE_TEXTS = [
    "",
    " ",
    "Hello world",
    "Hello world!  How are you?\tFine.\n\nNew paragraph.",
    "   leading and trailing spaces   ",
    "I'm sure they'll say it's John's car, we've seen it, you'd agree. I'M SURE THEY'LL.",
    "Ünïcödé façade naïve café — résumé; Straße, ŒUVRE, ĳssel",
    "e\u0301 combining: a\u0308o\u0308u\u0308 n\u0303 and precomposed: é ä ö ü ñ",
    "Русский текст: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "中文文本：我爱自然语言处理。日本語のテキスト、カタカナとひらがな。한국어 문장입니다.",
    "العربية: مرحبا بالعالم، كيف حالك؟ ١٢٣٤٥",
    "Emoji: 😀😃😄 👩‍👩‍👧‍👦 🇩🇪 👍🏽 ❤️ ✨",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10 1,000,000 ٣٤ ⅓ ²",
    "def foo(x):\n    return x ** 2  # square\n\n\tif x > 10:\n\t\tprint(f\"{x=}\")\n",
    "int main(void) { for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); } return 0; }",
    "<html><body class=\"x\">Tag &amp; entity</body></html>",
    "tabs\t\t\tand\n\n\nnewlines\r\n\r\nmixed \t \n ",
    "multiple     spaces      here",
    "trailing newline\n",
    "\n\nleading newlines",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "Mixed: abc123def 456ghi ---___+++ !!!??? ...",
    "NEL\u0085char and nbsp\u00a0here and ideographic\u3000space and zwsp\u200bhere",
    "ſtraße ǅ ǈ Ǌ ΣΑΣ σας İstanbul",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ﬁ ligature and ① circled",
    "Hindi: नमस्ते दुनिया. Thai: สวัสดีชาวโลก. Hebrew: שלום עולם",
    "A" * 300,
    "abc " * 50,
    "x" + " " * 40 + "y",
    "🙂" * 20,
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE ' s",
]

# Exercise single_word / lstrip / rstrip / normalized added tokens (see tokenizer_reference.py).
ADDED_TOKEN_TEXTS = [
    "say hello there", "sayhello", "hello_world", "hello, hello!", "Hello HELLO",
    "x [LS] y", "x   [LS]", "[LS][LS]", "x   [RS]   y", "[RS]\n\nz", "Café CAFÉ café",
    "a  [BOTH]  b", "[BOTH][BOTH]", "wording word sword word.", "héllo helló",
]

# Placeholders replaced per tokenizer by its own special / added tokens.
SPECIAL_TEMPLATES = [
    "{0}Hello{1}",
    "text before {0} text after",
    "{0}{0}{1}",
    "no space{0}between",
    "  {0}  spaced  {1}  ",
    "word{0}word {0} word",
    "{1}\n{0}\n",
]

ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n\r.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")
    + list("éüßçñøåæœ") + ["e\u0301", "a\u0308"]
    + list("中文字日本語かなカナ한국어")
    + list("русскийтекстЖЩЪ")
    + list("مرحبابالعالم")
    + ["😀", "👍🏽", "🇩🇪", "❤️", "\u00a0", "\u3000", "\u0085", "\u200b", "①", "½", "٣", "ǅ", "ﬁ"]
    + ["   ", "\n\n", "\t\t", "123", "4567", "'s", "'ll"]
)


def random_texts(count, seed, extra=()):
    rng = random.Random(seed)
    alphabet = ALPHABET + list(extra)
    out = []
    for _ in range(count):
        n = rng.randint(1, 60)
        out.append("".join(rng.choice(alphabet) for _ in range(n)))
    return out


def training_corpus(seed=1234, lines=4000):
    """Deterministic text to train small tokenizers on."""
    rng = random.Random(seed)
    base = [t for t in BASE_TEXTS if t]
    out = []
    for _ in range(lines):
        parts = rng.sample(base, 3)
        out.append(" ".join(parts))
    out.extend(random_texts(2000, seed + 1))
    return out


def benchmark_corpus(min_bytes=10 * 1024 * 1024, seed=99):
    """>= min_bytes of mixed documents: Zipf-distributed pseudo-words (Latin, Cyrillic, CJK),
    numbers, punctuation, code and whitespace runs, so word frequencies look like real text."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "re", "mi", "sun", "der", "ing", "tion", "al", "ver", "pro", "st", "ea", "ou",
                 "при", "ва", "ет", "ско", "ний", "的", "是", "中", "国", "人", "語", "デ", "ータ"]
    lexicon = []
    for _ in range(60000):
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.1:
            word = word.capitalize()
        lexicon.append(word)
    weights = [1.0 / (i + 1) for i in range(len(lexicon))]
    punct = [".", ",", "!", "?", ";", ":", " -", " (", ")", "\n", "\n\n", "  ", "\t"]
    docs = []
    size = 0
    while size < min_bytes:
        kind = rng.random()
        if kind < 0.75:
            words = rng.choices(lexicon, weights=weights, k=rng.randint(30, 300))
            parts = []
            for w in words:
                parts.append(w)
                r = rng.random()
                if r < 0.08:
                    parts.append(rng.choice(punct))
                elif r < 0.12:
                    parts.append(" " + str(rng.randint(0, 100000)))
                parts.append(" ")
            doc = "".join(parts)
        elif kind < 0.9:
            doc = "\n".join(rng.choice(BASE_TEXTS[13:16]) for _ in range(rng.randint(1, 6)))
        else:
            doc = " ".join(rng.choice(BASE_TEXTS[2:26]) for _ in range(rng.randint(1, 8)))
        docs.append(doc)
        size += len(doc.encode("utf-8"))
    return docs
