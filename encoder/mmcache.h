/* encoder/mmcache.h — the encode role's multimedia-token cache.
 *
 * Maps a 16-byte content key (the xxh3-128 hash of a media item's bytes and
 * preprocessing parameters, computed by the router) to the vision embeddings
 * of that item: one contiguous buffer of rows x hidden values of a dtype,
 * with the grid (t, h, w) and seconds per temporal grid step that prefill
 * needs next to them. A hit lets a request skip media decoding and vision
 * encoding.
 *
 * Memory. The cache never allocates, reads or writes an embedding buffer: it
 * stores the pointer and its byte size, and hands the pointer to the free
 * function given at creation when the entry leaves the cache (eviction or
 * vidi_mmcache_free). So the buffers may be host memory (CPU backend) or
 * device memory (CUDA), as the owner of the free function decides.
 *
 * Budget. The sum of the entries' byte sizes never exceeds the budget. A put
 * evicts unreferenced entries, least recently used first, until the new item
 * fits; an entry that holds a reference (from get, or from put with a
 * non-NULL `out`) is never evicted. Nothing is evicted by a put that fails.
 *
 * Recency. An entry becomes the most recently used when it is inserted
 * without a reference, when its last reference is released, and when a
 * duplicate put touches it. While referenced it is not a candidate for
 * eviction at all, so "get, use, release" protects an entry from the next
 * evictions.
 *
 * Threads. A cache is driven by one thread (the encode worker's loop); no
 * function here locks. Calls from several threads need the caller's lock.
 *
 * Complexity. get, put (per evicted entry), release and contains are O(1);
 * keys is O(entries).
 */
#ifndef VIDI_ENCODER_MMCACHE_H
#define VIDI_ENCODER_MMCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"

#define VIDI_MMCACHE_KEY_BYTES 16

typedef struct vidi_mmcache vidi_mmcache;

/* Releases one embedding buffer. Called once per buffer the cache was given,
 * with the `user` pointer given to vidi_mmcache_create. */
typedef void (*vidi_mmcache_free_fn)(void *data, void *user);

/* One cached item. Every field is owned by the cache and read-only to
 * callers; the pointer stays valid while the caller holds a reference (and,
 * without one, until the next put or vidi_mmcache_free). `data` points to
 * `bytes` = rows * hidden * vidi_dtype_size(dtype) bytes, row-major. */
typedef struct vidi_mmcache_entry {
    uint8_t key[VIDI_MMCACHE_KEY_BYTES];
    void *data;
    uint64_t bytes;
    vidi_dtype dtype;
    int64_t rows;              /* embedding rows (merged vision tokens) */
    int64_t hidden;            /* values per row */
    int32_t grid[3];           /* t, h, w of the patch grid */
    float second_per_grid_t;   /* seconds per temporal grid step (0 for images) */
} vidi_mmcache_entry;

/* What vidi_mmcache_stats reports: counters since creation, plus the current
 * fill (entries, bytes_used, referenced, referenced_bytes). */
typedef struct vidi_mmcache_counters {
    uint64_t entries;          /* items in the cache */
    uint64_t bytes_used;       /* sum of their byte sizes, <= budget */
    uint64_t budget;           /* the byte budget given at creation */
    uint64_t referenced;       /* items holding at least one reference */
    uint64_t referenced_bytes; /* their bytes: what no put can evict */
    uint64_t hits;             /* gets that found the key */
    uint64_t misses;           /* gets that did not */
    uint64_t inserts;          /* puts that added a new entry */
    uint64_t evictions;        /* entries evicted to make room */
    uint64_t rejected;         /* puts refused with VIDI_ERR_RANGE */
    uint64_t duplicates;       /* puts of a key already present */
} vidi_mmcache_counters;

/* Create an empty cache holding at most budget_bytes (> 0) of embeddings.
 * free_fn (required) releases a buffer the cache owns; `user` is passed to
 * it untouched. Freed by vidi_mmcache_free. VIDI_ERR_INVALID for a zero
 * budget or a NULL free_fn, VIDI_ERR_NOMEM when allocation fails. */
