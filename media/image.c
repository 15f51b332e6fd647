/* media/image.c — still images from bytes to RGB888, equal to what the
 * reference makes of them.
 *
 * The reference is qwen-vl-utils' fetch_image: Pillow's Image.open, then
 * to_rgb, which composites mode "RGBA" on white with paste(mask=alpha) and
 * sends every other mode through convert("RGB"). So which alpha counts
 * depends on the mode Pillow gives the file, not on whether the file has
 * transparency: an RGBA PNG is composited, but an 8-bit gray+alpha PNG
 * (mode "LA"), a palette PNG or GIF with a transparent index (mode "P") and
 * an RGB PNG with tRNS keep their colour channels and drop the alpha.
 * Measured with Pillow 12.3 (tools/golden/image_fixtures.py pins each case):
 *
 *   JPEG       libjpeg-turbo ISLOW IDCT + fancy upsampling (Pillow's
 *              settings); CMYK/YCCK read as Adobe-inverted CMYK, then
 *              r = div255((255 - c) * (255 - k)) per channel
 *   PNG 16-bit RGB/RGBA: the high byte; 16-bit gray+alpha opens as RGBA
 *              (high bytes, composited); 16-bit gray opens as I;16, whose
 *              convert("RGB") clamps to 255 (not the high byte)
 *   TIFF 16-bit gray: I;16 as well (clamped)
 *   BMP 32-bit: the fourth byte is ignored (Pillow reads BGRX)
 *   WebP lossy: libwebp's fancy chroma upsampling and its 14-bit
 *              fixed-point YUV->RGB, restated here from measurements
 *   GIF        first frame; transparent pixels and the area outside the
 *              first frame take the palette colour of their index
 *
 * JPEG goes through TurboJPEG; PNG, WebP, BMP, GIF and TIFF through
 * libavcodec's image decoders, fed the whole file as one packet. The
 * declared size is read from the header and checked against the limits
 * before any pixel is decoded (and libavcodec's own max_pixels guards the
 * allocation as a second line).
 */
#include "media/media.h"
#include "media/sniff.h"

#include <libavcodec/avcodec.h>
#include <libavutil/crc.h>
#include <libavutil/error.h>
#include <libavutil/pixdesc.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

/* ---------------------------------------------------------------- helpers */

static uint32_t rd_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t rd_le32(const uint8_t *p) {
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static unsigned rd_le16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
static unsigned rd_be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static uint32_t rd_le24(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16; }

/* x / 255 rounded, for 0 <= x <= 255*255, as Pillow's DIV255 computes it. */
static inline uint8_t div255(uint32_t x) {
    x += 128;
    return (uint8_t)((x + (x >> 8)) >> 8);
}

/* Pillow's paste(im, mask=alpha) onto white: blend(255, v, a). */
static inline uint8_t on_white(uint32_t v, uint32_t a) { return div255(255u * (255u - a) + v * a); }

/* Checks a declared size against the limits; `what` names the format. */
static vidi_status check_size(const char *what, int64_t w, int64_t h, const vidi_media_limits *lim,
                              vidi_err *err) {
    if (w <= 0 || h <= 0)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s header declares an empty image (%lldx%lld)", what,
                            (long long)w, (long long)h);
    if (lim->max_side > 0 && (w > lim->max_side || h > lim->max_side))
        return vidi_err_set(err, VIDI_ERR_RANGE,
                            "%s image declares %lldx%lld pixels; a side is above the limit of %d "
                            "(max_side); refused before decoding",
                            what, (long long)w, (long long)h, lim->max_side);
    if (lim->max_image_pixels > 0 && w * h > lim->max_image_pixels)
        return vidi_err_set(err, VIDI_ERR_RANGE,
                            "%s image declares %lldx%lld = %lld pixels, above the limit of %lld pixels "
                            "(max_image_pixels); refused before decoding",
                            what, (long long)w, (long long)h, (long long)(w * h),
                            (long long)lim->max_image_pixels);
    return VIDI_OK;
}

static vidi_status alloc_rgb(vidi_image *out, int w, int h, vidi_err *err) {
    out->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!out->rgb) return vidi_err_set(err, VIDI_ERR_NOMEM, "out of memory for a %dx%d image", w, h);
    out->width = w;
    out->height = h;
    return VIDI_OK;
}

/* ---------------------------------------------------------------- JPEG */

