/* tests/media/test_image.c — vidi_image_decode against Pillow.
 *
 * tests/data/media/img/ holds one small file per format and pixel layout,
 * written by tools/golden/image_fixtures.py, and expected.json with the md5
 * of the RGB888 bytes that Pillow's Image.open + qwen-vl-utils' to_rgb give
 * for each. Every file must decode to exactly those bytes. The rest pins the
 * limits (declared sizes refused before decoding) and the error answers.
 */
#include "media/media.h"
#include "test_util.h"

#include <jansson.h>
#include <libavutil/crc.h>
#include <stdlib.h>
#include <string.h>

#define IMG_DIR "media/img/"

/* ---------------------------------------------------------------- md5 (RFC 1321) */

typedef struct md5_ctx {
    uint32_t h[4];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} md5_ctx;

static uint32_t md5_rotl(uint32_t x, int c) { return (x << c) | (x >> (32 - c)); }

static void md5_block(md5_ctx *m, const uint8_t *p) {
    static const int shift[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
    /* K[i] = floor(|sin(i + 1)| * 2^32) */
    static const uint32_t k[64] = {
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = m->h[0], b = m->h[1], c = m->h[2], d = m->h[3];
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g, round = i / 16;
        if (round == 0) f = (b & c) | (~b & d), g = i;
        else if (round == 1) f = (d & b) | (~d & c), g = (5 * i + 1) & 15;
        else if (round == 2) f = b ^ c ^ d, g = (3 * i + 5) & 15;
        else f = c ^ (b | ~d), g = (7 * i) & 15;
        uint32_t tmp = d;
        d = c;
        c = b;
        b = b + md5_rotl(a + f + k[i] + w[g], shift[round][i & 3]);
        a = tmp;
    }
    m->h[0] += a, m->h[1] += b, m->h[2] += c, m->h[3] += d;
}

static void md5_hex(const uint8_t *data, size_t n, char out[33]) {
    md5_ctx m = {{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}, 0, {0}, 0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) md5_block(&m, data + i);
    uint8_t tail[128] = {0};
    size_t rest = n - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t tl = rest + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int b = 0; b < 8; b++) tail[tl - 8 + b] = (uint8_t)(bits >> (8 * b));
    md5_block(&m, tail);
    if (tl == 128) md5_block(&m, tail + 64);
    for (int j = 0; j < 16; j++) snprintf(out + 2 * j, 3, "%02x", (m.h[j / 4] >> (8 * (j % 4))) & 255);
}

/* ---------------------------------------------------------------- helpers */

static int read_fixture(const char *name, uint8_t **data, size_t *size) {
    vidi_err e = {0};
    vidi_status st = vidi_media_read_file(test_data_path(name), NULL, 0, 1 << 24, data, size, &e);
    if (st != VIDI_OK) fprintf(stderr, "  %s: %s\n", name, e.msg);
    return st == VIDI_OK;
}

/* Decodes `data` expecting failure with status `want` and every `needle`
 * (NULL-terminated) in the message. */
static void expect_error(const char *label, const uint8_t *data, size_t size, const vidi_media_limits *lim,
                         vidi_status want, const char *const *needles) {
    vidi_image img = {0};
    vidi_err e = {0};
    vidi_status st = vidi_image_decode(data, size, lim, &img, &e);
    CHECK(st == want, "%s: status %s, want %s (%s)", label, vidi_status_name(st), vidi_status_name(want), e.msg);
    CHECK(img.rgb == NULL && img.width == 0, "%s: output not empty after an error", label);
    for (int i = 0; needles && needles[i]; i++)
        CHECK(strstr(e.msg, needles[i]) != NULL, "%s: message lacks '%s': %s", label, needles[i], e.msg);
    vidi_image_free(&img);
}

/* ---------------------------------------------------------------- cases */

static void test_md5_known_answers(void) {
    char h[33];
    md5_hex((const uint8_t *)"", 0, h);
    CHECK(strcmp(h, "d41d8cd98f00b204e9800998ecf8427e") == 0, "md5('') = %s", h);
    const char *q = "The quick brown fox jumps over the lazy dog";
    md5_hex((const uint8_t *)q, strlen(q), h);
    CHECK(strcmp(h, "9e107d9d372bb6826bd81d3542a419d6") == 0, "md5(fox) = %s", h);
    uint8_t buf[200];
    for (int i = 0; i < 200; i++) buf[i] = 'a';
    md5_hex(buf, 56, h); /* padding spills into a second block */
    CHECK(strcmp(h, "3b0c8ac703f828b04c6c197006d17218") == 0, "md5(56 x a) = %s", h);
}

