/* tools/vidi/cmd_media.c — `vidi media FILE...`: run the media stage on
 * each file and print what the model would be fed (frames chosen and their
 * timestamps, sample fps, resized size, grid, token count, time taken), so
 * that anyone can check a file before sending it, and with --dump compare
 * the patches against the reference processor.
 */
#include "tools/vidi/cmd_media.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/npy.h"
#include "media/media.h"
#include "media/sniff.h" /* the format's name, for display */
#include "model/config.h"

#define SAMPLING_RULE                                                                              \
    "frames chosen by qwen-vl-utils rules (round(linspace)); transformers' own sampler differs"

static void usage_media(FILE *f) {
    fprintf(f,
            "usage: vidi media FILE... [options]\n"
            "Decodes each image or video (sniffed from its bytes) and prints what the model\n"
            "would be fed: frames chosen, timestamps, sample fps, grid, token count, time.\n"
            "Video " SAMPLING_RULE ".\n"
            "options:\n"
            "  --model DIR          read DIR/preprocessor_config.json (default: the built-in\n"
            "                       Qwen2-VL values: min 3136, max 12845056, CLIP mean/std)\n"
            "  --fps F              video sampling rate (default 2)\n"
            "  --nframes N          exactly N video frames (rounded to a multiple of 2)\n"
            "  --min-pixels N       per-frame pixel floor (default: images from the config,\n"
            "                       videos 100352)\n"
            "  --max-pixels N       per-frame pixel cap (default: images from the config,\n"
            "                       videos 602112)\n"
            "  --total-pixels N     video pixel budget over all frames (default 90316800)\n"
            "  --start S, --end S   video time range in seconds\n"
            "  --threads N          decoder threads (default 0 = auto)\n"
            "  --allowed-root DIR   files must resolve inside DIR (repeatable)\n"
            "  --dump DIR           write DIR/<file name>.pixel_values.npy (f32 [rows, cols]),\n"
            "                       .grid.npy (i32 [3]) and, for videos, .frame_indices.npy\n"
            "                       (i32 [n])\n"
            "  --json               one JSON object per file on stdout (JSON Lines)\n"
            "exit status: 0 every file fine, 1 some file failed, 2 bad usage\n");
}

/* ---- options ---- */

typedef struct media_args {
    const char *model_dir;
    const char *dump_dir;
    int json;
    const char **roots;
    int n_roots;
    const char **files;
    int n_files;
    vidi_media_options opt;
} media_args;

static int arg_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "vidi media: %s expects an integer in [%lld, %lld], got '%s'\n", opt,
                (long long)lo, (long long)hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int arg_f64(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "vidi media: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Fills *a from argv; returns 0, 1 for --help (already printed), or -1
 * after printing what was wrong. */
static int media_args_parse(int argc, char **argv, media_args *a) {
    const int64_t big = (int64_t)1 << 40;
    int64_t n;
    a->opt = vidi_media_options_default();
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage_media(stdout);
            return 1;
        }
        if (!strcmp(s, "--json")) {
            a->json = 1;
            continue;
        }
        if (strncmp(s, "--", 2) != 0) {
            a->files[a->n_files++] = s;
            continue;
        }
        static const char *const valued[] = {"--model", "--dump", "--allowed-root", "--fps",
                                             "--nframes", "--min-pixels", "--max-pixels",
                                             "--total-pixels", "--start", "--end", "--threads"};
        size_t k = 0;
        while (k < sizeof valued / sizeof *valued && strcmp(s, valued[k])) k++;
        if (k == sizeof valued / sizeof *valued) {
            fprintf(stderr, "vidi media: unknown option '%s'\n", s);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "vidi media: %s needs a value\n", s);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(s, "--model")) {
            a->model_dir = v;
        } else if (!strcmp(s, "--dump")) {
            a->dump_dir = v;
        } else if (!strcmp(s, "--allowed-root")) {
            a->roots[a->n_roots++] = v;
        } else if (!strcmp(s, "--fps")) {
            if (arg_f64(s, v, 1e-6, 1000.0, &a->opt.video.fps)) return -1;
        } else if (!strcmp(s, "--nframes")) {
            if (arg_i64(s, v, 1, 1 << 20, &n)) return -1;
            a->opt.video.nframes = (int)n;
        } else if (!strcmp(s, "--min-pixels")) {
            if (arg_i64(s, v, 1, big, &a->opt.min_pixels)) return -1;
        } else if (!strcmp(s, "--max-pixels")) {
            if (arg_i64(s, v, 1, big, &a->opt.max_pixels)) return -1;
        } else if (!strcmp(s, "--total-pixels")) {
            if (arg_i64(s, v, 1, big, &a->opt.total_pixels)) return -1;
        } else if (!strcmp(s, "--start")) {
            if (arg_f64(s, v, 0.0, 1e9, &a->opt.video.start_time)) return -1;
        } else if (!strcmp(s, "--end")) {
            if (arg_f64(s, v, 0.0, 1e9, &a->opt.video.end_time)) return -1;
        } else { /* --threads */
            if (arg_i64(s, v, 0, 256, &n)) return -1;
            a->opt.video.threads = (int)n;
        }
    }
    if (!a->n_files) {
        fprintf(stderr, "vidi media: no files given\n");
        return -1;
    }
    if (a->opt.video.start_time >= 0 && a->opt.video.end_time >= 0 &&
        a->opt.video.end_time <= a->opt.video.start_time) {
        fprintf(stderr, "vidi media: --end (%g) must be after --start (%g)\n",
                a->opt.video.end_time, a->opt.video.start_time);
        return -1;
    }
    return 0;
}

