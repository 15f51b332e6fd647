/* ipc/router.c — the router (router.h, PROTOCOL.md).
 *
 * One thread polls the front and back sockets. Requests live in a fixed
 * table; each holds what a retry needs (the prompt ids, the media bytes as
 * ZeroMQ message references, the sampling fields with a seed) and which
 * workers its current attempt uses. A worker that stops heartbeating, says
 * DISCONNECT, or cannot be sent to is dropped and every request that used
 * it starts again under a new attempt; messages of older attempts are
 * dropped when they arrive. Tokens the client already has are not sent
 * twice (the seed makes a retried request produce the same ones).
 */
#include "ipc/router.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc/fields.h"
#include "ipc/mmkey.h"
#include "ipc/msg.h"
#include "ipc/sock.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/mrope.h"
#include "model/tokenizer.h"

enum { ROLE_MEDIA = 1, ROLE_ENCODE = 2, ROLE_PREFILL = 4, ROLE_DECODE = 8 };
static const char *const k_roles[] = {"media", "encode", "prefill", "decode"};

#define MAX_WORKERS 64
#define MAX_MEDIA 16
#define MAX_SLICES 16
#define MAX_STOPS 4
#define EP_MAX 256
#define DIR_MAX 4096
/* "P0", "P1", ... "P15": per-position counters (speculative drafts) */
#define VIDI_POS16(p)                                                                                                 \
    p "0", p "1", p "2", p "3", p "4", p "5", p "6", p "7", p "8", p "9", p "10", p "11", p "12", p "13", p "14", p "15"
/* worker counters the router collects (STATS every second) and sums for clients */
static const char *const k_wk_stats[] = {"media", "encode", "encode_batches", "encode_cached", "prefill",
                                         "decode_in", "tokens", "mm_cache_hits", "mm_cache_misses",
                                         "mm_cache_entries", "ipc_sent", "ipc_received", "sparse_prefills",
                                         "sparse_pairs", "sparse_dense_pairs", "sparse_us", "spec_steps",
                                         "spec_proposed", "spec_accepted", "spec_emitted", "draft_encodes",
                                         "draft_prefills", VIDI_POS16("spec_proposed_at_"),
                                         VIDI_POS16("spec_accepted_at_"), "media_us", "encode_us", "prefill_us",
                                         "decode_us", "decode_moved", "encode_tokens", "prefill_tokens"};
/* the load monitor: per stage (k_roles' order) its busy counter and its unit of work in k_wk_stats */
static const char *const k_stage_busy[4] = {"media_us", "encode_us", "prefill_us", "decode_us"};
static const char *const k_stage_unit[4] = {"media", "encode", "prefill", "tokens"};
/* and the tokens its work took, where that differs from the unit: vision tokens an encoder made,
 * prompt tokens (vision ones included) a prefill took */
static const char *const k_stage_tokens[4] = {NULL, "encode_tokens", "prefill_tokens", NULL};
#define SLO_WINDOW 128
#define WK_STATS ((int)(sizeof k_wk_stats / sizeof k_wk_stats[0]))
#define CLIENT_SILENCE_MS 5000 /* clients heartbeat every second (client.c); 5 missed: gone */

vidi_router_config vidi_router_config_default(void) {
    vidi_router_config c = {0};
    c.heartbeat_ms = 1000;
    c.liveness = 3;
    c.max_requests = 256;
    c.stage_timeout_ms = 10000;
    c.request_timeout_ms = 600000;
    c.max_attempts = 5;
    c.use_cache = 1;
    c.ttft_ms = 2000;
    c.tpot_ms = 100;
    c.switch_windows = 2;
    c.switch_hi = 70;
    c.switch_lo = 30;
    c.switch_drain_ms = 60000;
    c.switch_share = 0;
    return c;
}

typedef struct wk {
    int used;
    uint8_t id[VIDI_IDENTITY_MAX];
    size_t id_len;
    char name[128];
    char data[EP_MAX];
    char ipc[64];               /* READY's cuda_ipc (this host's identity), "" when absent */
    int device;                 /* READY's device: its CUDA ordinal, -1 on the CPU */
    int roles;
    vidi_liveness live;
    int assigned;               /* stages of live requests sent to it */
    uint64_t queued, running;   /* as its heartbeats report */
    uint64_t kv_tokens;         /* its KV pool, in tokens (READY's capacity) */
    uint64_t kv_free_tokens;    /* free, as its last heartbeat said */
    uint64_t st[WK_STATS];      /* its counters, as its last STATS said (k_wk_stats) */
    int64_t stats_asked_ms;
    int64_t mon_ms;             /* the load monitor's last sample of it (0: none yet) */
    uint64_t mon_base[12];      /* busy, unit and token counters of each stage at that sample */
    uint64_t busy_pct[4];       /* each stage's share of its time between its last two heartbeats */
    int64_t hb_ms;              /* its last heartbeat with load.busy_us (0: none yet) */
    uint64_t hb_busy[4];        /* that heartbeat's busy_us */
    /* a role switch (PROTOCOL.md §5.6) */
    int draining;               /* switching: nothing new of the roles it drops is placed on it */
    int role_sent;              /* drained: ROLE went, READY is awaited */
    int switch_to;              /* the roles it is switching to */
    int64_t drain_ms, role_ms;  /* when DRAIN and ROLE went */
    int64_t sw_ms;              /* the switch policy's last look at its heartbeats (0: none yet) */
    uint64_t sw_busy[4];        /* busy_us then */
    int sw_util[4];             /* each stage's share of its time between the policy's last two looks */
} wk;

typedef struct media_in {
    vidi_media_kind kind;
    zmq_msg_t bytes;            /* a reference to the client's frame */
    double fps;
    uint64_t nframes, min_pixels, max_pixels;
    uint8_t key[16];
} media_in;

typedef struct rq {
    int used;
    uint64_t req, id, attempt;
    uint8_t client[VIDI_IDENTITY_MAX];
    size_t client_len;
    int64_t client_heard_ms;    /* the client's last message (PROTOCOL.md §6, clients) */
    int64_t created_ms, deadline_ms, queued_since_ms;
    int64_t dispatched_ms;      /* its first dispatch (0 before): queue time = dispatched - created */
    int64_t first_token_ms;     /* its first token's arrival (0 before) */
    int encoded;                /* an encoder's RESULT came for the current attempt (the load monitor) */
    int prefilled;              /* a TOKEN came under the current attempt: media, encode, prefill are done */
    int running;                /* dispatched under the current attempt */
    int tries;                  /* attempts that lost a worker mid-flight (max_attempts bounds them) */
    vidi_wire_code last_code;   /* why the last try failed (worker_lost or overloaded) */
    int busy;                   /* inside s_dispatch / s_retry: a lost worker is handled there */
    int32_t *ids;
    int64_t n_ids;
    int n_media;
    media_in media[MAX_MEDIA];
    vidi_wire_sampling samp;
    int stream;
    int n_stops;
    char *stops[MAX_STOPS];
    /* workers of the current attempt (indices into the registry) */
    int w_media, w_prefill, w_decode;
    int w_decode_plan;          /* the decode worker the prefill WORK names (w_decode may move on: §5.6) */
    uint64_t w_encoders;        /* bit mask */
    uint8_t held[MAX_WORKERS];  /* stages of this attempt counted in each worker's `assigned` */
    /* output */
    int64_t n_sent;             /* tokens the client has (by index) */
    vidi_detok detok;
    char *text;
    size_t text_len, text_cap;
    int64_t prompt_tokens;
    int cache_hits;             /* items served from the MM-token cache (this attempt) */
} rq;

typedef struct dir_slice {
    uint8_t key[16];
    int holder;                 /* worker index, -1 unknown */
} dir_slice;

typedef struct dir_entry {
    int used;
    uint8_t item_key[16];
    int n_slices;
    dir_slice slices[MAX_SLICES];
    int64_t last_used_ms;
} dir_entry;

typedef struct router {
    const vidi_router_config *cfg;
    void *ctx, *front, *back;
    vidi_model_config mcfg;
    vidi_tokenizer *tok;
    wk workers[MAX_WORKERS];
    rq *reqs;
    int n_reqs_cap;
    uint64_t next_req;
    dir_entry *dir;
    uint64_t rng;
    /* counters (STATS) */
    uint64_t c_requests, c_done, c_errors, c_overloaded, c_retries, c_cache_hit_items, c_media_items,
        c_encode_work, c_workers_lost, c_bad_msgs, c_clients_gone;
    /* the load monitor (STATS' stage_* and slo) */
    int stage_busy_at[4], stage_unit_at[4], stage_tokens_at[4]; /* k_wk_stats indices (-1: none) */
    double service_us[4];       /* recent time per unit of work of each stage (moving average) */
    double token_us[4];         /* encode and prefill: recent time per token, likewise */
    struct slo_sample { uint32_t ttft_ms, tpot_us, queue_ms; } slo[SLO_WINDOW]; /* TPOT in µs: a few ms a token */
    int n_slo, slo_next;
    /* role switching (PROTOCOL.md §5.6) */
    uint64_t c_switches, c_switch_aborted, c_switch_to[4], c_switch_from[4];
    uint64_t sw_last_ms, sw_max_ms, sw_role_last_ms, sw_role_max_ms;
    int64_t sw_next_ms, sw_cool_until;
    int sw_streak, sw_starved, sw_slack;  /* the policy's looks in a row at the same pair */
    int sw_prev_from, sw_prev_to;         /* the last switch by load: the stages it took from and gave to */
    int64_t sw_said_ms;                   /* when the policy last said a starved stage found no giver */
    /* a move to decode for TPOT, judged by its effect (s_switch_judge) */
    int sw_judge_wi;                      /* the worker moved (-1: none) */
    uint64_t sw_judge_tpot;               /* TPOT's p90 (µs) when the move was chosen */
    int64_t sw_judge_due;                 /* when to judge it (0: the switch has not ended yet) */
    int64_t sw_tpot_off_until;            /* TPOT alone makes decode starved again from then */
    uint64_t c_switch_unhelpful;
} router;