/* Every fixture decodes to Pillow's bytes, exactly. */
static void test_every_fixture_equals_pillow(void) {
    json_error_t je;
    json_t *root = json_load_file(test_data_path(IMG_DIR "expected.json"), 0, &je);
    REQUIRE(root, "expected.json: %s (run tools/golden/image_fixtures.py)", je.text);
    json_t *files = json_object_get(root, "files");
    CHECK(json_object_size(files) >= 30, "only %zu fixtures", json_object_size(files));
    const char *name;
    json_t *want;
    json_object_foreach(files, name, want) {
        char rel[256];
        snprintf(rel, sizeof rel, IMG_DIR "%s", name);
        uint8_t *data = NULL;
        size_t size = 0;
        if (!read_fixture(rel, &data, &size)) {
            CHECK(0, "%s: cannot read", name);
            continue;
        }
        const char *kind = vidi_media_sniff(data, size);
        CHECK(kind && strcmp(kind, "image") == 0, "%s: sniffed as %s", name, kind ? kind : "NULL");
        vidi_image img = {0};
        vidi_err e = {0};
        vidi_status st = vidi_image_decode(data, size, NULL, &img, &e);
        CHECK(st == VIDI_OK, "%s: %s", name, e.msg);
        if (st == VIDI_OK) {
            int w = (int)json_integer_value(json_object_get(want, "width"));
            int h = (int)json_integer_value(json_object_get(want, "height"));
            CHECK(img.width == w && img.height == h, "%s: %dx%d, Pillow %dx%d", name, img.width, img.height, w, h);
            char got[33];
            md5_hex(img.rgb, (size_t)img.width * img.height * 3, got);
            const char *exp = json_string_value(json_object_get(want, "md5"));
            CHECK(exp && strcmp(got, exp) == 0, "%s (Pillow mode %s): md5 %s, Pillow %s", name,
                  json_string_value(json_object_get(want, "mode")), got, exp ? exp : "?");
        }
        vidi_image_free(&img);
        free(data);
    }
    json_decref(root);
}

/* Composite on white: every (value, alpha) pair, against Pillow's paste. */
static void test_rgba_composite_every_pair(void) {
    uint8_t *data = NULL;
    size_t size = 0;
    REQUIRE(read_fixture(IMG_DIR "png_rgba_every_alpha.png", &data, &size), "fixture");
    vidi_image img = {0};
    vidi_err e = {0};
    CHECK(vidi_image_decode(data, size, NULL, &img, &e) == VIDI_OK, "%s", e.msg);
    if (img.rgb) {
        /* fully transparent -> white; opaque -> unchanged */
        CHECK(img.rgb[0] == 255 && img.rgb[1] == 255 && img.rgb[2] == 255, "alpha 0 is not white");
        const uint8_t *last = img.rgb + ((size_t)255 * 256 + 77) * 3;
        CHECK(last[0] == 77 && last[1] == 255 - 77, "alpha 255 changed the colour: %d %d", last[0], last[1]);
    }
    vidi_image_free(&img);
    free(data);
}

static void test_declared_50000x50000_png_refused_before_decoding(void) {
    uint8_t *data = NULL;
    size_t size = 0;
    REQUIRE(read_fixture(IMG_DIR "bomb_png.png", &data, &size), "fixture");
    const char *need[] = {"PNG", "50000x50000", "2500000000", "178956970", "before decoding", NULL};
    expect_error("png bomb", data, size, NULL, VIDI_ERR_RANGE, need);
    free(data);
}

static void test_declared_50000x50000_jpeg_refused_before_decoding(void) {
    uint8_t *data = NULL;
    size_t size = 0;
    REQUIRE(read_fixture(IMG_DIR "bomb_jpeg.jpg", &data, &size), "fixture");
    const char *need[] = {"JPEG", "50000x50000", "178956970", NULL};
    expect_error("jpeg bomb", data, size, NULL, VIDI_ERR_RANGE, need);
    free(data);
}

