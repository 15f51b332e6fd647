/* core/npy.c — reading and writing NumPy .npy arrays (see npy.h).
 *
 * The file is the magic "\x93NUMPY", a major and minor version byte, the
 * header length (u16 little endian in 1.0, u32 in 2.0 and 3.0), then a
 * Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a newline, then the raw C-order data. This host is
 * assumed little endian, like the safetensors mapping.
 */
#include "core/npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_HEADER_MAX (1u << 20)

/* What the header's descr names. */
typedef enum npy_kind { NPY_F4, NPY_I4, NPY_F8, NPY_I8, NPY_F2 } npy_kind;

typedef struct npy_header {
    npy_kind kind;
    size_t itemsize;
    int fortran;
    int have_descr, have_fortran, have_shape;
    int ndim;
    int64_t shape[VIDI_MAX_DIMS];
} npy_header;

typedef struct npy_parser {
    const char *start, *p, *end;
    const char *path;
    vidi_err *err;
} npy_parser;

static void skip_ws(npy_parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static vidi_status bad_header(npy_parser *ps, const char *what) {
    return vidi_err_set(ps->err, VIDI_ERR_FORMAT, "%s: bad .npy header: %s at offset %ld", ps->path,
                        what, (long)(ps->p - ps->start));
}

/* A quoted Python string ('...' or "...") without escapes, into buf. */
static vidi_status parse_str(npy_parser *ps, char *buf, size_t cap) {
    skip_ws(ps);
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"')) return bad_header(ps, "expected a string");
    char q = *ps->p++;
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != q) {
        if (*ps->p == '\\' || n + 1 >= cap) return bad_header(ps, "unsupported string");
        buf[n++] = *ps->p++;
    }
    if (ps->p >= ps->end) return bad_header(ps, "unterminated string");
    ps->p++;
    buf[n] = '\0';
    return VIDI_OK;
}

static int accept(npy_parser *ps, char c) {
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return 1;
    }
    return 0;
}

static vidi_status parse_descr(npy_parser *ps, npy_header *h) {
    char d[32];
    vidi_status rc = parse_str(ps, d, sizeof d);
    if (rc != VIDI_OK) return rc;
    static const struct {
        const char *descr;
        npy_kind kind;
        size_t size;
    } known[] = {{"<f4", NPY_F4, 4}, {"<i4", NPY_I4, 4}, {"<f8", NPY_F8, 8}, {"<i8", NPY_I8, 8},
                 {"<f2", NPY_F2, 2}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (!strcmp(d, known[i].descr)) {
            h->kind = known[i].kind;
            h->itemsize = known[i].size;
            h->have_descr = 1;
            return VIDI_OK;
        }
    }
    if (d[0] == '>')
        return vidi_err_set(ps->err, VIDI_ERR_UNSUPPORTED,
                            "%s: big-endian dtype '%s' is not supported (save it little endian)",
                            ps->path, d);
    return vidi_err_set(ps->err, VIDI_ERR_UNSUPPORTED,
                        "%s: dtype '%s' is not supported (<f4 <i4 <f8 <i8 <f2 only)", ps->path, d);
}

static vidi_status parse_shape(npy_parser *ps, npy_header *h) {
    if (!accept(ps, '(')) return bad_header(ps, "expected '(' for the shape");
    h->ndim = 0;
    for (;;) {
        if (accept(ps, ')')) break;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return bad_header(ps, "expected a dimension");
        int64_t v = 0;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            if (v > (INT64_MAX - 9) / 10) return bad_header(ps, "dimension too large");
            v = v * 10 + (*ps->p++ - '0');
        }
        if (ps->p < ps->end && *ps->p == 'L') ps->p++; /* Python 2 long */
        if (h->ndim == VIDI_MAX_DIMS)
            return vidi_err_set(ps->err, VIDI_ERR_UNSUPPORTED,
                                "%s: more than %d dimensions are not supported", ps->path,
                                VIDI_MAX_DIMS);
        h->shape[h->ndim++] = v;
        if (accept(ps, ')')) break;
        if (!accept(ps, ',')) return bad_header(ps, "expected ',' or ')' in the shape");
    }
    h->have_shape = 1;
    return VIDI_OK;
}