static void s_log(router *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_log(router *r, const char *fmt, ...) {
    if (!r->cfg->verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "router: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- workers ---- */

static int s_worker_find(router *r, const uint8_t *id, size_t n) {
    for (int i = 0; i < MAX_WORKERS; i++)
        if (r->workers[i].used && r->workers[i].id_len == n && !memcmp(r->workers[i].id, id, n)) return i;
    return -1;
}

/* The roles of a msgpack array of names as a mask; *unknown (when given)
 * counts the names that are none of k_roles. */
static int s_roles_mask(const msgpack_object *roles, size_t n, int *unknown) {
    int mask = 0;
    for (size_t i = 0; i < n; i++) {
        int k = 0;
        while (k < 4 && !vidi_mp_str_eq(&roles[i], k_roles[k])) k++;
        if (k < 4) mask |= 1 << k;
        else if (unknown) (*unknown)++;
    }
    return mask;
}

/* The roles worker w drops by the switch it is draining for (0 when none). */
static int s_dropping(const wk *w) { return w->draining ? w->roles & ~w->switch_to : 0; }

/* A worker new work may be placed on for a role: live, holding it, and not
 * draining to drop it (a switching worker keeps serving the roles it keeps). */
static int s_serves(const router *r, int wi, int role) {
    const wk *w = &r->workers[wi];
    return w->used && (w->roles & role) && !(s_dropping(w) & role);
}

/* Workers draining for a switch now (at most one: §5.6). */
static int s_n_draining(const router *r) {
    int n = 0;
    for (int i = 0; i < MAX_WORKERS; i++) n += r->workers[i].used && r->workers[i].draining;
    return n;
}

/* Each stage's utilisation and its workers taking work (s_switch_policy's
 * window or the last heartbeats). */
static void s_stage_util_of(const router *r, int window, int util[4], int n[4]);
static void s_switch_done(router *r, int wi, int mask);
static void s_on_role_client(router *r, const vidi_msg *m);

static int s_pick(router *r, int role, int prefer) {
    if (prefer >= 0 && s_serves(r, prefer, role)) return prefer;
    int best = -1;
    for (int i = 0; i < MAX_WORKERS; i++) {
        wk *w = &r->workers[i];
        if (!s_serves(r, i, role)) continue;
        if (best < 0 || w->assigned < r->workers[best].assigned) best = i;
    }
    return best;
}

static vidi_status s_send_worker(router *r, int wi, vidi_cmd cmd, vidi_msg_out *o);
static void s_retry(router *r, rq *q, const char *why);
static void s_fail(router *r, rq *q, vidi_wire_code code, const char *msg);

/* The directory forgets the items any of whose slices worker wi held. */
static void s_dir_forget(router *r, int wi) {
    for (int d = 0; d < DIR_MAX; d++)
        if (r->dir[d].used)
            for (int s = 0; s < r->dir[d].n_slices; s++)
                if (r->dir[d].slices[s].holder == wi) r->dir[d].used = 0;
}

/* A switch of worker wi that did not end in its new roles (abandoned,
 * refused; aborted: counted) or the worker gone: a move to decode through it
 * is judged no more. */
static void s_switch_failed(router *r, int wi, int aborted) {
    if (aborted) r->c_switch_aborted++;
    if (wi == r->sw_judge_wi) r->sw_judge_wi = -1; /* no move to judge */
}

static void s_worker_lost(router *r, int wi, const char *why) {
    wk *w = &r->workers[wi];
    if (!w->used) return;
    fprintf(stderr, "router: worker %s lost (%s)\n", w->name, why);
    r->c_workers_lost++;
    s_switch_failed(r, wi, w->draining);
    w->used = 0;
    s_dir_forget(r, wi);
    for (int i = 0; i < r->n_reqs_cap; i++) {
        rq *q = &r->reqs[i];
        if (q->used && q->running && !q->busy &&
            (q->w_media == wi || q->w_prefill == wi || q->w_decode == wi || (q->w_encoders >> wi) & 1))
            s_retry(r, q, why);
    }
}

static vidi_status s_send_worker(router *r, int wi, vidi_cmd cmd, vidi_msg_out *o) {
    vidi_err err = {0};
    wk *w = &r->workers[wi];
    vidi_status rc = vidi_msg_send(r->back, w->id, w->id_len, cmd, o, &err);
    vidi_msg_out_free(o);
    if (rc == VIDI_OK) vidi_liveness_sent(&w->live, vidi_now_ms());
    else s_worker_lost(r, wi, err.msg);
    return rc;
}

/* ---- directory ---- */

static dir_entry *s_dir_find(router *r, const uint8_t key[16]) {
    for (int d = 0; d < DIR_MAX; d++)
        if (r->dir[d].used && !memcmp(r->dir[d].item_key, key, 16)) return &r->dir[d];
    return NULL;
}

static dir_entry *s_dir_add(router *r, const uint8_t key[16], int n_slices) {
    dir_entry *e = s_dir_find(r, key);
    if (e && e->n_slices != n_slices) memset(e, 0, sizeof *e);
    if (!e || !e->used) {
        int victim = 0;
        for (int d = 0; d < DIR_MAX; d++) {
            if (!r->dir[d].used) {
                victim = d;
                break;
            }
            if (r->dir[d].last_used_ms < r->dir[victim].last_used_ms) victim = d;
        }
        e = &r->dir[victim];
        memset(e, 0, sizeof *e);
        e->used = 1;
        memcpy(e->item_key, key, 16);
        e->n_slices = n_slices;
        for (int s = 0; s < MAX_SLICES; s++) e->slices[s].holder = -1;
    }
    e->last_used_ms = vidi_now_ms();
    return e;
}

static int s_dir_complete(router *r, const dir_entry *e) {
    for (int s = 0; s < e->n_slices; s++) {
        int h = e->slices[s].holder;
        if (h < 0 || !s_serves(r, h, ROLE_ENCODE)) return 0;
    }
    return e->n_slices > 0;
}

/* ---- client replies ---- */

static void s_client_send(router *r, rq *q, vidi_cmd cmd, vidi_msg_out *o) {
    vidi_err err = {0};
    if (vidi_msg_send(r->front, q->client, q->client_len, cmd, o, &err) != VIDI_OK) {
        /* the client went away: nobody waits for this request */
        s_log(r, "request %" PRIu64 ": client gone (%s)", q->req, err.msg);
        q->client_len = 0;
    }
    vidi_msg_out_free(o);
}

/* A stage of q planned on worker wi: it counts in the worker's load until released. */
static void s_hold(router *r, rq *q, int wi) {
    r->workers[wi].assigned++;
    q->held[wi]++;
}

/* Give back every stage q holds: the workers' loads drop by what s_hold added. */
static void s_release(router *r, rq *q) {
    for (int wi = 0; wi < MAX_WORKERS; wi++) {
        int *a = &r->workers[wi].assigned;
        *a = *a > q->held[wi] ? *a - q->held[wi] : 0;
        q->held[wi] = 0;
    }
}

static void s_cancel_workers(router *r, rq *q) {
    int ws[3] = {q->w_media, q->w_prefill, q->w_decode};
    uint64_t mask = q->w_encoders;
    for (int k = 0; k < 3; k++)
        if (ws[k] >= 0) mask |= 1ull << ws[k];
    s_release(r, q);
    for (int wi = 0; wi < MAX_WORKERS; wi++) {
        if (!((mask >> wi) & 1) || !r->workers[wi].used) continue;
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 2);
        vidi_mp_kv_u64(&o.pk, "req", q->req);
        vidi_mp_kv_u64(&o.pk, "attempt", q->attempt);
        s_send_worker(r, wi, VIDI_CMD_CANCEL, &o);
    }
    q->w_media = q->w_prefill = q->w_decode = q->w_decode_plan = -1;
    q->w_encoders = 0;
}

static void s_rq_free(rq *q) {
    for (int i = 0; i < q->n_media; i++) zmq_msg_close(&q->media[i].bytes);
    for (int i = 0; i < q->n_stops; i++) free(q->stops[i]);
    free(q->ids);
    free(q->text);
    memset(q, 0, sizeof *q);
}

static void s_fail(router *r, rq *q, vidi_wire_code code, const char *msg) {
    r->c_errors++;
    s_cancel_workers(r, q);
    if (q->client_len) {
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 3);
        vidi_mp_kv_u64(&o.pk, "id", q->id);
        vidi_mp_kv_str(&o.pk, "code", vidi_wire_code_name(code));
        vidi_mp_kv_str(&o.pk, "message", msg);
        s_client_send(r, q, VIDI_CMD_ERROR, &o);
    }
    s_log(r, "request %" PRIu64 " failed: %s: %s", q->req, vidi_wire_code_name(code), msg);
    s_rq_free(q);
}

static void s_monitor_done(router *r, const rq *q);

static void s_finish(router *r, rq *q, const char *finish) {
    r->c_done++;
    if (strcmp(finish, "cancelled")) s_monitor_done(r, q);
    size_t nt = 0;
    char tail[64];
    if (vidi_detok_flush(&q->detok, tail, sizeof tail, &nt, NULL) == VIDI_OK && nt && q->text_len + nt < q->text_cap) {
        memcpy(q->text + q->text_len, tail, nt);
        q->text_len += nt;
    }
    if (q->client_len) {
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 7);
        vidi_mp_kv_u64(&o.pk, "id", q->id);
        vidi_mp_kv_str(&o.pk, "finish", finish);
        vidi_mp_kv_u64(&o.pk, "tokens", (uint64_t)q->n_sent);
        vidi_mp_kv_u64(&o.pk, "prompt_tokens", (uint64_t)q->prompt_tokens);
        vidi_mp_pack_cstr(&o.pk, "text");
        msgpack_pack_str(&o.pk, q->text_len);
        msgpack_pack_str_body(&o.pk, q->text, q->text_len);
        vidi_mp_kv_u64(&o.pk, "cache_hits", (uint64_t)q->cache_hits);
        vidi_mp_pack_cstr(&o.pk, "timings");
        msgpack_pack_map(&o.pk, 2);
        vidi_mp_kv_f64(&o.pk, "total_s", (double)(vidi_now_ms() - q->created_ms) / 1000.0);
        vidi_mp_kv_f64(&o.pk, "queue_s",
                       q->dispatched_ms ? (double)(q->dispatched_ms - q->created_ms) / 1000.0 : 0.0);
        s_client_send(r, q, VIDI_CMD_DONE, &o);
    }
    s_log(r, "request %" PRIu64 " done (%s, %" PRId64 " tokens)", q->req, finish, q->n_sent);
}

/* ---- dispatch ---- */

static void s_pack_req(msgpack_packer *pk, const rq *q) {
    vidi_mp_kv_u64(pk, "req", q->req);
    vidi_mp_kv_u64(pk, "attempt", q->attempt);
}

static int s_dispatch_sends(router *r, rq *q);

/* Plan and send the WORK of every first hop. Returns 0 when sent, 1 when a
 * role has no worker, 2 when a worker of the plan turned out to be gone (it
 * is dropped; the plan is abandoned under a new attempt number without
 * counting a try). With 1 and 2 the request stays queued for the next tick. */
static int s_dispatch(router *r, rq *q) {
    q->busy = 1;
    int rc = s_dispatch_sends(r, q);
    q->busy = 0;
    if (rc == 2) {
        q->running = 0;
        s_cancel_workers(r, q);
        q->attempt++;
    }
    return rc;
}

static int s_dispatch_sends(router *r, rq *q) {
    int need = ROLE_PREFILL | ROLE_DECODE | (q->n_media ? ROLE_ENCODE : 0);
    int cached[MAX_MEDIA] = {0};
    int any_miss = 0;
    for (int i = 0; i < q->n_media; i++) {
        dir_entry *e = r->cfg->use_cache ? s_dir_find(r, q->media[i].key) : NULL;
        cached[i] = e && s_dir_complete(r, e);
        if (!cached[i]) any_miss = 1;
    }
    if (any_miss) need |= ROLE_MEDIA;
    int wp = s_pick(r, ROLE_PREFILL, -1);
    int wd = s_pick(r, ROLE_DECODE, wp); /* decode where prefill runs when it can: no KV transfer */
    int wm = any_miss ? s_pick(r, ROLE_MEDIA, wp) : -1; /* media, and the first encoder, where prefill runs */
    int encs[MAX_WORKERS], n_encs = 0;
    for (int i = 0; i < MAX_WORKERS; i++)
        if (s_serves(r, i, ROLE_ENCODE)) encs[n_encs++] = i;
    /* least loaded first */
    for (int i = 1; i < n_encs; i++)
        for (int k = i; k > 0 && r->workers[encs[k]].assigned < r->workers[encs[k - 1]].assigned; k--) {
            int t = encs[k];
            encs[k] = encs[k - 1];
            encs[k - 1] = t;
        }
    for (int i = 1; i < n_encs; i++)
        if (encs[i] == wp) {
            memmove(&encs[1], &encs[0], (size_t)i * sizeof encs[0]);
            encs[0] = wp;
        }
    if (r->cfg->max_split > 0 && n_encs > r->cfg->max_split) n_encs = r->cfg->max_split;
    if (wp < 0 || wd < 0 || ((need & ROLE_MEDIA) && wm < 0) || ((need & ROLE_ENCODE) && n_encs == 0)) return 1;

    q->running = 1;
    q->encoded = 0;
    q->prefilled = 0;
    if (!q->dispatched_ms) q->dispatched_ms = vidi_now_ms();
    q->w_prefill = wp, q->w_decode = wd, q->w_media = wm, q->w_decode_plan = wd;
    q->w_encoders = 0;
    q->cache_hits = 0;
    s_hold(r, q, wp);
    if (wd != wp) s_hold(r, q, wd);
    /* cache hits: each holder sends its slices to prefill */
    for (int i = 0; i < q->n_media; i++) {
        if (!cached[i]) continue;
        dir_entry *e = s_dir_find(r, q->media[i].key);
        e->last_used_ms = vidi_now_ms();
        q->cache_hits++;
        r->c_cache_hit_items++;
        for (int s = 0; s < e->n_slices; s++) {
            int h = e->slices[s].holder;
            q->w_encoders |= 1ull << h;
            vidi_msg_out o;
            vidi_msg_out_init(&o);
            msgpack_pack_map(&o.pk, 5 + (r->workers[wp].ipc[0] != 0));
            s_pack_req(&o.pk, q);
            vidi_mp_kv_str(&o.pk, "stage", "encode");
            vidi_mp_kv_str(&o.pk, "prefill", r->workers[wp].data);
            if (r->workers[wp].ipc[0]) vidi_mp_kv_str(&o.pk, "prefill_ipc", r->workers[wp].ipc);
            vidi_mp_pack_cstr(&o.pk, "cached");
            msgpack_pack_array(&o.pk, 1);
            msgpack_pack_map(&o.pk, 4);
            vidi_mp_kv_u64(&o.pk, "item", (uint64_t)i);
            vidi_mp_kv_u64(&o.pk, "slice", (uint64_t)s);
            vidi_mp_kv_u64(&o.pk, "n_slices", (uint64_t)e->n_slices);
            vidi_mp_kv_bin(&o.pk, "key", e->slices[s].key, 16);
            if (s_send_worker(r, h, VIDI_CMD_WORK, &o) != VIDI_OK) return 2;
        }
    }
    /* the prefill WORK */
    {
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 6 + (r->workers[wd].ipc[0] != 0) + vidi_wire_sampling_fields(&q->samp));
        s_pack_req(&o.pk, q);
        vidi_mp_kv_str(&o.pk, "stage", "prefill");
        vidi_mp_pack_cstr(&o.pk, "ids");
        msgpack_pack_array(&o.pk, (size_t)q->n_ids);
        for (int64_t i = 0; i < q->n_ids; i++) msgpack_pack_uint64(&o.pk, (uint64_t)q->ids[i]);
        vidi_mp_pack_cstr(&o.pk, "kinds");
        msgpack_pack_array(&o.pk, (size_t)q->n_media);
        for (int i = 0; i < q->n_media; i++)
            vidi_mp_pack_cstr(&o.pk, q->media[i].kind == VIDI_MEDIA_VIDEO ? "video" : "image");
        vidi_mp_kv_str(&o.pk, "decode", r->workers[wd].data);
        if (r->workers[wd].ipc[0]) vidi_mp_kv_str(&o.pk, "decode_ipc", r->workers[wd].ipc);
        vidi_wire_sampling_pack(&o.pk, &q->samp);
        if (s_send_worker(r, wp, VIDI_CMD_WORK, &o) != VIDI_OK) return 2;
    }
    if (!any_miss) return 0;
    /* the media WORK: every item not cached, with the encoders to split it over */
    int n_items = 0;
    for (int i = 0; i < q->n_media; i++) n_items += !cached[i];
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 6 + (r->workers[wp].ipc[0] != 0));
    s_pack_req(&o.pk, q);
    vidi_mp_kv_str(&o.pk, "stage", "media");
    vidi_mp_kv_str(&o.pk, "prefill", r->workers[wp].data);
    if (r->workers[wp].ipc[0]) vidi_mp_kv_str(&o.pk, "prefill_ipc", r->workers[wp].ipc);
    vidi_mp_pack_cstr(&o.pk, "items");
    msgpack_pack_array(&o.pk, (size_t)n_items);
    int rot = 0;
    for (int i = 0; i < q->n_media; i++) {
        if (cached[i]) continue;
        media_in *m = &q->media[i];
        r->c_media_items++;
        msgpack_pack_map(&o.pk, 9);
        vidi_mp_kv_u64(&o.pk, "item", (uint64_t)i);
        vidi_mp_kv_bin(&o.pk, "key", m->key, 16);
        vidi_mp_kv_str(&o.pk, "kind", m->kind == VIDI_MEDIA_VIDEO ? "video" : "image");
        vidi_mp_kv_u64(&o.pk, "tensor", (uint64_t)(rot));
        vidi_mp_kv_f64(&o.pk, "fps", m->fps);
        vidi_mp_kv_u64(&o.pk, "nframes", m->nframes);
        vidi_mp_kv_u64(&o.pk, "min_pixels", m->min_pixels);
        vidi_mp_kv_u64(&o.pk, "max_pixels", m->max_pixels);
        vidi_mp_pack_cstr(&o.pk, "encoders");
        /* images go to one encoder (spread over items); videos to all of them */
        int ne = m->kind == VIDI_MEDIA_VIDEO ? n_encs : 1;
        msgpack_pack_array(&o.pk, (size_t)ne);
        for (int k = 0; k < ne; k++) {
            int e = encs[(rot + k) % n_encs];
            q->w_encoders |= 1ull << e;
            s_hold(r, q, e);
            vidi_mp_pack_cstr(&o.pk, r->workers[e].data);
        }
        rot++;
    }
    vidi_mp_pack_cstr(&o.pk, "tensors");
    msgpack_pack_array(&o.pk, (size_t)n_items);
    vidi_err err = {0};
    for (int i = 0; i < q->n_media; i++) {
        if (cached[i]) continue;
        size_t n = zmq_msg_size(&q->media[i].bytes);
        int64_t shape[1] = {(int64_t)n};
        /* the bytes are copied once into the message (a retry needs them too) */
        vidi_msg_out_tensor(&o, VIDI_WIRE_U8, 1, shape, zmq_msg_data(&q->media[i].bytes), n, NULL, NULL, &err);
    }
    s_hold(r, q, wm);
    return s_send_worker(r, wm, VIDI_CMD_WORK, &o) == VIDI_OK ? 0 : 2;
}

