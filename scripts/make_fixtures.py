#!/usr/bin/env python3
"""Writes mnemo's committed reference fixtures under tests/fixtures/ from the
reference implementations, so `make test` never needs them installed.

One function per fixture kind; main() runs the kinds named on the command
line (default: all).

  tokens : tests/fixtures/tokens_<vocab>.txt - llama.cpp's token ids (through
           llama-cpp-python, vocab_only) for a varied text set, for the default
           model's vocabulary and llama.cpp's test vocabularies
  chat   : tests/fixtures/chat.txt - chat prompts rendered by jinja2 exactly as
           transformers' apply_chat_template does, for the default model's
           template and reference ChatML / Llama-2 templates
  quant  : tests/fixtures/quant_ref.bin - blocks of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
           Q4_K, Q6_K and their dequantized values by the `gguf` package's
           numpy port of ggml's reference code (legacy types quantized by it
           from known floats, K types from random bits with valid scales)

Usage: python3 scripts/make_fixtures.py [tokens] [chat] [quant]
Needs: pip install llama-cpp-python jinja2 gguf; the default model under
models/ and llama.cpp's vocab files under .cache/vocab/ (make setup).

tokens_*.txt format (one record per line, tab-separated, '#' starts a comment):
  vocab  <path of the GGUF relative to the repository root>
  patch_pre <name>  (optional) the test replaces the file's tokenizer.ggml.pre string value
         with <name> in memory before loading (same bytes as patch_pre() below)
  meta   n_vocab=<n> bos=<id> eos=<id> add_bos=<0|1>
  eog    <ids of every end-of-generation token, space-separated>
  case   <add_special><parse_special>  <text as hex UTF-8 bytes>  <ids, space-separated>
  book   <path relative to the repository root> <token count> <FNV-1a 64 of the ids as int32 LE, hex>
         (the whole eval book, add_special=0, parse_special=0)
chat.txt format:
  template <name> <template source as hex>
  case <name> <add_generation_prompt> <messages: role=hexcontent,...> <expected output as hex>
  (template name "model" means the default model's own tokenizer.chat_template)
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
VOCAB_DIR = os.path.join(ROOT, ".cache", "vocab")
BOOK = os.path.join(ROOT, "data", "eval", "books", "pg11229.txt")

# (fixture name, GGUF, replacement tokenizer.ggml.pre or None)
VOCABS = [
    ("smollm2", MODEL, None),
    ("gemma3", os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"), None),
    ("llama-spm", os.path.join(VOCAB_DIR, "ggml-vocab-llama-spm.gguf"), None),
    ("llama-bpe", os.path.join(VOCAB_DIR, "ggml-vocab-llama-bpe.gguf"), None),
    ("gpt-2", os.path.join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf"), None),
    # the "default" BPE pre-tokenizer, on the GPT-2 vocabulary
    ("gpt-2-default", os.path.join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf"), "default"),
]


def book_paragraph(n_chars=3000):
    """A long stretch of real prose from the eval book (after the Gutenberg header)."""
    with open(BOOK, encoding="utf-8") as f:
        t = f.read()
    s = t.find("*** START OF")
    if s >= 0:
        t = t[t.find("\n", s) + 1:]
    t = t.lstrip()
    start = len(t) // 3
    start = t.find("\n\n", start) + 2
    return t[start:start + n_chars]


def token_texts():
    """The text set: bytes objects (some deliberately not valid UTF-8)."""
    texts = [
        "",
        " ",
        "\n",
        "Hello world",
        " Hello world",
        "Hello, World! How's it going? I'm fine; you'd've thought they'll say we're done.",
        "I'M DON'T WE'LL THEY'RE SHE'S YOU'VE HE'D 's 'S 'll 'LL 'Re ''' '",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
        "int main(void) {\n\treturn 0; // done\r\n}\r\n#include <stdio.h>\n\tx += y*2;  /* c */",
        "1234567890 3.14159",
        "a1b22c333d4444e55555 99999999 007 1,000,000.50 -42 +7e10",
        "Roman \u216b, half \u00bd, Arabic-Indic \u0663\u0664\u0665, Thai \u0e53, superscript x\u00b2",
        "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
        "\U0001F999 llama \U0001F680\U0001F44D\U0001F3FD family: \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 \u2764\ufe0f",
        "\u00c4pfel caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m e\u0301 \u0141\u00f3d\u017a Stra\u00dfe",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 \u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u0928\u092e\u0938\u094d\u0924\u0947",
        "   leading spaces",
        "trailing spaces   ",
        "a  b   c    d     e",
        "\t\tTabs\tand\nnewlines\n\n\nend",
        "\r\n\r\n \n \n\n  \n\t\n",
        "\u00a0nbsp\u2003em\u3000ideographic\u2028line\u0085nel",
        "...!!!???  $$$ +++ <<<>>> ^^^ ~~~ ||| ``` @@@ ### %%% &&& *** ((( ))) [[[ ]]] {{{ }}}",
        "<|im_start|>user\nhi<|im_end|>\n",
        "<|im_start|><|im_end|><|endoftext|> x<|im_start|>  y",
        "<s>[INST] hi [/INST] ok</s><unk>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
        "<|im_start|", "<|im_end|>>|<<|im_end|>",
        "\u2581leading lower-one-eighth block \u2581\u2581 and <0x41> text",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "!" * 40 + " " * 40 + "x",
        "Price: $1,234.56 (approx.) -- 1+1=2 <=> a^b ~x |y| `q` \u00abquoted\u00bb \u00bfqu\u00e9? \u00a1s\u00ed! "
        "\u2014 dash\u2026 123456789 12 1234 \u0663\u0664\u0665\u0666 x\u00b2\u00b3 \u00a7\u00b6 \u20ac5",
        book_paragraph(),
    ]
    out = [t.encode("utf-8") for t in texts]
    out += [
        b"\xff\xfe bad \xc3 x\xe2\x82",  # stray and truncated bytes
        b"abc\xe2\x82",                  # truncated at the end
        b"\xc0\x80 \xed\xa0\x80 \x80\x80 ok",  # overlong, surrogate, lone continuations
    ]
    return out


def fnv1a64_ids(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little", signed=True):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def patch_pre(data, new_pre):
    """GGUF bytes with the tokenizer.ggml.pre string value replaced (later bytes shift)."""
    import struct
    key = b"tokenizer.ggml.pre"
    head = struct.pack("<Q", len(key)) + key + struct.pack("<I", 8)
    at = data.index(head) + len(head)
    (n,) = struct.unpack_from("<Q", data, at)
    val = new_pre.encode()
    return data[:at] + struct.pack("<Q", len(val)) + val + data[at + 8 + n:]


def fixture_tokens():
    import tempfile
    import llama_cpp
    os.makedirs(FIX, exist_ok=True)
    texts = token_texts()
    for name, path, pre in VOCABS:
        if not os.path.exists(path):
            print(f"tokens: skip {name}: {path} missing", file=sys.stderr)
            continue
        load_path = path
        if pre is not None:
            with open(path, "rb") as fh:
                data = patch_pre(fh.read(), pre)
            tmp = tempfile.NamedTemporaryFile(suffix=".gguf", delete=False)
            tmp.write(data)
            tmp.close()
            load_path = tmp.name
        llm = llama_cpp.Llama(model_path=load_path, vocab_only=True, verbose=False)
        if pre is not None:
            os.unlink(load_path)
        v = llm._model.vocab
        n_vocab = llama_cpp.llama_vocab_n_tokens(v)
        lines = [
            f"# llama.cpp token ids (llama-cpp-python {llama_cpp.__version__}) - written by scripts/make_fixtures.py",
            f"vocab\t{os.path.relpath(path, ROOT)}",
        ] + ([f"patch_pre\t{pre}"] if pre is not None else []) + [
            f"meta\tn_vocab={n_vocab} bos={llama_cpp.llama_vocab_bos(v)} eos={llama_cpp.llama_vocab_eos(v)}"
            f" add_bos={int(llama_cpp.llama_vocab_get_add_bos(v))}",
            "eog\t" + " ".join(str(i) for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(v, i)),
        ]
        with open(BOOK, "rb") as fb:
            book_ids = llm.tokenize(fb.read(), add_bos=False, special=False)
        lines.append(f"book\t{os.path.relpath(BOOK, ROOT)}\t{len(book_ids)}\t{fnv1a64_ids(book_ids):016x}")
        for t in texts:
            for add_special in (0, 1):
                for parse_special in (0, 1):
                    if len(t) > 500 and add_special != parse_special:
                        continue  # keep the files small: long texts get two flag combinations
                    ids = llm.tokenize(t, add_bos=bool(add_special), special=bool(parse_special))
                    lines.append(f"case\t{add_special}{parse_special}\t{t.hex()}\t" + " ".join(map(str, ids)))
        out = os.path.join(FIX, f"tokens_{name}.txt")
        with open(out, "w") as f:
            f.write("\n".join(lines) + "\n")
        n_cases = sum(1 for ln in lines if ln.startswith("case"))
        print(f"tokens: wrote {os.path.relpath(out, ROOT)} ({n_cases} cases, book {len(book_ids)} tokens)")
        del llm


# Reference templates (public Hugging Face tokenizer_config.json chat templates).
CHATML_PLAIN = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
                " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                "{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
          "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")


# The Gemma 3 instruction-tuned models' template (google/gemma-3-*-it tokenizer_config.json), text parts only.
GEMMA3 = ("{{ bos_token }}\n"
          "{%- if messages[0]['role'] == 'system' -%}\n"
          "    {%- if messages[0]['content'] is string -%}\n"
          "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
          "    {%- else -%}\n"
          "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
          "    {%- endif -%}\n"
          "    {%- set loop_messages = messages[1:] -%}\n"
          "{%- else -%}\n"
          "    {%- set first_user_prefix = \"\" -%}\n"
          "    {%- set loop_messages = messages -%}\n"
          "{%- endif -%}\n"
          "{%- for message in loop_messages -%}\n"
          "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
          "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
          "    {%- endif -%}\n"
          "    {%- if (message['role'] == 'assistant') -%}\n"
          "        {%- set role = \"model\" -%}\n"
          "    {%- else -%}\n"
          "        {%- set role = message['role'] -%}\n"
          "    {%- endif -%}\n"
          "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
          "    {%- if message['content'] is string -%}\n"
          "        {{ message['content'] | trim }}\n"
          "    {%- elif message['content'] is iterable -%}\n"
          "        {%- for item in message['content'] -%}\n"
          "            {%- if item['type'] == 'image' -%}\n"
          "                {{ '<start_of_image>' }}\n"
          "            {%- elif item['type'] == 'text' -%}\n"
          "                {{ item['text'] | trim }}\n"
          "            {%- endif -%}\n"
          "        {%- endfor -%}\n"
          "    {%- else -%}\n"
          "        {{ raise_exception(\"Invalid content type\") }}\n"
          "    {%- endif -%}\n"
          "    {{ '<end_of_turn>\n' }}\n"
          "{%- endfor -%}\n"
          "{%- if add_generation_prompt -%}\n"
          "    {{'<start_of_turn>model\n'}}\n"
          "{%- endif -%}\n")

def render(template, messages, add_generation_prompt, bos="<s>", eos="</s>"):
    """Renders like transformers' apply_chat_template (sandboxed, trim_blocks, lstrip_blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise ValueError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)


