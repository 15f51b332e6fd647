/* core/npy.h — NumPy .npy files (format 1.0/2.0/3.0, C order, little
 * endian): how reference outputs and CLI tensors travel.
 */
#ifndef VIDI_CORE_NPY_H
#define VIDI_CORE_NPY_H

#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"

typedef struct vidi_npy {
    vidi_dtype dtype;        /* F32 or I32 after loading */
    int ndim;
    int64_t shape[VIDI_MAX_DIMS];
    void *data;              /* malloc'd; freed by vidi_npy_free */
} vidi_npy;

/* Read a .npy file. <f4, <i4 load as is; <f8 converts to F32; <i8 converts
 * to I32 (values out of range are an error); <f2 converts to F32. Fortran
 * order, big-endian, more than VIDI_MAX_DIMS dimensions, a size that does
 * not match the header are errors naming the file. */
vidi_status vidi_npy_read(const char *path, vidi_npy *out, vidi_err *err);
/* Write an F32 or I32 array. */
vidi_status vidi_npy_write(const char *path, vidi_dtype dtype, int ndim, const int64_t *shape,
                           const void *data, vidi_err *err);
void vidi_npy_free(vidi_npy *a);
/* The array as a tensor view (no copy). */
vidi_tensor vidi_npy_tensor(const vidi_npy *a);

#endif
