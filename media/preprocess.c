/* media/preprocess.c — decoded pixels to what the model is fed: the
 * reference processors' rescale, normalise and patch layout (vidi_patchify),
 * and the two glue paths from bytes to a vidi_media_item:
 *
 *   image  decode -> smart_resize (qwen-vl-utils rule, min/max pixels from
 *          the request or preprocessor_config.json) -> Pillow bicubic ->
 *          white where the colour key matches (vidi_image.has_color_key) ->
 *          patchify (numpy rounding), as qwen_vl_utils.fetch_image +
 *          Qwen2VLImageProcessorPil do
 *   video  decode the qwen-vl-utils frame choice -> per-frame pixel budget
 *          and smart_resize as qwen_vl_utils.fetch_video -> torchvision
 *          bicubic (antialiased, float32, rounded) -> patchify (torch fused
 *          rounding), as Qwen2VLVideoProcessor does
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/pool.h"
#include "media/media.h"

/* qwen-vl-utils constants, in tokens of factor x factor pixels. */
#define PP_VIDEO_MIN_TOKENS 128
#define PP_VIDEO_MAX_TOKENS 768
#define PP_MODEL_SEQ_LEN 128000.0 /* VIDEO total budget: seq_len * factor^2 * 0.9 */
#define PP_FRAME_FACTOR 2
#define PP_PARALLEL_MIN_ROWS 512

/* ---------------------------------------------------------------- patchify */

typedef struct pp_layout {
    const uint8_t *frames;
    int n_frames, h, w;
    int patch, merge, tps;
    int gh, gw;             /* grid in patches */
    int cols;
    const float *lut;       /* [3][256] normalised value of each byte */
    float *pixels;
} pp_layout;

/* Rows [b, e): row r is (t, h-block, w-block, h-in-merge, w-in-merge); its
 * values run (channel, frame-in-t, patch row, patch column). */
static void pp_layout_rows(void *ctx, int64_t b, int64_t e) {
    const pp_layout *L = ctx;
    const int m = L->merge, p = L->patch, bw_n = L->gw / m, bh_n = L->gh / m;
    const size_t frame_px = (size_t)L->h * L->w;
    for (int64_t r = b; r < e; r++) {
        int64_t q = r;
        int mw = (int)(q % m);
        q /= m;
        int mh = (int)(q % m);
        q /= m;
        int bw = (int)(q % bw_n);
        q /= bw_n;
        int bh = (int)(q % bh_n);
        int t = (int)(q / bh_n);
        int y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;
        float *out = L->pixels + (size_t)r * L->cols;
        for (int c = 0; c < 3; c++) {
            const float *lut = L->lut + 256 * c;
            for (int tp = 0; tp < L->tps; tp++) {
                int f = t * L->tps + tp;
                if (f >= L->n_frames) f = L->n_frames - 1; /* repeat the last frame */
                const uint8_t *frame = L->frames + (size_t)f * frame_px * 3;
                for (int py = 0; py < p; py++) {
                    const uint8_t *src = frame + ((size_t)(y0 + py) * L->w + x0) * 3 + c;
                    for (int px = 0; px < p; px++) *out++ = lut[src[3 * px]];
                }
            }
        }
    }
}

static vidi_status pp_check_config(const vidi_preproc_config *pp, vidi_err *err) {
    if (!pp) return vidi_err_set(err, VIDI_ERR_INVALID, "patchify: no preprocessor config");
    if (pp->patch_size < 1 || pp->patch_size > 1024 || pp->merge_size < 1 || pp->merge_size > 64 ||
        pp->temporal_patch_size < 1 || pp->temporal_patch_size > 64)
        return vidi_err_set(err, VIDI_ERR_INVALID,
                            "patchify: patch_size %d, merge_size %d, temporal_patch_size %d out of range",
                            pp->patch_size, pp->merge_size, pp->temporal_patch_size);
    if (!(pp->rescale_factor > 0) || !isfinite(pp->rescale_factor))
        return vidi_err_set(err, VIDI_ERR_INVALID, "patchify: rescale_factor %g must be positive",
                            pp->rescale_factor);
    for (int c = 0; c < 3; c++)
        if (!(pp->image_std[c] != 0.0f) || !isfinite(pp->image_std[c]) || !isfinite(pp->image_mean[c]))
            return vidi_err_set(err, VIDI_ERR_INVALID, "patchify: image_std[%d] = %g must be finite and non-zero", c,
                                (double)pp->image_std[c]);
    return VIDI_OK;
}

