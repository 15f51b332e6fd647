/* media/video.c — videos to the RGB888 frames qwen-vl-utils would feed the
 * model, decoding only the frames it chooses.
 *
 * The pipeline (media.h: vidi_video_decode):
 *   open     libavformat from a path or from memory (a read+seek AVIOContext
 *            over the caller's buffer); probing bounded in bytes and time; an
 *            interrupt callback enforces limits->timeout_seconds on every
 *            blocking libav call; only container formats we expect are let in
 *            and no nested resource may be opened (no protocols)
 *   check    best video stream; declared size and duration against limits,
 *            before any packet is decoded
 *   table    one pass over the packets (no decoding) collecting each frame's
 *            presentation timestamp and the keyframes; sorted, this is the
 *            true frame count and the true time of every frame, whatever the
 *            header says (nb_frames/duration may lie; VFR; B-frames)
 *   choose   qwen-vl-utils' smart_nframes + round(linspace) over the table
 *   decode   for each chosen frame in order: seek to the keyframe at or before
 *            it unless decoding forward from where we are is no longer than
 *            that, then decode forward until the frame with its pts comes out,
 *            skipping non-reference frames that are not chosen. With several
 *            threads and targets under several keyframes, the targets are
 *            split into contiguous runs, one per worker, each with its own
 *            demuxer and single-threaded decoder over the same input (frame
 *            threading stalls at every seek; separate GOPs do not)
 *   convert  swscale to RGB24 as PyAV's to_ndarray("rgb24") does, then the
 *            rotation of the display matrix as ffmpeg's autorotate applies it
 *
 * video_fps: qwen-vl-utils takes the stream's average frame rate (torchvision
 * and decord backends: avg_frame_rate; torchcodec: average_fps), and our
 * reference (PyAV decode-all) uses stream.average_rate. We use
 * avg_frame_rate when it is sane: positive, at most 1000, and within 25 % of
 * what the timestamps say ((count - 1) / span). Otherwise (missing, or a
 * header that lies, e.g. a Matroska DefaultDuration of 25 fps over 10 fps
 * blocks) we use the timestamps' rate, so that fps-based sampling follows
 * real time.
 *
 * Frame times are (pts - pts of the first frame) * time_base: the first
 * presented frame is at 0 s; start_time/end_time trim on these times
 * (frames with time in [start, end]).
 */
#include "media/media.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Demuxers we accept (names as libavformat spells them). Anything else —
 * playlists, concat lists, image2 sequences, raw data — is refused. */
#define VIDEO_FORMAT_WHITELIST                                                 \
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,ivf,nut,gif"

#define VIDEO_PROBESIZE "10000000"       /* bytes read to find streams */
#define VIDEO_ANALYZEDURATION "10000000" /* microseconds of stream analysed */
#define VIDEO_AVIO_BUFFER 65536
#define VIDEO_MAX_TABLE 20000000         /* frames in one stream */
#define VIDEO_SEEK_RETRIES 3
#define VIDEO_HEAD_BYTES 4096            /* bytes probed to name a refused input */
#define VIDEO_MAX_WORKERS 16             /* parallel demuxer+decoder pairs */

/* ------------------------------------------------------------ sampling */

static double video_round_half_even(double x) {
    /* nearbyint in the default rounding mode (to nearest, ties to even), as
     * Python's round and numpy's/torch's round do */
    return nearbyint(x);
}

vidi_status vidi_video_sample_indices(int64_t total, double video_fps, const vidi_video_options *opt,
                                      int64_t *idx, int cap, int *n_out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int64_t n;
    VIDI_CHECK(opt && idx && n_out, err, VIDI_ERR_INVALID, "sample_indices: NULL argument");
    *n_out = 0;
    VIDI_CHECK(total > 0, err, VIDI_ERR_INVALID, "video has no frames to sample");
    if (opt->nframes > 0) {
        n = (int64_t)video_round_half_even(opt->nframes / 2.0) * 2;
    } else {
        VIDI_CHECK(opt->fps > 0 && isfinite(opt->fps), err, VIDI_ERR_INVALID,
                   "sampling fps must be positive, got %g", opt->fps);
        VIDI_CHECK(video_fps > 0 && isfinite(video_fps), err, VIDI_ERR_INVALID,
                   "video frame rate must be positive, got %g", video_fps);
        double min_f = ceil((opt->min_frames > 0 ? opt->min_frames : 4) / 2.0) * 2.0;
        int64_t maxf = opt->max_frames > 0 ? opt->max_frames : 768;
        if (maxf > total) maxf = total;
        double max_f = floor((double)maxf / 2.0) * 2.0;
        double nf = (double)total / video_fps * opt->fps;
        nf = fmin(fmin(fmax(nf, min_f), max_f), (double)total);
        n = (int64_t)(floor(nf / 2.0) * 2.0);
    }
    VIDI_CHECK(n >= 2 && n <= total, err, VIDI_ERR_INVALID,
               "frames to sample must be in [2, %lld] (frames in the video), got %lld",
               (long long)total, (long long)n);
    VIDI_CHECK(n <= cap, err, VIDI_ERR_RANGE,
               "%lld frames to sample exceed the limit of %d", (long long)n, cap);
    /* numpy.linspace: i * step + start, the last one exactly the stop */
    double step = (double)(total - 1) / (double)(n - 1);
    for (int64_t i = 0; i < n; i++)
        idx[i] = (int64_t)video_round_half_even((double)i * step);
    idx[n - 1] = total - 1;
    *n_out = (int)n;
    return VIDI_OK;
fail:
    return rc;
}

/* ------------------------------------------------------------ input */

typedef struct video_mem {
    const uint8_t *data;
    int64_t size;
    int64_t pos;
} video_mem;

