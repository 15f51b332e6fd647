/* tests/unit/test_cpu_ops.c — every op of the CPU backend against a naive
 * double-precision reference written here, on random inputs.
 *
 * Tolerances (inputs mostly uniform in [-1, 1]):
 *  - matmul: |y - ref| <= 1e-5 * sum_k |x_k w_k| + 1e-6 (the fp32 rounding
 *    bound scaled by the dot's magnitude; half weights compare against
 *    their exactly widened values);
 *  - norms, activations, softmax, rope: |y - ref| <= 1e-6 + 2e-6 |ref|;
 *  - attention: |out - ref| <= 1e-5 + 1e-5 |ref|;
 *  - gather/scatter: exact;
 *  - sampling: exact tokens for the deterministic cases, and an empirical
 *    distribution of 20000 draws within 5 standard errors (+ 0.002) of
 *    the renormalised softmax.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "kernels/ops.h"
#include "test_util.h"

static vidi_backend *g_be;  /* default pool */
static vidi_backend *g_be1; /* one thread, for determinism across thread counts */

/* ---- helpers ---- */

static float *rnd(long n, float lo, float hi, unsigned long long seed) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    test_fill_uniform(x, n, lo, hi, seed);
    return x;
}

/* Checks |got - ref| <= atol + rtol * (scale ? scale[i] : |ref[i]|) and
 * reports the worst element. */
static void check_close(const char *what, const float *got, const double *ref, const double *scale, long n,
                        double atol, double rtol) {
    long worst = -1;
    double worst_excess = 0;
    for (long i = 0; i < n; i++) {
        double tol = atol + rtol * (scale ? scale[i] : fabs(ref[i]));
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= tol) && (worst < 0 || d - tol > worst_excess)) {
            worst = i;
            worst_excess = d - tol;
        }
    }
    CHECK(worst < 0, "%s: element %ld is %.9g, reference %.9g (tolerance exceeded by %.3g)", what, worst,
          worst >= 0 ? got[worst] : 0.0, worst >= 0 ? ref[worst] : 0.0, worst_excess);
}

static int32_t *i32s(long n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t)); }

/* ---- matmul ---- */

/* ref = x · w^T + bias, and the magnitude sum |x||w| for the tolerance */
static void ref_matmul(const float *x, const float *wf, const float *bias, long M, long K, long N, double *ref,
                       double *mag) {
    for (long m = 0; m < M; m++)
        for (long n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0.0, a = bias ? fabs(bias[n]) : 0.0;
            for (long k = 0; k < K; k++) {
                s += (double)x[m * K + k] * wf[n * K + k];
                a += fabs((double)x[m * K + k] * wf[n * K + k]);
            }
            ref[m * N + n] = s;
            mag[m * N + n] = a;
        }
}

/* acc: y starts random and matmul_acc adds the product to it. */
static void run_matmul_case_acc(vidi_dtype wdt, long M, long K, long N, int with_bias, int acc, unsigned seed) {
    float *x = rnd(M * K, -1, 1, seed), *wf = rnd(N * K, -1, 1, seed + 1), *b = rnd(N, -1, 1, seed + 2);
    float *y = malloc((size_t)(M * N + 1) * sizeof *y);
    double *ref = malloc((size_t)(M * N + 1) * sizeof *ref), *mag = malloc((size_t)(M * N + 1) * sizeof *mag);
    uint16_t *wh = malloc((size_t)(N * K + 1) * 2), *bh = malloc((size_t)(N + 1) * 2);
    void *wdata = wf, *bdata = b;
    if (wdt != VIDI_DTYPE_F32) { /* round to the half type, reference uses the rounded values */
        vidi_convert_from_f32(wdt, wf, wh, (size_t)(N * K));
        vidi_convert_to_f32(wdt, wh, wf, (size_t)(N * K));
        vidi_convert_from_f32(wdt, b, bh, (size_t)N);
        vidi_convert_to_f32(wdt, bh, b, (size_t)N);
        wdata = wh;
        bdata = bh;
    }
    ref_matmul(x, wf, with_bias ? b : NULL, M, K, N, ref, mag);
    if (acc) {
        float *r = rnd(M * N, -2, 2, seed + 3);
        for (long i = 0; i < M * N; i++) {
            y[i] = r[i];
            ref[i] += r[i];
            mag[i] += fabs((double)r[i]);
        }
        free(r);
    }
    /* x as [2, M/2, K] when M is even, to exercise leading shapes */
    vidi_tensor xt = M % 2 == 0 && M > 0 ? vidi_tensor_3d(VIDI_DTYPE_F32, x, 2, M / 2, K)
                                         : vidi_tensor_2d(VIDI_DTYPE_F32, x, M, K);
    vidi_tensor wt = vidi_tensor_2d(wdt, wdata, N, K), bt = vidi_tensor_1d(wdt, bdata, N);
    vidi_tensor yt = vidi_tensor_2d(VIDI_DTYPE_F32, y, M, N);
    vidi_err err = {0};
    vidi_status rc = acc ? g_be->ops->matmul_acc(g_be, &xt, &wt, with_bias ? &bt : NULL, &yt, &err)
                         : g_be->ops->matmul(g_be, &xt, &wt, with_bias ? &bt : NULL, &yt, &err);
    CHECK(rc == VIDI_OK, "matmul%s %s %ldx%ldx%ld: %s", acc ? "_acc" : "", vidi_dtype_name(wdt), M, K, N, err.msg);
    char what[96];
    snprintf(what, sizeof what, "matmul%s %s M=%ld K=%ld N=%ld bias=%d", acc ? "_acc" : "", vidi_dtype_name(wdt), M,
             K, N, with_bias);
    if (rc == VIDI_OK) check_close(what, y, ref, mag, M * N, 1e-6, 1e-5);
    free(x), free(wf), free(b), free(y), free(ref), free(mag), free(wh), free(bh);
}

static void run_matmul_case(vidi_dtype wdt, long M, long K, long N, int with_bias, unsigned seed) {
    run_matmul_case_acc(wdt, M, K, N, with_bias, 0, seed);
}

static void test_matmul_acc(void) {
    static const long shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {1, 4864, 37}, {6, 0, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int bias = 0; bias < 2; bias++) {
            run_matmul_case_acc(VIDI_DTYPE_F32, shapes[i][0], shapes[i][1], shapes[i][2], bias, 1, 400 + (unsigned)i);
            run_matmul_case_acc(VIDI_DTYPE_BF16, shapes[i][0], shapes[i][1], shapes[i][2], bias, 1, 500 + (unsigned)i);
        }
    /* y aliasing x is refused */
    float buf[12] = {0}, w[4] = {1, 0, 0, 1};
    vidi_tensor xt = vidi_tensor_2d(VIDI_DTYPE_F32, buf, 3, 2), wt = vidi_tensor_2d(VIDI_DTYPE_F32, w, 2, 2);
    vidi_err err = {0};
    CHECK(g_be->ops->matmul_acc(g_be, &xt, &wt, NULL, &xt, &err) == VIDI_ERR_INVALID, "matmul_acc with y = x accepted");
}

static void test_matmul_f32_shapes(void) {
    static const long shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 896, 130}, {1, 4864, 37}, {6, 0, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int bias = 0; bias < 2; bias++)
            run_matmul_case(VIDI_DTYPE_F32, shapes[i][0], shapes[i][1], shapes[i][2], bias, 100 + (unsigned)i);
}

