/* ipc/lease.h — leases on ranges of one export buffer (PROTOCOL.md §5.4).
 *
 * A worker that hands a tensor to another process through CUDA IPC writes
 * it into a range of its export buffer and leases the range to the reader
 * until the reader sends RELEASE or the lease's time is up. This is the
 * bookkeeping for that, host only: first fit over the buffer's bytes, each
 * range aligned, each lease numbered (numbers are never reused, so a late
 * RELEASE of an expired lease frees nothing else). Single-threaded.
 */
#ifndef VIDI_IPC_LEASE_H
#define VIDI_IPC_LEASE_H

#include <stdint.h>

#include "core/err.h"

typedef struct vidi_lease_pool vidi_lease_pool;

/* A pool over `bytes` bytes, ranges aligned to `align` (a power of two),
 * at most max_leases held at once. NULL when out of memory or invalid. */
vidi_lease_pool *vidi_lease_pool_create(uint64_t bytes, uint64_t align, int max_leases);
void vidi_lease_pool_free(vidi_lease_pool *p);

/* Lease `bytes` (> 0) until until_ms: its number in *lease, where it
 * starts in *offset. VIDI_ERR_RANGE (a message saying why) when no free
 * range is large enough or max_leases are held; nothing changes then. */
vidi_status vidi_lease_take(vidi_lease_pool *p, uint64_t bytes, uint64_t until_ms, uint64_t *lease,
                            uint64_t *offset, vidi_err *err);

/* Free lease `lease`: 1 when it was held, 0 when unknown (given back or
 * expired already). */
int vidi_lease_give(vidi_lease_pool *p, uint64_t lease);

/* Free every lease whose until_ms <= now_ms; returns how many. */
int vidi_lease_expire(vidi_lease_pool *p, uint64_t now_ms);

int vidi_lease_held(const vidi_lease_pool *p);
uint64_t vidi_lease_bytes_held(const vidi_lease_pool *p);

#endif
