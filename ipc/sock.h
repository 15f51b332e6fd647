/* ipc/sock.h — ZeroMQ sockets with the options ipc/PROTOCOL.md §1 requires,
 * a millisecond clock, and the liveness / reconnect-backoff bookkeeping of §6.
 */
#ifndef VIDI_IPC_SOCK_H
#define VIDI_IPC_SOCK_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* What a socket is for; decides its options (PROTOCOL.md §1). */
typedef enum vidi_sock_role {
    VIDI_SOCK_FRONT = 0, /* router's client-facing ROUTER (bind) */
    VIDI_SOCK_BACK,      /* router's worker-facing ROUTER (bind) */
    VIDI_SOCK_DATA,      /* a worker's data ROUTER (bind) */
    VIDI_SOCK_CLIENT,    /* a client's DEALER to front (connect) */
    VIDI_SOCK_WORKER,    /* a worker's DEALER to back (connect) */
    VIDI_SOCK_PEER,      /* a worker's DEALER to another worker's data socket (connect) */
} vidi_sock_role;

/* A socket of the role's type with LINGER 0, the role's high-water marks,
 * ROUTER_MANDATORY (and, on back, ROUTER_HANDOVER) on ROUTERs, SNDTIMEO
 * 1000 ms on DEALERs and MAXMSGSIZE max_msg_bytes (0: no limit), bound or
 * connected to `endpoint`. For a bind to "tcp://host:*" the endpoint really
 * bound is written to bound (cap bytes) when bound is given. Returns NULL
 * with *err filled on failure. Close with zmq_close. */
void *vidi_sock_open(void *ctx, vidi_sock_role role, const char *endpoint, int64_t max_msg_bytes, char *bound,
                     size_t cap, vidi_err *err);

/* vidi_sock_open with a routing identity (a DEALER's name as its ROUTER
 * peer sees it; NULL: ZeroMQ picks one). */
void *vidi_sock_open_id(void *ctx, vidi_sock_role role, const char *endpoint, const char *identity,
                        int64_t max_msg_bytes, char *bound, size_t cap, vidi_err *err);

/* CURVE keys (Z85 text, 40 characters). A ROUTER (a server: the router's
 * front) needs only secret_key; a DEALER (a client) needs all three. */
typedef struct vidi_sock_curve {
    const char *server_key;  /* client: the server's public key */
    const char *public_key;  /* client: its own public key */
    const char *secret_key;  /* client: its own secret key; server: the server's secret key */
} vidi_sock_curve;

/* vidi_sock_open with CURVE encryption (curve NULL: none). */
void *vidi_sock_open_curve(void *ctx, vidi_sock_role role, const char *endpoint, const vidi_sock_curve *curve,
                           vidi_err *err);

/* A worker's liveness socket (PROTOCOL.md §6): its back DEALER is named
 * "w.NAME.PID.GEN" and a second DEALER, owned by a heartbeat thread that
 * runs whatever the main loop is computing, "h.NAME.PID". */
#define VIDI_HB_PREFIX "h."
#define VIDI_WORKER_PREFIX "w."

/* Monotonic milliseconds. */
int64_t vidi_now_ms(void);

/* Liveness of one peer (§6): heard() on every message from it; due() says
 * whether a heartbeat should go out now (nothing sent for interval_ms);
 * sent() after every message to it; dead() after liveness intervals of
 * silence. */
typedef struct vidi_liveness {
    int64_t interval_ms;
    int liveness;
    int64_t last_heard, last_sent;
} vidi_liveness;

void vidi_liveness_init(vidi_liveness *l, int64_t interval_ms, int liveness, int64_t now);
void vidi_liveness_heard(vidi_liveness *l, int64_t now);
void vidi_liveness_sent(vidi_liveness *l, int64_t now);
int vidi_liveness_due(const vidi_liveness *l, int64_t now);
int vidi_liveness_dead(const vidi_liveness *l, int64_t now);

/* Reconnect backoff: 1000 ms doubling to 32000 ms (§6); reset on success. */
typedef struct vidi_backoff {
    int64_t next_ms, min_ms, max_ms;
} vidi_backoff;

void vidi_backoff_init(vidi_backoff *b, int64_t min_ms, int64_t max_ms);
int64_t vidi_backoff_next(vidi_backoff *b); /* the wait before this attempt; doubles the next */
void vidi_backoff_reset(vidi_backoff *b);

#endif
