/* train.c - the training loop (see train.h). */
#include "train/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "threadpool.h"
#include "train/beacontrain.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/synth.h"
#include "kernels/gemm_bf16.h"
#include "train/data.h"
#include "model/lora.h"
#include "train/optim.h"

mn_train_config mn_train_default_config(void) {
    mn_train_config c = {0};
    c.cache_dir = ".cache/train";
    c.n_seg = 4;
    c.bptt = MN_BPTT_INCREMENTAL;
    c.tau = 2;
    c.steps = 100;
    c.batch = 1;
    c.lr = 1e-3f;
    c.weight_decay = 0.01f;
    c.clip = 1.0f;
    c.warmup = 10;
    c.n_sinks = 4;
    c.ckpt_every = 50;
    c.eval_every = 50;
    c.eval_windows = 4;
    c.val_frac = 0.02;
    c.seed = 1;
    c.dec_targets = "qv";
    c.dec_rank = 8;
    c.dec_alpha = 16;
    c.qa_mix = 0.5f;
    return c;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The adapter's tensors as the trainer's parameters, each with a gradient. */
typedef struct {
    int L;
    mn_tlora_w *enc_q, *enc_v, *mem_k, *mem_v;
    mn_talt_w *bproj; /* beacon: per layer Q, K, V (O) with gradients */
    float *mem_embd, *d_mem_embd;
    float **grads; /* per adapter tensor */
    int n;
} binding;

static void unbind(binding *b) {
    for (int i = 0; b->grads && i < b->n; i++) free(b->grads[i]);
    free(b->grads);
    free(b->enc_q), free(b->enc_v), free(b->mem_k), free(b->mem_v), free(b->bproj);
    memset(b, 0, sizeof *b);
}

/* Registers every tensor with the optimizer (weight decay on LoRA matrices,
 * not on the memory embedding) and points the LoRA views at them. */
static int bind(mn_adapter *a, int L, int summary, mn_adamw *opt, binding *b) {
    memset(b, 0, sizeof *b);
    b->L = L;
    b->n = mn_adapter_n_tensors(a);
    b->grads = calloc((size_t)b->n, sizeof(float *));
    b->enc_q = calloc((size_t)L, sizeof(mn_tlora_w)), b->enc_v = calloc((size_t)L, sizeof(mn_tlora_w));
    b->mem_k = calloc((size_t)L, sizeof(mn_tlora_w)), b->mem_v = calloc((size_t)L, sizeof(mn_tlora_w));
    b->bproj = calloc((size_t)L, sizeof(mn_talt_w));
    if (!b->grads || !b->enc_q || !b->enc_v || !b->mem_k || !b->mem_v || !b->bproj)
        return mn_error(MN_ENOMEM, "out of memory");
    const int beacon = mn_adapter_config(a)->compressor == MN_COMP_BEACON;
    for (int i = 0; i < b->n; i++) {
        const char *name;
        int nd;
        int64_t ne[2];
        const float *data;
        mn_adapter_tensor_at(a, i, &name, &nd, ne, &data);
        const int64_t n = ne[0] * (nd > 1 ? ne[1] : 1);
        float *p = mn_adapter_tensor_data_mut(a, i);
        float *g = calloc((size_t)n, sizeof(float));
        if (!g) return mn_error(MN_ENOMEM, "out of memory");
        b->grads[i] = g;
        int layer = -1, decay = 1, bcn = 0;
        char bw[16];
        char proj = 0, ab = 0;
        mn_tlora_w *set = NULL;
        if (!strcmp(name, "mem.embd")) {
            b->mem_embd = p, b->d_mem_embd = g, decay = 0;
        } else if (sscanf(name, "mem.blk.%d.attn_%c.weight.lora_%c", &layer, &proj, &ab) == 3) {
            set = proj == 'k' ? b->mem_k : proj == 'v' ? b->mem_v : NULL;
        } else if (sscanf(name, "blk.%d.attn_%c.weight.lora_%c", &layer, &proj, &ab) == 3) {
            set = proj == 'q' ? b->enc_q : proj == 'v' ? b->enc_v : NULL;
        }
        if (beacon && sscanf(name, "beacon.blk.%d.attn_%15[a-z].weight", &layer, bw) == 2 && layer >= 0 &&
            layer < L) {
            /* full matrices that start as the base's: decay toward zero would undo that */
            mn_talt_w *pw = &b->bproj[layer];
            bcn = 1, decay = 0;
            if (!strcmp(bw, "q")) pw->q = p, pw->dq = g;
            else if (!strcmp(bw, "k")) pw->k = p, pw->dk = g;
            else if (!strcmp(bw, "v")) pw->v = p, pw->dv = g;
            else if (!strcmp(bw, "output")) pw->o = p, pw->d_o = g;
            else bcn = 0;
        }
        if (!bcn && strcmp(name, "mem.embd") && (!set || layer < 0 || layer >= L || (ab != 'a' && ab != 'b')))
            return mn_error(MN_EUNSUPPORTED, "adapter tensor %s: not a UIO or summary parameter", name);
        if (set) {
            if (ab == 'a') set[layer].a = p, set[layer].da = g, set[layer].rank = (int32_t)ne[1];
            else set[layer].b = p, set[layer].db = g;
        }
        int rc = opt ? mn_adamw_add(opt, name, p, g, n, decay) : MN_OK;
        if (rc) return rc;
    }
    if (!b->mem_embd) return mn_error(MN_EFORMAT, "adapter has no mem.embd");
    for (int l = 0; beacon && l < L; l++)
        if (!b->bproj[l].q || !b->bproj[l].k || !b->bproj[l].v)
            return mn_error(MN_EFORMAT, "adapter lacks a beacon projection of layer %d", l);
    for (int l = 0; !beacon && l < L; l++)
        if (!b->enc_q[l].a || !b->enc_q[l].b || !b->enc_v[l].a || !b->enc_v[l].b ||
            (!summary && (!b->mem_k[l].a || !b->mem_k[l].b || !b->mem_v[l].a || !b->mem_v[l].b)))
            return mn_error(MN_EFORMAT, "adapter lacks a LoRA matrix of layer %d", l);
    return MN_OK;
}

/* The randomness of window g of step `step` (g = -1: the step's own draws,
 * its ratio): a function of the seed, the step and g only. So the windows of
 * a step do not depend on how many processes share it (N ranks taking every
 * N-th of B windows draw exactly what one process taking all B draws), nor
 * on where a run was stopped and resumed. */
static void step_rng(uint64_t seed, int64_t step, int64_t g, mn_rng *r) {
    const uint64_t k[3] = {seed, (uint64_t)step, (uint64_t)g};
    mn_rng_seed(r, mn_hash64(k, sizeof k, 0x6d6e656d6f));
}

/* one of the enabled kinds, uniformly */
static mn_synth_kind synth_draw(const mn_train_config *c, mn_rng *rng) {
    const uint32_t kinds = c->synth_kinds ? c->synth_kinds : 1u << MN_SYNTH_PASSKEY | 1u << MN_SYNTH_COPY;
    int on[MN_SYNTH_N_KINDS], n = 0;
    for (int k = 0; k < MN_SYNTH_N_KINDS; k++)
        if (kinds >> k & 1) on[n++] = k;
    return (mn_synth_kind)on[mn_rng_below(rng, (uint64_t)n)];
}

static void config_text(const mn_train_config *c, int32_t l, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "data=%s l=%d n_seg=%d ratios=", c->data_glob, l, c->n_seg);
    for (int i = 0; i < c->n_ratios && n > 0 && (size_t)n < cap; i++)
        n += snprintf(buf + n, cap - (size_t)n, "%s%d", i ? "," : "", c->ratios[i]);
    if (n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n,
                 " bptt=%s tau=%d steps=%lld batch=%d lr=%g wd=%g clip=%g warmup=%lld kl=%g sinks=%d seed=%llu",
                 mn_bptt_name(c->bptt), c->tau, (long long)c->steps, c->batch, (double)c->lr,
                 (double)c->weight_decay, (double)c->clip, (long long)c->warmup, (double)c->kl_w, c->n_sinks,
                 (unsigned long long)c->seed);
    /* only when used, so that runs without it resume from older checkpoints */
    n = (int)strlen(buf);
    if (c->synth > 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, " synth=%g", (double)c->synth);
    n = (int)strlen(buf);
    if (c->synth > 0 && c->synth_kinds && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " synth_kinds=%u", (unsigned)c->synth_kinds);
}