/* ---- one file ---- */

/* What one file gave: the item plus what only the decoder knows. */
typedef struct media_report {
    const char *path;
    const char *kind;        /* "image" or "video" */
    char format[32];         /* image format or video container */
    char codec[32];          /* videos */
    int src_w, src_h;        /* decoded size (after rotation for videos) */
    int64_t total_frames;
    int64_t frames_decoded;  /* by the decode-only pass, chosen or not */
    int seeks;               /* keyframe seeks of that pass */
    int rotation;            /* clockwise degrees applied from the metadata */
    double video_fps, duration;
    double decode_ms;        /* a decode-only pass */
    double pipeline_ms;      /* decode + resize + rescale/normalise + patchify */
    vidi_media_item item;
} media_report;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Decode once on its own (timed, and for what only the decoder reports),
 * then run the whole pipeline to patches (timed). */
static vidi_status media_run_file(const media_args *a, const vidi_preproc_config *pp,
                                  const vidi_media_limits *lim, media_report *r, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    uint8_t *data = NULL;
    size_t size = 0;
    vidi_image img = {0};
    vidi_video vid = {0};

    VIDI_TRY(vidi_media_read_file(r->path, a->roots, a->n_roots, lim->max_bytes, &data, &size, err));
    r->kind = vidi_media_sniff(data, size);
    VIDI_CHECK(r->kind, err, VIDI_ERR_FORMAT,
               "not an image or a video this build can read (%zu bytes, unknown format)", size);
    double t0 = now_ms();
    if (!strcmp(r->kind, "image")) {
        snprintf(r->format, sizeof r->format, "%s",
                 vidi_media_format_name(vidi_media_sniff_format(data, size)));
        VIDI_TRY(vidi_image_decode(data, size, lim, &img, err));
        r->src_w = img.width;
        r->src_h = img.height;
    } else {
        VIDI_TRY(vidi_video_decode(data, size, &a->opt.video, lim, &vid, err));
        r->src_w = vid.width;
        r->src_h = vid.height;
        r->total_frames = vid.total_frames;
        r->frames_decoded = vid.frames_decoded;
        r->seeks = vid.seeks;
        r->rotation = vid.rotation;
        r->video_fps = vid.video_fps;
        r->duration = vid.duration;
        snprintf(r->format, sizeof r->format, "%s", vid.container);
        snprintf(r->codec, sizeof r->codec, "%s", vid.codec);
    }
    double t1 = now_ms();
    if (!strcmp(r->kind, "image"))
        VIDI_TRY(vidi_media_image_to_item(data, size, pp, &a->opt, lim, &r->item, err));
    else
        VIDI_TRY(vidi_media_video_to_item(data, size, pp, &a->opt, lim, &r->item, err));
    double t2 = now_ms();
    r->decode_ms = t1 - t0;
    r->pipeline_ms = t2 - t1;
fail:
    vidi_video_free(&vid);
    vidi_image_free(&img);
    free(data);
    return rc;
}

/* ---- --dump ---- */

/* path = dir/base.suffix, refusing a name that does not fit. */
static vidi_status dump_path(char *path, size_t cap, const char *dir, const char *base,
                             const char *suffix, vidi_err *err) {
    int w = snprintf(path, cap, "%s/%s.%s", dir, base, suffix);
    if (w < 0 || (size_t)w >= cap)
        return vidi_err_set(err, VIDI_ERR_RANGE, "--dump: path too long for '%s.%s'", base, suffix);
    return VIDI_OK;
}

