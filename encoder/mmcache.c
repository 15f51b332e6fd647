/* encoder/mmcache.c — the multimedia-token cache (see mmcache.h).
 *
 * Layout: every entry is one heap node holding the public entry, its
 * reference count and three links. The nodes are found through a chained
 * hash table keyed by the 16-byte content key, and each node sits on
 * exactly one of two lists:
 *   - lru: the unreferenced entries, head = most recently used, tail = the
 *     next to evict;
 *   - pinned: the referenced entries, which no put may evict.
 * A get of an unreferenced entry moves it to pinned; the release of its last
 * reference moves it back to the head of lru. Eviction therefore only ever
 * pops the tail of lru, and whether a put can fit is known before anything
 * is evicted: referenced_bytes + bytes <= budget.
 */
#include "encoder/mmcache.h"

#include <stdlib.h>
#include <string.h>

typedef struct mm_node {
    vidi_mmcache_entry pub;    /* first: a vidi_mmcache_entry * is a mm_node * */
    uint32_t refs;
    struct mm_node *prev, *next; /* on lru or pinned */
    struct mm_node *chain;       /* next node in the same hash bucket */
} mm_node;

typedef struct mm_list {
    mm_node *head, *tail;
} mm_list;

struct vidi_mmcache {
    uint64_t budget;
    vidi_mmcache_free_fn free_fn;
    void *user;
    mm_node **buckets;   /* nbuckets chains, nbuckets a power of two */
    size_t nbuckets;
    mm_list lru;
    mm_list pinned;
    vidi_mmcache_counters st;
};

#define MM_BUCKETS_MIN 64

static mm_node *mm_node_of(const vidi_mmcache_entry *e) { return (mm_node *)e; }

/* ---- lists ---- */

static void mm_list_unlink(mm_list *l, mm_node *n) {
    if (n->prev) n->prev->next = n->next;
    else l->head = n->next;
    if (n->next) n->next->prev = n->prev;
    else l->tail = n->prev;
    n->prev = n->next = NULL;
}

static void mm_list_push_front(mm_list *l, mm_node *n) {
    n->prev = NULL;
    n->next = l->head;
    if (l->head) l->head->prev = n;
    else l->tail = n;
    l->head = n;
}

/* ---- hash table ---- */

/* The key is already a strong hash; mixing both halves keeps the table well
 * spread even for keys that are not (tests, hand-made keys). */
static size_t mm_bucket(const vidi_mmcache *c, const uint8_t *key) {
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    uint64_t h = a ^ (b * 0x9E3779B97F4A7C15ull);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    return (size_t)h & (c->nbuckets - 1);
}

static mm_node *mm_find(const vidi_mmcache *c, const uint8_t *key) {
    for (mm_node *n = c->buckets[mm_bucket(c, key)]; n; n = n->chain)
        if (memcmp(n->pub.key, key, VIDI_MMCACHE_KEY_BYTES) == 0) return n;
    return NULL;
}

static void mm_hash_add(vidi_mmcache *c, mm_node *n) {
    size_t b = mm_bucket(c, n->pub.key);
    n->chain = c->buckets[b];
    c->buckets[b] = n;
}

static void mm_hash_remove(vidi_mmcache *c, mm_node *n) {
    mm_node **p = &c->buckets[mm_bucket(c, n->pub.key)];
    while (*p != n) p = &(*p)->chain;
    *p = n->chain;
    n->chain = NULL;
}

/* Double the bucket array once there are more entries than buckets. A failed
 * allocation is not an error: the chains just get longer. */
static void mm_hash_maybe_grow(vidi_mmcache *c) {
    if (c->st.entries <= c->nbuckets || c->nbuckets > SIZE_MAX / 2 / sizeof(mm_node *)) return;
    mm_node **nb = calloc(c->nbuckets * 2, sizeof *nb);
    if (!nb) return;
    free(c->buckets);
    c->buckets = nb;
    c->nbuckets *= 2;
    const mm_list *lists[2] = {&c->lru, &c->pinned};
    for (int i = 0; i < 2; i++)
        for (mm_node *n = lists[i]->head; n; n = n->next) mm_hash_add(c, n);
}

/* ---- references ---- */

static void mm_ref(vidi_mmcache *c, mm_node *n) {
    if (n->refs == 0) {
        mm_list_unlink(&c->lru, n);
        mm_list_push_front(&c->pinned, n);
        c->st.referenced++;
        c->st.referenced_bytes += n->pub.bytes;
    }
    n->refs++;
}

