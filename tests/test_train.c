/* test_train.c - the training loop learns, checkpoints, and resumes exactly.
 *
 * 1. Passkey through memory: a tiny random model (frozen) reads a segment that
 *    holds a key, and must predict the key in the next segment, which it can
 *    only see through the memory. Chance, knowing the key set, is ln 8 = 2.08
 *    nats. After training the loss must fall well below it, and giving the
 *    decoder the memory of a different key must make it worse than chance:
 *    the information travels through the memory.
 * 2. mn_train_run stopped after 2 of 4 steps (a checkpoint) and resumed ends
 *    with an adapter byte-identical to an uninterrupted run.
 * 3. `mnemo train` killed with SIGKILL while it runs, then --resume: the same
 *    bytes again; bad settings give a clear error and exit status.
 */
#include <cblas.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/gemm_bf16.h"
#include "memory/adapter.h"
#include "model/lora.h"
#include "threadpool.h"
#include "test.h"
#include "tiny_llama.h"
#include "train/memtrain.h"
#include "train/ops.h"
#include "train/optim.h"
#include "train/train.h"

static char g_dir[] = "/tmp/mnemo-train-XXXXXX";
static char g_model[600];

static int same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* ---- 1. passkey ---- */
enum { PL = 8, PM = 2, NKEYS = 8, RANK = 4 };

static void fill_window(int32_t *ids, int key_mem, int key_ask) {
    for (int j = 0; j < PL; j++) ids[j] = 97 + key_mem, ids[PL + j] = 97 + key_ask;
}

static double eval_keys(mn_uio_trainer *tr, int mismatch) {
    int32_t ids[2 * PL];
    double loss = 0;
    int64_t n = 0;
    for (int k = 0; k < NKEYS; k++) {
        fill_window(ids, mismatch ? (k + 3) % NKEYS : k, k);
        mn_tstep_stats st;
        CHECK(mn_uio_trainer_step(tr, ids, 2, MN_BPTT_FULL, 0, NULL, 0, &st) == 0, "eval: %s", mn_last_error());
        loss += st.loss, n += st.n_scored;
    }
    return loss / (double)n;
}

/* parameters as a fresh adapter has them (A small uniform, B zero unless
 * b_scale, the memory embedding a token's embedding) */
typedef struct {
    float *theta, *grad;
    int64_t np;
    mn_tlora_w eq[4], ev[4], xk[4], xv[4];
    mn_uio_tparams tp;
} uio_params;

static void make_params(mn_tmodel *tm, mn_rng *rng, float b_scale, uio_params *P) {
    const mn_tdims *d = mn_tmodel_dims(tm);
    const int C = d->n_embd, L = d->n_layer, KD = d->kv_dim, HD = d->n_head * d->head_dim;
    const int64_t per_layer = (RANK * C + HD * RANK) + 3 * (RANK * C + KD * RANK);
    P->np = C + L * per_layer;
    P->theta = calloc((size_t)P->np, sizeof(float)), P->grad = calloc((size_t)P->np, sizeof(float));
    mn_tmodel_embed(tm, (const int32_t[]){258}, 1, P->theta);
    float *p = P->theta + C, *g = P->grad + C;
    const float bound = 1.0f / sqrtf((float)C);
#define LORA(arr, nout)                                                                                 \
    P->arr[l] = (mn_tlora_w){p, p + RANK * C, g, g + RANK * C, RANK};                                   \
    for (int i = 0; i < RANK * C; i++) p[i] = (float)(2 * mn_rng_uniform(rng) - 1) * bound;             \
    for (int i = 0; b_scale != 0 && i < (nout) * RANK; i++)                                            \
        p[RANK * C + i] = (float)(2 * mn_rng_uniform(rng) - 1) * b_scale;                               \
    p += RANK * C + (nout) * RANK, g += RANK * C + (nout) * RANK;
    for (int l = 0; l < L && l < 4; l++) {
        LORA(eq, HD);
        LORA(ev, KD);
        LORA(xk, KD);
        LORA(xv, KD);
    }
#undef LORA
    P->tp = (mn_uio_tparams){.l = PL, .m = PM, .n_sinks = 0, .mem_embd = P->theta, .d_mem_embd = P->grad, .ce_w = 1};
    P->tp.enc = (mn_tlora){2.0f, P->eq, NULL, P->ev, NULL};
    P->tp.xfer = (mn_tlora){2.0f, NULL, P->xk, P->xv, NULL};
}

