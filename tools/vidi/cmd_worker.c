/* tools/vidi/cmd_worker.c — `vidi worker`: one process holding one or more
 * of the roles media, encode, prefill and decode (ipc/PROTOCOL.md §5.3).
 *
 * It connects a DEALER to the router's back socket and binds a ROUTER data
 * socket that other workers send work to. One thread runs a poll loop over
 * both: messages are handled as they come, and while sequences are being
 * decoded the loop runs one batched decode step between polls. Stage logic
 * lives in media/, encoder/, prefill/ and decode/; this file moves messages.
 *
 * A message for this worker's own data endpoint (a worker with several
 * roles routing to itself) is handled in place, without a socket; a
 * sequence prefilled here for a decode role here stays in the same pool.
 * Tensor frames to other workers are sent zero-copy from buffers freed when
 * ZeroMQ is done with them.
 */
#include "tools/vidi/cmd_worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "decode/decode.h"
#include "encoder/mmcache.h"
#include "ipc/fields.h"
#include "ipc/lease.h"
#include "ipc/mmkey.h"
#include "ipc/msg.h"
#include "ipc/sock.h"
#include "kernels/ops.h"
#include "media/media.h"
#include "model/generate.h"
#include "model/model.h"
#include "prefill/prefill.h"
#include "prefill/sparse_run.h"

enum { ROLE_MEDIA = 1, ROLE_ENCODE = 2, ROLE_PREFILL = 4, ROLE_DECODE = 8, ROLE_ALL = 15 };
static const char *const k_role_names[] = {"media", "encode", "prefill", "decode"};

#define EP_MAX 256
#define MAX_PEERS 64
#define MAX_PEND 256
#define MAX_ITEMS 64
#define PEND_TTL_MS 120000 /* a prefill waiting this long for its parts is dropped */
#define IPC_ID_MAX 64
#define IPC_MAPS 16        /* other workers' export buffers mapped at once */
#define IPC_MARGIN_MS 5000 /* a CUDA IPC lease must have this long left to be read */

static volatile sig_atomic_t g_stop;
static void s_on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* ---- shared frame buffers: one malloc'd buffer, several zero-copy frames ---- */

typedef struct shared_buf {
    atomic_int refs;
    void *data;
} shared_buf;

static void s_shared_release(void *data, void *hint) {
    (void)data;
    shared_buf *b = hint;
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->data);
        free(b);
    }
}

static void s_free_frame(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* ---- state ---- */

typedef struct slice_in {
    int have;
    vidi_prefill_item item;  /* the slice's grid */
    int64_t rows;
    void *data;              /* act dtype [rows, hidden]: host, or backend memory when on_dev */
    int on_dev;
    void *ddata;             /* the draft model's rows (host, act dtype [rows, draft hidden]); NULL: none */
} slice_in;

typedef struct pend {
    int used;
    uint64_t req, attempt;
    int64_t since_ms;
    int have_work;
    int32_t *ids;
    int64_t n_ids;
    int n_items;
    vidi_media_kind kinds[MAX_ITEMS];
    int n_slices[MAX_ITEMS];        /* 0: not known yet */
    slice_in *slices[MAX_ITEMS];
    vidi_wire_sampling samp;
    char decode_ep[EP_MAX];
    char decode_ipc[IPC_ID_MAX];
    vidi_backend *be;        /* frees on_dev slices */
} pend;

/* A prefilled sequence waiting for a place in the decode batch. */
typedef struct dec_wait {
    int used;
    uint64_t req, attempt, arrival;
    vidi_kv_seq *seq;
    int32_t last;
    int n_out;
    int64_t rope_delta, prompt_tokens;
    uint64_t rng;
    vidi_wire_sampling samp;
    vidi_kv_seq *dseq;       /* the draft model's sequence (NULL: none) */
    int64_t drope;
    int32_t dlag;            /* a token it has not seen before `last` (-1: none) */
} dec_wait;

#define MAX_WAIT 1024
#define MOVE_GRACE_MS 10000 /* a switched decoder forwards late hand-offs this long (PROTOCOL.md §5.6) */
#define TOMBSTONES 4096

typedef struct dec_meta {
    int used;
    uint64_t req, attempt;
    int64_t prompt_tokens;
    vidi_wire_sampling samp;     /* to hand the sequence on (a role switch's move) */
} dec_meta;

typedef struct worker {
    /* options */
    const char *router_ep, *model_dir, *name_opt;
    char data_ep[EP_MAX];
    int roles;
    int use_cuda, device;
    int64_t heartbeat_ms;
    int liveness;
    uint64_t mm_budget;
    int64_t kv_blocks;
    int64_t kv_swap_mb;
    const char *spec_opt;        /* --spec: speculative decoding (decode/specdec.h) */
    vidi_spec_params spec;
    const char *draft_dir;       /* --draft: the draft model (PROTOCOL.md §5.5) */
    int spec_batch;              /* --spec-max-batch: speculate while at most this many decode */
    int max_batch;
    /* sockets */
    void *ctx, *back, *data;
    struct {
        char ep[EP_MAX];
        void *sock;
    } peers[MAX_PEERS];
    int n_peers;
    vidi_liveness live;
    vidi_backoff backoff;
    char name[128];
    int back_gen;                /* reconnects so far: part of the back socket's identity */
    pthread_t hb_thread;
    int hb_started;
    atomic_int hb_stop;
    /* engine */
    vidi_backend *be;
    vidi_model *m;
    vidi_preproc_config pp;
    vidi_mmcache *cache;
    vidi_kv_pool *pool;
    vidi_decoder *dec;
    vidi_model *dm;              /* the draft model (NULL: none) and its pool (prefill, decode) */
    vidi_kv_pool *dpool;
    char draft_name[128];        /* its folder's name: READY's draft, its cache keys */
    uint64_t n_draft_encodes, n_draft_prefills;
    pend pends[MAX_PEND];
    dec_meta metas[512];
    dec_wait *waits;             /* MAX_WAIT */
    uint64_t arrivals;
    /* (req, attempt) the router cancelled: their late WORK is dropped */
    uint64_t dead_req[TOMBSTONES], dead_attempt[TOMBSTONES];
    int n_dead;
    /* CUDA IPC (PROTOCOL.md §5.4): this host's identity ("" when off), the
     * export buffer (allocated on first use) and its leases, and the
     * export buffers of other workers mapped here */
    char ipc_id[IPC_ID_MAX];
    int64_t ipc_mb, ipc_lease_ms;
    void *ipc_buf;
    uint8_t ipc_handle[64];
    vidi_lease_pool *leases;
    int ipc_broken;
    struct {
        uint8_t h[64];
        void *base;
        size_t bytes;
        int64_t used_ms;
    } maps[IPC_MAPS];
    int n_maps;
    uint64_t n_ipc_sent, n_ipc_received, n_ipc_expired, n_ipc_full;
    /* sparse prefill (prefill/sparse_run.h): the model's config (CPU tile kernel, or CUDA sparse_attention) */
    const char *sparse_opt;      /* "auto" (MODEL/sparse_config.json when present), "off", or a file */
    const char *roles_file;      /* --roles-file: the roles after each switch (vidi up restarts with them) */
    /* a role switch away from decode (PROTOCOL.md §5.6): where its sequences go on ("" when staying) */
    char move_to[EP_MAX];
    char move_ipc[IPC_ID_MAX];
    int64_t move_until_ms;       /* after the switch: late decode WORK still follows them until then */
    uint64_t n_moved;
    vidi_sparse_config *sparse;
    uint64_t n_sparse_prefills, sparse_pairs, sparse_dense_pairs, sparse_us, sparse_dense_layers;
    /* counters */
    uint64_t n_encode_tokens, n_prefill_tokens; /* vision tokens encoded; prompt tokens prefilled (vision ones too) */
    uint64_t n_media, n_encode, n_encode_batches, n_encode_cached, n_prefill, n_decode_in, n_tokens, n_errors,
        n_bad_msgs;
    /* time in each stage's work (media, encode, prefill with the embeddings, decode), and the work in
     * progress: the heartbeat thread reads them (HEARTBEAT load.busy_us, the router's load monitor) */
    _Atomic uint64_t busy_us[4];
    atomic_int busy_stage;      /* the stage running now, -1 none */
    _Atomic uint64_t busy_since;
} worker;

/* A monotonic clock in microseconds (the busy counters). */
static uint64_t s_now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* Stage k's work starts / ends on the main thread (busy_us). */
static void s_busy_begin(worker *w, int k) {
    atomic_store(&w->busy_since, s_now_us());
    atomic_store(&w->busy_stage, k);
}

static void s_busy_end(worker *w, int k) {
    atomic_store(&w->busy_stage, -1);
    atomic_fetch_add(&w->busy_us[k], s_now_us() - atomic_load(&w->busy_since));
}

static int64_t s_act_bytes(const worker *w, int64_t rows) {
    return rows * w->m->cfg.text.hidden_size * (int64_t)vidi_dtype_size(w->be->act_dtype);
}

/* Bytes of `rows` rows of the draft model's hidden size. */
static int64_t s_draft_bytes(const worker *w, int64_t rows) {
    return rows * w->dm->cfg.text.hidden_size * (int64_t)vidi_dtype_size(w->be->act_dtype);
}

/* ---- sending ---- */

static void s_handle(worker *w, vidi_msg *m, int from_back);

static void *s_peer(worker *w, const char *ep, vidi_err *err) {
    for (int i = 0; i < w->n_peers; i++)
        if (!strcmp(w->peers[i].ep, ep)) return w->peers[i].sock;
    if (w->n_peers == MAX_PEERS) {
        zmq_close(w->peers[0].sock);
        memmove(&w->peers[0], &w->peers[1], sizeof w->peers[0] * (MAX_PEERS - 1));
        w->n_peers--;
    }
    void *s = vidi_sock_open(w->ctx, VIDI_SOCK_PEER, ep, 0, NULL, 0, err);
    if (!s) return NULL;
    snprintf(w->peers[w->n_peers].ep, EP_MAX, "%s", ep);
    w->peers[w->n_peers++].sock = s;
    return s;
}

/* Send o to the data endpoint `ep`: handled here when it is ours. */
static vidi_status s_deliver(worker *w, const char *ep, vidi_cmd cmd, vidi_msg_out *o, vidi_err *err) {
    if (strcmp(ep, w->data_ep) != 0) {
        void *s = s_peer(w, ep, err);
        vidi_status rc = s ? vidi_msg_send(s, NULL, 0, cmd, o, err) : VIDI_ERR_IO;
        vidi_msg_out_free(o);
        return rc;
    }
    if (o->sbuf.size == 0) msgpack_pack_map(&o->pk, 0);
    int n = 3 + o->n_frames;
    const void **bufs = calloc((size_t)n, sizeof *bufs);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    uint8_t version[VIDI_PROTO_VERSION_LEN] = {'V', 'I', 'D', 'I', VIDI_PROTO_MAJOR, VIDI_PROTO_MINOR};
    uint8_t c = (uint8_t)cmd;
    vidi_status rc = VIDI_ERR_NOMEM;
    if (bufs && lens) {
        bufs[0] = version, lens[0] = sizeof version;
        bufs[1] = &c, lens[1] = 1;
        bufs[2] = o->sbuf.data, lens[2] = o->sbuf.size;
        for (int i = 0; i < o->n_frames; i++) bufs[3 + i] = o->frames[i].data, lens[3 + i] = o->frames[i].bytes;
        vidi_msg m;
        vidi_msg_init(&m);
        vidi_wire_code code;
        rc = vidi_msg_set_parts(&m, bufs, lens, n, err);
        vidi_msg_out_free(o);
        if (rc == VIDI_OK) rc = vidi_msg_parse(&m, NULL, &code, err);
        if (rc == VIDI_OK) s_handle(w, &m, 0);
        vidi_msg_close(&m);
    } else {
        vidi_err_set(err, VIDI_ERR_NOMEM, "local delivery: out of memory");
        vidi_msg_out_free(o);
    }
    free(bufs);
    free(lens);
    return rc;
}

static void s_to_router(worker *w, vidi_cmd cmd, vidi_msg_out *o) {
    vidi_err err = {0};
    if (vidi_msg_send(w->back, NULL, 0, cmd, o, &err) == VIDI_OK) vidi_liveness_sent(&w->live, vidi_now_ms());
    else fprintf(stderr, "worker %s: to router: %s\n", w->name, err.msg);
    vidi_msg_out_free(o);
}

/* ---- CUDA IPC ---- */

/* The optional identity field `key` (prefill_ipc, decode_ipc) into out ("" when absent). */
static void s_ipc_field(const msgpack_object *map, const char *key, char out[IPC_ID_MAX]) {
    const char *v;
    size_t n;
    out[0] = 0;
    if (vidi_mp_str(map, key, 0, IPC_ID_MAX - 1, &v, &n, NULL) == VIDI_OK && v) {
        memcpy(out, v, n);
        out[n] = 0;
    }
}

/* A range of the export buffer for `bytes` going to the worker at `ep`
 * whose identity is `peer`: 1 with *dst (where to write it) and *d (its
 * descriptor) set; 0 when the tensor must go as a raw frame instead. */
static int s_ipc_take(worker *w, const char *ep, const char *peer, size_t bytes, void **dst, vidi_wire_ipc *d) {
    if (!w->ipc_id[0] || !peer[0] || strcmp(peer, w->ipc_id) != 0 || !strcmp(ep, w->data_ep) || w->ipc_broken ||
        bytes == 0)
        return 0;
    vidi_err err = {0};
    uint64_t size = (uint64_t)w->ipc_mb << 20;
    if (!w->ipc_buf) {
        w->ipc_buf = w->be->ops->ipc_alloc(w->be, (size_t)size, w->ipc_handle, &err);
        if (w->ipc_buf) w->leases = vidi_lease_pool_create(size, 256, 4096);
        if (!w->ipc_buf || !w->leases) {
            fprintf(stderr, "worker %s: no CUDA IPC export buffer of %lld MiB (%s); tensors go through host memory\n",
                    w->name, (long long)w->ipc_mb, w->ipc_buf ? "out of memory" : err.msg);
            if (w->ipc_buf) w->be->ops->ipc_free(w->be, w->ipc_buf);
            w->ipc_buf = NULL;
            w->ipc_broken = 1;
            return 0;
        }
    }
    uint64_t lease, off, until = (uint64_t)vidi_now_ms() + (uint64_t)w->ipc_lease_ms;
    w->n_ipc_expired += (uint64_t)vidi_lease_expire(w->leases, (uint64_t)vidi_now_ms());
    if (vidi_lease_take(w->leases, bytes, until, &lease, &off, &err) != VIDI_OK) {
        w->n_ipc_full++;
        return 0;
    }
    memcpy(d->handle, w->ipc_handle, 64);
    d->offset = off;
    d->device = w->device;
    d->lease = lease;
    d->owner = w->data_ep;
    d->until_ms = until;
    *dst = (char *)w->ipc_buf + off;
    return 1;
}

/* The range a CUDA IPC tensor names, mapped here (each owner's buffer is
 * mapped once, the least recently used of IPC_MAPS unmapped); NULL with
 * *err set when this worker cannot read it. */
static const void *s_ipc_source(worker *w, const vidi_wire_tensor *t, vidi_err *err) {
    int64_t now = vidi_now_ms();
    if (!w->be->ops->ipc_open) {
        vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "cuda_ipc: this worker (%s) cannot map CUDA IPC memory", w->be->name);
        return NULL;
    }
    if ((uint64_t)now + IPC_MARGIN_MS > t->ipc_until_ms) {
        vidi_err_set(err, VIDI_ERR_RANGE, "cuda_ipc: lease %llu ends in less than %d ms", (unsigned long long)t->ipc_lease,
                     IPC_MARGIN_MS);
        return NULL;
    }
    int k = -1;
    for (int i = 0; i < w->n_maps; i++)
        if (!memcmp(w->maps[i].h, t->ipc_handle, 64)) k = i;
    if (k < 0) {
        if (w->n_maps == IPC_MAPS) {
            int old = 0;
            for (int i = 1; i < w->n_maps; i++)
                if (w->maps[i].used_ms < w->maps[old].used_ms) old = i;
            w->be->ops->ipc_close(w->be, w->maps[old].base);
            w->maps[old] = w->maps[--w->n_maps];
        }
        void *base = NULL;
        size_t bytes = 0;
        if (w->be->ops->ipc_open(w->be, t->ipc_handle, &base, &bytes, err) != VIDI_OK) {
            vidi_err_prefix(err, "cuda_ipc (owner %.*s)", (int)t->ipc_owner_len, t->ipc_owner);
            return NULL;
        }
        k = w->n_maps++;
        memcpy(w->maps[k].h, t->ipc_handle, 64);
        w->maps[k].base = base;
        w->maps[k].bytes = bytes;
    }
    w->maps[k].used_ms = now;
    if (t->ipc_offset > w->maps[k].bytes || t->bytes > w->maps[k].bytes - t->ipc_offset) {
        vidi_err_set(err, VIDI_ERR_RANGE, "cuda_ipc: bytes [%llu, +%llu) are outside the owner's buffer of %zu",
                     (unsigned long long)t->ipc_offset, (unsigned long long)t->bytes, w->maps[k].bytes);
        return NULL;
    }
    return (const char *)w->maps[k].base + t->ipc_offset;
}

