/* tests/media/test_file.c — vidi_media_read_file (allowed roots, symlinks,
 * non-regular files, size limit) and vidi_media_sniff (magic numbers).
 *
 * Builds a scratch tree in test_tmpdir() at run time:
 *   root/ok.bin, root/sub/deep.bin, root/dir/, root/empty.bin,
 *   root/link_in -> root/ok.bin, root/link_out -> outside/secret.bin,
 *   root/fifo (a FIFO), outside/secret.bin, root2 (a sibling named like root)
 */
#include "media/media.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void path_of(char *out, size_t n, const char *rel) { snprintf(out, n, "%s", test_tmp_path(rel)); }

static void write_file(const char *rel, const char *text) {
    char p[1024];
    path_of(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static int setup_tree(void) {
    if (!test_tmpdir()) return 0;
    char p[1024], q[1024];
    const char *dirs[] = {"root", "root/sub", "root/dir", "outside", "root2"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        path_of(p, sizeof p, dirs[i]);
        if (mkdir(p, 0700) != 0) return 0;
    }
    write_file("root/ok.bin", "hello media");
    write_file("root/sub/deep.bin", "deep");
    write_file("root/empty.bin", "");
    write_file("outside/secret.bin", "secret");
    write_file("root2/sibling.bin", "sibling");
    path_of(p, sizeof p, "root/ok.bin");
    path_of(q, sizeof q, "root/link_in");
    if (symlink(p, q) != 0) return 0;
    path_of(p, sizeof p, "outside/secret.bin");
    path_of(q, sizeof q, "root/link_out");
    if (symlink(p, q) != 0) return 0;
    path_of(q, sizeof q, "root/link_dangling");
    if (symlink("/nonexistent/vidi/nothing", q) != 0) return 0;
    path_of(p, sizeof p, "root/fifo");
    return mkfifo(p, 0600) == 0;
}

/* Reads rel with the one root "root"; returns the status, fills msg. */
static vidi_status read_in_root(const char *rel, int64_t max_bytes, char *msg, size_t msgn, size_t *size_out) {
    char p[1024], r[1024];
    path_of(p, sizeof p, rel);
    path_of(r, sizeof r, "root");
    const char *roots[] = {r};
    uint8_t *data = NULL;
    size_t size = 0;
    vidi_err e = {0};
    vidi_status st = vidi_media_read_file(p, roots, 1, max_bytes, &data, &size, &e);
    if (msg) snprintf(msg, msgn, "%s", e.msg);
    if (size_out) *size_out = size;
    if (st != VIDI_OK && (data || size)) test_fail(__FILE__, __LINE__, "%s: output set after an error", rel);
    free(data);
    return st;
}

static void test_reads_files_inside_the_root(void) {
    char msg[VIDI_ERR_MSG_MAX];
    size_t n = 0;
    CHECK(read_in_root("root/ok.bin", 1 << 20, msg, sizeof msg, &n) == VIDI_OK && n == 11, "ok.bin: %s", msg);
    CHECK(read_in_root("root/sub/deep.bin", 1 << 20, msg, sizeof msg, &n) == VIDI_OK && n == 4, "deep: %s", msg);
    CHECK(read_in_root("root/sub/../ok.bin", 1 << 20, msg, sizeof msg, &n) == VIDI_OK, "dotdot inside: %s", msg);
    CHECK(read_in_root("root/link_in", 1 << 20, msg, sizeof msg, &n) == VIDI_OK && n == 11, "link in: %s", msg);
    /* the bytes themselves */
    char p[1024];
    path_of(p, sizeof p, "root/ok.bin");
    uint8_t *data = NULL;
    size_t size = 0;
    vidi_err e = {0};
    CHECK(vidi_media_read_file(p, NULL, 0, 0, &data, &size, &e) == VIDI_OK, "no roots: %s", e.msg);
    CHECK(size == 11 && data && memcmp(data, "hello media", 11) == 0, "content");
    free(data);
}

static void test_outside_the_root_refused(void) {
    char msg[VIDI_ERR_MSG_MAX];
    CHECK(read_in_root("outside/secret.bin", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_INVALID, "outside");
    CHECK(strstr(msg, "outside the allowed media roots"), "message: %s", msg);
    CHECK(read_in_root("root/../outside/secret.bin", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_INVALID,
          "dotdot escape: %s", msg);
    /* a sibling directory whose name starts with the root's is not inside it */
    CHECK(read_in_root("root2/sibling.bin", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_INVALID,
          "prefix sibling: %s", msg);
}

static void test_symlink_escaping_the_root_refused(void) {
    char msg[VIDI_ERR_MSG_MAX];
    CHECK(read_in_root("root/link_out", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_INVALID, "link out");
    CHECK(strstr(msg, "outside the allowed media roots") && strstr(msg, "secret.bin"), "message: %s", msg);
    CHECK(read_in_root("root/link_dangling", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_NOTFOUND,
          "dangling link: %s", msg);
}

static void test_not_a_regular_file_refused(void) {
    char msg[VIDI_ERR_MSG_MAX];
    CHECK(read_in_root("root/dir", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_INVALID, "dir");
    CHECK(strstr(msg, "directory"), "message: %s", msg);
    /* a FIFO must be refused, not block the reader */
    CHECK(read_in_root("root/fifo", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_INVALID, "fifo: %s", msg);
    CHECK(strstr(msg, "not a regular file"), "message: %s", msg);
    uint8_t *data = NULL;
    size_t size = 0;
    vidi_err e = {0};
    CHECK(vidi_media_read_file("/dev/null", NULL, 0, 1 << 20, &data, &size, &e) == VIDI_ERR_INVALID,
          "/dev/null: %s", e.msg);
}

static void test_missing_empty_and_too_large(void) {
    char msg[VIDI_ERR_MSG_MAX];
    CHECK(read_in_root("root/nope.bin", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_NOTFOUND, "missing");
    CHECK(strstr(msg, "does not exist"), "message: %s", msg);
    CHECK(read_in_root("root/empty.bin", 1 << 20, msg, sizeof msg, NULL) == VIDI_ERR_FORMAT, "empty");
    CHECK(strstr(msg, "empty"), "message: %s", msg);
    CHECK(read_in_root("root/ok.bin", 10, msg, sizeof msg, NULL) == VIDI_ERR_RANGE, "too large");
    CHECK(strstr(msg, "11 bytes") && strstr(msg, "limit of 10"), "message: %s", msg);
    CHECK(read_in_root("root/ok.bin", 11, msg, sizeof msg, NULL) == VIDI_OK, "exactly the limit: %s", msg);
}

static void test_bad_arguments(void) {
    uint8_t *data = NULL;
    size_t size = 0;
    vidi_err e = {0};
    CHECK(vidi_media_read_file(NULL, NULL, 0, 0, &data, &size, &e) == VIDI_ERR_INVALID, "NULL path");
    CHECK(vidi_media_read_file("", NULL, 0, 0, &data, &size, &e) == VIDI_ERR_INVALID, "empty path");
    CHECK(vidi_media_read_file("/tmp", NULL, 2, 0, &data, &size, &e) == VIDI_ERR_INVALID, "NULL roots");
    /* a root that does not exist allows nothing */
    const char *roots[] = {"/nonexistent/vidi/root"};
    char p[1024];
    path_of(p, sizeof p, "root/ok.bin");
    CHECK(vidi_media_read_file(p, roots, 1, 0, &data, &size, &e) == VIDI_ERR_INVALID, "missing root");
    CHECK(data == NULL, "data after error");
}

static void test_sniff_by_magic(void) {
    static const struct {
        const char *bytes;
        size_t n;
        const char *want;
    } cases[] = {
        {"\xff\xd8\xff\xe0\0\x10JFIF", 10, "image"},
        {"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16, "image"},
        {"GIF89a\x01\0\x01\0", 10, "image"},
        {"GIF87a\x01\0\x01\0", 10, "image"},
        {"RIFF\x10\0\0\0WEBPVP8 ", 16, "image"},
        {"BM\0\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0\x01\0\0\0\x01\0\0\0", 26, "image"},
        {"II*\0\x08\0\0\0", 8, "image"},
        {"MM\0*\0\0\0\x08", 8, "image"},
        {"\0\0\0\x1c" "ftypavif\0\0\0\0avifmif1", 24, "image"},
        {"\0\0\0\x18" "ftypheic\0\0\0\0mif1heic", 24, "image"},
        {"\0\0\0\x18" "ftypisom\0\0\x02\0isommp41", 24, "video"},
        {"\0\0\0\x14" "ftypqt  \0\0\x02\0qt  ", 20, "video"},
        {"\x1a\x45\xdf\xa3\x01\0\0\0", 8, "video"},
        {"RIFF\x10\0\0\0AVI LIST", 16, "video"},
        {"FLV\x01\x05\0\0\0", 8, "video"},
        {"\0\0\x01\xba\x44\0\x04\0", 8, "video"},
        {"hello world", 11, NULL},
        {"BM not a bitmap at all, just text", 33, NULL},
        {"RIFF\x10\0\0\0WAVEfmt ", 16, NULL},
        {"\xff\xd8", 2, NULL},
        {"", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = vidi_media_sniff((const uint8_t *)cases[i].bytes, cases[i].n);
        int ok = (!got && !cases[i].want) || (got && cases[i].want && strcmp(got, cases[i].want) == 0);
        CHECK(ok, "case %zu: sniffed %s, want %s", i, got ? got : "NULL", cases[i].want ? cases[i].want : "NULL");
    }
    /* MPEG-TS: a sync byte every 188 bytes; one 0x47 alone is not enough */
    uint8_t ts[188 * 3] = {0};
    ts[0] = ts[188] = ts[376] = 0x47;
    CHECK(vidi_media_sniff(ts, sizeof ts) && strcmp(vidi_media_sniff(ts, sizeof ts), "video") == 0, "ts");
    ts[376] = 0;
    CHECK(vidi_media_sniff(ts, sizeof ts) == NULL, "broken ts sync");
    CHECK(vidi_media_sniff(ts, 100) == NULL, "one packet is not enough");
    CHECK(vidi_media_sniff(NULL, 10) == NULL, "NULL");
}

int main(int argc, char **argv) {
    if (!setup_tree()) {
        fprintf(stderr, "cannot build the scratch tree under %s\n", test_tmp_path(""));
        return 77;
    }
    static const test_case cases[] = {
        {"reads_files_inside_the_root", test_reads_files_inside_the_root},
        {"outside_the_root_refused", test_outside_the_root_refused},
        {"symlink_escaping_the_root_refused", test_symlink_escaping_the_root_refused},
        {"not_a_regular_file_refused", test_not_a_regular_file_refused},
        {"missing_empty_and_too_large", test_missing_empty_and_too_large},
        {"bad_arguments", test_bad_arguments},
        {"sniff_by_magic", test_sniff_by_magic},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    return rc;
}
