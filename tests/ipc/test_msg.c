/* tests/ipc/test_msg.c — the message layer of ipc/msg.h over real ZeroMQ
 * sockets.
 *
 * A ROUTER (bound) and a DEALER (connected) talk over inproc:// for most
 * cases, and over ipc:// (under test_tmpdir) and tcp://127.0.0.1 (an
 * ephemeral port read back with ZMQ_LAST_ENDPOINT) for the round trip. Every
 * socket has ZMQ_LINGER 0 and receive/send timeouts, so a bug fails a check
 * instead of hanging the program.
 *
 * What is pinned here:
 *  - every command round trips with a header holding every msgpack type and
 *    two raw tensors (one copied, one zero-copy whose free function ZeroMQ
 *    calls exactly once), and the ROUTER can answer the DEALER's identity;
 *  - a CUDA IPC descriptor round trips without a raw frame;
 *  - each malformed message of PROTOCOL.md §2 (sent raw with zmq_send, past
 *    vidi_msg_send) is refused with its ERROR code and a message, the
 *    ROUTER answers it with ERROR to the sender and keeps serving;
 *  - the vidi_mp_* getters' types, ranges, defaults and messages;
 *  - ROUTER_MANDATORY makes a send to an unknown peer VIDI_ERR_NOTFOUND;
 *  - vidi_mp_check refuses every truncation of a good header.
 *
 * Runs under ASan + UBSan with leak detection in CI (.ci/run).
 */
#include "ipc/msg.h"
#include "test_util.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RCV_TIMEOUT_MS 2000
#define SND_TIMEOUT_MS 2000
#define DEALER_ID "dealer-1"

static const uint8_t VERSION_OK[VIDI_PROTO_VERSION_LEN] = {'V', 'I', 'D', 'I', VIDI_PROTO_MAJOR, VIDI_PROTO_MINOR};

/* ------------------------------------------------------------ helpers */

/* The zero-copy frames' free function: counts its calls (ZeroMQ may call it
 * from an I/O thread, hence atomics) and checks the hint it was given. */
static atomic_int g_freed;
static atomic_int g_bad_hint;
static int g_hint_tag;

static void count_free(void *data, void *hint) {
    if (hint != &g_hint_tag) atomic_fetch_add(&g_bad_hint, 1);
    free(data);
    atomic_fetch_add(&g_freed, 1);
}

static const char *code_name(vidi_wire_code c) {
    const char *s = ((int)c >= 0 && (int)c < (int)VIDI_WIRE_CODE_COUNT) ? vidi_wire_code_name(c) : NULL;
    return s ? s : "?";
}

/* Default limits, for receives whose limits do not matter. */
static const vidi_msg_limits *deflim(void) {
    static vidi_msg_limits lim;
    static int init;
    if (!init) {
        lim = vidi_msg_limits_default();
        init = 1;
    }
    return &lim;
}

static int set_int_opt(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

typedef struct sock_pair {
    void *ctx;
    void *router; /* bound */
    void *dealer; /* connected, routing id DEALER_ID */
    char endpoint[256];
} sock_pair;

/* Closes what pair_open made (also after a partial failure). */
static void pair_close(sock_pair *p) {
    if (p->dealer) zmq_close(p->dealer);
    if (p->router) zmq_close(p->router);
    if (p->ctx) zmq_ctx_term(p->ctx);
    memset(p, 0, sizeof *p);
}

/* ROUTER bound at bind_ep (the real endpoint read back with
 * ZMQ_LAST_ENDPOINT), DEALER connected to it. 0, or -1 after a failure is
 * recorded (the caller still calls pair_close). */
static int pair_open(sock_pair *p, const char *bind_ep, int router_mandatory) {
    memset(p, 0, sizeof *p);
    p->ctx = zmq_ctx_new();
    if (!p->ctx) goto fail;
    p->router = zmq_socket(p->ctx, ZMQ_ROUTER);
    p->dealer = zmq_socket(p->ctx, ZMQ_DEALER);
    if (!p->router || !p->dealer) goto fail;
    void *socks[2] = {p->router, p->dealer};
    for (int i = 0; i < 2; i++) {
        if (set_int_opt(socks[i], ZMQ_LINGER, 0) || set_int_opt(socks[i], ZMQ_RCVTIMEO, RCV_TIMEOUT_MS) ||
            set_int_opt(socks[i], ZMQ_SNDTIMEO, SND_TIMEOUT_MS))
            goto fail;
    }
    if (router_mandatory && set_int_opt(p->router, ZMQ_ROUTER_MANDATORY, 1)) goto fail;
    if (zmq_setsockopt(p->dealer, ZMQ_ROUTING_ID, DEALER_ID, strlen(DEALER_ID))) goto fail;
    if (zmq_bind(p->router, bind_ep)) goto fail;
    size_t len = sizeof p->endpoint;
    if (zmq_getsockopt(p->router, ZMQ_LAST_ENDPOINT, p->endpoint, &len)) goto fail;
    if (zmq_connect(p->dealer, p->endpoint)) goto fail;
    return 0;
fail:
    test_fail(__FILE__, __LINE__, "pair_open(%s): %s", bind_ep, zmq_strerror(zmq_errno()));
    return -1;
}

/* A message built part by part, sent raw with zmq_send. */
typedef struct raw_msg {
    int n;
    const void *bufs[32];
    size_t lens[32];
    uint8_t cmd;
} raw_msg;

static void raw_add(raw_msg *r, const void *b, size_t n) {
    if (r->n < 32) {
        r->bufs[r->n] = b;
        r->lens[r->n] = n;
        r->n++;
    }
}

/* [version][cmd][header] */
static void raw_std(raw_msg *r, uint8_t cmd, const void *hdr, size_t hdr_len) {
    memset(r, 0, sizeof *r);
    r->cmd = cmd;
    raw_add(r, VERSION_OK, sizeof VERSION_OK);
    raw_add(r, &r->cmd, 1);
    raw_add(r, hdr, hdr_len);
}

static int send_raw(void *s, const raw_msg *r) {
    for (int i = 0; i < r->n; i++)
        if (zmq_send(s, r->bufs[i], r->lens[i], i + 1 < r->n ? ZMQ_SNDMORE : 0) < 0) return -1;
    return 0;
}

/* A msgpack buffer for headers built outside vidi_msg_out. */
typedef struct hdr_buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} hdr_buf;

static void hdr_init(hdr_buf *h) {
    msgpack_sbuffer_init(&h->sb);
    msgpack_packer_init(&h->pk, &h->sb, msgpack_sbuffer_write);
}

static void hdr_free(hdr_buf *h) { msgpack_sbuffer_destroy(&h->sb); }

static void pack_key(msgpack_packer *pk, const char *k) { vidi_mp_pack_cstr(pk, k); }

/* The CUDA IPC part of a hand-made descriptor. */
typedef struct ipc_spec {
    size_t handle_len; /* 64 when valid */
    uint64_t offset;
    int64_t device;
    uint64_t bytes;
    const char *owner; /* NULL: absent */
} ipc_spec;

/* One descriptor map: dtype (NULL: absent), shape (ndim < 0: absent), frame
 * (has_frame), cuda_ipc (ipc non-NULL). */
static void pack_desc(msgpack_packer *pk, const char *dtype, int ndim, const int64_t *shape, int has_frame,
                      int64_t frame, const ipc_spec *ipc) {
    size_t n = (dtype ? 1u : 0u) + (ndim >= 0 ? 1u : 0u) + (has_frame ? 1u : 0u) + (ipc ? 1u : 0u);
    msgpack_pack_map(pk, n);
    if (dtype) {
        pack_key(pk, "dtype");
        vidi_mp_pack_cstr(pk, dtype);
    }
    if (ndim >= 0) {
        pack_key(pk, "shape");
        msgpack_pack_array(pk, (size_t)ndim);
        for (int i = 0; i < ndim; i++) msgpack_pack_int64(pk, shape[i]);
    }
    if (has_frame) {
        pack_key(pk, "frame");
        msgpack_pack_int64(pk, frame);
    }
    if (ipc) {
        uint8_t handle[80];
        memset(handle, 0xAB, sizeof handle);
        pack_key(pk, "cuda_ipc");
        msgpack_pack_map(pk, ipc->owner ? 7 : 6);
        pack_key(pk, "lease");
        msgpack_pack_uint64(pk, 1);
        pack_key(pk, "until_ms");
        msgpack_pack_uint64(pk, 1000);
        if (ipc->owner) {
            pack_key(pk, "owner");
            vidi_mp_pack_cstr(pk, ipc->owner);
        }
        pack_key(pk, "handle");
        msgpack_pack_bin(pk, ipc->handle_len);
        msgpack_pack_bin_body(pk, handle, ipc->handle_len);
        pack_key(pk, "offset");
        msgpack_pack_uint64(pk, ipc->offset);
        pack_key(pk, "device");
        msgpack_pack_int64(pk, ipc->device);
        pack_key(pk, "bytes");
        msgpack_pack_uint64(pk, ipc->bytes);
    }
}

/* The DEALER sends REQUEST {id: seq, prompt: "ping"} with vidi_msg_send and
 * the ROUTER receives it fine. */
static void expect_good_after(sock_pair *p, const vidi_msg_limits *lim, uint64_t seq, const char *what) {
    vidi_err err;
    vidi_err_clear(&err);
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 2);
    pack_key(&o.pk, "id");
    msgpack_pack_uint64(&o.pk, seq);
    pack_key(&o.pk, "prompt");
    vidi_mp_pack_cstr(&o.pk, "ping");
    vidi_status st = vidi_msg_send(p->dealer, NULL, 0, VIDI_CMD_REQUEST, &o, &err);
    vidi_msg_out_free(&o);
    CHECK(st == VIDI_OK, "%s: good send after: %s", what, err.msg);
    if (st != VIDI_OK) return;

    vidi_msg m;
    vidi_msg_init(&m);
    vidi_wire_code code = VIDI_WIRE_INTERNAL;
    st = vidi_msg_recv(p->router, 1, 0, lim, &m, &code, &err);
    CHECK(st == VIDI_OK && code == VIDI_WIRE_OK, "%s: the good message after it was refused: [%s] %s", what,
          code_name(code), err.msg);
    if (st == VIDI_OK) {
        uint64_t id = 0;
        CHECK(m.cmd == VIDI_CMD_REQUEST, "%s: good message cmd %d", what, m.cmd);
        CHECK(vidi_mp_u64(m.header, "id", 1, 0, 0, UINT64_MAX, &id, &err) == VIDI_OK && id == seq,
              "%s: good message id %llu, expected %llu", what, (unsigned long long)id, (unsigned long long)seq);
    }
    vidi_msg_close(&m);
}

/* Sends r raw from the DEALER; the ROUTER must refuse it with code want (or
 * alt), a failing status and a message, know who sent it, answer with ERROR
 * to that identity (which the DEALER receives), and then receive a good
 * message. */
static void expect_bad(sock_pair *p, const vidi_msg_limits *lim, const char *what, const raw_msg *r,
                       vidi_wire_code want, vidi_wire_code alt) {
    static uint64_t seq = 1000;
    if (send_raw(p->dealer, r) != 0) {
        CHECK(0, "%s: zmq_send: %s", what, zmq_strerror(zmq_errno()));
        return;
    }
    vidi_msg m;
    vidi_msg_init(&m);
    vidi_wire_code code = VIDI_WIRE_OK;
    vidi_err err;
    vidi_err_clear(&err);
    vidi_status st = vidi_msg_recv(p->router, 1, 0, lim, &m, &code, &err);
    if (getenv("VIDI_TEST_SHOW_MSG")) printf("  %s: [%s/%s] %s\n", what, vidi_status_name(st), code_name(code), err.msg);
    CHECK(st != VIDI_OK, "%s: accepted", what);
    CHECK(code == want || code == alt, "%s: code %s, expected %s%s%s (status %s: %s)", what, code_name(code),
          code_name(want), alt != want ? " or " : "", alt != want ? code_name(alt) : "", vidi_status_name(st),
          err.msg);
    CHECK(err.msg[0] != '\0', "%s: empty error message", what);
    CHECK(err.status == st, "%s: err.status %s != returned %s", what, vidi_status_name(err.status),
          vidi_status_name(st));
    CHECK(m.identity_len == strlen(DEALER_ID) && memcmp(m.identity, DEALER_ID, strlen(DEALER_ID)) == 0,
          "%s: identity of the sender not filled (len %zu)", what, m.identity_len);

    /* PROTOCOL.md §7: answer ERROR to the identity it came from. */
    if (code != VIDI_WIRE_OK && code < VIDI_WIRE_CODE_COUNT && m.identity_len > 0) {
        vidi_err e2;
        vidi_err_clear(&e2);
        st = vidi_msg_send_error(p->router, m.identity, m.identity_len, code, -1, err.msg, &e2);
        CHECK(st == VIDI_OK, "%s: send_error: %s", what, e2.msg);
        vidi_msg_close(&m);
        if (st == VIDI_OK) {
            vidi_msg a;
            vidi_msg_init(&a);
            vidi_wire_code c2 = VIDI_WIRE_INTERNAL;
            st = vidi_msg_recv(p->dealer, 0, 0, deflim(), &a, &c2, &e2);
            if (st == VIDI_OK) {
                CHECK(a.cmd == VIDI_CMD_ERROR, "%s: answer cmd %d", what, a.cmd);
                const msgpack_object *c = vidi_mp_get(a.header, "code");
                CHECK(c && vidi_mp_str_eq(c, code_name(code)), "%s: ERROR code field is not '%s'", what,
                      code_name(code));
            } else {
                CHECK(0, "%s: DEALER did not get the ERROR: %s", what, e2.msg);
            }
            vidi_msg_close(&a);
        }
    }
    vidi_msg_close(&m);
    expect_good_after(p, lim, seq++, what);
}