/* The normalised float of every byte value per channel, rounded as the
 * reference rounds it. */
static void pp_make_lut(const vidi_preproc_config *pp, vidi_norm_mode mode, float lut[3 * 256]) {
    for (int c = 0; c < 3; c++) {
        float mean = pp->image_mean[c], std = pp->image_std[c];
        if (mode == VIDI_NORM_TORCH_FUSED) {
            /* torch: tensor(mean) * (1.0 / rescale_factor), the scalar taken as float32 */
            float inv = (float)(1.0 / pp->rescale_factor);
            float fm = mean * inv, fs = std * inv;
            for (int v = 0; v < 256; v++) lut[256 * c + v] = ((float)v - fm) / fs;
        } else {
            /* numpy: (x.astype(float64) * scale).astype(float32), then (x - mean) / std in float32 */
            for (int v = 0; v < 256; v++) {
                float x = (float)((double)v * pp->rescale_factor);
                lut[256 * c + v] = (x - mean) / std;
            }
        }
    }
}

vidi_status vidi_patchify_ex(const uint8_t *frames, int n_frames, int h, int w, const vidi_preproc_config *pp,
                             vidi_norm_mode mode, float *pixels, int32_t grid[3], vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(pp_check_config(pp, err));
    int unit = pp->patch_size * pp->merge_size;
    VIDI_CHECK(frames && pixels && grid, err, VIDI_ERR_INVALID, "patchify: NULL buffer");
    VIDI_CHECK(n_frames >= 1, err, VIDI_ERR_INVALID, "patchify: %d frames; need at least one", n_frames);
    VIDI_CHECK(h >= unit && w >= unit && h % unit == 0 && w % unit == 0, err, VIDI_ERR_INVALID,
               "patchify: frame size %dx%d must be positive multiples of %d (patch %d x merge %d)", w, h, unit,
               pp->patch_size, pp->merge_size);
    float lut[3 * 256];
    pp_make_lut(pp, mode, lut);
    pp_layout L = {0};
    L.frames = frames;
    L.n_frames = n_frames;
    L.h = h;
    L.w = w;
    L.patch = pp->patch_size;
    L.merge = pp->merge_size;
    L.tps = pp->temporal_patch_size;
    L.gh = h / pp->patch_size;
    L.gw = w / pp->patch_size;
    L.cols = 3 * L.tps * L.patch * L.patch;
    L.lut = lut;
    L.pixels = pixels;
    int gt = (n_frames + L.tps - 1) / L.tps;
    int64_t rows = (int64_t)gt * L.gh * L.gw;
    vidi_pool *pool = rows >= PP_PARALLEL_MIN_ROWS ? vidi_pool_default() : NULL;
    vidi_pool_for(pool, rows, 64, pp_layout_rows, &L);
    grid[0] = gt;
    grid[1] = L.gh;
    grid[2] = L.gw;
fail:
    return rc;
}

vidi_status vidi_patchify(const uint8_t *frames, int n_frames, int h, int w, const vidi_preproc_config *pp,
                          float *pixels, int32_t grid[3], vidi_err *err) {
    return vidi_patchify_ex(frames, n_frames, h, w, pp, VIDI_NORM_NUMPY, pixels, grid, err);
}

/* ---------------------------------------------------------------- items */

