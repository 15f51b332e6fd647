/* tests/unit/test_mmcache.c — the encode role's multimedia-token cache
 * (encoder/mmcache.h): hit and miss counting, LRU eviction, references that
 * pin entries, rejection of what cannot fit, duplicate puts, exactly-once
 * freeing of every buffer, and a randomized run against a reference model.
 *
 * Every buffer handed to the cache is malloc'd here with an id in its first
 * bytes; the free function counts frees per id, so a buffer freed twice or
 * never shows up as a count other than 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "encoder/mmcache.h"
#include "test_util.h"

/* ---- buffers with ids and a free log ---- */

typedef struct buf_log {
    int *freed;   /* freed[id]: times free_fn saw buffer id */
    int n, cap;   /* ids handed out */
    int calls;    /* free_fn calls in all */
} buf_log;

/* A buffer of `bytes` (>= 4) tagged with a fresh id. */
static void *buf_new(buf_log *L, uint64_t bytes) {
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 64;
        int *f = realloc(L->freed, (size_t)cap * sizeof *f);
        if (!f) return NULL;
        memset(f + L->cap, 0, (size_t)(cap - L->cap) * sizeof *f);
        L->freed = f;
        L->cap = cap;
    }
    unsigned char *b = malloc(bytes);
    if (!b) return NULL;
    memset(b, 0xA5, bytes);
    uint32_t id = (uint32_t)L->n++;
    memcpy(b, &id, sizeof id);
    return b;
}

static uint32_t buf_id(const void *data) {
    uint32_t id;
    memcpy(&id, data, sizeof id);
    return id;
}

static void buf_free(void *data, void *user) {
    buf_log *L = user;
    uint32_t id = buf_id(data);
    if ((int)id < L->n) L->freed[id]++;
    L->calls++;
    free(data);
}

/* Number of ids not freed exactly once. */
static int buf_bad_frees(const buf_log *L) {
    int bad = 0;
    for (int i = 0; i < L->n; i++) bad += L->freed[i] != 1;
    return bad;
}

static void make_key(uint8_t key[16], uint64_t i) {
    for (int half = 0; half < 2; half++) {
        uint64_t z = i * 2 + (uint64_t)half + 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        memcpy(key + 8 * half, &z, 8);
    }
}

static const int32_t GRID[3] = {1, 4, 6};

/* Put `rows` x 1 f32 values (4 * rows bytes) under key i. */
static vidi_status put_f32(vidi_mmcache *c, buf_log *L, uint64_t i, int64_t rows, vidi_mmcache_entry **out,
                           vidi_err *err) {
    uint8_t key[16];
    make_key(key, i);
    return vidi_mmcache_put(c, key, buf_new(L, (uint64_t)rows * 4), (uint64_t)rows * 4, VIDI_DTYPE_F32, rows, 1,
                            GRID, 0.0f, out, err);
}

static int has(const vidi_mmcache *c, uint64_t i) {
    uint8_t key[16];
    make_key(key, i);
    return vidi_mmcache_contains(c, key);
}

/* get + release: a use that leaves the entry most recently used. */
static int touch(vidi_mmcache *c, uint64_t i) {
    uint8_t key[16];
    make_key(key, i);
    vidi_mmcache_entry *e;
    if (!vidi_mmcache_get(c, key, &e)) return 0;
    return vidi_mmcache_release(c, e) == VIDI_OK;
}

/* ---- cases ---- */

static void test_create_rejects_zero_budget_and_missing_free_fn(void) {
    buf_log L = {0};
    vidi_mmcache *c = (vidi_mmcache *)&L;
    vidi_err err = {0};
    CHECK(vidi_mmcache_create(0, buf_free, &L, &c, &err) == VIDI_ERR_INVALID && c == NULL, "zero budget accepted");
    CHECK(vidi_mmcache_create(100, NULL, &L, &c, &err) == VIDI_ERR_INVALID && c == NULL, "NULL free_fn accepted");
    CHECK(strstr(err.msg, "free function") != NULL, "message: %s", err.msg);
    vidi_mmcache_free(NULL);
}

