/* tests/caption/caption_check.c — the JSON side of tests/caption/run.sh (the
 * end-to-end tests of vidi-caption): writes manifests from the held-out
 * scenes of tests/data/shapes and checks vidi-caption's output lines against
 * the scenes' ground truth and transformers' reference answers.
 *
 *   caption_check questions SHAPES OUT.jsonl
 *       a manifest of every question of SHAPES/manifest.json, one line
 *       {"id": "FILE#K", "path": "SHAPES/FILE", "prompt": QUESTION} each.
 *   caption_check answers SHAPES RESULTS.jsonl MIN_ACCURACY MIN_AGREEMENT
 *       every question answered exactly once and without error; the share
 *       of answers equal to the ground truth >= MIN_ACCURACY, and equal to
 *       transformers' answer (SHAPES/reference_answers.json) >= MIN_AGREEMENT.
 *   caption_check captions SHAPES RESULTS.jsonl MIN_EXACT
 *       every file of the manifest captioned exactly once (nothing else, no
 *       errors, non-empty captions, tokens > 0); the share of captions equal
 *       to the reference caption >= MIN_EXACT.
 *   caption_check lines RESULTS.jsonl N
 *       exactly N lines, N different paths, each a success with a caption.
 *   caption_check item RESULTS.jsonl NAME ok | error SUBSTRING
 *       the one line whose path ends in /NAME succeeded, or failed with an
 *       error that contains SUBSTRING.
 *   caption_check sidecar RESULTS.jsonl EXT
 *       for each line, the file next to its path with extension EXT holds
 *       the caption and a newline.
 *   caption_check batch-make SHAPES IN.jsonl
 *       OpenAI batch lines (file:// and data: URLs, a system message, a
 *       max_tokens limit, and three lines that must fail), with the answer
 *       each must get in its custom_id's table (see s_batch_cases).
 *   caption_check batch-check SHAPES OUT.jsonl
 *       one OpenAI batch output line per input line with the expected
 *       answer, finish reason and usage, or the expected error.
 *
 * Exit status 0 when the check holds, 1 when not (it says why), 2 on usage.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...) (fprintf(stderr, "caption_check: " __VA_ARGS__), fputc('\n', stderr), 1)

static json_t *s_load(const char *path) {
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j) fprintf(stderr, "caption_check: %s:%d: %s\n", path, e.line, e.text);
    return j;
}

/* The lines of a JSONL file as an array (NULL when a line is not JSON). */
static json_t *s_load_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "caption_check: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    json_t *a = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] != '\n') {
            fprintf(stderr, "caption_check: %s:%d: a line without its newline\n", path, lineno);
            json_decref(a);
            a = NULL;
            break;
        }
        json_error_t e;
        json_t *j = json_loadb(line, (size_t)n, 0, &e);
        if (!j) {
            fprintf(stderr, "caption_check: %s:%d: %s\n", path, lineno, e.text);
            json_decref(a);
            a = NULL;
            break;
        }
        json_array_append_new(a, j);
    }
    free(line);
    fclose(f);
    return a;
}

