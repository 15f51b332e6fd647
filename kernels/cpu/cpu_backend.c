/* kernels/cpu/cpu_backend.c — the CPU backend: the readable reference for
 * every op of kernels/ops.h and the path CI runs.
 *
 * Activations are F32. Weights may be F32, BF16 or F16 and are widened to
 * F32 before use, so every result is computed in fp32 the way PyTorch fp32
 * computes it: OpenBLAS sgemm for matmul, fp32 elementwise math with the
 * same operation order as torch's CPU kernels. Where torch reduces a row
 * with its vectorised cascade sum (rms_norm's mean of squares, softmax
 * sums), we sum in double and round once, which lands closer to torch than
 * a running fp32 sum that drifts by about sqrt(n) ulps.
 *
 * Threads: matmul uses OpenBLAS's own; elementwise ops, norms, rope,
 * attention and row gathers are split over the backend's vidi_pool.
 * Nothing is cached between calls; all scratch is allocated per call, so
 * ops may be called from several threads at once.
 */
#include "kernels/check.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pool.h"
#include "kernels/cpu/cpu_paged.h"

typedef struct cpu_ctx {
    vidi_pool *pool; /* NULL runs everything on the caller */
    int own_pool;    /* created by us (threads > 0), destroyed with the backend */
} cpu_ctx;

static vidi_pool *cpu_pool(vidi_backend *be) { return ((cpu_ctx *)be->ctx)->pool; }

/* Work per pool range: small enough to balance, large enough to amortise. */
#define CPU_GRAIN_ELEMS 16384
/* Widened weight rows handed to one sgemm call (floats): 1 MiB of scratch. */
#define CPU_MATMUL_BLOCK_FLOATS (1 << 18)
/* Queries of one (sequence, head) handled by one attention work item. */
#define CPU_ATTN_QBLOCK 16

static int64_t grain_rows(int64_t cols) {
    return cols > 0 && cols < CPU_GRAIN_ELEMS ? CPU_GRAIN_ELEMS / cols : 1;
}

/* ------------------------------------------------------------------------ */
/* Argument checks. Every message starts with the op name.                  */

#define BACKEND_ACTS VIDI_ACTS(VIDI_DTYPE_F32)

static vidi_status check_act(const char *op, const char *name, const vidi_tensor *t, vidi_err *err) {
    return vidi_check_act(op, name, t, BACKEND_ACTS, err);
}

/* A float view of a small weight vector: its data for F32, else a widened
 * copy returned in *owned for the caller to free. */
static vidi_status widen_vector(const char *op, const vidi_tensor *t, const float **out, float **owned,
                                vidi_err *err) {
    *owned = NULL;
    if (t->dtype == VIDI_DTYPE_F32) {
        *out = t->data;
        return VIDI_OK;
    }
    size_t n = (size_t)vidi_tensor_numel(t);
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f) return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: out of memory widening %zu weights", op, n);
    vidi_convert_to_f32(t->dtype, t->data, f, n);
    *out = *owned = f;
    return VIDI_OK;
}

/* ------------------------------------------------------------------------ */
/* Inner loops for attention, written with 4-lane vectors (a GCC/Clang      */
/* extension) because -O2 does not vectorise loops with a scalar tail.      */

typedef float cpu_f32x4 __attribute__((vector_size(16)));

static inline cpu_f32x4 load4(const float *p) {
    cpu_f32x4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* sum a[i] * b[i] in fp32, eight partial sums */
static inline float dot_f32(const float *a, const float *b, int64_t n) {
    cpu_f32x4 s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 += load4(a + i) * load4(b + i);
        s1 += load4(a + i + 4) * load4(b + i + 4);
    }
    s0 += s1;
    float s = (s0[0] + s0[1]) + (s0[2] + s0[3]);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y[i] += a * x[i] */
static inline void axpy_f32(int64_t n, float a, const float *x, float *y) {
    cpu_f32x4 va = {a, a, a, a};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        cpu_f32x4 v = load4(y + i) + va * load4(x + i);
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < n; i++) y[i] += a * x[i];
}

/* ------------------------------------------------------------------------ */
/* Memory: plain host memory.                                               */

static void *cpu_buf_alloc(vidi_backend *be, size_t bytes) {
    if (bytes > SIZE_MAX - 64) return NULL;
    size_t n = ((bytes ? bytes : 1) + 63) & ~(size_t)63;
    return aligned_alloc(64, n);
}

static void cpu_buf_free(vidi_backend *be, void *p) { free(p); }

static vidi_status cpu_copy_bytes(const char *op, void *dst, const void *src, size_t bytes, vidi_err *err) {
    if (bytes == 0) return VIDI_OK;
    if (!dst || !src) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: NULL pointer for %zu bytes", op, bytes);
    if (vidi_bytes_overlap(dst, bytes, src, bytes))
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: source and destination ranges overlap", op);
    memcpy(dst, src, bytes);
    return VIDI_OK;
}

static vidi_status cpu_copy_to_device(vidi_backend *be, void *dst, const void *host_src, size_t bytes,
                                      vidi_err *err) {
    return cpu_copy_bytes("copy_to_device", dst, host_src, bytes, err);
}

static vidi_status cpu_copy_to_host(vidi_backend *be, void *host_dst, const void *src, size_t bytes,
                                    vidi_err *err) {
    return cpu_copy_bytes("copy_to_host", host_dst, src, bytes, err);
}

