/* tools/serve/serve.c — vidi-serve: the OpenAI-compatible video QA service.
 *
 *   vidi up &                      (router and workers; the default front)
 *   vidi-serve [--port 8000] [--router EP] [--model DIR] [--api-key KEY] ...
 *   curl localhost:8000/v1/chat/completions -d '{"model": "vidi-shapes",
 *        "messages": [{"role": "user", "content": [
 *          {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}},
 *          {"type": "text", "text": "What moves?"}]}]}'
 *
 * HTTP with libmicrohttpd (a thread per connection), JSON with jansson, the
 * router through the C SDK (ipc/sdk/vidi_client.h, one connection per HTTP
 * request). Routes:
 *   POST /v1/chat/completions   OpenAI chat completions: text, image_url and
 *                               video_url parts (data: URLs; file:// under
 *                               --allowed-media-root; http(s) only with
 *                               --allow-remote-media),
 *                               SSE streaming as OpenAI and vLLM do it
 *   GET  /v1/models, /health, /metrics (Prometheus text, vidi_ prefix)
 *   GET  /                      the video QA page (tools/serve/www)
 *   GET  /v1/vidi/samples, /samples/NAME, POST /v1/vidi/frames  (for the page)
 * Errors have OpenAI's body {"error": {"message", "type", "param", "code"}}
 * with the HTTP status as code.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>

#include "core/base64.h"
#include "media/media.h"
#include "tools/serve/frames.h"
#include "vidi_client.h"

#ifndef VIDI_SERVE_WWW
#define VIDI_SERVE_WWW "tools/serve/www"
#endif

#define MAX_MEDIA 16
#define MAX_MESSAGES 64
#define MAX_PARTS 256
#define MAX_STOP 4

/* ---------------------------------------------------------------- config */

typedef struct serve_cfg {
    const char *router, *host, *model_dir, *model_name, *api_key, *media_root, *samples_dir, *www_dir;
    int port;
    size_t max_body, max_media;
    int max_items;
    int request_timeout_ms;
    int max_connections;
    int allow_remote;        /* fetch http(s) media URLs (--allow-remote-media) */
} serve_cfg;

static serve_cfg g_cfg;
static volatile sig_atomic_t g_stop;

static void s_on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int64_t s_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---------------------------------------------------------------- metrics */

static const double k_ttft_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,  0.75,
                                        1,     2.5,   5,    7.5,  10,   20,   40,   80,   160,  640,  2560};
static const double k_itl_buckets[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                       0.75, 1,     2.5,  5,     7.5, 10,   20,  40,  80};
#define N_TTFT ((int)(sizeof k_ttft_buckets / sizeof k_ttft_buckets[0]))
#define N_ITL ((int)(sizeof k_itl_buckets / sizeof k_itl_buckets[0]))

typedef struct histo {
    const double *le;
    int n;
    uint64_t counts[32]; /* per bucket (not cumulative), n + 1 with +Inf */
    double sum;
    uint64_t count;
} histo;

