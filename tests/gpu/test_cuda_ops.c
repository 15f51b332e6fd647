/* tests/gpu/test_cuda_ops.c — every op of the CUDA backend against its CPU
 * twin (kernels/cpu) on the same random inputs.
 *
 * Inputs are drawn as f32, rounded to the CUDA backend's activation dtype
 * (bf16) and uploaded as such; the CPU backend runs on the same rounded
 * values widened back to f32, so both see identical numbers. Weights are
 * bf16 on both backends (the CPU widens them exactly).
 *
 * Tolerances, per element, with M = max |ref| over the output:
 *  - matmul, add, norms, activations, softmax, rope:
 *        |gpu - cpu| <= 1e-2 |cpu| + 1e-2 M + 1e-6
 *    (a bf16 output alone is off by up to 2^-9 = 0.2 % of |cpu|; the rest
 *    is fp32 accumulation order and fast math, scaled by the row's size);
 *  - attention (dense and paged): |gpu - cpu| <= 2e-2 |cpu| + 2e-2 M + 1e-6
 *    (the probabilities are rounded to bf16 before P·V in a flash kernel);
 *  - gather_rows, scatter_rows: exact (rows are copied, not computed);
 *  - sample: greedy tokens exactly equal; seeded top-k / top-p tokens and
 *    the advanced RNG states exactly equal (random logits make a draw that
 *    lands within an ulp of a boundary, where the summation order could
 *    matter, practically impossible).
 *
 * Each case is one ctest (cuda_<case>, label gpu); the program exits 77 when
 * this machine has no CUDA device.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "kernels/cuda/cuda_info.h"
#include "kernels/ops.h"
#include "test_util.h"

#define TOL_REL 1e-2
#define TOL_MAX 1e-2
#define TOL_ATTN_REL 2e-2
#define TOL_ATTN_MAX 2e-2

static vidi_backend *g_cpu;
static vidi_backend *g_gpu;

/* ---- helpers ---- */

static float *rnd(long n, float lo, float hi, unsigned long long seed) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    test_fill_uniform(x, n, lo, hi, seed);
    return x;
}

static float *zeros(long n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

/* Rounds x to dtype dt in place (the values the GPU will hold). */
static void round_to(vidi_dtype dt, float *x, long n) {
    if (dt == VIDI_DTYPE_F32 || n <= 0) return;
    uint16_t *h = malloc((size_t)n * 2);
    vidi_convert_from_f32(dt, x, h, (size_t)n);
    vidi_convert_to_f32(dt, h, x, (size_t)n);
    free(h);
}

/* Random activations already rounded to the GPU's act dtype. */
static float *rnd_act(long n, float lo, float hi, unsigned long long seed) {
    float *x = rnd(n, lo, hi, seed);
    round_to(g_gpu->act_dtype, x, n);
    return x;
}

/* Backend memory holding n values of x converted to dt (NULL on failure). */
static void *up(vidi_backend *be, vidi_dtype dt, const void *x, long n) {
    size_t bytes = (size_t)(n > 0 ? n : 1) * vidi_dtype_size(dt);
    void *d = be->ops->buf_alloc(be, bytes);
    void *h = malloc(bytes);
    vidi_err err = {0};
    if (!d || !h) goto fail;
    if (dt == VIDI_DTYPE_I32)
        memcpy(h, x, (size_t)(n > 0 ? n : 0) * 4);
    else
        vidi_convert_from_f32(dt, x, h, (size_t)(n > 0 ? n : 0));
    if (n > 0 && be->ops->copy_to_device(be, d, h, (size_t)n * vidi_dtype_size(dt), &err) != VIDI_OK) {
        CHECK(0, "%s: copy_to_device: %s", be->name, err.msg);
        goto fail;
    }
    free(h);
    return d;
fail:
    CHECK(d && h, "%s: cannot allocate %zu bytes", be->name, bytes);
    if (d) be->ops->buf_free(be, d);
    free(h);
    return NULL;
}

/* Activations in be's act dtype. */
static void *up_act(vidi_backend *be, const float *x, long n) { return up(be, be->act_dtype, x, n); }

/* n values of dtype dt in backend memory, widened into out. */
static void down(vidi_backend *be, vidi_dtype dt, const void *d, long n, float *out) {
    if (n <= 0) return;
    size_t bytes = (size_t)n * vidi_dtype_size(dt);
    void *h = malloc(bytes);
    vidi_err err = {0};
    vidi_status st = be->ops->copy_to_host(be, h, d, bytes, &err);
    CHECK(st == VIDI_OK, "%s: copy_to_host: %s", be->name, err.msg);
    if (st == VIDI_OK) vidi_convert_to_f32(dt, h, out, (size_t)n);
    else memset(out, 0, (size_t)n * sizeof *out);
    free(h);
}

static void down_act(vidi_backend *be, const void *d, long n, float *out) { down(be, be->act_dtype, d, n, out); }

static void release(vidi_backend *be, void *d) {
    if (d) be->ops->buf_free(be, d);
}

/* |got - ref| <= rel |ref| + rel_max * max|ref| + 1e-6 everywhere;
 * reports the worst element. */
static void check_near(const char *what, const float *got, const float *ref, long n, double rel, double rel_max) {
    double mx = 0;
    for (long i = 0; i < n; i++)
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    long worst = -1;
    double worst_excess = 0;
    for (long i = 0; i < n; i++) {
        double tol = rel * fabs(ref[i]) + rel_max * mx + 1e-6, d = fabs((double)got[i] - ref[i]);
        if (!(d <= tol) && (worst < 0 || d - tol > worst_excess || isnan(d))) {
            worst = i;
            worst_excess = d - tol;
        }
    }
    CHECK(worst < 0, "%s: element %ld is %.6g on the GPU, %.6g on the CPU (max|ref| %.4g, over by %.3g)", what,
          worst, worst >= 0 ? got[worst] : 0.0, worst >= 0 ? ref[worst] : 0.0, mx, worst_excess);
}

static void check_equal(const char *what, const float *got, const float *ref, long n) {
    long bad = -1;
    for (long i = 0; i < n && bad < 0; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float)) != 0) bad = i;
    CHECK(bad < 0, "%s: element %ld is %.9g on the GPU, %.9g on the CPU", what, bad, bad >= 0 ? got[bad] : 0.0,
          bad >= 0 ? ref[bad] : 0.0);
}

#define OK_ON(be, call, what)                                                                      \
    do {                                                                                           \
        vidi_err err_ = {0};                                                                       \
        vidi_status st_ = (call);                                                                  \
        CHECK(st_ == VIDI_OK, "%s on %s: %s", (what), (be)->name, err_.msg);                       \
    } while (0)
#define ERR_ARG (&err_)

/* ---- matmul ---- */

