/* bench/epd/loadgen.c — open-loop load against a running router (bench/epd/run.sh).
 *
 *   epd_loadgen ROUTER EXAMPLES MIX RATE SECONDS TTFT_MS TPOT_MS [SEED [MEDIA_MAX [TEXT_MAX]]]
 *   epd_loadgen ROUTER EXAMPLES repeat FILE N
 *
 * The second form asks about the same video N times, one after the other,
 * and prints the first request's TTFT (a cache miss) and the median of the
 * others (MM-token cache hits).
 *
 * Requests arrive as a Poisson process of RATE per second for SECONDS
 * (sent at their times whatever is in flight: an open loop, so a slow
 * system builds a queue instead of slowing the arrivals). MIX is "image"
 * (80 % image questions, 20 % video) or "video" (the reverse), drawn from
 * examples/questions.tsv; "text" (questions without media, whose answers
 * are the longest vidi-shapes gives: about 20 tokens); or "alt:P[:T]", phases
 * of P seconds that alternate "image" and "text", starting with "image", the
 * text phases at T requests a second (default RATE) (a workload whose
 * bottleneck moves: bench/roles/switch.sh). Each request's TTFT (submit to its first TOKEN)
 * and TPOT ((DONE - first token) / (tokens - 1)) are measured; a request
 * meets the SLO when both are within the targets and it finished without
 * error. After the last arrival it waits up to 60 s for stragglers (those
 * count as missing the SLO).
 *
 * MEDIA_MAX and TEXT_MAX (default 64 each) are the max_tokens of the questions
 * with media and of those without (a random-weight model answers to the limit:
 * they set each phase's decode work).
 *
 * Prints one JSON object: rate, requests, completed, errors (overloaded: of
 * them, those the router refused with its table full, --max-requests), slo
 * attainment, throughput (completed / wall time), goodput (completed within
 * both targets / wall time), TTFT and TPOT p50 / p90, and the requests with
 * media and those without apart (their count and SLO attainment: in an alt
 * mix, how each phase fared).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/conn.h"
#include "ipc/sock.h"
#include "media/media.h"

#define MAXQ 64

typedef struct qa {
    char file[256], question[256];
    int video;
    uint8_t *bytes;
    size_t n;
} qa;

typedef struct rec {
    int64_t sent, first, done;
    int tokens, error, overloaded; /* overloaded: the router's table was full (--max-requests) */
} rec;

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_pct(double *v, int n, double p) {
    if (!n) return 0.0;
    qsort(v, (size_t)n, sizeof *v, s_cmp);
    int k = (int)ceil(p * n) - 1;
    return v[k < 0 ? 0 : k];
}

