/* tools/serve/frames.h — the two JSON answers of vidi-serve's video QA page
 * that are not chat: which frames the media stage samples from a video (as
 * thumbnails), and which sample files a folder offers.
 *
 * Plain functions over bytes and a folder: no HTTP here (serve.c routes
 * POST /v1/vidi/frames and GET /v1/vidi/samples to them). Link with
 * vidi_media, libturbojpeg and jansson.
 */
#ifndef VIDI_SERVE_FRAMES_H
#define VIDI_SERVE_FRAMES_H

#include <stddef.h>
#include <stdint.h>

/* Thumbnails: at most this many per video, each fitting in a box of
 * VIDI_SERVE_THUMB_SIDE x VIDI_SERVE_THUMB_SIDE pixels (never enlarged). */
#define VIDI_SERVE_MAX_THUMBS 64
#define VIDI_SERVE_THUMB_SIDE 160

/* The frames the media stage samples from a video (qwen-vl-utils rule,
 * media/media.h) as JSON:
 *   {"total_frames": int, "video_fps": num, "duration_s": num, "sample_fps": num,
 *    "width": int, "height": int,
 *    "frames": [{"index": int, "time_s": num, "jpeg": "<base64 JPEG thumbnail>"}]}
 * index is the frame's number in the stream, time_s its presentation time
 * (the first frame at 0). fps <= 0: the default (2.0); nframes > 0: exactly
 * that many (rounded to a multiple of 2, as the media stage does). When more
 * than VIDI_SERVE_MAX_THUMBS frames are sampled, that many are chosen evenly
 * among them (the first and the last included); total_frames and sample_fps
 * still describe every sampled frame.
 *
 * The video is decoded as the media stage decodes it (default limits), so
 * this costs what the media stage's decoding of the same request costs.
 *
 * Returns 0 with *json malloc'd (freed by the caller with free), or -1 with
 * *json NULL and a message in err (err_cap bytes, NUL-terminated) saying what
 * was wrong with the video: empty, not a video (an image says so), too long,
 * too many frames, corrupt, ... */
int vidi_serve_frames_json(const uint8_t *video, size_t size, double fps, int nframes, char **json,
                           char *err, size_t err_cap);

/* The sample files of a folder (regular files, symlinks followed, names not
 * starting with '.', UTF-8 names, extensions png jpg jpeg mp4 webm in any
 * case) as JSON
 *   {"samples": [{"name": "video_500016.mp4", "kind": "video"|"image", "bytes": int}]}
 * sorted by name (byte order). Subfolders are not entered. Returns 0 with
 * *json malloc'd (freed by the caller with free), or -1 with *json NULL and
 * a message in err when the folder cannot be read. */
int vidi_serve_samples_json(const char *dir, char **json, char *err, size_t err_cap);

#endif