static vidi_status s_deliver(worker *w, const char *ep, vidi_cmd cmd, vidi_msg_out *o, vidi_err *err);

/* RELEASE { leases: [lease] } to a CUDA IPC tensor's owner: it was read,
 * or will never be. */
static void s_ipc_release(worker *w, const vidi_wire_tensor *t) {
    char ep[EP_MAX];
    if (t->frame >= 0 || !t->ipc_owner_len || t->ipc_owner_len >= EP_MAX) return;
    memcpy(ep, t->ipc_owner, t->ipc_owner_len);
    ep[t->ipc_owner_len] = 0;
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 1);
    vidi_mp_pack_cstr(&o.pk, "leases");
    msgpack_pack_array(&o.pk, 1);
    msgpack_pack_uint64(&o.pk, t->ipc_lease);
    vidi_err err = {0};
    if (s_deliver(w, ep, VIDI_CMD_RELEASE, &o, &err) != VIDI_OK)
        fprintf(stderr, "worker %s: RELEASE to %s: %s\n", w->name, ep, err.msg);
}

/* RELEASE from a reader of our export buffer. */
static void s_on_release(worker *w, const vidi_msg *m) {
    const msgpack_object *ls;
    size_t n;
    if (vidi_mp_array(m->header, "leases", 1, 4096, &ls, &n, NULL) != VIDI_OK) {
        w->n_bad_msgs++;
        return;
    }
    for (size_t i = 0; i < n && w->leases; i++)
        if (ls[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER) vidi_lease_give(w->leases, ls[i].via.u64);
}

static void s_pack_req(msgpack_packer *pk, uint64_t req, uint64_t attempt) {
    vidi_mp_kv_u64(pk, "req", req);
    vidi_mp_kv_u64(pk, "attempt", attempt);
}

static void s_error_req(worker *w, uint64_t req, uint64_t attempt, vidi_wire_code code, const char *msg) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 4);
    s_pack_req(&o.pk, req, attempt);
    vidi_mp_kv_str(&o.pk, "code", vidi_wire_code_name(code));
    vidi_mp_kv_str(&o.pk, "message", msg);
    w->n_errors++;
    s_to_router(w, VIDI_CMD_ERROR, &o);
}

/* ERROR {code, message} to the router about no request (vidi_msg_send_error). */
static void s_error_plain(worker *w, vidi_wire_code code, const char *msg) {
    if (vidi_msg_send_error(w->back, NULL, 0, code, -1, msg, NULL) == VIDI_OK)
        vidi_liveness_sent(&w->live, vidi_now_ms());
}

static void s_send_ready(worker *w) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 8 + (w->ipc_id[0] != 0) + (w->dm != NULL));
    vidi_mp_kv_str(&o.pk, "name", w->name);
    if (w->ipc_id[0]) vidi_mp_kv_str(&o.pk, "cuda_ipc", w->ipc_id);
    if (w->dm) vidi_mp_kv_str(&o.pk, "draft", w->draft_name);
    vidi_mp_kv_u64(&o.pk, "pid", (uint64_t)getpid());
    vidi_mp_pack_cstr(&o.pk, "roles");
    int nr = 0;
    for (int i = 0; i < 4; i++) nr += (w->roles >> i) & 1;
    msgpack_pack_array(&o.pk, (size_t)nr);
    for (int i = 0; i < 4; i++)
        if ((w->roles >> i) & 1) vidi_mp_pack_cstr(&o.pk, k_role_names[i]);
    vidi_mp_kv_str(&o.pk, "data", w->data_ep);
    vidi_mp_kv_str(&o.pk, "backend", w->use_cuda ? "cuda" : "cpu");
    vidi_mp_kv_i64(&o.pk, "device", w->use_cuda ? w->device : -1);
    vidi_mp_kv_str(&o.pk, "model", w->model_dir);
    vidi_mp_pack_cstr(&o.pk, "capacity");
    msgpack_pack_map(&o.pk, 3);
    vidi_mp_kv_u64(&o.pk, "kv_blocks", (uint64_t)w->kv_blocks);
    vidi_mp_kv_u64(&o.pk, "mm_cache_bytes", w->mm_budget);
    vidi_mp_kv_u64(&o.pk, "max_batch", (uint64_t)w->max_batch);
    s_to_router(w, VIDI_CMD_READY, &o);
}

static void s_send_heartbeat(worker *w) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 1);
    vidi_mp_pack_cstr(&o.pk, "load");
    msgpack_pack_map(&o.pk, 3);
    int queued = 0;
    for (int i = 0; i < MAX_PEND; i++) queued += w->pends[i].used;
    vidi_mp_kv_u64(&o.pk, "queued", (uint64_t)queued);
    vidi_mp_kv_u64(&o.pk, "running", (uint64_t)(w->dec ? vidi_decoder_running(w->dec) : 0));
    vidi_mp_kv_u64(&o.pk, "kv_free_blocks", (uint64_t)(w->pool ? vidi_kv_pool_free_blocks(w->pool) : 0));
    s_to_router(w, VIDI_CMD_HEARTBEAT, &o);
}

static void s_send_tokens(worker *w, uint64_t req, uint64_t attempt, int index, int32_t tok) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 4);
    s_pack_req(&o.pk, req, attempt);
    vidi_mp_kv_u64(&o.pk, "index", (uint64_t)index);
    vidi_mp_pack_cstr(&o.pk, "tokens");
    msgpack_pack_array(&o.pk, 1);
    msgpack_pack_uint64(&o.pk, (uint64_t)tok);
    w->n_tokens++;
    s_to_router(w, VIDI_CMD_TOKEN, &o);
}

static void s_send_done(worker *w, uint64_t req, uint64_t attempt, vidi_decode_state st, int n_out,
                        int64_t prompt_tokens) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 5);
    s_pack_req(&o.pk, req, attempt);
    vidi_mp_kv_str(&o.pk, "finish", st == VIDI_DECODE_STOP ? "stop" : "length");
    vidi_mp_kv_u64(&o.pk, "n_out", (uint64_t)n_out);
    vidi_mp_kv_u64(&o.pk, "prompt_tokens", (uint64_t)prompt_tokens);
    s_to_router(w, VIDI_CMD_DONE, &o);
}

/* ---- common field reading ---- */

typedef struct req_id {
    uint64_t req, attempt;
} req_id;

static vidi_status s_req_fields(const vidi_msg *m, req_id *r, vidi_err *err) {
    vidi_status rc = vidi_mp_u64(m->header, "req", 1, 0, 0, UINT64_MAX, &r->req, err);
    if (rc == VIDI_OK) rc = vidi_mp_u64(m->header, "attempt", 1, 0, 0, 1000, &r->attempt, err);
    return rc;
}

static vidi_status s_ep_field(const msgpack_object *map, const char *key, char out[EP_MAX], vidi_err *err) {
    const char *s;
    size_t n;
    vidi_status rc = vidi_mp_str(map, key, 1, EP_MAX - 1, &s, &n, err);
    if (rc == VIDI_OK) {
        memcpy(out, s, n);
        out[n] = 0;
    }
    return rc;
}

static vidi_status s_grid_field(const msgpack_object *map, int32_t grid[3], vidi_err *err) {
    const msgpack_object *g;
    size_t n;
    vidi_status rc = vidi_mp_array(map, "grid", 1, 3, &g, &n, err);
    if (rc != VIDI_OK) return rc;
    if (n != 3) return vidi_err_set(err, VIDI_ERR_FORMAT, "field 'grid': expected [t, h, w]");
    for (int i = 0; i < 3; i++) {
        if (g[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER || g[i].via.u64 < 1 || g[i].via.u64 > 1 << 16)
            return vidi_err_set(err, VIDI_ERR_FORMAT, "field 'grid': item %d is not in [1, 65536]", i);
        grid[i] = (int32_t)g[i].via.u64;
    }
    return VIDI_OK;
}

static vidi_status s_kind_field(const msgpack_object *map, vidi_media_kind *k, vidi_err *err) {
    const msgpack_object *o = vidi_mp_get(map, "kind");
    if (vidi_mp_str_eq(o, "image")) *k = VIDI_MEDIA_IMAGE;
    else if (vidi_mp_str_eq(o, "video")) *k = VIDI_MEDIA_VIDEO;
    else return vidi_err_set(err, VIDI_ERR_FORMAT, "field 'kind': expected \"image\" or \"video\"");
    return VIDI_OK;
}

/* The tensor that field 'tensor' of map names: a raw frame, or (ipc_ok)
 * also a CUDA IPC range. */
/* The tensor the field `key` names (a raw frame unless ipc_ok: a CUDA IPC
 * descriptor then does too), or NULL with err set. */
static const vidi_wire_tensor *s_tensor_named(const vidi_msg *m, const msgpack_object *map, const char *key,
                                              int ipc_ok, vidi_err *err) {
    uint64_t t;
    if (vidi_mp_u64(map, key, 1, 0, 0, (uint64_t)(m->n_tensors ? m->n_tensors - 1 : 0), &t, err) != VIDI_OK)
        return NULL;
    if (m->n_tensors == 0 || (m->tensors[t].frame < 0 && !ipc_ok)) {
        vidi_err_set(err, VIDI_ERR_FORMAT, "field '%s': no such raw tensor", key);
        return NULL;
    }
    return &m->tensors[t];
}

static const vidi_wire_tensor *s_tensor_field(const vidi_msg *m, const msgpack_object *map, int ipc_ok,
                                              vidi_err *err) {
    return s_tensor_named(m, map, "tensor", ipc_ok, err);
}

/* ---- media ---- */

static void s_on_media(worker *w, const vidi_msg *m, req_id r) {
    vidi_err err = {0};
    char prefill[EP_MAX], prefill_ipc[IPC_ID_MAX];
    const msgpack_object *items;
    size_t n_items;
    char msg[VIDI_ERR_MSG_MAX + 2 * EP_MAX + 64];
    s_ipc_field(m->header, "prefill_ipc", prefill_ipc);
    if (s_ep_field(m->header, "prefill", prefill, &err) != VIDI_OK ||
        vidi_mp_array(m->header, "items", 1, MAX_ITEMS, &items, &n_items, &err) != VIDI_OK) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
        return;
    }
    for (size_t i = 0; i < n_items; i++) {
        const msgpack_object *it = &items[i];
        uint64_t item, nframes, minp, maxp;
        double fps;
        vidi_media_kind kind = VIDI_MEDIA_IMAGE;
        const uint8_t *ikey;
        size_t kn;
        const msgpack_object *encs;
        size_t n_encs;
        const vidi_wire_tensor *t = NULL;
        if (vidi_mp_u64(it, "item", 1, 0, 0, MAX_ITEMS - 1, &item, &err) || s_kind_field(it, &kind, &err) ||
            vidi_mp_bin(it, "key", 1, 16, &ikey, &kn, &err) ||
            vidi_mp_f64(it, "fps", 0, 0.0, 0.0, 1000.0, &fps, &err) ||
            vidi_mp_u64(it, "nframes", 0, 0, 0, 100000, &nframes, &err) ||
            vidi_mp_u64(it, "min_pixels", 0, 0, 0, UINT32_MAX, &minp, &err) ||
            vidi_mp_u64(it, "max_pixels", 0, 0, 0, UINT32_MAX, &maxp, &err) ||
            vidi_mp_array(it, "encoders", 1, 64, &encs, &n_encs, &err) || !(t = s_tensor_field(m, it, 0, &err))) {
            snprintf(msg, sizeof msg, "media item %zu: %s", i, err.msg);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, msg);
            return;
        }
        if (n_encs == 0 || t->dtype != VIDI_WIRE_U8) {
            snprintf(msg, sizeof msg, "media item %zu: needs encoders and u8 file bytes", i);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, msg);
            return;
        }
        vidi_media_options opt = vidi_media_options_default();
        vidi_media_limits lim = vidi_media_limits_default();
        if (fps > 0) opt.video.fps = fps;
        if (nframes > 0) opt.video.nframes = (int64_t)nframes;
        if (minp > 0) opt.min_pixels = (int64_t)minp;
        if (maxp > 0) opt.max_pixels = (int64_t)maxp;
        vidi_media_item mi = {0};
        vidi_status rc = kind == VIDI_MEDIA_VIDEO
                             ? vidi_media_video_to_item(t->data, t->bytes, &w->pp, &opt, &lim, &mi, &err)
                             : vidi_media_image_to_item(t->data, t->bytes, &w->pp, &opt, &lim, &mi, &err);
        if (rc != VIDI_OK) {
            snprintf(msg, sizeof msg, "media item %llu (%s): %s", (unsigned long long)item,
                     kind == VIDI_MEDIA_VIDEO ? "video" : "image", err.msg);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_MEDIA, msg);
            return;
        }
        w->n_media++;
        int T = mi.grid[0];
        int ns = kind == VIDI_MEDIA_VIDEO ? (int)(n_encs < (size_t)T ? n_encs : (size_t)T) : 1;
        int64_t per_t = (int64_t)mi.grid[1] * mi.grid[2];
        shared_buf *sb = malloc(sizeof *sb);
        if (!sb) {
            vidi_media_item_free(&mi);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_INTERNAL, "media: out of memory");
            return;
        }
        atomic_init(&sb->refs, ns);
        sb->data = mi.pixels;
        mi.pixels = NULL;
        for (int s = 0, t0 = 0; s < ns; s++) {
            int tn = T / ns + (s < T % ns ? 1 : 0);
            char ep[EP_MAX];
            const msgpack_object *e = &encs[s];
            if (e->type != MSGPACK_OBJECT_STR || e->via.str.size >= EP_MAX) {
                s_shared_release(NULL, sb);
                s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, "media: field 'encoders': not endpoints");
                continue;
            }
            memcpy(ep, e->via.str.ptr, e->via.str.size);
            ep[e->via.str.size] = 0;
            vidi_mm_params kp = {.kind = kind, .fps = fps, .nframes = (int64_t)nframes, .min_pixels = (int64_t)minp,
                                 .max_pixels = (int64_t)maxp, .slice_t0 = t0, .slice_t1 = t0 + tn, .n_slices = ns};
            uint8_t skey[16];
            vidi_mm_key(t->data, t->bytes, &kp, skey);
            vidi_msg_out o;
            vidi_msg_out_init(&o);
            msgpack_pack_map(&o.pk, 6 + (prefill_ipc[0] != 0));
            s_pack_req(&o.pk, r.req, r.attempt);
            vidi_mp_kv_str(&o.pk, "stage", "encode");
            vidi_mp_kv_str(&o.pk, "prefill", prefill);
            if (prefill_ipc[0]) vidi_mp_kv_str(&o.pk, "prefill_ipc", prefill_ipc);
            vidi_mp_pack_cstr(&o.pk, "items");
            msgpack_pack_array(&o.pk, 1);
            msgpack_pack_map(&o.pk, 9);
            vidi_mp_kv_u64(&o.pk, "item", item);
            vidi_mp_kv_u64(&o.pk, "slice", (uint64_t)s);
            vidi_mp_kv_u64(&o.pk, "n_slices", (uint64_t)ns);
            vidi_mp_kv_bin(&o.pk, "item_key", ikey, 16);
            vidi_mp_kv_bin(&o.pk, "key", skey, 16);
            vidi_mp_kv_str(&o.pk, "kind", kind == VIDI_MEDIA_VIDEO ? "video" : "image");
            vidi_mp_pack_cstr(&o.pk, "grid");
            msgpack_pack_array(&o.pk, 3);
            msgpack_pack_uint64(&o.pk, (uint64_t)tn);
            msgpack_pack_uint64(&o.pk, (uint64_t)mi.grid[1]);
            msgpack_pack_uint64(&o.pk, (uint64_t)mi.grid[2]);
            vidi_mp_kv_f64(&o.pk, "second_per_grid_t", mi.second_per_grid_t);
            vidi_mp_kv_u64(&o.pk, "tensor", 0);
            vidi_mp_pack_cstr(&o.pk, "tensors");
            msgpack_pack_array(&o.pk, 1);
            int64_t shape[2] = {tn * per_t, mi.cols};
            float *rows = (float *)sb->data + (size_t)t0 * (size_t)per_t * (size_t)mi.cols;
            vidi_msg_out_tensor(&o, VIDI_WIRE_F32, 2, shape, rows, (size_t)(shape[0] * shape[1]) * sizeof(float),
                                s_shared_release, sb, &err);
            if (s_deliver(w, ep, VIDI_CMD_WORK, &o, &err) != VIDI_OK) {
                snprintf(msg, sizeof msg, "media: to encoder %s: %s", ep, err.msg);
                s_error_req(w, r.req, r.attempt, VIDI_WIRE_WORKER_LOST, msg);
            }
            t0 += tn;
        }
        vidi_media_item_free(&mi);
    }
}

