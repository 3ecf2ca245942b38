/* optim.h - AdamW with decoupled weight decay on fp32 master parameters.
 *
 * The optimizer does not own parameters or gradients: the caller registers
 * each tensor (param and grad buffers of n floats) once, then calls
 * mn_adamw_step after filling the grads. It owns the moment buffers m and v
 * (allocated at registration, so a step allocates nothing).
 *
 * One step, with t = steps + 1 and lr = mn_adamw_lr_at(steps):
 *   norm = sqrt(sum of g^2 over every registered grad), in double
 *   c    = clip_norm / norm if clip_norm > 0 and norm > clip_norm, else 1
 *   g    = c * grad
 *   m    = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
 *   p   -= lr * wd * p                  (decay tensors only; uses p before the update)
 *   p   -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
 * which is PyTorch's AdamW with clip_grad_norm_ (without its 1e-6 in the
 * divisor). The norm is a sum of per-block partial sums (fixed blocks of
 * MN_ADAMW_BLOCK floats) added in block order, so it is the same with any
 * number of threads; every element's update is independent, so the whole step
 * is bitwise reproducible regardless of the thread pool.
 *
 * Schedule (0-based step s):
 *   s < warmup:           lr * (s + 1) / warmup        (linear from 0; never 0 itself)
 *   warmup <= s < total:  min + (lr - min) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2
 *   s >= max(total, warmup): min                        where min = min_lr_ratio * lr
 */
#ifndef MN_TRAIN_OPTIM_H
#define MN_TRAIN_OPTIM_H

#include <stdint.h>

#include "core/threadpool.h"

#define MN_ADAMW_BLOCK 16384

typedef struct {
    float lr;           /* peak learning rate */
    float beta1, beta2, eps;
    float weight_decay; /* decoupled: p -= lr * wd * p, only for tensors added with decay=1 */
    float clip_norm;    /* global L2 norm clip over all grads; <= 0: none */
    int64_t warmup;     /* linear warmup from 0 over this many steps */
    int64_t total;      /* cosine decay from lr to min_lr_ratio*lr over steps warmup..total */
    float min_lr_ratio;
} mn_adamw_params;

/* lr 1e-4, betas 0.9 / 0.999, eps 1e-8, wd 0.01, clip 1.0, warmup 0, total 1, min ratio 0.1 */
mn_adamw_params mn_adamw_default_params(void);

typedef struct mn_adamw mn_adamw;

/* Validates p (MN_EINVAL naming the bad field: lr >= 0, betas in [0, 1), eps > 0, wd >= 0,
 * warmup >= 0, min_lr_ratio in [0, 1], all finite) and creates an empty optimizer. */
int mn_adamw_create(const mn_adamw_params *p, mn_adamw **out);
void mn_adamw_free(mn_adamw *o);
/* Optional: run steps on this pool (borrowed; NULL = the calling thread only).
 * Results are identical either way. */
void mn_adamw_set_pool(mn_adamw *o, mn_threadpool *pool);
const mn_adamw_params *mn_adamw_get_params(const mn_adamw *o);

/* Registers a parameter tensor and its gradient buffer (n floats each, owned by
 * the caller, both must outlive the optimizer). Names are unique (copied, at
 * most 127 bytes). Moments start at zero. MN_EINVAL / MN_ENOMEM. */
int mn_adamw_add(mn_adamw *o, const char *name, float *param, float *grad, int64_t n, int decay);

/* Learning rate at 0-based step (see the header comment). */
float mn_adamw_lr_at(const mn_adamw *o, int64_t step);

/* One update from the current grads (see the header comment); steps++.
 * *gnorm (optional) gets the norm before clipping. Non-finite grads ->
 * MN_ERANGE, with nothing changed (params, moments, steps). MN_EINVAL when no
 * tensor is registered. */
int mn_adamw_step(mn_adamw *o, float *gnorm);
void mn_adamw_zero_grad(mn_adamw *o);
int64_t mn_adamw_steps(const mn_adamw *o);
void mn_adamw_set_steps(mn_adamw *o, int64_t steps);

/* Introspection for checkpoints: tensor i's name, n, param and moment buffers
 * (m, v mutable so a checkpoint can restore them). Any output may be NULL.
 * MN_EINVAL for i out of range. */
int mn_adamw_n_tensors(const mn_adamw *o);
int mn_adamw_tensor(mn_adamw *o, int i, const char **name, int64_t *n, float **param, float **m, float **v);
/* Index of the tensor called name, or -1. */
int mn_adamw_find(const mn_adamw *o, const char *name);

#endif
