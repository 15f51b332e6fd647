/* tests/e2e/e2e_client.c — the client side of the end-to-end tests (label
 * e2e), run by tests/e2e/run.sh against real `vidi up` processes.
 *
 *   e2e_client ROUTER answers QUESTIONS.tsv EXAMPLES EXPECTED.tsv
 *       every question of QUESTIONS.tsv (file, question, truth) asked once,
 *       the answer compared with EXPECTED.tsv (file, question, the answer of
 *       single-process `vidi generate`); exit 1 on any difference.
 *   e2e_client ROUTER cache EXAMPLES FILE
 *       the same video asked about twice: the second request must be a cache
 *       hit that skips media and encode (router STATS: media_items does not
 *       grow, cache_hit_items does; DONE says cache_hits 1) and be faster.
 *   e2e_client ROUTER load N CONCURRENCY QUESTIONS.tsv EXAMPLES EXPECTED.tsv DEADLINE_S
 *       N requests, CONCURRENCY in flight, cycling over the questions; each
 *       must end in DONE (with the expected answer) or ERROR within
 *       DEADLINE_S. Prints `lost=L hung=H errors=E wrong=W done=D`; exit 1
 *       unless lost, hung and wrong are 0.
 *   e2e_client ROUTER gone EXAMPLES FILE
 *       a client submits 40 requests (no streaming) about a video and goes
 *       away; the router must cancel them (STATS clients_gone grows, the
 *       table empties) long before 40 could have been answered.
 *   e2e_client ROUTER batch EXAMPLES FILE N
 *       N requests about one image at once: the encode worker must have run
 *       fewer vision-tower calls than items (WORKs that arrive together are
 *       encoded together; router STATS workers_encode_batches < workers_encode),
 *       and every answer must be the same.
 *   e2e_client ROUTER chat EXAMPLES IMAGE
 *       REQUEST in the `messages` form: one user turn (image, question) gives
 *       the prompt form's answer; a multi-turn conversation is answered; parts
 *       that use the media out of order get ERROR bad_field.
 *   e2e_client ROUTER bad
 *       malformed messages on a raw DEALER (wrong version, truncated
 *       msgpack, huge declared sizes, unknown command, wrong field types,
 *       frames no descriptor names): each gets an ERROR with the right code,
 *       and a good request still works afterwards.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc/conn.h"
#include "ipc/msg.h"
#include "ipc/sock.h"
#include "media/media.h"

#define MAXQ 64

typedef struct qa {
    char file[256], question[256], expected[1024];
    int video;
    uint8_t *bytes;
    size_t n;
} qa;

/* strncpy that always terminates (and says nothing about truncation: the
 * files here are ours and short) */
static void s_cpy(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* EXAMPLES/FILE into q->bytes (malloc'd); the video flag from the name. */
/* file "-": a text-only question (no media) */
static int s_read_example(const char *examples, const char *file, qa *q) {
    char path[1024];
    vidi_err err = {0};
    if (!strcmp(file, "-")) {
        q->bytes = NULL, q->n = 0, q->video = 0;
        return 0;
    }
    snprintf(path, sizeof path, "%.500s/%.255s", examples, file);
    if (vidi_media_read_file(path, NULL, 0, 1 << 30, &q->bytes, &q->n, &err) != VIDI_OK) {
        fprintf(stderr, "e2e: %s\n", err.msg);
        return -1;
    }
    q->video = !strncmp(file, "video", 5);
    return 0;
}

static int s_read_tsv(const char *path, char (*a)[256], char (*b)[256], char (*c)[1024], int max) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "e2e: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[2048];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *t1 = strchr(line, '\t');
        if (!t1) continue;
        *t1 = 0;
        char *t2 = strchr(t1 + 1, '\t');
        if (t2) *t2 = 0;
        s_cpy(a[n], 256, line);
        s_cpy(b[n], 256, t1 + 1);
        s_cpy(c[n], 1024, t2 ? t2 + 1 : "");
        n++;
    }
    fclose(f);
    return n;
}