static void test_passkey(mn_model *m) {
    mn_tmodel *tm = NULL;
    CHECK(mn_tmodel_create(m, &tm) == 0, "tmodel: %s", mn_last_error());
    if (!tm) return;
    mn_rng rng;
    mn_rng_seed(&rng, 42);
    uio_params P;
    make_params(tm, &rng, 0, &P);
    float *theta = P.theta, *grad = P.grad;
    const int64_t np = P.np;
    const mn_uio_tparams tp = P.tp;
    mn_uio_trainer *tr = NULL;
    CHECK(mn_uio_trainer_create(tm, &tp, 2, &tr) == 0, "trainer: %s", mn_last_error());
    mn_adamw_params op = mn_adamw_default_params();
    op.lr = 1e-2f, op.warmup = 20, op.total = 600, op.weight_decay = 0;
    mn_adamw *opt = NULL;
    CHECK(mn_adamw_create(&op, &opt) == 0 && mn_adamw_add(opt, "all", theta, grad, np, 0) == 0, "adamw: %s",
          mn_last_error());
    const double before = eval_keys(tr, 0);
    int32_t ids[2 * PL];
    for (int step = 0; step < 600; step++) {
        mn_adamw_zero_grad(opt);
        for (int b = 0; b < 4; b++) {
            const int k = (int)mn_rng_below(&rng, NKEYS);
            fill_window(ids, k, k);
            mn_tstep_stats st;
            mn_uio_trainer_step(tr, ids, 2, MN_BPTT_FULL, 0, NULL, 1, &st);
        }
        mn_adamw_step(opt, NULL);
    }
    const double after = eval_keys(tr, 0), wrong = eval_keys(tr, 1);
    /* the ops split GEMMs and loops over a pool: same numbers as one thread */
    mn_threadpool *pool = NULL;
    CHECK(mn_threadpool_create(2, &pool) == 0, "pool");
    mn_op_set_pool(pool);
    const double after2 = eval_keys(tr, 0);
    mn_op_set_pool(NULL);
    mn_threadpool_free(pool);
    CHECK(fabs(after2 - after) <= 1e-5 * fabs(after), "2 threads give loss %.9g, 1 thread %.9g", after2, after);
    mn_uio_trainer_no_memory(tr, 1);
    const double nomem = eval_keys(tr, 0);
    mn_uio_trainer_no_memory(tr, 0);
    CHECK(nomem > log((double)NKEYS), "without the memory the passkey loss %.3f should be above chance", nomem);
    printf("passkey: loss %.3f before, %.3f after training (chance given the key set: %.3f); "
           "with another key's memory %.3f\n",
           before, after, log((double)NKEYS), wrong);
    CHECK(after < 0.5 * log((double)NKEYS), "passkey loss %.3f not well below chance %.3f", after, log(8.0));
    CHECK(wrong > log((double)NKEYS), "with a wrong memory the loss %.3f should exceed chance", wrong);
    mn_adamw_free(opt);
    mn_uio_trainer_free(tr);
    mn_tmodel_free(tm);
    free(theta), free(grad);
}

/* ---- bf16 products with the frozen weights ---- */
static double bf16_step(mn_tmodel *tm, const uio_params *P, const int32_t *ids, float *g) {
    mn_uio_trainer *tr = NULL;
    CHECK(mn_uio_trainer_create(tm, &P->tp, 3, &tr) == 0, "trainer: %s", mn_last_error());
    if (!tr) return NAN;
    memset(P->grad, 0, sizeof(float) * (size_t)P->np);
    mn_tstep_stats st;
    CHECK(mn_uio_trainer_step(tr, ids, 3, MN_BPTT_FULL, 0, NULL, 1, &st) == 0, "step: %s", mn_last_error());
    memcpy(g, P->grad, sizeof(float) * (size_t)P->np);
    mn_uio_trainer_free(tr);
    return st.loss / (double)st.n_scored;
}

