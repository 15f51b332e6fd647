/* ipc/sdk/vidi_client.c — the C SDK (vidi_client.h) over the low-level
 * connection (ipc/conn.h): requests in the REQUEST `messages` or `prompt`
 * form (PROTOCOL.md §5.2), events kept per request until asked for, status
 * codes with messages. Only the vidi_client_* functions are exported from
 * libvidi-client.so (the rest is compiled with hidden visibility). */
#include "vidi_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipc/conn.h"
#include "ipc/msg.h"
#include "ipc/sock.h"

#define API __attribute__((visibility("default")))

#define MAX_MEDIA 16         /* PROTOCOL.md §5.2 */
#define MAX_MESSAGES 64
#define MAX_PARTS 256
#define MAX_FILE_BYTES ((size_t)1 << 30)
#define ERR_MAX 512

typedef struct open_req {
    uint64_t id;
    int64_t last_ms;         /* when it was submitted or last heard of */
} open_req;

struct vidi_client {
    vidi_conn *conn;
    int request_timeout_ms;
    uint64_t next_id;
    open_req *open;
    int n_open, cap_open;
    vidi_conn_event *queue;  /* events not yet handed out (FIFO) */
    int q_head, q_len, q_cap;
    vidi_conn_event cur;     /* the event last handed out: its strings live until the next call */
    vidi_conn_event stats;   /* the last STATS answer (vidi_client_stats' names point into it) */
    int want_stats;          /* a STATS answer is awaited: s_next keeps it in stats */
    char err[ERR_MAX];
};

static char g_connect_err[ERR_MAX] = "no error";

static int s_fail(vidi_client *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int s_fail(vidi_client *c, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c ? c->err : g_connect_err, ERR_MAX, fmt, ap);
    va_end(ap);
    return status;
}

/* A vidi_status from the protocol layer as an SDK status. */
static int s_status(vidi_status st) {
    switch (st) {
    case VIDI_OK: return VIDI_CLIENT_OK;
    case VIDI_ERR_NOMEM: return VIDI_CLIENT_E_NOMEM;
    case VIDI_ERR_INVALID:
    case VIDI_ERR_RANGE: return VIDI_CLIENT_E_INVALID;
    case VIDI_ERR_FORMAT: return VIDI_CLIENT_E_PROTOCOL;
    case VIDI_ERR_NOTFOUND: return VIDI_CLIENT_E_FILE;
    default: return VIDI_CLIENT_E_IO;
    }
}

API const char *vidi_client_status_name(int status) {
    static const char *const names[] = {"ok",   "invalid",  "nomem",     "io",     "timeout",
                                        "file", "protocol", "not_found", "server", "cancelled"};
    return status >= 0 && status < (int)(sizeof names / sizeof names[0]) ? names[status] : "unknown";
}

API vidi_client_params vidi_client_params_default(void) {
    vidi_client_params p;
    memset(&p, 0, sizeof p);
    p.request_timeout_ms = 120000;
    return p;
}

API vidi_client_request_params vidi_client_request_params_default(void) {
    vidi_client_request_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 128;
    p.top_p = 1.0;
    p.seed = -1;
    p.stream = 1;
    return p;
}

static vidi_client_part s_part(vidi_client_part_type t) {
    vidi_client_part p;
    memset(&p, 0, sizeof p);
    p.type = t;
    return p;
}

API vidi_client_part vidi_client_part_text(const char *text) {
    vidi_client_part p = s_part(VIDI_CLIENT_PART_TEXT);
    p.text = text;
    return p;
}

API vidi_client_part vidi_client_part_image(const void *data, size_t size) {
    vidi_client_part p = s_part(VIDI_CLIENT_PART_IMAGE);
    p.data = data, p.size = size;
    return p;
}

API vidi_client_part vidi_client_part_video(const void *data, size_t size) {
    vidi_client_part p = s_part(VIDI_CLIENT_PART_VIDEO);
    p.data = data, p.size = size;
    return p;
}

API vidi_client_part vidi_client_part_image_file(const char *path) {
    vidi_client_part p = s_part(VIDI_CLIENT_PART_IMAGE);
    p.path = path;
    return p;
}

API vidi_client_part vidi_client_part_video_file(const char *path) {
    vidi_client_part p = s_part(VIDI_CLIENT_PART_VIDEO);
    p.path = path;
    return p;
}