/* GIF and BMP headers patched to declare 50000 x 50000. */
static void test_declared_huge_gif_and_bmp_refused(void) {
    uint8_t *data = NULL;
    size_t size = 0;
    REQUIRE(read_fixture(IMG_DIR "gif_anim.gif", &data, &size), "fixture");
    data[6] = data[8] = 0x50, data[7] = data[9] = 0xC3; /* 50000 LE */
    const char *need[] = {"GIF", "50000x50000", NULL};
    expect_error("gif bomb", data, size, NULL, VIDI_ERR_RANGE, need);
    free(data);
    REQUIRE(read_fixture(IMG_DIR "bmp_rgb.bmp", &data, &size), "fixture");
    data[18] = data[22] = 0x50, data[19] = data[23] = 0xC3, data[20] = data[21] = data[24] = data[25] = 0;
    const char *need2[] = {"BMP", "50000x50000", NULL};
    expect_error("bmp bomb", data, size, NULL, VIDI_ERR_RANGE, need2);
    free(data);
}

/* Lowered limits refuse every format from its header. */
static void test_limits_apply_to_every_format(void) {
    const char *files[] = {"jpeg_420.jpg", "png_rgb.png", "gif_anim.gif", "webp_lossy.webp",
                           "webp_lossless.webp", "bmp_rgb.bmp", "tiff_rgb.tif"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, IMG_DIR "%s", files[i]);
        uint8_t *data = NULL;
        size_t size = 0;
        if (!read_fixture(rel, &data, &size)) {
            CHECK(0, "%s", files[i]);
            continue;
        }
        vidi_media_limits lim = vidi_media_limits_default();
        lim.max_image_pixels = 1000;
        const char *need[] = {"61x45", "2745", "max_image_pixels", NULL};
        expect_error(files[i], data, size, &lim, VIDI_ERR_RANGE, need);
        lim = vidi_media_limits_default();
        lim.max_side = 60;
        const char *need2[] = {"max_side", "60", NULL};
        expect_error(files[i], data, size, &lim, VIDI_ERR_RANGE, need2);
        lim = vidi_media_limits_default();
        lim.max_bytes = 16;
        const char *need3[] = {"max_bytes", NULL};
        expect_error(files[i], data, size, &lim, VIDI_ERR_RANGE, need3);
        free(data);
    }
}

static void test_bad_bytes_answered(void) {
    const uint8_t zero[1] = {0};
    const char *n_empty[] = {"empty", NULL};
    expect_error("empty", zero, 0, NULL, VIDI_ERR_FORMAT, n_empty);
    const uint8_t text[] = "hello, this is not an image at all";
    const char *n_text[] = {"not an image", "68 65 6c 6c", NULL};
    expect_error("text", text, sizeof text - 1, NULL, VIDI_ERR_FORMAT, n_text);
    const uint8_t mp4[] = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 2, 0,
                           'i', 's', 'o', 'm', 'm', 'p', '4', '1'};
    const char *n_mp4[] = {"video", NULL};
    expect_error("mp4 bytes", mp4, sizeof mp4, NULL, VIDI_ERR_FORMAT, n_mp4);
    const uint8_t avif[] = {0, 0, 0, 28, 'f', 't', 'y', 'p', 'a', 'v', 'i', 'f', 0, 0, 0, 0,
                            'a', 'v', 'i', 'f', 'm', 'i', 'f', '1', 'm', 'i', 'a', 'f'};
    const char *n_avif[] = {"AVIF", "not supported", NULL};
    expect_error("avif", avif, sizeof avif, NULL, VIDI_ERR_UNSUPPORTED, n_avif);
    const uint8_t heic[] = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c', 0, 0, 0, 0,
                            'm', 'i', 'f', '1', 'h', 'e', 'i', 'c'};
    const char *n_heic[] = {"HEIC", NULL};
    expect_error("heic", heic, sizeof heic, NULL, VIDI_ERR_UNSUPPORTED, n_heic);
    const uint8_t png_sig_only[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0};
    const char *n_png[] = {"PNG", "IHDR", NULL};
    expect_error("png signature only", png_sig_only, sizeof png_sig_only, NULL, VIDI_ERR_FORMAT, n_png);
    const uint8_t jpeg_soi_only[] = {0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10};
    const char *n_jpeg[] = {"JPEG", NULL};
    expect_error("jpeg SOI only", jpeg_soi_only, sizeof jpeg_soi_only, NULL, VIDI_ERR_FORMAT, n_jpeg);
}