static vidi_status cpu_copy(vidi_backend *be, void *dst, const void *src, size_t bytes, vidi_err *err) {
    return cpu_copy_bytes("copy", dst, src, bytes, err);
}

static vidi_status cpu_synchronize(vidi_backend *be, vidi_err *err) { return VIDI_OK; }

/* ------------------------------------------------------------------------ */
/* Dense algebra.                                                           */

typedef struct widen_rows_job {
    vidi_dtype dt;
    const void *src;
    float *dst;
    int64_t cols;
} widen_rows_job;

static void widen_rows_task(void *ctx, int64_t r0, int64_t r1) {
    const widen_rows_job *j = ctx;
    size_t es = vidi_dtype_size(j->dt);
    vidi_convert_to_f32(j->dt, (const char *)j->src + (size_t)(r0 * j->cols) * es, j->dst + r0 * j->cols,
                        (size_t)((r1 - r0) * j->cols));
}

/* y = x · w^T (+ bias). The bias is copied into y first and sgemm adds the
 * product with beta = 1, as torch's addmm does. F32 weights go to one
 * sgemm; BF16/F16 weights are widened a block of rows at a time into
 * scratch and each block is one sgemm into its columns of y. */
/* y = x·w^T (+ bias), or y += x·w^T with acc. */
static vidi_status cpu_matmul_impl(vidi_backend *be, const char *op, const vidi_tensor *x, const vidi_tensor *w,
                                   const vidi_tensor *bias, vidi_tensor *y, int acc, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    float *wbuf = NULL, *bias_owned = NULL;
    const float *bf = NULL;
    VIDI_TRY(vidi_check_matmul(op, BACKEND_ACTS, x, w, bias, y, err));
    const int64_t M = vidi_tensor_rows(x), K = vidi_tensor_cols(x), N = w->shape[0];

    float *yd = y->data;
    if (M > 0 && N > 0) {
        if (bias) {
            VIDI_TRY(widen_vector(op, bias, &bf, &bias_owned, err));
            for (int64_t m = 0; m < M; m++) {
                if (acc)
                    for (int64_t n = 0; n < N; n++) yd[m * N + n] += bf[n];
                else
                    memcpy(yd + m * N, bf, (size_t)N * sizeof *yd);
            }
        }
        const float beta = bias || acc ? 1.0f : 0.0f;
        if (K == 0) {
            if (!bias && !acc) memset(yd, 0, (size_t)(M * N) * sizeof *yd);
        } else if (w->dtype == VIDI_DTYPE_F32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x->data, (int)K,
                        w->data, (int)K, beta, yd, (int)N);
        } else {
            int64_t nb = CPU_MATMUL_BLOCK_FLOATS / K;
            if (nb < 16) nb = 16;
            if (nb > N) nb = N;
            wbuf = malloc((size_t)(nb * K) * sizeof *wbuf);
            VIDI_CHECK(wbuf, err, VIDI_ERR_NOMEM, "matmul: out of memory for %lld widened weight rows",
                       (long long)nb);
            size_t es = vidi_dtype_size(w->dtype);
            for (int64_t n0 = 0; n0 < N; n0 += nb) {
                int64_t rows = N - n0 < nb ? N - n0 : nb;
                widen_rows_job job = {w->dtype, (const char *)w->data + (size_t)(n0 * K) * es, wbuf, K};
                vidi_pool_for(cpu_pool(be), rows, grain_rows(K), widen_rows_task, &job);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)rows, (int)K, 1.0f, x->data,
                            (int)K, wbuf, (int)K, beta, yd + n0, (int)N);
            }
        }
    }
fail:
    free(wbuf);
    free(bias_owned);
    return rc;
}

static vidi_status cpu_matmul(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                              const vidi_tensor *bias, vidi_tensor *y, vidi_err *err) {
    return cpu_matmul_impl(be, "matmul", x, w, bias, y, 0, err);
}

static vidi_status cpu_matmul_acc(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                                  const vidi_tensor *bias, vidi_tensor *y, vidi_err *err) {
    return cpu_matmul_impl(be, "matmul_acc", x, w, bias, y, 1, err);
}

/* One job shape for every elementwise op: y = f(a, b); kind for act ops. */
typedef struct ew_job {
    const float *a, *b;
    float *y;
    vidi_act kind;
} ew_job;

static void add_task(void *ctx, int64_t i0, int64_t i1) {
    const ew_job *j = ctx;
    for (int64_t i = i0; i < i1; i++) j->y[i] = j->a[i] + j->b[i];
}

static vidi_status cpu_add(vidi_backend *be, const vidi_tensor *a, const vidi_tensor *b, vidi_tensor *y,
                           vidi_err *err) {
    const char *op = "add";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_binary(op, BACKEND_ACTS, "a", a, "b", b, y, err));
    ew_job job = {.a = a->data, .b = b->data, .y = y->data};
    vidi_pool_for(cpu_pool(be), vidi_tensor_numel(y), CPU_GRAIN_ELEMS, add_task, &job);
fail:
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Normalisation, one row per item.                                         */

typedef struct norm_job {
    const float *x;
    float *y;
    const float *w, *b; /* b may be NULL */
    int64_t cols;
    float eps;
} norm_job;

/* Qwen2RMSNorm: var = x.pow(2).mean(-1) in fp32, h = x * rsqrt(var + eps),
 * y = w * h. */
