/* tmodel_f64.c - the double-precision build of tmodel.c (see real.h). */
#define MN_REAL_F64
#include "tmodel.c"
