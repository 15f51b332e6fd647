/* core/base64.h — base64 decoding (RFC 4648), for data: URLs.
 *
 * Accepts the standard and the URL-safe alphabet, padding or none, and
 * whitespace anywhere (MIME line breaks); refuses any other character,
 * padding in the middle, more than two '=' and a lone trailing character
 * (which holds no whole byte).
 */
#ifndef VIDI_CORE_BASE64_H
#define VIDI_CORE_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Decode s[0, n) into a malloc'd *out of *out_n bytes (free it); 0, or -1
 * (nothing allocated) when s is not base64 or memory runs out. */
int vidi_base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_n);

#endif
