/* adapter.h - adapter files: the trainable parameters of a context compressor
 * plus its configuration, stored as a GGUF file tied to one base model.
 *
 * Metadata (all written by mn_adapter_save, all checked by mn_adapter_load):
 *   general.architecture   "mnemo-adapter"
 *   adapter.type           "lora"           (llama.cpp's LoRA adapter keys)
 *   adapter.lora.alpha     f32               (0 for beacon: it has no LoRA)
 *   mnemo.compressor       "uio" | "beacon" | "summary"
 *   mnemo.segment          u32  l (uio, summary) or the window W (beacon)
 *   mnemo.n_mem            u32  memory tokens per segment = segment / ratio
 *   mnemo.ratio            u32  compression ratio; must divide segment
 *   mnemo.lora.rank        u32  (0 for beacon)
 *   mnemo.beacon.*         beacon only: placement ("interleave"|"append"),
 *                          attention ("segmentation"|"step-expansion"|"full-coverage"),
 *                          attend_prev (bool), sinks (u32), proj_o (bool),
 *                          ratios (u32 array: the ratio set for training mixtures;
 *                          each must divide segment)
 *   mnemo.uio.recent       u32  uio only, optional (absent: 0): raw segments the
 *                          decoder reads between the memory and the current one
 *   mnemo.base.name/hash/n_embd/n_layer   the base model (hash = mn_model_hash)
 *
 * Tensors (all F32; ne[0] is the contiguous dimension, as in GGUF):
 *   mem.embd                              [n_embd] memory/beacon token embedding
 *                                         (initialised from the EOS token's row)
 *   uio, summary - encoder LoRA on W_Q and W_V of every layer N:
 *     blk.N.attn_q.weight.lora_a          [n_embd, r]   A: r rows of n_embd
 *     blk.N.attn_q.weight.lora_b          [r, n_q]      B: n_q rows of r
 *     blk.N.attn_v.weight.lora_a/_b       [n_embd, r], [r, n_kv]
 *   uio only - transfer-head LoRA on W_K and W_V:
 *     mem.blk.N.attn_k.weight.lora_a/_b   [n_embd, r], [r, n_kv]
 *     mem.blk.N.attn_v.weight.lora_a/_b   [n_embd, r], [r, n_kv]
 *   beacon - the beacon tokens' own projections, same shapes as the base:
 *     beacon.blk.N.attn_q.weight          [n_embd, n_q]  (n_q rows of n_embd)
 *     beacon.blk.N.attn_k.weight          [n_embd, n_kv]
 *     beacon.blk.N.attn_v.weight          [n_embd, n_kv]
 *     beacon.blk.N.attn_output.weight     [n_q, n_embd]  (only with proj_o)
 *   where n_q = n_head*head_dim and n_kv = n_head_kv*head_dim of the base.
 *
 * LoRA semantics (llama.cpp's): W' x = W x + scale * B (A x), scale = alpha / r.
 * A fresh adapter has A ~ uniform(-1/sqrt(n_in), 1/sqrt(n_in)) from a PRNG
 * seeded by `seed` (reproducible on every machine) and B = 0, so it changes
 * nothing; beacon projections start as exact dequantised copies of the base
 * matrices.
 *
 * Errors follow mnemo.h: 0 or a negative MN_E* code with mn_last_error() set.
 */
#ifndef MN_ADAPTER_H
#define MN_ADAPTER_H

#include <stdint.h>

#include "mnemo.h"
#include "model/forward.h"

typedef enum { MN_COMP_UIO = 0, MN_COMP_BEACON = 1, MN_COMP_SUMMARY = 2 } mn_compressor;
typedef enum { MN_PLACE_INTERLEAVE = 0, MN_PLACE_APPEND = 1 } mn_beacon_placement;
typedef enum {
    MN_BATTN_SEGMENTATION = 0,
    MN_BATTN_STEP_EXPANSION = 1,
    MN_BATTN_FULL_COVERAGE = 2,
} mn_beacon_attention;

