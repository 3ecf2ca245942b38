/* gemm_bf16.h - matrix products with bf16 inputs and f32 accumulation
 * (AVX512_BF16's vdpbf16ps), for the training path's products with frozen
 * weights.
 *
 * Why: training spends ~80% of its time in f32 GEMMs against the frozen base
 * weights, and vdpbf16ps does two multiply-adds per f32 lane where an f32 FMA
 * does one. Inputs are rounded to bf16 (8 significant bits) and products are
 * summed in f32: the mixed precision of GPU training. The weights are packed
 * once into panels of 32 output columns holding k-pairs side by side, the
 * layout vdpbf16ps reads; the activations are rounded per call.
 *
 * Each output element is one ordered f32 sum over k (in blocks of
 * MN_BF16_KC pairs), whichever thread computes it: results do not depend on
 * the thread count.
 */
#ifndef MN_GEMM_BF16_H
#define MN_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

#define MN_BF16_NR 32  /* output columns per panel */
#define MN_BF16_KC 256 /* k-pairs per block (the B block then fits L1/L2) */

/* B (K, N) packed: for each block of 32 columns, K2 = ceil(K/2) groups of
 * 32 x 2 bf16 (column j's k = 2p, 2p+1), zero-padded past K and N. */
typedef struct {
    int32_t K, N, K2, NB;
    uint16_t *data; /* NB * K2 * 64 */
} mn_bf16_panel;

/* 1 when the CPU has AVX512_BF16 (and mnemo's AVX-512 level is in use:
 * MNEMO_ISA below avx512 turns it off). */
int mn_bf16_supported(void);

/* Packs B(k, n) = src[k * sk + n * sn] for k < K, n < N. Returns NULL when out
 * of memory. Any CPU (scalar rounding to nearest even). */
mn_bf16_panel *mn_bf16_pack(const float *src, int32_t K, int32_t N, int64_t sk, int64_t sn);
void mn_bf16_panel_free(mn_bf16_panel *p);

/* f32 -> bf16, round to nearest even (scalar; NaN stays NaN). */
uint16_t mn_f32_to_bf16(float f);

/* Rows of A (M, K), row stride lda, rounded into dst (M, 2 * K2) with the
 * pad column zero. AVX512_BF16 only. */
void mn_bf16_round_rows(uint16_t *dst, const float *a, int32_t M, int32_t K, int64_t lda);

/* C (M, N) (+)= A B over the panel blocks [nb0, nb1), A already rounded by
 * mn_bf16_round_rows (row stride 2 * K2). accumulate: add to C, else
 * overwrite. AVX512_BF16 only. */
void mn_bf16_gemm(int32_t M, int32_t nb0, int32_t nb1, const uint16_t *a, const mn_bf16_panel *b, float *c,
                  int64_t ldc, int accumulate);

/* 1 when AMX tiles (AMX-TILE + AMX-BF16) are usable here: the CPU reports
 * them, the kernel grants this process their state, and a small product
 * through them is exact; then mn_bf16_gemm runs its whole 32-row blocks on
 * them. Needs mn_bf16_supported(); MNEMO_AMX=0 turns them off. */
int mn_bf16_amx_ready(void);
/* The AMX half (gemm_bf16_amx.c): M32 a multiple of 32, b->K2 of 16. */
void mn_bf16_gemm_amx(int32_t M32, int32_t nb0, int32_t nb1, const uint16_t *a, const mn_bf16_panel *b, float *c,
                      int64_t ldc, int accumulate);
int mn_bf16_amx_probe(void);

#endif
