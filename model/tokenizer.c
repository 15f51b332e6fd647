/* model/tokenizer.c — tokenizer.json byte-level BPE (Qwen2 family):
 * loading, encoding, decoding and the streaming detokenizer.
 *
 * Loading flattens tokenizer.json into tables: one entry per id (the token
 * string and the bytes it decodes to), a string -> id hash for the model
 * vocabulary and one for added tokens, and a (left id, right id) -> (rank,
 * merged id) hash for the merges. Encoding follows the Hugging Face
 * `tokenizers` pipeline step by step, so that the ids are the same:
 *   1. added tokens written as-is (normalized: false) are split out of the
 *      raw text, leftmost match first and the longest at a position;
 *   2. every other segment is NFC-normalised when the normalizer says so,
 *      and added tokens with normalized: true are split out of it;
 *   3. the rest goes through the pre-tokenizer steps (Split regex, ByteLevel
 *      with or without the GPT-2 regex), depth first;
 *   4. each piece starts as one symbol per byte (the GPT-2 byte alphabet)
 *      and adjacent symbols are merged by lowest rank, leftmost first.
 * The Split pattern is compiled with PCRE2 (UTF + UCP) after \s and \S are
 * spelled out as Unicode White_Space, which is what Oniguruma, the engine
 * behind tokenizers' regexes, means by \s (PCRE2's \s also takes U+180E).
 * Decoding maps ids to their bytes and replaces invalid UTF-8 the way
 * Rust's String::from_utf8_lossy does (one U+FFFD per maximal invalid
 * subpart), which is what the Hugging Face ByteLevel decoder returns.
 *
 * A loaded tokenizer is read-only except for a word cache behind a mutex,
 * so encode and decode may run on several threads at once.
 */
#include "model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "core/log.h"

/* ---- limits ---- */
#define TOK_MAX_TEXT ((size_t)64 << 20)        /* longest text vidi_tokenizer_encode takes */
#define TOK_MAX_FILE ((long long)1 << 30)      /* largest tokenizer.json */
#define TOK_MAX_ID (1 << 24)                   /* every id must be below this */
#define TOK_MAX_TOKEN_LEN (1 << 16)            /* longest token string, in bytes */
#define TOK_MAX_DECODE ((size_t)256 << 20)     /* most bytes one decode call produces */
#define TOK_MAX_PRE 8                          /* pre-tokenizer steps after flattening */
#define TOK_MAX_DEPTH 8                        /* nesting of Sequence objects */

/* ---- the word cache: direct-mapped, short words only ---- */
#define TOK_CACHE_SLOTS 8192
#define TOK_CACHE_WORD 26
#define TOK_CACHE_IDS 8

typedef struct tok_cache_slot {
    uint8_t wlen; /* 0 = empty */
    uint8_t nids;
    char word[TOK_CACHE_WORD];
    int32_t ids[TOK_CACHE_IDS];
} tok_cache_slot;

/* A byte range inside vidi_tokenizer.pool. */
typedef struct tok_span {
    uint32_t off, len;
} tok_span;

typedef struct tok_entry {
    tok_span str;    /* the token as tokenizer.json writes it */
    tok_span dec;    /* the bytes it decodes to */
    uint8_t present; /* some token has this id */
    uint8_t special; /* dropped by decode with skip_special */
    uint8_t added;   /* the id belongs to an added token */
} tok_entry;

typedef struct tok_added {
    tok_span content; /* as written in tokenizer.json */
    tok_span match;   /* what is searched for: content, NFC'd when normalized */
    int32_t id;
    uint8_t single_word, lstrip, rstrip, normalized, special;
} tok_added;

/* Open-addressing hash from a byte string in the pool to an int. */
typedef struct tok_slot {
    uint32_t off, len;
    int32_t val; /* -1 = empty */
} tok_slot;

typedef struct tok_strmap {
    tok_slot *slot;
    uint32_t mask;
} tok_strmap;

/* Merge table slot: key = left id << 32 | right id. */
typedef struct tok_merge {
    uint64_t key; /* TOK_MERGE_EMPTY = free */
    int32_t rank;
    int32_t id;
} tok_merge;
#define TOK_MERGE_EMPTY UINT64_MAX

/* One set of added tokens searched in one pass (raw or normalised text). */
typedef struct tok_matcher {
    tok_strmap map;    /* match string -> index into vidi_tokenizer.added */
    uint8_t first[256]; /* some token starts with this byte */
    uint8_t *has_len;  /* has_len[L]: some token is L bytes long */
    uint32_t max_len;
    int n;
} tok_matcher;

typedef enum tok_split_behavior {
    TOK_SPLIT_ISOLATED = 0,
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;

typedef enum tok_pre_kind {
    TOK_PRE_SPLIT = 0,
    TOK_PRE_BYTELEVEL,
} tok_pre_kind;

typedef struct tok_pre {
    tok_pre_kind kind;
    pcre2_code *re; /* Split's pattern, or the GPT-2 pattern of ByteLevel(use_regex) */
    tok_split_behavior behavior;
    int invert;
    int add_prefix_space; /* ByteLevel */
} tok_pre;

/* How one input byte becomes initial BPE symbols. */
typedef struct tok_byte_init {
    int32_t ids[2]; /* the byte's token, or its <0xXX> byte-fallback tokens */
    uint8_t n;      /* 0: the byte has no token (unknown) */
    uint8_t fallback;
} tok_byte_init;

struct vidi_tokenizer {
    char *pool;
    size_t pool_len, pool_cap;

    tok_entry *entries; /* [n_entries] */
    int32_t n_entries;  /* max id + 1 */

    tok_strmap vocab;   /* model vocabulary: token string -> id */
    tok_merge *merges;
    uint32_t merge_mask;

    tok_added *added;
    int n_added;
    tok_strmap added_map; /* content -> index into added */
    tok_matcher raw, norm;

    tok_byte_init byte_init[256];
    uint32_t byte_cp[256];     /* GPT-2 table: byte -> code point */
    int16_t cp_byte[0x144];    /* and back; -1 where no byte maps */
    int32_t unk_id;            /* -1: none */
    int syms_per_byte;         /* 2 when some byte falls back to two tokens */
    int fuse_unk, ignore_merges;

    int nfc;
    tok_pre pre[TOK_MAX_PRE];
    int n_pre;

    pthread_mutex_t cache_lock;
    int cache_lock_init;
    tok_cache_slot *cache;
};

static const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ======================================================================
 * UTF-8
 * ====================================================================== */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid
 * or truncated. Stores the code point in *cp. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < need + 1) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    c = (c << 6) | (s[1] & 0x3F);
    for (size_t k = 2; k <= need; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[k] & 0x3F);
    }
    *cp = c;
    return need + 1;
}

/* Offset of the first byte that does not start valid UTF-8, or n. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_next(s + i, n - i, &cp);
        if (!k) return i;
        i += k;
    }
    return n;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Copy s[0..n) to out, replacing each maximal invalid subpart with U+FFFD
 * (the Unicode "substitution of maximal subparts" practice, as Rust's
 * from_utf8_lossy). When !final, a truncated but so far valid sequence at
 * the end is left unconsumed. out must hold 3 * n bytes. Returns the bytes
 * consumed; *out_len gets the bytes written. */
static size_t utf8_lossy(const unsigned char *s, size_t n, int final, char *out, size_t *out_len)
{
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else {
            o += utf8_put(0xFFFD, out + o);
            i++;
            continue;
        }
        size_t k = 1; /* bytes of the sequence that are valid so far */
        while (k <= need && i + k < n) {
            unsigned char c = s[i + k];
            unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (c < l || c > h) break;
            k++;
        }
        if (k == need + 1) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else if (i + k == n && !final) {
            break; /* truncated: wait for more bytes */
        } else {
            o += utf8_put(0xFFFD, out + o);
            i += k;
        }
    }
    *out_len = o;
    return i;
}

/* Unicode White_Space (what Rust's \s and the Hugging Face strip rules use). */
static int cp_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex \w: letters, marks, decimal digits, connector punctuation,
 * letter numbers and the joiners. */