static void histo_add(histo *h, double v) {
    int i = 0;
    while (i < h->n && v > h->le[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

/* the load monitor's fields of each stage and the switch counters kept from the router's STATS
 * (k_stage_fields, k_sw_fields) */
#define STAGE_FIELDS 6
#define SW_FIELDS 5

static struct {
    pthread_mutex_t mu;
    histo ttft, itl, queue, e2e;
    uint64_t finished[3]; /* stop, length, abort */
    uint64_t failed, prompt_tokens, generation_tokens, mm_queries, mm_hits;
    uint64_t http[6];     /* 2xx 3xx 4xx 5xx, other */
    /* from the router's STATS (the stats thread) */
    int router_up;
    uint64_t running, waiting, roles[4];
    uint64_t spec[4];     /* workers_spec_steps, _proposed, _accepted, _emitted */
    uint64_t spec_at[2][16]; /* workers_spec_proposed_at_I, workers_spec_accepted_at_I */
    uint64_t stage[4][STAGE_FIELDS]; /* the load monitor: stage_<role>.<k_stage_fields> */
    uint64_t sw[SW_FIELDS];          /* role switching: k_sw_fields */
    uint64_t slo[11];     /* slo.<k_slo_fields> */
    int64_t router_seen_ns;
} g_m = {.mu = PTHREAD_MUTEX_INITIALIZER,
         .ttft = {k_ttft_buckets, N_TTFT, {0}, 0, 0},
         .itl = {k_itl_buckets, N_ITL, {0}, 0, 0},
         .queue = {k_ttft_buckets, N_TTFT, {0}, 0, 0},
         .e2e = {k_ttft_buckets, N_TTFT, {0}, 0, 0}};

static void s_count_http(unsigned status) {
    pthread_mutex_lock(&g_m.mu);
    g_m.http[status >= 200 && status < 600 ? status / 100 - 2 : 5]++;
    pthread_mutex_unlock(&g_m.mu);
}

/* What one request contributes when it ends. */
typedef struct req_metrics {
    int64_t t0, t_first, t_last;
    int n_media;
} req_metrics;

static void s_metrics_token(req_metrics *rm) {
    int64_t now = s_now_ns();
    pthread_mutex_lock(&g_m.mu);
    if (!rm->t_first) {
        rm->t_first = now;
        histo_add(&g_m.ttft, (double)(now - rm->t0) / 1e9);
    } else {
        histo_add(&g_m.itl, (double)(now - rm->t_last) / 1e9);
    }
    pthread_mutex_unlock(&g_m.mu);
    rm->t_last = now;
}

static void s_metrics_end(req_metrics *rm, const vidi_client_event *done) {
    int64_t now = s_now_ns();
    pthread_mutex_lock(&g_m.mu);
    if (done && done->type == VIDI_CLIENT_EV_DONE) {
        int k = !strcmp(done->finish, "stop") ? 0 : !strcmp(done->finish, "length") ? 1 : 2;
        g_m.finished[k]++;
        g_m.prompt_tokens += done->prompt_tokens;
        g_m.generation_tokens += (uint64_t)done->n_tokens;
        g_m.mm_hits += done->cache_hits;
        histo_add(&g_m.queue, done->queue_s);
        if (!rm->t_first && done->n_tokens > 0) histo_add(&g_m.ttft, (double)(now - rm->t0) / 1e9);
    } else {
        g_m.failed++;
    }
    g_m.mm_queries += (uint64_t)rm->n_media;
    histo_add(&g_m.e2e, (double)(now - rm->t0) / 1e9);
    pthread_mutex_unlock(&g_m.mu);
}

static const char *const k_stage_fields[STAGE_FIELDS] = {"workers",    "queue",    "busy_pct",
                                                          "service_us", "draining", "token_us"};
static const char *const k_sw_fields[SW_FIELDS] = {"switches", "switches_aborted", "switch_ms_last", "switch_ms_max",
                                           "switches_unhelpful"};
static const char *const k_slo_fields[11] = {"ttft_target_ms", "tpot_target_ms", "window", "ttft_p90_ms",
                                             "tpot_p90_ms", "queue_p90_ms", "ttft_slack_ms", "tpot_slack_ms",
                                             "ttft_over_ms", "tpot_over_ms", "attained_pct"};
static const char *const k_stage_names[4] = {"media", "encode", "prefill", "decode"};

/* A load-monitor value of the router's STATS ("stage_<role>.<field>", "slo.<field>", the switch
 * counters) into g_m. */
static void s_monitor_value(const char *name, uint64_t v) {
    for (int k = 0; k < 4; k++) {
        char pre[32];
        int n = snprintf(pre, sizeof pre, "stage_%s.", k_stage_names[k]);
        if (strncmp(name, pre, (size_t)n)) continue;
        for (int f = 0; f < STAGE_FIELDS; f++)
            if (!strcmp(name + n, k_stage_fields[f])) g_m.stage[k][f] = v;
    }
    for (int f = 0; f < SW_FIELDS; f++)
        if (!strcmp(name, k_sw_fields[f])) g_m.sw[f] = v;
    if (!strncmp(name, "slo.", 4))
        for (int f = 0; f < 11; f++)
            if (!strcmp(name + 4, k_slo_fields[f])) g_m.slo[f] = v;
}

/* The router's gauges, once a second, on a connection of its own. */
static void *s_stats_thread(void *arg) {
    (void)arg;
    static const char *const roles[4] = {"roles.media", "roles.encode", "roles.prefill", "roles.decode"};
    static const char *const specs[4] = {"workers_spec_steps", "workers_spec_proposed", "workers_spec_accepted",
                                         "workers_spec_emitted"};
    vidi_client *c = NULL;
    while (!g_stop) {
        if (!c && vidi_client_connect(g_cfg.router, NULL, &c) != VIDI_CLIENT_OK) c = NULL;
        const char *names[128];
        uint64_t values[128];
        int n = 0;
        int ok = c && vidi_client_stats(c, 1000, names, values, 128, &n) == VIDI_CLIENT_OK;
        pthread_mutex_lock(&g_m.mu);
        g_m.router_up = ok;
        if (ok) {
            g_m.router_seen_ns = s_now_ns();
            for (int i = 0; i < n; i++) {
                if (!strcmp(names[i], "running")) g_m.running = values[i];
                if (!strcmp(names[i], "waiting")) g_m.waiting = values[i];
                for (int k = 0; k < 4; k++)
                    if (!strcmp(names[i], roles[k])) g_m.roles[k] = values[i];
                for (int k = 0; k < 4; k++)
                    if (!strcmp(names[i], specs[k])) g_m.spec[k] = values[i];
                int pos;
                char tail;
                if (sscanf(names[i], "workers_spec_proposed_at_%d%c", &pos, &tail) == 1 && pos >= 0 && pos < 16)
                    g_m.spec_at[0][pos] = values[i];
                if (sscanf(names[i], "workers_spec_accepted_at_%d%c", &pos, &tail) == 1 && pos >= 0 && pos < 16)
                    g_m.spec_at[1][pos] = values[i];
                s_monitor_value(names[i], values[i]);
            }
        }
        pthread_mutex_unlock(&g_m.mu);
        if (!ok && c) { /* a fresh connection next time */
            vidi_client_close(c);
            c = NULL;
        }
        for (int i = 0; i < 10 && !g_stop; i++) usleep(100000);
    }
    vidi_client_close(c);
    return NULL;
}

/* growing text buffer */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void s_histo_text(sbuf *b, const char *name, const char *help, const histo *h, const char *model) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{model_name=\"%s\",le=\"%g\"} %" PRIu64 "\n", name, model, h->le[i], cum);
    }
    cum += h->counts[h->n];
    sb_printf(b, "%s_bucket{model_name=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, model, cum);
    sb_printf(b, "%s_sum{model_name=\"%s\"} %.6f\n%s_count{model_name=\"%s\"} %" PRIu64 "\n", name, model, h->sum, name,
              model, h->count);
}

static char *s_metrics_text(void) {
    sbuf b = {0};
    const char *m = g_cfg.model_name;
    pthread_mutex_lock(&g_m.mu);
    s_histo_text(&b, "vidi_time_to_first_token_seconds", "Time from the HTTP request to the first token.", &g_m.ttft, m);
    s_histo_text(&b, "vidi_inter_token_latency_seconds", "Time between two streamed tokens of a request.", &g_m.itl, m);
    s_histo_text(&b, "vidi_request_queue_time_seconds", "Time a request waited in the router before its first dispatch.",
                 &g_m.queue, m);
    s_histo_text(&b, "vidi_e2e_request_latency_seconds", "Time from the HTTP request to its last byte.", &g_m.e2e, m);
    static const char *const reasons[3] = {"stop", "length", "abort"};
    sb_printf(&b, "# HELP vidi_request_success_total Requests that finished.\n# TYPE vidi_request_success_total counter\n");
    for (int k = 0; k < 3; k++)
        sb_printf(&b, "vidi_request_success_total{model_name=\"%s\",finished_reason=\"%s\"} %" PRIu64 "\n", m, reasons[k],
                  g_m.finished[k]);
#define COUNTER(name, help, v)                                                                                       \
    sb_printf(&b, "# HELP " name " " help "\n# TYPE " name " counter\n" name "{model_name=\"%s\"} %" PRIu64 "\n", m, \
              (uint64_t)(v))
#define GAUGE(name, help, v)                                                                                         \
    sb_printf(&b, "# HELP " name " " help "\n# TYPE " name " gauge\n" name "{model_name=\"%s\"} %" PRIu64 "\n", m,   \
              (uint64_t)(v))
    COUNTER("vidi_request_failure_total", "Requests that ended with an error.", g_m.failed);
    COUNTER("vidi_prompt_tokens_total", "Prompt tokens, vision tokens included.", g_m.prompt_tokens);
    COUNTER("vidi_generation_tokens_total", "Generated tokens.", g_m.generation_tokens);
    COUNTER("vidi_mm_cache_queries_total", "Media items looked up in the MM-token cache.", g_m.mm_queries);
    COUNTER("vidi_mm_cache_hits_total", "Media items served from the MM-token cache.", g_m.mm_hits);
    GAUGE("vidi_num_requests_running", "Requests dispatched to workers (router).", g_m.running);
    GAUGE("vidi_num_requests_waiting", "Requests admitted and not yet dispatched (router).", g_m.waiting);
    GAUGE("vidi_router_up", "1 when the router answered STATS within the last second.", g_m.router_up);
    COUNTER("vidi_spec_decode_num_steps_total", "Target forwards over speculative drafts (decode workers).", g_m.spec[0]);
    COUNTER("vidi_spec_decode_num_draft_tokens_total", "Draft tokens proposed.", g_m.spec[1]);
    COUNTER("vidi_spec_decode_num_accepted_tokens_total", "Draft tokens accepted.", g_m.spec[2]);
    COUNTER("vidi_spec_decode_num_emitted_tokens_total",
            "Tokens emitted by speculative steps (accepted drafts and one target token each).", g_m.spec[3]);
#undef COUNTER
#undef GAUGE
    /* acceptance by draft position (0: the first draft of a step), positions drafted so far */
    static const char *const at_name[2] = {"vidi_spec_decode_num_draft_tokens_per_pos_total",
                                           "vidi_spec_decode_num_accepted_tokens_per_pos_total"};
    static const char *const at_help[2] = {"Draft tokens proposed at each position of a step.",
                                           "Draft tokens accepted at each position of a step."};
    for (int k = 0; k < 2; k++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s counter\n", at_name[k], at_help[k], at_name[k]);
        for (int p = 0; p < 16; p++)
            if (g_m.spec_at[0][p])
                sb_printf(&b, "%s{model_name=\"%s\",position=\"%d\"} %" PRIu64 "\n", at_name[k], m, p,
                          g_m.spec_at[k][p]);
    }
    /* the router's load monitor (PROTOCOL.md §5.2: stage_<role>, slo) */
    static const char *const st_name[STAGE_FIELDS] = {"vidi_stage_workers", "vidi_stage_queue", "vidi_stage_busy_ratio",
                                           "vidi_stage_service_seconds", "vidi_stage_draining",
                                           "vidi_stage_token_seconds"};
    static const char *const st_help[STAGE_FIELDS] = {
        "Live workers holding the stage's role and taking work (not draining for a role switch).",
        "Requests waiting for the stage at the router plus the work its workers report queued.",
        "The stage's share of its workers' time over the last second.",
        "Recent time per unit of the stage's work (media item, encoded item, prefilled prompt, decoded token).",
        "Workers holding the stage's role that drain for a role switch.",
        "Encode and prefill: recent time per token of the work (vision token made, prompt token taken); 0 else."};
    static const double st_scale[STAGE_FIELDS] = {1.0, 1.0, 0.01, 1e-6, 1.0, 1e-6};
    for (int f = 0; f < STAGE_FIELDS; f++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s gauge\n", st_name[f], st_help[f], st_name[f]);
        for (int k = 0; k < 4; k++)
            sb_printf(&b, "%s{model_name=\"%s\",stage=\"%s\"} %.6g\n", st_name[f], m, k_stage_names[k],
                      (double)g_m.stage[k][f] * st_scale[f]);
    }
    /* role switching (PROTOCOL.md §5.6) */
    sb_printf(&b, "# HELP vidi_role_switches_total Workers switched to other roles (by load or asked).\n"
                  "# TYPE vidi_role_switches_total counter\nvidi_role_switches_total{model_name=\"%s\"} %" PRIu64 "\n"
                  "# HELP vidi_role_switches_aborted_total Switches abandoned or refused.\n"
                  "# TYPE vidi_role_switches_aborted_total counter\n"
                  "vidi_role_switches_aborted_total{model_name=\"%s\"} %" PRIu64 "\n"
                  "# HELP vidi_role_switch_seconds A switch's time from DRAIN to READY (the drain included).\n"
                  "# TYPE vidi_role_switch_seconds gauge\n"
                  "vidi_role_switch_seconds{model_name=\"%s\",which=\"last\"} %.6g\n"
                  "vidi_role_switch_seconds{model_name=\"%s\",which=\"max\"} %.6g\n",
              m, g_m.sw[0], m, g_m.sw[1], m, (double)g_m.sw[2] / 1e3, m, (double)g_m.sw[3] / 1e3);
    sb_printf(&b, "# HELP vidi_role_switches_unhelpful_total Moves to decode for TPOT that did not lower it.\n"
                  "# TYPE vidi_role_switches_unhelpful_total counter\n"
                  "vidi_role_switches_unhelpful_total{model_name=\"%s\"} %" PRIu64 "\n",
              m, g_m.sw[4]);
    sb_printf(&b, "# HELP vidi_slo_target_seconds The router's latency targets (vidi router --ttft-ms, --tpot-ms).\n"
                  "# TYPE vidi_slo_target_seconds gauge\n"
                  "vidi_slo_target_seconds{model_name=\"%s\",metric=\"ttft\"} %.6g\n"
                  "vidi_slo_target_seconds{model_name=\"%s\",metric=\"tpot\"} %.6g\n",
              m, (double)g_m.slo[0] / 1e3, m, (double)g_m.slo[1] / 1e3);
    sb_printf(&b, "# HELP vidi_slo_p90_seconds 90th percentile over the router's last finished requests.\n"
                  "# TYPE vidi_slo_p90_seconds gauge\n");
    static const char *const p90[3] = {"ttft", "tpot", "queue"};
    for (int k = 0; k < 3; k++)
        sb_printf(&b, "vidi_slo_p90_seconds{model_name=\"%s\",metric=\"%s\"} %.6g\n", m, p90[k],
                  (double)g_m.slo[3 + k] / 1e3);
    sb_printf(&b, "# HELP vidi_slo_slack_seconds Target minus the 90th percentile (negative: over the target).\n"
                  "# TYPE vidi_slo_slack_seconds gauge\n"
                  "vidi_slo_slack_seconds{model_name=\"%s\",metric=\"ttft\"} %.6g\n"
                  "vidi_slo_slack_seconds{model_name=\"%s\",metric=\"tpot\"} %.6g\n",
              m, ((double)g_m.slo[6] - (double)g_m.slo[8]) / 1e3, m, ((double)g_m.slo[7] - (double)g_m.slo[9]) / 1e3);
    sb_printf(&b, "# HELP vidi_slo_attained_ratio Share of the window's requests within both targets.\n"
                  "# TYPE vidi_slo_attained_ratio gauge\nvidi_slo_attained_ratio{model_name=\"%s\"} %.6g\n"
                  "# HELP vidi_slo_window_requests Finished requests the slo gauges are over.\n"
                  "# TYPE vidi_slo_window_requests gauge\nvidi_slo_window_requests{model_name=\"%s\"} %" PRIu64 "\n",
              m, (double)g_m.slo[10] / 100.0, m, g_m.slo[2]);
    static const char *const roles[4] = {"media", "encode", "prefill", "decode"};
    sb_printf(&b, "# HELP vidi_workers Live workers per role (router).\n# TYPE vidi_workers gauge\n");
    for (int k = 0; k < 4; k++)
        sb_printf(&b, "vidi_workers{model_name=\"%s\",role=\"%s\"} %" PRIu64 "\n", m, roles[k], g_m.roles[k]);
    static const char *const classes[5] = {"2xx", "3xx", "4xx", "5xx", "other"};
    sb_printf(&b, "# HELP vidi_http_responses_total HTTP responses by status class.\n"
                  "# TYPE vidi_http_responses_total counter\n");
    for (int k = 0; k < 5; k++)
        sb_printf(&b, "vidi_http_responses_total{code=\"%s\"} %" PRIu64 "\n", classes[k], g_m.http[k]);
    pthread_mutex_unlock(&g_m.mu);
    return b.p;
}

/* ---------------------------------------------------------------- responses */

static enum MHD_Result s_respond(struct MHD_Connection *conn, unsigned status, const char *type, char *body,
                                 size_t n) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    s_count_http(status);
    return ok;
}

static enum MHD_Result s_json(struct MHD_Connection *conn, unsigned status, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) return MHD_NO;
    return s_respond(conn, status, "application/json", s, strlen(s));
}

