/* tests/sdk/e2e_sdk.c ROUTER CASE ... — the C SDK against a real router
 * (tests/e2e/run.sh cases sdk and sdk-curve), through the public header and
 * the static library only.
 *
 *   answers QUESTIONS_TSV EXAMPLES EXPECTED_TSV
 *       every question, four in flight at once, alternately as `ask` (the
 *       prompt form) and as a one-turn conversation (`submit`): the streamed
 *       TOKEN texts join into the DONE text, which is single-process `vidi
 *       generate`'s answer; then vidi_client_wait with a callback, a
 *       cancelled request, a corrupt video (ERROR bad_media), a stop
 *       string, a missing file, and a timeout against a router that is
 *       not there.
 *   curve SERVER_PUB CLIENT_PUB CLIENT_SEC EXAMPLES
 *       with the keys the encrypted router answers; without them nothing
 *       comes back (TIMEOUT).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vidi_client.h"

#define MAXQ 64

typedef struct qa {
    char file[256], question[512], expected[2048];
    uint64_t id;
    char *streamed;
    size_t n_streamed;
    int done;
} qa;

static int failures;
#define EXPECT(cond, ...)                                          \
    do {                                                           \
        if (!(cond)) {                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);    \
            fprintf(stderr, __VA_ARGS__);                          \
            fputc('\n', stderr);                                   \
            failures++;                                            \
        }                                                          \
    } while (0)

static int is_video(const char *f) { return !strncmp(f, "video", 5); }

/* file \t question [\t ...] lines (# comments) */
static int load(const char *path, qa *q, int expected) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < MAXQ) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\n")] = 0;
        char *a = strtok(line, "\t"), *b = strtok(NULL, "\t"), *c = strtok(NULL, "\t");
        if (!a || !b) continue;
        if (expected) { /* file, question, answer: in the questions' order */
            snprintf(q[n].expected, sizeof q[n].expected, "%s", c ? c : "");
        } else {
            snprintf(q[n].file, sizeof q[n].file, "%s", a);
            snprintf(q[n].question, sizeof q[n].question, "%s", b);
        }
        n++;
    }
    fclose(f);
    return n;
}

static void append(qa *x, const char *t, size_t n) {
    char *s = realloc(x->streamed, x->n_streamed + n + 1);
    if (!s) return;
    memcpy(s + x->n_streamed, t, n);
    x->n_streamed += n;
    s[x->n_streamed] = 0;
    x->streamed = s;
}

static int submit(vidi_client *c, const char *examples, qa *x, int as_messages) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", examples, x->file);
    vidi_client_part media = is_video(x->file) ? vidi_client_part_video_file(path) : vidi_client_part_image_file(path);
    vidi_client_request_params p = vidi_client_request_params_default();
    p.max_tokens = 64;
    if (!as_messages) return vidi_client_ask(c, x->question, &media, 1, &p, &x->id);
    vidi_client_part parts[2] = {media, vidi_client_part_text(x->question)};
    vidi_client_message m = {"user", parts, 2};
    return vidi_client_submit(c, &m, 1, &p, &x->id);
}

typedef struct cb_state {
    int tokens, done;
    char text[2048];
} cb_state;

static int on_event(const vidi_client_event *ev, void *user) {
    cb_state *s = user;
    if (ev->type == VIDI_CLIENT_EV_TOKEN) s->tokens++;
    if (ev->type == VIDI_CLIENT_EV_DONE) {
        s->done = 1;
        snprintf(s->text, sizeof s->text, "%s", ev->text);
    }
    return 0;
}