/* Allocate out->pixels for n_frames of h x w and patchify into it. */
static vidi_status pp_fill_item(const uint8_t *frames, int n_frames, int h, int w, const vidi_preproc_config *pp,
                                vidi_norm_mode mode, vidi_media_item *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int tps = pp->temporal_patch_size, p = pp->patch_size;
    int64_t rows = (int64_t)((n_frames + tps - 1) / tps) * (h / p) * (w / p);
    int cols = 3 * tps * p * p;
    out->pixels = malloc((size_t)rows * (size_t)cols * sizeof(float));
    VIDI_CHECK(out->pixels, err, VIDI_ERR_NOMEM, "patchify: out of memory for %lld x %d pixel values",
               (long long)rows, cols);
    VIDI_TRY(vidi_patchify_ex(frames, n_frames, h, w, pp, mode, out->pixels, out->grid, err));
    out->rows = (int64_t)out->grid[0] * out->grid[1] * out->grid[2];
    out->cols = cols;
    out->n_frames = n_frames;
    out->resized_h = h;
    out->resized_w = w;
fail:
    return rc;
}

vidi_status vidi_media_image_to_item(const uint8_t *data, size_t size, const vidi_preproc_config *pp,
                                     const vidi_media_options *opt, const vidi_media_limits *limits,
                                     vidi_media_item *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_image img = {0};
    uint8_t *resized = NULL;
    if (!out) return vidi_err_set(err, VIDI_ERR_INVALID, "image: no output item");
    memset(out, 0, sizeof *out);
    VIDI_TRY(pp_check_config(pp, err));
    vidi_media_options dflt = vidi_media_options_default();
    if (!opt) opt = &dflt;
    vidi_media_limits lim = limits ? *limits : vidi_media_limits_default();

    VIDI_TRY(vidi_image_decode(data, size, &lim, &img, err));
    int64_t min_px = opt->min_pixels > 0 ? opt->min_pixels : pp->min_pixels;
    int64_t max_px = opt->max_pixels > 0 ? opt->max_pixels : pp->max_pixels;
    int rh = 0, rw = 0;
    rc = vidi_smart_resize_ex(img.height, img.width, pp->patch_size * pp->merge_size, (double)min_px,
                              (double)max_px, VIDI_SMART_RESIZE_QWEN_VL_UTILS, &rh, &rw, err);
    if (rc != VIDI_OK) {
        vidi_err_prefix(err, "image %dx%d", img.width, img.height);
        goto fail;
    }
    resized = malloc((size_t)rh * rw * 3);
    VIDI_CHECK(resized, err, VIDI_ERR_NOMEM, "image: out of memory for %dx%d resized pixels", rw, rh);
    VIDI_TRY(vidi_resize_pil_bicubic(img.rgb, img.width, img.height, resized, rw, rh, err));
    if (img.has_color_key) {
        /* transformers' convert_to_rgb sees the colour key Pillow left on the
         * resized image and composites every pixel of exactly that colour on
         * white (see vidi_image) */
        const uint8_t *k = img.color_key;
        for (size_t i = 0, n = (size_t)rh * rw * 3; i < n; i += 3)
            if (resized[i] == k[0] && resized[i + 1] == k[1] && resized[i + 2] == k[2])
                resized[i] = resized[i + 1] = resized[i + 2] = 255;
    }
    VIDI_TRY(pp_fill_item(resized, 1, rh, rw, pp, VIDI_NORM_NUMPY, out, err));
    out->is_video = 0;
    out->second_per_grid_t = 0.0;
    out->sample_fps = 0.0;
fail:
    if (rc != VIDI_OK) vidi_media_item_free(out);
    free(resized);
    vidi_image_free(&img);
    return rc;
}

/* qwen_vl_utils.fetch_video's per-frame pixel bounds for n frames. */
static void pp_video_bounds(const vidi_media_options *opt, int factor, int n, double *min_px, double *max_px) {
    double f2 = (double)factor * factor;
    double min_p = opt->min_pixels > 0 ? (double)opt->min_pixels : PP_VIDEO_MIN_TOKENS * f2;
    double total = opt->total_pixels > 0 ? (double)opt->total_pixels : PP_MODEL_SEQ_LEN * f2 * 0.9;
    double cap = PP_VIDEO_MAX_TOKENS * f2, per_frame = total / n * PP_FRAME_FACTOR;
    double max_p = cap < per_frame ? cap : per_frame;
    double floor_p = (double)(int64_t)(min_p * 1.05); /* int(min_pixels * 1.05) */
    if (max_p < floor_p) max_p = floor_p;
    if (opt->max_pixels > 0 && (double)opt->max_pixels < max_p) max_p = (double)opt->max_pixels;
    *min_px = min_p;
    *max_px = max_p;
}

