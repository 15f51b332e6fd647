/* ipc/sock.c — sockets with the protocol's options, clock, liveness, backoff. */
#include "ipc/sock.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

static int s_set_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

void *vidi_sock_open(void *ctx, vidi_sock_role role, const char *endpoint, int64_t max_msg_bytes, char *bound,
                     size_t cap, vidi_err *err) {
    return vidi_sock_open_id(ctx, role, endpoint, NULL, max_msg_bytes, bound, cap, err);
}

static void *s_open(void *ctx, vidi_sock_role role, const char *endpoint, const char *identity, int64_t max_msg_bytes,
                    const vidi_sock_curve *curve, char *bound, size_t cap, vidi_err *err);

void *vidi_sock_open_id(void *ctx, vidi_sock_role role, const char *endpoint, const char *identity,
                        int64_t max_msg_bytes, char *bound, size_t cap, vidi_err *err) {
    return s_open(ctx, role, endpoint, identity, max_msg_bytes, NULL, bound, cap, err);
}

void *vidi_sock_open_curve(void *ctx, vidi_sock_role role, const char *endpoint, const vidi_sock_curve *curve,
                           vidi_err *err) {
    return s_open(ctx, role, endpoint, NULL, 0, curve, NULL, 0, err);
}

/* A Z85 CURVE key: 40 characters. */
static int s_z85_ok(const char *k) { return k && strlen(k) == 40; }

static void *s_open(void *ctx, vidi_sock_role role, const char *endpoint, const char *identity, int64_t max_msg_bytes,
                    const vidi_sock_curve *curve, char *bound, size_t cap, vidi_err *err) {
    static const char *const names[] = {"front", "back", "data", "client", "worker", "peer"};
    int router = role == VIDI_SOCK_FRONT || role == VIDI_SOCK_BACK || role == VIDI_SOCK_DATA;
    void *s = zmq_socket(ctx, router ? ZMQ_ROUTER : ZMQ_DEALER);
    if (!s) {
        vidi_err_set(err, VIDI_ERR_IO, "%s socket: %s", names[role], zmq_strerror(errno));
        return NULL;
    }
    int hwm = role == VIDI_SOCK_DATA || role == VIDI_SOCK_PEER ? 64 : 1000;
    int ok = s_set_int(s, ZMQ_LINGER, 0) == 0 && s_set_int(s, ZMQ_SNDHWM, hwm) == 0 &&
             s_set_int(s, ZMQ_RCVHWM, hwm) == 0;
    if (ok && router) ok = s_set_int(s, ZMQ_ROUTER_MANDATORY, 1) == 0;
    if (ok && role == VIDI_SOCK_BACK) ok = s_set_int(s, ZMQ_ROUTER_HANDOVER, 1) == 0;
    if (ok && !router) ok = s_set_int(s, ZMQ_SNDTIMEO, 1000) == 0;
    if (ok && max_msg_bytes > 0) ok = zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_msg_bytes, sizeof max_msg_bytes) == 0;
    if (ok && identity) ok = zmq_setsockopt(s, ZMQ_ROUTING_ID, identity, strlen(identity)) == 0;
    if (ok && curve && router) {
        if (!s_z85_ok(curve->secret_key)) {
            vidi_err_set(err, VIDI_ERR_INVALID, "%s socket: the CURVE secret key must be 40 Z85 characters", names[role]);
            zmq_close(s);
            return NULL;
        }
        ok = s_set_int(s, ZMQ_CURVE_SERVER, 1) == 0 &&
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, curve->secret_key, 41) == 0;
    } else if (ok && curve) {
        if (!s_z85_ok(curve->server_key) || !s_z85_ok(curve->public_key) || !s_z85_ok(curve->secret_key)) {
            vidi_err_set(err, VIDI_ERR_INVALID,
                         "%s socket: CURVE needs the server's public key and this side's key pair, 40 Z85 characters each",
                         names[role]);
            zmq_close(s);
            return NULL;
        }
        ok = zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, curve->server_key, 41) == 0 &&
             zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, curve->public_key, 41) == 0 &&
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, curve->secret_key, 41) == 0;
    }
    if (!ok) {
        vidi_err_set(err, VIDI_ERR_IO, "%s socket options: %s", names[role], zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    if ((router ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint)) != 0) {
        vidi_err_set(err, VIDI_ERR_IO, "%s socket: %s %s: %s", names[role], router ? "bind" : "connect", endpoint,
                     zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    if (bound && cap) {
        size_t n = cap;
        if (!router || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &n) != 0) {
            strncpy(bound, endpoint, cap - 1);
            bound[cap - 1] = 0;
        }
    }
    return s;
}

int64_t vidi_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void vidi_liveness_init(vidi_liveness *l, int64_t interval_ms, int liveness, int64_t now) {
    l->interval_ms = interval_ms;
    l->liveness = liveness;
    l->last_heard = l->last_sent = now;
}

void vidi_liveness_heard(vidi_liveness *l, int64_t now) { l->last_heard = now; }
void vidi_liveness_sent(vidi_liveness *l, int64_t now) { l->last_sent = now; }
int vidi_liveness_due(const vidi_liveness *l, int64_t now) { return now - l->last_sent >= l->interval_ms; }
int vidi_liveness_dead(const vidi_liveness *l, int64_t now) {
    return now - l->last_heard > l->interval_ms * l->liveness;
}

void vidi_backoff_init(vidi_backoff *b, int64_t min_ms, int64_t max_ms) {
    b->min_ms = b->next_ms = min_ms;
    b->max_ms = max_ms;
}

int64_t vidi_backoff_next(vidi_backoff *b) {
    int64_t w = b->next_ms;
    b->next_ms = b->next_ms * 2 > b->max_ms ? b->max_ms : b->next_ms * 2;
    return w;
}

void vidi_backoff_reset(vidi_backoff *b) { b->next_ms = b->min_ms; }
