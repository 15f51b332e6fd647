/* tests/serve/test_frames.c — the video QA page's JSON answers
 * (tools/serve/frames.c): the sampled frames of a video as thumbnails, the
 * sample files of a folder.
 *
 * usage: test_frames EXAMPLES_DIR [case]
 * The frame counts and indices are checked against vidi_video_sample_indices
 * (the media stage's rule), the thumbnails by decoding them with TurboJPEG
 * and comparing with the decoded frame shrunk the same way.
 */
#include "tools/serve/frames.h"

#include "media/media.h"
#include "test_util.h"

#include <jansson.h>
#include <turbojpeg.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_examples;

static const char *example(const char *name) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_examples, name);
    return buf[k];
}

static uint8_t *read_all(const char *path, size_t *n) {
    uint8_t *data = NULL;
    vidi_err e = {0};
    if (vidi_media_read_file(path, NULL, 0, (int64_t)1 << 30, &data, n, &e) != VIDI_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return NULL;
    }
    return data;
}

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict base64 (length a multiple of 4, padding only at the end) -> malloc'd
 * bytes, or NULL. */
static uint8_t *b64_decode(const char *s, size_t *n) {
    size_t len = strlen(s);
    if (len == 0 || len % 4) return NULL;
    uint8_t *out = malloc(len / 4 * 3);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == len && j >= 2) {
                v[j] = 0;
                pad++;
            } else if ((v[j] = b64_val(s[i + j])) < 0 || pad) {
                free(out);
                return NULL;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) out[o++] = (uint8_t)(w >> 8);
        if (pad < 1) out[o++] = (uint8_t)w;
    }
    *n = o;
    return out;
}

/* The JSON of vidi_serve_frames_json on a file, parsed; NULL on failure
 * (after a recorded check). */
static json_t *frames_of(const char *path, double fps, int nframes) {
    size_t n = 0;
    uint8_t *data = read_all(path, &n);
    CHECK(data != NULL, "cannot read %s", path);
    if (!data) return NULL;
    char *js = NULL, err[512] = "";
    int rc = vidi_serve_frames_json(data, n, fps, nframes, &js, err, sizeof err);
    free(data);
    CHECK(rc == 0 && js, "frames of %s (fps %g, nframes %d): %s", path, fps, nframes, err);
    if (rc != 0 || !js) return NULL;
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    CHECK(root != NULL, "frames JSON does not parse: %s", je.text);
    free(js);
    return root;
}

/* Decodes one thumbnail: checks it is a JPEG of tw x th; returns its RGB
 * pixels (malloc'd) or NULL. */
static uint8_t *thumb_rgb(const char *b64, int tw, int th) {
    size_t n = 0;
    uint8_t *jpeg = b64_decode(b64, &n);
    CHECK(jpeg != NULL, "thumbnail is not base64");
    if (!jpeg) return NULL;
    tjhandle tj = tjInitDecompress();
    int w = 0, h = 0, sub = 0, cs = 0;
    uint8_t *rgb = NULL;
    int ok = tj && tjDecompressHeader3(tj, jpeg, (unsigned long)n, &w, &h, &sub, &cs) == 0;
    CHECK(ok, "thumbnail is not a JPEG: %s", tj ? tjGetErrorStr2(tj) : "no TurboJPEG handle");
    if (ok) {
        CHECK(w == tw && h == th, "thumbnail is %dx%d, want %dx%d", w, h, tw, th);
        CHECK(w <= VIDI_SERVE_THUMB_SIDE && h <= VIDI_SERVE_THUMB_SIDE, "thumbnail %dx%d is too big", w, h);
        rgb = malloc((size_t)w * h * 3);
        if (rgb && (w != tw || h != th || tjDecompress2(tj, jpeg, (unsigned long)n, rgb, w, 0, h, TJPF_RGB, 0) != 0)) {
            free(rgb);
            rgb = NULL;
        }
    }
    if (tj) tjDestroy(tj);
    free(jpeg);
    return rgb;
}

/* Checks the frames JSON of `file` against the media stage decoding it with
 * the same options: header numbers, every thumbnail's index and time, and
 * (for every thumbnail) the picture itself against the frame shrunk with
 * Pillow's bicubic (mean absolute difference under 4 of 255: JPEG q85). */