vidi_status vidi_media_video_to_item(const uint8_t *data, size_t size, const vidi_preproc_config *pp,
                                     const vidi_media_options *opt, const vidi_media_limits *limits,
                                     vidi_media_item *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_video v = {0};
    uint8_t *resized = NULL;
    if (!out) return vidi_err_set(err, VIDI_ERR_INVALID, "video: no output item");
    memset(out, 0, sizeof *out);
    VIDI_TRY(pp_check_config(pp, err));
    vidi_media_options dflt = vidi_media_options_default();
    if (!opt) opt = &dflt;
    vidi_media_limits lim = limits ? *limits : vidi_media_limits_default();

    VIDI_TRY(vidi_video_decode(data, size, &opt->video, &lim, &v, err));
    VIDI_CHECK(v.n_frames >= 1 && v.width >= 1 && v.height >= 1 && v.rgb, err, VIDI_ERR_INTERNAL,
               "video: decoder returned %d frames of %dx%d", v.n_frames, v.width, v.height);
    VIDI_CHECK(v.sample_fps > 0 && isfinite(v.sample_fps), err, VIDI_ERR_FORMAT,
               "video: sample fps %g is not positive; the stream's frame rate is unknown", v.sample_fps);
    int factor = pp->patch_size * pp->merge_size;
    double min_px, max_px;
    pp_video_bounds(opt, factor, v.n_frames, &min_px, &max_px);
    int rh = 0, rw = 0;
    rc = vidi_smart_resize_ex(v.height, v.width, factor, min_px, max_px, VIDI_SMART_RESIZE_QWEN_VL_UTILS, &rh,
                              &rw, err);
    if (rc != VIDI_OK) {
        vidi_err_prefix(err, "video frames %dx%d", v.width, v.height);
        goto fail;
    }
    size_t in_frame = (size_t)v.width * v.height * 3, out_frame = (size_t)rw * rh * 3;
    resized = malloc(out_frame * (size_t)v.n_frames);
    VIDI_CHECK(resized, err, VIDI_ERR_NOMEM, "video: out of memory for %d frames of %dx%d", v.n_frames, rw, rh);
    for (int i = 0; i < v.n_frames; i++)
        VIDI_TRY(vidi_resize_torch_bicubic(v.rgb + in_frame * i, v.width, v.height, resized + out_frame * i, rw, rh,
                                           err));
    VIDI_TRY(pp_fill_item(resized, v.n_frames, rh, rw, pp, VIDI_NORM_TORCH_FUSED, out, err));
    out->is_video = 1;
    out->sample_fps = v.sample_fps;
    out->second_per_grid_t = (double)pp->temporal_patch_size / v.sample_fps;
    out->frame_indices = malloc(sizeof(int64_t) * (size_t)v.n_frames);
    out->timestamps = malloc(sizeof(double) * (size_t)v.n_frames);
    VIDI_CHECK(out->frame_indices && out->timestamps, err, VIDI_ERR_NOMEM, "video: out of memory");
    if (v.frame_indices) memcpy(out->frame_indices, v.frame_indices, sizeof(int64_t) * (size_t)v.n_frames);
    else
        for (int i = 0; i < v.n_frames; i++) out->frame_indices[i] = -1;
    if (v.timestamps) memcpy(out->timestamps, v.timestamps, sizeof(double) * (size_t)v.n_frames);
    else
        for (int i = 0; i < v.n_frames; i++) out->timestamps[i] = NAN;
fail:
    if (rc != VIDI_OK) vidi_media_item_free(out);
    free(resized);
    vidi_video_free(&v);
    return rc;
}
