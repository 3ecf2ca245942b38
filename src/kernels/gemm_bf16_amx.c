/* gemm_bf16_amx.c - gemm_bf16.h's products on Intel AMX tiles (built with
 * -mamx-tile -mamx-bf16; used only when mn_bf16_amx_ready() says so).
 *
 * Why: on Xeons with AMX one TDPBF16PS multiplies a 16 x 32 bf16 tile of A by
 * a 32 x 16 tile of B into 16 x 16 f32 sums, 16 times the work of an AVX-512
 * vdpbf16ps, and PyTorch's oneDNN uses it for bf16 training on the same
 * machines. The panels gemm_bf16.h packs for vdpbf16ps are already AMX's B
 * layout: a k-pair's 32 columns x 2 bf16 are 128 bytes, so 16 columns of 16
 * k-pairs are a tile with a 128-byte stride; a rounded row of A is a tile row.
 *
 * Kernel: 32 rows x one 32-column panel per step, C in four 16 x 16 tiles, two
 * A and two B tiles per 16 k-pairs, the 32 rows of A first copied into tile
 * order and then run against every panel of the call; rows past the last
 * full 32 and K2 not a multiple of 16 are left to the AVX-512 kernel (the
 * caller's split).
 *
 * Linux hands AMX state to a process only after arch_prctl(ARCH_REQ_XCOMP_PERM);
 * a VM that reports AMX in CPUID without enabling it refuses that request, and
 * mnemo then never executes a tile instruction.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gemm_bf16.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

static void configure(void) {
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64; /* C 16 x 16 f32; A 16 x 32 bf16; B 16 pairs x 16 */
    _tile_loadconfig(&cfg);
}

/* C[32 x 32] (+)= A[32 rows, K2 pairs] B[panel]; c_ld in floats. The A
 * block is in tile order (pack_rows): each 16-row tile of 16 k-pairs is 1 KB
 * contiguous, so its loads are sequential. */
static void block(const uint16_t *at, const uint16_t *bp, int32_t K2, float *c, int64_t ldc, int accumulate) {
    const int64_t cs = ldc * (int64_t)sizeof(float);
    if (accumulate) {
        _tile_loadd(0, c, cs);
        _tile_loadd(1, c + 16, cs);
        _tile_loadd(2, c + 16 * ldc, cs);
        _tile_loadd(3, c + 16 * ldc + 16, cs);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    const char *a = (const char *)at;
    for (int32_t q = 0; q < K2; q += 16, a += 2048) {
        const char *b = (const char *)(bp + (int64_t)q * 2 * MN_BF16_NR);
        _tile_loadd(4, a, 64);
        _tile_loadd(5, a + 1024, 64);
        _tile_loadd(6, b, 128);
        _tile_loadd(7, b + 64, 128);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, cs);
    _tile_stored(1, c + 16, cs);
    _tile_stored(2, c + 16 * ldc, cs);
    _tile_stored(3, c + 16 * ldc + 16, cs);
}

/* kq k-pairs of 32 rows of A (row stride 2 * K2) into tile order: for each 16
 * k-pairs, the first 16 rows' 64 bytes each, then the next 16 rows'. */
static void pack_rows(uint16_t *at, const uint16_t *a, int32_t K2, int32_t kq) {
    for (int32_t q = 0; q < kq; q += 16)
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 16; i++, at += 32) memcpy(at, a + (int64_t)(16 * h + i) * 2 * K2 + 2 * q, 64);
}

/* Row blocks outside, panels inside: the packed A block (32 rows x up to
 * AMX_KC k-pairs, at most 64 KB, on the stack) stays in L1/L2 while the
 * thread's panels stream past it in order. With panels outside and A read in
 * place (1.4-1.6x slower on 1,024 x 576 x 1,536), each tile load gathered 16
 * rows 1 KB apart: 32 concurrent streams the prefetchers do not follow. K
 * beyond AMX_KC pairs goes in chunks, each adding to C. */
#define AMX_KC 512
void mn_bf16_gemm_amx(int32_t M32, int32_t nb0, int32_t nb1, const uint16_t *a, const mn_bf16_panel *b, float *c,
                      int64_t ldc, int accumulate) {
    const int32_t K2 = b->K2;
    float tmp[32 * 32];
    _Alignas(64) uint16_t at[64 * AMX_KC];
    configure();
    for (int32_t r = 0; r < M32; r += 32)
        for (int32_t q0 = 0; q0 < K2; q0 += AMX_KC) {
            const int32_t kq = K2 - q0 < AMX_KC ? K2 - q0 : AMX_KC, acc = accumulate || q0 > 0;
            pack_rows(at, a + (int64_t)r * 2 * K2 + 2 * q0, K2, kq);
            for (int32_t nb = nb0; nb < nb1; nb++) {
                const uint16_t *bp = b->data + ((int64_t)nb * K2 + q0) * 2 * MN_BF16_NR;
                const int32_t col = nb * MN_BF16_NR, nc = b->N - col < MN_BF16_NR ? b->N - col : MN_BF16_NR;
                float *cr = c + (int64_t)r * ldc + col;
                if (nc == MN_BF16_NR) {
                    block(at, bp, kq, cr, ldc, acc);
                    continue;
                }
                /* the last panel's columns past N: through a whole tile */
                for (int i = 0; i < 32; i++) {
                    memset(tmp + i * 32, 0, sizeof(float) * 32);
                    if (acc) memcpy(tmp + i * 32, cr + (int64_t)i * ldc, sizeof(float) * (size_t)nc);
                }
                block(at, bp, kq, tmp, 32, acc);
                for (int i = 0; i < 32; i++) memcpy(cr + (int64_t)i * ldc, tmp + i * 32, sizeof(float) * (size_t)nc);
            }
        }
    _tile_release();
}

/* A 32 x 32 x 32 product through the tiles against plain sums of the same
 * bf16 values (exact here: small integers). */
static int self_test(void) {
    enum { K = 32 };
    float w[32 * K], x[32 * K], c[32 * 32];
    for (int i = 0; i < 32 * K; i++) w[i] = (float)(i % 7 - 3), x[i] = (float)(i % 5 - 2);
    mn_bf16_panel *p = mn_bf16_pack(w, K, 32, 1, K); /* B(k, n) = w[n * K + k] */
    if (!p) return 0;
    uint16_t xa[32 * K];
    for (int i = 0; i < 32 * K; i++) xa[i] = mn_f32_to_bf16(x[i]);
    mn_bf16_gemm_amx(32, 0, 1, xa, p, c, 32, 0);
    mn_bf16_panel_free(p);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 32; j++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
            if (c[i * 32 + j] != s) return 0;
        }
    return 1;
}

int mn_bf16_amx_probe(void) {
    unsigned a, b, cx, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(cx), "=d"(d) : "a"(7), "c"(0));
    if (!((d >> 24) & 1) || !((d >> 22) & 1)) return 0; /* AMX-TILE, AMX-BF16 */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) return 0;
    return self_test();
}
