/* tools/serve/frames.c — the video QA page's two JSON answers (frames.h):
 * the sampled frames of a video as JPEG thumbnails, and the sample files of
 * a folder.
 *
 * Frames: the video goes through vidi_video_decode with the options the
 * media stage uses (fps or nframes, default limits), so the frames shown
 * are the frames the model sees; each chosen one is shrunk with Pillow's
 * bicubic (vidi_resize_pil_bicubic), encoded by TurboJPEG and base64'd into
 * the JSON built with jansson.
 */
#include "tools/serve/frames.h"

#include "media/media.h"

#include <jansson.h>
#include <turbojpeg.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define FRAMES_JPEG_QUALITY 90 /* with 4:4:4 chroma: small synthetic scenes keep their colour edges */
#define FRAMES_REAL_DIGITS 10 /* significant digits of the JSON numbers */

static int frames_fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes the message to err (when there is room) and returns -1. */
static int frames_fail(char *err, size_t cap, const char *fmt, ...) {
    if (err && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ------------------------------------------------------------ base64 */

/* Standard base64 (RFC 4648, with padding) of n bytes as a malloc'd
 * NUL-terminated string; NULL when out of memory. */
static char *frames_base64(const uint8_t *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!out) return NULL;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

/* ------------------------------------------------------------ frames */

/* The thumbnail size of a w x h frame: fits in THUMB_SIDE x THUMB_SIDE,
 * aspect kept, never enlarged, sides at least 1. */
static void frames_thumb_size(int w, int h, int *tw, int *th) {
    double s = fmin(1.0, fmin((double)VIDI_SERVE_THUMB_SIDE / w, (double)VIDI_SERVE_THUMB_SIDE / h));
    *tw = (int)fmax(1.0, nearbyint(w * s));
    *th = (int)fmax(1.0, nearbyint(h * s));
}

/* One RGB888 frame -> a base64 JPEG thumbnail in *b64 (malloc'd).
 * scratch holds tw*th*3 bytes. */
static int frames_thumb(tjhandle tj, const uint8_t *rgb, int w, int h, uint8_t *scratch, int tw, int th,
                        char **b64, char *err, size_t cap) {
    const uint8_t *src = rgb;
    if (tw != w || th != h) {
        vidi_err e = {0};
        if (vidi_resize_pil_bicubic(rgb, w, h, scratch, tw, th, &e) != VIDI_OK)
            return frames_fail(err, cap, "thumbnail %dx%d -> %dx%d: %s", w, h, tw, th, e.msg);
        src = scratch;
    }
    unsigned char *jpeg = NULL;
    unsigned long jpeg_size = 0;
    if (tjCompress2(tj, src, tw, 0, th, TJPF_RGB, &jpeg, &jpeg_size, TJSAMP_444, FRAMES_JPEG_QUALITY, 0) != 0) {
        int rc = frames_fail(err, cap, "thumbnail JPEG encoding failed: %s", tjGetErrorStr2(tj));
        tjFree(jpeg);
        return rc;
    }
    *b64 = frames_base64(jpeg, jpeg_size);
    tjFree(jpeg);
    return *b64 ? 0 : frames_fail(err, cap, "out of memory for a thumbnail");
}

int vidi_serve_frames_json(const uint8_t *video, size_t size, double fps, int nframes, char **json,
                           char *err, size_t err_cap) {
    int rc = -1;
    vidi_video v;
    memset(&v, 0, sizeof v);
    tjhandle tj = NULL;
    uint8_t *scratch = NULL;
    json_t *root = NULL, *frames = NULL;
    if (err && err_cap > 0) err[0] = '\0';
    if (!json) return frames_fail(err, err_cap, "frames: NULL output argument");
    *json = NULL;
    if (!video || size == 0) return frames_fail(err, err_cap, "empty video (0 bytes)");
    if (isnan(fps) || isinf(fps)) return frames_fail(err, err_cap, "fps must be a finite number");
    if (nframes < 0) return frames_fail(err, err_cap, "nframes must be positive, got %d", nframes);

    vidi_video_options opt = vidi_video_options_default();
    if (fps > 0) opt.fps = fps;
    opt.nframes = nframes;
    vidi_media_limits lim = vidi_media_limits_default();
    vidi_err e = {0};
    if (vidi_video_decode(video, size, &opt, &lim, &v, &e) != VIDI_OK) {
        const char *kind = vidi_media_sniff(video, size);
        if (kind && strcmp(kind, "image") == 0)
            return frames_fail(err, err_cap, "not a video but an image: it has no frames to sample");
        return frames_fail(err, err_cap, "%s", e.msg);
    }

    int tw, th;
    frames_thumb_size(v.width, v.height, &tw, &th);
    tj = tjInitCompress();
    scratch = malloc((size_t)tw * th * 3);
    root = json_object();
    frames = json_array();
    if (!tj || !scratch || !root || !frames) {
        frames_fail(err, err_cap, "out of memory for the thumbnails");
        goto cleanup;
    }
    if (json_object_set_new(root, "total_frames", json_integer(v.total_frames)) ||
        json_object_set_new(root, "video_fps", json_real(v.video_fps)) ||
        json_object_set_new(root, "duration_s", json_real(v.duration)) ||
        json_object_set_new(root, "sample_fps", json_real(v.sample_fps)) ||
        json_object_set_new(root, "width", json_integer(v.width)) ||
        json_object_set_new(root, "height", json_integer(v.height))) {
        frames_fail(err, err_cap, "out of memory for the frames JSON");
        goto cleanup;
    }
    /* the thumbnails: every sampled frame, or MAX_THUMBS of them at
     * round(linspace(0, n - 1, MAX_THUMBS)) (distinct since n > MAX_THUMBS) */
    int n_thumbs = v.n_frames < VIDI_SERVE_MAX_THUMBS ? v.n_frames : VIDI_SERVE_MAX_THUMBS;
    size_t frame_bytes = (size_t)v.width * v.height * 3;
    for (int k = 0; k < n_thumbs; k++) {
        int i = n_thumbs == v.n_frames ? k
                                       : (int)nearbyint((double)k * (v.n_frames - 1) / (n_thumbs - 1));
        char *b64 = NULL;
        if (frames_thumb(tj, v.rgb + (size_t)i * frame_bytes, v.width, v.height, scratch, tw, th, &b64, err,
                         err_cap) != 0)
            goto cleanup;
        json_t *f = json_pack("{s:I, s:f, s:s}", "index", (json_int_t)v.frame_indices[i], "time_s",
                              v.timestamps[i], "jpeg", b64);
        free(b64);
        if (!f || json_array_append_new(frames, f)) {
            frames_fail(err, err_cap, "out of memory for the frames JSON");
            goto cleanup;
        }
    }
    if (json_object_set(root, "frames", frames)) {
        frames_fail(err, err_cap, "out of memory for the frames JSON");
        goto cleanup;
    }
    *json = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(FRAMES_REAL_DIGITS));
    rc = *json ? 0 : frames_fail(err, err_cap, "out of memory for the frames JSON");
cleanup:
    json_decref(frames);
    json_decref(root);
    free(scratch);
    if (tj) tjDestroy(tj);
    vidi_video_free(&v);
    return rc;
}

/* ------------------------------------------------------------ samples */

typedef struct frames_sample {
    char *name;
    const char *kind;
    long long bytes;
} frames_sample;

/* "video", "image" or NULL from a file name's extension (any case). */
static const char *frames_sample_kind(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return NULL;
    static const char *const video[] = {"mp4", "webm"}, *const image[] = {"png", "jpg", "jpeg"};
    for (size_t i = 0; i < sizeof video / sizeof *video; i++)
        if (strcasecmp(dot + 1, video[i]) == 0) return "video";
    for (size_t i = 0; i < sizeof image / sizeof *image; i++)
        if (strcasecmp(dot + 1, image[i]) == 0) return "image";
    return NULL;
}

static int frames_sample_cmp(const void *a, const void *b) {
    return strcmp(((const frames_sample *)a)->name, ((const frames_sample *)b)->name);
}

int vidi_serve_samples_json(const char *dir, char **json, char *err, size_t err_cap) {
    int rc = -1;
    DIR *d = NULL;
    frames_sample *s = NULL;
    size_t n = 0, cap = 0;
    char *path = NULL;
    json_t *root = NULL, *list = NULL;
    if (err && err_cap > 0) err[0] = '\0';
    if (!json) return frames_fail(err, err_cap, "samples: NULL output argument");
    *json = NULL;
    if (!dir || !*dir) return frames_fail(err, err_cap, "samples: no folder given");
    d = opendir(dir);
    if (!d) return frames_fail(err, err_cap, "cannot read the samples folder '%s': %s", dir, strerror(errno));
    struct dirent *de;
    while ((errno = 0, de = readdir(d)) != NULL) {
        const char *kind = frames_sample_kind(de->d_name);
        if (de->d_name[0] == '.' || !kind) continue;
        free(path);
        path = malloc(strlen(dir) + strlen(de->d_name) + 2);
        if (!path) {
            frames_fail(err, err_cap, "out of memory listing '%s'", dir);
            goto cleanup;
        }
        sprintf(path, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue; /* dangling link, folder, fifo */
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            frames_sample *ns = realloc(s, nc * sizeof *ns);
            if (!ns) {
                frames_fail(err, err_cap, "out of memory listing '%s'", dir);
                goto cleanup;
            }
            s = ns;
            cap = nc;
        }
        s[n].name = strdup(de->d_name);
        s[n].kind = kind;
        s[n].bytes = (long long)sb.st_size;
        if (!s[n].name) {
            frames_fail(err, err_cap, "out of memory listing '%s'", dir);
            goto cleanup;
        }
        n++;
    }
    if (errno != 0) {
        frames_fail(err, err_cap, "cannot read the samples folder '%s': %s", dir, strerror(errno));
        goto cleanup;
    }
    if (n > 1) qsort(s, n, sizeof *s, frames_sample_cmp);
    root = json_object();
    list = json_array();
    if (!root || !list || json_object_set(root, "samples", list)) {
        frames_fail(err, err_cap, "out of memory for the samples JSON");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *name = json_string(s[i].name);
        if (!name) continue; /* not UTF-8: no page could name it */
        json_t *o = json_pack("{s:o, s:s, s:I}", "name", name, "kind", s[i].kind, "bytes",
                              (json_int_t)s[i].bytes);
        if (!o || json_array_append_new(list, o)) {
            frames_fail(err, err_cap, "out of memory for the samples JSON");
            goto cleanup;
        }
    }
    *json = json_dumps(root, JSON_COMPACT);
    rc = *json ? 0 : frames_fail(err, err_cap, "out of memory for the samples JSON");
cleanup:
    json_decref(list);
    json_decref(root);
    for (size_t i = 0; i < n; i++) free(s[i].name);
    free(s);
    free(path);
    if (d) closedir(d);
    return rc;
}
