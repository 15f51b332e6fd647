/* ipc/mmkey.c — cache keys of media items (XXH3-128, libxxhash). */
#include "ipc/mmkey.h"

#include <stdio.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

static void s_put_le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void vidi_mm_key(const void *bytes, size_t n, const vidi_mm_params *p, uint8_t key[16]) {
    /* "vidimk1" + kind, fps bits, nframes, min/max pixels, slice range and count: 8 + 8 * 8 bytes */
    uint8_t tail[8 + 8 * 8];
    memcpy(tail, "vidimk1", 8);
    uint64_t fps_bits;
    double fps = p->fps;
    memcpy(&fps_bits, &fps, sizeof fps_bits);
    uint64_t v[8] = {(uint64_t)p->kind, fps_bits, (uint64_t)p->nframes, (uint64_t)p->min_pixels,
                     (uint64_t)p->max_pixels, (uint64_t)p->slice_t0, (uint64_t)p->slice_t1, (uint64_t)p->n_slices};
    for (int i = 0; i < 8; i++) s_put_le(tail + 8 + 8 * i, v[i]);
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    XXH3_128bits_update(&st, bytes, n);
    XXH3_128bits_update(&st, tail, sizeof tail);
    XXH128_hash_t h = XXH3_128bits_digest(&st);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(key, c.digest, 16);
}

void vidi_mm_key_model(const uint8_t key[16], const char *model, uint8_t out[16]) {
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    XXH3_128bits_update(&st, key, 16);
    XXH3_128bits_update(&st, "vidimd1", 8);
    XXH3_128bits_update(&st, model, strlen(model));
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
    memcpy(out, c.digest, 16);
}

void vidi_mm_key_hex(const uint8_t key[16], char out[33]) {
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", key[i]);
}
