/* tests/unit/test_safetensors.c — model/safetensors: valid files open and
 * read back, and every kind of damaged file is refused with an error that
 * names the file and the tensor. Fixtures are written at run time into a
 * temporary directory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "test_util.h"

/* Write `name`: the u64 `hsize` (strlen(header) padded to 8 with spaces
 * when hsize is UINT64_MAX), the header, then `data_len` bytes 0, 1, 2, ...
 * Returns the path. */
static const char *write_raw(const char *name, uint64_t hsize, const char *header, size_t data_len) {
    const char *path = test_tmp_path(name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return path;
    size_t hl = strlen(header), padded = hl;
    if (hsize == UINT64_MAX) {
        padded = (hl + 7) / 8 * 8;
        hsize = padded;
    }
    for (int i = 0; i < 8; i++)
        fputc((int)((hsize >> (8 * i)) & 0xff), fp);
    fwrite(header, 1, hl, fp);
    for (size_t i = hl; i < padded; i++)
        fputc(' ', fp);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(i & 0xff), fp);
    fclose(fp);
    return path;
}

static const char *write_st(const char *name, const char *header, size_t data_len) {
    return write_raw(name, UINT64_MAX, header, data_len);
}

/* 1 when `s` is NULL or occurs in msg. */
static int msg_has(const char *msg, const char *s) {
    return !s || strstr(msg, s) != NULL;
}
static const char *show(const char *s) {
    return s ? s : "";
}

/* Opening must fail with `st` and a message holding `s1` and `s2` (NULL to skip). */
#define EXPECT_OPEN_FAILS(path, st, s1, s2)                                                                  \
    do {                                                                                                     \
        vidi_st_file *f_ = NULL;                                                                             \
        vidi_err e_ = {0};                                                                                   \
        vidi_status rc_ = vidi_st_open((path), &f_, &e_);                                                    \
        CHECK(rc_ == (st), "status %s, want %s (%s)", vidi_status_name(rc_), vidi_status_name(st), e_.msg);  \
        CHECK(f_ == NULL, "no handle on failure");                                                           \
        CHECK(strstr(e_.msg, (path)) != NULL, "message names the file: %s", e_.msg);                         \
        CHECK(msg_has(e_.msg, (s1)), "message has '%s': %s", show(s1), e_.msg);                              \
        CHECK(msg_has(e_.msg, (s2)), "message has '%s': %s", show(s2), e_.msg);                              \
        vidi_st_close(f_);                                                                                   \
    } while (0)

/* a.weight F32 [2,3] at [0,24), b.bias BF16 [4] at [24,32) */
#define GOOD_HEADER                                                                                          \
    "{\"__metadata__\":{\"format\":\"pt\"},"                                                                 \
    "\"b.bias\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"                                \
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}"

static void test_valid_file_opens_and_reads(void) {
    const char *path = write_st("good.safetensors", GOOD_HEADER, 32);
    vidi_st_file *f = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_st_open(path, &f, &e);
    REQUIRE(rc == VIDI_OK, "open: %s", e.msg);
    CHECK(vidi_st_count(f) == 2, "count %d", vidi_st_count(f));
    CHECK(!strcmp(vidi_st_at(f, 0)->name, "a.weight") && !strcmp(vidi_st_at(f, 1)->name, "b.bias"),
          "iteration is in name order");
    CHECK(vidi_st_at(f, 2) == NULL && vidi_st_at(f, -1) == NULL, "out of range is NULL");
    CHECK(!strcmp(vidi_st_path(f), path), "path kept");
    CHECK(vidi_st_metadata(f, "format") && !strcmp(vidi_st_metadata(f, "format"), "pt"), "metadata");
    CHECK(vidi_st_metadata(f, "nope") == NULL && vidi_st_metadata_count(f) == 1, "metadata count");

    const vidi_st_info *b = vidi_st_find(f, "b.bias");
    REQUIRE(b, "find b.bias");
    CHECK(b->dtype == VIDI_ST_DTYPE_BF16 && b->ndim == 1 && b->shape[0] == 4, "b.bias info");
    CHECK(b->begin == 24 && b->end == 32, "b.bias offsets");
    CHECK(vidi_st_find(f, "c") == NULL, "unknown name is NULL");
    const unsigned char *raw = vidi_st_data(f, b);
    CHECK(raw[0] == 24 && raw[7] == 31, "raw bytes of b.bias");

    vidi_tensor t;
    rc = vidi_st_get(f, "a.weight", &t, &e);
    REQUIRE(rc == VIDI_OK, "view a.weight: %s", e.msg);
    CHECK(t.dtype == VIDI_DTYPE_F32 && t.ndim == 2 && t.shape[0] == 2 && t.shape[1] == 3, "a.weight view");
    CHECK(((const unsigned char *)t.data)[5] == 5, "a.weight data");
    rc = vidi_st_get(f, "b.bias", &t, &e);
    CHECK(rc == VIDI_OK && t.dtype == VIDI_DTYPE_BF16, "bf16 view: %s", e.msg);
    vidi_st_close(f);
}

