/* tests/media/test_video.c — video frame choice and seek-based decoding
 * (media/video.c) against qwen-vl-utils' rules and PyAV decoding every frame.
 *
 * Fixtures: tests/data/media/vid/ and its expected.json, written by
 * tools/golden/video_fixtures.py (per-frame RGB md5s from PyAV, frames in
 * presentation order, rotation applied as ffmpeg's autorotate does).
 */
#include "media/media.h"
#include "test_util.h"

#include <jansson.h>
#include <libavutil/md5.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VID_DIR "media/vid/"

static int sample(int64_t total, double vfps, vidi_video_options o, int64_t *idx, int *n,
                  vidi_err *err) {
    return vidi_video_sample_indices(total, vfps, &o, idx, 1024, n, err);
}

/* ------------------------------------------------------------ frame choice */

static void test_sample_10s_30fps_takes_20_frames(void) {
    int64_t idx[1024];
    int n = 0;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    REQUIRE(sample(300, 30.0, o, idx, &n, &err) == VIDI_OK, "%s", err.msg);
    static const int64_t want[20] = {0,   16,  31,  47,  63,  79,  94,  110, 126, 142,
                                     157, 173, 189, 205, 220, 236, 252, 268, 283, 299};
    REQUIRE(n == 20, "n = %d", n);
    for (int i = 0; i < 20; i++) CHECK(idx[i] == want[i], "idx[%d] = %lld, want %lld", i, (long long)idx[i], (long long)want[i]);
}

static void test_sample_nframes_rounds_to_even_half_to_even(void) {
    int64_t idx[1024];
    int n = 0;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    /* round(nframes / 2) * 2 with Python's round: 7 -> 8, 5 -> 4 (2.5 -> 2), 3 -> 4 (1.5 -> 2) */
    static const int in[3] = {7, 5, 3}, out[3] = {8, 4, 4};
    for (int k = 0; k < 3; k++) {
        o.nframes = in[k];
        REQUIRE(sample(10, 30.0, o, idx, &n, &err) == VIDI_OK, "%s", err.msg);
        CHECK(n == out[k], "nframes %d -> %d, want %d", in[k], n, out[k]);
    }
    o.nframes = 7; /* 8 of 10: round(linspace(0, 9, 8)) */
    REQUIRE(sample(10, 30.0, o, idx, &n, &err) == VIDI_OK, "%s", err.msg);
    static const int64_t want[8] = {0, 1, 3, 4, 5, 6, 8, 9};
    for (int i = 0; i < 8; i++) CHECK(idx[i] == want[i], "idx[%d] = %lld", i, (long long)idx[i]);
    o.nframes = 12; /* more than the 10 frames there are */
    CHECK(sample(10, 30.0, o, idx, &n, &err) == VIDI_ERR_INVALID, "12 of 10 frames accepted");
    CHECK(strstr(err.msg, "[2, 10]") != NULL, "message: %s", err.msg);
}

static void test_sample_short_video_clamps_to_min_frames(void) {
    int64_t idx[1024];
    int n = 0;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    /* 5 frames at 30 fps: 0.33 frames by fps, raised to 4 */
    REQUIRE(sample(5, 30.0, o, idx, &n, &err) == VIDI_OK, "%s", err.msg);
    REQUIRE(n == 4, "n = %d", n);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 3 && idx[3] == 4, "idx %lld %lld %lld %lld",
          (long long)idx[0], (long long)idx[1], (long long)idx[2], (long long)idx[3]);
    /* 3 frames: the minimum is capped by floor2(3) = 2 */
    REQUIRE(sample(3, 30.0, o, idx, &n, &err) == VIDI_OK, "%s", err.msg);
    CHECK(n == 2 && idx[0] == 0 && idx[1] == 2, "n %d idx %lld %lld", n, (long long)idx[0], (long long)idx[1]);
    /* a long video at fps 2 is capped by max_frames (768), and fps 0.1 over 100 s -> 10 */
    REQUIRE(sample(100000, 25.0, o, idx, &n, &err) == VIDI_OK, "%s", err.msg);
    CHECK(n == 768 && idx[767] == 99999, "n = %d", n);
    o.fps = 0.1;
    REQUIRE(sample(2500, 25.0, o, idx, &n, &err) == VIDI_OK, "%s", err.msg);
    CHECK(n == 10, "n = %d", n);
}

