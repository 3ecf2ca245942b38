/* quant.h - per-type kernels (dequantize, quantize, dot product) and the small
 * set of float kernels the forward pass needs, with run-time ISA dispatch.
 *
 * Each tensor type has one traits record. `vec_dot` multiplies a row of the
 * weight type by a row of `vec_dot_type` (the type activations are converted to
 * first, e.g. Q8_1 for Q4_1 weights, as llama.cpp does), so the inner loop is
 * integer arithmetic. The scalar table is the reference; AVX2 and AVX-512
 * tables are chosen once at start-up by mn_cpu_isa() (override with the
 * environment variable MNEMO_ISA=scalar|avx2|avx512 for tests).
 *
 * vec_dot_type per weight type (as llama.cpp): F32->F32, F16->F16, BF16->BF16,
 * Q4_0/Q5_0/Q8_0->Q8_0, Q4_1/Q5_1->Q8_1, Q4_K/Q6_K->Q8_K. Q8_1 and Q8_K are
 * activation-only (to_float/from_float, vec_dot NULL). Every type above has
 * from_float; the activation quantizers (Q8_0/Q8_1/Q8_K) reproduce llama.cpp's
 * x86 numerics bit for bit on every ISA (see quant.c). SIMD dot products
 * compute the same exact integer block sums as the scalar reference; only
 * the float summation order differs (relative ~1e-7 of sum|w*x|).
 */
#ifndef MN_QUANT_H
#define MN_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "types.h"

typedef enum { MN_ISA_SCALAR = 0, MN_ISA_AVX2 = 1, MN_ISA_AVX512 = 2 } mn_isa;

typedef struct {
    int type;
    int vec_dot_type;
    /* y[0..n) = dequantized x; n a multiple of the block size. */
    void (*to_float)(const void *x, float *y, int64_t n);
    /* quantize n floats into blocks; NULL if the type cannot be produced. */
    void (*from_float)(const float *x, void *y, int64_t n);
    /* *s = sum_i w[i]*x[i] over n elements; w of `type`, x of `vec_dot_type`. */
    void (*vec_dot)(int64_t n, float *s, const void *w, const void *x);
} mn_quant_traits;

/* Best ISA this CPU supports (honouring MNEMO_ISA), detected once. */
mn_isa mn_cpu_isa(void);
/* Best ISA the CPU and OS support, ignoring MNEMO_ISA (what tests may exercise).
 * AVX2 means AVX2+FMA+F16C; AVX512 means F/BW/VL/DQ/VNNI on top of that. */
mn_isa mn_cpu_isa_hw(void);
const char *mn_isa_name(mn_isa isa);

/* Traits for `type` at the dispatched ISA; NULL if the type has no kernels. */
const mn_quant_traits *mn_quant_get(int type);
/* Traits at a specific ISA (falls back per function to scalar where a SIMD
 * variant does not exist); NULL if the CPU lacks the ISA or type unsupported. */
const mn_quant_traits *mn_quant_get_isa(int type, mn_isa isa);

/* Y[t*ldy + r] = dot(W row r, X row t) for r in [r0, r1), t in [0, T).
 * Fast paths (AVX-512/AVX2) exist for Q4_0, Q4_1 and Q8_0 weights; other types
 * (or a traits record not returned by mn_quant_get*) loop over qt->vec_dot.
 * Safe to call from several threads at once (scratch is per thread).
 * W rows are `w_stride` bytes apart, in traits->type; X rows are `x_stride`
 * bytes apart, already converted to traits->vec_dot_type. K = row length.
 * Tiles rows x tokens so each weight block is loaded once per few tokens. */
void mn_gemm_q(const mn_quant_traits *qt, int64_t K, const void *W, size_t w_stride, int64_t r0,
               int64_t r1, const void *X, size_t x_stride, int64_t T, float *Y, int64_t ldy);

/* --- half precision --- */
float mn_fp16_to_fp32(uint16_t h);
uint16_t mn_fp32_to_fp16(float f); /* round to nearest even, like F16C */
float mn_bf16_to_fp32(uint16_t h);
uint16_t mn_fp32_to_bf16(float f); /* round to nearest even; NaN stays NaN (quiet) */

/* Float kernels used by attention (K/V cache is f16) and elementwise ops,
 * dispatched like the traits. */
typedef struct {
    float (*dot_f16_f32)(int64_t n, const uint16_t *a, const float *b);
    /* y[i] += a * x[i] */
    void (*axpy_f16)(int64_t n, float a, const uint16_t *x, float *y);
    void (*cvt_f32_f16)(int64_t n, const float *x, uint16_t *y);
    float (*dot_f32)(int64_t n, const float *a, const float *b);
    void (*axpy_f32)(int64_t n, float a, const float *x, float *y);
    /* exp (kernels/vexp_simd.h: within about 2 ulp of expf; arguments below
     * -87.3, -inf included, give 0): x[i] = exp(x[i] - shift), returning the
     * sum, accumulated in double so that it does not depend on the order to
     * float precision (zeros of masked entries, where a row ends); the sum
     * alone, the same way; y[i] = alpha exp(a[i]) + beta exp(b[i]) (b NULL: no
     * second term; y may be a) */
    double (*exp_sum)(int64_t n, float *x, float shift);
    double (*sum_exp)(int64_t n, const float *x, float shift);
    void (*exp_lincomb)(int64_t n, float *y, const float *a, float alpha, const float *b, float beta);
} mn_vec_ops;
const mn_vec_ops *mn_vec_get(void);
const mn_vec_ops *mn_vec_get_isa(mn_isa isa);

#endif