def fixture_chat():
    import gguf
    r = gguf.GGUFReader(MODEL)
    f = r.fields["tokenizer.chat_template"]
    model_tmpl = bytes(f.parts[f.data[0]]).decode("utf-8")
    convs = {
        "three": [{"role": "user", "content": "Hi there!"},
                  {"role": "assistant", "content": "Hello! How can I help you today?"},
                  {"role": "user", "content": "Write a haiku about the sea.\nKeep it short."}],
        "system": [{"role": "system", "content": "You are terse."},
                   {"role": "user", "content": "  What is 2+2?  "},
                   {"role": "assistant", "content": "4"},
                   {"role": "user", "content": "And 3+3? \u00e9\U0001F999"}],
        "one": [{"role": "user", "content": "hello"}],
        "empty": [],
    }
    cases = [("model", model_tmpl, ["three", "system", "one", "empty"]),
             ("chatml", CHATML_PLAIN, ["three", "system", "one"]),
             ("llama2", LLAMA2, ["three", "system", "one"]),
             ("gemma3", GEMMA3, ["three", "system", "one"])]
    lines = ["# chat prompts rendered by jinja2 like transformers.apply_chat_template - scripts/make_fixtures.py"]
    for name, tmpl, _ in cases:
        if name != "model":
            lines.append(f"template\t{name}\t{tmpl.encode().hex()}")
    for name, tmpl, conv_names in cases:
        for cn in conv_names:
            for agp in (0, 1):
                msgs = convs[cn]
                # Gemma's leading {{ bos_token }} is the tokenizer's to add (mnemo renders without it,
                # as llama.cpp does): rendered here with an empty BOS
                text = render(tmpl, msgs, bool(agp), bos="" if name == "gemma3" else "<s>")
                enc = ",".join(f"{m['role']}={m['content'].encode().hex()}" for m in msgs)
                lines.append(f"case\t{name}\t{agp}\t{enc}\t{text.encode().hex()}")
    out = os.path.join(FIX, "chat.txt")
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"chat: wrote {os.path.relpath(out, ROOT)} ({len(lines) - 1 - 2} cases)")