static void test_sample_one_frame_video_is_an_error(void) {
    int64_t idx[1024];
    int n = -1;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    /* qwen-vl-utils: max_frames = floor2(min(768, 1)) = 0 -> nframes 0, outside [2, 1] */
    CHECK(sample(1, 30.0, o, idx, &n, &err) == VIDI_ERR_INVALID, "one frame accepted");
    CHECK(strstr(err.msg, "[2, 1]") != NULL, "message: %s", err.msg);
    CHECK(n == 0, "n = %d", n);
    o.fps = -1.0;
    CHECK(sample(100, 30.0, o, idx, &n, &err) == VIDI_ERR_INVALID, "negative fps accepted");
}

/* ------------------------------------------------------------ decoding */

static json_t *expected(void) {
    json_error_t je;
    json_t *j = json_load_file(test_data_path(VID_DIR "expected.json"), 0, &je);
    if (!j) fprintf(stderr, "expected.json: %s (line %d)\n", je.text, je.line);
    return j;
}

static void md5_hex(const uint8_t *p, size_t n, char out[33]) {
    uint8_t d[16];
    av_md5_sum(d, p, (int)n);
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static double jnum(json_t *o, const char *k, double dflt) {
    json_t *v = json_object_get(o, k);
    return v ? json_number_value(v) : dflt;
}

static void *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)sz);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return p;
}

/* Every case of every fixture: same frames, same pixels as PyAV decode-all. */
static void check_video(json_t *exp, const char *name, int from_memory) {
    json_t *v = json_object_get(json_object_get(exp, "videos"), name);
    REQUIRE(v, "%s missing from expected.json", name);
    char rel[256];
    snprintf(rel, sizeof rel, VID_DIR "%s", name);
    size_t nbytes = 0;
    uint8_t *bytes = from_memory ? slurp(test_data_path(rel), &nbytes) : NULL;
    if (from_memory) REQUIRE(bytes, "cannot read %s", rel);
    json_t *md5s = json_object_get(v, "md5"), *times = json_object_get(v, "times");
    int64_t stream_frames = (int64_t)json_array_size(md5s);
    size_t ci;
    json_t *cs;
    json_array_foreach(json_object_get(v, "cases"), ci, cs) {
        json_t *jo = json_object_get(cs, "opt");
        vidi_video_options o = vidi_video_options_default();
        o.fps = jnum(jo, "fps", 2.0);
        o.nframes = (int)jnum(jo, "nframes", 0);
        o.start_time = jnum(jo, "start", -1.0);
        o.end_time = jnum(jo, "end", -1.0);
        vidi_media_limits lim = vidi_media_limits_default();
        vidi_video vid;
        vidi_err err = {0};
        vidi_status st = from_memory ? vidi_video_decode(bytes, nbytes, &o, &lim, &vid, &err)
                                     : vidi_video_decode_file(test_data_path(rel), &o, &lim, &vid, &err);
        if (!json_is_null(json_object_get(cs, "error"))) {
            CHECK(st == VIDI_ERR_INVALID, "%s case %zu: expected an error, got %d", name, ci, st);
            continue;
        }
        CHECK(st == VIDI_OK, "%s case %zu: %s", name, ci, err.msg);
        if (st != VIDI_OK) continue;
        json_t *ji = json_object_get(cs, "indices");
        CHECK(vid.n_frames == (int)json_array_size(ji), "%s case %zu: %d frames, want %zu", name, ci,
              vid.n_frames, json_array_size(ji));
        CHECK(vid.total_frames == (int64_t)jnum(cs, "total_frames", -1), "%s case %zu: total %lld",
              name, ci, (long long)vid.total_frames);
        CHECK(fabs(vid.video_fps - jnum(v, "video_fps", 0)) < 1e-9, "%s: video_fps %g want %g", name,
              vid.video_fps, jnum(v, "video_fps", 0));
        CHECK(fabs(vid.sample_fps - jnum(cs, "sample_fps", 0)) < 1e-9, "%s case %zu: sample_fps %g want %g",
              name, ci, vid.sample_fps, jnum(cs, "sample_fps", 0));
        CHECK(vid.width == (int)jnum(v, "width", 0) && vid.height == (int)jnum(v, "height", 0),
              "%s: %dx%d", name, vid.width, vid.height);
        CHECK(vid.rotation == (int)jnum(v, "rotation", -1), "%s: rotation %d", name, vid.rotation);
        CHECK(strcmp(vid.codec, json_string_value(json_object_get(v, "codec"))) == 0, "%s: codec %s",
              name, vid.codec);
        CHECK(strcmp(vid.container, json_string_value(json_object_get(v, "container"))) == 0,
              "%s: container %s", name, vid.container);
        size_t fsz = (size_t)vid.width * vid.height * 3;
        int bad = 0;
        for (int i = 0; i < vid.n_frames && i < (int)json_array_size(ji); i++) {
            int64_t want = (int64_t)json_integer_value(json_array_get(ji, (size_t)i));
            CHECK(vid.frame_indices[i] == want, "%s case %zu: index[%d] %lld want %lld", name, ci, i,
                  (long long)vid.frame_indices[i], (long long)want);
            if (vid.frame_indices[i] != want) continue;
            char hex[33];
            md5_hex(vid.rgb + (size_t)i * fsz, fsz, hex);
            const char *ref = json_string_value(json_array_get(md5s, (size_t)want));
            if (strcmp(hex, ref) != 0 && bad++ < 3)
                CHECK(0, "%s case %zu: frame %lld rgb md5 %s, PyAV %s", name, ci, (long long)want, hex, ref);
            double t = json_number_value(json_array_get(times, (size_t)want));
            CHECK(fabs(vid.timestamps[i] - t) < 1e-9, "%s: time of frame %lld %g want %g", name,
                  (long long)want, vid.timestamps[i], t);
        }
        CHECK(bad == 0, "%s case %zu: %d frames differ from PyAV", name, ci, bad);
        /* decoding only what is needed: never more frames than decode-all */
        CHECK(vid.frames_decoded >= vid.n_frames && vid.frames_decoded <= stream_frames,
              "%s case %zu: decoded %lld frames for %d (stream has %lld)", name, ci,
              (long long)vid.frames_decoded, vid.n_frames, (long long)stream_frames);
        printf("  %-17s case %zu: %3d frames of %3lld, decoded %3lld (decode-all %lld), %d seeks\n",
               name, ci, vid.n_frames, (long long)vid.total_frames, (long long)vid.frames_decoded,
               (long long)stream_frames, vid.seeks);
        vidi_video_free(&vid);
    }
    free(bytes);
}

