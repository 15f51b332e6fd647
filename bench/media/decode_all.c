/* bench/media/decode_all.c — the "decode every frame" baseline of the media
 * benchmark: libavformat + libavcodec decode all frames of the first video
 * stream with the same thread count vidi uses, optionally converting each
 * to RGB24 (what a decode-all sampler must do before it can pick frames).
 *
 *   decode_all CLIP [--threads N] [--runs R] [--rgb]
 *
 * One warm-up run, then R timed runs; prints one JSON line:
 *   {"case":"decode_all","rgb":0,"frames":1800,"median_ms":...,"runs_ms":[...]}
 */
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/media/bench_util.h"

typedef struct decode_ctx {
    struct SwsContext *sws;
    uint8_t *rgb;
    int rgb_w, rgb_h;
    long frames;
} decode_ctx;

/* Converts one frame to packed RGB24 into a reused buffer. */
static int to_rgb(decode_ctx *c, const AVFrame *f) {
    if (!c->rgb || c->rgb_w != f->width || c->rgb_h != f->height) {
        free(c->rgb);
        c->rgb = malloc((size_t)f->width * f->height * 3);
        if (!c->rgb) return AVERROR(ENOMEM);
        c->rgb_w = f->width;
        c->rgb_h = f->height;
    }
    c->sws = sws_getCachedContext(c->sws, f->width, f->height, f->format, f->width, f->height,
                                  AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL, NULL, NULL);
    if (!c->sws) return AVERROR(EINVAL);
    uint8_t *dst[4] = {c->rgb, NULL, NULL, NULL};
    int stride[4] = {3 * f->width, 0, 0, 0};
    sws_scale(c->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, stride);
    return 0;
}

/* Send one packet (NULL = flush) and drain every frame it releases.
 * EAGAIN and EOF end the drain; they are not errors. */
static int decode_packet(AVCodecContext *dec, const AVPacket *pkt, AVFrame *frame, decode_ctx *c,
                         int rgb) {
    int ret = avcodec_send_packet(dec, pkt);
    if (ret < 0) return ret;
    for (;;) {
        ret = avcodec_receive_frame(dec, frame);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return 0;
        if (ret < 0) return ret;
        c->frames++;
        if (rgb) ret = to_rgb(c, frame);
        av_frame_unref(frame);
        if (ret < 0) return ret;
    }
}

/* Decodes the whole file once; returns the frame count or a negative
 * AVERROR. */
static long decode_file(const char *path, int threads, int rgb) {
    AVFormatContext *fmt = NULL;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = NULL;
    AVFrame *frame = NULL;
    decode_ctx c = {0};
    long ret;
    int si;

    if ((ret = avformat_open_input(&fmt, path, NULL, NULL)) < 0) goto done;
    if ((ret = avformat_find_stream_info(fmt, NULL)) < 0) goto done;
    const AVCodec *codec = NULL;
    if ((ret = si = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0)) < 0) goto done;
    dec = avcodec_alloc_context3(codec);
    pkt = av_packet_alloc();
    frame = av_frame_alloc();
    if (!dec || !pkt || !frame) {
        ret = AVERROR(ENOMEM);
        goto done;
    }
    if ((ret = avcodec_parameters_to_context(dec, fmt->streams[si]->codecpar)) < 0) goto done;
    dec->thread_count = threads;
    dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    if ((ret = avcodec_open2(dec, codec, NULL)) < 0) goto done;
    while ((ret = av_read_frame(fmt, pkt)) >= 0) {
        if (pkt->stream_index == si) ret = decode_packet(dec, pkt, frame, &c, rgb);
        av_packet_unref(pkt);
        if (ret < 0) goto done;
    }
    if (ret != AVERROR_EOF) goto done;
    if ((ret = decode_packet(dec, NULL, frame, &c, rgb)) < 0) goto done;
    ret = c.frames;
done:
    sws_freeContext(c.sws);
    free(c.rgb);
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    return ret;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int threads = 2, runs = 5, rgb = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rgb")) rgb = 1;
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            fprintf(stderr, "usage: decode_all CLIP [--threads N] [--runs R] [--rgb]\n");
            return 2;
        }
    }
    if (!path || runs < 1 || runs > BENCH_MAX_RUNS || threads < 0) {
        fprintf(stderr, "usage: decode_all CLIP [--threads N] [--runs 1..%d] [--rgb]\n",
                BENCH_MAX_RUNS);
        return 2;
    }
    av_log_set_level(AV_LOG_ERROR);
    double ms[BENCH_MAX_RUNS];
    long frames = 0;
    for (int r = -1; r < runs; r++) { /* r == -1: warm-up */
        double t0 = bench_now_ms();
        frames = decode_file(path, threads, rgb);
        double t1 = bench_now_ms();
        if (frames < 0) {
            char msg[256];
            av_strerror((int)frames, msg, sizeof msg);
            fprintf(stderr, "decode_all: %s: %s\n", path, msg);
            return 1;
        }
        if (r >= 0) ms[r] = t1 - t0;
    }
    printf("{\"case\":\"decode_all\",\"rgb\":%d,\"threads\":%d,\"frames\":%ld,", rgb, threads, frames);
    bench_print_runs(ms, runs);
    printf("}\n");
    return 0;
}
