/* tests/gpu/test_cuda_sparse.c — the CUDA sparse prefill attention
 * (ops sparse_attention, kernels/cuda/cuda_sparse.cu, tensor cores)
 * against its CPU twin (vidi_sparse_attend_plan, prefill/sparse.c) on the
 * same inputs: every pattern's plan (dense, A-shape, tri-shape,
 * vertical-slash, block, grid with horizontal and vertical lines, Q- and
 * 2D-boundary) for a
 * prompt of text, a video span and text, all heads' plans packed into one
 * launch (GQA), head_dim 64 and 128, bf16 and f32, a short prompt (frame 30)
 * and a longer one (frame 256: strided segments longer than a key block);
 * and a tile whose rows have no causal key gives zeros, not NaN. Inputs are
 * rounded to bf16 for the twin (the kernel multiplies in bf16, f32 inputs
 * too), so the gap is the bf16 rounding of P and of the output and the
 * order of sums. Exit 77 without a CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "kernels/ops.h"
#include "prefill/sparse.h"
#include "test_util.h"

enum { HQ = 4, HKV = 2, PREFIX = 40, SUFFIX = 20 };

static vidi_backend *g_be;

static void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = vidi_bf16_to_f32(vidi_f32_to_bf16(x[i]));
}

/* x (host f32, n) into backend memory as dt */
static void *upload(const float *x, size_t n, vidi_dtype dt, vidi_err *err) {
    void *d = g_be->ops->buf_alloc(g_be, n * vidi_dtype_size(dt));
    if (!d) return NULL;
    vidi_status st;
    if (dt == VIDI_DTYPE_F32) {
        st = g_be->ops->copy_to_device(g_be, d, x, n * sizeof(float), err);
    } else {
        uint16_t *h = malloc(n * sizeof *h);
        for (size_t i = 0; i < n; i++) h[i] = vidi_f32_to_bf16(x[i]);
        st = g_be->ops->copy_to_device(g_be, d, h, n * sizeof *h, err);
        g_be->ops->synchronize(g_be, err);
        free(h);
    }
    return st == VIDI_OK ? d : NULL;
}

/* n values of dt in backend memory as host f32 */
static vidi_status download(float *dst, const void *src, size_t n, vidi_dtype dt, vidi_err *err) {
    if (dt == VIDI_DTYPE_F32) return g_be->ops->copy_to_host(g_be, dst, src, n * sizeof(float), err);
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) return VIDI_ERR_NOMEM;
    vidi_status st = g_be->ops->copy_to_host(g_be, h, src, n * sizeof *h, err);
    for (size_t i = 0; i < n && st == VIDI_OK; i++) dst[i] = vidi_bf16_to_f32(h[i]);
    free(h);
    return st;
}

static int32_t *upload_i32(const int32_t *x, size_t n, vidi_err *err) {
    int32_t *d = g_be->ops->buf_alloc(g_be, (n ? n : 1) * sizeof(int32_t));
    if (d && n && g_be->ops->copy_to_device(g_be, d, x, n * sizeof(int32_t), err) != VIDI_OK) return NULL;
    return d;
}