static vidi_status decode_jpeg(const uint8_t *data, size_t size, const vidi_media_limits *lim,
                               vidi_image *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    uint8_t *cmyk = NULL;
    tjhandle tj = tjInitDecompress();
    VIDI_CHECK(tj, err, VIDI_ERR_NOMEM, "cannot create a TurboJPEG decompressor");
    VIDI_CHECK(size <= (size_t)0xFFFFFFFFu, err, VIDI_ERR_RANGE, "JPEG of %zu bytes is too large", size);

    int w = 0, h = 0, subsamp = 0, cs = 0;
    VIDI_CHECK(tjDecompressHeader3(tj, data, (unsigned long)size, &w, &h, &subsamp, &cs) == 0, err,
               VIDI_ERR_FORMAT, "not a readable JPEG header: %s", tjGetErrorStr2(tj));
    VIDI_TRY(check_size("JPEG", w, h, lim, err));
    VIDI_TRY(alloc_rgb(out, w, h, err));

    /* Pillow's settings: ISLOW IDCT, fancy upsampling (TurboJPEG's default) */
    int flags = TJFLAG_ACCURATEDCT;
#ifdef TJFLAG_LIMITSCANS
    flags |= TJFLAG_LIMITSCANS; /* a progressive JPEG with >500 scans is an attack */
#endif
    int is_cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    uint8_t *dst = out->rgb;
    int pf = TJPF_RGB;
    if (is_cmyk) {
        cmyk = malloc((size_t)w * (size_t)h * 4);
        VIDI_CHECK(cmyk, err, VIDI_ERR_NOMEM, "out of memory for a %dx%d CMYK JPEG", w, h);
        dst = cmyk;
        pf = TJPF_CMYK;
    }
    if (tjDecompress2(tj, data, (unsigned long)size, dst, w, 0, h, pf, flags) != 0) {
        /* Warnings (extraneous bytes, ...) leave a complete picture and
         * Pillow accepts them; a file that ends early it refuses. */
        const char *msg = tjGetErrorStr2(tj);
        VIDI_CHECK(tjGetErrorCode(tj) == TJERR_WARNING, err, VIDI_ERR_FORMAT, "cannot decode JPEG: %s", msg);
        VIDI_CHECK(!strstr(msg, "Premature end"), err, VIDI_ERR_FORMAT, "truncated JPEG: %s", msg);
    }
    if (is_cmyk) {
        /* Stored values are Adobe-inverted: Pillow's c = 255 - stored, and
         * its CMYK->RGB is div255((255 - c) * (255 - k)). */
        size_t n = (size_t)w * (size_t)h;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *p = cmyk + 4 * i;
            uint32_t k = p[3];
            out->rgb[3 * i + 0] = div255(p[0] * k);
            out->rgb[3 * i + 1] = div255(p[1] * k);
            out->rgb[3 * i + 2] = div255(p[2] * k);
        }
    }
fail:
    free(cmyk);
    if (tj) tjDestroy(tj);
    return rc;
}

/* ---------------------------------------------------------------- headers */

/* How to turn the decoder's pixels into what Pillow + to_rgb give. */
typedef struct img_rule {
    int64_t w, h;         /* declared size */
    int composite;        /* Pillow mode is RGBA: composite alpha on white */
    int gray16_clamp;     /* Pillow mode is I;16: convert("RGB") clamps */
    /* GIF: first frame rectangle, palette and transparent index */
    int gif_x, gif_y, gif_w, gif_h;
    int gif_trns;         /* -1 = none */
    const uint8_t *gif_pal;
    int gif_pal_n;
    uint64_t min_size;    /* BMP: bytes the header's uncompressed rows need */
    int has_key;          /* the reference's leftover colour key (vidi_image) */
    uint8_t key[3];
} img_rule;

static void set_key(img_rule *r, unsigned a, unsigned b, unsigned c) {
    r->has_key = 1;
    r->key[0] = (uint8_t)a, r->key[1] = (uint8_t)b, r->key[2] = (uint8_t)c;
}

/* Pillow's colour key after to_rgb (measured with Pillow 12.3 and checked
 * through transformers' convert_to_rgb):
 *   mode P, one index i fully transparent and every other entry opaque
 *           (PNG tRNS of 0xff..0x00..0xff; GIF transparent index): the
 *           palette colour of i, (0,0,0) past the palette's end; any other
 *           PNG tRNS (partial alphas, none zero, two zeros) is dropped
 *   mode L  (PNG gray 2/4/8-bit; GIF whose palette is absent or the
 *           identity grey ramp): the raw value v (not scaled to the bit
 *           depth), min(v, 255) on all three channels
 *   mode 1 and I;16 (PNG gray 1-bit and 16-bit): convert("RGB") keeps the
 *           int, which RGB->RGBA reads as (v & 255, 0, 0); mode 1 stores
 *           v as 255 if the tRNS value is non-zero else 0
 *   mode RGB (PNG RGB 8/16-bit): the low byte of each 16-bit sample
 *   mode RGBA / LA and every other format: no key. */