/* Shorthand: [version][cmd REQUEST][hdr bytes] must be refused. */
static void expect_bad_header(sock_pair *p, const vidi_msg_limits *lim, const char *what, const void *hdr,
                              size_t n, vidi_wire_code want, vidi_wire_code alt) {
    raw_msg r;
    raw_std(&r, VIDI_CMD_REQUEST, hdr, n);
    expect_bad(p, lim, what, &r, want, alt);
}

/* [version][REQUEST][hdr] parsed without a socket. */
static vidi_status parse_header(vidi_msg *m, const void *hdr, size_t n, vidi_wire_code *code, vidi_err *err) {
    uint8_t cmd = VIDI_CMD_REQUEST;
    const void *bufs[3] = {VERSION_OK, &cmd, hdr};
    size_t lens[3] = {sizeof VERSION_OK, 1, n};
    vidi_status st = vidi_msg_set_parts(m, bufs, lens, 3, err);
    if (st != VIDI_OK) return st;
    vidi_msg_limits lim = vidi_msg_limits_default();
    return vidi_msg_parse(m, &lim, code, err);
}

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* ------------------------------------------------------------ round trip */

static const char RT_STR[] = "hello, w\xc3\xb6rld";
#define RT_U64 0xFFFFFFFFFFFFFFF0ull
#define RT_NEG (-1234567890123ll)
#define ZC_BYTES 1000

/* Packs the full header for cmd: every msgpack type and 2 tensors (f32
 * [2,3] copied from f, which must live until the send, and u8 [4,250]
 * zero-copy with count_free). */
static vidi_status pack_full(vidi_msg_out *o, int cmd, float f[6], vidi_err *err) {
    msgpack_packer *pk = &o->pk;
    msgpack_pack_map(pk, 13);
    pack_key(pk, "cmd");
    msgpack_pack_uint64(pk, (uint64_t)cmd);
    pack_key(pk, "u");
    msgpack_pack_uint64(pk, RT_U64);
    pack_key(pk, "neg");
    msgpack_pack_int64(pk, RT_NEG);
    pack_key(pk, "f");
    msgpack_pack_double(pk, 3.25);
    pack_key(pk, "f32");
    msgpack_pack_float(pk, 0.5f);
    pack_key(pk, "yes");
    msgpack_pack_true(pk);
    pack_key(pk, "no");
    msgpack_pack_false(pk);
    pack_key(pk, "nil");
    msgpack_pack_nil(pk);
    pack_key(pk, "s");
    msgpack_pack_str(pk, strlen(RT_STR));
    msgpack_pack_str_body(pk, RT_STR, strlen(RT_STR));
    uint8_t bin[16];
    for (int i = 0; i < 16; i++) bin[i] = (uint8_t)(i * 17 + cmd);
    pack_key(pk, "b");
    msgpack_pack_bin(pk, sizeof bin);
    msgpack_pack_bin_body(pk, bin, sizeof bin);
    pack_key(pk, "m");
    msgpack_pack_map(pk, 2);
    pack_key(pk, "x");
    msgpack_pack_uint64(pk, 7);
    pack_key(pk, "inner");
    msgpack_pack_map(pk, 1);
    pack_key(pk, "z");
    vidi_mp_pack_cstr(pk, "deep");
    pack_key(pk, "arr");
    msgpack_pack_array(pk, 3);
    for (int i = 1; i <= 3; i++) msgpack_pack_uint64(pk, (uint64_t)(10 * i));

    pack_key(pk, "tensors");
    msgpack_pack_array(pk, 2);
    for (int i = 0; i < 6; i++) f[i] = (float)(i + cmd) * 0.5f;
    int64_t s0[2] = {2, 3};
    uint8_t *zc = malloc(ZC_BYTES);
    if (!zc) return vidi_err_set(err, VIDI_ERR_NOMEM, "malloc");
    vidi_status st = vidi_msg_out_tensor(o, VIDI_WIRE_F32, 2, s0, f, 6 * sizeof *f, NULL, NULL, err);
    if (st != VIDI_OK) {
        count_free(zc, &g_hint_tag); /* never handed over, but counted as released */
        return st;
    }
    for (int i = 0; i < ZC_BYTES; i++) zc[i] = (uint8_t)(i * 7 + cmd);
    int64_t s1[2] = {4, 250};
    /* from here the frame is the message's: refused, it is released at once */
    return vidi_msg_out_tensor(o, VIDI_WIRE_U8, 2, s1, zc, ZC_BYTES, count_free, &g_hint_tag, err);
}

/* Checks what pack_full packed, as received. */
static void check_full(const vidi_msg *m, int cmd, const char *ep) {
    const msgpack_object *h = m->header;
    vidi_err err;
    vidi_err_clear(&err);
    REQUIRE(h && h->type == MSGPACK_OBJECT_MAP, "%s cmd %d: no header map", ep, cmd);
    CHECK(m->cmd == cmd, "%s: cmd %d, expected %d", ep, m->cmd, cmd);
    CHECK(m->minor == VIDI_PROTO_MINOR, "%s: minor %d", ep, m->minor);

    uint64_t u = 0;
    CHECK(vidi_mp_u64(h, "cmd", 1, 0, 0, 255, &u, &err) == VIDI_OK && u == (uint64_t)cmd, "%s: cmd field: %s", ep,
          err.msg);
    CHECK(vidi_mp_u64(h, "u", 1, 0, 0, UINT64_MAX, &u, &err) == VIDI_OK && u == RT_U64, "%s: u: %s", ep, err.msg);
    int64_t i = 0;
    CHECK(vidi_mp_i64(h, "neg", 1, 0, INT64_MIN, INT64_MAX, &i, &err) == VIDI_OK && i == RT_NEG, "%s: neg: %s", ep,
          err.msg);
    double d = 0;
    CHECK(vidi_mp_f64(h, "f", 1, 0, -1e9, 1e9, &d, &err) == VIDI_OK && d == 3.25, "%s: f: %s", ep, err.msg);
    CHECK(vidi_mp_f64(h, "f32", 1, 0, -1e9, 1e9, &d, &err) == VIDI_OK && d == 0.5, "%s: f32: %s", ep, err.msg);
    int b = -1;
    CHECK(vidi_mp_bool(h, "yes", 1, 0, &b, &err) == VIDI_OK && b == 1, "%s: yes: %s", ep, err.msg);
    CHECK(vidi_mp_bool(h, "no", 1, 1, &b, &err) == VIDI_OK && b == 0, "%s: no: %s", ep, err.msg);
    const msgpack_object *nil = vidi_mp_get(h, "nil");
    CHECK(nil && nil->type == MSGPACK_OBJECT_NIL, "%s: nil", ep);
    const char *s = NULL;
    size_t n = 0;
    CHECK(vidi_mp_str(h, "s", 1, 64, &s, &n, &err) == VIDI_OK && n == strlen(RT_STR) && memcmp(s, RT_STR, n) == 0,
          "%s: s: %s", ep, err.msg);
    const uint8_t *bin = NULL;
    CHECK(vidi_mp_bin(h, "b", 1, 16, &bin, &n, &err) == VIDI_OK && n == 16, "%s: b: %s", ep, err.msg);
    if (bin && n == 16)
        for (int k = 0; k < 16; k++) CHECK(bin[k] == (uint8_t)(k * 17 + cmd), "%s: b[%d]", ep, k);
    const msgpack_object *mm = NULL, *inner = NULL;
    CHECK(vidi_mp_map(h, "m", 1, &mm, &err) == VIDI_OK && mm, "%s: m: %s", ep, err.msg);
    if (mm) {
        CHECK(vidi_mp_u64(mm, "x", 1, 0, 0, 100, &u, &err) == VIDI_OK && u == 7, "%s: m.x: %s", ep, err.msg);
        CHECK(vidi_mp_map(mm, "inner", 1, &inner, &err) == VIDI_OK && inner, "%s: m.inner: %s", ep, err.msg);
        if (inner)
            CHECK(vidi_mp_str(inner, "z", 1, 16, &s, &n, &err) == VIDI_OK && n == 4 && memcmp(s, "deep", 4) == 0,
                  "%s: m.inner.z: %s", ep, err.msg);
    }
    const msgpack_object *items = NULL;
    CHECK(vidi_mp_array(h, "arr", 1, 8, &items, &n, &err) == VIDI_OK && n == 3, "%s: arr: %s", ep, err.msg);
    if (items && n == 3)
        for (int k = 0; k < 3; k++)
            CHECK(items[k].type == MSGPACK_OBJECT_POSITIVE_INTEGER && items[k].via.u64 == (uint64_t)(10 * (k + 1)),
                  "%s: arr[%d]", ep, k);

    /* The descriptors as PROTOCOL.md §5.4 writes them. */
    CHECK(vidi_mp_array(h, "tensors", 1, 8, &items, &n, &err) == VIDI_OK && n == 2, "%s: tensors: %s", ep, err.msg);
    if (items && n == 2) {
        CHECK(vidi_mp_str_eq(vidi_mp_get(&items[0], "dtype"), "f32"), "%s: tensors[0].dtype", ep);
        CHECK(vidi_mp_str_eq(vidi_mp_get(&items[1], "dtype"), "u8"), "%s: tensors[1].dtype", ep);
        CHECK(vidi_mp_u64(&items[1], "frame", 1, 0, 0, 10, &u, &err) == VIDI_OK && u == 1, "%s: tensors[1].frame",
              ep);
        CHECK(vidi_mp_get(&items[0], "cuda_ipc") == NULL, "%s: a raw descriptor carries cuda_ipc", ep);
    }

    REQUIRE(m->n_tensors == 2 && m->n_frames == 2 && m->tensors, "%s: n_tensors %d n_frames %d", ep, m->n_tensors,
            m->n_frames);
    const vidi_wire_tensor *t0 = &m->tensors[0], *t1 = &m->tensors[1];
    CHECK(t0->dtype == VIDI_WIRE_F32 && t0->ndim == 2 && t0->shape[0] == 2 && t0->shape[1] == 3 && t0->bytes == 24 &&
              t0->frame == 0 && t0->data,
          "%s: tensor 0 dtype %d ndim %d bytes %llu frame %d", ep, (int)t0->dtype, t0->ndim,
          (unsigned long long)t0->bytes, t0->frame);
    if (t0->data && t0->bytes == 24) {
        float f[6];
        memcpy(f, t0->data, sizeof f);
        for (int k = 0; k < 6; k++) CHECK(f[k] == (float)(k + cmd) * 0.5f, "%s: tensor 0 [%d] = %g", ep, k, f[k]);
    }
    CHECK(t1->dtype == VIDI_WIRE_U8 && t1->ndim == 2 && t1->shape[0] == 4 && t1->shape[1] == 250 &&
              t1->bytes == ZC_BYTES && t1->frame == 1 && t1->data,
          "%s: tensor 1 dtype %d ndim %d bytes %llu frame %d", ep, (int)t1->dtype, t1->ndim,
          (unsigned long long)t1->bytes, t1->frame);
    if (t1->data && t1->bytes == ZC_BYTES) {
        const uint8_t *z = t1->data;
        int bad = 0;
        for (int k = 0; k < ZC_BYTES; k++) bad += z[k] != (uint8_t)(k * 7 + cmd);
        CHECK(bad == 0, "%s: tensor 1: %d bytes differ", ep, bad);
    }
}

/* Every command DEALER -> ROUTER with the full header, then a TOKEN answer
 * ROUTER -> DEALER to the identity received. */