/* ---- public ---- */

vidi_status vidi_mmcache_create(uint64_t budget_bytes, vidi_mmcache_free_fn free_fn, void *user,
                                vidi_mmcache **out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_mmcache *c = NULL;
    *out = NULL;
    VIDI_CHECK(budget_bytes > 0, err, VIDI_ERR_INVALID, "mmcache: the byte budget must be > 0");
    VIDI_CHECK(free_fn, err, VIDI_ERR_INVALID, "mmcache: a free function for the embedding buffers is required");
    c = calloc(1, sizeof *c);
    VIDI_CHECK(c, err, VIDI_ERR_NOMEM, "mmcache: out of memory creating the cache");
    c->nbuckets = MM_BUCKETS_MIN;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    VIDI_CHECK(c->buckets, err, VIDI_ERR_NOMEM, "mmcache: out of memory creating the cache");
    c->budget = budget_bytes;
    c->st.budget = budget_bytes;
    c->free_fn = free_fn;
    c->user = user;
    *out = c;
    return VIDI_OK;
fail:
    if (c) free(c->buckets);
    free(c);
    return rc;
}

void vidi_mmcache_free(vidi_mmcache *c) {
    if (!c) return;
    mm_list *lists[2] = {&c->lru, &c->pinned};
    for (int i = 0; i < 2; i++) {
        mm_node *n = lists[i]->head;
        while (n) {
            mm_node *next = n->next;
            c->free_fn(n->pub.data, c->user);
            free(n);
            n = next;
        }
    }
    free(c->buckets);
    free(c);
}

int vidi_mmcache_get(vidi_mmcache *c, const uint8_t key[VIDI_MMCACHE_KEY_BYTES], vidi_mmcache_entry **out) {
    mm_node *n = mm_find(c, key);
    if (!n) {
        c->st.misses++;
        *out = NULL;
        return 0;
    }
    c->st.hits++;
    mm_ref(c, n);
    *out = &n->pub;
    return 1;
}

/* Evict the least recently used unreferenced entry. */
static void mm_evict_one(vidi_mmcache *c) {
    mm_node *n = c->lru.tail;
    mm_list_unlink(&c->lru, n);
    mm_hash_remove(c, n);
    c->st.entries--;
    c->st.bytes_used -= n->pub.bytes;
    c->st.evictions++;
    c->free_fn(n->pub.data, c->user);
    free(n);
}

/* First 8 key bytes in hex, for messages. */
static const char *mm_key_str(char buf[17], const uint8_t *key) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        buf[2 * i] = hex[key[i] >> 4];
        buf[2 * i + 1] = hex[key[i] & 15];
    }
    buf[16] = '\0';
    return buf;
}