/* acc: y starts as r and matmul_acc adds the product. */
static void run_matmul_acc(long M, long K, long N, int with_bias, int acc) {
    char what[96];
    snprintf(what, sizeof what, "matmul%s M=%ld K=%ld N=%ld%s", acc ? "_acc" : "", M, K, N, with_bias ? " +bias" : "");
    float *x = rnd_act(M * K, -1, 1, 11 + (unsigned long long)M), *w = rnd(N * K, -1, 1, 12 + (unsigned long long)K);
    float *b = rnd(N, -1, 1, 13);
    round_to(VIDI_DTYPE_BF16, w, N * K);
    round_to(VIDI_DTYPE_BF16, b, N);
    float *out[2] = {acc ? rnd_act(M * N, -2, 2, 14) : zeros(M * N), acc ? rnd_act(M * N, -2, 2, 14) : zeros(M * N)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dx = up_act(be, x, M * K), *dw = up(be, VIDI_DTYPE_BF16, w, N * K), *db = up(be, VIDI_DTYPE_BF16, b, N);
        void *dy = up_act(be, out[i], M * N);
        vidi_tensor tx = vidi_tensor_2d(be->act_dtype, dx, M, K), tw = vidi_tensor_2d(VIDI_DTYPE_BF16, dw, N, K);
        vidi_tensor tb = vidi_tensor_1d(VIDI_DTYPE_BF16, db, N), ty = vidi_tensor_2d(be->act_dtype, dy, M, N);
        if (dx && dw && db && dy) {
            if (acc)
                OK_ON(be, be->ops->matmul_acc(be, &tx, &tw, with_bias ? &tb : NULL, &ty, ERR_ARG), what);
            else
                OK_ON(be, be->ops->matmul(be, &tx, &tw, with_bias ? &tb : NULL, &ty, ERR_ARG), what);
            down_act(be, dy, M * N, out[i]);
        }
        release(be, dx), release(be, dw), release(be, db), release(be, dy);
    }
    check_near(what, out[1], out[0], M * N, TOL_REL, TOL_MAX);
    free(x), free(w), free(b), free(out[0]), free(out[1]);
}

static void run_matmul(long M, long K, long N, int with_bias) { run_matmul_acc(M, K, N, with_bias, 0); }

static void test_matmul_acc(void) {
    static const long ms[] = {1, 7, 64, 300};
    for (int i = 0; i < 4; i++) {
        run_matmul_acc(ms[i], 1536, 256, 0, 1);
        run_matmul_acc(ms[i], 1280, 200, 1, 1);
    }
}

static void test_matmul(void) {
    static const long ms[] = {1, 7, 64, 300};
    for (int i = 0; i < 4; i++) {
        run_matmul(ms[i], 1536, 256, 0);
        run_matmul(ms[i], 1280, 200, 1);
    }
    run_matmul(33, 96, 8960, 1); /* a wide output, odd M */
}

/* ---- elementwise, norms, softmax ---- */

static void test_add(void) {
    const long n = 3 * 1000 * 1000 + 7; /* odd length: a vector tail */
    float *a = rnd_act(n, -4, 4, 21), *b = rnd_act(n, -4, 4, 22);
    float *out[2] = {zeros(n), zeros(n)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *da = up_act(be, a, n), *db = up_act(be, b, n), *dy = up_act(be, out[i], n);
        vidi_tensor ta = vidi_tensor_1d(be->act_dtype, da, n), tb = vidi_tensor_1d(be->act_dtype, db, n);
        vidi_tensor ty = vidi_tensor_1d(be->act_dtype, dy, n);
        if (da && db && dy) {
            OK_ON(be, be->ops->add(be, &ta, &tb, &ty, ERR_ARG), "add");
            down_act(be, dy, n, out[i]);
            /* in place: a += b */
            OK_ON(be, be->ops->add(be, &ta, &tb, &ta, ERR_ARG), "add in place");
            float *back = zeros(n);
            down_act(be, da, n, back);
            check_near("add in place vs out of place", back, out[i], n, 0, 0);
            free(back);
        }
        release(be, da), release(be, db), release(be, dy);
    }
    check_near("add", out[1], out[0], n, TOL_REL, TOL_MAX);
    free(a), free(b), free(out[0]), free(out[1]);
}

/* kind 0: rms_norm; 1: layer_norm with bias; 2: layer_norm without bias */
static void run_norm(int kind, long rows, long cols) {
    char what[64];
    snprintf(what, sizeof what, "%s rows=%ld cols=%ld", kind == 0 ? "rms_norm" : kind == 1 ? "layer_norm+b" : "layer_norm",
             rows, cols);
    float *x = rnd_act(rows * cols, -3, 5, 31 + (unsigned long long)cols), *w = rnd(cols, 0.5f, 1.5f, 32);
    float *b = rnd(cols, -1, 1, 33);
    round_to(VIDI_DTYPE_BF16, w, cols);
    round_to(VIDI_DTYPE_BF16, b, cols);
    float *out[2] = {zeros(rows * cols), zeros(rows * cols)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dx = up_act(be, x, rows * cols), *dw = up(be, VIDI_DTYPE_BF16, w, cols);
        void *db = up(be, VIDI_DTYPE_BF16, b, cols), *dy = up_act(be, out[i], rows * cols);
        vidi_tensor tx = vidi_tensor_2d(be->act_dtype, dx, rows, cols), ty = vidi_tensor_2d(be->act_dtype, dy, rows, cols);
        vidi_tensor tw = vidi_tensor_1d(VIDI_DTYPE_BF16, dw, cols), tb = vidi_tensor_1d(VIDI_DTYPE_BF16, db, cols);
        if (dx && dw && db && dy) {
            if (kind == 0)
                OK_ON(be, be->ops->rms_norm(be, &tx, &tw, 1e-6f, &ty, ERR_ARG), what);
            else
                OK_ON(be, be->ops->layer_norm(be, &tx, &tw, kind == 1 ? &tb : NULL, 1e-6f, &ty, ERR_ARG), what);
            down_act(be, dy, rows * cols, out[i]);
        }
        release(be, dx), release(be, dw), release(be, db), release(be, dy);
    }
    check_near(what, out[1], out[0], rows * cols, TOL_REL, TOL_MAX);
    free(x), free(w), free(b), free(out[0]), free(out[1]);
}

static void test_rms_norm(void) {
    run_norm(0, 37, 1536);
    run_norm(0, 5, 3584);
    run_norm(0, 3, 80);
}

static void test_layer_norm(void) {
    run_norm(1, 41, 1280);
    run_norm(2, 7, 1536);
    run_norm(1, 2, 80);
}

static const char *const act_names[] = {"gelu_erf", "gelu_tanh", "quick_gelu", "silu"};

/* with_mul: act_mul(kind, gate, up), else act(kind, x). */
static void run_act(vidi_act kind, int with_mul) {
    char what[64];
    snprintf(what, sizeof what, "%s %s", with_mul ? "act_mul" : "act", act_names[kind]);
    const long rows = 9, cols = 1111, n = rows * cols;
    float *g = rnd_act(n, -6, 6, 41 + (unsigned long long)kind), *u = rnd_act(n, -2, 2, 42);
    float *out[2] = {zeros(n), zeros(n)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dg = up_act(be, g, n), *du = up_act(be, u, n), *dy = up_act(be, out[i], n);
        vidi_tensor tg = vidi_tensor_2d(be->act_dtype, dg, rows, cols), tu = vidi_tensor_2d(be->act_dtype, du, rows, cols);
        vidi_tensor ty = vidi_tensor_2d(be->act_dtype, dy, rows, cols);
        if (dg && du && dy) {
            if (with_mul)
                OK_ON(be, be->ops->act_mul(be, kind, &tg, &tu, &ty, ERR_ARG), what);
            else
                OK_ON(be, be->ops->act(be, kind, &tg, &ty, ERR_ARG), what);
            down_act(be, dy, n, out[i]);
        }
        release(be, dg), release(be, du), release(be, dy);
    }
    check_near(what, out[1], out[0], n, TOL_REL, TOL_MAX);
    free(g), free(u), free(out[0]), free(out[1]);
}

