/* kernels/check.c — argument checks shared by the backends (check.h). */
#include "kernels/check.h"

#include <stdint.h>
#include <stdio.h>

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
