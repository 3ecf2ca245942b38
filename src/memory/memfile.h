/* memfile.h - memory files: the compressed memory of one document (LLoCO's
 * "cheat sheet"), saved once and answered from later without re-reading it.
 *
 * Why a custom format and not GGUF: a memory file holds one or two dense
 * blocks and a fixed set of facts, so a fixed 512-byte header is simpler to
 * validate completely than a GGUF key/value table, the payload lands at a
 * fixed, 64-byte aligned offset (mmap-able, usable in place), and one
 * checksum can cover the whole payload and another the header. Every field
 * is checked on open before anything is derived from it.
 *
 * Kinds:
 *   KV memory   per layer K and V for M memory slots: two blocks, K then V,
 *               each (n_layer, M, dim) elements, dim = n_kv_head*head_dim
 *               (exactly the layout mn_kv_append / mn_kv_read use).
 *               Keys are stored WITHOUT RoPE (flags bit 0 clear) so the
 *               slots can be placed at any positions later
 *               (mn_kv_append(..., k_has_rope = 0)). Flag MN_MEMFILE_K_ROPE
 *               marks keys stored already rotated (raw cache cells, e.g. for
 *               identity-memory tests); they must then be re-placed at the
 *               positions they were rotated for.
 *   embedding   one block of M rows of dim = n_embd elements (summary
 *               embeddings, prepended as soft tokens with mn_decode_embd).
 *               n_layer is 0.
 *
 * Raw tokens (version 2): a UIO adapter with a recent window keeps the
 *               document's first tokens (sinks, n_head) and its last segments
 *               as token ids, read raw around the memory at question time (the
 *               layout it was trained on); they follow the blocks as n_raw u32
 *               ids, the n_head leading ones first. A file without raw tokens
 *               is written as version 1, so older builds still read it.
 *
 * Exact part (version 3): the compressed segments' token ids (n_exact u32, whole
 *               segments of exact_seg tokens) and recall's representative keys
 *               (recall.h): two blocks of f16, per-layer then shared, each
 *               (n_exact / exact_seg, n_layer, exact_rep, dim), RoPE undone.
 *               They follow the raw tokens; the memory slots' keys (the K block)
 *               index the segments too. A file without one stays version 2 (or 1).
 *
 * Exact cells (version 4, flag MN_MEMFILE_EXACT_KV): after the keys, every exact
 *               token's decoder cells as read behind the memory before its
 *               segment (`--exact kv`, kvstore.h): per segment, the K rows of
 *               layers 0..L-1 (exact_seg rows each), then the V rows the same
 *               way, each row dim values in q8_0 blocks (an f16 scale and 32
 *               int8: 34 bytes per 32 values), keys without RoPE. Only with an
 *               exact part and dim divisible by 32. Version 4 always has them;
 *               a file without them is written as version 3 or lower.
 *
 * Byte layout, version 1 to 3 (all integers little-endian; the host must be
 * little-endian, as for GGUF):
 *   off size  field
 *     0    8  magic "MNEMOMEM"
 *     8    4  u32 version = 1
 *    12    4  u32 header_size = 512 (= payload offset)
 *    16    4  u32 kind: 1 = KV, 2 = embedding
 *    20    4  u32 elem_type: 0 = f32, 1 = f16 (GGUF type ids)
 *    24    4  u32 n_layer (KV: 1..MN_MEMFILE_MAX_LAYER; embedding: 0)
 *    28    4  u32 dim (1..MN_MEMFILE_MAX_DIM)
 *    32    4  u32 n_slots M (0..MN_MEMFILE_MAX_SLOTS)
 *    36    4  u32 flags (bit 0: MN_MEMFILE_K_ROPE; bit 1: MN_MEMFILE_EXACT_KV,
 *               version 4 only; other bits must be 0)
 *    40    8  u64 n_tokens: source tokens compressed (<= INT64_MAX)
 *    48    8  u64 model_hash (mn_model_hash of the base model)
 *    56    8  u64 adapter_hash (0: no adapter)
 *    64    4  f32 ratio (finite, >= 0; 0 = not recorded)
 *    68    4  u32 n_raw: raw tail tokens (0..MN_MEMFILE_MAX_RAW; version 1: 0)
 *    72    8  i64 created: unix time, seconds
 *    80    8  u64 payload_bytes = n_blocks * n_layer' * M * dim * elem size + 4 n_raw
 *               + 4 n_exact + 2 * 2 * (n_exact / exact_seg) * n_layer * exact_rep * dim
 *               + (version 4) 2 * n_exact * n_layer * dim / 32 * 34
 *               (n_blocks 2 for KV, 1 for embedding; n_layer' = 1 for embedding)
 *    88    8  u64 payload_checksum: FNV-1a 64 over the payload bytes
 *    96   64  model name, UTF-8, NUL-terminated, NUL-padded
 *   160   64  compressor name ("uio", "beacon", "summary", ...), same
 *   224  256  source/title, same (the writer truncates longer titles at a
 *               UTF-8 character boundary to 255 bytes)
 *   480    4  u32 n_head: of the raw tokens, those primed before the memory
 *               (<= n_raw; version 1: 0)
 *   484    4  u32 n_exact (version 3; before: 0)
 *   488    4  u32 exact_seg (version 3; before: 0)
 *   492    4  u32 exact_rep (version 3; before: 0)
 *   496    8  reserved, 0
 *   504    8  u64 header_checksum: FNV-1a 64 over bytes [0, 504)
 *   512    -  payload; the file ends exactly at 512 + payload_bytes
 *
 * FNV-1a 64: h = 0xcbf29ce484222325; for each byte b: h = (h ^ b) * 0x100000001b3.
 * Each step is a bijection of h, so every single-byte change is detected.
 *
 * Errors follow mnemo.h: 0 or a negative MN_E* code with mn_last_error() set.
 */
