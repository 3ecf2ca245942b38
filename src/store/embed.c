/* embed.c - mean-pooled hidden-state embeddings (see embed.h). */
#include "store/embed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model/forward.h"

int mn_embed_tokens(mn_context *c, const int32_t *ids, int32_t n, float *out) {
    const int32_t C = mn_model_n_embd(mn_context_model(c));
    if (n <= 0) return mn_error(MN_EINVAL, "embed: no tokens");
    if (n > mn_context_n_ctx(c))
        return mn_error(MN_ERANGE, "embed: %d tokens exceed the context of %d", n, mn_context_n_ctx(c));
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
    float *h = malloc(sizeof(float) * (size_t)n * (size_t)C);
    if (!idx || !h) {
        free(idx);
        free(h);
        return mn_error(MN_ENOMEM, "embed: out of memory for %d tokens", n);
    }
    for (int32_t i = 0; i < n; i++) idx[i] = i;
    mn_batch b;
    memset(&b, 0, sizeof b);
    b.n = n;
    b.tokens = ids;
    b.n_capture = n;
    b.capture_idx = idx;
    b.capture_out = h;
    mn_kv_clear(c);
    int rc = mn_decode_batch(c, &b, NULL, 0);
    mn_kv_clear(c);
    if (!rc) {
        double norm = 0;
        for (int32_t j = 0; j < C; j++) {
            double s = 0;
            for (int32_t i = 0; i < n; i++) s += h[(size_t)i * (size_t)C + (size_t)j];
            out[j] = (float)(s / n);
            norm += (double)out[j] * out[j];
        }
        norm = sqrt(norm);
        if (norm > 0)
            for (int32_t j = 0; j < C; j++) out[j] = (float)(out[j] / norm);
    }
    free(idx);
    free(h);
    return rc;
}
