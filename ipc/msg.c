/* ipc/msg.c — vidi's wire messages: receiving and checking (PROTOCOL.md §2),
 * header field getters, tensor descriptors, building and sending.
 *
 * The header is checked by a bounded walk (vidi_mp_check) before msgpack-c
 * unpacks it: msgpack-c's C unpacker has no size limits and would reserve
 * room for as many objects as an array declares, so a 5-byte header
 * declaring 4 billion items must be refused before it gets there.
 */
#include "ipc/msg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_cmd_names[] = {
    NULL, "READY", "HEARTBEAT", "REQUEST", "WORK", "RESULT", "TOKEN", "DONE",
    "ERROR", "CANCEL", "DRAIN", "ROLE", "STATS", "DISCONNECT", "RELEASE",
};

const char *vidi_cmd_name(int cmd) {
    if (cmd <= 0 || cmd >= (int)(sizeof s_cmd_names / sizeof s_cmd_names[0])) return NULL;
    return s_cmd_names[cmd];
}

static const char *const s_code_names[VIDI_WIRE_CODE_COUNT] = {
    "ok", "bad_version", "bad_frame", "bad_command", "bad_header", "bad_field", "bad_tensor", "too_large",
    "bad_media", "bad_request", "overloaded", "no_worker", "worker_lost", "timeout", "cancelled", "internal",
};

const char *vidi_wire_code_name(vidi_wire_code c) {
    return (unsigned)c < VIDI_WIRE_CODE_COUNT ? s_code_names[c] : "internal";
}

vidi_wire_code vidi_wire_code_from_name(const char *s, size_t n) {
    for (int i = 0; i < VIDI_WIRE_CODE_COUNT; i++)
        if (strlen(s_code_names[i]) == n && memcmp(s_code_names[i], s, n) == 0) return (vidi_wire_code)i;
    return VIDI_WIRE_CODE_COUNT;
}

vidi_msg_limits vidi_msg_limits_default(void) {
    vidi_msg_limits l;
    l.max_frames = 256;
    l.max_header_bytes = (size_t)1 << 20;
    l.max_frame_bytes = (size_t)1 << 30;
    l.max_total_bytes = (uint64_t)4 << 30;
    l.max_depth = 16;
    l.max_string = (size_t)256 << 10;
    l.max_array = 65536;
    return l;
}

static const char *const s_dtype_names[VIDI_WIRE_DTYPE_COUNT] = {"u8", "i32", "i64", "f16", "bf16", "f32"};
static const size_t s_dtype_sizes[VIDI_WIRE_DTYPE_COUNT] = {1, 4, 8, 2, 2, 4};

const char *vidi_wire_dtype_name(vidi_wire_dtype dt) {
    return (unsigned)dt < VIDI_WIRE_DTYPE_COUNT ? s_dtype_names[dt] : "?";
}

size_t vidi_wire_dtype_size(vidi_wire_dtype dt) {
    return (unsigned)dt < VIDI_WIRE_DTYPE_COUNT ? s_dtype_sizes[dt] : 0;
}

/* ------------------------------------------------------------------ receive */

void vidi_msg_init(vidi_msg *m) {
    memset(m, 0, sizeof *m);
    m->cmd = -1;
}

static void s_msg_reset_parsed(vidi_msg *m) {
    if (m->unpacked_live) msgpack_unpacked_destroy(&m->unpacked);
    m->unpacked_live = 0;
    free(m->tensors);
    m->tensors = NULL;
    m->n_tensors = 0;
    m->header = NULL;
    m->n_frames = 0;
    m->cmd = -1;
    m->minor = 0;
}

void vidi_msg_close(vidi_msg *m) {
    s_msg_reset_parsed(m);
    for (int i = 0; i < m->n_parts; i++) zmq_msg_close(&m->parts[i]);
    free(m->parts);
    m->parts = NULL;
    m->n_parts = m->parts_cap = 0;
    m->identity_len = 0;
}

/* Room for one more part; the new part is initialised empty. */
static vidi_status s_msg_push_part(vidi_msg *m, zmq_msg_t **out, vidi_err *err) {
    if (m->n_parts == m->parts_cap) {
        int cap = m->parts_cap ? m->parts_cap * 2 : 8;
        zmq_msg_t *p = realloc(m->parts, (size_t)cap * sizeof *p);
        if (!p) return vidi_err_set(err, VIDI_ERR_NOMEM, "message parts: out of memory");
        m->parts = p;
        m->parts_cap = cap;
    }
    *out = &m->parts[m->n_parts++];
    zmq_msg_init(*out);
    return VIDI_OK;
}