API const char *vidi_client_default_endpoint(char *buf, size_t cap) {
    if (!buf || !cap) return buf;
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (x && *x) snprintf(buf, cap, "ipc://%s/vidi/front", x);
    else snprintf(buf, cap, "ipc:///tmp/vidi-%u/front", (unsigned)getuid());
    return buf;
}

API int vidi_client_connect(const char *endpoint, const vidi_client_params *params, vidi_client **out) {
    if (!out) return s_fail(NULL, VIDI_CLIENT_E_INVALID, "vidi_client_connect: out is NULL");
    *out = NULL;
    if (!endpoint || !*endpoint) return s_fail(NULL, VIDI_CLIENT_E_INVALID, "vidi_client_connect: no endpoint");
    vidi_client_params p = params ? *params : vidi_client_params_default();
    int n_keys = !!p.curve_server_key + !!p.curve_public_key + !!p.curve_secret_key;
    if (n_keys != 0 && n_keys != 3)
        return s_fail(NULL, VIDI_CLIENT_E_INVALID, "vidi_client_connect: give all three CURVE keys or none");
    if (p.request_timeout_ms < 0)
        return s_fail(NULL, VIDI_CLIENT_E_INVALID, "vidi_client_connect: request_timeout_ms %d is negative",
                      p.request_timeout_ms);
    vidi_client *c = calloc(1, sizeof *c);
    if (!c) return s_fail(NULL, VIDI_CLIENT_E_NOMEM, "vidi_client_connect: out of memory");
    vidi_err err = {0};
    vidi_sock_curve cv = {p.curve_server_key, p.curve_public_key, p.curve_secret_key};
    vidi_status st = vidi_conn_connect_curve(endpoint, n_keys ? &cv : NULL, &c->conn, &err);
    if (st != VIDI_OK) {
        free(c);
        return s_fail(NULL, s_status(st), "vidi_client_connect: %s", err.msg);
    }
    c->request_timeout_ms = p.request_timeout_ms;
    c->next_id = 1;
    snprintf(c->err, sizeof c->err, "no error");
    *out = c;
    return VIDI_CLIENT_OK;
}

API void vidi_client_close(vidi_client *c) {
    if (!c) return;
    for (int i = 0; i < c->n_open; i++) vidi_conn_cancel(c->conn, c->open[i].id, NULL);
    vidi_conn_close(c->conn);
    for (int i = 0; i < c->q_len; i++) vidi_conn_event_free(&c->queue[(c->q_head + i) % c->q_cap]);
    vidi_conn_event_free(&c->cur);
    vidi_conn_event_free(&c->stats);
    free(c->queue);
    free(c->open);
    free(c);
}

API const char *vidi_client_last_error(const vidi_client *c) { return c ? c->err : g_connect_err; }

/* ---- open requests ---- */

static int s_open_find(const vidi_client *c, uint64_t id) {
    for (int i = 0; i < c->n_open; i++)
        if (c->open[i].id == id) return i;
    return -1;
}

static int s_open_add(vidi_client *c, uint64_t id) {
    if (c->n_open == c->cap_open) {
        int cap = c->cap_open ? 2 * c->cap_open : 16;
        open_req *o = realloc(c->open, (size_t)cap * sizeof *o);
        if (!o) return -1;
        c->open = o;
        c->cap_open = cap;
    }
    c->open[c->n_open++] = (open_req){id, vidi_now_ms()};
    return 0;
}

static void s_open_remove(vidi_client *c, uint64_t id) {
    int i = s_open_find(c, id);
    if (i >= 0) c->open[i] = c->open[--c->n_open];
}

/* ---- building a REQUEST ---- */

/* The bytes of a media part: its data, or its file read into *owned. */
static int s_media_bytes(vidi_client *c, const vidi_client_part *p, int k, const void **data, size_t *size,
                         void **owned) {
    *owned = NULL;
    if (p->data) {
        if (!p->size) return s_fail(c, VIDI_CLIENT_E_INVALID, "media %d is empty", k);
        *data = p->data, *size = p->size;
        return VIDI_CLIENT_OK;
    }
    if (!p->path) return s_fail(c, VIDI_CLIENT_E_INVALID, "media %d has neither data nor a path", k);
    FILE *f = fopen(p->path, "rb");
    if (!f) return s_fail(c, VIDI_CLIENT_E_FILE, "media %d: %s: %s", k, p->path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0 || (size_t)sb.st_size > MAX_FILE_BYTES) {
        fclose(f);
        return s_fail(c, VIDI_CLIENT_E_FILE, "media %d: %s: not a regular file of 1 byte to 1 GiB", k, p->path);
    }
    void *buf = malloc((size_t)sb.st_size);
    if (!buf) {
        fclose(f);
        return s_fail(c, VIDI_CLIENT_E_NOMEM, "media %d: out of memory for %s", k, p->path);
    }
    size_t got = fread(buf, 1, (size_t)sb.st_size, f);
    fclose(f);
    if (got != (size_t)sb.st_size) {
        free(buf);
        return s_fail(c, VIDI_CLIENT_E_FILE, "media %d: %s: short read", k, p->path);
    }
    *data = buf, *size = got, *owned = buf;
    return VIDI_CLIENT_OK;
}