/* questions + expected answers (matched by file and question) + file bytes */
static int s_load(const char *questions, const char *examples, const char *expected, qa *q) {
    static char a[MAXQ][256], b[MAXQ][256], c[MAXQ][1024], ea[MAXQ][256], eb[MAXQ][256], ec[MAXQ][1024];
    int n = s_read_tsv(questions, a, b, c, MAXQ);
    int ne = expected ? s_read_tsv(expected, ea, eb, ec, MAXQ) : 0;
    if (n < 0 || ne < 0) return -1;
    for (int i = 0; i < n; i++) {
        s_cpy(q[i].file, sizeof q[i].file, a[i]);
        s_cpy(q[i].question, sizeof q[i].question, b[i]);
        q[i].expected[0] = 0;
        for (int k = 0; k < ne; k++)
            if (!strcmp(ea[k], a[i]) && !strcmp(eb[k], b[i])) s_cpy(q[i].expected, sizeof q[i].expected, ec[k]);
        if (s_read_example(examples, a[i], &q[i]) != 0) return -1;
    }
    return n;
}

static vidi_status s_submit(vidi_conn *c, uint64_t id, const qa *q, vidi_err *err) {
    vidi_conn_request rq = vidi_conn_request_default();
    vidi_conn_media m = {.video = q->video, .bytes = q->bytes, .n = q->n};
    rq.id = id;
    rq.prompt = q->question;
    rq.media = q->bytes ? &m : NULL;
    rq.n_media = q->bytes ? 1 : 0;
    rq.sampling.max_tokens = 64;
    rq.stream = 1;
    return vidi_conn_submit(c, &rq, err);
}

/* Wait for request id's DONE or ERROR; *answer gets DONE's text. 0 done, 1 error, -1 timeout. */
static int s_wait(vidi_conn *c, uint64_t id, int timeout_ms, char *answer, size_t cap, vidi_conn_event *done) {
    int64_t until = vidi_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = until - vidi_now_ms();
        if (left <= 0) return -1;
        vidi_conn_event ev;
        vidi_err err = {0};
        if (vidi_conn_next(c, (int)left, &ev, &err) != VIDI_OK) {
            if (errno == EAGAIN) return -1;
            continue;
        }
        if (ev.id == id && (ev.type == VIDI_CONN_DONE || ev.type == VIDI_CONN_ERROR)) {
            s_cpy(answer, cap, ev.type == VIDI_CONN_ERROR ? ev.code : ev.text);
            int r = ev.type == VIDI_CONN_ERROR;
            if (done) *done = ev;
            else vidi_conn_event_free(&ev);
            return r;
        }
        vidi_conn_event_free(&ev);
    }
}

static int s_stats(vidi_conn *c, vidi_conn_event *ev) {
    vidi_err err = {0};
    if (vidi_conn_stats(c, &err) != VIDI_OK) return -1;
    for (;;) {
        if (vidi_conn_next(c, 10000, ev, &err) != VIDI_OK) return -1;
        if (ev->type == VIDI_CONN_STATS) return 0;
        vidi_conn_event_free(ev);
    }
}

static int cmd_answers(const char *router, int argc, char **argv) {
    if (argc < 3) return 2;
    static qa q[MAXQ];
    int n = s_load(argv[0], argv[1], argv[2], q);
    if (n <= 0) return 1;
    vidi_conn *c;
    vidi_err err = {0};
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) {
        fprintf(stderr, "e2e: %s\n", err.msg);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char ans[2048];
        if (s_submit(c, (uint64_t)i + 1, &q[i], &err) != VIDI_OK) {
            fprintf(stderr, "e2e: submit: %s\n", err.msg);
            bad++;
            continue;
        }
        int r = s_wait(c, (uint64_t)i + 1, 120000, ans, sizeof ans, NULL);
        int same = r == 0 && !strcmp(ans, q[i].expected);
        printf("%-18s %-40s -> %s   [%s]\n", q[i].file, q[i].question, r < 0 ? "(no answer)" : ans,
               same ? "= vidi generate" : q[i].expected);
        bad += !same;
    }
    printf("answers: %d of %d equal single-process vidi generate\n", n - bad, n);
    vidi_conn_close(c);
    for (int i = 0; i < n; i++) free(q[i].bytes);
    return bad ? 1 : 0;
}

