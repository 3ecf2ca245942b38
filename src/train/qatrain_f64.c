/* qatrain_f64.c - the double-precision build of qatrain.c (see real.h). */
#define MN_REAL_F64
#include "qatrain.c"