/* ---- encode ---- */

static void s_cache_free(void *data, void *user) {
    (void)user;
    free(data);
}

/* WORK "embeds" with one slice's rows (act dtype) to `prefill`: in backend
 * memory at `dev` and/or in host memory at `host` (either may be NULL; a
 * copy is made from whichever is nearer to where they go). They go
 * through our CUDA IPC export buffer when `prefill` is another CUDA worker
 * of this host (`peer` its identity, "" when it has none), else as a raw
 * frame. `dhost`: the draft model's rows of the slice (host), sent as a
 * raw frame (`draft_tensor`, PROTOCOL.md §5.5), or NULL. */
static vidi_status s_send_embeds(worker *w, req_id r, const char *prefill, const char *peer, uint64_t item,
                                 uint64_t slice, uint64_t n_slices, vidi_media_kind kind, const int32_t grid[3],
                                 double spgt, const void *host, const void *dev, int64_t rows, const void *dhost,
                                 vidi_err *err) {
    size_t bytes = (size_t)s_act_bytes(w, rows);
    size_t dbytes = dhost ? (size_t)s_draft_bytes(w, rows) : 0;
    void *dcopy = dhost ? malloc(dbytes ? dbytes : 1) : NULL;
    if (dhost && !dcopy) return vidi_err_set(err, VIDI_ERR_NOMEM, "embeds: out of memory");
    if (dcopy) memcpy(dcopy, dhost, dbytes);
    void *dst = NULL, *copy = NULL;
    vidi_wire_ipc d;
    int ipc = s_ipc_take(w, prefill, peer, bytes, &dst, &d);
    if (ipc) {
        vidi_err e2 = {0};
        vidi_status rc = dev ? w->be->ops->copy(w->be, dst, dev, bytes, &e2)
                             : w->be->ops->copy_to_device(w->be, dst, host, bytes, &e2);
        if (rc == VIDI_OK) rc = w->be->ops->synchronize(w->be, &e2);
        if (rc != VIDI_OK) {
            fprintf(stderr, "worker %s: embeds into the export buffer: %s\n", w->name, e2.msg);
            vidi_lease_give(w->leases, d.lease);
            ipc = 0;
        }
    }
    if (!ipc) {
        copy = malloc(bytes ? bytes : 1);
        if (!copy) {
            free(dcopy);
            return vidi_err_set(err, VIDI_ERR_NOMEM, "embeds: out of memory");
        }
        if (host) memcpy(copy, host, bytes);
        else if (w->be->ops->copy_to_host(w->be, copy, dev, bytes, err) != VIDI_OK) {
            free(copy);
            free(dcopy);
            return err->status;
        }
    }
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 5);
    s_pack_req(&o.pk, r.req, r.attempt);
    vidi_mp_kv_str(&o.pk, "stage", "embeds");
    vidi_mp_pack_cstr(&o.pk, "items");
    msgpack_pack_array(&o.pk, 1);
    msgpack_pack_map(&o.pk, 7 + (dcopy != NULL));
    vidi_mp_kv_u64(&o.pk, "item", item);
    vidi_mp_kv_u64(&o.pk, "slice", slice);
    vidi_mp_kv_u64(&o.pk, "n_slices", n_slices);
    vidi_mp_kv_str(&o.pk, "kind", kind == VIDI_MEDIA_VIDEO ? "video" : "image");
    vidi_mp_pack_cstr(&o.pk, "grid");
    msgpack_pack_array(&o.pk, 3);
    for (int i = 0; i < 3; i++) msgpack_pack_uint64(&o.pk, (uint64_t)grid[i]);
    vidi_mp_kv_f64(&o.pk, "second_per_grid_t", spgt);
    vidi_mp_kv_u64(&o.pk, "tensor", 0);
    if (dcopy) vidi_mp_kv_u64(&o.pk, "draft_tensor", 1);
    vidi_mp_pack_cstr(&o.pk, "tensors");
    msgpack_pack_array(&o.pk, 1 + (dcopy != NULL));
    int64_t shape[2] = {rows, w->m->cfg.text.hidden_size};
    vidi_wire_dtype dt = w->be->act_dtype == VIDI_DTYPE_BF16 ? VIDI_WIRE_BF16 : VIDI_WIRE_F32;
    if (ipc) vidi_msg_out_tensor_ipc(&o, dt, 2, shape, &d, err);
    else vidi_msg_out_tensor(&o, dt, 2, shape, copy, bytes, s_free_frame, NULL, err);
    if (dcopy) {
        int64_t dshape[2] = {rows, w->dm->cfg.text.hidden_size};
        vidi_msg_out_tensor(&o, dt, 2, dshape, dcopy, dbytes, s_free_frame, NULL, err);
    }
    vidi_status rc = s_deliver(w, prefill, VIDI_CMD_WORK, &o, err);
    if (ipc && rc != VIDI_OK) vidi_lease_give(w->leases, d.lease);
    else if (ipc) w->n_ipc_sent++;
    return rc;
}

/* One item of an encode WORK, checked. */
typedef struct enc_item {
    int msg;                 /* index of its message in the batch */
    uint64_t item, slice, ns;
    uint8_t key[16], ikey[16];
    vidi_media_kind kind;
    int32_t grid[3];
    double spgt;
    const float *pixels;
    int64_t n_rows, rows_out;
    int stored;
} enc_item;

typedef struct enc_msg {
    req_id r;
    char prefill[EP_MAX];
    char prefill_ipc[IPC_ID_MAX];
    int ok;                  /* its items were checked and queued */
} enc_msg;

/* Cache hits the router found: send what is here; report what is not. */
static void s_encode_cached(worker *w, req_id r, const char *prefill, const char *prefill_ipc,
                            const msgpack_object *cached, size_t n_cached) {
    vidi_err err = {0};
    char msg[VIDI_ERR_MSG_MAX + 2 * EP_MAX + 64];
    int n_missing = 0;
    uint8_t missing[64][16];
    for (size_t i = 0; i < n_cached; i++) {
        uint64_t item, slice, ns;
        const uint8_t *key;
        size_t kn;
        if (vidi_mp_u64(&cached[i], "item", 1, 0, 0, MAX_ITEMS - 1, &item, &err) ||
            vidi_mp_u64(&cached[i], "slice", 1, 0, 0, 63, &slice, &err) ||
            vidi_mp_u64(&cached[i], "n_slices", 1, 1, 1, 64, &ns, &err) ||
            vidi_mp_bin(&cached[i], "key", 1, 16, &key, &kn, &err)) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
            return;
        }
        vidi_mmcache_entry *e = NULL;
        if (!vidi_mmcache_get(w->cache, key, &e)) {
            if (n_missing < 64) memcpy(missing[n_missing++], key, 16);
            continue;
        }
        w->n_encode_cached++;
        /* the draft model's rows of the slice, when still here (a miss only costs the draft) */
        vidi_mmcache_entry *de = NULL;
        if (w->dm) {
            uint8_t dkey[16];
            vidi_mm_key_model(key, w->draft_name, dkey);
            if (vidi_mmcache_get(w->cache, dkey, &de) && de->rows != e->rows) {
                vidi_mmcache_release(w->cache, de);
                de = NULL;
            }
        }
        vidi_media_kind kind = e->grid[0] > 1 || e->second_per_grid_t > 0 ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE;
        if (s_send_embeds(w, r, prefill, prefill_ipc, item, slice, ns, kind, e->grid, e->second_per_grid_t, e->data,
                          NULL, e->rows, de ? de->data : NULL, &err) != VIDI_OK) {
            snprintf(msg, sizeof msg, "encode: to prefill %s: %s", prefill, err.msg);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_WORKER_LOST, msg);
        }
        if (de) vidi_mmcache_release(w->cache, de);
        vidi_mmcache_release(w->cache, e);
    }
    if (!n_missing) return;
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 4);
    s_pack_req(&o.pk, r.req, r.attempt);
    vidi_mp_kv_str(&o.pk, "stage", "encode");
    vidi_mp_pack_cstr(&o.pk, "missing");
    msgpack_pack_array(&o.pk, (size_t)n_missing);
    for (int i = 0; i < n_missing; i++) {
        msgpack_pack_bin(&o.pk, 16);
        msgpack_pack_bin_body(&o.pk, missing[i], 16);
    }
    s_to_router(w, VIDI_CMD_RESULT, &o);
}

/* Check message k's new items and append them to *items. */
static int s_encode_collect(worker *w, const vidi_msg *m, int k, enc_msg *em, enc_item *items, int *n, int cap) {
    vidi_err err = {0};
    char msg[VIDI_ERR_MSG_MAX + 64];
    const msgpack_object *its = NULL, *cached = NULL;
    size_t n_its = 0, n_cached = 0;
    req_id r = em->r;
    if (s_ep_field(m->header, "prefill", em->prefill, &err) ||
        vidi_mp_array(m->header, "items", 0, MAX_ITEMS, &its, &n_its, &err) ||
        vidi_mp_array(m->header, "cached", 0, 4096, &cached, &n_cached, &err)) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
        return -1;
    }
    s_ipc_field(m->header, "prefill_ipc", em->prefill_ipc);
    if (n_cached) s_encode_cached(w, r, em->prefill, em->prefill_ipc, cached, n_cached);
    int64_t patch_dim = vidi_media_patch_dim(&w->m->cfg);
    int first = *n;
    for (size_t i = 0; i < n_its; i++) {
        const msgpack_object *it = &its[i];
        enc_item *e = &items[*n];
        const uint8_t *key = NULL, *ikey = NULL;
        size_t kn;
        const vidi_wire_tensor *t = NULL;
        if (*n == cap) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_OVERLOADED, "encode: too many items at once");
            *n = first;
            return -1;
        }
        memset(e, 0, sizeof *e);
        e->msg = k;
        if (vidi_mp_u64(it, "item", 1, 0, 0, MAX_ITEMS - 1, &e->item, &err) ||
            vidi_mp_u64(it, "slice", 1, 0, 0, 63, &e->slice, &err) ||
            vidi_mp_u64(it, "n_slices", 1, 1, 1, 64, &e->ns, &err) || vidi_mp_bin(it, "key", 1, 16, &key, &kn, &err) ||
            vidi_mp_bin(it, "item_key", 1, 16, &ikey, &kn, &err) || s_kind_field(it, &e->kind, &err) ||
            s_grid_field(it, e->grid, &err) || vidi_mp_f64(it, "second_per_grid_t", 0, 0.0, 0.0, 1e6, &e->spgt, &err) ||
            !(t = s_tensor_field(m, it, 0, &err))) {
            snprintf(msg, sizeof msg, "encode item %zu: %s", i, err.msg);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, msg);
            *n = first;
            return -1;
        }
        memcpy(e->key, key, 16);
        memcpy(e->ikey, ikey, 16);
        e->n_rows = (int64_t)e->grid[0] * e->grid[1] * e->grid[2];
        if (t->dtype != VIDI_WIRE_F32 || t->ndim != 2 || t->shape[0] != e->n_rows || t->shape[1] != patch_dim) {
            snprintf(msg, sizeof msg, "encode item %zu: patches must be f32 [%lld, %lld] for grid %dx%dx%d", i,
                     (long long)e->n_rows, (long long)patch_dim, e->grid[0], e->grid[1], e->grid[2]);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR, msg);
            *n = first;
            return -1;
        }
        vidi_media chk = {.kind = e->kind, .pixels = t->data, .n_rows = e->n_rows};
        memcpy(chk.grid, e->grid, sizeof chk.grid);
        if (vidi_media_check(&w->m->cfg, &chk, (int)e->item, 1, &err) != VIDI_OK) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR, err.msg);
            *n = first;
            return -1;
        }
        e->pixels = t->data;
        const int32_t(*g)[3] = (const int32_t(*)[3])e->grid;
        e->rows_out = vidi_vision_out_rows(w->m->vision, g, 1);
        (*n)++;
    }
    em->ok = 1;
    return 0;
}

/* Model vm's vision tower over n items' patches: rows_out rows into host;
 * in backend memory too, left in *dev_keep when it is given. */
static vidi_status s_encode_rows(worker *w, const vidi_model *vm, const float *pix, int64_t rows_in,
                                 const int32_t (*grids)[3], int n, int64_t rows_out, void **dev_keep, char *host,
                                 vidi_err *err) {
    int64_t H = vm->cfg.text.hidden_size;
    size_t bytes = (size_t)(rows_out * H) * vidi_dtype_size(w->be->act_dtype);
    void *dev = w->be->ops->buf_alloc(w->be, bytes);
    if (!dev) return vidi_err_set(err, VIDI_ERR_NOMEM, "encode: out of memory");
    vidi_tensor out = vidi_tensor_2d(w->be->act_dtype, dev, rows_out, H);
    vidi_status rc = vidi_vision_encode(vm->vision, pix, rows_in, grids, n, &out, err);
    if (rc == VIDI_OK) rc = w->be->ops->copy_to_host(w->be, host, dev, bytes, err);
    if (rc == VIDI_OK && dev_keep) *dev_keep = dev;
    else w->be->ops->buf_free(w->be, dev);
    return rc;
}

/* A copy of item e's rows ([rows_out, hidden], act dtype) into the MM-token
 * cache under key: 1 when it is there. */
static int s_cache_rows(worker *w, const uint8_t key[16], const void *rows, int64_t hidden, const enc_item *e,
                        vidi_err *err) {
    size_t b = (size_t)(e->rows_out * hidden) * vidi_dtype_size(w->be->act_dtype);
    void *copy = malloc(b ? b : 1);
    if (!copy) return 0;
    memcpy(copy, rows, b);
    return vidi_mmcache_put(w->cache, key, copy, b, w->be->act_dtype, e->rows_out, hidden, e->grid, (float)e->spgt,
                            NULL, err) == VIDI_OK;
}

/* Encode the new items of n_msgs encode WORKs in one vision-tower call (the
 * tower keeps items apart, so batching changes no row), send each item's rows
 * to its prefill worker, cache them, and answer each message with RESULT. */
