/* summary.c - summary-embedding compressor (see summary.h). The encoder is
 * UIO's (mn_uio_encode_out); what differs is the output (final hidden states)
 * and how the decoder reads it (as input embeddings, not K/V). */
#include "memory/summary.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/memory.h"

int mn_summary_bind(const mn_model *m, const mn_adapter *a, mn_summary_binding *b) {
    memset(b, 0, sizeof *b);
    const mn_adapter_params *cfg = mn_adapter_config(a);
    if (cfg->compressor != MN_COMP_SUMMARY)
        return mn_error(MN_EINVAL, "expected a summary adapter, this one is '%s'", mn_compressor_name(cfg->compressor));
    if (mn_adapter_base_hash(a) != mn_model_hash(m))
        return mn_error(MN_EINVAL, "adapter was made for another model ('%s')", mn_adapter_base_name(a));
    const int L = mn_model_n_layer(m);
    b->enc_q = calloc((size_t)L, sizeof *b->enc_q);
    b->enc_v = calloc((size_t)L, sizeof *b->enc_v);
    if (!b->enc_q || !b->enc_v) {
        mn_summary_unbind(b);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    for (int l = 0; l < L; l++) {
        const float *A, *B;
        int r;
        int rc = mn_adapter_lora(a, l, MN_LORA_ENC_Q, &A, &B, &r);
        if (!rc) b->enc_q[l] = (mn_lora){A, B, r};
        if (!rc) rc = mn_adapter_lora(a, l, MN_LORA_ENC_V, &A, &B, &r);
        if (!rc) b->enc_v[l] = (mn_lora){A, B, r};
        if (rc) {
            mn_summary_unbind(b);
            return rc;
        }
    }
    b->encoder = (mn_lora_set){.scale = mn_adapter_lora_scale(a), .q = b->enc_q, .v = b->enc_v};
    b->params = (mn_uio_params){.l = cfg->segment, .m = mn_adapter_n_mem(a), .mem_embd = mn_adapter_mem_embd(a),
                                .encoder = &b->encoder};
    return MN_OK;
}

void mn_summary_unbind(mn_summary_binding *b) {
    free(b->enc_q);
    free(b->enc_v);
    memset(b, 0, sizeof *b);
}

int mn_summary_compress_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                            const mn_compress_progress *pr, float **embd_out, int32_t *M_out) {
    return mn_uio_encode_doc(m, p, ids, n, n_threads, pr, embd_out, M_out);
}

int mn_summary_prime(mn_context *c, const float *embd, int32_t n) {
    if (n <= 0) return MN_OK;
    if (!embd) return mn_error(MN_EINVAL, "no embeddings");
    return mn_decode_embd(c, embd, n, NULL, 0);
}
