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

vidi_status vidi_check_qkv_rope_store(const char *op, unsigned acts, const vidi_tensor *qkv, const vidi_tensor *pos,
                                      const vidi_rope_spec *spec, const vidi_tensor *q_out,
                                      const vidi_tensor *slots, const vidi_tensor *k_cache,
                                      const vidi_tensor *v_cache, int64_t *hq, int64_t *hkv, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act(op, "qkv", qkv, acts, err));
    VIDI_TRY(vidi_check_act(op, "q_out", q_out, acts, err));
    VIDI_TRY(vidi_check_act(op, "k_cache", k_cache, acts, err));
    VIDI_TRY(vidi_check_act(op, "v_cache", v_cache, acts, err));
    VIDI_TRY(vidi_check_dtype(op, "pos", pos, VIDI_DTYPE_I32, err));
    VIDI_TRY(vidi_check_dtype(op, "slots", slots, VIDI_DTYPE_I32, err));
    VIDI_CHECK(spec && spec->pair_axis && spec->pair_inv_freq && spec->head_dim > 0 && spec->head_dim % 2 == 0 &&
                   spec->n_axes >= 1 && spec->n_axes <= 3, err, VIDI_ERR_INVALID,
               "%s: a rope spec with an even head_dim, 1..3 axes and its pair tables must be given", op);
    for (int i = 0; i < spec->head_dim / 2; i++)
        VIDI_CHECK(spec->pair_axis[i] >= 0 && spec->pair_axis[i] < spec->n_axes, err, VIDI_ERR_INVALID,
                   "%s: pair_axis[%d] = %d is not an axis of %d", op, i, (int)spec->pair_axis[i], spec->n_axes);
    {
        const int64_t D = spec->head_dim;
        VIDI_CHECK(qkv->ndim == 2 && q_out->ndim == 3 && q_out->shape[2] == D && k_cache->ndim == 2 &&
                       v_cache->ndim == 2 && vidi_same_shape(k_cache, v_cache) && k_cache->shape[1] % D == 0 &&
                       k_cache->shape[1] > 0,
                   err, VIDI_ERR_INVALID,
                   "%s: qkv %s must be [T, C], q_out %s [T, Hq, %lld], k_cache %s and v_cache %s one shape [R, Hkv*%lld]",
                   op, vidi_shape_of(qkv).s, vidi_shape_of(q_out).s, (long long)D, vidi_shape_of(k_cache).s,
                   vidi_shape_of(v_cache).s, (long long)D);
        const int64_t T = qkv->shape[0], Hq = q_out->shape[1], Hkv = k_cache->shape[1] / D;
        VIDI_CHECK(q_out->shape[0] == T && qkv->shape[1] == (Hq + 2 * Hkv) * D, err, VIDI_ERR_INVALID,
                   "%s: qkv %s must be [%lld, (%lld + 2 * %lld) * %lld] for q_out %s and k_cache %s", op,
                   vidi_shape_of(qkv).s, (long long)T, (long long)Hq, (long long)Hkv, (long long)D,
                   vidi_shape_of(q_out).s, vidi_shape_of(k_cache).s);
        VIDI_CHECK((pos->ndim == 2 && pos->shape[0] == T && pos->shape[1] == spec->n_axes) ||
                       (pos->ndim == 1 && spec->n_axes == 1 && pos->shape[0] == T),
                   err, VIDI_ERR_INVALID, "%s: pos %s must be [%lld, %d]", op, vidi_shape_of(pos).s, (long long)T,
                   spec->n_axes);
        VIDI_CHECK(slots->ndim == 1 && slots->shape[0] == T, err, VIDI_ERR_INVALID, "%s: slots %s must be [%lld]",
                   op, vidi_shape_of(slots).s, (long long)T);
        VIDI_CHECK(k_cache->shape[0] <= INT32_MAX && T <= INT32_MAX, err, VIDI_ERR_UNSUPPORTED,
                   "%s: sizes beyond 2^31", op);
        VIDI_TRY(vidi_check_alias(op, "q_out", q_out, "qkv", qkv, 0, err));
        VIDI_TRY(vidi_check_alias(op, "k_cache", k_cache, "qkv", qkv, 0, err));
        VIDI_TRY(vidi_check_alias(op, "v_cache", v_cache, "qkv", qkv, 0, err));
        VIDI_TRY(vidi_check_alias(op, "k_cache", k_cache, "v_cache", v_cache, 0, err));
        VIDI_TRY(vidi_check_alias(op, "q_out", q_out, "k_cache", k_cache, 0, err));
        VIDI_TRY(vidi_check_alias(op, "q_out", q_out, "v_cache", v_cache, 0, err));
        *hq = Hq;
        *hkv = Hkv;
    }
fail:
    return rc;
}

/* t holds numel(ids) rows of cols (the row count a gather writes or a
 * scatter reads); other is named in the message. */
static vidi_status check_rows_for_ids(const char *op, const char *tname, const vidi_tensor *t, const char *iname,
                                      const vidi_tensor *ids, const char *oname, const vidi_tensor *other,
                                      int64_t cols, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    const int64_t n = vidi_tensor_numel(ids);
    VIDI_CHECK(vidi_tensor_rows(t) == n && vidi_tensor_cols(t) == cols, err, VIDI_ERR_INVALID,
               "%s: %s %s must hold %lld rows of %lld (%s %s, %s %s)", op, tname, vidi_shape_of(t).s, (long long)n,
               (long long)cols, iname, vidi_shape_of(ids).s, oname, vidi_shape_of(other).s);
fail:
    return rc;
}

vidi_status vidi_check_gather_rows(const char *op, unsigned acts, const vidi_tensor *table, const vidi_tensor *ids,
                                   const vidi_tensor *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_weight(op, "table", table, err));
    VIDI_TRY(vidi_check_dtype(op, "ids", ids, VIDI_DTYPE_I32, err));
    VIDI_TRY(vidi_check_act(op, "out", out, acts, err));
    VIDI_CHECK(table->ndim == 2, err, VIDI_ERR_INVALID, "%s: table %s must be 2-D", op, vidi_shape_of(table).s);
    VIDI_TRY(check_rows_for_ids(op, "out", out, "ids", ids, "table", table, table->shape[1], err));
    VIDI_TRY(vidi_check_alias(op, "out", out, "table", table, 0, err));
    VIDI_TRY(vidi_check_alias(op, "out", out, "ids", ids, 0, err));
fail:
    return rc;
}

vidi_status vidi_check_scatter_rows(const char *op, unsigned acts, const vidi_tensor *src, const vidi_tensor *idx,
                                    const vidi_tensor *dst, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act(op, "src", src, acts, err));
    VIDI_TRY(vidi_check_dtype(op, "idx", idx, VIDI_DTYPE_I32, err));
    VIDI_TRY(vidi_check_act(op, "dst", dst, acts, err));
    VIDI_TRY(check_rows_for_ids(op, "src", src, "idx", idx, "dst", dst, vidi_tensor_cols(dst), err));
    VIDI_TRY(vidi_check_alias(op, "dst", dst, "src", src, 0, err));
    VIDI_TRY(vidi_check_alias(op, "dst", dst, "idx", idx, 0, err));
fail:
    return rc;
}
