/* tests/unit/test_mrope.c — M-RoPE positions by the original rule, on
 * hand-computed prompts, and where they differ from the transformers 5.x
 * rule (text after a video long in time; Qwen2.5-VL fractional seconds per
 * grid step).
 */
#include <string.h>

#include "model/mrope.h"
#include "test_util.h"

enum { IMG = 151655, VID = 151656, VS = 151652, VE = 151653, X = 100 };

static vidi_mrope_params params_q2(void) {
    return (vidi_mrope_params){.arch = VIDI_ARCH_QWEN2_VL, .image_token_id = IMG,
                               .video_token_id = VID, .spatial_merge_size = 2,
                               .tokens_per_second = 2.0f};
}

static vidi_mrope_params params_q25(void) {
    vidi_mrope_params p = params_q2();
    p.arch = VIDI_ARCH_QWEN2_5_VL;
    return p;
}

/* Expect token i at (t, h, w). */
static int pos_is(const int32_t *pos, int i, int t, int h, int w) {
    return pos[i * 3] == t && pos[i * 3 + 1] == h && pos[i * 3 + 2] == w;
}

#define CHECK_POS(pos, i, t, h, w)                                                       \
    CHECK(pos_is(pos, i, t, h, w), "token %d: got (%d, %d, %d), want (%d, %d, %d)", i,   \
          (pos)[(i) * 3], (pos)[(i) * 3 + 1], (pos)[(i) * 3 + 2], t, h, w)

