/* model/safetensors.c — mapping, validating and writing .safetensors files
 * (see safetensors.h for the format and the checks). */
#include "model/safetensors.h"

#include "core/json.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_KEY "__metadata__"

struct vidi_st_file {
    char *path;
    unsigned char *map;      /* whole file, read-only */
    size_t map_size;
    const unsigned char *data; /* map + 8 + header size */
    uint64_t data_size;
    int n;
    vidi_st_info *infos;     /* sorted by name */
    char *names;             /* every name, NUL-terminated, back to back */
    int n_meta;
    char **meta;             /* key, value, key, value, ... */
};

static const struct {
    const char *name;
    size_t size;
} dtype_table[VIDI_ST_DTYPE_COUNT] = {
    [VIDI_ST_DTYPE_BOOL] = {"BOOL", 1},       [VIDI_ST_DTYPE_U8] = {"U8", 1},
    [VIDI_ST_DTYPE_I8] = {"I8", 1},           [VIDI_ST_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
    [VIDI_ST_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [VIDI_ST_DTYPE_I16] = {"I16", 2},
    [VIDI_ST_DTYPE_U16] = {"U16", 2},         [VIDI_ST_DTYPE_F16] = {"F16", 2},
    [VIDI_ST_DTYPE_BF16] = {"BF16", 2},       [VIDI_ST_DTYPE_I32] = {"I32", 4},
    [VIDI_ST_DTYPE_U32] = {"U32", 4},         [VIDI_ST_DTYPE_F32] = {"F32", 4},
    [VIDI_ST_DTYPE_F64] = {"F64", 8},         [VIDI_ST_DTYPE_I64] = {"I64", 8},
    [VIDI_ST_DTYPE_U64] = {"U64", 8},
};

const char *vidi_st_dtype_name(vidi_st_dtype dt) {
    return (unsigned)dt < VIDI_ST_DTYPE_COUNT ? dtype_table[dt].name : "?";
}

size_t vidi_st_dtype_size(vidi_st_dtype dt) {
    return (unsigned)dt < VIDI_ST_DTYPE_COUNT ? dtype_table[dt].size : 0;
}

vidi_status vidi_st_dtype_parse(const char *name, vidi_st_dtype *out) {
    for (int i = 0; i < VIDI_ST_DTYPE_COUNT; i++) {
        if (!strcmp(name, dtype_table[i].name)) {
            *out = (vidi_st_dtype)i;
            return VIDI_OK;
        }
    }
    return VIDI_ERR_NOTFOUND;
}

const char *vidi_st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    buf[k++] = '[';
    for (int i = 0; i < ndim && k < cap; i++) {
        int w = snprintf(buf + k, cap - k, "%s%lld", i ? "," : "", (long long)shape[i]);
        if (w < 0 || (size_t)w >= cap - k) {
            snprintf(buf + (cap > 5 ? cap - 5 : 0), cap > 5 ? 5 : cap, "...]");
            return buf;
        }
        k += (size_t)w;
    }
    snprintf(buf + k, cap - k, "]");
    return buf;
}

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int cmp_info_name(const void *a, const void *b) {
    return strcmp(((const vidi_st_info *)a)->name, ((const vidi_st_info *)b)->name);
}

static int cmp_info_offset(const void *a, const void *b) {
    const vidi_st_info *x = *(const vidi_st_info *const *)a, *y = *(const vidi_st_info *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Parse one header entry `v` for tensor `name` into *info (name not set). */
static vidi_status parse_entry(const vidi_st_file *f, const char *name, json_t *v,
                               vidi_st_info *info, vidi_err *err) {
    const char *path = f->path;
    char sbuf[160];
    if (!json_is_object(v))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': entry is %s, not an object",
                            path, name, vidi_json_kind(v));

    json_t *jd = json_object_get(v, "dtype");
    if (!jd)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': missing \"dtype\"", path, name);
    if (!json_is_string(jd))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': \"dtype\" is %s, not a string",
                            path, name, vidi_json_kind(jd));
    if (vidi_st_dtype_parse(json_string_value(jd), &info->dtype) != VIDI_OK)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "%s: tensor '%s': unknown dtype '%s' (known: BOOL U8 I8 F8_E5M2 F8_E4M3 "
                            "I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64)",
                            path, name, json_string_value(jd));

    json_t *js = json_object_get(v, "shape");
    if (!js)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': missing \"shape\"", path, name);
    if (!json_is_array(js))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': \"shape\" is %s, not an array",
                            path, name, vidi_json_kind(js));
    size_t nd = json_array_size(js);
    if (nd > VIDI_ST_MAX_DIMS)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "%s: tensor '%s': %zu dimensions, more than the %d supported", path, name,
                            nd, VIDI_ST_MAX_DIMS);
    info->ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d))
            return vidi_err_set(err, VIDI_ERR_FORMAT,
                                "%s: tensor '%s': shape[%zu] is %s, not an integer", path, name, i,
                                vidi_json_kind(d));
        if (json_integer_value(d) < 0)
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is negative (%lld)",
                                path, name, i, (long long)json_integer_value(d));
        info->shape[i] = (int64_t)json_integer_value(d);
    }
    /* byte size, refusing overflow of 64 bits */
    uint64_t nbytes = vidi_st_dtype_size(info->dtype);
    int zero = 0;
    for (int i = 0; i < info->ndim; i++) if (info->shape[i] == 0) zero = 1;
    if (zero) {
        nbytes = 0;
    } else {
        for (int i = 0; i < info->ndim; i++) {
            uint64_t d = (uint64_t)info->shape[i];
            if (nbytes > UINT64_MAX / d)
                return vidi_err_set(err, VIDI_ERR_FORMAT,
                                    "%s: tensor '%s': shape %s of %s overflows 64-bit byte count",
                                    path, name, vidi_st_shape_str(sbuf, sizeof sbuf, info->ndim, info->shape),
                                    vidi_st_dtype_name(info->dtype));
            nbytes *= d;
        }
    }

    json_t *jo = json_object_get(v, "data_offsets");
    if (!jo)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': missing \"data_offsets\"", path,
                            name);
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "%s: tensor '%s': \"data_offsets\" is not an array of two integers", path,
                            name);
    json_int_t b = json_integer_value(json_array_get(jo, 0));
    json_int_t e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < 0)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld) is negative",
                            path, name, (long long)b, (long long)e);
    info->begin = (uint64_t)b;
    info->end = (uint64_t)e;
    if (info->begin > info->end)
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu) begins after it ends", path, name,
                            (unsigned long long)info->begin, (unsigned long long)info->end);
    if (info->end > f->data_size)
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu) run past the end of the data "
                            "area (%llu bytes; file truncated?)",
                            path, name, (unsigned long long)info->begin, (unsigned long long)info->end,
                            (unsigned long long)f->data_size);
    if (info->end - info->begin != nbytes)
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu) but shape %s of %s needs %llu bytes",
                            path, name, (unsigned long long)info->begin, (unsigned long long)info->end,
                            vidi_st_shape_str(sbuf, sizeof sbuf, info->ndim, info->shape),
                            vidi_st_dtype_name(info->dtype), (unsigned long long)nbytes);
    return VIDI_OK;
}