static void png_key(const uint8_t *d, size_t n, int depth, int ctype, img_rule *r) {
    const uint8_t *plte = NULL, *trns = NULL;
    size_t plte_n = 0, trns_n = 0;
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = rd_be32(d + off);
        const uint8_t *type = d + off + 4;
        if (len > n - off - 12) break;
        if (memcmp(type, "IDAT", 4) == 0 || memcmp(type, "IEND", 4) == 0) break;
        if (memcmp(type, "PLTE", 4) == 0) plte = d + off + 8, plte_n = len;
        if (memcmp(type, "tRNS", 4) == 0) trns = d + off + 8, trns_n = len; /* the last one counts */
        off += 12 + (size_t)len;
    }
    r->has_key = 0;
    if (!trns) return;
    if (ctype == 3) {
        /* ^\xff*\x00\xff*$ */
        size_t zeros = 0, idx = 0, other = 0;
        for (size_t i = 0; i < trns_n; i++) {
            if (trns[i] == 0) zeros++, idx = i;
            else if (trns[i] != 0xff) other++;
        }
        if (zeros != 1 || other) return;
        if (plte && idx < plte_n / 3) set_key(r, plte[3 * idx], plte[3 * idx + 1], plte[3 * idx + 2]);
        else set_key(r, 0, 0, 0);
    } else if (ctype == 0 && trns_n >= 2) {
        unsigned v = rd_be16(trns);
        if (depth == 1) set_key(r, v ? 255 : 0, 0, 0);
        else if (depth == 16) set_key(r, v & 255, 0, 0);
        else if (v > 255) set_key(r, 255, 255, 255);
        else set_key(r, v, v, v);
    } else if (ctype == 2 && trns_n >= 6) {
        set_key(r, rd_be16(trns) & 255, rd_be16(trns + 2) & 255, rd_be16(trns + 4) & 255);
    }
}

/* Pillow verifies the CRC of every chunk it reads while opening a PNG (all
 * chunks before the first IDAT) and refuses the file on a mismatch; so do
 * we. A chunk running past the end is left to the decoder's own check. */
static vidi_status png_check_crcs(const uint8_t *d, size_t n, vidi_err *err) {
    const AVCRC *table = av_crc_get_table(AV_CRC_32_IEEE_LE);
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = rd_be32(d + off);
        const uint8_t *type = d + off + 4;
        if (!memcmp(type, "IDAT", 4) || !memcmp(type, "IEND", 4)) break;
        if (len > n - off - 12) break;
        uint32_t stored = rd_be32(d + off + 8 + len);
        uint32_t computed = av_crc(table, 0xFFFFFFFFu, type, (size_t)len + 4) ^ 0xFFFFFFFFu;
        if (stored != computed)
            return vidi_err_set(err, VIDI_ERR_FORMAT,
                                "corrupt PNG: chunk '%.4s' at byte %zu has a bad crc (stored %08x, computed %08x)",
                                (const char *)type, off, stored, computed);
        off += (size_t)len + 12;
    }
    return VIDI_OK;
}

static vidi_status png_header(const uint8_t *d, size_t n, img_rule *r, vidi_err *err) {
    if (n < 8 + 8 + 13 || memcmp(d + 12, "IHDR", 4) != 0)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "PNG without an IHDR chunk (truncated or corrupt header)");
    vidi_status rc = png_check_crcs(d, n, err);
    if (rc != VIDI_OK) return rc;
    r->w = rd_be32(d + 16);
    r->h = rd_be32(d + 20);
    int depth = d[24], ctype = d[25];
    r->composite = ctype == 6 || (ctype == 4 && depth == 16);
    r->gray16_clamp = ctype == 0 && depth == 16;
    png_key(d, n, depth, ctype, r);
    return VIDI_OK;
}

static vidi_status bmp_header(const uint8_t *d, size_t n, img_rule *r, vidi_err *err) {
    if (n < 26) return vidi_err_set(err, VIDI_ERR_FORMAT, "BMP header truncated (%zu bytes)", n);
    uint32_t hdr = rd_le32(d + 14);
    if (hdr == 12) {
        r->w = rd_le16(d + 18);
        r->h = rd_le16(d + 20);
    } else {
        r->w = (int32_t)rd_le32(d + 18);
        r->h = (int32_t)rd_le32(d + 22);
        if (r->h < 0) r->h = -r->h; /* top-down */
    }
    /* Pillow keeps the 4th byte only when a bitfields header names an alpha mask */
    uint32_t comp = n >= 34 && hdr >= 40 ? rd_le32(d + 30) : 0;
    unsigned bpp = hdr == 12 ? rd_le16(d + 24) : n >= 30 ? rd_le16(d + 28) : 0;
    if ((comp == 0 || comp == 3 || comp == 6) && bpp > 0 && bpp <= 32 && r->w > 0 && r->h > 0) {
        uint64_t row = ((uint64_t)r->w * bpp + 31) / 32 * 4;
        uint64_t need = (uint64_t)rd_le32(d + 10) + row * (uint64_t)r->h;
        r->min_size = need; /* checked after the limits */
    }
    r->composite = (comp == 3 || comp == 6) && hdr >= 56 && n >= 70 && rd_le32(d + 66) != 0;
    return VIDI_OK;
}