static void s_encode_batch(worker *w, vidi_msg *const *msgs, const req_id *rids, int n_msgs) {
    vidi_err err = {0};
    enum { CAP = 256 };
    enc_item *items = calloc(CAP, sizeof *items);
    enc_msg *ems = calloc((size_t)n_msgs, sizeof *ems);
    int n = 0;
    if (!items || !ems) {
        for (int k = 0; k < n_msgs; k++) s_error_req(w, rids[k].req, rids[k].attempt, VIDI_WIRE_INTERNAL, "encode: out of memory");
        goto out;
    }
    for (int k = 0; k < n_msgs; k++) {
        ems[k].r = rids[k];
        s_encode_collect(w, msgs[k], k, &ems[k], items, &n, CAP);
    }
    if (n > 0) {
        int64_t rows_in = 0, rows_out = 0;
        int64_t cols = vidi_media_patch_dim(&w->m->cfg), H = w->m->cfg.text.hidden_size;
        for (int i = 0; i < n; i++) rows_in += items[i].n_rows, rows_out += items[i].rows_out;
        float *pix = n == 1 ? (float *)items[0].pixels : malloc((size_t)(rows_in * cols) * sizeof(float));
        int32_t(*grids)[3] = calloc((size_t)n, sizeof *grids);
        void *dev = NULL;
        char *host = malloc((size_t)s_act_bytes(w, rows_out));
        vidi_status rc = pix && grids && host ? VIDI_OK : vidi_err_set(&err, VIDI_ERR_NOMEM, "encode: out of memory");
        char *dhost = NULL; /* the draft model's rows (PROTOCOL.md §5.5) */
        if (rc == VIDI_OK) {
            int64_t off = 0;
            for (int i = 0; i < n; i++) {
                if (n > 1) memcpy(pix + off * cols, items[i].pixels, (size_t)(items[i].n_rows * cols) * sizeof(float));
                off += items[i].n_rows;
                memcpy(grids[i], items[i].grid, sizeof grids[i]);
            }
            rc = s_encode_rows(w, w->m, pix, rows_in, (const int32_t(*)[3])grids, n, rows_out, &dev, host, &err);
        }
        if (rc == VIDI_OK && w->dm) {
            /* the same patches through the draft's tower; a failure only costs the draft */
            vidi_err e2 = {0};
            dhost = malloc((size_t)s_draft_bytes(w, rows_out) + 1);
            vidi_status drc = dhost ? s_encode_rows(w, w->dm, pix, rows_in, (const int32_t(*)[3])grids, n, rows_out,
                                                    NULL, dhost, &e2)
                                    : vidi_err_set(&e2, VIDI_ERR_NOMEM, "out of memory");
            if (drc != VIDI_OK) {
                fprintf(stderr, "worker %s: the draft's vision tower: %s\n", w->name, e2.msg);
                free(dhost);
                dhost = NULL;
            } else {
                w->n_draft_encodes += (uint64_t)n;
            }
        }
        if (n > 1) free(pix);
        free(grids);
        if (rc != VIDI_OK) {
            for (int k = 0; k < n_msgs; k++)
                if (ems[k].ok) s_error_req(w, ems[k].r.req, ems[k].r.attempt, VIDI_WIRE_INTERNAL, err.msg);
            if (dev) w->be->ops->buf_free(w->be, dev);
            free(host);
            free(dhost);
            goto out;
        }
        w->n_encode += (uint64_t)n;
        w->n_encode_batches++;
        w->n_encode_tokens += (uint64_t)rows_out;
        int64_t row = 0;
        for (int i = 0; i < n; i++) {
            enc_item *e = &items[i];
            enc_msg *em = &ems[e->msg];
            const char *rows = host + (size_t)s_act_bytes(w, row);
            const char *drows = w->be->host_memory ? NULL : (const char *)dev + (size_t)s_act_bytes(w, row);
            const char *dr = dhost ? dhost + (size_t)s_draft_bytes(w, row) : NULL;
            row += e->rows_out;
            if (s_send_embeds(w, em->r, em->prefill, em->prefill_ipc, e->item, e->slice, e->ns, e->kind, e->grid,
                              e->spgt, rows, drows, e->rows_out, dr, &err) != VIDI_OK) {
                char msg[VIDI_ERR_MSG_MAX + 2 * EP_MAX + 64];
                snprintf(msg, sizeof msg, "encode: to prefill %s: %s", em->prefill, err.msg);
                s_error_req(w, em->r.req, em->r.attempt, VIDI_WIRE_WORKER_LOST, msg);
            }
            e->stored = s_cache_rows(w, e->key, rows, H, e, &err);
            if (dr) { /* the draft's rows beside them, under the slice key hashed with the draft's name */
                uint8_t dkey[16];
                vidi_mm_key_model(e->key, w->draft_name, dkey);
                vidi_err e2 = {0};
                if (!s_cache_rows(w, dkey, dr, w->dm->cfg.text.hidden_size, e, &e2))
                    fprintf(stderr, "worker %s: the draft's rows not cached: %s\n", w->name, e2.msg);
            }
        }
        if (dev) w->be->ops->buf_free(w->be, dev);
        free(host);
        free(dhost);
    }
    /* RESULT per message: what the router's directory needs */
    for (int k = 0; k < n_msgs; k++) {
        if (!ems[k].ok) continue;
        int ns = 0, ni = 0;
        for (int i = 0; i < n; i++) ns += items[i].msg == k && items[i].stored, ni += items[i].msg == k;
        if (!ni) continue;
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 4);
        s_pack_req(&o.pk, ems[k].r.req, ems[k].r.attempt);
        vidi_mp_kv_str(&o.pk, "stage", "encode");
        vidi_mp_pack_cstr(&o.pk, "stored");
        msgpack_pack_array(&o.pk, (size_t)ns);
        for (int i = 0; i < n; i++) {
            enc_item *e = &items[i];
            if (e->msg != k || !e->stored) continue;
            msgpack_pack_map(&o.pk, 7);
            vidi_mp_kv_bin(&o.pk, "item_key", e->ikey, 16);
            vidi_mp_kv_bin(&o.pk, "key", e->key, 16);
            vidi_mp_kv_u64(&o.pk, "item", e->item);
            vidi_mp_kv_u64(&o.pk, "slice", e->slice);
            vidi_mp_kv_u64(&o.pk, "n_slices", e->ns);
            vidi_mp_pack_cstr(&o.pk, "grid");
            msgpack_pack_array(&o.pk, 3);
            for (int q = 0; q < 3; q++) msgpack_pack_uint64(&o.pk, (uint64_t)e->grid[q]);
            vidi_mp_kv_f64(&o.pk, "second_per_grid_t", e->spgt);
        }
        s_to_router(w, VIDI_CMD_RESULT, &o);
    }
out:
    free(items);
    free(ems);
}

static void s_on_encode(worker *w, const vidi_msg *m, req_id r) {
    vidi_msg *const one[1] = {(vidi_msg *)m};
    s_encode_batch(w, one, &r, 1);
}

/* ---- prefill ---- */

static void s_pend_free(pend *p);

static pend *s_pend(worker *w, req_id r, int create) {
    pend *free_slot = NULL;
    for (int i = 0; i < MAX_PEND; i++) {
        pend *p = &w->pends[i];
        if (!p->used) {
            if (!free_slot) free_slot = p;
            continue;
        }
        if (p->req == r.req) {
            if (p->attempt == r.attempt) return p;
            if (p->attempt > r.attempt) return NULL; /* a stale attempt */
            s_pend_free(p); /* an older attempt: forget it */
            if (!free_slot) free_slot = p;
        }
    }
    if (!create || !free_slot) return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    free_slot->used = 1;
    free_slot->req = r.req;
    free_slot->attempt = r.attempt;
    free_slot->since_ms = vidi_now_ms();
    free_slot->be = w->be;
    return free_slot;
}

static void s_pend_free(pend *p) {
    for (int k = 0; k < MAX_ITEMS; k++)
        if (p->slices[k]) {
            for (int s = 0; s < p->n_slices[k]; s++) {
                slice_in *sl = &p->slices[k][s];
                if (sl->on_dev && sl->data) p->be->ops->buf_free(p->be, sl->data);
                else free(sl->data);
                free(sl->ddata);
            }
            free(p->slices[k]);
        }
    free(p->ids);
    memset(p, 0, sizeof *p);
}

static int s_pend_complete(const pend *p) {
    if (!p->have_work) return 0;
    for (int i = 0; i < p->n_items; i++) {
        if (!p->n_slices[i]) return 0;
        for (int s = 0; s < p->n_slices[i]; s++)
            if (!p->slices[i][s].have) return 0;
    }
    return 1;
}

static uint64_t s_seq_tag(worker *w, req_id r, int64_t prompt_tokens, const vidi_wire_sampling *samp) {
    for (int i = 0; i < (int)(sizeof w->metas / sizeof w->metas[0]); i++)
        if (!w->metas[i].used) {
            w->metas[i] = (dec_meta){1, r.req, r.attempt, prompt_tokens, *samp};
            return (uint64_t)i;
        }
    return UINT64_MAX;
}

static vidi_decode_params s_decode_params(const vidi_wire_sampling *s) {
    vidi_decode_params p = {0};
    p.sample.temperature = (float)s->temperature;
    p.sample.top_p = (float)s->top_p;
    p.sample.top_k = (int)s->top_k;
    p.max_tokens = (int)s->max_tokens;
    p.stop_at_eos = 1;
    p.n_stop_ids = s->n_stop_ids < VIDI_DECODE_MAX_STOP_IDS ? s->n_stop_ids : VIDI_DECODE_MAX_STOP_IDS;
    memcpy(p.stop_ids, s->stop_ids, (size_t)p.n_stop_ids * sizeof(int32_t));
    return p;
}

/* A KV hand-off's description (PROTOCOL.md §5.3 decode, §5.5 draft): its
 * length and layout, and the prefill's rope_delta. */
typedef struct kv_desc {
    uint64_t len, layers, kv_heads, head_dim;
    int64_t rope_delta;
} kv_desc;

/* The five fields of a KV of len tokens of `pool`. */
static void s_kv_desc_pack(msgpack_packer *pk, const vidi_kv_pool *pool, int64_t len, int64_t rope_delta) {
    int layers, kvh, hd;
    vidi_kv_pool_layout(pool, &layers, &kvh, &hd);
    vidi_mp_kv_u64(pk, "len", (uint64_t)len);
    vidi_mp_kv_u64(pk, "layers", (uint64_t)layers);
    vidi_mp_kv_u64(pk, "kv_heads", (uint64_t)kvh);
    vidi_mp_kv_u64(pk, "head_dim", (uint64_t)hd);
    vidi_mp_kv_i64(pk, "rope_delta", rope_delta);
}

static vidi_status s_kv_desc_parse(const msgpack_object *map, kv_desc *k, vidi_err *err) {
    vidi_status rc;
    if ((rc = vidi_mp_u64(map, "len", 1, 0, 1, 1 << 24, &k->len, err)) ||
        (rc = vidi_mp_u64(map, "layers", 1, 0, 1, 4096, &k->layers, err)) ||
        (rc = vidi_mp_u64(map, "kv_heads", 1, 0, 1, 4096, &k->kv_heads, err)) ||
        (rc = vidi_mp_u64(map, "head_dim", 1, 0, 1, 4096, &k->head_dim, err)))
        return rc;
    return vidi_mp_i64(map, "rope_delta", 1, 0, -(1LL << 40), 1LL << 40, &k->rope_delta, err);
}

/* Does a KV of this description, in `bytes`, fit `pool`'s model? */
static int s_kv_desc_fits(const kv_desc *k, const vidi_kv_pool *pool, size_t bytes) {
    int L, K, D;
    vidi_kv_pool_layout(pool, &L, &K, &D);
    return (int)k->layers == L && (int)k->kv_heads == K && (int)k->head_dim == D &&
           bytes == vidi_kv_seq_export_bytes(pool, (int64_t)k->len);
}

/* The sequence leaves for decode: here, or exported to another worker,
 * with the draft model's sequence of the same prompt when there is one
 * (dseq, its rope_delta drope, dlag the token it has not seen before `last`
 * or -1; ownership of both passes). */
static void s_hand_to_decode(worker *w, req_id r, vidi_kv_seq *seq, const char *ep, const char *ep_ipc, int32_t last,
                             int n_out, int64_t rope_delta, uint64_t rng, const vidi_wire_sampling *samp,
                             int64_t prompt_tokens, const int32_t *ctx, int64_t n_ctx, vidi_kv_seq *dseq,
                             int64_t drope, int32_t dlag) {
    vidi_err err = {0};
    char msg[VIDI_ERR_MSG_MAX + 2 * EP_MAX + 64];
    if (w->move_to[0] && !strcmp(ep, w->data_ep)) /* this worker leaves decode: its sequences go on there */
        ep = w->move_to, ep_ipc = w->move_ipc;
    if (!strcmp(ep, w->data_ep) && (w->roles & ROLE_DECODE)) {
        vidi_decode_params dp = s_decode_params(samp);
        if (vidi_decoder_running(w->dec) >= vidi_decoder_capacity(w->dec)) {
            /* the batch is full: wait (holding the KV) for a sequence to finish */
            for (int i = 0; i < MAX_WAIT; i++)
                if (!w->waits[i].used) {
                    w->waits[i] = (dec_wait){1,   r.req, r.attempt, w->arrivals++, seq,  last, n_out, rope_delta,
                                             prompt_tokens, rng, *samp, dseq, drope, dlag};
                    return;
                }
            vidi_kv_seq_free(seq);
            vidi_kv_seq_free(dseq);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_OVERLOADED, "decode: the batch and its waiting list are full");
            return;
        }
        uint64_t tag = s_seq_tag(w, r, prompt_tokens, samp);
        if (tag == UINT64_MAX || vidi_decoder_add(w->dec, tag, seq, last, n_out, rope_delta, rng, &dp, &err) != VIDI_OK) {
            if (tag == UINT64_MAX) vidi_kv_seq_free(seq);
            else w->metas[tag].used = 0;
            vidi_kv_seq_free(dseq);
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_OVERLOADED, tag == UINT64_MAX ? "decode: too many sequences" : err.msg);
            return;
        }
        if (ctx && n_ctx > 0 && w->spec.mode == VIDI_SPEC_NGRAM &&
            vidi_decoder_add_context(w->dec, tag, ctx, n_ctx, &err) != VIDI_OK)
            fprintf(stderr, "worker %s: speculation without the prompt: %s\n", w->name, err.msg); /* still decodes */
        if (dseq && w->spec.mode == VIDI_SPEC_DRAFT) {
            if (vidi_decoder_add_draft_lag(w->dec, tag, dseq, drope, dlag, &err) != VIDI_OK) /* frees dseq */
                fprintf(stderr, "worker %s: no draft for this sequence: %s\n", w->name, err.msg); /* still decodes */
        } else {
            vidi_kv_seq_free(dseq);
        }
        return;
    }
    /* the draft's KV: a raw frame (PROTOCOL.md §5.5); without it the request still decodes */
    void *dkv = NULL;
    size_t dbytes = 0;
    int64_t dlen = dseq ? vidi_kv_seq_len(dseq) : 0;
    if (dseq) {
        dbytes = vidi_kv_seq_export_bytes(w->dpool, dlen);
        if (!(dkv = malloc(dbytes ? dbytes : 1)) || vidi_kv_seq_export(dseq, 0, dlen, dkv, dbytes, &err) != VIDI_OK) {
            fprintf(stderr, "worker %s: the draft's KV stays here: %s\n", w->name, dkv ? err.msg : "out of memory");
            free(dkv);
            dkv = NULL;
            err = (vidi_err){0};
        }
        vidi_kv_seq_free(dseq);
    }
    int64_t len = vidi_kv_seq_len(seq);
    size_t bytes = vidi_kv_seq_export_bytes(w->pool, len);
    void *kv = NULL, *dst = NULL;
    vidi_wire_ipc d;
    int ipc = s_ipc_take(w, ep, ep_ipc, bytes, &dst, &d);
    if (ipc && (vidi_kv_seq_export_dev(seq, 0, len, dst, bytes, &err) != VIDI_OK ||
                w->be->ops->synchronize(w->be, &err) != VIDI_OK)) {
        fprintf(stderr, "worker %s: KV into the export buffer: %s\n", w->name, err.msg);
        vidi_lease_give(w->leases, d.lease);
        ipc = 0;
    }
    if (!ipc && (!(kv = malloc(bytes ? bytes : 1)) || vidi_kv_seq_export(seq, 0, len, kv, bytes, &err) != VIDI_OK)) {
        free(kv);
        free(dkv);
        vidi_kv_seq_free(seq);
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_INTERNAL, kv ? err.msg : "prefill: out of memory for the KV");
        return;
    }
    vidi_kv_seq_free(seq);
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 13 + vidi_wire_sampling_fields(samp) + (dkv != NULL));
    s_pack_req(&o.pk, r.req, r.attempt);
    vidi_mp_kv_str(&o.pk, "stage", "decode");
    if (dkv) {
        vidi_mp_pack_cstr(&o.pk, "draft");
        msgpack_pack_map(&o.pk, 6 + (dlag >= 0));
        s_kv_desc_pack(&o.pk, w->dpool, dlen, drope);
        vidi_mp_kv_u64(&o.pk, "tensor", 1);
        if (dlag >= 0) vidi_mp_kv_u64(&o.pk, "lag", (uint64_t)dlag);
    }
    s_kv_desc_pack(&o.pk, w->pool, len, rope_delta);
    vidi_mp_kv_u64(&o.pk, "last", (uint64_t)last);
    vidi_mp_kv_u64(&o.pk, "n_out", (uint64_t)n_out);
    vidi_mp_kv_u64(&o.pk, "rng", rng);
    vidi_mp_kv_u64(&o.pk, "prompt_tokens", (uint64_t)prompt_tokens);
    vidi_wire_sampling_pack(&o.pk, samp);
    vidi_mp_pack_cstr(&o.pk, "tensors");
    msgpack_pack_array(&o.pk, 1 + (dkv != NULL));
    int64_t shape[1] = {(int64_t)(bytes / vidi_dtype_size(vidi_kv_pool_dtype(w->pool)))};
    vidi_wire_dtype dt = vidi_kv_pool_dtype(w->pool) == VIDI_DTYPE_BF16 ? VIDI_WIRE_BF16 : VIDI_WIRE_F32;
    if (ipc) vidi_msg_out_tensor_ipc(&o, dt, 1, shape, &d, &err);
    else vidi_msg_out_tensor(&o, dt, 1, shape, kv, bytes, s_free_frame, NULL, &err);
    if (dkv) {
        int64_t dshape[1] = {(int64_t)(dbytes / vidi_dtype_size(vidi_kv_pool_dtype(w->dpool)))};
        vidi_wire_dtype ddt = vidi_kv_pool_dtype(w->dpool) == VIDI_DTYPE_BF16 ? VIDI_WIRE_BF16 : VIDI_WIRE_F32;
        vidi_msg_out_tensor(&o, ddt, 1, dshape, dkv, dbytes, s_free_frame, NULL, &err);
    }
    if (s_deliver(w, ep, VIDI_CMD_WORK, &o, &err) != VIDI_OK) {
        if (ipc) vidi_lease_give(w->leases, d.lease);
        snprintf(msg, sizeof msg, "prefill: to decode %s: %s", ep, err.msg);
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_WORKER_LOST, msg);
    } else if (ipc) {
        w->n_ipc_sent++;
    }
}

