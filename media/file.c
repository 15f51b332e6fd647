/* media/file.c — reading media files from disk inside allowed roots, and
 * telling images from videos by their first bytes.
 *
 * A request names a path; the server must not let it read /etc/shadow, a
 * symlink out of the media directory, a FIFO that blocks forever or a file
 * larger than the limit. vidi_media_read_file resolves the path once
 * (realpath), checks it against the roots, opens the resolved path without
 * following a final symlink, checks the open file with fstat (regular file,
 * size within the limit) and only then reads it.
 */
#include "media/media.h"
#include "media/sniff.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- sniffing */

static int bytes_at(const uint8_t *d, size_t n, size_t off, const char *magic, size_t len) {
    return n >= off + len && memcmp(d + off, magic, len) == 0;
}

/* ISO BMFF: the major brand and the compatible brands of the ftyp box say
 * whether it is a still image (AVIF, HEIF/HEIC) or a movie. */
static vidi_media_format sniff_ftyp(const uint8_t *d, size_t n) {
    static const char *const avif[] = {"avif", "avis"};
    static const char *const heic[] = {"heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"};
    uint32_t box = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    size_t end = box >= 16 && box <= n ? box : n;
    /* major brand at 8, minor version at 12, compatible brands from 16 */
    for (size_t off = 8; off + 4 <= end; off += (off == 8 ? 8 : 4)) {
        for (size_t i = 0; i < sizeof avif / sizeof avif[0]; i++)
            if (memcmp(d + off, avif[i], 4) == 0) return VIDI_MEDIA_FORMAT_AVIF;
        if (off == 8) /* only the major brand decides HEIF: mp4s list mif1 rarely, but do */
            for (size_t i = 0; i < sizeof heic / sizeof heic[0]; i++)
                if (memcmp(d + off, heic[i], 4) == 0) return VIDI_MEDIA_FORMAT_HEIC;
    }
    return VIDI_MEDIA_FORMAT_MP4;
}

static int sniff_bmp(const uint8_t *d, size_t n) {
    if (!bytes_at(d, n, 0, "BM", 2) || n < 26) return 0;
    uint32_t hdr = (uint32_t)d[14] | (uint32_t)d[15] << 8 | (uint32_t)d[16] << 16 | (uint32_t)d[17] << 24;
    return hdr == 12 || hdr == 16 || hdr == 40 || hdr == 52 || hdr == 56 || hdr == 64 ||
           hdr == 108 || hdr == 124;
}

/* MPEG-TS: a sync byte every 188 bytes (or 192 for M2TS), checked on every
 * packet start the buffer holds, at least two of them. */
static int sniff_ts(const uint8_t *d, size_t n, size_t pkt, size_t first) {
    int seen = 0;
    for (size_t off = first; off < n && seen < 8; off += pkt, seen++)
        if (d[off] != 0x47) return 0;
    return seen >= 2;
}