static void test_act_each(void) {
    for (int k = VIDI_ACT_GELU_ERF; k <= VIDI_ACT_SILU; k++) run_act((vidi_act)k, 0);
}

static void test_act_mul(void) {
    for (int k = VIDI_ACT_GELU_ERF; k <= VIDI_ACT_SILU; k++) run_act((vidi_act)k, 1);
}

static void run_softmax(long rows, long cols, float lo, float hi) {
    char what[64];
    snprintf(what, sizeof what, "softmax rows=%ld cols=%ld", rows, cols);
    float *x = rnd_act(rows * cols, lo, hi, 51 + (unsigned long long)cols);
    float *out[2] = {zeros(rows * cols), zeros(rows * cols)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dx = up_act(be, x, rows * cols), *dy = up_act(be, out[i], rows * cols);
        vidi_tensor tx = vidi_tensor_2d(be->act_dtype, dx, rows, cols), ty = vidi_tensor_2d(be->act_dtype, dy, rows, cols);
        if (dx && dy) {
            OK_ON(be, be->ops->softmax(be, &tx, &ty, ERR_ARG), what);
            down_act(be, dy, rows * cols, out[i]);
        }
        release(be, dx), release(be, dy);
    }
    check_near(what, out[1], out[0], rows * cols, TOL_REL, TOL_MAX);
    free(x), free(out[0]), free(out[1]);
}

static void test_softmax(void) {
    run_softmax(13, 3000, -8, 8);
    run_softmax(64, 64, -30, 30);
    run_softmax(2, 151936, -10, 10);
}

/* ---- rope ---- */

static void run_rope(const char *what, int D, int n_axes, const int32_t *axis, const float *inv, long T, long H) {
    float *x = rnd_act(T * H * D, -1, 1, 61 + (unsigned long long)D);
    int32_t *pos = malloc((size_t)(T * n_axes) * sizeof *pos);
    for (long i = 0; i < T * n_axes; i++) pos[i] = (int32_t)((i * 7919 + 13) % 4096);
    vidi_rope_spec spec = {D, n_axes, axis, inv};
    float *out[2] = {zeros(T * H * D), zeros(T * H * D)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dx = up_act(be, x, T * H * D), *dp = up(be, VIDI_DTYPE_I32, pos, T * n_axes);
        vidi_tensor tx = vidi_tensor_3d(be->act_dtype, dx, T, H, D), tp = vidi_tensor_2d(VIDI_DTYPE_I32, dp, T, n_axes);
        if (dx && dp) {
            OK_ON(be, be->ops->rope(be, &tx, &tp, &spec, ERR_ARG), what);
            down_act(be, dx, T * H * D, out[i]);
        }
        release(be, dx), release(be, dp);
    }
    check_near(what, out[1], out[0], T * H * D, TOL_REL, TOL_MAX);
    free(x), free(pos), free(out[0]), free(out[1]);
}

static void test_rope_1d(void) {
    int32_t axis[64];
    float inv[64];
    for (int D = 64; D <= 128; D *= 2) {
        for (int i = 0; i < D / 2; i++) axis[i] = 0, inv[i] = (float)pow(1000000.0, -2.0 * i / D);
        run_rope(D == 64 ? "rope 1-D D=64" : "rope 1-D D=128", D, 1, axis, inv, 300, 4);
    }
}

/* Vision 2-D rope: D/4 pairs per axis (row, then column), frequencies
 * restarting per axis, as tests/unit/test_cpu_ops.c builds them. */
static void test_rope_vision_2d(void) {
    static const int dims[] = {16, 80};
    for (int k = 0; k < 2; k++) {
        int D = dims[k], quarter = D / 4;
        int32_t axis[64];
        float inv[64];
        for (int j = 0; j < quarter; j++) {
            float f = (float)pow(10000.0, -2.0 * j / (D / 2));
            axis[j] = 0, inv[j] = f;
            axis[quarter + j] = 1, inv[quarter + j] = f;
        }
        run_rope(D == 16 ? "vision rope D=16" : "vision rope D=80", D, 2, axis, inv, 257, 16);
    }
}

static void test_rope_mrope(void) {
    static const int sections[3] = {16, 24, 24};
    int32_t axis[64];
    float inv[64];
    for (int a = 0, i = 0; a < 3; a++)
        for (int j = 0; j < sections[a]; j++, i++) axis[i] = a, inv[i] = (float)pow(1000000.0, -2.0 * i / 128);
    run_rope("M-RoPE D=128 [16,24,24]", 128, 3, axis, inv, 211, 12);
}

/* qkv_rope_store against the CPU twin: T tokens of 2B-like heads (12 q, 2
 * kv, D 128, M-RoPE), slots spread over a cache; then a bad slot is
 * reported at the next wait and no cache row is written. */
static void run_qkv_rope_store(long T) {
    enum { HQ = 12, HKV = 2, D = 128, R = 600, NA = 3 };
    const long C = (HQ + 2 * HKV) * D, KV = (long)HKV * D;
    char what[64];
    snprintf(what, sizeof what, "qkv_rope_store T=%ld", T);
    static const int sections[3] = {16, 24, 24};
    int32_t axis[64];
    float inv[64];
    for (int a = 0, i = 0; a < 3; a++)
        for (int j = 0; j < sections[a]; j++, i++) axis[i] = a, inv[i] = (float)pow(1000000.0, -2.0 * i / 128);
    vidi_rope_spec spec = {D, NA, axis, inv};
    float *qkv = rnd_act(T * C, -1, 1, 401), *cache0 = rnd_act(R * KV, -1, 1, 402);
    int32_t *pos = malloc(sizeof(int32_t) * T * NA), *slots = malloc(sizeof(int32_t) * T);
    for (long i = 0; i < T * NA; i++) pos[i] = (int32_t)((i * 7919 + 13) % 4096);
    for (long t = 0; t < T; t++) slots[t] = (int32_t)((t * 37 + 11) % R); /* distinct for T <= R */
    float *q[2] = {zeros(T * HQ * D), zeros(T * HQ * D)}, *k[2] = {zeros(R * KV), zeros(R * KV)};
    float *v[2] = {zeros(R * KV), zeros(R * KV)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dqkv = up_act(be, qkv, T * C), *dp = up(be, VIDI_DTYPE_I32, pos, T * NA);
        void *ds = up(be, VIDI_DTYPE_I32, slots, T), *dq = up_act(be, q[i], T * HQ * D);
        void *dk = up_act(be, cache0, R * KV), *dv = up_act(be, cache0, R * KV);
        vidi_tensor tqkv = vidi_tensor_2d(be->act_dtype, dqkv, T, C), tp = vidi_tensor_2d(VIDI_DTYPE_I32, dp, T, NA);
        vidi_tensor ts = vidi_tensor_1d(VIDI_DTYPE_I32, ds, T), tq = vidi_tensor_3d(be->act_dtype, dq, T, HQ, D);
        vidi_tensor tk = vidi_tensor_2d(be->act_dtype, dk, R, KV), tv = vidi_tensor_2d(be->act_dtype, dv, R, KV);
        if (dqkv && dp && ds && dq && dk && dv) {
            OK_ON(be, be->ops->qkv_rope_store(be, &tqkv, &tp, &spec, &tq, &ts, &tk, &tv, ERR_ARG), what);
            down_act(be, dq, T * HQ * D, q[i]);
            down_act(be, dk, R * KV, k[i]);
            down_act(be, dv, R * KV, v[i]);
            if (i == 1) {
                /* a bad slot: reported at the next wait, the caches untouched */
                int32_t bad = R + 5;
                vidi_err e = {0};
                CHECK(be->ops->copy_to_device(be, (int32_t *)ds + T - 1, &bad, sizeof bad, &e) == VIDI_OK, "%s", e.msg);
                vidi_status st = be->ops->qkv_rope_store(be, &tqkv, &tp, &spec, &tq, &ts, &tk, &tv, &e);
                if (st == VIDI_OK) st = be->ops->synchronize(be, &e);
                CHECK(st == VIDI_ERR_INVALID && strstr(e.msg, "qkv_rope_store") && strstr(e.msg, "slots"),
                      "%s: a bad slot gave %d: %s", what, (int)st, e.msg);
                float *k2 = zeros(R * KV);
                down_act(be, dk, R * KV, k2);
                check_equal("qkv_rope_store: cache after a refused store", k2, k[1], R * KV);
                free(k2);
            }
        }
        release(be, dqkv), release(be, dp), release(be, ds), release(be, dq), release(be, dk), release(be, dv);
    }
    check_near(what, q[1], q[0], T * HQ * D, TOL_REL, TOL_MAX);
    check_near(what, k[1], k[0], R * KV, TOL_REL, TOL_MAX);
    check_equal("qkv_rope_store v", v[1], v[0], R * KV);
    free(qkv), free(cache0), free(pos), free(slots);
    for (int i = 0; i < 2; i++) free(q[i]), free(k[i]), free(v[i]);
}