static vidi_status parse_metadata(vidi_st_file *f, json_t *m, vidi_err *err) {
    if (!json_is_object(m))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: \"%s\" is %s, not an object", f->path,
                            META_KEY, vidi_json_kind(m));
    size_t n = json_object_size(m);
    f->meta = calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta) return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: out of memory", f->path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: \"%s\" entry '%s' is %s, not a string",
                                f->path, META_KEY, k, vidi_json_kind(v));
        char *ks = strdup(k), *vs = strdup(json_string_value(v));
        f->meta[2 * f->n_meta] = ks;
        f->meta[2 * f->n_meta + 1] = vs;
        f->n_meta++;
        if (!ks || !vs) return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: out of memory", f->path);
    }
    return VIDI_OK;
}

/* Check that the entries, in offset order, tile [0, data_size) exactly. */
static vidi_status check_tiling(const vidi_st_file *f, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    const vidi_st_info **order = NULL;
    if (f->n > 0) {
        order = malloc((size_t)f->n * sizeof *order);
        if (!order) return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: out of memory", f->path);
        for (int i = 0; i < f->n; i++) order[i] = &f->infos[i];
        qsort(order, (size_t)f->n, sizeof *order, cmp_info_offset);
    }
    uint64_t at = 0;
    const vidi_st_info *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        const vidi_st_info *t = order[i];
        VIDI_CHECK(t->begin <= at, err, VIDI_ERR_FORMAT,
                   "%s: tensor '%s': data_offsets [%llu, %llu) leave a gap of %llu bytes after %s%s%s "
                   "(tensors must be contiguous)",
                   f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                   (unsigned long long)(t->begin - at), prev ? "tensor '" : "the start of the data",
                   prev ? prev->name : "", prev ? "'" : "");
        VIDI_CHECK(t->begin == at, err, VIDI_ERR_FORMAT,
                   "%s: tensor '%s': data_offsets [%llu, %llu) overlap tensor '%s', which ends at %llu",
                   f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                   prev ? prev->name : "?", (unsigned long long)at);
        at = t->end;
        prev = t;
    }
    VIDI_CHECK(at == f->data_size, err, VIDI_ERR_FORMAT,
               "%s: the data area has %llu bytes but the tensors cover only %llu (%llu trailing bytes "
               "after %s%s%s)",
               f->path, (unsigned long long)f->data_size, (unsigned long long)at,
               (unsigned long long)(f->data_size - at), prev ? "tensor '" : "the header",
               prev ? prev->name : "", prev ? "'" : "");