static vidi_status webp_header(const uint8_t *d, size_t n, img_rule *r, vidi_err *err) {
    r->composite = 1; /* Pillow: RGBA when the file has alpha; opaque alpha composites to itself */
    if (n >= 30 && memcmp(d + 12, "VP8 ", 4) == 0 && d[23] == 0x9d && d[24] == 0x01 && d[25] == 0x2a) {
        r->w = rd_le16(d + 26) & 0x3fff;
        r->h = rd_le16(d + 28) & 0x3fff;
        return VIDI_OK;
    }
    if (n >= 25 && memcmp(d + 12, "VP8L", 4) == 0 && d[20] == 0x2f) {
        uint32_t bits = rd_le32(d + 21);
        r->w = (bits & 0x3fff) + 1;
        r->h = ((bits >> 14) & 0x3fff) + 1;
        return VIDI_OK;
    }
    if (n >= 30 && memcmp(d + 12, "VP8X", 4) == 0) {
        r->w = (int64_t)rd_le24(d + 24) + 1;
        r->h = (int64_t)rd_le24(d + 27) + 1;
        if (d[20] & 0x02)
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                                "animated WebP (%lldx%lld) is not supported (libavcodec's WebP decoder "
                                "reads still images only); send its first frame as PNG or JPEG",
                                (long long)r->w, (long long)r->h);
        return VIDI_OK;
    }
    return vidi_err_set(err, VIDI_ERR_FORMAT, "WebP without a readable VP8/VP8L/VP8X header");
}

static vidi_status tiff_header(const uint8_t *d, size_t n, img_rule *r, vidi_err *err) {
    int be = d[0] == 'M';
    r->composite = 1;
    r->gray16_clamp = 1;
    if (n < 8) return vidi_err_set(err, VIDI_ERR_FORMAT, "TIFF header truncated");
    uint32_t ifd = be ? rd_be32(d + 4) : rd_le32(d + 4);
    if ((uint64_t)ifd + 2 > n) return vidi_err_set(err, VIDI_ERR_FORMAT, "TIFF first IFD at %u lies past the end (%zu bytes)", ifd, n);
    unsigned count = be ? rd_be16(d + ifd) : rd_le16(d + ifd);
    r->w = r->h = -1;
    for (unsigned i = 0; i < count; i++) {
        uint64_t e = (uint64_t)ifd + 2 + 12 * (uint64_t)i;
        if (e + 12 > n) break;
        const uint8_t *p = d + e;
        unsigned tag = be ? rd_be16(p) : rd_le16(p), type = be ? rd_be16(p + 2) : rd_le16(p + 2);
        int64_t v = type == 3 ? (int64_t)(be ? rd_be16(p + 8) : rd_le16(p + 8))
                  : type == 4 ? (int64_t)(be ? rd_be32(p + 8) : rd_le32(p + 8)) : -1;
        if (tag == 256) r->w = v;
        if (tag == 257) r->h = v;
    }
    if (r->w < 0 || r->h < 0)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "TIFF first IFD has no readable ImageWidth/ImageLength");
    return VIDI_OK;
}

/* The key of a GIF's first frame (transparent index t, the frame's palette:
 * local if it has one, else global). Pillow opens it as mode L when that
 * palette is absent or the identity grey ramp, else as P. */
static void gif_key(img_rule *r, const uint8_t *pal, int pal_n) {
    int t = r->gif_trns, ramp = 1;
    for (int i = 0; pal && i < pal_n && ramp; i++)
        ramp = pal[3 * i] == i && pal[3 * i + 1] == i && pal[3 * i + 2] == i;
    if (!pal || ramp) set_key(r, (unsigned)t, (unsigned)t, (unsigned)t);
    else if (t < pal_n) set_key(r, pal[3 * t], pal[3 * t + 1], pal[3 * t + 2]);
    else set_key(r, 0, 0, 0);
}

/* Walks a GIF to its first image: screen size, palette, transparent index. */
static vidi_status gif_header(const uint8_t *d, size_t n, img_rule *r, vidi_err *err) {
    if (n < 13) return vidi_err_set(err, VIDI_ERR_FORMAT, "GIF header truncated");
    r->w = rd_le16(d + 6);
    r->h = rd_le16(d + 8);
    r->gif_trns = -1;
    size_t off = 13;
    const uint8_t *global = NULL;
    int global_n = 0;
    if (d[10] & 0x80) {
        r->gif_pal_n = 2 << (d[10] & 7);
        r->gif_pal = d + off;
        off += 3 * (size_t)r->gif_pal_n;
        global = r->gif_pal, global_n = r->gif_pal_n;
    }
    while (off < n) {
        uint8_t b = d[off];
        if (b == 0x21) { /* extension: label, then sub-blocks */
            if (off + 2 > n) break;
            /* as Pillow: a graphic control extension without the flag
             * leaves an earlier transparent index in place */
            if (d[off + 1] == 0xF9 && off + 7 <= n && d[off + 2] >= 4 && (d[off + 3] & 1))
                r->gif_trns = d[off + 6];
            off += 2;
            while (off < n && d[off] != 0) off += 1 + (size_t)d[off];
            off++;
        } else if (b == 0x2C) { /* image descriptor */
            if (off + 10 > n) break;
            r->gif_x = (int)rd_le16(d + off + 1);
            r->gif_y = (int)rd_le16(d + off + 3);
            r->gif_w = (int)rd_le16(d + off + 5);
            r->gif_h = (int)rd_le16(d + off + 7);
            uint8_t fl = d[off + 9];
            off += 10;
            if (fl & 0x80) {
                r->gif_pal_n = 2 << (fl & 7);
                r->gif_pal = d + off;
                off += 3 * (size_t)r->gif_pal_n;
            }
            /* LZW code size, then sub-blocks up to a 0 terminator: a first
             * frame cut short is refused (Pillow: "image file is truncated";
             * libavcodec would fill the rest silently) */
            off++;
            while (off < n && d[off] != 0) off += 1 + (size_t)d[off];
            if (off >= n)
                return vidi_err_set(err, VIDI_ERR_FORMAT, "truncated GIF: the first frame's data ends early");
            if (r->gif_trns >= 0) gif_key(r, (fl & 0x80) ? r->gif_pal : global, (fl & 0x80) ? r->gif_pal_n : global_n);
            return VIDI_OK;
        } else {
            break; /* trailer or junk before any image */
        }
    }
    return vidi_err_set(err, VIDI_ERR_FORMAT, "GIF has no image (truncated or corrupt before the first frame)");
}