static int s_check_params(vidi_client *c, const vidi_client_request_params *p) {
    if (p->max_tokens < 1 || p->max_tokens > 1 << 20)
        return s_fail(c, VIDI_CLIENT_E_INVALID, "max_tokens %d: must be in [1, 2^20]", p->max_tokens);
    if (!(p->temperature >= 0 && p->temperature <= 100))
        return s_fail(c, VIDI_CLIENT_E_INVALID, "temperature %g: must be in [0, 100]", p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1)) return s_fail(c, VIDI_CLIENT_E_INVALID, "top_p %g: must be in (0, 1]", p->top_p);
    if (p->top_k < 0) return s_fail(c, VIDI_CLIENT_E_INVALID, "top_k %d is negative", p->top_k);
    if (p->n_stop < 0 || p->n_stop > 4 || (p->n_stop && !p->stop))
        return s_fail(c, VIDI_CLIENT_E_INVALID, "stop: at most 4 strings");
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !*p->stop[i]) return s_fail(c, VIDI_CLIENT_E_INVALID, "stop string %d is empty", i);
    if (p->n_stop_ids < 0 || p->n_stop_ids > 16 || (p->n_stop_ids && !p->stop_ids))
        return s_fail(c, VIDI_CLIENT_E_INVALID, "stop_ids: at most 16");
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] < 0) return s_fail(c, VIDI_CLIENT_E_INVALID, "stop id %d is negative", i);
    return VIDI_CLIENT_OK;
}

static void s_pack_params(msgpack_packer *pk, const vidi_client_request_params *p) {
    vidi_wire_sampling s;
    memset(&s, 0, sizeof s);
    s.max_tokens = (uint64_t)p->max_tokens;
    s.temperature = p->temperature;
    s.top_p = p->top_p;
    s.top_k = (uint64_t)p->top_k;
    s.has_seed = p->seed >= 0;
    s.seed = p->seed >= 0 ? (uint64_t)p->seed : 0;
    s.n_stop_ids = p->n_stop_ids;
    for (int i = 0; i < p->n_stop_ids; i++) s.stop_ids[i] = p->stop_ids[i];
    vidi_wire_sampling_pack(pk, &s);
}

static int s_params_fields(const vidi_client_request_params *p) {
    vidi_wire_sampling s;
    memset(&s, 0, sizeof s);
    s.has_seed = p->seed >= 0;
    s.n_stop_ids = p->n_stop_ids;
    return vidi_wire_sampling_fields(&s) + 2 + (p->n_stop ? 1 : 0); /* + id, stream, stop */
}