vidi_status vidi_msg_recv(void *sock, int has_identity, int flags, const vidi_msg_limits *lim, vidi_msg *m,
                          vidi_wire_code *code, vidi_err *err) {
    vidi_msg_limits def = vidi_msg_limits_default();
    if (!lim) lim = &def;
    *code = VIDI_WIRE_OK;
    vidi_msg_close(m);
    vidi_msg_init(m);
    /* the parts kept: identity aside, version + command + header + frames,
     * plus one so that "too many" can be told from "exactly the limit" */
    size_t keep = 3 + lim->max_frames + 1;
    size_t dropped = 0;
    int first = 1, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, first ? flags : 0) < 0) {
            int e = errno;
            zmq_msg_close(&part);
            if (first) {
                errno = e;
                return vidi_err_set(err, VIDI_ERR_IO, "receive: %s", zmq_strerror(e));
            }
            /* the rest of a multipart message is already queued: only ETERM gets here */
            vidi_msg_close(m);
            errno = e;
            return vidi_err_set(err, VIDI_ERR_IO, "receive (mid-message): %s", zmq_strerror(e));
        }
        more = zmq_msg_more(&part);
        size_t len = zmq_msg_size(&part);
        if (first && has_identity) {
            first = 0;
            if (len > VIDI_IDENTITY_MAX) len = VIDI_IDENTITY_MAX;
            memcpy(m->identity, zmq_msg_data(&part), len);
            m->identity_len = len;
            zmq_msg_close(&part);
            continue;
        }
        first = 0;
        if ((size_t)m->n_parts >= keep) {
            dropped++;
            zmq_msg_close(&part);
            continue;
        }
        zmq_msg_t *slot = NULL;
        vidi_status rc = s_msg_push_part(m, &slot, err);
        if (rc != VIDI_OK) {
            zmq_msg_close(&part);
            /* drain what is left so the socket stays in step */
            while (more) {
                zmq_msg_init(&part);
                if (zmq_msg_recv(&part, sock, 0) < 0) more = 0;
                else more = zmq_msg_more(&part);
                zmq_msg_close(&part);
            }
            *code = VIDI_WIRE_INTERNAL;
            return rc;
        }
        zmq_msg_move(slot, &part);
        zmq_msg_close(&part);
    }
    if (dropped) {
        *code = VIDI_WIRE_TOO_LARGE;
        /* the command byte is still readable for the answer */
        if (m->n_parts >= 2 && zmq_msg_size(&m->parts[1]) == 1) m->cmd = *(uint8_t *)zmq_msg_data(&m->parts[1]);
        return vidi_err_set(err, VIDI_ERR_RANGE, "message has %zu raw frames; the limit is %zu",
                            (size_t)m->n_parts - 3 + dropped, lim->max_frames);
    }
    return vidi_msg_parse(m, lim, code, err);
}

vidi_status vidi_msg_set_parts(vidi_msg *m, const void *const *bufs, const size_t *lens, int n, vidi_err *err) {
    vidi_msg_close(m);
    vidi_msg_init(m);
    for (int i = 0; i < n; i++) {
        zmq_msg_t *slot = NULL;
        vidi_status rc = s_msg_push_part(m, &slot, err);
        if (rc != VIDI_OK) return rc;
        zmq_msg_close(slot);
        if (zmq_msg_init_size(slot, lens[i]) != 0) {
            zmq_msg_init(slot);
            return vidi_err_set(err, VIDI_ERR_NOMEM, "message part %d: out of memory", i);
        }
        if (lens[i]) memcpy(zmq_msg_data(slot), bufs[i], lens[i]);
    }
    return VIDI_OK;
}

/* ---- the bounded msgpack walk ---- */

static uint64_t s_be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* One object at buf[*off]; advances *off past it. */
static vidi_status s_mp_walk(const uint8_t *buf, size_t n, size_t *off, int depth, const vidi_msg_limits *lim,
                             vidi_err *err) {
    if (depth > lim->max_depth)
        return vidi_err_set(err, VIDI_ERR_RANGE, "header nests deeper than %d levels", lim->max_depth);
    if (*off >= n) return vidi_err_set(err, VIDI_ERR_FORMAT, "header truncated at byte %zu", *off);
    size_t at = *off;
    uint8_t b = buf[(*off)++];
    size_t left = n - *off;
    uint64_t len = 0, items = 0; /* payload bytes, child objects */
    int lbytes = 0;              /* bytes of the length field */
    const char *what = NULL;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return VIDI_OK;
    if (b >= 0x80 && b <= 0x8f) {
        items = (uint64_t)(b & 0x0f) * 2;
        what = "map";
    } else if (b >= 0x90 && b <= 0x9f) {
        items = b & 0x0f;
        what = "array";
    } else if (b >= 0xa0 && b <= 0xbf) {
        len = b & 0x1f;
        what = "string";
    } else {
        switch (b) {
        case 0xcc: case 0xd0: len = 1; break;
        case 0xcd: case 0xd1: len = 2; break;
        case 0xca: case 0xce: case 0xd2: len = 4; break;
        case 0xcb: case 0xcf: case 0xd3: len = 8; break;
        case 0xc4: lbytes = 1; what = "binary"; break;
        case 0xc5: lbytes = 2; what = "binary"; break;
        case 0xc6: lbytes = 4; what = "binary"; break;
        case 0xd9: lbytes = 1; what = "string"; break;
        case 0xda: lbytes = 2; what = "string"; break;
        case 0xdb: lbytes = 4; what = "string"; break;
        case 0xdc: lbytes = 2; what = "array"; break;
        case 0xdd: lbytes = 4; what = "array"; break;
        case 0xde: lbytes = 2; what = "map"; break;
        case 0xdf: lbytes = 4; what = "map"; break;
        case 0xc1:
            return vidi_err_set(err, VIDI_ERR_FORMAT, "header byte %zu: 0xc1 is never used in msgpack", at);
        default: /* 0xc7-0xc9, 0xd4-0xd8: ext types */
            return vidi_err_set(err, VIDI_ERR_FORMAT,
                                "header byte %zu: msgpack ext type 0x%02x is not used by this protocol", at, b);
        }
        if (lbytes) {
            if (left < (size_t)lbytes)
                return vidi_err_set(err, VIDI_ERR_FORMAT, "header truncated in a %s length at byte %zu", what, at);
            uint64_t v = s_be(buf + *off, lbytes);
            *off += (size_t)lbytes;
            left -= (size_t)lbytes;
            if (what[0] == 'm') items = v * 2;
            else if (what[0] == 'a') items = v;
            else len = v;
        }
    }
    if (what && (what[0] == 's' || what[0] == 'b') && len > lim->max_string)
        return vidi_err_set(err, VIDI_ERR_RANGE, "header byte %zu: a %s of %" PRIu64 " bytes; the limit is %zu", at,
                            what, len, lim->max_string);
    if (len > left)
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "header byte %zu: declares %" PRIu64 " bytes but %zu remain (truncated or corrupt)", at,
                            len, left);
    *off += (size_t)len;
    if (!items) return VIDI_OK;
    uint64_t count = what[0] == 'm' ? items / 2 : items;
    if (count > lim->max_array)
        return vidi_err_set(err, VIDI_ERR_RANGE, "header byte %zu: %s %s of %" PRIu64 " items; the limit is %zu", at,
                            what[0] == 'a' ? "an" : "a", what, count, lim->max_array);
    if (items > left) /* every object takes at least one byte */
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "header byte %zu: a %s declares %" PRIu64 " items but only %zu bytes remain", at, what,
                            count, left);
    for (uint64_t i = 0; i < items; i++) {
        vidi_status rc = s_mp_walk(buf, n, off, depth + 1, lim, err);
        if (rc != VIDI_OK) return rc;
    }
    return VIDI_OK;
}