def fixture_quant():
    """quant_ref.bin, little-endian: b"MNQF", u32 version 1, u32 count; per type: u32 ggml type, u32 n
    (values), u32 nbytes, u32 has_src; the n source floats if has_src (the reference quantized them into
    the bytes); the nbytes block bytes; the n reference-dequantized floats."""
    import struct
    import numpy as np
    import gguf
    from gguf import quants
    T = gguf.GGMLQuantizationType
    rng = np.random.default_rng(20261206)
    out = [b"MNQF", struct.pack("<II", 1, 7)]
    for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q6_K"):
        qt = getattr(T, name)
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        n = 1024
        if bs == 32:  # quantized by the reference from floats of varied scale per block
            x = (rng.standard_normal(n) * np.repeat(rng.uniform(0.01, 3.0, n // bs), bs)).astype(np.float32)
            x[:bs] = 0.0  # an all-zero block
            q = quants.quantize(x.reshape(1, -1), qt).reshape(-1)
            src = x
        else:  # random bits, the f16 scales set to valid values
            q = rng.integers(0, 256, size=(n // bs) * ts, dtype=np.uint8)
            blocks = q.reshape(-1, ts)
            for b in blocks:
                if name == "Q4_K":  # d, dmin at the front
                    b[0:2] = np.frombuffer(np.float16(rng.uniform(1e-3, 0.1)).tobytes(), np.uint8)
                    b[2:4] = np.frombuffer(np.float16(rng.uniform(1e-3, 0.1)).tobytes(), np.uint8)
                else:  # Q6_K: d at the end
                    b[ts - 2:ts] = np.frombuffer(np.float16(rng.uniform(1e-3, 0.1)).tobytes(), np.uint8)
            src = None
        deq = quants.dequantize(q.reshape(1, -1), qt).reshape(-1).astype(np.float32)
        assert deq.size == n and np.all(np.isfinite(deq)), name
        out.append(struct.pack("<IIII", int(qt), n, q.size, 1 if src is not None else 0))
        if src is not None:
            out.append(src.astype("<f4").tobytes())
        out.append(q.astype(np.uint8).tobytes())
        out.append(deq.astype("<f4").tobytes())
    path = os.path.join(FIX, "quant_ref.bin")
    with open(path, "wb") as fh:
        fh.write(b"".join(out))
    from importlib.metadata import version
    print(f"quant: wrote {os.path.relpath(path, ROOT)} (gguf {version('gguf')})")


FIXTURES = {"tokens": fixture_tokens, "chat": fixture_chat, "quant": fixture_quant}


def main(argv):
    names = argv or list(FIXTURES)
    for n in names:
        if n not in FIXTURES:
            sys.exit(f"unknown fixture kind '{n}' (known: {', '.join(FIXTURES)})")
    for n in names:
        FIXTURES[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