/* A worker of the request's plan was lost mid-flight (or a stage asks to
 * start again): cancel what the plan sent, and plan again under a new
 * attempt number, or fail after max_attempts tries. */
static void s_retry(router *r, rq *q, const char *why) {
    if (!q->used || q->busy) return;
    q->busy = 1;
    q->running = 0;
    s_cancel_workers(r, q);
    q->busy = 0;
    q->attempt++;
    q->tries++;
    r->c_retries++;
    if (q->tries >= r->cfg->max_attempts) {
        char msg[512];
        snprintf(msg, sizeof msg, "gave up after %d attempts; the last: %s", q->tries, why);
        s_fail(r, q, q->last_code == VIDI_WIRE_OVERLOADED ? VIDI_WIRE_OVERLOADED : VIDI_WIRE_WORKER_LOST, msg);
        return;
    }
    s_log(r, "request %" PRIu64 ": retry %d (%s)", q->req, q->tries, why);
    q->queued_since_ms = vidi_now_ms();
    s_dispatch(r, q);
}

/* ---- client messages ---- */

#define MAX_TURNS 64
#define MAX_PARTS 256

/* REQUEST's `messages` (PROTOCOL.md §5.2) -> prompt ids with one pad per media
 * item, the items used in order, each once. */
static vidi_status s_build_messages(router *r, const msgpack_object *msgs, size_t n_msgs, const media_in *media,
                                    int n_media, int32_t **ids, int64_t *n_ids, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_chat_message turns[MAX_TURNS];
    vidi_chat_part *parts = calloc(MAX_PARTS, sizeof *parts);
    char **texts = calloc(MAX_PARTS, sizeof *texts);
    char *rendered = NULL;
    size_t n_ids_sz = 0;
    int np = 0, next_media = 0;
    VIDI_CHECK(parts && texts, err, VIDI_ERR_NOMEM, "messages: out of memory");
    VIDI_CHECK(n_msgs >= 1 && n_msgs <= MAX_TURNS, err, VIDI_ERR_RANGE, "field 'messages': 1 to %d turns",
               MAX_TURNS);
    for (size_t t = 0; t < n_msgs; t++) {
        const msgpack_object *msg = &msgs[t];
        const msgpack_object *role = vidi_mp_get(msg, "role"), *content = vidi_mp_get(msg, "content");
        VIDI_CHECK(msg->type == MSGPACK_OBJECT_MAP && content, err, VIDI_ERR_FORMAT,
                   "messages[%zu]: a map with 'role' and 'content'", t);
        const char *rn = vidi_mp_str_eq(role, "system") ? "system" : vidi_mp_str_eq(role, "user") ? "user"
                         : vidi_mp_str_eq(role, "assistant") ? "assistant" : NULL;
        VIDI_CHECK(rn, err, VIDI_ERR_FORMAT, "messages[%zu]: 'role' must be system, user or assistant", t);
        turns[t] = (vidi_chat_message){.role = rn, .parts = parts + np, .n_parts = 0};
        const msgpack_object *items = content;
        uint32_t n_items = 1;
        if (content->type == MSGPACK_OBJECT_ARRAY) {
            items = content->via.array.ptr;
            n_items = content->via.array.size;
        } else {
            VIDI_CHECK(content->type == MSGPACK_OBJECT_STR, err, VIDI_ERR_FORMAT,
                       "messages[%zu]: 'content' must be a string or an array of parts", t);
        }
        for (uint32_t k = 0; k < n_items; k++) {
            const msgpack_object *it = &items[k];
            VIDI_CHECK(np < MAX_PARTS, err, VIDI_ERR_RANGE, "messages: more than %d parts", MAX_PARTS);
            vidi_chat_part *pt = &parts[np];
            if (it->type == MSGPACK_OBJECT_STR) {
                texts[np] = strndup(it->via.str.ptr, it->via.str.size);
                VIDI_CHECK(texts[np], err, VIDI_ERR_NOMEM, "messages: out of memory");
                *pt = (vidi_chat_part){.kind = VIDI_CHAT_TEXT, .text = texts[np]};
            } else {
                const msgpack_object *type = vidi_mp_get(it, "type");
                VIDI_CHECK(it->type == MSGPACK_OBJECT_MAP && type, err, VIDI_ERR_FORMAT,
                           "messages[%zu].content[%u]: a part is a map with 'type'", t, k);
                if (vidi_mp_str_eq(type, "text")) {
                    const char *txt;
                    size_t tn;
                    VIDI_TRY(vidi_mp_str(it, "text", 1, 256 << 10, &txt, &tn, err));
                    texts[np] = strndup(txt, tn);
                    VIDI_CHECK(texts[np], err, VIDI_ERR_NOMEM, "messages: out of memory");
                    *pt = (vidi_chat_part){.kind = VIDI_CHAT_TEXT, .text = texts[np]};
                } else if (vidi_mp_str_eq(type, "image") || vidi_mp_str_eq(type, "video")) {
                    uint64_t mi;
                    VIDI_TRY(vidi_mp_u64(it, "media", 1, 0, 0, MAX_MEDIA - 1, &mi, err));
                    int video = vidi_mp_str_eq(type, "video");
                    VIDI_CHECK((int)mi == next_media && (int)mi < n_media, err, VIDI_ERR_FORMAT,
                               "messages[%zu].content[%u]: media %llu; the parts must use media 0, 1, 2, ... in order, "
                               "each once (%d given)",
                               t, k, (unsigned long long)mi, n_media);
                    VIDI_CHECK((media[mi].kind == VIDI_MEDIA_VIDEO) == video, err, VIDI_ERR_FORMAT,
                               "messages[%zu].content[%u]: media %llu is %s", t, k, (unsigned long long)mi,
                               media[mi].kind == VIDI_MEDIA_VIDEO ? "a video" : "an image");
                    next_media++;
                    *pt = (vidi_chat_part){.kind = video ? VIDI_CHAT_VIDEO : VIDI_CHAT_IMAGE};
                } else {
                    VIDI_CHECK(0, err, VIDI_ERR_FORMAT, "messages[%zu].content[%u]: type must be text, image or video",
                               t, k);
                }
            }
            np++;
            turns[t].n_parts++;
        }
    }
    VIDI_CHECK(next_media == n_media, err, VIDI_ERR_FORMAT, "messages use %d of the %d media items", next_media,
               n_media);
    VIDI_TRY(vidi_chat_template_render(turns, (int)n_msgs, 1, &rendered, err));
    VIDI_TRY(vidi_tokenizer_encode(r->tok, rendered, strlen(rendered), ids, &n_ids_sz, err));
    *n_ids = (int64_t)n_ids_sz;
    int pads = 0;
    for (int64_t i = 0; i < *n_ids; i++)
        pads += (*ids)[i] == r->mcfg.image_token_id || (*ids)[i] == r->mcfg.video_token_id;
    if (pads != n_media) {
        free(*ids);
        *ids = NULL;
        VIDI_CHECK(0, err, VIDI_ERR_INVALID, "messages: %d media pads in the rendered prompt for %d media items (a pad "
                   "token written in the text?)", pads, n_media);
    }
fail:
    if (texts)
        for (int i = 0; i < MAX_PARTS; i++) free(texts[i]);
    free(texts);
    free(parts);
    free(rendered);
    return rc;
}

static void s_client_error(router *r, const vidi_msg *m, int64_t id, vidi_wire_code code, const char *msg) {
    if (m->cmd == VIDI_CMD_ERROR) return;
    vidi_msg_send_error(r->front, m->identity, m->identity_len, code, id, msg, NULL);
}