vidi_status vidi_mp_check(const uint8_t *buf, size_t n, const vidi_msg_limits *lim, vidi_err *err) {
    vidi_msg_limits def = vidi_msg_limits_default();
    if (!lim) lim = &def;
    size_t off = 0;
    vidi_status rc = s_mp_walk(buf, n, &off, 1, lim, err);
    if (rc != VIDI_OK) return rc;
    if (off != n)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "header has %zu bytes after its map (one map per header)", n - off);
    return VIDI_OK;
}

/* ---- tensors ---- */

static vidi_status s_parse_tensor(const vidi_msg *m, const msgpack_object *d, int index, vidi_wire_tensor *t,
                                  const vidi_msg_limits *lim, vidi_err *err) {
    memset(t, 0, sizeof *t);
    t->frame = -1;
    if (d->type != MSGPACK_OBJECT_MAP)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "tensors[%d]: expected a map, got %s", index, vidi_mp_type_name(d));
    const char *s;
    size_t n;
    vidi_status rc = vidi_mp_str(d, "dtype", 1, 16, &s, &n, err);
    if (rc != VIDI_OK) goto fail;
    t->dtype = VIDI_WIRE_DTYPE_COUNT;
    for (int i = 0; i < VIDI_WIRE_DTYPE_COUNT; i++)
        if (strlen(s_dtype_names[i]) == n && memcmp(s_dtype_names[i], s, n) == 0) t->dtype = (vidi_wire_dtype)i;
    if (t->dtype == VIDI_WIRE_DTYPE_COUNT) {
        rc = vidi_err_set(err, VIDI_ERR_FORMAT, "dtype '%.*s' is not one of u8, i32, i64, f16, bf16, f32", (int)n, s);
        goto fail;
    }
    const msgpack_object *dims;
    size_t nd;
    rc = vidi_mp_array(d, "shape", 1, VIDI_WIRE_MAX_DIMS, &dims, &nd, err);
    if (rc != VIDI_OK) goto fail;
    if (nd < 1) {
        rc = vidi_err_set(err, VIDI_ERR_FORMAT, "shape has no dimensions (1 to %d)", VIDI_WIRE_MAX_DIMS);
        goto fail;
    }
    t->ndim = (int)nd;
    uint64_t elems = 1;
    for (size_t i = 0; i < nd; i++) {
        if (dims[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER || dims[i].via.u64 < 1 ||
            dims[i].via.u64 > lim->max_total_bytes) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "shape[%zu] must be an integer in [1, %" PRIu64 "]", i,
                              lim->max_total_bytes);
            goto fail;
        }
        t->shape[i] = (int64_t)dims[i].via.u64;
        if (elems > lim->max_total_bytes / dims[i].via.u64) {
            rc = vidi_err_set(err, VIDI_ERR_RANGE, "shape describes more than %" PRIu64 " bytes",
                              lim->max_total_bytes);
            goto fail;
        }
        elems *= dims[i].via.u64;
    }
    size_t esz = s_dtype_sizes[t->dtype];
    if (elems > lim->max_total_bytes / esz) {
        rc = vidi_err_set(err, VIDI_ERR_RANGE, "shape describes more than %" PRIu64 " bytes", lim->max_total_bytes);
        goto fail;
    }
    t->bytes = elems * esz;
    const msgpack_object *fr = vidi_mp_get(d, "frame"), *ipc = vidi_mp_get(d, "cuda_ipc");
    if ((fr != NULL) == (ipc != NULL)) {
        rc = vidi_err_set(err, VIDI_ERR_FORMAT, "exactly one of 'frame' and 'cuda_ipc' must be given");
        goto fail;
    }
    if (fr) {
        uint64_t f;
        rc = vidi_mp_u64(d, "frame", 1, 0, 0, (uint64_t)(m->n_frames > 0 ? m->n_frames - 1 : 0), &f, err);
        if (rc == VIDI_OK && m->n_frames == 0)
            rc = vidi_err_set(err, VIDI_ERR_RANGE, "field 'frame': the message has no raw frames");
        if (rc != VIDI_OK) goto fail;
        const zmq_msg_t *part = &m->parts[3 + f];
        size_t have = zmq_msg_size((zmq_msg_t *)part);
        if (have != t->bytes) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT,
                              "raw frame %" PRIu64 " has %zu bytes; dtype %s and its shape need %" PRIu64, f, have,
                              s_dtype_names[t->dtype], t->bytes);
            goto fail;
        }
        t->frame = (int)f;
        t->data = zmq_msg_data((zmq_msg_t *)part);
    } else {
        if (ipc->type != MSGPACK_OBJECT_MAP) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "field 'cuda_ipc': expected a map, got %s", vidi_mp_type_name(ipc));
            goto fail;
        }
        const uint8_t *h;
        size_t hn;
        uint64_t bytes;
        int64_t dev;
        const char *owner;
        size_t on;
        if ((rc = vidi_mp_bin(ipc, "handle", 1, 64, &h, &hn, err)) != VIDI_OK ||
            (rc = vidi_mp_u64(ipc, "offset", 1, 0, 0, UINT64_MAX, &t->ipc_offset, err)) != VIDI_OK ||
            (rc = vidi_mp_i64(ipc, "device", 1, 0, 0, 1023, &dev, err)) != VIDI_OK ||
            (rc = vidi_mp_u64(ipc, "bytes", 1, 0, 0, UINT64_MAX, &bytes, err)) != VIDI_OK ||
            (rc = vidi_mp_u64(ipc, "lease", 1, 0, 0, UINT64_MAX, &t->ipc_lease, err)) != VIDI_OK ||
            (rc = vidi_mp_u64(ipc, "until_ms", 1, 0, 0, UINT64_MAX, &t->ipc_until_ms, err)) != VIDI_OK ||
            (rc = vidi_mp_str(ipc, "owner", 1, 255, &owner, &on, err)) != VIDI_OK) {
            vidi_err_prefix(err, "cuda_ipc");
            goto fail;
        }
        if (bytes != t->bytes) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "cuda_ipc.bytes %" PRIu64 " != %" PRIu64 " (dtype and shape)",
                              bytes, t->bytes);
            goto fail;
        }
        if (on == 0) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "cuda_ipc.owner is empty");
            goto fail;
        }
        if (t->ipc_offset > UINT64_MAX - bytes) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "cuda_ipc: offset %" PRIu64 " + %" PRIu64 " bytes overflows",
                              t->ipc_offset, bytes);
            goto fail;
        }
        memcpy(t->ipc_handle, h, 64);
        t->ipc_device = (int)dev;
        t->ipc_owner = owner;
        t->ipc_owner_len = on;
    }
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "tensors[%d]", index);
    return rc;
}

