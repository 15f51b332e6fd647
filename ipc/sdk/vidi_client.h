/* vidi_client.h — the C SDK of vidi (libvidi-client, shared and static).
 *
 * A program talks to a vidi router (`vidi up`) over ZeroMQ: it submits
 * questions about images and videos (a conversation of text, image and
 * video parts; media as bytes or as file paths), reads the answer as it
 * streams (by polling, or with a callback), cancels, and gets every
 * failure as a status code with a message.
 *
 *     vidi_client *c;
 *     vidi_client_params cp = vidi_client_params_default();
 *     if (vidi_client_connect("ipc:///run/user/1000/vidi/front", &cp, &c)) ...
 *     vidi_client_part video = vidi_client_part_video_file("clip.mp4");
 *     vidi_client_request_params rp = vidi_client_request_params_default();
 *     uint64_t id;
 *     if (vidi_client_ask(c, "What moves?", &video, 1, &rp, &id)) puts(vidi_client_last_error(c));
 *     vidi_client_event ev;
 *     while (vidi_client_poll(c, 1000, &ev) == VIDI_CLIENT_OK)
 *         if (ev.type == VIDI_CLIENT_EV_TOKEN) fputs(ev.text, stdout);
 *         else if (ev.type != VIDI_CLIENT_EV_NONE) break;    (DONE or ERROR)
 *     vidi_client_close(c);
 *
 * This header needs only the C standard library; it compiles as C99 and
 * C++. A handle is not thread-safe: use one per thread. Strings are UTF-8.
 * Every function that can fail returns a vidi_client_status; the message
 * of the last failure on a handle is vidi_client_last_error(c).
 */
#ifndef VIDI_CLIENT_H
#define VIDI_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VIDI_CLIENT_VERSION_MAJOR 1
#define VIDI_CLIENT_VERSION_MINOR 0

/* ---- status codes ---- */
typedef enum vidi_client_status {
    VIDI_CLIENT_OK = 0,
    VIDI_CLIENT_E_INVALID = 1,   /* a bad argument (NULL handle, no parts, a part without data, ...) */
    VIDI_CLIENT_E_NOMEM = 2,     /* out of memory */
    VIDI_CLIENT_E_IO = 3,        /* the socket failed (connect, send, receive) */
    VIDI_CLIENT_E_TIMEOUT = 4,   /* nothing arrived within the time given */
    VIDI_CLIENT_E_FILE = 5,      /* a media path could not be read */
    VIDI_CLIENT_E_PROTOCOL = 6,  /* the router sent something this SDK does not understand */
    VIDI_CLIENT_E_NOT_FOUND = 7, /* no open request with that id */
    VIDI_CLIENT_E_SERVER = 8,    /* the request failed on the server: the event's error_code says why */
    VIDI_CLIENT_E_CANCELLED = 9  /* a callback asked to stop (vidi_client_wait) */
} vidi_client_status;

/* A static name for a status ("ok", "invalid", ...). */
const char *vidi_client_status_name(int status);

/* ---- connecting ---- */
/* The connection: opaque. */
typedef struct vidi_client vidi_client;

typedef struct vidi_client_params {
    /* CURVE encryption of the connection (all three, Z85 text of 40
     * characters, or all NULL for none): the router's public key, and this
     * client's key pair (zmq_curve_keypair). */
    const char *curve_server_key;
    const char *curve_public_key;
    const char *curve_secret_key;
    /* vidi_client_wait gives up on a request after this long without an
     * event from it (default 120000 ms; 0: never). */
    int request_timeout_ms;
} vidi_client_params;

vidi_client_params vidi_client_params_default(void);

/* The front endpoint `vidi up` uses by default, ipc://$XDG_RUNTIME_DIR/vidi/front
 * (ipc:///tmp/vidi-UID/front without XDG_RUNTIME_DIR), into buf (cap bytes);
 * returns buf. */
const char *vidi_client_default_endpoint(char *buf, size_t cap);

/* Connect to a router's front endpoint (ipc://PATH or tcp://HOST:PORT).
 * ZeroMQ connects in the background, so a router that is not up yet is not
 * an error here; requests wait for it. *out is NULL on failure. */
int vidi_client_connect(const char *endpoint, const vidi_client_params *params, vidi_client **out);
/* Close the connection; open requests are cancelled. NULL is fine. */
void vidi_client_close(vidi_client *c);
/* The message of the last failure on c (or of the last vidi_client_connect
 * that failed, when c is NULL). Never NULL. */
const char *vidi_client_last_error(const vidi_client *c);

/* ---- requests ---- */
typedef enum vidi_client_part_type {
    VIDI_CLIENT_PART_TEXT = 0,
    VIDI_CLIENT_PART_IMAGE = 1,
    VIDI_CLIENT_PART_VIDEO = 2
} vidi_client_part_type;

/* One part of a message: text, or an image or video given as bytes (data,
 * size) or as a file path (path; read when the request is submitted). The
 * bytes are the file as it is (JPEG, PNG, MP4, WebM, ...). */