static void rms_norm_task(void *ctx, int64_t r0, int64_t r1) {
    const norm_job *j = ctx;
    const int64_t n = j->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * n;
        float *y = j->y + r * n;
        double ss = 0;
        for (int64_t c = 0; c < n; c++) {
            float sq = x[c] * x[c];
            ss += sq;
        }
        float var = (float)ss / (float)n;
        float rs = 1.0f / sqrtf(var + j->eps);
        for (int64_t c = 0; c < n; c++) y[c] = j->w[c] * (x[c] * rs);
    }
}

/* nn.LayerNorm: mean and biased variance, y = (x - mean) * rstd * w + b. */
static void layer_norm_task(void *ctx, int64_t r0, int64_t r1) {
    const norm_job *j = ctx;
    const int64_t n = j->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * n;
        float *y = j->y + r * n;
        double s = 0;
        for (int64_t c = 0; c < n; c++) s += x[c];
        const double mean_d = s / (double)n;
        double ss = 0;
        for (int64_t c = 0; c < n; c++) {
            double d = (double)x[c] - mean_d;
            ss += d * d;
        }
        const float mean = (float)mean_d;
        const float rstd = 1.0f / sqrtf((float)(ss / (double)n) + j->eps);
        for (int64_t c = 0; c < n; c++) {
            float v = (x[c] - mean) * rstd * j->w[c];
            y[c] = j->b ? v + j->b[c] : v;
        }
    }
}

/* Shared checks of rms_norm / layer_norm: x, y [.., D] f32; w (and b) [D]. */
static vidi_status cpu_rms_norm(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w, float eps,
                                vidi_tensor *y, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    float *w_owned = NULL;
    const float *wf = NULL;
    VIDI_TRY(vidi_check_norm("rms_norm", BACKEND_ACTS, x, w, NULL, eps, y, err));
    if (vidi_tensor_cols(x) > 0 && vidi_tensor_rows(x) > 0) {
        VIDI_TRY(widen_vector("rms_norm", w, &wf, &w_owned, err));
        norm_job job = {x->data, y->data, wf, NULL, vidi_tensor_cols(x), eps};
        vidi_pool_for(cpu_pool(be), vidi_tensor_rows(x), grain_rows(vidi_tensor_cols(x)), rms_norm_task, &job);
    }
fail:
    free(w_owned);
    return rc;
}

static vidi_status cpu_layer_norm(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                                  const vidi_tensor *b, float eps, vidi_tensor *y, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    float *w_owned = NULL, *b_owned = NULL;
    const float *wf = NULL, *bf = NULL;
    VIDI_TRY(vidi_check_norm("layer_norm", BACKEND_ACTS, x, w, b, eps, y, err));
    if (vidi_tensor_cols(x) > 0 && vidi_tensor_rows(x) > 0) {
        VIDI_TRY(widen_vector("layer_norm", w, &wf, &w_owned, err));
        if (b) VIDI_TRY(widen_vector("layer_norm", b, &bf, &b_owned, err));
        norm_job job = {x->data, y->data, wf, bf, vidi_tensor_cols(x), eps};
        vidi_pool_for(cpu_pool(be), vidi_tensor_rows(x), grain_rows(vidi_tensor_cols(x)), layer_norm_task, &job);
    }
fail:
    free(w_owned);
    free(b_owned);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Activations and softmax.                                                 */

/* The formulas in the operation order of torch's CPU kernels. */
static inline float act_apply(vidi_act kind, float x) {
    switch (kind) {
    case VIDI_ACT_GELU_ERF: return x * 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
    case VIDI_ACT_GELU_TANH: {
        const float beta = (float)(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = 0.044715f;
        float inner = beta * (x + kappa * x * x * x);
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    case VIDI_ACT_QUICK_GELU: return x * (1.0f / (1.0f + expf(-1.702f * x)));
    case VIDI_ACT_SILU: return x / (1.0f + expf(-x));
    }
    return x;
}

static void act_task(void *ctx, int64_t i0, int64_t i1) {
    const ew_job *j = ctx;
    for (int64_t i = i0; i < i1; i++) j->y[i] = act_apply(j->kind, j->a[i]);
}

static void act_mul_task(void *ctx, int64_t i0, int64_t i1) {
    const ew_job *j = ctx;
    for (int64_t i = i0; i < i1; i++) j->y[i] = act_apply(j->kind, j->a[i]) * j->b[i];
}

static vidi_status cpu_act(vidi_backend *be, vidi_act kind, const vidi_tensor *x, vidi_tensor *y,
                           vidi_err *err) {
    const char *op = "act";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act_kind(op, kind, err));
    VIDI_TRY(vidi_check_unary(op, BACKEND_ACTS, x, y, err));
    ew_job job = {.a = x->data, .y = y->data, .kind = kind};
    vidi_pool_for(cpu_pool(be), vidi_tensor_numel(y), CPU_GRAIN_ELEMS / 8, act_task, &job);
fail:
    return rc;
}

static vidi_status cpu_act_mul(vidi_backend *be, vidi_act kind, const vidi_tensor *gate, const vidi_tensor *up,
                               vidi_tensor *y, vidi_err *err) {
    const char *op = "act_mul";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act_kind(op, kind, err));
    VIDI_TRY(vidi_check_binary(op, BACKEND_ACTS, "gate", gate, "up", up, y, err));
    ew_job job = {.a = gate->data, .b = up->data, .y = y->data, .kind = kind};
    vidi_pool_for(cpu_pool(be), vidi_tensor_numel(y), CPU_GRAIN_ELEMS / 8, act_mul_task, &job);
fail:
    return rc;
}

/* torch's last-dimension softmax: max, exp(x - max), sum, multiply by 1/sum. */
static void softmax_task(void *ctx, int64_t r0, int64_t r1) {
    const norm_job *j = ctx;
    const int64_t n = j->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * n;
        float *y = j->y + r * n;
        float mx = -INFINITY;
        for (int64_t c = 0; c < n; c++) mx = x[c] > mx ? x[c] : mx;
        double sum = 0;
        for (int64_t c = 0; c < n; c++) {
            y[c] = expf(x[c] - mx);
            sum += y[c];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t c = 0; c < n; c++) y[c] *= inv;
    }
}