vidi_status vidi_msg_parse(vidi_msg *m, const vidi_msg_limits *lim, vidi_wire_code *code, vidi_err *err) {
    vidi_msg_limits def = vidi_msg_limits_default();
    if (!lim) lim = &def;
    s_msg_reset_parsed(m);
    *code = VIDI_WIRE_OK;
    vidi_status rc;
    uint8_t *used = NULL;
    /* 1. part count */
    if (m->n_parts < 3) {
        *code = VIDI_WIRE_BAD_FRAME;
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "message has %d parts; at least 3 (version, command, header) are needed", m->n_parts);
    }
    if ((size_t)m->n_parts - 3 > lim->max_frames) {
        *code = VIDI_WIRE_TOO_LARGE;
        return vidi_err_set(err, VIDI_ERR_RANGE, "message has %d raw frames; the limit is %zu", m->n_parts - 3,
                            lim->max_frames);
    }
    /* the command first, so that even a bad version can be answered in kind */
    if (zmq_msg_size(&m->parts[1]) == 1) m->cmd = *(uint8_t *)zmq_msg_data(&m->parts[1]);
    /* 2. version */
    const uint8_t *v = zmq_msg_data(&m->parts[0]);
    size_t vn = zmq_msg_size(&m->parts[0]);
    if (vn != VIDI_PROTO_VERSION_LEN || memcmp(v, "VIDI", 4) != 0 || v[4] != VIDI_PROTO_MAJOR) {
        *code = VIDI_WIRE_BAD_VERSION;
        if (vn == VIDI_PROTO_VERSION_LEN && memcmp(v, "VIDI", 4) == 0)
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "protocol %d.%d; this peer speaks %d.%d", v[4], v[5],
                                VIDI_PROTO_MAJOR, VIDI_PROTO_MINOR);
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "the first part is not a vidi version frame (6 bytes \"VIDI\" %d %d; got %zu bytes)",
                            VIDI_PROTO_MAJOR, VIDI_PROTO_MINOR, vn);
    }
    m->minor = v[5];
    /* 3. command */
    if (zmq_msg_size(&m->parts[1]) != 1 || !vidi_cmd_name(m->cmd)) {
        *code = VIDI_WIRE_BAD_COMMAND;
        if (zmq_msg_size(&m->parts[1]) != 1) {
            m->cmd = -1;
            return vidi_err_set(err, VIDI_ERR_FORMAT, "the command part has %zu bytes; it is one byte",
                                zmq_msg_size(&m->parts[1]));
        }
        return vidi_err_set(err, VIDI_ERR_FORMAT, "unknown command 0x%02x", m->cmd);
    }
    /* 4. header */
    const uint8_t *h = zmq_msg_data(&m->parts[2]);
    size_t hn = zmq_msg_size(&m->parts[2]);
    if (hn > lim->max_header_bytes) {
        *code = VIDI_WIRE_TOO_LARGE;
        return vidi_err_set(err, VIDI_ERR_RANGE, "%s header of %zu bytes; the limit is %zu", vidi_cmd_name(m->cmd), hn,
                            lim->max_header_bytes);
    }
    rc = vidi_mp_check(h, hn, lim, err);
    if (rc != VIDI_OK) {
        *code = rc == VIDI_ERR_RANGE ? VIDI_WIRE_TOO_LARGE : VIDI_WIRE_BAD_HEADER;
        vidi_err_prefix(err, "%s", vidi_cmd_name(m->cmd));
        return rc;
    }
    if (hn == 0 || !((h[0] >= 0x80 && h[0] <= 0x8f) || h[0] == 0xde || h[0] == 0xdf)) {
        *code = VIDI_WIRE_BAD_HEADER;
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: the header is not a msgpack map", vidi_cmd_name(m->cmd));
    }
    msgpack_unpacked_init(&m->unpacked);
    m->unpacked_live = 1;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&m->unpacked, (const char *)h, hn, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != hn || m->unpacked.data.type != MSGPACK_OBJECT_MAP) {
        *code = ur == MSGPACK_UNPACK_NOMEM_ERROR ? VIDI_WIRE_INTERNAL : VIDI_WIRE_BAD_HEADER;
        return vidi_err_set(err, ur == MSGPACK_UNPACK_NOMEM_ERROR ? VIDI_ERR_NOMEM : VIDI_ERR_FORMAT,
                            "%s: msgpack-c could not unpack the header (%d)", vidi_cmd_name(m->cmd), (int)ur);
    }
    m->header = &m->unpacked.data;
    /* raw frames: sizes */
    m->n_frames = m->n_parts - 3;
    uint64_t total = hn;
    for (int i = 0; i < m->n_frames; i++) {
        size_t fn = zmq_msg_size(&m->parts[3 + i]);
        total += fn;
        if (fn > lim->max_frame_bytes || total > lim->max_total_bytes) {
            *code = VIDI_WIRE_TOO_LARGE;
            return vidi_err_set(err, VIDI_ERR_RANGE, "%s: raw frame %d has %zu bytes (limits: %zu a frame, %" PRIu64
                                " a message)", vidi_cmd_name(m->cmd), i, fn, lim->max_frame_bytes, lim->max_total_bytes);
        }
    }
    /* 6. tensors: each described, every raw frame named exactly once */
    const msgpack_object *descs;
    size_t nd;
    rc = vidi_mp_array(m->header, "tensors", 0, lim->max_frames + 64, &descs, &nd, err);
    if (rc != VIDI_OK) {
        *code = rc == VIDI_ERR_RANGE ? VIDI_WIRE_TOO_LARGE : VIDI_WIRE_BAD_TENSOR;
        goto fail;
    }
    if (nd) {
        m->tensors = calloc(nd, sizeof *m->tensors);
        used = calloc((size_t)m->n_frames + 1, 1);
        if (!m->tensors || !used) {
            *code = VIDI_WIRE_INTERNAL;
            rc = vidi_err_set(err, VIDI_ERR_NOMEM, "tensors: out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < nd; i++) {
        rc = s_parse_tensor(m, &descs[i], (int)i, &m->tensors[i], lim, err);
        if (rc != VIDI_OK) {
            *code = rc == VIDI_ERR_NOMEM ? VIDI_WIRE_INTERNAL : VIDI_WIRE_BAD_TENSOR;
            goto fail;
        }
        int f = m->tensors[i].frame;
        if (f >= 0) {
            if (used[f]) {
                *code = VIDI_WIRE_BAD_TENSOR;
                rc = vidi_err_set(err, VIDI_ERR_FORMAT, "tensors[%zu]: raw frame %d is named by two descriptors", i, f);
                goto fail;
            }
            used[f] = 1;
        }
        m->n_tensors = (int)i + 1;
    }
    for (int f = 0; f < m->n_frames; f++)
        if (!used || !used[f]) {
            *code = VIDI_WIRE_BAD_FRAME;
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "raw frame %d is named by no entry of 'tensors'", f);
            goto fail;
        }
    free(used);
    return VIDI_OK;
fail:
    free(used);
    vidi_err_prefix(err, "%s", vidi_cmd_name(m->cmd));
    return rc;
}