static int cp_is_word(uint32_t c)
{
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return 1;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* Start of the code point that ends at s[end) (s is valid UTF-8). */
static size_t utf8_prev(const char *s, size_t end)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* ======================================================================
 * hashing
 * ====================================================================== */

#define TOK_FNV_INIT 0xcbf29ce484222325ull
#define TOK_FNV_STEP(h, b) (((h) ^ (uint8_t)(b)) * 0x100000001b3ull)

static uint64_t tok_fnv(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = TOK_FNV_INIT;
    for (size_t i = 0; i < n; i++) h = TOK_FNV_STEP(h, s[i]);
    return h;
}

static uint32_t tok_bucket(uint64_t h, uint32_t mask)
{
    return (uint32_t)(h ^ (h >> 31)) & mask;
}

static uint64_t tok_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static vidi_status strmap_init(tok_strmap *m, size_t n_keys, vidi_err *err)
{
    size_t cap = 16;
    while (cap < 2 * n_keys + 1) cap <<= 1;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory (hash of %zu keys)", n_keys);
    for (size_t i = 0; i < cap; i++) m->slot[i].val = -1;
    m->mask = (uint32_t)(cap - 1);
    return VIDI_OK;
}

/* Insert (or overwrite) the key pool[off..off+len) -> val. The map was
 * sized for at least as many keys as are ever put. */
static void strmap_put(tok_strmap *m, const char *pool, tok_span key, int32_t val)
{
    uint64_t h = tok_fnv(pool + key.off, key.len);
    for (uint32_t i = tok_bucket(h, m->mask);; i = (i + 1) & m->mask) {
        tok_slot *s = &m->slot[i];
        if (s->val < 0) {
            s->off = key.off;
            s->len = key.len;
            s->val = val;
            return;
        }
        if (s->len == key.len && memcmp(pool + s->off, pool + key.off, key.len) == 0) {
            s->val = val;
            return;
        }
    }
}

/* Value of key[0..len) whose FNV-1a hash is h, or -1. */
static int32_t strmap_get_h(const tok_strmap *m, const char *pool, const char *key, size_t len, uint64_t h)
{
    if (!m->slot) return -1;
    for (uint32_t i = tok_bucket(h, m->mask);; i = (i + 1) & m->mask) {
        const tok_slot *s = &m->slot[i];
        if (s->val < 0) return -1;
        if (s->len == len && memcmp(pool + s->off, key, len) == 0) return s->val;
    }
}

static int32_t strmap_get(const tok_strmap *m, const char *pool, const char *key, size_t len)
{
    return strmap_get_h(m, pool, key, len, tok_fnv(key, len));
}

static const tok_merge *merge_get(const vidi_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)tok_mix(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const tok_merge *m = &t->merges[i];
        if (m->key == key) return m;
        if (m->key == TOK_MERGE_EMPTY) return NULL;
    }
}

static void merge_put(vidi_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)tok_mix(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        tok_merge *m = &t->merges[i];
        if (m->key == key || m->key == TOK_MERGE_EMPTY) {
            m->key = key; /* a later duplicate overwrites, as in tokenizers */
            m->rank = rank;
            m->id = id;
            return;
        }
    }
}

/* ======================================================================
 * loading
 * ====================================================================== */

static vidi_status pool_add(vidi_tokenizer *t, const void *p, size_t n, tok_span *out, vidi_err *err)
{
    if (t->pool_len + n > UINT32_MAX)
        return vidi_err_set(err, VIDI_ERR_RANGE, "tokenizer: token strings exceed 4 GiB");
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 16;
        while (cap < t->pool_len + n) cap *= 2;
        char *np = realloc(t->pool, cap);
        if (!np) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory (string pool)");
        t->pool = np;
        t->pool_cap = cap;
    }
    if (n) memcpy(t->pool + t->pool_len, p, n);
    out->off = (uint32_t)t->pool_len;
    out->len = (uint32_t)n;
    t->pool_len += n;
    return VIDI_OK;
}

static void tok_byte_table(vidi_tokenizer *t)
{
    int extra = 0;
    for (int cp = 0; cp < 0x144; cp++) t->cp_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t->byte_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
}

/* The bytes a token string decodes to under the ByteLevel decoder: every
 * character mapped back through the GPT-2 table, or, when some character
 * has no byte, the string's own UTF-8 bytes. */
static vidi_status tok_set_decoded(vidi_tokenizer *t, tok_entry *e, vidi_err *err)
{
    const unsigned char *s = (const unsigned char *)t->pool + e->str.off;
    size_t n = e->str.len, o = 0;
    unsigned char stackbuf[256];
    unsigned char *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!buf) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory");
    size_t i = 0;
    int mapped = 1;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_next(s + i, n - i, &cp);
        if (!k || cp >= 0x144 || t->cp_byte[cp] < 0) {
            mapped = 0;
            break;
        }
        buf[o++] = (unsigned char)t->cp_byte[cp];
        i += k;
    }
    vidi_status rc;
    if (mapped) {
        rc = pool_add(t, buf, o, &e->dec, err);
    } else {
        e->dec = e->str; /* raw bytes: share the string */
        rc = VIDI_OK;
    }
    if (buf != stackbuf) free(buf);
    return rc;
}

/* Reads an optional boolean: absent or null gives dflt. */
static vidi_status json_opt_bool(const char *path, json_t *obj, const char *key, const char *field, int dflt,
                                 int *out, vidi_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return VIDI_OK;
    }
    if (!json_is_boolean(v))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.%s: expected true or false", path, field, key);
    *out = json_is_true(v);
    return VIDI_OK;
}

/* An id from JSON: an integer in [0, TOK_MAX_ID). */
static vidi_status json_get_id(const char *path, json_t *v, const char *field, int32_t *out, vidi_err *err)
{
    if (!json_is_integer(v))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s: expected an integer id", path, field);
    json_int_t id = json_integer_value(v);
    if (id < 0 || id >= TOK_MAX_ID)
        return vidi_err_set(err, VIDI_ERR_RANGE, "%s: field %s: id %lld is outside [0, %d)", path, field,
                            (long long)id, TOK_MAX_ID);
    *out = (int32_t)id;
    return VIDI_OK;
}

/* NFC-normalise s[0..n) into a malloc'd buffer (*out, *out_n). */
static vidi_status tok_nfc(const char *s, size_t n, char **out, size_t *out_n, vidi_err *err)
{
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) {
        free(dst);
        return vidi_err_set(err, r == UTF8PROC_ERROR_NOMEM ? VIDI_ERR_NOMEM : VIDI_ERR_INVALID,
                            "tokenizer: NFC normalisation failed: %s", utf8proc_errmsg(r));
    }
    *out = (char *)dst;
    *out_n = (size_t)r;
    return VIDI_OK;
}

/* Code points below U+0300 are never changed by NFC; their UTF-8 lead
 * bytes are all below 0xCC, so most text needs no normalisation call. */
static int tok_nfc_stable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0xCC) return 0;
    return 1;
}

static vidi_status load_normalizer(vidi_tokenizer *t, const char *path, json_t *nz, const char *field, int depth,
                                   vidi_err *err)
{
    if (!nz || json_is_null(nz)) return VIDI_OK;
    if (depth > TOK_MAX_DEPTH)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field %s: Sequence nested too deeply", path, field);
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (!json_is_object(nz) || !type)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.type: expected an object with a type", path, field);
    if (strcmp(type, "NFC") == 0) {
        t->nfc = 1;
        return VIDI_OK;
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(nz, "normalizers");
        if (!json_is_array(list))
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.normalizers: expected an array", path, field);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", field, i);
            vidi_status rc = load_normalizer(t, path, json_array_get(list, i), sub, depth + 1, err);
            if (rc != VIDI_OK) return rc;
        }
        return VIDI_OK;
    }
    return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field %s.type: normalizer \"%s\" is not supported (NFC, Sequence)",
                        path, field, type);
}

/* Unicode White_Space as class items: Oniguruma's \s (the engine behind
 * tokenizers' regexes). PCRE2's \s under UCP also takes U+180E, so \s
 * and \S are spelled out before compiling. */
static const char tok_ws_items[] =
    "\\t-\\r\\x20\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";

/* Copy of pat with \s -> [ws] (ws inside a class) and \S -> [^ws] outside
 * classes. Escapes, \Q...\E and POSIX [:name:] items are copied as they
 * are. Returns a malloc'd string or NULL (out of memory). */