static int cmd_cache(const char *router, int argc, char **argv) {
    if (argc < 2) return 2;
    qa q = {0};
    vidi_err err = {0};
    if (s_read_example(argv[0], argv[1], &q) != 0) return 1;
    q.video = 1;
    snprintf(q.question, sizeof q.question, "Describe the video.");
    vidi_conn *c;
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) return 1;
    vidi_conn_event s0, s1, s2, d1, d2;
    char a1[2048], a2[2048];
    int fail = 0;
    if (s_stats(c, &s0) || s_submit(c, 1, &q, &err) || s_wait(c, 1, 120000, a1, sizeof a1, &d1) ||
        s_stats(c, &s1) || s_submit(c, 2, &q, &err) || s_wait(c, 2, 120000, a2, sizeof a2, &d2) || s_stats(c, &s2)) {
        fprintf(stderr, "e2e cache: a request or STATS failed\n");
        return 1;
    }
    uint64_t m0 = vidi_conn_stat(&s0, "media_items"), m1 = vidi_conn_stat(&s1, "media_items"),
             m2 = vidi_conn_stat(&s2, "media_items");
    uint64_t h1 = vidi_conn_stat(&s1, "cache_hit_items"), h2 = vidi_conn_stat(&s2, "cache_hit_items");
    uint64_t e1 = vidi_conn_stat(&s1, "encode_work"), e2 = vidi_conn_stat(&s2, "encode_work");
    printf("first:  %.3f s, cache hits %llu, media items %llu -> %llu\n", d1.total_s,
           (unsigned long long)d1.cache_hits, (unsigned long long)m0, (unsigned long long)m1);
    printf("second: %.3f s, cache hits %llu, media items %llu -> %llu, cache_hit_items %llu -> %llu, encoder "
           "results %llu -> %llu\n",
           d2.total_s, (unsigned long long)d2.cache_hits, (unsigned long long)m1, (unsigned long long)m2,
           (unsigned long long)h1, (unsigned long long)h2, (unsigned long long)e1, (unsigned long long)e2);
    if (strcmp(a1, a2)) printf("FAIL: the answers differ: '%s' / '%s'\n", a1, a2), fail = 1;
    if (m1 != m0 + 1) printf("FAIL: the first request did not go through media\n"), fail = 1;
    if (m2 != m1) printf("FAIL: the repeated video went through media again\n"), fail = 1;
    if (h2 != h1 + 1 || d2.cache_hits != 1) printf("FAIL: the repeated video was not a cache hit\n"), fail = 1;
    printf("cache: %s (answer '%s'; the hit took %.0f%% of the miss's time)\n", fail ? "FAIL" : "ok", a2,
           100.0 * d2.total_s / (d1.total_s > 0 ? d1.total_s : 1));
    vidi_conn_event_free(&s0);
    vidi_conn_event_free(&s1);
    vidi_conn_event_free(&s2);
    vidi_conn_event_free(&d1);
    vidi_conn_event_free(&d2);
    vidi_conn_close(c);
    free(q.bytes);
    return fail;
}

