/* media/media.h — the media stage: bytes or files in, the patches the
 * reference processor produces out.
 *
 *   decode  images: JPEG by libjpeg-turbo (TurboJPEG), PNG/WebP/BMP/GIF/TIFF
 *           by libavcodec's image decoders -> RGB888
 *           videos: libavformat + libavcodec, frames chosen by the
 *           qwen-vl-utils rules and decoded by seeking -> RGB888 frames
 *   resize  smart_resize; images like Pillow's antialiased bicubic on uint8,
 *           video frames like torchvision's antialiased bicubic on uint8
 *   patchify rescale, normalise, HF row layout -> pixel_values + grid (t,h,w)
 *
 * Every input is checked at the edge with limits; failures are errors with a
 * message that says what was wrong (never a crash or a hang).
 */
#ifndef VIDI_MEDIA_MEDIA_H
#define VIDI_MEDIA_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "model/config.h"

/* ---------------------------------------------------------------- limits */

typedef struct vidi_media_limits {
    int64_t max_bytes;          /* input size (default 512 MiB) */
    int64_t max_image_pixels;   /* declared width*height of an image or a
                                   video frame, checked from the header
                                   before decoding (default 178956970, as
                                   Pillow's decompression-bomb limit) */
    int max_side;               /* any side (default 65500) */
    double max_video_seconds;   /* declared or measured duration (default 4 h) */
    int max_frames;             /* frames sampled (default 768) */
    double timeout_seconds;     /* wall clock for one decode (default 120) */
} vidi_media_limits;

vidi_media_limits vidi_media_limits_default(void);

/* ---------------------------------------------------------------- images */

/* An RGB888 picture, rows top to bottom, 3 bytes per pixel, no padding. */
typedef struct vidi_image {
    int width;
    int height;
    uint8_t *rgb;               /* malloc'd; freed by vidi_image_free */
    /* The reference's leftover colour key: Pillow's convert("RGB") keeps a
     * single-colour transparency as info["transparency"] on the RGB image,
     * resize keeps it, and the transformers processor's convert_to_rgb then
     * composites every pixel of exactly that colour (after the resize) on
     * white. Set for PNG palette with one fully transparent entry (its
     * palette colour), PNG gray 2/4/8-bit (value clipped to 255, grey), PNG
     * 1-bit gray and 16-bit gray (Pillow keeps an int: (v & 255, 0, 0)),
     * PNG RGB 8/16-bit (low bytes), GIF first-frame transparent index (its
     * palette colour); see image.c. */
    int has_color_key;
    uint8_t color_key[3];
} vidi_image;

void vidi_image_free(vidi_image *img);

/* Decode an image held in memory. The format is sniffed from the bytes
 * (never from a file name). As qwen-vl-utils' to_rgb does: an RGBA image is
 * composited on white; every other mode goes through Pillow's
 * convert("RGB") — LA and palette transparency are dropped, not composited;
 * CMYK (Adobe inverted as Pillow reads it) gives (255-C)(255-K)/255; 16-bit
 * gray is clipped to 255; 16-bit RGB keeps the high byte. GIF: the first
 * frame. EXIF orientation is not applied (the reference does not). The declared size is checked against `limits`
 * before any pixel is decoded. */
vidi_status vidi_image_decode(const uint8_t *data, size_t size, const vidi_media_limits *limits,
                              vidi_image *out, vidi_err *err);

/* ---------------------------------------------------------------- videos */

typedef struct vidi_video_options {
    double fps;                 /* sampling rate (default 2.0); ignored when nframes > 0 */
    int nframes;                /* exact frame count (rounded to a multiple of 2); 0 = by fps */
    int min_frames;             /* default 4 */
    int max_frames;             /* default 768 */
    double start_time;          /* seconds; < 0 = from the start */
    double end_time;            /* seconds; < 0 = to the end */
    int threads;                /* decoder threads, 0 = auto */
} vidi_video_options;

vidi_video_options vidi_video_options_default(void);

/* Frames chosen from a video, decoded to RGB888 at the stream's size
 * (after applying rotation metadata). */