/* Two config texts equal once their " steps=N" fields are taken out: a run
 * may be resumed with another length (the cosine schedule is re-planned from
 * the step reached; nothing in the checkpoint depends on the total). */
static int same_but_steps(const char *a, const char *b) {
    char x[2][sizeof(((mn_train_state *)0)->config)];
    const char *src[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        snprintf(x[k], sizeof x[k], "%s", src[k]);
        char *p = strstr(x[k], " steps=");
        if (p) {
            char *e = p + 7;
            while (*e && *e != ' ') e++;
            memmove(p, e, strlen(e) + 1);
        }
    }
    return !strcmp(x[0], x[1]);
}

static int check_config(const mn_train_config *c, const mn_adapter_params *ap, const mn_model *m) {
    if (!c->adapter_in || !c->data_glob || (!c->out && !c->dec_out))
        return mn_error(MN_EINVAL, "adapter, data and output are needed");
    if (ap->compressor == MN_COMP_BEACON) {
        if (c->dec_out) return mn_error(MN_EUNSUPPORTED, "decoder fine-tuning over a beacon compressor is not supported");
        if (c->bptt == MN_BPTT_INCREMENTAL)
            return mn_error(MN_EUNSUPPORTED,
                            "beacon training supports --bptt full, tbptt, reservoir or unbiased, not incremental (a "
                            "beacon window reads the earlier memories, so one backward per window cannot give each "
                            "loss its own truncation)");
        for (int i = 0; i < c->n_ratios; i++) {
            int ok = c->ratios[i] == ap->ratio;
            for (int j = 0; j < ap->n_ratios; j++) ok |= c->ratios[i] == ap->ratios[j];
            if (!ok) return mn_error(MN_EINVAL, "ratio %d is not in the beacon adapter's ratio set", c->ratios[i]);
        }
    }
    if (c->segment && c->segment != ap->segment)
        return mn_error(MN_EINVAL, "--segment %d differs from the adapter's segment %d (initialise the adapter with it)",
                        c->segment, ap->segment);
    if (c->n_seg < 2 || c->n_seg > 4096) return mn_error(MN_EINVAL, "--segments must be 2..4096, not %d", c->n_seg);
    if (c->steps < 1 || c->batch < 1) return mn_error(MN_EINVAL, "--steps and --batch must be positive");
    if (!c->dec_out && c->bptt != MN_BPTT_FULL && (c->tau < 1 || c->tau >= c->n_seg))
        return mn_error(MN_EINVAL, "--tau must be 1..%d for %d segments", c->n_seg - 1, c->n_seg);
    if (!(c->lr > 0) || c->weight_decay < 0 || c->kl_w < 0) return mn_error(MN_EINVAL, "bad lr, weight decay or kl");
    if (!(c->synth >= 0 && c->synth <= 1)) return mn_error(MN_EINVAL, "the synthetic share must be in [0, 1]");
    if (c->synth_kinds >> MN_SYNTH_N_KINDS) return mn_error(MN_EINVAL, "unknown synthetic window kinds %#x", c->synth_kinds);
    if (c->n_sinks < 0 || c->n_sinks > ap->segment) return mn_error(MN_EINVAL, "bad --sinks %d", c->n_sinks);
    for (int i = 0; i < c->n_ratios; i++)
        if (c->ratios[i] < 1 || ap->segment % c->ratios[i])
            return mn_error(MN_EINVAL, "ratio %d does not divide the segment %d", c->ratios[i], ap->segment);
    if (c->n_qa > 0 && (!c->dec_out || !c->qa))
        return mn_error(MN_EINVAL, "question-answer pairs train a decoder LoRA: fine-tuning only");
    if (c->n_qa > 0 && !(c->qa_mix > 0 && c->qa_mix <= 1))
        return mn_error(MN_EINVAL, "the QA share of steps must be in (0, 1], not %g", (double)c->qa_mix);
    if (c->kl_w > 0 && (int64_t)c->n_seg * ap->segment > mn_model_n_ctx_train(m))
        return mn_error(MN_EINVAL,
                        "distillation's teacher reads the whole window: %d x %d tokens exceed the model's context %d",
                        c->n_seg, ap->segment, mn_model_n_ctx_train(m));
    return MN_OK;
}

