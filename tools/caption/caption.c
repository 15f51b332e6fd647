/* tools/caption/caption.c — vidi-caption: caption a folder of images and
 * videos, or the items of a JSONL manifest, through a vidi router (the C SDK,
 * ipc/sdk/vidi_client.h), several requests in flight on one handle.
 *
 * Inputs: a folder (sorted; --recursive; --ext), or --manifest FILE whose
 * lines are {"path", "prompt"?, "id"?, "kind"?} or OpenAI batch lines
 * {"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}.
 * Output: one JSONL line per item as it completes ({"path", "caption",
 * "tokens", "latency_s", "error"}, or the OpenAI batch output shape for batch
 * lines), each written with one write(2) and fsync'ed every second, so that
 * --resume can skip the items that already have a successful line after a
 * crash (a torn last line is cut off). tools/caption/README.md is the manual.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "core/base64.h"
#include "vidi_client.h"

#define CAP_MAX_ITEMS 10000000             /* items of one run */
#define CAP_MAX_LINE ((size_t)1 << 30)      /* one manifest or output line (base64 media included) */
#define CAP_MAX_DEPTH 64                    /* --recursive: folder depth */
#define CAP_MAX_CONCURRENCY 256             /* the router's default admission limit */
#define CAP_MAX_MESSAGES 64                 /* a batch line's messages (the SDK's limit) */
#define CAP_MAX_PARTS 256                   /* a batch line's parts, all messages */
#define CAP_MAX_PATH 4096
#define CAP_MAX_EXTS 64
#define CAP_ERR 1024
#define CAP_SYNC_MS 1000                    /* fsync the output at least this often */
#define CAP_BACKOFF_MS 500                  /* first retry after this long, doubling ... */
#define CAP_BACKOFF_MAX_MS 8000             /* ... up to this */
#define CAP_MAX_OVERLOADS 100               /* "overloaded" answers to one item before it fails */

static volatile sig_atomic_t g_stop;
static void s_on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int64_t s_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ options */

typedef struct cap_ext {
    char name[16];                 /* lower case, no dot */
    vidi_client_part_type kind;    /* IMAGE or VIDEO */
} cap_ext;

/* What vidi's media stage decodes (media/sniff.h), by the usual names. */
static const char *const k_image_exts[] = {"png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"};
static const char *const k_video_exts[] = {"mp4", "webm", "mkv", "mov", "m4v", "avi", "ts", "flv", "3gp"};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

typedef struct cap_opts {
    const char *dir, *manifest, *output, *router, *prompt, *system, *caption_ext;
    int recursive, sidecar, resume, overwrite, quiet;
    int max_tokens, top_k, concurrency, retries;
    double temperature, top_p, fps, timeout_s, progress_s;
    int64_t seed;
    uint64_t min_pixels, max_pixels;
    cap_ext exts[CAP_MAX_EXTS];
    int n_exts;
} cap_opts;

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: vidi-caption [options] DIR\n"
            "       vidi-caption [options] --manifest FILE\n"
            "Captions every image and video of DIR (sorted by path), or the items of a JSONL manifest,\n"
            "through a vidi router (`vidi up`), writing one JSON line per item as it completes.\n"
            "\n"
            "input:\n"
            "  DIR                     a folder; its files whose extension --ext names\n"
            "  --recursive             also the folders under DIR (hidden entries and linked folders are skipped)\n"
            "  --ext LIST              extensions to take, comma-separated (default: all of\n"
            "                          png,jpg,jpeg,webp,bmp,gif,tif,tiff and mp4,webm,mkv,mov,m4v,avi,ts,flv,3gp)\n"
            "  --manifest FILE         JSONL, one item a line: {\"path\", \"prompt\"?, \"id\"?, \"kind\"?} (relative\n"
            "                          paths are taken from FILE's folder), or an OpenAI batch line {\"custom_id\",\n"
            "                          \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {\"messages\", ...}}\n"
            "                          with image_url / video_url parts as file:// or data:...;base64, URLs\n"
            "output:\n"
            "  --output FILE           the JSONL results (default: stdout; a file is needed for --resume)\n"
            "  --resume                skip the items that have a successful line in FILE, append the rest\n"
            "  --overwrite             replace an existing FILE (without --resume or this, a non-empty FILE is an error)\n"
            "  --sidecar               also write each caption next to its file (a.mp4 -> a.txt)\n"
            "  --caption-extension EXT the sidecar's extension (default .txt)\n"
            "request:\n"
            "  --router EP             the router's front endpoint (default ipc://$XDG_RUNTIME_DIR/vidi/front,\n"
            "                          or ipc:///tmp/vidi-UID/front without XDG_RUNTIME_DIR, as `vidi up`)\n"
            "  --prompt TEXT           the prompt of every item without its own (default: \"Describe the image.\"\n"
            "                          for images, \"Describe the video.\" for videos)\n"
            "  --system TEXT           a system message before each item\n"
            "  --max-tokens N          default 128       --temperature T   default 0 (greedy)\n"
            "  --top-p P               default 1         --top-k K         default 0 (all)\n"
            "  --seed S                default: the router picks\n"
            "  --fps F                 frames sampled per second of video (default: the model's, 2)\n"
            "  --min-pixels N, --max-pixels N            per image or frame (default: the model's)\n"
            "  --concurrency N         requests in flight at once (default 4, at most %d)\n"
            "  --retries N             tries again after overloaded / timeout / no_worker / worker_lost (default 3)\n"
            "  --timeout-s S           a request without an answer after S seconds is cancelled (default 300)\n"
            "progress:\n"
            "  --progress-s S          without a terminal, a progress line every S seconds (default 5)\n"
            "  --quiet                 no progress and no summary\n"
            "\n"
            "Exit status: 0 when every item succeeded (or was done before), 1 when some failed or the run\n"
            "stopped early, 2 on a usage or input error.\n",
            CAP_MAX_CONCURRENCY);
}

/* An integer option in [lo, hi]; 0, or -1 after saying what is wrong. */
static int s_opt_int(const char *opt, const char *v, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "vidi-caption: %s %s: expected an integer in [%lld, %lld]\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int s_opt_double(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "vidi-caption: %s %s: expected a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int s_ext_known(const char *name, vidi_client_part_type *kind) {
    for (size_t i = 0; i < N_OF(k_image_exts); i++)
        if (!strcasecmp(name, k_image_exts[i])) return *kind = VIDI_CLIENT_PART_IMAGE, 1;
    for (size_t i = 0; i < N_OF(k_video_exts); i++)
        if (!strcasecmp(name, k_video_exts[i])) return *kind = VIDI_CLIENT_PART_VIDEO, 1;
    return 0;
}

static void s_exts_default(cap_opts *o) {
    o->n_exts = 0;
    for (size_t i = 0; i < N_OF(k_image_exts); i++) {
        snprintf(o->exts[o->n_exts].name, sizeof o->exts[0].name, "%s", k_image_exts[i]);
        o->exts[o->n_exts++].kind = VIDI_CLIENT_PART_IMAGE;
    }
    for (size_t i = 0; i < N_OF(k_video_exts); i++) {
        snprintf(o->exts[o->n_exts].name, sizeof o->exts[0].name, "%s", k_video_exts[i]);
        o->exts[o->n_exts++].kind = VIDI_CLIENT_PART_VIDEO;
    }
}

/* --ext LIST: comma-separated, each with or without its dot. */
static int s_exts_parse(cap_opts *o, const char *list) {
    o->n_exts = 0;
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *e = p;
        if (n && *e == '.') e++, n--;
        char name[16];
        if (n == 0 || n >= sizeof name) {
            fprintf(stderr, "vidi-caption: --ext %s: an empty or overlong extension\n", list);
            return -1;
        }
        memcpy(name, e, n);
        name[n] = 0;
        vidi_client_part_type kind;
        if (!s_ext_known(name, &kind)) {
            fprintf(stderr,
                    "vidi-caption: --ext: '%s' is not an image or video extension vidi decodes\n"
                    "  images: png jpg jpeg webp bmp gif tif tiff; videos: mp4 webm mkv mov m4v avi ts flv 3gp\n",
                    name);
            return -1;
        }
        if (o->n_exts == CAP_MAX_EXTS) {
            fprintf(stderr, "vidi-caption: --ext: at most %d extensions\n", CAP_MAX_EXTS);
            return -1;
        }
        for (char *c = name; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        snprintf(o->exts[o->n_exts].name, sizeof o->exts[0].name, "%s", name);
        o->exts[o->n_exts++].kind = kind;
        p += (size_t)(e - p) + n;
        if (*p == ',') p++;
    }
    if (!o->n_exts) {
        fprintf(stderr, "vidi-caption: --ext is empty\n");
        return -1;
    }
    return 0;
}

/* The extension of path (after the last dot of its last component), or "". */
static const char *s_path_ext(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    return dot && dot != base ? dot + 1 : "";
}

/* ------------------------------------------------------------ items */

typedef enum cap_item_type {
    CAP_ITEM_PATH = 0,  /* a media file and a prompt: the plain output line */
    CAP_ITEM_BATCH = 1  /* an OpenAI batch line: the batch output line */
} cap_item_type;

typedef struct cap_item {
    cap_item_type type;
    vidi_client_part_type kind;  /* PATH: IMAGE or VIDEO */
    char *path;                  /* PATH: as given (the output's "path") */
    char *file;                  /* PATH: the file to read (a manifest's relative path joined to its folder) */
    char *prompt;                /* PATH: the manifest line's own prompt, or NULL */
    char *id;                    /* PATH: the manifest line's "id"; BATCH: its custom_id */
    char *key;                   /* what --resume matches: "c:" custom_id, "i:" id or "p:" path */
    long line;                   /* the manifest's line (1-based); 0 for a folder's file */
    off_t offset;                /* BATCH: where the line is in the manifest (read again when submitted) */
    size_t len;
    int skip;                    /* --resume: the output has a successful line for it */
} cap_item;

typedef struct cap_items {
    cap_item *v;
    size_t n, cap;
} cap_items;

static void s_item_free(cap_item *it) {
    free(it->path);
    free(it->file);
    free(it->prompt);
    free(it->id);
    free(it->key);
}

static cap_item *s_items_push(cap_items *a) {
    if (a->n == CAP_MAX_ITEMS) {
        fprintf(stderr, "vidi-caption: more than %d items\n", CAP_MAX_ITEMS);
        return NULL;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        cap_item *v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            fprintf(stderr, "vidi-caption: out of memory for the item list\n");
            return NULL;
        }
        a->v = v;
        a->cap = cap;
    }
    cap_item *it = &a->v[a->n++];
    memset(it, 0, sizeof *it);
    return it;
}