static int cmd_load(const char *router, int argc, char **argv) {
    if (argc < 6) return 2;
    int total = atoi(argv[0]), conc = atoi(argv[1]);
    double deadline_s = atof(argv[5]);
    static qa q[MAXQ];
    int n = s_load(argv[2], argv[3], argv[4], q);
    if (n <= 0 || total <= 0 || conc <= 0 || conc > 256) return 2;
    vidi_conn *c;
    vidi_err err = {0};
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) return 1;
    int64_t *sent_at = calloc((size_t)total + 1, sizeof *sent_at);
    int *state = calloc((size_t)total + 1, sizeof *state); /* 0 not sent, 1 in flight, 2 done, 3 error, 4 hung */
    int next = 1, in_flight = 0, done = 0, errors = 0, hung = 0, wrong = 0;
    int64_t t0 = vidi_now_ms();
    while (done + errors + hung < total) {
        while (in_flight < conc && next <= total) {
            if (s_submit(c, (uint64_t)next, &q[(next - 1) % n], &err) != VIDI_OK) {
                fprintf(stderr, "e2e load: submit %d: %s\n", next, err.msg);
                state[next] = 3;
                errors++;
            } else {
                state[next] = 1;
                sent_at[next] = vidi_now_ms();
                in_flight++;
            }
            next++;
        }
        vidi_conn_event ev;
        if (vidi_conn_next(c, 200, &ev, &err) == VIDI_OK) {
            uint64_t id = ev.id;
            if (id >= 1 && id <= (uint64_t)total && state[id] == 1 &&
                (ev.type == VIDI_CONN_DONE || ev.type == VIDI_CONN_ERROR)) {
                in_flight--;
                if (ev.type == VIDI_CONN_DONE) {
                    state[id] = 2;
                    done++;
                    const qa *qq = &q[(id - 1) % (uint64_t)n];
                    if (strcmp(ev.text, qq->expected)) {
                        wrong++;
                        printf("WRONG %llu: %s / %s -> '%s' (expected '%s')\n", (unsigned long long)id, qq->file,
                               qq->question, ev.text, qq->expected);
                    }
                } else {
                    state[id] = 3;
                    errors++;
                    printf("error %llu: %s: %s\n", (unsigned long long)id, ev.code, ev.text);
                }
            }
            vidi_conn_event_free(&ev);
        }
        int64_t now = vidi_now_ms();
        for (int i = 1; i < next; i++)
            if (state[i] == 1 && now - sent_at[i] > (int64_t)(deadline_s * 1000)) {
                state[i] = 4;
                hung++;
                in_flight--;
                printf("HUNG %d: no DONE or ERROR within %.0f s\n", i, deadline_s);
            }
    }
    int lost = 0;
    for (int i = 1; i <= total; i++) lost += state[i] == 0 || state[i] == 1;
    printf("lost=%d hung=%d errors=%d wrong=%d done=%d in %.1f s\n", lost, hung, errors, wrong, done,
           (vidi_now_ms() - t0) / 1000.0);
    vidi_conn_close(c);
    for (int i = 0; i < n; i++) free(q[i].bytes);
    free(sent_at);
    free(state);
    return lost || hung || wrong ? 1 : 0;
}

static int cmd_gone(const char *router, int argc, char **argv) {
    if (argc < 2) return 2;
    qa q = {0};
    vidi_err err = {0};
    if (s_read_example(argv[0], argv[1], &q) != 0) return 1;
    q.video = 1;
    snprintf(q.question, sizeof q.question, "Describe the video.");
    vidi_conn *a, *b;
    if (vidi_conn_connect(router, &a, &err) != VIDI_OK || vidi_conn_connect(router, &b, &err) != VIDI_OK) return 1;
    const int n = 40;
    for (int i = 0; i < n; i++) {
        vidi_conn_request rq = vidi_conn_request_default();
        vidi_conn_media m = {.video = 1, .bytes = q.bytes, .n = q.n};
        rq.id = (uint64_t)i + 1;
        rq.prompt = q.question;
        rq.media = &m;
        rq.n_media = 1;
        rq.stream = 0;
        if (vidi_conn_submit(a, &rq, &err) != VIDI_OK) return 1;
    }
    /* a STATS round trip on the same connection: the router has every request (LINGER 0 would drop unsent ones) */
    vidi_conn_event st;
    if (s_stats(a, &st) != 0) return 1;
    uint64_t admitted = vidi_conn_stat(&st, "active");
    vidi_conn_event_free(&st);
    int64_t t0 = vidi_now_ms();
    vidi_conn_close(a); /* gone: no more messages from it */
    uint64_t active = 0, gone = 0, done = 0;
    int64_t emptied = -1;
    while (vidi_now_ms() - t0 < 30000) {
        if (s_stats(b, &st) != 0) return 1;
        active = vidi_conn_stat(&st, "active");
        gone = vidi_conn_stat(&st, "clients_gone");
        done = vidi_conn_stat(&st, "done");
        vidi_conn_event_free(&st);
        if (active == 0) {
            emptied = vidi_now_ms() - t0;
            break;
        }
        usleep(250000);
    }
    printf("client gone with %d requests (%llu in the router's table): after %.1f s the router had cancelled %llu and "
           "finished %llu (active %llu)\n",
           n, (unsigned long long)admitted, emptied >= 0 ? emptied / 1000.0 : -1.0, (unsigned long long)gone,
           (unsigned long long)done, (unsigned long long)active);
    vidi_conn_close(b);
    free(q.bytes);
    int ok = emptied >= 0 && admitted >= (uint64_t)n / 2 && gone >= admitted / 2 && done < (uint64_t)n;
    printf("gone: %s\n", ok ? "ok" : "FAIL (the requests of a client that went away kept running)");
    return ok ? 0 : 1;
}