static void test_matmul_half_weights(void) {
    /* K = 896 widens 292 weight rows per block: N = 700 takes three blocks */
    static const long shapes[][3] = {{3, 33, 40}, {5, 896, 700}, {1, 80, 1}, {2, 17, 33}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int bias = 0; bias < 2; bias++) {
            run_matmul_case(VIDI_DTYPE_BF16, shapes[i][0], shapes[i][1], shapes[i][2], bias, 200 + (unsigned)i);
            run_matmul_case(VIDI_DTYPE_F16, shapes[i][0], shapes[i][1], shapes[i][2], bias, 300 + (unsigned)i);
        }
}

/* ---- add, norms ---- */

static void test_add_in_place(void) {
    const long n = 3 * 1001;
    float *a = rnd(n, -1, 1, 1), *b = rnd(n, -1, 1, 2), *y = malloc(n * sizeof *y);
    double *ref = malloc(n * sizeof *ref);
    for (long i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
    vidi_tensor at = vidi_tensor_2d(VIDI_DTYPE_F32, a, 3, 1001), bt = vidi_tensor_2d(VIDI_DTYPE_F32, b, 3, 1001);
    vidi_tensor yt = vidi_tensor_2d(VIDI_DTYPE_F32, y, 3, 1001);
    vidi_err err = {0};
    CHECK(g_be->ops->add(g_be, &at, &bt, &yt, &err) == VIDI_OK, "add: %s", err.msg);
    check_close("add", y, ref, NULL, n, 1e-7, 1e-7);
    CHECK(g_be->ops->add(g_be, &at, &bt, &at, &err) == VIDI_OK, "add in place: %s", err.msg);
    check_close("add into a", a, ref, NULL, n, 1e-7, 1e-7);
    free(a), free(b), free(y), free(ref);
}

static void ref_rms_norm(const float *x, const float *w, long rows, long cols, double eps, double *ref) {
    for (long r = 0; r < rows; r++) {
        double ss = 0;
        for (long c = 0; c < cols; c++) ss += (double)x[r * cols + c] * x[r * cols + c];
        double rs = 1.0 / sqrt(ss / cols + eps);
        for (long c = 0; c < cols; c++) ref[r * cols + c] = w[c] * (x[r * cols + c] * rs);
    }
}

static void test_rms_norm(void) {
    static const long shapes[][2] = {{1, 16}, {7, 33}, {5, 896}, {3, 3584}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int bf = 0; bf < 2; bf++) {
            long rows = shapes[i][0], cols = shapes[i][1];
            float *x = rnd(rows * cols, -2, 2, 10 + i), *w = rnd(cols, 0.5f, 1.5f, 20 + i);
            float *y = malloc((size_t)(rows * cols) * sizeof *y);
            uint16_t *wh = malloc((size_t)cols * 2);
            double *ref = malloc((size_t)(rows * cols) * sizeof *ref);
            vidi_tensor wt = vidi_tensor_1d(VIDI_DTYPE_F32, w, cols);
            if (bf) {
                vidi_convert_from_f32(VIDI_DTYPE_BF16, w, wh, (size_t)cols);
                vidi_convert_to_f32(VIDI_DTYPE_BF16, wh, w, (size_t)cols);
                wt = vidi_tensor_1d(VIDI_DTYPE_BF16, wh, cols);
            }
            ref_rms_norm(x, w, rows, cols, 1e-6, ref);
            vidi_tensor xt = vidi_tensor_2d(VIDI_DTYPE_F32, x, rows, cols);
            vidi_tensor yt = vidi_tensor_2d(VIDI_DTYPE_F32, y, rows, cols);
            vidi_err err = {0};
            CHECK(g_be->ops->rms_norm(g_be, &xt, &wt, 1e-6f, &yt, &err) == VIDI_OK, "rms_norm: %s", err.msg);
            check_close("rms_norm", y, ref, NULL, rows * cols, 1e-6, 2e-6);
            CHECK(g_be->ops->rms_norm(g_be, &xt, &wt, 1e-6f, &xt, &err) == VIDI_OK, "rms_norm in place: %s",
                  err.msg);
            check_close("rms_norm in place", x, ref, NULL, rows * cols, 1e-6, 2e-6);
            free(x), free(w), free(y), free(wh), free(ref);
        }
}

static void test_layer_norm(void) {
    static const long shapes[][2] = {{1, 16}, {9, 35}, {4, 1280}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int variant = 0; variant < 3; variant++) { /* f32 w+b, f32 w no b, f16 w+b */
            long rows = shapes[i][0], cols = shapes[i][1];
            float *x = rnd(rows * cols, -3, 5, 30 + i), *w = rnd(cols, 0.5f, 1.5f, 40 + i);
            float *b = rnd(cols, -1, 1, 50 + i), *y = malloc((size_t)(rows * cols) * sizeof *y);
            uint16_t *wh = malloc((size_t)cols * 2), *bh = malloc((size_t)cols * 2);
            double *ref = malloc((size_t)(rows * cols) * sizeof *ref);
            vidi_tensor wt = vidi_tensor_1d(VIDI_DTYPE_F32, w, cols), bt = vidi_tensor_1d(VIDI_DTYPE_F32, b, cols);
            if (variant == 2) {
                vidi_convert_from_f32(VIDI_DTYPE_F16, w, wh, (size_t)cols);
                vidi_convert_to_f32(VIDI_DTYPE_F16, wh, w, (size_t)cols);
                vidi_convert_from_f32(VIDI_DTYPE_F16, b, bh, (size_t)cols);
                vidi_convert_to_f32(VIDI_DTYPE_F16, bh, b, (size_t)cols);
                wt = vidi_tensor_1d(VIDI_DTYPE_F16, wh, cols);
                bt = vidi_tensor_1d(VIDI_DTYPE_F16, bh, cols);
            }
            const int has_b = variant != 1;
            for (long r = 0; r < rows; r++) {
                double mean = 0, var = 0;
                for (long c = 0; c < cols; c++) mean += x[r * cols + c];
                mean /= cols;
                for (long c = 0; c < cols; c++) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
                var /= cols;
                for (long c = 0; c < cols; c++)
                    ref[r * cols + c] = (x[r * cols + c] - mean) / sqrt(var + 1e-6) * w[c] + (has_b ? b[c] : 0);
            }
            vidi_tensor xt = vidi_tensor_2d(VIDI_DTYPE_F32, x, rows, cols);
            vidi_tensor yt = vidi_tensor_2d(VIDI_DTYPE_F32, y, rows, cols);
            vidi_err err = {0};
            CHECK(g_be->ops->layer_norm(g_be, &xt, &wt, has_b ? &bt : NULL, 1e-6f, &yt, &err) == VIDI_OK,
                  "layer_norm: %s", err.msg);
            check_close("layer_norm", y, ref, NULL, rows * cols, 1e-6, 2e-6);
            CHECK(g_be->ops->layer_norm(g_be, &xt, &wt, has_b ? &bt : NULL, 1e-6f, &xt, &err) == VIDI_OK,
                  "layer_norm in place: %s", err.msg);
            check_close("layer_norm in place", x, ref, NULL, rows * cols, 1e-6, 2e-6);
            free(x), free(w), free(b), free(y), free(wh), free(bh), free(ref);
        }
}

/* ---- activations, softmax ---- */

static double ref_act(vidi_act kind, double x) {
    switch (kind) {
    case VIDI_ACT_GELU_ERF: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case VIDI_ACT_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case VIDI_ACT_QUICK_GELU: return x / (1 + exp(-1.702 * x));
    case VIDI_ACT_SILU: return x / (1 + exp(-x));
    }
    return NAN;
}

static void test_activations(void) {
    const long n = 4099;
    for (int kind = VIDI_ACT_GELU_ERF; kind <= VIDI_ACT_SILU; kind++) {
        float *x = rnd(n, -8, 8, 60 + kind), *up = rnd(n, -1, 1, 70 + kind), *y = malloc(n * sizeof *y);
        x[0] = -100.0f, x[1] = 100.0f, x[2] = 0.0f, x[3] = -1e-20f; /* saturation and tiny values */
        double *ref = malloc(n * sizeof *ref), *ref2 = malloc(n * sizeof *ref2);
        for (long i = 0; i < n; i++) {
            ref[i] = ref_act((vidi_act)kind, x[i]);
            ref2[i] = ref[i] * up[i];
        }
        vidi_tensor xt = vidi_tensor_2d(VIDI_DTYPE_F32, x, 1, n), ut = vidi_tensor_2d(VIDI_DTYPE_F32, up, 1, n);
        vidi_tensor yt = vidi_tensor_2d(VIDI_DTYPE_F32, y, 1, n);
        vidi_err err = {0};
        char what[64];
        snprintf(what, sizeof what, "act %d", kind);
        CHECK(g_be->ops->act(g_be, (vidi_act)kind, &xt, &yt, &err) == VIDI_OK, "%s: %s", what, err.msg);
        check_close(what, y, ref, NULL, n, 1e-6, 2e-6);
        snprintf(what, sizeof what, "act_mul %d", kind);
        CHECK(g_be->ops->act_mul(g_be, (vidi_act)kind, &xt, &ut, &yt, &err) == VIDI_OK, "%s: %s", what, err.msg);
        check_close(what, y, ref2, NULL, n, 1e-6, 2e-6);
        /* act_mul into up, then act in place on x */
        float *up2 = malloc(n * sizeof *up2);
        memcpy(up2, up, n * sizeof *up2);
        vidi_tensor u2t = vidi_tensor_2d(VIDI_DTYPE_F32, up2, 1, n);
        CHECK(g_be->ops->act_mul(g_be, (vidi_act)kind, &xt, &u2t, &u2t, &err) == VIDI_OK, "%s into up", what);
        check_close("act_mul into up", up2, ref2, NULL, n, 1e-6, 2e-6);
        CHECK(g_be->ops->act(g_be, (vidi_act)kind, &xt, &xt, &err) == VIDI_OK, "act in place");
        check_close("act in place", x, ref, NULL, n, 1e-6, 2e-6);
        free(x), free(up), free(up2), free(y), free(ref), free(ref2);
    }
    /* act_mul into gate */
    float *g = rnd(100, -4, 4, 80), *u = rnd(100, -1, 1, 81);
    double ref[100];
    for (int i = 0; i < 100; i++) ref[i] = ref_act(VIDI_ACT_SILU, g[i]) * u[i];
    vidi_tensor gt = vidi_tensor_1d(VIDI_DTYPE_F32, g, 100), ut = vidi_tensor_1d(VIDI_DTYPE_F32, u, 100);
    vidi_err err = {0};
    CHECK(g_be->ops->act_mul(g_be, VIDI_ACT_SILU, &gt, &ut, &gt, &err) == VIDI_OK, "act_mul into gate");
    check_close("act_mul into gate", g, ref, NULL, 100, 1e-6, 2e-6);
    free(g), free(u);
}

static void test_softmax(void) {
    static const long shapes[][2] = {{1, 1}, {3, 7}, {5, 1000}, {2, 151}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        long rows = shapes[i][0], cols = shapes[i][1], n = rows * cols;
        float *x = rnd(n, -50, 50, 90 + i), *y = malloc((size_t)n * sizeof *y);
        double *ref = malloc((size_t)n * sizeof *ref);
        for (long r = 0; r < rows; r++) {
            double mx = -INFINITY, s = 0;
            for (long c = 0; c < cols; c++) mx = fmax(mx, x[r * cols + c]);
            for (long c = 0; c < cols; c++) s += exp(x[r * cols + c] - mx);
            for (long c = 0; c < cols; c++) ref[r * cols + c] = exp(x[r * cols + c] - mx) / s;
        }
        vidi_tensor xt = vidi_tensor_2d(VIDI_DTYPE_F32, x, rows, cols), yt = vidi_tensor_2d(VIDI_DTYPE_F32, y, rows, cols);
        vidi_err err = {0};
        CHECK(g_be->ops->softmax(g_be, &xt, &yt, &err) == VIDI_OK, "softmax: %s", err.msg);
        check_close("softmax", y, ref, NULL, n, 1e-7, 2e-6);
        CHECK(g_be->ops->softmax(g_be, &xt, &xt, &err) == VIDI_OK, "softmax in place: %s", err.msg);
        check_close("softmax in place", x, ref, NULL, n, 1e-7, 2e-6);
        free(x), free(y), free(ref);
    }
}

/* ---- rope ---- */

/* The reference: the angle in fp32 exactly as ops.h (and torch) form it,
 * everything after that in double. */
static void ref_rope(const float *x, const int32_t *pos, long T, long H, int D, int n_axes, const int32_t *axis,
                     const float *inv, double *ref) {
    const int half = D / 2;
    for (long t = 0; t < T; t++)
        for (long h = 0; h < H; h++)
            for (int i = 0; i < half; i++) {
                float angle = (float)pos[t * n_axes + axis[i]] * inv[i];
                double c = cos((double)angle), s = sin((double)angle);
                const float *xh = x + (t * H + h) * D;
                ref[(t * H + h) * D + i] = xh[i] * c - xh[i + half] * s;
                ref[(t * H + h) * D + i + half] = xh[i + half] * c + xh[i] * s;
            }
}

static void run_rope_case(const char *what, int D, int n_axes, const int32_t *axis, const float *inv, long T, long H,
                          int pos_1d) {
    float *x = rnd(T * H * D, -1, 1, 500 + D + n_axes);
    int32_t *pos = i32s(T * n_axes);
    double *ref = malloc((size_t)(T * H * D) * sizeof *ref);
    for (long i = 0; i < T * n_axes; i++) pos[i] = (int32_t)((i * 7919 + 13) % 4096); /* up to 4095 */
    ref_rope(x, pos, T, H, D, n_axes, axis, inv, ref);
    vidi_rope_spec spec = {D, n_axes, axis, inv};
    vidi_tensor xt = vidi_tensor_3d(VIDI_DTYPE_F32, x, T, H, D);
    vidi_tensor pt = pos_1d ? vidi_tensor_1d(VIDI_DTYPE_I32, pos, T) : vidi_tensor_2d(VIDI_DTYPE_I32, pos, T, n_axes);
    vidi_err err = {0};
    CHECK(g_be->ops->rope(g_be, &xt, &pt, &spec, &err) == VIDI_OK, "%s: %s", what, err.msg);
    check_close(what, x, ref, NULL, T * H * D, 1e-6, 2e-6);
    free(x), free(pos), free(ref);
}

/* qkv_rope_store: q and k heads of the fused rows rotated as ref_rope does,
 * q into q_out, k and v into the cache rows of their slots; a bad slot
 * writes no cache row. */
static void test_qkv_rope_store(void) {
    enum { T = 5, HQ = 6, HKV = 2, D = 16, R = 40, NA = 3 };
    const long C = (HQ + 2 * HKV) * D;
    int32_t axis[D / 2];
    float inv[D / 2];
    for (int i = 0; i < D / 2; i++) axis[i] = i < 2 ? 0 : (i < 5 ? 1 : 2), inv[i] = (float)pow(10000.0, -2.0 * i / D);
    float *qkv = rnd(T * C, -1, 1, 901), *q = malloc(sizeof(float) * T * HQ * D);
    float *kc = rnd(R * HKV * D, -1, 1, 902), *vc = rnd(R * HKV * D, -1, 1, 903);
    float *kc0 = malloc(sizeof(float) * R * HKV * D), *vc0 = malloc(sizeof(float) * R * HKV * D);
    memcpy(kc0, kc, sizeof(float) * R * HKV * D);
    memcpy(vc0, vc, sizeof(float) * R * HKV * D);
    int32_t pos[T * NA], slots[T] = {7, 0, 39, 12, 3};
    for (int i = 0; i < T * NA; i++) pos[i] = (i * 37 + 5) % 900;
    /* the reference: split, rotate with ref_rope */
    float *xq = malloc(sizeof(float) * T * HQ * D), *xk = malloc(sizeof(float) * T * HKV * D);
    double *rq = malloc(sizeof(double) * T * HQ * D), *rk = malloc(sizeof(double) * T * HKV * D);
    for (int t = 0; t < T; t++) {
        memcpy(xq + t * HQ * D, qkv + t * C, sizeof(float) * HQ * D);
        memcpy(xk + t * HKV * D, qkv + t * C + HQ * D, sizeof(float) * HKV * D);
    }
    ref_rope(xq, pos, T, HQ, D, NA, axis, inv, rq);
    ref_rope(xk, pos, T, HKV, D, NA, axis, inv, rk);
    vidi_rope_spec spec = {D, NA, axis, inv};
    vidi_tensor tqkv = vidi_tensor_2d(VIDI_DTYPE_F32, qkv, T, C), tpos = vidi_tensor_2d(VIDI_DTYPE_I32, pos, T, NA);
    vidi_tensor tq = vidi_tensor_3d(VIDI_DTYPE_F32, q, T, HQ, D), ts = vidi_tensor_1d(VIDI_DTYPE_I32, slots, T);
    vidi_tensor tk = vidi_tensor_2d(VIDI_DTYPE_F32, kc, R, HKV * D), tv = vidi_tensor_2d(VIDI_DTYPE_F32, vc, R, HKV * D);
    vidi_err err = {0};
    REQUIRE(g_be->ops->qkv_rope_store(g_be, &tqkv, &tpos, &spec, &tq, &ts, &tk, &tv, &err) == VIDI_OK, "%s", err.msg);
    check_close("qkv_rope_store q", q, rq, NULL, T * HQ * D, 1e-6, 2e-6);
    for (int t = 0; t < T; t++) {
        check_close("qkv_rope_store k", kc + slots[t] * HKV * D, rk + t * HKV * D, NULL, HKV * D, 1e-6, 2e-6);
        CHECK(!memcmp(vc + slots[t] * HKV * D, qkv + t * C + (HQ + HKV) * D, sizeof(float) * HKV * D),
              "v of token %d not copied to slot %d", t, slots[t]);
    }
    int untouched = 1;
    for (int r = 0; r < R; r++) {
        int used = 0;
        for (int t = 0; t < T; t++) used |= slots[t] == r;
        if (!used) untouched &= !memcmp(kc + r * HKV * D, kc0 + r * HKV * D, sizeof(float) * HKV * D) &&
                                !memcmp(vc + r * HKV * D, vc0 + r * HKV * D, sizeof(float) * HKV * D);
    }
    CHECK(untouched, "qkv_rope_store wrote a cache row no slot names");
    /* a bad slot: an error naming it, no cache row written */
    memcpy(kc0, kc, sizeof(float) * R * HKV * D);
    slots[2] = R;
    CHECK(g_be->ops->qkv_rope_store(g_be, &tqkv, &tpos, &spec, &tq, &ts, &tk, &tv, &err) == VIDI_ERR_INVALID &&
              strstr(err.msg, "slots"), "a slot out of range: %s", err.msg);
    CHECK(!memcmp(kc, kc0, sizeof(float) * R * HKV * D), "a refused store wrote the cache");
    /* shapes that disagree */
    vidi_tensor tbad = vidi_tensor_2d(VIDI_DTYPE_F32, qkv, T, C - D);
    slots[2] = 39;
    CHECK(g_be->ops->qkv_rope_store(g_be, &tbad, &tpos, &spec, &tq, &ts, &tk, &tv, &err) == VIDI_ERR_INVALID,
          "a qkv row of the wrong width accepted");
    free(qkv), free(q), free(kc), free(vc), free(kc0), free(vc0), free(xq), free(xk), free(rq), free(rk);
}

static void test_rope_1d(void) {
    for (int D = 16; D <= 128; D *= 8) {
        int32_t axis[64];
        float inv[64];
        for (int i = 0; i < D / 2; i++) {
            axis[i] = 0;
            inv[i] = (float)pow(1000000.0, -2.0 * i / D);
        }
        run_rope_case(D == 16 ? "rope 1-D D=16" : "rope 1-D D=128", D, 1, axis, inv, 37, 3, 0);
        run_rope_case("rope 1-D, 1-D pos", D, 1, axis, inv, 5, 2, 1);
    }
}

/* M-RoPE: pair i has inv_freq theta^(-2i/D) and the axis of its section. */
static void mrope_tables(int D, const int sections[3], int32_t *axis, float *inv) {
    int i = 0;
    for (int a = 0; a < 3; a++)
        for (int j = 0; j < sections[a]; j++, i++) {
            axis[i] = a;
            inv[i] = (float)pow(1000000.0, -2.0 * i / D);
        }
}

static void test_rope_mrope(void) {
    int32_t axis[64];
    float inv[64];
    static const int s16[3] = {2, 3, 3}, s128[3] = {16, 24, 24};
    mrope_tables(16, s16, axis, inv);
    run_rope_case("M-RoPE D=16 [2,3,3]", 16, 3, axis, inv, 29, 4, 0);
    mrope_tables(128, s128, axis, inv);
    run_rope_case("M-RoPE D=128 [16,24,24]", 128, 3, axis, inv, 23, 2, 0);
}

/* Vision 2-D rope: D/4 pairs per axis (row, then column), inv_freq
 * restarting per axis: theta^(-2j/(D/2)). */
static void test_rope_vision_2d(void) {
    static const int dims[] = {16, 80};
    for (size_t k = 0; k < 2; k++) {
        int D = dims[k], quarter = D / 4;
        int32_t axis[64];
        float inv[64];
        for (int j = 0; j < quarter; j++) {
            float f = (float)pow(10000.0, -2.0 * j / (D / 2));
            axis[j] = 0, inv[j] = f;
            axis[quarter + j] = 1, inv[quarter + j] = f;
        }
        run_rope_case(D == 16 ? "vision rope D=16" : "vision rope D=80", D, 2, axis, inv, 31, 3, 0);
    }
}

/* ---- attention ---- */

typedef struct attn_case {
    const char *name;
    int hq, hkv, d, causal, n_seqs;
    int lq[4], lk[4];
} attn_case;

static void ref_attention(const attn_case *c, const float *q, const float *k, const float *v, const int32_t *cu_q,
                          const int32_t *cu_k, float scale, double *ref) {
    const int D = c->d, group = c->hq / c->hkv;
    double *p = malloc(sizeof *p * 4096);
    for (int s = 0; s < c->n_seqs; s++) {
        const int lq = c->lq[s], lk = c->lk[s];
        for (int i = 0; i < lq; i++)
            for (int h = 0; h < c->hq; h++) {
                const int g = h / group;
                const float *qi = q + ((long)(cu_q[s] + i) * c->hq + h) * D;
                double *o = ref + ((long)(cu_q[s] + i) * c->hq + h) * D;
                int n = c->causal ? lk - lq + i + 1 : lk;
                if (n < 0) n = 0;
                if (n > lk) n = lk;
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t < n; t++) {
                    const float *kt = k + ((long)(cu_k[s] + t) * c->hkv + g) * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)qi[d] * kt[d];
                    p[t] = dot * scale;
                    mx = fmax(mx, p[t]);
                }
                for (int t = 0; t < n; t++) sum += (p[t] = exp(p[t] - mx));
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int t = 0; t < n; t++) acc += p[t] / sum * v[((long)(cu_k[s] + t) * c->hkv + g) * D + d];
                    o[d] = acc;
                }
            }
    }
    free(p);
}

