/* core/arena.c — bump allocator (see arena.h). */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct vidi_arena_chunk {
    vidi_arena_chunk *next; /* older chunk */
    size_t size;            /* usable bytes after the header */
    size_t used;
    /* data follows, aligned to 64 */
};

#define CHUNK_HDR (((sizeof(vidi_arena_chunk) + 63) / 64) * 64)

void vidi_arena_init(vidi_arena *a, size_t chunk_size) {
    memset(a, 0, sizeof *a);
    a->chunk_size = chunk_size ? chunk_size : ((size_t)1 << 20);
}

static vidi_arena_chunk *chunk_new(size_t size) {
    void *mem = NULL;
    if (size > SIZE_MAX - CHUNK_HDR) return NULL;
    if (posix_memalign(&mem, 64, CHUNK_HDR + size) != 0) return NULL;
    vidi_arena_chunk *c = mem;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

void *vidi_arena_alloc(vidi_arena *a, size_t bytes, size_t align) {
    if (align == 0) align = 64;
    if (align & (align - 1)) return NULL;
    vidi_arena_chunk *c = a->head;
    if (c) {
        uintptr_t base = (uintptr_t)c + CHUNK_HDR;
        uintptr_t p = (base + c->used + (align - 1)) & ~(uintptr_t)(align - 1);
        if (p - base <= c->size && bytes <= c->size - (p - base)) {
            c->used = (size_t)(p - base) + bytes;
            a->used_total += bytes;
            if (a->used_total > a->peak_total) a->peak_total = a->used_total;
            return (void *)p;
        }
    }
    size_t need = bytes + align;
    if (need < bytes) return NULL;
    size_t size = need > a->chunk_size ? need : a->chunk_size;
    vidi_arena_chunk *n = chunk_new(size);
    if (!n) return NULL;
    n->next = a->head;
    a->head = n;
    uintptr_t base = (uintptr_t)n + CHUNK_HDR;
    uintptr_t p = (base + (align - 1)) & ~(uintptr_t)(align - 1);
    n->used = (size_t)(p - base) + bytes;
    a->used_total += bytes;
    if (a->used_total > a->peak_total) a->peak_total = a->used_total;
    return (void *)p;
}

void *vidi_arena_calloc(vidi_arena *a, size_t bytes, size_t align) {
    void *p = vidi_arena_alloc(a, bytes, align);
    if (p) memset(p, 0, bytes);
    return p;
}

void vidi_arena_reset(vidi_arena *a) {
    /* keep the largest chunk so the next pass of the same size needs one */
    vidi_arena_chunk *keep = NULL;
    for (vidi_arena_chunk *c = a->head; c; c = c->next)
        if (!keep || c->size > keep->size) keep = c;
    vidi_arena_chunk *c = a->head;
    while (c) {
        vidi_arena_chunk *next = c->next;
        if (c != keep) free(c);
        c = next;
    }
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
        if (keep->size > a->chunk_size) a->chunk_size = keep->size;
    }
    a->head = keep;
    a->used_total = 0;
}

void vidi_arena_free(vidi_arena *a) {
    vidi_arena_chunk *c = a->head;
    while (c) {
        vidi_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used_total = 0;
}