typedef struct vidi_video {
    int n_frames;
    int width;
    int height;
    uint8_t *rgb;               /* n_frames * height * width * 3, malloc'd */
    int64_t *frame_indices;     /* index of each chosen frame in the stream */
    double *timestamps;         /* seconds of each chosen frame */
    int64_t total_frames;       /* frames in the (trimmed) stream, as counted */
    double video_fps;           /* average frame rate used for sampling */
    double duration;            /* seconds */
    double sample_fps;          /* n_frames / total_frames * video_fps */
    char codec[32];
    char container[32];
    int rotation;               /* clockwise degrees applied (0/90/180/270) */
    int64_t frames_decoded;     /* frames the decoder produced, chosen or not */
    int seeks;                  /* keyframe seeks made */
} vidi_video;

void vidi_video_free(vidi_video *v);

/* Which frames qwen-vl-utils takes from a stream of total_frames frames at
 * video_fps: nframes (given, rounded to a multiple of 2) or
 * total / video_fps * fps clamped to [ceil2(min_frames), floor2(min(max_frames,
 * total))] and floored to a multiple of 2; indices round(linspace(0,
 * total-1, n)). Writes n indices to idx (capacity cap) and *n_out.
 * Errors when the result is outside [2, total]. */
vidi_status vidi_video_sample_indices(int64_t total_frames, double video_fps,
                                      const vidi_video_options *opt, int64_t *idx, int cap,
                                      int *n_out, vidi_err *err);

/* Decode the sampled frames of a video file in memory or on disk. Only the
 * chosen frames are decoded: seek to the keyframe before each target and
 * decode forward. Frame count and duration are checked against what the
 * stream really holds (metadata may lie). */
vidi_status vidi_video_decode(const uint8_t *data, size_t size, const vidi_video_options *opt,
                              const vidi_media_limits *limits, vidi_video *out, vidi_err *err);
vidi_status vidi_video_decode_file(const char *path, const vidi_video_options *opt,
                                   const vidi_media_limits *limits, vidi_video *out, vidi_err *err);

/* ---------------------------------------------------------------- resize */

/* qwen-vl-utils smart_resize: sides rounded to multiples of `factor`, area
 * within [min_pixels, max_pixels], aspect ratio at most 200. */
vidi_status vidi_smart_resize(int height, int width, int factor, int64_t min_pixels,
                              int64_t max_pixels, int *out_h, int *out_w, vidi_err *err);

/* The two smart_resize variants in use. They differ only at the edges:
 * qwen-vl-utils clamps the rounded sides to at least `factor` before the
 * area test; transformers' image processors do not (a side under factor/2
 * rounds to 0 and takes the min_pixels branch) but clamp the floored sides
 * of the max_pixels branch to at least `factor` (qwen-vl-utils can floor a
 * side to 0 there, which it then fails on; vidi clamps it to `factor` and
 * says so nowhere else). */
typedef enum vidi_smart_resize_rule {
    VIDI_SMART_RESIZE_QWEN_VL_UTILS = 0, /* videos, and images sent through qwen-vl-utils */
    VIDI_SMART_RESIZE_HF = 1,            /* Qwen2VLImageProcessor(Pil).smart_resize: images */
} vidi_smart_resize_rule;

/* smart_resize with the pixel bounds as doubles (qwen-vl-utils computes
 * the video max_pixels as a float: total_pixels / nframes * 2) and the
 * rule chosen. Errors: a side < 1, factor < 1, max < min, aspect ratio
 * above 200 (VIDI_ERR_INVALID), a result side above 65500 (VIDI_ERR_RANGE). */
vidi_status vidi_smart_resize_ex(int height, int width, int factor, double min_pixels,
                                 double max_pixels, vidi_smart_resize_rule rule, int *out_h,
                                 int *out_w, vidi_err *err);

/* Pillow Image.resize(BICUBIC) on RGB888 (antialiased, fixed point, two
 * passes with uint8 between them, exactly as Pillow's Resample.c does). */
vidi_status vidi_resize_pil_bicubic(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw,
                                    int dh, vidi_err *err);
/* torchvision resize(BICUBIC, antialias=True) on a uint8 tensor, rounded and
 * clamped to uint8, as torch computes it on the CPU. */
vidi_status vidi_resize_torch_bicubic(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw,
                                      int dh, vidi_err *err);