static vidi_status cpu_softmax(vidi_backend *be, const vidi_tensor *x, vidi_tensor *y, vidi_err *err) {
    const char *op = "softmax";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_unary(op, BACKEND_ACTS, x, y, err));
    if (vidi_tensor_cols(x) > 0) {
        norm_job job = {x->data, y->data, NULL, NULL, vidi_tensor_cols(x), 0.0f};
        vidi_pool_for(cpu_pool(be), vidi_tensor_rows(x), grain_rows(vidi_tensor_cols(x)) / 4 + 1, softmax_task, &job);
    }
fail:
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Rotary embedding (the general pair-table form of ops.h).                 */

typedef struct rope_job {
    float *x;
    const int32_t *pos;
    const vidi_rope_spec *spec;
    int64_t heads;
} rope_job;

static void rope_task(void *ctx, int64_t t0, int64_t t1) {
    const rope_job *j = ctx;
    const int D = j->spec->head_dim, half = D / 2, n_axes = j->spec->n_axes;
    for (int64_t t = t0; t < t1; t++) {
        float *xt = j->x + t * j->heads * D;
        const int32_t *pt = j->pos + t * n_axes;
        for (int i = 0; i < half; i++) {
            const float angle = (float)pt[j->spec->pair_axis[i]] * j->spec->pair_inv_freq[i];
            const float c = cosf(angle), s = sinf(angle);
            for (int64_t h = 0; h < j->heads; h++) {
                float *xh = xt + h * D;
                const float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
    }
}

static vidi_status cpu_rope(vidi_backend *be, vidi_tensor *x, const vidi_tensor *pos, const vidi_rope_spec *spec,
                            vidi_err *err) {
    const char *op = "rope";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(check_act(op, "x", x, err));
    VIDI_TRY(vidi_check_dtype(op, "pos", pos, VIDI_DTYPE_I32, err));
    VIDI_CHECK(spec && spec->pair_axis && spec->pair_inv_freq, err, VIDI_ERR_INVALID,
               "rope: spec and its pair tables must be given");
    VIDI_CHECK(x->ndim == 3, err, VIDI_ERR_INVALID, "rope: x %s must be [T, H, D]", vidi_shape_of(x).s);
    const int64_t T = x->shape[0];
    VIDI_CHECK(spec->head_dim > 0 && spec->head_dim % 2 == 0 && x->shape[2] == spec->head_dim, err,
               VIDI_ERR_INVALID, "rope: spec head_dim %d must be even and match x %s", spec->head_dim,
               vidi_shape_of(x).s);
    VIDI_CHECK(spec->n_axes >= 1 && spec->n_axes <= 3, err, VIDI_ERR_INVALID, "rope: n_axes %d must be 1..3",
               spec->n_axes);
    VIDI_CHECK((pos->ndim == 2 && pos->shape[0] == T && pos->shape[1] == spec->n_axes) ||
                   (pos->ndim == 1 && spec->n_axes == 1 && pos->shape[0] == T),
               err, VIDI_ERR_INVALID, "rope: pos %s must be [%lld, %d] for x %s", vidi_shape_of(pos).s, (long long)T,
               spec->n_axes, vidi_shape_of(x).s);
    for (int i = 0; i < spec->head_dim / 2; i++)
        VIDI_CHECK(spec->pair_axis[i] >= 0 && spec->pair_axis[i] < spec->n_axes, err, VIDI_ERR_INVALID,
                   "rope: pair_axis[%d] = %d is not an axis of %d", i, (int)spec->pair_axis[i], spec->n_axes);
    VIDI_TRY(vidi_check_alias(op, "x", x, "pos", pos, 0, err));
    rope_job job = {x->data, pos->data, spec, x->shape[1]};
    vidi_pool_for(cpu_pool(be), T, grain_rows(x->shape[1] * x->shape[2]) / 4 + 1, rope_task, &job);
fail:
    return rc;
}

/* qkv_rope_store: per token, the q and k heads rotated as rope_task does,
 * q into q_out, k and v into their cache rows. */
typedef struct qkv_store_job {
    const float *qkv;
    const int32_t *pos, *slots;
    const vidi_rope_spec *spec;
    float *q, *kc, *vc;
    int64_t hq, hkv;
} qkv_store_job;

static void qkv_store_task(void *ctx, int64_t t0, int64_t t1) {
    const qkv_store_job *j = ctx;
    const int D = j->spec->head_dim, half = D / 2, n_axes = j->spec->n_axes;
    const int64_t row = (j->hq + 2 * j->hkv) * D, kvd = j->hkv * D;
    for (int64_t t = t0; t < t1; t++) {
        const float *src = j->qkv + t * row;
        const int32_t *pt = j->pos + t * n_axes;
        float *qd = j->q + t * j->hq * D, *kd = j->kc + (int64_t)j->slots[t] * kvd;
        for (int64_t h = 0; h < j->hq + j->hkv; h++) {
            const float *xh = src + h * D;
            float *yh = h < j->hq ? qd + h * D : kd + (h - j->hq) * D;
            for (int i = 0; i < half; i++) {
                const float angle = (float)pt[j->spec->pair_axis[i]] * j->spec->pair_inv_freq[i];
                const float c = cosf(angle), s = sinf(angle);
                const float a = xh[i], b = xh[i + half];
                yh[i] = a * c - b * s;
                yh[i + half] = b * c + a * s;
            }
        }
        memcpy(j->vc + (int64_t)j->slots[t] * kvd, src + (j->hq + j->hkv) * D, (size_t)kvd * sizeof(float));
    }
}

static vidi_status check_row_ids(const char *op, const char *name, const vidi_tensor *ids, int64_t limit,
                                 vidi_err *err);

static vidi_status cpu_qkv_rope_store(vidi_backend *be, const vidi_tensor *qkv, const vidi_tensor *pos,
                                      const vidi_rope_spec *spec, vidi_tensor *q_out, const vidi_tensor *slots,
                                      vidi_tensor *k_cache, vidi_tensor *v_cache, vidi_err *err) {
    const char *op = "qkv_rope_store";
    vidi_status rc = VIDI_OK;
    int64_t hq = 0, hkv = 0;
    VIDI_TRY(vidi_check_qkv_rope_store(op, BACKEND_ACTS, qkv, pos, spec, q_out, slots, k_cache, v_cache, &hq, &hkv,
                                       err));
    VIDI_TRY(check_row_ids(op, "slots", slots, k_cache->shape[0], err));
    qkv_store_job job = {qkv->data, pos->data, slots->data, spec, q_out->data, k_cache->data, v_cache->data, hq, hkv};
    vidi_pool_for(cpu_pool(be), qkv->shape[0], 1, qkv_store_task, &job);
fail:
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Attention. Work items are (sequence, query head, block of queries), in   */
/* that order; item_off[s] is the first item of sequence s.                 */

typedef struct attn_job {
    const float *q, *k, *v;
    float *out;
    const int32_t *cu_q, *cu_k;
    const int64_t *item_off; /* [n_seqs + 1] */
    int n_seqs, causal;
    int64_t hq, hkv, d, max_lk;
    float scale;
    atomic_int failed;       /* a range could not get its scratch */
} attn_job;

/* One query: scores q·k * scale over its visible keys, softmax, weighted
 * sum of values. p is scratch for max_lk floats. */
static void attn_query(const attn_job *j, int s, int64_t h, int64_t i, float *p) {
    const int64_t D = j->d, lq = j->cu_q[s + 1] - j->cu_q[s], lk = j->cu_k[s + 1] - j->cu_k[s];
    const int64_t row = j->cu_q[s] + i, g = h / (j->hq / j->hkv), kstride = j->hkv * D;
    const float *q = j->q + (row * j->hq + h) * D;
    float *o = j->out + (row * j->hq + h) * D;
    int64_t n = lk;
    if (j->causal) {
        n = lk - lq + i + 1;
        if (n < 0) n = 0;
        if (n > lk) n = lk;
    }
    memset(o, 0, (size_t)D * sizeof *o);
    if (n == 0) return;
    const float *kb = j->k + (j->cu_k[s] * j->hkv + g) * D;
    const float *vb = j->v + (j->cu_k[s] * j->hkv + g) * D;
    float mx = -INFINITY;
    for (int64_t t = 0; t < n; t++) {
        p[t] = dot_f32(q, kb + t * kstride, D) * j->scale;
        mx = p[t] > mx ? p[t] : mx;
    }
    double sum = 0;
    for (int64_t t = 0; t < n; t++) {
        p[t] = expf(p[t] - mx);
        sum += p[t];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t t = 0; t < n; t++) axpy_f32(D, p[t] * inv, vb + t * kstride, o);
}

static void attn_task(void *ctx, int64_t begin, int64_t end) {
    attn_job *j = ctx;
    float *p = malloc((size_t)(j->max_lk > 0 ? j->max_lk : 1) * sizeof *p);
    if (!p) {
        atomic_store(&j->failed, 1);
        return;
    }
    /* the sequence holding item `begin`: last s with item_off[s] <= begin */
    int lo = 0, hi = j->n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (j->item_off[mid] <= begin) lo = mid;
        else hi = mid - 1;
    }
    int s = lo;
    for (int64_t it = begin; it < end; it++) {
        while (it >= j->item_off[s + 1]) s++;
        const int64_t lq = j->cu_q[s + 1] - j->cu_q[s];
        const int64_t nblk = (lq + CPU_ATTN_QBLOCK - 1) / CPU_ATTN_QBLOCK;
        const int64_t local = it - j->item_off[s], h = local / nblk, blk = local % nblk;
        const int64_t i0 = blk * CPU_ATTN_QBLOCK, i1 = i0 + CPU_ATTN_QBLOCK < lq ? i0 + CPU_ATTN_QBLOCK : lq;
        for (int64_t i = i0; i < i1; i++) attn_query(j, s, h, i, p);
    }
    free(p);
}

/* cu must start at 0, never decrease and end at total. */
static vidi_status check_offsets(const char *name, const int32_t *cu, int n, int64_t total, vidi_err *err) {
    if (cu[0] != 0) return vidi_err_set(err, VIDI_ERR_INVALID, "attention: %s[0] = %d, must be 0", name, (int)cu[0]);
    for (int s = 0; s < n; s++)
        if (cu[s + 1] < cu[s])
            return vidi_err_set(err, VIDI_ERR_INVALID, "attention: %s[%d] = %d is below %s[%d] = %d", name, s + 1,
                                (int)cu[s + 1], name, s, (int)cu[s]);
    if (cu[n] != total)
        return vidi_err_set(err, VIDI_ERR_INVALID, "attention: %s[%d] = %d but the tensor has %lld rows", name, n,
                            (int)cu[n], (long long)total);
    return VIDI_OK;
}

/* Runs the checked attention: item offsets, then the items on the pool. */
static vidi_status attn_run(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k, const vidi_tensor *v,
                            vidi_tensor *out, const vidi_attn_args *args, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    const int n_seqs = args->n_seqs;
    int64_t *item_off = malloc((size_t)(n_seqs + 1) * sizeof *item_off);
    VIDI_CHECK(item_off, err, VIDI_ERR_NOMEM, "attention: out of memory for %d sequences", n_seqs);
    const int64_t hq = q->shape[1];
    int64_t max_lk = 0;
    item_off[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        int64_t lq = args->cu_q[s + 1] - args->cu_q[s], lk = args->cu_k[s + 1] - args->cu_k[s];
        item_off[s + 1] = item_off[s] + hq * ((lq + CPU_ATTN_QBLOCK - 1) / CPU_ATTN_QBLOCK);
        if (lk > max_lk) max_lk = lk;
    }
    attn_job job = {.q = q->data, .k = k->data, .v = v->data, .out = out->data, .cu_q = args->cu_q,
                    .cu_k = args->cu_k, .item_off = item_off, .n_seqs = n_seqs, .causal = args->causal,
                    .hq = hq, .hkv = k->shape[1], .d = q->shape[2], .max_lk = max_lk, .scale = args->scale};
    atomic_init(&job.failed, 0);
    vidi_pool_for(cpu_pool(be), item_off[n_seqs], 1, attn_task, &job);
    VIDI_CHECK(!atomic_load(&job.failed), err, VIDI_ERR_NOMEM, "attention: out of memory for %lld scores",
               (long long)max_lk);
fail:
    free(item_off);
    return rc;
}

static vidi_status cpu_attention(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                 const vidi_tensor *v, vidi_tensor *out, const vidi_attn_args *args,
                                 vidi_err *err) {
    const char *op = "attention";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(check_act(op, "q", q, err));
    VIDI_TRY(check_act(op, "k", k, err));
    VIDI_TRY(check_act(op, "v", v, err));
    VIDI_TRY(check_act(op, "out", out, err));
    VIDI_CHECK(args && args->cu_q && args->cu_k && args->n_seqs >= 0, err, VIDI_ERR_INVALID,
               "attention: args with cu_q, cu_k and n_seqs >= 0 must be given");
    VIDI_CHECK(q->ndim == 3 && k->ndim == 3, err, VIDI_ERR_INVALID,
               "attention: q %s and k %s must be [T, H, D]", vidi_shape_of(q).s, vidi_shape_of(k).s);
    VIDI_CHECK(vidi_same_shape(k, v), err, VIDI_ERR_INVALID, "attention: k %s and v %s differ", vidi_shape_of(k).s,
               vidi_shape_of(v).s);
    VIDI_CHECK(vidi_same_shape(q, out), err, VIDI_ERR_INVALID, "attention: q %s and out %s differ", vidi_shape_of(q).s,
               vidi_shape_of(out).s);
    const int64_t hq = q->shape[1], hkv = k->shape[1], D = q->shape[2];
    VIDI_CHECK(k->shape[2] == D, err, VIDI_ERR_INVALID, "attention: head dims differ: q %s, k %s", vidi_shape_of(q).s,
               vidi_shape_of(k).s);
    VIDI_CHECK(hq > 0 && hkv > 0 && hq % hkv == 0, err, VIDI_ERR_INVALID,
               "attention: %lld query heads are not a multiple of %lld kv heads", (long long)hq, (long long)hkv);
    VIDI_TRY(check_offsets("cu_q", args->cu_q, args->n_seqs, q->shape[0], err));
    VIDI_TRY(check_offsets("cu_k", args->cu_k, args->n_seqs, k->shape[0], err));
    VIDI_TRY(vidi_check_alias(op, "out", out, "q", q, 0, err));
    VIDI_TRY(vidi_check_alias(op, "out", out, "k", k, 0, err));
    VIDI_TRY(vidi_check_alias(op, "out", out, "v", v, 0, err));
    if (args->n_seqs > 0 && q->shape[0] > 0 && D > 0) VIDI_TRY(attn_run(be, q, k, v, out, args, err));
fail:
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Gather / scatter of rows.                                                */

static vidi_status check_row_ids(const char *op, const char *name, const vidi_tensor *ids, int64_t limit,
                                 vidi_err *err) {
    const int32_t *id = ids->data;
    const int64_t n = vidi_tensor_numel(ids);
    for (int64_t i = 0; i < n; i++)
        if (id[i] < 0 || id[i] >= limit)
            return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s[%lld] = %d is out of range [0, %lld)", op, name,
                                (long long)i, (int)id[i], (long long)limit);
    return VIDI_OK;
}

typedef struct gather_job {
    vidi_dtype dt;
    const void *table;
    const int32_t *ids;
    float *out;
    int64_t cols;
} gather_job;

static void gather_task(void *ctx, int64_t i0, int64_t i1) {
    const gather_job *j = ctx;
    const size_t row_bytes = (size_t)j->cols * vidi_dtype_size(j->dt);
    for (int64_t i = i0; i < i1; i++)
        vidi_convert_to_f32(j->dt, (const char *)j->table + (size_t)j->ids[i] * row_bytes, j->out + i * j->cols,
                            (size_t)j->cols);
}

static vidi_status cpu_gather_rows(vidi_backend *be, const vidi_tensor *table, const vidi_tensor *ids,
                                   vidi_tensor *out, vidi_err *err) {
    const char *op = "gather_rows";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_gather_rows(op, BACKEND_ACTS, table, ids, out, err));
    const int64_t n = vidi_tensor_numel(ids), cols = table->shape[1];
    VIDI_TRY(check_row_ids(op, "ids", ids, table->shape[0], err));
    gather_job job = {table->dtype, table->data, ids->data, out->data, cols};
    vidi_pool_for(cpu_pool(be), n, grain_rows(cols), gather_task, &job);
fail:
    return rc;
}

/* Rows are written in order, so with a repeated index the last row wins. */
static vidi_status cpu_scatter_rows(vidi_backend *be, const vidi_tensor *src, const vidi_tensor *idx,
                                    vidi_tensor *dst, vidi_err *err) {
    const char *op = "scatter_rows";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_scatter_rows(op, BACKEND_ACTS, src, idx, dst, err));
    const int64_t n = vidi_tensor_numel(idx), cols = vidi_tensor_cols(dst);
    VIDI_TRY(check_row_ids(op, "idx", idx, vidi_tensor_rows(dst), err));
    const int32_t *id = idx->data;
    const float *s = src->data;
    float *d = dst->data;
    if (cols > 0)
        for (int64_t i = 0; i < n; i++) memcpy(d + id[i] * cols, s + i * cols, (size_t)cols * sizeof *d);
fail:
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Sampling.                                                                */

typedef struct sample_cand {
    float logit;
    int32_t id;
} sample_cand;

/* a ranks before b: larger logit, then lower id */
static int cand_before(const sample_cand *a, const sample_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const sample_cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : (cand_before(b, a) ? 1 : 0);
}

/* Argmax, lowest index on ties; NaN never wins; all NaN gives 0. */
static int32_t sample_greedy(const float *l, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(l[i]) && (best < 0 || l[i] > l[best])) best = i;
    return best < 0 ? 0 : (int32_t)best;
}