static void round_trip(const char *bind_ep) {
    atomic_store(&g_freed, 0);
    atomic_store(&g_bad_hint, 0);
    int sent_zc = 0;
    sock_pair p;
    if (pair_open(&p, bind_ep, 1) != 0) {
        pair_close(&p);
        return;
    }
    const char *ep = p.endpoint;
    vidi_msg_limits lim = vidi_msg_limits_default();
    for (int cmd = VIDI_CMD_READY; cmd <= VIDI_CMD_RELEASE; cmd++) {
        vidi_err err;
        vidi_err_clear(&err);
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        float f32s[6]; /* the copied tensor: copied at send time */
        vidi_status st = pack_full(&o, cmd, f32s, &err);
        CHECK(st == VIDI_OK, "%s: pack: %s", ep, err.msg);
        sent_zc++; /* the zero-copy frame is released once, sent or not (malloc aside) */
        if (st == VIDI_OK) {
            st = vidi_msg_send(p.dealer, NULL, 0, (vidi_cmd)cmd, &o, &err);
            CHECK(st == VIDI_OK, "%s: send %s: %s", ep, vidi_cmd_name(cmd), err.msg);
            CHECK(st != VIDI_OK || o.n_frames == 0, "%s: o not emptied by a successful send (%d frames)", ep,
                  o.n_frames);
        }
        vidi_msg_out_free(&o); /* must not free the frames ZeroMQ now owns */
        if (st != VIDI_OK) break;

        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code = VIDI_WIRE_INTERNAL;
        st = vidi_msg_recv(p.router, 1, 0, &lim, &m, &code, &err);
        CHECK(st == VIDI_OK && code == VIDI_WIRE_OK, "%s: recv %s: [%s] %s", ep, vidi_cmd_name(cmd), code_name(code),
              err.msg);
        if (st != VIDI_OK) {
            vidi_msg_close(&m);
            break;
        }
        CHECK(m.identity_len == strlen(DEALER_ID) && memcmp(m.identity, DEALER_ID, m.identity_len) == 0,
              "%s: identity len %zu", ep, m.identity_len);
        check_full(&m, cmd, ep);

        /* The answer, to the identity just received (ROUTER_MANDATORY on). */
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 5);
        pack_key(&o.pk, "id");
        msgpack_pack_uint64(&o.pk, (uint64_t)cmd);
        pack_key(&o.pk, "index");
        msgpack_pack_uint64(&o.pk, 0);
        pack_key(&o.pk, "tokens");
        msgpack_pack_array(&o.pk, 3);
        for (int k = 0; k < 3; k++) msgpack_pack_uint64(&o.pk, (uint64_t)(100 + k));
        pack_key(&o.pk, "text");
        vidi_mp_pack_cstr(&o.pk, "ok");
        pack_key(&o.pk, "tensors");
        msgpack_pack_array(&o.pk, 1);
        int64_t ids[2] = {-5, (int64_t)cmd << 40};
        int64_t shape[1] = {2};
        st = vidi_msg_out_tensor(&o, VIDI_WIRE_I64, 1, shape, ids, sizeof ids, NULL, NULL, &err);
        CHECK(st == VIDI_OK, "%s: reply tensor: %s", ep, err.msg);
        if (st == VIDI_OK) st = vidi_msg_send(p.router, m.identity, m.identity_len, VIDI_CMD_TOKEN, &o, &err);
        CHECK(st == VIDI_OK, "%s: reply send: %s", ep, err.msg);
        vidi_msg_out_free(&o);
        vidi_msg_close(&m);
        if (st != VIDI_OK) break;

        vidi_msg a;
        vidi_msg_init(&a);
        st = vidi_msg_recv(p.dealer, 0, 0, &lim, &a, &code, &err);
        CHECK(st == VIDI_OK && code == VIDI_WIRE_OK, "%s: DEALER recv: [%s] %s", ep, code_name(code), err.msg);
        if (st == VIDI_OK) {
            CHECK(a.identity_len == 0, "%s: a DEALER's message has identity_len %zu", ep, a.identity_len);
            CHECK(a.cmd == VIDI_CMD_TOKEN, "%s: answer cmd %d", ep, a.cmd);
            uint64_t id = 0;
            const msgpack_object *toks = NULL;
            size_t nt = 0;
            CHECK(vidi_mp_u64(a.header, "id", 1, 0, 0, 255, &id, &err) == VIDI_OK && id == (uint64_t)cmd,
                  "%s: answer id", ep);
            CHECK(vidi_mp_array(a.header, "tokens", 1, 16, &toks, &nt, &err) == VIDI_OK && nt == 3 &&
                      toks[2].via.u64 == 102,
                  "%s: answer tokens", ep);
            CHECK(a.n_tensors == 1 && a.n_frames == 1, "%s: answer tensors %d frames %d", ep, a.n_tensors,
                  a.n_frames);
            if (a.n_tensors == 1 && a.tensors[0].data && a.tensors[0].bytes == sizeof ids) {
                int64_t back[2];
                memcpy(back, a.tensors[0].data, sizeof back);
                CHECK(a.tensors[0].dtype == VIDI_WIRE_I64 && back[0] == -5 && back[1] == ((int64_t)cmd << 40),
                      "%s: answer tensor", ep);
            }
        }
        vidi_msg_close(&a);
    }
    pair_close(&p); /* zmq_ctx_term: every zero-copy frame is released by now */
    CHECK(atomic_load(&g_freed) == sent_zc, "%s: zero-copy free function called %d times for %d frames", bind_ep,
          atomic_load(&g_freed), sent_zc);
    CHECK(atomic_load(&g_bad_hint) == 0, "%s: free function got the wrong hint", bind_ep);
    CHECK(sent_zc == VIDI_CMD_RELEASE, "%s: only %d of %d commands went through", bind_ep, sent_zc,
          VIDI_CMD_RELEASE);
}

static void test_round_trip_every_command_inproc(void) { round_trip("inproc://test-msg-round-trip"); }

static void test_round_trip_every_command_ipc(void) {
    const char *dir = test_tmpdir(); /* made with mkdtemp */
    REQUIRE(dir, "no scratch folder");
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/vidi.sock", dir);
    REQUIRE(strlen(ep) - 6 < 100, "ipc path too long for a unix socket: %s", ep);
    round_trip(ep);
}

static void test_round_trip_every_command_tcp_ephemeral_port(void) { round_trip("tcp://127.0.0.1:*"); }

/* ------------------------------------------------------------ CUDA IPC */

static void test_cuda_ipc_descriptor_round_trips_without_a_frame(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-cuda-ipc", 1) != 0) {
        pair_close(&p);
        return;
    }
    vidi_err err;
    vidi_err_clear(&err);
    uint8_t handle[64];
    for (int i = 0; i < 64; i++) handle[i] = (uint8_t)(255 - 3 * i);
    int64_t shape[3] = {2, 8, 64};
    int32_t raw[5] = {1, -2, 3, -4, 5};
    int64_t rshape[1] = {5};

    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 2);
    pack_key(&o.pk, "stage");
    vidi_mp_pack_cstr(&o.pk, "prefill");
    pack_key(&o.pk, "tensors");
    msgpack_pack_array(&o.pk, 2);
    vidi_wire_ipc ipc = {.offset = 4096, .device = 1, .lease = 77, .owner = "ipc:///tmp/owner", .until_ms = 123456};
    memcpy(ipc.handle, handle, 64);
    vidi_status st = vidi_msg_out_tensor_ipc(&o, VIDI_WIRE_BF16, 3, shape, &ipc, &err);
    CHECK(st == VIDI_OK, "out_tensor_ipc: %s", err.msg);
    if (st == VIDI_OK) st = vidi_msg_out_tensor(&o, VIDI_WIRE_I32, 1, rshape, raw, sizeof raw, NULL, NULL, &err);
    CHECK(st == VIDI_OK, "out_tensor: %s", err.msg);
    CHECK(o.n_frames == 1, "a CUDA IPC descriptor added a raw frame (n_frames %d)", o.n_frames);
    if (st == VIDI_OK) st = vidi_msg_send(p.dealer, NULL, 0, VIDI_CMD_WORK, &o, &err);
    CHECK(st == VIDI_OK, "send: %s", err.msg);
    vidi_msg_out_free(&o);

    vidi_msg m;
    vidi_msg_init(&m);
    vidi_wire_code code = VIDI_WIRE_INTERNAL;
    if (st == VIDI_OK) {
        st = vidi_msg_recv(p.router, 1, 0, deflim(), &m, &code, &err);
        CHECK(st == VIDI_OK && code == VIDI_WIRE_OK, "recv: [%s] %s", code_name(code), err.msg);
    }
    if (st == VIDI_OK && m.n_tensors == 2 && m.tensors) {
        const vidi_wire_tensor *t = &m.tensors[0];
        CHECK(m.n_frames == 1, "n_frames %d", m.n_frames);
        CHECK(t->frame == -1 && t->data == NULL, "CUDA IPC tensor: frame %d data %p", t->frame, t->data);
        CHECK(t->dtype == VIDI_WIRE_BF16 && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 8 &&
                  t->shape[2] == 64 && t->bytes == 2 * 8 * 64 * 2,
              "CUDA IPC tensor dtype %d ndim %d bytes %llu", (int)t->dtype, t->ndim, (unsigned long long)t->bytes);
        CHECK(memcmp(t->ipc_handle, handle, 64) == 0, "handle differs");
        CHECK(t->ipc_offset == 4096 && t->ipc_device == 1, "offset %llu device %d",
              (unsigned long long)t->ipc_offset, t->ipc_device);
        CHECK(t->ipc_lease == 77 && t->ipc_until_ms == 123456 && t->ipc_owner_len == 16 &&
                  memcmp(t->ipc_owner, "ipc:///tmp/owner", 16) == 0,
              "lease %llu until %llu owner %.*s", (unsigned long long)t->ipc_lease,
              (unsigned long long)t->ipc_until_ms, (int)t->ipc_owner_len, t->ipc_owner ? t->ipc_owner : "");
        const vidi_wire_tensor *r = &m.tensors[1];
        CHECK(r->frame == 0 && r->dtype == VIDI_WIRE_I32 && r->bytes == sizeof raw && r->data &&
                  memcmp(r->data, raw, sizeof raw) == 0,
              "the raw tensor after it: frame %d bytes %llu", r->frame, (unsigned long long)r->bytes);

        /* The descriptor on the wire (PROTOCOL.md §5.4). */
        const msgpack_object *items = NULL, *ci = NULL;
        size_t n = 0;
        if (vidi_mp_array(m.header, "tensors", 1, 4, &items, &n, &err) == VIDI_OK && n == 2) {
            CHECK(vidi_mp_get(&items[0], "frame") == NULL, "a CUDA IPC descriptor has a frame key");
            CHECK(vidi_mp_map(&items[0], "cuda_ipc", 1, &ci, &err) == VIDI_OK && ci, "no cuda_ipc map: %s",
                  err.msg);
            const uint8_t *hb = NULL;
            size_t hn = 0;
            uint64_t bytes = 0;
            if (ci) {
                CHECK(vidi_mp_bin(ci, "handle", 1, 64, &hb, &hn, &err) == VIDI_OK, "cuda_ipc.handle: %s", err.msg);
                CHECK(vidi_mp_u64(ci, "bytes", 1, 0, 0, UINT64_MAX, &bytes, &err) == VIDI_OK && bytes == 2048,
                      "cuda_ipc.bytes %llu: %s", (unsigned long long)bytes, err.msg);
            }
        } else {
            CHECK(0, "tensors array: %s", err.msg);
        }
    } else if (st == VIDI_OK) {
        CHECK(0, "n_tensors %d", m.n_tensors);
    }
    vidi_msg_close(&m);
    pair_close(&p);
}

/* ------------------------------------------------------------ malformed */

static void test_wrong_version_is_bad_version(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-version", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        static const uint8_t hdr[1] = {0x80};
        static const uint8_t vidx[6] = {'V', 'I', 'D', 'X', 1, 0};
        static const uint8_t major2[6] = {'V', 'I', 'D', 'I', 2, 0};
        static const uint8_t major0[6] = {'V', 'I', 'D', 'I', 0, 0};
        static const uint8_t short5[5] = {'V', 'I', 'D', 'I', 1};
        static const uint8_t long7[7] = {'V', 'I', 'D', 'I', 1, 0, 0};
        const struct {
            const char *what;
            const uint8_t *v;
            size_t n;
        } cases[] = {
            {"magic VIDX", vidx, 6},       {"major 2", major2, 6},          {"major 0", major0, 6},
            {"5-byte version", short5, 5}, {"7-byte version", long7, 7},    {"empty version", hdr, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            raw_msg r;
            raw_std(&r, VIDI_CMD_REQUEST, hdr, 1);
            r.bufs[0] = cases[i].v;
            r.lens[0] = cases[i].n;
            expect_bad(&p, &lim, cases[i].what, &r, VIDI_WIRE_BAD_VERSION, VIDI_WIRE_BAD_VERSION);
        }
    }
    pair_close(&p);
}