static const char *s_error_type(unsigned status) {
    switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 413: return "RequestTooLargeError";
    case 503: return "ServiceUnavailableError";
    case 504: return "TimeoutError";
    default: return "InternalServerError";
    }
}

static json_t *s_error_obj(unsigned status, const char *param, const char *msg) {
    return json_pack("{s:{s:s, s:s, s:o, s:i}}", "error", "message", msg, "type", s_error_type(status), "param",
                     param ? json_string(param) : json_null(), "code", (int)status);
}

static enum MHD_Result s_error(struct MHD_Connection *conn, unsigned status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result s_error(struct MHD_Connection *conn, unsigned status, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return s_json(conn, status, s_error_obj(status, param, msg));
}

/* The HTTP status for a router ERROR code (ipc/PROTOCOL.md §7). */
static unsigned s_status_of(const char *code) {
    static const char *const bad[] = {"bad_field", "bad_tensor", "too_large", "bad_media", "bad_request",
                                      "bad_header", "bad_frame"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (code && !strcmp(code, bad[i])) return 400;
    if (code && (!strcmp(code, "overloaded") || !strcmp(code, "no_worker"))) return 503;
    if (code && !strcmp(code, "timeout")) return 504;
    return 500;
}

/* ---------------------------------------------------------------- media URLs */

/* ---- remote media (only with --allow-remote-media): libcurl, http and
 * https only, the size limit enforced while downloading, 5 s for an image
 * and 30 s for a video (vLLM's defaults) ---- */

typedef struct fetch_buf {
    uint8_t *p;
    size_t n, cap, limit;
    int too_large;
} fetch_buf;

static size_t s_fetch_write(char *data, size_t size, size_t nmemb, void *user) {
    fetch_buf *b = user;
    size_t n = size * nmemb;
    if (b->n + n > b->limit) {
        b->too_large = 1;
        return 0; /* aborts the transfer */
    }
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return n;
}

static unsigned s_fetch(const char *url, int video, uint8_t **data, size_t *n, char *msg, size_t cap) {
    CURL *h = curl_easy_init();
    if (!h) return snprintf(msg, cap, "cannot start a download"), 500;
    fetch_buf b = {NULL, 0, 0, g_cfg.max_media, 0};
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, video ? 30000L : 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_fetch_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    if (b.too_large) {
        free(b.p);
        return snprintf(msg, cap, "the media at %.200s is larger than %zu bytes", url, g_cfg.max_media), 413;
    }
    if (rc != CURLE_OK) {
        free(b.p);
        return snprintf(msg, cap, "cannot fetch %.200s: %s", url, cerr[0] ? cerr : curl_easy_strerror(rc)), 400;
    }
    *data = b.p;
    *n = b.n;
    return 0;
}

/* The bytes a media URL names: data: (base64), file:// under the allowed
 * root, or http(s) with --allow-remote-media. 0, or an HTTP status with the
 * message in msg. */
static unsigned s_media_from_url(const char *url, int video, uint8_t **data, size_t *n, char *msg, size_t cap) {
    *data = NULL;
    *n = 0;
    if (!strncmp(url, "data:", 5)) {
        const char *comma = strchr(url, ',');
        if (!comma) return snprintf(msg, cap, "a data: URL needs a comma before its data"), 400;
        size_t meta = (size_t)(comma - url - 5);
        if (meta < 7 || strncmp(comma - 7, ";base64", 7) != 0)
            return snprintf(msg, cap, "only base64 data: URLs are accepted (data:MIME;base64,...)"), 400;
        size_t mlen = meta - 7;
        const char *mime = url + 5;
        int ok_mime = mlen == 0 || (mlen >= 6 && !strncmp(mime, "image/", 6)) ||
                      (mlen >= 6 && !strncmp(mime, "video/", 6)) ||
                      (mlen == 24 && !strncmp(mime, "application/octet-stream", 24));
        if (!ok_mime) return snprintf(msg, cap, "unsupported media type '%.*s'", (int)(mlen < 64 ? mlen : 64), mime), 400;
        size_t b64n = strlen(comma + 1);
        if (b64n / 4 * 3 > g_cfg.max_media + 3)
            return snprintf(msg, cap, "a media item of about %zu bytes; the limit is %zu", b64n / 4 * 3, g_cfg.max_media),
                   413;
        if (vidi_base64_decode(comma + 1, b64n, data, n) != 0) return snprintf(msg, cap, "the data: URL is not valid base64"), 400;
    } else if (!strncmp(url, "file://", 7)) {
        if (!g_cfg.media_root)
            return snprintf(msg, cap, "file:// URLs are refused: start vidi-serve with --allowed-media-root DIR"), 400;
        const char *roots[1] = {g_cfg.media_root};
        vidi_err err = {0};
        if (vidi_media_read_file(url + 7, roots, 1, (int64_t)g_cfg.max_media, data, n, &err) != VIDI_OK)
            return snprintf(msg, cap, "%s", err.msg), 400;
    } else if (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8)) {
        if (!g_cfg.allow_remote)
            return snprintf(msg, cap, "fetching media from the network is off (start vidi-serve with "
                                      "--allow-remote-media); send it as a data: URL"),
                   400;
        unsigned st = s_fetch(url, video, data, n, msg, cap);
        if (st) return st;
    } else {
        return snprintf(msg, cap, "a media URL must be data: or file://"), 400;
    }
    if (*n == 0) {
        free(*data);
        *data = NULL;
        return snprintf(msg, cap, "the media item is empty"), 400;
    }
    if (*n > g_cfg.max_media) {
        free(*data);
        *data = NULL;
        return snprintf(msg, cap, "a media item of %zu bytes; the limit is %zu", *n, g_cfg.max_media), 413;
    }
    const char *kind = vidi_media_sniff(*data, *n);
    if (!kind || (video && strcmp(kind, "video") != 0 && strcmp(kind, "image") != 0) ||
        (!video && strcmp(kind, "image") != 0)) {
        free(*data);
        *data = NULL;
        return snprintf(msg, cap, "unsupported media: the %s is not a file vidi can decode%s", video ? "video" : "image",
                        kind && !video ? " as an image" : ""),
               400;
    }
    return 0;
}

/* ---------------------------------------------------------------- chat completions */

typedef struct chat_req {
    vidi_client_message msgs[MAX_MESSAGES];
    vidi_client_part parts[MAX_PARTS];
    char *strings[MAX_PARTS]; /* text we own */
    int n_strings;
    uint8_t *media[MAX_MEDIA];
    int n_msgs, n_parts, n_media;
    vidi_client_request_params p;
    const char *stop[MAX_STOP];
    int include_usage;
    char model[256];
} chat_req;

static void chat_free(chat_req *q) {
    for (int i = 0; i < q->n_media; i++) free(q->media[i]);
    for (int i = 0; i < q->n_strings; i++) free(q->strings[i]);
}

/* Number field (int or real) in [lo, hi]: 0 when absent, 1 when set, -1 bad. */
static int s_num(json_t *o, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return -1;
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return -1;
    *out = d;
    return 1;
}

/* Media options of a part's url object or of mm_processor_kwargs. */
static int s_media_opts(json_t *o, vidi_client_part *p, char *msg, size_t cap) {
    if (!o || !json_is_object(o)) return 0;
    double fps = 0, maxp = 0, minp = 0, nf = 0;
    const char *nk = json_object_get(o, "nframes") ? "nframes" : "max_frames";
    if (s_num(o, "fps", 0.01, 60, &fps) < 0) return snprintf(msg, cap, "fps must be a number in (0, 60]"), -1;
    if (s_num(o, "max_pixels", 784, 1e9, &maxp) < 0) return snprintf(msg, cap, "max_pixels must be in [784, 1e9]"), -1;
    if (s_num(o, "min_pixels", 784, 1e9, &minp) < 0) return snprintf(msg, cap, "min_pixels must be in [784, 1e9]"), -1;
    if (s_num(o, nk, 2, 768, &nf) < 0) return snprintf(msg, cap, "%s must be in [2, 768]", nk), -1;
    /* s_num leaves a value untouched when its field is absent: 0 means "not given" */
    if (fps > 0) p->fps = fps;
    if (maxp > 0) p->max_pixels = (uint64_t)maxp;
    if (minp > 0) p->min_pixels = (uint64_t)minp;
    if (nf > 0) p->nframes = (uint64_t)nf;
    return 0;
}

/* Parse and check the body into q. 0, or an HTTP status with msg and *param. */
static unsigned chat_parse(json_t *body, chat_req *q, int *stream, char *msg, size_t cap, const char **param) {
    *param = NULL;
    memset(q, 0, sizeof *q);
    q->p = vidi_client_request_params_default();
    if (!json_is_object(body)) return snprintf(msg, cap, "the body must be a JSON object"), 400;
    json_t *model = json_object_get(body, "model");
    if (model && !json_is_string(model)) return *param = "model", snprintf(msg, cap, "model must be a string"), 400;
    snprintf(q->model, sizeof q->model, "%s", model ? json_string_value(model) : g_cfg.model_name);
    if (strcmp(q->model, g_cfg.model_name) != 0)
        return *param = "model", snprintf(msg, cap, "The model `%s` does not exist.", q->model), 404;
    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return *param = "messages", snprintf(msg, cap, "messages must be a non-empty array"), 400;
    if (json_array_size(msgs) > MAX_MESSAGES)
        return *param = "messages", snprintf(msg, cap, "at most %d messages", MAX_MESSAGES), 400;
    json_t *kw = json_object_get(body, "mm_processor_kwargs");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        *param = "messages";
        if (!json_is_object(m)) return snprintf(msg, cap, "messages[%zu] must be an object", i), 400;
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")))
            return snprintf(msg, cap, "messages[%zu].role must be system, user or assistant", i), 400;
        json_t *content = json_object_get(m, "content");
        vidi_client_message *vm = &q->msgs[q->n_msgs++];
        vm->role = role;
        vm->parts = &q->parts[q->n_parts];
        if (json_is_string(content)) {
            if (q->n_parts == MAX_PARTS) return snprintf(msg, cap, "at most %d content parts", MAX_PARTS), 400;
            q->parts[q->n_parts++] = vidi_client_part_text(json_string_value(content));
            vm->n_parts = 1;
            continue;
        }
        if (!json_is_array(content) || json_array_size(content) == 0)
            return snprintf(msg, cap, "messages[%zu].content must be a string or a non-empty array of parts", i), 400;
        size_t k;
        json_t *part;
        json_array_foreach(content, k, part) {
            if (q->n_parts == MAX_PARTS) return snprintf(msg, cap, "at most %d content parts", MAX_PARTS), 400;
            const char *type = json_string_value(json_object_get(part, "type"));
            if (!type) return snprintf(msg, cap, "messages[%zu].content[%zu] has no type", i, k), 400;
            if (!strcmp(type, "text")) {
                const char *t = json_string_value(json_object_get(part, "text"));
                if (!t) return snprintf(msg, cap, "messages[%zu].content[%zu].text must be a string", i, k), 400;
                q->parts[q->n_parts++] = vidi_client_part_text(t);
                vm->n_parts++;
                continue;
            }
            int video = !strcmp(type, "video_url");
            if (!video && strcmp(type, "image_url") != 0)
                return snprintf(msg, cap, "messages[%zu].content[%zu]: unsupported part type '%s' (text, image_url, "
                                          "video_url)", i, k, type),
                       400;
            if (strcmp(role, "user") != 0)
                return snprintf(msg, cap, "messages[%zu]: images and videos belong in user messages", i), 400;
            if (q->n_media == g_cfg.max_items)
                return snprintf(msg, cap, "too many media items: at most %d per request", g_cfg.max_items), 400;
            json_t *u = json_object_get(part, type);
            const char *url = json_is_string(u) ? json_string_value(u) : json_string_value(json_object_get(u, "url"));
            if (!url) return snprintf(msg, cap, "messages[%zu].content[%zu].%s.url must be a string", i, k, type), 400;
            vidi_client_part p = video ? vidi_client_part_video(NULL, 0) : vidi_client_part_image(NULL, 0);
            if (s_media_opts(kw, &p, msg, cap) || s_media_opts(u, &p, msg, cap)) return 400;
            uint8_t *data;
            size_t n;
            char why[512];
            unsigned st = s_media_from_url(url, video, &data, &n, why, sizeof why);
            if (st) return snprintf(msg, cap, "messages[%zu].content[%zu]: %s", i, k, why), st;
            q->media[q->n_media++] = data;
            p.data = data;
            p.size = n;
            q->parts[q->n_parts++] = p;
            vm->n_parts++;
        }
    }
    /* sampling */
    double d;
    *param = NULL;
    json_t *mt = json_object_get(body, "max_completion_tokens");
    const char *mt_key = mt && !json_is_null(mt) ? "max_completion_tokens" : "max_tokens";
    int r = s_num(body, mt_key, 1, 32768, &d);
    if (r < 0 || (r > 0 && d != floor(d)))
        return *param = mt_key, snprintf(msg, cap, "%s must be an integer in [1, 32768]", mt_key), 400;
    if (r > 0) q->p.max_tokens = (int)d;
    if ((r = s_num(body, "temperature", 0, 100, &d)) < 0)
        return *param = "temperature", snprintf(msg, cap, "temperature must be in [0, 100]"), 400;
    if (r > 0) q->p.temperature = d;
    if ((r = s_num(body, "top_p", 1e-9, 1, &d)) < 0) return *param = "top_p", snprintf(msg, cap, "top_p must be in (0, 1]"), 400;
    if (r > 0) q->p.top_p = d;
    if ((r = s_num(body, "top_k", -1, 1 << 20, &d)) < 0 || (r > 0 && d != floor(d)))
        return *param = "top_k", snprintf(msg, cap, "top_k must be an integer >= -1"), 400;
    if (r > 0) q->p.top_k = d < 0 ? 0 : (int)d;
    if ((r = s_num(body, "seed", -9.2e18, 9.2e18, &d)) < 0 || (r > 0 && d != floor(d)))
        return *param = "seed", snprintf(msg, cap, "seed must be an integer"), 400;
    if (r > 0) q->p.seed = d < 0 ? -1 : (int64_t)d;
    if ((r = s_num(body, "n", 1, 1, &d)) < 0) return *param = "n", snprintf(msg, cap, "only n = 1 is supported"), 400;
    json_t *stop = json_object_get(body, "stop");
    if (json_is_string(stop)) {
        q->stop[0] = json_string_value(stop);
        q->p.n_stop = 1;
    } else if (json_is_array(stop)) {
        if (json_array_size(stop) > MAX_STOP) return *param = "stop", snprintf(msg, cap, "at most %d stop strings", MAX_STOP), 400;
        size_t k;
        json_t *s;
        json_array_foreach(stop, k, s) {
            if (!json_is_string(s) || !*json_string_value(s))
                return *param = "stop", snprintf(msg, cap, "stop strings must be non-empty strings"), 400;
            q->stop[q->p.n_stop++] = json_string_value(s);
        }
    } else if (stop && !json_is_null(stop)) {
        return *param = "stop", snprintf(msg, cap, "stop must be a string or an array of strings"), 400;
    }
    if (q->p.n_stop && !*q->stop[0]) return *param = "stop", snprintf(msg, cap, "stop strings must not be empty"), 400;
    q->p.stop = q->stop;
    json_t *st = json_object_get(body, "stream");
    if (st && !json_is_boolean(st) && !json_is_null(st)) return *param = "stream", snprintf(msg, cap, "stream must be a boolean"), 400;
    *stream = json_is_true(st);
    q->p.stream = 1;
    json_t *so = json_object_get(body, "stream_options");
    q->include_usage = so && json_is_true(json_object_get(so, "include_usage"));
    return 0;
}