/* LoRA targets: the encoder's Q and V, the transfer head's K and V (UIO). */
typedef enum { MN_LORA_ENC_Q = 0, MN_LORA_ENC_V = 1, MN_LORA_MEM_K = 2, MN_LORA_MEM_V = 3 } mn_lora_target;

#define MN_ADAPTER_MAX_RATIOS 16
#define MN_ADAPTER_MAX_SEGMENT (1 << 20)
#define MN_ADAPTER_MAX_RECENT 64

typedef struct {
    mn_compressor compressor;
    int32_t segment;  /* l (uio, summary) or window W (beacon) */
    int32_t ratio;    /* memory tokens per segment = segment / ratio */
    int32_t rank;     /* LoRA rank, 1..n_embd (uio, summary); 0 for beacon */
    float alpha;      /* LoRA alpha > 0 (uio, summary); 0 for beacon */
    uint64_t seed;    /* init only: PRNG seed of the LoRA A matrices */
    /* beacon only */
    mn_beacon_placement placement;
    mn_beacon_attention attention;
    int attend_prev;  /* beacons attend to earlier windows' beacons */
    int32_t sinks;    /* leading tokens kept raw, 0..segment-1 */
    int proj_o;       /* beacons also have their own output projection */
    int32_t n_ratios; /* 1..MN_ADAPTER_MAX_RATIOS */
    /* uio only: segments the decoder keeps raw beside the memory, 0..MN_ADAPTER_MAX_RECENT
     * (the newest complete segments are compressed only when they leave this window) */
    int32_t recent;
    int32_t ratios[MN_ADAPTER_MAX_RATIOS];
} mn_adapter_params;

typedef struct mn_adapter mn_adapter;

/* Defaults per compressor:
 *   uio:     l 1024, ratio 8 (m 128), rank 128, alpha 512 (the paper's 8x config)
 *   beacon:  W 1024, ratio 8, interleave, full-coverage, attend_prev 1, sinks 0,
 *            proj_o 0, ratios {2,4,8,16,32}
 *   summary: l 1024, ratio 8, rank 8, alpha 16
 * seed 0 in all. */
mn_adapter_params mn_adapter_default_params(mn_compressor c);

/* Names <-> enums; parse returns -1 for an unknown name, name "?" for a bad value. */
const char *mn_compressor_name(mn_compressor c);
int mn_compressor_parse(const char *s);
const char *mn_beacon_placement_name(mn_beacon_placement p);
int mn_beacon_placement_parse(const char *s);
const char *mn_beacon_attention_name(mn_beacon_attention a);
int mn_beacon_attention_parse(const char *s);

/* Checks a configuration for a model with n_embd (MN_EINVAL with a message,
 * e.g. "ratio 3 does not divide segment 1024"). */
int mn_adapter_check_params(const mn_adapter_params *p, int32_t n_embd);

/* A freshly initialised adapter for model m (see the header comment). */
int mn_adapter_init(const mn_model *m, const mn_adapter_params *p, mn_adapter **out);
/* Writes the adapter atomically (temp file + rename), its tensors as f32. */
int mn_adapter_save(const mn_adapter *a, const char *path);
/* The same with f16 tensors when f16 (half the size; loading converts them to
 * f32; a value beyond f16's range is MN_ERANGE). Training checkpoints stay f32. */
int mn_adapter_save_as(const mn_adapter *a, const char *path, int f16);
/* Reads and validates an adapter for model m: architecture key, known enum
 * strings, numbers in range, ratio dividing segment, base hash/n_embd/n_layer
 * equal to m's, every expected tensor present with its exact shape and F32 or
 * F16 type, no other tensor, no truncation. Tensors are copied into the
 * adapter (as f32). */
int mn_adapter_load(const mn_model *m, const char *path, mn_adapter **out);
void mn_adapter_free(mn_adapter *a);

/* The adapter's reader (mn_adapter_set_reader in mnemo.h): a reader file
 * beside the adapter that does not load is an error, not a silent answer
 * without it. Its deltas for mn_context_set_lora, or NULL. */