static char *tok_onig_spaces(const char *pat, size_t len, size_t *out_len)
{
    size_t wl = strlen(tok_ws_items), cap = len + 1, n = 0;
    for (size_t i = 0; i + 1 < len; i++)
        if (pat[i] == '\\') cap += wl + 3;
    char *o = malloc(cap);
    if (!o) return NULL;
    int in_class = 0;
    size_t i = 0;
    while (i < len) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char d = pat[i + 1];
            if (d == 'Q') { /* quoted run up to \E */
                size_t j = i + 2;
                while (j < len && !(pat[j] == '\\' && j + 1 < len && pat[j + 1] == 'E')) j++;
                j = j < len ? j + 2 : len;
                memcpy(o + n, pat + i, j - i);
                n += j - i;
                i = j;
                continue;
            }
            if (d == 's' && in_class) {
                memcpy(o + n, tok_ws_items, wl);
                n += wl;
            } else if (d == 's' || (d == 'S' && !in_class)) {
                o[n++] = '[';
                if (d == 'S') o[n++] = '^';
                memcpy(o + n, tok_ws_items, wl);
                n += wl;
                o[n++] = ']';
            } else {
                o[n++] = c;
                o[n++] = d;
            }
            i += 2;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            o[n++] = pat[i++];
            if (i < len && pat[i] == '^') o[n++] = pat[i++];
            if (i < len && pat[i] == ']') o[n++] = pat[i++]; /* a leading ] is literal */
            continue;
        }
        if (in_class && c == '[' && i + 1 < len && pat[i + 1] == ':') {
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < len; j++)
                if (pat[j] == ':' && pat[j + 1] == ']') {
                    end = pat + j + 2;
                    break;
                }
            if (end) {
                memcpy(o + n, pat + i, (size_t)(end - (pat + i)));
                n += (size_t)(end - (pat + i));
                i = (size_t)(end - pat);
                continue;
            }
        }
        if (in_class && c == ']') in_class = 0;
        o[n++] = pat[i++];
    }
    o[n] = '\0';
    *out_len = n;
    return o;
}

static vidi_status tok_compile(const char *path, const char *field, const char *pat, size_t len, int literal,
                               pcre2_code **out, vidi_err *err)
{
    int ec = 0;
    PCRE2_SIZE eo = 0;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    char *fixed = NULL;
    if (!literal) {
        if (len == PCRE2_ZERO_TERMINATED) len = strlen(pat);
        fixed = tok_onig_spaces(pat, len, &len);
        if (!fixed) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory");
        pat = fixed;
    }
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &ec, &eo, NULL);
    free(fixed);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s: PCRE2 cannot compile the pattern (at offset %zu): %s",
                            path, field, (size_t)eo, (const char *)msg);
    }
    /* JIT when the library has it; the interpreter otherwise. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return VIDI_OK;
}

static vidi_status load_pre(vidi_tokenizer *t, const char *path, json_t *pt, const char *field, int depth,
                            vidi_err *err)
{
    if (depth > TOK_MAX_DEPTH)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field %s: Sequence nested too deeply", path, field);
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!json_is_object(pt) || !type)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.type: expected an object with a type", path, field);
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list))
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.pretokenizers: expected an array", path, field);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", field, i);
            vidi_status rc = load_pre(t, path, json_array_get(list, i), sub, depth + 1, err);
            if (rc != VIDI_OK) return rc;
        }
        return VIDI_OK;
    }
    if (t->n_pre >= TOK_MAX_PRE)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field %s: more than %d pre-tokenizer steps", path, field,
                            TOK_MAX_PRE);
    if (t->n_pre > 0 && t->pre[t->n_pre - 1].kind == TOK_PRE_BYTELEVEL)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "%s: field %s: a pre-tokenizer after ByteLevel is not supported", path, field);
    tok_pre *p = &t->pre[t->n_pre];
    memset(p, 0, sizeof *p);
    vidi_status rc;
    if (strcmp(type, "ByteLevel") == 0) {
        int use_regex = 1;
        p->kind = TOK_PRE_BYTELEVEL;
        if ((rc = json_opt_bool(path, pt, "add_prefix_space", field, 1, &p->add_prefix_space, err)) != VIDI_OK)
            return rc;
        if ((rc = json_opt_bool(path, pt, "use_regex", field, 1, &use_regex, err)) != VIDI_OK) return rc;
        if (use_regex) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s (GPT-2 regex)", field);
            if ((rc = tok_compile(path, sub, tok_gpt2_pattern, PCRE2_ZERO_TERMINATED, 0, &p->re, err)) != VIDI_OK)
                return rc;
        }
        t->n_pre++;
        return VIDI_OK;
    }
    if (strcmp(type, "Split") == 0) {
        p->kind = TOK_PRE_SPLIT;
        json_t *pat = json_object_get(pt, "pattern");
        json_t *rx = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        json_t *ps = json_is_string(rx) ? rx : lit;
        if (!json_is_object(pat) || !json_is_string(ps))
            return vidi_err_set(err, VIDI_ERR_FORMAT,
                                "%s: field %s.pattern: expected {\"Regex\": \"...\"} or {\"String\": \"...\"}", path,
                                field);
        if (json_string_length(ps) == 0)
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.pattern: empty pattern", path, field);
        const char *behavior = json_string_value(json_object_get(pt, "behavior"));
        static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext",
                                            "Contiguous"};
        int found = -1;
        for (int i = 0; behavior && i < 5; i++)
            if (strcmp(behavior, names[i]) == 0) found = i;
        if (found < 0)
            return vidi_err_set(err, behavior ? VIDI_ERR_UNSUPPORTED : VIDI_ERR_FORMAT,
                                "%s: field %s.behavior: expected Isolated, Removed, MergedWithPrevious, "
                                "MergedWithNext or Contiguous",
                                path, field);
        p->behavior = (tok_split_behavior)found;
        if ((rc = json_opt_bool(path, pt, "invert", field, 0, &p->invert, err)) != VIDI_OK) return rc;
        char sub[256];
        snprintf(sub, sizeof sub, "%s.pattern.%s", field, ps == rx ? "Regex" : "String");
        if ((rc = tok_compile(path, sub, json_string_value(ps), json_string_length(ps), ps != rx, &p->re, err)) !=
            VIDI_OK)
            return rc;
        t->n_pre++;
        return VIDI_OK;
    }
    return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                        "%s: field %s.type: pre-tokenizer \"%s\" is not supported (Sequence, Split, ByteLevel)", path,
                        field, type);
}

static vidi_status load_decoder(const char *path, json_t *dec, vidi_err *err)
{
    const char *type = json_string_value(json_object_get(dec, "type"));
    if (!dec || json_is_null(dec))
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field decoder: missing (a ByteLevel decoder is required)",
                            path);
    if (!type)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field decoder.type: expected a string", path);
    if (strcmp(type, "ByteLevel") != 0)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field decoder.type: decoder \"%s\" is not supported (ByteLevel)",
                            path, type);
    return VIDI_OK;
}

static vidi_status load_post(const char *path, json_t *pp, const char *field, vidi_err *err)
{
    if (!pp || json_is_null(pp)) return VIDI_OK;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type) return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.type: expected a string", path, field);
    if (strcmp(type, "ByteLevel") == 0) return VIDI_OK; /* only moves offsets */
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(pp, "processors");
        if (!json_is_array(list))
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.processors: expected an array", path, field);
        for (size_t i = 0; i < json_array_size(list); i++) {
            json_t *e = json_array_get(list, i);
            const char *ty = json_string_value(json_object_get(e, "type"));
            if (!ty || strcmp(ty, "ByteLevel") != 0)
                return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                                    "%s: field %s.processors[%zu].type: only ByteLevel post-processors are supported",
                                    path, field, i);
        }
        return VIDI_OK;
    }
    return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                        "%s: field %s.type: post-processor \"%s\" adds tokens and is not supported", path, field, type);
}

static vidi_status matcher_build(vidi_tokenizer *t, tok_matcher *m, int normalized, vidi_err *err)
{
    vidi_status rc;
    int n = 0;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized) n++;
    m->n = n;
    if (!n) return VIDI_OK;
    if ((rc = strmap_init(&m->map, (size_t)n, err)) != VIDI_OK) return rc;
    m->max_len = 0;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized && t->added[i].match.len > m->max_len)
            m->max_len = t->added[i].match.len;
    m->has_len = calloc(m->max_len + 1, 1);
    if (!m->has_len) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory");
    for (int i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        if (a->normalized != normalized || a->match.len == 0) continue;
        strmap_put(&m->map, t->pool, a->match, i);
        m->first[(unsigned char)t->pool[a->match.off]] = 1;
        m->has_len[a->match.len] = 1;
    }
    return VIDI_OK;
}