/* A prompt's slices in order in one new buffer of backend memory (*dev;
 * NULL when it has no rows): the target's rows (from host frames, or
 * already on the device after CUDA IPC) or, with `draft`, the draft
 * model's (host). */
static vidi_status s_slices_to_device(worker *w, const pend *p, int draft, int64_t total_rows, void **dev,
                                      vidi_err *err) {
    *dev = NULL;
    if (total_rows <= 0) return VIDI_OK;
    int64_t (*row_bytes)(const worker *, int64_t) = draft ? s_draft_bytes : s_act_bytes;
    *dev = w->be->ops->buf_alloc(w->be, (size_t)row_bytes(w, total_rows));
    if (!*dev) return vidi_err_set(err, VIDI_ERR_NOMEM, "prefill: out of memory");
    vidi_status rc = VIDI_OK;
    size_t off = 0;
    for (int i = 0; rc == VIDI_OK && i < p->n_items; i++)
        for (int s = 0; rc == VIDI_OK && s < p->n_slices[i]; s++) {
            const slice_in *sl = &p->slices[i][s];
            size_t b = (size_t)row_bytes(w, sl->rows);
            char *to = (char *)*dev + off;
            rc = draft ? w->be->ops->copy_to_device(w->be, to, sl->ddata, b, err)
                 : sl->on_dev ? w->be->ops->copy(w->be, to, sl->data, b, err)
                              : w->be->ops->copy_to_device(w->be, to, sl->data, b, err);
            off += b;
        }
    return rc;
}

/* The draft model's prefill of the same prompt (PROTOCOL.md §5.5), when
 * this worker has a draft and every slice brought the draft's rows: its
 * sequence (rope_delta in *drope), or NULL (the request decodes without
 * the draft; nothing is lost). */
static vidi_kv_seq *s_draft_prefill(worker *w, const pend *p, const int32_t *ids, int64_t n_ids,
                                    const vidi_prefill_item *items, int64_t total_rows, int64_t *drope) {
    if (!w->dm || !w->dpool) return NULL;
    for (int i = 0; i < p->n_items; i++)
        for (int s = 0; s < p->n_slices[i]; s++)
            if (!p->slices[i][s].ddata) return NULL;
    vidi_err err = {0};
    void *dev = NULL;
    vidi_status rc = s_slices_to_device(w, p, 1, total_rows, &dev, &err);
    vidi_kv_seq *dseq = NULL;
    if (rc == VIDI_OK) rc = vidi_kv_seq_create(w->dpool, &dseq, &err);
    if (rc == VIDI_OK) {
        vidi_tensor vt = vidi_tensor_2d(w->be->act_dtype, dev, total_rows, w->dm->cfg.text.hidden_size);
        vidi_sample_params greedy = {0.0f, 0, 1.0f}; /* its token is not used */
        uint64_t rng = 0;
        vidi_prefill_result dpr = {0};
        rc = vidi_prefill_run(w->dm, dseq, ids, n_ids, items, p->n_items, total_rows ? &vt : NULL, &greedy, &rng, &dpr,
                              &err);
        *drope = dpr.rope_delta;
    }
    if (dev) w->be->ops->buf_free(w->be, dev);
    if (rc != VIDI_OK) {
        fprintf(stderr, "worker %s: the draft's prefill: %s (decoding without it)\n", w->name, err.msg);
        vidi_kv_seq_free(dseq);
        return NULL;
    }
    w->n_draft_prefills++;
    return dseq;
}

static void s_run_prefill(worker *w, pend *p) {
    vidi_err err = {0};
    req_id r = {p->req, p->attempt};
    vidi_prefill_item items[MAX_ITEMS];
    memset(items, 0, sizeof items);
    int64_t total_rows = 0;
    for (int i = 0; i < p->n_items; i++) {
        items[i] = p->slices[i][0].item;
        items[i].kind = p->kinds[i];
        items[i].grid[0] = 0;
        for (int s = 0; s < p->n_slices[i]; s++) {
            items[i].grid[0] += p->slices[i][s].item.grid[0];
            total_rows += p->slices[i][s].rows;
        }
    }
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    void *vis_dev = NULL;
    vidi_kv_seq *seq = NULL;
    vidi_status rc = vidi_prefill_expand_pads(&w->m->cfg, p->ids, p->n_ids, items, p->n_items, &ids, &n_ids, &err);
    if (rc == VIDI_OK) rc = s_slices_to_device(w, p, 0, total_rows, &vis_dev, &err);
    if (rc == VIDI_OK) rc = vidi_kv_seq_create(w->pool, &seq, &err);
    vidi_prefill_result pr = {0};
    uint64_t rng = vidi_rng_seed(p->samp.seed);
    vidi_sparse_ctx sctx;
    int sparse_on = 0;
    if (rc == VIDI_OK && w->sparse && p->n_items) {
        int32_t grids[MAX_ITEMS][3];
        for (int i = 0; i < p->n_items; i++) memcpy(grids[i], items[i].grid, sizeof grids[i]);
        vidi_err e2 = {0};
        sparse_on = vidi_sparse_begin(w->m->text, w->sparse, ids, n_ids, w->m->cfg.image_token_id,
                                      w->m->cfg.video_token_id, (const int32_t(*)[3])grids, p->n_items,
                                      w->m->cfg.vision.spatial_merge_size, &sctx, &e2) == VIDI_OK;
        if (!sparse_on) fprintf(stderr, "worker %s: sparse prefill off for this prompt: %s\n", w->name, e2.msg);
    }
    if (rc == VIDI_OK) {
        vidi_tensor vt = vidi_tensor_2d(w->be->act_dtype, vis_dev, total_rows, w->m->cfg.text.hidden_size);
        vidi_sample_params sp = {(float)p->samp.temperature, (int)p->samp.top_k, (float)p->samp.top_p};
        rc = vidi_prefill_run(w->m, seq, ids, n_ids, items, p->n_items, total_rows ? &vt : NULL, &sp, &rng, &pr,
                              &err);
    }
    if (sparse_on) {
        vidi_sparse_end(w->m->text, &sctx);
        w->n_sparse_prefills++;
        w->sparse_pairs += (uint64_t)sctx.pairs;
        w->sparse_dense_pairs += (uint64_t)sctx.dense_pairs;
        w->sparse_us += (uint64_t)(sctx.ms * 1e3);
        w->sparse_dense_layers += (uint64_t)sctx.dense_layers;
    }
    if (vis_dev) w->be->ops->buf_free(w->be, vis_dev);
    if (rc != VIDI_OK) {
        free(ids);
        vidi_kv_seq_free(seq);
        s_error_req(w, r.req, r.attempt, rc == VIDI_ERR_RANGE ? VIDI_WIRE_OVERLOADED : VIDI_WIRE_BAD_REQUEST,
                    err.msg);
        return;
    }
    w->n_prefill++;
    w->n_prefill_tokens += (uint64_t)n_ids;
    s_send_tokens(w, r.req, r.attempt, 0, pr.first_token);
    vidi_decode_params dp = s_decode_params(&p->samp);
    vidi_decode_state st = vidi_decode_check(&w->m->cfg, &dp, pr.first_token, 1);
    if (st != VIDI_DECODE_RUNNING) {
        free(ids);
        vidi_kv_seq_free(seq);
        s_send_done(w, r.req, r.attempt, st, 1, pr.prompt_tokens);
        return;
    }
    /* the prompt goes along as prompt lookup's context when decode runs here */
    int64_t drope = 0;
    vidi_kv_seq *dseq = s_draft_prefill(w, p, ids, n_ids, items, total_rows, &drope);
    s_hand_to_decode(w, r, seq, p->decode_ep, p->decode_ipc, pr.first_token, 1, pr.rope_delta, rng, &p->samp,
                     pr.prompt_tokens, ids, n_ids, dseq, drope, -1);
    free(ids);
}

static void s_maybe_prefill(worker *w, pend *p) {
    if (!s_pend_complete(p)) return;
    s_run_prefill(w, p);
    s_pend_free(p);
}

static void s_on_prefill(worker *w, const vidi_msg *m, req_id r) {
    vidi_err err = {0};
    pend *p = s_pend(w, r, 1);
    if (!p) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_OVERLOADED, "prefill: too many requests waiting for their media");
        return;
    }
    const msgpack_object *ids, *kinds;
    size_t n_ids, n_kinds;
    vidi_status rc;
    if ((rc = vidi_mp_array(m->header, "ids", 1, 1 << 20, &ids, &n_ids, &err)) ||
        (rc = vidi_mp_array(m->header, "kinds", 1, MAX_ITEMS, &kinds, &n_kinds, &err)) ||
        (rc = vidi_wire_sampling_parse(m->header, &p->samp, &err)) ||
        (rc = s_ep_field(m->header, "decode", p->decode_ep, &err))) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
        s_pend_free(p);
        return;
    }
    s_ipc_field(m->header, "decode_ipc", p->decode_ipc);
    if (!n_ids) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, "prefill: field 'ids' is empty");
        s_pend_free(p);
        return;
    }
    p->ids = malloc(n_ids * sizeof *p->ids);
    if (!p->ids) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_INTERNAL, "prefill: out of memory");
        s_pend_free(p);
        return;
    }
    int32_t vocab = w->m->cfg.text.vocab_size;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER || ids[i].via.u64 >= (uint64_t)vocab) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, "prefill: field 'ids' holds a non-token");
            s_pend_free(p);
            return;
        }
        p->ids[i] = (int32_t)ids[i].via.u64;
    }
    p->n_ids = (int64_t)n_ids;
    p->n_items = (int)n_kinds;
    for (size_t i = 0; i < n_kinds; i++) {
        if (vidi_mp_str_eq(&kinds[i], "video")) p->kinds[i] = VIDI_MEDIA_VIDEO;
        else if (vidi_mp_str_eq(&kinds[i], "image")) p->kinds[i] = VIDI_MEDIA_IMAGE;
        else {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, "prefill: field 'kinds': image or video");
            s_pend_free(p);
            return;
        }
    }
    p->have_work = 1;
    s_maybe_prefill(w, p);
}

static void s_on_embeds(worker *w, const vidi_msg *m, req_id r) {
    vidi_err err = {0};
    const msgpack_object *items = NULL;
    size_t n_items = 0;
    pend *p = s_pend(w, r, 1);
    if (!p) return; /* stale, or no room: the router's timeout retries */
    if (vidi_mp_array(m->header, "items", 1, MAX_ITEMS, &items, &n_items, &err)) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
        return;
    }
    int64_t H = w->m->cfg.text.hidden_size;
    vidi_wire_dtype want = w->be->act_dtype == VIDI_DTYPE_BF16 ? VIDI_WIRE_BF16 : VIDI_WIRE_F32;
    for (size_t i = 0; i < n_items; i++) {
        uint64_t item, slice, ns;
        vidi_media_kind kind = VIDI_MEDIA_IMAGE;
        int32_t grid[3];
        double spgt;
        const vidi_wire_tensor *t = NULL;
        if (vidi_mp_u64(&items[i], "item", 1, 0, 0, MAX_ITEMS - 1, &item, &err) ||
            vidi_mp_u64(&items[i], "n_slices", 1, 1, 1, 64, &ns, &err) ||
            vidi_mp_u64(&items[i], "slice", 1, 0, 0, ns - 1, &slice, &err) || s_kind_field(&items[i], &kind, &err) ||
            s_grid_field(&items[i], grid, &err) ||
            vidi_mp_f64(&items[i], "second_per_grid_t", 0, 0.0, 0.0, 1e6, &spgt, &err) ||
            !(t = s_tensor_field(m, &items[i], 1, &err))) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
            return;
        }
        vidi_prefill_item pi = {.kind = kind, .second_per_grid_t = (float)spgt};
        memcpy(pi.grid, grid, sizeof grid);
        int64_t rows = vidi_prefill_item_rows(&w->m->cfg, &pi);
        if (t->dtype != want || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != H) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR, "embeds: rows do not match the grid or the model");
            return;
        }
        const vidi_wire_tensor *dt = NULL; /* the draft model's rows, optional (PROTOCOL.md §5.5) */
        if (vidi_mp_get(&items[i], "draft_tensor") && !(dt = s_tensor_named(m, &items[i], "draft_tensor", 0, &err))) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
            return;
        }
        if (dt && w->dm &&
            (dt->dtype != want || dt->ndim != 2 || dt->shape[0] != rows || dt->shape[1] != w->dm->cfg.text.hidden_size)) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR,
                        "embeds: the draft's rows do not match the grid or the draft model");
            return;
        }
        if (!p->n_slices[item]) {
            p->slices[item] = calloc(ns, sizeof(slice_in));
            if (!p->slices[item]) return;
            p->n_slices[item] = (int)ns;
        } else if ((uint64_t)p->n_slices[item] != ns) {
            s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, "embeds: slices disagree on n_slices");
            return;
        }
        slice_in *sl = &p->slices[item][slice];
        if (sl->have) continue;
        if (t->frame < 0) {
            /* CUDA IPC: copy the owner's range into our memory now (s_handle releases it) */
            const void *src = s_ipc_source(w, t, &err);
            void *mine = src ? w->be->ops->buf_alloc(w->be, t->bytes) : NULL;
            if (src && !mine) vidi_err_set(&err, VIDI_ERR_NOMEM, "embeds: out of device memory");
            if (mine && (w->be->ops->copy(w->be, mine, src, t->bytes, &err) != VIDI_OK ||
                         w->be->ops->synchronize(w->be, &err) != VIDI_OK)) {
                w->be->ops->buf_free(w->be, mine);
                mine = NULL;
            }
            if (!mine) {
                s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR, err.msg);
                return;
            }
            sl->data = mine;
            sl->on_dev = 1;
            w->n_ipc_received++;
        } else {
            sl->data = malloc(t->bytes ? t->bytes : 1);
            if (!sl->data) return;
            memcpy(sl->data, t->data, t->bytes);
        }
        if (dt && w->dm && (sl->ddata = malloc(dt->bytes ? dt->bytes : 1)) != NULL)
            memcpy(sl->ddata, dt->data, dt->bytes);
        sl->rows = rows;
        sl->item = pi;
        sl->have = 1;
    }
    s_maybe_prefill(w, p);
}

