/* ipc/conn.c — the low-level connection to the router (conn.h). */
#include "ipc/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "ipc/msg.h"
#include "ipc/sock.h"

struct vidi_conn {
    void *ctx, *sock;
    vidi_msg m;
    int64_t last_sent;       /* for the heartbeats of PROTOCOL.md §6 */
};

#define CLIENT_HEARTBEAT_MS 1000

static void s_sent(vidi_conn *c) { c->last_sent = vidi_now_ms(); }

/* HEARTBEAT when nothing was sent for an interval: the router keeps our requests. */
static void s_heartbeat(vidi_conn *c) {
    if (vidi_now_ms() - c->last_sent < CLIENT_HEARTBEAT_MS) return;
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    if (vidi_msg_send(c->sock, NULL, 0, VIDI_CMD_HEARTBEAT, &o, NULL) == VIDI_OK) s_sent(c);
    vidi_msg_out_free(&o);
}

vidi_status vidi_conn_connect(const char *endpoint, vidi_conn **out, vidi_err *err) {
    return vidi_conn_connect_curve(endpoint, NULL, out, err);
}

vidi_status vidi_conn_connect_curve(const char *endpoint, const vidi_sock_curve *curve, vidi_conn **out,
                                    vidi_err *err) {
    *out = NULL;
    vidi_conn *c = calloc(1, sizeof *c);
    if (!c) return vidi_err_set(err, VIDI_ERR_NOMEM, "client: out of memory");
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? vidi_sock_open_curve(c->ctx, VIDI_SOCK_CLIENT, endpoint, curve, err) : NULL;
    if (!c->sock) {
        if (!c->ctx) vidi_err_set(err, VIDI_ERR_IO, "client: zmq context: %s", zmq_strerror(errno));
        vidi_conn_close(c);
        return err && err->status ? err->status : VIDI_ERR_IO;
    }
    vidi_msg_init(&c->m);
    c->last_sent = vidi_now_ms();
    *out = c;
    return VIDI_OK;
}

void vidi_conn_close(vidi_conn *c) {
    if (!c) return;
    vidi_msg_close(&c->m);
    if (c->sock) zmq_close(c->sock);
    if (c->ctx) zmq_ctx_term(c->ctx);
    free(c);
}

vidi_conn_request vidi_conn_request_default(void) {
    vidi_conn_request r;
    memset(&r, 0, sizeof r);
    r.sampling.max_tokens = 128;
    r.sampling.top_p = 1.0;
    r.stream = 1;
    return r;
}

vidi_status vidi_conn_submit(vidi_conn *c, const vidi_conn_request *rq, vidi_err *err) {
    if (!rq->prompt) return vidi_err_set(err, VIDI_ERR_INVALID, "client: a request needs a prompt");
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    int n = 3 + (rq->system ? 1 : 0) + (rq->n_media ? 2 : 0) + (rq->n_stop ? 1 : 0) +
            vidi_wire_sampling_fields(&rq->sampling);
    msgpack_pack_map(&o.pk, (size_t)n);
    vidi_mp_kv_u64(&o.pk, "id", rq->id);
    vidi_mp_kv_str(&o.pk, "prompt", rq->prompt);
    vidi_mp_pack_cstr(&o.pk, "stream");
    rq->stream ? msgpack_pack_true(&o.pk) : msgpack_pack_false(&o.pk);
    if (rq->system) {
        vidi_mp_kv_str(&o.pk, "system", rq->system);
    }
    if (rq->n_stop) {
        vidi_mp_pack_cstr(&o.pk, "stop");
        msgpack_pack_array(&o.pk, (size_t)rq->n_stop);
        for (int i = 0; i < rq->n_stop; i++) vidi_mp_pack_cstr(&o.pk, rq->stop[i]);
    }
    vidi_wire_sampling_pack(&o.pk, &rq->sampling);
    vidi_status rc = VIDI_OK;
    if (rq->n_media) {
        vidi_mp_pack_cstr(&o.pk, "media");
        msgpack_pack_array(&o.pk, (size_t)rq->n_media);
        for (int i = 0; i < rq->n_media; i++) {
            const vidi_conn_media *m = &rq->media[i];
            msgpack_pack_map(&o.pk, 6);
            vidi_mp_kv_str(&o.pk, "kind", m->video ? "video" : "image");
            vidi_mp_kv_u64(&o.pk, "tensor", (uint64_t)i);
            vidi_mp_kv_f64(&o.pk, "fps", m->fps);
            vidi_mp_kv_u64(&o.pk, "nframes", m->nframes);
            vidi_mp_kv_u64(&o.pk, "min_pixels", m->min_pixels);
            vidi_mp_kv_u64(&o.pk, "max_pixels", m->max_pixels);
        }
        vidi_mp_pack_cstr(&o.pk, "tensors");
        msgpack_pack_array(&o.pk, (size_t)rq->n_media);
        for (int i = 0; i < rq->n_media && rc == VIDI_OK; i++) {
            int64_t shape[1] = {(int64_t)rq->media[i].n};
            if (!rq->media[i].n) rc = vidi_err_set(err, VIDI_ERR_INVALID, "client: media %d is empty", i);
            else
                rc = vidi_msg_out_tensor(&o, VIDI_WIRE_U8, 1, shape, (void *)rq->media[i].bytes, rq->media[i].n, NULL,
                                         NULL, err);
        }
    }
    if (rc == VIDI_OK) rc = vidi_msg_send(c->sock, NULL, 0, VIDI_CMD_REQUEST, &o, err);
    vidi_msg_out_free(&o);
    if (rc == VIDI_OK) s_sent(c);
    return rc;
}

