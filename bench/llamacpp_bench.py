#!/usr/bin/env python3
"""llama.cpp (PyPI llama-cpp-python) measured the way `mnemo bench` measures itself.

pp: P tokens in one eval from an empty cache; tg: N tokens evaluated one at a time from an empty cache,
or after D tokens of context (-d, untimed); one warm-up, then R repetitions; same pseudo-random token
sequence as mnemo bench; --flash-attn turns on llama.cpp's flash attention. Prints one JSON line.
Peak RSS is reported twice: the whole Python process, and the increase over the interpreter with
llama_cpp imported (what the model and its context cost), to compare with mnemo's process RSS.
"""
import argparse, json, resource, statistics, sys, time


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('-m', required=True)
    ap.add_argument('-p', type=int, default=512)
    ap.add_argument('-n', type=int, default=128)
    ap.add_argument('-t', type=int, default=2)
    ap.add_argument('-r', type=int, default=3)
    ap.add_argument('-d', type=int, default=0)
    ap.add_argument('--flash-attn', action='store_true')
    a = ap.parse_args()
    import llama_cpp
    base = current_rss_mib()
    batch = max(a.p, 512)
    llm = llama_cpp.Llama(model_path=a.m, n_ctx=max(a.p, a.d + a.n) + 1, n_batch=batch, n_ubatch=batch,
                          n_threads=a.t, n_threads_batch=a.t, flash_attn=a.flash_attn, verbose=False)
    V = llm.n_vocab()
    s = 0x9e3779b97f4a7c15
    toks = []
    for _ in range(max(a.p, a.d) + a.n + 1):  # xorshift64, as mnemo bench
        s ^= (s << 13) & 0xFFFFFFFFFFFFFFFF
        s ^= s >> 7
        s ^= (s << 17) & 0xFFFFFFFFFFFFFFFF
        toks.append(s % V)
    pp, tg = [], []
    for r in range(-1, a.r):
        if a.p:
            llm.reset()
            llm._ctx.memory_clear(True) if hasattr(llm._ctx, 'memory_clear') else None
            t0 = time.perf_counter()
            llm.eval(toks[:a.p])
            if r >= 0:
                pp.append(a.p / (time.perf_counter() - t0))
        if a.n:
            llm.reset()
            llm._ctx.memory_clear(True) if hasattr(llm._ctx, 'memory_clear') else None
            if a.d:
                llm.eval(toks[:a.d])
            t0 = time.perf_counter()
            for i in range(a.n):
                llm.eval([toks[a.d + i]])
            if r >= 0:
                tg.append(a.n / (time.perf_counter() - t0))
    sd = lambda x: statistics.stdev(x) if len(x) > 1 else 0.0
    print(json.dumps({
        'engine': 'llama.cpp (llama-cpp-python %s)' % llama_cpp.__version__, 'threads': a.t, 'n_prompt': a.p,
        'n_gen': a.n, 'depth': a.d, 'flash_attn': a.flash_attn, 'reps': a.r,
        'prefill_tok_s': round(statistics.mean(pp), 2) if pp else 0, 'prefill_sd': round(sd(pp), 2),
        'decode_tok_s': round(statistics.mean(tg), 2) if tg else 0, 'decode_sd': round(sd(tg), 2),
        'peak_rss_mib': round(peak_rss_mib(), 1), 'rss_over_interpreter_mib': round(peak_rss_mib() - base, 1)}))


if __name__ == '__main__':
    main()
