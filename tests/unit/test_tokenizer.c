/* tests/unit/test_tokenizer.c — model/tokenizer.h against the reference ids
 * and texts that the Hugging Face `tokenizers` library produced
 * (tests/data/golden/tokenizer.json), for both tiny model tokenizers (one
 * with "a b" merges, one with ["a", "b"] merges); plus the streaming
 * detokenizer, the chat template, and the error paths. */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "model/tokenizer.h"
#include "test_util.h"

/* ---- fixtures ---- */

static json_t *golden(void)
{
    static json_t *g;
    if (!g) {
        json_error_t je;
        g = json_load_file(test_data_path("golden/tokenizer.json"), JSON_ALLOW_NUL, &je);
        if (!g) fprintf(stderr, "golden/tokenizer.json: %s (line %d)\n", je.text, je.line);
    }
    return g;
}

/* Every tokenizer file the golden cases apply to: "tokenizer" first, then
 * "also_tokenizers". Returns the count (paths relative to tests/data). */
static int golden_tokenizers(const char *paths[4])
{
    json_t *g = golden();
    int n = 0;
    if (!g) return 0;
    paths[n++] = json_string_value(json_object_get(g, "tokenizer"));
    json_t *also = json_object_get(g, "also_tokenizers");
    for (size_t i = 0; i < json_array_size(also) && n < 4; i++) paths[n++] = json_string_value(json_array_get(also, i));
    return n;
}

static vidi_tokenizer *load_rel(const char *rel)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", test_data_path(rel));
    vidi_err err = {0};
    vidi_tokenizer *tok = NULL;
    if (vidi_tokenizer_load(path, &tok, &err) != VIDI_OK) fprintf(stderr, "load %s: %s\n", path, err.msg);
    return tok;
}

/* The Qwen2-VL tokenizer of the tiny model; loaded once. */
static vidi_tokenizer *tiny(void)
{
    static vidi_tokenizer *tok;
    if (!tok) tok = load_rel("models/tiny-qwen2vl/tokenizer.json");
    return tok;
}

static int32_t *json_ids(json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return ids;
}

static int ids_equal(const int32_t *a, size_t na, json_t *b)
{
    if (na != json_array_size(b)) return 0;
    for (size_t i = 0; i < na; i++)
        if (a[i] != json_integer_value(json_array_get(b, i))) return 0;
    return 1;
}

/* ---- golden: encode and decode match tokenizers exactly ---- */

static void test_golden_encode_matches_hf_for_both_tokenizers(void)
{
    const char *paths[4];
    int nt = golden_tokenizers(paths);
    REQUIRE(nt == 2, "golden/tokenizer.json must name two tokenizers (got %d)", nt);
    json_t *cases = json_object_get(golden(), "cases");
    REQUIRE(json_array_size(cases) >= 20, "too few golden cases (%zu)", json_array_size(cases));
    for (int t = 0; t < nt; t++) {
        vidi_tokenizer *tok = load_rel(paths[t]);
        REQUIRE(tok, "cannot load %s", paths[t]);
        size_t i;
        json_t *c;
        json_array_foreach(cases, i, c) {
            json_t *text = json_object_get(c, "text");
            int32_t *ids = NULL;
            size_t n = 0;
            vidi_err err = {0};
            vidi_status st = vidi_tokenizer_encode(tok, json_string_value(text), json_string_length(text), &ids, &n, &err);
            CHECK(st == VIDI_OK, "%s case %zu: %s", paths[t], i, err.msg);
            if (st == VIDI_OK)
                CHECK(ids_equal(ids, n, json_object_get(c, "ids")), "%s case %zu (%.40s): ids differ from tokenizers",
                      paths[t], i, json_string_value(text));
            free(ids);
        }
        vidi_tokenizer_free(tok);
    }
}