/* ------------------------------------------------------------ field getters */

const msgpack_object *vidi_mp_get(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t kn = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kn && memcmp(k->via.str.ptr, key, kn) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

const char *vidi_mp_type_name(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "a non-negative integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "a negative integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "a float";
    case MSGPACK_OBJECT_STR: return "a string";
    case MSGPACK_OBJECT_ARRAY: return "an array";
    case MSGPACK_OBJECT_MAP: return "a map";
    case MSGPACK_OBJECT_BIN: return "a binary";
    default: return "an ext";
    }
}

/* The key's value, or NULL with *rc set: an error when required, else OK. */
static const msgpack_object *s_field(const msgpack_object *map, const char *key, int required, vidi_status *rc,
                                     vidi_err *err) {
    *rc = VIDI_OK;
    const msgpack_object *o = vidi_mp_get(map, key);
    if (!o && required) *rc = vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s' is missing", key);
    return o;
}

vidi_status vidi_mp_u64(const msgpack_object *map, const char *key, int required, uint64_t def, uint64_t lo,
                        uint64_t hi, uint64_t *out, vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    if (!o) {
        if (rc == VIDI_OK) *out = def;
        return rc;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected a non-negative integer, got %s", key,
                            vidi_mp_type_name(o));
    if (o->via.u64 < lo || o->via.u64 > hi)
        return vidi_err_set(err, VIDI_ERR_RANGE, "field '%s': %" PRIu64 " is outside [%" PRIu64 ", %" PRIu64 "]", key,
                            o->via.u64, lo, hi);
    *out = o->via.u64;
    return VIDI_OK;
}