static void s_on_request(router *r, vidi_msg *m) {
    vidi_err err = {0};
    uint64_t id;
    if (vidi_mp_u64(m->header, "id", 1, 0, 0, UINT64_MAX, &id, &err) != VIDI_OK) {
        s_client_error(r, m, -1, VIDI_WIRE_BAD_FIELD, err.msg);
        return;
    }
    int64_t cid = id > INT64_MAX ? -1 : (int64_t)id;
    rq *q = NULL;
    int active = 0;
    for (int i = 0; i < r->n_reqs_cap; i++) {
        if (r->reqs[i].used) active++;
        else if (!q) q = &r->reqs[i];
    }
    if (!q || active >= r->cfg->max_requests) {
        r->c_overloaded++;
        char msg[128];
        snprintf(msg, sizeof msg, "%d requests in flight: the limit is %d; retry later", active, r->cfg->max_requests);
        s_client_error(r, m, cid, VIDI_WIRE_OVERLOADED, msg);
        return;
    }
    memset(q, 0, sizeof *q);
    q->w_media = q->w_prefill = q->w_decode = q->w_decode_plan = -1;
    const char *prompt = NULL, *system = NULL;
    size_t pn = 0, sn = 0;
    const msgpack_object *media = NULL, *stops = NULL;
    size_t n_media = 0, n_stops = 0;
    vidi_wire_code code = VIDI_WIRE_BAD_FIELD;
    char *ptext = NULL, *stext = NULL;
    vidi_status rc;
    const msgpack_object *chat = NULL;
    size_t n_chat = 0;
    if ((rc = vidi_mp_array(m->header, "messages", 0, MAX_TURNS, &chat, &n_chat, &err)) ||
        (rc = vidi_mp_str(m->header, "prompt", !chat, 256 << 10, &prompt, &pn, &err)) ||
        (rc = vidi_mp_str(m->header, "system", 0, 64 << 10, &system, &sn, &err)) ||
        (rc = vidi_mp_array(m->header, "media", 0, MAX_MEDIA, &media, &n_media, &err)) ||
        (rc = vidi_mp_array(m->header, "stop", 0, MAX_STOPS, &stops, &n_stops, &err)) ||
        (rc = vidi_wire_sampling_parse(m->header, &q->samp, &err)) ||
        (rc = vidi_mp_bool(m->header, "stream", 0, 1, &q->stream, &err)))
        goto bad;
    if (chat && (prompt || system)) {
        vidi_err_set(&err, VIDI_ERR_FORMAT, "give 'messages' or 'prompt' (with 'system'), not both");
        goto bad;
    }
    for (size_t i = 0; i < n_stops; i++) {
        if (stops[i].type != MSGPACK_OBJECT_STR || stops[i].via.str.size == 0 || stops[i].via.str.size > 256) {
            vidi_err_set(&err, VIDI_ERR_FORMAT, "field 'stop': item %zu is not a string of 1 to 256 bytes", i);
            goto bad;
        }
        q->stops[q->n_stops] = strndup(stops[i].via.str.ptr, stops[i].via.str.size);
        if (!q->stops[q->n_stops]) goto oom;
        q->n_stops++;
    }
    vidi_media items[MAX_MEDIA];
    memset(items, 0, sizeof items);
    for (size_t i = 0; i < n_media; i++) {
        const msgpack_object *it = &media[i];
        media_in *mi = &q->media[i];
        uint64_t t;
        const msgpack_object *k = vidi_mp_get(it, "kind");
        if (it->type != MSGPACK_OBJECT_MAP) {
            vidi_err_set(&err, VIDI_ERR_FORMAT, "media[%zu]: expected a map", i);
            goto bad;
        }
        if (vidi_mp_str_eq(k, "image")) mi->kind = VIDI_MEDIA_IMAGE;
        else if (vidi_mp_str_eq(k, "video")) mi->kind = VIDI_MEDIA_VIDEO;
        else {
            vidi_err_set(&err, VIDI_ERR_FORMAT, "media[%zu]: field 'kind' must be \"image\" or \"video\"", i);
            goto bad;
        }
        if ((rc = vidi_mp_u64(it, "tensor", 1, 0, 0, (uint64_t)(m->n_tensors ? m->n_tensors - 1 : 0), &t, &err)) ||
            (rc = vidi_mp_f64(it, "fps", 0, 0.0, 0.0, 120.0, &mi->fps, &err)) ||
            (rc = vidi_mp_u64(it, "nframes", 0, 0, 0, 768, &mi->nframes, &err)) ||
            (rc = vidi_mp_u64(it, "min_pixels", 0, 0, 0, 1ull << 28, &mi->min_pixels, &err)) ||
            (rc = vidi_mp_u64(it, "max_pixels", 0, 0, 0, 1ull << 28, &mi->max_pixels, &err))) {
            vidi_err_prefix(&err, "media[%zu]", i);
            goto bad;
        }
        if (!m->n_tensors || m->tensors[t].frame < 0 || m->tensors[t].dtype != VIDI_WIRE_U8) {
            vidi_err_set(&err, VIDI_ERR_FORMAT, "media[%zu]: tensors[%llu] must be the file's bytes (u8, a frame)", i,
                         (unsigned long long)t);
            code = VIDI_WIRE_BAD_TENSOR;
            goto bad;
        }
        zmq_msg_init(&mi->bytes);
        zmq_msg_copy(&mi->bytes, &m->parts[3 + m->tensors[t].frame]);
        q->n_media = (int)i + 1;
        vidi_mm_params kp = {.kind = mi->kind, .fps = mi->fps, .nframes = (int64_t)mi->nframes,
                             .min_pixels = (int64_t)mi->min_pixels, .max_pixels = (int64_t)mi->max_pixels};
        vidi_mm_key(zmq_msg_data(&mi->bytes), zmq_msg_size(&mi->bytes), &kp, mi->key);
        items[i].kind = mi->kind;
        items[i].grid[0] = 1;
        items[i].grid[1] = items[i].grid[2] = r->mcfg.vision.spatial_merge_size;
    }
    /* the chat with one pad per item (prefill expands them) */
    if (chat) {
        if (s_build_messages(r, chat, n_chat, q->media, q->n_media, &q->ids, &q->n_ids, &err) != VIDI_OK) {
            code = err.status == VIDI_ERR_FORMAT || err.status == VIDI_ERR_RANGE ? VIDI_WIRE_BAD_FIELD
                                                                                  : VIDI_WIRE_BAD_REQUEST;
            goto bad;
        }
    } else {
        ptext = strndup(prompt, pn);
        stext = system ? strndup(system, sn) : NULL;
        if (!ptext || (system && !stext)) goto oom;
        if (vidi_prompt_build(&r->mcfg, r->tok, stext, ptext, items, q->n_media, &q->ids, &q->n_ids, &err) !=
            VIDI_OK) {
            code = VIDI_WIRE_BAD_REQUEST;
            goto bad;
        }
    }
    free(ptext);
    free(stext);
    ptext = stext = NULL;
    {
        /* memory: the prompt's text (media not yet counted: their grids come later) plus
         * max_tokens must fit a decode worker's KV pool at all, and, now, its free part */
        uint64_t need = (uint64_t)q->n_ids + q->samp.max_tokens, most = 0, most_free = 0;
        int decoders = 0;
        for (int i = 0; i < MAX_WORKERS; i++)
            if (r->workers[i].used && (r->workers[i].roles & ROLE_DECODE) && r->workers[i].kv_tokens) {
                decoders++;
                if (r->workers[i].kv_tokens > most) most = r->workers[i].kv_tokens;
                if (r->workers[i].kv_free_tokens > most_free) most_free = r->workers[i].kv_free_tokens;
            }
        if (decoders && need > most) {
            vidi_err_set(&err, VIDI_ERR_RANGE,
                         "the prompt (%lld tokens before media) plus max_tokens (%llu) needs more KV than any decode "
                         "worker holds (%llu tokens)",
                         (long long)q->n_ids, (unsigned long long)q->samp.max_tokens, (unsigned long long)most);
            code = VIDI_WIRE_BAD_REQUEST;
            goto bad;
        }
        if (decoders && need > most_free) {
            r->c_overloaded++;
            vidi_err_set(&err, VIDI_ERR_RANGE, "no decode worker has %llu tokens of KV free now; retry later",
                         (unsigned long long)need);
            code = VIDI_WIRE_OVERLOADED;
            goto bad;
        }
    }
    if (!q->samp.has_seed) {
        r->rng = r->rng * 6364136223846793005ull + 1442695040888963407ull;
        q->samp.seed = r->rng >> 11;
        q->samp.has_seed = 1;
    }
    q->text_cap = 4096;
    q->text = malloc(q->text_cap);
    if (!q->text) goto oom;
    vidi_detok_init(&q->detok, r->tok, 1);
    q->used = 1;
    q->id = id;
    /* the slot in the number: s_find_req finds it at once (PROTOCOL.md §5.3) */
    q->req = r->next_req++ * (uint64_t)r->n_reqs_cap + (uint64_t)(q - r->reqs);
    memcpy(q->client, m->identity, m->identity_len);
    q->client_len = m->identity_len;
    q->created_ms = q->queued_since_ms = q->client_heard_ms = vidi_now_ms();
    q->deadline_ms = q->created_ms + r->cfg->request_timeout_ms;
    r->c_requests++;
    s_log(r, "request %" PRIu64 " (client id %" PRIu64 "): %" PRId64 " prompt ids, %d media", q->req, id, q->n_ids,
          q->n_media);
    s_dispatch(r, q);
    return;
oom:
    vidi_err_set(&err, VIDI_ERR_NOMEM, "out of memory");
    code = VIDI_WIRE_INTERNAL;
bad:
    free(ptext);
    free(stext);
    s_client_error(r, m, cid, code, err.msg);
    s_rq_free(q);
}

static rq *s_find_client_req(router *r, const vidi_msg *m, uint64_t id) {
    for (int i = 0; i < r->n_reqs_cap; i++) {
        rq *q = &r->reqs[i];
        if (q->used && q->id == id && q->client_len == m->identity_len && !memcmp(q->client, m->identity, q->client_len))
            return q;
    }
    return NULL;
}

static void s_pack_monitor(router *r, msgpack_packer *pk);

static void s_on_stats_client(router *r, const vidi_msg *m) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    int n_workers = 0, active = 0, running = 0;
    for (int i = 0; i < MAX_WORKERS; i++) n_workers += r->workers[i].used;
    for (int i = 0; i < r->n_reqs_cap; i++) active += r->reqs[i].used, running += r->reqs[i].used && r->reqs[i].running;
    msgpack_pack_map(&o.pk, (size_t)(16 + 8 + WK_STATS + 5 + 2));
#define KV(k, v)                                                                                                      \
    do {                                                                                                              \
        vidi_mp_pack_cstr(&o.pk, k);                                                                                  \
        msgpack_pack_uint64(&o.pk, (uint64_t)(v));                                                                    \
    } while (0)
    KV("requests", r->c_requests);
    KV("done", r->c_done);
    KV("errors", r->c_errors);
    KV("overloaded", r->c_overloaded);
    KV("retries", r->c_retries);
    KV("cache_hit_items", r->c_cache_hit_items);
    KV("media_items", r->c_media_items);
    KV("encode_work", r->c_encode_work);
    KV("workers_lost", r->c_workers_lost);
    KV("bad_messages", r->c_bad_msgs);
    KV("clients_gone", r->c_clients_gone);
    KV("active", active);
    KV("running", running);
    KV("waiting", active - running);
    KV("workers", n_workers);
    KV("switches", r->c_switches);
    KV("switches_aborted", r->c_switch_aborted);
    KV("switches_unhelpful", r->c_switch_unhelpful);
    KV("switch_ms_last", r->sw_last_ms);
    KV("switch_ms_max", r->sw_max_ms);
    KV("switch_role_ms_last", r->sw_role_last_ms);
    KV("switch_role_ms_max", r->sw_role_max_ms);
    KV("draining", s_n_draining(r));
#undef KV
    for (int t = 0; t < 2; t++) {
        vidi_mp_pack_cstr(&o.pk, t ? "switched_from" : "switched_to");
        msgpack_pack_map(&o.pk, 4);
        for (int k = 0; k < 4; k++) vidi_mp_kv_u64(&o.pk, k_roles[k], t ? r->c_switch_from[k] : r->c_switch_to[k]);
    }
    for (int k = 0; k < WK_STATS; k++) { /* "workers_<counter>": the sum over live workers */
        uint64_t sum = 0;
        char key[64];
        for (int i = 0; i < MAX_WORKERS; i++)
            if (r->workers[i].used) sum += r->workers[i].st[k];
        snprintf(key, sizeof key, "workers_%s", k_wk_stats[k]);
        vidi_mp_kv_u64(&o.pk, key, sum);
    }
    vidi_mp_pack_cstr(&o.pk, "roles");
    msgpack_pack_map(&o.pk, 4);
    for (int k = 0; k < 4; k++) {
        int n = 0;
        for (int i = 0; i < MAX_WORKERS; i++) n += r->workers[i].used && (r->workers[i].roles >> k & 1);
        vidi_mp_pack_cstr(&o.pk, k_roles[k]);
        msgpack_pack_uint64(&o.pk, (uint64_t)n);
    }
    s_pack_monitor(r, &o.pk);
    vidi_msg_send(r->front, m->identity, m->identity_len, VIDI_CMD_STATS, &o, NULL);
    vidi_msg_out_free(&o);
}

static void s_on_front(router *r, vidi_msg *m) {
    uint64_t id;
    rq *q;
    int64_t now = vidi_now_ms();
    for (int i = 0; i < r->n_reqs_cap; i++) /* any message keeps the client's requests */
        if (r->reqs[i].used && r->reqs[i].client_len == m->identity_len &&
            !memcmp(r->reqs[i].client, m->identity, m->identity_len))
            r->reqs[i].client_heard_ms = now;
    switch (m->cmd) {
    case VIDI_CMD_REQUEST: s_on_request(r, m); return;
    case VIDI_CMD_STATS: s_on_stats_client(r, m); return;
    case VIDI_CMD_ROLE: s_on_role_client(r, m); return;
    case VIDI_CMD_HEARTBEAT: return;
    case VIDI_CMD_CANCEL:
        if (vidi_mp_u64(m->header, "id", 1, 0, 0, UINT64_MAX, &id, NULL) == VIDI_OK && (q = s_find_client_req(r, m, id))) {
            s_cancel_workers(r, q);
            s_finish(r, q, "cancelled");
            s_rq_free(q);
        }
        return;
    default:
        r->c_bad_msgs++;
        s_client_error(r, m, -1, VIDI_WIRE_BAD_COMMAND, "a client sends REQUEST, CANCEL, STATS, ROLE or HEARTBEAT");
    }
}

/* ---- the load monitor ---- */

/* A worker's heartbeat (its heartbeat thread's, sent while the main thread
 * computes) with load.busy_us: each stage's share of its time since the
 * heartbeat before (at least MONITOR_MS ago). */
#define MONITOR_MS 500

/* Busy microseconds over dt_ms of wall time, in percent (at most 100). */
static int s_busy_pct(uint64_t busy_us, int64_t dt_ms) {
    uint64_t pct = busy_us / 10u / (uint64_t)dt_ms; /* us over ms x 1000 */
    return pct > 100 ? 100 : (int)pct;
}

