/* tests/unit/test_pool.c — the core building blocks under the kernels:
 * the thread pool (core/pool.h), the scratch arena (core/arena.h) and the
 * half-precision conversions of core/tensor.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/pool.h"
#include "core/tensor.h"
#include "test_util.h"

/* ---- pool ---- */

typedef struct cover_ctx {
    atomic_int *hits;
    int64_t n, grain;
    atomic_int bad_ranges;
} cover_ctx;

/* Every range must lie in [0, n) and be at least `grain` long unless it
 * ends the index space. */
static void cover_fn(void *vctx, int64_t b, int64_t e) {
    cover_ctx *c = vctx;
    if (b < 0 || e > c->n || b >= e || (e - b < c->grain && e != c->n)) atomic_fetch_add(&c->bad_ranges, 1);
    for (int64_t i = b < 0 ? 0 : b; i < e && i < c->n; i++) atomic_fetch_add(&c->hits[i], 1);
}

/* Runs one parallel-for over [0, n) and checks every index was hit once. */
static int run_cover(vidi_pool *p, int64_t n, int64_t grain) {
    cover_ctx c = {calloc((size_t)(n > 0 ? n : 1), sizeof(atomic_int)), n, grain, 0};
    vidi_pool_for(p, n, grain, cover_fn, &c);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; i++) wrong += atomic_load(&c.hits[i]) != 1;
    int bad = atomic_load(&c.bad_ranges);
    CHECK(wrong == 0 && bad == 0, "pool of %d, n=%lld grain=%lld: %lld indices not hit exactly once, %d bad ranges",
          vidi_pool_size(p), (long long)n, (long long)grain, (long long)wrong, bad);
    free(c.hits);
    return wrong == 0 && bad == 0;
}

static void test_pool_covers_every_index_once(void) {
    static const int threads[] = {1, 2, 8, 33};
    static const int64_t sizes[] = {1, 2, 7, 1000, 100003};
    static const int64_t grains[] = {0, 1, 7, 1000};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        vidi_pool *p = vidi_pool_create(threads[t]);
        REQUIRE(p, "vidi_pool_create(%d)", threads[t]);
        CHECK(vidi_pool_size(p) == threads[t], "size %d, want %d", vidi_pool_size(p), threads[t]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) run_cover(p, sizes[s], grains[g]);
        vidi_pool_destroy(p);
    }
}

static void count_calls(void *ctx, int64_t b, int64_t e) { atomic_fetch_add((atomic_int *)ctx, 1); }

static void test_pool_empty_and_null(void) {
    vidi_pool *p = vidi_pool_create(4);
    REQUIRE(p, "pool");
    atomic_int calls = 0;
    vidi_pool_for(p, 0, 1, count_calls, &calls);
    vidi_pool_for(p, -5, 1, count_calls, &calls);
    CHECK(atomic_load(&calls) == 0, "an empty range ran the function %d times", atomic_load(&calls));
    vidi_pool_for(p, 10, 100, count_calls, &calls); /* n <= grain: one call on the caller */
    CHECK(atomic_load(&calls) == 1, "n <= grain made %d calls, want 1", atomic_load(&calls));
    vidi_pool_destroy(p);
    run_cover(NULL, 1000, 1); /* NULL pool: runs on the caller */
    CHECK(vidi_pool_size(NULL) == 1, "size of NULL pool");
    vidi_pool_destroy(NULL);
}

typedef struct nested_ctx {
    vidi_pool *p;
    pthread_t outer_thread[16];
    int inner_calls[16];
    int64_t inner_begin[16], inner_end[16];
    int inner_other_thread[16];
} nested_ctx;

typedef struct inner_ctx {
    nested_ctx *n;
    int64_t slot;
} inner_ctx;

static void inner_fn(void *vctx, int64_t b, int64_t e) {
    inner_ctx *c = vctx;
    nested_ctx *n = c->n;
    n->inner_calls[c->slot]++;
    n->inner_begin[c->slot] = b;
    n->inner_end[c->slot] = e;
    n->inner_other_thread[c->slot] |= !pthread_equal(pthread_self(), n->outer_thread[c->slot]);
}

