/* perplexity.c - perplexity with llama-perplexity's protocol (see mn_perplexity in mnemo.h).
 *
 * Windows of n_ctx tokens start every `stride` tokens; each is evaluated from an
 * empty cache, its first token replaced by BOS when bos >= 0, and positions
 * j in [first, n_ctx-1) are scored by the log-probability their logits give to
 * token j+1, with first = max(n_ctx/2, n_ctx - stride). stride == n_ctx is
 * exactly llama-perplexity (second half of each chunk).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "mnemo.h"
#include "model/forward.h"

int mn_perplexity(mn_context *c, const int32_t *ids, int64_t n, int32_t n_ctx, int32_t stride, int32_t bos,
                  mn_ppl_progress_fn progress, void *user, mn_ppl_result *res) {
    memset(res, 0, sizeof *res);
    if (stride <= 0) stride = n_ctx;
    if (n_ctx < 4 || stride > n_ctx) return mn_error(MN_EINVAL, "perplexity: need 4 <= ctx and 0 < stride <= ctx");
    if (n_ctx > mn_context_n_ctx(c))
        return mn_error(MN_EINVAL, "perplexity window %d exceeds the context size %d", n_ctx, mn_context_n_ctx(c));
    if (n < 2 * (int64_t)n_ctx)
        return mn_error(MN_ERANGE, "the text has %lld tokens; perplexity needs at least 2 x ctx = %d", (long long)n,
                        2 * n_ctx);
    const int32_t V = mn_model_n_vocab(mn_context_model(c));
    const int32_t first = n_ctx - stride > n_ctx / 2 ? n_ctx - stride : n_ctx / 2;
    /* logits only for the scored rows (a 262K vocabulary makes a full window's 1 GiB) */
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)(n_ctx - 1 - first));
    int32_t *win = malloc(sizeof(int32_t) * (size_t)n_ctx);
    uint8_t *scored = calloc((size_t)n_ctx, 1);
    if (!logits || !win || !scored) {
        free(logits);
        free(win);
        free(scored);
        return mn_error(MN_ENOMEM, "out of memory for %d x %d logits", n_ctx - 1 - first, V);
    }
    for (int32_t j = first; j < n_ctx - 1; j++) scored[j] = 1;
    double nll = 0, nll2 = 0;
    int64_t count = 0, windows = 0;
    int rc = MN_OK;
    for (int64_t start = 0; start + n_ctx <= n; start += stride) {
        memcpy(win, ids + start, sizeof(int32_t) * (size_t)n_ctx);
        if (bos >= 0) win[0] = bos;
        mn_kv_clear(c);
        mn_batch b = {.n = n_ctx, .tokens = win, .logits_mask = scored};
        if ((rc = mn_decode_batch(c, &b, logits, 1))) break;
        for (int32_t j = first; j < n_ctx - 1; j++) {
            const float *lg = logits + (size_t)(j - first) * (size_t)V;
            float mx = lg[0];
            for (int32_t k = 1; k < V; k++) mx = lg[k] > mx ? lg[k] : mx;
            double sum = 0;
            for (int32_t k = 0; k < V; k++) sum += exp((double)(lg[k] - mx));
            double lp = (double)(lg[ids[start + j + 1]] - mx) - log(sum);
            nll -= lp;
            nll2 += lp * lp;
            count++;
        }
        windows++;
        if (progress) progress(user, windows, count, exp(nll / (double)count));
    }
    free(logits);
    free(win);
    free(scored);
    if (rc) return rc;
    double mean = nll / (double)count;
    double var = nll2 / (double)count - mean * mean;
    res->nll = mean;
    res->ppl = exp(mean);
    /* standard error of the mean NLL propagated to ppl, as llama-perplexity prints it */
    res->ppl_err = res->ppl * sqrt(var > 0 && count > 1 ? var / (double)(count - 1) : 0);
    res->tokens = count;
    res->windows = windows;
    return MN_OK;
}