static void s_free_owned(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* The media items of a request (parts of type IMAGE / VIDEO in order) as
 * REQUEST's `media` and `tensors`; media_parts[k] is the k-th item. */
static int s_pack_media(vidi_client *c, vidi_msg_out *o, const vidi_client_part *const *items, int n) {
    vidi_mp_pack_cstr(&o->pk, "media");
    msgpack_pack_array(&o->pk, (size_t)n);
    for (int k = 0; k < n; k++) {
        const vidi_client_part *p = items[k];
        msgpack_pack_map(&o->pk, 6);
        vidi_mp_kv_str(&o->pk, "kind", p->type == VIDI_CLIENT_PART_VIDEO ? "video" : "image");
        vidi_mp_kv_u64(&o->pk, "tensor", (uint64_t)k);
        vidi_mp_kv_f64(&o->pk, "fps", p->fps);
        vidi_mp_kv_u64(&o->pk, "nframes", p->nframes);
        vidi_mp_kv_u64(&o->pk, "min_pixels", p->min_pixels);
        vidi_mp_kv_u64(&o->pk, "max_pixels", p->max_pixels);
    }
    vidi_mp_pack_cstr(&o->pk, "tensors");
    msgpack_pack_array(&o->pk, (size_t)n);
    for (int k = 0; k < n; k++) {
        const void *data = NULL;
        size_t size = 0;
        void *owned = NULL;
        int rc = s_media_bytes(c, items[k], k, &data, &size, &owned);
        if (rc != VIDI_CLIENT_OK) return rc;
        int64_t shape[1] = {(int64_t)size};
        vidi_err err = {0};
        vidi_status st = owned ? vidi_msg_out_tensor(o, VIDI_WIRE_U8, 1, shape, owned, size, s_free_owned, NULL, &err)
                               : vidi_msg_out_tensor(o, VIDI_WIRE_U8, 1, shape, (void *)data, size, NULL, NULL, &err);
        if (st != VIDI_OK) return s_fail(c, s_status(st), "media %d: %s", k, err.msg);
    }
    return VIDI_CLIENT_OK;
}

/* Send o as REQUEST id and remember the request. */
static int s_send_request(vidi_client *c, vidi_msg_out *o, uint64_t id, uint64_t *out_id) {
    vidi_err err = {0};
    vidi_status st = vidi_conn_send(c->conn, VIDI_CMD_REQUEST, o, &err);
    if (st != VIDI_OK) return s_fail(c, s_status(st), "submit: %s", err.msg);
    if (s_open_add(c, id) != 0) return s_fail(c, VIDI_CLIENT_E_NOMEM, "submit: out of memory");
    if (out_id) *out_id = id;
    return VIDI_CLIENT_OK;
}

static int s_valid_role(const char *r) {
    return r && (!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant"));
}

API int vidi_client_submit(vidi_client *c, const vidi_client_message *msgs, int n_msgs,
                           const vidi_client_request_params *params, uint64_t *id) {
    if (!c) return VIDI_CLIENT_E_INVALID;
    vidi_client_request_params p = params ? *params : vidi_client_request_params_default();
    if (!msgs || n_msgs < 1 || n_msgs > MAX_MESSAGES)
        return s_fail(c, VIDI_CLIENT_E_INVALID, "submit: 1 to %d messages", MAX_MESSAGES);
    int rc = s_check_params(c, &p);
    if (rc) return rc;
    const vidi_client_part *items[MAX_MEDIA];
    int n_items = 0, n_parts = 0;
    for (int m = 0; m < n_msgs; m++) {
        if (!s_valid_role(msgs[m].role))
            return s_fail(c, VIDI_CLIENT_E_INVALID, "message %d: role must be system, user or assistant", m);
        if (msgs[m].n_parts < 1 || !msgs[m].parts)
            return s_fail(c, VIDI_CLIENT_E_INVALID, "message %d has no parts", m);
        n_parts += msgs[m].n_parts;
        for (int i = 0; i < msgs[m].n_parts; i++) {
            const vidi_client_part *pt = &msgs[m].parts[i];
            if (pt->type == VIDI_CLIENT_PART_TEXT) {
                if (!pt->text) return s_fail(c, VIDI_CLIENT_E_INVALID, "message %d part %d: text is NULL", m, i);
                continue;
            }
            if (pt->type != VIDI_CLIENT_PART_IMAGE && pt->type != VIDI_CLIENT_PART_VIDEO)
                return s_fail(c, VIDI_CLIENT_E_INVALID, "message %d part %d: unknown type %d", m, i, (int)pt->type);
            if (n_items == MAX_MEDIA)
                return s_fail(c, VIDI_CLIENT_E_INVALID, "submit: at most %d images and videos", MAX_MEDIA);
            if (!pt->data && !pt->path)
                return s_fail(c, VIDI_CLIENT_E_INVALID, "message %d part %d: neither data nor path", m, i);
            items[n_items++] = pt;
        }
    }
    if (n_parts > MAX_PARTS) return s_fail(c, VIDI_CLIENT_E_INVALID, "submit: at most %d parts", MAX_PARTS);
    uint64_t rid = c->next_id++;
    vidi_msg_out o;
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, (size_t)(1 + s_params_fields(&p) + (n_items ? 2 : 0)));
    vidi_mp_kv_u64(&o.pk, "id", rid);
    vidi_mp_pack_cstr(&o.pk, "stream");
    p.stream ? msgpack_pack_true(&o.pk) : msgpack_pack_false(&o.pk);
    if (p.n_stop) {
        vidi_mp_pack_cstr(&o.pk, "stop");
        msgpack_pack_array(&o.pk, (size_t)p.n_stop);
        for (int i = 0; i < p.n_stop; i++) vidi_mp_pack_cstr(&o.pk, p.stop[i]);
    }
    s_pack_params(&o.pk, &p);
    vidi_mp_pack_cstr(&o.pk, "messages");
    msgpack_pack_array(&o.pk, (size_t)n_msgs);
    int k = 0;
    for (int m = 0; m < n_msgs; m++) {
        msgpack_pack_map(&o.pk, 2);
        vidi_mp_kv_str(&o.pk, "role", msgs[m].role);
        vidi_mp_pack_cstr(&o.pk, "content");
        msgpack_pack_array(&o.pk, (size_t)msgs[m].n_parts);
        for (int i = 0; i < msgs[m].n_parts; i++) {
            const vidi_client_part *pt = &msgs[m].parts[i];
            msgpack_pack_map(&o.pk, 2);
            if (pt->type == VIDI_CLIENT_PART_TEXT) {
                vidi_mp_kv_str(&o.pk, "type", "text");
                vidi_mp_kv_str(&o.pk, "text", pt->text);
            } else {
                vidi_mp_kv_str(&o.pk, "type", pt->type == VIDI_CLIENT_PART_VIDEO ? "video" : "image");
                vidi_mp_kv_u64(&o.pk, "media", (uint64_t)k++);
            }
        }
    }
    rc = n_items ? s_pack_media(c, &o, items, n_items) : VIDI_CLIENT_OK;
    if (rc == VIDI_CLIENT_OK) rc = s_send_request(c, &o, rid, id);
    vidi_msg_out_free(&o);
    return rc;
}

API int vidi_client_ask(vidi_client *c, const char *prompt, const vidi_client_part *media, int n_media,
                        const vidi_client_request_params *params, uint64_t *id) {
    if (!c) return VIDI_CLIENT_E_INVALID;
    if (!prompt) return s_fail(c, VIDI_CLIENT_E_INVALID, "ask: the prompt is NULL");
    if (n_media < 0 || n_media > MAX_MEDIA || (n_media && !media))
        return s_fail(c, VIDI_CLIENT_E_INVALID, "ask: 0 to %d media parts", MAX_MEDIA);
    vidi_client_part parts[MAX_MEDIA + 1];
    for (int i = 0; i < n_media; i++) {
        if (media[i].type != VIDI_CLIENT_PART_IMAGE && media[i].type != VIDI_CLIENT_PART_VIDEO)
            return s_fail(c, VIDI_CLIENT_E_INVALID, "ask: media part %d is not an image or a video", i);
        parts[i] = media[i];
    }
    parts[n_media] = vidi_client_part_text(prompt);
    vidi_client_message m = {"user", parts, n_media + 1};
    return vidi_client_submit(c, &m, 1, params, id);
}

API int vidi_client_cancel(vidi_client *c, uint64_t id) {
    if (!c) return VIDI_CLIENT_E_INVALID;
    if (s_open_find(c, id) < 0) return s_fail(c, VIDI_CLIENT_E_NOT_FOUND, "cancel: request %llu is not open",
                                             (unsigned long long)id);
    vidi_err err = {0};
    vidi_status st = vidi_conn_cancel(c->conn, id, &err);
    if (st != VIDI_OK) return s_fail(c, s_status(st), "cancel: %s", err.msg);
    return VIDI_CLIENT_OK;
}

/* ---- events ---- */

static int s_queue_push(vidi_client *c, vidi_conn_event *ev) {
    if (c->q_len == c->q_cap) {
        int cap = c->q_cap ? 2 * c->q_cap : 64;
        vidi_conn_event *q = malloc((size_t)cap * sizeof *q);
        if (!q) return -1;
        for (int i = 0; i < c->q_len; i++) q[i] = c->queue[(c->q_head + i) % c->q_cap];
        free(c->queue);
        c->queue = q;
        c->q_head = 0;
        c->q_cap = cap;
    }
    c->queue[(c->q_head + c->q_len++) % c->q_cap] = *ev;
    memset(ev, 0, sizeof *ev);
    return 0;
}

/* Take the first queued event of request id (any request when any): 1 when found. */
static int s_queue_take(vidi_client *c, int any, uint64_t id, vidi_conn_event *out) {
    for (int i = 0; i < c->q_len; i++) {
        int at = (c->q_head + i) % c->q_cap;
        if (!any && c->queue[at].id != id) continue;
        *out = c->queue[at];
        for (int k = i; k > 0; k--) c->queue[(c->q_head + k) % c->q_cap] = c->queue[(c->q_head + k - 1) % c->q_cap];
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
        return 1;
    }
    return 0;
}

static const char *s_code(const char *code) {
    static const char *const codes[] = {"bad_version", "bad_frame",   "bad_command", "bad_header", "bad_field",
                                        "bad_tensor",  "too_large",   "bad_media",   "bad_request", "overloaded",
                                        "no_worker",   "worker_lost", "timeout",     "cancelled",  "internal"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(codes[i], code)) return codes[i];
    return "unknown";
}

/* c->cur (already taken from the queue or the socket) as the public event. */
static void s_fill(vidi_client *c, vidi_client_event *ev) {
    vidi_conn_event *e = &c->cur;
    memset(ev, 0, sizeof *ev);
    ev->id = e->id;
    ev->text = e->text ? e->text : "";
    ev->text_len = e->text_len;
    ev->index = e->index;
    ev->n_tokens = e->n_tokens;
    ev->prompt_tokens = e->prompt_tokens;
    ev->cache_hits = e->cache_hits;
    ev->total_s = e->total_s;
    ev->queue_s = e->queue_s;
    if (e->type == VIDI_CONN_TOKEN) ev->type = VIDI_CLIENT_EV_TOKEN;
    else if (e->type == VIDI_CONN_DONE) {
        ev->type = VIDI_CLIENT_EV_DONE;
        ev->finish = e->finish;
    } else {
        ev->type = VIDI_CLIENT_EV_ERROR;
        ev->error_code = s_code(e->code);
    }
    int i = s_open_find(c, e->id);
    if (i >= 0) c->open[i].last_ms = vidi_now_ms();
    if (ev->type != VIDI_CLIENT_EV_TOKEN) s_open_remove(c, e->id);
}

/* The next request event from the socket into *ev, waiting up to
 * timeout_ms: 1 with one, 0 on timeout, -status on failure. STATS answers
 * and events without a request id are dropped. */
static int s_next(vidi_client *c, int timeout_ms, vidi_conn_event *ev) {
    int64_t until = timeout_ms < 0 ? INT64_MAX : vidi_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = until == INT64_MAX ? -1 : until - vidi_now_ms();
        if (left < 0 && until != INT64_MAX) left = 0;
        vidi_err err = {0};
        vidi_status st = vidi_conn_next(c->conn, (int)(left > 1000 || left < 0 ? 1000 : left), ev, &err);
        if (st == VIDI_OK) {
            if (ev->type == VIDI_CONN_STATS && c->want_stats) {
                vidi_conn_event_free(&c->stats);
                c->stats = *ev;
                memset(ev, 0, sizeof *ev);
                c->want_stats = 0;
                continue;
            }
            if (ev->type == VIDI_CONN_STATS || (ev->type == VIDI_CONN_ERROR && !ev->id)) {
                if (ev->type == VIDI_CONN_ERROR) snprintf(c->err, sizeof c->err, "router: [%s] %s", ev->code, ev->text);
                vidi_conn_event_free(ev);
                continue;
            }
            return 1;
        }
        if (!(st == VIDI_ERR_IO && errno == EAGAIN)) return -s_fail(c, s_status(st), "receive: %s", err.msg);
        if (vidi_now_ms() >= until) return 0;
    }
}

