/* tests/media/test_resize.c — smart_resize, the Pillow and torch bicubic
 * resizers and patchify (media/resize.c, media/preprocess.c).
 *
 * The resizers are checked bit for bit against the reference outputs of
 * tools/golden/media.py (tests/data/golden/media/resize_cases.json: LCG
 * inputs, Pillow and torchvision outputs as md5 + sum, small ones as .npy);
 * smart_resize against values qwen-vl-utils 0.0.14 and transformers 5.24
 * return; patchify against values numpy / torch computed.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/npy.h"
#include "media/media.h"
#include "media_md5.h"
#include "test_util.h"

/* ---------------------------------------------------------------- smart_resize */

typedef struct sr_case {
    int h, w;
    int64_t min_px, max_px;
    int qh, qw; /* qwen-vl-utils */
    int fh, fw; /* transformers */
} sr_case;

/* From qwen_vl_utils.smart_resize / transformers' smart_resize (factor 28). */
static const sr_case SR_CASES[] = {
    {1080, 1920, 3136, 12845056, 1092, 1932, 1092, 1932},
    {1080, 1920, 3136, 1003520, 728, 1316, 728, 1316},
    {9, 13, 3136, 12845056, 56, 84, 56, 84},
    {1, 1, 3136, 12845056, 56, 56, 56, 56},
    {10, 500, 3136, 12845056, 28, 504, 28, 420},
    {3000, 4000, 3136, 1003520, 840, 1148, 840, 1148},
    {14, 400, 3136, 12845056, 28, 392, 28, 308},
    {333, 517, 3136, 50176, 168, 252, 168, 252},
    {333, 517, 401408, 12845056, 532, 812, 532, 812},
    {90, 160, 100352, 602112, 252, 448, 252, 448},
    {90, 160, 3136, 12544, 84, 140, 84, 140},
    {5, 1000, 3136, 12845056, 28, 1008, 28, 812},
    {1, 200, 3136, 12845056, 28, 196, 28, 812},
};

static void test_smart_resize_matches_references(void) {
    for (size_t i = 0; i < sizeof SR_CASES / sizeof SR_CASES[0]; i++) {
        const sr_case *c = &SR_CASES[i];
        vidi_err err = {0};
        int h = 0, w = 0;
        CHECK(vidi_smart_resize(c->h, c->w, 28, c->min_px, c->max_px, &h, &w, &err) == VIDI_OK, "%s", err.msg);
        CHECK(h == c->qh && w == c->qw, "qwen-vl-utils %dx%d [%lld, %lld]: got %dx%d, want %dx%d", c->w, c->h,
              (long long)c->min_px, (long long)c->max_px, w, h, c->qw, c->qh);
        CHECK(vidi_smart_resize_ex(c->h, c->w, 28, (double)c->min_px, (double)c->max_px, VIDI_SMART_RESIZE_HF, &h,
                                   &w, &err) == VIDI_OK,
              "%s", err.msg);
        CHECK(h == c->fh && w == c->fw, "transformers %dx%d: got %dx%d, want %dx%d", c->w, c->h, w, h, c->fw, c->fh);
    }
}

static void test_smart_resize_1080p_is_2691_tokens(void) {
    int h = 0, w = 0;
    vidi_err err = {0};
    REQUIRE(vidi_smart_resize(1080, 1920, 28, 3136, 12845056, &h, &w, &err) == VIDI_OK, "%s", err.msg);
    CHECK(h == 1092 && w == 1932, "got %dx%d", w, h);
    CHECK((h / 14) * (w / 14) / 4 == 2691, "tokens %d", (h / 14) * (w / 14) / 4);
}

static void test_smart_resize_refuses_aspect_above_200(void) {
    int h = 0, w = 0;
    vidi_err err = {0};
    CHECK(vidi_smart_resize(1, 201, 28, 3136, 12845056, &h, &w, &err) == VIDI_ERR_INVALID, "1x201 accepted");
    CHECK(strstr(err.msg, "aspect ratio") != NULL, "message: %s", err.msg);
    CHECK(vidi_smart_resize(5601, 28, 28, 3136, 12845056, &h, &w, &err) == VIDI_ERR_INVALID, "28x5601 accepted");
    CHECK(vidi_smart_resize(200, 1, 28, 3136, 12845056, &h, &w, &err) == VIDI_OK, "ratio exactly 200 refused");
}

