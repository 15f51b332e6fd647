/* core/arena.h — a bump allocator for scratch memory.
 *
 * Allocations are carved from large chunks and released all at once by
 * vidi_arena_reset (keeps the chunks) or vidi_arena_free (returns them).
 * Use one arena per forward pass for activations and temporaries.
 */
#ifndef VIDI_CORE_ARENA_H
#define VIDI_CORE_ARENA_H

#include <stddef.h>

typedef struct vidi_arena_chunk vidi_arena_chunk;

typedef struct vidi_arena {
    vidi_arena_chunk *head;   /* current chunk (most recent) */
    size_t chunk_size;        /* default size of new chunks */
    size_t used_total;        /* bytes handed out since the last reset */
    size_t peak_total;        /* high-water mark of used_total */
} vidi_arena;

/* chunk_size 0 picks 1 MiB. Never fails (allocation happens lazily). */
void vidi_arena_init(vidi_arena *a, size_t chunk_size);
/* Returns `bytes` of memory aligned to `align` (a power of two, >= 1; 0
 * means 64), or NULL when out of memory. Contents are undefined. */
void *vidi_arena_alloc(vidi_arena *a, size_t bytes, size_t align);
/* Like vidi_arena_alloc but zero-filled. */
void *vidi_arena_calloc(vidi_arena *a, size_t bytes, size_t align);
/* Forget every allocation; keeps the largest chunk for reuse. */
void vidi_arena_reset(vidi_arena *a);
/* Release every chunk. The arena can be reused after vidi_arena_init. */
void vidi_arena_free(vidi_arena *a);

#endif
