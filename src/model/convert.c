/* convert.c - rewrites a GGUF model with its matrices in another type.
 *
 * Metadata is copied verbatim; every tensor whose type differs from the target
 * is dequantised with the reference (scalar) kernels and re-encoded. Used to
 * make F32 copies of quantised models: with F32 weights neither mnemo nor
 * llama.cpp quantises activations, so the two forward passes can be compared
 * to float precision (tests/test_model.c), and to produce test models.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "kernels/quant.h"
#include "mnemo.h"

static const size_t k_scalar_size[MN_GGUF_NTYPES] = {
    [MN_GGUF_UINT8] = 1, [MN_GGUF_INT8] = 1,  [MN_GGUF_UINT16] = 2, [MN_GGUF_INT16] = 2, [MN_GGUF_UINT32] = 4,
    [MN_GGUF_INT32] = 4, [MN_GGUF_FLOAT32] = 4, [MN_GGUF_BOOL] = 1,  [MN_GGUF_UINT64] = 8, [MN_GGUF_INT64] = 8,
    [MN_GGUF_FLOAT64] = 8,
};

static int copy_kv(const mn_gguf *g, int64_t i, mn_gguf_writer *w) {
    mn_gguf_str k = mn_gguf_key_at(g, i);
    char key[256];
    if (k.len >= sizeof key) return mn_error(MN_EUNSUPPORTED, "metadata key of %llu bytes", (unsigned long long)k.len);
    memcpy(key, k.ptr, k.len);
    key[k.len] = 0;
    mn_gguf_vtype t = mn_gguf_kv_type(g, i);
    if (t == MN_GGUF_STRING) {
        mn_gguf_str v;
        mn_gguf_get_str(g, key, &v);
        char *z = malloc(v.len + 1);
        if (!z) return mn_error(MN_ENOMEM, "out of memory");
        memcpy(z, v.ptr, v.len);
        z[v.len] = 0;
        int rc = mn_gguf_writer_set_str(w, key, z);
        free(z);
        return rc;
    }
    if (t == MN_GGUF_ARRAY) {
        mn_gguf_vtype et;
        uint64_t n;
        const void *data;
        int rc = mn_gguf_get_arr(g, key, &et, &n, &data);
        if (rc) return rc;
        if (et == MN_GGUF_STRING) {
            const char **strs = malloc(sizeof(char *) * (n ? n : 1));
            uint64_t *lens = malloc(sizeof(uint64_t) * (n ? n : 1));
            if (!strs || !lens) {
                free(strs);
                free(lens);
                return mn_error(MN_ENOMEM, "out of memory");
            }
            for (uint64_t j = 0; j < n; j++) {
                mn_gguf_str s = mn_gguf_arr_str(g, i, j);
                strs[j] = s.ptr;
                lens[j] = s.len;
            }
            rc = mn_gguf_writer_set_arr_str(w, key, n, strs, lens);
            free(strs);
            free(lens);
            return rc;
        }
        if (et >= MN_GGUF_NTYPES || !k_scalar_size[et])
            return mn_error(MN_EUNSUPPORTED, "metadata '%s': nested arrays are not copied", key);
        return mn_gguf_writer_set_arr(w, key, et, n, data);
    }
    if (t >= MN_GGUF_NTYPES || !k_scalar_size[t]) return mn_error(MN_EFORMAT, "metadata '%s': bad type", key);
    /* host order == file order (little-endian x86-64) */
    unsigned char buf[8];
    memcpy(buf, mn_gguf_kv_raw(g, i), k_scalar_size[t]);
    return mn_gguf_writer_set_scalar(w, key, t, buf);
}

int mn_model_convert(const char *in_path, const char *out_path, int type) {
    if (type != MN_TYPE_F32 && type != MN_TYPE_F16)
        return mn_error(MN_EINVAL, "convert: only f32 and f16 targets are supported");
    mn_gguf *g;
    int rc = mn_gguf_open(in_path, &g);
    if (rc) return rc;
    mn_gguf_writer *w = mn_gguf_writer_create();
    if (!w) {
        mn_gguf_free(g);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    for (int64_t i = 0; i < mn_gguf_n_kv(g) && !rc; i++) {
        mn_gguf_str k = mn_gguf_key_at(g, i);
        if (k.len == 17 && !memcmp(k.ptr, "general.file_type", 17)) continue; /* no longer true */
        if (k.len == 17 && !memcmp(k.ptr, "general.alignment", 17)) continue;
        rc = copy_kv(g, i, w);
    }
    const mn_quant_traits *dst = mn_quant_get_isa(type, MN_ISA_SCALAR);
    for (int64_t i = 0; i < mn_gguf_n_tensors(g) && !rc; i++) {
        const mn_gguf_tensor *t = mn_gguf_tensor_at(g, i);
        /* 1-D tensors (norms) stay as they are; llama.cpp expects them f32 */
        if (t->type == type || t->n_dims < 2 || t->type == MN_TYPE_F32) {
            rc = mn_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
            continue;
        }
        const mn_quant_traits *src = mn_quant_get_isa(t->type, MN_ISA_SCALAR);
        if (!src) {
            rc = mn_error(MN_EUNSUPPORTED, "tensor '%s': type %d cannot be converted", t->name, t->type);
            break;
        }
        int64_t ne0 = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
        size_t srb = mn_type_row_bytes(t->type, ne0), drb = mn_type_row_bytes(type, ne0);
        float *row = malloc(sizeof(float) * (size_t)ne0);
        char *out = malloc(drb * (size_t)rows);
        if (!row || !out) {
            free(row);
            free(out);
            rc = mn_error(MN_ENOMEM, "out of memory converting '%s'", t->name);
            break;
        }
        for (int64_t r = 0; r < rows; r++) {
            src->to_float((const char *)t->data + (size_t)r * srb, row, ne0);
            dst->from_float(row, out + (size_t)r * drb, ne0);
        }
        rc = mn_gguf_writer_add_tensor(w, t->name, type, t->n_dims, t->ne, out);
        free(row);
        free(out);
    }
    if (!rc) rc = mn_gguf_writer_set_u32(w, "general.file_type", type == MN_TYPE_F32 ? 0 : 1);
    if (!rc) rc = mn_gguf_writer_write(w, out_path);
    mn_gguf_writer_free(w);
    mn_gguf_free(g);
    return rc;
}