/* ---------------------------------------------------------------- patches */

/* What the model is fed for one image or video. */
typedef struct vidi_media_item {
    int is_video;
    int32_t grid[3];            /* t, h, w in patches */
    int64_t rows;               /* t*h*w */
    int cols;                   /* C * temporal_patch * patch * patch (1176) */
    float *pixels;              /* rows * cols, malloc'd */
    double second_per_grid_t;   /* videos: temporal_patch_size / sample_fps; images 0 */
    int n_frames;               /* frames used (before temporal padding) */
    int64_t *frame_indices;     /* videos: chosen frame indices (malloc'd) */
    double *timestamps;         /* videos: their times in seconds (malloc'd) */
    double sample_fps;
    int resized_h, resized_w;   /* pixels after smart_resize */
} vidi_media_item;

void vidi_media_item_free(vidi_media_item *it);

/* Rescale (uint8 * rescale_factor), normalise by image_mean / image_std and
 * lay out n_frames RGB888 frames of h x w (multiples of patch*merge) in the
 * HF row order (t, h-block, w-block, h-in-merge, w-in-merge; each row C, t,
 * patch row, patch column). The last frame repeats up to a multiple of
 * temporal_patch_size. pixels must hold rows*cols floats. */
vidi_status vidi_patchify(const uint8_t *frames, int n_frames, int h, int w,
                          const vidi_preproc_config *pp, float *pixels, int32_t grid[3],
                          vidi_err *err);

/* How rescale and normalise round in float32. The image processor
 * (Qwen2VLImageProcessorPil, numpy) computes f32(x * rescale_factor in
 * double), then (v - mean) / std in float32; the video processor (torch)
 * fuses them: (x - f32(mean * 1/rescale_factor)) / f32(std * 1/rescale_factor)
 * in float32. The two differ by an ulp or so. */
typedef enum vidi_norm_mode {
    VIDI_NORM_NUMPY = 0,       /* images (what vidi_patchify uses) */
    VIDI_NORM_TORCH_FUSED = 1, /* video frames */
} vidi_norm_mode;

/* vidi_patchify with the normalisation rounding chosen. */
vidi_status vidi_patchify_ex(const uint8_t *frames, int n_frames, int h, int w,
                             const vidi_preproc_config *pp, vidi_norm_mode mode, float *pixels,
                             int32_t grid[3], vidi_err *err);

/* Per-request preprocessing options (0 / negative = the defaults). */
typedef struct vidi_media_options {
    int64_t min_pixels;         /* images: preprocessor_config; videos: 128*28*28 */
    int64_t max_pixels;         /* images: preprocessor_config; videos: 768*28*28 */
    int64_t total_pixels;       /* videos: budget over all frames (90316800) */
    vidi_video_options video;
} vidi_media_options;

vidi_media_options vidi_media_options_default(void);

/* Bytes of an image -> item (Pillow path). */
vidi_status vidi_media_image_to_item(const uint8_t *data, size_t size, const vidi_preproc_config *pp,
                                     const vidi_media_options *opt, const vidi_media_limits *limits,
                                     vidi_media_item *out, vidi_err *err);
/* Bytes of a video -> item (qwen-vl-utils frame choice, torchvision resize). */
vidi_status vidi_media_video_to_item(const uint8_t *data, size_t size, const vidi_preproc_config *pp,
                                     const vidi_media_options *opt, const vidi_media_limits *limits,
                                     vidi_media_item *out, vidi_err *err);

/* ---------------------------------------------------------------- files */

/* Read a whole file into memory, refusing more than max_bytes. When
 * n_roots > 0 the path must resolve (realpath, symlinks followed) inside
 * one of the allowed roots, else VIDI_ERR_INVALID saying so. *data is
 * malloc'd (freed by the caller with free). */
vidi_status vidi_media_read_file(const char *path, const char *const *roots, int n_roots,
                                 int64_t max_bytes, uint8_t **data, size_t *size, vidi_err *err);

/* "image", "video" or NULL from the first bytes (magic numbers / container
 * probing); used to route a file of unknown extension. */
const char *vidi_media_sniff(const uint8_t *data, size_t size);

#endif