static void test_get_counts_hits_and_misses_and_returns_what_was_put(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(1 << 20, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);

    uint8_t ka[16], kb[16];
    make_key(ka, 1);
    make_key(kb, 2);
    const int32_t grid[3] = {2, 8, 12};
    void *data = buf_new(&L, 24 * 64 * 2);
    REQUIRE(vidi_mmcache_put(c, ka, data, 24 * 64 * 2, VIDI_DTYPE_BF16, 24, 64, grid, 0.5f, NULL, &err) == VIDI_OK,
            "put: %s", err.msg);

    vidi_mmcache_entry *e = (vidi_mmcache_entry *)&err, *e2 = NULL;
    CHECK(vidi_mmcache_get(c, kb, &e) == 0 && e == NULL, "absent key found");
    REQUIRE(vidi_mmcache_get(c, ka, &e) == 1 && e, "present key missed");
    CHECK(memcmp(e->key, ka, 16) == 0 && e->data == data && e->bytes == 24 * 64 * 2 && e->dtype == VIDI_DTYPE_BF16 &&
              e->rows == 24 && e->hidden == 64 && e->grid[0] == 2 && e->grid[1] == 8 && e->grid[2] == 12 &&
              e->second_per_grid_t == 0.5f,
          "entry fields differ from the put");
    CHECK(vidi_mmcache_entry_refs(e) == 1, "refs %u after one get", vidi_mmcache_entry_refs(e));
    REQUIRE(vidi_mmcache_get(c, ka, &e2) == 1 && e2 == e, "second get");
    CHECK(vidi_mmcache_entry_refs(e) == 2, "refs %u after two gets", vidi_mmcache_entry_refs(e));

    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.hits == 2 && s.misses == 1, "hits %llu misses %llu, want 2 and 1", (unsigned long long)s.hits,
          (unsigned long long)s.misses);
    CHECK(s.entries == 1 && s.bytes_used == 24 * 64 * 2 && s.inserts == 1 && s.referenced == 1 &&
              s.referenced_bytes == 24 * 64 * 2 && s.budget == 1 << 20,
          "fill after one put");

    CHECK(vidi_mmcache_release(c, e) == VIDI_OK && vidi_mmcache_release(c, e) == VIDI_OK, "release");
    CHECK(vidi_mmcache_entry_refs(e) == 0, "refs %u after releases", vidi_mmcache_entry_refs(e));
    CHECK(vidi_mmcache_release(c, e) == VIDI_ERR_INVALID, "a third release of two references succeeded");
    s = vidi_mmcache_stats(c);
    CHECK(s.referenced == 0 && s.referenced_bytes == 0, "still referenced after release");
    vidi_mmcache_free(c);
    CHECK(buf_bad_frees(&L) == 0 && L.calls == 1, "free_fn calls %d", L.calls);
    free(L.freed);
}

static void test_eviction_takes_least_recently_used_first(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(300, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    for (uint64_t i = 0; i < 3; i++)
        REQUIRE(put_f32(c, &L, i, 25, NULL, &err) == VIDI_OK, "put %d: %s", (int)i, err.msg);
    CHECK(vidi_mmcache_stats(c).bytes_used == 300, "cache should be exactly full");

    /* Order of use, oldest first: 1, 2, 0 (touching 0 protects it). */
    REQUIRE(touch(c, 0), "touch 0");
    REQUIRE(put_f32(c, &L, 3, 25, NULL, &err) == VIDI_OK, "put 3: %s", err.msg);
    CHECK(!has(c, 1) && has(c, 0) && has(c, 2) && has(c, 3), "put 3 should have evicted 1, the least recently used");
    CHECK(L.freed[1] == 1 && L.calls == 1, "the evicted buffer is freed at eviction");

    /* Now 2, 0, 3: an item of two slots evicts 2 and then 0. */
    REQUIRE(put_f32(c, &L, 4, 50, NULL, &err) == VIDI_OK, "put 4: %s", err.msg);
    CHECK(!has(c, 2) && !has(c, 0) && has(c, 3) && has(c, 4), "put 4 should have evicted 2 then 0");
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.evictions == 3 && s.entries == 2 && s.bytes_used == 300 && s.inserts == 5, "evictions %llu entries %llu",
          (unsigned long long)s.evictions, (unsigned long long)s.entries);
    CHECK(L.freed[0] == 1 && L.freed[2] == 1 && L.freed[3] == 0 && L.freed[4] == 0, "frees follow evictions");
    vidi_mmcache_free(c);
    CHECK(buf_bad_frees(&L) == 0, "every buffer freed once");
    free(L.freed);
}

