/* real.h - the training code's scalar type.
 *
 * Every file in src/train that does arithmetic is written once against `real`
 * and compiled twice: as float (the engine) and, with MN_REAL_F64 defined
 * (the *_f64.c wrappers), as double with every exported name suffixed _f64.
 * The double build is what the gradient tests compare against central finite
 * differences, where float rounding would swamp the truncation error.
 */
#ifndef MN_REAL_H_ONCE
#define MN_REAL_H_ONCE
#include <cblas.h>
#include <math.h>
#endif

#undef TN
#undef GEMM
#ifdef MN_REAL_F64
typedef double real;
#define TN(x) x##_f64
#define GEMM cblas_dgemm
#else
typedef float real;
#define TN(x) x
#define GEMM cblas_sgemm
#endif

/* the math functions at the type's precision (expf for float: the softmax
 * loops are bound by them) */
#undef REXP
#undef RLOG
#undef RSQRT
#undef RCOS
#undef RSIN
#ifdef MN_REAL_F64
#define REXP exp
#define RLOG log
#define RSQRT sqrt
#define RCOS cos
#define RSIN sin
#else
#define REXP expf
#define RLOG logf
#define RSQRT sqrtf
#define RCOS cosf
#define RSIN sinf
#endif