vidi_status vidi_mp_i64(const msgpack_object *map, const char *key, int required, int64_t def, int64_t lo,
                        int64_t hi, int64_t *out, vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    if (!o) {
        if (rc == VIDI_OK) *out = def;
        return rc;
    }
    int64_t v;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) v = o->via.i64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) v = (int64_t)o->via.u64;
    else
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected an integer, got %s", key,
                            o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? "one above 2^63" : vidi_mp_type_name(o));
    if (v < lo || v > hi)
        return vidi_err_set(err, VIDI_ERR_RANGE, "field '%s': %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]", key, v,
                            lo, hi);
    *out = v;
    return VIDI_OK;
}

vidi_status vidi_mp_f64(const msgpack_object *map, const char *key, int required, double def, double lo, double hi,
                        double *out, vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    if (!o) {
        if (rc == VIDI_OK) *out = def;
        return rc;
    }
    double v;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64) v = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) v = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) v = (double)o->via.i64;
    else return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected a number, got %s", key, vidi_mp_type_name(o));
    if (!(v >= lo && v <= hi)) /* NaN fails too */
        return vidi_err_set(err, VIDI_ERR_RANGE, "field '%s': %g is outside [%g, %g]", key, v, lo, hi);
    *out = v;
    return VIDI_OK;
}

vidi_status vidi_mp_bool(const msgpack_object *map, const char *key, int required, int def, int *out,
                         vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    if (!o) {
        if (rc == VIDI_OK) *out = def;
        return rc;
    }
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected a boolean, got %s", key, vidi_mp_type_name(o));
    *out = o->via.boolean ? 1 : 0;
    return VIDI_OK;
}

vidi_status vidi_mp_str(const msgpack_object *map, const char *key, int required, size_t max_len, const char **s,
                        size_t *n, vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    *s = NULL;
    *n = 0;
    if (!o) return rc;
    if (o->type != MSGPACK_OBJECT_STR)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected a string, got %s", key, vidi_mp_type_name(o));
    if (o->via.str.size > max_len)
        return vidi_err_set(err, VIDI_ERR_RANGE, "field '%s': a string of %u bytes; the limit is %zu", key,
                            o->via.str.size, max_len);
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return VIDI_OK;
}

vidi_status vidi_mp_bin(const msgpack_object *map, const char *key, int required, size_t exact_len,
                        const uint8_t **b, size_t *n, vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    *b = NULL;
    *n = 0;
    if (!o) return rc;
    if (o->type != MSGPACK_OBJECT_BIN)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected a binary, got %s", key, vidi_mp_type_name(o));
    if (exact_len && o->via.bin.size != exact_len)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': %u bytes; it must have %zu", key, o->via.bin.size,
                            exact_len);
    *b = (const uint8_t *)o->via.bin.ptr;
    *n = o->via.bin.size;
    return VIDI_OK;
}

vidi_status vidi_mp_array(const msgpack_object *map, const char *key, int required, size_t max_items,
                          const msgpack_object **items, size_t *n, vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    *items = NULL;
    *n = 0;
    if (!o) return rc;
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected an array, got %s", key, vidi_mp_type_name(o));
    if (o->via.array.size > max_items)
        return vidi_err_set(err, VIDI_ERR_RANGE, "field '%s': %u items; the limit is %zu", key, o->via.array.size,
                            max_items);
    *items = o->via.array.ptr;
    *n = o->via.array.size;
    return VIDI_OK;
}

vidi_status vidi_mp_map(const msgpack_object *map, const char *key, int required, const msgpack_object **out,
                        vidi_err *err) {
    vidi_status rc;
    const msgpack_object *o = s_field(map, key, required, &rc, err);
    *out = NULL;
    if (!o) return rc;
    if (o->type != MSGPACK_OBJECT_MAP)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': expected a map, got %s", key, vidi_mp_type_name(o));
    *out = o;
    return VIDI_OK;
}