static void test_write_then_read_roundtrip(void) {
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3c00, 0x4000, 0x4200};
    int64_t ids[2] = {-1, 1LL << 40};
    unsigned char flag = 1;
    vidi_st_entry ents[] = {
        {"w", VIDI_ST_DTYPE_F32, 2, (int64_t[]){2, 3}, w},
        {"h", VIDI_ST_DTYPE_F16, 1, (int64_t[]){3}, h},
        {"ids", VIDI_ST_DTYPE_I64, 1, (int64_t[]){2}, ids},
        {"flag", VIDI_ST_DTYPE_BOOL, 0, NULL, &flag},
        {"empty", VIDI_ST_DTYPE_F32, 2, (int64_t[]){0, 5}, NULL},
    };
    const char *meta[] = {"format", "pt", "note", "roundtrip"};
    const char *path = test_tmp_path("written.safetensors");
    vidi_err e = {0};
    vidi_status rc = vidi_st_write(path, ents, 5, meta, 2, &e);
    REQUIRE(rc == VIDI_OK, "write: %s", e.msg);

    FILE *fp = fopen(path, "rb");
    REQUIRE(fp, "reopen");
    unsigned char sz[8];
    CHECK(fread(sz, 1, 8, fp) == 8 && sz[0] % 8 == 0, "header padded to 8 bytes");
    fclose(fp);

    vidi_st_file *f = NULL;
    rc = vidi_st_open(path, &f, &e);
    REQUIRE(rc == VIDI_OK, "open: %s", e.msg);
    CHECK(vidi_st_count(f) == 5, "count");
    CHECK(!strcmp(vidi_st_metadata(f, "note"), "roundtrip"), "metadata");
    vidi_tensor t;
    REQUIRE(vidi_st_get(f, "w", &t, &e) == VIDI_OK, "w: %s", e.msg);
    CHECK(((const float *)t.data)[4] == 5.0f, "f32 data");
    REQUIRE(vidi_st_get(f, "h", &t, &e) == VIDI_OK, "h: %s", e.msg);
    CHECK(t.dtype == VIDI_DTYPE_F16 && vidi_f16_to_f32(((const uint16_t *)t.data)[2]) == 3.0f, "f16 data");
    const vidi_st_info *ii = vidi_st_find(f, "ids");
    REQUIRE(ii, "ids");
    CHECK((uintptr_t)vidi_st_data(f, ii) % 8 == 0, "the writer keeps I64 data aligned");
    int64_t back[2];
    memcpy(back, vidi_st_data(f, ii), sizeof back);
    CHECK(back[0] == -1 && back[1] == (1LL << 40), "i64 raw data");
    const vidi_st_info *fl = vidi_st_find(f, "flag");
    CHECK(fl && fl->ndim == 0 && fl->end - fl->begin == 1, "scalar BOOL");
    REQUIRE(vidi_st_get(f, "empty", &t, &e) == VIDI_OK, "empty: %s", e.msg);
    CHECK(t.shape[0] == 0 && t.shape[1] == 5, "zero-size tensor");
    vidi_st_close(f);
}

static void test_write_rejects_duplicate_names(void) {
    float w[1] = {0};
    vidi_st_entry ents[] = {{"w", VIDI_ST_DTYPE_F32, 1, (int64_t[]){1}, w},
                            {"w", VIDI_ST_DTYPE_F32, 1, (int64_t[]){1}, w}};
    vidi_err e = {0};
    vidi_status rc = vidi_st_write(test_tmp_path("dup-w.safetensors"), ents, 2, NULL, 0, &e);
    CHECK(rc == VIDI_ERR_INVALID && strstr(e.msg, "'w'"), "duplicate refused: %s", e.msg);
}

static void test_empty_header_with_no_tensors_is_valid(void) {
    const char *path = write_st("none.safetensors", "{}", 0);
    vidi_st_file *f = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_st_open(path, &f, &e) == VIDI_OK, "open: %s", e.msg);
    CHECK(vidi_st_count(f) == 0 && vidi_st_find(f, "x") == NULL, "empty");
    vidi_st_close(f);
}