static char *s_strcat2(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
    return s;
}

/* ---- a set of strings (keys), open addressing ---- */

typedef struct cap_set {
    char **slot;
    size_t cap, n;
} cap_set;

static uint64_t s_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* 1 when s was added, 0 when it was there, -1 out of memory. The set keeps a copy. */
static int s_set_add(cap_set *st, const char *s) {
    if (2 * (st->n + 1) > st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 1024;
        char **slot = calloc(cap, sizeof *slot);
        if (!slot) return -1;
        for (size_t i = 0; i < st->cap; i++)
            if (st->slot[i]) {
                size_t k = s_hash(st->slot[i]) & (cap - 1);
                while (slot[k]) k = (k + 1) & (cap - 1);
                slot[k] = st->slot[i];
            }
        free(st->slot);
        st->slot = slot;
        st->cap = cap;
    }
    size_t k = s_hash(s) & (st->cap - 1);
    for (; st->slot[k]; k = (k + 1) & (st->cap - 1))
        if (!strcmp(st->slot[k], s)) return 0;
    if (!(st->slot[k] = strdup(s))) return -1;
    st->n++;
    return 1;
}

static int s_set_has(const cap_set *st, const char *s) {
    if (!st->cap) return 0;
    for (size_t k = s_hash(s) & (st->cap - 1); st->slot[k]; k = (k + 1) & (st->cap - 1))
        if (!strcmp(st->slot[k], s)) return 1;
    return 0;
}

static void s_set_free(cap_set *st) {
    for (size_t i = 0; i < st->cap; i++) free(st->slot[i]);
    free(st->slot);
    memset(st, 0, sizeof *st);
}

/* ---- a folder ---- */

static int s_cmp_items(const void *a, const void *b) {
    return strcmp(((const cap_item *)a)->path, ((const cap_item *)b)->path);
}

static const cap_ext *s_ext_find(const cap_opts *o, const char *path) {
    const char *e = s_path_ext(path);
    for (int i = 0; *e && i < o->n_exts; i++)
        if (!strcasecmp(e, o->exts[i].name)) return &o->exts[i];
    return NULL;
}

/* The files of dir (and of its folders when recursive) that --ext names, into
 * items; unreadable subfolders are reported and skipped. 0, or -1 (said). */
static int s_walk(const cap_opts *o, const char *dir, int depth, cap_items *items) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "vidi-caption: %s: %s\n", dir, strerror(errno));
        return depth ? 0 : -1;
    }
    size_t nd = strlen(dir);
    int slash = nd && dir[nd - 1] == '/';
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[CAP_MAX_PATH];
        if ((size_t)snprintf(path, sizeof path, "%s%s%s", dir, slash ? "" : "/", de->d_name) >= sizeof path) {
            fprintf(stderr, "vidi-caption: skipping a path over %d bytes in %s\n", CAP_MAX_PATH, dir);
            continue;
        }
        struct stat sb;
        if (lstat(path, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (!o->recursive) continue;
            if (depth + 1 >= CAP_MAX_DEPTH) {
                fprintf(stderr, "vidi-caption: %s: deeper than %d folders; skipped\n", path, CAP_MAX_DEPTH);
                continue;
            }
            rc = s_walk(o, path, depth + 1, items);
            continue;
        }
        if (S_ISLNK(sb.st_mode) && (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))) continue;
        if (!S_ISREG(sb.st_mode)) continue;
        const cap_ext *e = s_ext_find(o, path);
        if (!e) continue;
        cap_item *it = s_items_push(items);
        if (!it) {
            rc = -1;
            break;
        }
        it->type = CAP_ITEM_PATH;
        it->kind = e->kind;
        it->path = strdup(path);
        it->file = strdup(path);
        it->key = s_strcat2("p:", path);
        if (!it->path || !it->file || !it->key) {
            fprintf(stderr, "vidi-caption: out of memory\n");
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

/* ---- a manifest ---- */

static int s_json_str(json_t *o, const char *k, const char **out) {
    json_t *v = json_object_get(o, k);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return -1;
    *out = json_string_value(v);
    return 0;
}

/* Checks a batch line as far as it can be checked without its media (which is
 * read when it is submitted: a bad image is that item's error, not the
 * manifest's). Returns NULL or what is wrong. */
static const char *s_batch_check(json_t *root) {
    const char *method = NULL, *url = NULL;
    json_t *cid = json_object_get(root, "custom_id");
    if (!json_is_string(cid) || !*json_string_value(cid)) return "\"custom_id\" must be a non-empty string";
    if (s_json_str(root, "method", &method) || (method && strcmp(method, "POST")))
        return "\"method\" must be \"POST\"";
    if (s_json_str(root, "url", &url) || !url) return "\"url\" must be \"/v1/chat/completions\"";
    if (strcmp(url, "/v1/chat/completions"))
        return "only \"url\": \"/v1/chat/completions\" is served (not /v1/completions or /v1/embeddings)";
    json_t *body = json_object_get(root, "body");
    if (!json_is_object(body)) return "\"body\" must be an object";
    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) return "\"body.messages\" must be a non-empty array";
    if (json_array_size(msgs) > CAP_MAX_MESSAGES) return "\"body.messages\": too many messages (at most 64)";
    return NULL;
}

/* Reads the manifest's lines into items (the folder of FILE resolves relative
 * paths). 0, or -1 after naming the line that is wrong. */