static void outer_fn(void *vctx, int64_t b, int64_t e) {
    nested_ctx *n = vctx;
    for (int64_t i = b; i < e; i++) {
        n->outer_thread[i] = pthread_self();
        inner_ctx c = {n, i};
        vidi_pool_for(n->p, 100, 1, inner_fn, &c);
    }
}

static void test_pool_nested_call_runs_serially(void) {
    nested_ctx n;
    memset(&n, 0, sizeof n);
    n.p = vidi_pool_create(4);
    REQUIRE(n.p, "pool");
    vidi_pool_for(n.p, 16, 1, outer_fn, &n);
    for (int i = 0; i < 16; i++)
        CHECK(n.inner_calls[i] == 1 && n.inner_begin[i] == 0 && n.inner_end[i] == 100 && !n.inner_other_thread[i],
              "outer item %d: inner ran %d times, last [%lld, %lld), on another thread: %d", i, n.inner_calls[i],
              (long long)n.inner_begin[i], (long long)n.inner_end[i], n.inner_other_thread[i]);
    /* the pool still works normally afterwards */
    run_cover(n.p, 5000, 1);
    vidi_pool_destroy(n.p);
}

static void test_pool_many_jobs(void) {
    vidi_pool *p = vidi_pool_create(6);
    REQUIRE(p, "pool");
    int ok = 1;
    for (int j = 0; j < 2000 && ok; j++) ok = run_cover(p, 1 + j % 97, 1);
    vidi_pool_destroy(p);
}

typedef struct submitter {
    vidi_pool *p;
    int failures;
} submitter;

static void *submit_main(void *arg) {
    submitter *s = arg;
    for (int j = 0; j < 200; j++) {
        int64_t n = 50 + j * 13 % 400;
        atomic_int *hits = calloc((size_t)n, sizeof *hits);
        cover_ctx c = {hits, n, 1, 0};
        vidi_pool_for(s->p, n, 1, cover_fn, &c);
        for (int64_t i = 0; i < n; i++) s->failures += atomic_load(&hits[i]) != 1;
        s->failures += atomic_load(&c.bad_ranges);
        free(hits);
    }
    return NULL;
}

static void test_pool_concurrent_submitters(void) {
    vidi_pool *p = vidi_pool_create(4);
    REQUIRE(p, "pool");
    submitter s[3] = {{p, 0}, {p, 0}, {p, 0}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) REQUIRE(pthread_create(&th[i], NULL, submit_main, &s[i]) == 0, "pthread_create");
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++) CHECK(s[i].failures == 0, "submitter %d saw %d failures", i, s[i].failures);
    vidi_pool_destroy(p);
}

static void test_pool_size_from_env_and_default(void) {
    setenv("VIDI_THREADS", "3", 1);
    vidi_pool *p = vidi_pool_create(0);
    unsetenv("VIDI_THREADS");
    REQUIRE(p, "pool");
    CHECK(vidi_pool_size(p) == 3, "VIDI_THREADS=3 gave %d threads", vidi_pool_size(p));
    vidi_pool_destroy(p);
    vidi_pool *d = vidi_pool_default();
    CHECK(d && d == vidi_pool_default() && vidi_pool_size(d) >= 1, "default pool is not one stable pool");
    if (d) run_cover(d, 12345, 3);
}

/* ---- arena ---- */

static void test_arena_alignment_and_disjoint(void) {
    vidi_arena a;
    vidi_arena_init(&a, 4096);
    static const size_t aligns[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 4096, 0};
    enum { N = 200 };
    unsigned char *ptr[N];
    size_t len[N];
    for (int i = 0; i < N; i++) {
        size_t al = aligns[i % (sizeof aligns / sizeof aligns[0])];
        len[i] = (size_t)(i * 37 % 1500) + 1 + (i % 50 == 0 ? 20000 : 0); /* some larger than a chunk */
        ptr[i] = vidi_arena_alloc(&a, len[i], al);
        REQUIRE(ptr[i], "alloc %d of %zu bytes", i, len[i]);
        size_t want = al ? al : 64;
        CHECK((uintptr_t)ptr[i] % want == 0, "alloc %d: %p not aligned to %zu", i, (void *)ptr[i], want);
        memset(ptr[i], i & 0xff, len[i]);
    }
    int clobbered = 0;
    for (int i = 0; i < N; i++)
        for (size_t j = 0; j < len[i]; j++) clobbered += ptr[i][j] != (unsigned char)(i & 0xff);
    CHECK(clobbered == 0, "%d bytes were overwritten by later allocations", clobbered);
    CHECK(vidi_arena_alloc(&a, 16, 3) == NULL && vidi_arena_alloc(&a, 16, 48) == NULL,
          "a non-power-of-two alignment was accepted");
    CHECK(vidi_arena_alloc(&a, SIZE_MAX - 10, 64) == NULL, "an impossible size did not fail");
    vidi_arena_free(&a);
}

