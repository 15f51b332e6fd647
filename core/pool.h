/* core/pool.h — a fixed thread pool with a blocking parallel-for.
 *
 * vidi_pool_for splits [0, n) into contiguous ranges, runs fn on them on the
 * pool's threads and the caller's thread, and returns when all are done.
 * Calls from inside a task run serially (no nested parallelism). A pool of
 * one thread runs everything on the caller.
 */
#ifndef VIDI_CORE_POOL_H
#define VIDI_CORE_POOL_H

#include <stdint.h>

typedef struct vidi_pool vidi_pool;

typedef void (*vidi_pool_fn)(void *ctx, int64_t begin, int64_t end);

/* nthreads <= 0 picks VIDI_THREADS from the environment, else the number of
 * online CPUs. Returns NULL when threads cannot be created. Freed by
 * vidi_pool_destroy. */
vidi_pool *vidi_pool_create(int nthreads);
void vidi_pool_destroy(vidi_pool *p);
int vidi_pool_size(const vidi_pool *p);

/* Run fn over [0, n) in ranges of at least `grain` items (grain <= 0 means 1).
 * p may be NULL: then it runs on the caller. */
void vidi_pool_for(vidi_pool *p, int64_t n, int64_t grain, vidi_pool_fn fn, void *ctx);

/* A process-wide pool created on first use (thread-safe). Never freed. */
vidi_pool *vidi_pool_default(void);

#endif
