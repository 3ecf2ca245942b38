/* ops_f64.c - the double-precision build of ops.c (see real.h). */
#define MN_REAL_F64
#include "ops.c"
