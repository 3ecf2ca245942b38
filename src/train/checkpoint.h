/* checkpoint.h - one file holding everything needed to resume training exactly.
 *
 * A checkpoint is an adapter file (what mn_adapter_save writes, so
 * mn_adapter_load also reads it as an adapter) plus:
 *   tensors  opt.m.<name>, opt.v.<name>   [n] F32: AdamW moments of each
 *                                          optimizer tensor <name>
 *            opt.p.<name>                 [n] F32: the parameters of an optimizer
 *                                          tensor that is not an adapter tensor
 *                                          (e.g. a decoder LoRA trained alongside)
 *   keys     train.version   u32  1
 *            train.step      i64  the trainer's step count
 *            train.opt_steps i64  mn_adamw_steps (bias-correction counter)
 *            train.rng       u64[4] the trainer's mn_rng state
 *            train.loss_ema  f64
 *            train.config    string: the training configuration as text
 *            train.checksum  u64  mn_hash64 of the whole file, these 8 bytes
 *                                 read as zero: any truncation or flipped
 *                                 byte is detected, not only ones that break
 *                                 the GGUF structure
 * Saving writes "<path>.ckpt-tmp", sets its checksum, fsyncs and renames it
 * over path (then fsyncs the directory), so a kill -9 at any moment leaves
 * either the old or the new checkpoint at path (and maybe a stale
 * <path>.ckpt-tmp or <path>.ckpt-tmp.tmp.XXXXXX, which the next save replaces
 * or removes).
 */
#ifndef MN_TRAIN_CHECKPOINT_H
#define MN_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "memory/adapter.h"
#include "mnemo.h"
#include "train/optim.h"
#include "train/rng.h"

typedef struct {
    int64_t step;        /* optimizer steps done */
    mn_rng rng;          /* the trainer's RNG state after that step */
    double loss_ema;     /* for the progress line */
    char config[1024];   /* the training command's configuration as text (to refuse resuming with different settings) */
} mn_train_state;

/* Saves adapter a, the moments of every tensor registered in o, and st. An
 * optimizer tensor registered on an adapter tensor's buffer
 * (mn_adapter_tensor_data_mut) must carry that tensor's name and size
 * (MN_EINVAL otherwise); any other optimizer tensor is saved with its own
 * parameters (opt.p.<name>). Adapter tensors the optimizer does not train are
 * saved as adapter tensors without moments. MN_EIO naming the path. */
int mn_checkpoint_save(const char *path, const mn_adapter *a, mn_adamw *o, const mn_train_state *st);

/* Loads a checkpoint for model m into a fresh adapter *a, optimizer o and st.
 * o must already have exactly the tensors the checkpoint has moments for
 * (same names and sizes); they receive the saved parameters (copied into
 * their param buffers: from opt.p.<name> when the file has it, otherwise from
 * the adapter tensor of that name), moments, and o's step count.
 * Everything is validated before anything is changed: on error *a is NULL and
 * o, st are untouched. Errors (MN_EFORMAT unless said): a truncated or corrupt
 * file ("checksum mismatch" or the GGUF reader's message), a plain adapter
 * ("not a training checkpoint"), another model (MN_EINVAL, as
 * mn_adapter_load), mismatched tensors (MN_EINVAL naming the tensor). */
int mn_checkpoint_load(const char *path, const mn_model *m, mn_adapter **a, mn_adamw *o, mn_train_state *st);

#endif