static int cmd_answers(const char *router, const char *tsv, const char *examples, const char *expected_tsv) {
    static qa q[MAXQ];
    int n = load(tsv, q, 0);
    if (n <= 0 || load(expected_tsv, q, 1) != n) {
        fprintf(stderr, "e2e_sdk: cannot read %s / %s\n", tsv, expected_tsv);
        return 2;
    }
    vidi_client *c;
    if (vidi_client_connect(router, NULL, &c)) {
        fprintf(stderr, "connect: %s\n", vidi_client_last_error(NULL));
        return 1;
    }
    /* four in flight, demultiplexed by poll */
    int next = 0, done = 0, equal = 0;
    while (done < n) {
        while (next < n && next - done < 4) {
            int rc = submit(c, examples, &q[next], next % 2);
            EXPECT(rc == VIDI_CLIENT_OK, "submit %d: %s", next, vidi_client_last_error(c));
            if (rc) return 1;
            next++;
        }
        vidi_client_event ev;
        int rc = vidi_client_poll(c, 60000, &ev);
        EXPECT(rc == VIDI_CLIENT_OK && ev.type != VIDI_CLIENT_EV_NONE, "poll: %s", vidi_client_last_error(c));
        if (rc || ev.type == VIDI_CLIENT_EV_NONE) return 1;
        qa *x = NULL;
        for (int i = 0; i < next; i++)
            if (q[i].id == ev.id && !q[i].done) x = &q[i];
        EXPECT(x != NULL, "an event for request %llu that is not open", (unsigned long long)ev.id);
        if (!x) continue;
        if (ev.type == VIDI_CLIENT_EV_TOKEN) {
            append(x, ev.text, ev.text_len);
            continue;
        }
        x->done = 1;
        done++;
        EXPECT(ev.type == VIDI_CLIENT_EV_DONE, "%s / %s: error %s: %s", x->file, x->question,
               ev.error_code ? ev.error_code : "?", ev.text);
        if (ev.type != VIDI_CLIENT_EV_DONE) continue;
        EXPECT(x->streamed && !strcmp(x->streamed, ev.text), "%s: streamed '%s' != DONE '%s'", x->question,
               x->streamed ? x->streamed : "", ev.text);
        EXPECT(!strcmp(ev.text, x->expected), "%s / %s: '%s', vidi generate says '%s'", x->file, x->question, ev.text,
               x->expected);
        equal += !strcmp(ev.text, x->expected);
        EXPECT(ev.prompt_tokens > 0 && ev.n_tokens > 0 && ev.finish && *ev.finish, "DONE without usage");
    }
    printf("sdk: %d of %d answers equal single-process vidi generate (streamed, 4 in flight, ask and submit)\n",
           equal, n);

    /* wait with a callback */
    cb_state st = {0};
    char *answer = NULL;
    const char *code = NULL;
    q[0].id = 0;
    int rc = submit(c, examples, &q[0], 0);
    if (rc == VIDI_CLIENT_OK) rc = vidi_client_wait(c, q[0].id, on_event, &st, &answer, &code);
    EXPECT(rc == VIDI_CLIENT_OK && st.done && answer && !strcmp(answer, q[0].expected) && !strcmp(st.text, answer),
           "wait: rc %d (%s) answer '%s'", rc, vidi_client_last_error(c), answer ? answer : "");
    EXPECT(st.tokens > 0, "wait: the callback saw no TOKEN");
    free(answer);

    /* cancel: the request ends (DONE cancelled, or done before the cancel arrived) */
    vidi_client_request_params p = vidi_client_request_params_default();
    p.max_tokens = 2000;
    p.temperature = 1.0;
    p.seed = 7;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", examples, "video_500016.mp4");
    vidi_client_part vid = vidi_client_part_video_file(path);
    uint64_t id;
    rc = vidi_client_ask(c, "Describe the video.", &vid, 1, &p, &id);
    EXPECT(rc == VIDI_CLIENT_OK, "ask: %s", vidi_client_last_error(c));
    EXPECT(vidi_client_cancel(c, id) == VIDI_CLIENT_OK, "cancel: %s", vidi_client_last_error(c));
    rc = vidi_client_wait(c, id, NULL, NULL, &answer, &code);
    EXPECT(rc == VIDI_CLIENT_OK || (rc == VIDI_CLIENT_E_SERVER && code && !strcmp(code, "cancelled")),
           "cancelled request: rc %d: %s", rc, vidi_client_last_error(c));
    free(answer);
    answer = NULL;
    EXPECT(vidi_client_cancel(c, id) == VIDI_CLIENT_E_NOT_FOUND, "a finished request could be cancelled");

    /* a corrupt video: ERROR bad_media, and the client goes on */
    static const char junk[] = "this is not an mp4 file at all";
    vidi_client_part bad = vidi_client_part_video(junk, sizeof junk);
    rc = vidi_client_ask(c, "What moves?", &bad, 1, NULL, &id);
    if (rc == VIDI_CLIENT_OK) rc = vidi_client_wait(c, id, NULL, NULL, NULL, &code);
    EXPECT(rc == VIDI_CLIENT_E_SERVER && code && !strcmp(code, "bad_media"), "corrupt video: rc %d code %s: %s", rc,
           code ? code : "-", vidi_client_last_error(c));

    /* a stop string cuts the answer before it */
    if (strlen(q[0].expected) > 3) {
        char stop[2] = {q[0].expected[2], 0};
        const char *stops[1] = {stop};
        p = vidi_client_request_params_default();
        p.max_tokens = 64;
        p.stop = stops;
        p.n_stop = 1;
        snprintf(path, sizeof path, "%s/%s", examples, q[0].file);
        vidi_client_part m0 = is_video(q[0].file) ? vidi_client_part_video_file(path) : vidi_client_part_image_file(path);
        rc = vidi_client_ask(c, q[0].question, &m0, 1, &p, &id);
        if (rc == VIDI_CLIENT_OK) rc = vidi_client_wait(c, id, NULL, NULL, &answer, &code);
        const char *cut = strstr(q[0].expected, stop);
        EXPECT(rc == VIDI_CLIENT_OK && answer && cut && strlen(answer) == (size_t)(cut - q[0].expected) &&
                   !strncmp(answer, q[0].expected, strlen(answer)),
               "stop '%s': '%s' from '%s'", stop, answer ? answer : "", q[0].expected);
        free(answer);
        answer = NULL;
    }

    /* the router's counters */
    const char *names[128];
    uint64_t values[128];
    int ns = 0;
    rc = vidi_client_stats(c, 5000, names, values, 128, &ns);
    uint64_t requests = 0, prefill = 0;
    for (int i = 0; i < ns; i++) {
        if (!strcmp(names[i], "requests")) requests = values[i];
        if (!strcmp(names[i], "roles.prefill")) prefill = values[i];
    }
    EXPECT(rc == VIDI_CLIENT_OK && requests >= (uint64_t)n && prefill == 1, "stats: rc %d, requests %llu, roles.prefill %llu",
           rc, (unsigned long long)requests, (unsigned long long)prefill);

    /* a file that is not there fails before anything is sent */
    vidi_client_part missing = vidi_client_part_image_file("/nonexistent/x.png");
    EXPECT(vidi_client_ask(c, "q", &missing, 1, NULL, &id) == VIDI_CLIENT_E_FILE, "missing file accepted");
    vidi_client_close(c);

    /* no router: the request times out */
    vidi_client_params cp = vidi_client_params_default();
    cp.request_timeout_ms = 800;
    if (vidi_client_connect("ipc:///nonexistent-vidi/front", &cp, &c) == VIDI_CLIENT_OK) {
        rc = vidi_client_ask(c, "anyone?", NULL, 0, NULL, &id);
        if (rc == VIDI_CLIENT_OK) rc = vidi_client_wait(c, id, NULL, NULL, NULL, NULL);
        EXPECT(rc == VIDI_CLIENT_E_TIMEOUT, "no router: rc %d (%s)", rc, vidi_client_last_error(c));
        vidi_client_close(c);
    }
    printf("sdk: callback wait, cancel, bad media, stop string, missing file, timeout: %s\n",
           failures ? "FAILED" : "ok");
    return failures || equal != n ? 1 : 0;
}