static vidi_status parse_dict(npy_parser *ps, npy_header *h) {
    vidi_status rc;
    if (!accept(ps, '{')) return bad_header(ps, "expected '{'");
    for (;;) {
        if (accept(ps, '}')) break;
        char key[32];
        if ((rc = parse_str(ps, key, sizeof key)) != VIDI_OK) return rc;
        if (!accept(ps, ':')) return bad_header(ps, "expected ':'");
        skip_ws(ps);
        if (!strcmp(key, "descr")) {
            if ((rc = parse_descr(ps, h)) != VIDI_OK) return rc;
        } else if (!strcmp(key, "fortran_order")) {
            size_t left = (size_t)(ps->end - ps->p);
            if (left >= 4 && !memcmp(ps->p, "True", 4)) {
                h->fortran = 1;
                ps->p += 4;
            } else if (left >= 5 && !memcmp(ps->p, "False", 5)) {
                h->fortran = 0;
                ps->p += 5;
            } else {
                return bad_header(ps, "fortran_order is not True or False");
            }
            h->have_fortran = 1;
        } else if (!strcmp(key, "shape")) {
            if ((rc = parse_shape(ps, h)) != VIDI_OK) return rc;
        } else {
            return bad_header(ps, "unknown key");
        }
        if (accept(ps, '}')) break;
        if (!accept(ps, ',')) return bad_header(ps, "expected ',' or '}'");
    }
    if (!h->have_descr || !h->have_fortran || !h->have_shape)
        return vidi_err_set(ps->err, VIDI_ERR_FORMAT,
                            "%s: bad .npy header: it lacks 'descr', 'fortran_order' or 'shape'", ps->path);
    if (h->fortran)
        return vidi_err_set(ps->err, VIDI_ERR_UNSUPPORTED,
                            "%s: Fortran-order arrays are not supported (save with C order)", ps->path);
    return VIDI_OK;
}

vidi_status vidi_npy_read(const char *path, vidi_npy *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    FILE *fp = NULL;
    char *hdr = NULL;
    unsigned char *raw = NULL;
    memset(out, 0, sizeof *out);

    fp = fopen(path, "rb");
    VIDI_CHECK(fp, err, errno == ENOENT ? VIDI_ERR_NOTFOUND : VIDI_ERR_IO, "%s: cannot open: %s", path,
               strerror(errno));
    VIDI_CHECK(fseek(fp, 0, SEEK_END) == 0, err, VIDI_ERR_IO, "%s: cannot seek", path);
    long fsize = ftell(fp);
    VIDI_CHECK(fsize >= 0 && fseek(fp, 0, SEEK_SET) == 0, err, VIDI_ERR_IO, "%s: cannot seek", path);

    unsigned char pre[12];
    VIDI_CHECK(fsize >= 10 && fread(pre, 1, 10, fp) == 10, err, VIDI_ERR_FORMAT,
               "%s: truncated: %ld bytes, too short for a .npy file", path, fsize);
    VIDI_CHECK(!memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN), err, VIDI_ERR_FORMAT,
               "%s: not a .npy file (bad magic)", path);
    int major = pre[6];
    VIDI_CHECK(major >= 1 && major <= 3, err, VIDI_ERR_UNSUPPORTED,
               "%s: .npy format version %d.%d is not supported", path, major, pre[7]);
    size_t hlen, pre_len;
    if (major == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        pre_len = 10;
    } else {
        VIDI_CHECK(fread(pre + 10, 1, 2, fp) == 2, err, VIDI_ERR_FORMAT, "%s: truncated header", path);
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        pre_len = 12;
    }
    VIDI_CHECK(hlen <= NPY_HEADER_MAX, err, VIDI_ERR_RANGE, "%s: header of %zu bytes is too large",
               path, hlen);
    VIDI_CHECK((uint64_t)fsize >= pre_len + hlen, err, VIDI_ERR_FORMAT,
               "%s: truncated: header of %zu bytes but the file has %ld", path, hlen, fsize);
    hdr = malloc(hlen + 1);
    VIDI_CHECK(hdr, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
    VIDI_CHECK(fread(hdr, 1, hlen, fp) == hlen, err, VIDI_ERR_IO, "%s: read failed", path);
    hdr[hlen] = '\0';

    npy_header h;
    memset(&h, 0, sizeof h);
    npy_parser ps = {hdr, hdr, hdr + hlen, path, err};
    VIDI_TRY(parse_dict(&ps, &h));

    uint64_t numel = 1;
    uint64_t avail = (uint64_t)fsize - pre_len - hlen;
    for (int i = 0; i < h.ndim; i++) {
        uint64_t d = (uint64_t)h.shape[i];
        VIDI_CHECK(d == 0 || numel <= avail / d, err, VIDI_ERR_FORMAT,
                   "%s: shape needs more data than the file's %llu bytes", path, (unsigned long long)avail);
        numel *= d;
    }
    VIDI_CHECK(numel * h.itemsize == avail, err, VIDI_ERR_FORMAT,
               "%s: the header's shape needs %llu bytes of data but the file has %llu", path,
               (unsigned long long)(numel * h.itemsize), (unsigned long long)avail);

    size_t n = (size_t)numel;
    raw = malloc(avail ? (size_t)avail : 1);
    VIDI_CHECK(raw, err, VIDI_ERR_NOMEM, "%s: out of memory for %llu bytes", path, (unsigned long long)avail);
    VIDI_CHECK(fread(raw, 1, (size_t)avail, fp) == (size_t)avail, err, VIDI_ERR_IO, "%s: read failed", path);

    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof h.shape);
    switch (h.kind) {
    case NPY_F4:
    case NPY_I4:
        out->dtype = h.kind == NPY_F4 ? VIDI_DTYPE_F32 : VIDI_DTYPE_I32;
        out->data = raw;
        raw = NULL;
        break;
    case NPY_F8: {
        float *d = malloc(n ? n * sizeof *d : 1);
        VIDI_CHECK(d, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, raw + 8 * i, 8);
            d[i] = (float)v;
        }
        out->dtype = VIDI_DTYPE_F32;
        out->data = d;
        break;
    }
    case NPY_F2: {
        float *d = malloc(n ? n * sizeof *d : 1);
        VIDI_CHECK(d, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, raw + 2 * i, 2);
            d[i] = vidi_f16_to_f32(v);
        }
        out->dtype = VIDI_DTYPE_F32;
        out->data = d;
        break;
    }
    case NPY_I8: {
        int32_t *d = malloc(n ? n * sizeof *d : 1);
        VIDI_CHECK(d, err, VIDI_ERR_NOMEM, "%s: out of memory", path);
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, raw + 8 * i, 8);
            if (v < INT32_MIN || v > INT32_MAX) {
                free(d);
                VIDI_CHECK(0, err, VIDI_ERR_RANGE,
                           "%s: element %zu (%lld) of the int64 array does not fit in int32", path, i,
                           (long long)v);
            }
            d[i] = (int32_t)v;
        }
        out->dtype = VIDI_DTYPE_I32;
        out->data = d;
        break;
    }
    }
