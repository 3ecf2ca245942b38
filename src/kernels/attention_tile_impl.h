/* attention_tile_impl.h - the body of the tiled attention kernel (attention.h,
 * mn_attn_tile_*), written once over a small vector vocabulary that the ISA
 * file including it defines:
 *   VW lanes; vec the register type; V_LOAD, V_STORE, V_SET1, V_ZERO, V_FMA,
 *   V_MUL, V_ADD, V_VMAX (lane-wise), V_SUB_S (vector minus scalar), V_EXP,
 *   V_MAX (lane max, scalar),
 *   V_SUM (lane sum, scalar), V_F16 (VW f16 values to f32 lanes),
 *   V_KEEP(v, bits) (lanes whose bit is clear become -inf), TILE_PAIR (1: two
 *   row-heads per pass where they see the same keys; needs 32 registers),
 * and TILE_FN, the exported function's name (attention.h), with GROUP_FN, the
 * same ISA's row kernel, for head sizes without a specialisation here.
 *
 * FlashAttention-2 on a CPU: the K and V rows of a tile of BK keys are
 * converted from f16 once, K transposed (KT[d][j]) so that the BK scores of
 * one query row are VW-wide FMAs with a broadcast query element and no
 * horizontal sums; every query row of the block (nq tokens x G heads) reuses
 * the tile from L1. Each row keeps its running maximum and sum (online
 * softmax) and accumulates P V unnormalised in its output row. A row skips
 * the tiles its causal limit or its mask hides entirely. Tiles start at
 * multiples of BK in absolute key index and each row's arithmetic is its
 * own, so a row's result does not depend on which other rows share its call
 * (a row alone, nq = 1, equals the same row inside a block, bit for bit).
 * The loops over a row's registers are unrolled by pragma: left as loops,
 * their small arrays live on the stack and every FMA waits on a store.
 */
/* The cache's row type: f16 values, or with TILE_Q8 q8_0 blocks (attention.h; ld in bytes then), each
 * row converted to floats once per tile by TILE_ROW: V_F16, or the ISA's V_Q8ROW(row, c) for lanes
 * c*VW .. c*VW + VW - 1. */
#ifdef TILE_Q8
#define TILE_KT uint8_t
#define TILE_ROW(p, c) V_Q8ROW(p, c)
#else
#define TILE_KT uint16_t
#define TILE_ROW(p, c) V_F16((p) + (c) * VW)
#endif
#define TILE_NV (BK / VW)
#define TILE_CAT2(a, b) a##b
#define TILE_CAT(a, b) TILE_CAT2(a, b)
#define TILE_BODY TILE_CAT(TILE_FN, _body)

#define TILE_VIS TILE_CAT(TILE_FN, _vis)
#define TILE_SOFT TILE_CAT(TILE_FN, _soft)
#define TILE_UNITS TILE_CAT(TILE_FN, _units)

/* Which of the tile's nb keys from j0 a row sees (bit j: key j0 + j), and how
 * many it reads (*jn); 0 when it sees none. */
static inline __attribute__((always_inline)) uint64_t TILE_VIS(int64_t lim, const uint8_t *mrow, int64_t j0, int nb,
                                                               int *jn) {
    const int64_t left = lim - j0;
    if (left <= 0) return 0;
    const int n = (int)(left < nb ? left : nb);
    uint64_t vis = n == 64 ? ~0ull : (1ull << n) - 1;
    if (mrow) {
        const uint8_t *mr = mrow + j0;
        uint64_t b = 0;
        for (int j = 0; j < n; j++) b |= (uint64_t)(mr[j] != 0) << j;
        vis &= b;
    }
    *jn = n;
    return vis;
}

/* One row-head's online-softmax step over a tile: its scores s (scaled,
 * hidden keys -inf) to exp(s - new max) in P, running max and sum updated;
 * returns the factor its accumulated output is rescaled by. */
static inline __attribute__((always_inline)) float TILE_SOFT(vec *s, uint64_t vis, float scale, float *Mr, float *Lr,
                                                             float *P) {
    /* one lane reduction each for the maximum and the sum, after lane-wise
     * maxima and sums of the tile's vectors */
    vec mv = V_KEEP(V_MUL(s[0], V_SET1(scale)), vis & ((1ull << VW) - 1));
    s[0] = mv;
    _Pragma("GCC unroll 16") for (int c = 1; c < TILE_NV; c++) {
        s[c] = V_KEEP(V_MUL(s[c], V_SET1(scale)), (vis >> (c * VW)) & ((1ull << VW) - 1));
        mv = V_VMAX(mv, s[c]);
    }
    const float mt = V_MAX(mv), mnew = mt > *Mr ? mt : *Mr;
    /* 0 on the row's first visible tile; 1 while the maximum stands */
    const float alpha = mnew == *Mr ? 1.0f : expf(*Mr - mnew);
    vec sv = V_ZERO();
    _Pragma("GCC unroll 16") for (int c = 0; c < TILE_NV; c++) {
        const vec p = V_EXP(V_SUB_S(s[c], mnew));
        sv = V_ADD(sv, p);
        V_STORE(P + c * VW, p);
    }
    const float sum = V_SUM(sv);
    *Lr = *Lr * alpha + sum;
    *Mr = mnew;
    return alpha;
}