/* ---------------------------------------------------------------- libavcodec */

static const char *upper_name(vidi_media_format f) {
    switch (f) {
    case VIDI_MEDIA_FORMAT_PNG: return "PNG";
    case VIDI_MEDIA_FORMAT_GIF: return "GIF";
    case VIDI_MEDIA_FORMAT_WEBP: return "WebP";
    case VIDI_MEDIA_FORMAT_BMP: return "BMP";
    case VIDI_MEDIA_FORMAT_TIFF: return "TIFF";
    default: return vidi_media_format_name(f);
    }
}


static vidi_status av_fail(vidi_err *err, vidi_status st, const char *what, const char *fmt, int ret) {
    char buf[AV_ERROR_MAX_STRING_SIZE];
    av_strerror(ret, buf, sizeof buf);
    return vidi_err_set(err, st, "%s: %s (%s)", fmt, what, buf);
}

/* One packet in, the first frame out. */
static vidi_status av_decode_one(enum AVCodecID id, const char *name, const uint8_t *data, size_t size,
                                 const vidi_media_limits *lim, AVFrame *frame, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    AVCodecContext *ctx = NULL;
    AVPacket *pkt = NULL;
    int ret;
    const AVCodec *codec = avcodec_find_decoder(id);
    VIDI_CHECK(codec, err, VIDI_ERR_UNSUPPORTED, "this FFmpeg has no %s decoder", name);
    VIDI_CHECK(size <= (size_t)INT32_MAX - AV_INPUT_BUFFER_PADDING_SIZE, err, VIDI_ERR_RANGE,
               "%s of %zu bytes is too large", name, size);
    ctx = avcodec_alloc_context3(codec);
    pkt = av_packet_alloc();
    VIDI_CHECK(ctx && pkt, err, VIDI_ERR_NOMEM, "out of memory setting up the %s decoder", name);
    ctx->thread_count = 1;
    if (lim->max_image_pixels > 0) ctx->max_pixels = lim->max_image_pixels;
    ret = avcodec_open2(ctx, codec, NULL);
    if (ret < 0) {
        rc = av_fail(err, VIDI_ERR_INTERNAL, "cannot open the decoder", name, ret);
        goto fail;
    }
    VIDI_CHECK(av_new_packet(pkt, (int)size) == 0, err, VIDI_ERR_NOMEM, "out of memory for a %s packet",
               name);
    memcpy(pkt->data, data, size);
    pkt->flags |= AV_PKT_FLAG_KEY;
    ret = avcodec_send_packet(ctx, pkt);
    if (ret < 0 && ret != AVERROR(EAGAIN)) {
        rc = av_fail(err, VIDI_ERR_FORMAT, "cannot decode (corrupt or truncated file)", name, ret);
        goto fail;
    }
    ret = avcodec_receive_frame(ctx, frame);
    if (ret == AVERROR(EAGAIN)) { /* drain: no more input */
        avcodec_send_packet(ctx, NULL);
        ret = avcodec_receive_frame(ctx, frame);
    }
    if (ret < 0) {
        rc = av_fail(err, VIDI_ERR_FORMAT,
                     ret == AVERROR_EOF ? "no picture in the file" : "cannot decode (corrupt or truncated file)",
                     name, ret);
        goto fail;
    }
fail:
    av_packet_free(&pkt);
    avcodec_free_context(&ctx);
    return rc;
}

/* libwebp's "fancy" chroma upsampling of one plane to full size (what
 * Pillow's WebP decoding does): each output takes ~9/16 of its nearest
 * chroma sample, 3/16 of each neighbour and 1/16 of the diagonal, with
 * libwebp's exact rounding; edge columns blend vertically only. */