static void test_qkv_rope_store(void) {
    run_qkv_rope_store(1);
    run_qkv_rope_store(64);
    run_qkv_rope_store(300);
}

/* ---- gather / scatter ---- */

static void test_gather_rows(void) {
    const long rows = 1000, cols = 96, n = 77;
    float *table = rnd(rows * cols, -1, 1, 71);
    round_to(VIDI_DTYPE_BF16, table, rows * cols);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (long i = 0; i < n; i++) ids[i] = (int32_t)((i * 389 + 5) % rows);
    ids[3] = ids[4]; /* repeats are fine */
    ids[0] = 0, ids[n - 1] = (int32_t)(rows - 1);
    float *out[2] = {zeros(n * cols), zeros(n * cols)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dt = up(be, VIDI_DTYPE_BF16, table, rows * cols), *di = up(be, VIDI_DTYPE_I32, ids, n);
        void *dy = up_act(be, out[i], n * cols);
        vidi_tensor tt = vidi_tensor_2d(VIDI_DTYPE_BF16, dt, rows, cols), ti = vidi_tensor_1d(VIDI_DTYPE_I32, di, n);
        vidi_tensor ty = vidi_tensor_2d(be->act_dtype, dy, n, cols);
        if (dt && di && dy) {
            OK_ON(be, be->ops->gather_rows(be, &tt, &ti, &ty, ERR_ARG), "gather_rows");
            down_act(be, dy, n * cols, out[i]);
        }
        release(be, dt), release(be, di), release(be, dy);
    }
    check_equal("gather_rows", out[1], out[0], n * cols);
    free(table), free(ids), free(out[0]), free(out[1]);
}

/* An id out of range is VIDI_ERR_INVALID with a message, and the backend
 * keeps working afterwards. */
/* upload_convert: f32 -> bf16 over three staging chunks, f16 -> f32 and
 * bf16 -> bf16, each bit-equal to the host's conversion. */
static void test_upload_convert(void) {
    vidi_backend *be = g_gpu;
    vidi_err err = {0};
    const long n = 8L * 1024 * 1024 * 2 + 12345; /* > two 16 MiB slots of bf16 */
    float *x = rnd(n, -100, 100, 77);
    uint16_t *want = malloc((size_t)n * 2), *got = malloc((size_t)n * 4);
    void *d = be->ops->buf_alloc(be, (size_t)n * 4);
    REQUIRE(x && want && got && d, "out of memory");
    REQUIRE(be->ops->upload_convert, "the CUDA backend has no upload_convert");
    struct { vidi_dtype from, to; } cases[] = {{VIDI_DTYPE_F32, VIDI_DTYPE_BF16},
                                               {VIDI_DTYPE_F16, VIDI_DTYPE_F32},
                                               {VIDI_DTYPE_BF16, VIDI_DTYPE_BF16}};
    for (int c = 0; c < 3; c++) {
        vidi_dtype from = cases[c].from, to = cases[c].to;
        size_t es_to = vidi_dtype_size(to);
        void *src = x;
        uint16_t *half = NULL;
        if (from != VIDI_DTYPE_F32) {
            half = malloc((size_t)n * 2);
            vidi_convert_from_f32(from, x, half, (size_t)n);
            src = half;
        }
        /* the host's conversion, the reference */
        float *f = malloc((size_t)n * 4);
        vidi_convert_to_f32(from, src, f, (size_t)n);
        void *ref = to == VIDI_DTYPE_F32 ? (void *)f : (void *)want;
        if (to != VIDI_DTYPE_F32) vidi_convert_from_f32(to, f, want, (size_t)n);
        CHECK(be->ops->upload_convert(be, d, to, src, from, (size_t)n, &err) == VIDI_OK, "upload_convert: %s",
              err.msg);
        if (half) memset(half, 0, (size_t)n * 2); /* the source may be reused at once */
        CHECK(be->ops->copy_to_host(be, got, d, (size_t)n * es_to, &err) == VIDI_OK, "copy back: %s", err.msg);
        CHECK(memcmp(got, ref, (size_t)n * es_to) == 0, "upload_convert %s -> %s differs from the host's conversion",
              vidi_dtype_name(from), vidi_dtype_name(to));
        free(half);
        free(f);
    }
    CHECK(be->ops->upload_convert(be, d, VIDI_DTYPE_I32, x, VIDI_DTYPE_F32, 4, &err) == VIDI_ERR_INVALID,
          "an i32 destination accepted");
    release(be, d);
    free(x), free(want), free(got);
}

static void test_gather_bad_id(void) {
    const long rows = 50, cols = 8, n = 6;
    float *table = rnd(rows * cols, -1, 1, 72);
    round_to(VIDI_DTYPE_BF16, table, rows * cols);
    static const int32_t bad[2][6] = {{1, 2, 50, 3, 4, 5}, {0, -1, 2, 3, 4, 5}};
    static const int32_t good[6] = {49, 0, 1, 2, 3, 4};
    void *dt = up(g_gpu, VIDI_DTYPE_BF16, table, rows * cols), *dy = up_act(g_gpu, table, n * cols);
    vidi_tensor tt = vidi_tensor_2d(VIDI_DTYPE_BF16, dt, rows, cols), ty = vidi_tensor_2d(g_gpu->act_dtype, dy, n, cols);
    for (int k = 0; k < 2; k++) {
        void *di = up(g_gpu, VIDI_DTYPE_I32, bad[k], n);
        vidi_tensor ti = vidi_tensor_1d(VIDI_DTYPE_I32, di, n);
        vidi_err err = {0};
        vidi_status st = dt && di && dy ? g_gpu->ops->gather_rows(g_gpu, &tt, &ti, &ty, &err) : VIDI_ERR_NOMEM;
        if (st == VIDI_OK) st = g_gpu->ops->synchronize(g_gpu, &err); /* an asynchronous check reports late */
        CHECK(st == VIDI_ERR_INVALID, "gather_rows with id %d: status %d (%s), want invalid", bad[k][k ? 1 : 2],
              (int)st, err.msg);
        CHECK(strstr(err.msg, "gather_rows") != NULL, "gather_rows bad id: message '%s' does not name the op",
              err.msg);
        release(g_gpu, di);
    }
    void *di = up(g_gpu, VIDI_DTYPE_I32, good, n);
    vidi_tensor ti = vidi_tensor_1d(VIDI_DTYPE_I32, di, n);
    float *got = zeros(n * cols), *want = zeros(n * cols);
    for (long i = 0; i < n; i++) memcpy(want + i * cols, table + good[i] * cols, (size_t)cols * sizeof(float));
    if (dt && di && dy) {
        OK_ON(g_gpu, g_gpu->ops->gather_rows(g_gpu, &tt, &ti, &ty, ERR_ARG), "gather_rows after an error");
        down_act(g_gpu, dy, n * cols, got);
        check_equal("gather_rows after an error", got, want, n * cols);
    }
    release(g_gpu, dt), release(g_gpu, di), release(g_gpu, dy);
    free(table), free(got), free(want);
}