static void test_higher_minor_version_is_accepted(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-minor", 0) == 0) {
        static const uint8_t minor9[6] = {'V', 'I', 'D', 'I', 1, 9};
        static const uint8_t hdr[] = {0x81, 0xA2, 'i', 'd', 0x05};
        raw_msg r;
        raw_std(&r, VIDI_CMD_CANCEL, hdr, sizeof hdr);
        r.bufs[0] = minor9;
        CHECK(send_raw(p.dealer, &r) == 0, "zmq_send");
        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code = VIDI_WIRE_INTERNAL;
        vidi_err err;
        vidi_err_clear(&err);
        vidi_status st = vidi_msg_recv(p.router, 1, 0, deflim(), &m, &code, &err);
        CHECK(st == VIDI_OK && code == VIDI_WIRE_OK, "minor 9 refused: [%s] %s", code_name(code), err.msg);
        CHECK(m.minor == 9 && m.cmd == VIDI_CMD_CANCEL, "minor %d cmd %d", m.minor, m.cmd);
        vidi_msg_close(&m);
    }
    pair_close(&p);
}

static void test_too_few_parts_is_bad_frame(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-parts", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        raw_msg r;
        raw_std(&r, VIDI_CMD_HEARTBEAT, NULL, 0);
        r.n = 2; /* version, command: no header */
        expect_bad(&p, &lim, "2 parts", &r, VIDI_WIRE_BAD_FRAME, VIDI_WIRE_BAD_FRAME);
        r.n = 1;
        expect_bad(&p, &lim, "1 part", &r, VIDI_WIRE_BAD_FRAME, VIDI_WIRE_BAD_FRAME);
    }
    pair_close(&p);
}

static void test_unknown_command_is_bad_command(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-command", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        static const uint8_t hdr[1] = {0x80};
        static const uint8_t two[2] = {VIDI_CMD_REQUEST, 0};
        raw_msg r;
        raw_std(&r, 0x7F, hdr, 1);
        expect_bad(&p, &lim, "command 0x7F", &r, VIDI_WIRE_BAD_COMMAND, VIDI_WIRE_BAD_COMMAND);
        raw_std(&r, 0x00, hdr, 1);
        expect_bad(&p, &lim, "command 0x00", &r, VIDI_WIRE_BAD_COMMAND, VIDI_WIRE_BAD_COMMAND);
        raw_std(&r, 0x0F, hdr, 1);
        expect_bad(&p, &lim, "command 0x0F", &r, VIDI_WIRE_BAD_COMMAND, VIDI_WIRE_BAD_COMMAND);
        raw_std(&r, VIDI_CMD_REQUEST, hdr, 1);
        r.bufs[1] = two;
        r.lens[1] = 2;
        expect_bad(&p, &lim, "2-byte command frame", &r, VIDI_WIRE_BAD_COMMAND, VIDI_WIRE_BAD_COMMAND);
        r.lens[1] = 0;
        expect_bad(&p, &lim, "empty command frame", &r, VIDI_WIRE_BAD_COMMAND, VIDI_WIRE_BAD_COMMAND);
    }
    pair_close(&p);
}

static void test_broken_header_is_bad_header(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-header", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        /* a map declaring 3 entries holding 1 */
        static const uint8_t trunc3[] = {0x83, 0xA2, 'i', 'd', 0x01};
        /* a str declaring 10 bytes holding 3 */
        static const uint8_t truncs[] = {0x81, 0xA1, 's', 0xAA, 'a', 'b', 'c'};
        /* a uint32 cut short */
        static const uint8_t truncu[] = {0x81, 0xA1, 'u', 0xCE, 0x01};
        static const uint8_t arr[] = {0x91, 0x01};
        static const uint8_t intv[] = {0x05};
        static const uint8_t strv[] = {0xA2, 'h', 'i'};
        static const uint8_t nil[] = {0xC0};
        static const uint8_t trailing[] = {0x81, 0xA2, 'i', 'd', 0x01, 0x00};
        static const uint8_t two_maps[] = {0x80, 0x80};
        static const uint8_t never_used[] = {0x81, 0xA1, 'x', 0xC1};
        expect_bad_header(&p, &lim, "map of 3 holding 1", trunc3, sizeof trunc3, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "truncated str", truncs, sizeof truncs, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "truncated uint32", truncu, sizeof truncu, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "header is an array", arr, sizeof arr, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "header is an int", intv, sizeof intv, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "header is a str", strv, sizeof strv, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "header is nil", nil, sizeof nil, VIDI_WIRE_BAD_HEADER, VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "empty header frame", nil, 0, VIDI_WIRE_BAD_HEADER, VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "trailing byte after the map", trailing, sizeof trailing, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "two maps", two_maps, sizeof two_maps, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
        expect_bad_header(&p, &lim, "byte 0xC1", never_used, sizeof never_used, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_BAD_HEADER);
    }
    pair_close(&p);
}

static void test_huge_declared_sizes_are_refused_without_allocating(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-huge", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        static const uint8_t str32[] = {0x81, 0xA1, 's', 0xDB, 0xFF, 0xFF, 0xFF, 0xF0, 'x'};
        static const uint8_t key32[] = {0x81, 0xDB, 0xFF, 0xFF, 0xFF, 0xF0, 'k'};
        static const uint8_t arr32[] = {0x81, 0xA1, 'a', 0xDD, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
        static const uint8_t map32[] = {0x81, 0xA1, 'm', 0xDF, 0x80, 0x00, 0x00, 0x00, 0xA1, 'k', 0x01};
        static const uint8_t top32[] = {0xDF, 0x80, 0x00, 0x00, 0x00, 0xA1, 'k', 0x01};
        static const uint8_t topmax[] = {0xDF, 0xFF, 0xFF, 0xFF, 0xFF};
        static const uint8_t bin32[] = {0x81, 0xA1, 'b', 0xC6, 0xFF, 0xFF, 0xFF, 0xFE, 0x00};
        static const uint8_t ext32[] = {0x81, 0xA1, 'e', 0xC9, 0xFF, 0xFF, 0xFF, 0xFE, 0x01, 0x00};
        static const uint8_t arr16[] = {0x81, 0xA1, 'a', 0xDC, 0xFF, 0xFF, 0x01, 0x02};
        const struct {
            const char *what;
            const uint8_t *h;
            size_t n;
        } cases[] = {
            {"str32 of 0xFFFFFFF0 bytes", str32, sizeof str32},
            {"key str32 of 0xFFFFFFF0 bytes", key32, sizeof key32},
            {"array32 of 0xFFFFFFFF items", arr32, sizeof arr32},
            {"nested map32 of 2^31 entries", map32, sizeof map32},
            {"top map32 of 2^31 entries", top32, sizeof top32},
            {"top map32 of 2^32-1 entries", topmax, sizeof topmax},
            {"bin32 of 0xFFFFFFFE bytes", bin32, sizeof bin32},
            {"ext32 of 0xFFFFFFFE bytes", ext32, sizeof ext32},
            {"array16 of 65535 items holding 2", arr16, sizeof arr16},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            expect_bad_header(&p, &lim, cases[i].what, cases[i].h, cases[i].n, VIDI_WIRE_BAD_HEADER,
                              VIDI_WIRE_TOO_LARGE);
    }
    pair_close(&p);
}

static void test_nesting_deeper_than_max_depth_is_refused(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-depth", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        uint8_t h[3 + 100 + 1];
        size_t n = 0;
        h[n++] = 0x81;
        h[n++] = 0xA1;
        h[n++] = 'a';
        for (int i = 0; i < 100; i++) h[n++] = 0x91; /* [[[[...]]]] */
        h[n++] = 0x00;
        expect_bad_header(&p, &lim, "100 nested arrays", h, n, VIDI_WIRE_BAD_HEADER, VIDI_WIRE_TOO_LARGE);

        uint8_t mh[3 * 100 + 1];
        n = 0;
        for (int i = 0; i < 100; i++) { /* {a: {a: {a: ...}}} */
            mh[n++] = 0x81;
            mh[n++] = 0xA1;
            mh[n++] = 'a';
        }
        mh[n++] = 0x00;
        expect_bad_header(&p, &lim, "100 nested maps", mh, n, VIDI_WIRE_BAD_HEADER, VIDI_WIRE_TOO_LARGE);

        /* deeper than a custom limit of 4, though well under the default */
        vidi_msg_limits l4 = lim;
        l4.max_depth = 4;
        uint8_t h8[3 + 8 + 1];
        n = 0;
        h8[n++] = 0x81;
        h8[n++] = 0xA1;
        h8[n++] = 'a';
        for (int i = 0; i < 8; i++) h8[n++] = 0x91;
        h8[n++] = 0x00;
        expect_bad_header(&p, &l4, "8 nested arrays, max_depth 4", h8, n, VIDI_WIRE_BAD_HEADER,
                          VIDI_WIRE_TOO_LARGE);
    }
    pair_close(&p);
}

static void test_raw_frame_no_descriptor_names_is_bad_frame(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-unnamed", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        static const uint8_t empty[] = {0x80};
        static const uint8_t two[2] = {1, 2};
        raw_msg r;
        raw_std(&r, VIDI_CMD_WORK, empty, 1);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "a frame with no tensors field", &r, VIDI_WIRE_BAD_FRAME, VIDI_WIRE_BAD_FRAME);

        hdr_buf h;
        hdr_init(&h);
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 0);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "a frame with tensors []", &r, VIDI_WIRE_BAD_FRAME, VIDI_WIRE_BAD_FRAME);
        hdr_free(&h);

        hdr_init(&h);
        int64_t s2[1] = {2};
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 1);
        pack_desc(&h.pk, "u8", 1, s2, 1, 0, NULL);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "frame 1 of 2 unnamed", &r, VIDI_WIRE_BAD_FRAME, VIDI_WIRE_BAD_FRAME);
        hdr_free(&h);
    }
    pair_close(&p);
}

/* {tensors: [one descriptor]} + frames, refused with want (or alt). */
typedef struct desc_case {
    const char *what;
    const char *dtype;
    int ndim;
    int64_t shape[6];
    int has_frame;
    int64_t frame;
    const ipc_spec *ipc;
    size_t frame_bytes; /* one raw frame of this size; (size_t)-1: none */
} desc_case;

static void expect_bad_desc(sock_pair *p, const desc_case *c, vidi_wire_code want, vidi_wire_code alt) {
    static uint8_t payload[256];
    vidi_msg_limits lim = vidi_msg_limits_default();
    hdr_buf h;
    hdr_init(&h);
    msgpack_pack_map(&h.pk, 1);
    pack_key(&h.pk, "tensors");
    msgpack_pack_array(&h.pk, 1);
    pack_desc(&h.pk, c->dtype, c->ndim, c->shape, c->has_frame, c->frame, c->ipc);
    raw_msg r;
    raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
    if (c->frame_bytes != (size_t)-1) raw_add(&r, payload, c->frame_bytes);
    expect_bad(p, &lim, c->what, &r, want, alt);
    hdr_free(&h);
}