static vidi_status load_added(vidi_tokenizer *t, const char *path, json_t *list, vidi_err *err)
{
    vidi_status rc;
    size_t n = json_array_size(list);
    if (!n) return VIDI_OK;
    t->added = calloc(n, sizeof *t->added);
    if (!t->added) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory");
    if ((rc = strmap_init(&t->added_map, n, err)) != VIDI_OK) return rc;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(list, i);
        char field[64];
        snprintf(field, sizeof field, "added_tokens[%zu]", i);
        if (!json_is_object(o)) return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s: expected an object", path, field);
        tok_added a = {0};
        char sub[96];
        snprintf(sub, sizeof sub, "%s.id", field);
        if ((rc = json_get_id(path, json_object_get(o, "id"), sub, &a.id, err)) != VIDI_OK) return rc;
        json_t *c = json_object_get(o, "content");
        if (!json_is_string(c))
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s.content: expected a string", path, field);
        size_t clen = json_string_length(c);
        if (clen == 0) continue; /* tokenizers ignores empty added tokens */
        if (clen > TOK_MAX_TOKEN_LEN)
            return vidi_err_set(err, VIDI_ERR_RANGE, "%s: field %s.content: longer than %d bytes", path, field,
                                TOK_MAX_TOKEN_LEN);
        int sw = 0, ls = 0, rs = 0, nm = 0, sp = 0;
        if ((rc = json_opt_bool(path, o, "special", field, 0, &sp, err)) != VIDI_OK) return rc;
        if ((rc = json_opt_bool(path, o, "single_word", field, 0, &sw, err)) != VIDI_OK) return rc;
        if ((rc = json_opt_bool(path, o, "lstrip", field, 0, &ls, err)) != VIDI_OK) return rc;
        if ((rc = json_opt_bool(path, o, "rstrip", field, 0, &rs, err)) != VIDI_OK) return rc;
        if ((rc = json_opt_bool(path, o, "normalized", field, !sp, &nm, err)) != VIDI_OK) return rc;
        a.single_word = (uint8_t)sw;
        a.lstrip = (uint8_t)ls;
        a.rstrip = (uint8_t)rs;
        a.normalized = (uint8_t)nm;
        a.special = (uint8_t)sp;
        if ((rc = pool_add(t, json_string_value(c), clen, &a.content, err)) != VIDI_OK) return rc;
        /* tokenizers gives an added token that is also in the model
         * vocabulary the vocabulary's id */
        int32_t vid = strmap_get(&t->vocab, t->pool, json_string_value(c), clen);
        if (vid >= 0 && vid != a.id) {
            VIDI_LOGW("%s: %s \"%.40s\" has id %d in model.vocab; using that instead of %d", path, field,
                      json_string_value(c), (int)vid, (int)a.id);
            a.id = vid;
        }
        a.match = a.content;
        if (a.normalized && t->nfc && !tok_nfc_stable(json_string_value(c), clen)) {
            char *nfc = NULL;
            size_t nn = 0;
            if ((rc = tok_nfc(json_string_value(c), clen, &nfc, &nn, err)) != VIDI_OK) return rc;
            rc = pool_add(t, nfc, nn, &a.match, err);
            free(nfc);
            if (rc != VIDI_OK) return rc;
        }
        t->added[t->n_added++] = a;
    }
    return VIDI_OK;
}

/* Parses model.vocab and model.merges (entries sized beforehand). */
static vidi_status load_model(vidi_tokenizer *t, const char *path, json_t *model, vidi_err *err)
{
    vidi_status rc;
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");

    if ((rc = strmap_init(&t->vocab, json_object_size(vocab), err)) != VIDI_OK) return rc;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        int32_t id = 0;
        size_t klen = strlen(key);
        char field[96];
        snprintf(field, sizeof field, "model.vocab[\"%.40s\"]", key);
        if ((rc = json_get_id(path, val, field, &id, err)) != VIDI_OK) return rc;
        if (klen > TOK_MAX_TOKEN_LEN)
            return vidi_err_set(err, VIDI_ERR_RANGE, "%s: field %s: token longer than %d bytes", path, field,
                                TOK_MAX_TOKEN_LEN);
        tok_entry *e = &t->entries[id];
        if (e->present)
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field %s: id %d is also used by \"%.*s\"", path, field,
                                (int)id, (int)(e->str.len > 40 ? 40 : e->str.len), t->pool + e->str.off);
        if ((rc = pool_add(t, key, klen, &e->str, err)) != VIDI_OK) return rc;
        e->present = 1;
        strmap_put(&t->vocab, t->pool, e->str, id);
        if ((rc = tok_set_decoded(t, e, err)) != VIDI_OK) return rc;
    }

    size_t nm = json_array_size(merges);
    size_t cap = 16;
    while (cap < 2 * nm + 1) cap <<= 1;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory (%zu merges)", nm);
    for (size_t i = 0; i < cap; i++) t->merges[i].key = TOK_MERGE_EMPTY;
    t->merge_mask = (uint32_t)(cap - 1);

    char *both = NULL;
    size_t both_cap = 0;
    for (size_t i = 0; i < nm; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t la, lb;
        if (json_is_string(m)) {
            /* "a b": exactly one space */
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            const char *sp = memchr(s, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
                rc = vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.merges[%zu]: \"%.60s\" is not \"a b\"", path,
                                  i, s);
                goto fail;
            }
            a = s;
            la = (size_t)(sp - s);
            b = sp + 1;
            lb = len - la - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            la = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            lb = json_string_length(json_array_get(m, 1));
        } else {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]",
                              path, i);
            goto fail;
        }
        int32_t ia = strmap_get(&t->vocab, t->pool, a, la);
        int32_t ib = strmap_get(&t->vocab, t->pool, b, lb);
        if (ia < 0 || ib < 0) {
            const char *bad = ia < 0 ? a : b;
            size_t lbad = ia < 0 ? la : lb;
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.merges[%zu]: token \"%.*s\" is not in model.vocab",
                              path, i, (int)(lbad > 60 ? 60 : lbad), bad);
            goto fail;
        }
        if (la + lb > both_cap) {
            size_t nc = (la + lb) * 2;
            char *nb = realloc(both, nc);
            if (!nb) {
                rc = vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory");
                goto fail;
            }
            both = nb;
            both_cap = nc;
        }
        if (la) memcpy(both, a, la);
        if (lb) memcpy(both + la, b, lb);
        int32_t iab = strmap_get(&t->vocab, t->pool, both ? both : "", la + lb);
        if (iab < 0) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT,
                              "%s: field model.merges[%zu]: merged token \"%.*s\" is not in model.vocab", path, i,
                              (int)(la + lb > 60 ? 60 : la + lb), both ? both : "");
            goto fail;
        }
        merge_put(t, ia, ib, (int32_t)i, iab);
    }
    rc = VIDI_OK;
fail:
    free(both);
    return rc;
}

/* How each byte starts out in BPE: its GPT-2 character's token; failing
 * that its <0xXX> tokens (byte_fallback); failing that unknown. */
static void tok_init_bytes(vidi_tokenizer *t, int byte_fallback)
{
    t->syms_per_byte = 1;
    for (int b = 0; b < 256; b++) {
        tok_byte_init *bi = &t->byte_init[b];
        char ch[4];
        size_t n = utf8_put(t->byte_cp[b], ch);
        memset(bi, 0, sizeof *bi);
        int32_t id = strmap_get(&t->vocab, t->pool, ch, n);
        if (id >= 0) {
            bi->ids[0] = id;
            bi->n = 1;
            continue;
        }
        if (!byte_fallback) continue;
        /* tokenizers looks up the UTF-8 bytes of the mapped character */
        int ok = 1;
        for (size_t k = 0; k < n; k++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", (unsigned char)ch[k]);
            int32_t fid = strmap_get(&t->vocab, t->pool, name, strlen(name));
            if (fid < 0) ok = 0;
            bi->ids[k] = fid;
        }
        if (ok) {
            bi->n = (uint8_t)n;
            bi->fallback = 1;
            if (n > 1) t->syms_per_byte = 2;
        }
    }
}