static int video_mem_read(void *opaque, uint8_t *buf, int buf_size) {
    video_mem *m = opaque;
    int64_t left = m->size - m->pos;
    if (left <= 0) return AVERROR_EOF;
    int n = buf_size < left ? buf_size : (int)left;
    memcpy(buf, m->data + m->pos, (size_t)n);
    m->pos += n;
    return n;
}

static int64_t video_mem_seek(void *opaque, int64_t offset, int whence) {
    video_mem *m = opaque;
    int64_t to;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE: return m->size;
    case SEEK_SET: to = offset; break;
    case SEEK_CUR: to = m->pos + offset; break;
    case SEEK_END: to = m->size + offset; break;
    default: return AVERROR(EINVAL);
    }
    if (to < 0 || to > m->size) return AVERROR(EINVAL);
    m->pos = to;
    return to;
}

static double video_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct video_clock {
    double deadline;
    int expired;
} video_clock;

static int video_interrupt(void *opaque) {
    video_clock *c = opaque;
    if (!c->expired && video_now() > c->deadline) c->expired = 1;
    return c->expired;
}

/* Everything one decode holds; video_ctx_close frees it all. */
typedef struct video_ctx {
    video_mem mem;
    video_clock clock;
    double timeout;
    AVIOContext *avio;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;
    AVFrame *rgb;
    struct SwsContext *sws;
    int stream;
    const char *codec;          /* codec name, for messages */
    int64_t *pts;               /* table: presentation times, sorted */
    int64_t n_pts;
    int64_t *keys;              /* keyframe pts, sorted */
    int64_t n_keys;
} video_ctx;

static void video_ctx_close(video_ctx *c) {
    sws_freeContext(c->sws);
    av_frame_free(&c->rgb);
    av_frame_free(&c->frame);
    av_packet_free(&c->pkt);
    avcodec_free_context(&c->dec);
    if (c->fmt) avformat_close_input(&c->fmt);
    if (c->avio) {
        av_freep(&c->avio->buffer);
        avio_context_free(&c->avio);
    }
    free(c->pts);
    free(c->keys);
    memset(c, 0, sizeof *c);
}

static const char *video_averr(int e, char *buf, size_t n) {
    av_strerror(e, buf, n);
    return buf;
}

/* A libav error as a vidi error: timeouts say so, the rest keep libav's words. */
static vidi_status video_err_av(video_ctx *c, vidi_err *err, int e, const char *what) {
    char b[AV_ERROR_MAX_STRING_SIZE];
    if (c->clock.expired || e == AVERROR_EXIT)
        return vidi_err_set(err, VIDI_ERR_RANGE, "%s: gave up after the %g s time limit", what,
                            c->timeout);
    if (e == AVERROR(ENOMEM)) return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: out of memory", what);
    return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: %s", what, video_averr(e, b, sizeof b));
}