static void test_frame_size_not_matching_shape_is_bad_tensor(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-size", 0) == 0) {
        const desc_case cases[] = {
            {"u8 [10] in 8 bytes", "u8", 1, {10}, 1, 0, NULL, 8},
            {"u8 [10] in 11 bytes", "u8", 1, {10}, 1, 0, NULL, 11},
            {"f32 [3] in 11 bytes", "f32", 1, {3}, 1, 0, NULL, 11},
            {"f32 [3] in 13 bytes", "f32", 1, {3}, 1, 0, NULL, 13},
            {"bf16 [2,3] in 6 bytes", "bf16", 2, {2, 3}, 1, 0, NULL, 6},
            {"i64 [1] in 0 bytes", "i64", 1, {1}, 1, 0, NULL, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            expect_bad_desc(&p, &cases[i], VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_TENSOR);
    }
    pair_close(&p);
}

static void test_malformed_descriptors_are_bad_tensor(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-desc", 0) == 0) {
        static const ipc_spec ipc_ok = {64, 0, 0, 2, "ipc:///o"};
        static const ipc_spec ipc_h63 = {64 - 1, 0, 0, 2, "ipc:///o"};
        static const ipc_spec ipc_bytes = {64, 0, 0, 3, "ipc:///o"};
        static const ipc_spec ipc_no_owner = {64, 0, 0, 2, NULL};
        static const ipc_spec ipc_wraps = {64, UINT64_MAX - 1, 0, 2, "ipc:///o"};
        const desc_case cases[] = {
            {"unknown dtype f64", "f64", 1, {2}, 1, 0, NULL, 16},
            {"unknown dtype empty", "", 1, {2}, 1, 0, NULL, 2},
            {"no dtype", NULL, 1, {2}, 1, 0, NULL, 2},
            {"no shape", "u8", -1, {0}, 1, 0, NULL, 2},
            {"zero dimension", "u8", 2, {2, 0}, 1, 0, NULL, 0},
            {"negative dimension", "u8", 1, {-2}, 1, 0, NULL, 2},
            {"ndim 0", "u8", 0, {0}, 1, 0, NULL, 1},
            {"ndim 5", "u8", 5, {1, 1, 1, 1, 1}, 1, 0, NULL, 1},
            {"frame index out of range", "u8", 1, {2}, 1, 3, NULL, (size_t)-1},
            {"negative frame index", "u8", 1, {2}, 1, -1, NULL, (size_t)-1},
            {"both frame and cuda_ipc", "u8", 1, {2}, 1, 0, &ipc_ok, 2},
            {"neither frame nor cuda_ipc", "u8", 1, {2}, 0, 0, NULL, (size_t)-1},
            {"cuda_ipc handle of 63 bytes", "u8", 1, {2}, 0, 0, &ipc_h63, (size_t)-1},
            {"cuda_ipc bytes not prod(shape)*size", "u8", 1, {2}, 0, 0, &ipc_bytes, (size_t)-1},
            {"cuda_ipc without an owner", "u8", 1, {2}, 0, 0, &ipc_no_owner, (size_t)-1},
            {"cuda_ipc offset + bytes wraps", "u8", 1, {2}, 0, 0, &ipc_wraps, (size_t)-1},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            expect_bad_desc(&p, &cases[i], VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_TENSOR);

        /* shapes whose product overflows 64 bits: a naive product of
         * 2^32 * 2^32 is 0 and would "match" an empty frame */
        const desc_case over[] = {
            {"shape 2^32 x 2^32 in 0 bytes", "u8", 2, {4294967296ll, 4294967296ll}, 1, 0, NULL, 0},
            {"shape 2^62 x 4 f32 in 0 bytes", "f32", 2, {4611686018427387904ll, 4}, 1, 0, NULL, 0},
            {"shape 2^63-1 in 0 bytes", "u8", 1, {INT64_MAX}, 1, 0, NULL, 0},
        };
        for (size_t i = 0; i < sizeof over / sizeof over[0]; i++)
            expect_bad_desc(&p, &over[i], VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_TOO_LARGE);

        /* more, hand-made */
        vidi_msg_limits lim = vidi_msg_limits_default();
        static const uint8_t two[2] = {7, 7};
        int64_t s2[1] = {2};
        raw_msg r;
        hdr_buf h;

        hdr_init(&h); /* two descriptors naming frame 0; frame 0 is the only one */
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 2);
        pack_desc(&h.pk, "u8", 1, s2, 1, 0, NULL);
        pack_desc(&h.pk, "u8", 1, s2, 1, 0, NULL);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "two descriptors name frame 0", &r, VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_TENSOR);
        hdr_free(&h);

        hdr_init(&h); /* frame 0 named, then frame 1 of 1 */
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 2);
        pack_desc(&h.pk, "u8", 1, s2, 1, 0, NULL);
        pack_desc(&h.pk, "u8", 1, s2, 1, 1, NULL);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "second descriptor names frame 1 of 1", &r, VIDI_WIRE_BAD_TENSOR,
                   VIDI_WIRE_BAD_TENSOR);
        hdr_free(&h);

        hdr_init(&h); /* a descriptor that is not a map */
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 1);
        msgpack_pack_uint64(&h.pk, 0);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "descriptor is an int", &r, VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_TENSOR);
        hdr_free(&h);

        hdr_init(&h); /* shape not an array, dtype not a string, dims floats */
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 1);
        msgpack_pack_map(&h.pk, 3);
        pack_key(&h.pk, "dtype");
        vidi_mp_pack_cstr(&h.pk, "u8");
        pack_key(&h.pk, "shape");
        msgpack_pack_uint64(&h.pk, 2);
        pack_key(&h.pk, "frame");
        msgpack_pack_uint64(&h.pk, 0);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "shape is an int", &r, VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_TENSOR);
        hdr_free(&h);

        hdr_init(&h);
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 1);
        msgpack_pack_map(&h.pk, 3);
        pack_key(&h.pk, "dtype");
        msgpack_pack_uint64(&h.pk, 0);
        pack_key(&h.pk, "shape");
        msgpack_pack_array(&h.pk, 1);
        msgpack_pack_uint64(&h.pk, 2);
        pack_key(&h.pk, "frame");
        msgpack_pack_uint64(&h.pk, 0);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "dtype is an int", &r, VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_TENSOR);
        hdr_free(&h);

        hdr_init(&h);
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_array(&h.pk, 1);
        msgpack_pack_map(&h.pk, 3);
        pack_key(&h.pk, "dtype");
        vidi_mp_pack_cstr(&h.pk, "u8");
        pack_key(&h.pk, "shape");
        msgpack_pack_array(&h.pk, 1);
        msgpack_pack_double(&h.pk, 2.0);
        pack_key(&h.pk, "frame");
        msgpack_pack_uint64(&h.pk, 0);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "dimension is a float", &r, VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_TENSOR);
        hdr_free(&h);

        hdr_init(&h); /* tensors itself not an array */
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "tensors");
        msgpack_pack_uint64(&h.pk, 1);
        raw_std(&r, VIDI_CMD_WORK, h.sb.data, h.sb.size);
        raw_add(&r, two, 2);
        expect_bad(&p, &lim, "tensors is an int", &r, VIDI_WIRE_BAD_TENSOR, VIDI_WIRE_BAD_FIELD);
        hdr_free(&h);
    }
    pair_close(&p);
}

/* {tensors: n descriptors u8 [each]} + n frames of each bytes. */
static void raw_tensors(raw_msg *r, hdr_buf *h, int n, size_t each) {
    static uint8_t payload[4096];
    int64_t s[1] = {(int64_t)each};
    msgpack_pack_map(&h->pk, 1);
    pack_key(&h->pk, "tensors");
    msgpack_pack_array(&h->pk, (size_t)n);
    for (int i = 0; i < n; i++) pack_desc(&h->pk, "u8", 1, s, 1, i, NULL);
    raw_std(r, VIDI_CMD_WORK, h->sb.data, h->sb.size);
    for (int i = 0; i < n; i++) raw_add(r, payload, each);
}

static void test_more_frames_than_max_frames_is_too_large(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-max-frames", 0) == 0) {
        vidi_msg_limits lim = vidi_msg_limits_default();
        lim.max_frames = 2;
        raw_msg r;
        hdr_buf h;
        hdr_init(&h);
        raw_tensors(&r, &h, 2, 4); /* at the limit: fine */
        CHECK(send_raw(p.dealer, &r) == 0, "zmq_send");
        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code = VIDI_WIRE_INTERNAL;
        vidi_err err;
        vidi_err_clear(&err);
        vidi_status st = vidi_msg_recv(p.router, 1, 0, &lim, &m, &code, &err);
        CHECK(st == VIDI_OK && m.n_frames == 2, "2 frames with max_frames 2 refused: [%s] %s", code_name(code),
              err.msg);
        vidi_msg_close(&m);
        hdr_free(&h);

        hdr_init(&h);
        raw_tensors(&r, &h, 3, 4);
        expect_bad(&p, &lim, "3 frames, max_frames 2", &r, VIDI_WIRE_TOO_LARGE, VIDI_WIRE_TOO_LARGE);
        hdr_free(&h);
        hdr_init(&h);
        raw_tensors(&r, &h, 20, 4); /* the surplus is dropped as it arrives */
        expect_bad(&p, &lim, "20 frames, max_frames 2", &r, VIDI_WIRE_TOO_LARGE, VIDI_WIRE_TOO_LARGE);
        hdr_free(&h);
    }
    pair_close(&p);
}

static void test_size_limits_are_too_large(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-sizes", 0) == 0) {
        raw_msg r;
        hdr_buf h;

        vidi_msg_limits lim = vidi_msg_limits_default();
        lim.max_frame_bytes = 64;
        hdr_init(&h);
        raw_tensors(&r, &h, 1, 100);
        expect_bad(&p, &lim, "a 100-byte frame, max_frame_bytes 64", &r, VIDI_WIRE_TOO_LARGE, VIDI_WIRE_TOO_LARGE);
        hdr_free(&h);

        lim = vidi_msg_limits_default();
        lim.max_header_bytes = 64;
        char text[101];
        memset(text, 'x', 100);
        text[100] = '\0';
        hdr_init(&h);
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "prompt");
        vidi_mp_pack_cstr(&h.pk, text);
        expect_bad_header(&p, &lim, "a 106-byte header, max_header_bytes 64", h.sb.data, h.sb.size,
                          VIDI_WIRE_TOO_LARGE, VIDI_WIRE_TOO_LARGE);
        hdr_free(&h);

        lim = vidi_msg_limits_default();
        lim.max_total_bytes = 256;
        hdr_init(&h);
        raw_tensors(&r, &h, 3, 100);
        expect_bad(&p, &lim, "3 x 100-byte frames, max_total_bytes 256", &r, VIDI_WIRE_TOO_LARGE,
                   VIDI_WIRE_TOO_LARGE);
        hdr_free(&h);

        lim = vidi_msg_limits_default();
        lim.max_string = 16;
        hdr_init(&h);
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "prompt");
        vidi_mp_pack_cstr(&h.pk, "a string of more than sixteen bytes");
        expect_bad_header(&p, &lim, "a 35-byte string, max_string 16", h.sb.data, h.sb.size, VIDI_WIRE_TOO_LARGE,
                          VIDI_WIRE_BAD_HEADER);
        hdr_free(&h);

        lim = vidi_msg_limits_default();
        lim.max_array = 4;
        hdr_init(&h);
        msgpack_pack_map(&h.pk, 1);
        pack_key(&h.pk, "stop_ids");
        msgpack_pack_array(&h.pk, 5);
        for (int i = 0; i < 5; i++) msgpack_pack_uint64(&h.pk, (uint64_t)i);
        expect_bad_header(&p, &lim, "an array of 5, max_array 4", h.sb.data, h.sb.size, VIDI_WIRE_TOO_LARGE,
                          VIDI_WIRE_BAD_HEADER);
        hdr_free(&h);
    }
    pair_close(&p);
}

/* ------------------------------------------------------------ getters */