static void test_bf16(mn_model *m) {
    if (!mn_bf16_supported()) {
        TEST_SKIP("bf16 training products: this CPU has no AVX512_BF16");
        return;
    }
    mn_tmodel *tm = NULL;
    CHECK(mn_tmodel_create(m, &tm) == 0, "tmodel: %s", mn_last_error());
    if (!tm) return;
    mn_rng rng;
    mn_rng_seed(&rng, 7);
    uio_params P;
    make_params(tm, &rng, 0.05f, &P); /* B != 0: every LoRA matrix gets gradient */
    int32_t ids[3 * PL];
    for (int i = 0; i < 3 * PL; i++) ids[i] = 3 + (int32_t)mn_rng_below(&rng, 250);
    float *g32 = malloc(sizeof(float) * (size_t)P.np), *g16 = malloc(sizeof(float) * (size_t)P.np);
    float *g16b = malloc(sizeof(float) * (size_t)P.np), *gagain = malloc(sizeof(float) * (size_t)P.np);
    const double l32 = bf16_step(tm, &P, ids, g32);
    CHECK(mn_tmodel_use_bf16(tm) == 0, "use_bf16: %s", mn_last_error());
    const double l16 = bf16_step(tm, &P, ids, g16);
    double dot = 0, n32 = 0, n16 = 0;
    for (int64_t i = 0; i < P.np; i++) dot += (double)g32[i] * g16[i], n32 += (double)g32[i] * g32[i],
                                       n16 += (double)g16[i] * g16[i];
    const double cosv = dot / sqrt(n32 * n16 + 1e-300);
    printf("bf16 products: loss %.6f (f32 %.6f), gradient cosine %.6f, norm ratio %.4f\n", l16, l32, cosv,
           sqrt(n16 / n32));
    CHECK(fabs(l16 - l32) <= 5e-3 * fabs(l32) && l16 != l32, "bf16 loss %.9g vs f32 %.9g", l16, l32);
    CHECK(cosv > 0.999 && fabs(sqrt(n16 / n32) - 1) < 0.02, "bf16 gradient: cosine %.6f, norm ratio %.4f", cosv,
          sqrt(n16 / n32));
    /* the pool splits the panels: the same numbers on 2 threads */
    mn_threadpool *pool = NULL;
    CHECK(mn_threadpool_create(2, &pool) == 0, "pool");
    mn_op_set_pool(pool);
    const double l16b = bf16_step(tm, &P, ids, g16b);
    mn_op_set_pool(NULL);
    mn_threadpool_free(pool);
    CHECK(fabs(l16b - l16) <= 1e-6 * fabs(l16), "bf16 on 2 threads: loss %.9g vs %.9g", l16b, l16);
    /* freeing the model unregisters its weights: a new one multiplies in f32 again */
    mn_tmodel_free(tm);
    tm = NULL;
    CHECK(mn_tmodel_create(m, &tm) == 0, "tmodel: %s", mn_last_error());
    if (tm) {
        const double lagain = bf16_step(tm, &P, ids, gagain);
        CHECK(lagain == l32 && !memcmp(gagain, g32, sizeof(float) * (size_t)P.np),
              "after the bf16 model is freed: loss %.9g, f32 gave %.9g", lagain, l32);
    }
    mn_tmodel_free(tm);
    free(g32), free(g16), free(g16b), free(gagain), free(P.theta), free(P.grad);
}

/* ---- 2. stop + resume through the library ---- */
static int stop_at_2(const mn_train_progress *p, void *ud) {
    (void)ud;
    return p->step == 2;
}

static int record_loss(const mn_train_progress *p, void *ud) {
    double **fl = ud;
    if (p->step == 1) *fl[0] = p->val_loss;
    *fl[1] = p->val_loss;
    return 0;
}

static void write_text(const char *path) {
    FILE *f = fopen(path, "w");
    uint64_t r = 99;
    for (int i = 0; i < 6000; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        fputc(i % 9 == 8 ? ' ' : 'a' + (int)((r >> 33) % 6), f);
    }
    fclose(f);
}

