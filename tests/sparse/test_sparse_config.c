/* tests/sparse/test_sparse_config.c — prefill/sparse_run.h: a config saved
 * and loaded back is the same; malformed configs are refused with a message
 * naming what is wrong (never a crash); a rule resolves for a prompt (the
 * grid's stride from the video's frame or row size, a fixed phase, the
 * fallback to vertical-slash without a video); the shipped configs load
 * (bench/sparse/qwen2vl-2b-grid.json: 28 layers x 12 heads of grid heads,
 * the rules bench_gpu --cases sparse builds). The model-level use is
 * test_shapes_sparse. Label sparse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefill/sparse_run.h"
#include "test_util.h"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_save_load_round_trip(void) {
    vidi_sparse_config *c = vidi_sparse_config_new(2, 3);
    REQUIRE(c, "new");
    c->rules[1] = vidi_sparse_rule_default(VIDI_SPARSE_GRID);
    c->rules[1].stride_ref = VIDI_STRIDE_ROW;
    c->rules[1].head.h = 1;
    c->rules[2] = vidi_sparse_rule_default(VIDI_SPARSE_GRID);
    c->rules[2].stride_ref = VIDI_STRIDE_FIXED;
    c->rules[2].head.stride = 17;
    c->rules[2].estimate_phase = 0;
    c->rules[2].head.phase = 3;
    c->rules[4] = vidi_sparse_rule_default(VIDI_SPARSE_VSLASH);
    c->rules[4].head.n_vertical = 99;
    c->rules[4].recall = 0.97;
    c->rules[5] = vidi_sparse_rule_default(VIDI_SPARSE_TRISHAPE);
    c->rules[5].head.last = 77;
    vidi_err err = {0};
    const char *path = test_tmp_path("sc.json");
    REQUIRE(vidi_sparse_config_save(c, path, "m", "{\"inputs\": []}", &err) == VIDI_OK, "save: %s", err.msg);
    vidi_sparse_config *d = NULL;
    REQUIRE(vidi_sparse_config_load(path, 2, 3, &d, &err) == VIDI_OK, "load: %s", err.msg);
    for (int i = 0; i < 6; i++) {
        const vidi_sparse_rule *a = &c->rules[i], *b = &d->rules[i];
        CHECK(a->head.kind == b->head.kind && a->stride_ref == b->stride_ref && a->estimate_phase == b->estimate_phase,
              "rule %d: kind/stride/phase mode", i);
        if (a->head.kind == VIDI_SPARSE_GRID)
            CHECK(a->head.h == b->head.h && a->head.v == b->head.v &&
                      (a->stride_ref != VIDI_STRIDE_FIXED || a->head.stride == b->head.stride) &&
                      (a->estimate_phase || a->head.phase == b->head.phase),
                  "rule %d: grid fields", i);
    }
    CHECK(d->rules[4].head.n_vertical == 99 && d->rules[4].recall > 0.969 && d->rules[5].head.last == 77,
          "vslash and trishape fields");
    vidi_sparse_config *e = NULL;
    CHECK(vidi_sparse_config_load(path, 3, 3, &e, &err) == VIDI_ERR_FORMAT && strstr(err.msg, "3 layers"),
          "a config for another layer count: %s", err.msg);
    CHECK(vidi_sparse_config_load(path, 2, 4, &e, &err) == VIDI_ERR_FORMAT && strstr(err.msg, "4 heads"),
          "a config for another head count: %s", err.msg);
    vidi_sparse_config_free(c);
    vidi_sparse_config_free(d);
}

static void test_malformed_configs_are_refused(void) {
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"not json", "sparse config"},
        {"{\"version\": 2, \"layers\": [[{\"pattern\": \"dense\"}]]}", "version"},
        {"{\"version\": 1}", "layers"},
        {"{\"version\": 1, \"layers\": [[{\"pattern\": \"spiral\"}]]}", "unknown pattern"},
        {"{\"version\": 1, \"layers\": [[{\"pattern\": \"ashape\", \"local\": 0}]]}", "out of range"},
        {"{\"version\": 1, \"layers\": [[{\"pattern\": \"grid\", \"stride\": \"diagonal\"}]]}", "stride"},
        {"{\"version\": 1, \"layers\": [[{\"pattern\": \"grid\", \"stride\": 1}]]}", "stride"},
        {"{\"version\": 1, \"layers\": [[{\"pattern\": \"grid\", \"phase\": \"later\"}]]}", "phase"},
        {"{\"version\": 1, \"layers\": [[{\"pattern\": \"grid\", \"h\": 2}]]}", "out of range"},
        {"{\"version\": 1, \"layers\": [[]]}", "1 heads"},
        {"{\"version\": 1, \"layers\": [{\"pattern\": \"dense\"}]}", "1 heads"},
    };
    const char *path = test_tmp_path("bad.json");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(path, cases[i].text);
        vidi_sparse_config *c = NULL;
        vidi_err err = {0};
        vidi_status st = vidi_sparse_config_load(path, 1, 1, &c, &err);
        CHECK(st != VIDI_OK && c == NULL && strstr(err.msg, cases[i].want), "case %zu '%s': status %d, '%s'", i,
              cases[i].text, (int)st, err.msg);
    }
    vidi_sparse_config *c = NULL;
    vidi_err err = {0};
    CHECK(vidi_sparse_config_load("/nonexistent/sc.json", 1, 1, &c, &err) != VIDI_OK && err.msg[0], "a missing file");
}

static void test_rules_resolve_for_a_prompt(void) {
    vidi_span spans[3] = {{0, 10, VIDI_SPAN_TEXT, 0, 0}, {10, 10 + 8 * 30, VIDI_SPAN_VIDEO, 30, 5},
                          {250, 260, VIDI_SPAN_TEXT, 0, 0}};
    vidi_sparse_rule g = vidi_sparse_rule_default(VIDI_SPARSE_GRID);
    g.estimate_phase = 0;
    g.head.phase = 4;
    vidi_sparse_head h;
    int fb = -1;
    vidi_err err = {0};
    CHECK(vidi_sparse_resolve(&g, spans, 3, NULL, 2.0, &h, &fb, &err) == VIDI_OK && h.kind == VIDI_SPARSE_GRID &&
              h.stride == 30 && h.phase == 4 && !fb,
          "frame stride: kind %d stride %lld phase %lld", (int)h.kind, (long long)h.stride, (long long)h.phase);
    g.stride_ref = VIDI_STRIDE_ROW;
    CHECK(vidi_sparse_resolve(&g, spans, 3, NULL, 2.0, &h, &fb, &err) == VIDI_OK && h.stride == 5 && h.phase == 4,
          "row stride %lld", (long long)h.stride);
    CHECK(vidi_sparse_resolve(&g, spans, 1, NULL, 2.0, &h, &fb, &err) == VIDI_OK && h.kind == VIDI_SPARSE_VSLASH && fb,
          "no video: falls back to vertical-slash");
    vidi_sparse_rule a = vidi_sparse_rule_default(VIDI_SPARSE_ASHAPE);
    CHECK(vidi_sparse_resolve(&a, spans, 3, NULL, 2.0, &h, &fb, &err) == VIDI_OK && h.kind == VIDI_SPARSE_ASHAPE && !fb,
          "a non-grid rule is itself");
}

static void test_the_2b_shape_config_loads(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/../../bench/sparse/qwen2vl-2b-grid.json", test_data_dir());
    vidi_sparse_config *c = NULL;
    vidi_err err = {0};
    REQUIRE(vidi_sparse_config_load(path, 28, 12, &c, &err) == VIDI_OK, "%s", err.msg);
    int bad = 0;
    for (int i = 0; i < 28 * 12; i++) {
        const vidi_sparse_rule *r = &c->rules[i];
        bad += r->head.kind != VIDI_SPARSE_GRID || r->stride_ref != VIDI_STRIDE_FRAME || r->estimate_phase ||
               r->head.phase != 0 || r->head.h != 0 || r->head.v != 1 || r->head.sink != 512 || r->head.local != 1024 ||
               r->head.boundary2d;
    }
    CHECK(!bad, "%d rules are not the benchmark's grid rule", bad);
    vidi_sparse_config_free(c);
    CHECK(vidi_sparse_config_load(path, 28, 16, &c, &err) == VIDI_ERR_FORMAT, "a 28 x 16 model accepted it");
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"the_2b_shape_config_loads", test_the_2b_shape_config_loads},
        {"save_load_round_trip", test_save_load_round_trip},
        {"malformed_configs_are_refused", test_malformed_configs_are_refused},
        {"rules_resolve_for_a_prompt", test_rules_resolve_for_a_prompt},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
