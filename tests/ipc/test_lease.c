/* tests/ipc/test_lease.c — the export buffer's leases (ipc/lease.h): ranges
 * inside the buffer, aligned and never overlapping; first fit that refuses
 * only when no gap is large enough; RELEASE of unknown or expired leases
 * freeing nothing; expiry by time; and a randomized run against a byte map.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/lease.h"
#include "test_util.h"

static void test_create_rejects_bad_arguments(void) {
    CHECK(vidi_lease_pool_create(0, 256, 4) == NULL, "0 bytes accepted");
    CHECK(vidi_lease_pool_create(4096, 0, 4) == NULL, "align 0 accepted");
    CHECK(vidi_lease_pool_create(4096, 96, 4) == NULL, "align 96 (not a power of two) accepted");
    CHECK(vidi_lease_pool_create(4096, 256, 0) == NULL, "0 leases accepted");
}

static void test_take_give_and_first_fit(void) {
    vidi_lease_pool *p = vidi_lease_pool_create(4096, 256, 8);
    REQUIRE(p, "create");
    vidi_err err = {0};
    uint64_t a, b, c, oa, ob, oc, x, ox;
    REQUIRE(vidi_lease_take(p, 100, 1000, &a, &oa, &err) == VIDI_OK, "take a: %s", err.msg);
    REQUIRE(vidi_lease_take(p, 1000, 1000, &b, &ob, &err) == VIDI_OK, "take b: %s", err.msg);
    REQUIRE(vidi_lease_take(p, 256, 1000, &c, &oc, &err) == VIDI_OK, "take c: %s", err.msg);
    CHECK(oa == 0 && ob == 256 && oc == 1280, "offsets %llu %llu %llu", (unsigned long long)oa,
          (unsigned long long)ob, (unsigned long long)oc);
    CHECK(a != b && b != c && a != c && a && b && c, "lease numbers %llu %llu %llu", (unsigned long long)a,
          (unsigned long long)b, (unsigned long long)c);
    CHECK(vidi_lease_held(p) == 3 && vidi_lease_bytes_held(p) == 256 + 1024 + 256, "held %d, %llu bytes",
          vidi_lease_held(p), (unsigned long long)vidi_lease_bytes_held(p));
    /* 4096 - 1536 = 2560 left at the end: 2561 does not fit, 2560 does */
    CHECK(vidi_lease_take(p, 2561, 1000, &x, &ox, &err) == VIDI_ERR_RANGE, "2561 bytes fit in 2560");
    CHECK(strstr(err.msg, "no free range") != NULL, "message: %s", err.msg);
    CHECK(vidi_lease_held(p) == 3, "a refused take changed the pool");
    /* freeing b opens a 1024-byte gap at 256, which the next fit takes first */
    CHECK(vidi_lease_give(p, b) == 1, "give b");
    CHECK(vidi_lease_give(p, b) == 0, "b given twice");
    REQUIRE(vidi_lease_take(p, 700, 1000, &x, &ox, &err) == VIDI_OK, "take into the gap: %s", err.msg);
    CHECK(ox == 256 && x != b, "first fit: offset %llu, lease %llu (b was %llu)", (unsigned long long)ox,
          (unsigned long long)x, (unsigned long long)b);
    CHECK(vidi_lease_take(p, 5000, 1000, &x, &ox, &err) == VIDI_ERR_RANGE, "larger than the buffer");
    vidi_lease_pool_free(p);
}

