/* ipc/router.h — the router (ipc/PROTOCOL.md): clients on a front ROUTER
 * socket, workers on a back ROUTER socket, a request table, a worker
 * registry with liveness, the chat template and tokenization, media cache
 * keys and a directory of which encoder holds which key, admission control,
 * retries when a worker is lost, deadlines.
 *
 * It plans each request's hops when it admits it and sends the WORK that
 * starts each stage; tensors derived from the media (patches, embeddings,
 * KV) go worker to worker and never through here. The media files
 * themselves enter here, because clients know only the router, and are
 * passed on to a media worker without a copy (ZeroMQ message references).
 */
#ifndef VIDI_IPC_ROUTER_H
#define VIDI_IPC_ROUTER_H

#include <signal.h>
#include <stdint.h>

#include "core/err.h"

typedef struct vidi_router_config {
    const char *front;            /* client endpoint (bind) */
    const char *back;             /* worker endpoint (bind) */
    const char *model_dir;        /* tokenizer.json, config.json, preprocessor_config.json */
    int64_t heartbeat_ms;         /* 1000 */
    int liveness;                 /* 3 */
    int max_requests;             /* requests in the table; more are refused "overloaded" (256) */
    int64_t stage_timeout_ms;     /* a stage with no worker fails the request after this (10000) */
    int64_t request_timeout_ms;   /* every request's deadline (600000) */
    int max_attempts;             /* tries per request when workers are lost (5) */
    int max_split;                /* encoders one video is split over (0: every encode worker) */
    int use_cache;                /* route cache hits to the encoder holding them (1) */
    int64_t ttft_ms, tpot_ms;     /* latency targets of the load monitor (2000, 100): STATS' slo */
    /* role switching (PROTOCOL.md §5.6) */
    int64_t switch_ms;            /* look at the stages' load this often (0: never switch by load) */
    int switch_windows;           /* the same starved and slack stages this many looks in a row (2) */
    int64_t switch_cooldown_ms;   /* no look for this long after a switch (0: 2 x switch_ms) */
    int switch_hi, switch_lo;     /* utilisation (percent) starved at or above, slack at or below (70, 30) */
    int64_t switch_drain_ms;      /* a drain not done by then is abandoned (60000) */
    int switch_share;             /* 1: a worker whose stage cannot spare it takes the starved role besides (0) */
    const char *curve_secret;     /* Z85 CURVE secret key of front (NULL: no encryption) */
    int verbose;
} vidi_router_config;

vidi_router_config vidi_router_config_default(void);

/* Role switching's GPU sharing (PROTOCOL.md §5.6): how much a worker on CUDA
 * device `device` (-1: the CPU) would share its GPU if it took role `role`
 * (0 media, 1 encode, 2 prefill, 3 decode), given the other n workers'
 * devices and roles (bit k: role k): 2 for each on the same device holding
 * that role (processes on one GPU take turns: a second one of a role adds no
 * GPU time to it), 1 for each holding another GPU stage k with busy[k] set.
 * 0 for media (it runs on the CPU) and for a worker on the CPU. The policy
 * takes the worker (and the giving stage) with the least. */
int vidi_switch_gpu_clash(int device, int role, const int *devices, const int *roles, int n, const int busy[4]);

/* Whether a stage (role 0 media .. 3 decode) of n workers, util percent busy
 * with wait_ms of work waiting, can spare a worker (PROTOCOL.md §5.6): two or
 * more workers, the wait spread over one fewer under backlog_ms (with share,
 * under half of it), and but for decode the utilisation so spread under hi. */
int vidi_switch_can_spare(int role, int util, int n, int64_t wait_ms, int64_t backlog_ms, int hi, int share);

/* Serve until *stop becomes nonzero (a signal handler sets it); then tell the
 * workers DISCONNECT and return. Fails only when it cannot start (model
 * folder, sockets). */
vidi_status vidi_router_run(const vidi_router_config *cfg, volatile sig_atomic_t *stop, vidi_err *err);

#endif