static void check_frames(const char *path, double fps, int nframes, int want_thumbs) {
    json_t *root = frames_of(path, fps, nframes);
    if (!root) return;
    vidi_video_options opt = vidi_video_options_default();
    if (fps > 0) opt.fps = fps;
    opt.nframes = nframes;
    vidi_video v;
    vidi_err e = {0};
    int64_t idx[1024];
    int n = 0;
    uint8_t *small = NULL;
    if (vidi_video_decode_file(path, &opt, NULL, &v, &e) != VIDI_OK) {
        CHECK(0, "media stage decode of %s: %s", path, e.msg);
        json_decref(root);
        return;
    }
    CHECK(json_integer_value(json_object_get(root, "total_frames")) == v.total_frames, "total_frames");
    CHECK(json_integer_value(json_object_get(root, "width")) == v.width, "width");
    CHECK(json_integer_value(json_object_get(root, "height")) == v.height, "height");
    double vfps = json_number_value(json_object_get(root, "video_fps"));
    CHECK(fabs(vfps - v.video_fps) < 1e-6 * v.video_fps, "video_fps %g, want %g", vfps, v.video_fps);
    CHECK(fabs(json_number_value(json_object_get(root, "duration_s")) - v.duration) < 1e-6, "duration_s");
    CHECK(fabs(json_number_value(json_object_get(root, "sample_fps")) - v.sample_fps) < 1e-6, "sample_fps");

    /* the count the media stage's rule gives for this stream */
    if (vidi_video_sample_indices(v.total_frames, v.video_fps, &opt, idx, 1024, &n, &e) != VIDI_OK) {
        CHECK(0, "sample_indices: %s", e.msg);
        goto done;
    }
    CHECK(n == v.n_frames, "the rule samples %d frames, the decoder %d", n, v.n_frames);
    json_t *frames = json_object_get(root, "frames");
    int got = (int)json_array_size(frames);
    int expect = n < VIDI_SERVE_MAX_THUMBS ? n : VIDI_SERVE_MAX_THUMBS;
    CHECK(got == expect && got == want_thumbs, "%d thumbnails, want %d (%d sampled)", got, want_thumbs, n);
    int tw = (int)nearbyint(fmin(1.0, fmin(160.0 / v.width, 160.0 / v.height)) * v.width);
    int th = (int)nearbyint(fmin(1.0, fmin(160.0 / v.width, 160.0 / v.height)) * v.height);
    small = malloc((size_t)tw * th * 3);
    REQUIRE(small, "out of memory");
    int j = 0; /* position among the sampled frames */
    for (int k = 0; k < got; k++) {
        json_t *f = json_array_get(frames, (size_t)k);
        int64_t index = json_integer_value(json_object_get(f, "index"));
        /* thumbnails are a subsequence of the sampled frames, first and last included */
        while (j < n && v.frame_indices[j] != index) j++;
        if (j == n) {
            CHECK(0, "thumbnail %d: index %lld is not a sampled frame", k, (long long)index);
            break;
        }
        CHECK(idx[j] == index, "thumbnail %d: index %lld, the rule's %lld", k, (long long)index, (long long)idx[j]);
        if (k == 0) CHECK(j == 0, "the first thumbnail is not the first sampled frame");
        if (k == got - 1) CHECK(j == n - 1, "the last thumbnail is sampled frame %d of %d", j, n);
        double t = json_number_value(json_object_get(f, "time_s"));
        CHECK(fabs(t - v.timestamps[j]) < 1e-6, "thumbnail %d: time %g, want %g", k, t, v.timestamps[j]);
        uint8_t *rgb = thumb_rgb(json_string_value(json_object_get(f, "jpeg")), tw, th);
        if (!rgb) continue;
        const uint8_t *frame = v.rgb + (size_t)j * v.width * v.height * 3;
        const uint8_t *ref = frame;
        if (tw != v.width || th != v.height) {
            REQUIRE(vidi_resize_pil_bicubic(frame, v.width, v.height, small, tw, th, &e) == VIDI_OK, "%s", e.msg);
            ref = small;
        }
        double sum = 0;
        for (size_t p = 0; p < (size_t)tw * th * 3; p++) sum += fabs((double)rgb[p] - ref[p]);
        CHECK(sum / ((double)tw * th * 3) < 4.0, "thumbnail %d differs from its frame by %.2f on average", k,
              sum / ((double)tw * th * 3));
        free(rgb);
    }
done:
    free(small);
    vidi_video_free(&v);
    json_decref(root);
}