static int s_manifest_load(const char *file, cap_items *items) {
    FILE *f = fopen(file, "rb");
    if (!f) {
        fprintf(stderr, "vidi-caption: --manifest %s: %s\n", file, strerror(errno));
        return -1;
    }
    char mdir[CAP_MAX_PATH];
    snprintf(mdir, sizeof mdir, "%s", file);
    char *sl = strrchr(mdir, '/');
    if (sl) sl[1] = 0;
    else mdir[0] = 0;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    for (;;) {
        off_t at = ftello(f);
        errno = 0;
        ssize_t n = getline(&line, &cap, f);
        if (n < 0) {
            if (errno) {
                fprintf(stderr, "vidi-caption: %s: %s\n", file, strerror(errno));
                rc = -1;
            }
            break;
        }
        lineno++;
        if ((size_t)n > CAP_MAX_LINE) {
            fprintf(stderr, "vidi-caption: %s:%ld: a line over %zu bytes\n", file, lineno, CAP_MAX_LINE);
            rc = -1;
            break;
        }
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t sp = strspn(line, " \t");
        if (sp >= len) continue;
        json_error_t je;
        json_t *root = json_loadb(line, len, 0, &je);
        if (!root || !json_is_object(root)) {
            fprintf(stderr, "vidi-caption: %s:%ld: %s\n", file, lineno, root ? "not a JSON object" : je.text);
            json_decref(root);
            rc = -1;
            break;
        }
        cap_item *it = s_items_push(items);
        if (!it) {
            json_decref(root);
            rc = -1;
            break;
        }
        it->line = lineno;
        const char *err = NULL;
        if (json_object_get(root, "custom_id")) {
            it->type = CAP_ITEM_BATCH;
            err = s_batch_check(root);
            if (!err && strlen(json_string_value(json_object_get(root, "custom_id"))) >= CAP_MAX_PATH)
                err = "\"custom_id\" is too long";
            if (!err) {
                it->id = strdup(json_string_value(json_object_get(root, "custom_id")));
                it->key = it->id ? s_strcat2("c:", it->id) : NULL;
                it->offset = at;
                it->len = len;
            }
        } else {
            const char *path = NULL, *prompt = NULL, *id = NULL, *kind = NULL;
            it->type = CAP_ITEM_PATH;
            if (s_json_str(root, "path", &path) || !path || !*path)
                err = "expected \"path\" (a media file) or an OpenAI batch line with \"custom_id\"";
            else if (s_json_str(root, "prompt", &prompt))
                err = "\"prompt\" must be a string";
            else if (prompt && !*prompt)
                err = "\"prompt\" is empty";
            else if (s_json_str(root, "id", &id) || (id && (!*id || strlen(id) >= CAP_MAX_PATH)))
                err = "\"id\" must be a non-empty string (shorter than 4096 bytes)";
            else if (s_json_str(root, "kind", &kind) || (kind && strcmp(kind, "image") && strcmp(kind, "video")))
                err = "\"kind\" must be \"image\" or \"video\"";
            else if (strlen(path) >= CAP_MAX_PATH)
                err = "\"path\" is too long";
            if (!err) {
                vidi_client_part_type k = VIDI_CLIENT_PART_IMAGE;
                if (kind) k = !strcmp(kind, "video") ? VIDI_CLIENT_PART_VIDEO : VIDI_CLIENT_PART_IMAGE;
                else if (!s_ext_known(s_path_ext(path), &k))
                    err = "the extension of \"path\" is not an image or a video one: give \"kind\": \"image\" or \"video\"";
                it->kind = k;
            }
            if (!err) {
                it->path = strdup(path);
                it->file = path[0] == '/' ? strdup(path) : s_strcat2(mdir, path);
                it->prompt = prompt ? strdup(prompt) : NULL;
                it->id = id ? strdup(id) : NULL;
                it->key = id ? s_strcat2("i:", id) : s_strcat2("p:", path);
                if (!it->path || !it->file || (prompt && !it->prompt) || (id && !it->id)) it->key = (free(it->key), NULL);
            }
        }
        json_decref(root);
        if (err) {
            fprintf(stderr, "vidi-caption: %s:%ld: %s\n", file, lineno, err);
            rc = -1;
            break;
        }
        if (!it->key) {
            fprintf(stderr, "vidi-caption: out of memory reading %s\n", file);
            rc = -1;
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------ the output */

typedef struct cap_out {
    int fd;
    const char *name;
    int regular;          /* a file: fsync it */
    int64_t synced_ms;
    int dirty;
} cap_out;

/* One whole line (with its '\n') in one write: appended lines never
 * interleave, and a crash leaves at most the last one torn. */
static int s_out_line(cap_out *out, const char *s, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(out->fd, s + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            fprintf(stderr, "vidi-caption: writing %s: %s\n", out->name, w < 0 ? strerror(errno) : "nothing written");
            return -1;
        }
        done += (size_t)w;
    }
    out->dirty = 1;
    return 0;
}

static void s_out_sync(cap_out *out, int force) {
    int64_t now = s_now_ms();
    if (!out->dirty || (!force && now - out->synced_ms < CAP_SYNC_MS)) return;
    if (out->regular) fsync(out->fd);
    out->synced_ms = now;
    out->dirty = 0;
}

/* 1 when an output line is a success: plain {"error": null, "caption": str}
 * or batch {"error": null, "response": {"status_code": 200}}; its key into key. */
static int s_line_success(json_t *root, char *key, size_t cap) {
    json_t *err = json_object_get(root, "error");
    if (!err || !json_is_null(err)) return 0;
    const char *cid = NULL, *id = NULL, *path = NULL;
    if (!s_json_str(root, "custom_id", &cid) && cid) {
        json_t *resp = json_object_get(root, "response");
        json_t *code = json_object_get(resp, "status_code");
        if (!json_is_integer(code) || json_integer_value(code) != 200) return 0;
        snprintf(key, cap, "c:%s", cid);
        return strlen(cid) + 2 < cap;
    }
    if (!json_is_string(json_object_get(root, "caption"))) return 0;
    if (!s_json_str(root, "id", &id) && id) {
        snprintf(key, cap, "i:%s", id);
        return strlen(id) + 2 < cap;
    }
    if (!s_json_str(root, "path", &path) && path) {
        snprintf(key, cap, "p:%s", path);
        return strlen(path) + 2 < cap;
    }
    return 0;
}

/* --resume: the keys of the successful lines of the output into done; a torn
 * last line (no '\n': the run before was killed while writing it) is cut off
 * so that the next line starts on its own. 0, or -1 (said). */
static int s_resume_read(const char *name, int fd, cap_set *done) {
    FILE *f = fdopen(dup(fd), "rb");
    if (!f) {
        fprintf(stderr, "vidi-caption: --resume: reading %s: %s\n", name, strerror(errno));
        return -1;
    }
    char *line = NULL, key[CAP_MAX_PATH + 8];
    size_t cap = 0;
    off_t good = 0;
    long lineno = 0, bad = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &cap, f);
        if (n < 0) {
            if (errno) {
                fprintf(stderr, "vidi-caption: --resume: reading %s: %s\n", name, strerror(errno));
                rc = -1;
            }
            break;
        }
        if (line[n - 1] != '\n') {
            fprintf(stderr, "vidi-caption: --resume: %s: cutting off a torn last line (%zd bytes)\n", name, n);
            if (ftruncate(fd, good) != 0) {
                fprintf(stderr, "vidi-caption: --resume: %s: truncate: %s\n", name, strerror(errno));
                rc = -1;
            }
            break;
        }
        lineno++;
        good += (off_t)n;
        json_t *root = json_loadb(line, (size_t)n, 0, NULL);
        if (!root) bad++;
        else if (s_line_success(root, key, sizeof key) && s_set_add(done, key) < 0) {
            fprintf(stderr, "vidi-caption: out of memory\n");
            rc = -1;
        }
        json_decref(root);
        if (rc) break;
    }
    if (bad) fprintf(stderr, "vidi-caption: --resume: %s: %ld lines that are not JSON are ignored\n", name, bad);
    free(line);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------ requests */

/* The request of one item: messages and parts, and what they point into. */
typedef struct cap_req {
    vidi_client_message msgs[CAP_MAX_MESSAGES + 1];
    int n_msgs;
    vidi_client_part parts[CAP_MAX_PARTS + 2];
    int n_parts;
    void *owned[CAP_MAX_PARTS + 2];   /* decoded data: URLs, decoded file:// paths */
    int n_owned;
    const char *stop[4];
    json_t *root;                    /* BATCH: the parsed line (the parts' strings live in it) */
    const char *model;               /* BATCH: body.model, echoed */
    vidi_client_request_params rp;
} cap_req;

static void s_req_free(cap_req *r) {
    for (int i = 0; i < r->n_owned; i++) free(r->owned[i]);
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}

static int s_hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The media of an image_url / video_url part into *p: a data: URL decoded,
 * a file:// URL or a plain path (relative to the manifest's folder) as a
 * path. 0, or -1 with the reason in err. */
static int s_media_url(cap_req *r, const char *url, const char *mdir, vidi_client_part_type kind,
                       vidi_client_part *p, char *err, size_t cap) {
    memset(p, 0, sizeof *p);
    p->type = kind;
    if (!strncmp(url, "data:", 5)) {
        const char *comma = strchr(url, ',');
        if (!comma) return snprintf(err, cap, "a data: URL without ','"), -1;
        size_t meta = (size_t)(comma - url);
        if (meta < 12 || strncmp(comma - 7, ";base64", 7))
            return snprintf(err, cap, "a data: URL must be base64 (data:MIME;base64,...)"), -1;
        uint8_t *data = NULL;
        size_t n = 0;
        if (vidi_base64_decode(comma + 1, strlen(comma + 1), &data, &n) != 0)
            return snprintf(err, cap, "a data: URL whose payload is not base64"), -1;
        if (!n) {
            free(data);
            return snprintf(err, cap, "a data: URL with no bytes"), -1;
        }
        r->owned[r->n_owned++] = data;
        p->data = data;
        p->size = n;
        return 0;
    }
    if (strstr(url, "://") && strncmp(url, "file://", 7))
        return snprintf(err, cap, "%.64s: only file:// and data: URLs are read (no downloads)", url), -1;
    const char *src = url;
    int is_url = !strncmp(url, "file://", 7);
    if (is_url) {
        src = url + 7;
        if (!strncmp(src, "localhost/", 10)) src += 9;
        if (*src != '/') return snprintf(err, cap, "%.64s: a file URL must be file:///absolute/path", url), -1;
    }
    size_t n = strlen(src);
    if (n >= CAP_MAX_PATH) return snprintf(err, cap, "a media path over %d bytes", CAP_MAX_PATH), -1;
    size_t nd = src[0] == '/' ? 0 : strlen(mdir);
    char *path = malloc(nd + n + 1);
    if (!path) return snprintf(err, cap, "out of memory"), -1;
    memcpy(path, mdir, nd);
    size_t k = nd;
    for (size_t i = 0; i < n; i++) {
        int h1, h2;
        if (is_url && src[i] == '%' && i + 2 < n + 1 && (h1 = s_hexval(src[i + 1])) >= 0 &&
            (h2 = s_hexval(src[i + 2])) >= 0) {
            path[k++] = (char)(h1 * 16 + h2);
            i += 2;
        } else {
            path[k++] = src[i];
        }
    }
    path[k] = 0;
    if (strlen(path) != k) {
        free(path);
        return snprintf(err, cap, "a file URL with a NUL byte"), -1;
    }
    r->owned[r->n_owned++] = path;
    p->path = path;
    return 0;
}

/* A number field of the body: 0 when absent; -1 when it is not a number. */
static int s_body_num(json_t *body, const char *k, double *out, int *has) {
    json_t *v = json_object_get(body, k);
    *has = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    *has = 1;
    return 0;
}

/* A batch line's body as messages and sampling parameters (defaults from the
 * options). 0, or -1 with the reason in err (an HTTP 400 of that item). */
static int s_req_batch(cap_req *r, const cap_opts *o, const char *mdir, char *err, size_t cap) {
    json_t *body = json_object_get(r->root, "body");
    json_t *msgs = json_object_get(body, "messages");
    const char *model = NULL;
    if (s_json_str(body, "model", &model)) return snprintf(err, cap, "\"model\" must be a string"), -1;
    r->model = model;
    double x;
    int has;
    if (s_body_num(body, "max_completion_tokens", &x, &has)) return snprintf(err, cap, "\"max_completion_tokens\" must be a number"), -1;
    if (!has && s_body_num(body, "max_tokens", &x, &has)) return snprintf(err, cap, "\"max_tokens\" must be a number"), -1;
    if (has) {
        if (!(x >= 1 && x <= 1 << 20)) return snprintf(err, cap, "\"max_tokens\" must be in [1, 1048576]"), -1;
        r->rp.max_tokens = (int)x;
    }
    if (s_body_num(body, "temperature", &x, &has)) return snprintf(err, cap, "\"temperature\" must be a number"), -1;
    if (has) r->rp.temperature = x;
    if (s_body_num(body, "top_p", &x, &has)) return snprintf(err, cap, "\"top_p\" must be a number"), -1;
    if (has) r->rp.top_p = x;
    if (s_body_num(body, "top_k", &x, &has)) return snprintf(err, cap, "\"top_k\" must be a number"), -1;
    if (has) r->rp.top_k = x < 0 ? 0 : (int)(x > 1e9 ? 1e9 : x); /* -1 (vLLM): all */
    if (s_body_num(body, "seed", &x, &has)) return snprintf(err, cap, "\"seed\" must be a number"), -1;
    if (has) {
        if (!(x >= 0 && x <= 9.0e15)) return snprintf(err, cap, "\"seed\" must be a non-negative integer"), -1;
        r->rp.seed = (int64_t)x;
    }
    if (s_body_num(body, "n", &x, &has)) return snprintf(err, cap, "\"n\" must be a number"), -1;
    if (has && x != 1) return snprintf(err, cap, "\"n\": only 1 choice per request is served"), -1;
    json_t *stop = json_object_get(body, "stop");
    if (json_is_string(stop)) {
        r->stop[0] = json_string_value(stop);
        r->rp.n_stop = 1;
    } else if (json_is_array(stop)) {
        if (json_array_size(stop) > 4) return snprintf(err, cap, "\"stop\": at most 4 strings"), -1;
        for (size_t i = 0; i < json_array_size(stop); i++) {
            if (!json_is_string(json_array_get(stop, i))) return snprintf(err, cap, "\"stop\" must hold strings"), -1;
            r->stop[r->rp.n_stop++] = json_string_value(json_array_get(stop, i));
        }
    } else if (stop && !json_is_null(stop)) {
        return snprintf(err, cap, "\"stop\" must be a string or an array of strings"), -1;
    }
    if (r->rp.n_stop) r->rp.stop = r->stop;
    for (size_t m = 0; m < json_array_size(msgs); m++) {
        json_t *msg = json_array_get(msgs, m);
        const char *role = NULL;
        if (!json_is_object(msg) || s_json_str(msg, "role", &role) || !role)
            return snprintf(err, cap, "message %zu: expected {\"role\", \"content\"}", m), -1;
        if (!strcmp(role, "developer")) role = "system";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
            return snprintf(err, cap, "message %zu: role \"%.32s\" (system, user or assistant)", m, role), -1;
        json_t *content = json_object_get(msg, "content");
        int first = r->n_parts;
        if (json_is_string(content)) {
            if (r->n_parts == CAP_MAX_PARTS) return snprintf(err, cap, "more than %d content parts", CAP_MAX_PARTS), -1;
            r->parts[r->n_parts++] = vidi_client_part_text(json_string_value(content));
        } else if (json_is_array(content)) {
            for (size_t i = 0; i < json_array_size(content); i++) {
                json_t *part = json_array_get(content, i);
                const char *type = NULL;
                if (!json_is_object(part) || s_json_str(part, "type", &type) || !type)
                    return snprintf(err, cap, "message %zu part %zu: expected {\"type\", ...}", m, i), -1;
                if (r->n_parts == CAP_MAX_PARTS) return snprintf(err, cap, "more than %d content parts", CAP_MAX_PARTS), -1;
                vidi_client_part *p = &r->parts[r->n_parts];
                if (!strcmp(type, "text")) {
                    const char *text = NULL;
                    if (s_json_str(part, "text", &text) || !text)
                        return snprintf(err, cap, "message %zu part %zu: \"text\" must be a string", m, i), -1;
                    *p = vidi_client_part_text(text);
                } else if (!strcmp(type, "image_url") || !strcmp(type, "video_url")) {
                    int video = type[0] == 'v';
                    json_t *u = json_object_get(part, type);
                    json_t *us = json_is_object(u) ? json_object_get(u, "url") : u;
                    if (!json_is_string(us))
                        return snprintf(err, cap, "message %zu part %zu: expected {\"%s\": {\"url\": ...}}", m, i, type), -1;
                    char why[CAP_ERR / 2];
                    if (s_media_url(r, json_string_value(us), mdir, video ? VIDI_CLIENT_PART_VIDEO : VIDI_CLIENT_PART_IMAGE,
                                    p, why, sizeof why) != 0)
                        return snprintf(err, cap, "message %zu part %zu: %s", m, i, why), -1;
                    if (video) p->fps = o->fps;
                    p->min_pixels = o->min_pixels;
                    p->max_pixels = o->max_pixels;
                } else {
                    return snprintf(err, cap, "message %zu part %zu: type \"%.32s\" (text, image_url or video_url)", m, i,
                                    type), -1;
                }
                r->n_parts++;
            }
        } else {
            return snprintf(err, cap, "message %zu: \"content\" must be a string or an array of parts", m), -1;
        }
        if (r->n_parts == first) return snprintf(err, cap, "message %zu has no content", m), -1;
        r->msgs[r->n_msgs++] = (vidi_client_message){role, &r->parts[first], r->n_parts - first};
    }
    return 0;
}

/* ------------------------------------------------------------ the run */

enum { CAP_SLOT_FREE = 0, CAP_SLOT_FLIGHT, CAP_SLOT_BACKOFF };

typedef struct cap_slot {
    int state;
    size_t item;
    uint64_t id;          /* FLIGHT: the request */
    int tries;            /* submissions so far, "overloaded" answers not counted */
    int overloads;        /* "overloaded" answers so far */
    int64_t start_ms;     /* FLIGHT: this try's submission */
    int64_t retry_ms;     /* BACKOFF: when to submit again */
    cap_req req;
} cap_slot;

typedef struct cap_run {
    const cap_opts *o;
    cap_items *items;
    vidi_client *client;
    cap_out out;
    int manifest_fd;
    char mdir[CAP_MAX_PATH];
    cap_slot *slots;
    size_t next;                         /* the next item to start */
    size_t n_todo, n_done, n_failed, n_skipped;
    int limit;                           /* requests in flight at most now: --concurrency, lowered by "overloaded" */
    int ok_streak;                       /* successes since the limit last changed */
    int64_t t0_ms, shown_ms;
    int tty, shown;
    uint64_t seq;
} cap_run;

static int s_item_request(cap_run *run, cap_item *it, cap_req *r, char *err, size_t cap) {
    const cap_opts *o = run->o;
    memset(r, 0, sizeof *r);
    r->rp = vidi_client_request_params_default();
    r->rp.max_tokens = o->max_tokens;
    r->rp.temperature = o->temperature;
    r->rp.top_p = o->top_p;
    r->rp.top_k = o->top_k;
    r->rp.seed = o->seed;
    r->rp.stream = 0; /* DONE only: the caption is written whole */
    if (it->type == CAP_ITEM_PATH) {
        if (o->system) {
            r->parts[r->n_parts++] = vidi_client_part_text(o->system);
            r->msgs[r->n_msgs++] = (vidi_client_message){"system", &r->parts[0], 1};
        }
        int first = r->n_parts;
        vidi_client_part *p = &r->parts[r->n_parts++];
        *p = it->kind == VIDI_CLIENT_PART_VIDEO ? vidi_client_part_video_file(it->file) : vidi_client_part_image_file(it->file);
        if (it->kind == VIDI_CLIENT_PART_VIDEO) p->fps = o->fps;
        p->min_pixels = o->min_pixels;
        p->max_pixels = o->max_pixels;
        const char *prompt = it->prompt ? it->prompt
                             : o->prompt ? o->prompt
                             : it->kind == VIDI_CLIENT_PART_VIDEO ? "Describe the video." : "Describe the image.";
        r->parts[r->n_parts++] = vidi_client_part_text(prompt);
        r->msgs[r->n_msgs++] = (vidi_client_message){"user", &r->parts[first], 2};
        return 0;
    }
    char *line = malloc(it->len ? it->len : 1);
    if (!line) return snprintf(err, cap, "out of memory for manifest line %ld", it->line), -1;
    ssize_t got = pread(run->manifest_fd, line, it->len, it->offset);
    if (got != (ssize_t)it->len) {
        free(line);
        return snprintf(err, cap, "manifest line %ld: reading it again failed (was the manifest changed?)", it->line), -1;
    }
    json_error_t je;
    r->root = json_loadb(line, it->len, 0, &je);
    free(line);
    if (!r->root) return snprintf(err, cap, "manifest line %ld: %s", it->line, je.text), -1;
    return s_req_batch(r, o, run->mdir, err, cap);
}

/* ---- output lines ---- */

/* s as a JSON string; bytes that are not UTF-8 become U+FFFD. */
static json_t *s_json_text(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *buf = malloc(3 * n + 1);
    if (!buf) return NULL;
    size_t k = 0;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        uint8_t c = u[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = len > 0 && i + (size_t)len <= n;
        for (int t = 1; ok && t < len; t++) ok = (u[i + t] & 0xc0) == 0x80;
        if (ok && len > 1) {
            uint32_t cp = c & (0x7f >> len);
            for (int t = 1; t < len; t++) cp = (cp << 6) | (u[i + t] & 0x3f);
            ok = cp >= (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u) && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (ok) {
            memcpy(buf + k, s + i, (size_t)len);
            k += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(buf + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
        }
    }
    j = json_stringn(buf, k);
    free(buf);
    return j;
}

static int s_write_json(cap_run *run, json_t *line) {
    if (!line) {
        fprintf(stderr, "vidi-caption: out of memory for an output line\n");
        return -1;
    }
    char *s = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(line);
    if (!s) {
        fprintf(stderr, "vidi-caption: out of memory for an output line\n");
        return -1;
    }
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return -1;
    }
    t[n] = '\n';
    t[n + 1] = 0;
    int rc = s_out_line(&run->out, t, n + 1);
    free(t);
    s_out_sync(&run->out, 0);
    return rc;
}

/* The HTTP status of a batch item that failed with server error code. */
static int s_http_status(const char *code) {
    if (!strcmp(code, "overloaded")) return 429;
    if (!strcmp(code, "timeout")) return 504;
    if (!strcmp(code, "no_worker") || !strcmp(code, "worker_lost")) return 503;
    if (!strcmp(code, "internal") || !strcmp(code, "io") || !strcmp(code, "nomem") || !strcmp(code, "protocol")) return 500;
    return 400;
}

/* sidecar: the caption (and a newline) in PATH without its extension plus
 * --caption-extension, written to a temporary file and renamed over it. */
static int s_sidecar(const cap_opts *o, const char *path, const char *text, size_t n, char *err, size_t cap) {
    char target[CAP_MAX_PATH + 64], tmp[CAP_MAX_PATH + 96];
    const char *ext = s_path_ext(path);
    size_t base = *ext ? (size_t)(ext - 1 - path) : strlen(path);
    if (base + strlen(o->caption_ext) >= sizeof target) return snprintf(err, cap, "sidecar: the path is too long"), -1;
    memcpy(target, path, base);
    snprintf(target + base, sizeof target - base, "%s", o->caption_ext);
    snprintf(tmp, sizeof tmp, "%s.tmp%d", target, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return snprintf(err, cap, "sidecar %.900s: %s", tmp, strerror(errno)), -1;
    size_t done = 0;
    int ok = 1;
    while (ok && done < n + 1) {
        const char *src = done < n ? text + done : "\n";
        size_t len = done < n ? n - done : 1;
        ssize_t w = write(fd, src, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) ok = 0;
        else done += (size_t)w;
    }
    if (close(fd) != 0) ok = 0;
    if (!ok || rename(tmp, target) != 0) {
        snprintf(err, cap, "sidecar %.900s: %s", target, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

typedef struct cap_result {
    const char *text;       /* the caption (success) or the message (failure) */
    size_t text_len;
    const char *code;       /* NULL on success; else an error code ("bad_media", "file", ...) */
    const char *finish;
    int tokens;
    uint64_t prompt_tokens;
    double latency_s;
} cap_result;

/* Writes the item's line (and its sidecar); counts it. 0, or -1 when the
 * output cannot be written (the run stops). */
static int s_finish(cap_run *run, cap_slot *sl, const cap_result *res) {
    cap_item *it = &run->items->v[sl->item];
    const cap_opts *o = run->o;
    char err[CAP_ERR];
    const char *code = res->code;
    const char *msg = res->text;
    size_t msg_len = res->text_len;
    int sidecar_failed = 0;
    if (!code && o->sidecar && it->type == CAP_ITEM_PATH &&
        s_sidecar(o, it->file, res->text, res->text_len, err, sizeof err) != 0) {
        sidecar_failed = 1;
        fprintf(stderr, "vidi-caption: %s\n", err);
    }
    json_t *line = json_object();
    if (it->type == CAP_ITEM_PATH) {
        if (it->id) json_object_set_new(line, "id", json_string(it->id));
        json_object_set_new(line, "path", s_json_text(it->path, strlen(it->path)));
        if (it->prompt) json_object_set_new(line, "prompt", json_string(it->prompt));
        json_object_set_new(line, "caption", code ? json_null() : s_json_text(res->text, res->text_len));
        json_object_set_new(line, "tokens", json_integer(code ? 0 : res->tokens));
        json_object_set_new(line, "latency_s", json_real(res->latency_s));
        if (code) {
            char *e = malloc(strlen(code) + msg_len + 3);
            if (e) {
                memcpy(e, code, strlen(code));
                memcpy(e + strlen(code), ": ", 2);
                memcpy(e + strlen(code) + 2, msg, msg_len);
                json_object_set_new(line, "error", s_json_text(e, strlen(code) + 2 + msg_len));
                free(e);
            }
        } else if (sidecar_failed) {
            json_object_set_new(line, "error", s_json_text(err, strlen(err)));
        } else {
            json_object_set_new(line, "error", json_null());
        }
    } else {
        char rid[64];
        snprintf(rid, sizeof rid, "%d-%" PRIu64, (int)getpid(), ++run->seq);
        char id[80], req_id[80], cmpl_id[80];
        snprintf(id, sizeof id, "batch_req_%s", rid);
        snprintf(req_id, sizeof req_id, "req_%s", rid);
        snprintf(cmpl_id, sizeof cmpl_id, "chatcmpl-%s", rid);
        json_object_set_new(line, "id", json_string(id));
        json_object_set_new(line, "custom_id", json_string(it->id));
        json_t *resp = json_object();
        json_object_set_new(resp, "status_code", json_integer(code ? s_http_status(code) : 200));
        json_object_set_new(resp, "request_id", json_string(req_id));
        json_t *body = json_object();
        if (code) {
            json_t *e = json_object();
            json_object_set_new(e, "message", s_json_text(msg, msg_len));
            json_object_set_new(e, "type", json_string(s_http_status(code) == 400 ? "invalid_request_error" : "server_error"));
            json_object_set_new(e, "param", json_null());
            json_object_set_new(e, "code", json_string(code));
            json_object_set_new(body, "error", e);
        } else {
            json_object_set_new(body, "id", json_string(cmpl_id));
            json_object_set_new(body, "object", json_string("chat.completion"));
            json_object_set_new(body, "created", json_integer((json_int_t)time(NULL)));
            json_object_set_new(body, "model", json_string(sl->req.model ? sl->req.model : "vidi"));
            json_t *choice = json_object(), *message = json_object();
            json_object_set_new(choice, "index", json_integer(0));
            json_object_set_new(message, "role", json_string("assistant"));
            json_object_set_new(message, "content", s_json_text(res->text, res->text_len));
            json_object_set_new(choice, "message", message);
            json_object_set_new(choice, "logprobs", json_null());
            json_object_set_new(choice, "finish_reason", json_string(res->finish ? res->finish : "stop"));
            json_t *choices = json_array();
            json_array_append_new(choices, choice);
            json_object_set_new(body, "choices", choices);
            json_t *usage = json_object();
            json_object_set_new(usage, "prompt_tokens", json_integer((json_int_t)res->prompt_tokens));
            json_object_set_new(usage, "completion_tokens", json_integer(res->tokens));
            json_object_set_new(usage, "total_tokens", json_integer((json_int_t)res->prompt_tokens + res->tokens));
            json_object_set_new(body, "usage", usage);
        }
        json_object_set_new(resp, "body", body);
        json_object_set_new(line, "response", resp);
        if (code) {
            json_t *e = json_object();
            json_object_set_new(e, "code", json_string(code));
            json_object_set_new(e, "message", s_json_text(msg, msg_len));
            json_object_set_new(line, "error", e);
        } else {
            json_object_set_new(line, "error", json_null());
        }
    }
    int rc = s_write_json(run, line);
    if (code || sidecar_failed) run->n_failed++;
    else run->n_done++;
    if (!code && run->limit < o->concurrency && ++run->ok_streak >= 4 * run->limit) {
        run->limit++; /* probe upwards again after some successes */
        run->ok_streak = 0;
    }
    if (code && !o->quiet) {
        const char *name = it->type == CAP_ITEM_PATH ? it->path : it->id;
        if (run->tty && run->shown) fputs("\r\033[K", stderr), run->shown = 0;
        fprintf(stderr, "vidi-caption: %s: %s: %.*s\n", name, code, (int)(msg_len > 300 ? 300 : msg_len), msg);
    }
    s_req_free(&sl->req);
    sl->state = CAP_SLOT_FREE;
    return rc;
}

static int s_finish_error(cap_run *run, cap_slot *sl, const char *code, const char *msg, double latency_s) {
    cap_result res = {msg, strlen(msg), code, NULL, 0, 0, latency_s};
    return s_finish(run, sl, &res);
}

static int s_count_flight(const cap_run *run) {
    int n = 0;
    for (int s = 0; s < run->o->concurrency; s++) n += run->slots[s].state == CAP_SLOT_FLIGHT;
    return n;
}

/* Transient: worth another try. */
static int s_transient(const char *code) {
    return !strcmp(code, "overloaded") || !strcmp(code, "timeout") || !strcmp(code, "no_worker") ||
           !strcmp(code, "worker_lost") || !strcmp(code, "io");
}

/* A failed try: back off and try again while tries are left, else the
 * item's error line. */
static int s_try_failed(cap_run *run, cap_slot *sl, const char *code, const char *msg) {
    double latency = (double)(s_now_ms() - sl->start_ms) / 1000.0;
    if (!strcmp(code, "overloaded")) {
        /* the router refused it while our other requests were in: keep to that many
         * from now on (s_finish raises the limit again), and do not count the try */
        int others = s_count_flight(run) - (sl->state == CAP_SLOT_FLIGHT);
        if (run->limit > others) run->limit = others > 1 ? others : 1;
        run->ok_streak = 0;
        if (++sl->overloads <= CAP_MAX_OVERLOADS) sl->tries--;
    }
    if (s_transient(code) && sl->tries <= run->o->retries) {
        int n = sl->tries + sl->overloads;
        int64_t wait = (int64_t)CAP_BACKOFF_MS << (n - 1 < 10 ? n - 1 : 10);
        sl->retry_ms = s_now_ms() + (wait > CAP_BACKOFF_MAX_MS ? CAP_BACKOFF_MAX_MS : wait);
        sl->state = CAP_SLOT_BACKOFF;
        return 0;
    }
    char full[CAP_ERR + 64];
    if (sl->tries > 1) snprintf(full, sizeof full, "%s (after %d tries)", msg, sl->tries);
    else snprintf(full, sizeof full, "%s", msg);
    return s_finish_error(run, sl, code, full, latency);
}

/* Submits the slot's request (a new try). 0, or -1 when the output failed. */
static int s_submit(cap_run *run, cap_slot *sl) {
    sl->tries++;
    sl->start_ms = s_now_ms();
    uint64_t id = 0;
    int st = vidi_client_submit(run->client, sl->req.msgs, sl->req.n_msgs, &sl->req.rp, &id);
    if (st != VIDI_CLIENT_OK) {
        char msg[CAP_ERR];
        snprintf(msg, sizeof msg, "%s", vidi_client_last_error(run->client));
        return s_try_failed(run, sl, vidi_client_status_name(st), msg);
    }
    sl->id = id;
    sl->state = CAP_SLOT_FLIGHT;
    return 0;
}

/* Starts item i in slot sl: builds its request, submits it. */
static int s_start(cap_run *run, cap_slot *sl, size_t i) {
    memset(sl, 0, sizeof *sl);
    sl->item = i;
    sl->start_ms = s_now_ms();
    char err[CAP_ERR];
    if (s_item_request(run, &run->items->v[i], &sl->req, err, sizeof err) != 0)
        return s_finish_error(run, sl, "bad_request", err, 0.0);
    return s_submit(run, sl);
}

static void s_fmt_dur(char *out, size_t cap, double s) {
    if (s < 0 || s != s) snprintf(out, cap, "?");
    else if (s < 60) snprintf(out, cap, "%.0f s", s);
    else if (s < 3600) snprintf(out, cap, "%d min %02d s", (int)s / 60, (int)s % 60);
    else snprintf(out, cap, "%d h %02d min", (int)s / 3600, (int)s % 3600 / 60);
}

/* The progress: a bar redrawn in place on a terminal, else a line every
 * --progress-s seconds. */
static void s_progress(cap_run *run, int force) {
    if (run->o->quiet) return;
    int64_t now = s_now_ms();
    int64_t every = run->tty ? 200 : (int64_t)(run->o->progress_s * 1000);
    if (!force && now - run->shown_ms < every) return;
    run->shown_ms = now;
    size_t total = run->items->n, processed = run->n_done + run->n_failed;
    size_t finished = processed + run->n_skipped;
    double el = (double)(now - run->t0_ms) / 1000.0;
    double rate = el > 0 ? (double)processed / el : 0;
    char eta[32];
    if (rate > 0) s_fmt_dur(eta, sizeof eta, (double)(total - finished) / rate);
    else snprintf(eta, sizeof eta, "?");
    char failed[48] = "";
    if (run->n_failed) snprintf(failed, sizeof failed, ", %zu failed", run->n_failed);
    if (run->tty) {
        char bar[31];
        int fill = total ? (int)(30.0 * (double)finished / (double)total) : 30;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r\033[Kcaption [%s] %zu/%zu, %.2f items/s, ETA %s%s", bar, finished, total, rate, eta, failed);
        run->shown = 1;
    } else {
        fprintf(stderr, "caption: %zu/%zu done, %.2f items/s, ETA %s%s\n", finished, total, rate, eta, failed);
    }
    fflush(stderr);
}

/* The event loop: keeps up to --concurrency items in flight. Returns 0 when
 * every item was tried, 1 when the run stopped early (a signal, the output or
 * the connection failed). */
static int s_run(cap_run *run) {
    const cap_opts *o = run->o;
    int n_slots = o->concurrency;
    int stopped = 0;
    for (;;) {
        if (g_stop) {
            stopped = 1;
            if (!o->quiet) fprintf(stderr, "%svidi-caption: interrupted; the items in flight are cancelled\n",
                                   run->tty && run->shown ? "\n" : "");
            run->shown = 0;
            break;
        }
        int busy = 0, flight = s_count_flight(run);
        for (int s = 0; s < n_slots; s++) {
            cap_slot *sl = &run->slots[s];
            int was = sl->state == CAP_SLOT_FLIGHT;
            /* an item that fails before it is sent (a bad batch line) frees its slot at once */
            while (sl->state == CAP_SLOT_FREE && run->next < run->items->n && flight < run->limit) {
                if (run->items->v[run->next].skip) {
                    run->next++;
                    continue;
                }
                if (s_start(run, sl, run->next++) != 0) return 1;
            }
            if (sl->state == CAP_SLOT_BACKOFF && flight < run->limit && s_now_ms() >= sl->retry_ms) {
                if (s_submit(run, sl) != 0) return 1;
            }
            flight += (sl->state == CAP_SLOT_FLIGHT) - was;
            busy += sl->state != CAP_SLOT_FREE;
        }
        if (!busy && run->next >= run->items->n) break;
        /* wait for the next event, not past a backoff's end or a request's deadline */
        int64_t now = s_now_ms(), wake = now + 200;
        int64_t limit_ms = (int64_t)(o->timeout_s * 1000);
        for (int s = 0; s < n_slots; s++) {
            cap_slot *sl = &run->slots[s];
            if (sl->state == CAP_SLOT_BACKOFF && sl->retry_ms > now && sl->retry_ms < wake) wake = sl->retry_ms;
            if (sl->state == CAP_SLOT_FLIGHT && sl->start_ms + limit_ms < wake) wake = sl->start_ms + limit_ms;
        }
        vidi_client_event ev;
        int st = vidi_client_poll(run->client, wake > now ? (int)(wake - now) : 0, &ev);
        if (st != VIDI_CLIENT_OK && g_stop) continue; /* a signal interrupted the wait */
        if (st != VIDI_CLIENT_OK) {
            if (run->tty && run->shown) fputs("\n", stderr), run->shown = 0;
            fprintf(stderr, "vidi-caption: the connection to the router failed: %s\n", vidi_client_last_error(run->client));
            stopped = 1;
            break;
        }
        if (ev.type == VIDI_CLIENT_EV_DONE || ev.type == VIDI_CLIENT_EV_ERROR) {
            cap_slot *sl = NULL;
            for (int s = 0; s < n_slots && !sl; s++)
                if (run->slots[s].state == CAP_SLOT_FLIGHT && run->slots[s].id == ev.id) sl = &run->slots[s];
            if (sl) { /* else a request given up on (timed out and cancelled) */
                int rc;
                double latency = (double)(s_now_ms() - sl->start_ms) / 1000.0;
                if (ev.type == VIDI_CLIENT_EV_ERROR) {
                    char msg[CAP_ERR];
                    snprintf(msg, sizeof msg, "%.*s", (int)(ev.text_len < CAP_ERR ? ev.text_len : CAP_ERR - 1), ev.text);
                    rc = s_try_failed(run, sl, ev.error_code ? ev.error_code : "unknown", msg);
                } else if (ev.finish && !strcmp(ev.finish, "cancelled")) {
                    rc = s_try_failed(run, sl, "cancelled", "the request was cancelled");
                } else {
                    cap_result res = {ev.text, ev.text_len, NULL, ev.finish, ev.n_tokens, ev.prompt_tokens, latency};
                    rc = s_finish(run, sl, &res);
                }
                if (rc != 0) return 1;
            }
        }
        now = s_now_ms();
        for (int s = 0; s < n_slots; s++) {
            cap_slot *sl = &run->slots[s];
            if (sl->state != CAP_SLOT_FLIGHT || now - sl->start_ms < limit_ms) continue;
            vidi_client_cancel(run->client, sl->id);
            char msg[128];
            snprintf(msg, sizeof msg, "no answer within %.0f s (--timeout-s); cancelled", o->timeout_s);
            if (s_try_failed(run, sl, "timeout", msg) != 0) return 1;
        }
        s_progress(run, 0);
    }
    /* what is still open is not written: --resume does it again */
    for (int s = 0; s < n_slots; s++) {
        cap_slot *sl = &run->slots[s];
        if (sl->state == CAP_SLOT_FLIGHT) vidi_client_cancel(run->client, sl->id);
        if (sl->state != CAP_SLOT_FREE) s_req_free(&sl->req);
        sl->state = CAP_SLOT_FREE;
    }
    return stopped;
}

/* ------------------------------------------------------------ main */

static int s_parse(int argc, char **argv, cap_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_tokens = 128;
    o->top_p = 1.0;
    o->seed = -1;
    o->concurrency = 4;
    o->retries = 3;
    o->timeout_s = 300;
    o->progress_s = 5;
    o->caption_ext = ".txt";
    s_exts_default(o);
    const char *ext_list = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--recursive")) o->recursive = 1;
        else if (!strcmp(a, "--sidecar")) o->sidecar = 1;
        else if (!strcmp(a, "--resume")) o->resume = 1;
        else if (!strcmp(a, "--overwrite")) o->overwrite = 1;
        else if (!strcmp(a, "--quiet")) o->quiet = 1;
        else if (a[0] == '-' && a[1] == '-') {
            const char *v = i + 1 < argc ? argv[++i] : NULL;
            long long n = 0;
            double x = 0;
            if (!v) {
                fprintf(stderr, "vidi-caption: %s needs a value (--help)\n", a);
                return -1;
            }
            if (!strcmp(a, "--manifest")) o->manifest = v;
            else if (!strcmp(a, "--output")) o->output = v;
            else if (!strcmp(a, "--router")) o->router = v;
            else if (!strcmp(a, "--prompt")) o->prompt = v;
            else if (!strcmp(a, "--system")) o->system = v;
            else if (!strcmp(a, "--caption-extension")) o->caption_ext = v;
            else if (!strcmp(a, "--ext")) ext_list = v;
            else if (!strcmp(a, "--max-tokens")) {
                if (s_opt_int(a, v, 1, 1 << 20, &n)) return -1;
                o->max_tokens = (int)n;
            } else if (!strcmp(a, "--top-k")) {
                if (s_opt_int(a, v, 0, 1 << 30, &n)) return -1;
                o->top_k = (int)n;
            } else if (!strcmp(a, "--seed")) {
                if (s_opt_int(a, v, 0, INT64_MAX, &n)) return -1;
                o->seed = n;
            } else if (!strcmp(a, "--concurrency")) {
                if (s_opt_int(a, v, 1, CAP_MAX_CONCURRENCY, &n)) return -1;
                o->concurrency = (int)n;
            } else if (!strcmp(a, "--retries")) {
                if (s_opt_int(a, v, 0, 100, &n)) return -1;
                o->retries = (int)n;
            } else if (!strcmp(a, "--min-pixels") || !strcmp(a, "--max-pixels")) {
                if (s_opt_int(a, v, 1, (long long)1 << 40, &n)) return -1;
                *(a[3] == 'i' ? &o->min_pixels : &o->max_pixels) = (uint64_t)n;
            } else if (!strcmp(a, "--temperature")) {
                if (s_opt_double(a, v, 0, 100, &o->temperature)) return -1;
            } else if (!strcmp(a, "--top-p")) {
                if (s_opt_double(a, v, 1e-6, 1, &o->top_p)) return -1;
            } else if (!strcmp(a, "--fps")) {
                if (s_opt_double(a, v, 0.01, 1000, &o->fps)) return -1;
            } else if (!strcmp(a, "--timeout-s")) {
                if (s_opt_double(a, v, 1, 86400, &o->timeout_s)) return -1;
            } else if (!strcmp(a, "--progress-s")) {
                if (s_opt_double(a, v, 0.1, 3600, &x)) return -1;
                o->progress_s = x;
            } else {
                fprintf(stderr, "vidi-caption: unknown option %s (--help)\n", a);
                return -1;
            }
        } else if (!o->dir) {
            o->dir = a;
        } else {
            fprintf(stderr, "vidi-caption: one folder at a time (%s and %s)\n", o->dir, a);
            return -1;
        }
    }
    if (!!o->dir == !!o->manifest) {
        fprintf(stderr, "vidi-caption: give a folder or --manifest FILE (--help)\n");
        return -1;
    }
    if (ext_list && s_exts_parse(o, ext_list)) return -1;
    if (ext_list && o->manifest) fprintf(stderr, "vidi-caption: --ext applies to a folder; ignored with --manifest\n");
    if (o->prompt && !*o->prompt) {
        fprintf(stderr, "vidi-caption: --prompt is empty\n");
        return -1;
    }
    if (o->min_pixels && o->max_pixels && o->min_pixels > o->max_pixels) {
        fprintf(stderr, "vidi-caption: --min-pixels is above --max-pixels\n");
        return -1;
    }
    if (o->caption_ext[0] != '.' || strchr(o->caption_ext, '/') || strlen(o->caption_ext) > 32) {
        fprintf(stderr, "vidi-caption: --caption-extension %s: expected a dot and at most 31 more characters, no '/'\n",
                o->caption_ext);
        return -1;
    }
    if (o->output && !strcmp(o->output, "-")) o->output = NULL;
    if (o->resume && !o->output) {
        fprintf(stderr, "vidi-caption: --resume needs --output FILE\n");
        return -1;
    }
    if (o->resume && o->overwrite) {
        fprintf(stderr, "vidi-caption: --resume and --overwrite do not go together\n");
        return -1;
    }
    return 0;
}

/* Opens the output: stdout, a new or replaced file, or (--resume) an existing
 * one to append to after reading its successful keys. 0, or -1 (said). */
static int s_open_output(const cap_opts *o, cap_out *out, cap_set *done) {
    memset(out, 0, sizeof *out);
    out->synced_ms = s_now_ms();
    if (!o->output) {
        out->fd = STDOUT_FILENO;
        out->name = "stdout";
        struct stat sb;
        out->regular = fstat(out->fd, &sb) == 0 && S_ISREG(sb.st_mode);
        return 0;
    }
    out->name = o->output;
    struct stat sb;
    int exists = stat(o->output, &sb) == 0;
    if (exists && !S_ISREG(sb.st_mode)) {
        fprintf(stderr, "vidi-caption: --output %s is not a regular file\n", o->output);
        return -1;
    }
    if (exists && sb.st_size > 0 && !o->resume && !o->overwrite) {
        fprintf(stderr, "vidi-caption: --output %s exists: --resume to go on with it, --overwrite to replace it\n",
                o->output);
        return -1;
    }
    int flags = O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | (o->resume ? 0 : O_TRUNC);
    out->fd = open(o->output, flags, 0644);
    if (out->fd < 0) {
        fprintf(stderr, "vidi-caption: --output %s: %s\n", o->output, strerror(errno));
        return -1;
    }
    out->regular = 1;
    if (o->resume && s_resume_read(o->output, out->fd, done) != 0) {
        close(out->fd);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    cap_opts o;
    int p = s_parse(argc, argv, &o);
    if (p) return p > 0 ? 0 : 2;
    int rc = 2;
    cap_items items = {0};
    cap_set done = {0}, keys = {0};
    cap_run run;
    memset(&run, 0, sizeof run);
    run.o = &o;
    run.items = &items;
    run.manifest_fd = -1;
    run.out.fd = -1;
    char router[CAP_MAX_PATH + 32];
    if (o.router) snprintf(router, sizeof router, "%s", o.router);
    else vidi_client_default_endpoint(router, sizeof router);

    if (o.dir) {
        struct stat sb;
        if (stat(o.dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "vidi-caption: %s: %s\n", o.dir, errno ? strerror(errno) : "not a folder");
            goto out;
        }
        if (s_walk(&o, o.dir, 0, &items) != 0) goto out;
        qsort(items.v, items.n, sizeof *items.v, s_cmp_items);
    } else {
        if (s_manifest_load(o.manifest, &items) != 0) goto out;
        run.manifest_fd = open(o.manifest, O_RDONLY | O_CLOEXEC);
        if (run.manifest_fd < 0) {
            fprintf(stderr, "vidi-caption: --manifest %s: %s\n", o.manifest, strerror(errno));
            goto out;
        }
        snprintf(run.mdir, sizeof run.mdir, "%s", o.manifest);
        char *sl = strrchr(run.mdir, '/');
        if (sl) sl[1] = 0;
        else run.mdir[0] = 0;
    }
    if (!items.n) {
        fprintf(stderr, "vidi-caption: no items in %s\n", o.dir ? o.dir : o.manifest);
        goto out;
    }
    /* resume matches items by key: the keys must tell the items apart */
    for (size_t i = 0; i < items.n; i++) {
        int added = s_set_add(&keys, items.v[i].key);
        if (added < 0) {
            fprintf(stderr, "vidi-caption: out of memory\n");
            goto out;
        }
        if (!added && o.resume) {
            cap_item *it = &items.v[i];
            fprintf(stderr, "vidi-caption: %s:%ld: %s %s is there twice: --resume needs each item once (give manifest lines an \"id\")\n",
                    o.manifest ? o.manifest : o.dir, it->line, it->type == CAP_ITEM_BATCH ? "custom_id" : it->id ? "id" : "path",
                    it->key + 2);
            goto out;
        }
    }
    int has_batch = 0;
    for (size_t i = 0; i < items.n; i++) has_batch |= items.v[i].type == CAP_ITEM_BATCH;
    if (o.sidecar && has_batch) fprintf(stderr, "vidi-caption: --sidecar: OpenAI batch lines get no sidecar files\n");
    if (s_open_output(&o, &run.out, &done) != 0) goto out;
    for (size_t i = 0; i < items.n; i++)
        if (s_set_has(&done, items.v[i].key)) items.v[i].skip = 1, run.n_skipped++;
    run.n_todo = items.n - run.n_skipped;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = 1;
    run.tty = isatty(STDERR_FILENO);
    run.t0_ms = s_now_ms();
    run.shown_ms = run.t0_ms;
    if (!o.quiet)
        fprintf(stderr, "vidi-caption: %zu items (%zu done before), %d at a time, router %s\n", items.n, run.n_skipped,
                o.concurrency, router);
    if (run.n_todo) {
        struct stat sb;
        if (!strncmp(router, "ipc://", 6) && stat(router + 6, &sb) != 0)
            fprintf(stderr, "vidi-caption: no router socket at %s (is `vidi up` running?); requests wait for one up to "
                            "--timeout-s\n", router + 6);
        vidi_client_params cp = vidi_client_params_default();
        cp.request_timeout_ms = (int)(o.timeout_s * 1000);
        if (vidi_client_connect(router, &cp, &run.client) != VIDI_CLIENT_OK) {
            fprintf(stderr, "vidi-caption: %s\n", vidi_client_last_error(NULL));
            goto out;
        }
        run.limit = o.concurrency;
        run.slots = calloc((size_t)o.concurrency, sizeof *run.slots);
        if (!run.slots) {
            fprintf(stderr, "vidi-caption: out of memory\n");
            goto out;
        }
        int stopped = s_run(&run);
        s_out_sync(&run.out, 1);
        if (stopped) rc = 1;
        else rc = run.n_failed ? 1 : 0;
    } else {
        rc = 0;
    }
    if (!o.quiet) {
        if (run.tty && run.shown) fputs("\r\033[K", stderr);
        double el = (double)(s_now_ms() - run.t0_ms) / 1000.0;
        size_t processed = run.n_done + run.n_failed;
        size_t left = items.n - run.n_skipped - processed;
        char dur[32], rest[96] = "";
        if (el < 60) snprintf(dur, sizeof dur, "%.1f s", el);
        else s_fmt_dur(dur, sizeof dur, el);
        if (left) snprintf(rest, sizeof rest, ", %zu not done (run again with --resume)", left);
        fprintf(stderr, "caption: %zu done, %zu failed, %zu skipped (resumed)%s in %s, %.2f items/s\n", run.n_done,
                run.n_failed, run.n_skipped, rest, dur, el > 0 ? (double)processed / el : 0.0);
    }
out:
    if (run.client) vidi_client_close(run.client);
    free(run.slots);
    if (run.out.fd > STDOUT_FILENO) {
        s_out_sync(&run.out, 1);
        close(run.out.fd);
    }
    if (run.manifest_fd >= 0) close(run.manifest_fd);
    for (size_t i = 0; i < items.n; i++) s_item_free(&items.v[i]);
    free(items.v);
    s_set_free(&done);
    s_set_free(&keys);
    return rc;
}