/* Restores the heap order of c[0..k) below p (a parent ranks after its
 * children, so the root is the worst kept). */
static void sift_down(sample_cand *c, int64_t k, int64_t p) {
    for (;;) {
        int64_t w = p, l = 2 * p + 1, r = l + 1;
        if (l < k && cand_before(&c[w], &c[l])) w = l;
        if (r < k && cand_before(&c[w], &c[r])) w = r;
        if (w == p) return;
        sample_cand t = c[p];
        c[p] = c[w];
        c[w] = t;
        p = w;
    }
}

/* Keeps the k best of c[0..n) in c[0..k) (a heap whose root is the worst
 * kept), in no particular order. */
static void select_top_k(sample_cand *c, int64_t n, int64_t k) {
    for (int64_t i = k / 2; i-- > 0;) sift_down(c, k, i);
    for (int64_t i = k; i < n; i++) {
        if (!cand_before(&c[i], &c[0])) continue;
        c[0] = c[i];
        sift_down(c, k, 0);
    }
}

/* One row: candidates sorted by logit, top_k, weights exp((l - max) / T)
 * in double, the top_p prefix, one uniform draw over what is kept. NaN and
 * -inf logits are never drawn; a row without any finite logit falls back
 * to the greedy rule. c and wgt are scratch for n entries. */