vidi_media_format vidi_media_sniff_format(const uint8_t *d, size_t n) {
    if (!d || n < 4) return VIDI_MEDIA_FORMAT_UNKNOWN;
    if (d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return VIDI_MEDIA_FORMAT_JPEG;
    if (bytes_at(d, n, 0, "\x89PNG\r\n\x1a\n", 8)) return VIDI_MEDIA_FORMAT_PNG;
    if (bytes_at(d, n, 0, "GIF87a", 6) || bytes_at(d, n, 0, "GIF89a", 6)) return VIDI_MEDIA_FORMAT_GIF;
    if (bytes_at(d, n, 0, "RIFF", 4) && bytes_at(d, n, 8, "WEBP", 4)) return VIDI_MEDIA_FORMAT_WEBP;
    if (bytes_at(d, n, 0, "RIFF", 4) && bytes_at(d, n, 8, "AVI ", 4)) return VIDI_MEDIA_FORMAT_AVI;
    if (bytes_at(d, n, 0, "II*\0", 4) || bytes_at(d, n, 0, "MM\0*", 4)) return VIDI_MEDIA_FORMAT_TIFF;
    if (sniff_bmp(d, n)) return VIDI_MEDIA_FORMAT_BMP;
    if (bytes_at(d, n, 4, "ftyp", 4) && n >= 12) return sniff_ftyp(d, n);
    /* QuickTime files without ftyp start with one of these atoms */
    if (bytes_at(d, n, 4, "moov", 4) || bytes_at(d, n, 4, "mdat", 4) || bytes_at(d, n, 4, "wide", 4))
        return VIDI_MEDIA_FORMAT_MP4;
    if (bytes_at(d, n, 0, "\x1a\x45\xdf\xa3", 4)) return VIDI_MEDIA_FORMAT_MKV;
    if (bytes_at(d, n, 0, "FLV\x01", 4)) return VIDI_MEDIA_FORMAT_FLV;
    if (bytes_at(d, n, 0, "\x00\x00\x01\xba", 4)) return VIDI_MEDIA_FORMAT_MPEGPS;
    if (sniff_ts(d, n, 188, 0) || sniff_ts(d, n, 192, 4)) return VIDI_MEDIA_FORMAT_MPEGTS;
    return VIDI_MEDIA_FORMAT_UNKNOWN;
}

const char *vidi_media_format_name(vidi_media_format f) {
    switch (f) {
    case VIDI_MEDIA_FORMAT_JPEG: return "jpeg";
    case VIDI_MEDIA_FORMAT_PNG: return "png";
    case VIDI_MEDIA_FORMAT_GIF: return "gif";
    case VIDI_MEDIA_FORMAT_WEBP: return "webp";
    case VIDI_MEDIA_FORMAT_BMP: return "bmp";
    case VIDI_MEDIA_FORMAT_TIFF: return "tiff";
    case VIDI_MEDIA_FORMAT_AVIF: return "avif";
    case VIDI_MEDIA_FORMAT_HEIC: return "heic";
    case VIDI_MEDIA_FORMAT_MP4: return "mp4/mov";
    case VIDI_MEDIA_FORMAT_MKV: return "matroska/webm";
    case VIDI_MEDIA_FORMAT_AVI: return "avi";
    case VIDI_MEDIA_FORMAT_MPEGTS: return "mpegts";
    case VIDI_MEDIA_FORMAT_MPEGPS: return "mpegps";
    case VIDI_MEDIA_FORMAT_FLV: return "flv";
    case VIDI_MEDIA_FORMAT_UNKNOWN: break;
    }
    return "unknown";
}

int vidi_media_format_is_image(vidi_media_format f) {
    return f >= VIDI_MEDIA_FORMAT_JPEG && f <= VIDI_MEDIA_FORMAT_HEIC;
}

const char *vidi_media_sniff(const uint8_t *data, size_t size) {
    vidi_media_format f = vidi_media_sniff_format(data, size);
    if (f == VIDI_MEDIA_FORMAT_UNKNOWN) return NULL;
    return vidi_media_format_is_image(f) ? "image" : "video";
}

/* ---------------------------------------------------------------- reading */

/* 1 when the resolved path `p` is `root` itself or below it. */
static int path_under(const char *p, const char *root) {
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    if (n == 1 && root[0] == '/') return p[0] == '/';
    return strncmp(p, root, n) == 0 && (p[n] == '/' || p[n] == '\0');
}

vidi_status vidi_media_read_file(const char *path, const char *const *roots, int n_roots,
                                 int64_t max_bytes, uint8_t **data, size_t *size, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    char *real = NULL;
    uint8_t *buf = NULL;
    int fd = -1;
    if (data) *data = NULL;
    if (size) *size = 0;
    VIDI_CHECK(path && data && size, err, VIDI_ERR_INVALID, "vidi_media_read_file: NULL argument");
    VIDI_CHECK(path[0] != '\0', err, VIDI_ERR_INVALID, "empty media path");

    real = realpath(path, NULL);
    if (!real) {
        int e = errno;
        VIDI_CHECK(e != ENOENT && e != ENOTDIR, err, VIDI_ERR_NOTFOUND, "media file '%s' does not exist",
                   path);
        VIDI_CHECK(0, err, VIDI_ERR_IO, "cannot resolve media path '%s': %s", path, strerror(e));
    }
    if (n_roots > 0) {
        VIDI_CHECK(roots, err, VIDI_ERR_INVALID, "vidi_media_read_file: n_roots %d but roots is NULL",
                   n_roots);
        int inside = 0;
        for (int i = 0; i < n_roots && !inside; i++) {
            if (!roots[i] || !roots[i][0]) continue;
            char *root = realpath(roots[i], NULL);
            if (!root) continue; /* a missing root allows nothing */
            inside = path_under(real, root);
            free(root);
        }
        VIDI_CHECK(inside, err, VIDI_ERR_INVALID,
                   "media path '%s' resolves to '%s', which is outside the allowed media roots "
                   "(symlinks are followed before the check)",
                   path, real);
    }

    /* O_NONBLOCK: opening a FIFO must not hang; O_NOFOLLOW: the resolved
     * path must not have become a symlink since realpath. */
    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        VIDI_CHECK(e != ENOENT, err, VIDI_ERR_NOTFOUND, "media file '%s' does not exist", path);
        VIDI_CHECK(0, err, VIDI_ERR_IO, "cannot open media file '%s': %s", path, strerror(e));
    }
    struct stat st;
    VIDI_CHECK(fstat(fd, &st) == 0, err, VIDI_ERR_IO, "cannot stat media file '%s': %s", path,
               strerror(errno));
    VIDI_CHECK(!S_ISDIR(st.st_mode), err, VIDI_ERR_INVALID, "media path '%s' is a directory, not a file",
               path);
    VIDI_CHECK(S_ISREG(st.st_mode), err, VIDI_ERR_INVALID,
               "media path '%s' is not a regular file (device, FIFO or socket)", path);
    VIDI_CHECK(max_bytes <= 0 || (int64_t)st.st_size <= max_bytes, err, VIDI_ERR_RANGE,
               "media file '%s' is %lld bytes, above the limit of %lld bytes (max_bytes)", path,
               (long long)st.st_size, (long long)max_bytes);
    VIDI_CHECK(st.st_size > 0, err, VIDI_ERR_FORMAT, "media file '%s' is empty (0 bytes)", path);
    VIDI_CHECK((uint64_t)st.st_size <= (uint64_t)SIZE_MAX - 1, err, VIDI_ERR_RANGE,
               "media file '%s' is too large for memory", path);

    size_t n = (size_t)st.st_size, got = 0;
    buf = malloc(n);
    VIDI_CHECK(buf, err, VIDI_ERR_NOMEM, "out of memory reading '%s' (%zu bytes)", path, n);
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        VIDI_CHECK(r >= 0, err, VIDI_ERR_IO, "reading media file '%s': %s", path, strerror(errno));
        VIDI_CHECK(r > 0, err, VIDI_ERR_IO, "media file '%s' shrank while being read (%zu of %zu bytes)",
                   path, got, n);
        got += (size_t)r;
    }
    *data = buf;
    *size = n;
    buf = NULL;
fail:
    if (fd >= 0) close(fd);
    free(buf);
    free(real);
    return rc;
}
