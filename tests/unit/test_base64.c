/* tests/unit/test_base64.c — core/base64.h: the RFC 4648 test vectors in
 * both alphabets, with and without padding and with line breaks; every byte
 * value through an encoder written here; and the refusals (a bad character,
 * padding in the middle, too much padding, a lone last character). */
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "test_util.h"

static int dec(const char *s, const char *want) {
    uint8_t *out = NULL;
    size_t n = 0;
    if (vidi_base64_decode(s, strlen(s), &out, &n) != 0) return 0;
    int ok = n == strlen(want) && !memcmp(out, want, n);
    free(out);
    return ok;
}

static void test_rfc4648_vectors(void) {
    static const char *const v[][2] = {{"", ""},         {"Zg==", "f"},         {"Zm8=", "fo"},
                                       {"Zm9v", "foo"},  {"Zm9vYg==", "foob"},  {"Zm9vYmE=", "fooba"},
                                       {"Zm9vYmFy", "foobar"}, {"Zg", "f"},     {"Zm9vYg", "foob"},
                                       {"Zm9v\nYmFy\r\n", "foobar"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) CHECK(dec(v[i][0], v[i][1]), "'%s'", v[i][0]);
}

static void test_every_byte_both_alphabets(void) {
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t raw[256];
    for (int i = 0; i < 256; i++) raw[i] = (uint8_t)i;
    for (int a = 0; a < 2; a++) {
        const char *alpha = a ? url : std;
        char enc[400];
        size_t k = 0;
        for (int i = 0; i < 256; i += 3) {
            uint32_t w = (uint32_t)raw[i] << 16 | (i + 1 < 256 ? (uint32_t)raw[i + 1] << 8 : 0) |
                         (i + 2 < 256 ? raw[i + 2] : 0);
            int left = 256 - i;
            enc[k++] = alpha[w >> 18 & 63];
            enc[k++] = alpha[w >> 12 & 63];
            enc[k++] = left > 1 ? alpha[w >> 6 & 63] : '=';
            enc[k++] = left > 2 ? alpha[w & 63] : '=';
        }
        uint8_t *out = NULL;
        size_t n = 0;
        CHECK(vidi_base64_decode(enc, k, &out, &n) == 0 && n == 256 && !memcmp(out, raw, 256), "alphabet %d", a);
        free(out);
    }
}

static void test_refusals(void) {
    static const char *const bad[] = {"Zm9v!", "Zm=9v", "Zg===", "Z", "Zm9vY", "Zm9v Y", "@@@@"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *out = (uint8_t *)1;
        size_t n = 7;
        int rc = vidi_base64_decode(bad[i], strlen(bad[i]), &out, &n);
        CHECK(rc == -1 && out == (uint8_t *)1 && n == 7, "'%s' accepted (rc %d)", bad[i], rc);
    }
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"rfc4648_vectors", test_rfc4648_vectors},
        {"every_byte_both_alphabets", test_every_byte_both_alphabets},
        {"refusals", test_refusals},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