int vidi_mp_str_eq(const msgpack_object *o, const char *s) {
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

/* ------------------------------------------------------------------- send */

static int s_out_write(void *data, const char *buf, size_t len) {
    vidi_msg_out *o = data;
    if (msgpack_sbuffer_write(&o->sbuf, buf, len) != 0) {
        o->failed = 1;
        return -1;
    }
    return 0;
}

void vidi_msg_out_init(vidi_msg_out *o) {
    memset(o, 0, sizeof *o);
    msgpack_sbuffer_init(&o->sbuf);
    msgpack_packer_init(&o->pk, o, s_out_write);
}

void vidi_msg_out_free(vidi_msg_out *o) {
    for (int i = 0; i < o->n_frames; i++)
        if (o->frames[i].free_fn) o->frames[i].free_fn(o->frames[i].data, o->frames[i].hint);
    free(o->frames);
    msgpack_sbuffer_destroy(&o->sbuf);
    vidi_msg_out_init(o);
}

void vidi_mp_pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void vidi_mp_kv_str(msgpack_packer *pk, const char *key, const char *value) {
    vidi_mp_pack_cstr(pk, key);
    vidi_mp_pack_cstr(pk, value);
}

void vidi_mp_kv_u64(msgpack_packer *pk, const char *key, uint64_t value) {
    vidi_mp_pack_cstr(pk, key);
    msgpack_pack_uint64(pk, value);
}

void vidi_mp_kv_i64(msgpack_packer *pk, const char *key, int64_t value) {
    vidi_mp_pack_cstr(pk, key);
    msgpack_pack_int64(pk, value);
}

void vidi_mp_kv_f64(msgpack_packer *pk, const char *key, double value) {
    vidi_mp_pack_cstr(pk, key);
    msgpack_pack_double(pk, value);
}

void vidi_mp_kv_bin(msgpack_packer *pk, const char *key, const void *value, size_t n) {
    vidi_mp_pack_cstr(pk, key);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, value, n);
}

static vidi_status s_check_shape(vidi_wire_dtype dt, int ndim, const int64_t *shape, uint64_t *bytes, vidi_err *err) {
    if ((unsigned)dt >= VIDI_WIRE_DTYPE_COUNT) return vidi_err_set(err, VIDI_ERR_INVALID, "tensor: bad dtype %d", dt);
    if (ndim < 1 || ndim > VIDI_WIRE_MAX_DIMS)
        return vidi_err_set(err, VIDI_ERR_INVALID, "tensor: %d dimensions (1 to %d)", ndim, VIDI_WIRE_MAX_DIMS);
    uint64_t b = s_dtype_sizes[dt];
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1 || (uint64_t)shape[i] > UINT64_MAX / b)
            return vidi_err_set(err, VIDI_ERR_INVALID, "tensor: shape[%d] = %" PRId64 "", i, shape[i]);
        b *= (uint64_t)shape[i];
    }
    *bytes = b;
    return VIDI_OK;
}

static void s_pack_desc_head(msgpack_packer *pk, int n_fields, vidi_wire_dtype dt, int ndim, const int64_t *shape) {
    msgpack_pack_map(pk, (size_t)n_fields);
    vidi_mp_pack_cstr(pk, "dtype");
    vidi_mp_pack_cstr(pk, s_dtype_names[dt]);
    vidi_mp_pack_cstr(pk, "shape");
    msgpack_pack_array(pk, (size_t)ndim);
    for (int i = 0; i < ndim; i++) msgpack_pack_uint64(pk, (uint64_t)shape[i]);
}

vidi_status vidi_msg_out_tensor(vidi_msg_out *o, vidi_wire_dtype dt, int ndim, const int64_t *shape, void *data,
                                size_t bytes, vidi_frame_free_fn *free_fn, void *hint, vidi_err *err) {
    uint64_t need;
    vidi_status rc = s_check_shape(dt, ndim, shape, &need, err);
    if (rc == VIDI_OK && need != bytes)
        rc = vidi_err_set(err, VIDI_ERR_INVALID, "tensor: %zu bytes given, dtype and shape need %" PRIu64, bytes, need);
    if (rc == VIDI_OK && o->n_frames == o->frames_cap) {
        int cap = o->frames_cap ? o->frames_cap * 2 : 4;
        vidi_msg_out_frame *f = realloc(o->frames, (size_t)cap * sizeof *f);
        if (!f) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "tensor: out of memory");
        else {
            o->frames = f;
            o->frames_cap = cap;
        }
    }
    if (rc != VIDI_OK) {
        if (free_fn) free_fn(data, hint); /* the frame was handed over: it is released either way */
        o->failed = 1;
        return rc;
    }
    s_pack_desc_head(&o->pk, 3, dt, ndim, shape);
    vidi_mp_pack_cstr(&o->pk, "frame");
    msgpack_pack_uint64(&o->pk, (uint64_t)o->n_frames);
    o->frames[o->n_frames++] = (vidi_msg_out_frame){data, bytes, free_fn, hint};
    return VIDI_OK;
}