typedef struct {
    mn_adapter *a;
    mn_adamw *opt;
    binding b;
    mn_tmodel *tm;
    mn_uio_trainer *tr;
    mn_beacon_trainer *btr;       /* beacon compressor (instead of tr) */
    mn_dataset *data;
    int32_t *ids;
    mn_threadpool *pool;
    mn_lora_file *dec;            /* fine-tuning: the decoder LoRA */
    mn_tlora_w *dec_w[4];         /* its views with gradients, per target */
    float **dec_g;
    mn_qa_trainer *qa;            /* fine-tuning on QA pairs */
} run_state;

static void release(run_state *s) {
    mn_qa_trainer_free(s->qa);
    mn_uio_trainer_free(s->tr);
    mn_beacon_trainer_free(s->btr);
    mn_tmodel_free(s->tm);
    mn_dataset_free(s->data);
    unbind(&s->b);
    mn_adamw_free(s->opt);
    mn_adapter_free(s->a);
    free(s->ids);
    mn_op_set_pool(NULL);
    mn_threadpool_free(s->pool);
    for (int i = 0; s->dec && s->dec_g && i < mn_lora_file_n_tensors(s->dec); i++) free(s->dec_g[i]);
    free(s->dec_g);
    for (int k = 0; k < 4; k++) free(s->dec_w[k]);
    mn_lora_file_free(s->dec);
}