static vidi_status media_dump(const char *dir, const media_report *r, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    char path[4096];
    int32_t *idx = NULL;
    const char *base = strrchr(r->path, '/');
    base = base ? base + 1 : r->path;
    const vidi_media_item *it = &r->item;

    int64_t shape[2] = {it->rows, it->cols};
    VIDI_TRY(dump_path(path, sizeof path, dir, base, "pixel_values.npy", err));
    VIDI_TRY(vidi_npy_write(path, VIDI_DTYPE_F32, 2, shape, it->pixels, err));
    int64_t three = 3;
    VIDI_TRY(dump_path(path, sizeof path, dir, base, "grid.npy", err));
    VIDI_TRY(vidi_npy_write(path, VIDI_DTYPE_I32, 1, &three, it->grid, err));
    if (it->is_video) {
        idx = malloc((size_t)(it->n_frames ? it->n_frames : 1) * sizeof *idx);
        VIDI_CHECK(idx, err, VIDI_ERR_NOMEM, "out of memory");
        for (int i = 0; i < it->n_frames; i++) {
            VIDI_CHECK(it->frame_indices[i] >= 0 && it->frame_indices[i] <= INT32_MAX, err,
                       VIDI_ERR_RANGE, "frame index %lld does not fit an i32 .npy",
                       (long long)it->frame_indices[i]);
            idx[i] = (int32_t)it->frame_indices[i];
        }
        int64_t n = it->n_frames;
        VIDI_TRY(dump_path(path, sizeof path, dir, base, "frame_indices.npy", err));
        VIDI_TRY(vidi_npy_write(path, VIDI_DTYPE_I32, 1, &n, idx, err));
    }
fail:
    free(idx);
    return rc;
}

/* ---- printing ---- */

static int64_t media_tokens(const media_report *r, const vidi_preproc_config *pp) {
    const int32_t *g = r->item.grid;
    return (int64_t)g[0] * g[1] * g[2] / ((int64_t)pp->merge_size * pp->merge_size);
}

static void media_print_text(const media_report *r, const vidi_preproc_config *pp) {
    const vidi_media_item *it = &r->item;
    if (it->is_video)
        printf("%s: video (container %s, codec %s)\n", r->path, r->format, r->codec);
    else
        printf("%s: image (%s)\n", r->path, r->format);
    printf("  source        %dx%d", r->src_w, r->src_h);
    if (it->is_video)
        printf(", %lld frames at %.4g fps, %.3f s", (long long)r->total_frames, r->video_fps,
               r->duration);
    if (it->is_video && r->rotation) printf(", turned %d degrees clockwise by its metadata", r->rotation);
    printf("\n  resized       %dx%d\n", it->resized_w, it->resized_h);
    if (it->is_video) {
        printf("  frames        %d, " SAMPLING_RULE "\n", it->n_frames);
        printf("  indices      ");
        for (int i = 0; i < it->n_frames; i++)
            printf("%s %lld", i && i % 16 == 0 ? "\n               " : "",
                   (long long)it->frame_indices[i]);
        printf("\n  timestamps   ");
        for (int i = 0; i < it->n_frames; i++)
            printf("%s %.3f", i && i % 12 == 0 ? "\n               " : "", it->timestamps[i]);
        printf("\n  sample fps    %.6g (second_per_grid_t %.6g)\n", it->sample_fps,
               it->second_per_grid_t);
    }
    printf("  grid          t=%d h=%d w=%d -> %lld tokens (t*h*w/%d), %lld patch rows x %d\n",
           it->grid[0], it->grid[1], it->grid[2], (long long)media_tokens(r, pp),
           pp->merge_size * pp->merge_size, (long long)it->rows, it->cols);
    if (it->is_video)
        printf("  decoded       %lld frames in %d keyframe seeks to get these %d\n",
               (long long)r->frames_decoded, r->seeks, it->n_frames);
    printf("  time          decode %.1f ms (decode-only pass); pipeline %.1f ms (decode + "
           "resize + normalise + patchify; preprocess ~ %.1f ms)\n",
           r->decode_ms, r->pipeline_ms, r->pipeline_ms - r->decode_ms);
}