static double run_case(int d, vidi_dtype dt, vidi_sparse_kind kind, int twod, int T, int FRAME) {
    const int N = PREFIX + T * FRAME + SUFFIX;
    vidi_err err = {0};
    size_t nq = (size_t)N * HQ * d, nk = (size_t)N * HKV * d;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *want = calloc(nq, 4), *got = calloc(nq, 4);
    test_fill_uniform(q, (long)nq, -1, 1, 31 + d);
    test_fill_uniform(k, (long)nk, -1, 1, 32 + d);
    test_fill_uniform(v, (long)nk, -1, 1, 33 + d);
    round_bf16(q, nq), round_bf16(k, nk), round_bf16(v, nk);
    vidi_span spans[3] = {{0, PREFIX, VIDI_SPAN_TEXT, 0, 0}, {PREFIX, PREFIX + T * FRAME, VIDI_SPAN_VIDEO, FRAME, 5},
                          {PREFIX + T * FRAME, N, VIDI_SPAN_TEXT, 0, 0}};
    vidi_sparse_head h = {.kind = kind, .sink = 8, .local = 24, .last = SUFFIX, .stride = FRAME, .phase = 3, .h = 1,
                          .v = 1, .n_vertical = 24, .n_slash = 16, .last_q = 32};
    if (kind == VIDI_SPARSE_BLOCK) h.n_vertical = 3;
    h.boundary2d = twod;
    void *dq = upload(q, nq, dt, &err), *dk = upload(k, nk, dt, &err), *dv = upload(v, nk, dt, &err);
    void *dout = g_be->ops->buf_alloc(g_be, nq * vidi_dtype_size(dt));
    vidi_sparse_plan plans[HQ];
    int heads[HQ], n_plans = 0;
    vidi_sparse_packed pk = {0};
    int32_t *drows = NULL, *dtiles = NULL, *dsegs = NULL, *dcols = NULL;
    double md = 1e9;
    if (!dq || !dk || !dv || !dout) {
        printf("upload failed: %s\n", err.msg);
        goto out;
    }
    vidi_tensor tq = vidi_tensor_3d(dt, dq, N, HQ, d), tk = vidi_tensor_3d(dt, dk, N, HKV, d);
    vidi_tensor tv = vidi_tensor_3d(dt, dv, N, HKV, d), to = vidi_tensor_3d(dt, dout, N, HQ, d);
    float scale = 1.0f / sqrtf((float)d);
    for (int head = 0; head < HQ; head++, n_plans++) {
        vidi_sparse_qk qk = {q, k, HQ, HKV, d, head, NULL, NULL};
        heads[head] = head;
        if (vidi_sparse_plan_build(&h, spans, 3, N, &qk, &plans[head], &err) != VIDI_OK) {
            printf("plan: %s\n", err.msg);
            goto out;
        }
        vidi_sparse_attend_plan(&plans[head], &qk, v, scale, want, &err);
    }
    if (vidi_sparse_pack(plans, heads, n_plans, &pk, &err) != VIDI_OK) {
        printf("pack: %s\n", err.msg);
        goto out;
    }
    drows = upload_i32(pk.rows, (size_t)pk.n_rows, &err), dtiles = upload_i32(pk.tiles, (size_t)pk.n_tiles * 8, &err);
    dsegs = upload_i32(pk.segs, (size_t)pk.n_segs * 4, &err), dcols = upload_i32(pk.cols, (size_t)pk.n_cols, &err);
    vidi_status st = g_be->ops->sparse_attention(g_be, &tq, &tk, &tv, &to, drows, dtiles, pk.n_tiles, dsegs, dcols,
                                                 scale, &err);
    if (st == VIDI_OK) st = g_be->ops->synchronize(g_be, &err);
    if (st != VIDI_OK) {
        printf("sparse_attention: %s\n", err.msg);
        goto out;
    }
    if (download(got, dout, nq, dt, &err) == VIDI_OK) {
        md = 0;
        for (size_t i = 0; i < nq; i++) {
            double dd = fabs((double)got[i] - (double)want[i]);
            if (!(dd <= md)) md = isnan(dd) ? 1e9 : dd;
        }
    }
out:
    for (int i = 0; i < n_plans; i++) vidi_sparse_plan_free(&plans[i]);
    vidi_sparse_packed_free(&pk);
    g_be->ops->buf_free(g_be, drows);
    g_be->ops->buf_free(g_be, dtiles);
    g_be->ops->buf_free(g_be, dsegs);
    g_be->ops->buf_free(g_be, dcols);
    g_be->ops->buf_free(g_be, dq);
    g_be->ops->buf_free(g_be, dk);
    g_be->ops->buf_free(g_be, dv);
    g_be->ops->buf_free(g_be, dout);
    free(q), free(k), free(v), free(want), free(got);
    return md;
}