static void test_arena_reset_reuses_largest_chunk(void) {
    vidi_arena a;
    vidi_arena_init(&a, 0);
    CHECK(a.chunk_size == (size_t)1 << 20, "default chunk size %zu", a.chunk_size);
    vidi_arena_init(&a, 1024);
    void *small = vidi_arena_alloc(&a, 100, 64);
    unsigned char *big = vidi_arena_alloc(&a, 50000, 64); /* its own, largest chunk */
    REQUIRE(small && big, "alloc");
    CHECK(a.used_total == 50100 && a.peak_total == 50100, "used %zu peak %zu, want 50100", a.used_total, a.peak_total);
    memset(big, 0xab, 50000);
    vidi_arena_reset(&a);
    CHECK(a.used_total == 0 && a.peak_total == 50100, "after reset: used %zu peak %zu", a.used_total, a.peak_total);
    unsigned char *again = vidi_arena_calloc(&a, 40000, 64);
    CHECK(again == big, "reset did not keep the largest chunk: %p vs %p", (void *)again, (void *)big);
    int nonzero = 0;
    for (int i = 0; again && i < 40000; i++) nonzero += again[i] != 0;
    CHECK(nonzero == 0, "calloc left %d non-zero bytes", nonzero);
    vidi_arena_reset(&a);
    vidi_arena_reset(&a); /* twice is fine */
    vidi_arena_free(&a);
    vidi_arena_init(&a, 0); /* reusable after free */
    CHECK(vidi_arena_alloc(&a, 10, 8) != NULL, "alloc after free + init");
    vidi_arena_free(&a);
}

/* ---- half precision ---- */

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_bf16_round_to_nearest_even(void) {
    static const struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3f800000, 0x3f80}, /* 1.0 */
        {0x3f808000, 0x3f80}, /* halfway, even below */
        {0x3f818000, 0x3f82}, /* halfway, even above */
        {0x3f808001, 0x3f81}, /* just above halfway */
        {0x3f807fff, 0x3f80}, /* just below halfway */
        {0xbf818000, 0xbf82}, /* negative */
        {0x7f7fffff, 0x7f80}, /* FLT_MAX rounds to inf */
        {0x7f7f7fff, 0x7f7f}, /* largest that stays finite */
        {0x7f800000, 0x7f80}, /* inf */
        {0xff800000, 0xff80}, /* -inf */
        {0x00000000, 0x0000}, {0x80000000, 0x8000},
        {0x00008000, 0x0000}, /* subnormal halfway to even 0 */
        {0x00018000, 0x0002}, /* subnormal halfway to even 2 */
        {0x00008001, 0x0001},
        {0x007fffff, 0x0080}, /* largest subnormal rounds up to the smallest normal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = vidi_f32_to_bf16(u2f(cases[i].in));
        CHECK(h == cases[i].out, "bf16(0x%08x) = 0x%04x, want 0x%04x", cases[i].in, h, cases[i].out);
    }
    static const uint32_t nans[] = {0x7f800001, 0x7fc00000, 0xff800001, 0x7fffffff, 0x7f810000};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = vidi_f32_to_bf16(u2f(nans[i]));
        CHECK(isnan(vidi_bf16_to_f32(h)), "bf16 of NaN 0x%08x is 0x%04x, not NaN", nans[i], h);
        CHECK((h & 0x8000) == ((nans[i] >> 16) & 0x8000), "bf16 of NaN 0x%08x lost its sign", nans[i]);
    }
    /* every bf16 value survives a round trip */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = vidi_bf16_to_f32((uint16_t)h);
        if (isnan(f)) bad += !isnan(vidi_bf16_to_f32(vidi_f32_to_bf16(f)));
        else bad += vidi_f32_to_bf16(f) != h;
    }
    CHECK(bad == 0, "%d bf16 values changed in a round trip", bad);
    /* random finite floats: the result is the nearest bf16, ties to even */
    uint64_t s = 0x1234567;
    bad = 0;
    for (int i = 0; i < 1000000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t u = (uint32_t)s;
        if ((u & 0x7f800000) == 0x7f800000) continue;
        float f = u2f(u);
        uint16_t h = vidi_f32_to_bf16(f);
        uint16_t m = h & 0x7fff;
        if (m == 0x7f80) { /* overflow: only at or past the halfway point above the largest bf16 */
            bad += fabsf(f) < u2f(0x7f7f8000);
            continue;
        }
        double d = fabs((double)f - vidi_bf16_to_f32(h));
        double dn = m < 0x7f7f ? fabs((double)f - vidi_bf16_to_f32((uint16_t)(h + 1))) : INFINITY;
        double dp = m > 0 ? fabs((double)f - vidi_bf16_to_f32((uint16_t)(h - 1))) : INFINITY;
        bad += d > dn || d > dp || ((d == dn || d == dp) && (h & 1));
    }
    CHECK(bad == 0, "%d random floats did not round to the nearest even bf16", bad);
}