/* json_real refuses NaN/inf; a non-finite value becomes null. */
static json_t *json_num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static void media_print_json(const media_report *r, const vidi_preproc_config *pp) {
    const vidi_media_item *it = &r->item;
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(r->path));
    json_object_set_new(o, "kind", json_string(r->kind));
    json_object_set_new(o, it->is_video ? "container" : "format", json_string(r->format));
    if (it->is_video) json_object_set_new(o, "codec", json_string(r->codec));
    json_object_set_new(o, "source", json_pack("{s:i,s:i}", "width", r->src_w, "height", r->src_h));
    json_object_set_new(o, "resized",
                        json_pack("{s:i,s:i}", "width", it->resized_w, "height", it->resized_h));
    if (it->is_video) {
        json_t *idx = json_array(), *ts = json_array();
        for (int i = 0; i < it->n_frames; i++) {
            json_array_append_new(idx, json_integer(it->frame_indices[i]));
            json_array_append_new(ts, json_num(it->timestamps[i]));
        }
        json_object_set_new(o, "n_frames", json_integer(it->n_frames));
        json_object_set_new(o, "frame_indices", idx);
        json_object_set_new(o, "timestamps", ts);
        json_object_set_new(o, "sampling", json_string(SAMPLING_RULE));
        json_object_set_new(o, "video_fps", json_num(r->video_fps));
        json_object_set_new(o, "total_frames", json_integer(r->total_frames));
        json_object_set_new(o, "frames_decoded", json_integer(r->frames_decoded));
        json_object_set_new(o, "seeks", json_integer(r->seeks));
        json_object_set_new(o, "rotation", json_integer(r->rotation));
        json_object_set_new(o, "duration", json_num(r->duration));
        json_object_set_new(o, "sample_fps", json_num(it->sample_fps));
        json_object_set_new(o, "second_per_grid_t", json_num(it->second_per_grid_t));
    }
    json_object_set_new(o, "grid", json_pack("[i,i,i]", it->grid[0], it->grid[1], it->grid[2]));
    json_object_set_new(o, "tokens", json_integer(media_tokens(r, pp)));
    json_object_set_new(o, "rows", json_integer(it->rows));
    json_object_set_new(o, "cols", json_integer(it->cols));
    json_object_set_new(o, "decode_ms", json_num(r->decode_ms));
    json_object_set_new(o, "pipeline_ms", json_num(r->pipeline_ms));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (s) puts(s);
    free(s);
    json_decref(o);
}

static void media_print_error(const media_args *a, const char *path, const vidi_err *err) {
    fprintf(stderr, "vidi media: %s: %s\n", path, err->msg);
    if (!a->json) return;
    json_t *o = json_pack("{s:s,s:s,s:s}", "file", path, "error", err->msg, "status",
                          vidi_status_name(err->status));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (s) puts(s);
    free(s);
    json_decref(o);
}

int vidi_cmd_media(int argc, char **argv) {
    media_args a = {0};
    vidi_preproc_config pp;
    vidi_err err;
    int rc = 2, failed = 0;

    a.files = calloc((size_t)argc, sizeof *a.files);
    a.roots = calloc((size_t)argc, sizeof *a.roots);
    if (!a.files || !a.roots) {
        fprintf(stderr, "vidi media: out of memory\n");
        goto done;
    }
    int p = media_args_parse(argc, argv, &a);
    if (p) {
        if (p < 0) fprintf(stderr, "run 'vidi media --help' for usage\n");
        rc = p > 0 ? 0 : 2;
        goto done;
    }
    /* No --model: the built-in Qwen2-VL processor defaults. */
    pp = vidi_preproc_config_default();
    if (a.model_dir && vidi_preproc_config_load(a.model_dir, &pp, &err) != VIDI_OK) {
        fprintf(stderr, "vidi media: %s\n", err.msg);
        rc = 1;
        goto done;
    }
    if (a.dump_dir && mkdir(a.dump_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "vidi media: --dump %s: cannot create: %s\n", a.dump_dir, strerror(errno));
        rc = 1;
        goto done;
    }
    vidi_media_limits lim = vidi_media_limits_default();
    for (int i = 0; i < a.n_files; i++) {
        media_report r = {.path = a.files[i]};
        vidi_err_clear(&err);
        if (media_run_file(&a, &pp, &lim, &r, &err) != VIDI_OK ||
            (a.dump_dir && media_dump(a.dump_dir, &r, &err) != VIDI_OK)) {
            media_print_error(&a, r.path, &err);
            failed = 1;
        } else if (a.json) {
            media_print_json(&r, &pp);
        } else {
            media_print_text(&r, &pp);
        }
        fflush(stdout);
        vidi_media_item_free(&r.item);
    }
    rc = failed;
done:
    free(a.files);
    free(a.roots);
    return rc;
}
