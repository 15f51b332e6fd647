/* core/base64.c — base64 decoding (base64.h). */
#include "core/base64.h"

#include <stdlib.h>

static int s_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

int vidi_base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_n) {
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf) return -1;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            if (++pad > 2) goto bad;
            continue;
        }
        int v = s_value(c);
        if (v < 0 || pad) goto bad;
        acc = ((acc << 6) | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[k++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 6) goto bad; /* one character left over: not a whole byte */
    *out = buf;
    *out_n = k;
    return 0;
bad:
    free(buf);
    return -1;
}
