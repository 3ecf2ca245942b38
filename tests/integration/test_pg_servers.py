#!/usr/bin/env python3
"""Several servers, one PostgreSQL store: `mnemo store` and two `mnemo serve` processes against one
database in a throw-away cluster (scripts/pg_cluster.sh; no service is assumed).

- the CLI on a PostgreSQL store: add, ls, query, rm, verify;
- a document uploaded through either server is listed and answerable through both;
- the same text uploaded through both servers at once is one document with one id;
- deleting through one server removes it for the other (404 for the document, and for a chat on it);
- kill -9 of a server in the middle of an upload leaves only whole documents (each with its chunks and
  memory), `store verify` passes, and the other server goes on serving.
Prints "N passed, N failed" like the C tests. Fresh adapters are untrained: mechanics only."""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (the server fixture, requests and checks)

ROOT = ts.ROOT
check = ts.check


def psql(conn, sql):
    r = subprocess.run(["psql", conn, "-qAt", "-c", sql], capture_output=True, text=True, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else None


def test_mem_dir_option(conn, adapter, files, tmp):
    """Without MNEMO_MEM_DIR the store names both ways to give the directory; --mem-dir gives it."""
    env = dict(os.environ)
    env.pop("MNEMO_MEM_DIR", None)
    run = lambda *a: subprocess.run([ts.BIN, *a], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    r = run("store", "add", "--db", conn, "-m", ts.MODEL, "-a", adapter, files[0])
    check(r.returncode != 0 and "--mem-dir" in r.stderr and "MNEMO_MEM_DIR" in r.stderr,
          "pg store without a memory directory names --mem-dir and MNEMO_MEM_DIR: " + r.stderr)
    r = run("store", "add", "--db", conn, "--mem-dir", "relative/dir", "-m", ts.MODEL, "-a", adapter, files[0])
    check(r.returncode == 2 and "absolute" in r.stderr, "--mem-dir must be absolute: " + r.stderr)
    md = os.path.join(tmp, "mem-option")
    r = run("store", "add", "--db", conn, "--mem-dir", md, "-m", ts.MODEL, "-a", adapter, files[0])
    check(r.returncode == 0 and "added" in r.stdout and os.path.isdir(md) and len(os.listdir(md)) >= 1,
          "pg store add --mem-dir: " + r.stdout + r.stderr)
    r = run("store", "ls", "--db", conn)
    check(r.returncode == 0 and len(r.stdout.strip().splitlines()) == 2, "the directory is recorded: ls without it: "
          + r.stdout + r.stderr)


def test_cli(conn, adapter, files):
    r = ts.mnemo("store", "add", "--db", conn, "-m", ts.MODEL, "-a", adapter, "--group", "g1", *files)
    check(r.returncode == 0 and r.stdout.count("added") == 3, "pg store add: " + r.stdout + r.stderr)
    r = ts.mnemo("store", "add", "--db", conn, "-m", ts.MODEL, files[0])
    check(r.returncode == 0 and r.stdout.startswith("exists"), "pg: same text again is a no-op: " + r.stdout + r.stderr)
    r = ts.mnemo("store", "ls", "--db", conn)
    check(r.returncode == 0 and len(r.stdout.strip().splitlines()) == 4 and "g1" in r.stdout, "pg store ls")
    r = ts.mnemo("store", "query", "--db", conn, "-m", ts.MODEL, ts.QUESTIONS["bread"], "-k", "3")
    top = r.stdout.splitlines()[0].split("\t") if r.stdout else []
    check(r.returncode == 0 and len(top) > 6 and top[6] == "bread.txt", "pg store query ranks bread first: " + r.stdout)
    r = ts.mnemo("store", "rm", "--db", conn, "1")
    check(r.returncode == 0, "pg store rm")
    r = ts.mnemo("store", "rm", "--db", conn, "1")
    check(r.returncode == 1 and "no document with id 1" in r.stderr, "pg rm unknown id: " + r.stderr)
    r = ts.mnemo("store", "verify", "--db", conn)
    check(r.returncode == 0 and "memory files: ok" in r.stdout, "pg verify: " + r.stdout + r.stderr)


def chat_on(base, doc_id):
    return ts.request(base, "POST", "/v1/chat/completions",
                      {"messages": [{"role": "user", "content": "What is this about?"}], "max_tokens": 2,
                       "mnemo": {"documents": [doc_id], "ignore_eos": True}})


def status_and_retry(base, path):
    """GET path: the status, the Retry-After header, the error message."""
    req = urllib.request.Request(base + path, method="GET")
    req.add_header("Authorization", "Bearer " + ts.KEY)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("Retry-After"), ""
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        try:
            msg = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = body
        return e.code, e.headers.get("Retry-After"), msg


def cluster_do(action, cluster, why):
    """pg_cluster.sh pause|resume on the throw-away cluster, checked; True when it did."""
    r = subprocess.run(["bash", "scripts/pg_cluster.sh", action, cluster], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    check(r.returncode == 0, f"database {why}: " + r.stderr)
    return r.returncode == 0


def serving_again(base, within=5.0):
    """Polls the document list until it answers 200, for at most `within` seconds: (status, body, seconds)."""
    t0, st, lst = time.time(), 0, {}
    while time.time() - t0 < within:
        st, lst = ts.request(base, "GET", "/v1/documents")
        if st == 200:
            break
        time.sleep(0.2)
    return st, lst, time.time() - t0


def test_outage(conn, adapter, cluster):
    """The database stopped under a running server (issue 28): every document request answers 503 with
    Retry-After and a message naming the store, never 500; /health says 503 and names the store; started
    again, the same server serves within 5 seconds, nothing lost."""
    srv = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "1", "-t", "1")
    paused = False
    try:
        st, d = ts.request(srv.base, "POST", "/v1/documents", {"title": "bread", "text": ts.DOCS["bread"]})
        bid = d.get("id") if st == 201 else None
        check(st == 201 and bid, f"upload before the outage: {st} {d}")
        st, h = ts.request(srv.base, "GET", "/health", key=None)
        check(st == 200 and h.get("status") == "ok" and h.get("store", {}).get("ok") is True and
              h.get("store", {}).get("backend") == "postgresql" and h.get("memory_dir", {}).get("ok") is True and
              h.get("store", {}).get("schema_version", 0) >= 1,
              f"health names the store, its schema version and the memory directory: {st} {h}")
        paused = cluster_do("pause", cluster, "stopped")
        for path in ("/v1/documents", f"/v1/documents/{bid}"):
            st, retry, msg = status_and_retry(srv.base, path)
            check(st == 503 and retry and "store" in msg, f"GET {path} during the outage: {st} {retry} {msg}")
        st, r = chat_on(srv.base, bid)
        check(st == 503 and ts.err_msg(r), f"a document chat during the outage: {st} {r}")
        st, r = ts.request(srv.base, "POST", "/v1/documents", {"title": "chess", "text": ts.DOCS["chess"]})
        check(st == 503 and ts.err_msg(r), f"an upload during the outage: {st} {r}")
        st, h = ts.request(srv.base, "GET", "/health", key=None)
        check(st == 503 and h.get("status") == "unavailable" and h.get("store", {}).get("ok") is False and
              h.get("store", {}).get("error") and h.get("memory_dir", {}).get("ok") is True,
              f"health during the outage names the store: {st} {h}")
        paused = not cluster_do("resume", cluster, "started again")
        st, lst, waited = serving_again(srv.base)
        check(st == 200 and bid in [x["id"] for x in lst.get("data", [])],
              f"the same server serves again within 5 s ({waited:.1f} s), nothing lost: {st}")
        st, r = chat_on(srv.base, bid)
        check(st == 200, f"a document chat after the outage: {st}")
        st, h = ts.request(srv.base, "GET", "/health", key=None)
        check(st == 200 and h.get("status") == "ok", f"health after the outage: {st} {h}")
        n_chess = psql(conn, "SELECT count(*) FROM documents WHERE title = 'chess'")
        check(n_chess == "0", f"the upload refused during the outage left no row ({n_chess})")
        with urllib.request.urlopen(srv.base + "/metrics", timeout=30) as m:
            mt = m.read().decode()
        nerr = re.search(r"^mnemo_backend_errors_total (\d+)", mt, re.M)
        check(nerr and int(nerr.group(1)) >= 4 and 'code="500"' not in mt,
              f"metrics count the backend errors and no 500: {nerr and nerr.group(0)}")
        nrec = re.search(r"^mnemo_backend_reconnects_total (\d+)", mt, re.M)
        check(nrec and int(nrec.group(1)) >= 1, f"metrics count the reconnect: {nrec and nrec.group(0)}")
    finally:
        if paused:
            subprocess.run(["bash", "scripts/pg_cluster.sh", "resume", cluster], cwd=ROOT, timeout=120)
        rc, err = srv.stop()
        check(rc == 0, f"server after the outage exits cleanly: {rc} {err[-300:]}")


def test_outage_during_stream(conn, adapter, cluster):
    """The database stopped while a document chat streams (issue 28): the answer already has its memory, so
    the stream goes on to its end ([DONE], every token), no 500 anywhere; what asks the database meanwhile
    gets 503; started again, the same server serves."""
    srv = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "2", "-t", "1")
    paused = False
    try:
        st, d = ts.request(srv.base, "POST", "/v1/documents", {"title": "volcano", "text": ts.DOCS["volcano"]})
        vid = d.get("id") if st in (200, 201) else None
        check(vid, f"upload before the stream: {st} {d}")
        n_tok = 1024  # about five seconds of decoding: the database stops while it streams
        req = urllib.request.Request(srv.base + "/v1/chat/completions", method="POST", data=json.dumps(
            {"stream": True, "max_tokens": n_tok, "messages": [{"role": "user", "content": "Tell me about it."}],
             "mnemo": {"documents": [vid], "ignore_eos": True}}).encode())
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", "Bearer " + ts.KEY)
        events, after = [], 0
        with urllib.request.urlopen(req, timeout=300) as resp:
            check(resp.status == 200, f"stream starts: {resp.status}")
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 1:  # the first token is out: stop the database under the stream
                    paused = cluster_do("pause", cluster, "stopped during the stream")
                    st, retry, msg = status_and_retry(srv.base, "/v1/documents")
                    check(st == 503 and retry, f"the store answers 503 while the stream goes on: {st} {retry} {msg}")
                elif paused:
                    after += 1
                if events[-1] == "[DONE]":
                    break
        toks = sum(1 for e in events[:-1] if '"content"' in e and json.loads(e)["choices"][0]["delta"].get("content"))
        check(events and events[-1] == "[DONE]" and after > 10,
              f"the stream ended whole after the database stopped: {len(events)} events, {after} after the stop, "
              f"last {events[-1:]}")
        last = json.loads(events[-2]) if len(events) > 1 else {}
        fin = (last.get("choices") or [{}])[0].get("finish_reason")
        check(toks > 100 and fin in ("length", "stop"), f"the answer streamed to its end: {toks} tokens, {fin}, {last}")
        paused = not cluster_do("resume", cluster, "started again")
        st, lst, waited = serving_again(srv.base)
        check(st == 200 and vid in [x["id"] for x in lst.get("data", [])], f"serving again within 5 s: {st}")
        with urllib.request.urlopen(srv.base + "/metrics", timeout=30) as m:
            mt = m.read().decode()
        check('code="500"' not in mt, "no 500 during the stream's outage")
    finally:
        if paused:
            subprocess.run(["bash", "scripts/pg_cluster.sh", "resume", cluster], cwd=ROOT, timeout=120)
        rc, err = srv.stop()
        check(rc == 0, f"server after the stream's outage exits cleanly: {rc} {err[-300:]}")


def test_held_lock(conn, adapter):
    """A lock held past the statement timeout (issue 28): a server started with --db-timeout 2 answers a
    document request that waits on the lock with 503, Retry-After and a message naming the timeout within
    a few seconds, instead of holding a slot for as long as the lock lasts; released, it serves again.
    A bad --db-timeout is a usage error."""
    r = subprocess.run([ts.BIN, "serve", "--db", conn, "--db-timeout", "soon"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    check(r.returncode == 2 and "--db-timeout" in r.stderr, f"a bad --db-timeout: {r.returncode} {r.stderr}")
    srv = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "1", "-t", "1", "--db-timeout", "2")
    holder = None
    try:
        st, _ = ts.request(srv.base, "GET", "/v1/documents")
        check(st == 200, f"listing before the lock: {st}")
        holder = subprocess.Popen(["psql", conn, "-qAt"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        holder.stdin.write("BEGIN; LOCK TABLE documents IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
        holder.stdin.flush()
        got = holder.stdout.readline().strip()
        check(got == "locked", f"a session holds the documents table: {got!r}")
        t0 = time.time()
        st, retry, msg = status_and_retry(srv.base, "/v1/documents")
        dt = time.time() - t0
        check(st == 503 and retry and "timeout" in msg and dt < 10,
              f"a request waiting on the lock: {st} {retry} {msg!r} after {dt:.1f} s")
        holder.stdin.write("ROLLBACK;\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        holder = None
        st, _ = ts.request(srv.base, "GET", "/v1/documents")
        check(st == 200, f"listing once the lock is released: {st}")
    finally:
        if holder:
            holder.kill()
        rc, err = srv.stop()
        check(rc == 0, f"server after the held lock exits cleanly: {rc} {err[-300:]}")


def test_two_servers(conn, adapter):
    a = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "1", "-t", "1")
    b = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "1", "-t", "1")
    try:
        st, d = ts.request(a.base, "POST", "/v1/documents", {"title": "volcano", "text": ts.DOCS["volcano"]})
        vid = d.get("id") if st == 201 else None
        check(st == 201 and vid, f"upload through A: {st} {d}")
        st, lst = ts.request(b.base, "GET", "/v1/documents")
        check(st == 200 and vid in [x["id"] for x in lst.get("data", [])], "B lists what A stored")
        st, r = chat_on(b.base, vid)
        check(st == 200 and [x["id"] for x in r.get("mnemo", {}).get("documents", [])] == [vid],
              f"B answers from A's upload: {st}")
        # the same text through both at once: one document
        got = {}

        def up(name, srv):
            got[name] = ts.request(srv.base, "POST", "/v1/documents", {"title": "chess", "text": ts.DOCS["chess"]})

        th = [threading.Thread(target=up, args=(n, s)) for n, s in (("a", a), ("b", b))]
        for t in th:
            t.start()
        for t in th:
            t.join()
        ids = {got[n][1].get("id") for n in got if got[n][0] in (200, 201)}
        created = [n for n in got if got[n][0] in (200, 201) and not got[n][1].get("existed")]
        check(len(got) == 2 and len(ids) == 1 and len(created) == 1,
              f"same text through both servers at once is one document, created once: {got}")
        n_chess = psql(conn, "SELECT count(*) FROM documents WHERE title = 'chess'")
        check(n_chess == "1", f"one row for the racing uploads ({n_chess})")
        cid = ids.pop() if ids else 0
        # delete through B: gone for A
        st, _ = ts.request(b.base, "DELETE", f"/v1/documents/{vid}")
        check(st == 200, f"delete through B: {st}")
        st, _ = ts.request(a.base, "GET", f"/v1/documents/{vid}")
        check(st == 404, f"A no longer has the document: {st}")
        st, r = chat_on(a.base, vid)
        check(st == 404, f"A refuses a chat on the deleted document: {st}")
        st, r = chat_on(a.base, cid)
        check(st == 200, f"A still answers from the other document: {st}")
    finally:
        rc_a, err_a = a.stop()
        rc_b, err_b = b.stop()
    check(rc_a == 0 and rc_b == 0, f"both servers drain and exit 0 ({rc_a}, {rc_b}): {err_a[-300:]} {err_b[-300:]}")


def test_outage_during_upload(conn, adapter, cluster):
    """The database stopped while an upload compresses (issue 28): the upload answers 503 with Retry-After
    (its commit meets the outage), nothing is half stored, `store verify --gc` leaves no orphan memory
    file; started again, the same upload stores the document whole. The essay takes the server seconds to
    compress at one thread; the database stops in about one."""
    essay = os.path.join(ts.ESSAYS, "aord.txt")
    if not check(os.path.exists(essay), "essay for the outage test is part of the repository"):
        return
    with open(essay) as f:
        text = f.read() * 3  # about 6K tokens: seconds of compression against the second the stop takes
    mem = os.environ["MNEMO_MEM_DIR"] + "-upload-outage"  # its own: --gc must not see other databases' files
    os.makedirs(mem, exist_ok=True)
    srv = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "1", "-t", "1", "--max-body", "2000000",
                    "--mem-dir", mem)
    paused = False
    outcome = []
    try:
        th = threading.Thread(target=lambda: outcome.append(
            ts.request(srv.base, "POST", "/v1/documents", {"title": "essay", "text": text}, timeout=300)))
        th.start()
        time.sleep(0.5)  # the upload is compressing
        paused = cluster_do("pause", cluster, "stopped during the upload")
        th.join()
        st, body = outcome[0] if outcome else (0, {})
        check(st == 503 and ts.err_msg(body), f"the upload meeting the outage: {st} {body}")
        paused = not cluster_do("resume", cluster, "started again")
        n = psql(conn, "SELECT count(*) FROM documents WHERE title = 'essay'")
        check(n == "0", f"nothing of the refused upload stored ({n})")
        r = ts.mnemo("store", "verify", "--db", conn, "--mem-dir", mem, "--gc")
        check(r.returncode == 0 and "memory files: ok" in r.stdout, "verify --gc after the outage: " + r.stdout + r.stderr)
        left = {f for f in os.listdir(mem) if f != ".mnemo-store"}  # gc's marker naming the store
        known = set((psql(conn, "SELECT string_agg(file, ' ') FROM memories") or "").split())
        check(left <= known, f"no orphan memory file: {sorted(left - known)}")
        st, lst, waited = serving_again(srv.base)
        st, d = ts.request(srv.base, "POST", "/v1/documents", {"title": "essay", "text": text}, timeout=300)
        check(st == 201 and not d.get("existed"), f"the same upload once the database is back: {st} {d}")
    finally:
        if paused:
            subprocess.run(["bash", "scripts/pg_cluster.sh", "resume", cluster], cwd=ROOT, timeout=120)
        rc, err = srv.stop()
        check(rc == 0, f"server after the upload's outage exits cleanly: {rc} {err[-300:]}")


def test_kill_during_upload(conn, adapter):
    """kill -9 of a server while it compresses an upload: only whole documents in the database."""
    essay = os.path.join(ts.ESSAYS, "aord.txt")
    if not check(os.path.exists(essay), "essay for the kill test is part of the repository"):
        return
    with open(essay) as f:
        text = f.read()
    a = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "1", "-t", "1", "--max-body", "2000000")
    b = ts.Server(conn, "-m", ts.MODEL, "-a", adapter, "--slots", "1", "-t", "1")
    before = psql(conn, "SELECT count(*) FROM documents")
    outcome = []

    def upload():
        try:
            outcome.append(ts.request(a.base, "POST", "/v1/documents", {"title": "essay", "text": text}, timeout=60))
        except OSError as e:  # the server died under the request
            outcome.append(e)

    th = threading.Thread(target=upload)
    th.start()
    time.sleep(1.0)  # into the compression
    a.proc.kill()
    a.proc.wait()
    th.join()
    check(a.proc.returncode == -9, f"server A was killed ({a.proc.returncode})")
    check(len(outcome) == 1 and isinstance(outcome[0], OSError), f"killed in the middle of the upload: {outcome}")
    after = psql(conn, "SELECT count(*) FROM documents")
    partial = psql(conn, "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE "
                         "m.doc_id = d.id) OR NOT EXISTS (SELECT 1 FROM chunks c WHERE c.doc_id = d.id)")
    check(after is not None and int(after) - int(before or 0) in (0, 1) and partial == "0",
          f"only whole documents after kill -9 (before {before}, after {after}, partial {partial})")
    r = ts.mnemo("store", "verify", "--db", conn, "--gc")
    check(r.returncode == 0 and "memory files: ok" in r.stdout, "verify after kill -9: " + r.stdout + r.stderr)
    st, lst = ts.request(b.base, "GET", "/v1/documents")
    check(st == 200 and len(lst.get("data", [])) == int(after or -1), "server B serves on after A's death")
    rc, err = b.stop()
    check(rc == 0, f"B exits 0: {err[-300:]}")


def main():
    if not os.path.exists(ts.MODEL) or not os.path.exists(ts.BIN):
        print(f"FAIL pg integration tests: model or {ts.BIN} missing (make setup model all)")
        print(f"tests/integration/test_pg_servers.py: 0 passed, 1 failed")
        return 1
    with tempfile.TemporaryDirectory(prefix="mnemo_pg_it_") as tmp:
        cluster = os.path.join("/tmp", f"mnemo-pg-it-{os.getpid()}")
        r = subprocess.run(["bash", "scripts/pg_cluster.sh", "start", cluster], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        if not check(r.returncode == 0, "throw-away PostgreSQL cluster: " + r.stderr):
            print(f"tests/integration/test_pg_servers.py: {ts.passed} passed, {ts.failed} failed")
            return 1
        admin = r.stdout.strip()
        try:
            os.environ["MNEMO_MEM_DIR"] = os.path.join(tmp, "mem")
            adapter = ts.make_adapter(tmp)
            files = []
            for name, text in ts.DOCS.items():
                p = os.path.join(tmp, name + ".txt")
                with open(p, "w") as f:
                    f.write(text)
                files.append(p)
            for db in ("cli", "srv", "md"):
                psql(admin, f"CREATE DATABASE {db}")
            test_cli(admin + " dbname=cli", adapter, files)
            test_mem_dir_option(admin + " dbname=md", adapter, files, tmp)
            if not ts.SANITIZED:
                test_two_servers(admin + " dbname=srv", adapter)
                psql(admin, "CREATE DATABASE outage")
                test_outage(admin + " dbname=outage", adapter, cluster)
                psql(admin, "CREATE DATABASE outage2")
                test_outage_during_stream(admin + " dbname=outage2", adapter, cluster)
                psql(admin, "CREATE DATABASE outage3")
                test_outage_during_upload(admin + " dbname=outage3", adapter, cluster)
                test_kill_during_upload(admin + " dbname=srv", adapter)
                test_held_lock(admin + " dbname=srv", adapter)
        finally:
            subprocess.run(["bash", "scripts/pg_cluster.sh", "stop", cluster], cwd=ROOT, timeout=120)
    print(f"tests/integration/test_pg_servers.py: {ts.passed} passed, {ts.failed} failed")
    return 1 if ts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