static vidi_status load_root(vidi_tokenizer *t, const char *path, json_t *root, vidi_err *err)
{
    vidi_status rc;
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model: missing or not an object", path);
    json_t *type = json_object_get(model, "type");
    if (type && !json_is_null(type)) {
        if (!json_is_string(type))
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.type: expected a string", path);
        if (strcmp(json_string_value(type), "BPE") != 0)
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field model.type: model \"%s\" is not supported (BPE)",
                                path, json_string_value(type));
    }
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.vocab: missing or not an object", path);
    if (!json_is_array(merges))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.merges: missing or not an array", path);

    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field model.dropout: BPE dropout is not supported", path);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(model, affixes[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "%s: field model.%s: not supported", path, affixes[i]);
    }
    int byte_fallback = 0;
    if ((rc = json_opt_bool(path, model, "fuse_unk", "model", 0, &t->fuse_unk, err)) != VIDI_OK) return rc;
    if ((rc = json_opt_bool(path, model, "byte_fallback", "model", 0, &byte_fallback, err)) != VIDI_OK) return rc;
    if ((rc = json_opt_bool(path, model, "ignore_merges", "model", 0, &t->ignore_merges, err)) != VIDI_OK) return rc;

    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field added_tokens: expected an array", path);

    /* The normaliser first: added tokens with normalized: true are matched
     * in their normalised form. */
    if ((rc = load_normalizer(t, path, json_object_get(root, "normalizer"), "normalizer", 0, err)) != VIDI_OK)
        return rc;

    /* Size the id table: the largest id among vocab and added tokens. */
    int32_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (json_is_integer(val) && json_integer_value(val) > max_id && json_integer_value(val) < TOK_MAX_ID)
            max_id = (int32_t)json_integer_value(val);
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *v = json_object_get(json_array_get(added, i), "id");
        if (json_is_integer(v) && json_integer_value(v) > max_id && json_integer_value(v) < TOK_MAX_ID)
            max_id = (int32_t)json_integer_value(v);
    }
    t->n_entries = max_id + 1;
    t->entries = calloc((size_t)t->n_entries + 1, sizeof *t->entries);
    if (!t->entries) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory (%d ids)", (int)t->n_entries);

    if ((rc = load_model(t, path, model, err)) != VIDI_OK) return rc;
    if ((rc = load_added(t, path, added, err)) != VIDI_OK) return rc;

    /* Added tokens take over their id for decoding (tokenizers looks in
     * the added vocabulary first). */
    for (int i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        tok_entry *e = &t->entries[a->id];
        e->str = a->content;
        e->present = 1;
        e->added = 1;
        e->special = a->special;
        if ((rc = tok_set_decoded(t, e, err)) != VIDI_OK) return rc;
        strmap_put(&t->added_map, t->pool, a->content, i);
    }
    /* Decode skips by token string: a vocabulary token spelled like a
     * special token is skipped too. */
    for (int i = 0; i < t->n_added; i++) {
        if (!t->added[i].special) continue;
        int32_t vid = strmap_get(&t->vocab, t->pool, t->pool + t->added[i].content.off, t->added[i].content.len);
        if (vid >= 0 && !t->entries[vid].added) t->entries[vid].special = 1;
    }
    if ((rc = matcher_build(t, &t->raw, 0, err)) != VIDI_OK) return rc;
    if ((rc = matcher_build(t, &t->norm, 1, err)) != VIDI_OK) return rc;

    t->unk_id = -1;
    json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk))
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.unk_token: expected a string", path);
        t->unk_id = strmap_get(&t->vocab, t->pool, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0)
            return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: field model.unk_token: \"%.60s\" is not in model.vocab",
                                path, json_string_value(unk));
    }
    tok_init_bytes(t, byte_fallback);

    json_t *pt = json_object_get(root, "pre_tokenizer");
    if (!pt || json_is_null(pt))
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "%s: field pre_tokenizer: missing (a ByteLevel pre-tokenizer is required)", path);
    if ((rc = load_pre(t, path, pt, "pre_tokenizer", 0, err)) != VIDI_OK) return rc;
    if (t->n_pre == 0 || t->pre[t->n_pre - 1].kind != TOK_PRE_BYTELEVEL)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED,
                            "%s: field pre_tokenizer: must end with a ByteLevel step (byte-level BPE only)", path);
    if ((rc = load_decoder(path, json_object_get(root, "decoder"), err)) != VIDI_OK) return rc;
    if ((rc = load_post(path, json_object_get(root, "post_processor"), "post_processor", err)) != VIDI_OK) return rc;
    static const char *const ignored[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, ignored[i]);
        if (v && !json_is_null(v)) VIDI_LOGW("%s: %s is set and ignored (vidi never truncates or pads)", path, ignored[i]);
    }
    return VIDI_OK;
}