static void test_smart_resize_refuses_bad_arguments(void) {
    int h = 0, w = 0;
    vidi_err err = {0};
    CHECK(vidi_smart_resize(0, 10, 28, 3136, 12845056, &h, &w, &err) == VIDI_ERR_INVALID, "zero side");
    CHECK(vidi_smart_resize(10, 10, 0, 3136, 12845056, &h, &w, &err) == VIDI_ERR_INVALID, "zero factor");
    CHECK(vidi_smart_resize(10, 10, 28, 5000, 4000, &h, &w, &err) == VIDI_ERR_INVALID, "max < min");
    CHECK(vidi_smart_resize(1000, 1000, 28, (int64_t)1 << 40, (int64_t)1 << 41, &h, &w, &err) == VIDI_ERR_RANGE,
          "a 1e12-pixel minimum must be refused");
}

/* qwen-vl-utils floors a side to 0 here (and then fails to resize); vidi
 * keeps at least one factor. */
static void test_smart_resize_max_branch_keeps_one_factor(void) {
    int h = 0, w = 0;
    vidi_err err = {0};
    REQUIRE(vidi_smart_resize(28, 5600, 28, 3136, 100000, &h, &w, &err) == VIDI_OK, "%s", err.msg);
    CHECK(h == 28 && w == 4452, "got %dx%d", w, h);
}

static void test_smart_resize_video_float_budget(void) {
    /* qwen-vl-utils: 20 frames, total 90316800: max = min(602112, 9031680) */
    int h = 0, w = 0;
    vidi_err err = {0};
    REQUIRE(vidi_smart_resize_ex(720, 1280, 28, 100352, 602112.0, VIDI_SMART_RESIZE_QWEN_VL_UTILS, &h, &w, &err) ==
                VIDI_OK,
            "%s", err.msg);
    CHECK(h == 560 && w == 1008, "got %dx%d, want 1008x560", w, h);
}

/* ---------------------------------------------------------------- resizers */

static void lcg_fill(uint8_t *out, size_t n, uint32_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        s = (s * 1103515245u + 12345u) & 0x7FFFFFFFu;
        out[i] = (uint8_t)((s >> 16) & 255);
    }
}

static long long byte_sum(const uint8_t *p, size_t n) {
    long long s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
}

static int npy_equal_u8(const char *path, const uint8_t *ours, size_t n, int *max_diff) {
    vidi_npy a = {0};
    vidi_err err = {0};
    *max_diff = -1;
    if (vidi_npy_read(path, &a, &err) != VIDI_OK) {
        test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    int64_t total = 1;
    for (int d = 0; d < a.ndim; d++) total *= a.shape[d];
    int ok = total == (int64_t)n && a.dtype == VIDI_DTYPE_I32;
    if (ok) {
        const int32_t *v = a.data;
        *max_diff = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs(v[i] - (int)ours[i]);
            if (d > *max_diff) *max_diff = d;
        }
    }
    vidi_npy_free(&a);
    return ok && *max_diff == 0;
}

