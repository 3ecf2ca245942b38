/* types.c - block geometry table for GGUF tensor types. */
#include "types.h"

static const mn_type_layout k_layouts[MN_TYPE_COUNT] = {
    [MN_TYPE_F32] = {"f32", 1, 4},
    [MN_TYPE_F16] = {"f16", 1, 2},
    [MN_TYPE_Q4_0] = {"q4_0", 32, 18},
    [MN_TYPE_Q4_1] = {"q4_1", 32, 20},
    [MN_TYPE_Q5_0] = {"q5_0", 32, 22},
    [MN_TYPE_Q5_1] = {"q5_1", 32, 24},
    [MN_TYPE_Q8_0] = {"q8_0", 32, 34},
    [MN_TYPE_Q8_1] = {"q8_1", 32, 36},
    [MN_TYPE_Q2_K] = {"q2_k", 256, 84},
    [MN_TYPE_Q3_K] = {"q3_k", 256, 110},
    [MN_TYPE_Q4_K] = {"q4_k", 256, 144},
    [MN_TYPE_Q5_K] = {"q5_k", 256, 176},
    [MN_TYPE_Q6_K] = {"q6_k", 256, 210},
    [MN_TYPE_Q8_K] = {"q8_k", 256, 292},
    [MN_TYPE_BF16] = {"bf16", 1, 2},
};

const mn_type_layout *mn_type_layout_get(int type) {
    if (type < 0 || type >= MN_TYPE_COUNT || !k_layouts[type].name) return NULL;
    return &k_layouts[type];
}

size_t mn_type_row_bytes(int type, int64_t n) {
    const mn_type_layout *l = mn_type_layout_get(type);
    if (!l || n < 0 || n % l->blck) return 0;
    return (size_t)(n / l->blck) * (size_t)l->bytes;
}