typedef struct vidi_client_part {
    vidi_client_part_type type;
    const char *text;         /* TEXT */
    const void *data;         /* IMAGE / VIDEO: the file's bytes, or NULL and ... */
    size_t size;
    const char *path;         /* ... a path to read */
    double fps;               /* VIDEO: frames sampled per second (0: the model's default, 2) */
    uint64_t nframes;         /* VIDEO: exactly this many frames instead (0: by fps) */
    uint64_t min_pixels;      /* 0: the model's default */
    uint64_t max_pixels;      /* 0: the model's default */
} vidi_client_part;

vidi_client_part vidi_client_part_text(const char *text);
vidi_client_part vidi_client_part_image(const void *data, size_t size);
vidi_client_part vidi_client_part_video(const void *data, size_t size);
vidi_client_part vidi_client_part_image_file(const char *path);
vidi_client_part vidi_client_part_video_file(const char *path);

/* One turn of a conversation. role: "system", "user" or "assistant". */
typedef struct vidi_client_message {
    const char *role;
    const vidi_client_part *parts;
    int n_parts;
} vidi_client_message;

typedef struct vidi_client_request_params {
    int max_tokens;           /* default 128 */
    double temperature;       /* default 0: greedy */
    double top_p;             /* default 1 */
    int top_k;                /* default 0: all */
    int64_t seed;             /* default -1: the router picks one */
    const char *const *stop;  /* stop strings (at most 4) */
    int n_stop;
    const int32_t *stop_ids;  /* stop token ids (at most 16) */
    int n_stop_ids;
    int stream;               /* default 1: TOKEN events as the answer grows; 0: DONE only */
} vidi_client_request_params;

vidi_client_request_params vidi_client_request_params_default(void);

/* Submit a conversation (the answer continues it as the assistant). The
 * request's id (unique on this handle) goes to *id. params NULL: the
 * defaults. */
int vidi_client_submit(vidi_client *c, const vidi_client_message *messages, int n_messages,
                       const vidi_client_request_params *params, uint64_t *id);
/* One user turn: the media parts in order, then the prompt. */
int vidi_client_ask(vidi_client *c, const char *prompt, const vidi_client_part *media, int n_media,
                     const vidi_client_request_params *params, uint64_t *id);
/* Stop an open request; its last event is DONE with finish "cancelled".
 * VIDI_CLIENT_E_NOT_FOUND when it is not open. */
int vidi_client_cancel(vidi_client *c, uint64_t id);

/* ---- events ---- */
typedef enum vidi_client_event_type {
    VIDI_CLIENT_EV_NONE = 0,  /* nothing (poll timed out) */
    VIDI_CLIENT_EV_TOKEN = 1, /* more of the answer: text */
    VIDI_CLIENT_EV_DONE = 2,  /* the request finished: text is the whole answer */
    VIDI_CLIENT_EV_ERROR = 3  /* the request failed: error_code and text (the message) */
} vidi_client_event_type;

/* An event. Its strings belong to the handle and stay valid until the next
 * vidi_client_poll / vidi_client_wait on it. */
typedef struct vidi_client_event {
    vidi_client_event_type type;
    uint64_t id;              /* the request */
    const char *text;         /* TOKEN: the new text; DONE: the answer; ERROR: the message */
    size_t text_len;
    uint64_t index;           /* TOKEN: the position of its first token in the answer */
    int n_tokens;             /* TOKEN: tokens in it; DONE: tokens in the answer */
    const char *finish;       /* DONE: "stop", "length" or "cancelled" */
    const char *error_code;   /* ERROR: "bad_request", "overloaded", "timeout", ... (ipc/PROTOCOL.md §7) */
    uint64_t prompt_tokens;   /* DONE */
    uint64_t cache_hits;      /* DONE: media items served from the MM-token cache */
    double total_s;           /* DONE: the router's time for the request */
    double queue_s;           /* DONE: of which waiting before its first dispatch to workers */
} vidi_client_event;

/* The next event of any open request, waiting up to timeout_ms (-1:
 * forever). VIDI_CLIENT_OK with ev->type NONE when none came in time. */
int vidi_client_poll(vidi_client *c, int timeout_ms, vidi_client_event *ev);

/* Called for each event of one request; return nonzero to cancel it. */
typedef int (*vidi_client_callback)(const vidi_client_event *ev, void *user);

/* Deliver request id's events to cb (NULL: none) until it is DONE or fails.
 * Events of other requests are kept for later polls. Returns OK on DONE
 * (also DONE "cancelled"), SERVER on an ERROR event (its code in
 * *error_code when error_code is non-NULL: a static string), TIMEOUT after
 * request_timeout_ms of silence (the request is cancelled), CANCELLED when
 * cb returned nonzero. When answer is non-NULL it receives the whole answer
 * (malloc'd; free it) on OK. */
int vidi_client_wait(vidi_client *c, uint64_t id, vidi_client_callback cb, void *user, char **answer,
                     const char **error_code);

/* ---- the router's counters ---- */

/* The router's STATS (ipc/PROTOCOL.md §5.2): counters and gauges such as
 * "requests", "done", "errors", "active", "running", "waiting",
 * "cache_hit_items", "media_items", "roles.media", ... Up to cap pairs go to
 * names (strings valid until the next call on c) and values; *n gets how
 * many. Waits up to timeout_ms for the answer; events of requests that
 * arrive meanwhile are kept for later polls. */
int vidi_client_stats(vidi_client *c, int timeout_ms, const char **names, uint64_t *values, int cap, int *n);

#ifdef __cplusplus
}
#endif

#endif
