/* ipc/lease.c — leases on ranges of one export buffer (lease.h). */
#include "ipc/lease.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct lease {
    uint64_t id, off, bytes, until_ms;
} lease;

struct vidi_lease_pool {
    uint64_t size, align, next_id, held_bytes;
    int cap, n;
    lease *l; /* n held, sorted by off */
};

vidi_lease_pool *vidi_lease_pool_create(uint64_t bytes, uint64_t align, int max_leases) {
    if (!bytes || !align || (align & (align - 1)) || max_leases < 1) return NULL;
    vidi_lease_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->l = calloc((size_t)max_leases, sizeof *p->l);
    if (!p->l) {
        free(p);
        return NULL;
    }
    p->size = bytes;
    p->align = align;
    p->cap = max_leases;
    p->next_id = 1;
    return p;
}

void vidi_lease_pool_free(vidi_lease_pool *p) {
    if (!p) return;
    free(p->l);
    free(p);
}

vidi_status vidi_lease_take(vidi_lease_pool *p, uint64_t bytes, uint64_t until_ms, uint64_t *lease_out,
                            uint64_t *offset, vidi_err *err) {
    if (!bytes || bytes > p->size)
        return vidi_err_set(err, VIDI_ERR_RANGE, "lease of %" PRIu64 " bytes: the buffer has %" PRIu64, bytes,
                            p->size);
    if (p->n == p->cap) return vidi_err_set(err, VIDI_ERR_RANGE, "all %d leases are held", p->cap);
    uint64_t want = (bytes + p->align - 1) & ~(p->align - 1);
    uint64_t at = 0;
    int i = 0;
    /* first fit: the gap before lease i starts at `at` */
    for (; i <= p->n; i++) {
        uint64_t end = i < p->n ? p->l[i].off : p->size;
        if (end >= at && end - at >= want) break;
        if (i < p->n) at = (p->l[i].off + p->l[i].bytes + p->align - 1) & ~(p->align - 1);
    }
    if (i > p->n)
        return vidi_err_set(err, VIDI_ERR_RANGE,
                            "no free range of %" PRIu64 " bytes (%" PRIu64 " of %" PRIu64 " held in %d leases)", want,
                            p->held_bytes, p->size, p->n);
    memmove(&p->l[i + 1], &p->l[i], (size_t)(p->n - i) * sizeof *p->l);
    p->l[i] = (lease){p->next_id++, at, want, until_ms};
    p->n++;
    p->held_bytes += want;
    *lease_out = p->l[i].id;
    *offset = at;
    return VIDI_OK;
}

static void s_drop(vidi_lease_pool *p, int i) {
    p->held_bytes -= p->l[i].bytes;
    memmove(&p->l[i], &p->l[i + 1], (size_t)(p->n - i - 1) * sizeof *p->l);
    p->n--;
}

int vidi_lease_give(vidi_lease_pool *p, uint64_t id) {
    for (int i = 0; i < p->n; i++)
        if (p->l[i].id == id) {
            s_drop(p, i);
            return 1;
        }
    return 0;
}

int vidi_lease_expire(vidi_lease_pool *p, uint64_t now_ms) {
    int k = 0;
    for (int i = p->n - 1; i >= 0; i--)
        if (p->l[i].until_ms <= now_ms) {
            s_drop(p, i);
            k++;
        }
    return k;
}

int vidi_lease_held(const vidi_lease_pool *p) { return p->n; }
uint64_t vidi_lease_bytes_held(const vidi_lease_pool *p) { return p->held_bytes; }
