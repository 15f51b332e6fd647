/* ipc/conn.h — the low-level connection to the router's front socket (PROTOCOL.md
 * §5.2): submit requests with media files, read their TOKEN / DONE / ERROR
 * events, cancel, ask for stats. One DEALER socket; not thread-safe. The
 * public C SDK (ipc/sdk/vidi_client.h) and the tools build on this.
 */
#ifndef VIDI_IPC_CONN_H
#define VIDI_IPC_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "ipc/fields.h"

typedef struct vidi_conn vidi_conn;

/* Connect to the router's front endpoint. Freed by vidi_conn_close. */
vidi_status vidi_conn_connect(const char *endpoint, vidi_conn **out, vidi_err *err);
/* The same with CURVE encryption (curve NULL: none; ipc/sock.h). */
struct vidi_sock_curve;
vidi_status vidi_conn_connect_curve(const char *endpoint, const struct vidi_sock_curve *curve, vidi_conn **out,
                                    vidi_err *err);
void vidi_conn_close(vidi_conn *c);

typedef struct vidi_conn_media {
    int video;                /* 0 image, 1 video */
    const void *bytes;        /* the file, as it is */
    size_t n;
    double fps;               /* 0: default */
    uint64_t nframes, min_pixels, max_pixels; /* 0: default */
} vidi_conn_media;

typedef struct vidi_conn_request {
    uint64_t id;              /* unique among this client's open requests */
    const char *prompt;
    const char *system;       /* NULL: the template's default */
    const vidi_conn_media *media;
    int n_media;
    vidi_wire_sampling sampling; /* vidi_wire_sampling_parse of an empty map gives the defaults */
    int stream;
    const char *const *stop;
    int n_stop;
} vidi_conn_request;

/* Defaults: no media, 128 tokens, greedy, streaming. */
vidi_conn_request vidi_conn_request_default(void);

/* Send one REQUEST (the media bytes are copied into the message). */
vidi_status vidi_conn_submit(vidi_conn *c, const vidi_conn_request *rq, vidi_err *err);
vidi_status vidi_conn_cancel(vidi_conn *c, uint64_t id, vidi_err *err);
/* Send a message the caller built (e.g. a REQUEST in the `messages` form,
 * PROTOCOL.md §5.2); o is emptied (free it with vidi_msg_out_free). */
struct vidi_msg_out;
vidi_status vidi_conn_send(vidi_conn *c, int cmd, struct vidi_msg_out *o, vidi_err *err);

typedef enum vidi_conn_event_type {
    VIDI_CONN_TOKEN = 1,
    VIDI_CONN_DONE = 2,
    VIDI_CONN_ERROR = 3,
    VIDI_CONN_STATS = 4,
    VIDI_CONN_ROLE = 5,       /* the router began a forced switch (text: what it does) */
} vidi_conn_event_type;

typedef struct vidi_conn_event {
    vidi_conn_event_type type;
    uint64_t id;
    char *text;               /* malloc'd, NUL-terminated: TOKEN's new text, DONE's whole text, ERROR's message */
    size_t text_len;
    uint64_t index;           /* TOKEN: index of its first token */
    int n_tokens;             /* TOKEN: how many; DONE: all of them */
    char finish[16];          /* DONE: "stop", "length", "cancelled" */
    char code[32];            /* ERROR: the code */
    uint64_t prompt_tokens, cache_hits;
    double total_s, queue_s;
    /* STATS: name/value pairs (malloc'd) */
    int n_stats;
    char (*stat_names)[32];
    uint64_t *stat_values;
} vidi_conn_event;

/* Wait up to timeout_ms (-1: forever) for the next event. VIDI_ERR_IO with
 * errno EAGAIN when none came in time. Free the event with
 * vidi_conn_event_free. Malformed replies are VIDI_ERR_FORMAT. */
vidi_status vidi_conn_next(vidi_conn *c, int timeout_ms, vidi_conn_event *ev, vidi_err *err);
void vidi_conn_event_free(vidi_conn_event *ev);

/* Ask for the router's STATS (the answer arrives as a VIDI_CONN_STATS event). */
vidi_status vidi_conn_stats(vidi_conn *c, vidi_err *err);
/* Force worker `worker` (READY's name) to the roles of the comma list
 * `roles` (media, encode, prefill, decode; PROTOCOL.md §5.6); the answer is
 * a VIDI_CONN_ROLE event when its drain has begun, else VIDI_CONN_ERROR. */
vidi_status vidi_conn_role(vidi_conn *c, const char *worker, const char *roles, vidi_err *err);
/* The value of a STATS counter (0 when absent). */
uint64_t vidi_conn_stat(const vidi_conn_event *ev, const char *name);

#endif
