/* media/sniff.h — what a buffer holds, from its first bytes (internal to
 * media/; the public answer is vidi_media_sniff in media.h). */
#ifndef VIDI_MEDIA_SNIFF_H
#define VIDI_MEDIA_SNIFF_H

#include <stddef.h>
#include <stdint.h>

typedef enum vidi_media_format {
    VIDI_MEDIA_FORMAT_UNKNOWN = 0,
    /* images */
    VIDI_MEDIA_FORMAT_JPEG,
    VIDI_MEDIA_FORMAT_PNG,
    VIDI_MEDIA_FORMAT_GIF,
    VIDI_MEDIA_FORMAT_WEBP,
    VIDI_MEDIA_FORMAT_BMP,
    VIDI_MEDIA_FORMAT_TIFF,
    VIDI_MEDIA_FORMAT_AVIF, /* recognised, not decoded */
    VIDI_MEDIA_FORMAT_HEIC, /* recognised, not decoded */
    /* videos */
    VIDI_MEDIA_FORMAT_MP4,  /* ISO BMFF / QuickTime (mp4, mov, m4v, 3gp) */
    VIDI_MEDIA_FORMAT_MKV,  /* EBML: Matroska, WebM */
    VIDI_MEDIA_FORMAT_AVI,
    VIDI_MEDIA_FORMAT_MPEGTS,
    VIDI_MEDIA_FORMAT_MPEGPS,
    VIDI_MEDIA_FORMAT_FLV,
} vidi_media_format;

/* The format whose magic number starts data (never guessed from a name). */
vidi_media_format vidi_media_sniff_format(const uint8_t *data, size_t size);

/* "jpeg", "png", ..., "unknown". */
const char *vidi_media_format_name(vidi_media_format f);

/* 1 for the image formats (AVIF/HEIC included), 0 otherwise. */
int vidi_media_format_is_image(vidi_media_format f);

#endif
