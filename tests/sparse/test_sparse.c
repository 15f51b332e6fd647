/* tests/sparse/test_sparse.c — prefill/sparse.h on the CPU (label sparse):
 * spans from a prompt's pads; every pattern's plan covers each row once,
 * never mixes spans in a tile, and its tile kernel equals dense attention
 * under the same mask; a dense plan equals plain causal attention; a row
 * with no key gets zeros, not NaN; on a planted grid (every query drawn to
 * the first token of each frame) the online estimate finds the frame
 * stride and phase, and the grid plan keeps >= 0.95 of the attention mass
 * at a fraction of the pairs, where A-shape keeps less; vertical-slash
 * estimation finds planted columns; a grid plan's keys per row are exactly
 * sink, local window and the phase's columns (a strided segment), each
 * once; packing several heads' plans keeps every tile, orders them by
 * work and counts each segment's keys before it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prefill/sparse.h"
#include "test_util.h"

enum { HQ = 4, HKV = 2, D = 16, PREFIX = 40, T = 24, MH = 6, MW = 5, SUFFIX = 20 };
#define FRAME (MH * MW)
#define N (PREFIX + T * FRAME + SUFFIX)
#define IMG 151655
#define VID 151656

static int32_t g_ids[N];
static vidi_span g_spans[8];
static int g_n_spans;
static float *g_q, *g_k, *g_v;

static void setup(void) {
    for (int i = 0; i < N; i++) g_ids[i] = 1000 + i % 50;
    for (int i = PREFIX; i < PREFIX + T * FRAME; i++) g_ids[i] = VID;
    const int32_t grids[1][3] = {{T, 2 * MH, 2 * MW}};
    vidi_err err = {0};
    if (vidi_sparse_spans(g_ids, N, IMG, VID, grids, 1, 2, g_spans, 8, &g_n_spans, &err) != VIDI_OK) g_n_spans = 0;
    if (!g_q) {
        g_q = malloc(sizeof(float) * N * HQ * D);
        g_k = malloc(sizeof(float) * N * HKV * D);
        g_v = malloc(sizeof(float) * N * HKV * D);
        test_fill_uniform(g_q, (long)N * HQ * D, -1, 1, 11);
        test_fill_uniform(g_k, (long)N * HKV * D, -1, 1, 12);
        test_fill_uniform(g_v, (long)N * HKV * D, -1, 1, 13);
    }
}

static void test_spans_from_pads(void) {
    setup();
    REQUIRE(g_n_spans == 3, "%d spans", g_n_spans);
    CHECK(g_spans[0].kind == VIDI_SPAN_TEXT && g_spans[0].start == 0 && g_spans[0].end == PREFIX, "text prefix");
    CHECK(g_spans[1].kind == VIDI_SPAN_VIDEO && g_spans[1].start == PREFIX && g_spans[1].end == PREFIX + T * FRAME &&
              g_spans[1].frame_tokens == FRAME && g_spans[1].row_tokens == MW,
          "video span [%lld, %lld) frame %lld row %lld", (long long)g_spans[1].start, (long long)g_spans[1].end,
          (long long)g_spans[1].frame_tokens, (long long)g_spans[1].row_tokens);
    CHECK(g_spans[2].kind == VIDI_SPAN_TEXT && g_spans[2].end == N, "text suffix");
    vidi_span sp[8];
    int n = 0;
    vidi_err err = {0};
    const int32_t wrong[1][3] = {{T, 2 * MH, 2 * MW + 2}};
    CHECK(vidi_sparse_spans(g_ids, N, IMG, VID, wrong, 1, 2, sp, 8, &n, &err) == VIDI_ERR_INVALID &&
              strstr(err.msg, "needs"), "a grid that does not fit the run: %s", err.msg);
    CHECK(vidi_sparse_spans(g_ids, N, IMG, VID, wrong, 0, 2, sp, 8, &n, &err) == VIDI_ERR_INVALID, "no grid accepted");
}

static vidi_sparse_head head_of(vidi_sparse_kind k) {
    vidi_sparse_head h = {.kind = k, .sink = 8, .local = 24, .last = SUFFIX, .stride = FRAME, .phase = 0, .h = 1, .v = 1,
                          .n_vertical = 24, .n_slash = 16, .last_q = 32};
    if (k == VIDI_SPARSE_BLOCK) h.n_vertical = 2;
    return h;
}

static void test_every_pattern_plan_equals_masked_dense(void) {
    setup();
    vidi_err err = {0};
    float *a = malloc(sizeof(float) * N * HQ * D), *b = malloc(sizeof(float) * N * HQ * D);
    REQUIRE(a && b, "out of memory");
    for (int k = VIDI_SPARSE_DENSE; k <= VIDI_SPARSE_GRID + 1; k++) /* GRID + 1: the grid with 2D-boundary */
        for (int head = 0; head < HQ; head++) {
            vidi_sparse_head h = head_of(k > VIDI_SPARSE_GRID ? VIDI_SPARSE_GRID : (vidi_sparse_kind)k);
            h.boundary2d = k > VIDI_SPARSE_GRID;
            vidi_sparse_qk qk = {g_q, g_k, HQ, HKV, D, head, NULL, NULL};
            vidi_sparse_plan p;
            vidi_status st = vidi_sparse_plan_build(&h, g_spans, g_n_spans, N, &qk, &p, &err);
            CHECK(st == VIDI_OK, "%s: %s", vidi_sparse_kind_name(h.kind), err.msg);
            if (st) continue;
            /* no tile mixes spans */
            int mixed = 0;
            for (int64_t t = 0; t < p.n_tiles; t++) {
                int span0 = -1;
                for (int64_t r = 0; r < p.tiles[t].n_rows; r++) {
                    int64_t i = p.rows[p.tiles[t].row0 + r];
                    int sp = 0;
                    while (sp < g_n_spans && g_spans[sp].end <= i) sp++;
                    if (span0 < 0) span0 = sp;
                    mixed += sp != span0;
                }
            }
            CHECK(!mixed, "%s: %d rows in a tile with another span's rows", vidi_sparse_kind_name(h.kind), mixed);
            memset(a, 0x7f, sizeof(float) * N * HQ * D);
            memset(b, 0, sizeof(float) * N * HQ * D);
            CHECK(vidi_sparse_attend_plan(&p, &qk, g_v, 0.25f, a, &err) == VIDI_OK, "plan: %s", err.msg);
            CHECK(vidi_sparse_attend_masked(&p, &qk, g_v, 0.25f, b, &err) == VIDI_OK, "masked: %s", err.msg);
            double md = 0;
            for (int64_t i = 0; i < N; i++)
                for (int x = 0; x < D; x++) {
                    size_t at = ((size_t)i * HQ + (size_t)head) * D + (size_t)x;
                    double dd = fabs((double)a[at] - (double)b[at]);
                    if (!(dd <= md)) md = isnan(dd) ? 1e30 : dd;
                }
            CHECK(md < 1e-5, "%s head %d: tile kernel and masked dense differ by %g", vidi_sparse_kind_name(h.kind), head, md);
            double dens = vidi_sparse_plan_density(&p);
            if (k == VIDI_SPARSE_DENSE) CHECK(fabs(dens - 1.0) < 1e-12, "dense density %g", dens);
            else CHECK(dens < 0.9, "%s density %g", vidi_sparse_kind_name(h.kind), dens);
            vidi_sparse_plan_free(&p);
        }
    free(a);
    free(b);
}

