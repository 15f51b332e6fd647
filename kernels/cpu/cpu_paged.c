/* kernels/cpu/cpu_paged.c — paged decode attention on the CPU: the
 * reference the CUDA paged kernel is checked against (see cpu_paged.h).
 *
 * One query per sequence reads its keys through the block table. The
 * arithmetic follows the dense cpu attention (cpu_backend.c attn_query):
 * scores q·k * scale in fp32, max, exp, the sum in double, then the values
 * weighted by p / sum, so a paged cache and the same keys laid out densely
 * give results equal to within a few fp32 ulps.
 */
#include "kernels/cpu/cpu_paged.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const op = "attention_paged";

static vidi_status check_view(const char *name, const vidi_tensor *t, vidi_dtype dt, int ndim, vidi_err *err) {
    if (!t) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s is NULL", op, name);
    if (t->dtype != dt)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s is %s, must be %s", op, name, vidi_dtype_name(t->dtype),
                            vidi_dtype_name(dt));
    if (t->ndim != ndim)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has %d dimensions, must have %d", op, name, t->ndim,
                            ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] < 0) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has a negative dimension", op, name);
    if (!t->data && vidi_tensor_numel(t) > 0)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has no data", op, name);
    return VIDI_OK;
}

static int overlaps(const vidi_tensor *a, const vidi_tensor *b) {
    const char *pa = a->data, *pb = b->data;
    size_t na = vidi_tensor_nbytes(a), nb = vidi_tensor_nbytes(b);
    return na && nb && pa < pb + nb && pb < pa + na;
}

vidi_status vidi_cpu_attention_paged(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k_cache,
                                     const vidi_tensor *v_cache, const vidi_tensor *block_table,
                                     const vidi_tensor *seq_lens, float scale, vidi_tensor *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    float *p = NULL;
    VIDI_TRY(check_view("q", q, VIDI_DTYPE_F32, 3, err));
    VIDI_TRY(check_view("k_cache", k_cache, VIDI_DTYPE_F32, 4, err));
    VIDI_TRY(check_view("v_cache", v_cache, VIDI_DTYPE_F32, 4, err));
    VIDI_TRY(check_view("block_table", block_table, VIDI_DTYPE_I32, 2, err));
    VIDI_TRY(check_view("seq_lens", seq_lens, VIDI_DTYPE_I32, 1, err));
    VIDI_TRY(check_view("out", out, VIDI_DTYPE_F32, 3, err));
    const int64_t B = q->shape[0], hq = q->shape[1], D = q->shape[2];
    const int64_t n_blocks = k_cache->shape[0], bs = k_cache->shape[1], hkv = k_cache->shape[2];
    const int64_t max_blocks = block_table->shape[1];
    for (int i = 0; i < 4; i++)
        VIDI_CHECK(k_cache->shape[i] == v_cache->shape[i], err, VIDI_ERR_INVALID,
                   "%s: k_cache and v_cache shapes differ in dimension %d", op, i);
    VIDI_CHECK(k_cache->shape[3] == D, err, VIDI_ERR_INVALID, "%s: q head dim %lld, cache head dim %lld", op,
               (long long)D, (long long)k_cache->shape[3]);
    VIDI_CHECK(out->shape[0] == B && out->shape[1] == hq && out->shape[2] == D, err, VIDI_ERR_INVALID,
               "%s: out must have q's shape [%lld, %lld, %lld]", op, (long long)B, (long long)hq, (long long)D);
    VIDI_CHECK(block_table->shape[0] == B && seq_lens->shape[0] == B, err, VIDI_ERR_INVALID,
               "%s: block_table [%lld, %lld] and seq_lens [%lld] must have %lld rows", op,
               (long long)block_table->shape[0], (long long)max_blocks, (long long)seq_lens->shape[0], (long long)B);
    VIDI_CHECK(hq > 0 && hkv > 0 && hq % hkv == 0, err, VIDI_ERR_INVALID,
               "%s: %lld query heads are not a multiple of %lld kv heads", op, (long long)hq, (long long)hkv);
    VIDI_CHECK(bs > 0, err, VIDI_ERR_INVALID, "%s: block size is 0", op);
    VIDI_CHECK(!overlaps(out, q) && !overlaps(out, k_cache) && !overlaps(out, v_cache), err, VIDI_ERR_INVALID,
               "%s: out overlaps an input", op);

    const int32_t *table = block_table->data, *lens = seq_lens->data;
    int64_t max_len = 0;
    for (int64_t b = 0; b < B; b++) {
        const int64_t len = lens[b];
        VIDI_CHECK(len >= 0 && len <= max_blocks * bs, err, VIDI_ERR_INVALID,
                   "%s: seq_lens[%lld] = %lld, must be in [0, %lld] (max_blocks * block_size)", op, (long long)b,
                   (long long)len, (long long)(max_blocks * bs));
        for (int64_t i = 0; i < (len + bs - 1) / bs; i++) {
            const int32_t id = table[b * max_blocks + i];
            VIDI_CHECK(id >= 0 && id < n_blocks, err, VIDI_ERR_INVALID,
                       "%s: block_table[%lld][%lld] = %d is not a block of the %lld-block cache", op, (long long)b,
                       (long long)i, (int)id, (long long)n_blocks);
        }
        if (len > max_len) max_len = len;
    }
    if (B == 0 || D == 0) goto fail;

    p = malloc((size_t)(max_len > 0 ? max_len : 1) * sizeof *p);
    VIDI_CHECK(p, err, VIDI_ERR_NOMEM, "%s: out of memory for %lld scores", op, (long long)max_len);
    const float *K = k_cache->data, *V = v_cache->data, *Q = q->data;
    float *O = out->data;
    const int64_t group = hq / hkv, row_stride = hkv * D, block_stride = bs * hkv * D;
    for (int64_t b = 0; b < B; b++) {
        const int64_t len = lens[b];
        const int32_t *blocks = table + b * max_blocks;
        for (int64_t h = 0; h < hq; h++) {
            const int64_t g = h / group;
            const float *qh = Q + (b * hq + h) * D;
            float *o = O + (b * hq + h) * D;
            memset(o, 0, (size_t)D * sizeof *o);
            if (len == 0) continue;
            float mx = -INFINITY;
            for (int64_t j = 0; j < len; j++) {
                const float *kr = K + blocks[j / bs] * block_stride + (j % bs) * row_stride + g * D;
                float s = 0;
                for (int64_t d = 0; d < D; d++) s += qh[d] * kr[d];
                p[j] = s * scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            double sum = 0;
            for (int64_t j = 0; j < len; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            const float inv = (float)(1.0 / sum);
            for (int64_t j = 0; j < len; j++) {
                const float *vr = V + blocks[j / bs] * block_stride + (j % bs) * row_stride + g * D;
                const float w = p[j] * inv;
                for (int64_t d = 0; d < D; d++) o[d] += w * vr[d];
            }
        }
    }
fail:
    free(p);
    return rc;
}
