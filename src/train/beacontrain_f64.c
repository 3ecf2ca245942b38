/* beacontrain_f64.c - the double-precision build of beacontrain.c (see real.h). */
#define MN_REAL_F64
#include "beacontrain.c"