vidi_status vidi_msg_out_tensor_ipc(vidi_msg_out *o, vidi_wire_dtype dt, int ndim, const int64_t *shape,
                                    const vidi_wire_ipc *ipc, vidi_err *err) {
    uint64_t bytes;
    vidi_status rc = s_check_shape(dt, ndim, shape, &bytes, err);
    if (rc == VIDI_OK && (ipc->device < 0 || ipc->device > 1023))
        rc = vidi_err_set(err, VIDI_ERR_INVALID, "tensor: CUDA device %d is outside [0, 1023]", ipc->device);
    size_t on = ipc->owner ? strlen(ipc->owner) : 0;
    if (rc == VIDI_OK && (on < 1 || on > 255))
        rc = vidi_err_set(err, VIDI_ERR_INVALID, "tensor: the owner endpoint must have 1 to 255 bytes");
    if (rc != VIDI_OK) {
        o->failed = 1;
        return rc;
    }
    s_pack_desc_head(&o->pk, 3, dt, ndim, shape);
    vidi_mp_pack_cstr(&o->pk, "cuda_ipc");
    msgpack_pack_map(&o->pk, 7);
    vidi_mp_kv_bin(&o->pk, "handle", ipc->handle, 64);
    vidi_mp_kv_u64(&o->pk, "offset", ipc->offset);
    vidi_mp_kv_i64(&o->pk, "device", ipc->device);
    vidi_mp_kv_u64(&o->pk, "bytes", bytes);
    vidi_mp_kv_u64(&o->pk, "lease", ipc->lease);
    vidi_mp_kv_str(&o->pk, "owner", ipc->owner);
    vidi_mp_kv_u64(&o->pk, "until_ms", ipc->until_ms);
    return VIDI_OK;
}

static vidi_status s_send_errno(const char *what, vidi_err *err) {
    int e = errno;
    vidi_status st = e == EHOSTUNREACH ? VIDI_ERR_NOTFOUND : VIDI_ERR_IO;
    vidi_err_set(err, st, "send %s: %s", what, e == EHOSTUNREACH ? "the peer is gone (no such identity)" : zmq_strerror(e));
    errno = e;
    return st;
}

vidi_status vidi_msg_send(void *sock, const void *identity, size_t identity_len, vidi_cmd cmd, vidi_msg_out *o,
                          vidi_err *err) {
    if (o->failed) return vidi_err_set(err, VIDI_ERR_NOMEM, "send %s: the message could not be built", vidi_cmd_name(cmd));
    if (!vidi_cmd_name(cmd)) return vidi_err_set(err, VIDI_ERR_INVALID, "send: unknown command 0x%02x", cmd);
    if (o->sbuf.size == 0) msgpack_pack_map(&o->pk, 0); /* an empty header */
    uint8_t version[VIDI_PROTO_VERSION_LEN] = {'V', 'I', 'D', 'I', VIDI_PROTO_MAJOR, VIDI_PROTO_MINOR};
    uint8_t c = (uint8_t)cmd;
    if (identity && zmq_send(sock, identity, identity_len, ZMQ_SNDMORE) < 0) return s_send_errno(vidi_cmd_name(cmd), err);
    /* after the first part ZeroMQ queues the rest of the message as a whole */
    if (zmq_send(sock, version, sizeof version, ZMQ_SNDMORE) < 0) return s_send_errno(vidi_cmd_name(cmd), err);
    if (zmq_send(sock, &c, 1, ZMQ_SNDMORE) < 0) return s_send_errno(vidi_cmd_name(cmd), err);
    if (zmq_send(sock, o->sbuf.data, o->sbuf.size, o->n_frames ? ZMQ_SNDMORE : 0) < 0)
        return s_send_errno(vidi_cmd_name(cmd), err);
    vidi_status rc = VIDI_OK;
    for (int i = 0; i < o->n_frames; i++) {
        vidi_msg_out_frame *f = &o->frames[i];
        int flags = i + 1 < o->n_frames ? ZMQ_SNDMORE : 0;
        if (f->free_fn) {
            zmq_msg_t zm;
            if (zmq_msg_init_data(&zm, f->data, f->bytes, f->free_fn, f->hint) != 0) {
                rc = s_send_errno("frame", err);
                break;
            }
            f->free_fn = NULL; /* ZeroMQ owns it now (zmq_msg_close releases it on failure) */
            if (zmq_msg_send(&zm, sock, flags) < 0) {
                rc = s_send_errno("frame", err);
                zmq_msg_close(&zm);
                break;
            }
        } else if (zmq_send(sock, f->data, f->bytes, flags) < 0) {
            rc = s_send_errno("frame", err);
            break;
        }
    }
    vidi_msg_out_free(o);
    return rc;
}

vidi_status vidi_msg_send_error(void *sock, const void *identity, size_t identity_len, vidi_wire_code code,
                                int64_t id_or_neg, const char *message, vidi_err *err) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, id_or_neg >= 0 ? 3 : 2);
    vidi_mp_pack_cstr(&o.pk, "code");
    vidi_mp_pack_cstr(&o.pk, vidi_wire_code_name(code));
    vidi_mp_pack_cstr(&o.pk, "message");
    vidi_mp_pack_cstr(&o.pk, message ? message : "");
    if (id_or_neg >= 0) {
        vidi_mp_pack_cstr(&o.pk, "id");
        msgpack_pack_uint64(&o.pk, (uint64_t)id_or_neg);
    }
    vidi_status rc = vidi_msg_send(sock, identity, identity_len, VIDI_CMD_ERROR, &o, err);
    vidi_msg_out_free(&o);
    return rc;
}
