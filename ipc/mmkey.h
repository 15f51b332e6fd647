/* ipc/mmkey.h — the multimedia-token cache key of one media item
 * (PROTOCOL.md §5.3): XXH3-128 over the file's bytes and the preprocessing
 * parameters that change what the vision tower sees. Two requests with the
 * same bytes and the same parameters share the key, so the second one can
 * skip media decoding and encoding.
 */
#ifndef VIDI_IPC_MMKEY_H
#define VIDI_IPC_MMKEY_H

#include <stddef.h>
#include <stdint.h>

typedef struct vidi_mm_params {
    int kind;              /* vidi_media_kind */
    double fps;            /* 0: the default */
    int64_t nframes;       /* 0: by fps */
    int64_t min_pixels, max_pixels; /* 0: the model's */
    int64_t slice_t0, slice_t1;     /* a slice's temporal-grid range [t0, t1) ... */
    int64_t n_slices;               /* ... of n_slices; all 0 for an item's own key */
} vidi_mm_params;

/* key = XXH3-128 of (bytes, then the parameters in a fixed little-endian
 * layout with a version tag), written as 16 big-endian bytes. */
void vidi_mm_key(const void *bytes, size_t n, const vidi_mm_params *p, uint8_t key[16]);

/* The key of what another model made of the same item: XXH3-128 of (key,
 * "vidimd1", the model's name), 16 big-endian bytes (the draft model's
 * vision rows, PROTOCOL.md §5.5). */
void vidi_mm_key_model(const uint8_t key[16], const char *model, uint8_t out[16]);

/* 32 hex digits and a NUL. */
void vidi_mm_key_hex(const uint8_t key[16], char out[33]);

#endif