static void test_decode_h264_bframes_matches_pyav_and_seeks(void) {
    json_t *exp = expected();
    REQUIRE(exp, "no expected.json");
    check_video(exp, "h264_bframes.mp4", 0);
    /* default choice (20 of 150 frames, GOP 12): seeking must skip work */
    vidi_video_options o = vidi_video_options_default();
    vidi_video vid;
    vidi_err err = {0};
    REQUIRE(vidi_video_decode_file(test_data_path(VID_DIR "h264_bframes.mp4"), &o, NULL, &vid, &err) == VIDI_OK,
            "%s", err.msg);
    CHECK(vid.n_frames == 20 && vid.seeks > 1, "%d frames, %d seeks", vid.n_frames, vid.seeks);
    CHECK(vid.frames_decoded < vid.total_frames, "decoded %lld of %lld: no better than decode-all",
          (long long)vid.frames_decoded, (long long)vid.total_frames);
    vidi_video_free(&vid);
    json_decref(exp);
}

static void test_decode_from_memory_matches_pyav(void) {
    json_t *exp = expected();
    REQUIRE(exp, "no expected.json");
    check_video(exp, "h264_bframes.mp4", 1);
    check_video(exp, "vp9.webm", 1);
    json_decref(exp);
}

static void test_decode_vp9_webm_matches_pyav(void) {
    json_t *exp = expected();
    REQUIRE(exp, "no expected.json");
    check_video(exp, "vp9.webm", 0);
    json_decref(exp);
}

static void test_decode_vfr_by_timestamps(void) {
    json_t *exp = expected();
    REQUIRE(exp, "no expected.json");
    check_video(exp, "vfr.mp4", 0);
    json_decref(exp);
}

static void test_decode_lying_header_counts_real_frames(void) {
    /* Matroska header says 60 s at 25 fps; the blocks hold 60 frames at 10 fps */
    json_t *exp = expected();
    REQUIRE(exp, "no expected.json");
    check_video(exp, "lying.mkv", 0);
    json_decref(exp);
}