static void test_referenced_entries_are_never_evicted(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(300, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    vidi_mmcache_entry *e0, *e1;
    REQUIRE(put_f32(c, &L, 0, 25, &e0, &err) == VIDI_OK, "put 0: %s", err.msg); /* oldest, but referenced */
    CHECK(vidi_mmcache_entry_refs(e0) == 1, "put with out takes a reference");
    REQUIRE(put_f32(c, &L, 1, 25, NULL, &err) == VIDI_OK, "put 1: %s", err.msg);
    REQUIRE(put_f32(c, &L, 2, 25, NULL, &err) == VIDI_OK, "put 2: %s", err.msg);
    REQUIRE(put_f32(c, &L, 3, 25, NULL, &err) == VIDI_OK, "put 3: %s", err.msg);
    CHECK(has(c, 0) && !has(c, 1) && has(c, 2) && has(c, 3), "the referenced 0 was passed over, 1 evicted");

    uint8_t k2[16];
    make_key(k2, 2);
    REQUIRE(vidi_mmcache_get(c, k2, &e1) == 1, "get 2");
    /* 0 and 2 hold 200 of 300 bytes: a 150-byte item cannot fit, and the
     * failed put must leave the unreferenced 3 alone. */
    int calls = L.calls;
    int id = L.n;
    vidi_status st = put_f32(c, &L, 4, 38, NULL, &err);
    CHECK(st == VIDI_ERR_RANGE, "put over the referenced bytes returned %s", vidi_status_name(st));
    CHECK(strstr(err.msg, "referenced") != NULL, "message should say why: %s", err.msg);
    CHECK(L.freed[id] == 1 && L.calls == calls + 1, "the rejected buffer was not freed exactly once");
    CHECK(has(c, 3) && !has(c, 4), "a failed put evicted something or inserted");
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.rejected == 1 && s.evictions == 1 && s.entries == 3 && s.referenced == 2 && s.referenced_bytes == 200,
          "counters after the rejection");

    /* A put that fits once 3 goes. */
    REQUIRE(put_f32(c, &L, 5, 25, NULL, &err) == VIDI_OK, "put 5: %s", err.msg);
    CHECK(has(c, 0) && has(c, 2) && !has(c, 3) && has(c, 5), "3 was the only evictable entry");

    /* Every byte referenced: even a small put is rejected, with *out NULL. */
    vidi_mmcache_entry *e5 = NULL, *e6 = (vidi_mmcache_entry *)&err;
    uint8_t k5[16];
    make_key(k5, 5);
    REQUIRE(vidi_mmcache_get(c, k5, &e5) == 1, "get 5");
    CHECK(put_f32(c, &L, 6, 1, &e6, &err) == VIDI_ERR_RANGE && e6 == NULL, "put into a fully referenced cache");

    /* Releasing makes room again. */
    CHECK(vidi_mmcache_release(c, e0) == VIDI_OK, "release 0");
    REQUIRE(put_f32(c, &L, 7, 25, NULL, &err) == VIDI_OK, "put 7 after release: %s", err.msg);
    CHECK(!has(c, 0) && has(c, 2) && has(c, 5) && has(c, 7), "the released 0 was evicted");
    vidi_mmcache_release(c, e1);
    vidi_mmcache_release(c, e5);
    vidi_mmcache_free(c);
    CHECK(buf_bad_frees(&L) == 0, "every buffer freed once");
    free(L.freed);
}

static void test_item_larger_than_budget_is_rejected(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(100, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    REQUIRE(put_f32(c, &L, 0, 10, NULL, &err) == VIDI_OK, "put small: %s", err.msg);
    vidi_status st = put_f32(c, &L, 1, 26, NULL, &err); /* 104 bytes */
    CHECK(st == VIDI_ERR_RANGE, "oversized put returned %s", vidi_status_name(st));
    CHECK(strstr(err.msg, "budget") != NULL, "message should name the budget: %s", err.msg);
    CHECK(L.freed[1] == 1, "the oversized buffer was not freed");
    CHECK(has(c, 0), "an oversized put evicted what was there");
    REQUIRE(put_f32(c, &L, 2, 25, NULL, &err) == VIDI_OK, "an item of exactly the budget fits: %s", err.msg);
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.rejected == 1 && s.entries == 1 && s.bytes_used == 100 && s.evictions == 1, "counters");
    vidi_mmcache_free(c);
    CHECK(buf_bad_frees(&L) == 0, "every buffer freed once");
    free(L.freed);
}