static void test_resizers_match_golden_cases(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s", test_data_path("golden/media/resize_cases.json"));
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        printf("  (no %s: skipping the reference resize cases)\n", path);
        return;
    }
    json_t *cases = json_object_get(root, "cases");
    REQUIRE(json_is_array(cases) && json_array_size(cases) > 0, "resize_cases.json has no cases");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        int sw = (int)json_integer_value(json_object_get(c, "src_w"));
        int sh = (int)json_integer_value(json_object_get(c, "src_h"));
        int dw = (int)json_integer_value(json_object_get(c, "dst_w"));
        int dh = (int)json_integer_value(json_object_get(c, "dst_h"));
        uint32_t seed = (uint32_t)json_integer_value(json_object_get(c, "lcg_seed"));
        size_t in_n = (size_t)sw * sh * 3, out_n = (size_t)dw * dh * 3;
        uint8_t *in = malloc(in_n), *pil = malloc(out_n), *tv = malloc(out_n);
        vidi_err err = {0};
        char hex[33];
        if (!in || !pil || !tv) {
            test_fail(__FILE__, __LINE__, "out of memory");
            free(in), free(pil), free(tv);
            break;
        }
        lcg_fill(in, in_n, seed);
        md5_hex(in, in_n, hex);
        CHECK(strcmp(hex, json_string_value(json_object_get(c, "input_md5"))) == 0, "%s: LCG input differs", name);
        CHECK(vidi_resize_pil_bicubic(in, sw, sh, pil, dw, dh, &err) == VIDI_OK, "%s: %s", name, err.msg);
        CHECK(vidi_resize_torch_bicubic(in, sw, sh, tv, dw, dh, &err) == VIDI_OK, "%s: %s", name, err.msg);
        md5_hex(pil, out_n, hex);
        CHECK(strcmp(hex, json_string_value(json_object_get(c, "pil_md5"))) == 0,
              "%s: Pillow output differs (sum %lld, reference %lld)", name, byte_sum(pil, out_n),
              (long long)json_integer_value(json_object_get(c, "pil_sum")));
        md5_hex(tv, out_n, hex);
        CHECK(strcmp(hex, json_string_value(json_object_get(c, "torch_md5"))) == 0,
              "%s: torch output differs (sum %lld, reference %lld)", name, byte_sum(tv, out_n),
              (long long)json_integer_value(json_object_get(c, "torch_sum")));
        const char *pil_npy = json_string_value(json_object_get(c, "pil"));
        const char *tv_npy = json_string_value(json_object_get(c, "torch"));
        int md = 0;
        if (pil_npy) {
            snprintf(path, sizeof path, "%s/%s", test_data_path("golden/media"), pil_npy);
            CHECK(npy_equal_u8(path, pil, out_n, &md), "%s: Pillow npy max diff %d", name, md);
        }
        if (tv_npy) {
            snprintf(path, sizeof path, "%s/%s", test_data_path("golden/media"), tv_npy);
            CHECK(npy_equal_u8(path, tv, out_n, &md), "%s: torch npy max diff %d", name, md);
        }
        free(in);
        free(pil);
        free(tv);
    }
    json_decref(root);
}

static void test_resize_same_size_is_a_copy(void) {
    uint8_t in[5 * 4 * 3], out[5 * 4 * 3];
    lcg_fill(in, sizeof in, 9);
    vidi_err err = {0};
    CHECK(vidi_resize_pil_bicubic(in, 5, 4, out, 5, 4, &err) == VIDI_OK && memcmp(in, out, sizeof in) == 0,
          "Pillow same-size resize changed pixels");
    CHECK(vidi_resize_torch_bicubic(in, 5, 4, out, 5, 4, &err) == VIDI_OK && memcmp(in, out, sizeof in) == 0,
          "torch same-size resize changed pixels");
}

static void test_resize_constant_image_stays_constant(void) {
    enum { SW = 37, SH = 23, DW = 101, DH = 9 };
    static uint8_t in[SW * SH * 3], out[DW * DH * 3];
    for (size_t i = 0; i < sizeof in; i++) in[i] = (uint8_t)(i % 3 == 0 ? 200 : i % 3 == 1 ? 0 : 255);
    vidi_err err = {0};
    for (int which = 0; which < 2; which++) {
        vidi_status st = which ? vidi_resize_torch_bicubic(in, SW, SH, out, DW, DH, &err)
                               : vidi_resize_pil_bicubic(in, SW, SH, out, DW, DH, &err);
        REQUIRE(st == VIDI_OK, "%s", err.msg);
        int bad = 0;
        for (size_t i = 0; i < sizeof out; i++) bad += out[i] != in[i % 3];
        CHECK(bad == 0, "%s: %d values of a constant image changed", which ? "torch" : "Pillow", bad);
    }
}