static void test_golden_decode_matches_hf_for_both_tokenizers(void)
{
    const char *paths[4];
    int nt = golden_tokenizers(paths);
    REQUIRE(nt == 2, "golden/tokenizer.json must name two tokenizers (got %d)", nt);
    json_t *cases = json_object_get(golden(), "decode_cases");
    REQUIRE(json_array_size(cases) >= 5, "too few golden decode cases");
    int saw_skip = 0;
    for (int t = 0; t < nt; t++) {
        vidi_tokenizer *tok = load_rel(paths[t]);
        REQUIRE(tok, "cannot load %s", paths[t]);
        size_t i;
        json_t *c;
        json_array_foreach(cases, i, c) {
            size_t n;
            int32_t *ids = json_ids(json_object_get(c, "ids"), &n);
            int skip = json_is_true(json_object_get(c, "skip_special"));
            json_t *want = json_object_get(c, "text");
            char *out = NULL;
            vidi_err err = {0};
            vidi_status st = vidi_tokenizer_decode(tok, ids, n, skip, &out, &err);
            CHECK(st == VIDI_OK, "%s decode case %zu: %s", paths[t], i, err.msg);
            if (st == VIDI_OK)
                CHECK(strlen(out) == json_string_length(want) && memcmp(out, json_string_value(want), strlen(out)) == 0,
                      "%s decode case %zu: got \"%s\", want \"%s\"", paths[t], i, out, json_string_value(want));
            saw_skip += skip;
            free(out);
            free(ids);
        }
        vidi_tokenizer_free(tok);
    }
    CHECK(saw_skip > 0, "no golden decode case uses skip_special");
}

/* Decoding the ids of an encode gives back the (NFC) text, for every case. */
static void test_decode_of_encode_is_the_nfc_text(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    json_t *cases = json_object_get(golden(), "cases");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_t *text = json_object_get(c, "text");
        size_t n;
        int32_t *ids = json_ids(json_object_get(c, "ids"), &n);
        char *out = NULL;
        vidi_err err = {0};
        CHECK(vidi_tokenizer_decode(tok, ids, n, 0, &out, &err) == VIDI_OK, "decode: %s", err.msg);
        char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)json_string_value(text));
        if (out && nfc) CHECK(strcmp(out, nfc) == 0, "case %zu: decode(encode(x)) != NFC(x): \"%s\"", i, out);
        free(nfc);
        free(out);
        free(ids);
    }
}

/* ---- vocabulary queries ---- */

static void test_special_tokens_are_found_and_flagged(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    static const char *const special[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                          "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"};
    int32_t vs = vidi_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) {
        int32_t id = vidi_tokenizer_token_id(tok, special[i]);
        CHECK(id >= 0 && id < vs, "%s: id %d", special[i], (int)id);
        CHECK(vidi_tokenizer_is_special(tok, id), "%s is not flagged special", special[i]);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(vidi_tokenizer_encode(tok, special[i], strlen(special[i]), &ids, &n, NULL) == VIDI_OK && n == 1 &&
                  ids[0] == id,
              "%s written in text does not encode to its id", special[i]);
        free(ids);
    }
    int32_t tc = vidi_tokenizer_token_id(tok, "<tool_call>");
    if (tc >= 0) CHECK(!vidi_tokenizer_is_special(tok, tc), "<tool_call> is an added but not special token");
    CHECK(vidi_tokenizer_token_id(tok, "no-such-token-anywhere") == -1, "unknown token has an id");
    CHECK(vidi_tokenizer_token_id(tok, NULL) == -1, "NULL token has an id");
    CHECK(!vidi_tokenizer_is_special(tok, -1) && !vidi_tokenizer_is_special(tok, vs), "out-of-range id is special");
}

/* Special tokens split the text, and "<|im_start" (incomplete) does not. */
static void test_added_tokens_split_longest_first(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    int32_t start = vidi_tokenizer_token_id(tok, "<|im_start|>"), end = vidi_tokenizer_token_id(tok, "<|im_end|>");
    const char *text = "<|im_start|>user<|im_end|><|im_start";
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE(vidi_tokenizer_encode(tok, text, strlen(text), &ids, &n, NULL) == VIDI_OK, "encode");
    int n_start = 0, n_end = 0;
    for (size_t i = 0; i < n; i++) {
        n_start += ids[i] == start;
        n_end += ids[i] == end;
    }
    CHECK(n > 3 && ids[0] == start && n_start == 1 && n_end == 1, "special tokens not split out exactly once each");
    char *out = NULL;
    CHECK(vidi_tokenizer_decode(tok, ids, n, 1, &out, NULL) == VIDI_OK && strcmp(out, "user<|im_start") == 0,
          "skip_special decode: \"%s\"", out ? out : "(null)");
    free(out);
    free(ids);
}

/* ---- streaming detokenizer ---- */

