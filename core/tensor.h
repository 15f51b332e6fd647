/* core/tensor.h — dtypes and a plain tensor view.
 *
 * A vidi_tensor is a view: dtype, shape (PyTorch order, last dimension
 * innermost, row-major, contiguous) and a data pointer it does not own. The
 * pointer is host memory for the CPU backend and device memory for CUDA.
 * Half-precision values are stored as uint16_t bit patterns.
 */
#ifndef VIDI_CORE_TENSOR_H
#define VIDI_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum vidi_dtype {
    VIDI_DTYPE_F32 = 0,
    VIDI_DTYPE_F16 = 1,
    VIDI_DTYPE_BF16 = 2,
    VIDI_DTYPE_I32 = 3,
    VIDI_DTYPE_COUNT
} vidi_dtype;

#define VIDI_MAX_DIMS 4

typedef struct vidi_tensor {
    vidi_dtype dtype;
    int ndim;
    int64_t shape[VIDI_MAX_DIMS];
    void *data;
} vidi_tensor;

size_t vidi_dtype_size(vidi_dtype dt);
const char *vidi_dtype_name(vidi_dtype dt);

/* A contiguous view of `data` with the given shape (ndim <= VIDI_MAX_DIMS). */
vidi_tensor vidi_tensor_view(vidi_dtype dt, void *data, int ndim, const int64_t *shape);
/* Shorthands for 1-, 2- and 3-D views. */
vidi_tensor vidi_tensor_1d(vidi_dtype dt, void *data, int64_t n0);
vidi_tensor vidi_tensor_2d(vidi_dtype dt, void *data, int64_t n0, int64_t n1);
vidi_tensor vidi_tensor_3d(vidi_dtype dt, void *data, int64_t n0, int64_t n1, int64_t n2);

int64_t vidi_tensor_numel(const vidi_tensor *t);
size_t vidi_tensor_nbytes(const vidi_tensor *t);
/* Rows = product of all dimensions but the last; cols = the last. */
int64_t vidi_tensor_rows(const vidi_tensor *t);
int64_t vidi_tensor_cols(const vidi_tensor *t);

/* Scalar conversions. f32 -> bf16/f16 round to nearest even; NaN stays NaN. */
static inline float vidi_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}
uint16_t vidi_f32_to_bf16(float f);
float vidi_f16_to_f32(uint16_t h);
uint16_t vidi_f32_to_f16(float f);

/* Convert n values of dtype `src_dt` (F32, F16, BF16 or I32) to float. */
void vidi_convert_to_f32(vidi_dtype src_dt, const void *src, float *dst, size_t n);
/* Convert n floats to dtype `dst_dt` (F32, F16 or BF16). */
void vidi_convert_from_f32(vidi_dtype dst_dt, const float *src, void *dst, size_t n);

#endif