static void test_missing_file(void) {
    EXPECT_OPEN_FAILS(test_tmp_path("does-not-exist.safetensors"), VIDI_ERR_NOTFOUND, NULL, NULL);
}

static void test_empty_file(void) {
    const char *path = test_tmp_path("zero.safetensors");
    FILE *fp = fopen(path, "wb");
    if (fp) fclose(fp);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "truncated", NULL);
}

static void test_truncated_in_size_field(void) {
    const char *path = test_tmp_path("short.safetensors");
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fwrite("\x10\x00\x00", 1, 3, fp);
        fclose(fp);
    }
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "truncated", NULL);
}

static void test_truncated_in_header(void) {
    /* the size field announces the full header but the file stops halfway */
    size_t hl = strlen(GOOD_HEADER);
    const char *path = test_tmp_path("cut-header.safetensors");
    FILE *fp = fopen(path, "wb");
    if (fp) {
        for (int i = 0; i < 8; i++)
            fputc((int)((hl >> (8 * i)) & 0xff), fp);
        fwrite(GOOD_HEADER, 1, hl / 2, fp);
        fclose(fp);
    }
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "truncated", NULL);
}

static void test_truncated_in_data(void) {
    const char *path = write_st("cut-data.safetensors", GOOD_HEADER, 28);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'b.bias'", "past the end");
}

static void test_header_size_over_limit(void) {
    const char *path = write_raw("huge-header.safetensors", 100000001ull, "{}", 0);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_RANGE, "100000001", "limit");
}

static void test_header_size_beyond_file(void) {
    const char *path = write_raw("header-past-eof.safetensors", 4096, "{}", 16);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "4096", NULL);
}

static void test_header_size_u64_max(void) {
    const char *path = write_raw("header-max.safetensors", UINT64_MAX - 1, "{}", 0);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_RANGE, "limit", NULL);
}

static void test_bad_header_json(void) {
    const char *path = write_st("bad-json.safetensors", "{\"a\": {\"dtype\": \"F32\",", 0);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "not valid JSON", NULL);
}

static void test_header_not_utf8(void) {
    const char *path = write_st("bad-utf8.safetensors",
                                "{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "not valid JSON", NULL);
}

static void test_header_not_object(void) {
    const char *path = write_st("array.safetensors", "[1, 2, 3]", 0);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "not a JSON object", NULL);
}

static void test_duplicate_tensor_name(void) {
    const char *path = write_st("dup.safetensors",
                                "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                                8);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "duplicate", NULL);
}

static void test_entry_not_object(void) {
    const char *path = write_st("entry-int.safetensors", "{\"x.weight\": 5}", 0);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "not an object");
}