static void test_every_pattern_equals_the_cpu_twin(void) {
    for (int li = 0; li < 2; li++)
        for (int di = 0; di < 2; di++)
            for (int ti = 0; ti < 2; ti++)
                for (int kind = VIDI_SPARSE_DENSE; kind <= VIDI_SPARSE_GRID + 1; kind++) { /* + 1: grid, 2D */
                    int d = di ? 128 : 64, t = li ? 12 : 24, frame = li ? 256 : 30, twod = kind > VIDI_SPARSE_GRID;
                    vidi_sparse_kind k = twod ? VIDI_SPARSE_GRID : (vidi_sparse_kind)kind;
                    vidi_dtype dt = ti ? VIDI_DTYPE_F32 : VIDI_DTYPE_BF16;
                    double tol = 8e-3;
                    double md = run_case(d, dt, k, twod, t, frame);
                    CHECK(md >= 0 && md <= tol, "%s%s D %d %s %d frames of %d: max |cuda - cpu| %g (tolerance %g)",
                          vidi_sparse_kind_name(k), twod ? " 2D" : "", d, vidi_dtype_name(dt), t, frame, md, tol);
                }
}

static void test_rows_without_keys_get_zeros(void) {
    vidi_err err = {0};
    enum { n = 4, d = 64 };
    float x[n * d];
    test_fill_uniform(x, n * d, -1, 1, 5);
    void *dx = upload(x, n * d, VIDI_DTYPE_F32, &err), *dout = g_be->ops->buf_alloc(g_be, n * d * 4);
    float nan_fill[n * d];
    for (int i = 0; i < n * d; i++) nan_fill[i] = NAN;
    g_be->ops->copy_to_device(g_be, dout, nan_fill, sizeof nan_fill, &err);
    int32_t rows[n] = {0, 1, 2, 3}, tiles[8] = {0, n, 0, 1, 0, 0, 0, 2}, segs[4] = {2, 4, 1, 0};
    int32_t *dr = upload_i32(rows, n, &err), *dt = upload_i32(tiles, 8, &err), *ds = upload_i32(segs, 4, &err);
    vidi_tensor t = vidi_tensor_3d(VIDI_DTYPE_F32, dx, n, 1, d), o = vidi_tensor_3d(VIDI_DTYPE_F32, dout, n, 1, d);
    CHECK(g_be->ops->sparse_attention(g_be, &t, &t, &t, &o, dr, dt, 1, ds, NULL, 0.125f, &err) == VIDI_OK, "%s",
          err.msg);
    float got[n * d];
    CHECK(download(got, dout, n * d, VIDI_DTYPE_F32, &err) == VIDI_OK, "%s", err.msg);
    int zeros = 0, finite = 0;
    for (int i = 0; i < 2 * d; i++) zeros += got[i] == 0.0f; /* rows 0 and 1 see no key (keys 2, 3) */
    for (int i = 2 * d; i < n * d; i++) finite += isfinite(got[i]);
    CHECK(zeros == 2 * d && finite == 2 * d, "rows without keys: %d zeros of %d; others finite %d", zeros, 2 * d, finite);
    g_be->ops->buf_free(g_be, dx);
    g_be->ops->buf_free(g_be, dout);
    g_be->ops->buf_free(g_be, dr);
    g_be->ops->buf_free(g_be, dt);
    g_be->ops->buf_free(g_be, ds);
}

/* ops sparse_mass (the last rows' column and diagonal mass, online
 * estimation) against vidi_sparse_last_mass on the same (bf16-rounded)
 * inputs: every head, head_dim 64 and 128, bf16 and f32, 40 rows at the end
 * and 64 rows in the middle of 3000 tokens. */
