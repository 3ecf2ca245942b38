/* gemm_bf16.c - the portable half of gemm_bf16.h: CPU check and packing. */
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static int cpu_bf16(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1; /* CPUID.(EAX=7,ECX=1):EAX[5] AVX512_BF16 */
}
#else
static int cpu_bf16(void) { return 0; }
#endif

int mn_bf16_supported(void) {
    static int v = -1; /* races store equal values */
    int s = __atomic_load_n(&v, __ATOMIC_ACQUIRE);
    if (s < 0) {
        s = mn_cpu_isa() == MN_ISA_AVX512 && cpu_bf16();
        __atomic_store_n(&v, s, __ATOMIC_RELEASE);
    }
    return s;
}

int mn_bf16_amx_ready(void) {
    static int v = -1; /* racing first calls probe twice and agree */
    int s = __atomic_load_n(&v, __ATOMIC_ACQUIRE);
    if (s < 0) {
        const char *e = getenv("MNEMO_AMX");
        s = mn_bf16_supported() && !(e && !strcmp(e, "0")) && mn_bf16_amx_probe();
        __atomic_store_n(&v, s, __ATOMIC_RELEASE);
    }
    return s;
}

uint16_t mn_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)) return (uint16_t)(u >> 16 | 0x40); /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

mn_bf16_panel *mn_bf16_pack(const float *src, int32_t K, int32_t N, int64_t sk, int64_t sn) {
    if (K <= 0 || N <= 0) return NULL;
    mn_bf16_panel *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->K = K, p->N = N, p->K2 = (K + 1) / 2, p->NB = (N + MN_BF16_NR - 1) / MN_BF16_NR;
    const size_t n = (size_t)p->NB * p->K2 * 2 * MN_BF16_NR;
    if (!(p->data = calloc(n, sizeof(uint16_t)))) {
        free(p);
        return NULL;
    }
    for (int32_t nb = 0; nb < p->NB; nb++)
        for (int32_t q = 0; q < p->K2; q++) {
            uint16_t *g = p->data + ((size_t)nb * p->K2 + q) * 2 * MN_BF16_NR;
            for (int32_t j = 0; j < MN_BF16_NR; j++) {
                const int64_t col = (int64_t)nb * MN_BF16_NR + j;
                if (col >= N) break;
                for (int e = 0; e < 2; e++) {
                    const int64_t k = 2 * (int64_t)q + e;
                    if (k < K) g[2 * j + e] = mn_f32_to_bf16(src[k * sk + col * sn]);
                }
            }
        }
    return p;
}

void mn_bf16_panel_free(mn_bf16_panel *p) {
    if (!p) return;
    free(p->data);
    free(p);
}