fail:
    free(order);
    return rc;
}

static vidi_status parse_header(vidi_st_file *f, const unsigned char *hdr, size_t len, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)hdr, len, JSON_REJECT_DUPLICATES, &jerr);
    VIDI_CHECK(root, err, VIDI_ERR_FORMAT, "%s: header is not valid JSON: %s (line %d, column %d)",
               f->path, jerr.text, jerr.line, jerr.column);
    VIDI_CHECK(json_is_object(root), err, VIDI_ERR_FORMAT,
               "%s: header is %s, not a JSON object", f->path, vidi_json_kind(root));

    size_t n = 0, name_bytes = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, META_KEY)) continue;
        n++;
        name_bytes += strlen(key) + 1;
    }
    VIDI_CHECK(n <= (size_t)INT32_MAX, err, VIDI_ERR_RANGE, "%s: too many tensors (%zu)", f->path, n);
    f->infos = calloc(n ? n : 1, sizeof *f->infos);
    f->names = malloc(name_bytes ? name_bytes : 1);
    VIDI_CHECK(f->infos && f->names, err, VIDI_ERR_NOMEM, "%s: out of memory for %zu tensors", f->path, n);

    char *np = f->names;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, META_KEY)) {
            VIDI_TRY(parse_metadata(f, v, err));
            continue;
        }
        vidi_st_info *info = &f->infos[f->n];
        size_t kl = strlen(key) + 1;
        memcpy(np, key, kl);
        info->name = np;
        np += kl;
        f->n++;
        VIDI_TRY(parse_entry(f, info->name, v, info, err));
    }
    VIDI_TRY(check_tiling(f, err));
    qsort(f->infos, (size_t)f->n, sizeof *f->infos, cmp_info_name);
fail:
    json_decref(root);
    return rc;
}

