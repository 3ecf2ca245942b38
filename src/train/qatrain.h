/* qatrain.h - LLoCO's in-domain fine-tuning on question-answer pairs: the
 * decoder (base model + the decoder LoRA being trained) reads one document's
 * compressed memory, then the question in the chat template the answering
 * path uses (store/answer.c: the user message, the assistant's turn opened),
 * then the answer; the loss is next-token cross-entropy on the answer's
 * tokens only (the prompt and the memory are context, never targets).
 *
 * The memory is a constant here (the compressor is frozen): exactly what
 * answering primes (memory/docmem.h): M cells at positions 0..M-1 ahead of
 * the prompt; KV memories give them directly (keys rotated at those
 * positions, as mn_docmem_prime appends them), embedding memories (summary)
 * as the pass's leading input rows, read by the decoder with its LoRA
 * (answering installs the LoRA before priming). Only the decoder LoRA gets
 * gradient.
 *
 * Compiled as float and double (real.h). Shapes: L layers, C n_embd, KD kv
 * dim, M memory slots, T prompt + answer tokens.
 */
#include <stdint.h>

#include "train/tmodel.h"

#ifndef MN_QA_EXAMPLE_ONCE
#define MN_QA_EXAMPLE_ONCE
/* One question-answer pair, ready for the decoder (memories are f32 in both
 * builds: they come from docmem). Borrowed pointers. */
typedef struct {
    int kv;               /* 1: K/V cells; 0: input embeddings */
    int32_t n_mem;        /* M memory slots (0: none) */
    const float *k, *v;   /* kv: (L, M, KD) keys WITHOUT RoPE, values; embeddings: k (M, C), v NULL */
    const int32_t *ids;   /* (n_ids) the prompt, then the answer (ending with the end-of-turn token) */
    int32_t n_ids;
    int32_t n_prompt;     /* ids[n_prompt .. n_ids) are scored: 1 <= n_prompt < n_ids */
} mn_qa_example;
#endif

#if (defined(MN_REAL_F64) && !defined(MN_QATRAIN_H_F64)) || (!defined(MN_REAL_F64) && !defined(MN_QATRAIN_H_F32))
#ifdef MN_REAL_F64
#define MN_QATRAIN_H_F64
#else
#define MN_QATRAIN_H_F32
#endif

typedef struct TN(mn_qa_trainer) TN(mn_qa_trainer);

/* Buffers for any of the n examples (sized for the largest), with LoRA ranks
 * up to max_rank. Checks every example's shape against the model: MN_EINVAL
 * naming the example index. */
int TN(mn_qa_trainer_create)(const TN(mn_tmodel) * tm, const mn_qa_example *ex, int32_t n, int32_t max_rank,
                             TN(mn_qa_trainer) * *out);
void TN(mn_qa_trainer_free)(TN(mn_qa_trainer) * tr);

/* One pair: *loss gets the summed answer-token CE, *n_scored the answer's
 * token count (n_ids - n_prompt). With grad, dscale times the gradient of that
 * sum accumulates into dec's da, db (dscale = 1 / n_scored: the mean). dec
 * may be NULL or empty (the base decoder; grad is then a no-op). */
int TN(mn_qa_trainer_step)(TN(mn_qa_trainer) * tr, const mn_qa_example *ex, const TN(mn_tlora) * dec, int grad,
                           real dscale, double *loss, int64_t *n_scored);

#endif
