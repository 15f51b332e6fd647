/* tests/fuzz/fuzz_msg.c — libFuzzer target over the wire message decoder
 * (ipc/msg.h: vidi_msg_set_parts + vidi_msg_parse, the vidi_mp_* getters and
 * the bounded msgpack walk vidi_mp_check).
 *
 * Input format: byte 0 mod 16 is the number of parts (so that counts past
 * 3 + max_frames are reached too); then each part is a 2-byte little-endian
 * length and that many bytes, the length clamped to what remains (a part
 * whose length bytes are missing is empty). The parts are checked under
 * small limits (8 frames, 64 KiB header, 1 MiB frame). When the message is
 * accepted, its invariants are checked (every raw frame named once, each
 * tensor's bytes inside its frame, read through so that ASan sees any
 * overread) and the getters are run on a few keys. Any answer is fine; a
 * crash, a sanitizer report, a leak or a broken invariant (__builtin_trap) is
 * a bug.
 *
 * Seed corpus: tests/data/ipc/corpus (a good REQUEST with a media frame, a
 * good WORK with one tensor, a WORK with a CUDA IPC descriptor, an ERROR, a
 * truncated header, a bad version), written once from the repository root by:
 *
 *   python3 - <<'EOF'
 *   import struct, os
 *   def p(o):
 *       if isinstance(o, bool): return b'\xc3' if o else b'\xc2'
 *       if isinstance(o, int): return bytes([o]) if 0 <= o < 128 else b'\xcf' + struct.pack('>Q', o)
 *       if isinstance(o, str): b = o.encode(); return bytes([0xa0 | len(b)]) + b
 *       if isinstance(o, bytes): return b'\xc4' + bytes([len(o)]) + o
 *       if isinstance(o, list): return bytes([0x90 | len(o)]) + b''.join(map(p, o))
 *       return bytes([0x80 | len(o)]) + b''.join(p(k) + p(v) for k, v in o.items())
 *   def msg(parts): return bytes([len(parts)]) + b''.join(struct.pack('<H', len(x)) + x for x in parts)
 *   V, V2 = b'VIDI\x01\x00', b'VIDI\x02\x00'
 *   work = p({'req': 1, 'attempt': 0, 'stage': 'encode', 'tensors': [{'dtype': 'f16', 'shape': [2, 4], 'frame': 0}]})
 *   seeds = {
 *       'request': [V, b'\x03', p({'id': 7, 'prompt': 'what shape is it?', 'max_tokens': 16, 'stream': True,
 *                                   'media': [{'kind': 'image', 'tensor': 0}],
 *                                   'tensors': [{'dtype': 'u8', 'shape': [8], 'frame': 0}]}), bytes(range(8))],
 *       'work': [V, b'\x04', work, bytes(16)],
 *       'work_cuda_ipc': [V, b'\x04', p({'stage': 'decode', 'tensors': [{'dtype': 'bf16', 'shape': [2, 8], 'cuda_ipc':
 *                         {'handle': bytes(64), 'offset': 0, 'device': 0, 'bytes': 32, 'lease': 3,
 *                          'owner': 'ipc:///tmp/w', 'until_ms': 5000}}]})],
 *       'release': [V, b'\x0e', p({'leases': [3, 4]})],
 *       'error': [V, b'\x08', p({'code': 'bad_field', 'message': 'field id', 'id': 3})],
 *       'truncated': [V, b'\x04', work[:-5], bytes(16)],
 *       'bad_version': [V2, b'\x03', p({'id': 1}), b''],
 *   }
 *   for name, parts in seeds.items():
 *       with open('tests/data/ipc/corpus/' + name, 'wb') as f: f.write(msg(parts))
 *   EOF
 *
 * Built only with clang and -DVIDI_FUZZ=ON (tests/fuzz/CMakeLists.txt).
 */
#include "ipc/msg.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_PARTS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t g_sink;

/* Reads every byte so that a pointer past its buffer is an ASan report. */
static void touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc ^= b[i];
    g_sink ^= acc;
}

/* Each getter on each key: any status is fine, but a failure says why and a
 * success hands back something readable. */