static void test_scatter_rows(void) {
    const long rows = 300, cols = 1536, n = 120;
    float *dst0 = rnd_act(rows * cols, -1, 1, 81), *src = rnd_act(n * cols, -2, 2, 82);
    int32_t *idx = malloc((size_t)n * sizeof *idx);
    for (long i = 0; i < n; i++) idx[i] = (int32_t)(40 + (i * 7) % 250); /* distinct: 7 and 250 are coprime */
    float *out[2] = {zeros(rows * cols), zeros(rows * cols)};
    vidi_backend *bes[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        vidi_backend *be = bes[i];
        void *dd = up_act(be, dst0, rows * cols), *ds = up_act(be, src, n * cols), *di = up(be, VIDI_DTYPE_I32, idx, n);
        vidi_tensor td = vidi_tensor_2d(be->act_dtype, dd, rows, cols), ts = vidi_tensor_2d(be->act_dtype, ds, n, cols);
        vidi_tensor ti = vidi_tensor_1d(VIDI_DTYPE_I32, di, n);
        if (dd && ds && di) {
            OK_ON(be, be->ops->scatter_rows(be, &ts, &ti, &td, ERR_ARG), "scatter_rows");
            down_act(be, dd, rows * cols, out[i]);
        }
        release(be, dd), release(be, ds), release(be, di);
    }
    check_equal("scatter_rows", out[1], out[0], rows * cols);
    free(dst0), free(src), free(idx), free(out[0]), free(out[1]);
}

/* ---- attention ---- */

/* Runs dense attention on one backend; out receives [Tq, Hq, D]. */
static void attn_on(vidi_backend *be, const char *what, const float *q, const float *k, const float *v, long Tq,
                    long Tk, long Hq, long Hkv, long D, const vidi_attn_args *a, float *out) {
    void *dq = up_act(be, q, Tq * Hq * D), *dk = up_act(be, k, Tk * Hkv * D), *dv = up_act(be, v, Tk * Hkv * D);
    float *init = zeros(Tq * Hq * D);
    for (long i = 0; i < Tq * Hq * D; i++) init[i] = 7.0f; /* a zero output must be written, not left */
    void *dy = up_act(be, init, Tq * Hq * D);
    vidi_tensor tq = vidi_tensor_3d(be->act_dtype, dq, Tq, Hq, D), tk = vidi_tensor_3d(be->act_dtype, dk, Tk, Hkv, D);
    vidi_tensor tv = vidi_tensor_3d(be->act_dtype, dv, Tk, Hkv, D), ty = vidi_tensor_3d(be->act_dtype, dy, Tq, Hq, D);
    if (dq && dk && dv && dy) {
        OK_ON(be, be->ops->attention(be, &tq, &tk, &tv, &ty, a, ERR_ARG), what);
        down_act(be, dy, Tq * Hq * D, out);
    }
    release(be, dq), release(be, dk), release(be, dv), release(be, dy);
    free(init);
}

/* n sequences of lq[s] queries and lk[s] keys. */
static void run_attn(const char *what, int n, const int *lq, const int *lk, long Hq, long Hkv, long D, int causal) {
    int32_t cu_q[16] = {0}, cu_k[16] = {0};
    for (int s = 0; s < n; s++) cu_q[s + 1] = cu_q[s] + lq[s], cu_k[s + 1] = cu_k[s] + lk[s];
    const long Tq = cu_q[n], Tk = cu_k[n];
    float *q = rnd_act(Tq * Hq * D, -1, 1, 91 + (unsigned long long)D), *k = rnd_act(Tk * Hkv * D, -1, 1, 92);
    float *v = rnd_act(Tk * Hkv * D, -1, 1, 93);
    vidi_attn_args a = {cu_q, cu_k, n, causal, 1.0f / sqrtf((float)D)};
    float *out[2] = {zeros(Tq * Hq * D), zeros(Tq * Hq * D)};
    attn_on(g_cpu, what, q, k, v, Tq, Tk, Hq, Hkv, D, &a, out[0]);
    attn_on(g_gpu, what, q, k, v, Tq, Tk, Hq, Hkv, D, &a, out[1]);
    check_near(what, out[1], out[0], Tq * Hq * D, TOL_ATTN_REL, TOL_ATTN_MAX);
    free(q), free(k), free(v), free(out[0]), free(out[1]);
}

/* Causal varlen with a KV prefix (lk > lq): prefill after a cached prompt. */
static void test_attention_causal(void) {
    static const int lq[3] = {5, 1, 300}, lk[3] = {12, 9, 300};
    run_attn("causal varlen, prefix, D=128", 3, lq, lk, 4, 4, 128, 1);
    static const int lq2[2] = {129, 64}, lk2[2] = {200, 64};
    run_attn("causal varlen, prefix, D=64", 2, lq2, lk2, 3, 3, 64, 1);
}

/* The vision tower's attention: every query sees its whole sequence. */
static void test_attention_noncausal(void) {
    static const int l[3] = {16, 333, 64};
    run_attn("non-causal varlen, D=80", 3, l, l, 16, 16, 80, 0);
    static const int lq[2] = {7, 40}, lk[2] = {90, 3};
    run_attn("non-causal, lq != lk, D=64", 2, lq, lk, 2, 2, 64, 0);
}

static void test_attention_gqa(void) {
    static const int lq[2] = {77, 1}, lk[2] = {77, 150};
    run_attn("GQA 4:2 causal, D=128", 2, lq, lk, 4, 2, 128, 1);
    run_attn("GQA 14:2 causal, D=128", 2, lq, lk, 14, 2, 128, 1);
    run_attn("GQA 14:2 non-causal, D=64", 2, lq, lk, 14, 2, 64, 0);
}

static void test_attention_head_dims(void) {
    static const int dims[4] = {16, 64, 80, 128};
    static const int lq[2] = {65, 31}, lk[2] = {65, 47};
    char what[64];
    for (int i = 0; i < 4; i++) {
        snprintf(what, sizeof what, "causal D=%d", dims[i]);
        run_attn(what, 2, lq, lk, 4, 2, dims[i], 1);
        snprintf(what, sizeof what, "non-causal D=%d", dims[i]);
        run_attn(what, 2, lq, lk, 4, 2, dims[i], 0);
    }
}