/* ------------------------------------------------------------ frames */

static void test_frames_at_the_default_2_fps(void) {
    /* 40 frames at 5 fps: 8 s * 2 fps = 16 frames, 308x254 -> 160x132 */
    check_frames(example("video_500016.mp4"), 0.0, 0, 16);
}

static void test_frames_nframes_exactly(void) {
    check_frames(example("video_500016.mp4"), 0.0, 6, 6);
    check_frames(example("video_500016.mp4"), 1.0, 0, 8);
}

static void test_frames_more_than_64_are_thinned_evenly(void) {
    /* 150 frames at 15 fps, 96x64 (kept, not enlarged): 100 sampled, 64 shown */
    check_frames(test_data_path("media/vid/h264_bframes.mp4"), 0.0, 100, VIDI_SERVE_MAX_THUMBS);
}

static void test_frames_webm(void) {
    /* 19 frames at 8 fps: 2.4 s * 2 fps -> the minimum of 4; 226x76 -> 160x54 */
    check_frames(example("video_500018.webm"), 0.0, 0, 4);
}

static void expect_error(const uint8_t *data, size_t n, double fps, int nframes, const char *needle,
                         const char *what) {
    char *js = (char *)"untouched", err[512] = "";
    int rc = vidi_serve_frames_json(data, n, fps, nframes, &js, err, sizeof err);
    CHECK(rc == -1, "%s: accepted", what);
    CHECK(js == NULL, "%s: *json is not NULL", what);
    CHECK(err[0] != '\0', "%s: no message", what);
    if (needle) CHECK(strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", what, err, needle);
    if (rc == 0) free(js);
    printf("     %s -> %s\n", what, err);
}

static void test_frames_of_an_image_say_so(void) {
    size_t n = 0;
    uint8_t *png = read_all(example("image_500001.png"), &n);
    REQUIRE(png, "cannot read image_500001.png");
    expect_error(png, n, 0.0, 0, "image", "a PNG image");
    free(png);
}

static void test_frames_of_a_corrupt_video_fail_with_a_message(void) {
    size_t n = 0;
    uint8_t *mp4 = read_all(example("video_500016.mp4"), &n);
    REQUIRE(mp4 && n > 4096, "cannot read video_500016.mp4");
    /* the header kept, everything after the first 2 KiB overwritten */
    uint8_t *bad = malloc(n);
    REQUIRE(bad, "out of memory");
    memcpy(bad, mp4, n);
    for (size_t i = 2048; i < n; i++) bad[i] = (uint8_t)(i * 131u + 7u);
    expect_error(bad, n, 0.0, 0, NULL, "an mp4 overwritten after 2 KiB");
    expect_error(mp4, 1000, 0.0, 0, NULL, "an mp4 cut at 1000 bytes");
    static const uint8_t text[] = "this is not a video, only some text long enough to be probed";
    expect_error(text, sizeof text, 0.0, 0, NULL, "text");
    expect_error(mp4, 0, 0.0, 0, "empty", "0 bytes");
    expect_error(mp4, n, 0.0, 100, "[2, 40]", "100 frames of 40");
    expect_error(mp4, n, NAN, 0, "fps", "fps NaN");
    expect_error(mp4, n, 0.0, -2, "nframes", "nframes -2");
    free(bad);
    free(mp4);
}

/* ------------------------------------------------------------ samples */

static void test_samples_of_the_examples(void) {
    char *js = NULL, err[512] = "";
    REQUIRE(vidi_serve_samples_json(g_examples, &js, err, sizeof err) == 0, "%s", err);
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    free(js);
    REQUIRE(root, "samples JSON does not parse: %s", je.text);
    json_t *list = json_object_get(root, "samples");
    static const char *const want[][2] = {{"image_500001.png", "image"},
                                          {"image_500003.jpg", "image"},
                                          {"video_500016.mp4", "video"},
                                          {"video_500018.webm", "video"}};
    CHECK(json_array_size(list) == 4, "%zu samples, want 4 (manifest.json, questions.tsv, epd.conf left out)",
          json_array_size(list));
    for (size_t i = 0; i < 4 && i < json_array_size(list); i++) {
        json_t *s = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(s, "name"));
        CHECK(name && strcmp(name, want[i][0]) == 0, "sample %zu: %s, want %s", i, name ? name : "(none)", want[i][0]);
        const char *kind = json_string_value(json_object_get(s, "kind"));
        CHECK(kind && strcmp(kind, want[i][1]) == 0, "sample %zu: kind %s", i, kind ? kind : "(none)");
        struct stat sb;
        CHECK(stat(example(want[i][0]), &sb) == 0 &&
                  json_integer_value(json_object_get(s, "bytes")) == (json_int_t)sb.st_size,
              "sample %zu: bytes", i);
    }
    json_decref(root);
}