static void test_getters_types_ranges_and_defaults(void) {
    hdr_buf h;
    hdr_init(&h);
    msgpack_packer *pk = &h.pk;
    uint8_t key8[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    msgpack_pack_map(pk, 11);
    pack_key(pk, "max_tokens");
    vidi_mp_pack_cstr(pk, "many");
    pack_key(pk, "big");
    msgpack_pack_uint64(pk, 500);
    pack_key(pk, "neg");
    msgpack_pack_int64(pk, -5);
    pack_key(pk, "temp");
    msgpack_pack_double(pk, 0.75);
    pack_key(pk, "flag");
    msgpack_pack_true(pk);
    pack_key(pk, "name");
    vidi_mp_pack_cstr(pk, "abcdef");
    pack_key(pk, "key");
    msgpack_pack_bin(pk, sizeof key8);
    msgpack_pack_bin_body(pk, key8, sizeof key8);
    pack_key(pk, "list");
    msgpack_pack_array(pk, 5);
    for (int i = 0; i < 5; i++) msgpack_pack_uint64(pk, (uint64_t)i);
    pack_key(pk, "sub");
    msgpack_pack_map(pk, 1);
    pack_key(pk, "a");
    msgpack_pack_uint64(pk, 1);
    pack_key(pk, "huge");
    msgpack_pack_uint64(pk, UINT64_MAX);
    pack_key(pk, "count");
    msgpack_pack_uint64(pk, 3);

    vidi_msg m;
    vidi_msg_init(&m);
    vidi_wire_code code = VIDI_WIRE_INTERNAL;
    vidi_err err;
    vidi_err_clear(&err);
    vidi_status st = parse_header(&m, h.sb.data, h.sb.size, &code, &err);
    hdr_free(&h);
    if (st != VIDI_OK) {
        CHECK(0, "parse: [%s] %s", code_name(code), err.msg);
        vidi_msg_close(&m);
        return;
    }
    const msgpack_object *map = m.header;

    /* u64 */
    uint64_t u = 99;
    st = vidi_mp_u64(map, "max_tokens", 1, 0, 0, UINT64_MAX, &u, &err);
    CHECK(st == VIDI_ERR_FORMAT && err.status == VIDI_ERR_FORMAT, "u64 of a string: %s", vidi_status_name(st));
    CHECK(contains(err.msg, "max_tokens"), "message does not name the key: %s", err.msg);
    vidi_err_clear(&err);
    st = vidi_mp_u64(map, "big", 1, 0, 0, 100, &u, &err);
    CHECK(st == VIDI_ERR_RANGE && contains(err.msg, "big"), "u64 500 in [0,100]: %s %s", vidi_status_name(st),
          err.msg);
    st = vidi_mp_u64(map, "big", 1, 0, 1000, 2000, &u, &err);
    CHECK(st == VIDI_ERR_RANGE, "u64 500 in [1000,2000]: %s", vidi_status_name(st));
    vidi_err_clear(&err);
    st = vidi_mp_u64(map, "neg", 1, 0, 0, UINT64_MAX, &u, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "neg"), "u64 of -5: %s %s", vidi_status_name(st), err.msg);
    vidi_err_clear(&err);
    st = vidi_mp_u64(map, "temp", 1, 0, 0, UINT64_MAX, &u, &err);
    CHECK(st == VIDI_ERR_FORMAT, "u64 of 0.75: %s", vidi_status_name(st));
    vidi_err_clear(&err);
    st = vidi_mp_u64(map, "missing_key", 1, 0, 0, UINT64_MAX, &u, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "missing_key"), "u64 required and absent: %s %s",
          vidi_status_name(st), err.msg);
    st = vidi_mp_u64(map, "missing_key", 0, 128, 0, UINT64_MAX, &u, &err);
    CHECK(st == VIDI_OK && u == 128, "u64 optional and absent: %s, %llu", vidi_status_name(st),
          (unsigned long long)u);
    st = vidi_mp_u64(map, "big", 1, 0, 500, 500, &u, &err);
    CHECK(st == VIDI_OK && u == 500, "u64 500 in [500,500]: %s", err.msg);
    st = vidi_mp_u64(map, "huge", 1, 0, 0, UINT64_MAX, &u, &err);
    CHECK(st == VIDI_OK && u == UINT64_MAX, "u64 max: %s", err.msg);

    /* i64 */
    int64_t i = 0;
    st = vidi_mp_i64(map, "neg", 1, 0, -10, 10, &i, &err);
    CHECK(st == VIDI_OK && i == -5, "i64 -5: %s", err.msg);
    st = vidi_mp_i64(map, "big", 1, 0, -1000, 1000, &i, &err);
    CHECK(st == VIDI_OK && i == 500, "i64 of a positive int: %s", err.msg);
    st = vidi_mp_i64(map, "neg", 1, 0, -1, 10, &i, &err);
    CHECK(st == VIDI_ERR_RANGE && contains(err.msg, "neg"), "i64 -5 in [-1,10]: %s", vidi_status_name(st));
    st = vidi_mp_i64(map, "huge", 1, 0, INT64_MIN, INT64_MAX, &i, &err);
    CHECK(st != VIDI_OK, "i64 of 2^64-1 accepted as %lld", (long long)i);
    st = vidi_mp_i64(map, "name", 1, 0, INT64_MIN, INT64_MAX, &i, &err);
    CHECK(st == VIDI_ERR_FORMAT && contains(err.msg, "name"), "i64 of a string: %s", vidi_status_name(st));
    st = vidi_mp_i64(map, "missing_key", 0, -1, -10, 10, &i, &err);
    CHECK(st == VIDI_OK && i == -1, "i64 optional and absent");

    /* f64: any number */
    double d = 0;
    st = vidi_mp_f64(map, "temp", 1, 0, 0, 2, &d, &err);
    CHECK(st == VIDI_OK && d == 0.75, "f64 0.75: %s", err.msg);
    st = vidi_mp_f64(map, "count", 1, 0, 0, 10, &d, &err);
    CHECK(st == VIDI_OK && d == 3.0, "f64 of the integer 3: %s", err.msg);
    st = vidi_mp_f64(map, "neg", 1, 0, -10, 10, &d, &err);
    CHECK(st == VIDI_OK && d == -5.0, "f64 of the integer -5: %s", err.msg);
    st = vidi_mp_f64(map, "temp", 1, 0, 0, 0.5, &d, &err);
    CHECK(st == VIDI_ERR_RANGE && contains(err.msg, "temp"), "f64 0.75 in [0,0.5]: %s", vidi_status_name(st));
    st = vidi_mp_f64(map, "name", 1, 0, 0, 1, &d, &err);
    CHECK(st == VIDI_ERR_FORMAT && contains(err.msg, "name"), "f64 of a string: %s", vidi_status_name(st));
    st = vidi_mp_f64(map, "missing_key", 0, 1.5, 0, 2, &d, &err);
    CHECK(st == VIDI_OK && d == 1.5, "f64 optional and absent");

    /* bool */
    int b = 0;
    st = vidi_mp_bool(map, "flag", 1, 0, &b, &err);
    CHECK(st == VIDI_OK && b == 1, "bool: %s", err.msg);
    st = vidi_mp_bool(map, "count", 1, 0, &b, &err);
    CHECK(st == VIDI_ERR_FORMAT && contains(err.msg, "count"), "bool of an int: %s %s", vidi_status_name(st), err.msg);
    st = vidi_mp_bool(map, "missing_key", 0, 1, &b, &err);
    CHECK(st == VIDI_OK && b == 1, "bool optional and absent");
    vidi_err_clear(&err);
    st = vidi_mp_bool(map, "missing_key", 1, 1, &b, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "missing_key"), "bool required and absent");

    /* str */
    const char *s = NULL;
    size_t n = 0;
    st = vidi_mp_str(map, "name", 1, 16, &s, &n, &err);
    CHECK(st == VIDI_OK && n == 6 && s && memcmp(s, "abcdef", 6) == 0, "str: %s", err.msg);
    st = vidi_mp_str(map, "name", 1, 3, &s, &n, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "name"), "str of 6 with max_len 3: %s", vidi_status_name(st));
    st = vidi_mp_str(map, "key", 1, 16, &s, &n, &err);
    CHECK(st == VIDI_ERR_FORMAT && contains(err.msg, "key"), "str of a bin: %s", vidi_status_name(st));
    st = vidi_mp_str(map, "missing_key", 0, 16, &s, &n, &err);
    CHECK(st == VIDI_OK, "str optional and absent: %s", err.msg);
    vidi_err_clear(&err);
    st = vidi_mp_str(map, "missing_key", 1, 16, &s, &n, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "missing_key"), "str required and absent");

    /* bin */
    const uint8_t *bin = NULL;
    st = vidi_mp_bin(map, "key", 1, 8, &bin, &n, &err);
    CHECK(st == VIDI_OK && n == 8 && bin && memcmp(bin, key8, 8) == 0, "bin(8): %s", err.msg);
    vidi_err_clear(&err);
    st = vidi_mp_bin(map, "key", 1, 16, &bin, &n, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "key"), "bin(8) where bin(16) expected: %s %s", vidi_status_name(st),
          err.msg);
    st = vidi_mp_bin(map, "name", 1, 6, &bin, &n, &err);
    CHECK(st == VIDI_ERR_FORMAT, "bin of a str: %s", vidi_status_name(st));

    /* array */
    const msgpack_object *items = NULL;
    st = vidi_mp_array(map, "list", 1, 10, &items, &n, &err);
    CHECK(st == VIDI_OK && n == 5 && items && items[4].via.u64 == 4, "array: %s", err.msg);
    vidi_err_clear(&err);
    st = vidi_mp_array(map, "list", 1, 4, &items, &n, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "list"), "array of 5 with max_items 4: %s", vidi_status_name(st));
    st = vidi_mp_array(map, "sub", 1, 10, &items, &n, &err);
    CHECK(st == VIDI_ERR_FORMAT, "array of a map: %s", vidi_status_name(st));
    items = (const msgpack_object *)map;
    n = 7;
    st = vidi_mp_array(map, "missing_key", 0, 10, &items, &n, &err);
    CHECK(st == VIDI_OK && items == NULL && n == 0, "array optional and absent: NULL and 0");

    /* map */
    const msgpack_object *sub = NULL;
    st = vidi_mp_map(map, "sub", 1, &sub, &err);
    CHECK(st == VIDI_OK && sub && sub->type == MSGPACK_OBJECT_MAP, "map: %s", err.msg);
    st = vidi_mp_map(map, "list", 1, &sub, &err);
    CHECK(st == VIDI_ERR_FORMAT && contains(err.msg, "list"), "map of an array: %s", vidi_status_name(st));
    sub = map;
    st = vidi_mp_map(map, "missing_key", 0, &sub, &err);
    CHECK(st == VIDI_OK && sub == NULL, "map optional and absent: NULL");
    vidi_err_clear(&err);
    st = vidi_mp_map(map, "missing_key", 1, &sub, &err);
    CHECK(st != VIDI_OK && contains(err.msg, "missing_key"), "map required and absent");

    /* lookup */
    CHECK(vidi_mp_get(map, "name") != NULL, "get name");
    CHECK(vidi_mp_get(map, "nam") == NULL, "get of a prefix of a key");
    CHECK(vidi_mp_get(map, "namex") == NULL, "get of a key plus a letter");
    CHECK(vidi_mp_get(map, "") == NULL, "get of the empty key");
    CHECK(vidi_mp_str_eq(vidi_mp_get(map, "name"), "abcdef"), "str_eq equal");
    CHECK(!vidi_mp_str_eq(vidi_mp_get(map, "name"), "abc"), "str_eq of a prefix");
    CHECK(!vidi_mp_str_eq(vidi_mp_get(map, "name"), "abcdefg"), "str_eq of a longer string");
    CHECK(!vidi_mp_str_eq(vidi_mp_get(map, "count"), "3"), "str_eq of an int");
    const char *tn = vidi_mp_type_name(vidi_mp_get(map, "name"));
    CHECK(tn && tn[0], "type name of a str");
    vidi_msg_close(&m);
}

/* ------------------------------------------------------------ sending */

static void test_router_mandatory_send_to_unknown_peer_is_notfound(void) {
    atomic_store(&g_freed, 0);
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-mandatory", 1) == 0) {
        vidi_err err;
        vidi_err_clear(&err);
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 1);
        pack_key(&o.pk, "tensors");
        msgpack_pack_array(&o.pk, 1);
        uint8_t *zc = malloc(ZC_BYTES);
        REQUIRE(zc, "malloc");
        memset(zc, 1, ZC_BYTES);
        int64_t s[1] = {ZC_BYTES};
        vidi_status st = vidi_msg_out_tensor(&o, VIDI_WIRE_U8, 1, s, zc, ZC_BYTES, count_free, &g_hint_tag, &err);
        CHECK(st == VIDI_OK, "out_tensor: %s", err.msg);
        st = vidi_msg_send(p.router, "nobody", 6, VIDI_CMD_WORK, &o, &err);
        CHECK(st == VIDI_ERR_NOTFOUND, "send to an unknown identity: %s (%s)", vidi_status_name(st), err.msg);
        CHECK(err.msg[0] != '\0', "no message");
        vidi_msg_out_free(&o); /* the frame not sent is freed once, here or by ZeroMQ */

        vidi_err_clear(&err);
        st = vidi_msg_send_error(p.router, "nobody", 6, VIDI_WIRE_WORKER_LOST, 3, "gone", &err);
        CHECK(st == VIDI_ERR_NOTFOUND, "send_error to an unknown identity: %s", vidi_status_name(st));

        /* the router still reaches a known peer */
        expect_good_after(&p, deflim(), 1, "after NOTFOUND");
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 0);
        st = vidi_msg_send(p.router, DEALER_ID, strlen(DEALER_ID), VIDI_CMD_DRAIN, &o, &err);
        CHECK(st == VIDI_OK, "send to the known peer: %s", err.msg);
        vidi_msg_out_free(&o);
        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code = VIDI_WIRE_INTERNAL;
        st = vidi_msg_recv(p.dealer, 0, 0, deflim(), &m, &code, &err);
        CHECK(st == VIDI_OK && m.cmd == VIDI_CMD_DRAIN, "DEALER recv: %s", err.msg);
        vidi_msg_close(&m);
    }
    pair_close(&p);
    CHECK(atomic_load(&g_freed) == 1, "the unsent zero-copy frame was freed %d times", atomic_load(&g_freed));
}