static int cmd_batch(const char *router, int argc, char **argv) {
    if (argc < 3) return 2;
    qa q = {0};
    int n = atoi(argv[2]);
    vidi_err err = {0};
    if (n < 2 || n > 256 || s_read_example(argv[0], argv[1], &q) != 0) return 2;
    snprintf(q.question, sizeof q.question, "How many shapes are there?");
    vidi_conn *c;
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) return 1;
    for (int i = 0; i < n; i++)
        if (s_submit(c, (uint64_t)i + 1, &q, &err) != VIDI_OK) return 1;
    char first[256] = "", ans[256];
    int same = 0;
    for (int got = 0; got < n;) {
        vidi_conn_event ev;
        if (vidi_conn_next(c, 60000, &ev, &err) != VIDI_OK) break;
        if (ev.type == VIDI_CONN_DONE || ev.type == VIDI_CONN_ERROR) {
            s_cpy(ans, sizeof ans, ev.type == VIDI_CONN_DONE ? ev.text : ev.code);
            if (!got) s_cpy(first, sizeof first, ans);
            same += !strcmp(ans, first) && ev.type == VIDI_CONN_DONE;
            got++;
        }
        vidi_conn_event_free(&ev);
    }
    usleep(1500000); /* the router collects the workers' counters every second */
    vidi_conn_event st;
    if (s_stats(c, &st) != 0) return 1;
    uint64_t items = vidi_conn_stat(&st, "workers_encode"), calls = vidi_conn_stat(&st, "workers_encode_batches");
    vidi_conn_event_free(&st);
    int ok = same == n && items >= (uint64_t)n && calls > 0 && calls < items;
    printf("batch: %d requests at once, %d equal answers ('%s'); the encoder ran %llu items in %llu tower calls: %s\n",
           n, same, first, (unsigned long long)items, (unsigned long long)calls, ok ? "ok" : "FAIL");
    vidi_conn_close(c);
    free(q.bytes);
    return ok ? 0 : 1;
}

/* REQUEST {id, messages, media: [image], tensors} sent raw; turns: role, text (NULL: the
 * image then `text`); returns the answer (DONE text or ERROR code) in ans. */
