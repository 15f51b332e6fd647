/* ipc/msg.h — vidi's wire messages (ipc/PROTOCOL.md): framing, the checked
 * msgpack header, tensor descriptors and limits, over libzmq + msgpack-c.
 *
 * A message on the wire is [identity (ROUTER side)] [version: "VIDI" 1 0]
 * [command byte] [msgpack map] [raw frame 0] ... . Receiving checks every
 * layer in the order PROTOCOL.md §2 gives and fills a vidi_wire_code (the
 * ERROR code to answer with) and a vidi_err saying what was wrong. A message
 * that fails is never half-accepted: the caller answers ERROR and goes on.
 *
 * Ownership: a received vidi_msg owns its parts (zmq_msg_t) and the unpacked
 * header; the header objects, strings and tensor data point into them and
 * live until vidi_msg_close. A vidi_msg_out owns its header buffer; raw
 * frames are borrowed (zero-copy, with a free function called by ZeroMQ when
 * it is done with them) or copied, as the caller chooses.
 */
#ifndef VIDI_IPC_MSG_H
#define VIDI_IPC_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <zmq.h>

#include "core/err.h"

#define VIDI_PROTO_MAJOR 1
#define VIDI_PROTO_MINOR 2
#define VIDI_PROTO_VERSION_LEN 6 /* "VIDI" major minor */
#define VIDI_IDENTITY_MAX 255    /* ZeroMQ's routing-id limit */
#define VIDI_WIRE_MAX_DIMS 4

typedef enum vidi_cmd {
    VIDI_CMD_READY = 0x01,
    VIDI_CMD_HEARTBEAT = 0x02,
    VIDI_CMD_REQUEST = 0x03,
    VIDI_CMD_WORK = 0x04,
    VIDI_CMD_RESULT = 0x05,
    VIDI_CMD_TOKEN = 0x06,
    VIDI_CMD_DONE = 0x07,
    VIDI_CMD_ERROR = 0x08,
    VIDI_CMD_CANCEL = 0x09,
    VIDI_CMD_DRAIN = 0x0A,
    VIDI_CMD_ROLE = 0x0B,
    VIDI_CMD_STATS = 0x0C,
    VIDI_CMD_DISCONNECT = 0x0D,
    VIDI_CMD_RELEASE = 0x0E,
} vidi_cmd;

/* "READY", ... ; NULL for a byte that is no command. */
const char *vidi_cmd_name(int cmd);

/* The ERROR codes of PROTOCOL.md §7. */
typedef enum vidi_wire_code {
    VIDI_WIRE_OK = 0,
    VIDI_WIRE_BAD_VERSION,
    VIDI_WIRE_BAD_FRAME,
    VIDI_WIRE_BAD_COMMAND,
    VIDI_WIRE_BAD_HEADER,
    VIDI_WIRE_BAD_FIELD,
    VIDI_WIRE_BAD_TENSOR,
    VIDI_WIRE_TOO_LARGE,
    VIDI_WIRE_BAD_MEDIA,
    VIDI_WIRE_BAD_REQUEST,
    VIDI_WIRE_OVERLOADED,
    VIDI_WIRE_NO_WORKER,
    VIDI_WIRE_WORKER_LOST,
    VIDI_WIRE_TIMEOUT,
    VIDI_WIRE_CANCELLED,
    VIDI_WIRE_INTERNAL,
    VIDI_WIRE_CODE_COUNT
} vidi_wire_code;

/* "bad_version", ...; the code for a name (VIDI_WIRE_CODE_COUNT if none). */
const char *vidi_wire_code_name(vidi_wire_code c);
vidi_wire_code vidi_wire_code_from_name(const char *s, size_t n);

typedef struct vidi_msg_limits {
    size_t max_frames;       /* raw frames after the header */
    size_t max_header_bytes;
    size_t max_frame_bytes;  /* one raw frame */
    uint64_t max_total_bytes;
    int max_depth;           /* msgpack nesting */
    size_t max_string;       /* one str / bin */
    size_t max_array;        /* items of one array or map */
} vidi_msg_limits;

/* PROTOCOL.md §4: 256 frames, 1 MiB header, 1 GiB frame, 4 GiB message,
 * depth 16, strings 256 KiB, arrays 65536. */
vidi_msg_limits vidi_msg_limits_default(void);

typedef enum vidi_wire_dtype {
    VIDI_WIRE_U8 = 0,
    VIDI_WIRE_I32,
    VIDI_WIRE_I64,
    VIDI_WIRE_F16,
    VIDI_WIRE_BF16,
    VIDI_WIRE_F32,
    VIDI_WIRE_DTYPE_COUNT
} vidi_wire_dtype;

const char *vidi_wire_dtype_name(vidi_wire_dtype dt); /* "u8", ... */
size_t vidi_wire_dtype_size(vidi_wire_dtype dt);