static void test_truncated_files_refused(void) {
    const char *files[] = {"jpeg_420.jpg", "jpeg_progressive.jpg", "png_rgb.png", "webp_lossy.webp",
                           "webp_lossless.webp", "tiff_rgb.tif", "bmp_rgb.bmp"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, IMG_DIR "%s", files[i]);
        uint8_t *data = NULL;
        size_t size = 0;
        if (!read_fixture(rel, &data, &size)) {
            CHECK(0, "%s", files[i]);
            continue;
        }
        vidi_image img = {0};
        vidi_err e = {0};
        vidi_status st = vidi_image_decode(data, size / 2, NULL, &img, &e);
        CHECK(st == VIDI_ERR_FORMAT, "%s cut in half: %s (%s)", files[i], vidi_status_name(st), e.msg);
        vidi_image_free(&img);
        st = vidi_image_decode(data, size - 8, NULL, &img, &e);
        CHECK(st == VIDI_ERR_FORMAT, "%s without its last 8 bytes: %s (%s)", files[i], vidi_status_name(st), e.msg);
        vidi_image_free(&img);
        free(data);
    }
}

/* GIF: only the first frame counts. Cut inside it: refused (as Pillow);
 * cut in a later frame: the first frame decodes unchanged (as Pillow). */
static void test_truncated_gif(void) {
    uint8_t *data = NULL;
    size_t size = 0;
    REQUIRE(read_fixture(IMG_DIR "gif_anim.gif", &data, &size), "fixture");
    const char *need[] = {"truncated GIF", NULL};
    expect_error("gif cut in frame 0", data, 1500, NULL, VIDI_ERR_FORMAT, need);
    vidi_image full = {0}, half = {0};
    vidi_err e = {0};
    CHECK(vidi_image_decode(data, size, NULL, &full, &e) == VIDI_OK, "%s", e.msg);
    CHECK(vidi_image_decode(data, size / 2, NULL, &half, &e) == VIDI_OK, "gif cut after frame 0: %s", e.msg);
    CHECK(full.rgb && half.rgb && full.width == half.width && full.height == half.height &&
              memcmp(full.rgb, half.rgb, (size_t)full.width * full.height * 3) == 0,
          "first frame differs when later frames are cut");
    vidi_image_free(&full);
    vidi_image_free(&half);
    free(data);
}

/* Rewrites the CRC of the PNG chunk at `off` after its contents were edited,
 * so that a test reaches the check it is about rather than the CRC check. */
static void png_fix_crc(uint8_t *d, size_t off) {
    uint32_t len = (uint32_t)d[off] << 24 | (uint32_t)d[off + 1] << 16 | (uint32_t)d[off + 2] << 8 | d[off + 3];
    uint32_t crc = av_crc(av_crc_get_table(AV_CRC_32_IEEE_LE), 0xFFFFFFFFu, d + off + 4, (size_t)len + 4) ^
                   0xFFFFFFFFu;
    uint8_t *p = d + off + 8 + len;
    p[0] = (uint8_t)(crc >> 24), p[1] = (uint8_t)(crc >> 16), p[2] = (uint8_t)(crc >> 8), p[3] = (uint8_t)crc;
}

static void test_corrupt_header_fields(void) {
    uint8_t *data = NULL;
    size_t size = 0;
    REQUIRE(read_fixture(IMG_DIR "png_rgb.png", &data, &size), "fixture");
    memset(data + 16, 0, 4); /* width 0 */
    png_fix_crc(data, 8);
    const char *n0[] = {"empty image", NULL};
    expect_error("png width 0", data, size, NULL, VIDI_ERR_FORMAT, n0);
    free(data);
    REQUIRE(read_fixture(IMG_DIR "tiff_rgb.tif", &data, &size), "fixture");
    data[4] = data[5] = data[6] = 0x7f; /* IFD offset far past the end */
    const char *n1[] = {"TIFF", "IFD", NULL};
    expect_error("tiff ifd offset", data, size, NULL, VIDI_ERR_FORMAT, n1);
    free(data);
    /* JPEG: corrupt the bytes after the header: decodes or refuses, never crashes */
    REQUIRE(read_fixture(IMG_DIR "jpeg_420.jpg", &data, &size), "fixture");
    for (size_t i = size / 2; i < size / 2 + 64 && i < size; i++) data[i] ^= 0x5a;
    vidi_image img = {0};
    vidi_err e = {0};
    vidi_status st = vidi_image_decode(data, size, NULL, &img, &e);
    CHECK(st == VIDI_OK || st == VIDI_ERR_FORMAT, "corrupt jpeg: %s", e.msg);
    vidi_image_free(&img);
    free(data);
}

/* ---------------------------------------------------------------- colour key */