static const char *s_str(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static const char *s_base(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* A plain output line is a success: "error" null, a non-empty caption. */
static int s_ok(json_t *line) {
    return json_is_null(json_object_get(line, "error")) && json_is_string(json_object_get(line, "caption")) &&
           *s_str(line, "caption");
}

static json_t *s_manifest(const char *shapes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", shapes);
    json_t *m = s_load(path);
    if (m && !json_is_array(json_object_get(m, "scenes"))) {
        fprintf(stderr, "caption_check: %s has no scenes\n", path);
        json_decref(m);
        return NULL;
    }
    return m;
}

/* ---- questions / answers ---- */

static int s_questions(const char *shapes, const char *out) {
    json_t *m = s_manifest(shapes);
    if (!m) return 1;
    FILE *f = fopen(out, "w");
    if (!f) return FAIL("%s: %s", out, strerror(errno));
    size_t i, n = 0;
    json_t *sc;
    json_array_foreach(json_object_get(m, "scenes"), i, sc) {
        size_t k;
        json_t *q;
        json_array_foreach(json_object_get(sc, "questions"), k, q) {
            char id[512], path[4096];
            snprintf(id, sizeof id, "%s#%zu", s_str(sc, "file"), k);
            snprintf(path, sizeof path, "%s/%s", shapes, s_str(sc, "file"));
            json_t *line = json_pack("{s:s, s:s, s:s}", "id", id, "path", path, "prompt", s_str(q, "question"));
            char *s = json_dumps(line, JSON_COMPACT);
            fprintf(f, "%s\n", s);
            free(s);
            json_decref(line);
            n++;
        }
    }
    fclose(f);
    json_decref(m);
    printf("questions: %zu\n", n);
    return n ? 0 : FAIL("no questions in %s/manifest.json", shapes);
}

static int s_answers(const char *shapes, const char *results, double min_acc, double min_agree) {
    json_t *m = s_manifest(shapes), *lines = s_load_lines(results);
    char rpath[4096];
    snprintf(rpath, sizeof rpath, "%s/reference_answers.json", shapes);
    json_t *ref = s_load(rpath);
    if (!m || !lines || !ref) return 1;
    json_t *truth = json_object(), *question = json_object(), *reference = json_object(), *seen = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(m, "scenes"), i, v) {
        size_t k;
        json_t *q;
        json_array_foreach(json_object_get(v, "questions"), k, q) {
            char id[512];
            snprintf(id, sizeof id, "%s#%zu", s_str(v, "file"), k);
            json_object_set_new(truth, id, json_string(s_str(q, "answer")));
            json_object_set_new(question, id, json_string(s_str(q, "question")));
        }
    }
    json_array_foreach(json_object_get(ref, "answers"), i, v) {
        char key[1024];
        snprintf(key, sizeof key, "%s\t%s", s_str(v, "file"), s_str(v, "question"));
        json_object_set_new(reference, key, json_string(s_str(v, "answer")));
    }
    int rc = 0;
    size_t correct = 0, agree = 0, n = 0;
    json_array_foreach(lines, i, v) {
        const char *id = s_str(v, "id");
        const char *t = json_string_value(json_object_get(truth, id));
        if (!t) {
            rc = FAIL("line %zu: id \"%s\" is not a question", i + 1, id);
            break;
        }
        if (json_object_get(seen, id)) {
            rc = FAIL("line %zu: question %s answered twice", i + 1, id);
            break;
        }
        json_object_set_new(seen, id, json_true());
        if (!s_ok(v)) {
            rc = FAIL("line %zu: question %s failed: %s", i + 1, id, s_str(v, "error"));
            break;
        }
        char file[512], key[1024];
        snprintf(file, sizeof file, "%s", id);
        *strrchr(file, '#') = 0;
        if (strcmp(s_base(s_str(v, "path")), file) ||
            strcmp(s_str(v, "prompt"), json_string_value(json_object_get(question, id))))
            rc = FAIL("line %zu: question %s has path %s, prompt \"%s\"", i + 1, id, s_str(v, "path"), s_str(v, "prompt"));
        snprintf(key, sizeof key, "%s\t%s", file, json_string_value(json_object_get(question, id)));
        const char *r = json_string_value(json_object_get(reference, key));
        const char *a = s_str(v, "caption");
        correct += !strcmp(a, t);
        agree += r && !strcmp(a, r);
        n++;
    }
    if (!rc && n != json_object_size(truth)) rc = FAIL("%zu of %zu questions answered", n, json_object_size(truth));
    if (!rc) {
        double acc = (double)correct / (double)n, ag = (double)agree / (double)n;
        printf("answers: %zu questions, accuracy %.3f (%zu/%zu, floor %.2f), transformers' answer on %zu/%zu (%.3f, floor %.2f)\n",
               n, acc, correct, n, min_acc, agree, n, ag, min_agree);
        if (acc < min_acc) rc = FAIL("accuracy %.3f is under %.2f", acc, min_acc);
        if (ag < min_agree) rc = FAIL("agreement with transformers %.3f is under %.2f", ag, min_agree);
    }
    json_decref(m), json_decref(lines), json_decref(ref);
    json_decref(truth), json_decref(question), json_decref(reference), json_decref(seen);
    return rc;
}

/* ---- captions ---- */

static int s_captions(const char *shapes, const char *results, double min_exact) {
    json_t *m = s_manifest(shapes), *lines = s_load_lines(results);
    if (!m || !lines) return 1;
    json_t *ref = json_object(), *seen = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(m, "scenes"), i, v) json_object_set_new(ref, s_str(v, "file"), json_string(s_str(v, "caption")));
    int rc = 0;
    size_t exact = 0, images = 0, videos = 0;
    json_array_foreach(lines, i, v) {
        const char *name = s_base(s_str(v, "path"));
        const char *r = json_string_value(json_object_get(ref, name));
        if (!r) {
            rc = FAIL("line %zu: %s is not a scene of the manifest", i + 1, s_str(v, "path"));
            break;
        }
        if (json_object_get(seen, name)) {
            rc = FAIL("line %zu: %s captioned twice", i + 1, name);
            break;
        }
        json_object_set_new(seen, name, json_true());
        json_int_t tokens = json_integer_value(json_object_get(v, "tokens"));
        if (!s_ok(v) || tokens < 1 || !json_is_number(json_object_get(v, "latency_s"))) {
            rc = FAIL("line %zu: %s: no caption (error %s, tokens %lld)", i + 1, name, s_str(v, "error"), (long long)tokens);
            break;
        }
        exact += !strcmp(s_str(v, "caption"), r);
        images += !strncmp(name, "image_", 6);
        videos += !strncmp(name, "video_", 6);
    }
    size_t n = json_array_size(lines);
    if (!rc && n != json_object_size(ref)) rc = FAIL("%zu of %zu files captioned", n, json_object_size(ref));
    if (!rc) {
        double share = (double)exact / (double)n;
        printf("captions: %zu files (%zu images, %zu videos), %zu equal to the reference caption word for word (%.3f, floor %.2f)\n",
               n, images, videos, exact, share, min_exact);
        if (share < min_exact) rc = FAIL("exact captions %.3f are under %.2f", share, min_exact);
    }
    json_decref(m), json_decref(lines), json_decref(ref), json_decref(seen);
    return rc;
}