static void test_missing_dtype(void) {
    const char *path =
        write_st("no-dtype.safetensors", "{\"x.weight\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "dtype");
}

static void test_dtype_not_string(void) {
    const char *path = write_st("dtype-int.safetensors",
                                "{\"x.weight\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "dtype");
}

static void test_missing_shape(void) {
    const char *path =
        write_st("no-shape.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "shape");
}

static void test_missing_data_offsets(void) {
    const char *path =
        write_st("no-offsets.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "data_offsets");
}

static void test_data_offsets_not_a_pair(void) {
    const char *path =
        write_st("offsets-3.safetensors",
                 "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "data_offsets");
}

static void test_unknown_dtype(void) {
    const char *path = write_st(
        "q4.safetensors", "{\"x.weight\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_UNSUPPORTED, "'x.weight'", "Q4_K");
}

static void test_negative_shape(void) {
    const char *path = write_st(
        "neg.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "negative");
}

static void test_shape_not_integer(void) {
    const char *path =
        write_st("real-dim.safetensors",
                 "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "shape[0]");
}

static void test_overflowing_shape(void) {
    const char *path = write_st("overflow.safetensors",
                                "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
                                "\"data_offsets\":[0,4]}}",
                                4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "overflow");
}

static void test_too_many_dims(void) {
    const char *path = write_st("9d.safetensors",
                                "{\"x.weight\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                                "\"data_offsets\":[0,1]}}",
                                1);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_UNSUPPORTED, "'x.weight'", "dimensions");
}

static void test_offsets_out_of_range(void) {
    const char *path =
        write_st("offset-oob.safetensors",
                 "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[1000,1016]}}", 16);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "[1000, 1016)");
}

static void test_offsets_negative(void) {
    const char *path =
        write_st("offset-neg.safetensors",
                 "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "negative");
}

static void test_offsets_begin_after_end(void) {
    const char *path = write_st("offset-rev.safetensors",
                                "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "'x.weight'", "begins after it ends");
}

static void test_offsets_gap(void) {
    const char *path = write_st("gap.safetensors",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                                20);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "tensor 'b'", "gap of 4 bytes");
}

static void test_offsets_gap_at_start(void) {
    const char *path = write_st("gap-start.safetensors",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "tensor 'a'", "gap");
}

static void test_offsets_overlap(void) {
    const char *path = write_st("overlap.safetensors",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                                16);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "tensor 'b'", "overlap tensor 'a'");
}

static void test_trailing_bytes_after_last_tensor(void) {
    const char *path = write_st("trailing.safetensors",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "4 trailing bytes", "tensor 'a'");
}

static void test_size_not_numel_times_dtype(void) {
    const char *path =
        write_st("size.safetensors",
                 "{\"x.weight\":{\"dtype\":\"BF16\",\"shape\":[3,4],\"data_offsets\":[0,100]}}", 100);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT,
                      "tensor 'x.weight': data_offsets [0, 100) but shape [3,4] of BF16 needs 24 bytes",
                      NULL);
}

static void test_metadata_not_object(void) {
    const char *path = write_st("meta-list.safetensors", "{\"__metadata__\":[\"a\"]}", 0);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "__metadata__", NULL);
}

static void test_metadata_value_not_string(void) {
    const char *path = write_st("meta-int.safetensors", "{\"__metadata__\":{\"format\":1}}", 0);
    EXPECT_OPEN_FAILS(path, VIDI_ERR_FORMAT, "__metadata__", "'format'");
}

static void test_view_unsupported_dtype(void) {
    const char *path =
        write_st("i64.safetensors",
                 "{\"position_ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16);
    vidi_st_file *f = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_st_open(path, &f, &e) == VIDI_OK, "an I64 tensor is a valid file: %s", e.msg);
    vidi_tensor t;
    vidi_status rc = vidi_st_get(f, "position_ids", &t, &e);
    CHECK(rc == VIDI_ERR_UNSUPPORTED, "status %s", vidi_status_name(rc));
    CHECK(strstr(e.msg, path) && strstr(e.msg, "'position_ids'") && strstr(e.msg, "I64"), "message: %s",
          e.msg);
    vidi_st_close(f);
}

static void test_view_misaligned_data(void) {
    /* a header of 5 bytes puts the F32 data at file offset 13 */
    const char *path = test_tmp_path("misaligned.safetensors");
    const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp, "create");
    size_t hl = strlen(hdr) + 1; /* one trailing space: odd header length */
    if ((8 + hl) % 4 == 0) hl++;
    for (int i = 0; i < 8; i++)
        fputc((int)((hl >> (8 * i)) & 0xff), fp);
    fputs(hdr, fp);
    for (size_t i = strlen(hdr); i < hl; i++)
        fputc(' ', fp);
    fwrite("\0\0\x80\x3f", 1, 4, fp);
    fclose(fp);
    vidi_st_file *f = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_st_open(path, &f, &e) == VIDI_OK, "open: %s", e.msg);
    vidi_tensor t;
    vidi_status rc = vidi_st_get(f, "x", &t, &e);
    CHECK(rc == VIDI_ERR_UNSUPPORTED && strstr(e.msg, "'x'") && strstr(e.msg, "aligned"), "%s: %s",
          vidi_status_name(rc), e.msg);
    vidi_st_close(f);
}

static void test_five_dim_view_folds_trailing_dims(void) {
    const char *path =
        write_st("conv3d.safetensors",
                 "{\"visual.patch_embed.proj.weight\":{\"dtype\":\"BF16\",\"shape\":[4,3,2,2,2],"
                 "\"data_offsets\":[0,192]}}",
                 192);
    vidi_st_file *f = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_st_open(path, &f, &e) == VIDI_OK, "open: %s", e.msg);
    const vidi_st_info *info = vidi_st_find(f, "visual.patch_embed.proj.weight");
    REQUIRE(info && info->ndim == 5 && info->shape[4] == 2, "the info keeps all 5 dims");
    vidi_tensor t;
    REQUIRE(vidi_st_view(f, info, &t, &e) == VIDI_OK, "view: %s", e.msg);
    CHECK(t.ndim == 4 && t.shape[0] == 4 && t.shape[1] == 3 && t.shape[2] == 2 && t.shape[3] == 4,
          "view [4,3,2,4], got ndim %d last %lld", t.ndim, (long long)t.shape[3]);
    CHECK(vidi_tensor_numel(&t) == 96, "same element count");
    vidi_st_close(f);
}

static void test_get_missing_name(void) {
    const char *path = write_st("good2.safetensors", GOOD_HEADER, 32);
    vidi_st_file *f = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_st_open(path, &f, &e) == VIDI_OK, "open: %s", e.msg);
    vidi_tensor t;
    vidi_status rc = vidi_st_get(f, "c.weight", &t, &e);
    CHECK(rc == VIDI_ERR_NOTFOUND && strstr(e.msg, "'c.weight'") && strstr(e.msg, path), "%s", e.msg);
    vidi_st_close(f);
}