static void test_dense_plan_is_causal_attention(void) {
    setup();
    vidi_err err = {0};
    vidi_sparse_head h = head_of(VIDI_SPARSE_DENSE);
    vidi_sparse_qk qk = {g_q, g_k, HQ, HKV, D, 3, NULL, NULL};
    vidi_sparse_plan p;
    REQUIRE(vidi_sparse_plan_build(&h, g_spans, g_n_spans, N, &qk, &p, &err) == VIDI_OK, "%s", err.msg);
    float *a = calloc((size_t)N * HQ * D, sizeof(float));
    REQUIRE(a, "oom");
    CHECK(vidi_sparse_attend_plan(&p, &qk, g_v, 0.25f, a, &err) == VIDI_OK, "%s", err.msg);
    double md = 0;
    for (int i = 0; i < N; i += 7) { /* a plain causal softmax, written out */
        double w[N], mx = -1e30, l = 0;
        for (int j = 0; j <= i; j++) {
            double s = 0;
            for (int x = 0; x < D; x++) s += g_q[((size_t)i * HQ + 3) * D + x] * g_k[((size_t)j * HKV + 1) * D + x];
            w[j] = s * 0.25;
            if (w[j] > mx) mx = w[j];
        }
        for (int j = 0; j <= i; j++) l += (w[j] = exp(w[j] - mx));
        for (int x = 0; x < D; x++) {
            double o = 0;
            for (int j = 0; j <= i; j++) o += w[j] / l * g_v[((size_t)j * HKV + 1) * D + x];
            double dd = fabs(o - a[((size_t)i * HQ + 3) * D + x]);
            if (dd > md) md = dd;
        }
    }
    CHECK(md < 1e-5, "dense plan vs causal attention: %g", md);
    free(a);
    vidi_sparse_plan_free(&p);
}

