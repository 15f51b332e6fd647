/* media/media.c — defaults and destructors of the media stage (media.h). */
#include "media/media.h"

#include <stdlib.h>
#include <string.h>

vidi_media_limits vidi_media_limits_default(void) {
    vidi_media_limits l;
    l.max_bytes = (int64_t)512 << 20;
    l.max_image_pixels = 178956970; /* Pillow's decompression-bomb error limit */
    l.max_side = 65500;
    l.max_video_seconds = 4.0 * 3600.0;
    l.max_frames = 768;
    l.timeout_seconds = 120.0;
    return l;
}

vidi_video_options vidi_video_options_default(void) {
    vidi_video_options o;
    o.fps = 2.0;
    o.nframes = 0;
    o.min_frames = 4;
    o.max_frames = 768;
    o.start_time = -1.0;
    o.end_time = -1.0;
    o.threads = 0;
    return o;
}

vidi_media_options vidi_media_options_default(void) {
    vidi_media_options o;
    o.min_pixels = 0;
    o.max_pixels = 0;
    o.total_pixels = 0;
    o.video = vidi_video_options_default();
    return o;
}

void vidi_image_free(vidi_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

void vidi_video_free(vidi_video *v) {
    if (!v) return;
    free(v->rgb);
    free(v->frame_indices);
    free(v->timestamps);
    memset(v, 0, sizeof *v);
}

void vidi_media_item_free(vidi_media_item *it) {
    if (!it) return;
    free(it->pixels);
    free(it->frame_indices);
    free(it->timestamps);
    memset(it, 0, sizeof *it);
}
