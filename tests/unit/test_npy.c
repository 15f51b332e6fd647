/* tests/unit/test_npy.c — core/npy: arrays written and read back, the
 * conversions on reading (<f8, <f2 -> F32; <i8 -> I32), header versions 1
 * to 3, and the refused files (each error naming the file). Fixtures are
 * written into a temporary directory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/npy.h"
#include "test_util.h"

/* Write a .npy by hand: magic, version `major`.0, the dict padded with
 * spaces and '\n' to a multiple of 64, then `nbytes` of data. */
static const char *write_npy(const char *name, int major, const char *dict, const void *data, size_t nbytes) {
    const char *path = test_tmp_path(name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return path;
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t hlen = (pre + dl + 1 + 63) / 64 * 64 - pre;
    fwrite("\x93NUMPY", 1, 6, fp);
    fputc(major, fp);
    fputc(0, fp);
    for (size_t i = 0; i < pre - 8; i++)
        fputc((int)((hlen >> (8 * i)) & 0xff), fp);
    fputs(dict, fp);
    for (size_t i = dl; i + 1 < hlen; i++)
        fputc(' ', fp);
    fputc('\n', fp);
    if (nbytes) fwrite(data, 1, nbytes, fp);
    fclose(fp);
    return path;
}

static int msg_has(const char *msg, const char *s) {
    return !s || strstr(msg, s) != NULL;
}
static const char *show(const char *s) {
    return s ? s : "";
}

#define EXPECT_READ_FAILS(path, st, s1)                                                                      \
    do {                                                                                                     \
        vidi_npy a_;                                                                                         \
        vidi_err e_ = {0};                                                                                   \
        vidi_status rc_ = vidi_npy_read((path), &a_, &e_);                                                   \
        CHECK(rc_ == (st), "status %s, want %s (%s)", vidi_status_name(rc_), vidi_status_name(st), e_.msg);  \
        CHECK(a_.data == NULL, "no data on failure");                                                        \
        CHECK(msg_has(e_.msg, (path)), "message names the file: %s", e_.msg);                                \
        CHECK(msg_has(e_.msg, (s1)), "message has '%s': %s", show(s1), e_.msg);                              \
    } while (0)

static void test_f32_roundtrip(void) {
    float x[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
    const char *path = test_tmp_path("f32.npy");
    vidi_err e = {0};
    REQUIRE(vidi_npy_write(path, VIDI_DTYPE_F32, 2, (int64_t[]){2, 3}, x, &e) == VIDI_OK, "write: %s", e.msg);
    vidi_npy a;
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read: %s", e.msg);
    CHECK(a.dtype == VIDI_DTYPE_F32 && a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3, "header");
    CHECK(!memcmp(a.data, x, sizeof x), "data");
    vidi_tensor t = vidi_npy_tensor(&a);
    CHECK(t.data == a.data && t.ndim == 2 && vidi_tensor_numel(&t) == 6, "tensor view");
    vidi_npy_free(&a);
    CHECK(a.data == NULL, "freed");
}

static void test_i32_roundtrip_and_header_layout(void) {
    int32_t x[5] = {0, -1, 151655, INT32_MAX, INT32_MIN};
    const char *path = test_tmp_path("i32.npy");
    vidi_err e = {0};
    REQUIRE(vidi_npy_write(path, VIDI_DTYPE_I32, 1, (int64_t[]){5}, x, &e) == VIDI_OK, "write: %s", e.msg);
    FILE *fp = fopen(path, "rb");
    REQUIRE(fp, "reopen");
    char head[256];
    size_t n = fread(head, 1, sizeof head - 1, fp);
    fclose(fp);
    head[n] = '\0';
    CHECK(!memcmp(head, "\x93NUMPY\x01\x00", 8), "magic and version 1.0");
    size_t hlen = (unsigned char)head[8] | (size_t)(unsigned char)head[9] << 8;
    CHECK((10 + hlen) % 64 == 0 && head[10 + hlen - 1] == '\n', "header padded to 64 with a newline");
    CHECK(strstr(head + 10, "'descr': '<i4'") && strstr(head + 10, "'shape': (5,)"), "1-D shape has a comma");
    vidi_npy a;
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read: %s", e.msg);
    CHECK(a.dtype == VIDI_DTYPE_I32 && a.ndim == 1 && a.shape[0] == 5 && !memcmp(a.data, x, sizeof x),
          "data");
    vidi_npy_free(&a);
}

static void test_scalar_and_empty_arrays(void) {
    float s = 42.0f;
    vidi_err e = {0};
    const char *path = test_tmp_path("scalar.npy");
    REQUIRE(vidi_npy_write(path, VIDI_DTYPE_F32, 0, NULL, &s, &e) == VIDI_OK, "write scalar: %s", e.msg);
    vidi_npy a;
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read scalar: %s", e.msg);
    CHECK(a.ndim == 0 && ((float *)a.data)[0] == 42.0f, "scalar");
    vidi_npy_free(&a);
    path = test_tmp_path("empty.npy");
    REQUIRE(vidi_npy_write(path, VIDI_DTYPE_I32, 2, (int64_t[]){0, 7}, NULL, &e) == VIDI_OK,
            "write empty: %s", e.msg);
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read empty: %s", e.msg);
    CHECK(a.ndim == 2 && a.shape[0] == 0 && a.shape[1] == 7 && a.data != NULL, "empty array");
    vidi_npy_free(&a);
}

static void test_f8_converts_to_f32(void) {
    double x[3] = {0.5, -1.25, 1e10};
    const char *path =
        write_npy("f8.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", x, sizeof x);
    vidi_npy a;
    vidi_err e = {0};
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read: %s", e.msg);
    float *f = a.data;
    CHECK(a.dtype == VIDI_DTYPE_F32 && f[0] == 0.5f && f[1] == -1.25f && f[2] == 1e10f, "values");
    vidi_npy_free(&a);
}

static void test_f2_converts_to_f32(void) {
    uint16_t x[3] = {0x3c00, 0xc000, 0x3555}; /* 1, -2, ~1/3 */
    const char *path =
        write_npy("f2.npy", 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 3), }", x, sizeof x);
    vidi_npy a;
    vidi_err e = {0};
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read: %s", e.msg);
    float *f = a.data;
    CHECK(a.dtype == VIDI_DTYPE_F32 && f[0] == 1.0f && f[1] == -2.0f && f[2] > 0.333f && f[2] < 0.334f,
          "values");
    vidi_npy_free(&a);
}

static void test_i8_converts_to_i32(void) {
    int64_t x[4] = {0, -5, 151655, INT32_MIN};
    const char *path =
        write_npy("i8.npy", 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", x, sizeof x);
    vidi_npy a;
    vidi_err e = {0};
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read: %s", e.msg);
    int32_t *v = a.data;
    CHECK(a.dtype == VIDI_DTYPE_I32 && v[1] == -5 && v[2] == 151655 && v[3] == INT32_MIN, "values");
    vidi_npy_free(&a);
}

static void test_i8_out_of_int32_range(void) {
    int64_t x[2] = {1, (int64_t)1 << 33};
    const char *path =
        write_npy("i8-big.npy", 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_RANGE, "element 1");
}

static void test_version_2_and_3_headers(void) {
    float x[2] = {1, 2};
    vidi_npy a;
    vidi_err e = {0};
    const char *path =
        write_npy("v2.npy", 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", x, sizeof x);
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "v2: %s", e.msg);
    CHECK(((float *)a.data)[1] == 2.0f, "v2 data");
    vidi_npy_free(&a);
    path = write_npy("v3.npy", 3, "{\"descr\": \"<f4\", \"shape\": (2,), \"fortran_order\": False}", x,
                     sizeof x);
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "v3, keys reordered, double quotes: %s", e.msg);
    vidi_npy_free(&a);
}

static void test_python2_long_dimensions(void) {
    float x[6] = {0};
    const char *path = write_npy(
        "long.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", x, sizeof x);
    vidi_npy a;
    vidi_err e = {0};
    REQUIRE(vidi_npy_read(path, &a, &e) == VIDI_OK, "read: %s", e.msg);
    CHECK(a.shape[0] == 2 && a.shape[1] == 3, "shape");
    vidi_npy_free(&a);
}

static void test_fortran_order_refused(void) {
    float x[6] = {0};
    const char *path = write_npy("fortran.npy", 1,
                                 "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_UNSUPPORTED, "Fortran");
}

static void test_big_endian_refused(void) {
    float x[2] = {0};
    const char *path =
        write_npy("be.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_UNSUPPORTED, "big-endian");
}

static void test_unsupported_dtype_refused(void) {
    unsigned char x[4] = {0};
    const char *path =
        write_npy("u1.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_UNSUPPORTED, "'|u1'");
}

static void test_too_many_dimensions(void) {
    float x[1] = {0};
    const char *path = write_npy(
        "5d.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_UNSUPPORTED, "dimensions");
}

static void test_data_shorter_than_shape(void) {
    float x[5] = {0};
    const char *path =
        write_npy("short.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_FORMAT, "24 bytes");
}

static void test_data_longer_than_shape(void) {
    float x[7] = {0};
    const char *path = write_npy("long-data.npy", 1,
                                 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_FORMAT, "28");
}

static void test_huge_shape_does_not_overflow(void) {
    float x[1] = {0};
    const char *path = write_npy(
        "huge.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }", x,
        sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_FORMAT, "shape");
}

static void test_bad_magic(void) {
    const char *path = test_tmp_path("magic.npy");
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fputs("PK\x03\x04 this is a zip, not an npy", fp);
        fclose(fp);
    }
    EXPECT_READ_FAILS(path, VIDI_ERR_FORMAT, "magic");
}

static void test_truncated_header(void) {
    const char *path = test_tmp_path("cut.npy");
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fwrite("\x93NUMPY\x01\x00\x76\x00{'descr'", 1, 18, fp);
        fclose(fp);
    }
    EXPECT_READ_FAILS(path, VIDI_ERR_FORMAT, "truncated");
}

static void test_header_missing_shape(void) {
    float x[1] = {0};
    const char *path = write_npy("noshape.npy", 1, "{'descr': '<f4', 'fortran_order': False, }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_FORMAT, "shape");
}

static void test_header_garbage(void) {
    float x[1] = {0};
    const char *path =
        write_npy("garbage.npy", 1, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", x, sizeof x);
    EXPECT_READ_FAILS(path, VIDI_ERR_FORMAT, "fortran_order");
}

static void test_missing_file(void) {
    EXPECT_READ_FAILS(test_tmp_path("nope.npy"), VIDI_ERR_NOTFOUND, NULL);
}

static void test_write_refuses_other_dtypes(void) {
    uint16_t x[2] = {0};
    vidi_err e = {0};
    const char *path = test_tmp_path("bf16.npy");
    vidi_status rc = vidi_npy_write(path, VIDI_DTYPE_BF16, 1, (int64_t[]){2}, x, &e);
    CHECK(rc == VIDI_ERR_INVALID && msg_has(e.msg, path) && msg_has(e.msg, "bf16"), "%s", e.msg);
}

int main(int argc, char **argv) {
    if (!test_tmpdir()) return 1;
    static const test_case cases[] = {
        {"f32_roundtrip", test_f32_roundtrip},
        {"i32_roundtrip_and_header_layout", test_i32_roundtrip_and_header_layout},
        {"scalar_and_empty_arrays", test_scalar_and_empty_arrays},
        {"f8_converts_to_f32", test_f8_converts_to_f32},
        {"f2_converts_to_f32", test_f2_converts_to_f32},
        {"i8_converts_to_i32", test_i8_converts_to_i32},
        {"i8_out_of_int32_range", test_i8_out_of_int32_range},
        {"version_2_and_3_headers", test_version_2_and_3_headers},
        {"python2_long_dimensions", test_python2_long_dimensions},
        {"fortran_order_refused", test_fortran_order_refused},
        {"big_endian_refused", test_big_endian_refused},
        {"unsupported_dtype_refused", test_unsupported_dtype_refused},
        {"too_many_dimensions", test_too_many_dimensions},
        {"data_shorter_than_shape", test_data_shorter_than_shape},
        {"data_longer_than_shape", test_data_longer_than_shape},
        {"huge_shape_does_not_overflow", test_huge_shape_does_not_overflow},
        {"bad_magic", test_bad_magic},
        {"truncated_header", test_truncated_header},
        {"header_missing_shape", test_header_missing_shape},
        {"header_garbage", test_header_garbage},
        {"missing_file", test_missing_file},
        {"write_refuses_other_dtypes", test_write_refuses_other_dtypes},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    return rc;
}