vidi_status vidi_st_open(const char *path, vidi_st_file **out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_st_file *f = NULL;
    int fd = -1;
    *out = NULL;

    f = calloc(1, sizeof *f);
    VIDI_CHECK(f, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
    f->path = strdup(path);
    VIDI_CHECK(f->path, err, VIDI_ERR_NOMEM, "%s: out of memory", path);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    VIDI_CHECK(fd >= 0, err, errno == ENOENT ? VIDI_ERR_NOTFOUND : VIDI_ERR_IO, "%s: cannot open: %s",
               path, strerror(errno));
    struct stat stt;
    VIDI_CHECK(fstat(fd, &stt) == 0, err, VIDI_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    VIDI_CHECK(S_ISREG(stt.st_mode), err, VIDI_ERR_IO, "%s: not a regular file", path);
    uint64_t fsize = (uint64_t)stt.st_size;
    VIDI_CHECK(fsize >= 8, err, VIDI_ERR_FORMAT,
               "%s: truncated: %llu bytes, too short for the 8-byte header size", path,
               (unsigned long long)fsize);
    VIDI_CHECK(fsize <= SIZE_MAX, err, VIDI_ERR_RANGE, "%s: too large to map", path);

    f->map_size = (size_t)fsize;
    void *m = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    VIDI_CHECK(m != MAP_FAILED, err, VIDI_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, f->map_size,
               strerror(errno));
    f->map = m;
    close(fd);
    fd = -1;

    uint64_t hsize = read_le64(f->map);
    VIDI_CHECK(hsize <= VIDI_ST_MAX_HEADER, err, VIDI_ERR_RANGE,
               "%s: header size %llu exceeds the limit of %llu bytes (not a safetensors file?)", path,
               (unsigned long long)hsize, VIDI_ST_MAX_HEADER);
    VIDI_CHECK(hsize <= fsize - 8, err, VIDI_ERR_FORMAT,
               "%s: truncated: header size %llu but only %llu bytes follow the size field", path,
               (unsigned long long)hsize, (unsigned long long)(fsize - 8));
    f->data = f->map + 8 + hsize;
    f->data_size = fsize - 8 - hsize;
    VIDI_TRY(parse_header(f, f->map + 8, (size_t)hsize, err));

    *out = f;
    return VIDI_OK;
fail:
    if (fd >= 0) close(fd);
    vidi_st_close(f);
    return rc;
}

void vidi_st_close(vidi_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    free(f->infos);
    free(f->names);
    free(f->path);
    free(f);
}

const char *vidi_st_path(const vidi_st_file *f) { return f->path; }

int vidi_st_count(const vidi_st_file *f) { return f->n; }

const vidi_st_info *vidi_st_at(const vidi_st_file *f, int i) {
    return i >= 0 && i < f->n ? &f->infos[i] : NULL;
}

const vidi_st_info *vidi_st_find(const vidi_st_file *f, const char *name) {
    vidi_st_info key = {.name = name};
    return f->n ? bsearch(&key, f->infos, (size_t)f->n, sizeof *f->infos, cmp_info_name) : NULL;
}

const void *vidi_st_data(const vidi_st_file *f, const vidi_st_info *info) {
    return f->data + info->begin;
}

vidi_status vidi_st_view(const vidi_st_file *f, const vidi_st_info *info, vidi_tensor *out,
                         vidi_err *err) {
    vidi_dtype dt;
    switch (info->dtype) {
    case VIDI_ST_DTYPE_F32: dt = VIDI_DTYPE_F32; break;
    case VIDI_ST_DTYPE_F16: dt = VIDI_DTYPE_F16; break;
    case VIDI_ST_DTYPE_BF16: dt = VIDI_DTYPE_BF16; break;
    default:
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "%s: tensor '%s': dtype %s cannot be used as a tensor (F32, F16 or BF16 only)",
                            f->path, info->name, vidi_st_dtype_name(info->dtype));
    }
    int64_t shape[VIDI_MAX_DIMS];
    int ndim = info->ndim < VIDI_MAX_DIMS ? info->ndim : VIDI_MAX_DIMS;
    for (int i = 0; i < ndim; i++) shape[i] = info->shape[i];
    for (int i = VIDI_MAX_DIMS; i < info->ndim; i++) shape[VIDI_MAX_DIMS - 1] *= info->shape[i];
    const unsigned char *p = f->data + info->begin;
    if (info->end > info->begin && (uintptr_t)p % vidi_dtype_size(dt) != 0)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "%s: tensor '%s': data at file offset %llu is not aligned to %zu bytes",
                            f->path, info->name, (unsigned long long)(p - f->map), vidi_dtype_size(dt));
    /* The mapping is read-only; vidi_tensor has a mutable pointer by design. */
    *out = vidi_tensor_view(dt, (void *)(uintptr_t)p, ndim, shape);
    return VIDI_OK;
}

vidi_status vidi_st_get(const vidi_st_file *f, const char *name, vidi_tensor *out, vidi_err *err) {
    const vidi_st_info *info = vidi_st_find(f, name);
    if (!info) return vidi_err_set(err, VIDI_ERR_NOTFOUND, "%s: no tensor '%s'", f->path, name);
    return vidi_st_view(f, info, out, err);
}

const char *vidi_st_metadata(const vidi_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[2 * i], key)) return f->meta[2 * i + 1];
    return NULL;
}