static int32_t sample_row(const float *l, int64_t n, const vidi_sample_params *sp, uint64_t *state,
                          sample_cand *c, double *wgt) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(l[i]) && l[i] != -INFINITY) c[m++] = (sample_cand){l[i], (int32_t)i};
    if (m == 0) return sample_greedy(l, n);
    if (sp->top_k > 0 && sp->top_k < m) {
        select_top_k(c, m, sp->top_k);
        m = sp->top_k;
    }
    qsort(c, (size_t)m, sizeof *c, cand_cmp);
    const double inv_t = 1.0 / (double)sp->temperature, top = c[0].logit;
    double total = 0;
    for (int64_t i = 0; i < m; i++) {
        /* a +inf logit is the top (sorted first); it and its equals take all */
        double z = c[i].logit == top ? 0.0 : ((double)c[i].logit - top) * inv_t;
        wgt[i] = exp(z);
        total += wgt[i];
    }
    int64_t keep = m;
    if (sp->top_p < 1.0f) {
        const double need = (double)sp->top_p * total;
        double cum = 0;
        for (keep = 0; keep < m;) {
            cum += wgt[keep++];
            if (cum >= need) break;
        }
        total = cum;
    }
    const double target = (double)vidi_rng_uniform(state) * total;
    double cum = 0;
    for (int64_t i = 0; i < keep; i++) {
        cum += wgt[i];
        if (target < cum) return c[i].id;
    }
    return c[keep - 1].id;
}

