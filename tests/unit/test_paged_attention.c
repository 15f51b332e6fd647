/* tests/unit/test_paged_attention.c — the CPU paged decode attention
 * (kernels/cpu/cpu_paged.c) against the dense CPU attention op on the same
 * keys: each sequence's keys are scattered over randomly chosen cache blocks,
 * and the dense op sees them packed in order with one query per sequence.
 * Tolerance |paged - dense| <= 1e-5 + 1e-5 |dense| (both fp32; only the
 * order of the dot products' partial sums differs). A sequence of 0 keys
 * must give exact zeros; bad block ids and lengths must be refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "kernels/cpu/cpu_paged.h"
#include "kernels/ops.h"
#include "test_util.h"

static vidi_backend *g_be;

typedef struct paged_case {
    const char *name;
    int hq, hkv, d, block_size, n_seqs;
    int lens[5];
    int spare_blocks; /* unused blocks in the cache, filled with noise */
} paged_case;

static unsigned long long g_rng = 12345;
static unsigned rand_below(unsigned n) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)((g_rng >> 33) % n);
}

static void run_paged_case(const paged_case *c) {
    const int B = c->n_seqs, D = c->d, bs = c->block_size;
    int max_blocks = 1, used = 0, total_keys = 0;
    for (int b = 0; b < B; b++) {
        const int nb = (c->lens[b] + bs - 1) / bs;
        if (nb + 1 > max_blocks) max_blocks = nb + 1; /* one spare -1 slot per row */
        used += nb;
        total_keys += c->lens[b];
    }
    const int n_blocks = used + c->spare_blocks;
    const long row = (long)c->hkv * D, cache_n = (long)n_blocks * bs * row;
    float *kc = malloc(sizeof(float) * (size_t)(cache_n + 1)), *vc = malloc(sizeof(float) * (size_t)(cache_n + 1));
    float *q = malloc(sizeof(float) * (size_t)B * c->hq * D);
    float *out = malloc(sizeof(float) * (size_t)B * c->hq * D), *ref = malloc(sizeof(float) * (size_t)B * c->hq * D);
    float *kd = malloc(sizeof(float) * (size_t)(total_keys * row + 1));
    float *vd = malloc(sizeof(float) * (size_t)(total_keys * row + 1));
    int32_t *table = malloc(sizeof(int32_t) * (size_t)B * max_blocks), *perm = malloc(sizeof(int32_t) * (size_t)n_blocks);
    int32_t cu_q[6], cu_k[6];
    test_fill_uniform(kc, cache_n, -1, 1, 900 + D);
    test_fill_uniform(vc, cache_n, -1, 1, 901 + D);
    test_fill_uniform(q, (long)B * c->hq * D, -3, 3, 902 + D);
    for (long i = 0; i < (long)B * c->hq * D; i++) out[i] = 9.0f; /* must be overwritten */

    /* a random permutation of the blocks; sequences take them in turn */
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)rand_below((unsigned)i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int next = 0;
    cu_q[0] = cu_k[0] = 0;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < max_blocks; i++) table[b * max_blocks + i] = -1;
        for (int i = 0; i < (c->lens[b] + bs - 1) / bs; i++) table[b * max_blocks + i] = perm[next++];
        /* the same keys, packed densely */
        for (int j = 0; j < c->lens[b]; j++) {
            const long src = ((long)table[b * max_blocks + j / bs] * bs + j % bs) * row;
            memcpy(kd + (cu_k[b] + j) * row, kc + src, sizeof(float) * (size_t)row);
            memcpy(vd + (cu_k[b] + j) * row, vc + src, sizeof(float) * (size_t)row);
        }
        cu_q[b + 1] = cu_q[b] + 1;
        cu_k[b + 1] = cu_k[b] + c->lens[b];
    }
    const float scale = 1.0f / sqrtf((float)D);
    int32_t lens[5];
    for (int b = 0; b < B; b++) lens[b] = c->lens[b];
    int64_t cshape[4] = {n_blocks, bs, c->hkv, D};
    vidi_tensor qt = vidi_tensor_3d(VIDI_DTYPE_F32, q, B, c->hq, D);
    vidi_tensor ot = vidi_tensor_3d(VIDI_DTYPE_F32, out, B, c->hq, D);
    vidi_tensor rt = vidi_tensor_3d(VIDI_DTYPE_F32, ref, B, c->hq, D);
    vidi_tensor kct = vidi_tensor_view(VIDI_DTYPE_F32, kc, 4, cshape), vct = vidi_tensor_view(VIDI_DTYPE_F32, vc, 4, cshape);
    vidi_tensor tt = vidi_tensor_2d(VIDI_DTYPE_I32, table, B, max_blocks), lt = vidi_tensor_1d(VIDI_DTYPE_I32, lens, B);
    vidi_tensor kdt = vidi_tensor_3d(VIDI_DTYPE_F32, kd, total_keys, c->hkv, D);
    vidi_tensor vdt = vidi_tensor_3d(VIDI_DTYPE_F32, vd, total_keys, c->hkv, D);
    vidi_attn_args args = {cu_q, cu_k, B, 1, scale};
    vidi_err err = {0};
    CHECK(g_be->ops->attention(g_be, &qt, &kdt, &vdt, &rt, &args, &err) == VIDI_OK, "%s dense: %s", c->name, err.msg);
    CHECK(vidi_cpu_attention_paged(g_be, &qt, &kct, &vct, &tt, &lt, scale, &ot, &err) == VIDI_OK, "%s paged: %s",
          c->name, err.msg);
    long worst = -1;
    double worst_excess = 0;
    for (long i = 0; i < (long)B * c->hq * D; i++) {
        const double d = fabs((double)out[i] - ref[i]) - (1e-5 + 1e-5 * fabs(ref[i]));
        if (!(d <= 0) && (worst < 0 || d > worst_excess)) worst = i, worst_excess = d;
    }
    CHECK(worst < 0, "%s: element %ld is %.9g, dense %.9g", c->name, worst, worst >= 0 ? out[worst] : 0.0,
          worst >= 0 ? ref[worst] : 0.0);
    for (int b = 0; b < B; b++)
        if (c->lens[b] == 0)
            for (long i = 0; i < (long)c->hq * D; i++)
                CHECK(out[(long)b * c->hq * D + i] == 0.0f, "%s: empty sequence %d has %g at %ld", c->name, b,
                      out[(long)b * c->hq * D + i], i);
    free(kc), free(vc), free(q), free(out), free(ref), free(kd), free(vd), free(table), free(perm);
}