API int vidi_client_poll(vidi_client *c, int timeout_ms, vidi_client_event *ev) {
    if (!c || !ev) return VIDI_CLIENT_E_INVALID;
    memset(ev, 0, sizeof *ev);
    vidi_conn_event_free(&c->cur);
    if (!s_queue_take(c, 1, 0, &c->cur)) {
        int r = s_next(c, timeout_ms, &c->cur);
        if (r < 0) return -r;
        if (r == 0) return VIDI_CLIENT_OK; /* NONE */
    }
    s_fill(c, ev);
    return VIDI_CLIENT_OK;
}

API int vidi_client_wait(vidi_client *c, uint64_t id, vidi_client_callback cb, void *user, char **answer,
                         const char **error_code) {
    if (!c) return VIDI_CLIENT_E_INVALID;
    if (answer) *answer = NULL;
    if (error_code) *error_code = NULL;
    int found = 0;
    for (int i = 0; i < c->q_len && !found; i++) found = c->queue[(c->q_head + i) % c->q_cap].id == id;
    if (!found && s_open_find(c, id) < 0)
        return s_fail(c, VIDI_CLIENT_E_NOT_FOUND, "wait: request %llu is not open", (unsigned long long)id);
    for (;;) {
        vidi_conn_event_free(&c->cur);
        if (!s_queue_take(c, 0, id, &c->cur)) {
            int i = s_open_find(c, id);
            int64_t idle = i >= 0 ? vidi_now_ms() - c->open[i].last_ms : 0;
            if (c->request_timeout_ms > 0 && idle >= c->request_timeout_ms) {
                vidi_conn_cancel(c->conn, id, NULL);
                s_open_remove(c, id);
                return s_fail(c, VIDI_CLIENT_E_TIMEOUT, "wait: request %llu: nothing for %d ms; cancelled",
                              (unsigned long long)id, c->request_timeout_ms);
            }
            int r = s_next(c, 200, &c->cur);
            if (r < 0) return -r;
            if (r == 0) continue;
            if (c->cur.id != id) {
                int k = s_open_find(c, c->cur.id);
                if (k >= 0) c->open[k].last_ms = vidi_now_ms();
                if (s_queue_push(c, &c->cur) != 0) return s_fail(c, VIDI_CLIENT_E_NOMEM, "wait: out of memory");
                continue;
            }
        }
        vidi_client_event ev;
        s_fill(c, &ev);
        if (cb && cb(&ev, user)) {
            if (ev.type == VIDI_CLIENT_EV_TOKEN) {
                vidi_conn_cancel(c->conn, id, NULL);
                s_open_remove(c, id);
            }
            return s_fail(c, VIDI_CLIENT_E_CANCELLED, "wait: the callback stopped request %llu",
                          (unsigned long long)id);
        }
        if (ev.type == VIDI_CLIENT_EV_DONE) {
            if (answer && !(*answer = strdup(ev.text))) return s_fail(c, VIDI_CLIENT_E_NOMEM, "wait: out of memory");
            return VIDI_CLIENT_OK;
        }
        if (ev.type == VIDI_CLIENT_EV_ERROR) {
            if (error_code) *error_code = ev.error_code;
            return s_fail(c, VIDI_CLIENT_E_SERVER, "request %llu: [%s] %s", (unsigned long long)id, ev.error_code,
                          ev.text);
        }
    }
}