static void run_attn_case(const attn_case *c) {
    int32_t cu_q[5] = {0}, cu_k[5] = {0};
    for (int s = 0; s < c->n_seqs; s++) {
        cu_q[s + 1] = cu_q[s] + c->lq[s];
        cu_k[s + 1] = cu_k[s] + c->lk[s];
    }
    const long tq = cu_q[c->n_seqs], tk = cu_k[c->n_seqs];
    const long nq = tq * c->hq * c->d, nk = tk * c->hkv * c->d;
    /* q scaled up so the softmax is peaky enough to matter */
    float *q = rnd(nq, -3, 3, 700 + c->d), *k = rnd(nk, -1, 1, 701 + c->d), *v = rnd(nk, -1, 1, 702 + c->d);
    float *out = rnd(nq, 5, 6, 703), *out1 = rnd(nq, 5, 6, 704); /* garbage that must be overwritten */
    double *ref = malloc((size_t)(nq > 0 ? nq : 1) * sizeof *ref);
    const float scale = 1.0f / sqrtf((float)c->d);
    ref_attention(c, q, k, v, cu_q, cu_k, scale, ref);
    vidi_tensor qt = vidi_tensor_3d(VIDI_DTYPE_F32, q, tq, c->hq, c->d);
    vidi_tensor kt = vidi_tensor_3d(VIDI_DTYPE_F32, k, tk, c->hkv, c->d);
    vidi_tensor vt = vidi_tensor_3d(VIDI_DTYPE_F32, v, tk, c->hkv, c->d);
    vidi_tensor ot = vidi_tensor_3d(VIDI_DTYPE_F32, out, tq, c->hq, c->d);
    vidi_tensor o1t = vidi_tensor_3d(VIDI_DTYPE_F32, out1, tq, c->hq, c->d);
    vidi_attn_args args = {cu_q, cu_k, c->n_seqs, c->causal, scale};
    vidi_err err = {0};
    CHECK(g_be->ops->attention(g_be, &qt, &kt, &vt, &ot, &args, &err) == VIDI_OK, "%s: %s", c->name, err.msg);
    check_close(c->name, out, ref, NULL, nq, 1e-5, 1e-5);
    CHECK(g_be1->ops->attention(g_be1, &qt, &kt, &vt, &o1t, &args, &err) == VIDI_OK, "%s (1 thread): %s", c->name,
          err.msg);
    CHECK(nq == 0 || memcmp(out, out1, (size_t)nq * sizeof *out) == 0, "%s: 1 thread and the pool differ", c->name);
    free(q), free(k), free(v), free(out), free(out1), free(ref);
}