vidi_status vidi_tokenizer_load(const char *path, vidi_tokenizer **out, vidi_err *err)
{
    vidi_status rc = VIDI_OK;
    json_t *root = NULL;
    vidi_tokenizer *t = NULL;
    struct stat st;

    VIDI_CHECK(path && out, err, VIDI_ERR_INVALID, "vidi_tokenizer_load: path and out must not be NULL");
    *out = NULL;
    if (stat(path, &st) != 0) {
        rc = vidi_err_set(err, errno == ENOENT ? VIDI_ERR_NOTFOUND : VIDI_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    VIDI_CHECK(S_ISREG(st.st_mode), err, VIDI_ERR_IO, "%s: not a regular file", path);
    VIDI_CHECK((long long)st.st_size <= TOK_MAX_FILE, err, VIDI_ERR_RANGE, "%s: %lld bytes is more than the %lld-byte limit",
               path, (long long)st.st_size, TOK_MAX_FILE);

    json_error_t je;
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    VIDI_CHECK(root, err, VIDI_ERR_FORMAT, "%s: malformed JSON at line %d, column %d: %s", path, je.line, je.column,
               je.text);
    VIDI_CHECK(json_is_object(root), err, VIDI_ERR_FORMAT, "%s: the top level is not a JSON object", path);

    t = calloc(1, sizeof *t);
    VIDI_CHECK(t, err, VIDI_ERR_NOMEM, "tokenizer: out of memory");
    tok_byte_table(t);
    VIDI_TRY(load_root(t, path, root, err));

    t->cache = calloc(TOK_CACHE_SLOTS, sizeof *t->cache);
    VIDI_CHECK(t->cache, err, VIDI_ERR_NOMEM, "tokenizer: out of memory (word cache)");
    VIDI_CHECK(pthread_mutex_init(&t->cache_lock, NULL) == 0, err, VIDI_ERR_INTERNAL, "tokenizer: mutex init failed");
    t->cache_lock_init = 1;

    json_decref(root);
    *out = t;
    return VIDI_OK;
fail:
    json_decref(root);
    vidi_tokenizer_free(t);
    return rc;
}

void vidi_tokenizer_free(vidi_tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    free(t->raw.map.slot);
    free(t->raw.has_len);
    free(t->norm.map.slot);
    free(t->norm.has_len);
    free(t->added_map.slot);
    free(t->added);
    free(t->vocab.slot);
    free(t->merges);
    free(t->entries);
    free(t->pool);
    free(t->cache);
    if (t->cache_lock_init) pthread_mutex_destroy(&t->cache_lock);
    free(t);
}

int32_t vidi_tokenizer_token_id(const vidi_tokenizer *t, const char *token)
{
    if (!t || !token) return -1;
    size_t n = strlen(token);
    int32_t a = strmap_get(&t->added_map, t->pool, token, n);
    if (a >= 0) return t->added[a].id;
    return strmap_get(&t->vocab, t->pool, token, n);
}

int32_t vidi_tokenizer_vocab_size(const vidi_tokenizer *t)
{
    return t ? t->n_entries : 0;
}

int vidi_tokenizer_is_special(const vidi_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n_entries && t->entries[id].special;
}

/* ======================================================================
 * encoding
 * ====================================================================== */

typedef struct tok_heap_item {
    int32_t rank, pos;
} tok_heap_item;

typedef struct tok_enc {
    const vidi_tokenizer *tok;
    vidi_err *err;
    int32_t *ids;
    size_t n_ids, cap_ids;
    int32_t *sym; /* 3 * cap_sym: id, prev, next */
    size_t cap_sym;
    tok_heap_item *heap;
    size_t cap_heap;
    char *mapped; /* ignore_merges: the piece in GPT-2 characters */
    size_t cap_mapped;
    char *pfx[TOK_MAX_PRE]; /* ByteLevel add_prefix_space copies, per step */
    size_t cap_pfx[TOK_MAX_PRE];
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit; /* made on first need */
} tok_enc;

static vidi_status enc_grow(void **p, size_t *cap, size_t need, size_t elem, vidi_err *err)
{
    if (need <= *cap) return VIDI_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return vidi_err_set(err, VIDI_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", nc * elem);
    *p = np;
    *cap = nc;
    return VIDI_OK;
}

static vidi_status enc_emit(tok_enc *e, int32_t id)
{
    if (e->n_ids == e->cap_ids) {
        vidi_status rc = enc_grow((void **)&e->ids, &e->cap_ids, e->n_ids + 1, sizeof *e->ids, e->err);
        if (rc != VIDI_OK) return rc;
    }
    e->ids[e->n_ids++] = id;
    return VIDI_OK;
}

static int heap_less(tok_heap_item a, tok_heap_item b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_down(tok_heap_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && heap_less(h[l], h[m])) m = l;
        if (l + 1 < n && heap_less(h[l + 1], h[m])) m = l + 1;
        if (m == i) return;
        tok_heap_item x = h[i];
        h[i] = h[m];
        h[m] = x;
        i = m;
    }
}

static void heap_push(tok_heap_item *h, size_t *n, tok_heap_item it)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(it, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static tok_heap_item heap_pop(tok_heap_item *h, size_t *n)
{
    tok_heap_item top = h[0];
    h[0] = h[--*n];
    heap_down(h, *n, 0);
    return top;
}

static uint32_t cache_index(const char *w, size_t n)
{
    return (uint32_t)tok_mix(tok_fnv(w, n)) & (TOK_CACHE_SLOTS - 1);
}

/* BPE of one pre-tokenizer piece (raw bytes), appending its ids.
 *
 * Symbols form a linked list over positions; a min-heap holds candidate
 * merges ordered by (rank, position). A popped entry still applies when
 * the pair now at its position has the same rank (ranks are unique per
 * pair); otherwise it is stale and dropped. After a merge, the pairs the
 * new symbol forms with its neighbours go on the heap. This is the order
 * in which tokenizers merges, so the result is identical. When stale
 * entries fill the heap it is rebuilt from the current pairs, which are
 * exactly its live entries, so memory stays at a few words per byte. */
static vidi_status enc_bpe(tok_enc *e, const char *w, size_t n)
{
    const vidi_tokenizer *t = e->tok;
    vidi_status rc;
    uint32_t ci = 0;

    if (n <= TOK_CACHE_WORD) {
        ci = cache_index(w, n);
        tok_cache_slot hit;
        pthread_mutex_lock((pthread_mutex_t *)&t->cache_lock);
        hit = t->cache[ci];
        pthread_mutex_unlock((pthread_mutex_t *)&t->cache_lock);
        if (hit.wlen == n && memcmp(hit.word, w, n) == 0) {
            for (int i = 0; i < hit.nids; i++)
                if ((rc = enc_emit(e, hit.ids[i])) != VIDI_OK) return rc;
            return VIDI_OK;
        }
    }

    if (t->ignore_merges) {
        if ((rc = enc_grow((void **)&e->mapped, &e->cap_mapped, 2 * n, 1, e->err)) != VIDI_OK) return rc;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += utf8_put(t->byte_cp[(unsigned char)w[i]], e->mapped + m);
        int32_t id = strmap_get(&t->vocab, t->pool, e->mapped, m);
        if (id >= 0) return enc_emit(e, id);
    }

    /* initial symbols: one per byte, two with <0xXX> fallback pairs */
    size_t maxs = (size_t)t->syms_per_byte * n + 1;
    if ((rc = enc_grow((void **)&e->sym, &e->cap_sym, 3 * maxs, sizeof *e->sym, e->err)) != VIDI_OK) return rc;
    int32_t *id = e->sym, *prev = e->sym + maxs, *next = e->sym + 2 * maxs;
    int32_t ns = 0;
    int unk_pending = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_byte_init *bi = &t->byte_init[(unsigned char)w[i]];
        if (bi->n) {
            if (!bi->fallback && unk_pending) {
                id[ns++] = t->unk_id;
                unk_pending = 0;
            }
            for (int k = 0; k < bi->n; k++) id[ns++] = bi->ids[k];
        } else if (t->unk_id >= 0) {
            if (unk_pending && !t->fuse_unk) id[ns++] = t->unk_id;
            unk_pending = 1;
        }
    }
    if (unk_pending) id[ns++] = t->unk_id;
    for (int32_t i = 0; i < ns; i++) {
        prev[i] = i - 1;
        next[i] = i + 1 < ns ? i + 1 : -1;
    }

    size_t cap = 2 * (size_t)ns + 16;
    if ((rc = enc_grow((void **)&e->heap, &e->cap_heap, cap, sizeof *e->heap, e->err)) != VIDI_OK) return rc;
    tok_heap_item *h = e->heap;
    size_t hn = 0;
    for (int32_t i = 0; i + 1 < ns; i++) {
        const tok_merge *m = merge_get(t, id[i], id[i + 1]);
        if (m) h[hn++] = (tok_heap_item){m->rank, i};
    }
    for (size_t i = hn / 2; i-- > 0;) heap_down(h, hn, i);

    while (hn) {
        if (hn + 2 > cap) { /* full of stale entries: rebuild */
            hn = 0;
            for (int32_t i = 0; i >= 0 && next[i] >= 0; i = next[i]) {
                const tok_merge *m = merge_get(t, id[i], id[next[i]]);
                if (m) h[hn++] = (tok_heap_item){m->rank, i};
            }
            for (size_t i = hn / 2; i-- > 0;) heap_down(h, hn, i);
            if (!hn) break;
        }
        tok_heap_item top = heap_pop(h, &hn);
        int32_t p = top.pos;
        if (id[p] < 0) continue; /* merged into its left neighbour */
        int32_t q = next[p];
        if (q < 0) continue;
        const tok_merge *m = merge_get(t, id[p], id[q]);
        if (!m || m->rank != top.rank) continue; /* stale */
        id[p] = m->id;
        id[q] = -1;
        int32_t r = next[q];
        next[p] = r;
        if (r >= 0) prev[r] = p;
        if (prev[p] >= 0) {
            const tok_merge *ml = merge_get(t, id[prev[p]], id[p]);
            if (ml) heap_push(h, &hn, (tok_heap_item){ml->rank, prev[p]});
        }
        if (r >= 0) {
            const tok_merge *mr = merge_get(t, id[p], id[r]);
            if (mr) heap_push(h, &hn, (tok_heap_item){mr->rank, p});
        }
    }

    size_t first = e->n_ids;
    for (int32_t i = ns > 0 ? 0 : -1; i >= 0; i = next[i])
        if ((rc = enc_emit(e, id[i])) != VIDI_OK) return rc;

    size_t made = e->n_ids - first;
    if (n <= TOK_CACHE_WORD && n > 0 && made <= TOK_CACHE_IDS) {
        tok_cache_slot s;
        memset(&s, 0, sizeof s);
        s.wlen = (uint8_t)n;
        s.nids = (uint8_t)made;
        memcpy(s.word, w, n);
        memcpy(s.ids, e->ids + first, made * sizeof *s.ids);
        pthread_mutex_lock((pthread_mutex_t *)&t->cache_lock);
        ((vidi_tokenizer *)t)->cache[ci] = s;
        pthread_mutex_unlock((pthread_mutex_t *)&t->cache_lock);
    }
    return VIDI_OK;
}

static vidi_status enc_pre(tok_enc *e, const char *s, size_t n, int step);

/* Folds the (range, is_match) sequence of one Split into pieces the way
 * tokenizers' SplitDelimiterBehavior does, passing finished pieces on. */
typedef struct tok_fold {
    tok_enc *e;
    const char *s;
    int step;
    tok_split_behavior behavior;
    int has;         /* a piece is pending */
    size_t ps, pe;   /* its range */
    int pm;          /* the pending piece / the last element was a match */
} tok_fold;

static vidi_status fold_out(tok_fold *f, size_t a, size_t b)
{
    return b > a ? enc_pre(f->e, f->s + a, b - a, f->step) : VIDI_OK;
}

static vidi_status fold_elem(tok_fold *f, size_t a, size_t b, int m)
{
    vidi_status rc = VIDI_OK;
    switch (f->behavior) {
    case TOK_SPLIT_ISOLATED:
        return fold_out(f, a, b);
    case TOK_SPLIT_REMOVED:
        return m ? VIDI_OK : fold_out(f, a, b);
    case TOK_SPLIT_MERGED_PREV: /* a match joins the piece before it */
        if (m && !f->pm && f->has) {
            f->pe = b;
        } else {
            if (f->has) rc = fold_out(f, f->ps, f->pe);
            f->has = 1;
            f->ps = a;
            f->pe = b;
        }
        f->pm = m;
        return rc;
    case TOK_SPLIT_MERGED_NEXT: /* a match joins the piece after it */
        if (f->has) {
            if (!m) {
                f->has = 0;
                return fold_out(f, f->ps, b);
            }
            rc = fold_out(f, f->ps, f->pe);
            f->ps = a;
            f->pe = b;
            return rc;
        }
        if (m) {
            f->has = 1;
            f->ps = a;
            f->pe = b;
            return VIDI_OK;
        }
        return fold_out(f, a, b);
    case TOK_SPLIT_CONTIGUOUS: /* runs of matches become one piece */
        if (f->has && m == f->pm) {
            f->pe = b;
        } else {
            if (f->has) rc = fold_out(f, f->ps, f->pe);
            f->has = 1;
            f->ps = a;
            f->pe = b;
        }
        f->pm = m;
        return rc;
    }
    return VIDI_OK;
}

static vidi_status enc_split(tok_enc *e, const pcre2_code *re, tok_split_behavior behavior, int invert,
                             const char *s, size_t n, int next_step)
{
    vidi_status rc;
    tok_fold f = {.e = e, .s = s, .step = next_step, .behavior = behavior};
    size_t off = 0, last = 0;
    while (off < n) {
        int r = pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (r == PCRE2_ERROR_JIT_STACKLIMIT && !e->jit) {
            /* the 32 KiB default JIT stack is enough for the usual
             * patterns; give a heavier one 16 MiB and try again */
            e->jit = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, NULL);
            if (!e->jit) return vidi_err_set(e->err, VIDI_ERR_NOMEM, "tokenizer: out of memory (PCRE2 JIT stack)");
            pcre2_jit_stack_assign(e->mctx, NULL, e->jit);
            continue;
        }
        if (r == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter keeps its frames on the heap */
            r = pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md, e->mctx);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof msg);
            return vidi_err_set(e->err, VIDI_ERR_RANGE,
                                "tokenizer: the pre-tokenizer regex failed on a %zu-byte piece: %s", n,
                                (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {
            /* an empty match makes no piece; step over one character */
            uint32_t cp;
            size_t k = ms < n ? utf8_next((const unsigned char *)s + ms, n - ms, &cp) : 1;
            off = ms + (k ? k : 1);
            continue;
        }
        if (ms > last && (rc = fold_elem(&f, last, ms, invert)) != VIDI_OK) return rc;
        if ((rc = fold_elem(&f, ms, me, !invert)) != VIDI_OK) return rc;
        last = off = me;
    }
    if (last < n && (rc = fold_elem(&f, last, n, invert)) != VIDI_OK) return rc;
    if (f.has) {
        f.has = 0;
        return fold_out(&f, f.ps, f.pe);
    }
    return VIDI_OK;
}

/* Pre-tokenizer step `step` on one piece; the last step hands to BPE. */
static vidi_status enc_pre(tok_enc *e, const char *s, size_t n, int step)
{
    const vidi_tokenizer *t = e->tok;
    if (n == 0) return VIDI_OK;
    if (step == t->n_pre) return enc_bpe(e, s, n);
    const tok_pre *p = &t->pre[step];
    if (p->kind == TOK_PRE_BYTELEVEL) {
        if (p->add_prefix_space && s[0] != ' ') {
            vidi_status rc = enc_grow((void **)&e->pfx[step], &e->cap_pfx[step], n + 1, 1, e->err);
            if (rc != VIDI_OK) return rc;
            e->pfx[step][0] = ' ';
            memcpy(e->pfx[step] + 1, s, n);
            s = e->pfx[step];
            n++;
        }
        if (!p->re) return enc_pre(e, s, n, step + 1);
        return enc_split(e, p->re, TOK_SPLIT_ISOLATED, 0, s, n, step + 1);
    }
    return enc_split(e, p->re, p->behavior, p->invert, s, n, step + 1);
}

/* Longest token of m starting at s[i] (s has n bytes), as an index into
 * tok->added, or -1. */
static int matcher_at(const vidi_tokenizer *t, const tok_matcher *m, const char *s, size_t n, size_t i)
{
    if (!m->first[(unsigned char)s[i]]) return -1;
    uint64_t h = TOK_FNV_INIT;
    size_t lim = n - i < m->max_len ? n - i : m->max_len;
    int best = -1;
    for (size_t len = 1; len <= lim; len++) {
        h = TOK_FNV_STEP(h, s[i + len - 1]);
        if (!m->has_len[len]) continue;
        int32_t a = strmap_get_h(&m->map, t->pool, s + i, len, h);
        if (a >= 0) best = a;
    }
    return best;
}

static vidi_status enc_segment(tok_enc *e, const char *s, size_t n);

/* Splits s on the added tokens of m (leftmost, then longest, as the
 * Aho-Corasick LeftmostLongest search of tokenizers), applying their
 * single_word / lstrip / rstrip rules. Text between tokens goes on to the
 * next stage: normalisation after the raw pass, the pre-tokenizer after
 * the normalised pass. */
static vidi_status enc_added(tok_enc *e, const tok_matcher *m, const char *s, size_t n, int raw_pass)
{
    const vidi_tokenizer *t = e->tok;
    vidi_status rc;
    size_t done = 0, i = 0;
    while (m->n && i < n) {
        int a = matcher_at(t, m, s, n, i);
        if (a < 0) {
            i++;
            continue;
        }
        const tok_added *tk = &t->added[a];
        size_t start = i, stop = i + tk->match.len;
        i = stop;
        uint32_t cp;
        if (tk->single_word) {
            int word_before = start > 0 && utf8_next((const unsigned char *)s + utf8_prev(s, start),
                                                     start - utf8_prev(s, start), &cp) &&
                              cp_is_word(cp);
            int word_after = stop < n && utf8_next((const unsigned char *)s + stop, n - stop, &cp) && cp_is_word(cp);
            if (word_before || word_after) continue;
        }
        if (tk->lstrip) {
            while (start > done) {
                size_t p = utf8_prev(s, start);
                if (!utf8_next((const unsigned char *)s + p, start - p, &cp) || !cp_is_space(cp)) break;
                start = p;
            }
        }
        if (tk->rstrip) {
            size_t k;
            while (stop < n && (k = utf8_next((const unsigned char *)s + stop, n - stop, &cp)) && cp_is_space(cp))
                stop += k;
            i = stop;
        }
        if (start > done) {
            rc = raw_pass ? enc_segment(e, s + done, start - done) : enc_pre(e, s + done, start - done, 0);
            if (rc != VIDI_OK) return rc;
        }
        if ((rc = enc_emit(e, tk->id)) != VIDI_OK) return rc;
        done = stop;
    }
    if (done < n) return raw_pass ? enc_segment(e, s + done, n - done) : enc_pre(e, s + done, n - done, 0);
    return VIDI_OK;
}

/* NFC of s[0..n) into a malloc'd *out, calling utf8proc only on the runs
 * of code points >= U+0300 (lead byte >= 0xCC) together with the character
 * just before each run, which may compose with it. Code points below
 * U+0300 are starters that NFC leaves alone and that never compose with
 * what precedes them, so the text can be cut before each of them. */
static vidi_status tok_nfc_runs(const char *s, size_t n, char **out, size_t *out_n, vidi_err *err)
{
    vidi_status rc = VIDI_OK;
    char *buf = NULL;
    size_t len = 0, cap = 0, i = 0;
    while (i < n) {
        size_t p = i;
        while (p < n && (unsigned char)s[p] < 0xCC) p++;
        size_t start = p < n && p > i ? utf8_prev(s, p) : p;
        size_t end = p;
        while (end < n && (unsigned char)s[end] >= 0xCC) {
            uint32_t cp;
            size_t k = utf8_next((const unsigned char *)s + end, n - end, &cp);
            end += k ? k : 1;
        }
        char *norm = NULL;
        size_t nn = 0;
        if (end > start && (rc = tok_nfc(s + start, end - start, &norm, &nn, err)) != VIDI_OK) goto fail;
        if ((rc = enc_grow((void **)&buf, &cap, len + (start - i) + nn + 1, 1, err)) != VIDI_OK) {
            free(norm);
            goto fail;
        }
        memcpy(buf + len, s + i, start - i);
        len += start - i;
        if (nn) memcpy(buf + len, norm, nn);
        len += nn;
        free(norm);
        i = end;
    }
    *out = buf;
    *out_n = len;
    return VIDI_OK;
fail:
    free(buf);
    return rc;
}

/* A segment between raw-matched added tokens: normalise, then split on
 * the normalised added tokens. */
static vidi_status enc_segment(tok_enc *e, const char *s, size_t n)
{
    const vidi_tokenizer *t = e->tok;
    if (!t->nfc || tok_nfc_stable(s, n)) return enc_added(e, &t->norm, s, n, 0);
    char *ns = NULL;
    size_t nn = 0;
    vidi_status rc = tok_nfc_runs(s, n, &ns, &nn, e->err);
    if (rc == VIDI_OK) rc = enc_added(e, &t->norm, ns ? ns : "", nn, 0);
    free(ns);
    return rc;
}

vidi_status vidi_tokenizer_encode(const vidi_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                                  size_t *n_ids, vidi_err *err)
{
    vidi_status rc = VIDI_OK;
    tok_enc e;
    memset(&e, 0, sizeof e);
    e.tok = tok;
    e.err = err;

    VIDI_CHECK(tok && ids && n_ids && (text || len == 0), err, VIDI_ERR_INVALID,
               "vidi_tokenizer_encode: tok, ids, n_ids (and text unless len is 0) must not be NULL");
    *ids = NULL;
    *n_ids = 0;
    VIDI_CHECK(len <= TOK_MAX_TEXT, err, VIDI_ERR_RANGE, "vidi_tokenizer_encode: %zu bytes of text is more than the %zu-byte limit",
               len, TOK_MAX_TEXT);
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    VIDI_CHECK(bad == len, err, VIDI_ERR_INVALID, "vidi_tokenizer_encode: invalid UTF-8 at byte offset %zu (byte 0x%02X)",
               bad, bad < len ? (unsigned)(unsigned char)text[bad] : 0u);

    e.md = pcre2_match_data_create(1, NULL);
    e.mctx = pcre2_match_context_create(NULL);
    VIDI_CHECK(e.md && e.mctx, err, VIDI_ERR_NOMEM, "tokenizer: out of memory (PCRE2 match data)");

    VIDI_TRY(enc_grow((void **)&e.ids, &e.cap_ids, len / 3 + 16, sizeof *e.ids, err));
    VIDI_TRY(enc_added(&e, &tok->raw, text, len, 1));
    *ids = e.ids;
    *n_ids = e.n_ids;
    e.ids = NULL;
fail:
    free(e.ids);
    free(e.sym);
    free(e.heap);
    free(e.mapped);
    for (int i = 0; i < TOK_MAX_PRE; i++) free(e.pfx[i]);
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mctx);
    pcre2_jit_stack_free(e.jit);
    return rc;
}

/* ======================================================================
 * decoding
 * ====================================================================== */

/* The bytes of one id, or NULL (with *n = 0) for a skipped special token.
 * The id must be valid. */
static const unsigned char *tok_bytes(const vidi_tokenizer *t, int32_t id, int skip_special, size_t *n)
{
    const tok_entry *e = &t->entries[id];
    if (skip_special && e->special) {
        *n = 0;
        return NULL;
    }
    *n = e->dec.len;
    return (const unsigned char *)t->pool + e->dec.off;
}

/* VIDI_OK when id names a token; `at` is its index in the caller's list
 * (SIZE_MAX: not part of a list). */
static vidi_status tok_check_id(const vidi_tokenizer *t, int32_t id, size_t at, vidi_err *err)
{
    char where[48] = "";
    if (at != SIZE_MAX) snprintf(where, sizeof where, " (at position %zu)", at);
    if (id < 0 || id >= t->n_entries)
        return vidi_err_set(err, VIDI_ERR_RANGE, "tokenizer: id %d%s is outside [0, %d)", (int)id, where,
                            (int)t->n_entries);
    if (!t->entries[id].present)
        return vidi_err_set(err, VIDI_ERR_RANGE, "tokenizer: id %d%s has no token", (int)id, where);
    return VIDI_OK;
}

vidi_status vidi_tokenizer_decode(const vidi_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
                                  char **out, vidi_err *err)
{
    vidi_status rc = VIDI_OK;
    unsigned char *raw = NULL;
    char *txt = NULL;

    VIDI_CHECK(tok && out && (ids || n_ids == 0), err, VIDI_ERR_INVALID,
               "vidi_tokenizer_decode: tok, out (and ids unless n_ids is 0) must not be NULL");
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        VIDI_TRY(tok_check_id(tok, ids[i], i, err));
        size_t k;
        tok_bytes(tok, ids[i], skip_special, &k);
        total += k;
        VIDI_CHECK(total <= TOK_MAX_DECODE, err, VIDI_ERR_RANGE,
                   "vidi_tokenizer_decode: the text would exceed %zu bytes", TOK_MAX_DECODE);
    }
    raw = malloc(total + 1);
    txt = malloc(3 * total + 1);
    VIDI_CHECK(raw && txt, err, VIDI_ERR_NOMEM, "vidi_tokenizer_decode: out of memory (%zu bytes)", total);
    size_t o = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t k;
        const unsigned char *b = tok_bytes(tok, ids[i], skip_special, &k);
        if (k) memcpy(raw + o, b, k);
        o += k;
    }
    size_t tl;
    utf8_lossy(raw, total, 1, txt, &tl);
    txt[tl] = '\0';
    free(raw);
    *out = txt;
    return VIDI_OK;
