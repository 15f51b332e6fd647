/* kernels/check.h — argument checks shared by every backend's ops, so that
 * the CPU and CUDA twins refuse the same inputs with the same words. Every
 * message starts with the op name. */
#ifndef VIDI_KERNELS_CHECK_H
#define VIDI_KERNELS_CHECK_H

#include "core/err.h"
#include "core/tensor.h"
#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vidi_shape_text {
    char s[128];
} vidi_shape_text;

/* "[2, 3, 4] f32", for messages. */
vidi_shape_text vidi_shape_of(const vidi_tensor *t);
int vidi_same_shape(const vidi_tensor *a, const vidi_tensor *b);
/* 1 when [a, a + na) and [b, b + nb) share a byte (addresses only). */
int vidi_bytes_overlap(const void *a, size_t na, const void *b, size_t nb);

/* Non-NULL, 1..VIDI_MAX_DIMS dimensions, a known dtype, no negative
 * dimension, data unless empty. */
vidi_status vidi_check_tensor(const char *op, const char *name, const vidi_tensor *t, vidi_err *err);
/* vidi_check_tensor and dtype == want. */
vidi_status vidi_check_dtype(const char *op, const char *name, const vidi_tensor *t, vidi_dtype want,
                             vidi_err *err);
/* vidi_check_tensor and a weight dtype (f32, bf16, f16). */
vidi_status vidi_check_weight(const char *op, const char *name, const vidi_tensor *t, vidi_err *err);
/* y must not share memory with x, except that with exact_ok it may be the
 * very same tensor (same start, same size). x may be NULL. Pointers are
 * compared as addresses, so this works for device memory too. */
vidi_status vidi_check_alias(const char *op, const char *yname, const vidi_tensor *y, const char *xname,
                             const vidi_tensor *x, int exact_ok, vidi_err *err);
vidi_status vidi_check_act_kind(const char *op, vidi_act kind, vidi_err *err);

/* Activation dtypes a backend's ops take, as a mask of (1u << vidi_dtype). */
#define VIDI_ACTS(dt) (1u << (unsigned)(dt))
/* vidi_check_tensor and a dtype in `acts`. */
vidi_status vidi_check_act(const char *op, const char *name, const vidi_tensor *t, unsigned acts, vidi_err *err);
/* y = f(x) elementwise or by rows: x and y activations of one shape, y
 * either x itself or apart from it. */
vidi_status vidi_check_unary(const char *op, unsigned acts, const vidi_tensor *x, const vidi_tensor *y,
                             vidi_err *err);
/* y = f(a, b) elementwise: three activations of one shape, y either one of
 * the inputs or apart from both. */
vidi_status vidi_check_binary(const char *op, unsigned acts, const char *aname, const vidi_tensor *a,
                              const char *bname, const vidi_tensor *b, const vidi_tensor *y, vidi_err *err);
/* The arguments of ops->matmul: x [M, K] and y [M, N] activations, w [N, K]
 * and bias [N] weights, y overlapping none of them, sizes in int range. */
vidi_status vidi_check_matmul(const char *op, unsigned acts, const vidi_tensor *x, const vidi_tensor *w,
                              const vidi_tensor *bias, const vidi_tensor *y, vidi_err *err);
/* The arguments of ops->rms_norm / layer_norm: y shaped as x (in place
 * allowed), w and b (may be NULL) [cols], eps >= 0. */
vidi_status vidi_check_norm(const char *op, unsigned acts, const vidi_tensor *x, const vidi_tensor *w,
                            const vidi_tensor *b, float eps, const vidi_tensor *y, vidi_err *err);

/* qkv_rope_store's arguments (ops.h) against a backend's activation
 * dtypes; *hq, *hkv get the head counts. Slot values are not read. */
vidi_status vidi_check_qkv_rope_store(const char *op, unsigned acts, const vidi_tensor *qkv, const vidi_tensor *pos,
                                      const vidi_rope_spec *spec, const vidi_tensor *q_out,
                                      const vidi_tensor *slots, const vidi_tensor *k_cache,
                                      const vidi_tensor *v_cache, int64_t *hq, int64_t *hkv, vidi_err *err);

/* gather_rows' arguments (ops.h): a 2-D weight table, i32 ids, out holding
 * numel(ids) rows of the table's width in one of `acts`, no aliasing. The
 * index values are not read: each backend checks them where they live. */
vidi_status vidi_check_gather_rows(const char *op, unsigned acts, const vidi_tensor *table, const vidi_tensor *ids,
                                   const vidi_tensor *out, vidi_err *err);
/* scatter_rows' arguments: src holding numel(idx) rows of dst's width, i32
 * idx, src and dst in `acts`, no aliasing; index values not read. */
vidi_status vidi_check_scatter_rows(const char *op, unsigned acts, const vidi_tensor *src, const vidi_tensor *idx,
                                    const vidi_tensor *dst, vidi_err *err);

#ifdef __cplusplus
}
#endif

#endif