static void webp_upsample(const uint8_t *c, int cstride, int cw, int ch, int w, int h, uint8_t *dst) {
    for (int y = 0; y < h; y++) {
        int near_row, far_row;
        if (y == 0) {
            near_row = far_row = 0;
        } else if (y & 1) {
            near_row = (y - 1) / 2;
            far_row = (y + 1) / 2 < ch ? (y + 1) / 2 : near_row;
        } else {
            near_row = y / 2;
            far_row = y / 2 - 1;
        }
        const uint8_t *nr = c + (size_t)near_row * cstride, *fr = c + (size_t)far_row * cstride;
        uint8_t *o = dst + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            if (x == 0 || (x == w - 1 && !(w & 1))) {
                int k = x / 2;
                o[x] = (uint8_t)((3 * nr[k] + fr[k] + 2) >> 2);
                continue;
            }
            int a = (x & 1) ? (x - 1) / 2 : x / 2; /* nearest chroma column */
            int b = (x & 1) ? (x + 1) / 2 : x / 2 - 1;
            if (b >= cw) b = cw - 1;
            unsigned A = nr[a], B = nr[b], C = fr[a], D = fr[b];
            unsigned diag = (A + B + C + D + 8 + 2 * (B + C)) >> 3;
            o[x] = (uint8_t)((diag + A) >> 1);
        }
    }
}

static inline uint8_t webp_clip(int v) { return (v & ~16383) == 0 ? (uint8_t)(v >> 6) : v < 0 ? 0 : 255; }

static vidi_status webp_yuv_to_rgb(const AVFrame *f, uint8_t *rgb, vidi_err *err) {
    int w = f->width, h = f->height, cw = (w + 1) / 2, ch = (h + 1) / 2;
    uint8_t *u = malloc((size_t)w * h), *v = malloc((size_t)w * h);
    if (!u || !v) {
        free(u);
        free(v);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "out of memory converting a %dx%d WebP", w, h);
    }
    webp_upsample(f->data[1], f->linesize[1], cw, ch, w, h, u);
    webp_upsample(f->data[2], f->linesize[2], cw, ch, w, h, v);
    for (int y = 0; y < h; y++) {
        const uint8_t *yr = f->data[0] + (size_t)y * f->linesize[0];
        const uint8_t *ar = f->format == AV_PIX_FMT_YUVA420P ? f->data[3] + (size_t)y * f->linesize[3] : NULL;
        for (int x = 0; x < w; x++) {
            int Y = (yr[x] * 19077) >> 8, U = u[(size_t)y * w + x], V = v[(size_t)y * w + x];
            uint8_t *o = rgb + ((size_t)y * w + x) * 3;
            o[0] = webp_clip(Y + ((V * 26149) >> 8) - 14234);
            o[1] = webp_clip(Y - ((U * 6419) >> 8) - ((V * 13320) >> 8) + 8708);
            o[2] = webp_clip(Y + ((U * 33050) >> 8) - 17685);
            if (ar)
                for (int c = 0; c < 3; c++) o[c] = on_white(o[c], ar[x]);
        }
    }
    free(u);
    free(v);
    return VIDI_OK;
}

