/* train.h - the training loop behind `mnemo train`: data, the memory chain's
 * gradient, AdamW, validation, checkpoints and exact resume.
 *
 * What trains is the adapter (compressor parameters); the base model stays
 * frozen. Each step samples a condensing ratio from the configured set, then
 * `batch` random windows of n_seg segments of l tokens from the training split,
 * accumulates the mean gradient, clips and applies one AdamW update. Every
 * ckpt_every steps the adapter, the optimizer moments and the RNG (which is
 * also the data position: windows are drawn from it) are written atomically,
 * so a kill -9 loses at most ckpt_every steps and --resume continues with the
 * very same windows and numbers (same thread count).
 */
#ifndef MN_TRAIN_H
#define MN_TRAIN_H

#include <stdint.h>

#include "memory/adapter.h"
#include "mnemo.h"
#include "train/memtrain.h"
#include "train/qatrain.h"

typedef struct {
    const char *adapter_in; /* initial adapter (from `adapter init` or an earlier run) */
    const char *data_glob;  /* training text files */
    const char *cache_dir;  /* tokenised-data cache */
    const char *out;        /* the trained adapter */
    const char *ckpt;       /* checkpoint file (NULL: out + ".ckpt") */
    const char *resume;     /* checkpoint to continue from, or NULL */
    int32_t segment;        /* l; 0 or the adapter's */
    int32_t n_seg;          /* segments per window */
    int32_t n_ratios;       /* 0: the adapter's ratio only */
    int32_t ratios[MN_ADAPTER_MAX_RATIOS];
    mn_bptt_mode bptt;
    int32_t tau;
    int64_t steps;
    int32_t batch;
    float lr, weight_decay, clip;
    int64_t warmup;
    float kl_w;             /* distillation weight (0: next-token CE only) */
    float synth;            /* share of training windows rewritten by synth.h; 0: plain text only */
    uint32_t synth_kinds;   /* bit (1 << mn_synth_kind) per kind drawn, uniformly, for those
                             * windows; 0: passkey and copy (uio and summary) */
    int32_t n_sinks;        /* raw leading tokens ahead of the memory, as at inference */
    int64_t ckpt_every, eval_every;
    int32_t eval_windows;
    double val_frac;
    uint64_t seed;
    int n_threads;          /* <= 0: all cores */
    int f32;                /* products with the frozen weights: > 0 f32; < 0 bf16 inputs with
                             * f32 sums (needs AVX512_BF16; tmodel.h); 0: bf16 where the CPU has
                             * it and it measures faster (mn_train_uses_bf16) */
    /* fine-tuning (LLoCO): with dec_out set, the adapter is frozen and a LoRA
     * on the decoder trains instead (no checkpoints in this mode) */
    const char *dec_out;     /* the decoder LoRA file to write */
    const char *dec_init;    /* start from this decoder LoRA, or NULL: a fresh one */
    const char *dec_targets; /* subset of "qkvo" (default "qv") */
    int32_t dec_rank;        /* default 8 */
    float dec_alpha;         /* default 16 */
    /* fine-tuning on question-answer pairs (qatrain.h; store/qaset.h reads
     * them): with n_qa > 0, a fraction qa_mix of the steps, spread evenly
     * (step s is a QA step when floor((s+1) qa_mix) > floor(s qa_mix): 0.5
     * alternates text, QA, text, ...), trains on `batch` pairs drawn at
     * random instead of text windows; 1: QA only */
    const mn_qa_example *qa; /* borrowed, n_qa of them */
    int32_t n_qa;
    float qa_mix;            /* (0, 1], default 0.5 */
} mn_train_config;

/* n_seg 4, bptt incremental, tau 2, steps 100, batch 1, lr 1e-3, wd 0.01,
 * clip 1, warmup 10, kl 0, sinks 4, ckpt and eval every 50, 4 eval windows,
 * val_frac 0.02, seed 1, cache ".cache/train". */
mn_train_config mn_train_default_config(void);

typedef struct mn_train_progress {
    int64_t step, steps;      /* steps done, total */
    int32_t ratio;            /* this step's ratio */
    double loss;              /* this step's mean loss per scored token */
    double val_loss;          /* latest validation CE per token (NAN before the first) */
    double val_no_memory;     /* validation CE with the decoder reading no memory (NAN: not run) */
    double lr, grad_norm;
    double tokens_per_s;      /* window tokens per second, this run */
    double eta_s;
    double flops_per_token;   /* counted FLOPs per window token, this step */
    int checkpointed;         /* a checkpoint was written after this step */
    int qa_step;              /* this step trained on QA pairs (loss: per answer token) */
    double val_qa;            /* mean answer-token CE over the QA pairs (the first 64), no
                               * gradient; NAN without pairs or before the first evaluation */
    uint32_t windows;         /* the kinds of this rank's windows this step: bit k for synthetic
                               * kind k (synth.h), bit MN_TRAIN_WIN_TEXT for plain text; 0 for QA */
} mn_train_progress;
#define MN_TRAIN_WIN_TEXT 31

/* Called after every step; a non-zero return stops training (after saving). */
typedef int (*mn_train_cb)(const mn_train_progress *p, void *ud);

/* Runs the whole loop; writes cfg->out at the end. 0 or MN_E* with a message
 * (bad configuration, data, adapter of another model, resume mismatch...). */
int mn_train_run(const mn_model *m, const mn_train_config *cfg, mn_train_cb cb, void *ud);
/* Whether a run with this configuration multiplies the frozen weights in bf16 (see f32). */
int mn_train_uses_bf16(const mn_train_config *cfg);

#endif
