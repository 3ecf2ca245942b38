#!/usr/bin/env python3
"""Reference logits and perplexity from llama.cpp (PyPI llama-cpp-python) for mnemo's parity tests.

Writes small committed fixtures under tests/fixtures/, so `make test` never needs llama.cpp.
For the default model (SmolLM2):
  logits_smollm2.bin : (and logits_smollm2_f32.bin, on an f32 copy made by `mnemo convert`) for each prompt, its llama.cpp token ids, the full logits of the last position,
                       and for every position the argmax and top-8 (id, logit) pairs.
  ppl_smollm2.json   : llama-perplexity protocol (ctx 512, score second half) on the first 8192 tokens
                       of an eval book.
For Gemma 3 270M (`--gemma3`; a base model, 262K-token vocabulary, sliding window of 512):
  logits_gemma3.bin  : format MNL2: no full last row (1 MiB a prompt at this vocabulary), top-16 at
                       every position; the prompts include one of ~1200 tokens, past the window.
                       (and logits_gemma3_f32.bin on an f32 copy made by `mnemo convert`)
  ppl_gemma3.json    : the same protocol at ctx 1024 (past the window) on the first 8192 tokens,
                       and the greedy continuations (64 tokens, with llama.cpp's top-2 gap at each
                       step) of two prompts, on the file and on the f32 copy.
Usage: python3 scripts/make_logit_fixtures.py [MODEL] [logits logits_f32 ppl]
       python3 scripts/make_logit_fixtures.py --gemma3 [MODEL]
Needs: pip install llama-cpp-python numpy (a build without AMX where the kernel does not grant
the tile registers: CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON ... -DGGML_AMX_INT8=OFF").
"""
import json, struct, sys, time, os
import numpy as np
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, 'models/SmolLM2-135M-Instruct.Q4_1.gguf')
FIX = os.path.join(ROOT, 'tests/fixtures')
BOOK = os.path.join(ROOT, 'data/eval/books/pg3261-news-from-nowhere.txt')

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n# print the first ten numbers\nfor i in range(10):",
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based ink and a wooden press. Within fifty years, presses operated in more than "
    "two hundred cities across Europe, and the number of books in circulation",
]
TOPK = 8


def book_text():
    # bytes as they are on disk (CRLF kept): `mnemo ppl -f` reads the file the same way
    with open(BOOK, 'rb') as f:
        t = f.read().decode('utf-8')
    # strip the Gutenberg header/footer so the text is the book itself
    s = t.find('*** START OF')
    if s >= 0:
        t = t[t.find('\n', s) + 1:]
    e = t.find('*** END OF')
    if e >= 0:
        t = t[:e]
    return t


def logits_fixture(llm, name='logits_smollm2.bin', prompts=PROMPTS, topk=TOPK, full_last=True, add_bos=False):
    out = open(os.path.join(FIX, name), 'wb')
    out.write((b'MNLG' if full_last else b'MNL2') + struct.pack('<iii', len(prompts), llm.n_vocab(), topk))
    for p in prompts:
        ids = llm.tokenize(p.encode(), add_bos=add_bos, special=True)
        llm.reset()
        llm.eval(ids)
        sc = np.array(llm.scores[:len(ids)], dtype=np.float32)
        out.write(struct.pack('<i', len(ids)) + np.array(ids, dtype=np.int32).tobytes())
        if full_last:
            out.write(sc[-1].tobytes())
        for row in sc:
            top = np.argsort(-row, kind='stable')[:topk]
            out.write(np.array(top, dtype=np.int32).tobytes() + row[top].astype(np.float32).tobytes())
        print(f'logits: {len(ids)} tokens, last argmax {int(sc[-1].argmax())}')
    out.close()