static void test_max_leases_and_expiry(void) {
    vidi_lease_pool *p = vidi_lease_pool_create(1 << 20, 64, 3);
    REQUIRE(p, "create");
    vidi_err err = {0};
    uint64_t l[4], o[4];
    REQUIRE(vidi_lease_take(p, 10, 100, &l[0], &o[0], &err) == VIDI_OK, "take");
    REQUIRE(vidi_lease_take(p, 10, 200, &l[1], &o[1], &err) == VIDI_OK, "take");
    REQUIRE(vidi_lease_take(p, 10, 300, &l[2], &o[2], &err) == VIDI_OK, "take");
    CHECK(vidi_lease_take(p, 10, 300, &l[3], &o[3], &err) == VIDI_ERR_RANGE, "a 4th lease of 3");
    CHECK(vidi_lease_expire(p, 99) == 0, "expired early");
    CHECK(vidi_lease_expire(p, 200) == 2, "expiry at 200 frees the leases until 100 and 200");
    CHECK(vidi_lease_give(p, l[0]) == 0 && vidi_lease_give(p, l[1]) == 0, "an expired lease given back");
    CHECK(vidi_lease_held(p) == 1 && vidi_lease_bytes_held(p) == 64, "held %d", vidi_lease_held(p));
    REQUIRE(vidi_lease_take(p, 10, 400, &l[3], &o[3], &err) == VIDI_OK, "take after expiry: %s", err.msg);
    CHECK(l[3] > l[2], "lease numbers are not reused");
    vidi_lease_pool_free(p);
}

/* Random takes, gives and expiries against a map of the buffer's units. */
static void test_random_against_a_byte_map(void) {
    enum { UNITS = 512, ALIGN = 16, MAXL = 64 };
    vidi_lease_pool *p = vidi_lease_pool_create(UNITS * ALIGN, ALIGN, MAXL);
    REQUIRE(p, "create");
    uint64_t owner[UNITS]; /* lease number per unit, 0 free */
    memset(owner, 0, sizeof owner);
    uint64_t ids[MAXL], until[MAXL];
    int n = 0;
    uint64_t now = 0, seed = 12345;
    vidi_err err = {0};
    for (int step = 0; step < 20000; step++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(seed >> 33);
        if (r % 3 != 0 || n == 0) {
            uint64_t bytes = 1 + (r >> 4) % (64 * ALIGN), lease, off;
            uint64_t units = (bytes + ALIGN - 1) / ALIGN;
            /* the first gap of `units` free units, if any */
            int first = -1;
            for (int u = 0, run = 0; u < UNITS; u++) {
                run = owner[u] ? 0 : run + 1;
                if (run == (int)units) {
                    first = u - run + 1;
                    break;
                }
            }
            vidi_status st = vidi_lease_take(p, bytes, now + 1 + (r >> 8) % 50, &lease, &off, &err);
            if (n == MAXL || first < 0) {
                CHECK(st == VIDI_ERR_RANGE, "step %d: took %llu bytes with no room", step, (unsigned long long)bytes);
                continue;
            }
            REQUIRE(st == VIDI_OK, "step %d: %llu bytes refused with a gap at unit %d: %s", step,
                    (unsigned long long)bytes, first, err.msg);
            REQUIRE(off % ALIGN == 0 && off / ALIGN == (uint64_t)first, "step %d: offset %llu, first fit unit %d",
                    step, (unsigned long long)off, first);
            for (uint64_t u = off / ALIGN; u < off / ALIGN + units; u++) owner[u] = lease;
            ids[n] = lease;
            until[n++] = now + 1 + (r >> 8) % 50;
        } else if (r % 3 == 0 && (r >> 5) % 4) {
            int k = (int)((r >> 7) % (unsigned)n);
            CHECK(vidi_lease_give(p, ids[k]) == 1, "step %d: give", step);
            for (int u = 0; u < UNITS; u++)
                if (owner[u] == ids[k]) owner[u] = 0;
            ids[k] = ids[n - 1], until[k] = until[n - 1], n--;
        } else {
            now += 5;
            int freed = 0;
            for (int k = n - 1; k >= 0; k--)
                if (until[k] <= now) {
                    for (int u = 0; u < UNITS; u++)
                        if (owner[u] == ids[k]) owner[u] = 0;
                    ids[k] = ids[n - 1], until[k] = until[n - 1], n--, freed++;
                }
            CHECK(vidi_lease_expire(p, now) == freed, "step %d: expiry count", step);
        }
        REQUIRE(vidi_lease_held(p) == n, "step %d: held %d, model %d", step, vidi_lease_held(p), n);
    }
    vidi_lease_pool_free(p);
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"create_rejects_bad_arguments", test_create_rejects_bad_arguments},
        {"take_give_and_first_fit", test_take_give_and_first_fit},
        {"max_leases_and_expiry", test_max_leases_and_expiry},
        {"random_against_a_byte_map", test_random_against_a_byte_map},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