static void touch(const char *path, int bytes) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    for (int i = 0; i < bytes; i++) fputc('x', f);
    fclose(f);
}

static void test_samples_sorted_filtered_any_case(void) {
    const char *dir = test_tmpdir();
    REQUIRE(dir, "no scratch folder");
    touch(test_tmp_path("b.MP4"), 3);
    touch(test_tmp_path("a.jpeg"), 5);
    touch(test_tmp_path("C.webm"), 0);
    touch(test_tmp_path(".hidden.png"), 1);
    touch(test_tmp_path("notes.txt"), 1);
    touch(test_tmp_path("png"), 1);
    REQUIRE(mkdir(test_tmp_path("folder.mp4"), 0700) == 0, "mkdir");
    REQUIRE(symlink("a.jpeg", test_tmp_path("link.jpg")) == 0, "symlink");
    REQUIRE(symlink("missing.png", test_tmp_path("dangling.png")) == 0, "symlink");
    char *js = NULL, err[512] = "";
    REQUIRE(vidi_serve_samples_json(dir, &js, err, sizeof err) == 0, "%s", err);
    static const char want[] = "{\"samples\":[{\"name\":\"C.webm\",\"kind\":\"video\",\"bytes\":0},"
                               "{\"name\":\"a.jpeg\",\"kind\":\"image\",\"bytes\":5},"
                               "{\"name\":\"b.MP4\",\"kind\":\"video\",\"bytes\":3},"
                               "{\"name\":\"link.jpg\",\"kind\":\"image\",\"bytes\":5}]}";
    CHECK(strcmp(js, want) == 0, "samples JSON\n  %s\nwant\n  %s", js, want);
    free(js);
}

static void test_samples_of_a_missing_folder_fail(void) {
    char *js = (char *)"untouched", err[512] = "";
    CHECK(vidi_serve_samples_json("/nonexistent/vidi-samples", &js, err, sizeof err) == -1, "accepted");
    CHECK(js == NULL, "*json is not NULL");
    CHECK(strstr(err, "/nonexistent/vidi-samples") != NULL, "message: %s", err);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_frames EXAMPLES_DIR [case]\n");
        return 2;
    }
    g_examples = argv[1];
    static const test_case cases[] = {
        {"frames_at_the_default_2_fps", test_frames_at_the_default_2_fps},
        {"frames_nframes_exactly", test_frames_nframes_exactly},
        {"frames_more_than_64_are_thinned_evenly", test_frames_more_than_64_are_thinned_evenly},
        {"frames_webm", test_frames_webm},
        {"frames_of_an_image_say_so", test_frames_of_an_image_say_so},
        {"frames_of_a_corrupt_video_fail_with_a_message", test_frames_of_a_corrupt_video_fail_with_a_message},
        {"samples_of_the_examples", test_samples_of_the_examples},
        {"samples_sorted_filtered_any_case", test_samples_sorted_filtered_any_case},
        {"samples_of_a_missing_folder_fail", test_samples_of_a_missing_folder_fail},
    };
    char *sub[] = {argv[0], argc > 2 ? argv[2] : NULL};
    return test_main(argc > 2 ? 2 : 1, sub, cases, (int)(sizeof cases / sizeof *cases));
}