/* Up to cap bytes from the start of the input, for naming what it is. */
static size_t video_head(const video_ctx *c, const char *path, uint8_t *buf, size_t cap) {
    if (!path) {
        size_t n = c->mem.size > 0 ? (size_t)c->mem.size : 0;
        if (n > cap) n = cap;
        if (n) memcpy(buf, c->mem.data, n);
        return n;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* Whether any of the comma-separated names is in VIDEO_FORMAT_WHITELIST. */
static int video_format_allowed(const char *names) {
    static const char allowed[] = VIDEO_FORMAT_WHITELIST;
    const char *p = names;
    while (*p) {
        size_t n = strcspn(p, ",");
        for (const char *q = allowed; *q;) {
            size_t m = strcspn(q, ",");
            if (m == n && memcmp(p, q, n) == 0) return 1;
            q += m + (q[m] == ',');
        }
        p += n + (p[n] == ',');
    }
    return 0;
}

/* A declared frame size against the limits; 0x0 (unknown) passes here. */
static vidi_status video_check_size(const char *codec, int w, int h, const vidi_media_limits *lim,
                                    vidi_err *err) {
    vidi_status rc = VIDI_OK;
    if (w <= 0 || h <= 0) return VIDI_OK;
    VIDI_CHECK(w <= lim->max_side && h <= lim->max_side, err, VIDI_ERR_RANGE,
               "%s stream declares %dx%d frames: a side exceeds the limit of %d px", codec, w, h,
               lim->max_side);
    VIDI_CHECK((int64_t)w * h <= lim->max_image_pixels, err, VIDI_ERR_RANGE,
               "%s stream declares %dx%d frames = %lld pixels, over the limit of %lld", codec, w,
               h, (long long)w * h, (long long)lim->max_image_pixels);
    return VIDI_OK;
fail:
    return rc;
}

static vidi_status video_open(video_ctx *c, const char *path, const vidi_media_limits *lim,
                              vidi_err *err) {
    vidi_status rc = VIDI_OK;
    AVDictionary *o = NULL;
    int e;
    c->fmt = avformat_alloc_context();
    VIDI_CHECK(c->fmt, err, VIDI_ERR_NOMEM, "video: out of memory");
    c->fmt->interrupt_callback.callback = video_interrupt;
    c->fmt->interrupt_callback.opaque = &c->clock;
    if (!path) {
        uint8_t *buf = av_malloc(VIDEO_AVIO_BUFFER);
        VIDI_CHECK(buf, err, VIDI_ERR_NOMEM, "video: out of memory");
        c->avio = avio_alloc_context(buf, VIDEO_AVIO_BUFFER, 0, &c->mem, video_mem_read, NULL,
                                     video_mem_seek);
        if (!c->avio) av_free(buf);
        VIDI_CHECK(c->avio, err, VIDI_ERR_NOMEM, "video: out of memory");
        c->fmt->pb = c->avio;
        c->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    }
    av_dict_set(&o, "probesize", VIDEO_PROBESIZE, 0);
    av_dict_set(&o, "analyzeduration", VIDEO_ANALYZEDURATION, 0);
    av_dict_set(&o, "format_whitelist", VIDEO_FORMAT_WHITELIST, 0);
    av_dict_set(&o, "protocol_whitelist", path ? "file" : "none", 0);
    av_dict_set(&o, "max_streams", "64", 0);
    e = avformat_open_input(&c->fmt, path ? path : "", NULL, &o);
    av_dict_free(&o);
    if (e < 0) {
        /* avformat_open_input frees the context on failure */
        c->fmt = NULL;
        char b[AV_ERROR_MAX_STRING_SIZE];
        if (c->clock.expired) return video_err_av(c, err, e, "opening video");
        uint8_t head[VIDEO_HEAD_BYTES + AV_INPUT_BUFFER_PADDING_SIZE];
        size_t nh = video_head(c, path, head, VIDEO_HEAD_BYTES);
        memset(head + nh, 0, AV_INPUT_BUFFER_PADDING_SIZE);
        if (e == AVERROR(EINVAL)) {
            /* format_whitelist refusals come back as EINVAL: name the format */
            AVProbeData pd = {.filename = "", .buf = head, .buf_size = (int)nh};
            int score = AVPROBE_SCORE_RETRY;
            const AVInputFormat *f = nh ? av_probe_input_format2(&pd, 1, &score) : NULL;
            if (f && !video_format_allowed(f->name))
                return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                                    "'%s' is not a supported video container (supported: %s)",
                                    f->name, VIDEO_FORMAT_WHITELIST);
        }
        if (e == AVERROR_INVALIDDATA) {
            if (nh >= 8 && memcmp(head + 4, "ftyp", 4) == 0)
                return vidi_err_set(err, VIDI_ERR_FORMAT,
                                    "MP4/MOV file missing its index (moov atom not found or "
                                    "unreadable): not a playable video");
            return vidi_err_set(err, VIDI_ERR_FORMAT,
                                "not a video in a supported container (%s)",
                                video_averr(e, b, sizeof b));
        }
        if (path && (e == AVERROR(ENOENT) || e == AVERROR(ENOTDIR)))
            return vidi_err_set(err, VIDI_ERR_NOTFOUND, "video file '%s' does not exist", path);
        if (path && e == AVERROR(EACCES))
            return vidi_err_set(err, VIDI_ERR_IO, "cannot open video '%s': %s", path,
                                video_averr(e, b, sizeof b));
        return video_err_av(c, err, e, "opening video");
    }
    /* The sizes the container declares, checked before find_stream_info
     * probes the codec (which may refuse or zero an absurd size and so hide
     * it from the check after). */
    for (unsigned i = 0; i < c->fmt->nb_streams; i++) {
        const AVStream *st = c->fmt->streams[i];
        const AVCodecParameters *par = st->codecpar;
        if (par->codec_type != AVMEDIA_TYPE_VIDEO || (st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            continue;
        VIDI_TRY(video_check_size(avcodec_get_name(par->codec_id), par->width, par->height, lim,
                                  err));
    }
    e = avformat_find_stream_info(c->fmt, NULL);
    if (e < 0) return video_err_av(c, err, e, "reading the video's stream info");
    return VIDI_OK;
fail:
    return rc;
}

static int video_theta(const AVStream *st) {
    const int32_t *m = (const int32_t *)av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, NULL);
    if (!m) return 0;
    double r = av_display_rotation_get(m);
    if (isnan(r)) return 0;
    /* ffmpeg's autorotate: theta = -rotation, turned clockwise */
    int t = (int)lround(-r / 90.0) * 90;
    t %= 360;
    if (t < 0) t += 360;
    return t;
}

/* (Re)open the decoder of c->stream with `threads` threads (0 = auto). */
static vidi_status video_open_decoder(video_ctx *c, int threads, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    AVStream *st = c->fmt->streams[c->stream];
    const AVCodec *codec = avcodec_find_decoder(st->codecpar->codec_id);
    VIDI_CHECK(codec, err, VIDI_ERR_UNSUPPORTED, "unsupported video codec '%s' (no decoder in this FFmpeg)",
               avcodec_get_name(st->codecpar->codec_id));
    avcodec_free_context(&c->dec);
    c->dec = avcodec_alloc_context3(codec);
    VIDI_CHECK(c->dec, err, VIDI_ERR_NOMEM, "video: out of memory");
    int e = avcodec_parameters_to_context(c->dec, st->codecpar);
    if (e < 0) return video_err_av(c, err, e, "setting up the video decoder");
    c->dec->pkt_timebase = st->time_base;
    c->dec->thread_count = threads;
    c->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    e = avcodec_open2(c->dec, codec, NULL);
    if (e < 0) {
        char what[96];
        snprintf(what, sizeof what, "opening the %s decoder", c->codec);
        return video_err_av(c, err, e, what);
    }
    return VIDI_OK;
fail:
    return rc;
}

static vidi_status video_pick_stream(video_ctx *c, const vidi_media_limits *lim,
                                     const vidi_video_options *opt, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    const AVCodec *codec = NULL;
    int e = av_find_best_stream(c->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (e == AVERROR_STREAM_NOT_FOUND) {
        int audio = 0;
        for (unsigned i = 0; i < c->fmt->nb_streams; i++)
            audio += c->fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO;
        return vidi_err_set(err, VIDI_ERR_FORMAT,
                            "no video stream in this %s file (%u streams, %d audio)",
                            c->fmt->iformat->name, c->fmt->nb_streams, audio);
    }
    if (e == AVERROR_DECODER_NOT_FOUND) {
        int s = av_find_best_stream(c->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
        const char *name = s >= 0 ? avcodec_get_name(c->fmt->streams[s]->codecpar->codec_id) : "?";
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "unsupported video codec '%s' (no decoder in this FFmpeg)", name);
    }
    if (e < 0) return video_err_av(c, err, e, "finding the video stream");
    c->stream = e;
    AVStream *st = c->fmt->streams[e];
    AVCodecParameters *par = st->codecpar;
    c->codec = codec->name;
    VIDI_CHECK(par->width > 0 && par->height > 0, err, VIDI_ERR_FORMAT,
               "%s stream declares no picture size (%dx%d)", c->codec, par->width, par->height);
    VIDI_TRY(video_check_size(c->codec, par->width, par->height, lim, err));
    double declared = -1.0;
    if (st->duration > 0 && st->duration != AV_NOPTS_VALUE)
        declared = (double)st->duration * av_q2d(st->time_base);
    else if (c->fmt->duration > 0 && c->fmt->duration != AV_NOPTS_VALUE)
        declared = (double)c->fmt->duration / AV_TIME_BASE;
    VIDI_CHECK(declared <= lim->max_video_seconds, err, VIDI_ERR_RANGE,
               "video declares %.1f s, over the limit of %.0f s", declared, lim->max_video_seconds);

    return video_open_decoder(c, opt->threads > 0 ? opt->threads : 0, err);
fail:
    return rc;
}

static int video_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static vidi_status video_push(int64_t **a, int64_t *n, int64_t *cap, int64_t v, vidi_err *err) {
    if (*n == *cap) {
        int64_t nc = *cap ? *cap * 2 : 1024;
        int64_t *p = realloc(*a, (size_t)nc * sizeof *p);
        if (!p) return vidi_err_set(err, VIDI_ERR_NOMEM, "video: out of memory for the frame table");
        *a = p;
        *cap = nc;
    }
    (*a)[(*n)++] = v;
    return VIDI_OK;
}

/* One pass over the stream's packets without decoding: the frame table. */
static vidi_status video_scan(video_ctx *c, const vidi_media_limits *lim, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int64_t cap = 0, kcap = 0, last = AV_NOPTS_VALUE;
    AVStream *st = c->fmt->streams[c->stream];
    for (;;) {
        int e = av_read_frame(c->fmt, c->pkt);
        if (e == AVERROR_EOF) break;
        if (e < 0) return video_err_av(c, err, e, "reading the video's packets");
        if (c->pkt->stream_index == c->stream &&
            !(c->pkt->flags & (AV_PKT_FLAG_DISCARD | AV_PKT_FLAG_CORRUPT))) {
            int64_t t = c->pkt->pts;
            if (t == AV_NOPTS_VALUE) t = c->pkt->dts;
            if (t == AV_NOPTS_VALUE && last != AV_NOPTS_VALUE)
                t = last + (c->pkt->duration > 0 ? c->pkt->duration : 1);
            if (t != AV_NOPTS_VALUE) {
                VIDI_CHECK(c->n_pts < VIDEO_MAX_TABLE, err, VIDI_ERR_RANGE,
                           "%s stream has over %d frames", c->codec, VIDEO_MAX_TABLE);
                VIDI_TRY(video_push(&c->pts, &c->n_pts, &cap, t, err));
                if (c->pkt->flags & AV_PKT_FLAG_KEY)
                    VIDI_TRY(video_push(&c->keys, &c->n_keys, &kcap, t, err));
                last = t;
            }
        }
        av_packet_unref(c->pkt);
    }
    VIDI_CHECK(c->n_pts > 0, err, VIDI_ERR_FORMAT, "%s stream holds no frames", c->codec);
    /* qsort's table must not be NULL, even for 0 elements (no keyframes) */
    if (c->n_pts > 1) qsort(c->pts, (size_t)c->n_pts, sizeof *c->pts, video_cmp_i64);
    if (c->n_keys > 1) qsort(c->keys, (size_t)c->n_keys, sizeof *c->keys, video_cmp_i64);
    /* duplicate pts would make two frames indistinguishable: keep one */
    int64_t w = 1;
    for (int64_t i = 1; i < c->n_pts; i++)
        if (c->pts[i] != c->pts[w - 1]) c->pts[w++] = c->pts[i];
    c->n_pts = w;
    double span = (double)(c->pts[c->n_pts - 1] - c->pts[0]) * av_q2d(st->time_base);
    VIDI_CHECK(span <= lim->max_video_seconds, err, VIDI_ERR_RANGE,
               "%s stream lasts %.1f s, over the limit of %.0f s", c->codec, span,
               lim->max_video_seconds);
    return VIDI_OK;
fail:
    av_packet_unref(c->pkt);
    return rc;
}

/* Index in keys[] of the last keyframe with pts <= t, or -1. */
static int64_t video_key_before(const video_ctx *c, int64_t t) {
    int64_t lo = 0, hi = c->n_keys; /* first key > t */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (c->keys[mid] <= t) lo = mid + 1;
        else hi = mid;
    }
    return lo - 1;
}

/* Number of table frames with pts < t. */
static int64_t video_frames_before(const video_ctx *c, int64_t t) {
    int64_t lo = 0, hi = c->n_pts;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (c->pts[mid] < t) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Convert the decoded frame to RGB24 the way PyAV's to_ndarray("rgb24")
 * does (swscale, SWS_BILINEAR, no scaling, the frame's colour tags), then
 * turn it by theta clockwise into dst (out_w x out_h x 3). */
static vidi_status video_to_rgb(video_ctx *c, const AVFrame *f, int theta, uint8_t *dst,
                                vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int w = f->width, h = f->height;
    c->sws = sws_getCachedContext(c->sws, w, h, (enum AVPixelFormat)f->format, w, h,
                                  AV_PIX_FMT_RGB24, SWS_BILINEAR, NULL, NULL, NULL);
    VIDI_CHECK(c->sws, err, VIDI_ERR_UNSUPPORTED, "cannot convert %s frames of %s to RGB",
               av_get_pix_fmt_name((enum AVPixelFormat)f->format), c->codec);
    {
        /* PyAV (>= 17, FFmpeg's sws_scale_frame) follows the frame's tags:
         * YUV matrix from colorspace, full/limited from color_range. */
        int *inv, *tab, src_range, dst_range, bri, con, sat;
        if (sws_getColorspaceDetails(c->sws, &inv, &src_range, &tab, &dst_range, &bri, &con, &sat) >= 0) {
            int cs = f->colorspace;
            const int *coef = sws_getCoefficients(cs == AVCOL_SPC_UNSPECIFIED ? SWS_CS_DEFAULT : cs);
            int full = f->color_range == AVCOL_RANGE_JPEG ? 1 : src_range;
            sws_setColorspaceDetails(c->sws, coef, full, tab, dst_range, bri, con, sat);
        }
    }
    if (!c->rgb || c->rgb->width != w || c->rgb->height != h) {
        av_frame_free(&c->rgb);
        c->rgb = av_frame_alloc();
        VIDI_CHECK(c->rgb, err, VIDI_ERR_NOMEM, "video: out of memory");
        c->rgb->format = AV_PIX_FMT_RGB24;
        c->rgb->width = w;
        c->rgb->height = h;
        VIDI_CHECK(av_frame_get_buffer(c->rgb, 0) >= 0, err, VIDI_ERR_NOMEM,
                   "video: out of memory");
    }
    sws_scale(c->sws, (const uint8_t *const *)f->data, f->linesize, 0, h, c->rgb->data,
              c->rgb->linesize);
    const uint8_t *s = c->rgb->data[0];
    int ls = c->rgb->linesize[0];
    if (theta == 0) {
        for (int y = 0; y < h; y++) memcpy(dst + (size_t)y * w * 3, s + (size_t)y * ls, (size_t)w * 3);
    } else if (theta == 180) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                memcpy(dst + ((size_t)y * w + x) * 3, s + (size_t)(h - 1 - y) * ls + (size_t)(w - 1 - x) * 3, 3);
    } else {
        /* out is h wide and w tall; 90 clockwise: out(r, q) = in(h-1-q, r);
         * 270: out(r, q) = in(q, w-1-r) */
        for (int r = 0; r < w; r++)
            for (int q = 0; q < h; q++) {
                const uint8_t *p = theta == 90 ? s + (size_t)(h - 1 - q) * ls + (size_t)r * 3
                                               : s + (size_t)q * ls + (size_t)(w - 1 - r) * 3;
                memcpy(dst + ((size_t)r * h + q) * 3, p, 3);
            }
    }
    return VIDI_OK;
fail:
    return rc;
}

static int64_t video_pkt_time(const AVPacket *p) {
    return p->pts != AV_NOPTS_VALUE ? p->pts : p->dts;
}

/* Seek so that the next packet of our stream is keyframe keys[k] (k < 0:
 * the start). Demuxers disagree on what a seek timestamp means (mov seeks
 * on its own sample times, which an edit list shifts from the packets'
 * pts; Matroska on block times), so we look at where we landed — the first
 * packet of the stream, kept in c->pkt for the caller (*pending = 1) — and
 * correct the request by the difference, a few times. Landing on an
 * earlier keyframe is only slower, so that is accepted at the end. */
static vidi_status video_seek(video_ctx *c, int64_t k, int *pending, vidi_err *err) {
    int64_t goal = k >= 0 ? c->keys[k] : INT64_MIN;
    int64_t ts = k >= 0 ? goal : c->pts[0];
    *pending = 0;
    for (int attempt = 0;; attempt++) {
        int e = av_seek_frame(c->fmt, c->stream, ts, AVSEEK_FLAG_BACKWARD);
        if (e < 0 && attempt == 0 && k < 0) /* some demuxers only seek by bytes */
            e = avformat_seek_file(c->fmt, -1, INT64_MIN, 0, 0, AVSEEK_FLAG_BYTE);
        if (e < 0) return video_err_av(c, err, e, "seeking in the video");
        avcodec_flush_buffers(c->dec);
        int64_t got = AV_NOPTS_VALUE;
        for (;;) { /* first packet of our stream */
            e = av_read_frame(c->fmt, c->pkt);
            if (e == AVERROR_EOF) break;
            if (e < 0) return video_err_av(c, err, e, "reading the video after a seek");
            if (c->pkt->stream_index == c->stream) {
                got = video_pkt_time(c->pkt);
                *pending = 1;
                break;
            }
            av_packet_unref(c->pkt);
        }
        if (k < 0 || got == goal || attempt >= VIDEO_SEEK_RETRIES) {
            if (k >= 0 && (got == AV_NOPTS_VALUE || got > goal) && attempt >= VIDEO_SEEK_RETRIES) {
                if (*pending) av_packet_unref(c->pkt);
                *pending = 0;
                return video_seek(c, -1, pending, err); /* overshot: from the start */
            }
            if (k < 0 || got <= goal) return VIDI_OK;
        }
        if (*pending) av_packet_unref(c->pkt);
        *pending = 0;
        if (got == AV_NOPTS_VALUE) ts -= 1;
        else ts += goal - got + (got > goal ? -1 : 0);
    }
}

static int64_t video_frame_pts(const AVFrame *f) {
    if (f->pts != AV_NOPTS_VALUE) return f->pts;
    if (f->best_effort_timestamp != AV_NOPTS_VALUE) return f->best_effort_timestamp;
    return f->pkt_dts;
}

/* 1 when a packet's frame may be one of want[0..n) (ascending): its pts is
 * among them, or unknown (then nothing may be skipped). */
static int video_is_wanted(int64_t pts, const int64_t *want, int n) {
    if (pts == AV_NOPTS_VALUE) return 1;
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (want[mid] < pts) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && want[lo] == pts;
}

/* Decode the frames whose pts are want[0..n) (ascending) into out->rgb.
 * Non-reference frames other than the wanted ones are skipped
 * (AVDISCARD_NONREF), which leaves every decoded picture unchanged. */
static vidi_status video_decode_chosen(video_ctx *c, const int64_t *want, int n, int theta,
                                       const int64_t *index, vidi_video *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    AVStream *st = c->fmt->streams[c->stream];
    double tb = av_q2d(st->time_base);
    size_t fsz = (size_t)out->width * out->height * 3;
    int t = 0, need_seek = 1, back = 0, at_eof = 0, pending = 0;
    int64_t pos = -1; /* table index of the last frame out of the decoder */
    char b[AV_ERROR_MAX_STRING_SIZE];
    while (t < n) {
        if (need_seek) {
            int64_t k = video_key_before(c, want[t]) - back;
            if (back >= VIDEO_SEEK_RETRIES) k = -1;
            VIDI_TRY(video_seek(c, k, &pending, err));
            out->seeks++;
            need_seek = 0;
            at_eof = 0;
        }
        int e;
        if (!at_eof) {
            e = pending ? 0 : av_read_frame(c->fmt, c->pkt);
            pending = 0;
            if (e == AVERROR_EOF) {
                at_eof = 1;
                e = avcodec_send_packet(c->dec, NULL); /* flush: drain the rest */
            } else if (e < 0) {
                rc = video_err_av(c, err, e, "reading video packets");
                goto fail;
            } else if (c->pkt->stream_index != c->stream) {
                av_packet_unref(c->pkt);
                continue;
            } else {
                /* A frame nothing refers to and that we do not want need not
                 * be decoded at all: the frames we keep come out the same. */
                c->dec->skip_frame = video_is_wanted(c->pkt->pts, want + t, n - t)
                                         ? AVDISCARD_DEFAULT
                                         : AVDISCARD_NONREF;
                e = avcodec_send_packet(c->dec, c->pkt);
                av_packet_unref(c->pkt);
            }
            if (e < 0 && e != AVERROR(EAGAIN) && e != AVERROR_EOF) {
                if (c->clock.expired) return video_err_av(c, err, e, "decoding video");
                VIDI_CHECK(0, err, VIDI_ERR_FORMAT,
                           "decoding frame %lld (pts %.3f s) of %s stream: %s", (long long)index[t],
                           (double)(want[t] - c->pts[0]) * tb, c->codec, video_averr(e, b, sizeof b));
            }
        }
        for (;;) {
            e = avcodec_receive_frame(c->dec, c->frame);
            if (e == AVERROR(EAGAIN)) break;
            if (e == AVERROR_EOF) {
                VIDI_CHECK(0, err, VIDI_ERR_FORMAT,
                           "frame %lld (pts %.3f s) of %s stream never came out of the decoder",
                           (long long)index[t], (double)(want[t] - c->pts[0]) * tb, c->codec);
            }
            if (e < 0) {
                if (c->clock.expired) return video_err_av(c, err, e, "decoding video");
                VIDI_CHECK(0, err, VIDI_ERR_FORMAT,
                           "decoding frame %lld (pts %.3f s) of %s stream: %s", (long long)index[t],
                           (double)(want[t] - c->pts[0]) * tb, c->codec, video_averr(e, b, sizeof b));
            }
            out->frames_decoded++;
            int64_t p = video_frame_pts(c->frame);
            if (p == want[t]) {
                int ow = theta == 90 || theta == 270 ? c->frame->height : c->frame->width;
                int oh = theta == 90 || theta == 270 ? c->frame->width : c->frame->height;
                VIDI_CHECK(ow == out->width && oh == out->height, err, VIDI_ERR_UNSUPPORTED,
                           "frame %lld of %s stream is %dx%d, the stream starts at %dx%d "
                           "(size changes are not supported)", (long long)index[t], c->codec,
                           c->frame->width, c->frame->height, out->width, out->height);
                VIDI_TRY(video_to_rgb(c, c->frame, theta, out->rgb + (size_t)t * fsz, err));
                out->timestamps[t] = (double)(p - c->pts[0]) * tb;
                t++;
                back = 0;
                if (t < n) {
                    /* seek when a keyframe lies between here and the next target:
                     * decoding forward would pass a whole GOP we do not need */
                    pos = index[t - 1];
                    int64_t k = video_key_before(c, want[t]);
                    if (k >= 0 && c->keys[k] > p && video_frames_before(c, c->keys[k]) - pos > 2)
                        need_seek = 1;
                }
            } else if (p > want[t]) {
                /* the target came before where this seek landed: go further back */
                VIDI_CHECK(back < VIDEO_SEEK_RETRIES, err, VIDI_ERR_FORMAT,
                           "frame %lld (pts %.3f s) of %s stream is not reachable by seeking",
                           (long long)index[t], (double)(want[t] - c->pts[0]) * tb, c->codec);
                back++;
                need_seek = 1;
            }
            av_frame_unref(c->frame);
            if (need_seek || t >= n) break;
        }
    }
    return VIDI_OK;
fail:
    av_frame_unref(c->frame);
    av_packet_unref(c->pkt);
    return rc;
}

/* ------------------------------------------------------------ parallel decode */

/* One worker's share: a contiguous run of the targets, decoded by its own
 * demuxer and decoder into its slots of the output. */
typedef struct video_part {
    video_ctx *c;
    const int64_t *want;
    const int64_t *index;
    int n;
    int theta;
    vidi_video view;   /* the output's geometry; rgb and timestamps point at this run's slots */
    vidi_status rc;
    vidi_err err;
} video_part;

static void *video_part_main(void *arg) {
    video_part *p = arg;
    p->rc = video_decode_chosen(p->c, p->want, p->n, p->theta, p->index, &p->view, &p->err);
    return NULL;
}

/* Split want[0..n) into at most `threads` (0 = the CPUs online, capped at
 * VIDEO_MAX_WORKERS) contiguous runs that begin where the targets move on
 * to a later keyframe, so that no two runs decode the same GOP, balanced by
 * the frames each run decodes (from a keyframe to the last target under
 * it). Writes the run starts to bounds[0..w] (bounds[w] = n); returns w. */
static int video_plan_runs(const video_ctx *c, const int64_t *want, int n, int threads, int *bounds) {
    if (threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (int)cpus : 1;
    }
    if (threads > VIDEO_MAX_WORKERS) threads = VIDEO_MAX_WORKERS;
    /* cost of the targets up to and including i, as frames decoded */
    double total = 0;
    double *upto = malloc((size_t)n * sizeof *upto);
    if (!upto) threads = 1;
    for (int i = 0; upto && i < n; i++) {
        int64_t k = video_key_before(c, want[i]);
        int64_t from = k >= 0 ? video_frames_before(c, c->keys[k]) : 0;
        int group_start = i == 0 || video_key_before(c, want[i - 1]) != k;
        int64_t prev = group_start ? from : video_frames_before(c, want[i - 1]) + 1;
        total += (double)(video_frames_before(c, want[i]) + 1 - prev);
        upto[i] = total;
    }
    int w = 1;
    bounds[0] = 0;
    for (int i = 1; upto && i < n && w < threads; i++) {
        if (video_key_before(c, want[i]) == video_key_before(c, want[i - 1])) continue;
        /* a run may start at i: do so once the runs before hold their share */
        if (upto[i - 1] >= total * w / threads) bounds[w++] = i;
    }
    bounds[w] = n;
    free(upto);
    return w;
}

/* Decode the runs bounds[i]..bounds[i+1] of want with w workers: c (whose decoder is reopened
 * single-threaded) takes the first run, w - 1 more demuxer+decoder pairs
 * opened over the same input take the others, sharing c's frame table.
 * The frames are the same as one worker's (each run starts with a seek to
 * a keyframe, as a lone decoder does whenever a keyframe lies between
 * targets); only the work is spread. */
static vidi_status video_decode_parallel(video_ctx *c, const char *path, const vidi_media_limits *lim,
                                         const vidi_video_options *opt, const int64_t *want, int theta,
                                         const int64_t *index, vidi_video *out, int w, const int *bounds,
                                         vidi_err *err) {
    vidi_status rc = VIDI_OK;
    video_ctx ctx[VIDEO_MAX_WORKERS];
    video_part part[VIDEO_MAX_WORKERS];
    pthread_t tid[VIDEO_MAX_WORKERS];
    int started[VIDEO_MAX_WORKERS] = {0};
    memset(ctx, 0, sizeof ctx);
    memset(part, 0, sizeof part);
    vidi_video_options one = *opt;
    one.threads = 1;
    size_t fsz = (size_t)out->width * out->height * 3;
    VIDI_TRY(video_open_decoder(c, 1, err));
    for (int i = 0; i < w; i++) {
        video_ctx *x = i == 0 ? c : &ctx[i];
        if (i > 0) {
            x->mem = (video_mem){c->mem.data, c->mem.size, 0};
            x->timeout = c->timeout;
            x->clock.deadline = c->clock.deadline;
            x->pkt = av_packet_alloc();
            x->frame = av_frame_alloc();
            VIDI_CHECK(x->pkt && x->frame, err, VIDI_ERR_NOMEM, "video: out of memory");
            VIDI_TRY(video_open(x, path, lim, err));
            VIDI_TRY(video_pick_stream(x, lim, &one, err));
            VIDI_CHECK(x->stream == c->stream, err, VIDI_ERR_INTERNAL,
                       "a second reader of the video picked stream %d, the first %d", x->stream, c->stream);
            x->pts = c->pts; /* shared, not owned: cleared before closing */
            x->n_pts = c->n_pts;
            x->keys = c->keys;
            x->n_keys = c->n_keys;
        }
        int b = bounds[i], e = bounds[i + 1];
        video_part *p = &part[i];
        p->c = x;
        p->want = want + b;
        p->index = index + b;
        p->n = e - b;
        p->theta = theta;
        p->view = *out;
        p->view.rgb = out->rgb + (size_t)b * fsz;
        p->view.timestamps = out->timestamps + b;
        p->view.frames_decoded = 0;
        p->view.seeks = 0;
    }
    for (int i = 1; i < w; i++) started[i] = pthread_create(&tid[i], NULL, video_part_main, &part[i]) == 0;
    video_part_main(&part[0]);
    for (int i = 1; i < w; i++) {
        if (started[i]) pthread_join(tid[i], NULL);
        else video_part_main(&part[i]); /* no thread to be had: run it here */
    }
    for (int i = 0; i < w; i++) {
        out->frames_decoded += part[i].view.frames_decoded;
        out->seeks += part[i].view.seeks;
        if (rc == VIDI_OK && part[i].rc != VIDI_OK) {
            rc = part[i].rc;
            if (err) *err = part[i].err;
        }
    }
fail:
    for (int i = 1; i < w; i++) {
        ctx[i].pts = NULL;
        ctx[i].keys = NULL;
        video_ctx_close(&ctx[i]);
    }
    return rc;
}

static vidi_status video_decode_any(const char *path, const uint8_t *data, size_t size,
                                    const vidi_video_options *opt_in, const vidi_media_limits *lim_in,
                                    vidi_video *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    video_ctx c;
    memset(&c, 0, sizeof c);
    memset(out, 0, sizeof *out);
    int64_t *idx = NULL, *want = NULL;
    vidi_video_options opt = opt_in ? *opt_in : vidi_video_options_default();
    vidi_media_limits lim = lim_in ? *lim_in : vidi_media_limits_default();
    if (!path) {
        VIDI_CHECK(data && size > 0, err, VIDI_ERR_FORMAT, "empty video (0 bytes)");
        VIDI_CHECK((int64_t)size <= lim.max_bytes, err, VIDI_ERR_RANGE,
                   "video of %zu bytes exceeds the limit of %lld bytes", size,
                   (long long)lim.max_bytes);
        c.mem.data = data;
        c.mem.size = (int64_t)size;
    }
    c.timeout = lim.timeout_seconds > 0 ? lim.timeout_seconds : 1e9;
    c.clock.deadline = video_now() + c.timeout;
    c.pkt = av_packet_alloc();
    c.frame = av_frame_alloc();
    VIDI_CHECK(c.pkt && c.frame, err, VIDI_ERR_NOMEM, "video: out of memory");

    VIDI_TRY(video_open(&c, path, &lim, err));
    VIDI_TRY(video_pick_stream(&c, &lim, &opt, err));
    VIDI_TRY(video_scan(&c, &lim, err));

    AVStream *st = c.fmt->streams[c.stream];
    double tb = av_q2d(st->time_base);
    /* video_fps: see the file comment */
    double table_fps = 0.0;
    if (c.n_pts >= 2 && c.pts[c.n_pts - 1] > c.pts[0])
        table_fps = (double)(c.n_pts - 1) / ((double)(c.pts[c.n_pts - 1] - c.pts[0]) * tb);
    double avg = st->avg_frame_rate.num > 0 && st->avg_frame_rate.den > 0 ? av_q2d(st->avg_frame_rate) : 0.0;
    double vfps = table_fps;
    if (avg > 0 && avg <= 1000 && (table_fps == 0 || fabs(avg / table_fps - 1.0) <= 0.25)) vfps = avg;
    VIDI_CHECK(vfps > 0, err, VIDI_ERR_FORMAT,
               "%s stream has one frame and no frame rate: cannot sample it", c.codec);

    /* trim to [start, end] on frame times */
    int64_t lo = 0, hi = c.n_pts; /* frames lo..hi-1 */
    if (opt.start_time >= 0)
        while (lo < hi && (double)(c.pts[lo] - c.pts[0]) * tb < opt.start_time - 1e-9) lo++;
    if (opt.end_time >= 0)
        while (hi > lo && (double)(c.pts[hi - 1] - c.pts[0]) * tb > opt.end_time + 1e-9) hi--;
    VIDI_CHECK(hi > lo, err, VIDI_ERR_INVALID,
               "no frame between %.3f s and %.3f s (the video has %lld frames over %.3f s)",
               opt.start_time, opt.end_time, (long long)c.n_pts,
               (double)(c.pts[c.n_pts - 1] - c.pts[0]) * tb);
    int64_t total = hi - lo;

    int cap = lim.max_frames > 0 ? lim.max_frames : 768;
    idx = malloc((size_t)cap * sizeof *idx);
    VIDI_CHECK(idx, err, VIDI_ERR_NOMEM, "video: out of memory");
    int n = 0;
    VIDI_TRY(vidi_video_sample_indices(total, vfps, &opt, idx, cap, &n, err));

    int theta = video_theta(st);
    out->rotation = theta;
    out->width = theta == 90 || theta == 270 ? st->codecpar->height : st->codecpar->width;
    out->height = theta == 90 || theta == 270 ? st->codecpar->width : st->codecpar->height;
    out->n_frames = n;
    out->total_frames = total;
    out->video_fps = vfps;
    out->duration = (double)total / vfps;
    out->sample_fps = (double)n / (double)total * vfps;
    snprintf(out->codec, sizeof out->codec, "%s", c.codec);
    snprintf(out->container, sizeof out->container, "%s", c.fmt->iformat->name);
    out->rgb = malloc((size_t)n * out->width * out->height * 3);
    out->frame_indices = malloc((size_t)n * sizeof *out->frame_indices);
    out->timestamps = malloc((size_t)n * sizeof *out->timestamps);
    want = malloc((size_t)n * sizeof *want);
    VIDI_CHECK(out->rgb && out->frame_indices && out->timestamps && want, err, VIDI_ERR_NOMEM,
               "video: out of memory for %d frames of %dx%d", n, out->width, out->height);
    for (int i = 0; i < n; i++) {
        out->frame_indices[i] = lo + idx[i];
        want[i] = c.pts[lo + idx[i]];
    }
    int bounds[VIDEO_MAX_WORKERS + 1];
    int workers = video_plan_runs(&c, want, n, opt.threads, bounds);
    if (workers > 1)
        VIDI_TRY(video_decode_parallel(&c, path, &lim, &opt, want, theta, out->frame_indices, out, workers,
                                       bounds, err));
    else
        VIDI_TRY(video_decode_chosen(&c, want, n, theta, out->frame_indices, out, err));

    free(idx);
    free(want);
    video_ctx_close(&c);
    return VIDI_OK;
fail:
    free(idx);
    free(want);
    video_ctx_close(&c);
    vidi_video_free(out);
    return rc;
}

vidi_status vidi_video_decode(const uint8_t *data, size_t size, const vidi_video_options *opt,
                              const vidi_media_limits *limits, vidi_video *out, vidi_err *err) {
    return video_decode_any(NULL, data, size, opt, limits, out, err);
}

vidi_status vidi_video_decode_file(const char *path, const vidi_video_options *opt,
                                   const vidi_media_limits *limits, vidi_video *out, vidi_err *err) {
    if (out) memset(out, 0, sizeof *out);
    if (!path || !*path) return vidi_err_set(err, VIDI_ERR_INVALID, "video path is empty");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return vidi_err_set(err, VIDI_ERR_NOTFOUND, "video file '%s' does not exist", path);
        return vidi_err_set(err, VIDI_ERR_IO, "cannot open video '%s': %s", path, strerror(e));
    }
    if (S_ISREG(sb.st_mode) && sb.st_size == 0)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "empty video file '%s' (0 bytes)", path);
    return video_decode_any(path, NULL, 0, opt, limits, out, err);
}