static int s_lines(const char *results, long want) {
    json_t *lines = s_load_lines(results);
    if (!lines) return 1;
    json_t *seen = json_object();
    int rc = 0;
    size_t i;
    json_t *v;
    json_array_foreach(lines, i, v) {
        const char *p = s_str(v, "path");
        if (json_object_get(seen, p)) rc = FAIL("line %zu: %s is there twice", i + 1, p);
        json_object_set_new(seen, p, json_true());
        if (!s_ok(v)) rc = FAIL("line %zu: %s has no caption (error %s)", i + 1, p, s_str(v, "error"));
        if (rc) break;
    }
    if (!rc && (long)json_array_size(lines) != want) rc = FAIL("%zu lines, expected %ld", json_array_size(lines), want);
    if (!rc) printf("lines: %zu, %zu different paths, every one captioned\n", json_array_size(lines), json_object_size(seen));
    json_decref(lines), json_decref(seen);
    return rc;
}

static int s_item(const char *results, const char *name, const char *want, const char *substr) {
    json_t *lines = s_load_lines(results);
    if (!lines) return 1;
    json_t *hit = NULL;
    size_t i, hits = 0;
    json_t *v;
    json_array_foreach(lines, i, v) if (!strcmp(s_base(s_str(v, "path")), name)) hit = v, hits++;
    int rc = 0;
    if (hits != 1) rc = FAIL("%s: %zu lines, expected 1", name, hits);
    else if (!strcmp(want, "ok") && !s_ok(hit)) rc = FAIL("%s: failed: %s", name, s_str(hit, "error"));
    else if (!strcmp(want, "error")) {
        const char *e = json_string_value(json_object_get(hit, "error"));
        if (!e) rc = FAIL("%s: succeeded (\"%s\"), expected an error", name, s_str(hit, "caption"));
        else if (!strstr(e, substr)) rc = FAIL("%s: error \"%s\" does not say \"%s\"", name, e, substr);
        else if (!json_is_null(json_object_get(hit, "caption"))) rc = FAIL("%s: an error line with a caption", name);
        else printf("item %s: error \"%s\"\n", name, e);
    }
    json_decref(lines);
    return rc;
}