static void test_a_row_without_keys_gets_zeros(void) {
    /* one tile: rows 0..3 with keys [10, 20) only: none is causal for them */
    int32_t rows[4] = {0, 1, 2, 3};
    vidi_sparse_seg segs[1] = {{10, 20, 1}};
    vidi_sparse_tile tile = {0, 4, 0, 1, 0, 0};
    vidi_sparse_plan p = {.n_tokens = 4, .rows = rows, .segs = segs, .cols = NULL, .tiles = &tile, .n_rows = 4,
                          .n_segs = 1, .n_tiles = 1};
    float q[4 * D], k[4 * D], v[4 * D], out[4 * D];
    test_fill_uniform(q, 4 * D, -1, 1, 1);
    test_fill_uniform(k, 4 * D, -1, 1, 2);
    test_fill_uniform(v, 4 * D, -1, 1, 3);
    vidi_sparse_qk qk = {q, k, 1, 1, D, 0, NULL, NULL};
    vidi_err err = {0};
    p.segs[0].e = 4 + 16; /* beyond n: the check refuses it */
    CHECK(vidi_sparse_plan_check(&p, &err) == VIDI_ERR_INVALID, "a segment past the end accepted");
    p.segs[0].a = 4, p.segs[0].e = 4; /* empty */
    memset(out, 0x7f, sizeof out);
    tile.n_segs = 0;
    CHECK(vidi_sparse_attend_plan(&p, &qk, v, 1.0f, out, &err) == VIDI_OK, "%s", err.msg);
    int bad = 0;
    for (int i = 0; i < 4 * D; i++) bad += out[i] != 0.0f;
    CHECK(!bad, "%d outputs of rows without keys are not 0", bad);
    memset(out, 0x7f, sizeof out);
    CHECK(vidi_sparse_attend_masked(&p, &qk, v, 1.0f, out, &err) == VIDI_OK, "%s", err.msg);
    for (int i = 0; i < 4 * D; i++) bad += out[i] != 0.0f;
    CHECK(!bad, "masked: %d outputs of rows without keys are not 0", bad);
}

/* Queries drawn to the first token of every frame (phase 0 of stride FRAME). */
static void plant_grid(float *q, float *k) {
    float u[D];
    test_fill_uniform(u, D, -1, 1, 99);
    test_fill_uniform(q, (long)N * HQ * D, -0.1f, 0.1f, 21);
    test_fill_uniform(k, (long)N * HKV * D, -0.1f, 0.1f, 22);
    for (int i = 0; i < N; i++)
        for (int h = 0; h < HQ; h++)
            for (int x = 0; x < D; x++) q[((size_t)i * HQ + h) * D + x] += 3.0f * u[x];
    for (int j = PREFIX; j < PREFIX + T * FRAME; j += FRAME)
        for (int h = 0; h < HKV; h++)
            for (int x = 0; x < D; x++) k[((size_t)j * HKV + h) * D + x] += 3.0f * u[x];
}