static void test_resize_refuses_bad_sizes(void) {
    uint8_t px[3] = {1, 2, 3}, out[3];
    vidi_err err = {0};
    CHECK(vidi_resize_pil_bicubic(px, 1, 1, out, 0, 1, &err) == VIDI_ERR_INVALID, "zero width accepted");
    CHECK(vidi_resize_torch_bicubic(px, 0, 1, out, 1, 1, &err) == VIDI_ERR_INVALID, "zero source accepted");
    CHECK(vidi_resize_pil_bicubic(NULL, 1, 1, out, 1, 1, &err) == VIDI_ERR_INVALID, "NULL source accepted");
    CHECK(vidi_resize_torch_bicubic(px, 1, 1, out, 70000, 1, &err) == VIDI_ERR_INVALID, "70000 wide accepted");
}

/* ---------------------------------------------------------------- patchify */

static vidi_preproc_config clip_config(void) {
    vidi_preproc_config pp = {0};
    pp.min_pixels = 3136;
    pp.max_pixels = 12845056;
    pp.patch_size = 14;
    pp.merge_size = 2;
    pp.temporal_patch_size = 2;
    pp.rescale_factor = 1.0 / 255.0;
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    memcpy(pp.image_mean, mean, sizeof mean);
    memcpy(pp.image_std, std, sizeof std);
    return pp;
}

/* numpy (transformers' rescale + normalize) and torch (fused) of bytes
 * 0, 1, 77, 128, 254, 255 per channel. */
static const uint8_t NORM_BYTES[6] = {0, 1, 77, 128, 254, 255};
static const float NORM_NUMPY[3][6] = {
    {-1.792262554e+00f, -1.777664065e+00f, -6.681836247e-01f, 7.633614540e-02f, 1.915737748e+00f, 1.930336118e+00f},
    {-1.752097130e+00f, -1.737089276e+00f, -5.964989066e-01f, 1.688973159e-01f, 2.059875965e+00f, 2.074883699e+00f},
    {-1.480219841e+00f, -1.465999722e+00f, -3.852746487e-01f, 3.399487734e-01f, 2.131677151e+00f, 2.145896912e+00f},
};
static const float NORM_TORCH[3][6] = {
    {-1.792262554e+00f, -1.777664185e+00f, -6.681837440e-01f, 7.633601129e-02f, 1.915737867e+00f, 1.930336237e+00f},
    {-1.752097011e+00f, -1.737089276e+00f, -5.964989662e-01f, 1.688971519e-01f, 2.059875727e+00f, 2.074883461e+00f},
    {-1.480219841e+00f, -1.465999842e+00f, -3.852747083e-01f, 3.399486840e-01f, 2.131677151e+00f, 2.145897150e+00f},
};

static void test_patchify_normalises_like_numpy_and_torch(void) {
    vidi_preproc_config pp = clip_config();
    enum { S = 28 };
    static uint8_t img[S * S * 3];
    static float px[4 * 1176];
    /* pixel (0, k) of every channel holds NORM_BYTES[k] */
    for (int k = 0; k < 6; k++)
        for (int c = 0; c < 3; c++) img[k * 3 + c] = NORM_BYTES[k];
    int32_t grid[3];
    vidi_err err = {0};
    for (int mode = 0; mode < 2; mode++) {
        REQUIRE(vidi_patchify_ex(img, 1, S, S, &pp, (vidi_norm_mode)mode, px, grid, &err) == VIDI_OK, "%s", err.msg);
        for (int c = 0; c < 3; c++)
            for (int t = 0; t < 2; t++)
                for (int k = 0; k < 6; k++) {
                    float got = px[c * 392 + t * 196 + k]; /* row 0: patch (0,0), patch row 0 */
                    float want = mode ? NORM_TORCH[c][k] : NORM_NUMPY[c][k];
                    CHECK(got == want, "mode %d channel %d byte %d: %.9g, want %.9g", mode, c, NORM_BYTES[k],
                          (double)got, (double)want);
                }
    }
}