/* ROUTER -> DEALER ERROR with an id, DEALER -> ROUTER ERROR without. */
static void test_send_error_carries_code_message_and_id(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-error", 1) == 0) {
        vidi_err err;
        vidi_err_clear(&err);
        expect_good_after(&p, deflim(), 5, "before ERROR"); /* the router learns the identity */
        const char *text = "field 'max_tokens': expected a non-negative integer, got a string";
        vidi_status st =
            vidi_msg_send_error(p.router, DEALER_ID, strlen(DEALER_ID), VIDI_WIRE_BAD_FIELD, 42, text, &err);
        CHECK(st == VIDI_OK, "send_error: %s", err.msg);
        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code = VIDI_WIRE_INTERNAL;
        if (st == VIDI_OK) {
            st = vidi_msg_recv(p.dealer, 0, 0, deflim(), &m, &code, &err);
            CHECK(st == VIDI_OK, "recv: %s", err.msg);
        }
        if (st == VIDI_OK) {
            const char *s = NULL;
            size_t n = 0;
            uint64_t id = 0;
            CHECK(m.cmd == VIDI_CMD_ERROR, "cmd %d", m.cmd);
            CHECK(vidi_mp_str(m.header, "code", 1, 64, &s, &n, &err) == VIDI_OK && n == strlen("bad_field") &&
                      memcmp(s, vidi_wire_code_name(VIDI_WIRE_BAD_FIELD), n) == 0,
                  "code: %s", err.msg);
            CHECK(vidi_mp_str(m.header, "message", 1, 4096, &s, &n, &err) == VIDI_OK && n == strlen(text) &&
                      memcmp(s, text, n) == 0,
                  "message: %s", err.msg);
            CHECK(vidi_mp_u64(m.header, "id", 1, 0, 0, UINT64_MAX, &id, &err) == VIDI_OK && id == 42, "id: %s",
                  err.msg);
            CHECK(m.n_tensors == 0 && m.n_frames == 0, "an ERROR with tensors");
        }
        vidi_msg_close(&m);

        st = vidi_msg_send_error(p.dealer, NULL, 0, VIDI_WIRE_INTERNAL, -1, "oops", &err);
        CHECK(st == VIDI_OK, "DEALER send_error: %s", err.msg);
        vidi_msg_init(&m);
        if (st == VIDI_OK) {
            st = vidi_msg_recv(p.router, 1, 0, deflim(), &m, &code, &err);
            CHECK(st == VIDI_OK, "ROUTER recv: %s", err.msg);
        }
        if (st == VIDI_OK) {
            CHECK(m.cmd == VIDI_CMD_ERROR, "cmd %d", m.cmd);
            CHECK(vidi_mp_str_eq(vidi_mp_get(m.header, "code"), "internal"), "code internal");
            CHECK(vidi_mp_str_eq(vidi_mp_get(m.header, "message"), "oops"), "message oops");
            CHECK(vidi_mp_get(m.header, "id") == NULL, "id present though id_or_neg was -1");
        }
        vidi_msg_close(&m);
    }
    pair_close(&p);
}

static void test_out_tensor_refuses_bad_arguments(void) {
    vidi_err err;
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 1);
    pack_key(&o.pk, "tensors");
    msgpack_pack_array(&o.pk, 1);
    float f[3] = {1, 2, 3};
    int64_t s3[1] = {3};
    int64_t s5[5] = {1, 1, 1, 1, 3};
    int64_t s0[1] = {0};
    vidi_err_clear(&err);
    CHECK(vidi_msg_out_tensor(&o, VIDI_WIRE_F32, 1, s3, f, 11, NULL, NULL, &err) != VIDI_OK && err.msg[0],
          "bytes 11 for f32 [3] accepted");
    vidi_err_clear(&err);
    CHECK(vidi_msg_out_tensor(&o, VIDI_WIRE_F32, 0, s3, f, 4, NULL, NULL, &err) != VIDI_OK, "ndim 0 accepted");
    CHECK(vidi_msg_out_tensor(&o, VIDI_WIRE_F32, 5, s5, f, 12, NULL, NULL, &err) != VIDI_OK, "ndim 5 accepted");
    CHECK(vidi_msg_out_tensor(&o, VIDI_WIRE_F32, 1, s0, f, 0, NULL, NULL, &err) != VIDI_OK, "dim 0 accepted");
    CHECK(vidi_msg_out_tensor(&o, VIDI_WIRE_DTYPE_COUNT, 1, s3, f, 12, NULL, NULL, &err) != VIDI_OK,
          "dtype COUNT accepted");
    CHECK(o.n_frames == 0, "a refused tensor added a frame");
    vidi_msg_out_free(&o);

    /* freeing a message never sent calls each zero-copy free function once */
    atomic_store(&g_freed, 0);
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 1);
    pack_key(&o.pk, "tensors");
    msgpack_pack_array(&o.pk, 2);
    for (int k = 0; k < 2; k++) {
        uint8_t *zc = malloc(64);
        REQUIRE(zc, "malloc");
        int64_t s[1] = {64};
        vidi_status st = vidi_msg_out_tensor(&o, VIDI_WIRE_U8, 1, s, zc, 64, count_free, &g_hint_tag, &err);
        CHECK(st == VIDI_OK, "out_tensor: %s", err.msg);
    }
    vidi_msg_out_free(&o);
    CHECK(atomic_load(&g_freed) == 2, "out_free of an unsent message freed %d of 2 frames", atomic_load(&g_freed));

    /* a refused zero-copy frame is released at once (ownership passes
     * either way), and the message it was for is not sent */
    atomic_store(&g_freed, 0);
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-refused", 0) == 0) {
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 1);
        pack_key(&o.pk, "tensors");
        msgpack_pack_array(&o.pk, 1);
        uint8_t *zc = malloc(64);
        REQUIRE(zc, "malloc");
        int64_t s[1] = {65};
        vidi_err_clear(&err);
        vidi_status st = vidi_msg_out_tensor(&o, VIDI_WIRE_U8, 1, s, zc, 64, count_free, &g_hint_tag, &err);
        CHECK(st != VIDI_OK && err.msg[0], "64 bytes for u8 [65] accepted");
        CHECK(atomic_load(&g_freed) == 1, "the refused frame was released %d times", atomic_load(&g_freed));
        vidi_err_clear(&err);
        st = vidi_msg_send(p.dealer, NULL, 0, VIDI_CMD_WORK, &o, &err);
        CHECK(st != VIDI_OK && err.msg[0], "a message with a refused tensor was sent");
        vidi_msg_out_free(&o);
        CHECK(atomic_load(&g_freed) == 1, "the refused frame was released %d times", atomic_load(&g_freed));
        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code = VIDI_WIRE_INTERNAL;
        st = vidi_msg_recv(p.router, 1, ZMQ_DONTWAIT, deflim(), &m, &code, &err);
        CHECK(st == VIDI_ERR_IO && code == VIDI_WIRE_OK, "something arrived: %s", vidi_status_name(st));
        vidi_msg_close(&m);
    }
    pair_close(&p);
}

static void test_recv_with_nothing_to_read_is_io_not_the_senders_fault(void) {
    sock_pair p;
    if (pair_open(&p, "inproc://test-msg-timeout", 0) == 0) {
        set_int_opt(p.router, ZMQ_RCVTIMEO, 50);
        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code = VIDI_WIRE_INTERNAL;
        vidi_err err;
        vidi_err_clear(&err);
        vidi_status st = vidi_msg_recv(p.router, 1, 0, deflim(), &m, &code, &err);
        CHECK(st == VIDI_ERR_IO && code == VIDI_WIRE_OK && errno == EAGAIN, "timeout: %s code %s errno %d",
              vidi_status_name(st), code_name(code), errno);
        vidi_msg_close(&m);
        st = vidi_msg_recv(p.router, 1, ZMQ_DONTWAIT, deflim(), &m, &code, &err);
        CHECK(st == VIDI_ERR_IO && code == VIDI_WIRE_OK && errno == EAGAIN, "DONTWAIT: %s code %s",
              vidi_status_name(st), code_name(code));
        vidi_msg_close(&m);
        vidi_msg_close(&m); /* twice is fine */
    }
    pair_close(&p);
}

/* ------------------------------------------------------------ names */

static void test_names_round_trip(void) {
    for (int c = VIDI_CMD_READY; c <= VIDI_CMD_RELEASE; c++) {
        const char *s = vidi_cmd_name(c);
        CHECK(s && s[0], "vidi_cmd_name(%d) is empty", c);
        for (int d = VIDI_CMD_READY; s && d < c; d++)
            CHECK(!vidi_cmd_name(d) || strcmp(vidi_cmd_name(d), s) != 0, "commands %d and %d share a name", d, c);
    }
    CHECK(vidi_cmd_name(VIDI_CMD_READY) && !strcmp(vidi_cmd_name(VIDI_CMD_READY), "READY"), "READY");
    CHECK(vidi_cmd_name(VIDI_CMD_DISCONNECT) && !strcmp(vidi_cmd_name(VIDI_CMD_DISCONNECT), "DISCONNECT"),
          "DISCONNECT");
    CHECK(vidi_cmd_name(0x7F) == NULL, "vidi_cmd_name(0x7F)");
    CHECK(vidi_cmd_name(0) == NULL, "vidi_cmd_name(0)");
    CHECK(vidi_cmd_name(0x0F) == NULL, "vidi_cmd_name(0x0F)");
    CHECK(vidi_cmd_name(-1) == NULL, "vidi_cmd_name(-1)");
    CHECK(vidi_cmd_name(0x103) == NULL, "vidi_cmd_name(0x103)");

    for (int c = 0; c < VIDI_WIRE_CODE_COUNT; c++) {
        const char *s = vidi_wire_code_name((vidi_wire_code)c);
        if (c == VIDI_WIRE_OK && !s) continue; /* OK is no ERROR code; a name is optional */
        CHECK(s && s[0], "vidi_wire_code_name(%d) is empty", c);
        if (s)
            CHECK(vidi_wire_code_from_name(s, strlen(s)) == (vidi_wire_code)c, "from_name(%s) is %d, expected %d",
                  s, (int)vidi_wire_code_from_name(s, strlen(s)), c);
    }
    CHECK(!strcmp(vidi_wire_code_name(VIDI_WIRE_BAD_VERSION), "bad_version"), "bad_version");
    CHECK(!strcmp(vidi_wire_code_name(VIDI_WIRE_TOO_LARGE), "too_large"), "too_large");
    CHECK(!strcmp(vidi_wire_code_name(VIDI_WIRE_WORKER_LOST), "worker_lost"), "worker_lost");
    CHECK(!strcmp(vidi_wire_code_name(VIDI_WIRE_INTERNAL), "internal"), "internal");
    CHECK(vidi_wire_code_from_name("nope", 4) == VIDI_WIRE_CODE_COUNT, "from_name(nope)");
    CHECK(vidi_wire_code_from_name("bad", 3) == VIDI_WIRE_CODE_COUNT, "from_name of a prefix");
    CHECK(vidi_wire_code_from_name("bad_version!", 11) == VIDI_WIRE_BAD_VERSION, "from_name honours n");
    CHECK(vidi_wire_code_from_name("", 0) == VIDI_WIRE_CODE_COUNT, "from_name of the empty string");

    static const char *dt[] = {"u8", "i32", "i64", "f16", "bf16", "f32"};
    static const size_t ds[] = {1, 4, 8, 2, 2, 4};
    for (int k = 0; k < VIDI_WIRE_DTYPE_COUNT; k++) {
        const char *s = vidi_wire_dtype_name((vidi_wire_dtype)k);
        CHECK(s && !strcmp(s, dt[k]), "dtype %d name %s", k, s ? s : "(null)");
        CHECK(vidi_wire_dtype_size((vidi_wire_dtype)k) == ds[k], "dtype %s size", dt[k]);
    }
}

/* ------------------------------------------------------------ vidi_mp_check */