static void test_planted_grid_is_found_and_kept(void) {
    setup();
    float *q = malloc(sizeof(float) * N * HQ * D), *k = malloc(sizeof(float) * N * HKV * D);
    REQUIRE(q && k, "oom");
    plant_grid(q, k);
    vidi_err err = {0};
    vidi_sparse_qk qk = {q, k, HQ, HKV, D, 1, NULL, NULL};
    int64_t cands[3] = {FRAME, MW, 2};
    int64_t stride = 0, phase = -1;
    double score = 0;
    CHECK(vidi_sparse_estimate_grid(&qk, &g_spans[1], 32, cands, 3, &stride, &phase, &score, &err) == VIDI_OK, "%s",
          err.msg);
    CHECK(stride == FRAME && phase == 0 && score > 5, "estimated stride %lld phase %lld enrichment %.2f (want %d, 0)",
          (long long)stride, (long long)phase, score, FRAME);
    vidi_sparse_head g = head_of(VIDI_SPARSE_GRID), a = head_of(VIDI_SPARSE_ASHAPE);
    g.stride = stride, g.phase = phase, g.h = 0;
    vidi_sparse_plan pg, pa;
    double rg = 0, ra = 0;
    REQUIRE(vidi_sparse_plan_build(&g, g_spans, g_n_spans, N, &qk, &pg, &err) == VIDI_OK, "%s", err.msg);
    REQUIRE(vidi_sparse_plan_build(&a, g_spans, g_n_spans, N, &qk, &pa, &err) == VIDI_OK, "%s", err.msg);
    float scale = 1.0f / sqrtf((float)D);
    CHECK(vidi_sparse_recall(&pg, &qk, scale, &rg, &err) == VIDI_OK && vidi_sparse_recall(&pa, &qk, scale, &ra, &err) == VIDI_OK,
          "%s", err.msg);
    double dg = vidi_sparse_plan_density(&pg);
    printf("     planted grid: grid plan recall %.3f at density %.3f; A-shape recall %.3f at density %.3f\n", rg, dg, ra,
           vidi_sparse_plan_density(&pa));
    CHECK(rg >= 0.95 && dg < 0.5, "grid plan: recall %.3f density %.3f", rg, dg);
    CHECK(ra < rg - 0.05, "A-shape recall %.3f is not below the grid's %.3f", ra, rg);
    /* row by row: the same recall, and the output error of the plan against dense */
    double r2 = 0, e2 = 1;
    float *v = malloc(sizeof(float) * N * HKV * D);
    REQUIRE(v, "oom");
    test_fill_uniform(v, (long)N * HKV * D, -1, 1, 23);
    CHECK(vidi_sparse_error(&pg, &qk, v, scale, &r2, &e2, &err) == VIDI_OK && fabs(r2 - rg) < 1e-6 && e2 < 0.05,
          "grid plan: streamed recall %.6f (masked %.6f), relative output error %.4f", r2, rg, e2);
    vidi_sparse_plan pd;
    vidi_sparse_head dh = head_of(VIDI_SPARSE_DENSE);
    REQUIRE(vidi_sparse_plan_build(&dh, g_spans, g_n_spans, N, &qk, &pd, &err) == VIDI_OK, "%s", err.msg);
    CHECK(vidi_sparse_error(&pd, &qk, v, scale, &r2, &e2, &err) == VIDI_OK && fabs(r2 - 1) < 1e-5 && e2 < 1e-5,
          "dense plan: recall %.6f, error %g", r2, e2);
    vidi_sparse_plan_free(&pd);
    free(v);
    vidi_sparse_plan_free(&pg);
    vidi_sparse_plan_free(&pa);
    free(q);
    free(k);
}