static void s_new_id(char out[40]) {
    static unsigned long long counter;
    unsigned long long x = (unsigned long long)s_now_ns() ^ ((unsigned long long)getpid() << 32) ^
                           (__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    snprintf(out, 40, "chatcmpl-%016llx", x);
}

static const char *s_finish(const char *f) { return !strcmp(f, "length") ? "length" : "stop"; }

static json_t *s_usage(const vidi_client_event *done) {
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)done->prompt_tokens, "completion_tokens",
                     (json_int_t)done->n_tokens, "total_tokens", (json_int_t)(done->prompt_tokens + (uint64_t)done->n_tokens));
}

/* ---- streaming (SSE) ---- */

typedef struct sse {
    vidi_client *c;
    uint64_t id;
    char cid[40];
    long long created;
    char model[256];
    int include_usage, finished, sent_role;
    sbuf out;
    size_t off;
    req_metrics rm;
    int64_t last_event_ns;
} sse;

static void sse_data(sse *s, json_t *j) {
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!t) return;
    sb_put(&s->out, "data: ", 6);
    sb_put(&s->out, t, strlen(t));
    sb_put(&s->out, "\n\n", 2);
    free(t);
}

static json_t *sse_chunk(sse *s, json_t *delta, const char *finish) {
    json_t *choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs", "finish_reason",
                               finish ? json_string(finish) : json_null());
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", s->cid, "object", "chat.completion.chunk", "created",
                          (json_int_t)s->created, "model", s->model, "choices", choice);
    if (s->include_usage) json_object_set_new(j, "usage", json_null());
    return j;
}