/* A sequence without queries between two others, and one whose queries see
 * no key at all (zero output). */
static void test_attention_zero_query(void) {
    static const int lq[3] = {9, 0, 17}, lk[3] = {20, 33, 17};
    run_attn("zero-query sequence, causal", 3, lq, lk, 4, 2, 64, 1);
    run_attn("zero-query sequence, non-causal", 3, lq, lk, 4, 2, 80, 0);
    static const int lq2[2] = {4, 3}, lk2[2] = {0, 5};
    run_attn("keyless sequence gives zeros", 2, lq2, lk2, 2, 2, 64, 0);
}

/* Paged decode attention on the GPU against the CPU's dense attention over
 * the same keys gathered from the cache. */
static void test_attention_paged(void) {
    REQUIRE(g_gpu->ops->attention_paged != NULL, "the CUDA backend has no attention_paged");
    enum { B = 4, BS = 16, NB = 40, MAXB = 10 };
    const long Hq = 14, Hkv = 2, D = 128;
    int32_t lens[B] = {1, 37, 130, 0};
    int32_t table[B * MAXB];
    for (int i = 0; i < B * MAXB; i++) table[i] = -1;
    for (int b = 0, next = 0; b < B; b++)
        for (int j = 0; j * BS < lens[b]; j++, next++) table[b * MAXB + j] = (int32_t)((next * 17 + 3) % NB);
    const long cache_n = (long)NB * BS * Hkv * D;
    float *kc = rnd_act(cache_n, -1, 1, 101), *vc = rnd_act(cache_n, -1, 1, 102);
    float *q = rnd_act(B * Hq * D, -1, 1, 103);
    const float scale = 1.0f / sqrtf((float)D);

    /* the CPU's view: B sequences of one query over their keys, packed */
    int32_t cu_q[B + 1] = {0}, cu_k[B + 1] = {0};
    for (int b = 0; b < B; b++) cu_q[b + 1] = cu_q[b] + 1, cu_k[b + 1] = cu_k[b] + lens[b];
    const long Tk = cu_k[B];
    float *kd = zeros(Tk * Hkv * D), *vd = zeros(Tk * Hkv * D);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < lens[b]; j++) {
            long src = ((long)table[b * MAXB + j / BS] * BS + j % BS) * Hkv * D, dst = (cu_k[b] + j) * Hkv * D;
            memcpy(kd + dst, kc + src, (size_t)(Hkv * D) * sizeof(float));
            memcpy(vd + dst, vc + src, (size_t)(Hkv * D) * sizeof(float));
        }
    vidi_attn_args a = {cu_q, cu_k, B, 1, scale};
    float *ref = zeros(B * Hq * D), *got = zeros(B * Hq * D);
    attn_on(g_cpu, "paged reference", q, kd, vd, B, Tk, Hq, Hkv, D, &a, ref);

    vidi_backend *be = g_gpu;
    void *dq = up_act(be, q, B * Hq * D), *dk = up_act(be, kc, cache_n), *dv = up_act(be, vc, cache_n);
    void *dt = up(be, VIDI_DTYPE_I32, table, B * MAXB), *dl = up(be, VIDI_DTYPE_I32, lens, B);
    for (long i = 0; i < B * Hq * D; i++) got[i] = 7.0f;
    void *dy = up_act(be, got, B * Hq * D);
    int64_t cshape[4] = {NB, BS, Hkv, D};
    vidi_tensor tq = vidi_tensor_3d(be->act_dtype, dq, B, Hq, D), ty = vidi_tensor_3d(be->act_dtype, dy, B, Hq, D);
    vidi_tensor tk = vidi_tensor_view(be->act_dtype, dk, 4, cshape), tv = vidi_tensor_view(be->act_dtype, dv, 4, cshape);
    vidi_tensor tt = vidi_tensor_2d(VIDI_DTYPE_I32, dt, B, MAXB), tl = vidi_tensor_1d(VIDI_DTYPE_I32, dl, B);
    if (dq && dk && dv && dt && dl && dy) {
        OK_ON(be, be->ops->attention_paged(be, &tq, &tk, &tv, &tt, &tl, scale, &ty, ERR_ARG), "attention_paged");
        down_act(be, dy, B * Hq * D, got);
        check_near("attention_paged vs dense", got, ref, B * Hq * D, TOL_ATTN_REL, TOL_ATTN_MAX);
    }
    if (g_cpu->ops->attention_paged) { /* and against the CPU's own paged twin, on the same cache */
        float *cpu_paged = zeros(B * Hq * D);
        vidi_tensor cq = vidi_tensor_3d(VIDI_DTYPE_F32, q, B, Hq, D), cy = vidi_tensor_3d(VIDI_DTYPE_F32, cpu_paged, B, Hq, D);
        vidi_tensor ck = vidi_tensor_view(VIDI_DTYPE_F32, kc, 4, cshape), cv = vidi_tensor_view(VIDI_DTYPE_F32, vc, 4, cshape);
        vidi_tensor ct = vidi_tensor_2d(VIDI_DTYPE_I32, table, B, MAXB), cl = vidi_tensor_1d(VIDI_DTYPE_I32, lens, B);
        OK_ON(g_cpu, g_cpu->ops->attention_paged(g_cpu, &cq, &ck, &cv, &ct, &cl, scale, &cy, ERR_ARG), "cpu paged");
        check_near("attention_paged vs the CPU's paged twin", got, cpu_paged, B * Hq * D, TOL_ATTN_REL, TOL_ATTN_MAX);
        free(cpu_paged);
    }
    release(be, dq), release(be, dk), release(be, dv), release(be, dt), release(be, dl), release(be, dy);
    free(kc), free(vc), free(q), free(kd), free(vd), free(ref), free(got);
}

/* Random logits of B >= 5 rows with the greedy rule's edge cases: row 0 a
 * tie (token 5000 wins over 9000), row 1 a NaN and a winner at 77, row 2
 * all NaN (token 0), row 3 all -inf and a NaN (the first, 0), row 4 +inf
 * at the end (V - 1). */
static float *greedy_logits(int B, long V, unsigned long long seed) {
    float *l = rnd_act(B * V, -20, 20, seed);
    l[0 * V + 5000] = 40, l[0 * V + 9000] = 40;
    l[1 * V + 0] = NAN, l[1 * V + 77] = 50;
    for (long i = 0; i < V; i++) l[2 * V + i] = NAN;
    for (long i = 0; i < V; i++) l[3 * V + i] = -INFINITY;
    l[3 * V + 3] = NAN;
    l[4 * V + V - 1] = INFINITY;
    return l;
}

/* argmax_rows (the draft model's chained steps): sample's greedy rule into
 * device memory, against the CPU twin, with ties, NaN and infinities. */
