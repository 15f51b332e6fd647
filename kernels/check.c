/* kernels/check.c — argument checks shared by the backends (check.h). */
#include "kernels/check.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

vidi_shape_text vidi_shape_of(const vidi_tensor *t) {
    vidi_shape_text r;
    int off = snprintf(r.s, sizeof r.s, "[");
    for (int i = 0; i < t->ndim && i < VIDI_MAX_DIMS; i++)
        off += snprintf(r.s + off, sizeof r.s - (size_t)off, "%s%lld", i ? ", " : "",
                        (long long)t->shape[i]);
    snprintf(r.s + off, sizeof r.s - (size_t)off, "] %s", vidi_dtype_name(t->dtype));
    return r;
}

int vidi_same_shape(const vidi_tensor *a, const vidi_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

vidi_status vidi_check_tensor(const char *op, const char *name, const vidi_tensor *t, vidi_err *err) {
    if (!t) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s is NULL", op, name);
    if (t->ndim < 1 || t->ndim > VIDI_MAX_DIMS)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has %d dimensions (1..%d allowed)", op, name,
                            t->ndim, VIDI_MAX_DIMS);
    if ((unsigned)t->dtype >= VIDI_DTYPE_COUNT)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has unknown dtype %d", op, name, (int)t->dtype);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s %s has a negative dimension", op, name,
                                vidi_shape_of(t).s);
    if (!t->data && vidi_tensor_numel(t) > 0)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s %s has no data", op, name, vidi_shape_of(t).s);
    return VIDI_OK;
}

vidi_status vidi_check_dtype(const char *op, const char *name, const vidi_tensor *t, vidi_dtype want,
                             vidi_err *err) {
    vidi_status rc = vidi_check_tensor(op, name, t, err);
    if (rc != VIDI_OK) return rc;
    if (t->dtype != want)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s %s must be %s", op, name, vidi_shape_of(t).s,
                            vidi_dtype_name(want));
    return VIDI_OK;
}

vidi_status vidi_check_weight(const char *op, const char *name, const vidi_tensor *t, vidi_err *err) {
    vidi_status rc = vidi_check_tensor(op, name, t, err);
    if (rc != VIDI_OK) return rc;
    if (t->dtype != VIDI_DTYPE_F32 && t->dtype != VIDI_DTYPE_BF16 && t->dtype != VIDI_DTYPE_F16)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s %s must be f32, bf16 or f16", op, name,
                            vidi_shape_of(t).s);
    return VIDI_OK;
}

int vidi_bytes_overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return na && nb && pa < pb + nb && pb < pa + na;
}

vidi_status vidi_check_alias(const char *op, const char *yname, const vidi_tensor *y, const char *xname,
                             const vidi_tensor *x, int exact_ok, vidi_err *err) {
    if (!x) return VIDI_OK;
    size_t ny = vidi_tensor_nbytes(y), nx = vidi_tensor_nbytes(x);
    if (!vidi_bytes_overlap(y->data, ny, x->data, nx)) return VIDI_OK;
    if (exact_ok && y->data == x->data && ny == nx) return VIDI_OK;
    return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s overlaps %s%s", op, yname, xname,
                        exact_ok ? " (only exact in-place use is allowed)" : "");
}

vidi_status vidi_check_act_kind(const char *op, vidi_act kind, vidi_err *err) {
    if ((unsigned)kind > (unsigned)VIDI_ACT_SILU)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: unknown activation %d", op, (int)kind);
    return VIDI_OK;
}

vidi_status vidi_check_act(const char *op, const char *name, const vidi_tensor *t, unsigned acts, vidi_err *err) {
    vidi_status rc = vidi_check_tensor(op, name, t, err);
    if (rc != VIDI_OK) return rc;
    if (acts & VIDI_ACTS(t->dtype)) return VIDI_OK;
    char want[64] = "";
    static const vidi_dtype order[] = {VIDI_DTYPE_BF16, VIDI_DTYPE_F16, VIDI_DTYPE_F32};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (acts & VIDI_ACTS(order[i]))
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", want[0] ? " or " : "",
                     vidi_dtype_name(order[i]));
    return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s %s must be %s", op, name, vidi_shape_of(t).s, want);
}