static void test_duplicate_put_keeps_the_first(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(200, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    vidi_mmcache_entry *e = NULL;
    REQUIRE(put_f32(c, &L, 0, 25, NULL, &err) == VIDI_OK, "put 0");
    REQUIRE(put_f32(c, &L, 1, 25, NULL, &err) == VIDI_OK, "put 1");
    REQUIRE(put_f32(c, &L, 0, 10, &e, &err) == VIDI_OK && e, "duplicate put: %s", err.msg);
    CHECK(buf_id(e->data) == 0 && e->bytes == 100, "the duplicate put replaced the first entry");
    CHECK(L.freed[2] == 1 && L.freed[0] == 0, "the duplicate's buffer should be freed at once, the first kept");
    CHECK(vidi_mmcache_entry_refs(e) == 1, "a duplicate put with out takes a reference");
    vidi_mmcache_release(c, e);

    /* The release left 0 newer than 1; a duplicate put without out counts as
     * a use, so afterwards 1 is the newer one and 0 goes first. */
    REQUIRE(put_f32(c, &L, 1, 25, NULL, &err) == VIDI_OK, "duplicate put of 1");
    REQUIRE(put_f32(c, &L, 2, 25, NULL, &err) == VIDI_OK, "put 2");
    CHECK(!has(c, 0) && has(c, 1) && has(c, 2), "the duplicate put did not refresh 1");

    /* Handing the cached buffer itself back must not free it. */
    uint8_t k1[16];
    make_key(k1, 1);
    vidi_mmcache_entry *e1 = NULL;
    REQUIRE(vidi_mmcache_get(c, k1, &e1) == 1, "get 1");
    CHECK(vidi_mmcache_put(c, k1, e1->data, e1->bytes, e1->dtype, e1->rows, e1->hidden, e1->grid, 0.0f, NULL, &err) ==
              VIDI_OK,
          "put of the cached buffer");
    CHECK(L.freed[1] == 0, "a put of the cached buffer freed it");
    vidi_mmcache_release(c, e1);

    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.duplicates == 3 && s.inserts == 3 && s.entries == 2, "duplicates %llu inserts %llu",
          (unsigned long long)s.duplicates, (unsigned long long)s.inserts);
    vidi_mmcache_free(c);
    CHECK(buf_bad_frees(&L) == 0, "every buffer freed once");
    free(L.freed);
}

static void test_invalid_put_frees_the_data(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(1000, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    uint8_t key[16];
    make_key(key, 9);
    const int32_t zero_grid[3] = {1, 0, 4};
    vidi_mmcache_entry *e = (vidi_mmcache_entry *)&err;
    /* bytes that do not match the shape */
    CHECK(vidi_mmcache_put(c, key, buf_new(&L, 64), 64, VIDI_DTYPE_F32, 4, 3, GRID, 0, &e, &err) == VIDI_ERR_INVALID &&
              e == NULL,
          "wrong byte count accepted");
    CHECK(strstr(err.msg, "64 bytes") != NULL, "message: %s", err.msg);
    CHECK(vidi_mmcache_put(c, key, buf_new(&L, 64), 64, VIDI_DTYPE_COUNT, 4, 4, GRID, 0, NULL, &err) ==
              VIDI_ERR_INVALID,
          "unknown dtype accepted");
    CHECK(vidi_mmcache_put(c, key, buf_new(&L, 64), 64, VIDI_DTYPE_F32, 0, 4, GRID, 0, NULL, &err) == VIDI_ERR_INVALID,
          "zero rows accepted");
    CHECK(vidi_mmcache_put(c, key, buf_new(&L, 64), 64, VIDI_DTYPE_F32, 4, 4, zero_grid, 0, NULL, &err) ==
              VIDI_ERR_INVALID,
          "zero grid accepted");
    CHECK(vidi_mmcache_put(c, key, buf_new(&L, 64), 64, VIDI_DTYPE_F32, INT64_MAX, INT64_MAX, GRID, 0, NULL, &err) ==
              VIDI_ERR_INVALID,
          "overflowing shape accepted");
    CHECK(vidi_mmcache_put(c, key, NULL, 64, VIDI_DTYPE_F32, 4, 4, GRID, 0, NULL, &err) == VIDI_ERR_INVALID,
          "NULL data accepted");
    CHECK(L.calls == 5 && buf_bad_frees(&L) == 0, "each refused buffer freed once (%d calls)", L.calls);
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.entries == 0 && s.inserts == 0 && s.rejected == 0, "invalid puts changed the cache");
    vidi_mmcache_free(c);
    free(L.freed);
}