def ppl_fixture(llm, n_ctx=512, n_tokens=8192, name='ppl_smollm2.json', extra=None, bos=None):
    ids = llm.tokenize(book_text().encode(), add_bos=False, special=False)[:n_tokens]
    first = n_ctx // 2
    nll, count = 0.0, 0
    t0 = time.time()
    for start in range(0, len(ids) - n_ctx + 1, n_ctx):
        win = ids[start:start + n_ctx]
        if bos is not None:  # llama-perplexity's protocol where the model adds BOS
            win = [bos] + win[1:]
        llm.reset()
        llm.eval(win)
        sc = np.array(llm.scores[:n_ctx], dtype=np.float64)
        for j in range(first, n_ctx - 1):
            row = sc[j]
            m = row.max()
            lse = m + np.log(np.exp(row - m).sum())
            nll -= row[ids[start + j + 1]] - lse
            count += 1
    ppl = float(np.exp(nll / count))
    res = {'ppl': ppl, 'tokens': count, 'ctx': n_ctx, 'text_tokens': len(ids),
           'book': os.path.basename(BOOK), 'strip_gutenberg_header': True,
           'reference': 'llama-cpp-python ' + __import__('llama_cpp').__version__,
           'seconds': round(time.time() - t0, 2)}
    if extra:
        res.update(extra)
    json.dump(res, open(os.path.join(FIX, name), 'w'), indent=1)
    print('ppl:', res)


def greedy(llm, prompt, n=64):
    """n greedy tokens, and at each step the gap between llama.cpp's top two logits (a gap near 0 is
    a near-tie that any rounding difference may flip)."""
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    llm.reset()
    llm.eval(ids)
    out, gaps = [], []
    for _ in range(n):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.argsort(-row, kind='stable')[:2]
        out.append(int(top2[0]))
        gaps.append(round(float(row[top2[0]] - row[top2[1]]), 4))
        llm.eval([out[-1]])
    print(f'greedy: {llm.detokenize(out)!r}')
    return {'prompt': prompt, 'prompt_ids': ids, 'greedy': out, 'gap': gaps}


GEMMA_PROMPTS = PROMPTS[1:] + [book_text()[20000:24500]]
GEMMA_GREEDY = ["The capital of France is", PROMPTS[2]]


def gemma3(model):
    # an f32 copy made by `mnemo convert` first: without quantised activations both engines agree to
    # float rounding, which checks the architecture itself (the Q4_K_M file adds int8 rounding chaos)
    import subprocess, tempfile
    f32 = os.path.join(tempfile.gettempdir(), 'mnemo-fixture-gemma3-f32.gguf')
    subprocess.run([os.path.join(ROOT, 'mnemo'), 'convert', '-m', model, '-o', f32], check=True)
    llm32 = Llama(model_path=f32, n_ctx=1280, n_batch=512, logits_all=True, n_threads=2, verbose=False)
    logits_fixture(llm32, 'logits_gemma3_f32.bin', GEMMA_PROMPTS, topk=16, full_last=False, add_bos=True)
    gens32 = [greedy(llm32, p) for p in GEMMA_GREEDY]
    del llm32
    os.unlink(f32)
    llm = Llama(model_path=model, n_ctx=1280, n_batch=512, logits_all=True, n_threads=2, verbose=False)
    logits_fixture(llm, 'logits_gemma3.bin', GEMMA_PROMPTS, topk=16, full_last=False, add_bos=True)
    gens = [greedy(llm, p) for p in GEMMA_GREEDY]
    ppl_fixture(llm, n_ctx=1024, name='ppl_gemma3.json',
                extra={'greedy': gens, 'greedy_f32': gens32, 'bos_first': llm.token_bos()}, bos=llm.token_bos())


if __name__ == '__main__':
    os.makedirs(FIX, exist_ok=True)
    if sys.argv[1:2] == ['--gemma3']:
        gemma3(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, 'models/gemma-3-270m-q4_k_m.gguf'))
        sys.exit(0)
    llm = Llama(model_path=MODEL, n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False)
    what = sys.argv[2:] or ['logits', 'logits_f32', 'ppl']
    if 'logits' in what:
        logits_fixture(llm)
    if 'ppl' in what:
        ppl_fixture(llm)
    if 'logits_f32' in what:
        # The same prompts on an f32 copy made by `mnemo convert`: with float weights neither engine
        # quantises activations, so the comparison is exact to float rounding.
        import subprocess, tempfile
        f32 = os.path.join(tempfile.gettempdir(), 'mnemo-fixture-f32.gguf')
        subprocess.run([os.path.join(ROOT, 'mnemo'), 'convert', '-m', MODEL, '-o', f32], check=True)
        llm32 = Llama(model_path=f32, n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False)
        logits_fixture(llm32, 'logits_smollm2_f32.bin')
        os.unlink(f32)
