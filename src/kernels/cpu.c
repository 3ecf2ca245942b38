/* cpu.c - run-time detection of the SIMD level the kernels may use.
 *
 * AVX2 level: AVX, AVX2, FMA and F16C, with the OS saving YMM state (XCR0 bits
 * 1-2). AVX-512 level: additionally AVX512 F, BW, VL, DQ and VNNI, with the OS
 * saving opmask/ZMM state (XCR0 bits 5-7). MNEMO_ISA=scalar|avx2|avx512 lowers
 * the level (it can never raise it above what the CPU has).
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    /* xgetbv with ecx=0 (encoded directly so no -mxsave is needed). */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static mn_isa detect_hw(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return MN_ISA_SCALAR;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx || !fma || !f16c) return MN_ISA_SCALAR;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return MN_ISA_SCALAR; /* XMM + YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return MN_ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1;
    if (!avx2) return MN_ISA_SCALAR;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    const int vnni = (c >> 11) & 1;
    if (f && dq && bw && vl && vnni && (xcr0 & 0xE0) == 0xE0) return MN_ISA_AVX512;
    return MN_ISA_AVX2;
}
#else
static mn_isa detect_hw(void) { return MN_ISA_SCALAR; }
#endif

static int g_hw = -1, g_isa = -1; /* written once; races only store equal values */

mn_isa mn_cpu_isa_hw(void) {
    int v = __atomic_load_n(&g_hw, __ATOMIC_ACQUIRE);
    if (v < 0) {
        v = (int)detect_hw();
        __atomic_store_n(&g_hw, v, __ATOMIC_RELEASE);
    }
    return (mn_isa)v;
}

mn_isa mn_cpu_isa(void) {
    int v = __atomic_load_n(&g_isa, __ATOMIC_ACQUIRE);
    if (v < 0) {
        v = (int)mn_cpu_isa_hw();
        const char *e = getenv("MNEMO_ISA");
        if (e && *e) {
            int want = v;
            if (!strcmp(e, "scalar")) want = MN_ISA_SCALAR;
            else if (!strcmp(e, "avx2")) want = MN_ISA_AVX2;
            else if (!strcmp(e, "avx512")) want = MN_ISA_AVX512;
            if (want < v) v = want;
        }
        __atomic_store_n(&g_isa, v, __ATOMIC_RELEASE);
    }
    return (mn_isa)v;
}

const char *mn_isa_name(mn_isa isa) {
    switch (isa) {
    case MN_ISA_SCALAR: return "scalar";
    case MN_ISA_AVX2: return "avx2";
    case MN_ISA_AVX512: return "avx512";
    }
    return "?";
}

/* OpenBLAS (the training and compression GEMMs) picks its kernels once, when
 * it is loaded, from the CPU model number; a model newer than the Debian build
 * knows (e.g. Emerald Rapids, family 6 model 207) falls back to the SSE3
 * "Prescott" kernels (training ran 3.1x slower on them here, and the results
 * differ in the last bits from the fast kernels'). Its only switch is
 * OPENBLAS_CORETYPE, read at load time: the CLI re-executes itself with the
 * advice, a binding sets it before loading the library (a probe process asks). */
const char *mn_blas_core_advice(void) {
    static const char *const k_old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                        "Sandybridge", "Barcelona", "Bulldozer", "Piledriver"};
    const char *core = openblas_get_corename();
    int old = 0;
    for (size_t i = 0; core && i < sizeof k_old / sizeof k_old[0]; i++) old |= !strcmp(core, k_old[i]);
    const mn_isa isa = mn_cpu_isa();
    const char *want = isa == MN_ISA_AVX512 ? "SkylakeX" : isa == MN_ISA_AVX2 ? "Haswell" : NULL;
    return old ? want : NULL;
}