/* ---- decode ---- */

static void s_on_decode(worker *w, const vidi_msg *m, req_id r) {
    vidi_err err = {0};
    uint64_t last, n_out, rng, prompt_tokens;
    kv_desc kd, dd = {0};
    vidi_wire_sampling samp;
    if (s_kv_desc_parse(m->header, &kd, &err) ||
        vidi_mp_u64(m->header, "last", 1, 0, 0, INT32_MAX, &last, &err) ||
        vidi_mp_u64(m->header, "n_out", 1, 0, 1, VIDI_WIRE_MAX_TOKENS, &n_out, &err) ||
        vidi_mp_u64(m->header, "rng", 1, 0, 0, UINT64_MAX, &rng, &err) ||
        vidi_mp_u64(m->header, "prompt_tokens", 0, 0, 0, UINT64_MAX, &prompt_tokens, &err) ||
        vidi_wire_sampling_parse(m->header, &samp, &err)) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
        return;
    }
    size_t want = vidi_kv_seq_export_bytes(w->pool, (int64_t)kd.len);
    /* the draft model's KV (PROTOCOL.md §5.5): checked like the target's; used when we draft */
    const msgpack_object *dmap = NULL;
    const vidi_wire_tensor *dt = NULL;
    uint64_t dlag = UINT64_MAX; /* "lag": a token the draft has not seen before `last` (a moved sequence) */
    if (vidi_mp_map(m->header, "draft", 0, &dmap, &err) != VIDI_OK || (dmap && s_kv_desc_parse(dmap, &dd, &err)) ||
        (dmap && !(dt = s_tensor_named(m, dmap, "tensor", 0, &err))) ||
        (dmap && vidi_mp_u64(dmap, "lag", 0, UINT64_MAX, 0, INT32_MAX, &dlag, &err) != VIDI_OK)) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, err.msg);
        return;
    }
    if (m->n_tensors != 1 + (dt != NULL) || dt == &m->tensors[0] ||
        !s_kv_desc_fits(&kd, w->pool, m->tensors[0].bytes)) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR, "decode: the KV does not fit this model's layout");
        return;
    }
    if (dt && w->dpool && !s_kv_desc_fits(&dd, w->dpool, dt->bytes)) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR,
                    "decode: the draft's KV does not fit this worker's draft model");
        return;
    }
    const vidi_wire_tensor *t = &m->tensors[0];
    const void *src = t->frame >= 0 ? t->data : s_ipc_source(w, t, &err);
    if (!src) {
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_TENSOR, err.msg);
        return;
    }
    vidi_kv_seq *seq = NULL;
    vidi_status rc = vidi_kv_seq_create(w->pool, &seq, &err);
    if (rc == VIDI_OK && t->frame >= 0) rc = vidi_kv_seq_import(seq, src, want, (int64_t)kd.len, &err);
    else if (rc == VIDI_OK) {
        /* CUDA IPC: scattered into our pool from the owner's range, then waited for (s_handle releases it) */
        rc = vidi_kv_seq_import_dev(seq, src, want, (int64_t)kd.len, &err);
        if (rc == VIDI_OK) rc = w->be->ops->synchronize(w->be, &err);
        if (rc == VIDI_OK) w->n_ipc_received++;
    }
    if (rc != VIDI_OK) {
        vidi_kv_seq_free(seq);
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_OVERLOADED, err.msg);
        return;
    }
    w->n_decode_in++;
    vidi_kv_seq *dseq = NULL;
    if (dt && w->dpool && w->spec.mode == VIDI_SPEC_DRAFT &&
        (vidi_kv_seq_create(w->dpool, &dseq, &err) != VIDI_OK ||
         vidi_kv_seq_import(dseq, dt->data, dt->bytes, (int64_t)dd.len, &err) != VIDI_OK)) {
        fprintf(stderr, "worker %s: the draft's KV: %s (decoding without it)\n", w->name, err.msg);
        vidi_kv_seq_free(dseq);
        dseq = NULL;
    }
    s_hand_to_decode(w, r, seq, w->data_ep, "", (int32_t)last, (int)n_out, kd.rope_delta, rng, &samp,
                     (int64_t)prompt_tokens, NULL, 0, dseq, dd.rope_delta, dlag <= INT32_MAX ? (int32_t)dlag : -1);
}

/* DRAIN's and ROLE's `roles` (names of k_role_names; others ignored) as a mask. */
static int s_roles_mask(const msgpack_object *roles, size_t n) {
    int mask = 0;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            if (vidi_mp_str_eq(&roles[i], k_role_names[k])) mask |= 1 << k;
    return mask;
}

/* DRAIN away from decode with a worker to go on (PROTOCOL.md §5.6): every
 * waiting and running sequence is handed there as a decode WORK (its KV, the
 * token not fed yet, the tokens emitted so far, the sampler's state, the
 * draft's KV when it is in step); a swapped-out one finishes here. */
static void s_move_all(worker *w) {
    for (int i = 0; i < MAX_WAIT; i++) {
        if (!w->waits[i].used) continue;
        dec_wait d = w->waits[i];
        w->waits[i].used = 0;
        s_hand_to_decode(w, (req_id){d.req, d.attempt}, d.seq, w->data_ep, "", d.last, d.n_out, d.rope_delta, d.rng,
                         &d.samp, d.prompt_tokens, NULL, 0, d.dseq, d.drope, d.dlag);
        w->n_moved++;
    }
    for (int i = 0; w->dec && i < (int)(sizeof w->metas / sizeof w->metas[0]); i++) {
        vidi_decoder_taken t;
        if (!w->metas[i].used || !vidi_decoder_take(w->dec, (uint64_t)i, &t)) continue;
        dec_meta d = w->metas[i];
        w->metas[i].used = 0;
        s_hand_to_decode(w, (req_id){d.req, d.attempt}, t.seq, w->data_ep, "", t.pending, t.n_out, t.rope_delta, t.rng,
                         &d.samp, d.prompt_tokens, NULL, 0, t.dseq, t.drope, t.dlag);
        w->n_moved++;
    }
}

/* DRAIN {roles, decode_to?}: the router places nothing new here; ROLE follows
 * once nothing needs this worker. Leaving decode with decode_to named, the
 * sequences go on there now (and any that arrive later follow them). */
static void s_on_drain(worker *w, const vidi_msg *m) {
    const msgpack_object *roles;
    const char *to = NULL, *ipc = NULL;
    size_t n = 0, tn = 0, in = 0;
    int mask = vidi_mp_array(m->header, "roles", 0, 4, &roles, &n, NULL) == VIDI_OK ? s_roles_mask(roles, n) : 0;
    vidi_mp_str(m->header, "decode_to", 0, EP_MAX - 1, &to, &tn, NULL);
    vidi_mp_str(m->header, "decode_to_ipc", 0, IPC_ID_MAX - 1, &ipc, &in, NULL);
    fprintf(stderr, "worker %s: draining for a role switch%s%.*s\n", w->name, to ? "; sequences go on at " : "",
            (int)tn, to ? to : "");
    if (!to || !tn || !(w->roles & ROLE_DECODE) || (mask & ROLE_DECODE)) return;
    snprintf(w->move_to, sizeof w->move_to, "%.*s", (int)tn, to);
    snprintf(w->move_ipc, sizeof w->move_ipc, "%.*s", (int)in, ipc ? ipc : "");
    s_move_all(w);
}

/* Oldest waiting sequences into the batch while it has room. */
static void s_admit_waiting(worker *w) {
    while (vidi_decoder_running(w->dec) < vidi_decoder_capacity(w->dec)) {
        int best = -1;
        for (int i = 0; i < MAX_WAIT; i++)
            if (w->waits[i].used && (best < 0 || w->waits[i].arrival < w->waits[best].arrival)) best = i;
        if (best < 0) return;
        dec_wait d = w->waits[best];
        w->waits[best].used = 0;
        s_hand_to_decode(w, (req_id){d.req, d.attempt}, d.seq, w->data_ep, "", d.last, d.n_out, d.rope_delta, d.rng,
                         &d.samp, d.prompt_tokens, NULL, 0, d.dseq, d.drope, d.dlag);
    }
}

static void s_decode_step(worker *w) {
    s_admit_waiting(w);
    int n = vidi_decoder_running(w->dec);
    if (!n) return;
    vidi_decode_event *ev = malloc((size_t)vidi_decoder_max_events(w->dec) * sizeof *ev);
    int n_ev = 0;
    vidi_err err = {0};
    if (!ev) {
        fprintf(stderr, "worker %s: decode step: out of memory\n", w->name);
        return;
    }
    s_busy_begin(w, 3);
    vidi_status step_rc = vidi_decoder_step(w->dec, ev, &n_ev, &err);
    s_busy_end(w, 3);
    if (step_rc != VIDI_OK) {
        fprintf(stderr, "worker %s: decode step: %s\n", w->name, err.msg);
        /* fail every running sequence rather than spin */
        for (int i = 0; i < (int)(sizeof w->metas / sizeof w->metas[0]); i++)
            if (w->metas[i].used) {
                vidi_decoder_cancel(w->dec, (uint64_t)i);
                s_error_req(w, w->metas[i].req, w->metas[i].attempt, VIDI_WIRE_INTERNAL, err.msg);
                w->metas[i].used = 0;
            }
        free(ev);
        return;
    }
    for (int e = 0; e < n_ev; e++) {
        dec_meta *d = &w->metas[ev[e].tag];
        if (ev[e].state == VIDI_DECODE_PREEMPTED) {
            s_error_req(w, d->req, d->attempt, VIDI_WIRE_OVERLOADED, "decode: preempted (KV pool full); recompute");
            d->used = 0;
            continue;
        }
        s_send_tokens(w, d->req, d->attempt, ev[e].index, ev[e].token);
        if (ev[e].state != VIDI_DECODE_RUNNING) {
            s_send_done(w, d->req, d->attempt, ev[e].state, ev[e].index + 1, d->prompt_tokens);
            d->used = 0;
        }
    }
    free(ev);
}

static int s_is_dead(const worker *w, uint64_t req, uint64_t attempt) {
    int n = w->n_dead < TOMBSTONES ? w->n_dead : TOMBSTONES;
    for (int i = 0; i < n; i++)
        if (w->dead_req[i] == req && attempt <= w->dead_attempt[i]) return 1;
    return 0;
}

/* CANCEL {req, attempt}: that attempt and older ones of the request end here
 * (a newer attempt's work, which may arrive first on the data socket, stays),
 * and WORK of them that arrives later is dropped. */
static void s_on_cancel(worker *w, const vidi_msg *m) {
    uint64_t req, attempt;
    if (vidi_mp_u64(m->header, "req", 1, 0, 0, UINT64_MAX, &req, NULL) != VIDI_OK ||
        vidi_mp_u64(m->header, "attempt", 0, UINT64_MAX - 1, 0, UINT64_MAX - 1, &attempt, NULL) != VIDI_OK)
        return;
    int k = w->n_dead++ % TOMBSTONES;
    w->dead_req[k] = req;
    w->dead_attempt[k] = attempt;
    for (int i = 0; i < MAX_PEND; i++)
        if (w->pends[i].used && w->pends[i].req == req && w->pends[i].attempt <= attempt) s_pend_free(&w->pends[i]);
    for (int i = 0; i < (int)(sizeof w->metas / sizeof w->metas[0]); i++)
        if (w->metas[i].used && w->metas[i].req == req && w->metas[i].attempt <= attempt) {
            vidi_decoder_cancel(w->dec, (uint64_t)i);
            w->metas[i].used = 0;
        }
    for (int i = 0; i < MAX_WAIT; i++)
        if (w->waits[i].used && w->waits[i].req == req && w->waits[i].attempt <= attempt) {
            vidi_kv_seq_free(w->waits[i].seq);
            vidi_kv_seq_free(w->waits[i].dseq);
            w->waits[i].used = 0;
        }
}

static void s_on_stats(worker *w) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    vidi_mmcache_counters c = vidi_mmcache_stats(w->cache);
    vidi_decoder_stats ds = {0};
    if (w->dec) ds = vidi_decoder_get_stats(w->dec);
    /* the pairs go to their own buffer first, counted, so the map's size is always theirs */
    msgpack_sbuffer kv;
    msgpack_packer kp;
    msgpack_sbuffer_init(&kv);
    msgpack_packer_init(&kp, &kv, msgpack_sbuffer_write);
    uint32_t n_kv = 0;
#define KV(k, v)                                                                                                      \
    do {                                                                                                              \
        vidi_mp_pack_cstr(&kp, k);                                                                                    \
        msgpack_pack_uint64(&kp, (uint64_t)(v));                                                                      \
        n_kv++;                                                                                                       \
    } while (0)
    KV("media", w->n_media);
    KV("encode", w->n_encode);
    KV("encode_batches", w->n_encode_batches);
    KV("encode_cached", w->n_encode_cached);
    KV("prefill", w->n_prefill);
    KV("encode_tokens", w->n_encode_tokens);
    KV("prefill_tokens", w->n_prefill_tokens);
    KV("decode_in", w->n_decode_in);
    KV("decode_moved", w->n_moved);
    KV("tokens", w->n_tokens);
    KV("errors", w->n_errors);
    KV("bad_messages", w->n_bad_msgs);
    KV("mm_cache_entries", c.entries);
    KV("mm_cache_bytes", c.bytes_used);
    KV("mm_cache_hits", c.hits);
    KV("mm_cache_misses", c.misses);
    KV("mm_cache_evictions", c.evictions);
    KV("ipc_sent", w->n_ipc_sent);
    KV("ipc_received", w->n_ipc_received);
    KV("ipc_expired", w->n_ipc_expired);
    KV("ipc_full", w->n_ipc_full);
    KV("ipc_leases", w->leases ? vidi_lease_held(w->leases) : 0);
    KV("kv_swapped_out", ds.swapped_out);
    KV("kv_swapped_in", ds.swapped_in);
    KV("kv_preempted", ds.preempted);
    KV("spec_steps", ds.spec_steps);
    KV("spec_proposed", ds.spec_proposed);
    KV("spec_accepted", ds.spec_accepted);
    KV("spec_emitted", ds.spec_emitted);
    for (int i = 0; i < VIDI_SPEC_MAX_K; i++) {
        char name[32];
        snprintf(name, sizeof name, "spec_proposed_at_%d", i);
        KV(name, ds.spec_proposed_at[i]);
        snprintf(name, sizeof name, "spec_accepted_at_%d", i);
        KV(name, ds.spec_accepted_at[i]);
    }
    KV("draft_encodes", w->n_draft_encodes);
    KV("draft_prefills", w->n_draft_prefills);
    KV("sparse_prefills", w->n_sparse_prefills);
    KV("sparse_pairs", w->sparse_pairs);
    KV("sparse_dense_pairs", w->sparse_dense_pairs);
    KV("sparse_us", w->sparse_us);
    KV("sparse_dense_layers", w->sparse_dense_layers);
    KV("media_us", atomic_load(&w->busy_us[0]));
    KV("encode_us", atomic_load(&w->busy_us[1]));
    KV("prefill_us", atomic_load(&w->busy_us[2]));
    KV("decode_us", atomic_load(&w->busy_us[3]));
#undef KV
    msgpack_pack_map(&o.pk, n_kv);
    msgpack_sbuffer_write(&o.sbuf, kv.data, kv.size);
    msgpack_sbuffer_destroy(&kv);
    s_to_router(w, VIDI_CMD_STATS, &o);
}