static int s_sidecar(const char *results, const char *ext) {
    json_t *lines = s_load_lines(results);
    if (!lines) return 1;
    int rc = 0;
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(lines, i, v) {
        char path[4096], want[4096], got[4096] = "";
        snprintf(path, sizeof path, "%s", s_str(v, "path"));
        char *dot = strrchr(path, '.');
        if (dot && dot > strrchr(path, '/')) *dot = 0;
        strncat(path, ext, sizeof path - strlen(path) - 1);
        FILE *f = fopen(path, "r");
        if (!f) {
            rc = FAIL("no sidecar %s: %s", path, strerror(errno));
            break;
        }
        size_t len = fread(got, 1, sizeof got - 1, f);
        got[len] = 0;
        fclose(f);
        snprintf(want, sizeof want, "%s\n", s_str(v, "caption"));
        if (!s_ok(v) || strcmp(got, want)) {
            rc = FAIL("%s holds \"%s\", the caption is \"%s\"", path, got, s_str(v, "caption"));
            break;
        }
        n++;
    }
    if (!rc && !n) rc = FAIL("no lines in %s", results);
    if (!rc) printf("sidecar: %zu files, each with its caption\n", n);
    json_decref(lines);
    return rc;
}

/* ---- OpenAI batch ---- */

static char *s_file_base64(const char *path) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    char *out = malloc((size_t)(n + 2) / 3 * 4 + 1);
    if (!b || !out || n <= 0 || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b), free(out);
        return NULL;
    }
    fclose(f);
    size_t k = 0;
    for (long i = 0; i < n; i += 3) {
        unsigned v = (unsigned)b[i] << 16 | (i + 1 < n ? (unsigned)b[i + 1] << 8 : 0) | (i + 2 < n ? b[i + 2] : 0);
        out[k++] = tab[v >> 18 & 63];
        out[k++] = tab[v >> 12 & 63];
        out[k++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[k++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[k] = 0;
    free(b);
    return out;
}

/* The batch cases: a file, how it is given, the prompt, and what must come
 * back. expect "ref": transformers' answer to (file, prompt) from
 * reference_answers.json; "len2": finish "length" after 2 tokens; "400:SUB":
 * status 400 with SUB in the error's code or message. */
typedef struct batch_case {
    const char *id, *file, *how, *prompt, *expect;
} batch_case;

static const batch_case s_batch_cases[] = {
    {"png-file", "image_1.png", "file", "What colour is the star?", "ref"},
    {"png-data", "image_1.png", "data", "What colour is the star?", "ref"},
    {"jpg-data", "image_3.jpg", "data", "What shape is the blue object?", "ref"},
    {"mp4-file", "video_0.mp4", "file", "Which way does the yellow circle move?", "ref"},
    {"webm-data", "video_2.webm", "data", "What shape is the orange object?", "ref"},
    {"system", "image_5.png", "system", "What shape is the green object?", "ref"},
    {"max-tokens", "video_4.mp4", "max2", "Describe the video.", "len2"},
    {"bad-base64", "image_1.png", "badb64", "What colour is the star?", "400:base64"},
    {"bad-http", "image_1.png", "http", "What colour is the star?", "400:file:// and data:"},
    {"bad-missing", "no_such_image.png", "file", "What colour is the star?", "400:no_such_image.png"},
};
#define N_CASES (sizeof s_batch_cases / sizeof s_batch_cases[0])

static int s_batch_make(const char *shapes, const char *out) {
    FILE *f = fopen(out, "w");
    if (!f) return FAIL("%s: %s", out, strerror(errno));
    for (size_t i = 0; i < N_CASES; i++) {
        const batch_case *c = &s_batch_cases[i];
        char path[4096], *url = NULL;
        snprintf(path, sizeof path, "%s/%s", shapes, c->file);
        int video = !strncmp(c->file, "video_", 6);
        const char *ext = strrchr(c->file, '.') + 1;
        if (!strcmp(c->how, "data")) {
            char *b = s_file_base64(path);
            if (!b) return FAIL("%s: cannot read", path);
            const char *mime = !strcmp(ext, "png") ? "image/png" : !strcmp(ext, "jpg") ? "image/jpeg"
                               : !strcmp(ext, "webm")                 ? "video/webm"
                                                                      : "video/mp4";
            url = malloc(strlen(b) + 64);
            sprintf(url, "data:%s;base64,%s", mime, b);
            free(b);
        } else if (!strcmp(c->how, "badb64")) {
            url = strdup("data:image/png;base64,@@not base64@@");
        } else if (!strcmp(c->how, "http")) {
            url = strdup("https://example.com/image_1.png");
        } else {
            url = malloc(strlen(path) + 16);
            sprintf(url, "file://%s", path);
        }
        const char *part = video ? "video_url" : "image_url";
        json_t *content = json_pack("[{s:s, s:{s:s}}, {s:s, s:s}]", "type", part, part, "url", url, "type", "text", "text",
                                    c->prompt);
        json_t *msgs = json_array();
        if (!strcmp(c->how, "system"))
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", "You are a helpful assistant."));
        json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", "user", "content", content));
        json_t *body = json_pack("{s:s, s:o, s:i}", "model", "vidi-shapes", "messages", msgs, "max_tokens",
                                 !strcmp(c->how, "max2") ? 2 : 64);
        json_t *line = json_pack("{s:s, s:s, s:s, s:o}", "custom_id", c->id, "method", "POST", "url", "/v1/chat/completions",
                                 "body", body);
        char *s = json_dumps(line, JSON_COMPACT);
        fprintf(f, "%s\n", s);
        free(s);
        free(url);
        json_decref(line);
    }
    fclose(f);
    printf("batch: %zu lines\n", N_CASES);
    return 0;
}

static int s_batch_check(const char *shapes, const char *out) {
    json_t *lines = s_load_lines(out);
    char rpath[4096];
    snprintf(rpath, sizeof rpath, "%s/reference_answers.json", shapes);
    json_t *ref = s_load(rpath);
    if (!lines || !ref) return 1;
    int rc = 0;
    size_t n_ok = 0, n_err = 0;
    for (size_t c = 0; c < N_CASES && !rc; c++) {
        const batch_case *bc = &s_batch_cases[c];
        json_t *hit = NULL, *v;
        size_t i, hits = 0;
        json_array_foreach(lines, i, v) if (!strcmp(s_str(v, "custom_id"), bc->id)) hit = v, hits++;
        if (hits != 1) {
            rc = FAIL("custom_id %s: %zu output lines, expected 1", bc->id, hits);
            break;
        }
        json_t *resp = json_object_get(hit, "response"), *body = json_object_get(resp, "body");
        json_int_t status = json_integer_value(json_object_get(resp, "status_code"));
        if (!*s_str(hit, "id") || !*s_str(resp, "request_id")) {
            rc = FAIL("custom_id %s: no \"id\" or \"response.request_id\"", bc->id);
            break;
        }
        if (!strncmp(bc->expect, "400:", 4)) {
            json_t *err = json_object_get(hit, "error");
            const char *msg = s_str(err, "message");
            if (status != 400 || !json_is_object(err) || !json_is_object(json_object_get(body, "error")) ||
                (!strstr(msg, bc->expect + 4) && !strstr(s_str(err, "code"), bc->expect + 4)))
                rc = FAIL("custom_id %s: expected status 400 with \"%s\", got %lld: %s", bc->id, bc->expect + 4,
                          (long long)status, msg);
            n_err++;
            continue;
        }
        json_t *choice = json_array_get(json_object_get(body, "choices"), 0);
        json_t *usage = json_object_get(body, "usage");
        const char *content = s_str(json_object_get(choice, "message"), "content");
        const char *finish = s_str(choice, "finish_reason");
        json_int_t ctok = json_integer_value(json_object_get(usage, "completion_tokens"));
        json_int_t ptok = json_integer_value(json_object_get(usage, "prompt_tokens"));
        if (status != 200 || !json_is_null(json_object_get(hit, "error")) || strcmp(s_str(body, "object"), "chat.completion") ||
            strcmp(s_str(body, "model"), "vidi-shapes") || strcmp(s_str(json_object_get(choice, "message"), "role"), "assistant") ||
            ptok < 1 || json_integer_value(json_object_get(usage, "total_tokens")) != ptok + ctok) {
            rc = FAIL("custom_id %s: not a chat.completion of status 200 (status %lld, error %s)", bc->id, (long long)status,
                      s_str(json_object_get(hit, "error"), "message"));
            break;
        }
        if (!strcmp(bc->expect, "len2")) {
            if (strcmp(finish, "length") || ctok != 2 || !*content)
                rc = FAIL("custom_id %s: expected finish \"length\" after 2 tokens, got %s after %lld: \"%s\"", bc->id, finish,
                          (long long)ctok, content);
        } else {
            const char *want = NULL;
            json_array_foreach(json_object_get(ref, "answers"), i, v) if (!strcmp(s_str(v, "file"), bc->file) &&
                                                                          !strcmp(s_str(v, "question"), bc->prompt)) want =
                s_str(v, "answer");
            if (!want) rc = FAIL("custom_id %s: no reference answer to (%s, %s)", bc->id, bc->file, bc->prompt);
            else if (strcmp(content, want) || strcmp(finish, "stop"))
                rc = FAIL("custom_id %s: answered \"%s\" (%s), transformers answers \"%s\"", bc->id, content, finish, want);
            else printf("batch %s: \"%s\"\n", bc->id, content);
        }
        n_ok++;
    }
    if (!rc && json_array_size(lines) != N_CASES) rc = FAIL("%zu output lines for %zu input lines", json_array_size(lines), N_CASES);
    if (!rc) printf("batch: %zu lines, %zu answered as expected, %zu failed as expected\n", N_CASES, n_ok, n_err);
    json_decref(lines), json_decref(ref);
    return rc;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "questions") && argc == 4) return s_questions(argv[2], argv[3]);
    if (!strcmp(cmd, "answers") && argc == 6) return s_answers(argv[2], argv[3], atof(argv[4]), atof(argv[5]));
    if (!strcmp(cmd, "captions") && argc == 5) return s_captions(argv[2], argv[3], atof(argv[4]));
    if (!strcmp(cmd, "lines") && argc == 4) return s_lines(argv[2], atol(argv[3]));
    if (!strcmp(cmd, "item") && argc == 5 && !strcmp(argv[4], "ok")) return s_item(argv[2], argv[3], "ok", NULL);
    if (!strcmp(cmd, "item") && argc == 6 && !strcmp(argv[4], "error")) return s_item(argv[2], argv[3], "error", argv[5]);
    if (!strcmp(cmd, "sidecar") && argc == 4) return s_sidecar(argv[2], argv[3]);
    if (!strcmp(cmd, "batch-make") && argc == 4) return s_batch_make(argv[2], argv[3]);
    if (!strcmp(cmd, "batch-check") && argc == 4) return s_batch_check(argv[2], argv[3]);
    fprintf(stderr, "usage: caption_check questions|answers|captions|lines|item|sidecar|batch-make|batch-check ... (see the source)\n");
    return 2;
}