/* The decoder's frame -> RGB888 under the rule (see the file comment). */
static vidi_status frame_to_rgb(const AVFrame *f, vidi_media_format fmt, const img_rule *r, uint8_t *rgb,
                                vidi_err *err) {
    int w = f->width, h = f->height;
    enum AVPixelFormat pf = f->format;
    if (pf == AV_PIX_FMT_YUV420P || pf == AV_PIX_FMT_YUVA420P) {
        if (fmt != VIDI_MEDIA_FORMAT_WEBP)
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s decoded to YUV; only WebP's YUV is converted",
                                upper_name(fmt));
        return webp_yuv_to_rgb(f, rgb, err);
    }
    /* byte offsets of r, g, b, a in 4-byte layouts; a < 0 = padding */
    int ro = 0, go = 1, bo = 2, ao = -1, bpp = 3, be16 = 0;
    enum { K_BYTES, K_GRAY8, K_YA8, K_GRAY16, K_YA16, K_RGB16, K_PAL8, K_MONO } kind = K_BYTES;
    switch (pf) {
    case AV_PIX_FMT_RGB24: break;
    case AV_PIX_FMT_BGR24: ro = 2, bo = 0; break;
    case AV_PIX_FMT_RGBA: bpp = 4, ao = 3; break;
    case AV_PIX_FMT_BGRA: bpp = 4, ro = 2, bo = 0, ao = 3; break;
    case AV_PIX_FMT_ARGB: bpp = 4, ao = 0, ro = 1, go = 2, bo = 3; break;
    case AV_PIX_FMT_ABGR: bpp = 4, ao = 0, ro = 3, go = 2, bo = 1; break;
    case AV_PIX_FMT_RGB0: bpp = 4; break;
    case AV_PIX_FMT_BGR0: bpp = 4, ro = 2, bo = 0; break;
    case AV_PIX_FMT_0RGB: bpp = 4, ro = 1, go = 2, bo = 3; break;
    case AV_PIX_FMT_0BGR: bpp = 4, ro = 3, go = 2, bo = 1; break;
    case AV_PIX_FMT_GRAY8: kind = K_GRAY8; break;
    case AV_PIX_FMT_YA8: kind = K_YA8; break;
    case AV_PIX_FMT_GRAY16BE: kind = K_GRAY16, be16 = 1; break;
    case AV_PIX_FMT_GRAY16LE: kind = K_GRAY16; break;
    case AV_PIX_FMT_YA16BE: kind = K_YA16, be16 = 1; break;
    case AV_PIX_FMT_YA16LE: kind = K_YA16; break;
    case AV_PIX_FMT_RGB48BE: kind = K_RGB16, be16 = 1, bpp = 6; break;
    case AV_PIX_FMT_RGB48LE: kind = K_RGB16, bpp = 6; break;
    case AV_PIX_FMT_RGBA64BE: kind = K_RGB16, be16 = 1, bpp = 8, ao = 3; break;
    case AV_PIX_FMT_RGBA64LE: kind = K_RGB16, bpp = 8, ao = 3; break;
    case AV_PIX_FMT_PAL8: kind = K_PAL8; break;
    case AV_PIX_FMT_MONOBLACK:
    case AV_PIX_FMT_MONOWHITE: kind = K_MONO; break;
    default: {
        const char *pn = av_get_pix_fmt_name(pf);
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s image in pixel format %s is not supported",
                            upper_name(fmt), pn ? pn : "?");
    }
    }
    int composite = r->composite && (ao >= 0 || kind == K_YA16);
    for (int y = 0; y < h; y++) {
        const uint8_t *s = f->data[0] + (size_t)y * f->linesize[0];
        uint8_t *o = rgb + (size_t)y * w * 3;
        for (int x = 0; x < w; x++, o += 3) {
            unsigned R, G, B, A = 255;
            switch (kind) {
            case K_BYTES: {
                const uint8_t *p = s + (size_t)x * bpp;
                R = p[ro], G = p[go], B = p[bo];
                if (ao >= 0) A = p[ao];
                break;
            }
            case K_GRAY8: R = G = B = s[x]; break;
            case K_YA8: R = G = B = s[2 * x]; break; /* Pillow "LA" -> RGB drops alpha */
            case K_GRAY16:
            case K_YA16: {
                const uint8_t *p = s + (size_t)x * (kind == K_YA16 ? 4 : 2);
                unsigned g = be16 ? rd_be16(p) : rd_le16(p);
                if (composite) { /* Pillow opens 16-bit LA as RGBA (high bytes) */
                    R = G = B = g >> 8;
                    A = (be16 ? rd_be16(p + 2) : rd_le16(p + 2)) >> 8;
                } else {
                    R = G = B = r->gray16_clamp ? (g > 255 ? 255 : g) : g >> 8;
                }
                break;
            }
            case K_RGB16: {
                const uint8_t *p = s + (size_t)x * bpp;
                R = p[be16 ? 0 : 1], G = p[be16 ? 2 : 3], B = p[be16 ? 4 : 5];
                if (ao >= 0) A = p[be16 ? 6 : 7];
                break;
            }
            case K_PAL8: { /* Pillow "P" -> RGB ignores the palette's alpha */
                uint32_t c = ((const uint32_t *)f->data[1])[s[x]];
                R = (c >> 16) & 255, G = (c >> 8) & 255, B = c & 255;
                break;
            }
            case K_MONO: {
                int bit = (s[x >> 3] >> (7 - (x & 7))) & 1;
                R = G = B = (bit ^ (pf == AV_PIX_FMT_MONOWHITE)) ? 255 : 0;
                break;
            }
            default: R = G = B = 0; break;
            }
            if (composite) {
                o[0] = on_white(R, A), o[1] = on_white(G, A), o[2] = on_white(B, A);
            } else {
                o[0] = (uint8_t)R, o[1] = (uint8_t)G, o[2] = (uint8_t)B;
            }
        }
    }
    return VIDI_OK;
}

/* libavcodec's GIF decoder gives BGRA with transparent pixels blanked;
 * Pillow keeps the palette index, so those pixels (and any canvas outside
 * the first frame, which Pillow fills with the transparent index or 0) take
 * their palette colour. */
static void gif_fixup(const AVFrame *f, const img_rule *r, uint8_t *rgb) {
    if (!r->gif_pal) return;
    int fill = r->gif_trns >= 0 ? r->gif_trns : 0;
    for (int y = 0; y < f->height; y++) {
        const uint8_t *s = f->data[0] + (size_t)y * f->linesize[0];
        for (int x = 0; x < f->width; x++) {
            int inside = x >= r->gif_x && x < r->gif_x + r->gif_w && y >= r->gif_y && y < r->gif_y + r->gif_h;
            int idx = -1;
            if (!inside) idx = fill;
            else if (r->gif_trns >= 0 && s[4 * x + 3] == 0) idx = r->gif_trns;
            if (idx < 0 || idx >= r->gif_pal_n) continue;
            memcpy(rgb + ((size_t)y * f->width + x) * 3, r->gif_pal + 3 * idx, 3);
        }
    }
}