static vidi_status s_make_pool(worker *w, vidi_err *err) {
    if (w->pool) return VIDI_OK;
    /* a decode step's rows: every sequence's next token, and up to k drafts each when speculating */
    int rows = w->max_batch * (w->spec.mode == VIDI_SPEC_OFF ? 1 : w->spec.k + 1);
    vidi_kv_pool_params kp = {.block_size = 16, .n_blocks = w->kv_blocks, .max_seq_len = 32768, .max_batch = rows};
    vidi_status rc = vidi_kv_pool_create(w->m->text, &kp, &w->pool, err);
    if (rc == VIDI_OK) rc = vidi_decoder_create(w->m, w->pool, w->max_batch, &w->dec, err);
    if (rc == VIDI_OK) vidi_decoder_set_swap(w->dec, (uint64_t)w->kv_swap_mb << 20);
    /* the draft model's pool: its prefill here, its sequences in decode (PROTOCOL.md §5.5) */
    vidi_kv_pool_params dkp = kp;
    dkp.max_batch = 2 * w->max_batch; /* a draft step: a lagging accepted draft and the pending token */
    if (rc == VIDI_OK && w->dm) rc = vidi_kv_pool_create(w->dm->text, &dkp, &w->dpool, err);
    if (rc == VIDI_OK && w->spec.mode == VIDI_SPEC_DRAFT)
        rc = vidi_decoder_set_draft(w->dec, w->dm, w->dpool, w->spec.k, err);
    else if (rc == VIDI_OK) rc = vidi_decoder_set_spec(w->dec, &w->spec, err);
    if (rc == VIDI_OK) vidi_decoder_set_spec_batch(w->dec, w->spec_batch);
    return rc;
}

/* --draft DIR: the draft model on our backend, refused unless the media
 * stage's patches and the prompt's ids serve it as they are (PROTOCOL.md
 * §5.5): the same patch, merge and temporal patch sizes, pixel limits and
 * special ids, its vocabulary the target's or a prefix of it. */
static vidi_status s_load_draft(worker *w, vidi_err *err) {
    vidi_preproc_config dpp;
    vidi_status rc = vidi_model_load(w->draft_dir, w->be, &w->dm, err);
    if (rc == VIDI_OK) rc = vidi_preproc_config_load(w->draft_dir, &dpp, err);
    if (rc != VIDI_OK) return rc;
    const vidi_model_config *t = &w->m->cfg, *d = &w->dm->cfg;
    if ((rc = vidi_spec_draft_check(t, d, err)) != VIDI_OK) return rc;
    if (d->vision.patch_size != t->vision.patch_size || d->vision.spatial_merge_size != t->vision.spatial_merge_size ||
        d->vision.temporal_patch_size != t->vision.temporal_patch_size || d->vision.in_channels != t->vision.in_channels ||
        dpp.min_pixels != w->pp.min_pixels || dpp.max_pixels != w->pp.max_pixels ||
        dpp.patch_size != w->pp.patch_size || dpp.merge_size != w->pp.merge_size ||
        dpp.temporal_patch_size != w->pp.temporal_patch_size || dpp.rescale_factor != w->pp.rescale_factor ||
        memcmp(dpp.image_mean, w->pp.image_mean, sizeof dpp.image_mean) != 0 ||
        memcmp(dpp.image_std, w->pp.image_std, sizeof dpp.image_std) != 0)
        return vidi_err_set(err, VIDI_ERR_INVALID, "the draft's vision input (patch %d, merge %d, temporal patch %d, "
                            "pixels %lld..%lld, its mean and std) is not the target's (patch %d, merge %d, temporal "
                            "patch %d, pixels %lld..%lld)",
                            d->vision.patch_size, d->vision.spatial_merge_size, d->vision.temporal_patch_size,
                            (long long)dpp.min_pixels, (long long)dpp.max_pixels, t->vision.patch_size,
                            t->vision.spatial_merge_size, t->vision.temporal_patch_size, (long long)w->pp.min_pixels,
                            (long long)w->pp.max_pixels);
    const char *base = strrchr(w->draft_dir, '/');
    base = base && base[1] ? base + 1 : w->draft_dir;
    snprintf(w->draft_name, sizeof w->draft_name, "%s", base);
    return VIDI_OK;
}

/* --sparse: the prefill role's sparse attention configuration (once). */
static vidi_status s_load_sparse(worker *w, vidi_err *err) {
    if (w->sparse || !strcmp(w->sparse_opt, "off")) return VIDI_OK;
    char sp[4096];
    int auto_ = !strcmp(w->sparse_opt, "auto");
    if (auto_) snprintf(sp, sizeof sp, "%s/sparse_config.json", w->model_dir);
    else snprintf(sp, sizeof sp, "%s", w->sparse_opt);
    if (!w->be->host_memory && !w->be->ops->sparse_attention) {
        if (!auto_) fprintf(stderr, "worker %s: backend %s has no sparse attention; dense here\n", w->name, w->be->name);
        return VIDI_OK;
    }
    if (auto_ && access(sp, R_OK) != 0) return VIDI_OK;
    vidi_status rc = vidi_sparse_config_load(sp, w->m->cfg.text.num_layers, w->m->cfg.text.num_heads, &w->sparse, err);
    if (rc == VIDI_OK) fprintf(stderr, "worker %s: sparse prefill with %s\n", w->name, sp);
    return rc;
}

static int s_parse_roles(const char *s, int *roles);

/* The KV pools and the decoder go (no prefill or decode role here). */
static void s_free_pool(worker *w) {
    vidi_decoder_free(w->dec);
    vidi_kv_pool_free(w->pool);
    vidi_kv_pool_free(w->dpool);
    w->dec = NULL, w->pool = w->dpool = NULL;
}

/* After a switch away from decode: past MOVE_GRACE_MS no late hand-off is
 * expected; the pool goes unless a role here needs it. */
static void s_move_expire(worker *w, int64_t now) {
    if (!w->move_to[0] || !w->move_until_ms || now < w->move_until_ms || (w->roles & ROLE_DECODE)) return;
    w->move_to[0] = w->move_ipc[0] = 0;
    w->move_until_ms = 0;
    if (!(w->roles & (ROLE_PREFILL | ROLE_DECODE)) && w->pool && !(w->dec && vidi_decoder_running(w->dec) > 0))
        s_free_pool(w);
}

/* The worker's roles into --roles-file ("encode,prefill\n"), replaced whole
 * (written aside, then renamed): `vidi up` restarts a worker that dies after
 * a switch with the roles it had then, not those of its command line. */
static void s_write_roles_file(const worker *w) {
    if (!w->roles_file) return;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", w->roles_file);
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL;
    for (int k = 0, n = 0; ok && k < 4; k++)
        if (w->roles >> k & 1) ok = fprintf(f, "%s%s", n++ ? "," : "", k_role_names[k]) > 0;
    if (f) ok = fputc('\n', f) != EOF && fclose(f) == 0 && ok;
    if (!ok || rename(tmp, w->roles_file) != 0)
        fprintf(stderr, "worker %s: --roles-file %s: %s\n", w->name, w->roles_file, strerror(errno));
}

/* ROLE {roles}: the router moves this worker to other roles once it has
 * drained (PROTOCOL.md §5.6). The model stays; what the old roles held and
 * the new ones do not need goes (the KV pools and the decoder without
 * prefill and decode, the MM-token cache's entries without encode), what the
 * new ones need is made, and READY names the roles it holds: the old ones
 * when it refuses (work of a role it would drop is still here, or the new
 * role's memory cannot be had; ERROR says which). */
static void s_on_role(worker *w, const vidi_msg *m) {
    vidi_err err = {0};
    const msgpack_object *roles;
    size_t n;
    int64_t t0 = vidi_now_ms();
    int mask = vidi_mp_array(m->header, "roles", 1, 4, &roles, &n, &err) == VIDI_OK ? s_roles_mask(roles, n) : 0;
    if (!mask) {
        s_error_plain(w, VIDI_WIRE_BAD_FIELD, err.msg[0] ? err.msg : "ROLE: field 'roles' names no role");
        s_send_ready(w);
        return;
    }
    int pends = 0, waits = 0, running = w->dec ? vidi_decoder_running(w->dec) : 0;
    for (int i = 0; i < MAX_PEND; i++) pends += w->pends[i].used;
    for (int i = 0; i < MAX_WAIT; i++) waits += w->waits[i].used;
    char why[256] = "";
    if ((w->roles & ROLE_PREFILL) && !(mask & ROLE_PREFILL) && pends)
        snprintf(why, sizeof why, "%d prefills still wait for their embeddings", pends);
    else if ((w->roles & ROLE_DECODE) && !(mask & ROLE_DECODE) && (running || waits))
        snprintf(why, sizeof why, "%d sequences still decode here (%d waiting)", running + waits, waits);
    else if ((mask & ROLE_PREFILL) && s_load_sparse(w, &err) != VIDI_OK)
        snprintf(why, sizeof why, "sparse prefill: %.200s", err.msg);
    else if ((mask & (ROLE_PREFILL | ROLE_DECODE)) && s_make_pool(w, &err) != VIDI_OK)
        snprintf(why, sizeof why, "the KV pool: %.200s", err.msg);
    if (why[0]) {
        char msg[320];
        snprintf(msg, sizeof msg, "ROLE refused: %s", why);
        fprintf(stderr, "worker %s: %s\n", w->name, msg);
        s_error_plain(w, VIDI_WIRE_BAD_REQUEST, msg);
        s_send_ready(w);
        return;
    }
    if (w->move_to[0] && !(mask & ROLE_DECODE)) {
        /* a prefill planned before the drain may still hand a sequence here: it goes on to
         * move_to through the pool, which stays for MOVE_GRACE_MS (s_move_expire) */
        w->move_until_ms = vidi_now_ms() + MOVE_GRACE_MS;
    } else if (!(mask & (ROLE_PREFILL | ROLE_DECODE)) && w->pool) { /* no sequences here any more */
        s_free_pool(w);
    }
    if ((w->roles & ROLE_ENCODE) && !(mask & ROLE_ENCODE)) { /* the router forgets what it held */
        vidi_mmcache *c = NULL;
        if (vidi_mmcache_create(w->mm_budget, s_cache_free, NULL, &c, &err) == VIDI_OK) {
            vidi_mmcache_free(w->cache);
            w->cache = c;
        }
    }
    int from = w->roles;
    w->roles = mask;
    if (mask & ROLE_DECODE) w->move_to[0] = w->move_ipc[0] = 0, w->move_until_ms = 0; /* decoding here again */
    fprintf(stderr, "worker %s: roles 0x%x -> 0x%x in %lld ms\n", w->name, from, mask, (long long)(vidi_now_ms() - t0));
    s_write_roles_file(w);
    s_send_ready(w);
}

/* ---- dispatch ---- */

static void s_on_work(worker *w, vidi_msg *m);

static void s_handle(worker *w, vidi_msg *m, int from_back) {
    if (from_back) vidi_liveness_heard(&w->live, vidi_now_ms());
    switch (m->cmd) {
    case VIDI_CMD_READY:
    case VIDI_CMD_HEARTBEAT: return;
    case VIDI_CMD_CANCEL: s_on_cancel(w, m); return;
    case VIDI_CMD_STATS: s_on_stats(w); return;
    case VIDI_CMD_DISCONNECT: g_stop = 1; return;
    case VIDI_CMD_DRAIN: s_on_drain(w, m); return;
    case VIDI_CMD_ROLE: s_on_role(w, m); return;
    case VIDI_CMD_ERROR:
        /* never answered; but a router that does not know us (it dropped us while we were
         * busy, or it restarted) asks for READY */
        if (from_back && !vidi_mp_get(m->header, "req") && vidi_mp_str_eq(vidi_mp_get(m->header, "code"), "bad_command"))
            s_send_ready(w);
        return;
    case VIDI_CMD_RELEASE:
        if (!from_back) {
            s_on_release(w, m);
            return;
        }
        break;
    case VIDI_CMD_WORK:
        s_on_work(w, m);
        /* every CUDA IPC range of the message has been copied, or never will be */
        for (int i = 0; i < m->n_tensors; i++) s_ipc_release(w, &m->tensors[i]);
        return;
    default: break;
    }
    w->n_bad_msgs++;
    if (from_back)
        s_error_plain(w, VIDI_WIRE_BAD_COMMAND,
                      "a worker takes WORK, CANCEL, DRAIN, ROLE, STATS, HEARTBEAT and DISCONNECT from the router");
}

/* WORK: to the stage's handler. */
static void s_on_work(worker *w, vidi_msg *m) {
    vidi_err err = {0};
    req_id r;
    if (s_req_fields(m, &r, &err) != VIDI_OK) {
        w->n_bad_msgs++;
        return;
    }
    if (s_is_dead(w, r.req, r.attempt)) return; /* cancelled: late work of it is dropped */
    const msgpack_object *st = vidi_mp_get(m->header, "stage");
    int need = 0;
    void (*fn)(worker *, const vidi_msg *, req_id) = NULL;
    int stage = 0; /* busy_us index */
    if (vidi_mp_str_eq(st, "media")) need = ROLE_MEDIA, fn = s_on_media, stage = 0;
    else if (vidi_mp_str_eq(st, "encode")) need = ROLE_ENCODE, fn = s_on_encode, stage = 1;
    else if (vidi_mp_str_eq(st, "embeds")) need = ROLE_PREFILL, fn = s_on_embeds, stage = 2;
    else if (vidi_mp_str_eq(st, "prefill")) need = ROLE_PREFILL, fn = s_on_prefill, stage = 2;
    else if (vidi_mp_str_eq(st, "decode")) need = ROLE_DECODE, fn = s_on_decode, stage = 3;
    /* a decode WORK planned before this worker left decode: it follows the moved sequences */
    int follows = need == ROLE_DECODE && w->move_to[0] && w->pool;
    if (!fn || !((w->roles & need) || follows)) {
        w->n_bad_msgs++;
        char msg[256];
        snprintf(msg, sizeof msg, "WORK of stage %s for a role worker %.128s does not hold", k_role_names[stage], w->name);
        s_error_req(w, r.req, r.attempt, VIDI_WIRE_BAD_FIELD, fn ? msg : "WORK: unknown stage");
        return;
    }
    s_busy_begin(w, stage);
    fn(w, m, r);
    s_busy_end(w, stage);
}

/* ---- the loop ---- */

/* The heartbeat thread: HEARTBEAT on its own socket every interval, so the
 * router hears from this worker while the main loop computes (a long
 * prefill, the first CUDA calls). The router maps "h.NAME.PID" to the worker
 * whose back socket is "w.NAME.PID.GEN". */
static void *s_heartbeat_thread(void *arg) {
    worker *w = arg;
    char id[200];
    snprintf(id, sizeof id, VIDI_HB_PREFIX "%s.%d", w->name, (int)getpid());
    vidi_err err = {0};
    void *s = vidi_sock_open_id(w->ctx, VIDI_SOCK_WORKER, w->router_ep, id, 0, NULL, 0, &err);
    if (!s) {
        fprintf(stderr, "worker %s: heartbeat socket: %s\n", w->name, err.msg);
        return NULL;
    }
    int zero = 0;
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &zero, sizeof zero);
    while (!atomic_load(&w->hb_stop)) {
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        /* the load: time in each stage's work so far, the work in progress included */
        uint64_t busy[4], now = s_now_us();
        int cur = atomic_load(&w->busy_stage);
        uint64_t since = atomic_load(&w->busy_since);
        for (int k = 0; k < 4; k++) busy[k] = atomic_load(&w->busy_us[k]);
        if (cur >= 0 && cur < 4 && now > since && atomic_load(&w->busy_stage) == cur) busy[cur] += now - since;
        msgpack_pack_map(&o.pk, 1);
        vidi_mp_pack_cstr(&o.pk, "load");
        msgpack_pack_map(&o.pk, 1);
        vidi_mp_pack_cstr(&o.pk, "busy_us");
        msgpack_pack_array(&o.pk, 4);
        for (int k = 0; k < 4; k++) msgpack_pack_uint64(&o.pk, busy[k]);
        vidi_msg_send(s, NULL, 0, VIDI_CMD_HEARTBEAT, &o, NULL); /* dropped when the router is not there */
        vidi_msg_out_free(&o);
        for (int64_t t = 0; t < w->heartbeat_ms && !atomic_load(&w->hb_stop); t += 50) usleep(50000);
    }
    zmq_close(s);
    return NULL;
}

