/* memory.c - binding a compressor adapter to the runtime (see memory.h). */
#include "memory/memory.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

/* LoRA views of one adapter target for every layer (rank 0 where absent). */
static int lora_list(const mn_adapter *a, int n_layer, mn_lora_target which, mn_lora **out) {
    mn_lora *l = calloc((size_t)n_layer, sizeof *l);
    if (!l) return mn_error(MN_ENOMEM, "out of memory");
    for (int i = 0; i < n_layer; i++) {
        const float *A, *B;
        int r;
        int rc = mn_adapter_lora(a, i, which, &A, &B, &r);
        if (rc == MN_ENOTFOUND) continue;
        if (rc) {
            free(l);
            return rc;
        }
        l[i] = (mn_lora){A, B, r};
    }
    *out = l;
    return MN_OK;
}

int mn_uio_bind(const mn_model *m, const mn_adapter *a, mn_uio_binding *b) {
    memset(b, 0, sizeof *b);
    const mn_adapter_params *cfg = mn_adapter_config(a);
    if (cfg->compressor != MN_COMP_UIO)
        return mn_error(MN_EUNSUPPORTED, "memory mode runs UIO adapters; this one is '%s' (not yet supported)",
                        mn_compressor_name(cfg->compressor));
    if (mn_adapter_base_hash(a) != mn_model_hash(m))
        return mn_error(MN_EINVAL, "adapter was made for another model ('%s')", mn_adapter_base_name(a));
    const int L = mn_model_n_layer(m);
    int rc;
    if ((rc = lora_list(a, L, MN_LORA_ENC_Q, &b->enc_q)) || (rc = lora_list(a, L, MN_LORA_ENC_V, &b->enc_v)) ||
        (rc = lora_list(a, L, MN_LORA_MEM_K, &b->mem_k)) || (rc = lora_list(a, L, MN_LORA_MEM_V, &b->mem_v))) {
        mn_uio_unbind(b);
        return rc;
    }
    const float scale = mn_adapter_lora_scale(a);
    b->encoder = (mn_lora_set){.scale = scale, .q = b->enc_q, .v = b->enc_v};
    b->transfer = (mn_lora_set){.scale = scale, .k = b->mem_k, .v = b->mem_v};
    b->params = (mn_uio_params){.l = cfg->segment,
                                .m = mn_adapter_n_mem(a),
                                .mem_embd = mn_adapter_mem_embd(a),
                                .encoder = &b->encoder,
                                .transfer = &b->transfer};
    return MN_OK;
}

void mn_uio_unbind(mn_uio_binding *b) {
    free(b->enc_q);
    free(b->enc_v);
    free(b->mem_k);
    free(b->mem_v);
    memset(b, 0, sizeof *b);
}