/* A header with every kind of object, in every width. */
static void pack_every_width(hdr_buf *h) {
    msgpack_packer *pk = &h->pk;
    char s300[300];
    memset(s300, 's', sizeof s300);
    msgpack_pack_map(pk, 20);
    pack_key(pk, "u7");
    msgpack_pack_uint64(pk, 127);
    pack_key(pk, "u8");
    msgpack_pack_uint64(pk, 200);
    pack_key(pk, "u16");
    msgpack_pack_uint64(pk, 60000);
    pack_key(pk, "u32");
    msgpack_pack_uint64(pk, 70000);
    pack_key(pk, "u64");
    msgpack_pack_uint64(pk, 1ull << 40);
    pack_key(pk, "n5");
    msgpack_pack_int64(pk, -1);
    pack_key(pk, "i8");
    msgpack_pack_int64(pk, -100);
    pack_key(pk, "i16");
    msgpack_pack_int64(pk, -1000);
    pack_key(pk, "i32");
    msgpack_pack_int64(pk, -100000);
    pack_key(pk, "i64");
    msgpack_pack_int64(pk, -(1ll << 40));
    pack_key(pk, "f32");
    msgpack_pack_float(pk, 1.5f);
    pack_key(pk, "f64");
    msgpack_pack_double(pk, -2.25);
    pack_key(pk, "nil");
    msgpack_pack_nil(pk);
    pack_key(pk, "t");
    msgpack_pack_true(pk);
    pack_key(pk, "str8");
    msgpack_pack_str(pk, 40);
    msgpack_pack_str_body(pk, s300, 40);
    pack_key(pk, "str16");
    msgpack_pack_str(pk, 300);
    msgpack_pack_str_body(pk, s300, 300);
    pack_key(pk, "bin16");
    msgpack_pack_bin(pk, 300);
    msgpack_pack_bin_body(pk, s300, 300);
    pack_key(pk, "arr16");
    msgpack_pack_array(pk, 20);
    for (int i = 0; i < 20; i++) msgpack_pack_int64(pk, i - 10);
    pack_key(pk, "map16");
    msgpack_pack_map(pk, 17);
    for (int i = 0; i < 17; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        pack_key(pk, k);
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 0);
    }
    pack_key(pk, "deep");
    msgpack_pack_map(pk, 1);
    pack_key(pk, "a");
    msgpack_pack_array(pk, 2);
    msgpack_pack_map(pk, 1);
    pack_key(pk, "b");
    msgpack_pack_array(pk, 0);
    vidi_mp_pack_cstr(pk, "end");
}

static void test_mp_check_good_header_and_every_truncation(void) {
    vidi_msg_limits lim = vidi_msg_limits_default();
    vidi_err err;
    hdr_buf h;
    hdr_init(&h);
    pack_every_width(&h);
    size_t n = h.sb.size;
    vidi_err_clear(&err);
    CHECK(vidi_mp_check((const uint8_t *)h.sb.data, n, &lim, &err) == VIDI_OK, "good header refused: %s", err.msg);

    /* each prefix, in a buffer of exactly its size so that ASan sees an
     * overread */
    int accepted = 0, silent = 0;
    for (size_t len = 0; len < n; len++) {
        uint8_t *b = malloc(len ? len : 1);
        REQUIRE(b, "malloc");
        memcpy(b, h.sb.data, len);
        vidi_err_clear(&err);
        if (vidi_mp_check(b, len, &lim, &err) == VIDI_OK)
            accepted++;
        else if (!err.msg[0])
            silent++;
        free(b);
    }
    CHECK(accepted == 0, "%d truncations of a %zu-byte header accepted", accepted, n);
    CHECK(silent == 0, "%d truncations refused without a message", silent);

    /* a byte more */
    uint8_t *b = malloc(n + 1);
    REQUIRE(b, "malloc");
    memcpy(b, h.sb.data, n);
    b[n] = 0xC0;
    CHECK(vidi_mp_check(b, n + 1, &lim, &err) != VIDI_OK, "a trailing byte accepted");
    free(b);

    /* the same header as a message parses, and every truncation fails */
    vidi_msg m;
    vidi_msg_init(&m);
    vidi_wire_code code = VIDI_WIRE_INTERNAL;
    CHECK(parse_header(&m, h.sb.data, n, &code, &err) == VIDI_OK && code == VIDI_WIRE_OK, "parse: %s", err.msg);
    vidi_msg_close(&m);
    for (size_t len = 0; len < n; len += 7) {
        code = VIDI_WIRE_OK;
        vidi_status st = parse_header(&m, h.sb.data, len, &code, &err);
        CHECK(st != VIDI_OK && code == VIDI_WIRE_BAD_HEADER, "a %zu-byte prefix: %s", len, code_name(code));
        vidi_msg_close(&m);
    }
    hdr_free(&h);

    /* one object that is not a map still passes the walk (it checks any
     * object; the map rule is vidi_msg_parse's) */
    static const uint8_t one_int[] = {0x05};
    static const uint8_t arr[] = {0x92, 0xA1, 'a', 0xC3};
    CHECK(vidi_mp_check(one_int, sizeof one_int, &lim, &err) == VIDI_OK, "a lone int refused: %s", err.msg);
    CHECK(vidi_mp_check(arr, sizeof arr, &lim, &err) == VIDI_OK, "an array refused: %s", err.msg);
}

static void test_mp_check_enforces_limits(void) {
    vidi_msg_limits lim = vidi_msg_limits_default();
    vidi_err err;
    static const uint8_t str32[] = {0xDB, 0xFF, 0xFF, 0xFF, 0xF0, 'x'};
    static const uint8_t arr32[] = {0xDD, 0xFF, 0xFF, 0xFF, 0xFF, 0x00};
    static const uint8_t map32[] = {0xDF, 0x80, 0x00, 0x00, 0x00};
    static const uint8_t bin32[] = {0xC6, 0xFF, 0xFF, 0xFF, 0xFF};
    static const uint8_t fix[] = {0xDA, 0x00};
    CHECK(vidi_mp_check(str32, sizeof str32, &lim, &err) != VIDI_OK, "str32 huge");
    CHECK(vidi_mp_check(arr32, sizeof arr32, &lim, &err) != VIDI_OK, "array32 huge");
    CHECK(vidi_mp_check(map32, sizeof map32, &lim, &err) != VIDI_OK, "map32 huge");
    CHECK(vidi_mp_check(bin32, sizeof bin32, &lim, &err) != VIDI_OK, "bin32 huge");
    CHECK(vidi_mp_check(fix, sizeof fix, &lim, &err) != VIDI_OK, "str16 with its length cut");

    uint8_t deep[101];
    for (int i = 0; i < 100; i++) deep[i] = 0x91;
    deep[100] = 0x00;
    CHECK(vidi_mp_check(deep, sizeof deep, &lim, &err) != VIDI_OK, "100 nested arrays");
    CHECK(vidi_mp_check(deep + 97, 4, &lim, &err) == VIDI_OK, "3 nested arrays: %s", err.msg);

    vidi_msg_limits small = lim;
    small.max_string = 4;
    small.max_array = 2;
    static const uint8_t s5[] = {0xA5, 'a', 'b', 'c', 'd', 'e'};
    static const uint8_t s4[] = {0xA4, 'a', 'b', 'c', 'd'};
    static const uint8_t b5[] = {0xC4, 5, 1, 2, 3, 4, 5};
    static const uint8_t a3[] = {0x93, 1, 2, 3};
    static const uint8_t a2[] = {0x92, 1, 2};
    static const uint8_t m3[] = {0x83, 1, 1, 2, 2, 3, 3};
    CHECK(vidi_mp_check(s5, sizeof s5, &small, &err) != VIDI_OK, "str 5 > max_string 4");
    CHECK(vidi_mp_check(s4, sizeof s4, &small, &err) == VIDI_OK, "str 4 = max_string 4: %s", err.msg);
    CHECK(vidi_mp_check(b5, sizeof b5, &small, &err) != VIDI_OK, "bin 5 > max_string 4");
    CHECK(vidi_mp_check(a3, sizeof a3, &small, &err) != VIDI_OK, "array 3 > max_array 2");
    CHECK(vidi_mp_check(a2, sizeof a2, &small, &err) == VIDI_OK, "array 2 = max_array 2: %s", err.msg);
    CHECK(vidi_mp_check(m3, sizeof m3, &small, &err) != VIDI_OK, "map 3 > max_array 2");
}

/* Every single-byte change to a good WORK header, parsed without a socket:
 * any answer is fine, but a failure carries a code and a message, and a
 * success has tensors inside their frame (ASan checks the reads). */
static void test_every_byte_mutation_of_a_header_is_handled(void) {
    hdr_buf h;
    hdr_init(&h);
    int64_t s[2] = {2, 4};
    msgpack_pack_map(&h.pk, 3);
    pack_key(&h.pk, "req");
    msgpack_pack_uint64(&h.pk, 9);
    pack_key(&h.pk, "stage");
    vidi_mp_pack_cstr(&h.pk, "encode");
    pack_key(&h.pk, "tensors");
    msgpack_pack_array(&h.pk, 1);
    pack_desc(&h.pk, "f16", 2, s, 1, 0, NULL);
    uint8_t frame[16];
    memset(frame, 0x3C, sizeof frame);
    size_t n = h.sb.size;
    uint8_t *hb = malloc(n);
    REQUIRE(hb, "malloc");
    static const uint8_t subst[] = {0x00, 0x01, 0x7F, 0x80, 0x90, 0xA0, 0xC0, 0xC1, 0xC4, 0xCF, 0xD3, 0xDC, 0xDD,
                                    0xDF, 0xDB, 0xFF};
    vidi_msg_limits lim = vidi_msg_limits_default();
    lim.max_frames = 4;
    int silent = 0, bad_ok = 0, ok = 0;
    for (size_t pos = 0; pos < n; pos++) {
        for (size_t k = 0; k <= sizeof subst; k++) {
            memcpy(hb, h.sb.data, n);
            hb[pos] = k < sizeof subst ? subst[k] : (uint8_t)(hb[pos] ^ 0x01);
            uint8_t cmd = VIDI_CMD_WORK;
            const void *bufs[4] = {VERSION_OK, &cmd, hb, frame};
            size_t lens[4] = {sizeof VERSION_OK, 1, n, sizeof frame};
            vidi_msg m;
            vidi_msg_init(&m);
            vidi_err err;
            vidi_err_clear(&err);
            vidi_wire_code code = VIDI_WIRE_OK;
            vidi_status st = vidi_msg_set_parts(&m, bufs, lens, 4, &err);
            if (st == VIDI_OK) st = vidi_msg_parse(&m, &lim, &code, &err);
            if (st != VIDI_OK) {
                if (!err.msg[0] || code == VIDI_WIRE_OK) silent++;
            } else {
                ok++;
                if (m.n_tensors != 1 || m.n_frames != 1 || !m.tensors || !m.tensors[0].data ||
                    m.tensors[0].bytes != sizeof frame)
                    bad_ok++;
                else if (memcmp(m.tensors[0].data, frame, sizeof frame) != 0)
                    bad_ok++;
            }
            vidi_msg_close(&m);
        }
    }
    CHECK(silent == 0, "%d mutations refused without a code or message", silent);
    CHECK(bad_ok == 0, "%d mutations accepted with a wrong tensor", bad_ok);
    CHECK(ok > 0, "no mutation accepted at all (the unchanged bytes should be)");
    free(hb);
    hdr_free(&h);
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"round_trip_every_command_inproc", test_round_trip_every_command_inproc},
        {"round_trip_every_command_ipc", test_round_trip_every_command_ipc},
        {"round_trip_every_command_tcp_ephemeral_port", test_round_trip_every_command_tcp_ephemeral_port},
        {"cuda_ipc_descriptor_round_trips_without_a_frame", test_cuda_ipc_descriptor_round_trips_without_a_frame},
        {"wrong_version_is_bad_version", test_wrong_version_is_bad_version},
        {"higher_minor_version_is_accepted", test_higher_minor_version_is_accepted},
        {"too_few_parts_is_bad_frame", test_too_few_parts_is_bad_frame},
        {"unknown_command_is_bad_command", test_unknown_command_is_bad_command},
        {"broken_header_is_bad_header", test_broken_header_is_bad_header},
        {"huge_declared_sizes_are_refused_without_allocating",
         test_huge_declared_sizes_are_refused_without_allocating},
        {"nesting_deeper_than_max_depth_is_refused", test_nesting_deeper_than_max_depth_is_refused},
        {"raw_frame_no_descriptor_names_is_bad_frame", test_raw_frame_no_descriptor_names_is_bad_frame},
        {"frame_size_not_matching_shape_is_bad_tensor", test_frame_size_not_matching_shape_is_bad_tensor},
        {"malformed_descriptors_are_bad_tensor", test_malformed_descriptors_are_bad_tensor},
        {"more_frames_than_max_frames_is_too_large", test_more_frames_than_max_frames_is_too_large},
        {"size_limits_are_too_large", test_size_limits_are_too_large},
        {"getters_types_ranges_and_defaults", test_getters_types_ranges_and_defaults},
        {"router_mandatory_send_to_unknown_peer_is_notfound",
         test_router_mandatory_send_to_unknown_peer_is_notfound},
        {"send_error_carries_code_message_and_id", test_send_error_carries_code_message_and_id},
        {"out_tensor_refuses_bad_arguments", test_out_tensor_refuses_bad_arguments},
        {"recv_with_nothing_to_read_is_io_not_the_senders_fault",
         test_recv_with_nothing_to_read_is_io_not_the_senders_fault},
        {"names_round_trip", test_names_round_trip},
        {"mp_check_good_header_and_every_truncation", test_mp_check_good_header_and_every_truncation},
        {"mp_check_enforces_limits", test_mp_check_enforces_limits},
        {"every_byte_mutation_of_a_header_is_handled", test_every_byte_mutation_of_a_header_is_handled},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