static void test_text_only_counts_up_on_all_axes(void) {
    vidi_mrope_params p = params_q2();
    int32_t ids[5] = {X, X + 1, X + 2, X + 3, X + 4};
    int32_t pos[15];
    int64_t delta = 99;
    vidi_err err;
    REQUIRE(vidi_mrope_positions(&p, ids, 5, NULL, 0, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    for (int i = 0; i < 5; i++) CHECK_POS(pos, i, i, i, i);
    CHECK(delta == 0, "rope_delta %lld, want 0", (long long)delta);
}

/* x vs [6 image pads: grid 1x4x6 -> 2x3 merged] ve x
 * block starts at s = 2: (2, 2+r, 2+c); max 4; text after at 5, 6. */
static void test_image_block_then_text_after_max(void) {
    vidi_mrope_params p = params_q2();
    int32_t ids[10] = {X, VS, IMG, IMG, IMG, IMG, IMG, IMG, VE, X};
    vidi_mrope_item it = {.kind = VIDI_MEDIA_IMAGE, .grid = {1, 4, 6}};
    int32_t pos[30];
    int64_t delta = 0;
    vidi_err err;
    CHECK(vidi_mrope_item_tokens(&p, &it) == 6, "item tokens");
    REQUIRE(vidi_mrope_positions(&p, ids, 10, &it, 1, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    CHECK_POS(pos, 0, 0, 0, 0);
    CHECK_POS(pos, 1, 1, 1, 1);
    CHECK_POS(pos, 2, 2, 2, 2);
    CHECK_POS(pos, 3, 2, 2, 3);
    CHECK_POS(pos, 4, 2, 2, 4);
    CHECK_POS(pos, 5, 2, 3, 2);
    CHECK_POS(pos, 6, 2, 3, 3);
    CHECK_POS(pos, 7, 2, 3, 4);
    CHECK_POS(pos, 8, 5, 5, 5);
    CHECK_POS(pos, 9, 6, 6, 6);
    CHECK(delta == 7 - 10, "rope_delta %lld, want -3", (long long)delta);
    /* Qwen2.5-VL images are the same (temporal index 0). */
    vidi_mrope_params p25 = params_q25();
    int32_t pos25[30];
    REQUIRE(vidi_mrope_positions(&p25, ids, 10, &it, 1, pos25, &delta, &err) == VIDI_OK, "%s",
            err.msg);
    CHECK(!memcmp(pos, pos25, sizeof pos), "Qwen2.5-VL image positions differ from Qwen2-VL");
}

/* vs [video 6x4x4 -> T 6, 2x2: 24 pads] ve x. Block at s = 1:
 * (1+k, 1+r, 1+c), max 1+5 = 6, so ve = 7 and x = 8; rope_delta 9 - 27.
 * The 5.x rule advances by max(h, w)/2 = 2 only: ve = 3, overlapping the
 * video's temporal positions 1..6. */
static void test_video_long_in_time_pushes_text_past_it(void) {
    vidi_mrope_params p = params_q2();
    int32_t ids[27];
    ids[0] = VS;
    for (int i = 1; i <= 24; i++) ids[i] = VID;
    ids[25] = VE;
    ids[26] = X;
    vidi_mrope_item it = {.kind = VIDI_MEDIA_VIDEO, .grid = {6, 4, 4}, .second_per_grid_t = 1.0f};
    int32_t pos[27 * 3];
    int64_t delta = 0;
    vidi_err err;
    REQUIRE(vidi_mrope_positions(&p, ids, 27, &it, 1, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    CHECK_POS(pos, 0, 0, 0, 0);
    for (int k = 0; k < 6; k++)
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 2; c++) CHECK_POS(pos, 1 + k * 4 + r * 2 + c, 1 + k, 1 + r, 1 + c);
    CHECK_POS(pos, 25, 7, 7, 7);
    CHECK_POS(pos, 26, 8, 8, 8);
    CHECK(delta == 9 - 27, "rope_delta %lld, want -18", (long long)delta);
    /* The 5.x rule would give (3, 3, 3) and rope_delta 5 - 27. */
    CHECK(!pos_is(pos, 25, 3, 3, 3) && delta != 5 - 27, "positions follow the 5.x rule");

    /* Decode: cache position 27 (the first new token) -> 27 + delta = 9 on all axes. */
    int32_t d[3];
    vidi_mrope_decode_position(27, delta, d);
    CHECK(d[0] == 9 && d[1] == 9 && d[2] == 9, "decode position (%d, %d, %d), want 9", d[0], d[1],
          d[2]);
}

/* Qwen2.5-VL video, grid 4x2x2 (T 4, one merged cell), second_per_grid_t
 * 1.5, tokens_per_second 2: temporal index trunc(k * 1.5 * 2) = 0, 3, 6, 9.
 * x vs [4 pads] ve: block at s = 2 -> t = 2, 5, 8, 11; ve = 12. The 5.x
 * rule truncates 1.5 to 1 first (t = 2, 4, 6, 8) and puts ve at 3. */
static void test_q25_video_fractional_seconds_per_grid(void) {
    vidi_mrope_params p = params_q25();
    int32_t ids[7] = {X, VS, VID, VID, VID, VID, VE};
    vidi_mrope_item it = {.kind = VIDI_MEDIA_VIDEO, .grid = {4, 2, 2}, .second_per_grid_t = 1.5f};
    int32_t pos[21];
    int64_t delta = 0;
    vidi_err err;
    REQUIRE(vidi_mrope_positions(&p, ids, 7, &it, 1, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    CHECK_POS(pos, 2, 2, 2, 2);
    CHECK_POS(pos, 3, 5, 2, 2);
    CHECK_POS(pos, 4, 8, 2, 2);
    CHECK_POS(pos, 5, 11, 2, 2);
    CHECK_POS(pos, 6, 12, 12, 12);
    CHECK(delta == 13 - 7, "rope_delta %lld, want 6", (long long)delta);
    CHECK(!pos_is(pos, 3, 4, 2, 2), "temporal index follows the 5.x int(second_per_grid_t) rule");

    /* second_per_grid_t 0.5 (fps 4): trunc(k * 0.5 * 2) = k. */
    it.second_per_grid_t = 0.5f;
    REQUIRE(vidi_mrope_positions(&p, ids, 7, &it, 1, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    for (int k = 0; k < 4; k++) CHECK_POS(pos, 2 + k, 2 + k, 2, 2);
    CHECK_POS(pos, 6, 6, 6, 6);
    /* 0.3 s per step: trunc(0.6 k) = 0, 0, 1, 1 (fp32 products 0, 0.6, 1.2, 1.8). */
    it.second_per_grid_t = 0.3f;
    REQUIRE(vidi_mrope_positions(&p, ids, 7, &it, 1, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    CHECK_POS(pos, 2, 2, 2, 2);
    CHECK_POS(pos, 3, 2, 2, 2);
    CHECK_POS(pos, 4, 3, 2, 2);
    CHECK_POS(pos, 5, 3, 2, 2);
    CHECK_POS(pos, 6, 4, 4, 4);

    /* Qwen2-VL ignores second_per_grid_t: t = k. */
    vidi_mrope_params p2 = params_q2();
    it.second_per_grid_t = 1.5f;
    REQUIRE(vidi_mrope_positions(&p2, ids, 7, &it, 1, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    for (int k = 0; k < 4; k++) CHECK_POS(pos, 2 + k, 2 + k, 2, 2);
}

/* image then video, text between: each block starts at the previous max + 1.
 * x vs [img 1x2x4 -> 1x2: 2 pads] ve vs [vid 2x2x2 -> 2x1x1: 2 pads] ve */
static void test_image_and_video_in_order(void) {
    vidi_mrope_params p = params_q2();
    int32_t ids[9] = {X, VS, IMG, IMG, VE, VS, VID, VID, VE};
    vidi_mrope_item it[2] = {{.kind = VIDI_MEDIA_IMAGE, .grid = {1, 2, 4}},
                             {.kind = VIDI_MEDIA_VIDEO, .grid = {2, 2, 2}}};
    int32_t pos[27];
    int64_t delta = 0;
    vidi_err err;
    REQUIRE(vidi_mrope_positions(&p, ids, 9, it, 2, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    CHECK_POS(pos, 2, 2, 2, 2);
    CHECK_POS(pos, 3, 2, 2, 3);
    CHECK_POS(pos, 4, 4, 4, 4);
    CHECK_POS(pos, 5, 5, 5, 5);
    CHECK_POS(pos, 6, 6, 6, 6);
    CHECK_POS(pos, 7, 7, 6, 6);
    CHECK_POS(pos, 8, 8, 8, 8);
    CHECK(delta == 0, "rope_delta %lld, want 0", (long long)delta);
}

/* Two images back to back (no text between) are two blocks, by their grids. */
static void test_adjacent_blocks_split_by_grid(void) {
    vidi_mrope_params p = params_q2();
    int32_t ids[2] = {IMG, IMG};
    vidi_mrope_item it[2] = {{.kind = VIDI_MEDIA_IMAGE, .grid = {1, 2, 2}},
                             {.kind = VIDI_MEDIA_IMAGE, .grid = {1, 2, 2}}};
    int32_t pos[6];
    int64_t delta = 5;
    vidi_err err;
    REQUIRE(vidi_mrope_positions(&p, ids, 2, it, 2, pos, &delta, &err) == VIDI_OK, "%s", err.msg);
    CHECK_POS(pos, 0, 0, 0, 0);
    CHECK_POS(pos, 1, 1, 1, 1);
    CHECK(delta == 0, "rope_delta %lld", (long long)delta);
}

static void test_mismatches_are_clear_errors(void) {
    vidi_mrope_params p = params_q2();
    int32_t pos[30];
    vidi_err err;
    int32_t ids[6] = {X, VS, IMG, IMG, IMG, VE};
    vidi_mrope_item img = {.kind = VIDI_MEDIA_IMAGE, .grid = {1, 2, 4}}; /* 2 tokens, run has 3 */
    CHECK(vidi_mrope_positions(&p, ids, 6, &img, 1, pos, NULL, &err) == VIDI_ERR_INVALID &&
              strstr(err.msg, "needs 2 pad tokens") && strstr(err.msg, "has 3"),
          "run length mismatch: %s", err.msg);
    img.grid[2] = 6; /* 3 tokens: fits */
    CHECK(vidi_mrope_positions(&p, ids, 6, &img, 1, pos, NULL, &err) == VIDI_OK, "%s", err.msg);
    CHECK(vidi_mrope_positions(&p, ids, 6, NULL, 0, pos, NULL, &err) == VIDI_ERR_INVALID &&
              strstr(err.msg, "more pad runs than media items"),
          "missing item: %s", err.msg);
    vidi_mrope_item two[2] = {img, img};
    CHECK(vidi_mrope_positions(&p, ids, 6, two, 2, pos, NULL, &err) == VIDI_ERR_INVALID &&
              strstr(err.msg, "2 media items given"),
          "extra item: %s", err.msg);
    vidi_mrope_item vid = {.kind = VIDI_MEDIA_VIDEO, .grid = {1, 2, 6}};
    CHECK(vidi_mrope_positions(&p, ids, 6, &vid, 1, pos, NULL, &err) == VIDI_ERR_INVALID &&
              strstr(err.msg, "is a video"),
          "kind mismatch: %s", err.msg);
    vidi_mrope_item odd = {.kind = VIDI_MEDIA_IMAGE, .grid = {1, 3, 2}};
    CHECK(vidi_mrope_item_tokens(&p, &odd) == -1, "odd grid accepted");
    CHECK(vidi_mrope_positions(&p, ids, 6, &odd, 1, pos, NULL, &err) == VIDI_ERR_INVALID &&
              strstr(err.msg, "multiples of the merge size"),
          "bad grid: %s", err.msg);
    vidi_mrope_params p25 = params_q25();
    int32_t vids[1] = {VID};
    vidi_mrope_item neg = {.kind = VIDI_MEDIA_VIDEO, .grid = {1, 2, 2}, .second_per_grid_t = -1.0f};
    CHECK(vidi_mrope_positions(&p25, vids, 1, &neg, 1, pos, NULL, &err) == VIDI_ERR_INVALID,
          "negative second_per_grid_t accepted");
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"text_only_counts_up_on_all_axes", test_text_only_counts_up_on_all_axes},
        {"image_block_then_text_after_max", test_image_block_then_text_after_max},
        {"video_long_in_time_pushes_text_past_it", test_video_long_in_time_pushes_text_past_it},
        {"q25_video_fractional_seconds_per_grid", test_q25_video_fractional_seconds_per_grid},
        {"image_and_video_in_order", test_image_and_video_in_order},
        {"adjacent_blocks_split_by_grid", test_adjacent_blocks_split_by_grid},
        {"mismatches_are_clear_errors", test_mismatches_are_clear_errors},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