static void test_argmax_rows(void) {
    enum { B = 5 };
    const long V = 151936;
    float *l = greedy_logits(B, V, 121);
    int32_t want[B], got[B];
    vidi_tensor cl = vidi_tensor_2d(VIDI_DTYPE_F32, l, B, V), ct = vidi_tensor_1d(VIDI_DTYPE_I32, want, B);
    OK_ON(g_cpu, g_cpu->ops->argmax_rows(g_cpu, &cl, &ct, ERR_ARG), "cpu argmax_rows");
    CHECK(want[0] == 5000 && want[1] == 77 && want[2] == 0 && want[3] == 0 && want[4] == V - 1,
          "the CPU twin: %d %d %d %d %d", want[0], want[1], want[2], want[3], want[4]);
    static const vidi_dtype dts[2] = {VIDI_DTYPE_BF16, VIDI_DTYPE_F32};
    for (int d = 0; d < 2; d++) {
        vidi_backend *be = g_gpu;
        void *dl = up(be, dts[d], l, B * V), *dt = be->ops->buf_alloc(be, B * sizeof(int32_t));
        if (dl && dt) {
            vidi_tensor gl = vidi_tensor_2d(dts[d], dl, B, V), gt = vidi_tensor_1d(VIDI_DTYPE_I32, dt, B);
            OK_ON(be, be->ops->argmax_rows(be, &gl, &gt, ERR_ARG), "argmax_rows");
            vidi_err e = {0};
            CHECK(be->ops->copy_to_host(be, got, dt, sizeof got, &e) == VIDI_OK, "copy: %s", e.msg);
            for (int b = 0; b < B; b++)
                CHECK(got[b] == want[b], "argmax_rows (%s) row %d: gpu %d, cpu %d", vidi_dtype_name(dts[d]), b, got[b],
                      want[b]);
        }
        release(be, dl), release(be, dt);
    }
    free(l);
}

/* ---- exact mode (vidi_backend_cuda_set_exact) ---- */

/* In exact mode a row's result does not depend on the op's other rows: a
 * matmul of M rows (with and without bias, into bf16) equals, bit for bit,
 * each row's matmul alone, and still the CPU twin within tolerance; paged
 * attention of B sequences equals each sequence's alone (its split count
 * no longer follows B). What speculative verification needs to give plain
 * greedy decoding's tokens. */
static void test_exact_batch_invariance(void) {
    vidi_err err = {0};
    REQUIRE(vidi_backend_cuda_set_exact(g_gpu, 1, &err) == VIDI_OK, "exact mode: %s", err.msg);
    REQUIRE(vidi_backend_cuda_set_exact(g_cpu, 1, &err) == VIDI_ERR_INVALID, "exact mode on the CPU accepted");
    vidi_backend *be = g_gpu;
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        run_matmul(37, 256, 200, with_bias); /* against the CPU */
        const long M = 37, K = 256, N = 200;
        float *x = rnd_act(M * K, -1, 1, 71), *w = rnd(N * K, -1, 1, 72), *b = rnd(N, -1, 1, 73);
        round_to(VIDI_DTYPE_BF16, w, N * K);
        round_to(VIDI_DTYPE_BF16, b, N);
        float *all = zeros(M * N), *one = zeros(N);
        void *dx = up_act(be, x, M * K), *dw = up(be, VIDI_DTYPE_BF16, w, N * K), *db = up(be, VIDI_DTYPE_BF16, b, N);
        void *dy = up_act(be, all, M * N);
        vidi_tensor tw = vidi_tensor_2d(VIDI_DTYPE_BF16, dw, N, K), tb = vidi_tensor_1d(VIDI_DTYPE_BF16, db, N);
        if (dx && dw && db && dy) {
            vidi_tensor tx = vidi_tensor_2d(be->act_dtype, dx, M, K), ty = vidi_tensor_2d(be->act_dtype, dy, M, N);
            OK_ON(be, be->ops->matmul(be, &tx, &tw, with_bias ? &tb : NULL, &ty, ERR_ARG), "exact matmul");
            down_act(be, dy, M * N, all);
            for (long m = 0; m < M; m++) {
                size_t es = vidi_dtype_size(be->act_dtype);
                vidi_tensor x1 = vidi_tensor_2d(be->act_dtype, (char *)dx + (size_t)(m * K) * es, 1, K);
                vidi_tensor y1 = vidi_tensor_2d(be->act_dtype, dy, 1, N);
                OK_ON(be, be->ops->matmul(be, &x1, &tw, with_bias ? &tb : NULL, &y1, ERR_ARG), "exact matmul, a row");
                down_act(be, dy, N, one);
                char what[80];
                snprintf(what, sizeof what, "exact matmul%s: row %ld alone vs in %ld rows", with_bias ? " +bias" : "",
                         m, M);
                check_equal(what, one, all + m * N, N);
            }
        }
        release(be, dx), release(be, dw), release(be, db), release(be, dy);
        free(x), free(w), free(b), free(all), free(one);
    }
    /* paged attention: 4 sequences together, then each alone */
    enum { B = 4, BS = 16, NB = 40, MAXB = 10 };
    const long Hq = 4, Hkv = 2, D = 64;
    int32_t lens[B] = {1, 37, 130, 77};
    int32_t table[B * MAXB];
    for (int i = 0; i < B * MAXB; i++) table[i] = -1;
    for (int b = 0, next = 0; b < B; b++)
        for (int j = 0; j * BS < lens[b]; j++, next++) table[b * MAXB + j] = (int32_t)((next * 17 + 3) % NB);
    const long cache_n = (long)NB * BS * Hkv * D;
    float *kc = rnd_act(cache_n, -1, 1, 74), *vc = rnd_act(cache_n, -1, 1, 75), *q = rnd_act(B * Hq * D, -1, 1, 76);
    float *all = zeros(B * Hq * D), *one = zeros(Hq * D);
    void *dq = up_act(be, q, B * Hq * D), *dk = up_act(be, kc, cache_n), *dv = up_act(be, vc, cache_n);
    void *dt = up(be, VIDI_DTYPE_I32, table, B * MAXB), *dl = up(be, VIDI_DTYPE_I32, lens, B);
    void *dy = up_act(be, all, B * Hq * D);
    int64_t cshape[4] = {NB, BS, Hkv, D};
    const float scale = 1.0f / sqrtf((float)D);
    vidi_tensor tk = vidi_tensor_view(be->act_dtype, dk, 4, cshape), tv = vidi_tensor_view(be->act_dtype, dv, 4, cshape);
    if (dq && dk && dv && dt && dl && dy) {
        vidi_tensor tq = vidi_tensor_3d(be->act_dtype, dq, B, Hq, D), ty = vidi_tensor_3d(be->act_dtype, dy, B, Hq, D);
        vidi_tensor tt = vidi_tensor_2d(VIDI_DTYPE_I32, dt, B, MAXB), tl = vidi_tensor_1d(VIDI_DTYPE_I32, dl, B);
        OK_ON(be, be->ops->attention_paged(be, &tq, &tk, &tv, &tt, &tl, scale, &ty, ERR_ARG), "exact attention_paged");
        down_act(be, dy, B * Hq * D, all);
        size_t es = vidi_dtype_size(be->act_dtype);
        for (int b = 0; b < B; b++) {
            vidi_tensor q1 = vidi_tensor_3d(be->act_dtype, (char *)dq + (size_t)(b * Hq * D) * es, 1, Hq, D);
            vidi_tensor y1 = vidi_tensor_3d(be->act_dtype, dy, 1, Hq, D);
            vidi_tensor t1 = vidi_tensor_2d(VIDI_DTYPE_I32, (int32_t *)dt + b * MAXB, 1, MAXB);
            vidi_tensor l1 = vidi_tensor_1d(VIDI_DTYPE_I32, (int32_t *)dl + b, 1);
            OK_ON(be, be->ops->attention_paged(be, &q1, &tk, &tv, &t1, &l1, scale, &y1, ERR_ARG),
                  "exact attention_paged, a sequence");
            down_act(be, dy, Hq * D, one);
            char what[80];
            snprintf(what, sizeof what, "exact attention_paged: sequence %d alone vs in %d", b, B);
            check_equal(what, one, all + (long)b * Hq * D, Hq * D);
        }
    }
    release(be, dq), release(be, dk), release(be, dv), release(be, dt), release(be, dl), release(be, dy);
    free(kc), free(vc), free(q), free(all), free(one);
    vidi_backend_cuda_set_exact(g_gpu, 0, &err);
}

