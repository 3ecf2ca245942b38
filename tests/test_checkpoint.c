/* test_checkpoint.c - training checkpoints on tiny random Llamas: exact round
 * trip (params, moments, steps, RNG, loss, config) and exact resumption, a
 * checkpoint loading as an adapter, every truncation and single-byte
 * corruption refused with a message, another model / mismatched optimizer
 * tensors refused with the optimizer untouched, and kill -9 during saves
 * always leaving a whole checkpoint (the old or the new one). */
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/gguf.h"
#include "memory/adapter.h"
#include "mnemo.h"
#include "test.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/rng.h"

enum { C = 32, H = 2, KH = 1, D = 16, F = 64, V = 260, NL = 2 };

static void add_f32(mn_gguf_writer *w, const char *name, int64_t cols, int64_t rows, mn_rng *r) {
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)(mn_rng_normal(r) * 0.1);
    int64_t ne[2] = {cols, rows};
    mn_gguf_writer_add_tensor(w, name, MN_TYPE_F32, rows > 1 ? 2 : 1, ne, f);
    free(f);
}

/* A tiny all-F32 Llama with a byte vocabulary; the seed changes its weights (and hash). */
static int write_model(const char *path, const char *name, uint64_t seed) {
    mn_rng r;
    mn_rng_seed(&r, seed);
    mn_gguf_writer *w = mn_gguf_writer_create();
    mn_gguf_writer_set_str(w, "general.architecture", "llama");
    mn_gguf_writer_set_str(w, "general.name", name);
    mn_gguf_writer_set_u32(w, "llama.block_count", NL);
    mn_gguf_writer_set_u32(w, "llama.context_length", 64);
    mn_gguf_writer_set_u32(w, "llama.embedding_length", C);
    mn_gguf_writer_set_u32(w, "llama.feed_forward_length", F);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count", H);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", KH);
    mn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    static char store[256][8];
    const char *toks[V];
    int32_t types[V];
    for (int b = 0; b < 256; b++) {
        snprintf(store[b], sizeof store[b], "<0x%02X>", b);
        toks[b] = store[b], types[b] = 6;
    }
    const char *sp[4] = {"<s>", "<x>", "</s>", "<pad>"};
    for (int i = 0; i < 4; i++) toks[256 + i] = sp[i], types[256 + i] = 3;
    float scores[V] = {0};
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", V, toks, NULL);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MN_GGUF_FLOAT32, V, scores);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MN_GGUF_INT32, V, types);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 258);
    add_f32(w, "token_embd.weight", C, V, &r);
    add_f32(w, "output_norm.weight", C, 1, &r);
    char nm[64];
    static const struct {
        const char *s;
        int cols, rows;
    } mats[] = {{"attn_q", C, H * D}, {"attn_k", C, KH * D}, {"attn_v", C, KH * D},
                {"attn_output", H * D, C}, {"ffn_gate", C, F}, {"ffn_up", C, F},
                {"ffn_down", F, C}, {"attn_norm", C, 1}, {"ffn_norm", C, 1}};
    for (int l = 0; l < NL; l++)
        for (size_t k = 0; k < sizeof mats / sizeof mats[0]; k++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, mats[k].s);
            add_f32(w, nm, mats[k].cols, mats[k].rows, &r);
        }
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

/* ------------------------------------------------------------ a trainer */
typedef struct {
    mn_adapter *a;
    mn_adamw *o;
    float **grad;
    int n;
    mn_train_state st;
    float ext[40], ext_g[40]; /* a tensor outside the adapter (like a decoder LoRA) */
    int has_ext;
} trainer;

/* Registers every adapter tensor (decay on all but mem.embd); skip: a tensor
 * index to leave out (-1: none). */