/* n (1 or 2, a constant after inlining) consecutive row-heads from unit u0
 * (row u / G, head u % G) that see the same keys (vis, jn) through one tile:
 * scores against KT, the online-softmax step, the value pass over Vf into
 * their output rows. With n = 2 each loaded key or value vector feeds two FMA
 * chains; each unit's arithmetic is the same as alone. */
static inline __attribute__((always_inline)) void TILE_UNITS(const int n, const int D, int u0, int G, const float *q,
                                                             size_t ldq, float *out, size_t ldo, const float *KT,
                                                             const float *Vf, float *M, float *L, float *P,
                                                             uint64_t vis, int jn, float scale) {
    const int dv = D / VW;
    const float *qw[2];
    float *ow[2];
    vec s[2][TILE_NV], acc[2][256 / VW];
    _Pragma("GCC unroll 2") for (int w = 0; w < n; w++) {
        const int i = (u0 + w) / G, g = (u0 + w) % G;
        qw[w] = q + (size_t)i * ldq + (size_t)g * D;
        ow[w] = out + (size_t)i * ldo + (size_t)g * D;
        _Pragma("GCC unroll 16") for (int c = 0; c < TILE_NV; c++) s[w][c] = V_ZERO();
    }
    for (int d = 0; d < D; d++) {
        const float *kt = KT + (size_t)d * BK;
        vec b[2];
        _Pragma("GCC unroll 2") for (int w = 0; w < n; w++) b[w] = V_SET1(qw[w][d]);
        _Pragma("GCC unroll 16") for (int c = 0; c < TILE_NV; c++) {
            const vec k = V_LOAD(kt + c * VW);
            _Pragma("GCC unroll 2") for (int w = 0; w < n; w++) s[w][c] = V_FMA(b[w], k, s[w][c]);
        }
    }
    _Pragma("GCC unroll 2") for (int w = 0; w < n; w++) {
        const vec a = V_SET1(TILE_SOFT(s[w], vis, scale, M + u0 + w, L + u0 + w, P + w * BK));
        _Pragma("GCC unroll 16") for (int c = 0; c < dv; c++) acc[w][c] = V_MUL(V_LOAD(ow[w] + c * VW), a);
    }
    for (int j = 0; j < jn; j++) {
        const float *vr = Vf + (size_t)j * D;
        vec p[2];
        _Pragma("GCC unroll 2") for (int w = 0; w < n; w++) p[w] = V_SET1(P[w * BK + j]);
        _Pragma("GCC unroll 16") for (int c = 0; c < dv; c++) {
            const vec v = V_LOAD(vr + c * VW);
            _Pragma("GCC unroll 2") for (int w = 0; w < n; w++) acc[w][c] = V_FMA(p[w], v, acc[w][c]);
        }
    }
    _Pragma("GCC unroll 2") for (int w = 0; w < n; w++)
        _Pragma("GCC unroll 16") for (int c = 0; c < dv; c++) V_STORE(ow[w] + c * VW, acc[w][c]);
}

/* D is a constant in the calls below (32, 64, 80, 96, 128), so the per-row accumulators
 * (D / VW registers) are unrolled into registers instead of a stack array. */