static void test_detok_holds_back_a_split_emoji(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    const char *emoji = "\xF0\x9F\x98\x80"; /* U+1F600, one byte-level token per byte here */
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE(vidi_tokenizer_encode(tok, emoji, 4, &ids, &n, NULL) == VIDI_OK, "encode");
    REQUIRE(n >= 2, "the tiny vocabulary should split the emoji into several tokens (got %zu)", n);
    vidi_detok d;
    vidi_detok_init(&d, tok, 0);
    char buf[64];
    size_t w = 99;
    for (size_t i = 0; i + 1 < n; i++) {
        CHECK(vidi_detok_push(&d, ids[i], buf, sizeof buf, &w, NULL) == VIDI_OK, "push %zu", i);
        CHECK(w == 0 && buf[0] == '\0', "token %zu of the emoji emitted %zu bytes early", i, w);
    }
    CHECK(vidi_detok_push(&d, ids[n - 1], buf, sizeof buf, &w, NULL) == VIDI_OK, "last push");
    CHECK(w == 4 && memcmp(buf, emoji, 5) == 0, "emoji not emitted whole on its last token");
    CHECK(vidi_detok_flush(&d, buf, sizeof buf, &w, NULL) == VIDI_OK && w == 0, "nothing should be left");

    /* an emoji cut short ends as one U+FFFD at flush */
    vidi_detok_init(&d, tok, 0);
    CHECK(vidi_detok_push(&d, ids[0], buf, sizeof buf, &w, NULL) == VIDI_OK && w == 0, "first byte held");
    CHECK(vidi_detok_flush(&d, buf, sizeof buf, &w, NULL) == VIDI_OK && w == 3 && strcmp(buf, "\xEF\xBF\xBD") == 0,
          "flush of a partial sequence should be U+FFFD");
    free(ids);
}

/* A buffer too small is VIDI_ERR_RANGE and leaves the stream as it was. */
static void test_detok_small_buffer_is_range_and_retryable(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE(vidi_tokenizer_encode(tok, "Hello", 5, &ids, &n, NULL) == VIDI_OK && n >= 1, "encode");
    vidi_detok d;
    vidi_detok_init(&d, tok, 0);
    char small[1], buf[64];
    size_t w;
    vidi_err err = {0};
    CHECK(vidi_detok_push(&d, ids[0], small, sizeof small, &w, &err) == VIDI_ERR_RANGE, "expected VIDI_ERR_RANGE");
    CHECK(vidi_detok_push(&d, ids[0], buf, sizeof buf, &w, &err) == VIDI_OK && w > 0, "retry with room");
    free(ids);
}

/* Streaming every golden case, with and without skip_special, gives the
 * text of one whole decode. */
static void test_detok_stream_equals_full_decode(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    json_t *lists[2] = {json_object_get(golden(), "cases"), json_object_get(golden(), "decode_cases")};
    int checked = 0;
    for (int l = 0; l < 2; l++) {
        size_t i;
        json_t *c;
        json_array_foreach(lists[l], i, c) {
            size_t n;
            int32_t *ids = json_ids(json_object_get(c, "ids"), &n);
            for (int skip = 0; skip < 2; skip++) {
                char *full = NULL;
                REQUIRE(vidi_tokenizer_decode(tok, ids, n, skip, &full, NULL) == VIDI_OK, "decode");
                size_t cap = strlen(full) + 64, len = 0;
                char *acc = calloc(cap, 1);
                vidi_detok d;
                vidi_detok_init(&d, tok, skip);
                char buf[256];
                size_t w;
                for (size_t k = 0; k < n; k++) {
                    CHECK(vidi_detok_push(&d, ids[k], buf, sizeof buf, &w, NULL) == VIDI_OK, "push");
                    CHECK(strlen(buf) == w && len + w < cap, "push wrote %zu bytes", w);
                    if (len + w < cap) {
                        memcpy(acc + len, buf, w);
                        len += w;
                    }
                }
                CHECK(vidi_detok_flush(&d, buf, sizeof buf, &w, NULL) == VIDI_OK, "flush");
                if (len + w < cap) {
                    memcpy(acc + len, buf, w);
                    len += w;
                }
                CHECK(len == strlen(full) && memcmp(acc, full, len) == 0, "stream != decode: \"%s\" vs \"%s\"", acc,
                      full);
                checked++;
                free(acc);
                free(full);
            }
            free(ids);
        }
    }
    CHECK(checked > 40, "only %d streams checked", checked);
}

/* ---- chat template ---- */

static char *render(const vidi_chat_message *m, int n, int gen, int vision_id)
{
    char *out = NULL;
    vidi_err err = {0};
    if (vidi_chat_template_render_ex(m, n, gen, vision_id, &out, &err) != VIDI_OK) {
        fprintf(stderr, "render: %s\n", err.msg);
        return NULL;
    }
    return out;
}