static void trainer_init(trainer *t, mn_adapter *a, int skip) {
    memset(t, 0, sizeof *t);
    t->a = a;
    mn_rng_seed(&t->st.rng, 1);
    mn_adamw_params hp = mn_adamw_default_params();
    hp.lr = 1e-2f, hp.warmup = 2, hp.total = 50;
    mn_adamw_create(&hp, &t->o);
    t->n = mn_adapter_n_tensors(a);
    t->grad = calloc((size_t)t->n, sizeof *t->grad);
    for (int i = 0; i < t->n; i++) {
        if (i == skip) continue;
        const char *nm;
        int64_t ne[2];
        mn_adapter_tensor_at(a, i, &nm, NULL, ne, NULL);
        t->grad[i] = calloc((size_t)(ne[0] * ne[1]), sizeof(float));
        int rc = mn_adamw_add(t->o, nm, mn_adapter_tensor_data_mut(a, i), t->grad[i], ne[0] * ne[1],
                              strcmp(nm, "mem.embd") != 0);
        CHECK(rc == 0, "register %s: %s", nm, mn_last_error());
    }
}

/* Also trains t->ext under `name` (which may equal an adapter tensor's name when that one is not trained). */
static void trainer_add_ext(trainer *t, const char *name, int n) {
    for (int i = 0; i < n; i++) t->ext[i] = (float)(mn_rng_normal(&t->st.rng) * 0.5);
    CHECK(mn_adamw_add(t->o, name, t->ext, t->ext_g, n, 1) == 0, "register ext: %s", mn_last_error());
    t->has_ext = n;
}

static void trainer_free(trainer *t) {
    for (int i = 0; i < t->n; i++) free(t->grad[i]);
    free(t->grad);
    mn_adamw_free(t->o);
    mn_adapter_free(t->a);
}

/* One "training step": gradients drawn from the trainer's RNG, then AdamW. */
static void trainer_step(trainer *t) {
    for (int i = 0; i < mn_adamw_n_tensors(t->o); i++) {
        const char *nm;
        int64_t n;
        mn_adamw_tensor(t->o, i, &nm, &n, NULL, NULL, NULL);
        for (int k = 0; k < t->n; k++) {
            const char *an;
            mn_adapter_tensor_at(t->a, k, &an, NULL, NULL, NULL);
            if (!strcmp(an, nm) && t->grad[k])
                for (int64_t j = 0; j < n; j++) t->grad[k][j] = (float)(mn_rng_normal(&t->st.rng) * 0.3);
        }
    }
    for (int j = 0; j < t->has_ext; j++) t->ext_g[j] = (float)(mn_rng_normal(&t->st.rng) * 0.3);
    float gn;
    CHECK(mn_adamw_step(t->o, &gn) == 0, "step: %s", mn_last_error());
    t->st.step++;
    t->st.loss_ema = 0.9 * t->st.loss_ema + 0.1 * gn;
}

static int same_adapter(const mn_adapter *x, const mn_adapter *y) {
    if (mn_adapter_n_tensors(x) != mn_adapter_n_tensors(y)) return 0;
    for (int i = 0; i < mn_adapter_n_tensors(x); i++) {
        const char *n1, *n2;
        int64_t e1[2], e2[2];
        const float *p1, *p2;
        mn_adapter_tensor_at(x, i, &n1, NULL, e1, &p1);
        mn_adapter_tensor_at(y, i, &n2, NULL, e2, &p2);
        if (strcmp(n1, n2) || e1[0] != e2[0] || e1[1] != e2[1] || memcmp(p1, p2, sizeof(float) * (size_t)(e1[0] * e1[1])))
            return 0;
    }
    return 1;
}

static int same_moments(mn_adamw *x, mn_adamw *y) {
    if (mn_adamw_n_tensors(x) != mn_adamw_n_tensors(y) || mn_adamw_steps(x) != mn_adamw_steps(y)) return 0;
    for (int i = 0; i < mn_adamw_n_tensors(x); i++) {
        const char *n1, *n2;
        int64_t k1, k2;
        float *p1, *m1, *v1, *p2, *m2, *v2;
        mn_adamw_tensor(x, i, &n1, &k1, &p1, &m1, &v1);
        mn_adamw_tensor(y, i, &n2, &k2, &p2, &m2, &v2);
        size_t b = sizeof(float) * (size_t)k1;
        if (strcmp(n1, n2) || k1 != k2 || memcmp(p1, p2, b) || memcmp(m1, m2, b) || memcmp(v1, v2, b)) return 0;
    }
    return 1;
}