/* One entry of a header's `tensors` array (PROTOCOL.md §5.4). */
typedef struct vidi_wire_tensor {
    vidi_wire_dtype dtype;
    int ndim;
    int64_t shape[VIDI_WIRE_MAX_DIMS];
    uint64_t bytes;          /* prod(shape) * dtype size */
    int frame;               /* raw frame index, or -1 for a CUDA IPC tensor */
    const void *data;        /* the frame's bytes (NULL for CUDA IPC) */
    uint8_t ipc_handle[64];  /* cudaIpcMemHandle_t bytes, when frame == -1 */
    uint64_t ipc_offset;
    int ipc_device;
    uint64_t ipc_lease;      /* the owner's lease number */
    uint64_t ipc_until_ms;   /* CLOCK_MONOTONIC ms: the range is the owner's again after this */
    const char *ipc_owner;   /* the owner's data endpoint (not NUL-terminated; in the header) */
    size_t ipc_owner_len;
} vidi_wire_tensor;

/* Where a CUDA IPC tensor lies and who owns it (PROTOCOL.md §5.4). */
typedef struct vidi_wire_ipc {
    uint8_t handle[64];
    uint64_t offset;
    int device;              /* [0, 1023] */
    uint64_t lease;
    const char *owner;       /* NUL-terminated data endpoint */
    uint64_t until_ms;
} vidi_wire_ipc;

/* A received message. Zero-initialise (or vidi_msg_init) before the first
 * vidi_msg_recv; vidi_msg_close releases it and leaves it reusable. */
typedef struct vidi_msg {
    uint8_t identity[VIDI_IDENTITY_MAX];
    size_t identity_len;     /* 0 on a DEALER */
    int cmd;                 /* vidi_cmd, or the raw byte when unknown (-1: none) */
    int minor;               /* the sender's minor version */
    const msgpack_object *header; /* the header map (NULL until parsed) */
    int n_tensors;
    vidi_wire_tensor *tensors; /* n_tensors, from the header's `tensors` */
    int n_frames;            /* raw frames after the header */
    /* private */
    zmq_msg_t *parts;        /* all parts after the identity */
    int n_parts;
    int parts_cap;
    msgpack_unpacked unpacked;
    int unpacked_live;
} vidi_msg;

void vidi_msg_init(vidi_msg *m);
void vidi_msg_close(vidi_msg *m);

/* Receive one whole multipart message from sock (blocking unless
 * ZMQ_RCVTIMEO / ZMQ_DONTWAIT says otherwise: flags go to the first
 * zmq_msg_recv) and check it (vidi_msg_parse). has_identity: sock is a
 * ROUTER, so the first part is the sender's identity. Every part is read
 * even when the message is bad, so the socket stays in step; parts beyond the
 * frame limit are dropped as they arrive. Returns VIDI_OK, or:
 *   VIDI_ERR_IO with *code VIDI_WIRE_OK: nothing received (EAGAIN, EINTR,
 *     ETERM; errno tells which), not the sender's fault;
 *   another status with *code the ERROR code to answer with. m->identity and
 *     m->cmd (when readable) are filled so that the answer can be addressed. */
vidi_status vidi_msg_recv(void *sock, int has_identity, int flags, const vidi_msg_limits *lim,
                          vidi_msg *m, vidi_wire_code *code, vidi_err *err);

/* The checks of PROTOCOL.md §2 (1-4 and 6) on parts already in m (the
 * socket-free half of vidi_msg_recv, also the fuzz target's entry):
 * vidi_msg_set_parts copies n buffers into m's parts, then vidi_msg_parse.
 * Field checks (step 5) are the command handler's, with vidi_mp_*. */
vidi_status vidi_msg_set_parts(vidi_msg *m, const void *const *bufs, const size_t *lens, int n, vidi_err *err);
vidi_status vidi_msg_parse(vidi_msg *m, const vidi_msg_limits *lim, vidi_wire_code *code, vidi_err *err);

/* The bounded walk of step 4: buf[0, n) is exactly one msgpack object no
 * deeper than lim->max_depth whose every declared length fits in what
 * remains (and within max_string / max_array). Runs before msgpack-c
 * allocates anything. */
vidi_status vidi_mp_check(const uint8_t *buf, size_t n, const vidi_msg_limits *lim, vidi_err *err);

/* ---- header fields (step 5). Each getter takes the map, a key, whether
 * the key is required, and returns VIDI_ERR_FORMAT with a message naming the
 * key, the expected type and what came ("field 'max_tokens': expected a
 * non-negative integer, got a string") or VIDI_ERR_RANGE outside [lo, hi].
 * An absent optional key leaves *out at the default given. Strings and
 * binaries are borrowed from the message (not NUL-terminated). */
const msgpack_object *vidi_mp_get(const msgpack_object *map, const char *key);
const char *vidi_mp_type_name(const msgpack_object *o);
vidi_status vidi_mp_u64(const msgpack_object *map, const char *key, int required, uint64_t def, uint64_t lo,
                        uint64_t hi, uint64_t *out, vidi_err *err);