static void s_monitor_heartbeat(wk *w, const vidi_msg *m) {
    const msgpack_object *load, *busy;
    size_t n;
    uint64_t v[4];
    if (vidi_mp_map(m->header, "load", 0, &load, NULL) != VIDI_OK || !load ||
        vidi_mp_array(load, "busy_us", 0, 4, &busy, &n, NULL) != VIDI_OK || n != 4)
        return;
    for (int k = 0; k < 4; k++) {
        if (busy[k].type != MSGPACK_OBJECT_POSITIVE_INTEGER) return;
        v[k] = busy[k].via.u64;
    }
    int64_t now = vidi_now_ms(), dt = now - w->hb_ms;
    if (w->hb_ms && dt < MONITOR_MS) return;
    for (int k = 0; k < 4 && w->hb_ms; k++) {
        if (v[k] < w->hb_busy[k]) continue; /* the worker restarted */
        w->busy_pct[k] = (uint64_t)s_busy_pct(v[k] - w->hb_busy[k], dt);
    }
    memcpy(w->hb_busy, v, sizeof v);
    w->hb_ms = now;
}

/* A worker's STATS came: each stage's time per unit of work since the
 * sample before (at least MONITOR_MS ago: a worker busy with a long stage
 * answers the STATS queued meanwhile together, and their increments are
 * kept for the next sample). */
static void s_monitor_sample(router *r, wk *w) {
    int64_t now = vidi_now_ms(), dt = now - w->mon_ms;
    if (w->mon_ms && dt < MONITOR_MS) return;
    uint64_t base[12];
    memcpy(base, w->mon_base, sizeof base);
    for (int k = 0; k < 4; k++) {
        w->mon_base[3 * k] = w->st[r->stage_busy_at[k]];
        w->mon_base[3 * k + 1] = w->st[r->stage_unit_at[k]];
        w->mon_base[3 * k + 2] = r->stage_tokens_at[k] >= 0 ? w->st[r->stage_tokens_at[k]] : 0;
    }
    int first = !w->mon_ms;
    w->mon_ms = now;
    if (first) return;
    for (int k = 0; k < 4; k++) {
        uint64_t b0 = base[3 * k], b1 = w->mon_base[3 * k], u0 = base[3 * k + 1], u1 = w->mon_base[3 * k + 1];
        uint64_t t0 = base[3 * k + 2], t1 = w->mon_base[3 * k + 2];
        if (b1 < b0 || u1 < u0 || t1 < t0) continue; /* the worker restarted */
        if (u1 > u0) {
            double per = (double)(b1 - b0) / (double)(u1 - u0);
            r->service_us[k] = r->service_us[k] > 0 ? 0.7 * r->service_us[k] + 0.3 * per : per;
        }
        if (t1 > t0) {
            double per = (double)(b1 - b0) / (double)(t1 - t0);
            r->token_us[k] = r->token_us[k] > 0 ? 0.7 * r->token_us[k] + 0.3 * per : per;
        }
    }
}

/* A finished request's latencies into the window of the slo map. */
static void s_monitor_done(router *r, const rq *q) {
    if (!q->first_token_ms || q->n_sent < 1) return;
    int64_t end = vidi_now_ms();
    struct slo_sample *x = &r->slo[r->slo_next];
    x->ttft_ms = (uint32_t)(q->first_token_ms - q->created_ms);
    /* µs, so that a few milliseconds a token are not rounded to whole ones (the policy compares them) */
    x->tpot_us = q->n_sent > 1 ? (uint32_t)((end - q->first_token_ms) * 1000 / (q->n_sent - 1)) : 0;
    x->queue_ms = q->dispatched_ms ? (uint32_t)(q->dispatched_ms - q->created_ms) : 0;
    r->slo_next = (r->slo_next + 1) % SLO_WINDOW;
    if (r->n_slo < SLO_WINDOW) r->n_slo++;
}

static int s_cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The 90th percentile of field f (0 ttft ms, 1 tpot µs, 2 queue ms) over the window. */
static uint64_t s_slo_p90(const router *r, int f) {
    uint32_t v[SLO_WINDOW];
    if (!r->n_slo) return 0;
    for (int i = 0; i < r->n_slo; i++)
        v[i] = f == 0 ? r->slo[i].ttft_ms : f == 1 ? r->slo[i].tpot_us : r->slo[i].queue_ms;
    qsort(v, (size_t)r->n_slo, sizeof v[0], s_cmp_u32);
    return v[(r->n_slo * 9 + 9) / 10 - 1];
}

/* The requests waiting for each stage or in it (STATS' stage_<role>.queue). */
static void s_stage_queue(const router *r, uint64_t queue[4]) {
    memset(queue, 0, 4 * sizeof queue[0]);
    for (int i = 0; i < r->n_reqs_cap; i++) {
        const rq *q = &r->reqs[i];
        if (!q->used) continue;
        if (!q->running) { /* admitted, not dispatched: every stage it needs */
            for (int k = q->n_media > 0 ? 0 : 2; k < 4; k++) queue[k]++;
        } else if (q->n_media > 0 && q->w_media >= 0 && !q->encoded && !q->first_token_ms) {
            queue[0]++, queue[1]++; /* media and encode: before an encoder's RESULT */
        } else {
            queue[q->first_token_ms ? 3 : 2]++; /* prefill until the first token, then decode */
        }
    }
}

/* STATS' stage_<role> maps and slo map (PROTOCOL.md §5.2). */
static void s_pack_monitor(router *r, msgpack_packer *pk) {
    uint64_t queue[4];
    s_stage_queue(r, queue);
    int util[4], n[4];
    s_stage_util_of(r, 0, util, n);
    for (int k = 0; k < 4; k++) {
        uint64_t nd = 0;
        for (int i = 0; i < MAX_WORKERS; i++)
            nd += r->workers[i].used && (s_dropping(&r->workers[i]) >> k & 1);
        char key[32];
        snprintf(key, sizeof key, "stage_%s", k_roles[k]);
        vidi_mp_pack_cstr(pk, key);
        msgpack_pack_map(pk, 6);
        vidi_mp_kv_u64(pk, "workers", (uint64_t)n[k]);
        vidi_mp_kv_u64(pk, "draining", nd);
        vidi_mp_kv_u64(pk, "queue", queue[k]);
        vidi_mp_kv_u64(pk, "busy_pct", (uint64_t)util[k]);
        vidi_mp_kv_u64(pk, "service_us", (uint64_t)(r->service_us[k] + 0.5));
        vidi_mp_kv_u64(pk, "token_us", (uint64_t)(r->token_us[k] + 0.5));
    }
    uint64_t ttft = s_slo_p90(r, 0), tpot = s_slo_p90(r, 1) / 1000, tt = (uint64_t)r->cfg->ttft_ms,
             tp = (uint64_t)r->cfg->tpot_ms;
    int ok = 0;
    for (int i = 0; i < r->n_slo; i++) ok += r->slo[i].ttft_ms <= tt && r->slo[i].tpot_us <= tp * 1000;
    vidi_mp_pack_cstr(pk, "slo");
    msgpack_pack_map(pk, 11);
    vidi_mp_kv_u64(pk, "ttft_target_ms", tt);
    vidi_mp_kv_u64(pk, "tpot_target_ms", tp);
    vidi_mp_kv_u64(pk, "window", (uint64_t)r->n_slo);
    vidi_mp_kv_u64(pk, "ttft_p90_ms", ttft);
    vidi_mp_kv_u64(pk, "tpot_p90_ms", tpot);
    vidi_mp_kv_u64(pk, "queue_p90_ms", s_slo_p90(r, 2));
    vidi_mp_kv_u64(pk, "ttft_slack_ms", tt > ttft ? tt - ttft : 0);
    vidi_mp_kv_u64(pk, "tpot_slack_ms", tp > tpot ? tp - tpot : 0);
    vidi_mp_kv_u64(pk, "ttft_over_ms", ttft > tt ? ttft - tt : 0);
    vidi_mp_kv_u64(pk, "tpot_over_ms", tpot > tp ? tpot - tp : 0);
    vidi_mp_kv_u64(pk, "attained_pct", r->n_slo ? (uint64_t)(100 * ok / r->n_slo) : 0);
}

/* ---- worker messages ---- */

static rq *s_find_req(router *r, const vidi_msg *m, int *stale) {
    uint64_t req, attempt;
    *stale = 0;
    if (vidi_mp_u64(m->header, "req", 1, 0, 0, UINT64_MAX, &req, NULL) ||
        vidi_mp_u64(m->header, "attempt", 1, 0, 0, UINT64_MAX, &attempt, NULL))
        return NULL;
    rq *q = &r->reqs[req % (uint64_t)r->n_reqs_cap]; /* req names its slot (PROTOCOL.md §5.3) */
    if (!q->used || q->req != req || q->attempt != attempt || !q->running) {
        *stale = 1;
        return NULL;
    }
    return q;
}

static int s_text_push(rq *q, const char *s, size_t n) {
    if (q->text_len + n + 1 > q->text_cap) {
        size_t cap = q->text_cap * 2 + n;
        char *t = realloc(q->text, cap);
        if (!t) return -1;
        q->text = t;
        q->text_cap = cap;
    }
    memcpy(q->text + q->text_len, s, n);
    q->text_len += n;
    q->text[q->text_len] = 0;
    return 0;
}

static void s_on_token(router *r, const vidi_msg *m) {
    int stale;
    rq *q = s_find_req(r, m, &stale);
    if (!q) return;
    uint64_t index;
    const msgpack_object *toks;
    size_t n;
    if (vidi_mp_u64(m->header, "index", 1, 0, 0, VIDI_WIRE_MAX_TOKENS, &index, NULL) ||
        vidi_mp_array(m->header, "tokens", 1, 4096, &toks, &n, NULL))
        return;
    size_t before = q->text_len;
    int64_t first_new = -1;
    int n_new = 0;
    int32_t new_ids[4096];
    for (size_t k = 0; k < n; k++) {
        int64_t idx = (int64_t)index + (int64_t)k;
        if (idx < q->n_sent || toks[k].type != MSGPACK_OBJECT_POSITIVE_INTEGER) continue; /* the client has it */
        if (idx != q->n_sent) {
            s_retry(r, q, "tokens arrived out of order");
            return;
        }
        int32_t id = (int32_t)toks[k].via.u64;
        char buf[1024];
        size_t w = 0;
        if (vidi_detok_push(&q->detok, id, buf, sizeof buf, &w, NULL) == VIDI_OK) s_text_push(q, buf, w);
        if (first_new < 0) first_new = idx;
        new_ids[n_new++] = id;
        q->n_sent++;
    }
    q->prefilled = 1; /* its prefill worker sent a token under this attempt */
    if (!n_new) return;
    if (!q->first_token_ms) q->first_token_ms = vidi_now_ms();
    /* stop strings: the text ends before the first one */
    size_t cut = q->text_len;
    int stopped = 0;
    for (int s = 0; s < q->n_stops; s++) {
        size_t from = before > strlen(q->stops[s]) ? before - strlen(q->stops[s]) : 0;
        char *hit = strstr(q->text + from, q->stops[s]);
        if (hit && (size_t)(hit - q->text) < cut) {
            cut = (size_t)(hit - q->text);
            stopped = 1;
        }
    }
    if (stopped) q->text_len = cut;
    if (q->stream && q->client_len && q->text_len >= before) {
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 4);
        vidi_mp_kv_u64(&o.pk, "id", q->id);
        vidi_mp_kv_u64(&o.pk, "index", (uint64_t)first_new);
        vidi_mp_pack_cstr(&o.pk, "tokens");
        msgpack_pack_array(&o.pk, (size_t)n_new);
        for (int k = 0; k < n_new; k++) msgpack_pack_uint64(&o.pk, (uint64_t)new_ids[k]);
        vidi_mp_pack_cstr(&o.pk, "text");
        msgpack_pack_str(&o.pk, q->text_len - before);
        msgpack_pack_str_body(&o.pk, q->text + before, q->text_len - before);
        s_client_send(r, q, VIDI_CMD_TOKEN, &o);
    }
    if (stopped) {
        s_cancel_workers(r, q);
        s_finish(r, q, "stop");
        s_rq_free(q);
    } else if (!q->client_len) {
        s_cancel_workers(r, q); /* the client went away */
        s_rq_free(q);
    }
}

static void s_on_done(router *r, const vidi_msg *m) {
    int stale;
    rq *q = s_find_req(r, m, &stale);
    if (!q) return;
    uint64_t n_out = 0, pt = 0;
    vidi_mp_u64(m->header, "n_out", 0, 0, 0, UINT64_MAX, &n_out, NULL);
    vidi_mp_u64(m->header, "prompt_tokens", 0, 0, 0, UINT64_MAX, &pt, NULL);
    if ((int64_t)n_out > q->n_sent) {
        s_retry(r, q, "DONE before all its tokens");
        return;
    }
    q->prompt_tokens = (int64_t)pt;
    const msgpack_object *f = vidi_mp_get(m->header, "finish");
    s_release(r, q);
    s_finish(r, q, vidi_mp_str_eq(f, "stop") ? "stop" : "length");
    s_rq_free(q);
}