/* The decoder LoRA as trainer views, every tensor registered for AdamW. */
static int bind_decoder(run_state *s, const mn_model *m, const mn_train_config *c, mn_tlora *out) {
    int rc = c->dec_init ? mn_lora_file_load(m, c->dec_init, &s->dec)
                         : mn_lora_file_init(m, c->dec_targets, c->dec_rank, c->dec_alpha, c->seed, &s->dec);
    if (rc) return rc;
    const mn_lora_set *set = mn_lora_file_set(s->dec);
    const mn_lora *views[4] = {set->q, set->k, set->v, set->o};
    const int L = mn_model_n_layer(m), n = mn_lora_file_n_tensors(s->dec);
    s->dec_g = calloc((size_t)n, sizeof(float *));
    if (!s->dec_g) return mn_error(MN_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) { /* tensors are in target order, per layer A then B */
        const char *name;
        int64_t ne;
        float *data;
        mn_lora_file_tensor(s->dec, i, &name, &ne, &data);
        if (!(s->dec_g[i] = calloc((size_t)ne, sizeof(float)))) return mn_error(MN_ENOMEM, "out of memory");
        if ((rc = mn_adamw_add(s->opt, name, data, s->dec_g[i], ne, 1))) return rc;
    }
    int i = 0;
    for (int k = 0; k < 4; k++) {
        if (!views[k]) continue;
        if (!(s->dec_w[k] = calloc((size_t)L, sizeof(mn_tlora_w)))) return mn_error(MN_ENOMEM, "out of memory");
        for (int l = 0; l < L; l++, i += 2)
            s->dec_w[k][l] = (mn_tlora_w){views[k][l].a, views[k][l].b, s->dec_g[i], s->dec_g[i + 1],
                                          views[k][l].rank};
    }
    *out = (mn_tlora){set->scale, s->dec_w[0], s->dec_w[1], s->dec_w[2], s->dec_w[3]};
    return MN_OK;
}

/* The chain being trained: UIO or summary memory (tr), or beacons (btr). */
static int chain_set_ratio(run_state *s, int32_t l, int32_t ratio) {
    return s->btr ? mn_beacon_trainer_set_ratio(s->btr, ratio) : mn_uio_trainer_set_m(s->tr, l / ratio);
}

static void chain_no_memory(run_state *s, int on) {
    if (s->btr) mn_beacon_trainer_no_memory(s->btr, on);
    else mn_uio_trainer_no_memory(s->tr, on);
}