fail:
    if (rc != VIDI_OK) vidi_npy_free(out);
    free(raw);
    free(hdr);
    if (fp) fclose(fp);
    return rc;
}

vidi_status vidi_npy_write(const char *path, vidi_dtype dtype, int ndim, const int64_t *shape,
                           const void *data, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    FILE *fp = NULL;
    VIDI_CHECK(dtype == VIDI_DTYPE_F32 || dtype == VIDI_DTYPE_I32, err, VIDI_ERR_INVALID,
               "%s: only f32 and i32 arrays can be written, not %s", path, vidi_dtype_name(dtype));
    VIDI_CHECK(ndim >= 0 && ndim <= VIDI_MAX_DIMS, err, VIDI_ERR_INVALID, "%s: bad rank %d", path, ndim);

    char hdr[256];
    int k = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     dtype == VIDI_DTYPE_F32 ? "<f4" : "<i4");
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        VIDI_CHECK(shape[i] >= 0, err, VIDI_ERR_INVALID, "%s: negative dimension %d", path, i);
        k += snprintf(hdr + k, sizeof hdr - (size_t)k, "%s%lld", i ? ", " : "", (long long)shape[i]);
        numel *= (size_t)shape[i];
    }
    k += snprintf(hdr + k, sizeof hdr - (size_t)k, "%s), }", ndim == 1 ? "," : "");
    /* pad with spaces so that magic + version + length + header is a multiple of 64 */
    size_t total = ((size_t)10 + (size_t)k + 1 + 63) / 64 * 64;
    size_t hlen = total - 10;
    memset(hdr + k, ' ', hlen - 1 - (size_t)k);
    hdr[hlen - 1] = '\n';

    fp = fopen(path, "wb");
    VIDI_CHECK(fp, err, VIDI_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    size_t nbytes = numel * vidi_dtype_size(dtype);
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(hdr, 1, hlen, fp) == hlen &&
             (nbytes == 0 || fwrite(data, 1, nbytes, fp) == nbytes);
    int closed = fclose(fp);
    fp = NULL;
    VIDI_CHECK(ok && closed == 0, err, VIDI_ERR_IO, "%s: write failed: %s", path, strerror(errno));
fail:
    if (fp) fclose(fp);
    return rc;
}

void vidi_npy_free(vidi_npy *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

vidi_tensor vidi_npy_tensor(const vidi_npy *a) {
    return vidi_tensor_view(a->dtype, a->data, a->ndim, a->shape);
}