vidi_status vidi_conn_send(vidi_conn *c, int cmd, vidi_msg_out *o, vidi_err *err) {
    vidi_status rc = vidi_msg_send(c->sock, NULL, 0, (vidi_cmd)cmd, o, err);
    if (rc == VIDI_OK) s_sent(c);
    return rc;
}

vidi_status vidi_conn_cancel(vidi_conn *c, uint64_t id, vidi_err *err) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 1);
    vidi_mp_kv_u64(&o.pk, "id", id);
    vidi_status rc = vidi_msg_send(c->sock, NULL, 0, VIDI_CMD_CANCEL, &o, err);
    vidi_msg_out_free(&o);
    if (rc == VIDI_OK) s_sent(c);
    return rc;
}

vidi_status vidi_conn_stats(vidi_conn *c, vidi_err *err) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    vidi_status rc = vidi_msg_send(c->sock, NULL, 0, VIDI_CMD_STATS, &o, err);
    vidi_msg_out_free(&o);
    if (rc == VIDI_OK) s_sent(c);
    return rc;
}

vidi_status vidi_conn_role(vidi_conn *c, const char *worker, const char *roles, vidi_err *err) {
    char buf[256];
    const char *part[4];
    int n = 0;
    if (!worker || !roles || strlen(roles) >= sizeof buf)
        return vidi_err_set(err, VIDI_ERR_INVALID, "client: ROLE needs a worker and its roles");
    snprintf(buf, sizeof buf, "%s", roles);
    for (char *save = NULL, *t = strtok_r(buf, ",+", &save); t; t = strtok_r(NULL, ",+", &save)) {
        if (n == 4) return vidi_err_set(err, VIDI_ERR_INVALID, "client: at most 4 roles");
        part[n++] = t;
    }
    if (!n) return vidi_err_set(err, VIDI_ERR_INVALID, "client: ROLE names no role");
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 2);
    vidi_mp_kv_str(&o.pk, "worker", worker);
    vidi_mp_pack_cstr(&o.pk, "roles");
    msgpack_pack_array(&o.pk, (size_t)n);
    for (int i = 0; i < n; i++) vidi_mp_pack_cstr(&o.pk, part[i]);
    vidi_status rc = vidi_msg_send(c->sock, NULL, 0, VIDI_CMD_ROLE, &o, err);
    vidi_msg_out_free(&o);
    if (rc == VIDI_OK) s_sent(c);
    return rc;
}

static char *s_dup(const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (t) {
        if (n) memcpy(t, s, n);
        t[n] = 0;
    }
    return t;
}

void vidi_conn_event_free(vidi_conn_event *ev) {
    free(ev->text);
    free(ev->stat_names);
    free(ev->stat_values);
    memset(ev, 0, sizeof *ev);
}