#ifndef MN_MEMFILE_H
#define MN_MEMFILE_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

#define MN_MEMFILE_VERSION 4
#define MN_MEMFILE_HEADER_SIZE 512
#define MN_MEMFILE_MAX_LAYER 4096
#define MN_MEMFILE_MAX_DIM (1 << 20)
#define MN_MEMFILE_MAX_SLOTS (1 << 24)
#define MN_MEMFILE_MAX_RAW (1 << 20)
#define MN_MEMFILE_MAX_EXACT (1 << 26) /* exact tokens: 64M */
#define MN_MEMFILE_MAX_EXSEG (1 << 16)
#define MN_MEMFILE_MAX_EXREP 64
#define MN_MEMFILE_NAME_CAP 64   /* model / compressor name, with the NUL */
#define MN_MEMFILE_TITLE_CAP 256 /* title, with the NUL */

typedef enum { MN_MEMFILE_KV = 1, MN_MEMFILE_EMBD = 2 } mn_memfile_kind;
enum { MN_MEMFILE_F32 = 0, MN_MEMFILE_F16 = 1 }; /* element types (GGUF ids) */
enum { MN_MEMFILE_K_ROPE = 1, MN_MEMFILE_EXACT_KV = 2 }; /* flags */
#define MN_MEMFILE_Q8_BLOCK 32 /* exact cells: values per q8_0 block */
#define MN_MEMFILE_Q8_BYTES 34 /* and its bytes */

typedef struct {
    mn_memfile_kind kind;
    int elem_type;         /* set by open; mn_memfile_write takes it as an argument */
    int32_t n_layer;       /* KV: layers; embedding: 0 */
    int32_t dim;           /* KV: n_kv_head*head_dim; embedding: n_embd */
    int32_t n_slots;       /* M */
    uint32_t flags;        /* MN_MEMFILE_K_ROPE */
    int64_t n_tokens;      /* source tokens compressed into the M slots */
    int32_t n_raw;         /* document tokens kept raw (version 2): */
    int32_t n_head;        /* the first n_head before the slots, the rest after */
    int32_t n_exact;       /* version 3: exact token ids of the compressed segments (0: none) */
    int32_t exact_seg;     /* their segment length */
    int32_t exact_rep;     /* representative keys per segment and layer */
    uint64_t model_hash;   /* mn_model_hash */
    uint64_t adapter_hash; /* 0: none */
    float ratio;           /* compression ratio (n_tokens / M when nominal) */
    int64_t created;       /* unix seconds; 0 on write means "now" */
    char model_name[MN_MEMFILE_NAME_CAP];
    char compressor[MN_MEMFILE_NAME_CAP];
    char title[MN_MEMFILE_TITLE_CAP];
    uint64_t checksum;     /* set by open/write: FNV-1a 64 of the payload */
} mn_memfile_info;

typedef struct mn_memfile mn_memfile;

/* Elements in one block: n_layer*M*dim for KV (per K and per V), M*dim for
 * embeddings. 0 for an invalid info. */