static void test_paged_block16_gqa(void) {
    static const paged_case cases[] = {
        {"bs16 GQA 4:2 D16, an empty sequence", 4, 2, 16, 16, 4, {1, 17, 0, 50}, 3},
        {"bs16 GQA 28:4 D128, one long sequence", 28, 4, 128, 16, 2, {700, 5}, 2},
        {"bs16 GQA 16:1 D64, exact block multiples", 16, 1, 64, 16, 3, {16, 32, 48}, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_paged_case(&cases[i]);
}

static void test_paged_block32(void) {
    static const paged_case cases[] = {
        {"bs32 GQA 12:2 D128", 12, 2, 128, 32, 4, {100, 1, 33, 300}, 5},
        {"bs32 MHA 6:6 D80, empty first", 6, 6, 80, 32, 3, {0, 64, 65}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_paged_case(&cases[i]);
}

static void test_paged_all_empty_is_zero(void) {
    float q[2 * 2 * 16], kc[2 * 16 * 1 * 16], vc[2 * 16 * 1 * 16], out[2 * 2 * 16];
    test_fill_uniform(q, 64, -1, 1, 5);
    test_fill_uniform(kc, 512, -1, 1, 6);
    test_fill_uniform(vc, 512, -1, 1, 7);
    for (int i = 0; i < 64; i++) out[i] = 3.0f;
    int32_t table[2] = {-1, -1}, lens[2] = {0, 0};
    int64_t cs[4] = {2, 16, 1, 16};
    vidi_tensor qt = vidi_tensor_3d(VIDI_DTYPE_F32, q, 2, 2, 16), ot = vidi_tensor_3d(VIDI_DTYPE_F32, out, 2, 2, 16);
    vidi_tensor kt = vidi_tensor_view(VIDI_DTYPE_F32, kc, 4, cs), vt = vidi_tensor_view(VIDI_DTYPE_F32, vc, 4, cs);
    vidi_tensor tt = vidi_tensor_2d(VIDI_DTYPE_I32, table, 2, 1), lt = vidi_tensor_1d(VIDI_DTYPE_I32, lens, 2);
    vidi_err err = {0};
    REQUIRE(vidi_cpu_attention_paged(g_be, &qt, &kt, &vt, &tt, &lt, 0.25f, &ot, &err) == VIDI_OK, "%s", err.msg);
    for (int i = 0; i < 64; i++) CHECK(out[i] == 0.0f, "element %d is %g, want 0", i, out[i]);
}

static void test_paged_rejects_bad_table(void) {
    float q[16], kc[2 * 16 * 16], vc[2 * 16 * 16], out[16];
    test_fill_uniform(q, 16, -1, 1, 8);
    test_fill_uniform(kc, 512, -1, 1, 9);
    test_fill_uniform(vc, 512, -1, 1, 10);
    int32_t table[2] = {1, 2}, lens[1] = {20}; /* block 2 is past the 2-block cache */
    int64_t cs[4] = {2, 16, 1, 16};
    vidi_tensor qt = vidi_tensor_3d(VIDI_DTYPE_F32, q, 1, 1, 16), ot = vidi_tensor_3d(VIDI_DTYPE_F32, out, 1, 1, 16);
    vidi_tensor kt = vidi_tensor_view(VIDI_DTYPE_F32, kc, 4, cs), vt = vidi_tensor_view(VIDI_DTYPE_F32, vc, 4, cs);
    vidi_tensor tt = vidi_tensor_2d(VIDI_DTYPE_I32, table, 1, 2), lt = vidi_tensor_1d(VIDI_DTYPE_I32, lens, 1);
    vidi_err err = {0};
    CHECK(vidi_cpu_attention_paged(g_be, &qt, &kt, &vt, &tt, &lt, 0.25f, &ot, &err) == VIDI_ERR_INVALID,
          "block id 2 of a 2-block cache was accepted");
    lens[0] = 33; /* more keys than 2 blocks of 16 hold */
    table[1] = 0;
    CHECK(vidi_cpu_attention_paged(g_be, &qt, &kt, &vt, &tt, &lt, 0.25f, &ot, &err) == VIDI_ERR_INVALID,
          "seq_len 33 over a 2 x 16 table was accepted");
    lens[0] = 20;
    vidi_tensor half = vidi_tensor_3d(VIDI_DTYPE_BF16, q, 1, 1, 16);
    CHECK(vidi_cpu_attention_paged(g_be, &half, &kt, &vt, &tt, &lt, 0.25f, &ot, &err) == VIDI_ERR_INVALID,
          "a bf16 q was accepted by the f32 CPU op");
    CHECK(vidi_cpu_attention_paged(g_be, &qt, &kt, &vt, &tt, &lt, 0.25f, &ot, &err) == VIDI_OK, "valid call: %s",
          err.msg);
}

int main(int argc, char **argv) {
    vidi_err err = {0};
    g_be = vidi_backend_cpu_create(0, &err);
    if (!g_be) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    static const test_case cases[] = {
        {"paged_block16_gqa", test_paged_block16_gqa},
        {"paged_block32", test_paged_block32},
        {"paged_all_empty_is_zero", test_paged_all_empty_is_zero},
        {"paged_rejects_bad_table", test_paged_rejects_bad_table},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    g_be->ops->destroy(g_be);
    return rc;
}