static void test_dtype_names_and_sizes(void) {
    vidi_st_dtype d;
    CHECK(vidi_st_dtype_parse("F8_E4M3", &d) == VIDI_OK && d == VIDI_ST_DTYPE_F8_E4M3, "F8_E4M3");
    CHECK(vidi_st_dtype_parse("bf16", &d) == VIDI_ERR_NOTFOUND, "names are case sensitive");
    CHECK(vidi_st_dtype_size(VIDI_ST_DTYPE_U64) == 8 && vidi_st_dtype_size(VIDI_ST_DTYPE_BOOL) == 1, "sizes");
    for (int i = 0; i < VIDI_ST_DTYPE_COUNT; i++) {
        CHECK(vidi_st_dtype_parse(vidi_st_dtype_name((vidi_st_dtype)i), &d) == VIDI_OK &&
                  d == (vidi_st_dtype)i,
              "round trip of dtype %d", i);
    }
}

int main(int argc, char **argv) {
    if (!test_tmpdir()) return 1;
    static const test_case cases[] = {
        {"valid_file_opens_and_reads", test_valid_file_opens_and_reads},
        {"write_then_read_roundtrip", test_write_then_read_roundtrip},
        {"write_rejects_duplicate_names", test_write_rejects_duplicate_names},
        {"empty_header_with_no_tensors_is_valid", test_empty_header_with_no_tensors_is_valid},
        {"missing_file", test_missing_file},
        {"empty_file", test_empty_file},
        {"truncated_in_size_field", test_truncated_in_size_field},
        {"truncated_in_header", test_truncated_in_header},
        {"truncated_in_data", test_truncated_in_data},
        {"header_size_over_limit", test_header_size_over_limit},
        {"header_size_beyond_file", test_header_size_beyond_file},
        {"header_size_u64_max", test_header_size_u64_max},
        {"bad_header_json", test_bad_header_json},
        {"header_not_utf8", test_header_not_utf8},
        {"header_not_object", test_header_not_object},
        {"duplicate_tensor_name", test_duplicate_tensor_name},
        {"entry_not_object", test_entry_not_object},
        {"missing_dtype", test_missing_dtype},
        {"dtype_not_string", test_dtype_not_string},
        {"missing_shape", test_missing_shape},
        {"missing_data_offsets", test_missing_data_offsets},
        {"data_offsets_not_a_pair", test_data_offsets_not_a_pair},
        {"unknown_dtype", test_unknown_dtype},
        {"negative_shape", test_negative_shape},
        {"shape_not_integer", test_shape_not_integer},
        {"overflowing_shape", test_overflowing_shape},
        {"too_many_dims", test_too_many_dims},
        {"offsets_out_of_range", test_offsets_out_of_range},
        {"offsets_negative", test_offsets_negative},
        {"offsets_begin_after_end", test_offsets_begin_after_end},
        {"offsets_gap", test_offsets_gap},
        {"offsets_gap_at_start", test_offsets_gap_at_start},
        {"offsets_overlap", test_offsets_overlap},
        {"trailing_bytes_after_last_tensor", test_trailing_bytes_after_last_tensor},
        {"size_not_numel_times_dtype", test_size_not_numel_times_dtype},
        {"metadata_not_object", test_metadata_not_object},
        {"metadata_value_not_string", test_metadata_value_not_string},
        {"view_unsupported_dtype", test_view_unsupported_dtype},
        {"view_misaligned_data", test_view_misaligned_data},
        {"five_dim_view_folds_trailing_dims", test_five_dim_view_folds_trailing_dims},
        {"get_missing_name", test_get_missing_name},
        {"dtype_names_and_sizes", test_dtype_names_and_sizes},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    return rc;
}