static void s_on_result(router *r, int wi, const vidi_msg *m) {
    const msgpack_object *stored, *missing;
    size_t ns = 0, nm = 0;
    int stale;
    rq *q = s_find_req(r, m, &stale);
    if (q) q->encoded = 1; /* the load monitor: its media and encode are done */
    vidi_mp_array(m->header, "stored", 0, 4096, &stored, &ns, NULL);
    vidi_mp_array(m->header, "missing", 0, 4096, &missing, &nm, NULL);
    r->c_encode_work++;
    for (size_t i = 0; i < ns; i++) {
        const uint8_t *ik, *k;
        size_t n;
        uint64_t slice, n_slices;
        if (vidi_mp_bin(&stored[i], "item_key", 1, 16, &ik, &n, NULL) ||
            vidi_mp_bin(&stored[i], "key", 1, 16, &k, &n, NULL) ||
            vidi_mp_u64(&stored[i], "n_slices", 1, 1, 1, MAX_SLICES, &n_slices, NULL) ||
            vidi_mp_u64(&stored[i], "slice", 1, 0, 0, n_slices - 1, &slice, NULL))
            continue;
        dir_entry *e = s_dir_add(r, ik, (int)n_slices);
        memcpy(e->slices[slice].key, k, 16);
        e->slices[slice].holder = wi;
    }
    if (nm) {
        /* an encoder no longer holds what the directory said: forget it, start again */
        for (size_t i = 0; i < nm; i++)
            for (int d = 0; d < DIR_MAX; d++)
                if (r->dir[d].used && missing[i].type == MSGPACK_OBJECT_BIN && missing[i].via.bin.size == 16)
                    for (int s = 0; s < r->dir[d].n_slices; s++)
                        if (!memcmp(r->dir[d].slices[s].key, missing[i].via.bin.ptr, 16)) r->dir[d].used = 0;
        if (q) s_retry(r, q, "an MM-cache entry was evicted");
    }
}

static void s_on_worker_error(router *r, const vidi_msg *m) {
    int stale;
    rq *q = s_find_req(r, m, &stale);
    const char *code = NULL, *msg = NULL;
    size_t cn = 0, mn = 0;
    vidi_mp_str(m->header, "code", 0, 64, &code, &cn, NULL);
    vidi_mp_str(m->header, "message", 0, 4096, &msg, &mn, NULL);
    char text[4200];
    snprintf(text, sizeof text, "%.*s", (int)mn, msg ? msg : "");
    if (!q) {
        if (!stale) fprintf(stderr, "router: worker error: %.*s: %s\n", (int)cn, code ? code : "?", text);
        return;
    }
    vidi_wire_code c = code ? vidi_wire_code_from_name(code, cn) : VIDI_WIRE_INTERNAL;
    if (c == VIDI_WIRE_WORKER_LOST || c == VIDI_WIRE_OVERLOADED) {
        q->last_code = c;
        s_retry(r, q, text);
    }
    else s_fail(r, q, c == VIDI_WIRE_CODE_COUNT ? VIDI_WIRE_INTERNAL : c, text);
}

/* The router's READY to a worker that joined (or ended a switch). */
static void s_ready_reply(router *r, int wi) {
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 3);
    vidi_mp_kv_str(&o.pk, "name", "router");
    vidi_mp_kv_u64(&o.pk, "heartbeat_ms", (uint64_t)r->cfg->heartbeat_ms);
    vidi_mp_kv_u64(&o.pk, "liveness", (uint64_t)r->cfg->liveness);
    s_send_worker(r, wi, VIDI_CMD_READY, &o);
}

static void s_on_ready(router *r, vidi_msg *m) {
    vidi_err err = {0};
    const char *name, *data, *ipc = NULL;
    size_t nn, dn, in = 0;
    const msgpack_object *roles;
    size_t nr;
    if (vidi_mp_str(m->header, "name", 1, 127, &name, &nn, &err) ||
        vidi_mp_str(m->header, "data", 1, EP_MAX - 1, &data, &dn, &err) ||
        vidi_mp_str(m->header, "cuda_ipc", 0, 63, &ipc, &in, &err) ||
        vidi_mp_array(m->header, "roles", 1, 4, &roles, &nr, &err)) {
        vidi_msg_send_error(r->back, m->identity, m->identity_len, VIDI_WIRE_BAD_FIELD, -1, err.msg, NULL);
        return;
    }
    int mask = s_roles_mask(roles, nr, NULL); /* a role this router does not know is ignored */
    int wi = s_worker_find(r, m->identity, m->identity_len);
    if (wi < 0)
        for (int i = 0; i < MAX_WORKERS; i++)
            if (!r->workers[i].used) {
                wi = i;
                break;
            }
    if (wi < 0) {
        vidi_msg_send_error(r->back, m->identity, m->identity_len, VIDI_WIRE_OVERLOADED, -1,
                            "the router's worker registry is full", NULL);
        return;
    }
    wk *w = &r->workers[wi];
    int was = w->used;
    if (was && w->draining && !w->role_sent) return; /* a 1.3 worker's answer to DRAIN */
    if (was && w->role_sent) { /* the end of a switch: the record stays */
        s_switch_done(r, wi, mask);
        s_ready_reply(r, wi);
        return;
    }
    memset(w, 0, sizeof *w);
    w->used = 1;
    memcpy(w->id, m->identity, m->identity_len);
    w->id_len = m->identity_len;
    snprintf(w->name, sizeof w->name, "%.*s", (int)nn, name);
    snprintf(w->data, sizeof w->data, "%.*s", (int)dn, data);
    snprintf(w->ipc, sizeof w->ipc, "%.*s", (int)in, ipc ? ipc : "");
    w->roles = mask;
    int64_t dev = -1;
    if (vidi_mp_i64(m->header, "device", 0, -1, -1, 1023, &dev, NULL) != VIDI_OK) dev = -1; /* or out of range */
    w->device = (int)dev;
    const msgpack_object *cap;
    uint64_t blocks = 0;
    if (vidi_mp_map(m->header, "capacity", 0, &cap, NULL) == VIDI_OK && cap)
        vidi_mp_u64(cap, "kv_blocks", 0, 0, 0, UINT64_MAX / 64, &blocks, NULL);
    w->kv_tokens = w->kv_free_tokens = blocks * 16; /* vidi worker's blocks hold 16 tokens */
    vidi_liveness_init(&w->live, r->cfg->heartbeat_ms, r->cfg->liveness, vidi_now_ms());
    fprintf(stderr, "router: worker %s %s (roles 0x%x, data %s, device %d)\n", w->name, was ? "rejoined" : "joined", mask,
            w->data, w->device);
    s_ready_reply(r, wi);
}

/* A heartbeat thread's socket "h.NAME.PID" stands for the worker "w.NAME.PID.GEN". */
static int s_hb_owner(router *r, const vidi_msg *m) {
    size_t hp = strlen(VIDI_HB_PREFIX), wp = strlen(VIDI_WORKER_PREFIX);
    if (m->identity_len <= hp || memcmp(m->identity, VIDI_HB_PREFIX, hp)) return -2; /* not a heartbeat socket */
    size_t n = m->identity_len - hp;
    for (int i = 0; i < MAX_WORKERS; i++) {
        wk *w = &r->workers[i];
        if (w->used && w->id_len > wp + n && !memcmp(w->id, VIDI_WORKER_PREFIX, wp) &&
            !memcmp(w->id + wp, m->identity + hp, n) && w->id[wp + n] == '.')
            return i;
    }
    return -1;
}

static void s_on_back(router *r, vidi_msg *m) {
    int hb = s_hb_owner(r, m);
    if (hb != -2) { /* the liveness thread of a worker: heard, never answered */
        if (hb >= 0 && m->cmd == VIDI_CMD_HEARTBEAT) {
            vidi_liveness_heard(&r->workers[hb].live, vidi_now_ms());
            s_monitor_heartbeat(&r->workers[hb], m);
        }
        return;
    }
    int wi = s_worker_find(r, m->identity, m->identity_len);
    if (m->cmd == VIDI_CMD_READY) {
        s_on_ready(r, m);
        return;
    }
    if (wi < 0) {
        /* a worker the router does not know (it restarted): ask it to say READY */
        if (m->cmd != VIDI_CMD_ERROR && m->cmd != VIDI_CMD_DISCONNECT)
            vidi_msg_send_error(r->back, m->identity, m->identity_len, VIDI_WIRE_BAD_COMMAND, -1,
                                "unknown worker: send READY first", NULL);
        return;
    }
    vidi_liveness_heard(&r->workers[wi].live, vidi_now_ms());
    switch (m->cmd) {
    case VIDI_CMD_HEARTBEAT: {
        const msgpack_object *load;
        if (vidi_mp_map(m->header, "load", 0, &load, NULL) == VIDI_OK && load) {
            vidi_mp_u64(load, "queued", 0, 0, 0, UINT64_MAX, &r->workers[wi].queued, NULL);
            vidi_mp_u64(load, "running", 0, 0, 0, UINT64_MAX, &r->workers[wi].running, NULL);
            uint64_t free_blocks;
            if (vidi_mp_u64(load, "kv_free_blocks", 0, UINT64_MAX, 0, UINT64_MAX, &free_blocks, NULL) == VIDI_OK &&
                free_blocks != UINT64_MAX)
                r->workers[wi].kv_free_tokens = free_blocks * 16;
        }
        return;
    }
    case VIDI_CMD_TOKEN: s_on_token(r, m); return;
    case VIDI_CMD_DONE: s_on_done(r, m); return;
    case VIDI_CMD_RESULT: s_on_result(r, wi, m); return;
    case VIDI_CMD_ERROR: s_on_worker_error(r, m); return;
    case VIDI_CMD_STATS: {
        wk *w = &r->workers[wi];
        for (int k = 0; k < WK_STATS; k++)
            vidi_mp_u64(m->header, k_wk_stats[k], 0, w->st[k], 0, UINT64_MAX, &w->st[k], NULL);
        s_monitor_sample(r, w);
        return;
    }
    case VIDI_CMD_DISCONNECT: s_worker_lost(r, wi, "it disconnected"); return;
    default:
        r->c_bad_msgs++;
        vidi_msg_send_error(r->back, m->identity, m->identity_len, VIDI_WIRE_BAD_COMMAND, -1,
                            "a worker sends READY, HEARTBEAT, TOKEN, DONE, RESULT, ERROR, STATS or DISCONNECT", NULL);
    }
}

/* ---- role switching (PROTOCOL.md §5.6) ---- */

static void s_pack_roles(msgpack_packer *pk, int mask) {
    int n = 0;
    for (int k = 0; k < 4; k++) n += mask >> k & 1;
    msgpack_pack_array(pk, (size_t)n);
    for (int k = 0; k < 4; k++)
        if (mask >> k & 1) vidi_mp_pack_cstr(pk, k_roles[k]);
}

static void s_roles_str(int mask, char *out, size_t cap) {
    size_t u = 0;
    out[0] = 0;
    for (int k = 0; k < 4 && u < cap; k++)
        if (mask >> k & 1) u += (size_t)snprintf(out + u, cap - u, "%s%s", u ? "+" : "", k_roles[k]);
}

/* Whether a request in the table still needs worker wi in one of the roles
 * `drop`: it decodes there (decode), or it has not had its first token under
 * its current attempt and wi is its media, encode or prefill worker or the
 * decode worker its prefill will hand the sequence to (after a move, that
 * worker passes it on), for those roles. */
static int s_worker_owed(const router *r, int wi, int drop) {
    for (int i = 0; i < r->n_reqs_cap; i++) {
        const rq *q = &r->reqs[i];
        if (!q->used || !q->running) continue;
        if ((drop & ROLE_DECODE) && q->w_decode == wi) return 1;
        if (!q->prefilled && (((drop & ROLE_MEDIA) && q->w_media == wi) || ((drop & ROLE_PREFILL) && q->w_prefill == wi) ||
                              ((drop & ROLE_DECODE) && q->w_decode_plan == wi) ||
                              ((drop & ROLE_ENCODE) && (q->w_encoders >> wi & 1))))
            return 1;
    }
    return 0;
}

/* Why worker wi may not switch to `roles` now, or NULL. */
static const char *s_switch_refusal(const router *r, int wi, int roles, char *buf, size_t cap) {
    const wk *w = &r->workers[wi];
    if (!roles) return "no role named";
    if (s_n_draining(r)) return "a switch is running already";
    if (roles == w->roles) return "the worker holds those roles already";
    for (int k = 0; k < 4; k++) {
        if (!(w->roles >> k & 1) || (roles >> k & 1)) continue;
        int others = 0;
        for (int i = 0; i < MAX_WORKERS; i++) others += i != wi && s_serves(r, i, 1 << k);
        if (!others) {
            snprintf(buf, cap, "it is the last worker of stage %s", k_roles[k]);
            return buf;
        }
    }
    return NULL;
}

/* Begin switching worker wi to `roles`: nothing new of the roles it drops is
 * placed on it, and DRAIN tells it; s_switch_poll sends ROLE once nothing
 * needs it in those. A worker that leaves decode hands its sequences to
 * another decode worker (DRAIN's decode_to): the requests decoding there are
 * that worker's from now on. */