vidi_status vidi_mmcache_put(vidi_mmcache *c, const uint8_t key[VIDI_MMCACHE_KEY_BYTES], void *data,
                             uint64_t bytes, vidi_dtype dtype, int64_t rows, int64_t hidden,
                             const int32_t grid[3], float second_per_grid_t, vidi_mmcache_entry **out,
                             vidi_err *err) {
    vidi_status rc = VIDI_OK;
    char ks[17];
    if (out) *out = NULL;
    uint64_t es = (unsigned)dtype < VIDI_DTYPE_COUNT ? vidi_dtype_size(dtype) : 0;
    VIDI_CHECK(es > 0, err, VIDI_ERR_INVALID, "mmcache put %s...: unknown dtype %d", mm_key_str(ks, key), (int)dtype);
    VIDI_CHECK(data, err, VIDI_ERR_INVALID, "mmcache put %s...: no data", mm_key_str(ks, key));
    VIDI_CHECK(rows > 0 && hidden > 0, err, VIDI_ERR_INVALID, "mmcache put %s...: shape %lld x %lld is empty",
               mm_key_str(ks, key), (long long)rows, (long long)hidden);
    VIDI_CHECK(grid && grid[0] > 0 && grid[1] > 0 && grid[2] > 0, err, VIDI_ERR_INVALID,
               "mmcache put %s...: grid (t, h, w) must be positive", mm_key_str(ks, key));
    VIDI_CHECK((uint64_t)hidden <= UINT64_MAX / es && (uint64_t)rows <= UINT64_MAX / ((uint64_t)hidden * es) &&
                   (uint64_t)rows * (uint64_t)hidden * es == bytes,
               err, VIDI_ERR_INVALID, "mmcache put %s...: %llu bytes given for %lld x %lld %s values",
               mm_key_str(ks, key), (unsigned long long)bytes, (long long)rows, (long long)hidden,
               vidi_dtype_name(dtype));

    mm_node *n = mm_find(c, key);
    if (n) {
        /* Same content already cached: keep the first, drop the new copy
         * (unless the caller handed the cached buffer itself back). */
        if (data != n->pub.data) c->free_fn(data, c->user);
        c->st.duplicates++;
        if (out) {
            mm_ref(c, n);
            *out = &n->pub;
        } else if (n->refs == 0) {
            mm_list_unlink(&c->lru, n);
            mm_list_push_front(&c->lru, n);
        }
        return VIDI_OK;
    }

    if (bytes > c->budget) {
        c->st.rejected++;
        rc = vidi_err_set(err, VIDI_ERR_RANGE,
                          "mmcache put %s...: the item's %llu bytes exceed the whole budget of %llu",
                          mm_key_str(ks, key), (unsigned long long)bytes, (unsigned long long)c->budget);
        goto fail;
    }
    if (c->st.referenced_bytes + bytes > c->budget) {
        c->st.rejected++;
        rc = vidi_err_set(err, VIDI_ERR_RANGE,
                          "mmcache put %s...: the item's %llu bytes do not fit: %llu of the %llu-byte budget are "
                          "held by %llu referenced entries (release them, or raise the budget)",
                          mm_key_str(ks, key), (unsigned long long)bytes, (unsigned long long)c->st.referenced_bytes,
                          (unsigned long long)c->budget, (unsigned long long)c->st.referenced);
        goto fail;
    }

    n = calloc(1, sizeof *n);
    VIDI_CHECK(n, err, VIDI_ERR_NOMEM, "mmcache put %s...: out of memory for the entry", mm_key_str(ks, key));

    /* Fits once enough unreferenced entries go: the check above guarantees
     * the lru list holds at least the bytes missing. */
    while (c->st.bytes_used + bytes > c->budget) mm_evict_one(c);

    memcpy(n->pub.key, key, VIDI_MMCACHE_KEY_BYTES);
    n->pub.data = data;
    n->pub.bytes = bytes;
    n->pub.dtype = dtype;
    n->pub.rows = rows;
    n->pub.hidden = hidden;
    memcpy(n->pub.grid, grid, sizeof n->pub.grid);
    n->pub.second_per_grid_t = second_per_grid_t;
    mm_hash_add(c, n);
    mm_list_push_front(&c->lru, n);
    c->st.entries++;
    c->st.bytes_used += bytes;
    c->st.inserts++;
    if (out) {
        mm_ref(c, n);
        *out = &n->pub;
    }
    mm_hash_maybe_grow(c);
    return VIDI_OK;

fail:
    if (data) c->free_fn(data, c->user);
    return rc;
}

vidi_status vidi_mmcache_release(vidi_mmcache *c, vidi_mmcache_entry *e) {
    mm_node *n = mm_node_of(e);
    if (n->refs == 0) return VIDI_ERR_INVALID;
    if (--n->refs == 0) {
        mm_list_unlink(&c->pinned, n);
        mm_list_push_front(&c->lru, n);
        c->st.referenced--;
        c->st.referenced_bytes -= n->pub.bytes;
    }
    return VIDI_OK;
}

uint32_t vidi_mmcache_entry_refs(const vidi_mmcache_entry *e) { return mm_node_of(e)->refs; }

int vidi_mmcache_contains(const vidi_mmcache *c, const uint8_t key[VIDI_MMCACHE_KEY_BYTES]) {
    return mm_find(c, key) != NULL;
}

size_t vidi_mmcache_keys(const vidi_mmcache *c, uint8_t (*keys)[VIDI_MMCACHE_KEY_BYTES], size_t max) {
    size_t i = 0;
    const mm_list *lists[2] = {&c->pinned, &c->lru};
    for (int l = 0; l < 2 && i < max; l++)
        for (const mm_node *n = lists[l]->head; n && i < max; n = n->next)
            memcpy(keys[i++], n->pub.key, VIDI_MMCACHE_KEY_BYTES);
    return (size_t)c->st.entries;
}

vidi_mmcache_counters vidi_mmcache_stats(const vidi_mmcache *c) { return c->st; }