static void test_resume(mn_model *m) {
    char ad[700], data[700], out1[700], out2[700], ck[700], cache[700];
    snprintf(ad, sizeof ad, "%s/init.gguf", g_dir);
    snprintf(data, sizeof data, "%s/text.txt", g_dir);
    snprintf(out1, sizeof out1, "%s/a1.gguf", g_dir);
    snprintf(out2, sizeof out2, "%s/a2.gguf", g_dir);
    snprintf(ck, sizeof ck, "%s/a2.gguf.ckpt", g_dir);
    snprintf(cache, sizeof cache, "%s/cache", g_dir);
    write_text(data);
    mn_adapter_params ap = mn_adapter_default_params(MN_COMP_UIO);
    ap.segment = 16, ap.ratio = 4, ap.rank = 4, ap.alpha = 8, ap.seed = 3;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &ap, &a) == 0 && mn_adapter_save(a, ad) == 0, "adapter: %s", mn_last_error());
    mn_adapter_free(a);
    mn_train_config c = mn_train_default_config();
    c.adapter_in = ad, c.data_glob = data, c.cache_dir = cache, c.out = out1, c.n_seg = 3, c.steps = 4;
    c.batch = 2, c.bptt = MN_BPTT_UNBIASED, c.tau = 1, c.warmup = 1, c.ckpt_every = 1, c.eval_every = 2;
    c.n_ratios = 2, c.ratios[0] = 4, c.ratios[1] = 8, c.kl_w = 0.5f, c.n_threads = 1;
    CHECK(mn_train_run(m, &c, NULL, NULL) == 0, "train: %s", mn_last_error());
    c.out = out2;
    CHECK(mn_train_run(m, &c, stop_at_2, NULL) == 0, "train (stopped): %s", mn_last_error());
    CHECK(!same_file(out1, out2), "2 steps gave the same adapter as 4");
    c.resume = ck;
    CHECK(mn_train_run(m, &c, NULL, NULL) == 0, "resume: %s", mn_last_error());
    CHECK(same_file(out1, out2), "stopped-and-resumed run differs from the uninterrupted one");
    /* resuming with other settings is refused */
    c.lr = 0.5f;
    CHECK(mn_train_run(m, &c, NULL, NULL) == MN_EINVAL, "resume with another lr accepted");
    c.lr = mn_train_default_config().lr;
    /* but a run may be lengthened: from step 4 of 4 on to 6, the schedule re-planned */
    c.steps = 6;
    CHECK(mn_train_run(m, &c, NULL, NULL) == 0, "resume with more steps: %s", mn_last_error());
    CHECK(!same_file(out1, out2), "two more steps changed nothing");
    c.steps = 4, c.resume = NULL;
    /* a ratio that does not divide the segment, too many tau */
    c.ratios[1] = 5;
    CHECK(mn_train_run(m, &c, NULL, NULL) == MN_EINVAL && strstr(mn_last_error(), "divide"), "ratio 5: %s",
          mn_last_error());
    c.ratios[1] = 8, c.tau = 3;
    CHECK(mn_train_run(m, &c, NULL, NULL) == MN_EINVAL, "tau 3 of 3 segments accepted");
    /* a summary adapter trains through the same loop; its validation loss falls */
    ap = mn_adapter_default_params(MN_COMP_SUMMARY);
    ap.segment = 16, ap.ratio = 4, ap.rank = 4, ap.alpha = 8;
    char sad[700];
    snprintf(sad, sizeof sad, "%s/summary.gguf", g_dir);
    CHECK(mn_adapter_init(m, &ap, &a) == 0 && mn_adapter_save(a, sad) == 0, "summary adapter: %s", mn_last_error());
    mn_adapter_free(a);
    c.adapter_in = sad, c.tau = 1, c.steps = 8, c.ckpt_every = 0, c.out = out2, c.lr = 1e-2f;
    double first = NAN, last = NAN;
    c.eval_every = 1;
    CHECK(mn_train_run(m, &c, record_loss, (double *[]){&first, &last}) == 0, "summary training: %s",
          mn_last_error());
    printf("summary training: validation loss %.4f -> %.4f\n", first, last);
    /* it falls, by a margin a zero or sign-flipped gradient would miss (measured: 6.018 -> 5.674) */
    CHECK(isfinite(first) && isfinite(last) && last < first - 0.1, "summary training loss %g -> %g", first, last);
    mn_adapter *trained = NULL;
    CHECK(mn_adapter_load(m, out2, &trained) == 0, "trained summary adapter loads: %s", mn_last_error());
    mn_adapter_free(trained);

    /* fine-tuning: a decoder LoRA trains over the frozen compressor */
    char dec[700];
    snprintf(dec, sizeof dec, "%s/dec.gguf", g_dir);
    c.adapter_in = out1, c.out = NULL, c.dec_out = dec, c.steps = 4, c.eval_every = 2, c.lr = 1e-2f;
    first = last = NAN;
    CHECK(mn_train_run(m, &c, record_loss, (double *[]){&first, &last}) == 0, "fine-tuning: %s", mn_last_error());
    mn_lora_file *lf = NULL;
    CHECK(mn_lora_file_load(m, dec, &lf) == 0, "fine-tuned LoRA loads: %s", mn_last_error());
    double bsum = 0;
    for (int i = 0; lf && i < mn_lora_file_n_tensors(lf); i++) {
        const char *name;
        int64_t n;
        float *d;
        mn_lora_file_tensor(lf, i, &name, &n, &d);
        if (strstr(name, "lora_b"))
            for (int64_t e = 0; e < n; e++) bsum += fabs(d[e]);
    }
    CHECK(bsum > 0, "fine-tuning left the decoder LoRA at its initial B = 0");
    printf("fine-tuning: validation loss %.4f -> %.4f\n", first, last);
    /* measured: 6.132 -> 5.673 */
    CHECK(isfinite(last) && last < first - 0.1, "fine-tuning validation loss %g -> %g", first, last);
    mn_lora_file_free(lf);
    c.resume = dec;
    CHECK(mn_train_run(m, &c, NULL, NULL) == MN_EUNSUPPORTED, "fine-tuning with --resume should be refused");
}