vidi_status vidi_mp_i64(const msgpack_object *map, const char *key, int required, int64_t def, int64_t lo,
                        int64_t hi, int64_t *out, vidi_err *err);
vidi_status vidi_mp_f64(const msgpack_object *map, const char *key, int required, double def, double lo, double hi,
                        double *out, vidi_err *err);
vidi_status vidi_mp_bool(const msgpack_object *map, const char *key, int required, int def, int *out,
                         vidi_err *err);
vidi_status vidi_mp_str(const msgpack_object *map, const char *key, int required, size_t max_len, const char **s,
                        size_t *n, vidi_err *err);
vidi_status vidi_mp_bin(const msgpack_object *map, const char *key, int required, size_t exact_len,
                        const uint8_t **b, size_t *n, vidi_err *err);
/* An array (NULL and 0 when optional and absent); max_items bounds it. */
vidi_status vidi_mp_array(const msgpack_object *map, const char *key, int required, size_t max_items,
                          const msgpack_object **items, size_t *n, vidi_err *err);
/* A nested map (NULL when optional and absent). */
vidi_status vidi_mp_map(const msgpack_object *map, const char *key, int required, const msgpack_object **out,
                        vidi_err *err);
/* Is the string object equal to s? */
int vidi_mp_str_eq(const msgpack_object *o, const char *s);

/* ---- sending ---- */

typedef void vidi_frame_free_fn(void *data, void *hint); /* = zmq_free_fn */

typedef struct vidi_msg_out_frame {
    void *data;
    size_t bytes;
    vidi_frame_free_fn *free_fn; /* NULL: the bytes are copied at send time */
    void *hint;
} vidi_msg_out_frame;

/* A message being built: pack the header map with `pk` (msgpack-c's
 * packer), adding raw frames with vidi_msg_out_tensor as the `tensors`
 * array is packed. */
typedef struct vidi_msg_out {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    vidi_msg_out_frame *frames;
    int n_frames, frames_cap;
    int failed;              /* a tensor was refused or an allocation failed; vidi_msg_send reports it */
} vidi_msg_out;

void vidi_msg_out_init(vidi_msg_out *o);
/* Frees the header and calls the free function of every frame not sent. */
void vidi_msg_out_free(vidi_msg_out *o);

/* Pack one descriptor {dtype, shape, frame} into the `tensors` array being
 * packed and append its raw frame (bytes must equal prod(shape) * size).
 * free_fn NULL: data is copied when sent (it must live until then).
 * With a free_fn the frame belongs to the message from this call on: a
 * refused tensor (bad shape, size mismatch, no memory) is released with
 * free_fn at once, and the message is marked failed (it will not be sent). */
vidi_status vidi_msg_out_tensor(vidi_msg_out *o, vidi_wire_dtype dt, int ndim, const int64_t *shape, void *data,
                                size_t bytes, vidi_frame_free_fn *free_fn, void *hint, vidi_err *err);
/* Pack one CUDA IPC descriptor (no raw frame); ipc->device in [0, 1023]. */
vidi_status vidi_msg_out_tensor_ipc(vidi_msg_out *o, vidi_wire_dtype dt, int ndim, const int64_t *shape,
                                    const vidi_wire_ipc *ipc, vidi_err *err);
/* Pack a string given as a C string. */
void vidi_mp_pack_cstr(msgpack_packer *pk, const char *s);
/* One map entry: the key (a C string) and its value. */
void vidi_mp_kv_str(msgpack_packer *pk, const char *key, const char *value);
void vidi_mp_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
void vidi_mp_kv_i64(msgpack_packer *pk, const char *key, int64_t value);
void vidi_mp_kv_f64(msgpack_packer *pk, const char *key, double value);
void vidi_mp_kv_bin(msgpack_packer *pk, const char *key, const void *value, size_t n);

/* Send [identity][version][cmd][header][frames]. identity NULL on a DEALER.
 * On success the frames belong to ZeroMQ and o is emptied. Success or not,
 * call vidi_msg_out_free afterwards (it releases whatever was not sent). A peer that is gone (ROUTER_MANDATORY: EHOSTUNREACH)
 * is VIDI_ERR_NOTFOUND; a send that would block past ZMQ_SNDTIMEO is
 * VIDI_ERR_IO with errno EAGAIN. */
vidi_status vidi_msg_send(void *sock, const void *identity, size_t identity_len, vidi_cmd cmd, vidi_msg_out *o,
                          vidi_err *err);

/* ERROR {code, message[, id]} to identity (id_or_neg < 0: no id field). */
vidi_status vidi_msg_send_error(void *sock, const void *identity, size_t identity_len, vidi_wire_code code,
                                int64_t id_or_neg, const char *message, vidi_err *err);

#endif