vidi_status vidi_conn_next(vidi_conn *c, int timeout_ms, vidi_conn_event *ev, vidi_err *err) {
    memset(ev, 0, sizeof *ev);
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    int64_t until = timeout_ms < 0 ? INT64_MAX : vidi_now_ms() + timeout_ms;
    int n;
    /* wait in slices, heartbeating in between */
    for (;;) {
        s_heartbeat(c);
        int64_t left = until == INT64_MAX ? CLIENT_HEARTBEAT_MS : until - vidi_now_ms();
        if (left < 0) left = 0;
        n = zmq_poll(&it, 1, (long)(left < CLIENT_HEARTBEAT_MS ? left : CLIENT_HEARTBEAT_MS));
        if (n < 0 && errno == EINTR) continue;
        if (n != 0 || vidi_now_ms() >= until) break;
    }
    if (n < 0) return vidi_err_set(err, VIDI_ERR_IO, "client: poll: %s", zmq_strerror(errno));
    if (n == 0) {
        errno = EAGAIN;
        return vidi_err_set(err, VIDI_ERR_IO, "client: no reply within %d ms", timeout_ms);
    }
    vidi_wire_code code;
    vidi_status rc = vidi_msg_recv(c->sock, 0, 0, NULL, &c->m, &code, err);
    if (rc != VIDI_OK) return rc;
    const msgpack_object *h = c->m.header;
    vidi_mp_u64(h, "id", 0, 0, 0, UINT64_MAX, &ev->id, NULL);
    const char *s = NULL;
    size_t sn = 0;
    const msgpack_object *toks;
    size_t nt;
    switch (c->m.cmd) {
    case VIDI_CMD_TOKEN:
        ev->type = VIDI_CONN_TOKEN;
        vidi_mp_u64(h, "index", 0, 0, 0, UINT64_MAX, &ev->index, NULL);
        if (vidi_mp_array(h, "tokens", 0, 1 << 20, &toks, &nt, NULL) == VIDI_OK) ev->n_tokens = (int)nt;
        vidi_mp_str(h, "text", 0, 1 << 24, &s, &sn, NULL);
        break;
    case VIDI_CMD_DONE: {
        ev->type = VIDI_CONN_DONE;
        uint64_t t = 0;
        vidi_mp_u64(h, "tokens", 0, 0, 0, UINT64_MAX, &t, NULL);
        ev->n_tokens = (int)t;
        vidi_mp_u64(h, "prompt_tokens", 0, 0, 0, UINT64_MAX, &ev->prompt_tokens, NULL);
        vidi_mp_u64(h, "cache_hits", 0, 0, 0, UINT64_MAX, &ev->cache_hits, NULL);
        const char *f;
        size_t fn;
        if (vidi_mp_str(h, "finish", 0, 15, &f, &fn, NULL) == VIDI_OK && f) memcpy(ev->finish, f, fn);
        const msgpack_object *tm;
        if (vidi_mp_map(h, "timings", 0, &tm, NULL) == VIDI_OK && tm) {
            vidi_mp_f64(tm, "total_s", 0, 0, 0, 1e12, &ev->total_s, NULL);
            vidi_mp_f64(tm, "queue_s", 0, 0, 0, 1e12, &ev->queue_s, NULL);
        }
        vidi_mp_str(h, "text", 0, 1 << 24, &s, &sn, NULL);
        break;
    }
    case VIDI_CMD_ERROR: {
        ev->type = VIDI_CONN_ERROR;
        const char *cd;
        size_t cn;
        if (vidi_mp_str(h, "code", 0, 31, &cd, &cn, NULL) == VIDI_OK && cd) memcpy(ev->code, cd, cn);
        vidi_mp_str(h, "message", 0, 1 << 20, &s, &sn, NULL);
        break;
    }
    case VIDI_CMD_STATS: {
        ev->type = VIDI_CONN_STATS;
        /* top-level counters, and one level of maps flattened as "map.key" (roles.media, ...) */
        uint32_t k = h->via.map.size, all = k;
        for (uint32_t i = 0; i < k; i++)
            if (h->via.map.ptr[i].val.type == MSGPACK_OBJECT_MAP) all += h->via.map.ptr[i].val.via.map.size;
        ev->stat_names = calloc(all ? all : 1, sizeof *ev->stat_names);
        ev->stat_values = calloc(all ? all : 1, sizeof *ev->stat_values);
        if (!ev->stat_names || !ev->stat_values) return vidi_err_set(err, VIDI_ERR_NOMEM, "client: out of memory");
        for (uint32_t i = 0; i < k; i++) {
            const msgpack_object_kv *kv = &h->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) continue;
            if (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                size_t l = kv->key.via.str.size < 31 ? kv->key.via.str.size : 31;
                memcpy(ev->stat_names[ev->n_stats], kv->key.via.str.ptr, l);
                ev->stat_values[ev->n_stats++] = kv->val.via.u64;
            } else if (kv->val.type == MSGPACK_OBJECT_MAP) {
                for (uint32_t j = 0; j < kv->val.via.map.size; j++) {
                    const msgpack_object_kv *sub = &kv->val.via.map.ptr[j];
                    if (sub->key.type != MSGPACK_OBJECT_STR || sub->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER) continue;
                    snprintf(ev->stat_names[ev->n_stats], sizeof ev->stat_names[0], "%.*s.%.*s",
                             (int)kv->key.via.str.size, kv->key.via.str.ptr, (int)sub->key.via.str.size,
                             sub->key.via.str.ptr);
                    ev->stat_values[ev->n_stats++] = sub->val.via.u64;
                }
            }
        }
        break;
    }
    case VIDI_CMD_ROLE:
        ev->type = VIDI_CONN_ROLE;
        vidi_mp_str(h, "text", 0, 1 << 16, &s, &sn, NULL);
        break;
    default: return vidi_err_set(err, VIDI_ERR_FORMAT, "client: unexpected %s from the router", vidi_cmd_name(c->m.cmd));
    }
    ev->text = s_dup(s ? s : "", s ? sn : 0);
    ev->text_len = s ? sn : 0;
    if (!ev->text) return vidi_err_set(err, VIDI_ERR_NOMEM, "client: out of memory");
    return VIDI_OK;
}

uint64_t vidi_conn_stat(const vidi_conn_event *ev, const char *name) {
    for (int i = 0; i < ev->n_stats; i++)
        if (!strcmp(ev->stat_names[i], name)) return ev->stat_values[i];
    return 0;
}