static int same_state(const mn_train_state *a, const mn_train_state *b) {
    return a->step == b->step && !memcmp(a->rng.s, b->rng.s, sizeof a->rng.s) && a->loss_ema == b->loss_ema &&
           !strcmp(a->config, b->config);
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

static mn_adapter *fresh_adapter(const mn_model *m, uint64_t seed) {
    mn_adapter_params p = mn_adapter_default_params(MN_COMP_UIO);
    p.segment = 16, p.ratio = 4, p.rank = 2, p.alpha = 4, p.seed = seed;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "adapter init: %s", mn_last_error());
    return a;
}

int main(void) {
    char ma[64], mb[64], ck[64], ad[64];
    snprintf(ma, sizeof ma, "/tmp/mnemo-ckpt-ma-XXXXXX");
    snprintf(mb, sizeof mb, "/tmp/mnemo-ckpt-mb-XXXXXX");
    snprintf(ck, sizeof ck, "/tmp/mnemo-ckpt-XXXXXX");
    snprintf(ad, sizeof ad, "/tmp/mnemo-ckpt-ad-XXXXXX");
    char *paths[4] = {ma, mb, ck, ad};
    for (int i = 0; i < 4; i++) {
        int fd = mkstemp(paths[i]);
        if (fd >= 0) close(fd);
    }
    CHECK(write_model(ma, "tiny-a", 1) == 0 && write_model(mb, "tiny-b", 2) == 0, "models: %s", mn_last_error());
    mn_model *m = NULL, *m2 = NULL;
    CHECK(mn_model_load(ma, &m) == 0 && mn_model_load(mb, &m2) == 0, "load models: %s", mn_last_error());
    if (!m || !m2) return 1;

    /* train a few steps, save */
    trainer t;
    trainer_init(&t, fresh_adapter(m, 7), -1);
    mn_rng_seed(&t.st.rng, 2024);
    t.st.loss_ema = 2.345678901234567;
    snprintf(t.st.config, sizeof t.st.config, "compressor=uio segment=16 ratio=4 rank=2 lr=0.01 seed=2024");
    for (int s = 0; s < 3; s++) trainer_step(&t);
    /* what a save killed inside the GGUF writer leaves: removed by the next save; another file alike is not */
    char stale[128], other[128];
    snprintf(stale, sizeof stale, "%s.ckpt-tmp.tmp.Ab1xYz", ck);
    snprintf(other, sizeof other, "%s.ckpt-tmp.tmp.notmine", ck);
    FILE *sf = fopen(stale, "wb"), *of = fopen(other, "wb");
    if (sf) fclose(sf);
    if (of) fclose(of);
    CHECK(mn_checkpoint_save(ck, t.a, t.o, &t.st) == 0, "save: %s", mn_last_error());
    long size = file_size(ck);
    {
        char tmp[96];
        snprintf(tmp, sizeof tmp, "%s.ckpt-tmp", ck);
        CHECK(access(tmp, F_OK) != 0, "no temporary file left behind");
        CHECK(access(stale, F_OK) != 0 && access(other, F_OK) == 0, "a killed save's file removed, not another");
        unlink(other);
    }

    /* load into a trainer built around a different adapter of the same shape */
    trainer u;
    trainer_init(&u, fresh_adapter(m, 99), -1);
    mn_adapter *la = NULL;
    int rc = mn_checkpoint_load(ck, m, &la, u.o, &u.st);
    CHECK(rc == 0 && la, "load: %s", mn_last_error());
    if (la) {
        CHECK(same_adapter(la, t.a), "loaded adapter = saved adapter");
        CHECK(same_adapter(u.a, t.a), "optimizer param buffers received the saved params");
        CHECK(same_moments(u.o, t.o), "moments, params and optimizer steps restored exactly");
        CHECK(same_state(&u.st, &t.st), "train state restored exactly (step %lld, loss %.17g, config '%s')",
              (long long)u.st.step, u.st.loss_ema, u.st.config);
        mn_adapter_free(la);
    }
    /* resuming is exact: two more steps on both give bitwise-equal results */
    for (int s = 0; s < 2; s++) trainer_step(&t), trainer_step(&u);
    CHECK(same_adapter(u.a, t.a) && same_moments(u.o, t.o) && same_state(&u.st, &t.st), "resumed run diverged");

    /* tensors outside the adapter travel as opt.p.<name>, even one named like an (untrained) adapter tensor */
    {
        static const struct {
            const char *name;
            int skip, n;
        } ext[2] = {{"dec.blk.0.attn_q.weight.lora_a", -1, 40}, {"blk.0.attn_q.weight.lora_a", 1, 32 * 2}};
        for (int e = 0; e < 2; e++) {
            trainer x, y;
            trainer_init(&x, fresh_adapter(m, 3), ext[e].skip);
            trainer_add_ext(&x, ext[e].name, ext[e].n > 40 ? 40 : ext[e].n);
            trainer_init(&y, fresh_adapter(m, 4), ext[e].skip);
            trainer_add_ext(&y, ext[e].name, ext[e].n > 40 ? 40 : ext[e].n);
            for (int s = 0; s < 2; s++) trainer_step(&x);
            rc = mn_checkpoint_save(ad, x.a, x.o, &x.st);
            CHECK(rc == 0, "save with '%s': %s", ext[e].name, mn_last_error());
            mn_adapter *lx = NULL;
            rc = mn_checkpoint_load(ad, m, &lx, y.o, &y.st);
            CHECK(rc == 0, "load with '%s': %s", ext[e].name, mn_last_error());
            CHECK(!memcmp(x.ext, y.ext, sizeof x.ext) && same_moments(x.o, y.o) && lx && same_adapter(lx, x.a),
                  "'%s' restored from opt.p", ext[e].name);
            mn_adapter_free(lx);
            lx = NULL;
            CHECK(mn_adapter_load(m, ad, &lx) == 0, "still an adapter: %s", mn_last_error());
            mn_adapter_free(lx);
            trainer_free(&x);
            trainer_free(&y);
        }
    }

    /* the checkpoint is also an adapter */
    {
        mn_adapter *b = NULL;
        mn_checkpoint_save(ck, t.a, t.o, &t.st);
        CHECK(mn_adapter_load(m, ck, &b) == 0 && b && same_adapter(b, t.a), "checkpoint as adapter: %s",
              mn_last_error());
        mn_adapter_free(b);
        mn_adapter_info info;
        CHECK(mn_adapter_read_info(ck, &info) == 0 && info.params.compressor == MN_COMP_UIO, "adapter info");
    }

    /* a plain adapter is not a checkpoint */
    CHECK(mn_adapter_save(t.a, ad) == 0, "adapter save");
    la = (mn_adapter *)&la;
    rc = mn_checkpoint_load(ad, m, &la, u.o, &u.st);
    CHECK(rc == MN_EFORMAT && !la && strstr(mn_last_error(), "not a training checkpoint"), "adapter as checkpoint: %s",
          mn_last_error());

    /* another model */
    rc = mn_checkpoint_load(ck, m2, &la, u.o, &u.st);
    CHECK(rc == MN_EINVAL && !la && strstr(mn_last_error(), "adapter was made for model 'tiny-a'"), "other model: %s",
          mn_last_error());

    /* mismatched optimizers: nothing changes in them */
    {
        trainer w;
        trainer_init(&w, fresh_adapter(m, 5), 3); /* one tensor not trained */
        mn_adapter *snap = fresh_adapter(m, 5);
        rc = mn_checkpoint_load(ck, m, &la, w.o, &w.st);
        CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "opt.m.") && strstr(mn_last_error(), "for a tensor the optimizer does not train"),
              "optimizer with a tensor fewer: %s", mn_last_error());
        CHECK(same_adapter(w.a, snap) && mn_adamw_steps(w.o) == 0, "failed load changed the optimizer");
        /* saving with that optimizer and loading into the full one fails the other way */
        trainer_step(&w);
        CHECK(mn_checkpoint_save(ad, w.a, w.o, &w.st) == 0, "partial save: %s", mn_last_error());
        rc = mn_checkpoint_load(ad, m, &la, u.o, &u.st);
        CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "checkpoint has no 'opt.m."), "extra tensor: %s",
              mn_last_error());
        mn_adapter_free(snap);
        trainer_free(&w);
    }
    {
        /* an optimizer tensor that is not in the adapter, or of another size */
        mn_adamw *o = NULL;
        mn_adamw_create(&(mn_adamw_params){.lr = 1, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .total = 1}, &o);
        float p[8], g[8];
        mn_adamw_add(o, "mem.embd", p, g, 8, 0);
        rc = mn_checkpoint_load(ck, m, &la, o, &u.st);
        CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "'mem.embd' (8 floats) differs in size"), "size: %s",
              mn_last_error());
        mn_adamw_free(o);
        mn_adamw_create(&(mn_adamw_params){.lr = 1, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .total = 1}, &o);
        float g2[64];
        mn_adamw_add(o, "mem.embd", mn_adapter_tensor_data_mut(t.a, 1), g2, 8, 0); /* tensor 1's buffer */
        CHECK(mn_checkpoint_save(ad, t.a, o, &t.st) == MN_EINVAL &&
                  strstr(mn_last_error(), "is registered on adapter tensor 'blk.0.attn_q.weight.lora_a'"),
              "save refuses a mismatched registration: %s", mn_last_error());
        mn_adamw_free(o);
        mn_adamw_create(&(mn_adamw_params){.lr = 1, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .total = 1}, &o);
        mn_adamw_add(o, "bogus", p, g, 8, 0);
        rc = mn_checkpoint_load(ck, m, &la, o, &u.st);
        CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "'bogus' (8 floats) has no tensor"), "name: %s",
              mn_last_error());
        mn_adamw_free(o);
    }

    /* every truncation and every single-byte corruption is refused with a message; u stays as it was */
    mn_checkpoint_save(ck, t.a, t.o, &t.st);
    size = file_size(ck);
    FILE *f = fopen(ck, "rb");
    unsigned char *orig = malloc((size_t)size);
    CHECK(f && fread(orig, 1, (size_t)size, f) == (size_t)size, "read back");
    if (f) fclose(f);
    mn_train_state keep = u.st;
    mn_adapter *ua = fresh_adapter(m, 1);
    for (int i = 0; i < mn_adapter_n_tensors(ua); i++) { /* snapshot of u's params */
        int64_t ne[2];
        const float *src;
        mn_adapter_tensor_at(u.a, i, NULL, NULL, ne, &src);
        memcpy(mn_adapter_tensor_data_mut(ua, i), src, sizeof(float) * (size_t)(ne[0] * ne[1]));
    }
    int sanitized = getenv("MN_SANITIZED") != NULL;
    long step = sanitized ? 7 : 1, n_try = 0, n_bad = 0, n_nomsg = 0;
    for (long len = 0; len < size; len += step) {
        if (truncate(ck, len)) break;
        n_try++;
        rc = mn_checkpoint_load(ck, m, &la, u.o, &u.st);
        if (rc == 0 || la) n_bad++, mn_adapter_free(la), la = NULL;
        if (strlen(mn_last_error()) < 10) n_nomsg++;
    }
    CHECK(n_bad == 0 && n_nomsg == 0, "%ld of %ld truncations loaded, %ld without a message", n_bad, n_try, n_nomsg);
    printf("  %ld truncations of a %ld-byte checkpoint all refused\n", n_try, size);
    long n_flip = 0, flip_bad = 0, n_sum = 0;
    f = fopen(ck, "wb");
    fwrite(orig, 1, (size_t)size, f);
    fclose(f);
    int cfd = open(ck, O_RDWR);
    CHECK(cfd >= 0, "reopen");
    for (long at = 0; cfd >= 0 && at < size; at += step) {
        /* flip one bit in place, load, flip it back (rewriting the file each time is slow on ext4) */
        unsigned char c = (unsigned char)(orig[at] ^ (1u << (at % 8)));
        if (pwrite(cfd, &c, 1, at) != 1) break;
        n_flip++;
        rc = mn_checkpoint_load(ck, m, &la, u.o, &u.st);
        if (rc == 0 || la) flip_bad++, mn_adapter_free(la), la = NULL;
        n_sum += strstr(mn_last_error(), "checksum mismatch") != NULL;
        if (pwrite(cfd, &orig[at], 1, at) != 1) break;
    }
    if (cfd >= 0) close(cfd);
    CHECK(n_flip == (size + step - 1) / step, "flipped %ld bytes", n_flip);
    CHECK(flip_bad == 0, "%ld of %ld corrupted checkpoints loaded", flip_bad, n_flip);
    CHECK(n_sum > n_flip / 2, "only %ld of %ld corruptions caught by the checksum", n_sum, n_flip);
    printf("  %ld single-bit corruptions all refused (%ld by the checksum, the rest by the GGUF reader)\n", n_flip,
           n_sum);
    CHECK(same_adapter(u.a, ua) && same_state(&u.st, &keep), "failed loads changed the trainer");
    mn_adapter_free(ua);

    /* kill -9 while saving: the file at the path is always a whole checkpoint (old or new) */
    f = fopen(ck, "wb");
    fwrite(orig, 1, (size_t)size, f);
    fclose(f);
    free(orig);
    {
        trainer t2; /* state B: one step further than t */
        trainer_init(&t2, fresh_adapter(m, 7), -1);
        mn_adapter *la0 = NULL;
        CHECK(mn_checkpoint_load(ck, m, &la0, t2.o, &t2.st) == 0, "load A: %s", mn_last_error());
        mn_adapter_free(la0);
        trainer_step(&t2);
        int n_a = 0, n_b = 0, n_other = 0, rounds = sanitized ? 4 : 12;
        for (int r = 0; r < rounds; r++) {
            pid_t pid = fork();
            if (pid == 0) {
                for (;;) {
                    mn_checkpoint_save(ck, t2.a, t2.o, &t2.st);
                    mn_checkpoint_save(ck, t.a, t.o, &t.st);
                }
            }
            struct timespec ts = {0, (long)(2000000 + 1700000 * r)};
            nanosleep(&ts, NULL);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            trainer x;
            trainer_init(&x, fresh_adapter(m, 1), -1);
            mn_adapter *lx = NULL;
            rc = mn_checkpoint_load(ck, m, &lx, x.o, &x.st);
            if (rc == 0 && same_adapter(lx, t.a) && same_state(&x.st, &t.st))
                n_a++;
            else if (rc == 0 && same_adapter(lx, t2.a) && same_state(&x.st, &t2.st))
                n_b++;
            else
                n_other++, fprintf(stderr, "  after kill: rc %d %s\n", rc, mn_last_error());
            mn_adapter_free(lx);
            trainer_free(&x);
        }
        CHECK(n_other == 0, "%d of %d kills left a broken checkpoint", n_other, rounds);
        printf("  %d kill -9 during saves: %d old, %d new checkpoint, 0 broken\n", rounds, n_a, n_b);
        trainer_free(&t2);
        char tmp[96];
        snprintf(tmp, sizeof tmp, "%s.ckpt-tmp", ck);
        unlink(tmp);
        /* the kills' leftovers go with the next save */
        CHECK(mn_checkpoint_save(ck, t.a, t.o, &t.st) == 0, "save after the kills: %s", mn_last_error());
        glob_t g;
        snprintf(tmp, sizeof tmp, "%s.ckpt-tmp*", ck);
        const int left = glob(tmp, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
        if (left) globfree(&g);
        CHECK(left == 0, "%d temporary files left after the kills and a save", left);
    }

    trainer_free(&t);
    trainer_free(&u);
    mn_model_free(m);
    mn_model_free(m2);
    for (int i = 0; i < 4; i++) unlink(paths[i]);
    TEST_MAIN_END();
}