static int cmd_curve(const char *router, const char *spub, const char *cpub, const char *csec, const char *examples) {
    char path[1024];
    snprintf(path, sizeof path, "%s/image_500001.png", examples);
    vidi_client_part img = vidi_client_part_image_file(path);
    vidi_client_params cp = vidi_client_params_default();
    cp.curve_server_key = spub;
    cp.curve_public_key = cpub;
    cp.curve_secret_key = csec;
    cp.request_timeout_ms = 60000;
    vidi_client *c;
    uint64_t id;
    char *answer = NULL;
    int rc = vidi_client_connect(router, &cp, &c);
    EXPECT(rc == VIDI_CLIENT_OK, "connect: %s", vidi_client_last_error(NULL));
    if (rc) return 1;
    rc = vidi_client_ask(c, "What colour is the square?", &img, 1, NULL, &id);
    if (rc == VIDI_CLIENT_OK) rc = vidi_client_wait(c, id, NULL, NULL, &answer, NULL);
    EXPECT(rc == VIDI_CLIENT_OK && answer && *answer, "with the keys: rc %d: %s", rc, vidi_client_last_error(c));
    printf("curve: with the keys the encrypted router answers '%s'\n", answer ? answer : "");
    free(answer);
    vidi_client_close(c);
    cp = vidi_client_params_default();
    cp.request_timeout_ms = 3000;
    if (vidi_client_connect(router, &cp, &c) == VIDI_CLIENT_OK) {
        rc = vidi_client_ask(c, "What colour is the square?", &img, 1, NULL, &id);
        if (rc == VIDI_CLIENT_OK) rc = vidi_client_wait(c, id, NULL, NULL, NULL, NULL);
        EXPECT(rc == VIDI_CLIENT_E_TIMEOUT, "without keys: rc %d (%s)", rc, vidi_client_last_error(c));
        printf("curve: without keys nothing comes back (%s)\n", vidi_client_status_name(rc));
        vidi_client_close(c);
    }
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && !strcmp(argv[2], "answers")) return cmd_answers(argv[1], argv[3], argv[4], argv[5]);
    if (argc >= 7 && !strcmp(argv[2], "curve")) return cmd_curve(argv[1], argv[3], argv[4], argv[5], argv[6]);
    fprintf(stderr, "usage: e2e_sdk ROUTER answers TSV EXAMPLES EXPECTED | curve SPUB CPUB CSEC EXAMPLES\n");
    return 2;
}