static void test_free_fn_called_once_per_buffer_including_destroy(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(1000, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    vidi_mmcache_entry *held = NULL;
    for (uint64_t i = 0; i < 40; i++) put_f32(c, &L, i % 17, 1 + (int64_t)(i * 7 % 60), NULL, &err);
    put_f32(c, &L, 100, 300, NULL, &err); /* too big */
    REQUIRE(put_f32(c, &L, 3, 10, &held, &err) == VIDI_OK, "put 3: %s", err.msg);
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.evictions > 0 && s.duplicates > 0 && s.rejected == 1, "the run should evict, duplicate and reject");
    CHECK((uint64_t)L.calls == s.evictions + s.duplicates + s.rejected, "free_fn calls %d before destroy", L.calls);
    /* held still has a reference: destroy frees it anyway. */
    vidi_mmcache_free(c);
    CHECK(L.calls == L.n, "free_fn called %d times for %d buffers", L.calls, L.n);
    CHECK(buf_bad_frees(&L) == 0, "%d buffers not freed exactly once", buf_bad_frees(&L));
    free(L.freed);
}

static void test_contains_and_keys_report_without_touching(void) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(400, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    CHECK(vidi_mmcache_keys(c, NULL, 0) == 0, "keys of an empty cache");
    for (uint64_t i = 0; i < 4; i++) REQUIRE(put_f32(c, &L, i, 25, NULL, &err) == VIDI_OK, "put %d", (int)i);
    uint8_t k2[16];
    make_key(k2, 2);
    vidi_mmcache_entry *e2;
    REQUIRE(vidi_mmcache_get(c, k2, &e2) == 1, "get 2");
    vidi_mmcache_counters before = vidi_mmcache_stats(c);

    /* referenced 2 first, then 3, 1, 0 (most to least recently used) */
    uint8_t keys[8][16], want[16];
    CHECK(vidi_mmcache_keys(c, keys, 8) == 4, "keys count");
    const uint64_t order[4] = {2, 3, 1, 0};
    for (int i = 0; i < 4; i++) {
        make_key(want, order[i]);
        CHECK(memcmp(keys[i], want, 16) == 0, "keys[%d] is not key %d", i, (int)order[i]);
    }
    memset(keys, 0, sizeof keys);
    CHECK(vidi_mmcache_keys(c, keys, 2) == 4, "a short array still returns the entry count");
    make_key(want, 3);
    CHECK(memcmp(keys[1], want, 16) == 0 && keys[2][0] == 0 && keys[2][15] == 0, "wrote past max");

    CHECK(has(c, 0) && has(c, 1) && !has(c, 99), "contains");
    vidi_mmcache_counters after = vidi_mmcache_stats(c);
    CHECK(after.hits == before.hits && after.misses == before.misses, "contains or keys counted a lookup");
    /* contains(0) did not make 0 recent: it is still the next to go. */
    REQUIRE(put_f32(c, &L, 4, 25, NULL, &err) == VIDI_OK, "put 4");
    CHECK(!has(c, 0) && has(c, 1), "contains changed recency");
    CHECK(vidi_mmcache_entry_refs(e2) == 1, "contains or keys took a reference");
    vidi_mmcache_release(c, e2);
    vidi_mmcache_free(c);
    CHECK(buf_bad_frees(&L) == 0, "every buffer freed once");
    free(L.freed);
}

