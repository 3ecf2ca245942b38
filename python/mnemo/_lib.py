"""ctypes declarations of the public C API (include/mnemo.h) and the library's loading.

ctypes releases the GIL during every foreign call, so other Python threads run while a document is
read or an answer generated; callbacks into Python take the GIL back for their duration."""
import ctypes
import glob
import os
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))

c_int, c_int32, c_int64, c_uint64 = ctypes.c_int, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64
c_size_t, c_float, c_double, c_char_p, c_void_p = ctypes.c_size_t, ctypes.c_float, ctypes.c_double, ctypes.c_char_p, ctypes.c_void_p
POINTER, byref = ctypes.POINTER, ctypes.byref

# return codes (mnemo.h)
ERRORS = {-1: "EINVAL", -2: "ENOMEM", -3: "EIO", -4: "EFORMAT", -5: "EUNSUPPORTED", -6: "ENOTFOUND",
          -7: "ERANGE", -8: "EUNAVAILABLE", -9: "ECANCELLED",
          -100: "ECOMMAND"}  # not the library's: the packaged command failed (mnemo/cli.py)
ECANCELLED = -9

PROGRESS_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_int64, c_int64)
TEXT_FN = ctypes.CFUNCTYPE(c_int, c_void_p, ctypes.POINTER(ctypes.c_char), c_size_t)
CHUNK_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_char_p)


class ContextParams(ctypes.Structure):
    _fields_ = [("n_ctx", c_int32), ("n_batch", c_int32), ("n_threads", c_int), ("cache_type", c_int),
                ("swa_full", c_int)]


class DocInfo(ctypes.Structure):
    _fields_ = [("tokens", c_int64), ("memory_slots", c_int32), ("raw_cells", c_int32), ("kv_cells", c_int64),
                ("exact_tokens", c_int32), ("exact_segments", c_int32), ("exact_cell_bytes", c_int64)]


class AskParams(ctypes.Structure):
    _fields_ = [("max_tokens", c_int32), ("temperature", c_float), ("seed", c_uint64), ("recall", c_int32),
                ("n_threads", c_int32), ("local", c_int32), ("recall_every", c_int32)]


class AskStats(ctypes.Structure):
    _fields_ = [("prompt_tokens", c_int64), ("completion_tokens", c_int64), ("kv_cells", c_int64),
                ("recalled", c_int32), ("recalled_cells", c_int32), ("finish", c_int32), ("reader", c_int32),
                ("seconds_to_first_token", c_double), ("seconds", c_double), ("slots_out", c_int64),
                ("reselections", c_int32), ("repaged", c_int32)]


def library_path():
    found = sorted(glob.glob(os.path.join(_HERE, "_libmnemo*.so")))
    if not found:
        raise ImportError("mnemo: the C library is missing from %s (install the package with pip, which builds it)"
                          % _HERE)
    return found[0]