static void test_chat_inserts_default_system_turn(void)
{
    vidi_chat_part hi = {VIDI_CHAT_TEXT, "Hi"};
    vidi_chat_message m[] = {{"user", &hi, 1}};
    char *out = NULL;
    REQUIRE(vidi_chat_template_render(m, 1, 1, &out, NULL) == VIDI_OK, "render");
    CHECK(strcmp(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") == 0,
          "got \"%s\"", out);
    free(out);
}

static void test_chat_explicit_system_is_not_duplicated(void)
{
    vidi_chat_part sys = {VIDI_CHAT_TEXT, "Be brief."}, hi = {VIDI_CHAT_TEXT, "Hi"};
    vidi_chat_message m[] = {{"system", &sys, 1}, {"user", &hi, 1}};
    char *out = render(m, 2, 0, 0);
    REQUIRE(out, "render");
    CHECK(strcmp(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n") == 0, "got \"%s\"",
          out);
    CHECK(!strstr(out, "helpful assistant"), "default system turn added next to an explicit one");
    free(out);
}

/* Images and videos become their placeholders in order, parts joined with
 * nothing between them; add_vision_id numbers them over the conversation
 * (the expected strings are what the shipped Jinja template renders). */
static void test_chat_media_placeholders_in_order(void)
{
    vidi_chat_part p1[] = {{VIDI_CHAT_IMAGE, NULL}, {VIDI_CHAT_TEXT, "and"}, {VIDI_CHAT_VIDEO, NULL},
                           {VIDI_CHAT_IMAGE, NULL}, {VIDI_CHAT_TEXT, "Describe."}};
    vidi_chat_part p2[] = {{VIDI_CHAT_TEXT, "Ok."}};
    vidi_chat_part p3[] = {{VIDI_CHAT_IMAGE, NULL}};
    vidi_chat_message m[] = {{"user", p1, 5}, {"assistant", p2, 1}, {"user", p3, 1}};
    char *plain = render(m, 3, 1, 0);
    char *ids = render(m, 3, 1, 1);
    REQUIRE(plain && ids, "render");
    CHECK(strcmp(plain, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                        "<|vision_start|><|image_pad|><|vision_end|>and<|vision_start|><|video_pad|><|vision_end|>"
                        "<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
                        "<|im_start|>assistant\nOk.<|im_end|>\n<|im_start|>user\n"
                        "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n") == 0,
          "got \"%s\"", plain);
    CHECK(strcmp(ids, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "Picture 1: <|vision_start|><|image_pad|><|vision_end|>andVideo 1: <|vision_start|><|video_pad|>"
                      "<|vision_end|>Picture 2: <|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
                      "<|im_start|>assistant\nOk.<|im_end|>\n<|im_start|>user\nPicture 3: <|vision_start|>"
                      "<|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n") == 0,
          "got \"%s\"", ids);

    /* tokenized, the pads come out as single ids in the same order */
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    int32_t img = vidi_tokenizer_token_id(tok, "<|image_pad|>"), vid = vidi_tokenizer_token_id(tok, "<|video_pad|>");
    int32_t *t = NULL;
    size_t n = 0;
    REQUIRE(vidi_tokenizer_encode(tok, plain, strlen(plain), &t, &n, NULL) == VIDI_OK, "encode prompt");
    char order[8] = {0};
    int k = 0;
    for (size_t i = 0; i < n && k < 7; i++)
        if (t[i] == img || t[i] == vid) order[k++] = t[i] == img ? 'I' : 'V';
    CHECK(strcmp(order, "IVII") == 0, "pad order %s", order);
    free(t);
    free(plain);
    free(ids);
}

static void test_chat_generation_prompt_only_when_asked(void)
{
    vidi_chat_part hi = {VIDI_CHAT_TEXT, "Hi"};
    vidi_chat_message m[] = {{"user", &hi, 1}};
    char *with = render(m, 1, 1, 0), *without = render(m, 1, 0, 0), *empty = render(NULL, 0, 1, 0);
    REQUIRE(with && without && empty, "render");
    size_t lw = strlen(with), lo = strlen(without);
    const char *gen = "<|im_start|>assistant\n";
    CHECK(lw == lo + strlen(gen) && strcmp(with + lo, gen) == 0 && strncmp(with, without, lo) == 0,
          "generation prompt is not just appended");
    CHECK(strcmp(empty, gen) == 0, "no messages: \"%s\"", empty);
    free(with);
    free(without);
    free(empty);
}

static void test_chat_rejects_bad_messages(void)
{
    vidi_chat_part bad_text = {VIDI_CHAT_TEXT, NULL}, bad_kind = {(vidi_chat_part_kind)7, "x"};
    vidi_chat_message no_role[] = {{NULL, NULL, 0}};
    vidi_chat_message null_text[] = {{"user", &bad_text, 1}};
    vidi_chat_message kind[] = {{"user", &bad_kind, 1}};
    vidi_chat_message no_parts[] = {{"user", NULL, 2}};
    char *out = (char *)1;
    vidi_err err = {0};
    CHECK(vidi_chat_template_render(no_role, 1, 1, &out, &err) == VIDI_ERR_INVALID && out == NULL, "NULL role");
    CHECK(vidi_chat_template_render(null_text, 1, 1, &out, &err) == VIDI_ERR_INVALID, "NULL text");
    CHECK(vidi_chat_template_render(kind, 1, 1, &out, &err) == VIDI_ERR_INVALID, "unknown part kind");
    CHECK(vidi_chat_template_render(no_parts, 1, 1, &out, &err) == VIDI_ERR_INVALID, "parts NULL with n_parts 2");
    CHECK(vidi_chat_template_render(NULL, 1, 1, &out, &err) == VIDI_ERR_INVALID, "msgs NULL with n_msgs 1");
    CHECK(vidi_chat_template_render(no_role, 1, 1, NULL, &err) == VIDI_ERR_INVALID, "out NULL");
}

/* ---- errors ---- */

static void test_invalid_utf8_is_an_error_with_its_offset(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    static const struct {
        const char *s;
        size_t len, at;
    } bad[] = {
        {"ab\xC3(", 4, 2},               /* lead byte, no continuation */
        {"\xC0\x80", 2, 0},              /* overlong NUL */
        {"ok \xED\xA0\x80", 6, 3},       /* UTF-16 surrogate */
        {"abc\xE2\x82", 5, 3},           /* cut off at the end */
        {"x\xF4\x90\x80\x80", 5, 1},     /* above U+10FFFF */
        {"caf\xC3\xA9 \xFF", 7, 6},      /* 0xFF never appears */
        {"\x80", 1, 0},                  /* lone continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 5;
        vidi_err err = {0};
        CHECK(vidi_tokenizer_encode(tok, bad[i].s, bad[i].len, &ids, &n, &err) == VIDI_ERR_INVALID, "case %zu", i);
        CHECK(ids == NULL && n == 0, "case %zu: outputs not cleared", i);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].at);
        CHECK(strstr(err.msg, want) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i, err.msg, want);
    }
    /* a NUL byte is valid UTF-8 and round-trips */
    int32_t *ids = NULL;
    size_t n = 0;
    char *out = NULL;
    CHECK(vidi_tokenizer_encode(tok, "a\0b", 3, &ids, &n, NULL) == VIDI_OK && n >= 2, "text with NUL");
    CHECK(vidi_tokenizer_decode(tok, ids, n, 0, &out, NULL) == VIDI_OK && out[0] == 'a' && out[1] == '\0' &&
              out[2] == 'b',
          "NUL round trip");
    free(out);
    free(ids);
}

static void test_text_over_the_limit_is_refused(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    size_t len = ((size_t)64 << 20) + 1;
    char *big = malloc(len);
    REQUIRE(big, "malloc");
    memset(big, 'a', len);
    int32_t *ids = NULL;
    size_t n = 0;
    vidi_err err = {0};
    CHECK(vidi_tokenizer_encode(tok, big, len, &ids, &n, &err) == VIDI_ERR_RANGE, "64 MiB + 1 accepted");
    free(big);
    CHECK(vidi_tokenizer_encode(NULL, "x", 1, &ids, &n, &err) == VIDI_ERR_INVALID, "NULL tokenizer");
    CHECK(vidi_tokenizer_encode(tok, NULL, 1, &ids, &n, &err) == VIDI_ERR_INVALID, "NULL text");
    CHECK(vidi_tokenizer_encode(tok, NULL, 0, &ids, &n, &err) == VIDI_OK && n == 0 && ids, "empty text");
    free(ids);
}

/* Long runs (one pre-token of 1 MiB of spaces, or of letters) encode and
 * round-trip. */
static void test_long_runs_round_trip(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    size_t len = (size_t)1 << 20;
    char *s = malloc(len + 2);
    REQUIRE(s, "malloc");
    for (int kind = 0; kind < 2; kind++) {
        memset(s, kind ? 'z' : ' ', len);
        s[len] = 'x';
        s[len + 1] = '\0';
        int32_t *ids = NULL;
        size_t n = 0;
        char *out = NULL;
        CHECK(vidi_tokenizer_encode(tok, s, len + 1, &ids, &n, NULL) == VIDI_OK && n > 0, "encode run %d", kind);
        CHECK(vidi_tokenizer_decode(tok, ids, n, 0, &out, NULL) == VIDI_OK && strcmp(out, s) == 0, "round trip %d",
              kind);
        free(out);
        free(ids);
    }
    free(s);
}

static void test_decode_id_out_of_range_is_an_error(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    int32_t vs = vidi_tokenizer_vocab_size(tok);
    int32_t bad[][2] = {{0, vs}, {-1, 0}, {0, INT32_MAX}};
    for (int i = 0; i < 3; i++) {
        char *out = (char *)1;
        vidi_err err = {0};
        CHECK(vidi_tokenizer_decode(tok, bad[i], 2, 0, &out, &err) == VIDI_ERR_RANGE && out == NULL, "case %d", i);
        CHECK(strstr(err.msg, "id") != NULL, "message \"%s\"", err.msg);
    }
    vidi_detok d;
    vidi_detok_init(&d, tok, 0);
    char buf[16];
    size_t w;
    CHECK(vidi_detok_push(&d, vs, buf, sizeof buf, &w, NULL) == VIDI_ERR_RANGE, "detok accepts id %d", (int)vs);
    char *out = NULL;
    CHECK(vidi_tokenizer_decode(tok, NULL, 0, 0, &out, NULL) == VIDI_OK && out && out[0] == '\0', "empty decode");
    free(out);
}

/* Writes `root` to a temporary file and tries to load it; returns the
 * status and leaves the message in err. */
static vidi_status load_json(json_t *root, vidi_err *err)
{
    char path[] = "/tmp/vidi-test-tokenizer-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return VIDI_ERR_IO;
    close(fd);
    json_dump_file(root, path, JSON_COMPACT);
    vidi_tokenizer *tok = NULL;
    vidi_status st = vidi_tokenizer_load(path, &tok, err);
    vidi_tokenizer_free(tok);
    unlink(path);
    return st;
}

static vidi_status load_text(const char *text, vidi_err *err)
{
    char path[] = "/tmp/vidi-test-tokenizer-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return VIDI_ERR_IO;
    if (write(fd, text, strlen(text)) < 0) text = "";
    close(fd);
    vidi_tokenizer *tok = NULL;
    vidi_status st = vidi_tokenizer_load(path, &tok, err);
    vidi_tokenizer_free(tok);
    unlink(path);
    return st;
}

/* Malformed tokenizer.json files are errors that name the field. */
static void test_malformed_tokenizer_json_names_the_field(void)
{
    json_error_t je;
    json_t *orig = json_load_file(test_data_path("models/tiny-qwen2vl/tokenizer.json"), 0, &je);
    REQUIRE(orig, "cannot read the tiny tokenizer.json");
    vidi_err err = {0};
    CHECK(load_json(orig, &err) == VIDI_OK, "the unmodified copy should load: %s", err.msg);

    static const struct {
        const char *what, *path, *set, *field;
        vidi_status st;
    } cases[] = {
        {"missing merges", "model", "merges", "model.merges", VIDI_ERR_FORMAT},
        {"missing vocab", "model", "vocab", "model.vocab", VIDI_ERR_FORMAT},
        {"missing model", "", "model", "model", VIDI_ERR_FORMAT},
        {"WordPiece model", "model", "type=WordPiece", "model.type", VIDI_ERR_UNSUPPORTED},
        {"merge of unknown tokens", "model", "merges=unknown", "model.merges[0]", VIDI_ERR_FORMAT},
        {"bad merge shape", "model", "merges=shape", "model.merges[0]", VIDI_ERR_FORMAT},
        {"negative vocab id", "model", "vocab=negative", "model.vocab", VIDI_ERR_RANGE},
        {"added token without id", "", "added_tokens=noid", "added_tokens[0].id", VIDI_ERR_FORMAT},
        {"Lowercase normalizer", "", "normalizer=Lowercase", "normalizer.type", VIDI_ERR_UNSUPPORTED},
        {"bad regex", "", "pre_tokenizer=badregex", "pattern.Regex", VIDI_ERR_FORMAT},
        {"no pre_tokenizer", "", "pre_tokenizer", "pre_tokenizer", VIDI_ERR_UNSUPPORTED},
        {"WordPiece decoder", "", "decoder=WordPiece", "decoder.type", VIDI_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *root = json_deep_copy(orig);
        json_t *obj = cases[i].path[0] ? json_object_get(root, cases[i].path) : root;
        const char *set = cases[i].set;
        if (!strchr(set, '=')) {
            json_object_del(obj, set);
        } else if (strcmp(set, "type=WordPiece") == 0) {
            json_object_set_new(obj, "type", json_string("WordPiece"));
        } else if (strcmp(set, "merges=unknown") == 0) {
            json_array_insert_new(json_object_get(obj, "merges"), 0, json_string("nosuch1 nosuch2"));
        } else if (strcmp(set, "merges=shape") == 0) {
            json_array_insert_new(json_object_get(obj, "merges"), 0, json_integer(3));
        } else if (strcmp(set, "vocab=negative") == 0) {
            json_object_set_new(json_object_get(obj, "vocab"), "neg", json_integer(-4));
        } else if (strcmp(set, "added_tokens=noid") == 0) {
            json_object_del(json_array_get(json_object_get(obj, "added_tokens"), 0), "id");
        } else if (strcmp(set, "normalizer=Lowercase") == 0) {
            json_object_set_new(obj, "normalizer", json_pack("{s:s}", "type", "Lowercase"));
        } else if (strcmp(set, "pre_tokenizer=badregex") == 0) {
            json_t *split = json_array_get(json_object_get(json_object_get(obj, "pre_tokenizer"), "pretokenizers"), 0);
            json_object_set_new(split, "pattern", json_pack("{s:s}", "Regex", "(unclosed"));
        } else if (strcmp(set, "decoder=WordPiece") == 0) {
            json_object_set_new(obj, "decoder", json_pack("{s:s}", "type", "WordPiece"));
        }
        memset(&err, 0, sizeof err);
        vidi_status st = load_json(root, &err);
        CHECK(st == cases[i].st, "%s: status %s (%s)", cases[i].what, vidi_status_name(st), err.msg);
        CHECK(strstr(err.msg, cases[i].field) != NULL, "%s: message \"%s\" does not name %s", cases[i].what, err.msg,
              cases[i].field);
        json_decref(root);
    }
    json_decref(orig);

    CHECK(load_text("{\"model\": {\"vocab\": ", &err) == VIDI_ERR_FORMAT && strstr(err.msg, "malformed JSON"),
          "truncated JSON: %s", err.msg);
    CHECK(load_text("[1, 2]", &err) == VIDI_ERR_FORMAT, "top level array");
    CHECK(load_text("", &err) == VIDI_ERR_FORMAT, "empty file");
    vidi_tokenizer *tok = (vidi_tokenizer *)1;
    CHECK(vidi_tokenizer_load("/nonexistent/tokenizer.json", &tok, &err) == VIDI_ERR_NOTFOUND && tok == NULL,
          "missing file");
    CHECK(vidi_tokenizer_load(NULL, &tok, &err) == VIDI_ERR_INVALID, "NULL path");
}

/* Random byte strings, valid or not, never crash; the valid ones
 * round-trip to their NFC form. */
static void test_random_inputs_never_crash(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok, "tiny tokenizer");
    static const char *const atoms[] = {
        "a", "Z", "7", " ", "  ", "\t", "\n", "\r\n", "'s", "'LL", "!", "<|im_start|>", "<|im_end", "|>",
        "\xC3\xA9", "e\xCC\x81", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\xC2\x85", "\xE1\xA0\x8E", "\xE3\x80\x80",
        "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", "\xEF\xBB\xBF",
        /* invalid from here on */
        "\xC3", "\x80", "\xFF", "\xF0\x9F", "\xED\xA0\x80"};
    const size_t n_atoms = sizeof atoms / sizeof *atoms, n_valid = n_atoms - 5;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    int ok = 0, rejected = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char text[512];
        size_t len = 0;
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        int parts = 1 + (int)(s % 24);
        for (int p = 0; p < parts; p++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            /* even iterations draw valid atoms only */
            const char *a = atoms[s % (iter % 2 ? n_atoms : n_valid)];
            size_t al = strlen(a);
            if (len + al < sizeof text) {
                memcpy(text + len, a, al);
                len += al;
            }
        }
        int32_t *ids = NULL;
        size_t n = 0;
        vidi_status st = vidi_tokenizer_encode(tok, text, len, &ids, &n, NULL);
        if (st == VIDI_OK) {
            char *out = NULL;
            text[len] = '\0';
            char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)text);
            CHECK(vidi_tokenizer_decode(tok, ids, n, 0, &out, NULL) == VIDI_OK, "decode");
            if (out && nfc && memchr(text, 0, len) == NULL) CHECK(strcmp(out, nfc) == 0, "round trip of iter %d", iter);
            free(nfc);
            free(out);
            ok++;
        } else {
            CHECK(st == VIDI_ERR_INVALID, "iter %d: %s", iter, vidi_status_name(st));
            rejected++;
        }
        free(ids);
    }
    CHECK(ok > 100 && rejected > 100, "the mix should have valid and invalid texts (%d / %d)", ok, rejected);
}