static int s_connect_back(worker *w, vidi_err *err) {
    if (w->back) zmq_close(w->back);
    char id[200];
    snprintf(id, sizeof id, VIDI_WORKER_PREFIX "%s.%d.%d", w->name, (int)getpid(), w->back_gen++);
    w->back = vidi_sock_open_id(w->ctx, VIDI_SOCK_WORKER, w->router_ep, id, 0, NULL, 0, err);
    if (!w->back) return -1;
    vidi_liveness_init(&w->live, w->heartbeat_ms, w->liveness, vidi_now_ms());
    s_send_ready(w);
    return 0;
}

static int s_parse_roles(const char *s, int *roles) {
    *roles = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "all")) *roles |= ROLE_ALL;
        else {
            int k = -1;
            for (int i = 0; i < 4; i++)
                if (!strcmp(t, k_role_names[i])) k = i;
            if (k < 0) return -1;
            *roles |= 1 << k;
        }
    }
    return *roles ? 0 : -1;
}

/* This host's identity for CUDA IPC: its boot id (its host name when that
 * cannot be read). Two workers with the same one can map each other's memory. */
static void s_host_identity(char out[IPC_ID_MAX]) {
    char id[IPC_ID_MAX - 8] = {0};
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f || !fgets(id, sizeof id, f)) {
        id[0] = 0;
        gethostname(id, sizeof id - 1);
    }
    if (f) fclose(f);
    id[strcspn(id, "\n")] = 0;
    snprintf(out, IPC_ID_MAX, "host:%s", id);
}

static void s_usage(FILE *f) {
    fprintf(f, "usage: vidi worker --router ENDPOINT --data ENDPOINT --model DIR [options]\n"
               "  --role R[,R...]   media, encode, prefill, decode or all (default all)\n"
               "  --name NAME       for logs and stats (default worker-PID)\n"
               "  --backend cpu|cuda, --device N, --threads N\n"
               "  --mm-cache-mb N   MM-token cache budget (default 256)\n"
               "  --roles-file F    write the roles to F after each switch (vidi up restarts\n"
               "                    a worker with the roles it last had)\n"
               "  --kv-blocks N     paged KV blocks of 16 tokens (default 4096)\n"
               "  --max-batch N     sequences decoded together (default 32)\n"
               "  --kv-swap-mb N    host memory for KV swapped out when the pool is full\n"
               "                    (default 1024; 0: preempted sequences are recomputed)\n"
               "  --spec off|ngram[:K[:MIN_N[:MAX_N]]]|draft[:K]  speculative decoding by prompt\n"
               "                    lookup or with the draft model (default off; K 4 by\n"
               "                    prompt lookup, 5 with the draft model; n-grams 1..3)\n"
               "  --draft DIR       a draft model of the same family and tokenizer: its vision\n"
               "                    tower in encode, its prefill, its drafts with --spec draft\n"
               "  --spec-max-batch N  speculate while at most N sequences decode (default 16;\n"
               "                    0: always); above, plain steps cost less (bench/specdec)\n"
               "  --exact           CUDA: batch-invariant kernels (slower), so that greedy\n"
               "                    speculation gives plain greedy's tokens bit for bit\n"
               "  --heartbeat-ms N  (default 1000); --liveness N (default 3)\n"
               "  --ipc-mb N        CUDA IPC export buffer for rows and KV to workers of this\n"
               "                    host (default 512; 0: everything through host memory)\n"
               "  --ipc-lease-ms N  how long a reader has to copy a range (default 60000)\n"
               "  --sparse auto|off|FILE  sparse prefill config (auto: MODEL/sparse_config.json when\n"
               "                    there; CPU backend only for now)\n");
}

int vidi_cmd_worker(int argc, char **argv) {
    worker *w = calloc(1, sizeof *w);
    if (!w) return 1;
    const char *roles = "all", *data_opt = NULL, *backend = "cpu";
    long threads = 0;
    w->heartbeat_ms = 1000;
    w->liveness = 3;
    w->waits = calloc(MAX_WAIT, sizeof *w->waits);
    if (!w->waits) {
        free(w);
        return 1;
    }
    w->mm_budget = 256ull << 20;
    w->kv_blocks = 4096;
    w->max_batch = 32;
    w->ipc_mb = 512;
    w->kv_swap_mb = 1024;
    w->spec_opt = "off";
    w->spec_batch = 16;
    w->sparse_opt = "auto";
    w->ipc_lease_ms = 60000;
    int rc = 1, exact = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            free(w->waits);
            free(w);
            return 0;
        }
        if (!strcmp(a, "--exact")) {
            exact = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "vidi worker: %s needs a value\n", a);
            s_usage(stderr);
            free(w->waits);
            free(w);
            return 2;
        }
        i++;
        if (!strcmp(a, "--router")) w->router_ep = v;
        else if (!strcmp(a, "--data")) data_opt = v;
        else if (!strcmp(a, "--model")) w->model_dir = v;
        else if (!strcmp(a, "--role")) roles = v;
        else if (!strcmp(a, "--name")) w->name_opt = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--device")) w->device = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atol(v);
        else if (!strcmp(a, "--mm-cache-mb")) w->mm_budget = (uint64_t)atoll(v) << 20;
        else if (!strcmp(a, "--kv-blocks")) w->kv_blocks = atoll(v);
        else if (!strcmp(a, "--max-batch")) w->max_batch = atoi(v);
        else if (!strcmp(a, "--heartbeat-ms")) w->heartbeat_ms = atoll(v);
        else if (!strcmp(a, "--liveness")) w->liveness = atoi(v);
        else if (!strcmp(a, "--ipc-mb")) w->ipc_mb = atoll(v);
        else if (!strcmp(a, "--kv-swap-mb")) w->kv_swap_mb = atoll(v);
        else if (!strcmp(a, "--spec")) w->spec_opt = v;
        else if (!strcmp(a, "--draft")) w->draft_dir = v;
        else if (!strcmp(a, "--spec-max-batch")) w->spec_batch = atoi(v);
        else if (!strcmp(a, "--sparse")) w->sparse_opt = v;
        else if (!strcmp(a, "--roles-file")) w->roles_file = v;
        else if (!strcmp(a, "--ipc-lease-ms")) w->ipc_lease_ms = atoll(v);
        else {
            fprintf(stderr, "vidi worker: unknown option %s\n", a);
            s_usage(stderr);
            free(w->waits);
            free(w);
            return 2;
        }
    }
    {
        vidi_err serr = {0};
        if (vidi_spec_params_parse(w->spec_opt, &w->spec, &serr) != VIDI_OK) {
            fprintf(stderr, "vidi worker: --spec: %s\n", serr.msg);
            free(w->waits);
            free(w);
            return 2;
        }
        if (w->spec.mode == VIDI_SPEC_DRAFT && !w->draft_dir) {
            fprintf(stderr, "vidi worker: --spec draft needs --draft DIR (the draft model)\n");
            free(w->waits);
            free(w);
            return 2;
        }
    }
    if (!w->router_ep || !data_opt || !w->model_dir || s_parse_roles(roles, &w->roles) != 0 || w->mm_budget == 0 ||
        w->kv_blocks <= 0 || w->max_batch <= 0 || w->max_batch > 256 || w->spec_batch < 0 || w->heartbeat_ms <= 0 || w->liveness <= 0 ||
        w->ipc_mb < 0 || w->ipc_mb > (1 << 20) || w->kv_swap_mb < 0 || w->kv_swap_mb > (1LL << 30) || w->ipc_lease_ms < 2 * IPC_MARGIN_MS) {
        fprintf(stderr, "vidi worker: --router, --data and --model are required; roles are media, encode, prefill, "
                        "decode, all; sizes must be positive (max batch <= 256)\n");
        free(w->waits);
        free(w);
        return 2;
    }
    if (w->name_opt) snprintf(w->name, sizeof w->name, "%s", w->name_opt);
    else snprintf(w->name, sizeof w->name, "worker-%d", (int)getpid());
    w->use_cuda = !strcmp(backend, "cuda");
    vidi_err err = {0};
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    signal(SIGPIPE, SIG_IGN);
    if (w->use_cuda) {
#ifdef VIDI_HAVE_CUDA
        w->be = vidi_backend_cuda_create(w->device, &err);
        if (w->be && exact && vidi_backend_cuda_set_exact(w->be, 1, &err) != VIDI_OK) {
            w->be->ops->destroy(w->be);
            w->be = NULL;
        }
#else
        vidi_err_set(&err, VIDI_ERR_UNSUPPORTED, "this vidi was built without the CUDA backend");
#endif
    } else {
        w->be = vidi_backend_cpu_create((int)threads, &err); /* batch-invariant already: --exact changes nothing */
        (void)exact;
    }
    if (!w->be || vidi_model_load(w->model_dir, w->be, &w->m, &err) != VIDI_OK ||
        vidi_preproc_config_load(w->model_dir, &w->pp, &err) != VIDI_OK ||
        vidi_mmcache_create(w->mm_budget, s_cache_free, NULL, &w->cache, &err) != VIDI_OK) {
        fprintf(stderr, "vidi worker: %s\n", err.msg);
        goto done;
    }
    if (w->draft_dir && s_load_draft(w, &err) != VIDI_OK) {
        fprintf(stderr, "vidi worker: --draft %s: %s\n", w->draft_dir, err.msg);
        goto done;
    }
    if (w->use_cuda && w->ipc_mb > 0 && w->be->ops->ipc_alloc) s_host_identity(w->ipc_id);
    if ((w->roles & ROLE_PREFILL) && s_load_sparse(w, &err) != VIDI_OK) {
        fprintf(stderr, "vidi worker: %s\n", err.msg);
        goto done;
    }
    if (w->roles & (ROLE_PREFILL | ROLE_DECODE)) {
        if (s_make_pool(w, &err) != VIDI_OK) {
            fprintf(stderr, "vidi worker: %s\n", err.msg);
            goto done;
        }
    }
    w->ctx = zmq_ctx_new();
    w->data = vidi_sock_open(w->ctx, VIDI_SOCK_DATA, data_opt, 0, w->data_ep, sizeof w->data_ep, &err);
    if (!w->data || s_connect_back(w, &err) != 0) {
        fprintf(stderr, "vidi worker: %s\n", err.msg);
        goto done;
    }
    vidi_backoff_init(&w->backoff, 1000, 32000);
    atomic_init(&w->hb_stop, 0);
    atomic_init(&w->busy_stage, -1);
    w->hb_started = pthread_create(&w->hb_thread, NULL, s_heartbeat_thread, w) == 0;
    fprintf(stderr, "worker %s: roles %s, data %s, router %s\n", w->name, roles, w->data_ep, w->router_ep);
    vidi_msg m;
    vidi_msg_init(&m);
    /* encode WORKs that arrive together are encoded together */
    enum { ENC_BATCH = 16 };
    vidi_msg enc[ENC_BATCH];
    vidi_msg *encp[ENC_BATCH];
    req_id enc_r[ENC_BATCH];
    for (int i = 0; i < ENC_BATCH; i++) vidi_msg_init(&enc[i]), encp[i] = &enc[i];
    while (!g_stop) {
        int n_enc = 0;
        zmq_pollitem_t items[2] = {{w->back, 0, ZMQ_POLLIN, 0}, {w->data, 0, ZMQ_POLLIN, 0}};
        int busy = w->dec && vidi_decoder_running(w->dec) > 0;
        if (zmq_poll(items, 2, busy ? 0 : (long)(w->heartbeat_ms / 4 + 1)) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int k = 0; k < 2; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            for (int n = 0; n < 64 && !g_stop; n++) {
                vidi_wire_code code;
                vidi_status st = vidi_msg_recv(k ? w->data : w->back, k, ZMQ_DONTWAIT, NULL, &m, &code, &err);
                if (st == VIDI_ERR_IO && code == VIDI_WIRE_OK) break; /* nothing more */
                if (st != VIDI_OK) {
                    w->n_bad_msgs++;
                    if (k == 1 && m.identity_len && m.cmd != VIDI_CMD_ERROR)
                        vidi_msg_send_error(w->data, m.identity, m.identity_len, code, -1, err.msg, NULL);
                    else if (k == 0 && m.cmd != VIDI_CMD_ERROR)
                        s_error_plain(w, code, err.msg);
                    continue;
                }
                if (k == 1 && m.cmd == VIDI_CMD_WORK && (w->roles & ROLE_ENCODE) && n_enc < ENC_BATCH &&
                    vidi_mp_str_eq(vidi_mp_get(m.header, "stage"), "encode") && vidi_mp_get(m.header, "items") &&
                    s_req_fields(&m, &enc_r[n_enc], &err) == VIDI_OK) {
                    vidi_msg_close(&enc[n_enc]);
                    /* the message moves (its parts and zone are on the heap; the header
                     * object lives in the struct, so its pointer is set again) */
                    enc[n_enc] = m;
                    enc[n_enc].header = &enc[n_enc].unpacked.data;
                    n_enc++;
                    vidi_msg_init(&m);
                    continue;
                }
                s_handle(w, &m, k == 0);
            }
        }
        if (n_enc) {
            s_busy_begin(w, 1);
            s_encode_batch(w, encp, enc_r, n_enc);
            s_busy_end(w, 1);
            for (int i = 0; i < n_enc; i++) vidi_msg_close(&enc[i]);
        }
        if (w->dec) s_decode_step(w);
        int64_t now = vidi_now_ms();
        s_move_expire(w, now);
        if (w->leases) w->n_ipc_expired += (uint64_t)vidi_lease_expire(w->leases, (uint64_t)now);
        /* parts of an attempt the router gave up on never complete: drop them */
        for (int i = 0; i < MAX_PEND; i++)
            if (w->pends[i].used && now - w->pends[i].since_ms > PEND_TTL_MS) s_pend_free(&w->pends[i]);
        zmq_pollitem_t pending = {w->back, 0, ZMQ_POLLIN, 0};
        if (vidi_liveness_dead(&w->live, now) && zmq_poll(&pending, 1, 0) == 0) {
            /* silent for liveness intervals with nothing waiting to be read (a long
             * compute leaves the router's heartbeats queued: those count) */
            int64_t wait = vidi_backoff_next(&w->backoff);
            fprintf(stderr, "worker %s: the router is silent; reconnecting in %lld ms\n", w->name, (long long)wait);
            for (int64_t t = 0; t < wait && !g_stop; t += 100) usleep(100000);
            if (s_connect_back(w, &err) != 0) fprintf(stderr, "worker %s: %s\n", w->name, err.msg);
            continue;
        }
        if (now - w->live.last_heard < w->heartbeat_ms) vidi_backoff_reset(&w->backoff);
        if (vidi_liveness_due(&w->live, now)) s_send_heartbeat(w);
    }
    vidi_msg_close(&m);
    for (int i = 0; i < ENC_BATCH; i++) vidi_msg_close(&enc[i]);
    if (w->back) {
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 1);
        vidi_mp_kv_str(&o.pk, "reason", "stopping");
        s_to_router(w, VIDI_CMD_DISCONNECT, &o);
    }
    rc = 0;
done:
    if (w->hb_started) {
        atomic_store(&w->hb_stop, 1);
        pthread_join(w->hb_thread, NULL);
    }
    for (int i = 0; i < MAX_PEND; i++)
        if (w->pends[i].used) s_pend_free(&w->pends[i]);
    for (int i = 0; i < MAX_WAIT; i++)
        if (w->waits[i].used) vidi_kv_seq_free(w->waits[i].seq), vidi_kv_seq_free(w->waits[i].dseq);
    for (int i = 0; i < w->n_peers; i++) zmq_close(w->peers[i].sock);
    if (w->back) zmq_close(w->back);
    if (w->data) zmq_close(w->data);
    if (w->ctx) zmq_ctx_term(w->ctx);
    vidi_decoder_free(w->dec);
    vidi_kv_pool_free(w->pool);
    vidi_kv_pool_free(w->dpool);
    vidi_model_free(w->dm);
    vidi_mmcache_free(w->cache);
    vidi_model_free(w->m);
    for (int i = 0; i < w->n_maps; i++) w->be->ops->ipc_close(w->be, w->maps[i].base);
    if (w->ipc_buf) w->be->ops->ipc_free(w->be, w->ipc_buf);
    vidi_lease_pool_free(w->leases);
    vidi_sparse_config_free(w->sparse);
    if (w->be) w->be->ops->destroy(w->be);
    free(w->waits);
    free(w);
    return rc;
}