static vidi_status cpu_argmax_rows(vidi_backend *be, const vidi_tensor *logits, vidi_tensor *out, vidi_err *err) {
    const char *op = "argmax_rows";
    vidi_status rc = VIDI_OK;
    (void)be;
    VIDI_TRY(check_act(op, "logits", logits, err));
    const int64_t B = vidi_tensor_rows(logits), V = vidi_tensor_cols(logits);
    VIDI_CHECK(V >= 1 && V <= INT32_MAX, err, VIDI_ERR_INVALID, "argmax_rows: logits %s need 1..2^31-1 columns",
               vidi_shape_of(logits).s);
    VIDI_CHECK(out && out->dtype == VIDI_DTYPE_I32 && vidi_tensor_numel(out) == B && (out->data || B == 0), err,
               VIDI_ERR_INVALID, "argmax_rows: out must be i32 [%lld]", (long long)B);
    for (int64_t b = 0; b < B; b++) ((int32_t *)out->data)[b] = sample_greedy((const float *)logits->data + b * V, V);
fail:
    return rc;
}

static vidi_status cpu_sample(vidi_backend *be, const vidi_tensor *logits, const vidi_sample_params *params,
                              uint64_t *rng_state, int32_t *out_tokens, vidi_err *err) {
    const char *op = "sample";
    vidi_status rc = VIDI_OK;
    sample_cand *cand = NULL;
    double *wgt = NULL;
    VIDI_TRY(check_act(op, "logits", logits, err));
    VIDI_CHECK(params, err, VIDI_ERR_INVALID, "sample: params must be given");
    const int64_t B = vidi_tensor_rows(logits), V = vidi_tensor_cols(logits);
    VIDI_CHECK(V >= 1 && V <= INT32_MAX, err, VIDI_ERR_INVALID, "sample: logits %s need 1..2^31-1 columns",
               vidi_shape_of(logits).s);
    VIDI_CHECK(params->top_k >= 0, err, VIDI_ERR_INVALID, "sample: top_k %d must be >= 0", params->top_k);
    VIDI_CHECK(!isnan(params->top_p), err, VIDI_ERR_INVALID, "sample: top_p is NaN");
    VIDI_CHECK(out_tokens || B == 0, err, VIDI_ERR_INVALID, "sample: out_tokens must be given");
    const int greedy = !(params->temperature > 0.0f) || params->top_k == 1;
    VIDI_CHECK(greedy || rng_state || B == 0, err, VIDI_ERR_INVALID,
               "sample: rng_state must be given unless sampling is greedy");
    const float *l = logits->data;
    if (greedy) {
        for (int64_t b = 0; b < B; b++) out_tokens[b] = sample_greedy(l + b * V, V);
    } else if (B > 0) {
        cand = malloc((size_t)V * sizeof *cand);
        wgt = malloc((size_t)V * sizeof *wgt);
        VIDI_CHECK(cand && wgt, err, VIDI_ERR_NOMEM, "sample: out of memory for %lld candidates", (long long)V);
        for (int64_t b = 0; b < B; b++) out_tokens[b] = sample_row(l + b * V, V, params, &rng_state[b], cand, wgt);
    }
fail:
    free(cand);
    free(wgt);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The table.                                                               */

static void cpu_destroy(vidi_backend *be) {
    if (!be) return;
    cpu_ctx *c = be->ctx;
    if (c && c->own_pool) vidi_pool_destroy(c->pool);
    free(c);
    free(be);
}

static const vidi_backend_ops cpu_ops = {
    .buf_alloc = cpu_buf_alloc,
    .buf_free = cpu_buf_free,
    .copy_to_device = cpu_copy_to_device,
    .copy_to_host = cpu_copy_to_host,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .matmul = cpu_matmul,
    .matmul_acc = cpu_matmul_acc,
    .qkv_rope_store = cpu_qkv_rope_store,
    .add = cpu_add,
    .rms_norm = cpu_rms_norm,
    .layer_norm = cpu_layer_norm,
    .act = cpu_act,
    .act_mul = cpu_act_mul,
    .softmax = cpu_softmax,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .attention_paged = vidi_cpu_attention_paged,
    .gather_rows = cpu_gather_rows,
    .scatter_rows = cpu_scatter_rows,
    .sample = cpu_sample,
    .argmax_rows = cpu_argmax_rows,
    .destroy = cpu_destroy,
};

vidi_backend *vidi_backend_cpu_create(int threads, vidi_err *err) {
    vidi_backend *be = calloc(1, sizeof *be);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        vidi_err_set(err, VIDI_ERR_NOMEM, "cpu backend: out of memory");
        return NULL;
    }
    if (threads <= 0) {
        c->pool = vidi_pool_default(); /* NULL if threads failed: ops then run on the caller */
    } else {
        c->pool = vidi_pool_create(threads);
        if (!c->pool) {
            free(be);
            free(c);
            vidi_err_set(err, VIDI_ERR_INTERNAL, "cpu backend: cannot start a pool of %d threads", threads);
            return NULL;
        }
        c->own_pool = 1;
    }
    be->name = "cpu";
    be->host_memory = 1;
    be->weight_dtype = VIDI_DTYPE_F32;
    be->ops = &cpu_ops;
    be->act_dtype = VIDI_DTYPE_F32;
    be->ctx = c;
    return be;
}
