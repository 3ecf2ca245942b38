/* memtrain_f64.c - the double-precision build of memtrain.c (see real.h). */
#define MN_REAL_F64
#include "memtrain.c"