def _blas_environment(path):
    """OpenBLAS chooses its kernels when it is loaded; on a CPU newer than its build it picks slow ones
    (and results that differ in the last bits from the CLI's). mn_blas_core_advice tells, but only once
    OpenBLAS is loaded: a probe process asks, and this one loads the library with the advice set, as the
    CLI re-executes itself. An explicit OPENBLAS_CORETYPE is left alone."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return
    probe = ("import ctypes, sys; l = ctypes.CDLL(sys.argv[1]); l.mn_blas_core_advice.restype = ctypes.c_char_p; "
             "r = l.mn_blas_core_advice(); print(r.decode() if r else '')")
    try:
        out = subprocess.run([sys.executable, "-c", probe, path], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return
    want = out.stdout.strip() if out.returncode == 0 else ""
    if want:
        os.environ["OPENBLAS_CORETYPE"] = want


def _declare(lib):
    def f(name, res, *args):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, list(args)

    f("mn_last_error", c_char_p)
    f("mn_strerror", c_char_p, c_int)
    f("mn_free", None, c_void_p)
    f("mn_cpu_isa_name", c_char_p)
    f("mn_model_load", c_int, c_char_p, POINTER(c_void_p))
    f("mn_model_free", None, c_void_p)
    f("mn_model_name", c_char_p, c_void_p)
    f("mn_model_n_ctx_train", c_int32, c_void_p)
    f("mn_model_n_vocab", c_int32, c_void_p)
    f("mn_model_tokenizer", c_void_p, c_void_p)
    f("mn_tokenize", c_int, c_void_p, c_char_p, c_size_t, c_int, c_int, POINTER(c_int32), c_int64, POINTER(c_int64))
    f("mn_detokenize", c_int, c_void_p, POINTER(c_int32), c_int64, c_int, c_char_p, c_size_t, POINTER(c_size_t))
    f("mn_context_default_params", ContextParams)
    f("mn_cache_type_parse", c_int, c_char_p)
    f("mn_context_create", c_int, c_void_p, POINTER(ContextParams), POINTER(c_void_p))
    f("mn_context_free", None, c_void_p)
    f("mn_context_n_ctx", c_int32, c_void_p)
    f("mn_adapter_load", c_int, c_void_p, c_char_p, POINTER(c_void_p))
    f("mn_adapter_free", None, c_void_p)
    f("mn_doc_read", c_int, c_void_p, c_void_p, c_char_p, c_size_t, c_int, c_int, PROGRESS_FN, c_void_p,
      POINTER(c_void_p))
    f("mn_doc_load", c_int, c_void_p, c_void_p, c_char_p, POINTER(c_void_p))
    f("mn_doc_save", c_int, c_void_p, c_char_p, c_char_p, c_int)
    f("mn_doc_free", None, c_void_p)
    f("mn_doc_get_info", None, c_void_p, POINTER(DocInfo))
    f("mn_doc_digest", c_int, c_void_p, ctypes.c_char * 65)
    f("mn_ask_default_params", AskParams)
    f("mn_doc_ask", c_int, c_void_p, c_char_p, POINTER(AskParams), TEXT_FN, c_void_p, POINTER(c_void_p),
      POINTER(AskStats))
    f("mn_docstore_open", c_int, c_char_p, c_void_p, c_char_p, c_char_p, c_int, POINTER(c_void_p))
    f("mn_docstore_close", None, c_void_p)
    f("mn_docstore_add", c_int, c_void_p, c_char_p, c_size_t, c_char_p, c_char_p, c_char_p, POINTER(c_void_p))
    f("mn_docstore_set_exact", c_int, c_void_p, c_int)
    f("mn_docstore_list", c_int, c_void_p, POINTER(c_void_p))
    f("mn_docstore_get", c_int, c_void_p, c_int64, POINTER(c_void_p))
    f("mn_docstore_remove", c_int, c_void_p, c_int64)
    f("mn_docstore_query", c_int, c_void_p, c_char_p, c_int, POINTER(c_void_p))
    f("mn_docstore_ask", c_int, c_void_p, c_char_p, POINTER(c_int64), c_int, c_int, POINTER(AskParams), TEXT_FN,
      c_void_p, POINTER(c_void_p), POINTER(c_void_p), POINTER(AskStats))
    for name in ("mn_request_chat", "mn_request_completion"):
        f(name, c_int, c_void_p, c_char_p, c_char_p, c_size_t, CHUNK_FN, c_void_p, POINTER(c_void_p))
    return lib


def load():
    path = library_path()
    _blas_environment(path)
    return _declare(ctypes.CDLL(path))


lib = load()


def last_error():
    return (lib.mn_last_error() or b"").decode("utf-8", "replace")


def take_string(ptr):
    """A malloc'd C string returned through a void* out-parameter: its text, then freed."""
    if not ptr.value:
        return None
    try:
        return ctypes.string_at(ptr.value).decode("utf-8", "replace")
    finally:
        lib.mn_free(ptr.value)