static int s_chat(vidi_conn *c, uint64_t id, const qa *q, int n_turns, const char *const *roles,
                  const char *const *texts, const int *with_image, int media_index, char *ans, size_t cap) {
    vidi_msg_out o;
    vidi_err err = {0};
    vidi_msg_out_init(&o);
    msgpack_pack_map(&o.pk, 5);
    vidi_mp_kv_u64(&o.pk, "id", id);
    vidi_mp_kv_u64(&o.pk, "max_tokens", 64);
    vidi_mp_pack_cstr(&o.pk, "messages");
    msgpack_pack_array(&o.pk, (size_t)n_turns);
    for (int t = 0; t < n_turns; t++) {
        msgpack_pack_map(&o.pk, 2);
        vidi_mp_kv_str(&o.pk, "role", roles[t]);
        vidi_mp_pack_cstr(&o.pk, "content");
        if (!with_image[t]) {
            vidi_mp_pack_cstr(&o.pk, texts[t]);
            continue;
        }
        msgpack_pack_array(&o.pk, 2);
        msgpack_pack_map(&o.pk, 2);
        vidi_mp_kv_str(&o.pk, "type", "image");
        vidi_mp_kv_u64(&o.pk, "media", (uint64_t)media_index);
        msgpack_pack_map(&o.pk, 2);
        vidi_mp_kv_str(&o.pk, "type", "text");
        vidi_mp_kv_str(&o.pk, "text", texts[t]);
    }
    vidi_mp_pack_cstr(&o.pk, "media");
    msgpack_pack_array(&o.pk, 1);
    msgpack_pack_map(&o.pk, 2);
    vidi_mp_kv_str(&o.pk, "kind", "image");
    vidi_mp_kv_u64(&o.pk, "tensor", 0);
    vidi_mp_pack_cstr(&o.pk, "tensors");
    msgpack_pack_array(&o.pk, 1);
    int64_t shape[1] = {(int64_t)q->n};
    vidi_msg_out_tensor(&o, VIDI_WIRE_U8, 1, shape, q->bytes, q->n, NULL, NULL, &err);
    vidi_status rc = vidi_conn_send(c, VIDI_CMD_REQUEST, &o, &err);
    vidi_msg_out_free(&o);
    if (rc != VIDI_OK) return -1;
    return s_wait(c, id, 60000, ans, cap, NULL);
}

static int cmd_chat(const char *router, int argc, char **argv) {
    if (argc < 2) return 2;
    qa q = {0};
    vidi_err err = {0};
    if (s_read_example(argv[0], argv[1], &q) != 0) return 1;
    snprintf(q.question, sizeof q.question, "What colour is the square?");
    vidi_conn *c;
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) return 1;
    char a_prompt[256], a_one[256], a_multi[256], a_bad[256];
    int fail = 0;
    if (s_submit(c, 1, &q, &err) != VIDI_OK || s_wait(c, 1, 60000, a_prompt, sizeof a_prompt, NULL) != 0) fail = 1;
    const char *r1[] = {"user"}, *t1[] = {q.question};
    int w1[] = {1};
    if (s_chat(c, 2, &q, 1, r1, t1, w1, 0, a_one, sizeof a_one) != 0) fail = 1;
    const char *r3[] = {"user", "assistant", "user"};
    const char *t3[] = {q.question, a_prompt, "How many shapes are there?"};
    int w3[] = {1, 0, 0};
    int multi = s_chat(c, 3, &q, 3, r3, t3, w3, 0, a_multi, sizeof a_multi);
    int bad = s_chat(c, 4, &q, 1, r1, t1, w1, 1, a_bad, sizeof a_bad);
    printf("prompt form: '%s'; messages form, one turn: '%s'; three turns -> '%s'; media out of order -> %s\n",
           a_prompt, a_one, multi == 0 ? a_multi : "(failed)", bad == 1 ? a_bad : "(no error)");
    if (fail || strcmp(a_prompt, a_one)) printf("FAIL: the one-turn messages form differs from the prompt form\n"), fail = 1;
    if (multi != 0 || !a_multi[0]) printf("FAIL: the conversation got no answer\n"), fail = 1;
    if (bad != 1 || strcmp(a_bad, "bad_field")) printf("FAIL: media out of order was not refused\n"), fail = 1;
    printf("chat: %s\n", fail ? "FAIL" : "ok");
    vidi_conn_close(c);
    free(q.bytes);
    return fail;
}

/* ---- malformed messages ---- */