size_t mn_memfile_block_elems(const mn_memfile_info *info);

/* Writes a memory file atomically (temporary file in the same directory,
 * fsync, rename, fsync of the directory). KV: k and v each hold
 * mn_memfile_block_elems(info) floats in the (n_layer, M, dim) layout; embedding:
 * k holds the M*dim floats and v must be NULL. elem_type MN_MEMFILE_F16 (the
 * default choice) rounds to nearest even; a value that is not finite, or does
 * not fit in f16, is refused (MN_ERANGE, naming the element). The caller keeps
 * ownership of everything passed. info->created 0 is replaced by the current
 * time; info->checksum is ignored. Names longer than 63 bytes are MN_EINVAL. */
int mn_memfile_write(const char *path, const mn_memfile_info *info, const float *k, const float *v, int elem_type);
/* The same with info->n_raw raw token ids (non-negative) after the blocks. */
int mn_memfile_write_raw(const char *path, const mn_memfile_info *info, const float *k, const float *v,
                         const int32_t *raw, int elem_type);

/* The same with an exact part (info->n_exact > 0): exact (n_exact ids), rep and
 * rep_sh (mn_memfile_exact_key_elems floats each, written as f16); with flag
 * MN_MEMFILE_EXACT_KV also cells, the q8_0 bytes laid out as above (copied as
 * they are; NULL otherwise). */
int mn_memfile_write_exact(const char *path, const mn_memfile_info *info, const float *k, const float *v,
                           const int32_t *raw, const int32_t *exact, const float *rep, const float *rep_sh,
                           const void *cells, int elem_type);
/* Version 4: the exact cells inside the mapping (*nbytes of them), NULL without. */
const void *mn_memfile_exact_cells(const mn_memfile *mf, size_t *nbytes);
/* Elements in one block of representative keys; 0 without an exact part. */
size_t mn_memfile_exact_key_elems(const mn_memfile_info *info);
/* The exact part: ids (n_exact), rep and rep_sh (mn_memfile_exact_key_elems
 * each), any of them NULL to skip it. */
int mn_memfile_read_exact(const mn_memfile *mf, int32_t *ids, float *rep, float *rep_sh);

/* Maps `path` read-only and validates everything (magic, version, header
 * fields, sizes against the file size with overflow checks, strings, both
 * checksums) before returning. *out is NULL on failure. */
int mn_memfile_open(const char *path, mn_memfile **out);
/* The header facts of the file at path, read without mapping the payload:
 * the header is validated as mn_memfile_open does (its checksum included) and
 * the file's size checked against it; the payload's checksum is not (it is
 * when the memory is opened to be used). For listings of many files. */
int mn_memfile_read_info(const char *path, mn_memfile_info *info);
/* Same over a caller-owned buffer that must outlive the handle (tests, fuzzing). */
int mn_memfile_open_memory(const void *data, size_t size, mn_memfile **out);
/* NULL is a no-op. Unmaps the file. */
void mn_memfile_free(mn_memfile *mf);

/* The header facts; valid until mn_memfile_free. */
const mn_memfile_info *mn_memfile_get_info(const mn_memfile *mf);

/* KV: converts K and V into caller buffers of mn_memfile_block_elems floats each
 * (either may be NULL to skip it). MN_EINVAL for an embedding file. */
int mn_memfile_read_kv(const mn_memfile *mf, float *k, float *v);
/* Embedding: converts the M*dim elements into embd. MN_EINVAL for a KV file. */
int mn_memfile_read_embd(const mn_memfile *mf, float *embd);
/* The n_raw raw token ids into ids (checked to fit int32). */
int mn_memfile_read_raw(const mn_memfile *mf, int32_t *ids);
/* Raw payload inside the mapping (elem_type elements, little-endian, 64-byte
 * aligned): K block then V block for KV, then any raw token ids. */
const void *mn_memfile_payload(const mn_memfile *mf, size_t *nbytes);

/* 0 when the file was made with this model and adapter; otherwise MN_EINVAL
 * with a message naming what differs and both hashes. */
int mn_memfile_check_model(const mn_memfile *mf, uint64_t model_hash, uint64_t adapter_hash);

/* FNV-1a 64 of n bytes continuing from h (start with MN_FNV64_INIT). */
#define MN_FNV64_INIT 0xcbf29ce484222325ull
uint64_t mn_memfile_fnv1a64(uint64_t h, const void *p, size_t n);

#endif