API int vidi_client_stats(vidi_client *c, int timeout_ms, const char **names, uint64_t *values, int cap, int *n) {
    if (!c) return VIDI_CLIENT_E_INVALID;
    if (!n || cap < 0 || (cap && (!names || !values))) return s_fail(c, VIDI_CLIENT_E_INVALID, "stats: bad arguments");
    *n = 0;
    vidi_err err = {0};
    vidi_status st = vidi_conn_stats(c->conn, &err);
    if (st != VIDI_OK) return s_fail(c, s_status(st), "stats: %s", err.msg);
    c->want_stats = 1;
    int64_t until = vidi_now_ms() + (timeout_ms < 0 ? 1000000000 : timeout_ms);
    while (c->want_stats) {
        int64_t left = until - vidi_now_ms();
        if (left <= 0) {
            c->want_stats = 0;
            return s_fail(c, VIDI_CLIENT_E_TIMEOUT, "stats: no answer within %d ms", timeout_ms);
        }
        vidi_conn_event ev;
        memset(&ev, 0, sizeof ev);
        int r = s_next(c, (int)left, &ev);
        if (r < 0) {
            c->want_stats = 0;
            return -r;
        }
        if (r > 0) {
            int k = s_open_find(c, ev.id);
            if (k >= 0) c->open[k].last_ms = vidi_now_ms();
            if (s_queue_push(c, &ev) != 0) {
                vidi_conn_event_free(&ev);
                return s_fail(c, VIDI_CLIENT_E_NOMEM, "stats: out of memory");
            }
        }
    }
    for (int i = 0; i < c->stats.n_stats && i < cap; i++) {
        names[i] = c->stats.stat_names[i];
        values[i] = c->stats.stat_values[i];
        (*n)++;
    }
    return VIDI_CLIENT_OK;
}