int main(int argc, char **argv) {
    if (argc >= 6 && !strcmp(argv[3], "repeat")) {
        char path[1024];
        snprintf(path, sizeof path, "%.500s/%.255s", argv[2], argv[4]);
        int reps = atoi(argv[5]);
        uint8_t *bytes = NULL;
        size_t nb = 0;
        vidi_err err = {0};
        vidi_conn *c;
        if (reps < 2 || vidi_media_read_file(path, NULL, 0, 1 << 30, &bytes, &nb, &err) != VIDI_OK ||
            vidi_conn_connect(argv[1], &c, &err) != VIDI_OK) {
            fprintf(stderr, "loadgen: %s\n", err.msg);
            return 1;
        }
        double *ttft = calloc((size_t)reps, sizeof *ttft);
        int hits = 0;
        for (int i = 0; i < reps; i++) {
            vidi_conn_request rq = vidi_conn_request_default();
            vidi_conn_media m = {.video = 1, .bytes = bytes, .n = nb};
            rq.id = (uint64_t)i + 1;
            rq.prompt = "Describe the video.";
            rq.media = &m;
            rq.n_media = 1;
            int64_t t0 = vidi_now_ms(), first = 0;
            if (vidi_conn_submit(c, &rq, &err) != VIDI_OK) return 1;
            for (;;) {
                vidi_conn_event ev;
                if (vidi_conn_next(c, 60000, &ev, &err) != VIDI_OK) return 1;
                int end = ev.type == VIDI_CONN_DONE || ev.type == VIDI_CONN_ERROR;
                if (!first && (ev.type == VIDI_CONN_TOKEN || end)) first = vidi_now_ms();
                if (ev.type == VIDI_CONN_DONE && i > 0) hits += ev.cache_hits > 0;
                vidi_conn_event_free(&ev);
                if (end) break;
            }
            ttft[i] = (double)(first - t0);
        }
        double miss = ttft[0], hit = s_pct(ttft + 1, reps - 1, 0.5);
        printf("{\"mix\": \"repeat\", \"file\": \"%s\", \"requests\": %d, \"ttft_ms_miss\": %.1f, "
               "\"ttft_ms_hit_p50\": %.1f, \"hits\": %d}\n",
               argv[4], reps, miss, hit, hits);
        vidi_conn_close(c);
        free(ttft);
        free(bytes);
        return 0;
    }
    if (argc < 8) {
        fprintf(stderr, "usage: epd_loadgen ROUTER EXAMPLES image|video|text|alt:P RATE SECONDS TTFT_MS TPOT_MS "
                        "[SEED [MEDIA_MAX [TEXT_MAX]]]\n");
        return 2;
    }
    const char *router = argv[1], *examples = argv[2], *mix = argv[3];
    double rate = atof(argv[4]), seconds = atof(argv[5]), ttft_slo = atof(argv[6]), tpot_slo = atof(argv[7]);
    unsigned seed = argc > 8 ? (unsigned)atoi(argv[8]) : 1;
    int media_max = argc > 9 ? atoi(argv[9]) : 64, text_max = argc > 10 ? atoi(argv[10]) : 64;
    if (media_max < 1 || media_max > 4096 || text_max < 1 || text_max > 4096) {
        fprintf(stderr, "loadgen: MEDIA_MAX and TEXT_MAX: 1 to 4096 tokens\n");
        return 2;
    }
    double phase = !strncmp(mix, "alt:", 4) ? atof(mix + 4) : 0, text_rate = rate;
    if (phase > 0 && strchr(mix + 4, ':')) text_rate = atof(strchr(mix + 4, ':') + 1);
    if (!(text_rate > 0)) return 2;
    if (rate <= 0 || seconds <= 0 ||
        (strcmp(mix, "image") && strcmp(mix, "video") && strcmp(mix, "text") && !(phase > 0)))
        return 2;
    /* text questions (no media): the longest answers vidi-shapes gives */
    static const char *const texts[] = {"white white white white white white", "List every colour you know.",
                                        "Count the shapes one by one.", "red green blue yellow white orange purple",
                                        "Repeat: circle square triangle star diamond.",
                                        "Tell me a long story about shapes."};
    const int n_texts = (int)(sizeof texts / sizeof texts[0]);
    /* questions */
    static qa q[MAXQ];
    int nq = 0;
    char path[1024], line[2048];
    snprintf(path, sizeof path, "%s/questions.tsv", examples);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
        return 1;
    }
    while (nq < MAXQ && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *t1 = strchr(line, '\t');
        if (!line[0] || line[0] == '#' || !t1) continue;
        *t1 = 0;
        char *t2 = strchr(t1 + 1, '\t');
        if (t2) *t2 = 0;
        snprintf(q[nq].file, sizeof q[nq].file, "%.255s", line);
        snprintf(q[nq].question, sizeof q[nq].question, "%.255s", t1 + 1);
        q[nq].video = !strncmp(line, "video", 5);
        snprintf(path, sizeof path, "%.500s/%.255s", examples, q[nq].file);
        vidi_err err = {0};
        if (vidi_media_read_file(path, NULL, 0, 1 << 30, &q[nq].bytes, &q[nq].n, &err) != VIDI_OK) {
            fprintf(stderr, "loadgen: %s\n", err.msg);
            return 1;
        }
        nq++;
    }
    fclose(f);
    int img[MAXQ], vid[MAXQ], ni = 0, nv = 0;
    for (int i = 0; i < nq; i++) {
        if (q[i].video) vid[nv++] = i;
        else img[ni++] = i;
    }
    if (!ni || !nv) return 1;
    /* arrivals */
    srand(seed);
    int cap = (int)((rate > text_rate ? rate : text_rate) * seconds * 2 + 16), n = 0;
    double *at = malloc((size_t)cap * sizeof *at);
    int *which = malloc((size_t)cap * sizeof *which); /* a question, or -1 - k for text k */
    rec *r = calloc((size_t)cap, sizeof *r);
    for (double t = 0;;) {
        double u = (rand() + 1.0) / ((double)RAND_MAX + 2.0);
        int in_text = phase > 0 && (int)(t / phase) % 2 == 1;
        t += -log(u) / (in_text ? text_rate : rate);
        if (t >= seconds || n == cap) break;
        int video = ((rand() % 100) < 80) == !strcmp(mix, "video");
        int text = !strcmp(mix, "text") || (phase > 0 && (int)(t / phase) % 2 == 1);
        at[n] = t;
        which[n] = text ? -1 - rand() % n_texts : video ? vid[rand() % nv] : img[rand() % ni];
        n++;
    }
    vidi_conn *c;
    vidi_err err = {0};
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) {
        fprintf(stderr, "loadgen: %s\n", err.msg);
        return 1;
    }
    int64_t t0 = vidi_now_ms();
    int next = 0, finished = 0;
    int64_t give_up = 0;
    while (finished < n) {
        int64_t now = vidi_now_ms();
        while (next < n && now - t0 >= (int64_t)(at[next] * 1000)) {
            const qa *x = which[next] >= 0 ? &q[which[next]] : NULL;
            vidi_conn_request rq = vidi_conn_request_default();
            vidi_conn_media m = {0};
            if (x) m = (vidi_conn_media){.video = x->video, .bytes = x->bytes, .n = x->n};
            rq.id = (uint64_t)next + 1;
            rq.prompt = x ? x->question : texts[-1 - which[next]];
            rq.media = x ? &m : NULL;
            rq.n_media = x ? 1 : 0;
            rq.sampling.max_tokens = x ? media_max : text_max;
            r[next].sent = vidi_now_ms();
            if (vidi_conn_submit(c, &rq, &err) != VIDI_OK) {
                r[next].error = 1;
                finished++;
            }
            next++;
        }
        if (next == n && !give_up) give_up = vidi_now_ms() + 60000;
        if (give_up && vidi_now_ms() > give_up) break;
        int64_t wait = next < n ? (int64_t)(at[next] * 1000) - (vidi_now_ms() - t0) : 100;
        vidi_conn_event ev;
        if (vidi_conn_next(c, (int)(wait < 0 ? 0 : wait > 100 ? 100 : wait), &ev, &err) != VIDI_OK) continue;
        uint64_t id = ev.id;
        if (id >= 1 && id <= (uint64_t)n) {
            rec *x = &r[id - 1];
            int64_t tnow = vidi_now_ms();
            if (ev.type == VIDI_CONN_TOKEN && !x->first) x->first = tnow;
            if (ev.type == VIDI_CONN_DONE && !x->done) {
                x->done = tnow;
                x->tokens = ev.n_tokens;
                if (!x->first) x->first = tnow;
                finished++;
            }
            if (ev.type == VIDI_CONN_ERROR && !x->done && !x->error) {
                static int shown;
                if (shown++ < 3) fprintf(stderr, "loadgen: request %llu: %s: %s\n", (unsigned long long)id, ev.code, ev.text);
                x->error = 1;
                x->overloaded = !strcmp(ev.code, "overloaded");
                finished++;
            }
        }
        vidi_conn_event_free(&ev);
    }
    double wall = (vidi_now_ms() - t0) / 1000.0;
    double *ttft = malloc((size_t)n * sizeof *ttft), *tpot = malloc((size_t)n * sizeof *tpot);
    int done = 0, errors = 0, overloaded = 0, ok = 0, nt = 0, n_media = 0, ok_media = 0;
    for (int i = 0; i < n; i++) {
        n_media += which[i] >= 0;
        if (r[i].error) errors++, overloaded += r[i].overloaded;
        if (!r[i].done) continue;
        done++;
        double a = (double)(r[i].first - r[i].sent), b = r[i].tokens > 1 ? (double)(r[i].done - r[i].first) / (r[i].tokens - 1) : 0.0;
        ttft[done - 1] = a;
        if (r[i].tokens > 1) tpot[nt++] = b;
        if (a <= ttft_slo && b <= tpot_slo) ok++, ok_media += which[i] >= 0;
    }
    double p50t = s_pct(ttft, done, 0.5), p90t = s_pct(ttft, done, 0.9);
    double p50p = s_pct(tpot, nt, 0.5), p90p = s_pct(tpot, nt, 0.9);
    printf("{\"mix\": \"%s\", \"rate\": %.3f, \"requests\": %d, \"completed\": %d, \"errors\": %d, \"overloaded\": %d, "
           "\"slo_attainment\": %.4f, \"throughput\": %.3f, \"goodput\": %.3f, \"ttft_ms_p50\": %.1f, "
           "\"ttft_ms_p90\": %.1f, \"tpot_ms_p50\": %.2f, \"tpot_ms_p90\": %.2f, \"ttft_slo_ms\": %.0f, "
           "\"tpot_slo_ms\": %.0f, \"media_requests\": %d, \"media_slo_attainment\": %.4f, \"text_requests\": %d, "
           "\"text_slo_attainment\": %.4f}\n",
           mix, rate, n, done, errors, overloaded, n ? (double)ok / n : 0.0, done / wall, ok / wall, p50t, p90t, p50p, p90p,
           ttft_slo, tpot_slo, n_media, n_media ? (double)ok_media / n_media : 0.0, n - n_media,
           n > n_media ? (double)(ok - ok_media) / (n - n_media) : 0.0);
    vidi_conn_close(c);
    for (int i = 0; i < nq; i++) free(q[i].bytes);
    free(at);
    free(which);
    free(r);
    free(ttft);
    free(tpot);
    return 0;
}