static void test_f16_conversions(void) {
    static const struct { float in; uint16_t out; } cases[] = {
        {1.0f, 0x3c00},
        {1.0f + 0x1p-11f, 0x3c00},     /* halfway, even below */
        {1.0f + 0x3p-11f, 0x3c02},     /* halfway, even above */
        {-2.0f, 0xc000},
        {65504.0f, 0x7bff},            /* largest half */
        {65519.0f, 0x7bff},
        {65520.0f, 0x7c00},            /* halfway past it rounds to inf */
        {0x1p-14f, 0x0400},            /* smallest normal */
        {0x1p-24f, 0x0001},            /* smallest subnormal */
        {0x1p-25f, 0x0000},            /* halfway to 0: even */
        {0x3p-25f, 0x0002},            /* halfway between 1 and 2 ulps: even */
        {0x1.000002p-25f, 0x0001},     /* just above halfway */
        {0x1.ffcp-15f, 0x0400},        /* 1023.5 ulps: ties to even, out of the subnormals */
        {-1e-10f, 0x8000},             /* underflow keeps the sign */
        {1e-45f, 0x0000},              /* an f32 subnormal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = vidi_f32_to_f16(cases[i].in);
        CHECK(h == cases[i].out, "f16(%a) = 0x%04x, want 0x%04x", (double)cases[i].in, h, cases[i].out);
    }
    CHECK(vidi_f16_to_f32(0x0001) == 0x1p-24f && vidi_f16_to_f32(0x03ff) == 0x3ffp-24f &&
              vidi_f16_to_f32(0x8001) == -0x1p-24f,
          "f16 subnormals decode wrong");
    CHECK(vidi_f16_to_f32(0x7c00) == INFINITY && vidi_f16_to_f32(0xfc00) == -INFINITY, "f16 infinities");
    CHECK(isnan(vidi_f16_to_f32(0x7e00)) && isnan(vidi_f16_to_f32(0x7c01)), "f16 NaNs");
    CHECK(vidi_f16_to_f32(0x8000) == 0.0f && signbit(vidi_f16_to_f32(0x8000)), "f16 -0");
    CHECK(isnan(vidi_f16_to_f32(vidi_f32_to_f16(NAN))) && vidi_f32_to_f16(INFINITY) == 0x7c00 &&
              vidi_f32_to_f16(-INFINITY) == 0xfc00 && vidi_f32_to_f16(1e30f) == 0x7c00,
          "f16 of NaN / inf / huge");
    CHECK(isnan(vidi_f16_to_f32(vidi_f32_to_f16(u2f(0x7f800001)))), "f16 of a NaN with a low payload");
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = vidi_f16_to_f32((uint16_t)h);
        if (isnan(f)) bad += !isnan(vidi_f16_to_f32(vidi_f32_to_f16(f)));
        else bad += vidi_f32_to_f16(f) != h;
    }
    CHECK(bad == 0, "%d f16 values changed in a round trip", bad);
    /* random floats in and around the half range: nearest, ties to even */
    uint64_t s = 0x9876543;
    bad = 0;
    for (int i = 0; i < 1000000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t exp = 100 + (uint32_t)(s >> 40) % 45; /* 2^-27 .. 2^17 */
        uint32_t u = (uint32_t)(s & 0x807fffff) | exp << 23;
        float f = u2f(u);
        uint16_t h = vidi_f32_to_f16(f);
        uint16_t m = h & 0x7fff;
        if (m == 0x7c00) {
            bad += fabsf(f) < 65520.0f;
            continue;
        }
        double d = fabs((double)f - vidi_f16_to_f32(h));
        double dn = m < 0x7bff ? fabs((double)f - vidi_f16_to_f32((uint16_t)(h + 1))) : INFINITY;
        double dp = m > 0 ? fabs((double)f - vidi_f16_to_f32((uint16_t)(h - 1))) : INFINITY;
        bad += d > dn || d > dp || ((d == dn || d == dp) && (h & 1));
    }
    CHECK(bad == 0, "%d random floats did not round to the nearest even f16", bad);
}

static void test_convert_arrays(void) {
    float src[5] = {1.5f, -2.25f, 0.0f, 65504.0f, 3.0f}, back[5];
    uint16_t h[5];
    vidi_convert_from_f32(VIDI_DTYPE_F16, src, h, 5);
    vidi_convert_to_f32(VIDI_DTYPE_F16, h, back, 5);
    CHECK(memcmp(src, back, sizeof src) == 0, "f16 array round trip of exact values");
    vidi_convert_from_f32(VIDI_DTYPE_BF16, src, h, 5);
    vidi_convert_to_f32(VIDI_DTYPE_BF16, h, back, 5);
    CHECK(back[0] == 1.5f && back[1] == -2.25f && back[3] == 65536.0f, "bf16 array conversion");
    int32_t ints[3] = {-7, 0, 1 << 24};
    vidi_convert_to_f32(VIDI_DTYPE_I32, ints, back, 3);
    CHECK(back[0] == -7.0f && back[1] == 0.0f && back[2] == 16777216.0f, "i32 to f32");
    vidi_convert_from_f32(VIDI_DTYPE_F32, src, back, 5);
    CHECK(memcmp(src, back, sizeof src) == 0, "f32 copy");
    CHECK(vidi_dtype_size(VIDI_DTYPE_BF16) == 2 && vidi_dtype_size(VIDI_DTYPE_I32) == 4, "dtype sizes");
    vidi_tensor t = vidi_tensor_3d(VIDI_DTYPE_F16, h, 2, 3, 4);
    CHECK(vidi_tensor_numel(&t) == 24 && vidi_tensor_rows(&t) == 6 && vidi_tensor_cols(&t) == 4 &&
              vidi_tensor_nbytes(&t) == 48,
          "tensor view sizes");
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"pool_covers_every_index_once", test_pool_covers_every_index_once},
        {"pool_empty_and_null", test_pool_empty_and_null},
        {"pool_nested_call_runs_serially", test_pool_nested_call_runs_serially},
        {"pool_many_jobs", test_pool_many_jobs},
        {"pool_concurrent_submitters", test_pool_concurrent_submitters},
        {"pool_size_from_env_and_default", test_pool_size_from_env_and_default},
        {"arena_alignment_and_disjoint", test_arena_alignment_and_disjoint},
        {"arena_reset_reuses_largest_chunk", test_arena_reset_reuses_largest_chunk},
        {"bf16_round_to_nearest_even", test_bf16_round_to_nearest_even},
        {"f16_conversions", test_f16_conversions},
        {"convert_arrays", test_convert_arrays},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
