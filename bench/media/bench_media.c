/* bench/media/bench_media.c — vidi's side of the media benchmark.
 *
 *   bench_media --clip CLIP --jpeg JPEG [--threads N] [--runs R] [--nframes N]
 *
 * Cases (each: one warm-up run, then R timed runs, the median reported):
 *   vidi_sample_rgb      vidi_video_decode_file with nframes N: seek-based
 *                        decode of the chosen frames to RGB888
 *   vidi_sample_patches  read the clip + vidi_media_video_to_item: the same
 *                        frames through torchvision-equal resize, normalise
 *                        and patchify (video pixel defaults)
 *   vidi_jpeg_patches    read the JPEG + vidi_media_image_to_item (Qwen2-VL
 *                        preprocessor defaults: min 3136, max 12845056)
 * Prints one JSON line per case.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/media/bench_util.h"
#include "media/media.h"
#include "model/config.h"

typedef struct bench_args {
    const char *clip, *jpeg;
    int threads, runs, nframes;
    vidi_preproc_config pp;
    vidi_media_limits lim;
} bench_args;

static vidi_status run_sample_rgb(const bench_args *a, vidi_video *v, vidi_err *err) {
    vidi_video_options o = vidi_video_options_default();
    o.nframes = a->nframes;
    o.threads = a->threads;
    return vidi_video_decode_file(a->clip, &o, &a->lim, v, err);
}

static vidi_status run_to_item(const bench_args *a, int video, vidi_media_item *it, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    uint8_t *data = NULL;
    size_t size = 0;
    vidi_media_options o = vidi_media_options_default();
    o.video.nframes = a->nframes;
    o.video.threads = a->threads;
    VIDI_TRY(vidi_media_read_file(video ? a->clip : a->jpeg, NULL, 0, a->lim.max_bytes, &data, &size,
                                  err));
    if (video)
        VIDI_TRY(vidi_media_video_to_item(data, size, &a->pp, &o, &a->lim, it, err));
    else
        VIDI_TRY(vidi_media_image_to_item(data, size, &a->pp, &o, &a->lim, it, err));
fail:
    free(data);
    return rc;
}

/* case: 0 sample_rgb, 1 sample_patches, 2 jpeg_patches. */
static int bench_case(const bench_args *a, int which) {
    static const char *names[] = {"vidi_sample_rgb", "vidi_sample_patches", "vidi_jpeg_patches"};
    double ms[BENCH_MAX_RUNS];
    vidi_err err;
    for (int r = -1; r < a->runs; r++) { /* r == -1: warm-up */
        vidi_video v = {0};
        vidi_media_item it = {0};
        double t0 = bench_now_ms();
        vidi_status st = which == 0 ? run_sample_rgb(a, &v, &err) : run_to_item(a, which == 1, &it, &err);
        double t1 = bench_now_ms();
        if (st != VIDI_OK) {
            fprintf(stderr, "bench_media: %s: %s\n", names[which], err.msg);
            return 1;
        }
        if (r >= 0) ms[r] = t1 - t0;
        if (r == a->runs - 1) {
            printf("{\"case\":\"%s\",\"threads\":%d,", names[which], a->threads);
            if (which == 0)
                printf("\"frames\":%d,\"total_frames\":%lld,\"frames_decoded\":%lld,\"width\":%d,"
                       "\"height\":%d,", v.n_frames, (long long)v.total_frames,
                       (long long)v.frames_decoded, v.width, v.height);
            else
                printf("\"frames\":%d,\"grid\":[%d,%d,%d],\"rows\":%lld,\"cols\":%d,", it.n_frames,
                       it.grid[0], it.grid[1], it.grid[2], (long long)it.rows, it.cols);
            bench_print_runs(ms, a->runs);
            printf("}\n");
            fflush(stdout);
        }
        vidi_video_free(&v);
        vidi_media_item_free(&it);
    }
    return 0;
}

int main(int argc, char **argv) {
    bench_args a = {.threads = 2, .runs = 5, .nframes = 32};
    int n_cases = 3;
    if (argc > 1 && !strcmp(argv[argc - 1], "--sample-only")) { /* only the 32-frame sampling case */
        n_cases = 1;
        argc--;
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--clip")) a.clip = argv[i + 1];
        else if (!strcmp(argv[i], "--jpeg")) a.jpeg = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) a.threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) a.runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--nframes")) a.nframes = atoi(argv[i + 1]);
        else break;
    }
    if (!a.clip || !a.jpeg || a.runs < 1 || a.runs > BENCH_MAX_RUNS || a.threads < 0 ||
        a.nframes < 2) {
        fprintf(stderr, "usage: bench_media --clip CLIP --jpeg JPEG [--threads N] [--runs 1..%d] "
                        "[--nframes N>=2] [--sample-only]\n", BENCH_MAX_RUNS);
        return 2;
    }
    a.pp = vidi_preproc_config_default();
    a.lim = vidi_media_limits_default();
    for (int c = 0; c < n_cases; c++)
        if (bench_case(&a, c)) return 1;
    return 0;
}