static int chain_step(run_state *s, const int32_t *ids, int32_t n, mn_bptt_mode mode, int32_t tau, mn_rng *rng,
                      int grad, mn_tstep_stats *st) {
    return s->btr ? mn_beacon_trainer_step(s->btr, ids, n, mode, tau, rng, grad, st)
                  : mn_uio_trainer_step(s->tr, ids, n, mode, tau, rng, grad, st);
}

/* Mean loss over the first nv validation windows, each rank taking every
 * N-th; every rank gets the total (and takes part even after an error, so
 * the others are not left waiting). */
static double validate(run_state *s, const mn_train_config *c, int32_t l, int32_t m_default, int64_t nv) {
    double t[3] = {0, 0, 0}; /* loss, scored tokens, failures */
    chain_set_ratio(s, l, l / m_default);
    for (int64_t w = mn_dist_rank(); w < nv && !t[2]; w += mn_dist_size()) {
        mn_tstep_stats st;
        if (mn_dataset_val_window(s->data, w, c->n_seg * l, s->ids) ||
            chain_step(s, s->ids, c->n_seg, MN_BPTT_FULL, 0, NULL, 0, &st))
            t[2] = 1;
        else
            t[0] += st.loss, t[1] += (double)st.n_scored;
    }
    if (mn_dist_sum_f64(t, 3) || t[2]) return NAN;
    return t[1] > 0 ? t[0] / t[1] : NAN;
}

/* The parameters' gradients summed over the ranks, through one flat buffer:
 * one all-reduce a step. */
static int sum_gradients(run_state *s, int finetune, float *flat) {
    if (mn_dist_size() == 1) return MN_OK;
    const int n_t = finetune ? mn_lora_file_n_tensors(s->dec) : s->b.n;
    int64_t o = 0;
    for (int i = 0; i < n_t; i++) {
        const char *name;
        int64_t n;
        float *p, *mm, *vv;
        mn_adamw_tensor(s->opt, i, &name, &n, &p, &mm, &vv);
        memcpy(flat + o, finetune ? s->dec_g[i] : s->b.grads[i], sizeof(float) * (size_t)n), o += n;
    }
    int rc = mn_dist_sum_f32(flat, o);
    o = 0;
    for (int i = 0; !rc && i < n_t; i++) {
        const char *name;
        int64_t n;
        float *p, *mm, *vv;
        mn_adamw_tensor(s->opt, i, &name, &n, &p, &mm, &vv);
        memcpy(finetune ? s->dec_g[i] : s->b.grads[i], flat + o, sizeof(float) * (size_t)n), o += n;
    }
    return rc;
}

/* Whether step s (0-based) trains on QA pairs: a share `mix` of the steps,
 * spread evenly. */
static int qa_turn(int64_t s, float mix) { return floor((double)(s + 1) * mix) > floor((double)s * mix); }

#define QA_EVAL_MAX 64

/* Mean answer-token CE over the first QA_EVAL_MAX pairs, no gradient. */
static double validate_qa(run_state *s, const mn_train_config *c, const mn_tlora *dec) {
    double loss = 0;
    int64_t n = 0;
    for (int32_t i = 0; i < c->n_qa && i < QA_EVAL_MAX; i++) {
        double l = 0;
        int64_t k = 0;
        if (mn_qa_trainer_step(s->qa, &c->qa[i], dec, 0, 0, &l, &k)) return NAN;
        loss += l, n += k;
    }
    return n ? loss / (double)n : NAN;
}

int mn_train_uses_bf16(const mn_train_config *cfg) {
    if (cfg->f32 > 0) return 0;
    if (cfg->f32 < 0) return mn_bf16_supported();
    return mn_op_bf16_faster();
}