/* The colour key Pillow leaves on the RGB image (info["transparency"]),
 * which the reference's processor then whitens after the resize. Measured
 * with Pillow 12.3 on these fixtures: only the palette PNG and the GIF with
 * a transparent index (its palette colour) and the gray PNG with tRNS (the
 * grey value) keep one; every other fixture has none. */
static void test_color_key_per_fixture(void) {
    static const struct {
        const char *name;
        uint8_t key[3];
    } keyed[] = {
        {"png_p_trns.png", {64, 205, 154}},
        {"gif_trns.gif", {64, 205, 154}},
        {"png_gray_trns.png", {7, 7, 7}},
    };
    json_error_t je;
    json_t *root = json_load_file(test_data_path(IMG_DIR "expected.json"), 0, &je);
    REQUIRE(root, "expected.json: %s", je.text);
    const char *name;
    json_t *want;
    int seen = 0;
    json_object_foreach(json_object_get(root, "files"), name, want) {
        char rel[256];
        snprintf(rel, sizeof rel, IMG_DIR "%s", name);
        uint8_t *data = NULL;
        size_t size = 0;
        if (!read_fixture(rel, &data, &size)) continue;
        vidi_image img = {0};
        vidi_err e = {0};
        if (vidi_image_decode(data, size, NULL, &img, &e) == VIDI_OK) {
            int k = -1;
            for (int i = 0; i < (int)(sizeof keyed / sizeof keyed[0]); i++)
                if (strcmp(keyed[i].name, name) == 0) k = i;
            if (k >= 0) {
                seen++;
                CHECK(img.has_color_key && memcmp(img.color_key, keyed[k].key, 3) == 0,
                      "%s: key %d (%d,%d,%d), Pillow (%d,%d,%d)", name, img.has_color_key, img.color_key[0],
                      img.color_key[1], img.color_key[2], keyed[k].key[0], keyed[k].key[1], keyed[k].key[2]);
            } else {
                CHECK(!img.has_color_key, "%s: key (%d,%d,%d), Pillow has none", name, img.color_key[0],
                      img.color_key[1], img.color_key[2]);
            }
        }
        vidi_image_free(&img);
        free(data);
    }
    CHECK(seen == 3, "%d of the 3 keyed fixtures decoded", seen);
    json_decref(root);
}