static void test_vslash_estimation_finds_planted_columns(void) {
    setup();
    float *q = malloc(sizeof(float) * N * HQ * D), *k = malloc(sizeof(float) * N * HKV * D);
    REQUIRE(q && k, "oom");
    plant_grid(q, k); /* the frame starts are vertical columns too */
    int32_t vert[N], slash[N];
    int64_t nv = 0, ns = 0;
    vidi_err err = {0};
    vidi_sparse_qk qk = {q, k, HQ, HKV, D, 0, NULL, NULL};
    CHECK(vidi_sparse_estimate_vslash(&qk, N, 32, 4, 8, 4 + T, 8, vert, &nv, slash, &ns, &err) == VIDI_OK, "%s", err.msg);
    int found = 0;
    for (int64_t c = 0; c < nv; c++) found += vert[c] >= PREFIX && (vert[c] - PREFIX) % FRAME == 0;
    CHECK(nv == 4 + T && found == T, "%d of %d frame starts among %lld verticals", found, T, (long long)nv);
    for (int64_t c = 0; c < 4 && c < nv; c++) CHECK(vert[c] == c, "sink column %lld is %d", (long long)c, vert[c]);
    CHECK(ns == 8 && slash[0] == 0 && slash[7] == 7, "forced local diagonals: %lld, %d..%d", (long long)ns, slash[0],
          slash[ns - 1]);
    free(q);
    free(k);
}

/* Row i of a GRID head (h = 0) over the video span: keys [0, sink'), the
 * local window of its tile [rmin - local + 1, i] (rmin: the tile's first
 * row) and span.start + phase + k stride, where sink' = max(sink, span
 * start); text rows: every key. */
/* Should a grid head g (h = 0; Q- or 2D-boundary) give row i key j, where
 * rmin is the first row of i's tile? Q: every key for text rows, sink +
 * the tile's local window + the lines for video rows. 2D: text rows after
 * the video keep text keys, the local window and the lines. */
static int grid_wants(const vidi_sparse_head *g, int64_t i, int64_t j, int64_t rmin) {
    const vidi_span *v = &g_spans[1];
    int64_t sink = g->sink > v->start ? g->sink : v->start;
    int lines = j >= v->start && j < v->end && (j - v->start) % g->stride == g->phase;
    int local = j > rmin - g->local;
    if (i < v->start) return 1;                             /* the text prefix: dense */
    if (i < v->end) return j < sink || local || lines;     /* V->V grid, V->T sink and local */
    if (!g->boundary2d) return 1;                           /* Q-boundary: text rows dense */
    return j < v->start || j >= v->end || local || lines; /* T->T dense, T->V lines and local */
}

/* Over every row of plan p: rows whose keys are not grid_wants', keys twice. */
static void check_grid_keys(const vidi_sparse_plan *p, const vidi_sparse_head *g, int *bad, int *twice) {
    static int64_t tile_of[N];
    static int32_t keys[N];
    static unsigned char want[N], got[N];
    *bad = *twice = 0;
    for (int64_t t = 0; t < p->n_tiles; t++)
        for (int64_t r = 0; r < p->tiles[t].n_rows; r++) tile_of[p->rows[p->tiles[t].row0 + r]] = t;
    for (int64_t i = 0; i < N; i++) {
        memset(want, 0, sizeof want);
        memset(got, 0, sizeof got);
        const vidi_sparse_tile *tl = &p->tiles[tile_of[i]];
        int64_t rmin = N;
        for (int64_t r = 0; r < tl->n_rows; r++)
            if (p->rows[tl->row0 + r] < rmin) rmin = p->rows[tl->row0 + r];
        for (int64_t j = 0; j <= i; j++) want[j] = (unsigned char)grid_wants(g, i, j, rmin);
        int64_t nk = vidi_sparse_row_keys(p, tl, i, keys);
        for (int64_t k = 0; k < nk; k++) *twice += got[keys[k]]++ > 0;
        *bad += memcmp(want, got, sizeof want) != 0;
    }
}