fail:
    free(raw);
    free(txt);
    return rc;
}

void vidi_detok_init(vidi_detok *d, const vidi_tokenizer *tok, int skip_special)
{
    if (!d) return;
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->skip_special = skip_special;
}

/* Converts pending + the token's bytes; on success commits the new
 * pending tail. On VIDI_ERR_RANGE the detokenizer is unchanged, so the
 * same id can be pushed again with a larger buffer. */
vidi_status vidi_detok_push(vidi_detok *d, int32_t id, char *buf, size_t cap, size_t *written, vidi_err *err)
{
    vidi_status rc = VIDI_OK;
    unsigned char stackbuf[256];
    unsigned char *in = stackbuf;
    char stackout[3 * sizeof stackbuf];
    char *tmp = stackout;

    VIDI_CHECK(d && d->tok && buf && written && cap > 0, err, VIDI_ERR_INVALID,
               "vidi_detok_push: d (initialised), buf (cap > 0) and written must not be NULL");
    *written = 0;
    buf[0] = '\0';
    VIDI_CHECK(d->n_pending >= 0 && d->n_pending <= 3, err, VIDI_ERR_INVALID, "vidi_detok_push: corrupt state");
    VIDI_TRY(tok_check_id(d->tok, id, SIZE_MAX, err));
    size_t k;
    const unsigned char *b = tok_bytes(d->tok, id, d->skip_special, &k);
    size_t n = (size_t)d->n_pending + k;
    if (n > sizeof stackbuf) {
        in = malloc(n);
        tmp = malloc(3 * n);
        VIDI_CHECK(in && tmp, err, VIDI_ERR_NOMEM, "vidi_detok_push: out of memory");
    }
    memcpy(in, d->pending, (size_t)d->n_pending);
    if (k) memcpy(in + d->n_pending, b, k);
    size_t ol;
    size_t used = utf8_lossy(in, n, 0, tmp, &ol);
    VIDI_CHECK(ol + 1 <= cap, err, VIDI_ERR_RANGE, "vidi_detok_push: %zu bytes of text do not fit a %zu-byte buffer",
               ol, cap);
    memcpy(buf, tmp, ol);
    buf[ol] = '\0';
    *written = ol;
    d->n_pending = (int)(n - used);
    memcpy(d->pending, in + used, (size_t)d->n_pending);
fail:
    if (in != stackbuf) free(in);
    if (tmp != stackout) free(tmp);
    return rc;
}

vidi_status vidi_detok_flush(vidi_detok *d, char *buf, size_t cap, size_t *written, vidi_err *err)
{
    vidi_status rc = VIDI_OK;
    VIDI_CHECK(d && buf && written && cap > 0, err, VIDI_ERR_INVALID,
               "vidi_detok_flush: d, buf (cap > 0) and written must not be NULL");
    *written = 0;
    buf[0] = '\0';
    VIDI_CHECK(d->n_pending >= 0 && d->n_pending <= 3, err, VIDI_ERR_INVALID, "vidi_detok_flush: corrupt state");
    char tmp[3 * 3 + 1];
    size_t ol;
    utf8_lossy(d->pending, (size_t)d->n_pending, 1, tmp, &ol);
    VIDI_CHECK(ol + 1 <= cap, err, VIDI_ERR_RANGE, "vidi_detok_flush: %zu bytes of text do not fit a %zu-byte buffer",
               ol, cap);
    memcpy(buf, tmp, ol);
    buf[ol] = '\0';
    *written = ol;
    d->n_pending = 0;
fail:
    return rc;
}