/* Next events into s->out until there is something to send or the end. */
static void sse_fill(sse *s) {
    while (s->off >= s->out.n && !s->finished) {
        s->out.n = s->off = 0;
        vidi_client_event ev;
        if (vidi_client_poll(s->c, 1000, &ev) != VIDI_CLIENT_OK) {
            sse_data(s, s_error_obj(500, NULL, vidi_client_last_error(s->c)));
            sb_put(&s->out, "data: [DONE]\n\n", 14);
            s_metrics_end(&s->rm, NULL);
            s->finished = 1;
            return;
        }
        int64_t now = s_now_ns();
        if (ev.type == VIDI_CLIENT_EV_NONE) {
            if (g_stop || (now - s->last_event_ns) / 1000000 > g_cfg.request_timeout_ms) {
                vidi_client_cancel(s->c, s->id);
                sse_data(s, s_error_obj(504, NULL, "the request timed out"));
                sb_put(&s->out, "data: [DONE]\n\n", 14);
                s_metrics_end(&s->rm, NULL);
                s->finished = 1;
            } else if ((now - s->last_event_ns) / 1000000000 >= 15) {
                sb_put(&s->out, ": keep-alive\n\n", 14); /* a comment: lets a gone client be noticed */
                s->last_event_ns = now;
            }
            continue;
        }
        if (ev.id != s->id) continue;
        s->last_event_ns = now;
        if (ev.type == VIDI_CLIENT_EV_TOKEN) {
            s_metrics_token(&s->rm);
            if (!ev.text_len) continue;
            sse_data(s, sse_chunk(s, json_pack("{s:s%}", "content", ev.text, ev.text_len), NULL));
        } else if (ev.type == VIDI_CLIENT_EV_DONE) {
            sse_data(s, sse_chunk(s, json_object(), s_finish(ev.finish)));
            if (s->include_usage) {
                json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", s->cid, "object", "chat.completion.chunk",
                                      "created", (json_int_t)s->created, "model", s->model, "choices", "usage",
                                      s_usage(&ev));
                sse_data(s, j);
            }
            sb_put(&s->out, "data: [DONE]\n\n", 14);
            s_metrics_end(&s->rm, &ev);
            s->finished = 1;
        } else {
            unsigned st = s_status_of(ev.error_code);
            char m[1200];
            snprintf(m, sizeof m, "%s (%s)", ev.text, ev.error_code);
            sse_data(s, s_error_obj(st, NULL, m));
            sb_put(&s->out, "data: [DONE]\n\n", 14);
            s_metrics_end(&s->rm, NULL);
            s->finished = 1;
        }
    }
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    sse *s = cls;
    sse_fill(s);
    if (s->off >= s->out.n) return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = s->out.n - s->off < max ? s->out.n - s->off : max;
    memcpy(buf, s->out.p + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls) {
    sse *s = cls;
    if (!s->finished) { /* the HTTP client went away */
        vidi_client_cancel(s->c, s->id);
        s_metrics_end(&s->rm, NULL);
    }
    vidi_client_close(s->c);
    free(s->out.p);
    free(s);
}