int vidi_st_metadata_count(const vidi_st_file *f) { return f->n_meta; }

/* ---- writing ---- */

typedef struct write_slot {
    const vidi_st_entry *t;
    int index;
} write_slot;

/* Larger elements first, then the caller's order. */
static int cmp_slot(const void *a, const void *b) {
    const write_slot *x = a, *y = b;
    size_t sx = vidi_st_dtype_size(x->t->dtype), sy = vidi_st_dtype_size(y->t->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return x->index - y->index;
}

vidi_status vidi_st_write(const char *path, const vidi_st_entry *tensors, int n,
                          const char *const *meta, int n_meta, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    json_t *root = json_object();
    char *hdr = NULL;
    FILE *fp = NULL;
    write_slot *order = NULL;
    VIDI_CHECK(root, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
    VIDI_CHECK(n >= 0, err, VIDI_ERR_INVALID, "%s: negative tensor count", path);

    if (n_meta > 0) {
        json_t *m = json_object();
        VIDI_CHECK(m && json_object_set_new(root, META_KEY, m) == 0, err, VIDI_ERR_NOMEM,
                   "%s: out of memory", path);
        for (int i = 0; i < n_meta; i++)
            VIDI_CHECK(json_object_set_new(m, meta[2 * i], json_string(meta[2 * i + 1])) == 0, err,
                       VIDI_ERR_INVALID, "%s: bad metadata entry '%s'", path, meta[2 * i]);
    }
    order = malloc((size_t)(n ? n : 1) * sizeof *order);
    VIDI_CHECK(order, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        const vidi_st_entry *t = &tensors[i];
        VIDI_CHECK((unsigned)t->dtype < VIDI_ST_DTYPE_COUNT && t->ndim >= 0 &&
                       t->ndim <= VIDI_ST_MAX_DIMS && strcmp(t->name, META_KEY) != 0,
                   err, VIDI_ERR_INVALID, "%s: tensor '%s': bad dtype, rank or name", path, t->name);
        for (int d = 0; d < t->ndim; d++)
            VIDI_CHECK(t->shape[d] >= 0, err, VIDI_ERR_INVALID, "%s: tensor '%s': negative shape", path,
                       t->name);
        order[i] = (write_slot){t, i};
    }
    qsort(order, (size_t)n, sizeof *order, cmp_slot);

    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const vidi_st_entry *t = order[i].t;
        VIDI_CHECK(!json_object_get(root, t->name), err, VIDI_ERR_INVALID,
                   "%s: tensor '%s' given twice", path, t->name);
        uint64_t nbytes = vidi_st_dtype_size(t->dtype);
        json_t *shape = json_array();
        VIDI_CHECK(shape, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
        for (int d = 0; d < t->ndim; d++) {
            json_array_append_new(shape, json_integer(t->shape[d]));
            nbytes *= (uint64_t)t->shape[d];
        }
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", vidi_st_dtype_name(t->dtype), "shape",
                              shape, "data_offsets", (json_int_t)off, (json_int_t)(off + nbytes));
        VIDI_CHECK(e && json_object_set_new(root, t->name, e) == 0, err, VIDI_ERR_NOMEM,
                   "%s: out of memory", path);
        off += nbytes;
    }
    hdr = json_dumps(root, JSON_COMPACT);
    VIDI_CHECK(hdr, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;

    fp = fopen(path, "wb");
    VIDI_CHECK(fp, err, VIDI_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    unsigned char sz[8];
    for (int i = 0; i < 8; i++) sz[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(sz, 1, 8, fp) == 8 && fwrite(hdr, 1, hlen, fp) == hlen;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
    for (int i = 0; ok && i < n; i++) {
        const vidi_st_entry *t = order[i].t;
        size_t nbytes = vidi_st_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) nbytes *= (size_t)t->shape[d];
        ok = nbytes == 0 || fwrite(t->data, 1, nbytes, fp) == nbytes;
    }
    int closed = fclose(fp);
    fp = NULL;
    VIDI_CHECK(ok && closed == 0, err, VIDI_ERR_IO, "%s: write failed: %s", path, strerror(errno));
fail:
    if (fp) fclose(fp);
    free(order);
    free(hdr);
    json_decref(root);
    return rc;
}