static void run_getters(const msgpack_object *map) {
    static const char *const keys[] = {"id", "prompt", "media", "tensors", "max_tokens", "temperature",
                                       "stream", "key", "route", "stage", "code", "message"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *key = keys[k];
        vidi_err err;
        uint64_t u;
        int64_t i;
        double d;
        int b;
        const char *s;
        const uint8_t *bin;
        const msgpack_object *items, *sub;
        size_t n;
#define GETTER_OK(call)                                                                                          \
    do {                                                                                                         \
        vidi_err_clear(&err);                                                                                    \
        if ((call) != VIDI_OK && !err.msg[0]) __builtin_trap();                                                  \
    } while (0)
        GETTER_OK(vidi_mp_u64(map, key, 1, 0, 0, UINT64_MAX, &u, &err));
        GETTER_OK(vidi_mp_u64(map, key, 0, 5, 1, 1000, &u, &err));
        GETTER_OK(vidi_mp_i64(map, key, 1, 0, -1000, 1000, &i, &err));
        GETTER_OK(vidi_mp_f64(map, key, 0, 1.0, 0.0, 2.0, &d, &err));
        GETTER_OK(vidi_mp_bool(map, key, 0, 1, &b, &err));
        vidi_err_clear(&err);
        if (vidi_mp_str(map, key, 1, 4096, &s, &n, &err) == VIDI_OK) {
            if (n > 4096) __builtin_trap();
            touch(s, n);
            (void)vidi_mp_str_eq(vidi_mp_get(map, key), "image");
        } else if (!err.msg[0]) {
            __builtin_trap();
        }
        vidi_err_clear(&err);
        if (vidi_mp_bin(map, key, 1, 16, &bin, &n, &err) == VIDI_OK) {
            if (n != 16) __builtin_trap();
            touch(bin, n);
        } else if (!err.msg[0]) {
            __builtin_trap();
        }
        vidi_err_clear(&err);
        if (vidi_mp_array(map, key, 0, 64, &items, &n, &err) == VIDI_OK) {
            if (n > 64 || (n && !items)) __builtin_trap();
            /* media items and descriptors are maps: dig one level */
            for (size_t j = 0; j < n; j++) {
                size_t sn;
                GETTER_OK(vidi_mp_str(&items[j], "kind", 1, 16, &s, &sn, &err));
                GETTER_OK(vidi_mp_u64(&items[j], "tensor", 1, 0, 0, 255, &u, &err));
                GETTER_OK(vidi_mp_map(&items[j], "cuda_ipc", 0, &sub, &err));
                (void)vidi_mp_type_name(&items[j]);
            }
        } else if (!err.msg[0]) {
            __builtin_trap();
        }
        vidi_err_clear(&err);
        if (vidi_mp_map(map, key, 0, &sub, &err) == VIDI_OK) {
            if (sub && sub->type != MSGPACK_OBJECT_MAP) __builtin_trap();
            if (sub) GETTER_OK(vidi_mp_str(sub, "encode", 0, 256, &s, &n, &err));
        } else if (!err.msg[0]) {
            __builtin_trap();
        }
#undef GETTER_OK
    }
}

/* The invariants of an accepted message. */
static void check_accepted(const vidi_msg *m, int n_parts, const vidi_msg_limits *lim) {
    if (!m->header || m->header->type != MSGPACK_OBJECT_MAP) __builtin_trap();
    if (!vidi_cmd_name(m->cmd)) __builtin_trap();
    if (m->n_frames != n_parts - 3 || m->n_frames < 0 || (size_t)m->n_frames > lim->max_frames) __builtin_trap();
    if (m->n_tensors < 0 || (m->n_tensors && !m->tensors)) __builtin_trap();
    int named[MAX_PARTS] = {0};
    for (int i = 0; i < m->n_tensors; i++) {
        const vidi_wire_tensor *t = &m->tensors[i];
        if ((unsigned)t->dtype >= VIDI_WIRE_DTYPE_COUNT || t->ndim < 1 || t->ndim > VIDI_WIRE_MAX_DIMS)
            __builtin_trap();
        uint64_t bytes = vidi_wire_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 1) __builtin_trap();
            bytes *= (uint64_t)t->shape[d]; /* bounded by the frame or max_total_bytes: no wrap */
        }
        if (bytes != t->bytes || t->bytes > lim->max_total_bytes) __builtin_trap();
        if (t->frame >= 0) {
            if (t->frame >= m->n_frames || !t->data || named[t->frame]++) __builtin_trap();
            if (t->bytes > lim->max_frame_bytes) __builtin_trap();
            touch(t->data, (size_t)t->bytes);
        } else if (t->frame != -1 || t->data) {
            __builtin_trap();
        } else {
            touch(t->ipc_handle, sizeof t->ipc_handle);
        }
    }
    for (int f = 0; f < m->n_frames; f++)
        if (named[f] != 1) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vidi_msg_limits lim = vidi_msg_limits_default();
    lim.max_frames = 8;
    lim.max_header_bytes = 64 << 10;
    lim.max_frame_bytes = 1 << 20;
    lim.max_total_bytes = 4 << 20;
    lim.max_string = 4096;
    lim.max_array = 1024;

    const void *bufs[MAX_PARTS];
    size_t lens[MAX_PARTS];
    int n = size ? data[0] % MAX_PARTS : 0;
    size_t off = size ? 1 : 0;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        if (size - off >= 2) {
            len = (size_t)data[off] | (size_t)data[off + 1] << 8;
            off += 2;
            if (len > size - off) len = size - off;
        }
        bufs[i] = data + off;
        lens[i] = len;
        off += len;
    }

    vidi_msg m;
    vidi_msg_init(&m);
    vidi_err err;
    vidi_err_clear(&err);
    vidi_wire_code code = VIDI_WIRE_OK;
    vidi_status st = vidi_msg_set_parts(&m, bufs, lens, n, &err);
    if (st == VIDI_OK) {
        st = vidi_msg_parse(&m, &lim, &code, &err);
        if (st == VIDI_OK) {
            if (code != VIDI_WIRE_OK) __builtin_trap();
            check_accepted(&m, n, &lim);
            run_getters(m.header);
        } else if (!err.msg[0] || code == VIDI_WIRE_OK || code >= VIDI_WIRE_CODE_COUNT) {
            __builtin_trap(); /* a refusal says what was wrong and what to answer */
        }
        /* parsing again gives the same answer */
        vidi_err err2;
        vidi_err_clear(&err2);
        vidi_wire_code code2 = VIDI_WIRE_OK;
        vidi_status st2 = vidi_msg_parse(&m, &lim, &code2, &err2);
        if (st2 != st || code2 != code) __builtin_trap();
    } else if (!err.msg[0]) {
        __builtin_trap();
    }
    vidi_msg_close(&m);

    /* the bounded walk straight on the input */
    vidi_err_clear(&err);
    if (vidi_mp_check(data, size, &lim, &err) != VIDI_OK && !err.msg[0]) __builtin_trap();
    return 0;
}