static enum MHD_Result s_chat(struct MHD_Connection *conn, const char *body, size_t n, int64_t t0) {
    json_error_t jerr;
    json_t *j = json_loadb(body, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) return s_error(conn, 400, NULL, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    chat_req *q = calloc(1, sizeof *q);
    if (!q) {
        json_decref(j);
        return s_error(conn, 500, NULL, "out of memory");
    }
    char msg[1200];
    const char *param = NULL;
    int stream = 0;
    unsigned st = chat_parse(j, q, &stream, msg, sizeof msg, &param);
    if (st) {
        chat_free(q);
        free(q);
        enum MHD_Result r = s_error(conn, st, param, "%s", msg);
        json_decref(j);
        return r;
    }
    vidi_client *c = NULL;
    uint64_t id = 0;
    vidi_client_params cp = vidi_client_params_default();
    cp.request_timeout_ms = g_cfg.request_timeout_ms;
    int rc = vidi_client_connect(g_cfg.router, &cp, &c);
    if (rc == VIDI_CLIENT_OK) rc = vidi_client_submit(c, q->msgs, q->n_msgs, &q->p, &id);
    int n_media = q->n_media, include_usage = q->include_usage;
    char model[256];
    snprintf(model, sizeof model, "%s", q->model);
    chat_free(q); /* the media went out with the REQUEST */
    free(q);
    json_decref(j);
    if (rc != VIDI_CLIENT_OK) {
        enum MHD_Result r = s_error(conn, rc == VIDI_CLIENT_E_INVALID ? 400 : 503, NULL, "%s",
                                    vidi_client_last_error(c));
        vidi_client_close(c);
        return r;
    }
    char cid[40];
    s_new_id(cid);
    long long created = (long long)time(NULL);
    req_metrics rm = {t0, 0, 0, n_media};
    if (stream) {
        sse *s = calloc(1, sizeof *s);
        if (!s) {
            vidi_client_close(c);
            return s_error(conn, 500, NULL, "out of memory");
        }
        s->c = c, s->id = id, s->created = created, s->rm = rm, s->include_usage = include_usage;
        snprintf(s->cid, sizeof s->cid, "%s", cid);
        snprintf(s->model, sizeof s->model, "%s", model);
        s->last_event_ns = s_now_ns();
        /* the first chunk: the role */
        sse_data(s, sse_chunk(s, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL));
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, s, sse_free);
        if (!r) {
            sse_free(s);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ok = MHD_queue_response(conn, 200, r);
        MHD_destroy_response(r);
        s_count_http(200);
        return ok;
    }
    /* not streamed: wait for DONE */
    vidi_client_event ev;
    enum MHD_Result result = MHD_NO;
    for (;;) {
        rc = vidi_client_poll(c, 1000, &ev);
        int64_t now = s_now_ns();
        if (rc != VIDI_CLIENT_OK) {
            s_metrics_end(&rm, NULL);
            result = s_error(conn, 500, NULL, "%s", vidi_client_last_error(c));
            break;
        }
        if (ev.type == VIDI_CLIENT_EV_NONE) {
            if ((now - (rm.t_last ? rm.t_last : t0)) / 1000000 > g_cfg.request_timeout_ms || g_stop) {
                vidi_client_cancel(c, id);
                s_metrics_end(&rm, NULL);
                result = s_error(conn, 504, NULL, "the request timed out");
                break;
            }
            continue;
        }
        if (ev.id != id) continue;
        if (ev.type == VIDI_CLIENT_EV_TOKEN) {
            s_metrics_token(&rm);
            continue;
        }
        if (ev.type == VIDI_CLIENT_EV_ERROR) {
            s_metrics_end(&rm, NULL);
            result = s_error(conn, s_status_of(ev.error_code), NULL, "%s (%s)", ev.text, ev.error_code);
            break;
        }
        s_metrics_end(&rm, &ev);
        json_t *resp = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s%}, s:n, s:s}], s:o}", "id", cid, "object",
                                 "chat.completion", "created", (json_int_t)created, "model", model, "choices", "index", 0,
                                 "message", "role", "assistant", "content", ev.text, ev.text_len, "logprobs",
                                 "finish_reason", s_finish(ev.finish), "usage", s_usage(&ev));
        result = resp ? s_json(conn, 200, resp) : s_error(conn, 500, NULL, "the answer is not valid UTF-8");
        break;
    }
    vidi_client_close(c);
    return result;
}