vidi_status vidi_check_matmul(const char *op, unsigned acts, const vidi_tensor *x, const vidi_tensor *w,
                              const vidi_tensor *bias, const vidi_tensor *y, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act(op, "x", x, acts, err));
    VIDI_TRY(vidi_check_weight(op, "w", w, err));
    VIDI_TRY(vidi_check_act(op, "y", y, acts, err));
    if (bias) VIDI_TRY(vidi_check_weight(op, "bias", bias, err));
    VIDI_CHECK(w->ndim == 2, err, VIDI_ERR_INVALID, "%s: w %s must be 2-D [N, K]", op, vidi_shape_of(w).s);
    const int64_t M = vidi_tensor_rows(x), K = vidi_tensor_cols(x), N = w->shape[0];
    VIDI_CHECK(w->shape[1] == K, err, VIDI_ERR_INVALID, "%s: x %s has %lld columns but w %s has %lld",
               op, vidi_shape_of(x).s, (long long)K, vidi_shape_of(w).s, (long long)w->shape[1]);
    VIDI_CHECK(vidi_tensor_rows(y) == M && vidi_tensor_cols(y) == N, err, VIDI_ERR_INVALID,
               "%s: y %s must hold %lld rows of %lld (x %s, w %s)", op, vidi_shape_of(y).s, (long long)M,
               (long long)N, vidi_shape_of(x).s, vidi_shape_of(w).s);
    VIDI_CHECK(!bias || (bias->ndim == 1 && bias->shape[0] == N), err, VIDI_ERR_INVALID,
               "%s: bias %s must be [%lld]", op, bias ? vidi_shape_of(bias).s : "", (long long)N);
    VIDI_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX, err, VIDI_ERR_UNSUPPORTED,
               "%s: x %s, w %s exceed the BLAS int range", op, vidi_shape_of(x).s, vidi_shape_of(w).s);
    VIDI_TRY(vidi_check_alias(op, "y", y, "x", x, 0, err));
    VIDI_TRY(vidi_check_alias(op, "y", y, "w", w, 0, err));
    VIDI_TRY(vidi_check_alias(op, "y", y, "bias", bias, 0, err));
fail:
    return rc;
}

vidi_status vidi_check_norm(const char *op, unsigned acts, const vidi_tensor *x, const vidi_tensor *w,
                            const vidi_tensor *b, float eps, const vidi_tensor *y, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act(op, "x", x, acts, err));
    VIDI_TRY(vidi_check_weight(op, "w", w, err));
    if (b) VIDI_TRY(vidi_check_weight(op, "b", b, err));
    VIDI_TRY(vidi_check_act(op, "y", y, acts, err));
    VIDI_CHECK(vidi_same_shape(x, y), err, VIDI_ERR_INVALID, "%s: x %s and y %s differ", op, vidi_shape_of(x).s,
               vidi_shape_of(y).s);
    VIDI_CHECK(w->ndim == 1 && w->shape[0] == vidi_tensor_cols(x), err, VIDI_ERR_INVALID,
               "%s: w %s must be [%lld] to match x %s", op, vidi_shape_of(w).s, (long long)vidi_tensor_cols(x),
               vidi_shape_of(x).s);
    VIDI_CHECK(!b || (b->ndim == 1 && b->shape[0] == vidi_tensor_cols(x)), err, VIDI_ERR_INVALID,
               "%s: b %s must be [%lld] to match x %s", op, b ? vidi_shape_of(b).s : "", (long long)vidi_tensor_cols(x),
               vidi_shape_of(x).s);
    VIDI_CHECK(eps >= 0.0f, err, VIDI_ERR_INVALID, "%s: eps %g must be >= 0", op, (double)eps);
    VIDI_TRY(vidi_check_alias(op, "y", y, "x", x, 1, err));
    VIDI_TRY(vidi_check_alias(op, "y", y, "w", w, 0, err));
    VIDI_TRY(vidi_check_alias(op, "y", y, "b", b, 0, err));
fail:
    return rc;
}

vidi_status vidi_check_unary(const char *op, unsigned acts, const vidi_tensor *x, const vidi_tensor *y,
                             vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act(op, "x", x, acts, err));
    VIDI_TRY(vidi_check_act(op, "y", y, acts, err));
    VIDI_CHECK(vidi_same_shape(x, y), err, VIDI_ERR_INVALID, "%s: x %s and y %s differ", op, vidi_shape_of(x).s,
               vidi_shape_of(y).s);
    VIDI_TRY(vidi_check_alias(op, "y", y, "x", x, 1, err));
fail:
    return rc;
}

vidi_status vidi_check_binary(const char *op, unsigned acts, const char *aname, const vidi_tensor *a,
                              const char *bname, const vidi_tensor *b, const vidi_tensor *y, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act(op, aname, a, acts, err));
    VIDI_TRY(vidi_check_act(op, bname, b, acts, err));
    VIDI_TRY(vidi_check_act(op, "y", y, acts, err));
    VIDI_CHECK(vidi_same_shape(a, y) && vidi_same_shape(b, y), err, VIDI_ERR_INVALID,
               "%s: shapes differ: %s %s, %s %s, y %s", op, aname, vidi_shape_of(a).s, bname, vidi_shape_of(b).s,
               vidi_shape_of(y).s);
    VIDI_TRY(vidi_check_alias(op, "y", y, aname, a, 1, err));
    VIDI_TRY(vidi_check_alias(op, "y", y, bname, b, 1, err));
fail:
    return rc;
}