const mn_lora_set *mn_adapter_reader(const mn_adapter *a);
/* "<path minus .gguf>.reader.gguf" into out; MN_ERANGE when it does not fit. */
int mn_adapter_reader_name(const char *adapter_path, char *out, size_t cap);

/* What an adapter file says about itself, without a model (for `adapter info`).
 * Metadata is validated as in mn_adapter_load; tensors are only counted. */
typedef struct {
    mn_adapter_params params;
    int32_t n_mem;
    char base_name[128];
    uint64_t base_hash;
    int32_t base_n_embd, base_n_layer;
    int64_t n_tensors, n_params; /* as stored in the file */
} mn_adapter_info;
int mn_adapter_read_info(const char *path, mn_adapter_info *info);

/* --- accessors --- */
const mn_adapter_params *mn_adapter_config(const mn_adapter *a); /* seed: as given to init, 0 after load */
int32_t mn_adapter_n_mem(const mn_adapter *a);
/* Changes the ratio the adapter runs at (uio, summary: any divisor of the
 * segment, memory tokens = segment / ratio; beacon: one of its ratio set).
 * The parameters do not depend on it: one trained adapter serves several. */
int mn_adapter_set_ratio(mn_adapter *a, int32_t ratio);
/* UIO only: the decoder keeps n complete segments raw between the memory and
 * the current one (0..MN_ADAPTER_MAX_RECENT); a layout choice at inference,
 * the trained parameters are the same. */
int mn_adapter_set_recent(mn_adapter *a, int32_t n);
const char *mn_adapter_base_name(const mn_adapter *a);
uint64_t mn_adapter_base_hash(const mn_adapter *a);
int64_t mn_adapter_n_params(const mn_adapter *a);
float mn_adapter_lora_scale(const mn_adapter *a); /* alpha / rank; 0 without LoRA */
/* The memory/beacon token embedding: n_embd floats. */
const float *mn_adapter_mem_embd(const mn_adapter *a);
/* LoRA of `which` at `layer`: A is (rank rows of n_embd), B is (n_out rows of
 * rank), n_out being the base matrix's output size. MN_ENOTFOUND when the
 * compressor has no such LoRA, MN_EINVAL for a bad layer. */
int mn_adapter_lora(const mn_adapter *a, int layer, mn_lora_target which, const float **A, const float **B,
                    int *rank);
/* Beacon projection of `layer`, which = 'q', 'k', 'v' or 'o': laid out like
 * the base matrix (n_out rows of n_in floats). NULL when absent. */
const float *mn_adapter_beacon_proj(const mn_adapter *a, int layer, char which);
/* Every tensor in file order (for tests and tools); MN_EINVAL out of range. */
int mn_adapter_n_tensors(const mn_adapter *a);
int mn_adapter_tensor_at(const mn_adapter *a, int i, const char **name, int *n_dims, int64_t ne[2],
                         const float **data);

/* --- training: the adapter's tensors are the trainer's fp32 master parameters ---
 * A training checkpoint (train/checkpoint.h) is an adapter file plus "opt.*"
 * tensors and "train.*" keys; mn_adapter_load ignores both (but still counts the
 * opt.* bytes in its truncation check), so a checkpoint also loads as an adapter.
 * Any other unexpected tensor is still refused. */
typedef struct mn_gguf_writer mn_gguf_writer;
typedef struct mn_gguf mn_gguf;
/* Tensor i's data (ne[0]*ne[1] floats), writable in place; NULL out of range. */
float *mn_adapter_tensor_data_mut(mn_adapter *a, int i);
/* Adds exactly what mn_adapter_save writes (metadata, then the tensors in
 * order) to w, so a caller can add more keys/tensors before writing. */
int mn_adapter_write_into(const mn_adapter *a, mn_gguf_writer *w);
/* mn_adapter_load on a GGUF the caller opened (and frees); messages do not
 * name the path. */
int mn_adapter_load_gguf(const mn_model *m, const mn_gguf *g, mn_adapter **out);

#endif