/* ---------------------------------------------------------------- files and the page */

/* A name of [A-Za-z0-9._-] not starting with a dot. */
static int s_plain_name(const char *s) {
    if (!*s || *s == '.' || strlen(s) > 200) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static const char *s_mime(const char *name) {
    const char *dot = strrchr(name, '.');
    static const char *const map[][2] = {{".html", "text/html; charset=utf-8"}, {".js", "text/javascript"},
                                         {".css", "text/css"}, {".png", "image/png"}, {".jpg", "image/jpeg"},
                                         {".jpeg", "image/jpeg"}, {".mp4", "video/mp4"}, {".webm", "video/webm"},
                                         {".svg", "image/svg+xml"}, {".json", "application/json"}};
    for (size_t i = 0; dot && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(dot, map[i][0])) return map[i][1];
    return "application/octet-stream";
}

static enum MHD_Result s_file(struct MHD_Connection *conn, const char *dir, const char *name) {
    if (!dir || !s_plain_name(name)) return s_error(conn, 404, NULL, "no such file");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *data = NULL;
    size_t n = 0;
    vidi_err err = {0};
    if (vidi_media_read_file(path, NULL, 0, 256 << 20, &data, &n, &err) != VIDI_OK)
        return s_error(conn, 404, NULL, "no such file: %s", name);
    return s_respond(conn, 200, s_mime(name), (char *)data, n);
}

/* POST /v1/vidi/frames: {"video_url": {"url"} | "sample": NAME, "fps"?, "nframes"?} */
static enum MHD_Result s_frames(struct MHD_Connection *conn, const char *body, size_t n) {
    json_error_t jerr;
    json_t *j = json_loadb(body, n, 0, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return s_error(conn, 400, NULL, "invalid JSON: %s", j ? "not an object" : jerr.text);
    }
    uint8_t *data = NULL;
    size_t size = 0;
    char msg[1024] = "";
    unsigned st = 0;
    const char *sample = json_string_value(json_object_get(j, "sample"));
    json_t *u = json_object_get(j, "video_url");
    const char *url = json_is_string(u) ? json_string_value(u) : json_string_value(json_object_get(u, "url"));
    if (sample) {
        char path[4096];
        vidi_err err = {0};
        snprintf(path, sizeof path, "%s/%s", g_cfg.samples_dir ? g_cfg.samples_dir : "", sample);
        if (!g_cfg.samples_dir || !s_plain_name(sample) ||
            vidi_media_read_file(path, NULL, 0, (int64_t)g_cfg.max_media, &data, &size, &err) != VIDI_OK)
            st = 404, snprintf(msg, sizeof msg, "no sample named '%s'", sample);
    } else if (url) {
        st = s_media_from_url(url, 1, &data, &size, msg, sizeof msg);
    } else {
        st = 400, snprintf(msg, sizeof msg, "give video_url.url or sample");
    }
    double fps = 0, d;
    int nframes = 0;
    if (!st && s_num(j, "fps", 0.01, 60, &d) > 0) fps = d;
    if (!st && s_num(j, "nframes", 2, 768, &d) > 0) nframes = (int)d;
    json_decref(j);
    if (st) return s_error(conn, st, NULL, "%s", msg);
    char *out = NULL;
    int rc = vidi_serve_frames_json(data, size, fps, nframes, &out, msg, sizeof msg);
    free(data);
    if (rc != 0) return s_error(conn, 400, NULL, "%s", msg);
    return s_respond(conn, 200, "application/json", out, strlen(out));
}

/* ---------------------------------------------------------------- the handler */

typedef struct conn_state {
    sbuf body;
    int too_large;
    int64_t t0;
} conn_state;

static int s_authorized(struct MHD_Connection *conn) {
    if (!g_cfg.api_key) return 1;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    return h && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, g_cfg.api_key);
}