static void test_grid_keys_exact_and_packed(void) {
    setup();
    vidi_err err = {0};
    vidi_sparse_head g = head_of(VIDI_SPARSE_GRID);
    g.h = 0, g.phase = 3;
    vidi_sparse_plan p;
    REQUIRE(vidi_sparse_plan_build(&g, g_spans, g_n_spans, N, NULL, &p, &err) == VIDI_OK, "%s", err.msg);
    int strided = 0, bad = 0, twice = 0;
    for (int64_t t = 0; t < p.n_tiles; t++)
        for (int64_t s = 0; s < p.tiles[t].n_segs; s++) strided += p.segs[p.tiles[t].seg0 + s].step > 1;
    CHECK(strided > 0, "no strided segment in a grid plan");
    check_grid_keys(&p, &g, &bad, &twice);
    CHECK(!bad && !twice, "grid keys: %d rows differ from sink + local + lines, %d keys twice", bad, twice);
    /* 2D-boundary: the text rows after the video get text keys, sink, local and the lines only */
    vidi_sparse_head g2 = g;
    g2.boundary2d = 1;
    vidi_sparse_plan p2d;
    REQUIRE(vidi_sparse_plan_build(&g2, g_spans, g_n_spans, N, NULL, &p2d, &err) == VIDI_OK, "%s", err.msg);
    check_grid_keys(&p2d, &g2, &bad, &twice);
    CHECK(!bad && !twice, "2D-boundary grid keys: %d rows differ, %d keys twice", bad, twice);
    CHECK(vidi_sparse_plan_density(&p2d) < vidi_sparse_plan_density(&p), "2D-boundary keeps no fewer pairs (%g vs %g)",
          vidi_sparse_plan_density(&p2d), vidi_sparse_plan_density(&p));
    vidi_sparse_plan_free(&p2d);
    /* two heads packed */
    vidi_sparse_plan p2;
    vidi_sparse_head a = head_of(VIDI_SPARSE_ASHAPE);
    REQUIRE(vidi_sparse_plan_build(&a, g_spans, g_n_spans, N, NULL, &p2, &err) == VIDI_OK, "%s", err.msg);
    vidi_sparse_plan both[2] = {p, p2};
    int heads[2] = {3, 1};
    vidi_sparse_packed pk;
    REQUIRE(vidi_sparse_pack(both, heads, 2, &pk, &err) == VIDI_OK, "%s", err.msg);
    CHECK(pk.n_tiles == p.n_tiles + p2.n_tiles && pk.n_rows == 2 * N && pk.n_segs == p.n_segs + p2.n_segs,
          "packed %lld tiles %lld rows %lld segs", (long long)pk.n_tiles, (long long)pk.n_rows, (long long)pk.n_segs);
    int64_t last = INT64_MAX, pairs = 0, rows_of[2] = {0, 0};
    bad = 0;
    for (int64_t t = 0; t < pk.n_tiles; t++) {
        const int32_t *o = pk.tiles + 8 * t;
        int64_t work = (int64_t)o[1] * o[7];
        bad += work > last;
        last = work;
        pairs += work;
        bad += o[6] != 3 && o[6] != 1;
        rows_of[o[6] == 1] += o[1];
        int64_t before = 0; /* the running key counts, and the keys field */
        for (int s = 0; s < o[3]; s++) {
            const int32_t *g4 = pk.segs + 4 * (o[2] + s);
            bad += g4[3] != before;
            before += (g4[1] - g4[0] + g4[2] - 1) / g4[2];
        }
        bad += before + o[5] != o[7];
        for (int r = 0; r < o[1]; r++) bad += pk.rows[o[0] + r] < 0 || pk.rows[o[0] + r] >= N;
    }
    CHECK(!bad && rows_of[0] == N && rows_of[1] == N && pairs == pk.pairs_computed,
          "packed tiles: %lld inconsistencies, rows per head %lld / %lld", (long long)bad, (long long)rows_of[0],
          (long long)rows_of[1]);
    vidi_sparse_packed_free(&pk);
    vidi_sparse_plan_free(&p2);
    vidi_sparse_plan_free(&p);
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"spans_from_pads", test_spans_from_pads},
        {"every_pattern_plan_equals_masked_dense", test_every_pattern_plan_equals_masked_dense},
        {"dense_plan_is_causal_attention", test_dense_plan_is_causal_attention},
        {"a_row_without_keys_gets_zeros", test_a_row_without_keys_gets_zeros},
        {"planted_grid_is_found_and_kept", test_planted_grid_is_found_and_kept},
        {"vslash_estimation_finds_planted_columns", test_vslash_estimation_finds_planted_columns},
        {"grid_keys_exact_and_packed", test_grid_keys_exact_and_packed},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    free(g_q);
    free(g_k);
    free(g_v);
    return rc;
}