/* One tokenizer shared by several threads gives every thread the golden
 * ids (the word cache is the only shared mutable state). */
static void *encode_golden_repeatedly(void *arg)
{
    vidi_tokenizer *tok = arg;
    json_t *cases = json_object_get(golden(), "cases");
    long bad = 0;
    for (int rep = 0; rep < 20; rep++) {
        size_t i;
        json_t *c;
        json_array_foreach(cases, i, c) {
            json_t *text = json_object_get(c, "text");
            int32_t *ids = NULL;
            size_t n = 0;
            if (vidi_tokenizer_encode(tok, json_string_value(text), json_string_length(text), &ids, &n, NULL) !=
                    VIDI_OK ||
                !ids_equal(ids, n, json_object_get(c, "ids")))
                bad++;
            free(ids);
        }
    }
    return (void *)bad;
}

static void test_encode_from_several_threads_at_once(void)
{
    vidi_tokenizer *tok = tiny();
    REQUIRE(tok && golden(), "fixtures");
    pthread_t th[4];
    for (int i = 0; i < 4; i++) REQUIRE(pthread_create(&th[i], NULL, encode_golden_repeatedly, tok) == 0, "thread");
    for (int i = 0; i < 4; i++) {
        void *bad = NULL;
        pthread_join(th[i], &bad);
        CHECK(bad == NULL, "thread %d saw %ld wrong encodings", i, (long)bad);
    }
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        {"golden_encode_matches_hf_for_both_tokenizers", test_golden_encode_matches_hf_for_both_tokenizers},
        {"golden_decode_matches_hf_for_both_tokenizers", test_golden_decode_matches_hf_for_both_tokenizers},
        {"decode_of_encode_is_the_nfc_text", test_decode_of_encode_is_the_nfc_text},
        {"special_tokens_are_found_and_flagged", test_special_tokens_are_found_and_flagged},
        {"added_tokens_split_longest_first", test_added_tokens_split_longest_first},
        {"detok_holds_back_a_split_emoji", test_detok_holds_back_a_split_emoji},
        {"detok_small_buffer_is_range_and_retryable", test_detok_small_buffer_is_range_and_retryable},
        {"detok_stream_equals_full_decode", test_detok_stream_equals_full_decode},
        {"chat_inserts_default_system_turn", test_chat_inserts_default_system_turn},
        {"chat_explicit_system_is_not_duplicated", test_chat_explicit_system_is_not_duplicated},
        {"chat_media_placeholders_in_order", test_chat_media_placeholders_in_order},
        {"chat_generation_prompt_only_when_asked", test_chat_generation_prompt_only_when_asked},
        {"chat_rejects_bad_messages", test_chat_rejects_bad_messages},
        {"invalid_utf8_is_an_error_with_its_offset", test_invalid_utf8_is_an_error_with_its_offset},
        {"text_over_the_limit_is_refused", test_text_over_the_limit_is_refused},
        {"long_runs_round_trip", test_long_runs_round_trip},
        {"decode_id_out_of_range_is_an_error", test_decode_id_out_of_range_is_an_error},
        {"malformed_tokenizer_json_names_the_field", test_malformed_tokenizer_json_names_the_field},
        {"random_inputs_never_crash", test_random_inputs_never_crash},
        {"encode_from_several_threads_at_once", test_encode_from_several_threads_at_once},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof *cases));
    vidi_tokenizer_free(tiny());
    json_decref(golden());
    return rc;
}
