/* test_qatrain.c - the QA fine-tuning loss (train/qatrain.h) in double
 * precision on a tiny random model: the gradient of the answer-only loss
 * w.r.t. a decoder LoRA on q, k, v and o against central finite differences,
 * for a KV memory and an embedding memory; the mask checked independently
 * (the loss with a prompt of p tokens = the all-scored loss minus that of the
 * first p tokens alone); the memory is read; bad examples are refused.
 */
#define MN_REAL_F64
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "tiny_llama.h"
#include "train/qatrain.h"

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static double urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

enum { RK = 2 };

static void test_gradient(const mn_model *m) {
    mn_tmodel_f64 *tm = NULL;
    CHECK(mn_tmodel_create_f64(m, &tm) == 0, "tmodel: %s", mn_last_error());
    if (!tm) return;
    const mn_tdims *d = mn_tmodel_dims_f64(tm);
    const int C = d->n_embd, L = d->n_layer, KD = d->kv_dim, HD = d->n_head * d->head_dim;
    /* LoRA on q (C->HD), k (C->KD), v (C->KD), o (HD->C), every layer: A (r, in), B (out, r) */
    const int in[4] = {C, C, C, HD}, outd[4] = {HD, KD, KD, C};
    int64_t np = 0;
    for (int w = 0; w < 4; w++) np += (int64_t)L * RK * (in[w] + outd[w]);
    double *th = malloc(sizeof(double) * (size_t)np), *gr = calloc((size_t)np, sizeof(double));
    mn_tlora_w_f64 ws[4][8];
    double *p = th, *g = gr;
    for (int w = 0; w < 4; w++)
        for (int l = 0; l < L; l++) {
            ws[w][l] = (mn_tlora_w_f64){p, p + RK * in[w], g, g + RK * in[w], RK};
            p += RK * (in[w] + outd[w]), g += RK * (in[w] + outd[w]);
        }
    for (int64_t i = 0; i < np; i++) th[i] = 0.3 * nrand();
    const mn_tlora_f64 dec = {0.5, ws[0], ws[1], ws[2], ws[3]};
    enum { M = 3, NT = 9, NP = 5 };
    float *k = malloc(sizeof(float) * (size_t)L * M * KD), *v = malloc(sizeof(float) * (size_t)L * M * KD);
    float *e = malloc(sizeof(float) * (size_t)M * C);
    for (int64_t i = 0; i < (int64_t)L * M * KD; i++) k[i] = (float)nrand(), v[i] = (float)nrand();
    for (int64_t i = 0; i < (int64_t)M * C; i++) e[i] = (float)nrand();
    int32_t ids[NT];
    for (int i = 0; i < NT; i++) ids[i] = 97 + (int)(urand() * 26);
    const mn_qa_example exs[2] = {{1, M, k, v, ids, NT, NP}, {0, M, e, NULL, ids, NT, NP}};
    mn_qa_trainer_f64 *tr = NULL;
    CHECK(mn_qa_trainer_create_f64(tm, exs, 2, RK, &tr) == 0, "QA trainer: %s", mn_last_error());
    for (int x = 0; tr && x < 2; x++) {
        const mn_qa_example *ex = &exs[x];
        double loss = 0;
        int64_t ns = 0;
        memset(gr, 0, sizeof(double) * (size_t)np);
        CHECK(mn_qa_trainer_step_f64(tr, ex, &dec, 1, 1.0 / (NT - NP), &loss, &ns) == 0, "step: %s", mn_last_error());
        CHECK(ns == NT - NP && isfinite(loss) && loss > 0, "%s memory: %lld scored, loss %g", x ? "embedding" : "KV",
              (long long)ns, loss);
        double *an = malloc(sizeof(double) * (size_t)np);
        memcpy(an, gr, sizeof(double) * (size_t)np);
        const double h = 1e-5;
        double maxd = 0, maxan = 0;
        int64_t nz = 0;
        for (int64_t i = 0; i < np; i++) {
            const double x0 = th[i];
            double lp, lm;
            th[i] = x0 + h;
            mn_qa_trainer_step_f64(tr, ex, &dec, 0, 0, &lp, NULL);
            th[i] = x0 - h;
            mn_qa_trainer_step_f64(tr, ex, &dec, 0, 0, &lm, NULL);
            th[i] = x0;
            maxd = fmax(maxd, fabs((lp - lm) / (2 * h) / (NT - NP) - an[i]));
            maxan = fmax(maxan, fabs(an[i]));
            nz += an[i] != 0;
        }
        CHECK(maxd / maxan < 1e-6, "%s memory: decoder LoRA gradient vs finite differences: relative error %.3g",
              x ? "embedding" : "KV", maxd / maxan);
        CHECK(nz > np / 2, "%s memory: only %lld of %lld LoRA parameters got gradient", x ? "embedding" : "KV",
              (long long)nz, (long long)np);
        free(an);
        /* the mask: S(prompt p) = S(prompt 1) - S(first p tokens, prompt 1) */
        mn_qa_example all = *ex, head = *ex;
        all.n_prompt = 1, head.n_ids = NP, head.n_prompt = 1;
        double s_all = 0, s_head = 0;
        mn_qa_trainer_step_f64(tr, &all, &dec, 0, 0, &s_all, NULL);
        mn_qa_trainer_step_f64(tr, &head, &dec, 0, 0, &s_head, NULL);
        CHECK(fabs(loss - (s_all - s_head)) < 1e-9 * fabs(s_all), "%s memory: answer-only loss %.12g vs %.12g",
              x ? "embedding" : "KV", loss, s_all - s_head);
        /* the memory is read: another memory changes the loss */
        float *mk = (float *)(x ? e : k);
        mk[0] += 1.0f;
        double l2 = 0;
        mn_qa_trainer_step_f64(tr, ex, &dec, 0, 0, &l2, NULL);
        mk[0] -= 1.0f;
        CHECK(fabs(l2 - loss) > 1e-9, "%s memory: the loss ignores the memory", x ? "embedding" : "KV");
    }
    /* bad examples are refused */
    mn_qa_example bad = exs[0];
    bad.n_prompt = NT;
    CHECK(tr && mn_qa_trainer_step_f64(tr, &bad, &dec, 0, 0, NULL, NULL) == MN_EINVAL, "an empty answer accepted");
    mn_qa_trainer_free_f64(tr);
    mn_tmodel_free_f64(tm);
    free(th), free(gr), free(k), free(v), free(e);
}

int main(void) {
    char dir[] = "/tmp/mnemo-qatrain-XXXXXX", path[600];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    tiny_llama cfg = {.n_embd = 16, .n_head = 2, .n_head_kv = 1, .n_ff = 32, .n_layer = 2, .n_ctx = 64, .seed = 7};
    mn_model *m = NULL;
    CHECK(tiny_llama_write(&cfg, path) == 0 && mn_model_load(path, &m) == 0, "model: %s", mn_last_error());
    if (m) test_gradient(m);
    mn_model_free(m);
    unlink(path);
    rmdir(dir);
    TEST_MAIN_END();
}