static void test_decode_rotated_turns_clockwise(void) {
    json_t *exp = expected();
    REQUIRE(exp, "no expected.json");
    check_video(exp, "rotated.mp4", 0);
    json_decref(exp);
}

static void test_decode_bt709_follows_colour_tags(void) {
    json_t *exp = expected();
    REQUIRE(exp, "no expected.json");
    check_video(exp, "bt709.mp4", 0);
    json_decref(exp);
}

/* ------------------------------------------------------------ refusals */

/* Splitting the targets over several demuxer+decoder workers changes who
 * decodes, never what comes out: one worker and several give the same bytes
 * (the workers' output is checked against PyAV by check_video). */
static void test_workers_give_the_same_frames(void) {
    static const char *const files[] = {"h264_bframes.mp4", "vfr.mp4", "vp9.webm"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char rel[256];
        snprintf(rel, sizeof rel, VID_DIR "%s", files[f]);
        size_t nbytes = 0;
        uint8_t *bytes = slurp(test_data_path(rel), &nbytes);
        REQUIRE(bytes, "cannot read %s", rel);
        vidi_video one, many;
        vidi_err err = {0};
        vidi_video_options o = vidi_video_options_default();
        o.fps = 4.0;
        o.threads = 1;
        REQUIRE(vidi_video_decode(bytes, nbytes, &o, NULL, &one, &err) == VIDI_OK, "%s: %s", rel, err.msg);
        o.threads = 3;
        REQUIRE(vidi_video_decode(bytes, nbytes, &o, NULL, &many, &err) == VIDI_OK, "%s: %s", rel, err.msg);
        REQUIRE(one.n_frames == many.n_frames && one.width == many.width && one.height == many.height,
                "%s: %d vs %d frames", rel, one.n_frames, many.n_frames);
        size_t fsz = (size_t)one.width * one.height * 3;
        for (int i = 0; i < one.n_frames; i++) {
            CHECK(one.frame_indices[i] == many.frame_indices[i] && one.timestamps[i] == many.timestamps[i],
                  "%s: frame %d index/time differ", rel, i);
            CHECK(memcmp(one.rgb + (size_t)i * fsz, many.rgb + (size_t)i * fsz, fsz) == 0,
                  "%s: frame %d (index %lld) differs between 1 and 3 workers", rel, i,
                  (long long)one.frame_indices[i]);
        }
        CHECK(many.frames_decoded <= many.total_frames, "%s: 3 workers decoded %lld frames, more than the %lld "
              "of the stream", rel, (long long)many.frames_decoded, (long long)many.total_frames);
        printf("  %-17s 1 worker decoded %lld in %d seeks; 3 workers %lld in %d seeks\n", files[f],
               (long long)one.frames_decoded, one.seeks, (long long)many.frames_decoded, many.seeks);
        vidi_video_free(&one);
        vidi_video_free(&many);
        free(bytes);
    }
}

static void test_refuses_audio_only(void) {
    vidi_video vid;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    CHECK(vidi_video_decode_file(test_data_path(VID_DIR "audio_only.m4a"), &o, NULL, &vid, &err) ==
              VIDI_ERR_FORMAT, "audio-only accepted");
    CHECK(strstr(err.msg, "no video stream") != NULL, "message: %s", err.msg);
    CHECK(vid.rgb == NULL && vid.n_frames == 0, "output left behind");
}

static void test_refuses_over_limits_before_decoding(void) {
    vidi_video vid;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    vidi_media_limits lim = vidi_media_limits_default();
    lim.max_image_pixels = 96 * 64 - 1;
    CHECK(vidi_video_decode_file(test_data_path(VID_DIR "h264_bframes.mp4"), &o, &lim, &vid, &err) ==
              VIDI_ERR_RANGE, "pixel limit not applied");
    CHECK(strstr(err.msg, "96x64") && strstr(err.msg, "limit"), "message: %s", err.msg);
    lim = vidi_media_limits_default();
    lim.max_side = 80;
    CHECK(vidi_video_decode_file(test_data_path(VID_DIR "h264_bframes.mp4"), &o, &lim, &vid, &err) ==
              VIDI_ERR_RANGE, "side limit not applied");
    lim = vidi_media_limits_default();
    lim.max_video_seconds = 5.0;
    CHECK(vidi_video_decode_file(test_data_path(VID_DIR "h264_bframes.mp4"), &o, &lim, &vid, &err) ==
              VIDI_ERR_RANGE, "duration limit not applied");
    CHECK(strstr(err.msg, "10.0 s"), "message: %s", err.msg);
    /* the lying header (60 s) is refused by what it declares; the limit is on both */
    lim.max_video_seconds = 30.0;
    CHECK(vidi_video_decode_file(test_data_path(VID_DIR "lying.mkv"), &o, &lim, &vid, &err) ==
              VIDI_ERR_RANGE, "declared duration not checked");
}

