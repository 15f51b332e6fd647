/* model/safetensors.h — one .safetensors file, memory-mapped and validated.
 *
 * Layout: an 8-byte little-endian u64 N, an N-byte UTF-8 JSON header, then
 * the data. The header maps each tensor name to
 * {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to the
 * start of the data) plus an optional "__metadata__" map of strings.
 *
 * vidi_st_open checks all of it before returning: N <= 100,000,000 and fits
 * in the file; the header is one JSON object without duplicate keys; every
 * entry has a known dtype, a shape of non-negative integers whose byte size
 * does not overflow, and data_offsets with begin <= end inside the data
 * area and end - begin == numel * dtype size; sorted by offset the tensors
 * tile the data area exactly (no gap, no overlap, nothing after the last).
 * Any failure is an error naming the file and, where there is one, the
 * tensor. Views point into the mapping and live until vidi_st_close.
 */
#ifndef VIDI_MODEL_SAFETENSORS_H
#define VIDI_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"

/* Largest header the reader accepts, as in the reference implementation. */
#define VIDI_ST_MAX_HEADER 100000000ull
/* Most dimensions a tensor may have here (more is VIDI_ERR_UNSUPPORTED). */
#define VIDI_ST_MAX_DIMS 8

typedef enum vidi_st_dtype {
    VIDI_ST_DTYPE_BOOL = 0,
    VIDI_ST_DTYPE_U8,
    VIDI_ST_DTYPE_I8,
    VIDI_ST_DTYPE_F8_E5M2,
    VIDI_ST_DTYPE_F8_E4M3,
    VIDI_ST_DTYPE_I16,
    VIDI_ST_DTYPE_U16,
    VIDI_ST_DTYPE_F16,
    VIDI_ST_DTYPE_BF16,
    VIDI_ST_DTYPE_I32,
    VIDI_ST_DTYPE_U32,
    VIDI_ST_DTYPE_F32,
    VIDI_ST_DTYPE_F64,
    VIDI_ST_DTYPE_I64,
    VIDI_ST_DTYPE_U64,
    VIDI_ST_DTYPE_COUNT
} vidi_st_dtype;

/* The file's spelling ("BF16") and the element size in bytes. */
const char *vidi_st_dtype_name(vidi_st_dtype dt);
size_t vidi_st_dtype_size(vidi_st_dtype dt);
/* The dtype spelled `name`; VIDI_ERR_NOTFOUND for an unknown spelling. */
vidi_status vidi_st_dtype_parse(const char *name, vidi_st_dtype *out);

/* Format a shape as "[3,4]" into buf (cut short with "...]" when it does not
 * fit); returns buf. */
const char *vidi_st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

/* One header entry. `name` lives as long as the file. */
typedef struct vidi_st_info {
    const char *name;
    vidi_st_dtype dtype;
    int ndim;
    int64_t shape[VIDI_ST_MAX_DIMS];
    uint64_t begin, end;     /* byte offsets into the data area */
} vidi_st_info;

typedef struct vidi_st_file vidi_st_file;

/* Map and validate `path`. Returns VIDI_ERR_NOTFOUND when the file does not
 * exist, VIDI_ERR_IO when it cannot be read or mapped, VIDI_ERR_RANGE for a
 * header over VIDI_ST_MAX_HEADER, VIDI_ERR_UNSUPPORTED for an unknown dtype
 * or more than VIDI_ST_MAX_DIMS dimensions, VIDI_ERR_FORMAT for anything
 * else malformed. Freed by vidi_st_close. */
vidi_status vidi_st_open(const char *path, vidi_st_file **out, vidi_err *err);
void vidi_st_close(vidi_st_file *f);

/* The path given to vidi_st_open. */
const char *vidi_st_path(const vidi_st_file *f);
int vidi_st_count(const vidi_st_file *f);
/* Entry i (0 <= i < count) in name order, so 0..count-1 iterates the names
 * sorted bytewise; NULL when out of range. */
const vidi_st_info *vidi_st_at(const vidi_st_file *f, int i);
/* The entry called `name` (binary search), or NULL. */
const vidi_st_info *vidi_st_find(const vidi_st_file *f, const char *name);
/* The bytes of an entry inside the mapping (info->end - info->begin long). */
const void *vidi_st_data(const vidi_st_file *f, const vidi_st_info *info);

/* A vidi_tensor view of `info` (F32, F16, BF16). A tensor of more than
 * VIDI_MAX_DIMS dimensions has its trailing ones folded into the last
 * ([1280,3,2,14,14] is viewed as [1280,3,2,196]). Other dtypes, or data not
 * aligned to the element size, give VIDI_ERR_UNSUPPORTED naming the file
 * and the tensor. */
vidi_status vidi_st_view(const vidi_st_file *f, const vidi_st_info *info, vidi_tensor *out,
                         vidi_err *err);
/* vidi_st_find + vidi_st_view; a missing name is VIDI_ERR_NOTFOUND. */
vidi_status vidi_st_get(const vidi_st_file *f, const char *name, vidi_tensor *out, vidi_err *err);

/* The "__metadata__" string for `key`, or NULL. */
const char *vidi_st_metadata(const vidi_st_file *f, const char *key);
int vidi_st_metadata_count(const vidi_st_file *f);

/* One tensor for vidi_st_write; `data` holds numel * dtype size bytes. */
typedef struct vidi_st_entry {
    const char *name;
    vidi_st_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data;
} vidi_st_entry;

/* Write a safetensors file holding `n` tensors. The data is stored largest
 * element size first (then in the given order) after a header padded with
 * spaces to a multiple of 8 bytes, so every tensor is aligned when mapped.
 * `meta` holds n_meta key/value pairs (meta[2k], meta[2k+1]) for
 * "__metadata__"; NULL/0 for none. Duplicate names are VIDI_ERR_INVALID. */
vidi_status vidi_st_write(const char *path, const vidi_st_entry *tensors, int n,
                          const char *const *meta, int n_meta, vidi_err *err);

#endif