static enum MHD_Result s_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    (void)cls;
    (void)version;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        cs->t0 = s_now_ns();
        *con_cls = cs;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > g_cfg.max_body) cs->too_large = 1;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!cs->too_large && cs->body.n + *upload_data_size > g_cfg.max_body) cs->too_large = 1;
        if (!cs->too_large) sb_put(&cs->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (cs->too_large)
        return s_error(conn, 413, NULL, "the body is larger than %zu bytes (--max-body-mb)", g_cfg.max_body);
    if (!strncmp(url, "/v1/", 4) && !s_authorized(conn))
        return s_error(conn, 401, NULL, "Incorrect API key provided (send Authorization: Bearer KEY).");
    if (!strcmp(url, "/v1/chat/completions")) {
        if (!post) return s_error(conn, 405, NULL, "use POST for %s", url);
        return s_chat(conn, cs->body.p ? cs->body.p : "", cs->body.n, cs->t0);
    }
    if (!strcmp(url, "/v1/models")) {
        if (!get) return s_error(conn, 405, NULL, "use GET for %s", url);
        return s_json(conn, 200,
                      json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s}]}", "object", "list", "data", "id", g_cfg.model_name,
                                "object", "model", "created", (json_int_t)time(NULL), "owned_by", "vidi", "root",
                                g_cfg.model_dir));
    }
    if (!strcmp(url, "/health")) {
        pthread_mutex_lock(&g_m.mu);
        int up = g_m.router_up;
        pthread_mutex_unlock(&g_m.mu);
        return up ? s_json(conn, 200, json_pack("{s:s}", "status", "ok"))
                  : s_error(conn, 503, NULL, "the router at %s does not answer", g_cfg.router);
    }
    if (!strcmp(url, "/metrics")) {
        char *t = s_metrics_text();
        if (!t) return s_error(conn, 500, NULL, "out of memory");
        return s_respond(conn, 200, "text/plain; version=0.0.4; charset=utf-8", t, strlen(t));
    }
    if (!strcmp(url, "/v1/vidi/samples")) {
        char *out = NULL, msg[512];
        if (!g_cfg.samples_dir) return s_json(conn, 200, json_pack("{s:[]}", "samples"));
        if (vidi_serve_samples_json(g_cfg.samples_dir, &out, msg, sizeof msg) != 0) return s_error(conn, 500, NULL, "%s", msg);
        return s_respond(conn, 200, "application/json", out, strlen(out));
    }
    if (!strcmp(url, "/v1/vidi/frames")) {
        if (!post) return s_error(conn, 405, NULL, "use POST for %s", url);
        return s_frames(conn, cs->body.p ? cs->body.p : "", cs->body.n);
    }
    if (get && !strncmp(url, "/samples/", 9)) return s_file(conn, g_cfg.samples_dir, url + 9);
    if (get && (!strcmp(url, "/") || !strcmp(url, "/index.html"))) return s_file(conn, g_cfg.www_dir, "index.html");
    if (get && url[0] == '/' && s_plain_name(url + 1)) return s_file(conn, g_cfg.www_dir, url + 1);
    return s_error(conn, 404, NULL, "no route %s %s", method, url);
}

static void s_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)conn;
    (void)toe;
    conn_state *cs = *con_cls;
    if (!cs) return;
    free(cs->body.p);
    free(cs);
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- main */

static void s_help(FILE *f) {
    fprintf(f,
            "usage: vidi-serve [options]\n"
            "  --router EP              the router's front (default: where `vidi up` puts it)\n"
            "  --host ADDR              listen address (default 127.0.0.1; 0.0.0.0 for all)\n"
            "  --port N                 (default 8000)\n"
            "  --model DIR              the model folder (default models/vidi-shapes); its name is the model id\n"
            "  --served-model-name NAME the model id clients send (default: the folder's name)\n"
            "  --api-key KEY            require Authorization: Bearer KEY on /v1 (or $VIDI_API_KEY)\n"
            "  --allowed-media-root DIR accept file:// URLs under DIR (default: refused)\n"
            "  --max-body-mb N          request body limit (default 64)\n"
            "  --max-media-mb N         one image or video (default 32)\n"
            "  --max-media-items N      per request (default 16)\n"
            "  --allow-remote-media     fetch http(s) image and video URLs (default: refused)\n"
            "  --request-timeout-s N    without a token for this long a request fails (default 120)\n"
            "  --samples DIR            sample files for the page (default examples)\n"
            "  --www DIR                the page's files (default " VIDI_SERVE_WWW ")\n");
}

int main(int argc, char **argv) {
    char front[600], name[256];
    g_cfg = (serve_cfg){.router = vidi_client_default_endpoint(front, sizeof front), .host = "127.0.0.1", .model_dir = "models/vidi-shapes", .port = 8000,
                        .max_body = 64u << 20, .max_media = 32u << 20, .max_items = MAX_MEDIA,
                        .request_timeout_ms = 120000, .samples_dir = "examples", .www_dir = VIDI_SERVE_WWW,
                        .api_key = getenv("VIDI_API_KEY"), .max_connections = 256};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_help(stdout);
            return 0;
        }
        if (!strcmp(a, "--allow-remote-media")) {
            g_cfg.allow_remote = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "vidi-serve: %s needs a value\n", a);
            return 2;
        }
        i++;
        long long num = atoll(v);
        if (!strcmp(a, "--router")) g_cfg.router = v;
        else if (!strcmp(a, "--host")) g_cfg.host = v;
        else if (!strcmp(a, "--port")) g_cfg.port = (int)num;
        else if (!strcmp(a, "--model")) g_cfg.model_dir = v;
        else if (!strcmp(a, "--served-model-name")) g_cfg.model_name = v;
        else if (!strcmp(a, "--api-key")) g_cfg.api_key = v;
        else if (!strcmp(a, "--allowed-media-root")) g_cfg.media_root = v;
        else if (!strcmp(a, "--max-body-mb")) g_cfg.max_body = (size_t)num << 20;
        else if (!strcmp(a, "--max-media-mb")) g_cfg.max_media = (size_t)num << 20;
        else if (!strcmp(a, "--max-media-items")) g_cfg.max_items = (int)num;
        else if (!strcmp(a, "--request-timeout-s")) g_cfg.request_timeout_ms = (int)(num * 1000);
        else if (!strcmp(a, "--samples")) g_cfg.samples_dir = v;
        else if (!strcmp(a, "--www")) g_cfg.www_dir = v;
        else {
            fprintf(stderr, "vidi-serve: unknown option %s\n", a);
            s_help(stderr);
            return 2;
        }
    }
    if (g_cfg.port <= 0 || g_cfg.port > 65535 || g_cfg.max_body == 0 || g_cfg.max_media == 0 || g_cfg.max_items < 1 ||
        g_cfg.max_items > MAX_MEDIA || g_cfg.request_timeout_ms <= 0 || (g_cfg.api_key && !*g_cfg.api_key)) {
        fprintf(stderr, "vidi-serve: a port in [1, 65535], positive limits, at most %d media items, a non-empty key\n",
                MAX_MEDIA);
        return 2;
    }
    if (!g_cfg.model_name) {
        const char *slash = strrchr(g_cfg.model_dir, '/');
        snprintf(name, sizeof name, "%s", slash && slash[1] ? slash + 1 : g_cfg.model_dir);
        size_t l = strlen(name);
        while (l > 1 && name[l - 1] == '/') name[--l] = 0;
        g_cfg.model_name = name;
    }
    if (g_cfg.samples_dir) {
        struct stat sb;
        if (stat(g_cfg.samples_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) g_cfg.samples_dir = NULL;
    }
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)g_cfg.port);
    if (inet_pton(AF_INET, g_cfg.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "vidi-serve: --host %s is not an IPv4 address\n", g_cfg.host);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_t st;
    if (pthread_create(&st, NULL, s_stats_thread, NULL) != 0) {
        fprintf(stderr, "vidi-serve: cannot start the stats thread\n");
        return 1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)g_cfg.port, NULL,
        NULL, s_handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, s_completed,
        NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned)g_cfg.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)300, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "vidi-serve: cannot listen on %s:%d: %s\n", g_cfg.host, g_cfg.port, strerror(errno));
        g_stop = 1;
        pthread_join(st, NULL);
        return 1;
    }
    fprintf(stderr, "vidi-serve: listening on http://%s:%d (model %s, router %s)\n", g_cfg.host, g_cfg.port,
            g_cfg.model_name, g_cfg.router);
    while (!g_stop) usleep(100000);
    fprintf(stderr, "vidi-serve: stopping\n");
    MHD_stop_daemon(d);
    pthread_join(st, NULL);
    curl_global_cleanup();
    return 0;
}