static void test_mass_equals_the_cpu_twin(void) {
    enum { n = 3000 };
    for (int di = 0; di < 2; di++)
        for (int ti = 0; ti < 2; ti++)
            for (int ci = 0; ci < 2; ci++) {
                vidi_err err = {0};
                int d = di ? 128 : 64;
                vidi_dtype dt = ti ? VIDI_DTYPE_F32 : VIDI_DTYPE_BF16;
                int64_t r1 = ci ? n / 2 : n, r0 = ci ? r1 - 64 : r1 - 40;
                size_t nq = (size_t)n * HQ * d, nk = (size_t)n * HKV * d;
                float *q = malloc(nq * 4), *k = malloc(nk * 4), *col = malloc((size_t)r1 * 4), *dg = malloc((size_t)r1 * 4);
                float *gcol = malloc((size_t)HQ * r1 * 4), *gdg = malloc((size_t)HQ * r1 * 4);
                test_fill_uniform(q, (long)nq, -2, 2, 41 + d);
                test_fill_uniform(k, (long)nk, -2, 2, 42 + d);
                round_bf16(q, nq), round_bf16(k, nk);
                void *dq = upload(q, nq, dt, &err), *dk = upload(k, nk, dt, &err);
                float *dcol = g_be->ops->buf_alloc(g_be, (size_t)HQ * r1 * 4), *ddg = g_be->ops->buf_alloc(g_be, (size_t)HQ * r1 * 4);
                vidi_tensor tq = vidi_tensor_3d(dt, dq, n, HQ, d), tk = vidi_tensor_3d(dt, dk, n, HKV, d);
                float scale = 1.0f / sqrtf((float)d);
                vidi_status st = g_be->ops->sparse_mass(g_be, &tq, &tk, r0, r1, scale, dcol, ddg, &err);
                if (st == VIDI_OK) st = g_be->ops->synchronize(g_be, &err);
                if (st == VIDI_OK) st = g_be->ops->copy_to_host(g_be, gcol, dcol, (size_t)HQ * r1 * 4, &err);
                if (st == VIDI_OK) st = g_be->ops->copy_to_host(g_be, gdg, ddg, (size_t)HQ * r1 * 4, &err);
                CHECK(st == VIDI_OK, "sparse_mass: %s", err.msg);
                double worst = 0, total = 0;
                for (int h = 0; h < HQ && st == VIDI_OK; h++) {
                    vidi_sparse_qk qk = {q, k, HQ, HKV, d, h, NULL, NULL};
                    CHECK(vidi_sparse_last_mass(&qk, r1, r0, r1, scale, col, dg, &err) == VIDI_OK, "%s", err.msg);
                    for (int64_t j = 0; j < r1; j++) {
                        double a = fabs((double)gcol[h * r1 + j] - col[j]) / (1e-3 + fabs(col[j]));
                        double b = fabs((double)gdg[h * r1 + j] - dg[j]) / (1e-3 + fabs(dg[j]));
                        if (!(a <= worst)) worst = isnan(a) ? 1e9 : a;
                        if (!(b <= worst)) worst = isnan(b) ? 1e9 : b;
                        total += gcol[h * r1 + j];
                    }
                }
                /* each row's probabilities sum to 1: the column masses of a head sum to the row count */
                CHECK(worst < 1e-3 && fabs(total - (double)HQ * (double)(r1 - r0)) < 1e-2 * HQ,
                      "D %d %s rows [%lld, %lld): worst relative gap %g, total mass %g", d, vidi_dtype_name(dt),
                      (long long)r0, (long long)r1, worst, total);
                g_be->ops->buf_free(g_be, dq), g_be->ops->buf_free(g_be, dk);
                g_be->ops->buf_free(g_be, dcol), g_be->ops->buf_free(g_be, ddg);
                free(q), free(k), free(col), free(dg), free(gcol), free(gdg);
            }
}

int main(int argc, char **argv) {
    vidi_err err = {0};
    g_be = vidi_backend_cuda_create(0, &err);
    if (!g_be) {
        printf("skipped: %s\n", err.msg);
        return 77;
    }
    static const test_case cases[] = {
        {"every_pattern_equals_the_cpu_twin", test_every_pattern_equals_the_cpu_twin},
        {"rows_without_keys_get_zeros", test_rows_without_keys_get_zeros},
        {"mass_equals_the_cpu_twin", test_mass_equals_the_cpu_twin},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    g_be->ops->destroy(g_be);
    return rc;
}