int mn_train_run(const mn_model *m, const mn_train_config *cfg, mn_train_cb cb, void *ud) {
    mn_train_config c = *cfg;
    run_state s = {0};
    float *flat = NULL; /* every gradient, for the all-reduce across ranks */
    const int rank = mn_dist_rank(), n_ranks = mn_dist_size();
    if (c.batch < n_ranks)
        return mn_error(MN_EINVAL, "--batch %d (windows per step, over all ranks) is less than the %d ranks", c.batch,
                        n_ranks);
    if (c.dec_out && c.resume)
        return mn_error(MN_EUNSUPPORTED, "fine-tuning a decoder LoRA does not checkpoint or resume yet");
    int rc = mn_adapter_load(m, c.resume ? c.resume : c.adapter_in, &s.a);
    if (rc) return mn_error_prefix(rc, c.resume ? c.resume : c.adapter_in);
    const mn_adapter_params ap = *mn_adapter_config(s.a);
    if ((rc = check_config(&c, &ap, m))) goto done;
    const int32_t l = ap.segment;
    if (c.n_ratios == 0) c.n_ratios = 1, c.ratios[0] = ap.ratio;
    int32_t min_ratio = ap.ratio; /* validation runs at the adapter's own ratio */
    for (int i = 0; i < c.n_ratios; i++) min_ratio = c.ratios[i] < min_ratio ? c.ratios[i] : min_ratio;
    const int nth = c.n_threads > 0 ? c.n_threads : mn_cpu_count();
    /* our pool splits every GEMM and loop; BLAS runs single-threaded inside */
    openblas_set_num_threads(1);
    if ((rc = mn_threadpool_create(nth, &s.pool))) goto done;
    mn_op_set_pool(s.pool);

    mn_adamw_params op = mn_adamw_default_params();
    op.lr = c.lr, op.weight_decay = c.weight_decay, op.clip_norm = c.clip, op.warmup = c.warmup, op.total = c.steps;
    if ((rc = mn_adamw_create(&op, &s.opt))) goto done;
    const int summary = ap.compressor == MN_COMP_SUMMARY, finetune = c.dec_out != NULL;
    if (finetune) c.ckpt_every = 0;
    if ((rc = bind(s.a, mn_model_n_layer(m), summary, finetune ? NULL : s.opt, &s.b))) goto done;
    mn_tlora dec = {0};
    if (finetune && (rc = bind_decoder(&s, m, &c, &dec))) goto done;
    if (n_ranks > 1) {
        int64_t total = 0;
        for (int i = 0; i < mn_adamw_n_tensors(s.opt); i++) {
            const char *name;
            int64_t n;
            float *p, *mm, *vv;
            mn_adamw_tensor(s.opt, i, &name, &n, &p, &mm, &vv);
            total += n;
        }
        if (!(flat = malloc(sizeof(float) * (size_t)(total ? total : 1)))) {
            rc = mn_error(MN_ENOMEM, "out of memory (%lld gradients to all-reduce)", (long long)total);
            goto done;
        }
    }

    mn_train_state st = {0};
    char conf[sizeof st.config];
    config_text(&c, l, conf, sizeof conf);
    mn_rng_seed(&st.rng, c.seed); /* kept in checkpoints (their format); windows draw from step_rng */
    st.loss_ema = NAN;
    if (c.resume) {
        mn_adapter *a2 = NULL;
        if ((rc = mn_checkpoint_load(c.resume, m, &a2, s.opt, &st))) {
            mn_error_prefix(rc, c.resume);
            goto done;
        }
        mn_adapter_free(a2);
        if (!same_but_steps(st.config, conf)) {
            rc = mn_error(MN_EINVAL, "%s was written with other settings (%s), not (%s)", c.resume, st.config, conf);
            goto done;
        }
    }
    snprintf(st.config, sizeof st.config, "%s", conf);

    if ((rc = mn_tmodel_create(m, &s.tm))) goto done;
    if (c.f32 < 0 && !mn_bf16_supported()) {
        rc = mn_error(MN_EUNSUPPORTED, "bf16 products need AVX512_BF16, which this CPU lacks");
        goto done;
    }
    if (mn_train_uses_bf16(&c) && (rc = mn_tmodel_use_bf16(s.tm))) goto done;
    mn_uio_tparams tp = {.l = l, .m = l / min_ratio, .n_sinks = c.n_sinks, .recent = ap.recent, .mem_embd = s.b.mem_embd,
                         .d_mem_embd = s.b.d_mem_embd, .ce_w = 1, .kl_w = c.kl_w, .summary = summary};
    const float lscale = mn_adapter_lora_scale(s.a);
    tp.enc = (mn_tlora){lscale, s.b.enc_q, NULL, s.b.enc_v, NULL};
    tp.xfer = (mn_tlora){lscale, NULL, s.b.mem_k, s.b.mem_v, NULL};
    tp.dec = dec, tp.freeze_memory = finetune;
    if (ap.compressor == MN_COMP_BEACON) {
        /* the adapter's own layout and sinks: exactly what inference will run */
        mn_beacon_tparams bp = {.window = l, .ratio = min_ratio, .placement = ap.placement,
                                .attention = ap.attention, .attend_prev = ap.attend_prev, .sinks = ap.sinks,
                                .embd = s.b.mem_embd, .d_embd = s.b.d_mem_embd, .proj = s.b.bproj, .ce_w = 1,
                                .kl_w = c.kl_w};
        if ((rc = mn_beacon_trainer_create(s.tm, &bp, c.n_seg, &s.btr))) goto done;
    } else if ((rc = mn_uio_trainer_create(s.tm, &tp, c.n_seg, &s.tr))) goto done;
    if (c.n_qa > 0 && (rc = mn_qa_trainer_create(s.tm, c.qa, c.n_qa, mn_lora_file_rank(s.dec), &s.qa))) goto done;
    if ((rc = mn_dataset_open(m, c.data_glob, c.cache_dir, c.val_frac, &s.data))) goto done;
    const int32_t W = c.n_seg * l;
    s.ids = malloc(sizeof(int32_t) * (size_t)W);
    if (!s.ids) {
        rc = mn_error(MN_ENOMEM, "out of memory");
        goto done;
    }
    int64_t nv = mn_dataset_n_val_windows(s.data, W);
    if (nv > c.eval_windows) nv = c.eval_windows;

    char ckpt_buf[4096];
    const char *ckpt = c.ckpt;
    if (!ckpt) {
        snprintf(ckpt_buf, sizeof ckpt_buf, "%s.ckpt", c.out ? c.out : c.dec_out);
        ckpt = ckpt_buf;
    }
    const double t0 = now_s();
    const int64_t first = st.step;
    double val = NAN;
    int stop = 0;
    /* what the memory has to beat: the decoder reading no memory at all; and
     * where a fresh run starts from: the untrained adapter's loss */
    double val_nomem = NAN;
    if (c.eval_every > 0) {
        chain_no_memory(&s, 1);
        val_nomem = validate(&s, &c, l, l / ap.ratio, nv);
        chain_no_memory(&s, 0);
        if (!c.resume) val = validate(&s, &c, l, l / ap.ratio, nv);
    }
    double val_qa = c.n_qa > 0 && c.eval_every > 0 ? validate_qa(&s, &c, &dec) : NAN;
    while (st.step < c.steps && !stop) {
        mn_adamw_zero_grad(s.opt);
        mn_rng srng;
        step_rng(c.seed, st.step, -1, &srng);
        const int qa_step = c.n_qa > 0 && qa_turn(st.step, c.qa_mix);
        const int32_t ratio =
            qa_step ? 0 : c.ratios[c.n_ratios > 1 ? mn_rng_below(&srng, (uint64_t)c.n_ratios) : 0];
        if (!qa_step && (rc = chain_set_ratio(&s, l, ratio))) goto done;
        double loss = 0;
        int64_t scored = 0, flops = 0;
        /* this rank's windows of the step: every n_ranks-th of the batch */
        for (int bi = rank; qa_step && bi < c.batch; bi += n_ranks) { /* each pair's mean answer-token loss */
            mn_rng wr;
            step_rng(c.seed, st.step, bi, &wr);
            const mn_qa_example *e = &c.qa[mn_rng_below(&wr, (uint64_t)c.n_qa)];
            const int64_t f0 = mn_op_flops();
            double ql = 0;
            int64_t qn = 0;
            if ((rc = mn_qa_trainer_step(s.qa, e, &dec, 1, 1.0f / (float)(e->n_ids - e->n_prompt), &ql, &qn)))
                goto done;
            loss += ql, scored += qn, flops += mn_op_flops() - f0;
        }
        uint32_t windows = 0;
        for (int bi = rank; !qa_step && bi < c.batch; bi += n_ranks) {
            mn_rng wr;
            step_rng(c.seed, st.step, bi, &wr);
            if ((rc = mn_dataset_sample(s.data, &wr, W, s.ids))) goto done;
            uint32_t kind = 1u << MN_TRAIN_WIN_TEXT;
            if (c.synth > 0 && (double)mn_rng_below(&wr, 1000000) < 1e6 * c.synth) {
                const mn_synth_kind k = synth_draw(&c, &wr);
                if ((rc = mn_synth_window(mn_model_tokenizer(m), &wr, k, s.ids, c.n_seg, l, ap.recent, NULL)))
                    goto done;
                kind = 1u << k;
            }
            windows |= kind;
            mn_tstep_stats ss;
            if ((rc = chain_step(&s, s.ids, c.n_seg, c.bptt, c.tau, &wr, 1, &ss))) goto done;
            loss += ss.loss, scored += ss.n_scored, flops += ss.flops;
        }
        if (n_ranks > 1) { /* the step's totals: every rank's windows */
            double t[3] = {loss, (double)scored, (double)flops};
            if ((rc = sum_gradients(&s, finetune, flat)) || (rc = mn_dist_sum_f64(t, 3))) goto done;
            loss = t[0], scored = (int64_t)t[1], flops = (int64_t)t[2];
        }
        /* each window's gradient is of its mean loss: average over the batch */
        if (c.batch > 1)
            for (int i = 0; i < (finetune ? mn_lora_file_n_tensors(s.dec) : s.b.n); i++) {
                const char *name;
                int64_t n;
                float *p, *mm, *vv, *g = finetune ? s.dec_g[i] : s.b.grads[i];
                mn_adamw_tensor(s.opt, i, &name, &n, &p, &mm, &vv);
                for (int64_t e = 0; e < n; e++) g[e] /= (float)c.batch;
            }
        mn_train_progress pr = {0};
        pr.lr = mn_adamw_lr_at(s.opt, st.step);
        float gn = 0;
        if ((rc = mn_adamw_step(s.opt, &gn))) goto done;
        st.step++;
        pr.loss = loss / (double)scored;
        st.loss_ema = isnan(st.loss_ema) ? pr.loss : 0.9 * st.loss_ema + 0.1 * pr.loss;
        if (c.eval_every > 0 && (st.step % c.eval_every == 0 || st.step == c.steps))
            val = validate(&s, &c, l, l / ap.ratio, nv), val_qa = c.n_qa > 0 ? validate_qa(&s, &c, &dec) : NAN;
        if (c.ckpt_every > 0 && (st.step % c.ckpt_every == 0 || st.step == c.steps)) {
            if (rank == 0 && (rc = mn_checkpoint_save(ckpt, s.a, s.opt, &st))) goto done;
            pr.checkpointed = 1;
        }
        const double el = now_s() - t0;
        pr.step = st.step, pr.steps = c.steps, pr.ratio = ratio, pr.val_loss = val, pr.grad_norm = gn;
        pr.val_no_memory = val_nomem, pr.qa_step = qa_step, pr.val_qa = val_qa, pr.windows = windows;
        pr.tokens_per_s = (double)(st.step - first) * c.batch * W / el;
        pr.eta_s = el / (double)(st.step - first) * (double)(c.steps - st.step);
        pr.flops_per_token = (double)flops / ((double)c.batch * W);
        if (cb && cb(&pr, ud)) stop = 1;
        if (n_ranks > 1) { /* a signal reaches the ranks at different steps: stop together */
            double sv = stop;
            if ((rc = mn_dist_sum_f64(&sv, 1))) goto done;
            stop = sv > 0;
        }
    }
    if (rank == 0 && stop && c.ckpt_every > 0 && (rc = mn_checkpoint_save(ckpt, s.a, s.opt, &st))) goto done;
    if (rank == 0) rc = finetune ? mn_lora_file_save(s.dec, c.dec_out) : mn_adapter_save(s.a, c.out);
done:
    free(flat);
    release(&s);
    return rc;
}