/* ---- 3. the CLI: SIGKILL, then --resume ---- */
static int run_cmd(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli_kill(void) {
    const char *bin = getenv("MNEMO_BIN");
    if (!bin) bin = "build/mnemo";
    char base[1600], cmd[4000], out[700], ref[700], ck[700];
    snprintf(out, sizeof out, "%s/k.gguf", g_dir);
    snprintf(ref, sizeof ref, "%s/a1.gguf", g_dir);
    snprintf(ck, sizeof ck, "%s/k.gguf.ckpt", g_dir);
    /* the same GEMM kernels as this process's reference run (mnemo would
     * otherwise pick newer OpenBLAS kernels on CPUs OpenBLAS misdetects) */
    setenv("OPENBLAS_CORETYPE", openblas_get_corename(), 1);
    snprintf(base, sizeof base,
             "%s train -m %s -a %s/init.gguf --data %s/text.txt --cache %s/cache --segments 3 --steps 4 --batch 2 "
             "--bptt unbiased --tau 1 --warmup 1 --ckpt-every 1 --eval-every 2 --ratios 4,8 --distill 0.5 -t 1",
             bin, g_model, g_dir, g_dir, g_dir);
    pid_t pid = fork();
    if (pid == 0) {
        snprintf(cmd, sizeof cmd, "exec %s -o %s 2>/dev/null", base, out);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    struct stat sb;
    for (int i = 0; i < 2000 && stat(ck, &sb) != 0; i++) usleep(5000);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(stat(ck, &sb) == 0, "no checkpoint appeared before the kill");
    snprintf(cmd, sizeof cmd, "%s -o %s --resume %s 2>/dev/null", base, out, ck);
    CHECK(run_cmd(cmd) == 0, "resume after SIGKILL failed");
    CHECK(same_file(out, ref), "killed-and-resumed CLI run differs from the uninterrupted one");
    snprintf(cmd, sizeof cmd, "%s -o %s --bptt sideways 2>/dev/null", base, out);
    CHECK(run_cmd(cmd) == 2, "unknown --bptt should be a usage error");
    snprintf(cmd, sizeof cmd, "%s -o %s --ratios 5 2>/dev/null", base, out);
    CHECK(run_cmd(cmd) == 1, "a ratio that does not divide the segment should fail");
    snprintf(cmd, sizeof cmd, "%s -o %s --compressor beacon 2>/dev/null", base, out);
    CHECK(run_cmd(cmd) == 1, "--compressor beacon with a UIO adapter should fail");
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    snprintf(g_model, sizeof g_model, "%s/tiny.gguf", g_dir);
    tiny_llama cfg = {.n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 64, .n_layer = 2, .n_ctx = 256, .seed = 5};
    mn_model *m = NULL;
    CHECK(tiny_llama_write(&cfg, g_model) == 0 && mn_model_load(g_model, &m) == 0, "tiny model: %s",
          mn_last_error());
    if (m) {
        test_passkey(m);
        test_bf16(m);
        test_resume(m);
        mn_model_free(m);
        test_cli_kill();
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_MAIN_END();
}