static void test_many_entries_all_found(void) {
    enum { N = 5000 };
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    REQUIRE(vidi_mmcache_create(N * 8, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    for (uint64_t i = 0; i < N; i++) REQUIRE(put_f32(c, &L, i, 2, NULL, &err) == VIDI_OK, "put %d", (int)i);
    int missing = 0;
    for (uint64_t i = 0; i < N; i++) missing += !touch(c, i);
    CHECK(missing == 0, "%d of %d keys not found", missing, N);
    /* every entry was touched in order, so the next puts evict 0, 1, ... */
    for (uint64_t i = N; i < N + 100; i++) REQUIRE(put_f32(c, &L, i, 2, NULL, &err) == VIDI_OK, "put %d", (int)i);
    CHECK(!has(c, 0) && !has(c, 99) && has(c, 100) && has(c, N + 99), "evictions after growth");
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(s.entries == N && s.hits == N && s.evictions == 100, "counters");
    vidi_mmcache_free(c);
    CHECK(buf_bad_frees(&L) == 0, "every buffer freed once");
    free(L.freed);
}

/* ---- randomized run against a reference model ---- */

enum { POOL = 24, MAX_HELD = 10 };

typedef struct model_ent {
    int present;
    uint64_t bytes;
    uint32_t refs;
    uint64_t stamp;   /* when it last became unreferenced-and-recent */
    uint32_t buf;     /* id of its buffer */
} model_ent;

typedef struct model {
    model_ent e[POOL];
    uint64_t clock;
    vidi_mmcache_counters st;
    struct { int k; vidi_mmcache_entry *e; } held[MAX_HELD];
    int nheld;
} model;

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The least recently used unreferenced present entry, or -1. */
static int model_victim(const model *m) {
    int v = -1;
    for (int k = 0; k < POOL; k++)
        if (m->e[k].present && m->e[k].refs == 0 && (v < 0 || m->e[k].stamp < m->e[v].stamp)) v = k;
    return v;
}

static void model_hold(model *m, int k, vidi_mmcache_entry *e) {
    m->held[m->nheld].k = k;
    m->held[m->nheld].e = e;
    m->nheld++;
}

/* Compare the cache with the model; 0 (after reporting) on any difference. */
static int model_check(const model *m, const vidi_mmcache *c, const buf_log *L, int op) {
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    uint64_t sum = 0, n = 0, refd = 0, refd_bytes = 0;
    for (int k = 0; k < POOL; k++) {
        uint8_t key[16];
        make_key(key, (uint64_t)k);
        int in = vidi_mmcache_contains(c, key);
        if (in != m->e[k].present) {
            test_fail(__FILE__, __LINE__, "op %d: key %d present %d in the cache, %d in the model", op, k, in,
                      m->e[k].present);
            return 0;
        }
        if (!m->e[k].present) continue;
        n++;
        sum += m->e[k].bytes;
        if (m->e[k].refs) refd++, refd_bytes += m->e[k].bytes;
        if (L->freed[m->e[k].buf] != 0) {
            test_fail(__FILE__, __LINE__, "op %d: the buffer of present key %d was freed", op, k);
            return 0;
        }
    }
    for (int h = 0; h < m->nheld; h++) {
        int k = m->held[h].k;
        if (!m->e[k].present || vidi_mmcache_entry_refs(m->held[h].e) != m->e[k].refs ||
            buf_id(m->held[h].e->data) != m->e[k].buf) {
            test_fail(__FILE__, __LINE__, "op %d: held entry of key %d lost, or its refs/data differ", op, k);
            return 0;
        }
    }
    if (s.bytes_used > s.budget || s.bytes_used != sum || s.entries != n || s.referenced != refd ||
        s.referenced_bytes != refd_bytes || s.hits != m->st.hits || s.misses != m->st.misses ||
        s.inserts != m->st.inserts || s.evictions != m->st.evictions || s.rejected != m->st.rejected ||
        s.duplicates != m->st.duplicates) {
        test_fail(__FILE__, __LINE__,
                  "op %d: stats differ: bytes %llu/%llu (model %llu) entries %llu/%llu refd %llu/%llu hits %llu/%llu "
                  "misses %llu/%llu inserts %llu/%llu evictions %llu/%llu rejected %llu/%llu dups %llu/%llu",
                  op, (unsigned long long)s.bytes_used, (unsigned long long)s.budget, (unsigned long long)sum,
                  (unsigned long long)s.entries, (unsigned long long)n, (unsigned long long)s.referenced,
                  (unsigned long long)refd, (unsigned long long)s.hits, (unsigned long long)m->st.hits,
                  (unsigned long long)s.misses, (unsigned long long)m->st.misses, (unsigned long long)s.inserts,
                  (unsigned long long)m->st.inserts, (unsigned long long)s.evictions,
                  (unsigned long long)m->st.evictions, (unsigned long long)s.rejected,
                  (unsigned long long)m->st.rejected, (unsigned long long)s.duplicates,
                  (unsigned long long)m->st.duplicates);
        return 0;
    }
    /* keys: referenced ones first (any order), then by recency, newest first. */
    uint8_t keys[POOL][16];
    size_t nk = vidi_mmcache_keys(c, keys, POOL);
    uint64_t last_stamp = UINT64_MAX;
    for (size_t i = 0; i < nk; i++) {
        int k = -1;
        for (int j = 0; j < POOL && k < 0; j++) {
            uint8_t key[16];
            make_key(key, (uint64_t)j);
            if (memcmp(key, keys[i], 16) == 0) k = j;
        }
        int ok = k >= 0 && m->e[k].present;
        if (ok && i < refd) ok = m->e[k].refs > 0;
        if (ok && i >= refd) {
            ok = m->e[k].refs == 0 && m->e[k].stamp < last_stamp;
            last_stamp = m->e[k].stamp;
        }
        if (!ok) {
            test_fail(__FILE__, __LINE__, "op %d: keys()[%zu] out of order or unknown (key %d)", op, i, k);
            return 0;
        }
    }
    return 1;
}

static void run_random(uint64_t seed, int nops) {
    buf_log L = {0};
    vidi_err err = {0};
    vidi_mmcache *c;
    const uint64_t budget = 2000;
    REQUIRE(vidi_mmcache_create(budget, buf_free, &L, &c, &err) == VIDI_OK, "create: %s", err.msg);
    model m;
    memset(&m, 0, sizeof m);
    m.st.budget = budget;
    uint64_t rs = seed;
    int ok = 1;
    for (int op = 0; op < nops && ok; op++) {
        uint64_t r = rng_next(&rs);
        int k = (int)(rng_next(&rs) % POOL);
        uint8_t key[16];
        make_key(key, (uint64_t)k);
        model_ent *me = &m.e[k];
        int kind = (int)(r % 100);
        if (kind < 40) {
            /* put: 1..130 rows of 4 values, f32 or bf16 (8..2080 bytes) */
            int64_t rows = 1 + (int64_t)(rng_next(&rs) % 130);
            vidi_dtype dt = rng_next(&rs) % 2 ? VIDI_DTYPE_F32 : VIDI_DTYPE_BF16;
            uint64_t bytes = (uint64_t)rows * 4 * vidi_dtype_size(dt);
            int want_ref = m.nheld < MAX_HELD && rng_next(&rs) % 3 == 0;
            vidi_mmcache_entry *e = NULL;
            void *data = buf_new(&L, bytes);
            uint32_t id = buf_id(data);
            vidi_status st = vidi_mmcache_put(c, key, data, bytes, dt, rows, 4, GRID, 0.0f, want_ref ? &e : NULL, &err);
            vidi_status want;
            if (me->present) {
                want = VIDI_OK;
                m.st.duplicates++;
                if (want_ref) me->refs++, model_hold(&m, k, e);
                else if (me->refs == 0) me->stamp = ++m.clock;
                ok = L.freed[id] == 1;
            } else {
                uint64_t used = 0, pinned = 0;
                for (int j = 0; j < POOL; j++)
                    if (m.e[j].present) used += m.e[j].bytes, pinned += m.e[j].refs ? m.e[j].bytes : 0;
                if (bytes > budget || pinned + bytes > budget) {
                    want = VIDI_ERR_RANGE;
                    m.st.rejected++;
                    ok = L.freed[id] == 1 && e == NULL;
                } else {
                    want = VIDI_OK;
                    while (used + bytes > budget) {
                        int v = model_victim(&m);
                        if (v < 0) break;
                        m.e[v].present = 0;
                        used -= m.e[v].bytes;
                        m.st.evictions++;
                        if (L.freed[m.e[v].buf] != 1) ok = 0;
                    }
                    me->present = 1;
                    me->bytes = bytes;
                    me->buf = id;
                    me->refs = 0;
                    me->stamp = ++m.clock;
                    m.st.inserts++;
                    if (want_ref) me->refs = 1, model_hold(&m, k, e);
                    ok = ok && L.freed[id] == 0;
                }
            }
            if (st != want) {
                test_fail(__FILE__, __LINE__, "op %d: put of key %d returned %s, want %s (%s)", op, k,
                          vidi_status_name(st), vidi_status_name(want), err.msg);
                ok = 0;
            } else if (!ok) {
                test_fail(__FILE__, __LINE__, "op %d: put of key %d freed the wrong buffers", op, k);
            }
        } else if (kind < 75) {
            vidi_mmcache_entry *e = NULL;
            int hit = vidi_mmcache_get(c, key, &e);
            if (hit != me->present) {
                test_fail(__FILE__, __LINE__, "op %d: get of key %d hit %d, model %d", op, k, hit, me->present);
                ok = 0;
            } else if (hit) {
                m.st.hits++;
                me->refs++;
                if (e->bytes != me->bytes || buf_id(e->data) != me->buf || memcmp(e->key, key, 16) != 0) {
                    test_fail(__FILE__, __LINE__, "op %d: get of key %d returned another item", op, k);
                    ok = 0;
                }
                if (m.nheld < MAX_HELD) {
                    model_hold(&m, k, e);
                } else {
                    vidi_mmcache_release(c, e);
                    if (--me->refs == 0) me->stamp = ++m.clock;
                }
            } else {
                m.st.misses++;
            }
        } else if (kind < 97) {
            if (m.nheld > 0) {
                int h = (int)(rng_next(&rs) % (uint64_t)m.nheld);
                int hk = m.held[h].k;
                if (vidi_mmcache_release(c, m.held[h].e) != VIDI_OK) {
                    test_fail(__FILE__, __LINE__, "op %d: release of a held reference failed", op);
                    ok = 0;
                }
                if (--m.e[hk].refs == 0) m.e[hk].stamp = ++m.clock;
                m.held[h] = m.held[--m.nheld];
            }
        } else {
            /* release everything held, so the cache is sometimes unpinned */
            while (m.nheld > 0) {
                int hk = m.held[--m.nheld].k;
                vidi_mmcache_release(c, m.held[m.nheld].e);
                if (--m.e[hk].refs == 0) m.e[hk].stamp = ++m.clock;
            }
        }
        if (ok) ok = model_check(&m, c, &L, op);
    }
    vidi_mmcache_counters s = vidi_mmcache_stats(c);
    CHECK(!ok || (s.evictions > 0 && s.rejected > 0 && s.duplicates > 0 && s.hits > 0 && s.misses > 0),
          "seed %llu: the run should exercise every path", (unsigned long long)seed);
    vidi_mmcache_free(c);
    CHECK(L.calls == L.n && buf_bad_frees(&L) == 0, "seed %llu: %d of %d buffers not freed exactly once",
          (unsigned long long)seed, buf_bad_frees(&L), L.n);
    free(L.freed);
}

static void test_random_operations_match_reference_model(void) {
    static const uint64_t seeds[] = {0x1234567ull, 0xdeadbeefull, 42ull, 0x9e3779b97f4a7c15ull};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) run_random(seeds[i], 4000);
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"create_rejects_zero_budget_and_missing_free_fn", test_create_rejects_zero_budget_and_missing_free_fn},
        {"get_counts_hits_and_misses_and_returns_what_was_put",
         test_get_counts_hits_and_misses_and_returns_what_was_put},
        {"eviction_takes_least_recently_used_first", test_eviction_takes_least_recently_used_first},
        {"referenced_entries_are_never_evicted", test_referenced_entries_are_never_evicted},
        {"item_larger_than_budget_is_rejected", test_item_larger_than_budget_is_rejected},
        {"duplicate_put_keeps_the_first", test_duplicate_put_keeps_the_first},
        {"invalid_put_frees_the_data", test_invalid_put_frees_the_data},
        {"free_fn_called_once_per_buffer_including_destroy", test_free_fn_called_once_per_buffer_including_destroy},
        {"contains_and_keys_report_without_touching", test_contains_and_keys_report_without_touching},
        {"many_entries_all_found", test_many_entries_all_found},
        {"random_operations_match_reference_model", test_random_operations_match_reference_model},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