vidi_status vidi_mmcache_create(uint64_t budget_bytes, vidi_mmcache_free_fn free_fn, void *user,
                                vidi_mmcache **out, vidi_err *err);

/* Destroy the cache: calls free_fn once for every entry's data, then frees
 * the cache. Entries that still hold references are freed too — pointers
 * the caller still has dangle afterwards, so release first where it matters.
 * c may be NULL. */
void vidi_mmcache_free(vidi_mmcache *c);

/* Look `key` up. On a hit, returns 1, sets *out, and takes a reference: the
 * entry cannot be evicted until vidi_mmcache_release is called for it (once
 * per successful get). On a miss, returns 0 and sets *out to NULL. Counts a
 * hit or a miss. */
int vidi_mmcache_get(vidi_mmcache *c, const uint8_t key[VIDI_MMCACHE_KEY_BYTES], vidi_mmcache_entry **out);

/* Insert the embeddings of one item under `key`.
 *
 * Ownership of `data` passes to the cache when put is called, whatever it
 * returns: on failure free_fn(data, user) has been called before put
 * returns (when data is not NULL), so the caller must not free or use it.
 *
 * `bytes` must equal rows * hidden * vidi_dtype_size(dtype), with rows and
 * hidden > 0, a known dtype, data non-NULL and every grid value > 0;
 * otherwise VIDI_ERR_INVALID.
 *
 * When `key` is already present, the existing entry is kept and returned,
 * the new data is freed (unless it is the cached buffer itself), the put
 * counts as a duplicate, and VIDI_OK is returned (the metadata given is not
 * compared with the existing entry's: equal keys mean equal content).
 *
 * Otherwise the item is inserted, evicting unreferenced entries from the
 * least recently used end until it fits. VIDI_ERR_RANGE (counted as
 * rejected, nothing evicted) when the item alone exceeds the budget or when
 * the referenced entries hold so much of the budget that it cannot fit even
 * after evicting every unreferenced entry; VIDI_ERR_NOMEM when the entry
 * cannot be allocated.
 *
 * `out` may be NULL: then no reference is kept and the entry (new or
 * existing) becomes the most recently used. When `out` is non-NULL, *out is
 * set to the entry and a reference is taken, as by get (released with
 * vidi_mmcache_release); on failure *out is set to NULL. */
vidi_status vidi_mmcache_put(vidi_mmcache *c, const uint8_t key[VIDI_MMCACHE_KEY_BYTES], void *data,
                             uint64_t bytes, vidi_dtype dtype, int64_t rows, int64_t hidden,
                             const int32_t grid[3], float second_per_grid_t, vidi_mmcache_entry **out,
                             vidi_err *err);

/* Drop one reference on an entry of this cache (from get or put). When the
 * last one goes, the entry becomes the most recently used and may be evicted
 * again. VIDI_ERR_INVALID (and nothing changes) when the entry holds no
 * reference — a caller bug: released twice. The entry pointer must come from
 * this cache and still be in it. */
vidi_status vidi_mmcache_release(vidi_mmcache *c, vidi_mmcache_entry *e);

/* References the entry holds now. */
uint32_t vidi_mmcache_entry_refs(const vidi_mmcache_entry *e);

/* 1 when `key` is present, else 0. Takes no reference, does not change
 * recency and counts nothing (for reporting, not for serving). */
int vidi_mmcache_contains(const vidi_mmcache *c, const uint8_t key[VIDI_MMCACHE_KEY_BYTES]);

/* Copy up to `max` keys into keys[0..max): referenced entries first, then
 * the unreferenced ones from most to least recently used, so a short array
 * holds the ones worth advertising. Returns the number of entries in the
 * cache (which may exceed max; keys may be NULL when max is 0). Changes
 * nothing. */
size_t vidi_mmcache_keys(const vidi_mmcache *c, uint8_t (*keys)[VIDI_MMCACHE_KEY_BYTES], size_t max);

/* The counters and the current fill, by value. */
vidi_mmcache_counters vidi_mmcache_stats(const vidi_mmcache *c);

#endif