static void s_switch_begin(router *r, int wi, int roles, const char *why) {
    wk *w = &r->workers[wi];
    char a[64], b[64];
    s_roles_str(w->roles, a, sizeof a);
    s_roles_str(roles, b, sizeof b);
    fprintf(stderr, "router: worker %s: switching from %s to %s (%s)\n", w->name, a, b, why);
    w->draining = 1;
    w->role_sent = 0;
    w->switch_to = roles;
    w->drain_ms = vidi_now_ms();
    int to = (w->roles & ROLE_DECODE) && !(roles & ROLE_DECODE) ? s_pick(r, ROLE_DECODE, -1) : -1;
    for (int i = 0; i < r->n_reqs_cap && to >= 0; i++) {
        rq *q = &r->reqs[i];
        if (!q->used || !q->running || q->w_decode != wi) continue;
        q->w_decode = to;
        if (q->w_prefill != wi && q->held[wi]) q->held[wi]--, w->assigned -= w->assigned > 0;
        s_hold(r, q, to);
    }
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    int ipc = to >= 0 && r->workers[to].ipc[0];
    msgpack_pack_map(&o.pk, 1 + (to >= 0) + ipc);
    vidi_mp_pack_cstr(&o.pk, "roles");
    s_pack_roles(&o.pk, roles);
    if (to >= 0) vidi_mp_kv_str(&o.pk, "decode_to", r->workers[to].data);
    if (ipc) vidi_mp_kv_str(&o.pk, "decode_to_ipc", r->workers[to].ipc);
    s_send_worker(r, wi, VIDI_CMD_DRAIN, &o);
}

/* No look by the policy for switch_cooldown_ms (2 x switch_ms when 0) from now. */
static void s_switch_cool(router *r, int64_t now) {
    r->sw_cool_until = now + (r->cfg->switch_cooldown_ms > 0 ? r->cfg->switch_cooldown_ms : 2 * r->cfg->switch_ms);
}

static void s_switch_abort(router *r, int wi, const char *why) {
    wk *w = &r->workers[wi];
    fprintf(stderr, "router: worker %s: switch abandoned (%s)\n", w->name, why);
    w->draining = w->role_sent = 0;
    s_switch_failed(r, wi, 1);
    s_switch_cool(r, vidi_now_ms());
}

/* Drained workers get ROLE; a drain past switch_drain_ms is abandoned. */
static void s_switch_poll(router *r, int64_t now) {
    for (int wi = 0; wi < MAX_WORKERS; wi++) {
        wk *w = &r->workers[wi];
        if (!w->used || !w->draining || w->role_sent) continue;
        /* only work of the roles it drops holds it (none when it only takes a role more) */
        if (s_worker_owed(r, wi, s_dropping(w))) {
            if (now - w->drain_ms > r->cfg->switch_drain_ms) s_switch_abort(r, wi, "its work did not finish in time");
            continue;
        }
        w->role_sent = 1;
        w->role_ms = now;
        vidi_msg_out o;
        vidi_msg_out_init(&o);
        msgpack_pack_map(&o.pk, 1);
        vidi_mp_pack_cstr(&o.pk, "roles");
        s_pack_roles(&o.pk, w->switch_to);
        s_send_worker(r, wi, VIDI_CMD_ROLE, &o);
    }
}

/* READY from a worker that was sent ROLE: the switch's end (mask: the roles
 * it names, the old ones when it refused). */
static void s_switch_done(router *r, int wi, int mask) {
    wk *w = &r->workers[wi];
    int64_t now = vidi_now_ms();
    int from = w->roles, ok = mask == w->switch_to;
    w->draining = w->role_sent = 0;
    w->roles = mask;
    if (ok) {
        r->c_switches++;
        for (int k = 0; k < 4; k++) {
            if ((mask >> k & 1) && !(from >> k & 1)) r->c_switch_to[k]++;
            if ((from >> k & 1) && !(mask >> k & 1)) r->c_switch_from[k]++;
        }
        r->sw_last_ms = (uint64_t)(now - w->drain_ms);
        r->sw_role_last_ms = (uint64_t)(now - w->role_ms);
        if (r->sw_last_ms > r->sw_max_ms) r->sw_max_ms = r->sw_last_ms;
        if (r->sw_role_last_ms > r->sw_role_max_ms) r->sw_role_max_ms = r->sw_role_last_ms;
        if (wi == r->sw_judge_wi) {
            int64_t after = 4 * (int64_t)r->cfg->switch_ms;
            r->sw_judge_due = now + (after > 2000 ? after : 2000);
        }
    } else {
        s_switch_failed(r, wi, 1);
    }
    if (!(mask & ROLE_ENCODE)) s_dir_forget(r, wi); /* its cache entries are gone with the role */
    char b[64];
    s_roles_str(mask, b, sizeof b);
    fprintf(stderr, "router: worker %s: %s %s after %lld ms (ROLE to READY %lld ms)\n", w->name,
            ok ? "switched to" : "refused the switch; keeps", b, (long long)(now - w->drain_ms),
            (long long)(now - w->role_ms));
    s_switch_cool(r, now);
}

/* The switch policy's look at worker w's heartbeats: each stage's share of
 * its time since the look before, averaged with the share before (halves:
 * a batch that spans a look does not swing it), kept when no heartbeat came
 * between. */
static void s_switch_sample(wk *w) {
    if (!w->hb_ms || w->hb_ms == w->sw_ms) return;
    int64_t dt = w->hb_ms - w->sw_ms;
    for (int k = 0; k < 4 && w->sw_ms; k++) {
        uint64_t d = w->hb_busy[k] >= w->sw_busy[k] ? w->hb_busy[k] - w->sw_busy[k] : 0;
        w->sw_util[k] = (w->sw_util[k] + s_busy_pct(d, dt) + 1) / 2;
    }
    memcpy(w->sw_busy, w->hb_busy, sizeof w->sw_busy);
    w->sw_ms = w->hb_ms;
}

/* Each stage's utilisation (percent): the mean over its live, not draining
 * workers of the stage's share of their time, over the switch policy's last
 * window when `window` (else between their last two heartbeats, as STATS
 * shows it); n[k] those workers. */
static void s_stage_util_of(const router *r, int window, int util[4], int n[4]) {
    for (int k = 0; k < 4; k++) {
        uint64_t busy = 0;
        n[k] = 0;
        for (int i = 0; i < MAX_WORKERS; i++)
            if (s_serves(r, i, 1 << k))
                n[k]++, busy += window ? (uint64_t)r->workers[i].sw_util[k] : r->workers[i].busy_pct[k];
        util[k] = n[k] ? (int)(busy / (uint64_t)n[k]) : 0;
    }
}

/* The work waiting for stage k (ms) at which it counts as starved: a tenth
 * of the TTFT target or 100 ms; decode half the TPOT target or 25 ms. */
static int64_t s_backlog_ms(const router *r, int k) {
    int64_t t = k < 3 ? r->cfg->ttft_ms / 10 : r->cfg->tpot_ms / 2, cap = k < 3 ? 100 : 25;
    return t < cap ? t : cap;
}

/* A move to decode made for TPOT alone, judged once its time has come: when TPOT's p90 is
 * still over the target and not a fifth lower than when the move was chosen, TPOT alone does
 * not make decode starved for 20 x switch_ms (10 s at least). PROTOCOL.md §5.6. */
static void s_switch_judge(router *r, int64_t now) {
    if (r->sw_judge_wi < 0 || !r->sw_judge_due || now < r->sw_judge_due) return;
    uint64_t p90 = r->n_slo ? s_slo_p90(r, 1) : 0;
    if (p90 > (uint64_t)r->cfg->tpot_ms * 1000 && p90 * 5 > r->sw_judge_tpot * 4) {
        int64_t off = 20 * (int64_t)r->cfg->switch_ms;
        if (off < 10000) off = 10000;
        r->sw_tpot_off_until = now + off;
        r->c_switch_unhelpful++;
        fprintf(stderr,
                "router: worker %s: decoding did not lower TPOT's p90 (%.1f ms, %.1f before); TPOT alone moves "
                "no worker to decode for %lld s\n",
                r->workers[r->sw_judge_wi].name, p90 / 1000.0, r->sw_judge_tpot / 1000.0,
                (long long)(off / 1000));
    }
    r->sw_judge_wi = -1;
}

int vidi_switch_gpu_clash(int device, int role, const int *devices, const int *roles, int n, const int busy[4]) {
    if (role <= 0 || role > 3 || device < 0) return 0;
    int clash = 0;
    for (int j = 0; j < n; j++) {
        if (devices[j] != device) continue;
        if (roles[j] >> role & 1) clash += 2;
        else
            for (int k = 1; k < 4; k++)
                if ((roles[j] >> k & 1) && busy[k]) {
                    clash += 1;
                    break;
                }
    }
    return clash;
}

int vidi_switch_can_spare(int role, int util, int n, int64_t wait_ms, int64_t backlog_ms, int hi, int share) {
    if (n < 2) return 0;
    int64_t proj = wait_ms * n / (n - 1);
    if (proj >= backlog_ms || (share && 2 * proj >= backlog_ms)) return 0;
    return role == 3 || util * n / (n - 1) < hi;
}

/* vidi_switch_gpu_clash of worker wi taking the starved role, among the other
 * live workers (their roles after a switch they are draining for); a stage is
 * busy at switch_lo or more. */
static int s_gpu_clash(const router *r, int wi, int starved, const int util[4]) {
    int devices[MAX_WORKERS], roles[MAX_WORKERS], n = 0, busy[4];
    for (int k = 0; k < 4; k++) busy[k] = util[k] >= r->cfg->switch_lo;
    for (int j = 0; j < MAX_WORKERS; j++) {
        const wk *o = &r->workers[j];
        if (j == wi || !o->used) continue;
        devices[n] = o->device;
        roles[n++] = o->draining ? o->switch_to : o->roles;
    }
    return vidi_switch_gpu_clash(r->workers[wi].device, starved, devices, roles, n, busy);
}

/* Every switch_ms, over the window since the look before: the starved
 * stage (the most utilised of those at switch_hi or more while work waits for
 * them: queue x time per unit over the workers at least s_backlog_ms, for
 * decode the time a step takes to give each sequence a token; or at
 * switch_lo or more when the latency target is missed: TTFT with such a wait
 * for media, encode and prefill, TPOT for decode) and a stage to take a worker
 * from: two or more workers whose wait over one worker fewer stays under
 * s_backlog_ms, media, encode and prefill under switch_hi and so too over one
 * worker fewer (a decoder steps whenever a sequence runs: its busy share says
 * little), decode with TPOT met or nearly idle, and a worker that may leave it; the one whose
 * worker would share its GPU least (s_gpu_clash) gives, then the least
 * utilised. The same pair switch_windows looks in a row moves one worker
 * (least GPU sharing, then fewest roles, then least work); three times as
 * many when it would undo the last switch by load (a bottleneck that moves
 * back and forth between two stages).
 * PROTOCOL.md §5.6. */