/* ---- sampling ---- */

/* Samples logits [B, V] (f32 host values, already representable in the
 * GPU's dtype) on one backend, logits uploaded as dt. */
static vidi_status sample_on(vidi_backend *be, vidi_dtype dt, const float *l, long B, long V,
                             const vidi_sample_params *p, uint64_t *rng, int32_t *tok, vidi_err *err) {
    void *dl = up(be, dt, l, B * V);
    if (!dl) return vidi_err_set(err, VIDI_ERR_NOMEM, "no memory for the logits");
    vidi_tensor t = vidi_tensor_2d(dt, dl, B, V);
    vidi_status st = be->ops->sample(be, &t, p, rng, tok, err);
    release(be, dl);
    return st;
}

static void test_sample_greedy(void) {
    enum { B = 6 };
    const long V = 151936;
    float *l = greedy_logits(B, V, 111);
    static const vidi_sample_params ps[3] = {{0.0f, 0, 1.0f}, {-1.0f, 50, 0.9f}, {0.7f, 1, 0.5f}};
    static const vidi_dtype dts[2] = {VIDI_DTYPE_BF16, VIDI_DTYPE_F32};
    for (int k = 0; k < 3; k++)
        for (int d = 0; d < 2; d++) {
            int32_t want[B], got[B];
            uint64_t rc[B], rg[B];
            for (int b = 0; b < B; b++) rc[b] = rg[b] = vidi_rng_seed(1000 + (uint64_t)b);
            vidi_err e1 = {0}, e2 = {0};
            CHECK(sample_on(g_cpu, VIDI_DTYPE_F32, l, B, V, &ps[k], rc, want, &e1) == VIDI_OK, "cpu: %s", e1.msg);
            CHECK(sample_on(g_gpu, dts[d], l, B, V, &ps[k], rg, got, &e2) == VIDI_OK, "gpu: %s", e2.msg);
            for (int b = 0; b < B; b++) {
                CHECK(got[b] == want[b], "greedy params %d (%s) row %d: gpu %d, cpu %d", k, vidi_dtype_name(dts[d]), b,
                      got[b], want[b]);
                CHECK(rg[b] == rc[b], "greedy params %d row %d: the GPU moved the RNG", k, b);
            }
            CHECK(want[0] == 5000 && want[1] == 77 && want[2] == 0 && want[3] == 0 && want[4] == V - 1,
                  "the CPU twin's greedy rule changed: %d %d %d %d %d", want[0], want[1], want[2], want[3], want[4]);
        }
    free(l);
}

/* Seeded top-k / top-p: the same tokens and RNG states as the CPU twin over
 * many steps, for several parameter sets and both logit dtypes. */
static void test_sample_topk_topp(void) {
    enum { B = 8, STEPS = 20 };
    static const long vs[2] = {32000, 37};
    static const vidi_sample_params ps[] = {
        {0.8f, 50, 0.9f}, {1.0f, 0, 0.95f}, {0.7f, 0, 1.0f}, {1.3f, 1000, 1.0f}, {1.0f, 5, 0.0f}, {2.0f, 40000, 0.5f},
    };
    static const vidi_dtype dts[2] = {VIDI_DTYPE_BF16, VIDI_DTYPE_F32};
    for (int vi = 0; vi < 2; vi++) {
        const long V = vs[vi];
        float *l = rnd_act(B * V, -6, 6, 121 + (unsigned long long)V);
        for (long i = 0; i < V; i++) l[5 * V + i] = (i % 2) ? NAN : -INFINITY; /* no candidate: greedy, no draw */
        l[6 * V + 1] = INFINITY;                                               /* +inf takes everything */
        l[7 * V + 2] = NAN, l[7 * V + 3] = -INFINITY;
        for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++)
            for (int d = 0; d < 2; d++) {
                uint64_t rc[B], rg[B];
                for (int b = 0; b < B; b++) rc[b] = rg[b] = vidi_rng_seed(77 * (uint64_t)k + (uint64_t)b);
                int mismatches = 0;
                for (int step = 0; step < STEPS && mismatches < 3; step++) {
                    int32_t want[B], got[B];
                    vidi_err e1 = {0}, e2 = {0};
                    CHECK(sample_on(g_cpu, VIDI_DTYPE_F32, l, B, V, &ps[k], rc, want, &e1) == VIDI_OK, "cpu: %s",
                          e1.msg);
                    CHECK(sample_on(g_gpu, dts[d], l, B, V, &ps[k], rg, got, &e2) == VIDI_OK, "gpu: %s", e2.msg);
                    for (int b = 0; b < B; b++) {
                        int same = got[b] == want[b] && rg[b] == rc[b];
                        mismatches += !same;
                        CHECK(same, "V=%ld T=%g k=%d p=%g (%s) step %d row %d: gpu token %d, cpu %d%s", V,
                              (double)ps[k].temperature, ps[k].top_k, (double)ps[k].top_p, vidi_dtype_name(dts[d]),
                              step, b, got[b], want[b], rg[b] == rc[b] ? "" : " (RNG states differ)");
                    }
                }
            }
        free(l);
    }
}

static const test_case cases[] = {
    {"matmul", test_matmul},
    {"matmul_acc", test_matmul_acc},
    {"upload_convert", test_upload_convert},
    {"add", test_add},
    {"rms_norm", test_rms_norm},
    {"layer_norm", test_layer_norm},
    {"act_each", test_act_each},
    {"act_mul", test_act_mul},
    {"softmax", test_softmax},
    {"rope_1d", test_rope_1d},
    {"rope_vision_2d", test_rope_vision_2d},
    {"rope_mrope", test_rope_mrope},
    {"qkv_rope_store", test_qkv_rope_store},
    {"gather_rows", test_gather_rows},
    {"gather_bad_id", test_gather_bad_id},
    {"scatter_rows", test_scatter_rows},
    {"attention_causal", test_attention_causal},
    {"attention_noncausal", test_attention_noncausal},
    {"attention_gqa", test_attention_gqa},
    {"attention_head_dims", test_attention_head_dims},
    {"attention_zero_query", test_attention_zero_query},
    {"attention_paged", test_attention_paged},
    {"argmax_rows", test_argmax_rows},
    {"exact_batch_invariance", test_exact_batch_invariance},
    {"sample_greedy", test_sample_greedy},
    {"sample_topk_topp", test_sample_topk_topp},
};

int main(int argc, char **argv) {
    if (vidi_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    char desc[256];
    vidi_cuda_device_describe(0, desc, sizeof desc);
    printf("device 0: %s\n", desc);
    vidi_err err = {0};
    g_cpu = vidi_backend_cpu_create(0, &err);
    if (!g_cpu) {
        printf("cpu backend: %s\n", err.msg);
        return 1;
    }
    g_gpu = vidi_backend_cuda_create(0, &err);
    if (!g_gpu) {
        printf("cuda backend: %s\n", err.msg);
        g_cpu->ops->destroy(g_cpu);
        return 1;
    }
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    g_gpu->ops->destroy(g_gpu);
    g_cpu->ops->destroy(g_cpu);
    return rc;
}