/* Rows run (t, h-block, w-block, h-in, w-in); within a row (c, t, y, x). */
static void test_patchify_layout_and_temporal_repeat(void) {
    vidi_preproc_config pp = clip_config();
    enum { H = 56, W = 84, N = 3 };
    uint8_t *fr = malloc((size_t)N * H * W * 3);
    int32_t grid[3];
    vidi_err err = {0};
    REQUIRE(fr, "oom");
    lcg_fill(fr, (size_t)N * H * W * 3, 5);
    int gt = 2, gh = H / 14, gw = W / 14;
    float *px = malloc(sizeof(float) * (size_t)gt * gh * gw * 1176);
    float lut[3][256];
    REQUIRE(px, "oom");
    /* per-byte values from a one-pixel-per-value image */
    {
        static uint8_t probe[28 * 28 * 3];
        static float pp_px[4 * 1176];
        for (int v = 0; v < 256; v++) {
            memset(probe, v, sizeof probe);
            REQUIRE(vidi_patchify(probe, 1, 28, 28, &pp, pp_px, grid, &err) == VIDI_OK, "%s", err.msg);
            for (int c = 0; c < 3; c++) lut[c][v] = pp_px[c * 392];
        }
    }
    REQUIRE(vidi_patchify(fr, N, H, W, &pp, px, grid, &err) == VIDI_OK, "%s", err.msg);
    CHECK(grid[0] == 2 && grid[1] == gh && grid[2] == gw, "grid %d %d %d", grid[0], grid[1], grid[2]);
    int bad = 0;
    for (int t = 0; t < gt; t++)
        for (int bh = 0; bh < gh / 2; bh++)
            for (int bw = 0; bw < gw / 2; bw++)
                for (int mh = 0; mh < 2; mh++)
                    for (int mw = 0; mw < 2; mw++) {
                        size_t row = (((size_t)t * (gh / 2) + bh) * (gw / 2) + bw) * 4 + mh * 2 + mw;
                        for (int c = 0; c < 3; c++)
                            for (int tp = 0; tp < 2; tp++)
                                for (int y = 0; y < 14; y++)
                                    for (int x = 0; x < 14; x++) {
                                        int f = t * 2 + tp < N ? t * 2 + tp : N - 1;
                                        int yy = (bh * 2 + mh) * 14 + y, xx = (bw * 2 + mw) * 14 + x;
                                        uint8_t b = fr[(((size_t)f * H + yy) * W + xx) * 3 + c];
                                        float got = px[row * 1176 + c * 392 + tp * 196 + y * 14 + x];
                                        bad += got != lut[c][b];
                                    }
                    }
    CHECK(bad == 0, "%d values out of place", bad);
    CHECK(vidi_patchify(fr, N, 50, W, &pp, px, grid, &err) == VIDI_ERR_INVALID, "height 50 accepted");
    CHECK(vidi_patchify(fr, 0, H, W, &pp, px, grid, &err) == VIDI_ERR_INVALID, "0 frames accepted");
    free(px);
    free(fr);
}

int main(int argc, char **argv) {
    const test_case cases[] = {
        {"smart_resize_matches_references", test_smart_resize_matches_references},
        {"smart_resize_1080p_is_2691_tokens", test_smart_resize_1080p_is_2691_tokens},
        {"smart_resize_refuses_aspect_above_200", test_smart_resize_refuses_aspect_above_200},
        {"smart_resize_refuses_bad_arguments", test_smart_resize_refuses_bad_arguments},
        {"smart_resize_max_branch_keeps_one_factor", test_smart_resize_max_branch_keeps_one_factor},
        {"smart_resize_video_float_budget", test_smart_resize_video_float_budget},
        {"resizers_match_golden_cases", test_resizers_match_golden_cases},
        {"resize_same_size_is_a_copy", test_resize_same_size_is_a_copy},
        {"resize_constant_image_stays_constant", test_resize_constant_image_stays_constant},
        {"resize_refuses_bad_sizes", test_resize_refuses_bad_sizes},
        {"patchify_normalises_like_numpy_and_torch", test_patchify_normalises_like_numpy_and_torch},
        {"patchify_layout_and_temporal_repeat", test_patchify_layout_and_temporal_repeat},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
