/* tests/fuzz/fuzz_media.c — libFuzzer target over the media stage's parsers.
 *
 * Each input is handed, as bytes in memory, to vidi_media_sniff,
 * vidi_image_decode and vidi_video_decode under tight limits (small pictures,
 * a few frames, a 2 s wall-clock budget), so that a slow path shows up as a
 * timeout and a large declared size as a refusal, never as an OOM. Any
 * answer is fine; a crash, a sanitizer report, a leak or a hang is a bug.
 *
 * Built only with clang and -DVIDI_FUZZ=ON (tests/fuzz/CMakeLists.txt).
 */
#include "media/media.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vidi_media_limits lim = vidi_media_limits_default();
    lim.max_bytes = 1 << 20;
    lim.max_image_pixels = 1 << 20; /* 1 Mpx */
    lim.max_side = 4096;
    lim.max_video_seconds = 600.0;
    lim.max_frames = 4;
    lim.timeout_seconds = 2.0;

    const char *kind = vidi_media_sniff(data, size);
    if (kind && strcmp(kind, "image") != 0 && strcmp(kind, "video") != 0) __builtin_trap();

    vidi_err err;
    vidi_image img;
    memset(&img, 0, sizeof img);
    vidi_err_clear(&err);
    if (vidi_image_decode(data, size, &lim, &img, &err) == VIDI_OK) {
        if (img.width <= 0 || img.height <= 0 || !img.rgb ||
            (int64_t)img.width * img.height > lim.max_image_pixels)
            __builtin_trap();
        /* touch every byte so a short buffer is an ASan report */
        volatile uint8_t acc = 0;
        size_t n = (size_t)img.width * (size_t)img.height * 3;
        for (size_t i = 0; i < n; i++) acc ^= img.rgb[i];
        (void)acc;
    } else if (err.msg[0] == '\0') {
        __builtin_trap(); /* a failure must say what was wrong */
    }
    vidi_image_free(&img);

    vidi_video_options opt = vidi_video_options_default();
    opt.nframes = 2;
    opt.max_frames = 4;
    opt.threads = 1;
    vidi_video vid;
    memset(&vid, 0, sizeof vid);
    vidi_err_clear(&err);
    if (vidi_video_decode(data, size, &opt, &lim, &vid, &err) == VIDI_OK) {
        if (vid.n_frames <= 0 || vid.n_frames > lim.max_frames || !vid.rgb ||
            (int64_t)vid.width * vid.height > lim.max_image_pixels)
            __builtin_trap();
        volatile uint8_t acc = 0;
        size_t n = (size_t)vid.n_frames * (size_t)vid.width * (size_t)vid.height * 3;
        for (size_t i = 0; i < n; i++) acc ^= vid.rgb[i];
        (void)acc;
    } else if (err.msg[0] == '\0') {
        __builtin_trap();
    }
    vidi_video_free(&vid);
    return 0;
}
