/* fuzz_memfile.c - libFuzzer target for memory files (memory/memfile.h), built
 * by `make fuzz` with ASan and UBSan; seeds in tests/fuzz/corpus/memfile/.
 *
 * Every input must either open or fail with a message and no handle. An opened
 * file must be fully readable: its blocks converted into buffers of exactly the
 * size the header implies (ASan catches a read past the mapping or a write past
 * a buffer), its raw tokens non-negative, and what was read written back and
 * re-opened to the same facts; an exact part (version 3) and its cells
 * (version 4, copied as bytes) the same.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "memory/memfile.h"

static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_path, sizeof g_path, "/tmp/mnemo-fuzz-memfile-%d.mem", (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan flags reads past the end */
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    mn_memfile *mf = NULL;
    if (mn_memfile_open_memory(copy, size, &mf)) {
        if (mf || !mn_last_error()[0]) abort(); /* failures leave no handle and say why */
        free(copy);
        return 0;
    }
    const mn_memfile_info in = *mn_memfile_get_info(mf);
    const size_t e = mn_memfile_block_elems(&in);
    float *k = malloc(sizeof(float) * (e ? e : 1)), *v = malloc(sizeof(float) * (e ? e : 1));
    int32_t *raw = malloc(sizeof(int32_t) * (in.n_raw ? (size_t)in.n_raw : 1));
    const size_t ke = mn_memfile_exact_key_elems(&in);
    int32_t *exact = malloc(sizeof(int32_t) * (in.n_exact ? (size_t)in.n_exact : 1));
    float *rep = malloc(sizeof(float) * (ke ? ke : 1)), *rep_sh = malloc(sizeof(float) * (ke ? ke : 1));
    if (!k || !v || !raw || !exact || !rep || !rep_sh) abort();
    const int xrc = mn_memfile_read_exact(mf, exact, rep, rep_sh);
    for (int32_t i = 0; !xrc && i < in.n_exact; i++)
        if (exact[i] < 0) abort();
    int rc = in.kind == MN_MEMFILE_KV ? mn_memfile_read_kv(mf, k, v) : mn_memfile_read_embd(mf, k);
    if (rc) abort(); /* an opened file reads */
    if (mn_memfile_read_raw(mf, raw) == 0)
        for (int32_t i = 0; i < in.n_raw; i++)
            if (raw[i] < 0) abort();
    /* what was read, written again: same facts (f16 values that were finite stay finite) */
    int finite = 1;
    for (size_t i = 0; i < e && finite; i++) finite = k[i] == k[i] && k[i] - k[i] == 0 &&
                                                     (in.kind != MN_MEMFILE_KV || (v[i] == v[i] && v[i] - v[i] == 0));
    if (finite && mn_memfile_read_raw(mf, raw) == 0 &&
        (in.n_exact == 0 || xrc == 0) &&
        mn_memfile_write_exact(g_path, &in, k, in.kind == MN_MEMFILE_KV ? v : NULL, raw, exact, rep, rep_sh,
                               mn_memfile_exact_cells(mf, NULL), in.elem_type) == 0) {
        mn_memfile *m2 = NULL;
        if (mn_memfile_open(g_path, &m2)) abort();
        const mn_memfile_info *o = mn_memfile_get_info(m2);
        if (o->kind != in.kind || o->n_slots != in.n_slots || o->n_raw != in.n_raw || o->n_head != in.n_head ||
            o->n_tokens != in.n_tokens || o->dim != in.dim || o->checksum != in.checksum || o->n_exact != in.n_exact ||
            o->flags != in.flags)
            abort();
        mn_memfile_free(m2);
        unlink(g_path);
    }
    free(k), free(v), free(raw), free(exact), free(rep), free(rep_sh);
    mn_memfile_free(mf);
    free(copy);
    return 0;
}