static int s_send_raw(void *s, const void *const *parts, const size_t *lens, int n) {
    for (int i = 0; i < n; i++)
        if (zmq_send(s, parts[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0) return -1;
    return 0;
}

static int s_expect_error(void *s, const char *what, const char *code) {
    vidi_msg m;
    vidi_msg_init(&m);
    vidi_wire_code wc;
    vidi_err err = {0};
    int ok = 0;
    if (vidi_msg_recv(s, 0, 0, NULL, &m, &wc, &err) == VIDI_OK && m.cmd == VIDI_CMD_ERROR) {
        const char *c, *msg;
        size_t cn, mn;
        if (vidi_mp_str(m.header, "code", 1, 64, &c, &cn, NULL) == VIDI_OK &&
            vidi_mp_str(m.header, "message", 1, 4096, &msg, &mn, NULL) == VIDI_OK) {
            ok = strlen(code) == cn && !memcmp(c, code, cn);
            printf("%-34s -> ERROR %.*s: %.*s%s\n", what, (int)cn, c, (int)mn, msg, ok ? "" : "   [WRONG CODE]");
        }
    } else {
        printf("%-34s -> no ERROR reply (%s)\n", what, err.msg);
    }
    vidi_msg_close(&m);
    return ok;
}

static int cmd_bad(const char *router) {
    void *ctx = zmq_ctx_new();
    vidi_err err = {0};
    void *s = vidi_sock_open(ctx, VIDI_SOCK_CLIENT, router, 0, NULL, 0, &err);
    if (!s) return 1;
    int t = 5000;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &t, sizeof t);
    const uint8_t ver[6] = {'V', 'I', 'D', 'I', 1, 0}, ver2[6] = {'V', 'I', 'D', 'I', 2, 0}, badv[5] = "VIDX";
    const uint8_t req = VIDI_CMD_REQUEST, unk = 0x7f, two[2] = {3, 3};
    const uint8_t empty_map = 0x80;
    const uint8_t trunc[] = {0x83, 0xa2, 'i', 'd', 0x01};            /* map of 3, one entry */
    const uint8_t huge_str[] = {0x81, 0xa2, 'i', 'd', 0xdb, 0xff, 0xff, 0xff, 0xf0};
    const uint8_t huge_arr[] = {0x81, 0xa5, 'm', 'e', 'd', 'i', 'a', 0xdd, 0xff, 0xff, 0xff, 0xff};
    const uint8_t not_map[] = {0x93, 1, 2, 3};
    /* {id: "seven", prompt: 5} */
    const uint8_t wrong_types[] = {0x82, 0xa2, 'i', 'd', 0xa5, 's', 'e', 'v', 'e', 'n', 0xa6, 'p', 'r', 'o', 'm', 'p', 't', 5};
    /* {id: 1, prompt: "hi"} plus a raw frame nobody names */
    const uint8_t good_hdr[] = {0x82, 0xa2, 'i', 'd', 0x01, 0xa6, 'p', 'r', 'o', 'm', 'p', 't', 0xa2, 'h', 'i'};
    const uint8_t frame[4] = {1, 2, 3, 4};
    uint8_t deep[200];
    for (int i = 0; i < 100; i++) deep[i] = 0x91; /* 100 nested one-element arrays */
    deep[100] = 0x01;
    int ok = 0, n = 0;
#define CASE(what, code, ...)                                                                                         \
    do {                                                                                                              \
        const void *p[] = {__VA_ARGS__};                                                                              \
        n++;                                                                                                          \
        if (s_send_raw(s, p, lens, (int)(sizeof p / sizeof p[0])) == 0) ok += s_expect_error(s, what, code);         \
    } while (0)
    {
        size_t lens[] = {5, 1, 1};
        CASE("wrong version frame", "bad_version", badv, &req, &empty_map);
    }
    {
        size_t lens[] = {6, 1, 1};
        CASE("protocol major 2", "bad_version", ver2, &req, &empty_map);
    }
    {
        size_t lens[] = {6, 1};
        CASE("two parts only", "bad_frame", ver, &req);
    }
    {
        size_t lens[] = {6, 1, 1};
        CASE("unknown command 0x7f", "bad_command", ver, &unk, &empty_map);
    }
    {
        size_t lens[] = {6, 2, 1};
        CASE("two-byte command", "bad_command", ver, two, &empty_map);
    }
    {
        size_t lens[] = {6, 1, sizeof trunc};
        CASE("truncated msgpack", "bad_header", ver, &req, trunc);
    }
    {
        size_t lens[] = {6, 1, sizeof huge_str};
        CASE("string declaring 4 GB", "too_large", ver, &req, huge_str);
    }
    {
        size_t lens[] = {6, 1, sizeof huge_arr};
        CASE("array declaring 4 billion items", "too_large", ver, &req, huge_arr);
    }
    {
        size_t lens[] = {6, 1, 101};
        CASE("100 levels of nesting", "too_large", ver, &req, deep);
    }
    {
        size_t lens[] = {6, 1, sizeof not_map};
        CASE("header not a map", "bad_header", ver, &req, not_map);
    }
    {
        size_t lens[] = {6, 1, sizeof wrong_types};
        CASE("wrong field types", "bad_field", ver, &req, wrong_types);
    }
    {
        size_t lens[] = {6, 1, sizeof good_hdr, 4};
        CASE("a frame no descriptor names", "bad_frame", ver, &req, good_hdr, frame);
    }
#undef CASE
    zmq_close(s);
    zmq_ctx_term(ctx);
    /* the router still serves */
    vidi_conn *c;
    char ans[256];
    int serves = 0;
    if (vidi_conn_connect(router, &c, &err) == VIDI_OK) {
        vidi_conn_request rq = vidi_conn_request_default();
        rq.id = 77;
        rq.prompt = "How many shapes are there?";
        rq.sampling.max_tokens = 8;
        serves = vidi_conn_submit(c, &rq, &err) == VIDI_OK && s_wait(c, 77, 60000, ans, sizeof ans, NULL) == 0;
        vidi_conn_close(c);
    }
    printf("bad messages: %d of %d answered with the right ERROR; the router %s serving\n", ok, n,
           serves ? "goes on" : "STOPPED");
    return ok == n && serves ? 0 : 1;
}

/* stats KEY>=N|KEY<=N ...: the router's STATS (after its next collection
 * from the workers) hold at least (at most) N under each KEY. */
static int cmd_stats(const char *router, int argc, char **argv) {
    vidi_err err = {0};
    vidi_conn *c;
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) return 1;
    usleep(1500000); /* the router collects the workers' counters every second */
    vidi_conn_event st;
    if (s_stats(c, &st) != 0) {
        vidi_conn_close(c);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        char key[128];
        unsigned long long lim = 0;
        const char *ge = strstr(argv[i], ">="), *le = strstr(argv[i], "<="), *op = ge ? ge : le;
        if (!op || op == argv[i] || (size_t)(op - argv[i]) >= sizeof key) return 2;
        memcpy(key, argv[i], (size_t)(op - argv[i]));
        key[op - argv[i]] = 0;
        lim = strtoull(op + 2, NULL, 10);
        uint64_t v = vidi_conn_stat(&st, key);
        int ok = ge ? v >= lim : v <= lim;
        printf("stats: %s = %llu (want %s %llu)%s\n", key, (unsigned long long)v, ge ? ">=" : "<=", lim,
               ok ? "" : ": FAIL");
        bad += !ok;
    }
    vidi_conn_event_free(&st);
    vidi_conn_close(c);
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: e2e_client ROUTER answers|cache|load|bad ...\n");
        return 2;
    }
    const char *router = argv[1], *cmd = argv[2];
    if (!strcmp(cmd, "answers")) return cmd_answers(router, argc - 3, argv + 3);
    if (!strcmp(cmd, "cache")) return cmd_cache(router, argc - 3, argv + 3);
    if (!strcmp(cmd, "load")) return cmd_load(router, argc - 3, argv + 3);
    if (!strcmp(cmd, "bad")) return cmd_bad(router);
    if (!strcmp(cmd, "gone")) return cmd_gone(router, argc - 3, argv + 3);
    if (!strcmp(cmd, "batch")) return cmd_batch(router, argc - 3, argv + 3);
    if (!strcmp(cmd, "chat")) return cmd_chat(router, argc - 3, argv + 3);
    if (!strcmp(cmd, "stats")) return cmd_stats(router, argc - 3, argv + 3);
    fprintf(stderr, "e2e_client: unknown command %s\n", cmd);
    return 2;
}