static inline __attribute__((always_inline)) void TILE_BODY(int G, const int D, int nq, const float *q, size_t ldq, float scale, const TILE_KT *K,
                    const TILE_KT *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                    size_t ldo, float *scratch) {
    float *KT = scratch;             /* (D, BK) */
    float *Vf = KT + (size_t)D * BK; /* (BK, D) */
    float *M = Vf + (size_t)BK * D;  /* (nq * G) running maxima */
    float *L = M + (size_t)nq * G;   /* (nq * G) running sums */
    float *P = L + (size_t)nq * G;   /* (2 BK) the probabilities of one or two row-heads */
    const int dv = D / VW;
    int64_t maxlim = 0;
    for (int i = 0; i < nq; i++) {
        if (lim[i] > maxlim) maxlim = lim[i];
        for (int g = 0; g < G; g++) {
            M[i * G + g] = -INFINITY;
            L[i * G + g] = 0;
            memset(out + (size_t)i * ldo + (size_t)g * D, 0, sizeof(float) * (size_t)D);
        }
    }
    for (int64_t j0 = 0; j0 < maxlim; j0 += BK) {
        const int nb = (int)(maxlim - j0 < BK ? maxlim - j0 : BK);
        for (int j = 0; j < nb; j++) {
            const TILE_KT *k = K + (size_t)(j0 + j) * ld, *v = V + (size_t)(j0 + j) * ld;
            float row[256];
            _Pragma("GCC unroll 16") for (int c = 0; c < dv; c++) {
                V_STORE(row + c * VW, TILE_ROW(k, c));
                V_STORE(Vf + (size_t)j * D + c * VW, TILE_ROW(v, c));
            }
            for (int d = 0; d < D; d++) KT[(size_t)d * BK + j] = row[d];
        }
        for (int j = nb; j < BK; j++)
            for (int d = 0; d < D; d++) KT[(size_t)d * BK + j] = 0;
        /* Units u = i * G + g (row i, head g) in order; with TILE_PAIR two
         * consecutive units that see the same keys of the tile (two heads of a
         * row, or the last head of a row and the first of the next) go
         * together: each key or value vector loaded feeds two FMA chains, and
         * twice the independent chains hide the FMA latency that bounds one
         * unit's loops. A unit's arithmetic is the same either way. */
        int vi = -1, vjn = 0;
        uint64_t vvis = 0; /* the tile state of row vi */
        for (int u = 0; u < nq * G;) {
            const int i = u / G, g = u % G;
            if (i != vi) vi = i, vvis = TILE_VIS(lim[i], mask ? mask[i] : NULL, j0, nb, &vjn);
            if (!vvis) { /* nothing of this tile is visible to this row */
                u += G - g;
                continue;
            }
            const int jn = vjn;
            const uint64_t vis = vvis;
            int pair = g + 1 < G;
            if (TILE_PAIR && !pair && i + 1 < nq) {
                vi = i + 1, vvis = TILE_VIS(lim[i + 1], mask ? mask[i + 1] : NULL, j0, nb, &vjn);
                pair = vvis == vis && vjn == jn;
            }
            if (TILE_PAIR && pair) {
                TILE_UNITS(2, D, u, G, q, ldq, out, ldo, KT, Vf, M, L, P, vis, jn, scale);
                u += 2;
                continue;
            }
            TILE_UNITS(1, D, u, G, q, ldq, out, ldo, KT, Vf, M, L, P, vis, jn, scale);
            u += 1;
        }
    }
    for (int i = 0; i < nq; i++)
        for (int g = 0; g < G; g++) {
            const float l = L[i * G + g], inv = l > 0 ? 1.0f / l : 0.0f;
            float *o = out + (size_t)i * ldo + (size_t)g * D;
            for (int d = 0; d < D; d++) o[d] *= inv;
        }
}

/* 0 when D has no specialisation here (the caller falls back per row). */
static int TILE_CAT(TILE_FN, _fixed)(int G, int D, int nq, const float *q, size_t ldq, float scale, const TILE_KT *K,
                   const TILE_KT *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                   size_t ldo, float *scratch) {
    switch (D) {
    case 32: TILE_BODY(G, 32, nq, q, ldq, scale, K, V, ld, lim, mask, out, ldo, scratch); return 1;
    case 64: TILE_BODY(G, 64, nq, q, ldq, scale, K, V, ld, lim, mask, out, ldo, scratch); return 1;
    case 80: TILE_BODY(G, 80, nq, q, ldq, scale, K, V, ld, lim, mask, out, ldo, scratch); return 1;
    case 96: TILE_BODY(G, 96, nq, q, ldq, scale, K, V, ld, lim, mask, out, ldo, scratch); return 1;
    case 128: TILE_BODY(G, 128, nq, q, ldq, scale, K, V, ld, lim, mask, out, ldo, scratch); return 1;
    case 256: TILE_BODY(G, 256, nq, q, ldq, scale, K, V, ld, lim, mask, out, ldo, scratch); return 1;
    default: return 0;
    }
}

void TILE_FN(int G, int D, int nq, const float *q, size_t ldq, float scale, const TILE_KT *K, const TILE_KT *V,
             size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out, size_t ldo, float *scratch) {
    if (D % VW == 0 && TILE_CAT(TILE_FN, _fixed)(G, D, nq, q, ldq, scale, K, V, ld, lim, mask, out, ldo, scratch))
        return;
    /* a head size without a tiled specialisation: this ISA's kernel per row */
    for (int i = 0; i < nq; i++)
        GROUP_FN(G, D, lim[i], q + (size_t)i * ldq, scale, K, V, ld, mask ? mask[i] : NULL, out + (size_t)i * ldo,
                 scratch);
}

#undef TILE_NV
#undef TILE_BODY
#undef TILE_VIS
#undef TILE_SOFT
#undef TILE_UNITS
#undef TILE_PAIR
#undef TILE_KT
#undef TILE_ROW
#undef TILE_Q8