static void s_switch_policy(router *r, int64_t now) {
    if (r->cfg->switch_ms <= 0 || now < r->sw_next_ms) return;
    r->sw_next_ms = now + r->cfg->switch_ms;
    for (int i = 0; i < MAX_WORKERS; i++)
        if (r->workers[i].used) s_switch_sample(&r->workers[i]);
    s_switch_judge(r, now);
    if (s_n_draining(r)) return;
    if (now < r->sw_cool_until) {
        r->sw_streak = 0;
        return;
    }
    int util[4], n[4];
    uint64_t queue[4];
    int64_t wait_ms[4] = {0};
    s_stage_util_of(r, 1, util, n);
    s_stage_queue(r, queue);
    for (int k = 0; k < 4; k++)
        if (n[k]) wait_ms[k] = (int64_t)((double)queue[k] * r->service_us[k] / n[k] / 1000.0);
    int ttft_over = r->n_slo && s_slo_p90(r, 0) > (uint64_t)r->cfg->ttft_ms;
    int tpot_over = r->n_slo && s_slo_p90(r, 1) > (uint64_t)r->cfg->tpot_ms * 1000;
    int starved = -1, slack = -1, mover = -1, mover_c = 0, by_tpot = 0;
    for (int k = 0; k < 4; k++) {
        if (!n[k]) continue;
        int waits = wait_ms[k] >= s_backlog_ms(r, k);
        int by_wait = util[k] >= r->cfg->switch_hi && waits;
        /* TPOT alone: not while the last such move waits for its judgement, nor after an unhelpful one */
        int tpot = k == 3 && util[k] >= r->cfg->switch_lo && tpot_over && r->sw_judge_wi < 0 &&
                   now >= r->sw_tpot_off_until;
        int hot = by_wait || (util[k] >= r->cfg->switch_lo && k < 3 && ttft_over && waits) || tpot;
        if (hot && (starved < 0 || util[k] > util[starved])) starved = k, by_tpot = !by_wait && tpot;
    }
    char buf[160];
    int share = 0;
    /* decode with TPOT missed gives only while nearly idle (under switch_lo, no wait): then
     * the misses are not its load (CPU or GPU sharing, or the last phase's p90) */
    int dec_busy = util[3] >= r->cfg->switch_lo || wait_ms[3] >= s_backlog_ms(r, 3);
    for (int k = 0; k < 4 && starved >= 0; k++) {
        if (k == starved || (k < 3 && util[k] >= r->cfg->switch_hi) || (k == 3 && tpot_over && dec_busy)) continue;
        /* the stage can spare a worker when its wait spread over one worker fewer stays under
         * the backlog (--switch-share: under half of it) and, but for decode, its utilisation so
         * spread under switch_hi (a stage left at its limit by the move would be the next one
         * starved: workers passed round stages that are all near theirs); with --switch-share
         * one that cannot, or has one worker, gives by the worker keeping role k too, while its
         * wait now is under half the backlog */
        int64_t bl = s_backlog_ms(r, k);
        int spare = vidi_switch_can_spare(k, util[k], n[k], wait_ms[k], bl, r->cfg->switch_hi, r->cfg->switch_share);
        int sh = !spare;
        if (sh && (!r->cfg->switch_share || 2 * wait_ms[k] >= bl)) continue;
        /* its worker that may leave it (or take the starved role besides): least GPU sharing,
         * fewest roles, then least work */
        int best = -1, best_n = 0, best_c = 0;
        for (int i = 0; i < MAX_WORKERS; i++) {
            const wk *w = &r->workers[i];
            if (!s_serves(r, i, 1 << k) || (w->roles >> starved & 1)) continue;
            int roles = (sh ? w->roles : w->roles & ~(1 << k)) | (1 << starved);
            if (s_switch_refusal(r, i, roles, buf, sizeof buf)) continue;
            int nr = __builtin_popcount((unsigned)w->roles), c = s_gpu_clash(r, i, starved, util);
            int better = best < 0 || c < best_c ||
                         (c == best_c && (nr < best_n || (nr == best_n && w->assigned < r->workers[best].assigned)));
            if (better) best = i, best_n = nr, best_c = c;
        }
        if (best >= 0 && (slack < 0 || best_c < mover_c || (best_c == mover_c && util[k] < util[slack])))
            slack = k, mover = best, share = sh, mover_c = best_c;
    }
    if (starved >= 0 && slack < 0 && now - r->sw_said_ms >= 10000) { /* at most every 10 s */
        r->sw_said_ms = now;
        char st[160] = "";
        for (int k = 0, o = 0; k < 4 && o < (int)sizeof st; k++)
            if (k != starved && n[k])
                o += snprintf(st + o, sizeof st - (size_t)o, "; %s %d %% over %d, %lld ms", k_roles[k], util[k], n[k],
                              (long long)wait_ms[k]);
        fprintf(stderr,
                "router: %s starved (%d %% busy over %d workers, %lld ms of work waiting), "
                "no stage can give a worker%s\n",
                k_roles[starved], util[starved], n[starved], (long long)wait_ms[starved], st);
    }
    if (starved < 0 || slack < 0) {
        r->sw_streak = 0;
        return;
    }
    if (starved == r->sw_starved && slack == r->sw_slack) r->sw_streak++;
    else r->sw_streak = 1, r->sw_starved = starved, r->sw_slack = slack;
    int need = r->cfg->switch_windows > 0 ? r->cfg->switch_windows : 1;
    if (slack == r->sw_prev_to && starved == r->sw_prev_from) need *= 3;
    if (r->sw_streak < need) return;
    r->sw_streak = 0;
    r->sw_prev_from = slack, r->sw_prev_to = starved;
    snprintf(buf, sizeof buf, "%s %d %% busy over %d workers, %lld ms of work waiting; %s %d %% over %d%s%s",
             k_roles[starved], util[starved], n[starved], (long long)wait_ms[starved], k_roles[slack], util[slack],
             n[slack], share ? ", kept" : "", mover_c ? ", its GPU shared" : "");
    int keep = share ? r->workers[mover].roles : r->workers[mover].roles & ~(1 << slack);
    if (starved == 3 && by_tpot) /* judged by its effect once it has ended (s_switch_judge) */
        r->sw_judge_wi = mover, r->sw_judge_tpot = s_slo_p90(r, 1), r->sw_judge_due = 0;
    s_switch_begin(r, mover, keep | (1 << starved), buf);
}

/* ROLE from a client: switch the worker of that name now (a forced switch). */
static void s_on_role_client(router *r, const vidi_msg *m) {
    vidi_err err = {0};
    const char *name;
    size_t nn, nr;
    const msgpack_object *roles;
    if (vidi_mp_str(m->header, "worker", 1, 127, &name, &nn, &err) ||
        vidi_mp_array(m->header, "roles", 1, 4, &roles, &nr, &err)) {
        s_client_error(r, m, -1, VIDI_WIRE_BAD_FIELD, err.msg);
        return;
    }
    int unknown = 0, mask = s_roles_mask(roles, nr, &unknown);
    if (unknown) {
        s_client_error(r, m, -1, VIDI_WIRE_BAD_FIELD, "ROLE: roles are media, encode, prefill and decode");
        return;
    }
    int wi = -1;
    for (int i = 0; i < MAX_WORKERS && wi < 0; i++)
        if (r->workers[i].used && strlen(r->workers[i].name) == nn && !memcmp(r->workers[i].name, name, nn)) wi = i;
    if (wi < 0) {
        char msg[192];
        snprintf(msg, sizeof msg, "ROLE: no worker named '%.*s'", (int)nn, name);
        s_client_error(r, m, -1, VIDI_WIRE_BAD_FIELD, msg);
        return;
    }
    char buf[96], msg[256];
    const char *no = s_switch_refusal(r, wi, mask, buf, sizeof buf);
    if (no) {
        snprintf(msg, sizeof msg, "ROLE: worker %s cannot switch now: %s", r->workers[wi].name, no);
        s_client_error(r, m, -1, VIDI_WIRE_BAD_REQUEST, msg);
        return;
    }
    s_switch_begin(r, wi, mask, "asked by a client");
    char a[64];
    s_roles_str(mask, a, sizeof a);
    snprintf(msg, sizeof msg, "worker %s drains, then takes %s", r->workers[wi].name, a);
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 3);
    vidi_mp_kv_str(&o.pk, "worker", r->workers[wi].name);
    vidi_mp_pack_cstr(&o.pk, "roles");
    s_pack_roles(&o.pk, mask);
    vidi_mp_kv_str(&o.pk, "text", msg);
    vidi_msg_send(r->front, m->identity, m->identity_len, VIDI_CMD_ROLE, &o, NULL);
    vidi_msg_out_free(&o);
}

/* ---- time ---- */

static void s_tick(router *r) {
    int64_t now = vidi_now_ms();
    for (int wi = 0; wi < MAX_WORKERS; wi++) {
        wk *w = &r->workers[wi];
        if (!w->used) continue;
        if (vidi_liveness_dead(&w->live, now)) {
            s_worker_lost(r, wi, "heartbeats stopped");
            continue;
        }
        if (vidi_liveness_due(&w->live, now)) {
            vidi_msg_out o;
            vidi_msg_out_init(&o);
            if (s_send_worker(r, wi, VIDI_CMD_HEARTBEAT, &o) != VIDI_OK) continue;
        }
        if (now - w->stats_asked_ms >= 1000) { /* its counters, for the clients' STATS */
            w->stats_asked_ms = now;
            vidi_msg_out o;
            vidi_msg_out_init(&o);
            s_send_worker(r, wi, VIDI_CMD_STATS, &o);
        }
    }
    for (int i = 0; i < r->n_reqs_cap; i++) {
        rq *q = &r->reqs[i];
        if (!q->used) continue;
        if (now > q->deadline_ms) {
            s_fail(r, q, VIDI_WIRE_TIMEOUT, "the request's deadline passed");
            continue;
        }
        int64_t client_limit = r->cfg->heartbeat_ms * r->cfg->liveness;
        if (client_limit < CLIENT_SILENCE_MS) client_limit = CLIENT_SILENCE_MS;
        if (now - q->client_heard_ms > client_limit || !q->client_len) {
            /* the client went away: stop using workers for it */
            r->c_clients_gone++;
            s_log(r, "request %" PRIu64 ": the client is silent; cancelled", q->req);
            s_cancel_workers(r, q);
            s_rq_free(q);
            continue;
        }
        if (!q->running) {
            if (s_dispatch(r, q) != 0 && now - q->queued_since_ms > r->cfg->stage_timeout_ms)
                s_fail(r, q, VIDI_WIRE_NO_WORKER, "no worker for one of the request's stages");
        }
    }
    s_switch_poll(r, now);
    s_switch_policy(r, now);
}

/* ---- main loop ---- */

vidi_status vidi_router_run(const vidi_router_config *cfg, volatile sig_atomic_t *stop, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    router *r = calloc(1, sizeof *r);
    VIDI_CHECK(r, err, VIDI_ERR_NOMEM, "router: out of memory");
    r->cfg = cfg;
    r->n_reqs_cap = cfg->max_requests > 0 ? cfg->max_requests : 256;
    r->reqs = calloc((size_t)r->n_reqs_cap, sizeof *r->reqs);
    r->dir = calloc(DIR_MAX, sizeof *r->dir);
    VIDI_CHECK(r->reqs && r->dir, err, VIDI_ERR_NOMEM, "router: out of memory");
    r->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    r->sw_prev_from = r->sw_prev_to = -1;
    r->sw_judge_wi = -1;
    for (int k = 0; k < 4; k++) {
        r->stage_tokens_at[k] = -1;
        for (int i = 0; i < WK_STATS; i++) {
            if (!strcmp(k_wk_stats[i], k_stage_busy[k])) r->stage_busy_at[k] = i;
            if (!strcmp(k_wk_stats[i], k_stage_unit[k])) r->stage_unit_at[k] = i;
            if (k_stage_tokens[k] && !strcmp(k_wk_stats[i], k_stage_tokens[k])) r->stage_tokens_at[k] = i;
        }
    }
    VIDI_TRY(vidi_model_config_load(cfg->model_dir, &r->mcfg, err));
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", cfg->model_dir);
    VIDI_TRY(vidi_tokenizer_load(path, &r->tok, err));
    r->ctx = zmq_ctx_new();
    VIDI_CHECK(r->ctx, err, VIDI_ERR_IO, "router: zmq context: %s", zmq_strerror(errno));
    if (cfg->curve_secret) {
        vidi_sock_curve cv = {NULL, NULL, cfg->curve_secret};
        r->front = vidi_sock_open_curve(r->ctx, VIDI_SOCK_FRONT, cfg->front, &cv, err);
    } else {
        r->front = vidi_sock_open(r->ctx, VIDI_SOCK_FRONT, cfg->front, 0, NULL, 0, err);
    }
    if (!r->front) {
        rc = err ? err->status : VIDI_ERR_IO;
        goto fail;
    }
    r->back = vidi_sock_open(r->ctx, VIDI_SOCK_BACK, cfg->back, 0, NULL, 0, err);
    if (!r->back) {
        rc = err ? err->status : VIDI_ERR_IO;
        goto fail;
    }
    fprintf(stderr, "router: clients on %s, workers on %s, model %s\n", cfg->front, cfg->back, cfg->model_dir);
    vidi_msg m;
    vidi_msg_init(&m);
    int64_t last_tick = 0;
    while (!*stop) {
        zmq_pollitem_t items[2] = {{r->front, 0, ZMQ_POLLIN, 0}, {r->back, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, (long)(cfg->heartbeat_ms / 4 + 1)) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int k = 0; k < 2; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            void *s = k ? r->back : r->front;
            for (int n = 0; n < 256; n++) {
                vidi_wire_code code;
                vidi_err e = {0};
                vidi_status st = vidi_msg_recv(s, 1, ZMQ_DONTWAIT, NULL, &m, &code, &e);
                if (st == VIDI_ERR_IO && code == VIDI_WIRE_OK) break;
                if (st != VIDI_OK) {
                    r->c_bad_msgs++;
                    if (m.identity_len && m.cmd != VIDI_CMD_ERROR)
                        vidi_msg_send_error(s, m.identity, m.identity_len, code, -1, e.msg, NULL);
                    continue;
                }
                if (k) s_on_back(r, &m);
                else s_on_front(r, &m);
            }
        }
        int64_t now = vidi_now_ms();
        if (now - last_tick >= cfg->heartbeat_ms / 4) {
            s_tick(r);
            last_tick = now;
        }
    }
    vidi_msg_close(&m);
    for (int wi = 0; wi < MAX_WORKERS; wi++)
        if (r->workers[wi].used) {
            vidi_msg_out o;
            vidi_msg_out_init(&o);
            msgpack_pack_map(&o.pk, 1);
            vidi_mp_kv_str(&o.pk, "reason", "the router is stopping");
            vidi_msg_send(r->back, r->workers[wi].id, r->workers[wi].id_len, VIDI_CMD_DISCONNECT, &o, NULL);
            vidi_msg_out_free(&o);
        }
fail:
    if (r) {
        if (r->reqs)
            for (int i = 0; i < r->n_reqs_cap; i++)
                if (r->reqs[i].used) s_rq_free(&r->reqs[i]);
        if (r->front) zmq_close(r->front);
        if (r->back) zmq_close(r->back);
        if (r->ctx) zmq_ctx_term(r->ctx);
        vidi_tokenizer_free(r->tok);
        free(r->reqs);
        free(r->dir);
        free(r);
    }
    return rc;
}