static void test_attention_causal_gqa(void) {
    static const attn_case cases[] = {
        {"causal GQA 4:2 D=16, one sequence", 4, 2, 16, 1, 1, {37}, {37}},
        {"causal GQA 8:1 D=64, varlen with KV prefix and an empty sequence", 8, 1, 64, 1, 3, {5, 0, 19}, {17, 7, 19}},
        {"causal 14:2 D=64, decode steps Lq=1", 14, 2, 64, 1, 3, {1, 1, 1}, {1, 70, 33}},
        {"causal D=128, Lq > Lk: early queries see nothing", 2, 2, 128, 1, 2, {5, 20}, {3, 40}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_attn_case(&cases[i]);
}

static void test_attention_non_causal(void) {
    static const attn_case cases[] = {
        {"non-causal D=80, vision-style varlen", 3, 3, 80, 0, 3, {13, 1, 40}, {13, 1, 40}},
        {"non-causal GQA 4:2 D=128, Lk != Lq", 4, 2, 128, 0, 2, {7, 33}, {50, 2}},
        {"non-causal, a sequence with zero keys", 2, 1, 16, 0, 2, {4, 3}, {0, 5}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_attn_case(&cases[i]);
}

static void test_attention_no_keys_is_zero(void) {
    /* causal, Lq = 4 and Lk = 2: queries 0 and 1 sit before every key */
    float q[4 * 16], k[2 * 16], v[2 * 16], out[4 * 16];
    test_fill_uniform(q, 64, -1, 1, 1);
    test_fill_uniform(k, 32, -1, 1, 2);
    test_fill_uniform(v, 32, -1, 1, 3);
    for (int i = 0; i < 64; i++) out[i] = 7.0f;
    int32_t cu_q[2] = {0, 4}, cu_k[2] = {0, 2};
    vidi_tensor qt = vidi_tensor_3d(VIDI_DTYPE_F32, q, 4, 1, 16), kt = vidi_tensor_3d(VIDI_DTYPE_F32, k, 2, 1, 16);
    vidi_tensor vt = vidi_tensor_3d(VIDI_DTYPE_F32, v, 2, 1, 16), ot = vidi_tensor_3d(VIDI_DTYPE_F32, out, 4, 1, 16);
    vidi_attn_args args = {cu_q, cu_k, 1, 1, 0.25f};
    vidi_err err = {0};
    REQUIRE(g_be->ops->attention(g_be, &qt, &kt, &vt, &ot, &args, &err) == VIDI_OK, "%s", err.msg);
    for (int i = 0; i < 32; i++) CHECK(out[i] == 0.0f, "query %d dim %d: %g, want 0", i / 16, i % 16, out[i]);
    /* query 2 sees key 0 only: its output is v[0] */
    for (int d = 0; d < 16; d++) CHECK(fabsf(out[32 + d] - v[d]) < 1e-7f, "query 2 dim %d is not v[0]", d);
}

/* ---- gather / scatter ---- */

static void test_gather_rows(void) {
    const long R = 50, C = 33, N = 9;
    float *table = rnd(R * C, -2, 2, 900), *out = malloc(N * C * sizeof *out);
    uint16_t *half = malloc(R * C * 2);
    int32_t ids[9] = {0, 49, 3, 3, 17, 48, 1, 0, 25};
    vidi_tensor it = vidi_tensor_1d(VIDI_DTYPE_I32, ids, N), ot = vidi_tensor_2d(VIDI_DTYPE_F32, out, N, C);
    for (int dt = 0; dt < 3; dt++) {
        vidi_dtype d = dt == 0 ? VIDI_DTYPE_F32 : (dt == 1 ? VIDI_DTYPE_BF16 : VIDI_DTYPE_F16);
        void *data = table;
        if (d != VIDI_DTYPE_F32) {
            vidi_convert_from_f32(d, table, half, (size_t)(R * C));
            data = half;
        }
        vidi_tensor tt = vidi_tensor_2d(d, data, R, C);
        vidi_err err = {0};
        CHECK(g_be->ops->gather_rows(g_be, &tt, &it, &ot, &err) == VIDI_OK, "gather %s: %s", vidi_dtype_name(d),
              err.msg);
        int bad = 0;
        for (long i = 0; i < N; i++)
            for (long c = 0; c < C; c++) {
                float want = d == VIDI_DTYPE_F32 ? table[ids[i] * C + c]
                           : d == VIDI_DTYPE_BF16 ? vidi_bf16_to_f32(half[ids[i] * C + c])
                                                  : vidi_f16_to_f32(half[ids[i] * C + c]);
                bad += out[i * C + c] != want;
            }
        CHECK(bad == 0, "gather %s: %d values differ", vidi_dtype_name(d), bad);
    }
    free(table), free(out), free(half);
}

static void test_scatter_rows(void) {
    const long R = 20, C = 7, N = 4;
    float *dst = rnd(R * C, -1, 1, 910), *before = malloc(R * C * sizeof *before), *src = rnd(N * C, 3, 4, 911);
    memcpy(before, dst, R * C * sizeof *before);
    int32_t idx[4] = {19, 0, 5, 6};
    vidi_tensor st = vidi_tensor_2d(VIDI_DTYPE_F32, src, N, C), it = vidi_tensor_1d(VIDI_DTYPE_I32, idx, N);
    vidi_tensor dt = vidi_tensor_2d(VIDI_DTYPE_F32, dst, R, C);
    vidi_err err = {0};
    REQUIRE(g_be->ops->scatter_rows(g_be, &st, &it, &dt, &err) == VIDI_OK, "scatter: %s", err.msg);
    int bad = 0;
    for (long r = 0; r < R; r++) {
        long from = -1;
        for (long i = 0; i < N; i++)
            if (idx[i] == r) from = i;
        for (long c = 0; c < C; c++) bad += dst[r * C + c] != (from >= 0 ? src[from * C + c] : before[r * C + c]);
    }
    CHECK(bad == 0, "scatter: %d values differ", bad);
    free(dst), free(before), free(src);
}

/* ---- sampling ---- */

static vidi_status sample(const float *logits, long B, long V, vidi_sample_params p, uint64_t *st, int32_t *out) {
    vidi_tensor lt = vidi_tensor_2d(VIDI_DTYPE_F32, (void *)logits, B, V);
    vidi_err err = {0};
    vidi_status rc = g_be->ops->sample(g_be, &lt, &p, st, out, &err);
    if (rc != VIDI_OK) fprintf(stderr, "sample: %s\n", err.msg);
    return rc;
}

static void test_sample_greedy(void) {
    const float l[3 * 5] = {1, 5, 5, 2, 0, /* tie: lowest index */
                            -3, -2, -1, NAN, -1.5f, /* NaN never wins */
                            0, 0, 0, 0, 0};
    int32_t out[3] = {-1, -1, -1};
    REQUIRE(sample(l, 3, 5, (vidi_sample_params){0.0f, 0, 1.0f}, NULL, out) == VIDI_OK, "greedy");
    CHECK(out[0] == 1 && out[1] == 2 && out[2] == 0, "greedy gave %d %d %d, want 1 2 0", out[0], out[1], out[2]);
    /* top_k == 1 is greedy whatever the temperature, and leaves the RNG alone */
    uint64_t st[3] = {vidi_rng_seed(1), vidi_rng_seed(2), vidi_rng_seed(3)}, st0 = st[0];
    REQUIRE(sample(l, 3, 5, (vidi_sample_params){1.5f, 1, 0.9f}, st, out) == VIDI_OK, "top_k 1");
    CHECK(out[0] == 1 && out[1] == 2 && out[2] == 0, "top_k=1 gave %d %d %d, want 1 2 0", out[0], out[1], out[2]);
    CHECK(st[0] == st0, "greedy advanced the RNG");
}

static void test_sample_seeded_reproducible(void) {
    float l[64];
    test_fill_uniform(l, 64, -2, 2, 42);
    vidi_sample_params p = {0.9f, 20, 0.95f};
    uint64_t a = vidi_rng_seed(1234), b = vidi_rng_seed(1234), c = vidi_rng_seed(1235);
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 200; i++) {
        int32_t ta, tb, tc;
        REQUIRE(sample(l, 1, 64, p, &a, &ta) == VIDI_OK && sample(l, 1, 64, p, &b, &tb) == VIDI_OK &&
                    sample(l, 1, 64, p, &c, &tc) == VIDI_OK,
                "sample");
        same_ab &= ta == tb;
        same_ac &= ta == tc;
        CHECK(ta >= 0 && ta < 64, "token %d out of range", ta);
    }
    CHECK(same_ab, "the same seed gave different draws");
    CHECK(!same_ac, "different seeds gave 200 identical draws");
    CHECK(a == b && a != vidi_rng_seed(1234), "the state was not advanced in place");
}

static void test_sample_top_p_keeps_dominant_token(void) {
    float l[10] = {0, 0, 0, 10, 0, 0, 0, 0, 0, 0}; /* p(3) = e^10 / (e^10 + 9) = 0.9996 */
    uint64_t st = vidi_rng_seed(7);
    int others = 0;
    for (int i = 0; i < 2000; i++) {
        int32_t t;
        REQUIRE(sample(l, 1, 10, (vidi_sample_params){1.0f, 0, 0.9f}, &st, &t) == VIDI_OK, "sample");
        others += t != 3;
    }
    CHECK(others == 0, "top_p 0.9 drew %d tokens other than the dominant one", others);
}

/* Draws 20000 tokens and compares the frequencies with want[]. */
static void check_distribution(const char *what, const float *l, int V, vidi_sample_params p, const double *want) {
    enum { DRAWS = 20000 };
    int count[64] = {0};
    uint64_t st = vidi_rng_seed(99);
    for (int i = 0; i < DRAWS; i++) {
        int32_t t;
        if (sample(l, 1, V, p, &st, &t) != VIDI_OK || t < 0 || t >= V) {
            CHECK(0, "%s: sample failed or gave %d", what, t);
            return;
        }
        count[t]++;
    }
    for (int i = 0; i < V; i++) {
        double f = (double)count[i] / DRAWS, tol = 5 * sqrt(want[i] * (1 - want[i]) / DRAWS) + 0.002;
        CHECK(fabs(f - want[i]) <= tol, "%s: token %d drawn %.4f of the time, want %.4f (+- %.4f)", what, i, f,
              want[i], tol);
    }
}

static void test_sample_distribution(void) {
    float l[8];
    test_fill_uniform(l, 8, -2, 2, 5);
    double want[8], s = 0;
    const float T = 0.8f;
    for (int i = 0; i < 8; i++) s += want[i] = exp(l[i] / T);
    for (int i = 0; i < 8; i++) want[i] /= s;
    check_distribution("softmax(l / 0.8)", l, 8, (vidi_sample_params){T, 0, 1.0f}, want);

    /* top_k 3: only the three largest, renormalised */
    int order[8];
    for (int i = 0; i < 8; i++) order[i] = i;
    for (int i = 0; i < 8; i++)
        for (int j = i + 1; j < 8; j++)
            if (l[order[j]] > l[order[i]]) {
                int t = order[i];
                order[i] = order[j], order[j] = t;
            }
    double wk[8] = {0}, sk = 0;
    for (int i = 0; i < 3; i++) sk += wk[order[i]] = exp(l[order[i]] / T);
    for (int i = 0; i < 8; i++) wk[i] /= sk;
    check_distribution("top_k 3", l, 8, (vidi_sample_params){T, 3, 1.0f}, wk);

    /* top_p 0.7 over probabilities (0.5, 0.3, 0.15, 0.05): keeps 0 and 1 */
    const float lp[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    const double wp[4] = {0, 0.625, 0, 0.375};
    check_distribution("top_p 0.7", lp, 4, (vidi_sample_params){1.0f, 0, 0.7f}, wp);
}

static void test_sample_rows_have_own_state(void) {
    float l[2 * 16];
    test_fill_uniform(l, 32, -1, 1, 3);
    memcpy(l + 16, l, 16 * sizeof *l);
    uint64_t st[2] = {vidi_rng_seed(11), vidi_rng_seed(11)};
    int32_t out[2];
    int same = 1;
    for (int i = 0; i < 50; i++) {
        REQUIRE(sample(l, 2, 16, (vidi_sample_params){1.0f, 0, 1.0f}, st, out) == VIDI_OK, "sample");
        same &= out[0] == out[1];
    }
    CHECK(same && st[0] == st[1], "two rows with equal logits and seeds diverged");
}

static void test_rng(void) {
    uint64_t a = vidi_rng_seed(0), z = 0;
    CHECK(a != 0, "seed 0 gave a zero state");
    CHECK(vidi_rng_seed(0) == a && vidi_rng_seed(1) != a, "seeding is not a function of the seed");
    vidi_rng_next(&z);
    CHECK(z != 0, "a zero state stayed zero");
    double sum = 0;
    float lo = 1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        float u = vidi_rng_uniform(&a);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    CHECK(lo >= 0.0f && hi < 1.0f, "uniform left [0, 1): %g..%g", lo, hi);
    CHECK(fabs(sum / 100000 - 0.5) < 0.005, "uniform mean %g", sum / 100000);
}

/* ---- errors ---- */

#define EXPECT_ERR(call, want, ...)                                                                  \
    do {                                                                                             \
        vidi_err e_ = {0};                                                                           \
        vidi_status rc_ = (call);                                                                    \
        CHECK(rc_ == VIDI_ERR_INVALID, "%s: status %d, want invalid", #call, (int)rc_);              \
        const char *w_[] = {want, __VA_ARGS__};                                                      \
        for (size_t i_ = 0; i_ < sizeof w_ / sizeof w_[0]; i_++)                                     \
            CHECK(strstr(e_.msg, w_[i_]) != NULL, "%s: message '%s' lacks '%s'", #call, e_.msg, w_[i_]); \
        if (getenv("VIDI_TEST_VERBOSE")) printf("  %s\n", e_.msg);                              \
    } while (0)

static void test_errors(void) {
    vidi_backend *be = g_be;
    float a[64] = {0}, b[64] = {0}, c[64] = {0};
    vidi_tensor x23 = vidi_tensor_2d(VIDI_DTYPE_F32, a, 2, 3), w43 = vidi_tensor_2d(VIDI_DTYPE_F32, b, 4, 3);
    vidi_tensor w44 = vidi_tensor_2d(VIDI_DTYPE_F32, b, 4, 4), y24 = vidi_tensor_2d(VIDI_DTYPE_F32, c, 2, 4);
    vidi_tensor y25 = vidi_tensor_2d(VIDI_DTYPE_F32, c, 2, 5), x24 = vidi_tensor_2d(VIDI_DTYPE_F32, a, 2, 4);
    vidi_tensor b5 = vidi_tensor_1d(VIDI_DTYPE_F32, b + 20, 5);
    EXPECT_ERR(be->ops->matmul(be, &x23, &w44, NULL, &y24, &e_), "matmul", "3 columns", "4");
    EXPECT_ERR(be->ops->matmul(be, &x23, &w43, NULL, &y25, &e_), "matmul", "y [2, 5]");
    EXPECT_ERR(be->ops->matmul(be, &x23, &w43, &b5, &y24, &e_), "matmul", "bias [5]");
    vidi_tensor w33 = vidi_tensor_2d(VIDI_DTYPE_F32, b, 3, 3);
    EXPECT_ERR(be->ops->matmul(be, &x23, &w33, NULL, &x23, &e_), "matmul", "y overlaps x");
    vidi_tensor i32t = vidi_tensor_2d(VIDI_DTYPE_I32, a, 2, 3);
    EXPECT_ERR(be->ops->matmul(be, &i32t, &w43, NULL, &y24, &e_), "matmul", "x [2, 3] i32", "f32");

    EXPECT_ERR(be->ops->add(be, &x23, &x24, &x24, &e_), "add", "[2, 3]", "[2, 4]");
    vidi_tensor shifted = vidi_tensor_2d(VIDI_DTYPE_F32, a + 1, 2, 3); /* partial overlap with x23 */
    EXPECT_ERR(be->ops->add(be, &x23, &x23, &shifted, &e_), "add", "overlaps");

    vidi_tensor w3 = vidi_tensor_1d(VIDI_DTYPE_F32, b, 3);
    EXPECT_ERR(be->ops->rms_norm(be, &x24, &w3, 1e-6f, &x24, &e_), "rms_norm", "w [3]");
    EXPECT_ERR(be->ops->layer_norm(be, &x24, &w3, NULL, 1e-6f, &x24, &e_), "layer_norm", "w [3]");
    EXPECT_ERR(be->ops->softmax(be, &x23, &x24, &e_), "softmax", "differ");
    EXPECT_ERR(be->ops->act(be, (vidi_act)9, &x23, &x23, &e_), "act", "activation 9");

    /* rope: head_dim mismatch, axis out of range, pos shape */
    int32_t axis[8] = {0, 0, 0, 0, 0, 0, 0, 3}, pos[4] = {0, 1, 2, 3};
    float inv[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    vidi_tensor xr = vidi_tensor_3d(VIDI_DTYPE_F32, a, 2, 2, 16), pr = vidi_tensor_2d(VIDI_DTYPE_I32, pos, 2, 2);
    vidi_rope_spec sp = {8, 2, axis, inv};
    EXPECT_ERR(be->ops->rope(be, &xr, &pr, &sp, &e_), "rope", "head_dim 8");
    sp.head_dim = 16;
    EXPECT_ERR(be->ops->rope(be, &xr, &pr, &sp, &e_), "rope", "pair_axis[7] = 3");
    axis[7] = 1, sp.n_axes = 3;
    EXPECT_ERR(be->ops->rope(be, &xr, &pr, &sp, &e_), "rope", "pos [2, 2]", "[2, 3]");

    /* attention */
    int32_t cu2[2] = {0, 2}, cu_bad[3] = {0, 2, 1};
    vidi_tensor q = vidi_tensor_3d(VIDI_DTYPE_F32, a, 2, 3, 4), k = vidi_tensor_3d(VIDI_DTYPE_F32, b, 2, 2, 4);
    vidi_tensor kv1 = vidi_tensor_3d(VIDI_DTYPE_F32, b, 2, 1, 4), o = vidi_tensor_3d(VIDI_DTYPE_F32, c, 2, 3, 4);
    vidi_attn_args args = {cu2, cu2, 1, 1, 0.5f};
    EXPECT_ERR(be->ops->attention(be, &q, &k, &k, &o, &args, &e_), "attention", "3 query heads", "2 kv heads");
    EXPECT_ERR(be->ops->attention(be, &q, &kv1, &kv1, &q, &args, &e_), "attention", "out overlaps q");
    vidi_attn_args bad = {cu_bad, cu2, 2, 1, 0.5f};
    EXPECT_ERR(be->ops->attention(be, &q, &kv1, &kv1, &o, &bad, &e_), "attention", "cu_q[2] = 1");
    int32_t cu3[2] = {0, 3};
    vidi_attn_args short_k = {cu2, cu3, 1, 1, 0.5f};
    EXPECT_ERR(be->ops->attention(be, &q, &kv1, &kv1, &o, &short_k, &e_), "attention", "cu_k[1] = 3", "2 rows");

    /* gather / scatter ids out of range, naming the id */
    int32_t ids[3] = {0, 4, 1}, neg[2] = {-1, 0};
    vidi_tensor table = vidi_tensor_2d(VIDI_DTYPE_F32, b, 4, 4), it = vidi_tensor_1d(VIDI_DTYPE_I32, ids, 3);
    vidi_tensor out3 = vidi_tensor_2d(VIDI_DTYPE_F32, c, 3, 4), nt = vidi_tensor_1d(VIDI_DTYPE_I32, neg, 2);
    EXPECT_ERR(be->ops->gather_rows(be, &table, &it, &out3, &e_), "gather_rows", "ids[1] = 4", "[0, 4)");
    vidi_tensor src2 = vidi_tensor_2d(VIDI_DTYPE_F32, a, 2, 4);
    EXPECT_ERR(be->ops->scatter_rows(be, &src2, &nt, &table, &e_), "scatter_rows", "idx[0] = -1");
    EXPECT_ERR(be->ops->gather_rows(be, &table, &it, &y24, &e_), "gather_rows", "out [2, 4]");

    /* sampling arguments */
    float l[4] = {0};
    vidi_tensor lt = vidi_tensor_2d(VIDI_DTYPE_F32, l, 1, 4);
    int32_t tok;
    vidi_sample_params sp1 = {1.0f, -2, 1.0f}, sp2 = {1.0f, 0, 1.0f};
    EXPECT_ERR(be->ops->sample(be, &lt, &sp1, NULL, &tok, &e_), "sample", "top_k -2");
    EXPECT_ERR(be->ops->sample(be, &lt, &sp2, NULL, &tok, &e_), "sample", "rng_state");

    /* copy ranges must not overlap */
    EXPECT_ERR(be->ops->copy(be, a + 2, a, 16, &e_), "copy", "overlap");
}

static void test_memory_ops(void) {
    float *dev = g_be->ops->buf_alloc(g_be, 100 * sizeof(float));
    REQUIRE(dev, "buf_alloc");
    CHECK(((uintptr_t)dev & 63) == 0, "buf_alloc is not 64-byte aligned");
    float host[100], back[100], copy[100];
    test_fill_uniform(host, 100, -1, 1, 8);
    vidi_err err = {0};
    CHECK(g_be->ops->copy_to_device(g_be, dev, host, sizeof host, &err) == VIDI_OK, "%s", err.msg);
    float *dev2 = g_be->ops->buf_alloc(g_be, sizeof copy);
    REQUIRE(dev2, "buf_alloc");
    CHECK(g_be->ops->copy(g_be, dev2, dev, sizeof copy, &err) == VIDI_OK, "%s", err.msg);
    CHECK(g_be->ops->copy_to_host(g_be, back, dev2, sizeof back, &err) == VIDI_OK, "%s", err.msg);
    CHECK(g_be->ops->synchronize(g_be, &err) == VIDI_OK, "%s", err.msg);
    CHECK(memcmp(host, back, sizeof host) == 0, "copies changed the data");
    g_be->ops->buf_free(g_be, dev);
    g_be->ops->buf_free(g_be, dev2);
    void *zero = g_be->ops->buf_alloc(g_be, 0);
    CHECK(zero != NULL, "buf_alloc(0) returned NULL");
    g_be->ops->buf_free(g_be, zero);
    CHECK(strcmp(g_be->name, "cpu") == 0 && g_be->act_dtype == VIDI_DTYPE_F32, "backend name / act dtype");
}

int main(int argc, char **argv) {
    vidi_err err = {0};
    g_be = vidi_backend_cpu_create(0, &err);
    g_be1 = vidi_backend_cpu_create(1, &err);
    if (!g_be || !g_be1) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    static const test_case cases[] = {
        {"matmul_f32_shapes", test_matmul_f32_shapes},
        {"matmul_half_weights", test_matmul_half_weights},
        {"matmul_acc", test_matmul_acc},
        {"qkv_rope_store", test_qkv_rope_store},
        {"add_in_place", test_add_in_place},
        {"rms_norm", test_rms_norm},
        {"layer_norm", test_layer_norm},
        {"activations", test_activations},
        {"softmax", test_softmax},
        {"rope_1d", test_rope_1d},
        {"rope_mrope", test_rope_mrope},
        {"rope_vision_2d", test_rope_vision_2d},
        {"attention_causal_gqa", test_attention_causal_gqa},
        {"attention_non_causal", test_attention_non_causal},
        {"attention_no_keys_is_zero", test_attention_no_keys_is_zero},
        {"gather_rows", test_gather_rows},
        {"scatter_rows", test_scatter_rows},
        {"sample_greedy", test_sample_greedy},
        {"sample_seeded_reproducible", test_sample_seeded_reproducible},
        {"sample_top_p_keeps_dominant_token", test_sample_top_p_keeps_dominant_token},
        {"sample_distribution", test_sample_distribution},
        {"sample_rows_have_own_state", test_sample_rows_have_own_state},
        {"rng", test_rng},
        {"errors", test_errors},
        {"memory_ops", test_memory_ops},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    g_be->ops->destroy(g_be);
    g_be1->ops->destroy(g_be1);
    return rc;
}