static vidi_status decode_libav(vidi_media_format fmt, const uint8_t *data, size_t size,
                                const vidi_media_limits *lim, vidi_image *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    AVFrame *frame = NULL;
    img_rule r;
    memset(&r, 0, sizeof r);
    enum AVCodecID id = AV_CODEC_ID_NONE;
    const char *name = upper_name(fmt);
    switch (fmt) {
    case VIDI_MEDIA_FORMAT_PNG: VIDI_TRY(png_header(data, size, &r, err)); id = AV_CODEC_ID_PNG; break;
    case VIDI_MEDIA_FORMAT_GIF: VIDI_TRY(gif_header(data, size, &r, err)); id = AV_CODEC_ID_GIF; break;
    case VIDI_MEDIA_FORMAT_WEBP: VIDI_TRY(webp_header(data, size, &r, err)); id = AV_CODEC_ID_WEBP; break;
    case VIDI_MEDIA_FORMAT_BMP: VIDI_TRY(bmp_header(data, size, &r, err)); id = AV_CODEC_ID_BMP; break;
    case VIDI_MEDIA_FORMAT_TIFF: VIDI_TRY(tiff_header(data, size, &r, err)); id = AV_CODEC_ID_TIFF; break;
    default: VIDI_CHECK(0, err, VIDI_ERR_INTERNAL, "decode_libav: format %s", name);
    }
    VIDI_TRY(check_size(name, r.w, r.h, lim, err));
    /* a BMP cut short is refused, as Pillow does (libavcodec would decode
     * the part that is there) */
    VIDI_CHECK(r.min_size <= size, err, VIDI_ERR_FORMAT, "truncated BMP: %zu bytes, the header needs %llu",
               size, (unsigned long long)r.min_size);

    frame = av_frame_alloc();
    VIDI_CHECK(frame, err, VIDI_ERR_NOMEM, "out of memory for a frame");
    VIDI_TRY(av_decode_one(id, name, data, size, lim, frame, err));
    VIDI_TRY(check_size(name, frame->width, frame->height, lim, err));
    VIDI_TRY(alloc_rgb(out, frame->width, frame->height, err));
    VIDI_TRY(frame_to_rgb(frame, fmt, &r, out->rgb, err));
    if (fmt == VIDI_MEDIA_FORMAT_GIF && frame->format == AV_PIX_FMT_BGRA) gif_fixup(frame, &r, out->rgb);
    out->has_color_key = r.has_key;
    memcpy(out->color_key, r.key, 3);
fail:
    av_frame_free(&frame);
    return rc;
}

/* ---------------------------------------------------------------- entry */

vidi_status vidi_image_decode(const uint8_t *data, size_t size, const vidi_media_limits *limits,
                              vidi_image *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_media_limits lim = limits ? *limits : vidi_media_limits_default();
    VIDI_CHECK(out, err, VIDI_ERR_INVALID, "vidi_image_decode: NULL output");
    memset(out, 0, sizeof *out);
    VIDI_CHECK(data || size == 0, err, VIDI_ERR_INVALID, "vidi_image_decode: NULL data");
    VIDI_CHECK(size > 0, err, VIDI_ERR_FORMAT, "empty image (0 bytes)");
    VIDI_CHECK(lim.max_bytes <= 0 || (int64_t)size <= lim.max_bytes, err, VIDI_ERR_RANGE,
               "image of %zu bytes is above the limit of %lld bytes (max_bytes)", size,
               (long long)lim.max_bytes);

    vidi_media_format fmt = vidi_media_sniff_format(data, size);
    switch (fmt) {
    case VIDI_MEDIA_FORMAT_JPEG: VIDI_TRY(decode_jpeg(data, size, &lim, out, err)); break;
    case VIDI_MEDIA_FORMAT_PNG:
    case VIDI_MEDIA_FORMAT_GIF:
    case VIDI_MEDIA_FORMAT_WEBP:
    case VIDI_MEDIA_FORMAT_BMP:
    case VIDI_MEDIA_FORMAT_TIFF: VIDI_TRY(decode_libav(fmt, data, size, &lim, out, err)); break;
    case VIDI_MEDIA_FORMAT_AVIF:
    case VIDI_MEDIA_FORMAT_HEIC:
        VIDI_CHECK(0, err, VIDI_ERR_UNSUPPORTED, "%s images are not supported; convert to JPEG or PNG",
                   fmt == VIDI_MEDIA_FORMAT_AVIF ? "AVIF" : "HEIC/HEIF");
    case VIDI_MEDIA_FORMAT_UNKNOWN:
        VIDI_CHECK(0, err, VIDI_ERR_FORMAT,
                   "not an image: the first bytes (%02x %02x %02x %02x) match no JPEG, PNG, GIF, WebP, "
                   "BMP or TIFF signature",
                   data[0], size > 1 ? data[1] : 0, size > 2 ? data[2] : 0, size > 3 ? data[3] : 0);
    default:
        VIDI_CHECK(0, err, VIDI_ERR_FORMAT, "not an image: the bytes are a %s video container",
                   vidi_media_format_name(fmt));
    }
    return VIDI_OK;
fail:
    if (out) vidi_image_free(out);
    return rc;
}