static void test_timeout_stops_the_decode(void) {
    vidi_video vid;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    vidi_media_limits lim = vidi_media_limits_default();
    lim.timeout_seconds = 1e-9; /* expired before the first read: the interrupt callback fires */
    CHECK(vidi_video_decode_file(test_data_path(VID_DIR "h264_bframes.mp4"), &o, &lim, &vid, &err) ==
              VIDI_ERR_RANGE, "timeout not applied: %s", err.msg);
    CHECK(strstr(err.msg, "time limit") != NULL, "message: %s", err.msg);
}

static void test_refuses_not_a_video(void) {
    vidi_video vid;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    static const uint8_t junk[64] = "this is a plain text file, not a video at all......";
    CHECK(vidi_video_decode(junk, sizeof junk, &o, NULL, &vid, &err) == VIDI_ERR_FORMAT, "junk accepted");
    CHECK(strstr(err.msg, "not a video") != NULL, "message: %s", err.msg);
    CHECK(vidi_video_decode(junk, 0, &o, NULL, &vid, &err) == VIDI_ERR_FORMAT, "0 bytes accepted");
    CHECK(vidi_video_decode_file(test_data_path(VID_DIR "no_such.mp4"), &o, NULL, &vid, &err) == VIDI_ERR_NOTFOUND,
          "missing file: %s", err.msg);
}

static void test_truncated_mp4_is_an_error_not_a_crash(void) {
    size_t n = 0;
    uint8_t *b = slurp(test_data_path(VID_DIR "h264_bframes.mp4"), &n);
    REQUIRE(b, "cannot read fixture");
    vidi_video vid;
    vidi_err err = {0};
    vidi_video_options o = vidi_video_options_default();
    /* header at the end (ffmpeg default): a cut file has no moov */
    vidi_status st = vidi_video_decode(b, n / 2, &o, NULL, &vid, &err);
    CHECK(st != VIDI_OK, "half an mp4 accepted");
    CHECK(err.msg[0] != 0, "no message");
    free(b);
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"sample_10s_30fps_takes_20_frames", test_sample_10s_30fps_takes_20_frames},
        {"sample_nframes_rounds_to_even_half_to_even", test_sample_nframes_rounds_to_even_half_to_even},
        {"sample_short_video_clamps_to_min_frames", test_sample_short_video_clamps_to_min_frames},
        {"sample_one_frame_video_is_an_error", test_sample_one_frame_video_is_an_error},
        {"decode_h264_bframes_matches_pyav_and_seeks", test_decode_h264_bframes_matches_pyav_and_seeks},
        {"decode_from_memory_matches_pyav", test_decode_from_memory_matches_pyav},
        {"decode_vp9_webm_matches_pyav", test_decode_vp9_webm_matches_pyav},
        {"decode_vfr_by_timestamps", test_decode_vfr_by_timestamps},
        {"decode_lying_header_counts_real_frames", test_decode_lying_header_counts_real_frames},
        {"decode_rotated_turns_clockwise", test_decode_rotated_turns_clockwise},
        {"decode_bt709_follows_colour_tags", test_decode_bt709_follows_colour_tags},
        {"workers_give_the_same_frames", test_workers_give_the_same_frames},
        {"refuses_audio_only", test_refuses_audio_only},
        {"refuses_over_limits_before_decoding", test_refuses_over_limits_before_decoding},
        {"refuses_not_a_video", test_refuses_not_a_video},
        {"timeout_stops_the_decode", test_timeout_stops_the_decode},
        {"truncated_mp4_is_an_error_not_a_crash", test_truncated_mp4_is_an_error_not_a_crash},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