static uint32_t png_crc(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

/* A fixture PNG with a tRNS chunk of `len` bytes put before its first IDAT. */
static uint8_t *png_with_trns(const char *fixture, const uint8_t *trns, size_t len, size_t *out_n) {
    char rel[128];
    snprintf(rel, sizeof rel, IMG_DIR "%s", fixture);
    uint8_t *data = NULL, *out = NULL;
    size_t size = 0, off = 8;
    if (!read_fixture(rel, &data, &size)) return NULL;
    while (off + 12 <= size && memcmp(data + off + 4, "IDAT", 4) != 0)
        off += 12 + ((size_t)data[off] << 24 | (size_t)data[off + 1] << 16 | (size_t)data[off + 2] << 8 | data[off + 3]);
    if (off + 12 <= size && (out = malloc(size + 12 + len))) {
        uint8_t *c = out + off;
        memcpy(out, data, off);
        c[0] = c[1] = 0, c[2] = (uint8_t)(len >> 8), c[3] = (uint8_t)len;
        memcpy(c + 4, "tRNS", 4);
        if (len) memcpy(c + 8, trns, len);
        uint32_t crc = png_crc(c + 4, 4 + len);
        for (int b = 0; b < 4; b++) c[8 + len + b] = (uint8_t)(crc >> (24 - 8 * b));
        memcpy(c + 12 + len, data + off, size - off);
        *out_n = size + 12 + len;
    }
    free(data);
    return out;
}

/* Pillow's rule per PNG colour type (checked against Pillow 12.3 with the
 * same chunks): gray 2/4/8-bit keeps the raw value (not scaled to the bit
 * depth) clipped to 255; 1-bit and 16-bit gray keep an int that RGB->RGBA
 * reads as (v & 255, 0, 0), 1-bit as 0 or 255; RGB keeps the low bytes;
 * a palette tRNS that is not one zero among 0xff is dropped; RGBA has none. */
static void test_color_key_png_rules(void) {
    static const struct {
        const char *fixture;
        uint8_t trns[6];
        size_t len;
        int has;
        uint8_t key[3];
    } cases[] = {
        {"png_gray.png", {0, 9}, 2, 1, {9, 9, 9}},
        {"png_gray.png", {1, 44}, 2, 1, {255, 255, 255}},
        {"png_gray2.png", {0, 2}, 2, 1, {2, 2, 2}},
        {"png_gray16.png", {1, 5}, 2, 1, {5, 0, 0}},
        {"png_1bit.png", {0, 1}, 2, 1, {255, 0, 0}},
        {"png_1bit.png", {0, 0}, 2, 1, {0, 0, 0}},
        {"png_rgb.png", {1, 2, 2, 3, 3, 4}, 6, 1, {2, 3, 4}},
        {"png_rgb16.png", {0x12, 0x34, 0, 0, 0xff, 0xff}, 6, 1, {0x34, 0, 0xff}},
        {"png_p.png", {0xff, 0xff, 0}, 3, 1, {0, 0, 0}}, /* colour filled in below */
        {"png_p.png", {0, 0x80}, 2, 0, {0}},
        {"png_p.png", {0xff, 0xff}, 2, 0, {0}},
        {"png_p.png", {0, 0}, 2, 0, {0}},
        {"png_rgba.png", {0, 1}, 2, 0, {0}},
    };
    /* palette entry 2 of png_p.png, as decoded without a tRNS */
    uint8_t pal2[3] = {0};
    {
        uint8_t *d = NULL;
        size_t n = 0;
        REQUIRE(read_fixture(IMG_DIR "png_p.png", &d, &n), "fixture");
        size_t off = 8;
        while (off + 12 <= n && memcmp(d + off + 4, "PLTE", 4) != 0)
            off += 12 + ((size_t)d[off] << 24 | (size_t)d[off + 1] << 16 | (size_t)d[off + 2] << 8 | d[off + 3]);
        REQUIRE(off + 12 + 9 <= n, "png_p.png has no PLTE of 3 entries");
        memcpy(pal2, d + off + 8 + 6, 3);
        free(d);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 0;
        uint8_t *d = png_with_trns(cases[i].fixture, cases[i].trns, cases[i].len, &n);
        REQUIRE(d, "%s", cases[i].fixture);
        const uint8_t *key = strcmp(cases[i].fixture, "png_p.png") == 0 ? pal2 : cases[i].key;
        vidi_image img = {0};
        vidi_err e = {0};
        CHECK(vidi_image_decode(d, n, NULL, &img, &e) == VIDI_OK, "case %zu (%s): %s", i, cases[i].fixture, e.msg);
        CHECK(img.has_color_key == cases[i].has, "case %zu (%s): has_color_key %d, want %d", i, cases[i].fixture,
              img.has_color_key, cases[i].has);
        if (cases[i].has)
            CHECK(memcmp(img.color_key, key, 3) == 0, "case %zu (%s): key (%d,%d,%d), want (%d,%d,%d)", i,
                  cases[i].fixture, img.color_key[0], img.color_key[1], img.color_key[2], key[0], key[1], key[2]);
        vidi_image_free(&img);
        free(d);
    }
}

static void test_null_arguments(void) {
    vidi_err e = {0};
    CHECK(vidi_image_decode((const uint8_t *)"x", 1, NULL, NULL, &e) == VIDI_ERR_INVALID, "NULL out");
    vidi_image img = {0};
    CHECK(vidi_image_decode(NULL, 10, NULL, &img, &e) == VIDI_ERR_INVALID, "NULL data");
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"md5_known_answers", test_md5_known_answers},
        {"every_fixture_equals_pillow", test_every_fixture_equals_pillow},
        {"rgba_composite_every_pair", test_rgba_composite_every_pair},
        {"declared_50000x50000_png_refused_before_decoding", test_declared_50000x50000_png_refused_before_decoding},
        {"declared_50000x50000_jpeg_refused_before_decoding", test_declared_50000x50000_jpeg_refused_before_decoding},
        {"declared_huge_gif_and_bmp_refused", test_declared_huge_gif_and_bmp_refused},
        {"limits_apply_to_every_format", test_limits_apply_to_every_format},
        {"bad_bytes_answered", test_bad_bytes_answered},
        {"truncated_files_refused", test_truncated_files_refused},
        {"truncated_gif", test_truncated_gif},
        {"corrupt_header_fields", test_corrupt_header_fields},
        {"color_key_per_fixture", test_color_key_per_fixture},
        {"color_key_png_rules", test_color_key_png_rules},
        {"null_arguments", test_null_arguments},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
